"""The journal: the engine's sequenced inputs, appended to segment files of CRC-checked frames.

Theory of operation
-------------------
Every input the engine accepts gets a sequence number and is appended to the journal before any of its
outputs leave the engine. The journal is a directory of *segments*; a segment is a plain file of
*frames*::

    u32 length | u32 crc32(payload) | payload        (little-endian; payload is opaque, msgpack in practice)

A segment is named ``journal-{first_seq:020d}.seg`` after the seq of the first record it holds, so sorting
the names sorts the journal, and a reader can tell which segments a snapshot already covers without
opening them. The writer appends each batch with one ``write`` (group commit) and is told the batch's first
seq, which names the next segment when the current one has grown past ``segment_bytes``.

Recovery reads the segments in order and tells apart two kinds of damage:

* a **torn tail**: the last segment ends in an incomplete frame, in zero-filled bytes, or in a frame whose
  CRC fails with nothing decodable after it. That is what a crash in the middle of an unsynced write
  leaves behind; those records were never acknowledged, so the tail is dropped and the file truncated to
  the end of the last good frame.
* **mid-journal corruption**: a bad frame in a segment that has later segments, or a bad frame followed by
  frames that still decode. Acknowledged records may be lost, so recovery refuses to guess and raises
  `JournalCorruption`; ``repair=True`` (``exness-actors run --repair``) truncates the journal at that point
  and sets everything after it aside as ``*.corrupt`` files; the scan reports the cut
  (`JournalCut`) with the frames past it that still pass their CRC, as evidence of what was lost.

`check_segment` reads one segment end to end without modifying it: the scrub and
``exness-actors verify`` use it to find damage in segments recovery no longer reads.

Invariants
----------
* Payloads are never empty. A zero-length frame is therefore invalid, and a zero-filled tail (a file
  extended by the filesystem but whose data never reached the disk) can never pass for frames.
* Only the last segment can have a torn tail: the writer fsyncs a segment before it starts the next one,
  so a damaged non-last segment is corruption, never a crash artefact.
* Scanning without ``repair`` never modifies the directory, and never creates it.
* This module is synchronous and does its own file I/O only; it knows nothing of seqs inside payloads,
  clocks or the event loop, so the engine can run it in a worker thread or a worker process.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import attrs

from exness_actors._fsio import fsync_directory

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "FRAME_HEADER",
    "FRAME_HEADER_SIZE",
    "MAX_PAYLOAD_BYTES",
    "JournalCorruption",
    "JournalCut",
    "JournalError",
    "JournalScan",
    "JournalWriter",
    "SegmentCheck",
    "TornTail",
    "check_segment",
    "encode_frame",
    "encode_frames",
    "iter_payloads",
    "list_segments",
    "salvage_payloads",
    "scan_journal",
    "segment_first_seq",
    "segment_name",
    "truncate_torn_tail",
]

StrPath = str | os.PathLike[str]

FRAME_HEADER = struct.Struct("<II")
FRAME_HEADER_SIZE = FRAME_HEADER.size
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
"""Largest payload a frame may carry; a header announcing more is treated as corruption."""
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024

_SEGMENT_NAME = re.compile(r"journal-(\d{20})\.seg")
_CORRUPT_SUFFIX = ".corrupt"
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


# --------------------------------------------------------------------------------------------- errors


class JournalError(Exception):
    """The journal cannot be read or written as asked."""


class JournalCorruption(JournalError):
    """A bad frame where a crash cannot explain it: acknowledged records may be damaged."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        self.where = f"journal segment {path} is corrupt at byte offset {offset}: {reason}"
        super().__init__(
            f"{self.where}. "
            "Refusing to start, because records after this point may have been acknowledged. "
            "If a verified copy of the segment exists (`[journal] archive_dir`, `exness-actors verify --archive`), "
            "copy it back: nothing is lost. Otherwise "
            "`exness-actors run --repair` truncates the journal at this point: everything from byte "
            f"{offset} of {path.name} onwards, and every later segment, is lost (set aside as *.corrupt files)."
        )


