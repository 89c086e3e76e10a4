"""Encrypted snapshots: round trip, authentication, corruption handling, newest-valid selection, pruning."""

from __future__ import annotations

import stat
import struct
from pathlib import Path
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from exness_actors.snapshot import (
    MAGIC,
    Snapshot,
    SnapshotCorrupt,
    SnapshotError,
    SnapshotKeyError,
    list_snapshots,
    load_newest_valid,
    prune_snapshots,
    read_snapshot,
    snapshot_name,
    write_snapshot,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SCALES = {"BTCUSD": {"price": 2, "qty": 6}}

# ------------------------------------------------------------------------------------------ helpers


def nonce_for(last_seq: int) -> bytes:
    """A distinct nonce per snapshot, deterministic for tests (production passes os.urandom(12))."""
    return last_seq.to_bytes(12, "little")


def make_state(last_seq: int) -> dict[str, Any]:
    return {"accounts": {1: {"balance": 1_000_000 + last_seq}}, "positions": [[7, "BTCUSD", 250_000]]}


def write(directory: Path, last_seq: int, *, key: bytes = KEY) -> Path:
    return write_snapshot(
        directory,
        key=key,
        nonce=nonce_for(last_seq),
        last_seq=last_seq,
        state_hash=last_seq.to_bytes(32, "big"),
        scales=SCALES,
        state=make_state(last_seq),
    )


def seal_by_hand(directory: Path, last_seq: int, content: object, *, plaintext: bytes | None = None) -> Path:
    """Build a snapshot file from the documented layout, with arbitrary (possibly bad) content."""
    if plaintext is None:
        plaintext = msgpack.packb(content, use_bin_type=True)
    header = MAGIC + struct.pack("<QQ", last_seq, len(plaintext) + 16)
    nonce = nonce_for(last_seq)
    path = directory / snapshot_name(last_seq)
    path.write_bytes(header + nonce + AESGCM(KEY).encrypt(nonce, plaintext, header))
    return path


def valid_content(header_seq: int, **overrides: object) -> dict[str, object]:
    content: dict[str, object] = {
        "format_version": 1,
        "scales": SCALES,
        "last_seq": header_seq,
        "state_hash": b"h" * 32,
        "state": {},
    }
    content.update(overrides)
    return content


# ----------------------------------------------------------------------------------------- round trip


def test_round_trip(tmp_path: Path) -> None:
    path = write(tmp_path, 1234)

    snapshot = read_snapshot(path, key=KEY)

    assert snapshot == Snapshot(
        path=path,
        format_version=1,
        scales=SCALES,
        last_seq=1234,
        state_hash=(1234).to_bytes(32, "big"),
        state=make_state(1234),
    )
    assert path.name == "snapshot-00000000000000001234.snap"


def test_round_trip_with_indexes_is_format_2(tmp_path: Path) -> None:
    indexes = [1, [[b"\x01" * 8, b"\x02" * 8]]]
    path = write_snapshot(tmp_path, key=KEY, nonce=nonce_for(5), last_seq=5, state_hash=b"h" * 32,
                          scales=SCALES, state=make_state(5), indexes=indexes)

    snapshot = read_snapshot(path, key=KEY)

    assert (snapshot.format_version, snapshot.indexes, snapshot.state) == (2, indexes, make_state(5))


def test_hand_sealed_format_1_has_no_indexes(tmp_path: Path) -> None:
    path = seal_by_hand(tmp_path, 9, valid_content(9))

    snapshot = read_snapshot(path, key=KEY)

    assert (snapshot.format_version, snapshot.indexes) == (1, None)


def test_hand_sealed_file_matches_the_documented_layout(tmp_path: Path) -> None:
    path = seal_by_hand(tmp_path, 9, valid_content(9))

    snapshot = read_snapshot(path, key=KEY)

    assert (snapshot.last_seq, snapshot.state_hash) == (9, b"h" * 32)


def test_file_is_private_and_no_temp_file_is_left(tmp_path: Path) -> None:
    directory = tmp_path / "snapshots"

    path = write(directory, 5)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(entry.name for entry in directory.iterdir()) == [path.name]


def test_content_is_not_readable_in_clear(tmp_path: Path) -> None:
    path = write(tmp_path, 5)

    assert b"BTCUSD" not in path.read_bytes()


def test_unpackable_state_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_snapshot(
            tmp_path, key=KEY, nonce=nonce_for(1), last_seq=1, state_hash=b"", scales={}, state=object()
        )

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("key", "nonce", "message"),
    [
        (b"short", nonce_for(1), "key must be 32 bytes"),
        ("a" * 32, nonce_for(1), "key must be 32 bytes"),
        (KEY, b"\x00" * 8, "nonce must be 12 bytes"),
    ],
)
def test_write_validates_key_and_nonce(tmp_path: Path, key: Any, nonce: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_snapshot(tmp_path, key=key, nonce=nonce, last_seq=1, state_hash=b"", scales={}, state={})


def test_read_validates_key_length(tmp_path: Path) -> None:
    path = write(tmp_path, 1)

    with pytest.raises(ValueError, match="32 bytes"):
        read_snapshot(path, key=KEY[:16])


# ------------------------------------------------------------------------------------------ bad files


def test_wrong_key_is_a_key_error(tmp_path: Path) -> None:
    path = write(tmp_path, 1)

    with pytest.raises(SnapshotKeyError, match="wrong key or tampered file") as caught:
        read_snapshot(path, key=OTHER_KEY)

    assert caught.value.path == path


@pytest.mark.parametrize(
    ("offset", "error"),
    [
        (0, SnapshotCorrupt),  # magic
        (9, SnapshotKeyError),  # last_seq in the header: authenticated data
        (16, SnapshotCorrupt),  # ciphertext length in the header
        (30, SnapshotKeyError),  # nonce
        (-40, SnapshotKeyError),  # ciphertext
        (-1, SnapshotKeyError),  # tag
    ],
    ids=["magic", "header-seq", "header-length", "nonce", "ciphertext", "tag"],
)
def test_flipped_byte_is_detected(tmp_path: Path, offset: int, error: type[SnapshotError]) -> None:
    path = write(tmp_path, 1)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))

    with pytest.raises(error):
        read_snapshot(path, key=KEY)


