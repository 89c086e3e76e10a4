"""Snapshots: the engine state at a given seq, msgpack-encoded and sealed with AES-256-GCM.

Theory of operation
-------------------
A snapshot lets a restart skip replaying the journal from the beginning: load the newest *valid* snapshot,
then replay the journal records after its ``last_seq``. The content is a msgpack map::

    {"format_version": 2, "scales": ..., "last_seq": int, "state_hash": bytes, "state": ...,
     "indexes": ...}

``indexes`` (format 2) are the engine's trigger indexes ready to load
(:meth:`~exness_actors.engine.Engine.export_indexes`): derived data, stored so that a restore need
not re-derive them. A snapshot without them is written and read as format 1, the layout before
them; both are read. An older build refuses format 2 as unsupported (it is skipped, and an older
snapshot or the journal is used instead).

sealed in a file ``snapshot-{last_seq:020d}.snap`` laid out as::

    MAGIC "EXSNAP01" | u64 last_seq | u64 ciphertext length | 12-byte nonce | AES-256-GCM ciphertext + tag

(integers little-endian). The 24-byte header is in clear, so snapshots can be listed and a truncated file
told apart from a wrong key without decrypting, and it is the GCM associated data, so it cannot be altered
without the tag failing. The nonce is an input: the core never draws randomness, the caller passes
``os.urandom(12)``.

A snapshot is written to ``*.snap.tmp``, fsynced, renamed over its final name and the directory fsynced:
a crash leaves either the complete old state or the complete new file, never half a snapshot under a
final name. A leftover ``.tmp`` is ignored by every reader.

Invariants
----------
* A `Snapshot` returned by this module was authenticated with the key, has a supported format_version,
  and its inner ``last_seq`` equals the one in the header and in the file name.
* Reading never raises a bare `cryptography` or msgpack exception: bad files raise `SnapshotCorrupt`,
  failed authentication raises `SnapshotKeyError`; a key of the wrong size is a `ValueError` (configuration).
* No clock, randomness or event loop here: the same inputs always produce the same file.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import Any

import attrs
import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from exness_actors import codec
from exness_actors._fsio import fsync_directory

__all__ = [
    "FORMAT_VERSION",
    "KEY_SIZE",
    "MAGIC",
    "NONCE_SIZE",
    "READABLE_VERSIONS",
    "Snapshot",
    "SnapshotCorrupt",
    "SnapshotError",
    "SnapshotKeyError",
    "list_snapshots",
    "load_newest_valid",
    "prune_snapshots",
    "read_snapshot",
    "snapshot_name",
    "write_snapshot",
]

StrPath = str | os.PathLike[str]

MAGIC = b"EXSNAP01"
FORMAT_VERSION = 2
#: the versions this build reads: 1 (no stored indexes) and 2
READABLE_VERSIONS = (1, 2)
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
_HEADER = struct.Struct("<8sQQ")
"""magic, last_seq, ciphertext length: in clear, authenticated as associated data."""
_MAX_SEQ = 2**64 - 1
_SNAPSHOT_NAME = re.compile(r"snapshot-(\d{20})\.snap")
_CONTENT_FIELDS = ("format_version", "scales", "last_seq", "state_hash", "state")
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


# --------------------------------------------------------------------------------------------- errors


class SnapshotError(Exception):
    """A snapshot file cannot be used."""

    def __init__(self, path: StrPath, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"snapshot {self.path}: {reason}")


class SnapshotCorrupt(SnapshotError):
    """The file is not a readable snapshot: bad magic, truncated, bad content or unsupported version."""


class SnapshotKeyError(SnapshotError):
    """Authentication failed: the key is not the one the snapshot was written with, or the file was altered."""


# ---------------------------------------------------------------------------------------------- values


@attrs.frozen(kw_only=True)
class Snapshot:
    """A decrypted, validated snapshot."""

    path: Path
    format_version: int
    scales: Any
    last_seq: int
    state_hash: bytes
    state: Any
    indexes: Any = None
    """Format 2: the trigger indexes ready to load (``Engine.from_state(state, indexes)``)."""


# ---------------------------------------------------------------------------------------------- naming


def snapshot_name(last_seq: int) -> str:
    """File name of the snapshot taken after record `last_seq`."""
    _check_seq(last_seq)
    return f"snapshot-{last_seq:020d}.snap"


def list_snapshots(directory: StrPath) -> list[tuple[int, Path]]:
    """(last_seq, path) of every snapshot file in `directory`, ascending; [] if it does not exist."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = _SNAPSHOT_NAME.fullmatch(name)
        if match is not None:
            found.append((int(match.group(1)), Path(directory, name)))
    found.sort()
    return found


