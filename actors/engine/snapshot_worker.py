"""Build a snapshot in a separate process by replaying the journal — the engine never stalls.

Run as ``python -m actors.engine.snapshot_worker DATA_DIR TARGET_SEQ KEEP`` with the hex key on stdin.
It starts from the newest valid snapshot (or empty), replays durable journal records up to
``TARGET_SEQ`` (verifying checkpoints), writes ``snapshot-<TARGET_SEQ>.snap`` (temp file, fsync,
rename) and prunes to the newest ``KEEP``. It prints one JSON line describing what it did.
The pure core makes this free of coordination: the same inputs give the same state.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path

import msgpack

from actors.engine.recovery import gc_paused, journal_dir, snapshot_dir
from exness_actors.engine import Engine
from exness_actors.instruments import CoreConfig
from exness_actors.journal import iter_payloads
from exness_actors.replay import replay
from exness_actors.snapshot import load_newest_valid, prune_snapshots, write_snapshot

__all__ = ["build_snapshot", "write_engine_snapshot"]


def write_engine_snapshot(data_dir: Path, engine: Engine, key: bytes, keep: int) -> Path:
    """Write ``engine``'s state as a snapshot (also used for the final snapshot on shutdown)."""
    with gc_paused():
        state = engine.to_state()
        state_hash = Engine.hash_state(state)
        indexes = engine.export_indexes()     # stored ready to load: recovery need not re-derive them
    path = write_snapshot(snapshot_dir(data_dir), key=key, nonce=os.urandom(12),
                          last_seq=engine.last_seq, state_hash=state_hash,
                          scales=engine.config.scales(), state=state, indexes=indexes)
    prune_snapshots(snapshot_dir(data_dir), keep=keep)
    return path


def build_snapshot(data_dir: Path, target_seq: int, key: bytes, keep: int) -> dict:
    started = time.perf_counter()
    pinned = msgpack.unpackb((data_dir / "core-config.msgpack").read_bytes(), raw=False, use_list=True)
    snapshot, skipped = load_newest_valid(snapshot_dir(data_dir), key=key)
    if snapshot is not None and snapshot.last_seq >= target_seq:
        return {"event": "snapshot_skipped", "reason": "up to date", "last_seq": snapshot.last_seq}
    if snapshot is not None and snapshot.last_seq <= target_seq:
        engine = Engine.from_state(snapshot.state, snapshot.indexes)
    else:
        engine = Engine(CoreConfig.from_wire(pinned))
    base = engine.last_seq
    result = replay(engine, iter_payloads(journal_dir(data_dir), after_seq=base or None), until_seq=target_seq)
    if engine.last_seq != target_seq:
        raise SystemExit(f"journal ends at seq {engine.last_seq}, before the requested {target_seq}")
    path = write_engine_snapshot(data_dir, engine, key, keep)
    return {"event": "snapshot_written", "path": str(path), "last_seq": engine.last_seq,
            "from_seq": base, "replayed": result.inputs, "skipped": [str(p) for p, _ in skipped],
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 1)}


def main(argv: list[str]) -> int:
    gc.disable()   # a short-lived process building one large state: the collector only costs time
    data_dir, target_seq, keep = Path(argv[0]), int(argv[1]), int(argv[2])
    key = bytes.fromhex(sys.stdin.readline().strip())
    print(json.dumps(build_snapshot(data_dir, target_seq, key, keep)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