# ---------------------------------------------------------------------------------------------- frames


def encode_frame(payload: bytes) -> bytes:
    """Return one frame: header (length, crc32) followed by `payload`."""
    _check_payload(payload)
    return FRAME_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def encode_frames(payloads: Iterable[bytes]) -> bytes:
    """Return the frames of a whole batch as one bytes object, ready for a single write."""
    parts: list[bytes] = []
    for payload in payloads:
        _check_payload(payload)
        parts.append(FRAME_HEADER.pack(len(payload), zlib.crc32(payload)))
        parts.append(payload)
    return b"".join(parts)


def _check_payload(payload: bytes) -> None:
    if not payload:
        raise ValueError("journal payload must not be empty (zero-length frames are reserved as invalid)")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"journal payload is {len(payload)} bytes; the maximum is {MAX_PAYLOAD_BYTES} bytes")


# -------------------------------------------------------------------------------------------- segments


def segment_name(first_seq: int) -> str:
    """File name of the segment whose first record has seq `first_seq`."""
    if first_seq < 0:
        raise ValueError(f"first_seq must be >= 0, got {first_seq}")
    return f"journal-{first_seq:020d}.seg"


def segment_first_seq(path: StrPath) -> int:
    """The first seq encoded in a segment's file name."""
    match = _SEGMENT_NAME.fullmatch(Path(path).name)
    if match is None:
        raise ValueError(f"{os.fspath(path)!r} is not a journal segment name (expected journal-<20 digits>.seg)")
    return int(match.group(1))


def list_segments(directory: StrPath) -> list[Path]:
    """Segment files in `directory`, sorted by first seq; [] if the directory does not exist."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    # Zero-padded names sort like their numbers.
    return [Path(directory, name) for name in sorted(names) if _SEGMENT_NAME.fullmatch(name)]


# ---------------------------------------------------------------------------------------------- reading


@attrs.frozen(kw_only=True)
class TornTail:
    """The unacknowledged end of the last segment, left by a crash during a write."""

    path: Path
    offset: int
    """End of the last good frame: the size the file is truncated to."""
    dropped_bytes: int
    reason: str


@attrs.frozen(kw_only=True)
class JournalCut:
    """Where ``repair=True`` cut the journal at mid-journal corruption, and what it could still read after."""

    path: Path
    offset: int
    reason: str
    salvaged: list[bytes]
    """Payloads with a good CRC found past the bad frame (in the cut-off bytes and later segments),
    in file order: evidence of what the cut lost (their seqs, ids, accounts), never replayed."""
    evidence: list[Path]
    """The ``*.corrupt`` files the cut-off bytes and segments were set aside as."""


@attrs.define(kw_only=True)
class JournalScan:
    """What `scan_journal` read and found."""

    payloads: list[bytes]
    segments: list[Path]
    """Segments read, in order; after a repair, only those still part of the journal."""
    torn_tail: TornTail | None
    repaired: list[str]
    """Human-readable descriptions of what ``repair=True`` changed on disk."""
    end_offset: int
    """Where good data ends in the last segment (0 when there is none)."""
    cut: JournalCut | None = None
    """Set when ``repair=True`` cut the journal at mid-journal corruption."""


@attrs.frozen
class _Defect:
    offset: int
    reason: str
    torn: bool
    """True when a crash during an append explains it (only meaningful for the last segment)."""


class _FrameCounter:
    """Stands in for the payload list where only the number of good frames matters (a scrub)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def append(self, _payload: bytes) -> None:
        self.count += 1


