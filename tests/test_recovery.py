"""Recovery: snapshot + tail ≡ full replay; torn tails, corruption, bad snapshots, pinned config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from actors.engine.recovery import RecoveryError, journal_dir, recover, snapshot_dir
from actors.engine.snapshot_worker import build_snapshot, write_engine_snapshot
from core_helpers import SYMBOL, make_engine
from exness_actors import codec
from exness_actors.commands import ClosePosition, CreateAccount, PlaceOrder, Quote, UpdateInstrument
from exness_actors.engine import HASH_BLOCK, Engine
from exness_actors.instruments import CoreConfig, Instrument
from exness_actors.journal import JournalWriter, encode_frame, list_segments
from exness_actors.replay import engine_checkpoint
from exness_actors.snapshot import list_snapshots

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def drive(engine: Engine, count: int, *, start_ts: int = 1):
    """Yield (command, events) for a deterministic mix of inputs."""
    ts = start_ts
    if engine.last_seq == 0:
        for account in (1, 2, 3):
            ts += 1
            command = CreateAccount(account_id=account, initial_deposit=10_000_000)
            yield command, engine.submit(command, ts=ts)
    for index in range(count):
        ts += 1_000
        kind = index % 10
        if kind < 6:
            command = Quote(symbol=SYMBOL, bid=6_500_000 + (index * 37) % 20_000, ask=6_500_100 + (index * 37) % 20_000)
        elif kind < 9:
            command = PlaceOrder(account_id=1 + index % 3, symbol=SYMBOL, side="buy" if index % 2 else "sell",
                                 type="market", margin=10_000, leverage=1 + index % 50)
        else:
            position = next(iter(engine.positions), None)
            command = ClosePosition(account_id=engine.positions[position].account_id if position else 1,
                                    position_id=position or 1)
        yield command, engine.submit(command, ts=ts)


def write_journal(data_dir: Path, engine: Engine, count: int, *, checkpoints: bool = True) -> None:
    """Run ``count`` inputs on ``engine`` and journal them as the engine actor would."""
    writer = JournalWriter(journal_dir(data_dir), segment_bytes=64 * 1024)
    frames: list[bytes] = []
    first_seq = engine.last_seq + 1
    for command, _events in drive(engine, count):
        frames.append(codec.encode(command))
        if checkpoints and engine.last_seq % 500 == 0:
            frames.append(engine_checkpoint(engine))
        if len(frames) >= 64:
            writer.append(b"".join(encode_frame(f) for f in frames), first_seq=first_seq)
            frames, first_seq = [], engine.last_seq + 1
    if frames:
        writer.append(b"".join(encode_frame(f) for f in frames), first_seq=first_seq)
    writer.fsync()
    writer.close()


def test_empty_data_dir_recovers_an_empty_engine(tmp_path):
    recovered = recover(tmp_path, make_engine().config, KEY)
    assert recovered.engine.last_seq == 0 and recovered.replayed == 0


def test_journal_alone_recovers_the_exact_state(tmp_path):
    live = make_engine()
    write_journal(tmp_path, live, 2_000)
    recovered = recover(tmp_path, live.config, KEY)
    assert recovered.engine.state_hash() == live.state_hash()
    assert recovered.engine.rolling_hash == live.rolling_hash


def test_snapshot_plus_tail_equals_full_replay(tmp_path):
    live = make_engine()
    write_journal(tmp_path, live, 1_000)
    write_engine_snapshot(tmp_path, live, KEY, keep=3)
    # continue the same history past the snapshot
    writer = JournalWriter(journal_dir(tmp_path), segment_bytes=64 * 1024)
    frames = [codec.encode(command) for command, _ in drive(live, 500, start_ts=live.now)]
    writer.append(b"".join(encode_frame(f) for f in frames), first_seq=live.last_seq - 499)
    writer.close()
    recovered = recover(tmp_path, live.config, KEY)
    assert recovered.snapshot_seq == 1_003
    assert recovered.replayed == 500
    assert recovered.engine.state_hash() == live.state_hash()


def test_torn_tail_is_truncated_and_the_rest_kept(tmp_path):
    live = make_engine()
    write_journal(tmp_path, live, 300, checkpoints=False)
    last = list_segments(journal_dir(tmp_path))[-1]
    with open(last, "ab") as handle:
        handle.write(encode_frame(b"\x93\x01\x02\x03")[:7])     # half a frame: the crash moment
    recovered = recover(tmp_path, live.config, KEY)
    assert recovered.torn_tail is not None
    assert recovered.engine.state_hash() == live.state_hash()
    assert recover(tmp_path, live.config, KEY).torn_tail is None   # it was truncated


def test_mid_journal_corruption_refuses_to_start_and_repair_keeps_the_prefix(tmp_path):
    live = make_engine()
    write_journal(tmp_path, live, 6_000, checkpoints=False)
    segments = list_segments(journal_dir(tmp_path))
    assert len(segments) > 2
    victim = segments[1]      # a segment with later segments after it
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(RecoveryError, match="--repair"):
        recover(tmp_path, live.config, KEY)
    repaired = recover(tmp_path, live.config, KEY, repair=True)
    assert repaired.repaired
    assert 0 < repaired.engine.last_seq < live.last_seq
    repaired.engine.check_invariants()
    assert list(journal_dir(tmp_path).glob("*.corrupt"))


def test_corrupt_and_wrongly_keyed_snapshots_are_skipped(tmp_path):
    live = make_engine()
    write_journal(tmp_path, live, 600)
    write_engine_snapshot(tmp_path, live, OTHER_KEY, keep=5)      # wrong key
    (snapshot_dir(tmp_path) / "snapshot-00000000000099999999.snap").write_bytes(b"EXSNAP01garbage")
    recovered = recover(tmp_path, live.config, KEY)
    assert len(recovered.skipped_snapshots) == 2
    assert recovered.snapshot_seq == 0
    assert recovered.engine.state_hash() == live.state_hash()


def test_changed_instruments_refuse_to_start(tmp_path):
    live = make_engine()
    write_journal(tmp_path, live, 10)
    recover(tmp_path, live.config, KEY)                  # the first start pins the config
    other = CoreConfig(instruments=(Instrument(symbol=SYMBOL, spread_bps=9),))
    with pytest.raises(RecoveryError, match="configuration differs"):
        recover(tmp_path, other, KEY)


def test_persisted_seq_selects_an_older_snapshot_and_reports_the_missing_events(tmp_path):
    live = make_engine()
    write_journal(tmp_path, live, 400)
    write_engine_snapshot(tmp_path, live, KEY, keep=5)
    seen = []
    recovered = recover(tmp_path, live.config, KEY, persisted_seq=200,
                        on_events=lambda seq, ts, events: seen.append(seq))
    assert recovered.snapshot_seq == 0
    assert seen and min(seen) > 200 and max(seen) == live.last_seq
    assert recovered.engine.state_hash() == live.state_hash()


def test_snapshot_worker_process_builds_the_live_state(tmp_path):
    live = make_engine()
    write_journal(tmp_path, live, HASH_BLOCK + 100)
    recover(tmp_path, live.config, KEY)                  # pins the core config like a real start
    result = subprocess.run(
        [sys.executable, "-m", "actors.engine.snapshot_worker", str(tmp_path), str(live.last_seq), "2"],
        input=KEY.hex() + "\n", capture_output=True, text=True, cwd=Path(__file__).parent.parent,
        timeout=120)
    assert result.returncode == 0, result.stderr
    assert '"snapshot_written"' in result.stdout
    (seq, _path), = list_snapshots(snapshot_dir(tmp_path))
    assert seq == live.last_seq
    again = recover(tmp_path, live.config, KEY)
    assert again.snapshot_seq == live.last_seq and again.replayed == 0
    assert again.engine.state_hash() == live.state_hash()
    # a second worker run with nothing new is a no-op
    assert build_snapshot(tmp_path, live.last_seq, KEY, 2)["event"] == "snapshot_skipped"
    assert os.stat(_path).st_mode & 0o777 == 0o600


def test_an_operators_instrument_change_survives_restarts_with_and_without_a_snapshot(tmp_path):
    """Issue 13: the journaled UpdateInstrument is the truth. A restart with the unchanged config
    replays it; a snapshot taken after it carries the changed settings and is not refused."""
    config = make_engine().config
    recover(tmp_path, config, KEY)                       # the first start pins the config
    live = make_engine()
    write_journal(tmp_path, live, 50)
    change = UpdateInstrument(symbol=SYMBOL, changes=[["spread_bps", 25], ["max_leverage", 20]],
                              operator_id=3, reason="volatility")
    live.submit(change, ts=live.now + 1)
    writer = JournalWriter(journal_dir(tmp_path), segment_bytes=64 * 1024)
    writer.append(encode_frame(codec.encode(change)), first_seq=live.last_seq)
    writer.close()
    replayed = recover(tmp_path, config, KEY).engine
    assert replayed.instruments[SYMBOL].spread_bps == 25
    assert replayed.state_hash() == live.state_hash()
    write_engine_snapshot(tmp_path, live, KEY, keep=3)
    restored = recover(tmp_path, config, KEY)
    assert restored.snapshot_seq == live.last_seq and restored.replayed == 0
    assert restored.engine.instruments[SYMBOL].max_leverage == 20
    assert restored.engine.state_hash() == live.state_hash()
