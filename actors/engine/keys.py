"""The snapshot encryption key: from config/environment, or a 0600 key file in embedded mode."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

__all__ = ["load_or_create_key", "KeyError_"]

log = logging.getLogger("exness.keys")


class KeyError_(Exception):
    """The configured key is unusable; the message says why and where it came from."""


def _parse(text: str, origin: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise KeyError_(f"{origin}: the snapshot key must be 64 hex digits (32 bytes)") from None
    if len(key) != 32:
        raise KeyError_(f"{origin}: the snapshot key must be 32 bytes (64 hex digits), got {len(key)}")
    return key


def load_or_create_key(data_dir: Path, configured: Optional[str] = None) -> bytes:
    """``configured`` (``snapshot.key`` / ``EXNESS_SNAPSHOT__KEY``, hex) wins; otherwise the
    key file ``<data_dir>/snapshot.key`` is read, or created with mode 0600 on first run."""
    if configured:
        return _parse(configured, "snapshot.key")
    path = data_dir / "snapshot.key"
    if path.exists():
        return _parse(path.read_text(), str(path))
    key = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    log.info("event=snapshot_key_created path=%s mode=0600", path)
    return key