def _read_frames(
    data: bytes, offset: int, payloads: list[bytes] | _FrameCounter | None
) -> tuple[int, _Defect | None]:
    """Walk frames from `offset`, appending payloads; return where good data ends and the defect there.

    The hot loop of recovery: one unpack, one slice and one crc per frame, nothing else.
    """
    end = len(data)
    last_header_start = end - FRAME_HEADER_SIZE
    unpack_header = FRAME_HEADER.unpack_from
    crc32 = zlib.crc32
    append = payloads.append if payloads is not None else _discard
    while offset <= last_header_start:
        length, crc = unpack_header(data, offset)
        start = offset + FRAME_HEADER_SIZE
        stop = start + length
        if stop > end or not 0 < length <= MAX_PAYLOAD_BYTES:
            break
        payload = data[start:stop]
        if crc32(payload) != crc:
            break
        append(payload)
        offset = stop
    if offset == end:
        return offset, None
    return offset, _classify(data, offset)


def _discard(payload: bytes) -> None:
    pass


def _classify(data: bytes, offset: int) -> _Defect:
    """Explain the bad frame at `offset` and decide whether a torn append explains it."""
    end = len(data)
    remaining = end - offset
    if data.count(0, offset) == remaining:
        return _Defect(offset, f"{remaining} zero-filled bytes where a frame should start", torn=True)
    if remaining < FRAME_HEADER_SIZE:
        return _Defect(offset, f"incomplete frame header ({remaining} of {FRAME_HEADER_SIZE} bytes)", torn=True)
    length, stored_crc = FRAME_HEADER.unpack_from(data, offset)
    if length == 0:
        return _Defect(offset, "frame length 0 (frames are never empty)", torn=False)
    if length > MAX_PAYLOAD_BYTES:
        return _Defect(offset, f"frame length {length} exceeds the maximum of {MAX_PAYLOAD_BYTES} bytes", torn=False)
    stop = offset + FRAME_HEADER_SIZE + length
    if stop > end:
        return _Defect(
            offset,
            f"frame of {length} payload bytes runs past the end of the file "
            f"({remaining - FRAME_HEADER_SIZE} payload bytes present)",
            torn=True,
        )
    computed_crc = zlib.crc32(memoryview(data)[offset + FRAME_HEADER_SIZE : stop])
    reason = f"CRC mismatch (stored {stored_crc:#010x}, computed {computed_crc:#010x}) on a {length}-byte frame"
    # A torn write explains a bad frame only if nothing after it still decodes.
    following = len(salvage_payloads(data, stop))
    if following:
        return _Defect(offset, f"{reason}, followed by {following} good frame(s)", torn=False)
    return _Defect(offset, reason, torn=True)


def salvage_payloads(data: bytes, offset: int = 0) -> list[bytes]:
    """Payloads with a good CRC from `offset` on, stepping over bad frames by their length field.

    For reports only: a frame after a bad one may be anything, so nothing salvaged is replayed.
    Stops where the boundaries can no longer be followed (incomplete frame or impossible length).
    """
    end = len(data)
    payloads: list[bytes] = []
    while end - offset >= FRAME_HEADER_SIZE:
        length, crc = FRAME_HEADER.unpack_from(data, offset)
        start = offset + FRAME_HEADER_SIZE
        stop = start + length
        if stop > end or not 0 < length <= MAX_PAYLOAD_BYTES:
            break
        if zlib.crc32(memoryview(data)[start:stop]) == crc:
            payloads.append(data[start:stop])
        offset = stop
    return payloads


@attrs.frozen(kw_only=True)
class SegmentCheck:
    """One segment's frames verified end to end (a scrub, ``exness-actors verify``)."""

    path: Path
    size: int
    frames: int
    defect_offset: int | None = None
    defect: str | None = None
    torn: bool = False
    """The defect is one a crash during an append explains (harmless only in the last segment)."""

    @property
    def ok(self) -> bool:
        return self.defect is None

    def describe(self) -> str:
        if self.defect is None:
            return f"{self.path.name}: {self.frames} frames, {self.size} bytes, ok"
        return f"{self.path.name} at byte {self.defect_offset}: {self.defect}"


