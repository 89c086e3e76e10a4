"""Crash safety: SIGKILL the running system at random points; every acknowledged command survives.

For several seeds: run the real system (tests/crash_driver.py) in a subprocess while it drives
commands and snapshots every 0.5 s, kill it with SIGKILL after a seeded number of acks, restart
it (it must come up again and keep trading), kill it again, then check:

* every acknowledged command is in the journal at its acknowledged seq, exactly as acknowledged;
* recovery (newest snapshot + tail) gives the same state hash as a full replay from empty;
* the core's invariants hold and replay verified the journal's checkpoints.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actors.keys import load_or_create_key
from actors.recovery import journal_dir, recover
from crash_driver import driver_config
from exness_actors import codec
from exness_actors.engine import Engine
from exness_actors.journal import iter_payloads
from exness_actors.replay import Checkpoint, decode_record, replay

ROOT = Path(__file__).resolve().parent.parent
DRIVER = Path(__file__).resolve().parent / "crash_driver.py"


def acks(ack_log: Path) -> list[dict]:
    if not ack_log.exists():
        return []
    return [json.loads(line) for line in ack_log.read_text().splitlines() if line.endswith("}")]


def run_and_kill(data_dir: Path, ack_log: Path, seed: int, kill_after: int, timeout: float = 60) -> None:
    before = len(acks(ack_log))
    process = subprocess.Popen([sys.executable, str(DRIVER), str(data_dir), str(ack_log), str(seed)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while len(acks(ack_log)) < before + kill_after:
            if process.poll() is not None:
                raise AssertionError(f"driver exited early ({process.returncode}): "
                                     f"{process.stderr.read().decode(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("the system did not acknowledge commands in time")
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_loses_no_acknowledged_command(tmp_path, seed):
    rng = random.Random(seed)
    data_dir, ack_log = tmp_path / "data", tmp_path / "acks.jsonl"
    for _round in range(2):
        run_and_kill(data_dir, ack_log, seed * 10 + _round, kill_after=rng.randint(200, 1500))
    acknowledged = acks(ack_log)
    assert acknowledged, "nothing was acknowledged"

    records = {}
    checkpoints = 0
    for payload in iter_payloads(journal_dir(data_dir)):
        record = decode_record(payload)
        if isinstance(record, Checkpoint):
            checkpoints += 1
        else:
            records[record.seq] = record
    for ack in acknowledged:
        record = records.get(ack["seq"])
        assert record is not None, f"acknowledged seq {ack['seq']} ({ack['key']}) is missing"
        assert json.loads(json.dumps(codec.to_wire(record))) == ack["wire"], ack

    cfg = driver_config(str(data_dir))
    key = load_or_create_key(data_dir)
    recovered = recover(data_dir, cfg.core, key)
    full = replay(Engine(cfg.core), iter_payloads(journal_dir(data_dir)))
    assert full.checkpoints_verified == checkpoints      # every checkpoint in the journal was checked
    assert recovered.engine.state_hash() == full.engine.state_hash()
    recovered.engine.check_invariants()
    assert recovered.engine.last_seq >= max(a["seq"] for a in acknowledged)
    snapshots = list((data_dir / "snapshots").glob("*.snap"))
    assert os.stat(data_dir / "snapshot.key").st_mode & 0o777 == 0o600
    print(f"seed {seed}: {len(acknowledged)} acks, last seq {recovered.engine.last_seq}, "
          f"{len(snapshots)} snapshots, recovered from seq {recovered.snapshot_seq}")


def test_sigterm_drains_snapshots_and_exits_zero(tmp_path):
    data_dir, ack_log = tmp_path / "data", tmp_path / "acks.jsonl"
    process = subprocess.Popen([sys.executable, str(DRIVER), str(data_dir), str(ack_log), "5"],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(acks(ack_log)) < 300 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, process.stderr.read().decode(errors="replace")[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    acknowledged = acks(ack_log)
    assert len(acknowledged) >= 300
    cfg = driver_config(str(data_dir))
    recovered = recover(data_dir, cfg.core, load_or_create_key(data_dir))
    # the final snapshot covers everything: nothing left to replay
    assert recovered.replayed == 0
    assert recovered.snapshot_seq == recovered.engine.last_seq >= max(a["seq"] for a in acknowledged)
    full = replay(Engine(cfg.core), iter_payloads(journal_dir(data_dir)))
    assert full.engine.state_hash() == recovered.engine.state_hash()