@pytest.mark.parametrize("keep_bytes", [0, 3, 12, 20, 30, -1])
def test_truncated_file_is_corrupt(tmp_path: Path, keep_bytes: int) -> None:
    path = write(tmp_path, 1)
    path.write_bytes(path.read_bytes()[:keep_bytes])

    with pytest.raises(SnapshotCorrupt, match="truncated"):
        read_snapshot(path, key=KEY)


def test_trailing_bytes_are_corrupt(tmp_path: Path) -> None:
    path = write(tmp_path, 1)
    path.write_bytes(path.read_bytes() + b"\x00")

    with pytest.raises(SnapshotCorrupt, match="unexpected bytes"):
        read_snapshot(path, key=KEY)


def test_not_a_snapshot_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / snapshot_name(1)
    path.write_bytes(b"PK\x03\x04 this is a zip file, not a snapshot")

    with pytest.raises(SnapshotCorrupt, match="bad magic"):
        read_snapshot(path, key=KEY)


@pytest.mark.parametrize(
    ("content", "plaintext", "message"),
    [
        (None, b"\xc1", "not valid msgpack"),
        (None, msgpack.packb(valid_content(3)) + b"\x00", "not valid msgpack"),
        ([1, 2, 3], None, "expected a map"),
        ({"format_version": 1, "last_seq": 3}, None, "lacks field"),
        (valid_content(3, format_version=3), None, "unsupported format_version 3"),
        (valid_content(3, format_version=2), None, "lacks field indexes"),
        (valid_content(3, format_version=True), None, "unsupported format_version"),
        (valid_content(3, last_seq=4), None, "does not match the header"),
        (valid_content(3, state_hash="text"), None, "expected bytes"),
    ],
    ids=["garbage", "extra-data", "not-a-map", "missing-fields", "future-version", "v2-without-indexes", "bool-version",
         "seq-mismatch", "hash-not-bytes"],
)
def test_bad_content_is_corrupt(tmp_path: Path, content: object, plaintext: bytes | None, message: str) -> None:
    path = seal_by_hand(tmp_path, 3, content, plaintext=plaintext)

    with pytest.raises(SnapshotCorrupt, match=message):
        read_snapshot(path, key=KEY)