def check_segment(path: Path) -> SegmentCheck:
    """Read every frame of one segment and check its framing and CRC; never modifies it."""
    data = _read_file(path)
    frames = _FrameCounter()
    end_offset, defect = _read_frames(data, 0, frames)
    if defect is None:
        return SegmentCheck(path=path, size=len(data), frames=frames.count)
    return SegmentCheck(path=path, size=len(data), frames=frames.count, defect_offset=end_offset,
                        defect=defect.reason, torn=defect.torn)


def _check_after_seq(after_seq: int | None) -> None:
    if after_seq is not None and after_seq < 0:
        raise ValueError(f"after_seq must be >= 0 or None, got {after_seq}")


def _segments_to_read(directory: StrPath, after_seq: int | None) -> list[Path]:
    """All segments, minus those whose records all have seq <= `after_seq` (covered by a snapshot)."""
    segments = list_segments(directory)
    if after_seq is None:
        return segments
    first = 0
    # Segment i holds seqs < first_seq(i + 1); skip it when that bound is <= after_seq + 1.
    while first + 1 < len(segments) and segment_first_seq(segments[first + 1]) <= after_seq + 1:
        first += 1
    return segments[first:]


def scan_journal(directory: StrPath, *, repair: bool = False, after_seq: int | None = None) -> JournalScan:
    """Read every segment of the journal in `directory`, in order, and return the good payloads.

    A torn tail of the last segment is reported in `JournalScan.torn_tail` (the file is left alone unless
    `repair` is set; see `truncate_torn_tail`). Mid-journal corruption raises `JournalCorruption`, or with
    ``repair=True`` truncates the journal at the bad frame and renames the later segments to ``*.corrupt``.

    `after_seq` skips whole segments whose records all have seq <= after_seq (what a snapshot covers);
    the first segment read may still start before it, so the caller filters by the seq in the payloads.
    A missing directory is an empty journal.
    """
    _check_after_seq(after_seq)
    segments = _segments_to_read(directory, after_seq)
    payloads: list[bytes] = []
    scanned: list[Path] = []
    repaired: list[str] = []
    torn_tail: TornTail | None = None
    cut: JournalCut | None = None
    end_offset = 0
    for index, path in enumerate(segments):
        data = _read_file(path)
        scanned.append(path)
        end_offset, defect = _read_frames(data, 0, payloads)
        if defect is None:
            continue
        is_last = index == len(segments) - 1
        if is_last and defect.torn:
            torn_tail = TornTail(
                path=path, offset=end_offset, dropped_bytes=len(data) - end_offset, reason=defect.reason
            )
            if repair:
                _truncate(path, end_offset)
                repaired.append(
                    f"truncated torn tail of {path.name} at byte {end_offset} "
                    f"({torn_tail.dropped_bytes} bytes dropped: {defect.reason})"
                )
            break
        reason = defect.reason if is_last else f"{defect.reason}, in a segment followed by later segments"
        if not repair:
            raise JournalCorruption(path, end_offset, reason)
        later = segments[index + 1 :]
        salvaged = salvage_payloads(data, end_offset)
        for segment in later:
            salvaged.extend(salvage_payloads(_read_file(segment)))
        evidence = _set_aside(path, data, end_offset, reason, later=later, done=repaired)
        cut = JournalCut(path=path, offset=end_offset, reason=reason, salvaged=salvaged, evidence=evidence)
        break
    return JournalScan(
        payloads=payloads, segments=scanned, torn_tail=torn_tail, repaired=repaired, end_offset=end_offset,
        cut=cut,
    )


