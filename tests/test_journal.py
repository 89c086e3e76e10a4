"""Journal segments: framing, rotation, torn-tail recovery, corruption detection and repair."""

from __future__ import annotations

import struct
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exness_actors.journal import (
    FRAME_HEADER_SIZE,
    MAX_PAYLOAD_BYTES,
    JournalCorruption,
    JournalError,
    JournalWriter,
    encode_frame,
    encode_frames,
    iter_payloads,
    list_segments,
    scan_journal,
    segment_first_seq,
    segment_name,
    truncate_torn_tail,
)

# ----------------------------------------------------------------------------------------- helpers


def make_payloads(count: int, *, start: int = 1) -> list[bytes]:
    """Distinct payloads of varying length; payload i carries seq i."""
    return [f"record-{seq}:".encode() + b"x" * (seq % 13) for seq in range(start, start + count)]


def write_journal(
    directory: Path, payloads: list[bytes], *, first_seq: int = 1, batch: int = 5, segment_bytes: int = 1 << 20
) -> None:
    """Append `payloads` in batches, the way the engine does (one write per batch, fsync per batch)."""
    with JournalWriter(directory, segment_bytes=segment_bytes) as writer:
        for index in range(0, len(payloads), batch):
            writer.append(encode_frames(payloads[index : index + batch]), first_seq=first_seq + index)
            writer.fsync()


def frame_starts(data: bytes) -> list[int]:
    """Offsets of the frames in a well-formed segment, decoded independently of the module under test."""
    starts = []
    offset = 0
    while offset < len(data):
        starts.append(offset)
        (length,) = struct.unpack_from("<I", data, offset)
        offset += FRAME_HEADER_SIZE + length
    return starts


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------------------- frames


def test_encode_frame_is_length_crc_payload_little_endian() -> None:
    payload = b"\x81\xa3seq\x07"

    frame = encode_frame(payload)

    assert frame == struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def test_encode_frames_concatenates_frames() -> None:
    payloads = make_payloads(3)

    data = encode_frames(payloads)

    assert data == b"".join(encode_frame(payload) for payload in payloads)


@pytest.mark.parametrize("payload", [b"", b"x" * (MAX_PAYLOAD_BYTES + 1)], ids=["empty", "too-big"])
def test_encode_frame_rejects_invalid_payloads(payload: bytes) -> None:
    with pytest.raises(ValueError, match="payload"):
        encode_frame(payload)


def test_segment_names_sort_by_first_seq() -> None:
    assert segment_name(42) == "journal-00000000000000000042.seg"
    assert segment_first_seq(Path("/data") / segment_name(42)) == 42
    assert sorted([segment_name(10), segment_name(9)]) == [segment_name(9), segment_name(10)]


# ----------------------------------------------------------------------------------------- round trip


def test_round_trip_over_several_segments(tmp_path: Path) -> None:
    payloads = make_payloads(500)

    write_journal(tmp_path, payloads, batch=7, segment_bytes=1024)
    scan = scan_journal(tmp_path)

    assert scan.payloads == payloads
    assert list(iter_payloads(tmp_path)) == payloads
    assert scan.torn_tail is None
    assert scan.repaired == []
    assert len(scan.segments) > 3
    assert scan.segments == list_segments(tmp_path)
    assert scan.end_offset == scan.segments[-1].stat().st_size


def test_each_segment_is_named_after_its_first_record(tmp_path: Path) -> None:
    payloads = make_payloads(200)
    write_journal(tmp_path, payloads, batch=4, segment_bytes=512)

    segments = list_segments(tmp_path)

    for segment in segments:
        first_payload = scan_journal_segment_first_payload(segment)
        assert first_payload.startswith(f"record-{segment_first_seq(segment)}:".encode())


def scan_journal_segment_first_payload(segment: Path) -> bytes:
    data = segment.read_bytes()
    (length,) = struct.unpack_from("<I", data, 0)
    return data[FRAME_HEADER_SIZE : FRAME_HEADER_SIZE + length]


