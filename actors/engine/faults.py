"""Fatal I/O errors and the process exit codes that name them.

A journal that cannot be written (disk full, an I/O error, a read-only remount) stops the engine:
acknowledged commands are durable, the batch being written was acknowledged to no one. The
supervisor then answers what is in flight (503), stops like on SIGTERM (without the final
snapshot: the state in memory may be ahead of the journal) and exits with one line on stderr and
an exit code that says why (:data:`EXIT_CODES`, documented in docs/operations.md).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Optional

__all__ = ["FatalIOError", "fatal_io_error", "EXIT_OK", "EXIT_BUG", "EXIT_CANNOT_START", "EXIT_DISK_FULL",
           "EXIT_IO_ERROR", "EXIT_INTERRUPTED", "EXIT_CODES"]

EXIT_OK = 0
EXIT_BUG = 1
EXIT_CANNOT_START = 2
EXIT_DISK_FULL = 3
EXIT_IO_ERROR = 4
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "stopped cleanly (SIGTERM/SIGINT: drained, journal flushed, final snapshot written)",
    EXIT_BUG: "an unexpected error (a bug): the traceback is in the log",
    EXIT_CANNOT_START: "could not start: configuration, data dir, journal damage, port in use (one line says which)",
    EXIT_DISK_FULL: "stopped because a disk filled up (the line names the file and the space left)",
    EXIT_IO_ERROR: "stopped on another fatal I/O error (the line names the operation, the file and the error)",
    EXIT_INTERRUPTED: "interrupted (SIGINT) before it was ready",
}

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class FatalIOError(Exception):
    """An I/O error the process cannot go on after; ``str()`` is the one line for the operator."""

    def __init__(self, message: str, *, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fatal_io_error(error: OSError, *, what: str, path: Optional[Path], consequence: str) -> FatalIOError:
    """``error`` (raised while doing ``what`` to ``path``) as a :class:`FatalIOError` whose message
    says what failed, where, the error, the space left there and ``consequence``."""
    reason = error.strerror or str(error)
    where = f" {path}" if path is not None else ""
    space = _free_space(path) if path is not None else ""
    if error.errno in _DISK_FULL:
        return FatalIOError(f"disk full: {what}{where} failed ({reason}){space}; {consequence}",
                            exit_code=EXIT_DISK_FULL)
    return FatalIOError(f"I/O error: {what}{where} failed ({reason}){space}; {consequence}",
                        exit_code=EXIT_IO_ERROR)


def _free_space(path: Path) -> str:
    """``"; 0 B free of 16.0 MiB on /data"`` for the file system holding ``path``, or ``""``."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        stats = os.statvfs(existing)
    except OSError:
        return ""
    free = stats.f_bavail * stats.f_frsize
    total = stats.f_blocks * stats.f_frsize
    return f"; {_size(free)} free of {_size(total)} on that file system"


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    size = count / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if size < 1024:
            break
        size /= 1024
    return f"{size:.1f} {unit}"
