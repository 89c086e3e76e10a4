"""The journal scrub: read every sealed segment end to end, report damage, keep verified copies.

Recovery reads only the segments after the newest snapshot, so damage in an older segment (a
flipped bit on disk) stays invisible until the snapshots become unusable — and then ``--repair``
cuts the journal back to it, losing everything after. The scrub finds it while it is harmless:
the snapshotter runs it when it starts and after every snapshot (in a worker thread), logs each
damaged segment as an error, and records it on the engine handle, where ``/readyz`` (a detail)
and ``/metrics`` (``exness_journal_damaged_segments``) show it.

Sealed segments — every one but the last, which the engine appends to — never change, so a
copy verified once stays good: with ``[journal] archive_dir`` set, the scrub copies each
verified sealed segment there (temp file, fsync, rename). ``exness-actors verify DIR
[--archive DEST]`` does the same offline, the last segment included. Restoring a damaged
segment from its verified copy makes the journal whole again, no ``--repair`` needed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import attrs

from exness_actors._fsio import fsync_directory
from exness_actors.journal import SegmentCheck, check_segment, list_segments

__all__ = ["ScrubReport", "scrub", "archive_segment"]

log = logging.getLogger("exness.scrub")


@attrs.define(kw_only=True)
class ScrubReport:
    checked: list[SegmentCheck] = attrs.Factory(list)
    archived: list[Path] = attrs.Factory(list)

    @property
    def damaged(self) -> list[SegmentCheck]:
        """Defects that lose acknowledged records: any but a torn tail of the last segment."""
        last = self.checked[-1].path if self.checked else None
        return [check for check in self.checked
                if not check.ok and not (check.torn and check.path == last)]


def scrub(journal_directory: Path, *, include_last: bool = False,
          archive_dir: Optional[Path] = None) -> ScrubReport:
    """Verify the segments (the last one only with ``include_last``); copy the verified ones
    to ``archive_dir`` when given. Never modifies the journal."""
    segments = list_segments(journal_directory)
    if not include_last:
        segments = segments[:-1]
    report = ScrubReport()
    for path in segments:
        check = check_segment(path)
        report.checked.append(check)
        if check.ok and archive_dir is not None:
            copied = archive_segment(path, archive_dir, size=check.size)
            if copied is not None:
                report.archived.append(copied)
    for check in report.damaged:
        log.error("event=journal_damage segment=%s offset=%s reason=%r", check.path, check.defect_offset,
                  check.defect)
    return report


def archive_segment(path: Path, archive_dir: Path, *, size: int) -> Optional[Path]:
    """Copy a verified segment of ``size`` bytes unless the archive already has it at that size."""
    target = archive_dir / path.name
    if target.exists() and target.stat().st_size == size:
        return None
    archive_dir.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp")
    with open(path, "rb") as source, open(temporary, "wb") as copy:
        copy.write(source.read(size))     # the verified bytes only (the last segment may grow)
        copy.flush()
        os.fsync(copy.fileno())
    os.replace(temporary, target)
    fsync_directory(archive_dir)
    return target