def test_rotation_happens_only_once_the_segment_is_full(tmp_path: Path) -> None:
    frame = encode_frame(b"a" * 92)  # 100 bytes

    with JournalWriter(tmp_path, segment_bytes=300) as writer:
        for seq in range(1, 5):
            writer.append(frame, first_seq=seq)
        segments = writer.segments
        bytes_written = writer.bytes_written

    assert segments == 2
    assert bytes_written == 400
    assert [path.stat().st_size for path in list_segments(tmp_path)] == [300, 100]
    assert [segment_first_seq(path) for path in list_segments(tmp_path)] == [1, 4]


def test_reopened_writer_appends_to_the_last_segment(tmp_path: Path) -> None:
    first, second = make_payloads(10), make_payloads(10, start=11)
    write_journal(tmp_path, first)

    write_journal(tmp_path, second, first_seq=11)

    assert len(list_segments(tmp_path)) == 1
    assert scan_journal(tmp_path).payloads == first + second


def test_new_segment_must_start_after_the_current_one(tmp_path: Path) -> None:
    with JournalWriter(tmp_path, segment_bytes=1) as writer:
        writer.append(encode_frame(b"one"), first_seq=5)

        with pytest.raises(ValueError, match="first_seq 5 must be greater"):
            writer.append(encode_frame(b"two"), first_seq=5)


def test_closed_writer_refuses_to_append(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path)
    writer.close()

    with pytest.raises(JournalError, match="closed"):
        writer.append(encode_frame(b"late"), first_seq=1)


def test_empty_append_creates_no_segment(tmp_path: Path) -> None:
    with JournalWriter(tmp_path) as writer:
        writer.append(b"", first_seq=1)
        writer.fsync()

    assert list_segments(tmp_path) == []


# ---------------------------------------------------------------------------------------- empty journal


def test_missing_directory_is_an_empty_journal_and_is_not_created(tmp_path: Path) -> None:
    directory = tmp_path / "absent"

    scan = scan_journal(directory)

    assert (scan.payloads, scan.segments, scan.torn_tail, scan.end_offset) == ([], [], None, 0)
    assert list(iter_payloads(directory)) == []
    assert not directory.exists()


