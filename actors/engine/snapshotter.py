"""The snapshotter actor: periodic snapshots built in a worker process (see snapshot_worker).

Every ``snapshot.interval_s``, and sooner once ``snapshot.every_inputs`` inputs are durable past
the last snapshot (so a busy engine's journal tail, what a restart replays, stays short: issue
14), it asks a child process to replay the journal up to the engine's durable seq and write a
snapshot; the engine keeps running meanwhile. Failures are logged and
retried at the next interval (the supervisor also restarts the actor with backoff). The final
snapshot on graceful shutdown is written by the supervisor from the stopped engine.

When it starts and after every snapshot it also scrubs the journal's sealed segments
(:mod:`actors.engine.scrubber`) and records what is damaged on the engine handle.

``io="inline"`` (the deterministic simulation) builds each snapshot and scrubs on the event loop
instead: under trio's mock clock a worker process or thread finishes at a *real* time, so what
happens next would depend on the machine (as the engine's ``journal_io``).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any, Protocol

import trio

from actors.engine.recovery import journal_dir, snapshot_dir
from exness_actors.snapshot import list_snapshots
from actors.engine.scrubber import scrub
from actors.engine.snapshot_worker import build_snapshot

__all__ = ["run", "SnapshotterStats", "EngineProgress", "snapshot_now", "snapshot_due", "newest_snapshot_seq"]

log = logging.getLogger("exness.snapshotter")


class EngineProgress(Protocol):
    """What the snapshotter reads and sets on the engine: the in-process
    :class:`~actors.engine.actor.EngineHandle`, or a remote engine's progress (the snapshotter role)."""

    durable_seq: int
    rotate_requested: bool
    journal_damage: list[str]

    def request_checkpoint(self) -> None: ...


class SnapshotterStats:
    def __init__(self) -> None:
        self.written = 0
        self.failed = 0
        self.last_seq = 0
        self.last_elapsed_ms = 0.0
        self.scrubs = 0
        self.damaged_segments = 0

    def statistics(self) -> dict[str, Any]:
        return {"written": self.written, "failed": self.failed, "last_seq": self.last_seq,
                "last_elapsed_ms": self.last_elapsed_ms, "scrubs": self.scrubs,
                "damaged_segments": self.damaged_segments}


async def scrub_journal(handle: EngineProgress, cfg: Any, stats: SnapshotterStats, *, io: str = "thread") -> None:
    """Verify the sealed segments in a worker thread (``io="inline"``: on the event loop);
    record the damage on ``handle``."""
    check = functools.partial(scrub, journal_dir(Path(cfg.data_dir)), archive_dir=cfg.settings.journal.archive_path)
    try:
        report = check() if io == "inline" else await trio.to_thread.run_sync(check)
    except OSError as exc:
        log.error("event=scrub_failed error=%r", str(exc))
        return
    handle.journal_damage = [check.describe() for check in report.damaged]
    stats.scrubs += 1
    stats.damaged_segments = len(report.damaged)
    log.info("event=scrub_done segments=%d damaged=%d archived=%d", len(report.checked),
             len(report.damaged), len(report.archived))


async def snapshot_now(data_dir: Path, target_seq: int, key: bytes, keep: int) -> dict:
    """Run one worker process to snapshot up to ``target_seq``; returns its JSON report."""
    result = await trio.run_process(
        [sys.executable, "-m", "actors.engine.snapshot_worker", str(data_dir), str(target_seq), str(keep)],
        stdin=(key.hex() + "\n").encode(), capture_stdout=True, capture_stderr=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"snapshot worker failed ({result.returncode}): "
                           f"{result.stderr.decode(errors='replace').strip()[-500:]}")
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


#: how often the input count is looked at when snapshots are also due by inputs
INPUT_POLL_S = 1.0


def snapshot_due(*, durable_seq: int, last_seq: int, now: float, due_at: float, every_inputs: int) -> bool:
    """Whether a snapshot is due: new inputs and either the interval has passed or
    ``every_inputs`` of them have come since the last snapshot."""
    if durable_seq <= last_seq:
        return False
    return now >= due_at or (every_inputs > 0 and durable_seq - last_seq >= every_inputs)


def newest_snapshot_seq(data_dir: Path) -> int:
    """The seq of the newest snapshot file (by its name), 0 when there is none."""
    snapshots = list_snapshots(snapshot_dir(data_dir))
    return snapshots[-1][0] if snapshots else 0


async def run(*, handle: EngineProgress, cfg: Any, key: bytes, stats: SnapshotterStats | None = None,
              io: str = "thread",
              task_status: trio.TaskStatus[SnapshotterStats] = trio.TASK_STATUS_IGNORED) -> None:
    """Snapshot every ``[snapshot] interval_s`` (see the module docstring); ``stats``: counters a
    restart continues; ``io``: ``"thread"`` (a worker process) or ``"inline"``."""
    if io not in ("thread", "inline"):
        raise ValueError(f"io must be 'thread' or 'inline', not {io!r}")
    stats = stats or SnapshotterStats()
    settings = cfg.settings.snapshot
    interval, every_inputs, keep = settings.interval_s, settings.every_inputs, settings.keep
    poll = min(interval, INPUT_POLL_S) if every_inputs else interval
    stats.last_seq = newest_snapshot_seq(Path(cfg.data_dir))
    task_status.started(stats)
    await scrub_journal(handle, cfg, stats, io=io)
    due_at = trio.current_time() + interval
    while True:
        await trio.sleep(poll)
        target = handle.durable_seq
        if not snapshot_due(durable_seq=target, last_seq=stats.last_seq, now=trio.current_time(),
                            due_at=due_at, every_inputs=every_inputs):
            continue
        due_at = trio.current_time() + interval
        try:
            if io == "inline":
                report = build_snapshot(Path(cfg.data_dir), target, key, keep)
            else:
                report = await snapshot_now(cfg.data_dir, target, key, keep)
        except Exception as exc:
            stats.failed += 1
            log.error("event=snapshot_failed target_seq=%d error=%r", target, str(exc))
            continue
        if report.get("event") == "snapshot_written":
            stats.written += 1
            # a fresh segment lets the next recovery skip every segment this snapshot covers
            handle.rotate_requested = True
            handle.request_checkpoint()   # and the journal verifies itself there (short ones too)
            await scrub_journal(handle, cfg, stats, io=io)
        stats.last_seq = report.get("last_seq", target)
        stats.last_elapsed_ms = report.get("elapsed_ms", 0.0)
        log.info("event=%s last_seq=%s elapsed_ms=%s", report.get("event"), stats.last_seq,
                 stats.last_elapsed_ms)