def iter_payloads(directory: StrPath, *, after_seq: int | None = None) -> Iterator[bytes]:
    """Yield the journal's payloads in order, holding one segment in memory at a time.

    Stops quietly at a torn tail of the last segment (without modifying it). Raises `JournalCorruption`
    on mid-journal corruption, after having yielded every good payload before it. `after_seq` as in
    `scan_journal`.
    """
    _check_after_seq(after_seq)
    segments = _segments_to_read(directory, after_seq)
    for index, path in enumerate(segments):
        data = _read_file(path)
        payloads: list[bytes] = []
        end_offset, defect = _read_frames(data, 0, payloads)
        yield from payloads
        if defect is None:
            continue
        is_last = index == len(segments) - 1
        if is_last and defect.torn:
            return
        reason = defect.reason if is_last else f"{defect.reason}, in a segment followed by later segments"
        raise JournalCorruption(path, end_offset, reason)


def truncate_torn_tail(scan: JournalScan) -> bool:
    """Truncate the torn tail `scan` found; return False when there is nothing (left) to truncate.

    Refuses (JournalError) if the file has changed size since the scan, rather than cut fresh data.
    """
    tail = scan.torn_tail
    if tail is None:
        return False
    size = os.stat(tail.path).st_size
    if size == tail.offset:
        return False
    if size != tail.offset + tail.dropped_bytes:
        raise JournalError(
            f"{tail.path} is {size} bytes but was {tail.offset + tail.dropped_bytes} bytes when scanned; "
            "refusing to truncate a segment that changed since it was scanned (scan again)"
        )
    _truncate(tail.path, tail.offset)
    return True


def _read_file(path: Path) -> bytes:
    with open(path, "rb", buffering=0) as file:
        return file.read()