def test_empty_directory_is_an_empty_journal(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a segment")

    scan = scan_journal(tmp_path)

    assert scan.payloads == []
    assert scan.segments == []


def test_writer_creates_the_directory(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "journal"

    write_journal(directory, make_payloads(3), first_seq=1)

    assert [path.name for path in list_segments(directory)] == [segment_name(1)]


# ------------------------------------------------------------------------------------------ torn tails


def cut_inside_header(data: bytes) -> bytes:
    return data + encode_frame(b"never acknowledged")[:5]


def cut_inside_payload(data: bytes) -> bytes:
    return data + encode_frame(b"never acknowledged")[:-3]


def zeros_appended(data: bytes) -> bytes:
    return data + bytes(4096)


def bad_crc_on_final_frame(data: bytes) -> bytes:
    frame = bytearray(encode_frame(b"never acknowledged"))
    frame[-1] ^= 0x01
    return data + bytes(frame)


def bad_crc_then_incomplete_frame(data: bytes) -> bytes:
    frame = bytearray(encode_frame(b"never acknowledged"))
    frame[-1] ^= 0x01
    return data + bytes(frame) + encode_frame(b"also lost")[:-2]


def bad_crc_then_zeros(data: bytes) -> bytes:
    return bad_crc_on_final_frame(data) + bytes(100)


TORN_TAILS = [
    cut_inside_header,
    cut_inside_payload,
    zeros_appended,
    bad_crc_on_final_frame,
    bad_crc_then_incomplete_frame,
    bad_crc_then_zeros,
]


def journal_with_torn_tail(directory: Path, tear: Callable[[bytes], bytes]) -> tuple[list[bytes], Path, int]:
    """A two-segment journal whose last segment got `tear`; returns (payloads, last segment, good size)."""
    payloads = make_payloads(40)
    write_journal(directory, payloads, segment_bytes=512)
    last = list_segments(directory)[-1]
    good = last.read_bytes()
    last.write_bytes(tear(good))
    return payloads, last, len(good)


@pytest.mark.parametrize("tear", TORN_TAILS)
def test_torn_tail_is_reported_and_the_good_frames_kept(tmp_path: Path, tear: Callable[[bytes], bytes]) -> None:
    payloads, last, good_size = journal_with_torn_tail(tmp_path, tear)
    torn_size = last.stat().st_size

    scan = scan_journal(tmp_path)

    assert scan.payloads == payloads
    assert scan.torn_tail is not None
    assert scan.torn_tail.path == last
    assert scan.torn_tail.offset == good_size
    assert scan.torn_tail.dropped_bytes == torn_size - good_size
    assert scan.end_offset == good_size
    assert last.stat().st_size == torn_size, "a scan without repair must not modify the journal"


@pytest.mark.parametrize("tear", TORN_TAILS)
def test_truncated_torn_tail_lets_a_writer_append_cleanly(tmp_path: Path, tear: Callable[[bytes], bytes]) -> None:
    payloads, last, good_size = journal_with_torn_tail(tmp_path, tear)
    more = make_payloads(5, start=len(payloads) + 1)

    truncated = truncate_torn_tail(scan_journal(tmp_path))
    write_journal(tmp_path, more, first_seq=len(payloads) + 1)
    rescan = scan_journal(tmp_path)

    assert truncated is True
    assert rescan.payloads == payloads + more
    assert rescan.torn_tail is None


@pytest.mark.parametrize("tear", TORN_TAILS)
def test_opening_a_writer_truncates_the_torn_tail(tmp_path: Path, tear: Callable[[bytes], bytes]) -> None:
    payloads, last, good_size = journal_with_torn_tail(tmp_path, tear)

    writer = JournalWriter(tmp_path, segment_bytes=512)
    writer.append(encode_frame(b"after recovery"), first_seq=len(payloads) + 1)
    writer.fsync()
    writer.close()

    assert writer.recovered_torn_tail is not None
    assert writer.recovered_torn_tail.offset == good_size
    assert scan_journal(tmp_path).payloads == [*payloads, b"after recovery"]


@pytest.mark.parametrize("tear", TORN_TAILS)
def test_iter_payloads_stops_quietly_at_a_torn_tail(tmp_path: Path, tear: Callable[[bytes], bytes]) -> None:
    payloads, _, _ = journal_with_torn_tail(tmp_path, tear)

    assert list(iter_payloads(tmp_path)) == payloads


def test_truncate_torn_tail_is_idempotent_and_a_no_op_without_one(tmp_path: Path) -> None:
    journal_with_torn_tail(tmp_path, zeros_appended)
    scan = scan_journal(tmp_path)

    first, second = truncate_torn_tail(scan), truncate_torn_tail(scan)

    assert (first, second) == (True, False)
    assert truncate_torn_tail(scan_journal(tmp_path)) is False


def test_truncate_torn_tail_refuses_when_the_file_changed(tmp_path: Path) -> None:
    _, last, _ = journal_with_torn_tail(tmp_path, cut_inside_payload)
    scan = scan_journal(tmp_path)
    with last.open("ab") as file:
        file.write(b"more bytes")

    with pytest.raises(JournalError, match="changed since it was scanned"):
        truncate_torn_tail(scan)


def test_scan_with_repair_truncates_a_torn_tail(tmp_path: Path) -> None:
    payloads, last, good_size = journal_with_torn_tail(tmp_path, cut_inside_payload)

    scan = scan_journal(tmp_path, repair=True)

    assert scan.payloads == payloads
    assert last.stat().st_size == good_size
    assert len(scan.repaired) == 1


# ------------------------------------------------------------------------------------------ corruption


def test_bad_crc_in_the_middle_of_the_last_segment_is_corruption(tmp_path: Path) -> None:
    write_journal(tmp_path, make_payloads(9))
    (segment,) = list_segments(tmp_path)
    middle = frame_starts(segment.read_bytes())[4]
    flip_byte(segment, middle + FRAME_HEADER_SIZE + 2)

    with pytest.raises(JournalCorruption) as caught:
        scan_journal(tmp_path)

    assert caught.value.path == segment
    assert caught.value.offset == middle
    assert "CRC mismatch" in caught.value.reason
    message = str(caught.value)
    assert str(segment) in message
    assert f"byte offset {middle}" in message
    assert "exness-actors run --repair" in message


def test_good_frame_after_several_bad_ones_makes_it_corruption(tmp_path: Path) -> None:
    write_journal(tmp_path, make_payloads(9))
    (segment,) = list_segments(tmp_path)
    starts = frame_starts(segment.read_bytes())
    for start in starts[5:8]:
        flip_byte(segment, start + FRAME_HEADER_SIZE)

    with pytest.raises(JournalCorruption, match="followed by 1 good frame") as caught:
        scan_journal(tmp_path)

    assert caught.value.offset == starts[5]


def test_damage_in_a_non_last_segment_is_corruption_even_at_its_end(tmp_path: Path) -> None:
    write_journal(tmp_path, make_payloads(60), segment_bytes=512)
    first = list_segments(tmp_path)[0]
    last_frame = frame_starts(first.read_bytes())[-1]
    flip_byte(first, first.stat().st_size - 1)

    with pytest.raises(JournalCorruption) as caught:
        scan_journal(tmp_path)

    assert (caught.value.path, caught.value.offset) == (first, last_frame)
    assert "followed by later segments" in caught.value.reason


def test_incomplete_frame_in_a_non_last_segment_is_corruption(tmp_path: Path) -> None:
    write_journal(tmp_path, make_payloads(60), segment_bytes=512)
    first = list_segments(tmp_path)[0]
    data = first.read_bytes()
    last_frame = frame_starts(data)[-1]
    first.write_bytes(data[:-3])

    with pytest.raises(JournalCorruption) as caught:
        scan_journal(tmp_path)

    assert (caught.value.path, caught.value.offset) == (first, last_frame)


def test_impossible_length_followed_by_data_is_corruption(tmp_path: Path) -> None:
    write_journal(tmp_path, make_payloads(5))
    (segment,) = list_segments(tmp_path)
    good_size = segment.stat().st_size
    with segment.open("ab") as file:
        file.write(struct.pack("<II", MAX_PAYLOAD_BYTES + 1, 0) + b"garbage")

    with pytest.raises(JournalCorruption, match="exceeds the maximum") as caught:
        scan_journal(tmp_path)

    assert caught.value.offset == good_size


def test_iter_payloads_raises_on_corruption_after_the_good_prefix(tmp_path: Path) -> None:
    payloads = make_payloads(9)
    write_journal(tmp_path, payloads)
    (segment,) = list_segments(tmp_path)
    flip_byte(segment, frame_starts(segment.read_bytes())[4] + FRAME_HEADER_SIZE)
    seen: list[bytes] = []

    with pytest.raises(JournalCorruption):
        for payload in iter_payloads(tmp_path):
            seen.append(payload)

    assert seen == payloads[:4]


def test_writer_refuses_to_open_a_corrupt_last_segment(tmp_path: Path) -> None:
    write_journal(tmp_path, make_payloads(9))
    (segment,) = list_segments(tmp_path)
    flip_byte(segment, frame_starts(segment.read_bytes())[2] + FRAME_HEADER_SIZE)
    size_before = segment.stat().st_size

    with pytest.raises(JournalCorruption):
        JournalWriter(tmp_path)

    assert segment.stat().st_size == size_before


def test_repair_keeps_the_good_prefix_and_sets_the_rest_aside(tmp_path: Path) -> None:
    payloads = make_payloads(60)
    write_journal(tmp_path, payloads, segment_bytes=512)
    segments = list_segments(tmp_path)
    assert len(segments) >= 3
    damaged = segments[1]
    damaged_data = damaged.read_bytes()
    bad_frame = frame_starts(damaged_data)[2]
    flip_byte(damaged, bad_frame + FRAME_HEADER_SIZE)
    kept_count = len(scan_journal_prefix(segments[:1])) + 2

    scan = scan_journal(tmp_path, repair=True)

    assert scan.payloads == payloads[:kept_count]
    assert scan.segments == segments[:2]
    assert scan.end_offset == bad_frame
    assert damaged.stat().st_size == bad_frame
    assert list_segments(tmp_path) == segments[:2]
    for later in segments[2:]:
        assert not later.exists()
        assert later.with_name(later.name + ".corrupt").exists()
    evidence = damaged.with_name(f"{damaged.name}.from-{bad_frame}.corrupt")
    assert len(evidence.read_bytes()) == len(damaged_data) - bad_frame
    assert len(scan.repaired) == 1 + len(segments[2:])
    assert scan_journal(tmp_path).payloads == payloads[:kept_count]


def scan_journal_prefix(segments: list[Path]) -> list[int]:
    return [start for segment in segments for start in frame_starts(segment.read_bytes())]


def test_journal_is_writable_after_repair(tmp_path: Path) -> None:
    payloads = make_payloads(9)
    write_journal(tmp_path, payloads)
    (segment,) = list_segments(tmp_path)
    flip_byte(segment, frame_starts(segment.read_bytes())[4] + FRAME_HEADER_SIZE)
    scan_journal(tmp_path, repair=True)

    write_journal(tmp_path, [b"after repair"], first_seq=5)

    assert scan_journal(tmp_path).payloads == [*payloads[:4], b"after repair"]


# ------------------------------------------------------------------------------------------ after_seq


def test_after_seq_skips_segments_a_snapshot_covers(tmp_path: Path) -> None:
    payloads = make_payloads(100)
    write_journal(tmp_path, payloads, batch=1, segment_bytes=256)
    segments = list_segments(tmp_path)
    third_first_seq = segment_first_seq(segments[2])

    scan = scan_journal(tmp_path, after_seq=third_first_seq + 1)

    assert scan.segments == segments[2:]
    assert scan.payloads == payloads[third_first_seq - 1 :]
    assert list(iter_payloads(tmp_path, after_seq=third_first_seq - 1)) == payloads[third_first_seq - 1 :]


def test_after_seq_ignores_damage_in_skipped_segments(tmp_path: Path) -> None:
    payloads = make_payloads(100)
    write_journal(tmp_path, payloads, batch=1, segment_bytes=256)
    segments = list_segments(tmp_path)
    flip_byte(segments[0], FRAME_HEADER_SIZE)

    scan = scan_journal(tmp_path, after_seq=segment_first_seq(segments[1]) - 1)

    assert scan.segments == segments[1:]


# ------------------------------------------------------------------------------------------- property


@settings(max_examples=150, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=1, max_size=60), min_size=1, max_size=40),
    segment_bytes=st.integers(min_value=16, max_value=400),
    cut_fraction=st.floats(min_value=0.0, max_value=1.0),
)
def test_a_truncated_last_segment_yields_a_prefix(
    payloads: list[bytes], segment_bytes: int, cut_fraction: float
) -> None:
    with tempfile.TemporaryDirectory() as temp:
        directory = Path(temp)
        write_journal(directory, payloads, batch=3, segment_bytes=segment_bytes)
        segments = list_segments(directory)
        last = segments[-1]
        data = last.read_bytes()
        cut = int(len(data) * cut_fraction)
        last.write_bytes(data[:cut])
        in_earlier_segments = len(scan_journal_prefix(segments[:-1]))

        scan = scan_journal(directory)

        assert scan.payloads == payloads[: len(scan.payloads)]
        assert len(scan.payloads) >= in_earlier_segments
        at_frame_boundary = cut in frame_starts(data) or cut == len(data)
        assert (scan.torn_tail is None) == at_frame_boundary
        assert scan.end_offset <= cut