# --------------------------------------------------------------------------------------- newest valid


def test_load_newest_valid_returns_the_newest(tmp_path: Path) -> None:
    for last_seq in (10, 200, 30):
        write(tmp_path, last_seq)

    snapshot, skipped = load_newest_valid(tmp_path, key=KEY)

    assert snapshot is not None
    assert snapshot.last_seq == 200
    assert skipped == []


def test_load_newest_valid_skips_a_corrupt_newest(tmp_path: Path) -> None:
    write(tmp_path, 10)
    older = write(tmp_path, 20)
    newest = write(tmp_path, 30)
    newest.write_bytes(newest.read_bytes()[:25])
    (tmp_path / (snapshot_name(40) + ".tmp")).write_bytes(b"half-written")

    snapshot, skipped = load_newest_valid(tmp_path, key=KEY)

    assert snapshot is not None
    assert snapshot.path == older
    assert len(skipped) == 1
    assert skipped[0][0] == newest
    assert "truncated" in skipped[0][1]


def test_load_newest_valid_reports_a_wrong_key_for_each_snapshot(tmp_path: Path) -> None:
    write(tmp_path, 10)
    write(tmp_path, 20)

    snapshot, skipped = load_newest_valid(tmp_path, key=OTHER_KEY)

    assert snapshot is None
    assert [path.name for path, _ in skipped] == [snapshot_name(20), snapshot_name(10)]
    assert all("wrong key" in reason for _, reason in skipped)


def test_load_newest_valid_skips_a_renamed_snapshot(tmp_path: Path) -> None:
    write(tmp_path, 10)
    write(tmp_path, 20).rename(tmp_path / snapshot_name(99))

    snapshot, skipped = load_newest_valid(tmp_path, key=KEY)

    assert snapshot is not None and snapshot.last_seq == 10
    assert "file name says last_seq 99" in skipped[0][1]


def test_load_newest_valid_of_a_missing_directory(tmp_path: Path) -> None:
    assert load_newest_valid(tmp_path / "absent", key=KEY) == (None, [])
    assert not (tmp_path / "absent").exists()


# -------------------------------------------------------------------------------------- list and prune


def test_list_snapshots_is_sorted_and_ignores_other_files(tmp_path: Path) -> None:
    paths = {last_seq: write(tmp_path, last_seq) for last_seq in (300, 7, 42)}
    (tmp_path / (snapshot_name(500) + ".tmp")).write_bytes(b"")
    (tmp_path / "README").write_text("")

    listed = list_snapshots(tmp_path)

    assert listed == [(7, paths[7]), (42, paths[42]), (300, paths[300])]
    assert list_snapshots(tmp_path / "absent") == []


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    paths = {last_seq: write(tmp_path, last_seq) for last_seq in (1, 2, 3, 4, 5)}

    removed = prune_snapshots(tmp_path, keep=2)

    assert removed == [paths[1], paths[2], paths[3]]
    assert list_snapshots(tmp_path) == [(4, paths[4]), (5, paths[5])]


def test_prune_with_fewer_snapshots_than_keep_removes_nothing(tmp_path: Path) -> None:
    write(tmp_path, 1)

    assert prune_snapshots(tmp_path, keep=3) == []
    assert len(list_snapshots(tmp_path)) == 1


def test_prune_rejects_negative_keep(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep"):
        prune_snapshots(tmp_path, keep=-1)