def _truncate(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | _O_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _set_aside(path: Path, data: bytes, offset: int, reason: str, *, later: list[Path],
               done: list[str]) -> list[Path]:
    """Repair: keep `path` up to `offset`, move the rest and every later segment to ``*.corrupt`` files;
    describe each step in `done`; return the ``*.corrupt`` files.

    The bad bytes are kept as evidence rather than deleted: an operator may want to inspect them.
    """
    tail = data[offset:]
    evidence = _unused_path(path.with_name(f"{path.name}.from-{offset}{_CORRUPT_SUFFIX}"))
    _write_durably(evidence, tail)
    _truncate(path, offset)
    done.append(
        f"truncated {path.name} at byte {offset} ({reason}); "
        f"the {len(tail)} bytes after it were saved to {evidence.name}"
    )
    evidence_files = [evidence]
    for segment in later:
        target = _unused_path(segment.with_name(segment.name + _CORRUPT_SUFFIX))
        os.replace(segment, target)
        done.append(f"set aside later segment {segment.name} as {target.name}")
        evidence_files.append(target)
    fsync_directory(path.parent)
    return evidence_files


def _unused_path(path: Path) -> Path:
    candidate = path
    counter = 0
    while candidate.exists():
        counter += 1
        candidate = path.with_name(f"{path.name}.{counter}")
    return candidate


def _write_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o600)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> int:
    """Write all of `data` to `fd`, looping over short writes; return the byte count."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return len(data)


# ---------------------------------------------------------------------------------------------- writing


class JournalWriter:
    """Appends already-encoded frames to the journal in `directory`, rotating segments by size.

    Opening validates the last segment: a torn tail is truncated (and reported in `recovered_torn_tail`),
    mid-segment corruption raises `JournalCorruption`. Earlier segments are `scan_journal`'s business.

    Calls may come from a worker thread (the engine runs `append` and `fsync` via ``trio.to_thread``), but
    not from several threads at once: all state lives in the instance, none of it is locked.
    """

    def __init__(self, directory: StrPath, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        if segment_bytes <= 0:
            raise ValueError(f"segment_bytes must be > 0, got {segment_bytes}")
        self._directory = Path(directory)
        self._segment_bytes = segment_bytes
        self._fd: int | None = None
        self._segment_path: Path | None = None
        self._segment_size = 0
        self._directory_dirty = False
        self._failed: BaseException | None = None
        self._closed = False
        self._rotate_next = False
        self._bytes_written = 0
        self.recovered_torn_tail: TornTail | None = None
        """The torn tail truncated when this writer opened, if any (for the engine to log)."""

        self._directory.mkdir(parents=True, exist_ok=True)
        segments = list_segments(self._directory)
        self._segment_count = len(segments)
        if segments:
            self._open_existing(segments[-1])

    def _open_existing(self, path: Path) -> None:
        data = _read_file(path)
        end_offset, defect = _read_frames(data, 0, None)
        if defect is not None and not defect.torn:
            raise JournalCorruption(path, end_offset, defect.reason)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | _O_CLOEXEC)
        if defect is not None:
            try:
                os.ftruncate(fd, end_offset)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            self.recovered_torn_tail = TornTail(
                path=path, offset=end_offset, dropped_bytes=len(data) - end_offset, reason=defect.reason
            )
        self._fd = fd
        self._segment_path = path
        self._segment_size = end_offset

    # -- stats

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def segment_path(self) -> Path | None:
        """The segment being appended to; None until the first append into an empty journal."""
        return self._segment_path

    @property
    def segment_size(self) -> int:
        return self._segment_size

    @property
    def segments(self) -> int:
        """Number of segment files in the journal."""
        return self._segment_count

    @property
    def bytes_written(self) -> int:
        """Bytes appended by this writer since it opened."""
        return self._bytes_written

    # -- operations

    def append(self, data: bytes, *, first_seq: int) -> None:
        """Append encoded frames (see `encode_frames`) with one write loop.

        `first_seq` is the seq of the first record in `data`; it names the new segment when the current one
        has reached `segment_bytes` and is ignored otherwise. Not durable until `fsync`.
        """
        self._check_usable()
        if not data:
            return
        if self._fd is None or self._segment_size >= self._segment_bytes or self._rotate_next:
            self._rotate_next = False
            self._start_segment(first_seq)
        assert self._fd is not None
        try:
            _write_all(self._fd, data)
        except BaseException as error:
            # Part of the batch may be in the file; only reopening (which truncates the torn tail)
            # brings the writer back to a frame boundary.
            self._failed = error
            raise
        self._segment_size += len(data)
        self._bytes_written += len(data)

    def rotate_before_next_append(self) -> None:
        """Start a new segment at the next append (after a snapshot, so recovery can skip whole
        segments the snapshot covers instead of decoding and skipping their records)."""
        if self._segment_size:
            self._rotate_next = True

    def fsync(self) -> None:
        """Make every appended byte durable, and the entry of any segment created since the last fsync."""
        self._check_usable()
        if self._fd is not None:
            os.fsync(self._fd)
        if self._directory_dirty:
            fsync_directory(self._directory)
            self._directory_dirty = False

    def close(self) -> None:
        """Close the segment file. Does not fsync; idempotent."""
        self._closed = True
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_usable(self) -> None:
        if self._closed:
            raise JournalError(f"journal writer for {self._directory} is closed")
        if self._failed is not None:
            raise JournalError(
                f"an earlier write to {self._segment_path} failed ({self._failed!r}); "
                "the segment may end in a partial frame: reopen the journal to recover"
            )

    def _start_segment(self, first_seq: int) -> None:
        path = self._directory / segment_name(first_seq)
        if self._segment_path is not None:
            current_first_seq = segment_first_seq(self._segment_path)
            if first_seq <= current_first_seq:
                raise ValueError(
                    f"new segment first_seq {first_seq} must be greater than the current segment's "
                    f"first seq {current_first_seq} ({self._segment_path.name})"
                )
        if self._fd is not None:
            # Only the last segment may ever hold a torn tail: finish this one durably first.
            fd, self._fd = self._fd, None
            os.fsync(fd)
            os.close(fd)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o600)
        except FileExistsError:
            raise JournalError(f"cannot start segment {path}: it already exists") from None
        self._fd = fd
        self._segment_path = path
        self._segment_size = 0
        self._segment_count += 1
        self._directory_dirty = True