# ----------------------------------------------------------------------------------------------- write


def write_snapshot(
    directory: StrPath,
    *,
    key: bytes,
    nonce: bytes,
    last_seq: int,
    state_hash: bytes,
    scales: Any,
    state: Any,
    indexes: Any = None,
) -> Path:
    """Seal a snapshot and write it atomically and durably; return its path.

    With ``indexes`` (taken from the same engine as ``state``) the snapshot is format 2, without
    them format 1.

    `nonce` must be 12 fresh random bytes, never reused with the same key (pass ``os.urandom(12)``).
    The file is created with mode 0600; `directory` is created if missing.
    """
    _check_key(key)
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
        raise ValueError(f"snapshot nonce must be {NONCE_SIZE} bytes, got {_describe_length(nonce)}")
    _check_seq(last_seq)
    if not isinstance(state_hash, bytes):
        raise TypeError(f"state_hash must be bytes, got {type(state_hash).__name__}")
    content = {
        "format_version": 1 if indexes is None else FORMAT_VERSION,
        "scales": scales,
        "last_seq": last_seq,
        "state_hash": state_hash,
        "state": state,
    }
    if indexes is not None:
        content["indexes"] = indexes
    plaintext = codec.pack(content)
    ciphertext_length = len(plaintext) + TAG_SIZE
    header = _HEADER.pack(MAGIC, last_seq, ciphertext_length)
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, header)
    sealed = b"".join((header, nonce, ciphertext))

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final_path = directory / snapshot_name(last_seq)
    temp_path = final_path.with_name(final_path.name + ".tmp")
    fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_CLOEXEC, 0o600)
    try:
        try:
            # A .tmp left by a crash keeps its old mode through O_TRUNC; be explicit.
            os.fchmod(fd, 0o600)
            view = memoryview(sealed)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp_path, final_path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    fsync_directory(directory)
    return final_path


# ------------------------------------------------------------------------------------------------ read


def read_snapshot(path: StrPath, *, key: bytes) -> Snapshot:
    """Decrypt and validate one snapshot file.

    Raises `SnapshotCorrupt` or `SnapshotKeyError` for a bad file, ValueError for a key of the wrong size,
    and OSError if the file cannot be read at all.
    """
    _check_key(key)
    path = Path(path)
    with open(path, "rb", buffering=0) as file:
        sealed = file.read()
    if not sealed.startswith(MAGIC):
        if MAGIC.startswith(sealed):
            raise SnapshotCorrupt(path, f"truncated: {len(sealed)} bytes, cut inside the magic")
        raise SnapshotCorrupt(
            path, f"bad magic {sealed[: len(MAGIC)]!r} (expected {MAGIC!r}): not a snapshot file of this format"
        )
    if len(sealed) < _HEADER.size:
        raise SnapshotCorrupt(path, f"truncated: {len(sealed)} bytes, shorter than the {_HEADER.size}-byte header")
    _, header_seq, ciphertext_length = _HEADER.unpack_from(sealed)
    expected_size = _HEADER.size + NONCE_SIZE + ciphertext_length
    if ciphertext_length < TAG_SIZE:
        raise SnapshotCorrupt(path, f"header announces {ciphertext_length} ciphertext bytes, less than a GCM tag")
    if len(sealed) < expected_size:
        raise SnapshotCorrupt(path, f"truncated: {len(sealed)} bytes, the header announces {expected_size}")
    if len(sealed) > expected_size:
        raise SnapshotCorrupt(path, f"{len(sealed) - expected_size} unexpected bytes after the ciphertext")

    header = sealed[: _HEADER.size]
    nonce = sealed[_HEADER.size : _HEADER.size + NONCE_SIZE]
    try:
        plaintext = AESGCM(key).decrypt(nonce, sealed[_HEADER.size + NONCE_SIZE :], header)
    except InvalidTag:
        raise SnapshotKeyError(
            path,
            "authentication failed: wrong key or tampered file (check that the configured snapshot key is the "
            "one this data directory was written with)",
        ) from None
    return _decode_content(path, plaintext, header_seq)


def _decode_content(path: Path, plaintext: bytes, header_seq: int) -> Snapshot:
    try:
        content = codec.unpack(plaintext)
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        raise SnapshotCorrupt(path, f"content is not valid msgpack ({error.__class__.__name__}: {error})") from None
    if not isinstance(content, dict):
        raise SnapshotCorrupt(path, f"content is a msgpack {type(content).__name__}, expected a map")
    missing = [field for field in _CONTENT_FIELDS if field not in content]
    if missing:
        raise SnapshotCorrupt(path, f"content lacks field(s) {', '.join(missing)}")
    format_version = content["format_version"]
    if type(format_version) is not int or format_version not in READABLE_VERSIONS:
        raise SnapshotCorrupt(
            path, f"unsupported format_version {format_version!r} (this build reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))})"
        )
    if format_version >= 2 and "indexes" not in content:
        raise SnapshotCorrupt(path, f"format_version {format_version} content lacks field indexes")
    last_seq = content["last_seq"]
    if type(last_seq) is not int or last_seq != header_seq:
        raise SnapshotCorrupt(path, f"content last_seq {last_seq!r} does not match the header's {header_seq}")
    state_hash = content["state_hash"]
    if not isinstance(state_hash, bytes):
        raise SnapshotCorrupt(path, f"state_hash is a {type(state_hash).__name__}, expected bytes")
    return Snapshot(
        path=path,
        format_version=format_version,
        scales=content["scales"],
        last_seq=last_seq,
        state_hash=state_hash,
        state=content["state"],
        indexes=content.get("indexes"),
    )


def load_newest_valid(directory: StrPath, *, key: bytes) -> tuple[Snapshot | None, list[tuple[Path, str]]]:
    """Return the newest snapshot that reads and authenticates, and (path, reason) for each newer one skipped.

    (None, skipped) when no snapshot is valid or the directory does not exist. ``.tmp`` files are ignored.
    """
    _check_key(key)
    skipped: list[tuple[Path, str]] = []
    for name_seq, path in reversed(list_snapshots(directory)):
        try:
            snapshot = read_snapshot(path, key=key)
        except SnapshotError as error:
            skipped.append((path, error.reason))
            continue
        except OSError as error:
            skipped.append((path, f"cannot be read ({error.__class__.__name__}: {error})"))
            continue
        if snapshot.last_seq != name_seq:
            skipped.append((path, f"file name says last_seq {name_seq} but the content says {snapshot.last_seq}"))
            continue
        return snapshot, skipped
    return None, skipped


def prune_snapshots(directory: StrPath, *, keep: int) -> list[Path]:
    """Remove all snapshots but the `keep` newest by last_seq (valid or not); return the removed paths."""
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    snapshots = list_snapshots(directory)
    doomed = [path for _, path in snapshots[: max(len(snapshots) - keep, 0)]]
    for path in doomed:
        path.unlink(missing_ok=True)
    if doomed:
        fsync_directory(Path(directory))
    return doomed


# ------------------------------------------------------------------------------------------------ misc


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise ValueError(
            f"snapshot key must be {KEY_SIZE} bytes (AES-256), got {_describe_length(key)}; "
            "check the configured snapshot key"
        )


def _check_seq(last_seq: int) -> None:
    if type(last_seq) is not int or not 0 <= last_seq <= _MAX_SEQ:
        raise ValueError(f"last_seq must be an int in [0, 2**64), got {last_seq!r}")


def _describe_length(value: object) -> str:
    if isinstance(value, bytes):
        return f"{len(value)} bytes"
    return f"a {type(value).__name__}"
