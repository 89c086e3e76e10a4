"""The snapshotter role (split mode) runs the snapshotter over a remote engine's progress."""

import functools

import trio

from actors.bus import roles
from actors.config import load_config
from actors.engine import snapshotter
from exness_actors.snapshot import snapshot_name


async def test_the_snapshotter_role_survives_a_written_snapshot(tmp_path, monkeypatch):
    async def written(data_dir, target_seq, key, keep):
        return {"event": "snapshot_written", "last_seq": target_seq, "elapsed_ms": 1.0}

    monkeypatch.setattr(snapshotter, "snapshot_now", written)
    cfg = load_config(environ={}, overrides={"data": {"dir": str(tmp_path)}, "snapshot": {"interval_s": 0.01}})
    progress = roles._EngineProgress()
    progress.durable_seq = 5
    async with trio.open_nursery() as nursery:
        stats = await nursery.start(lambda task_status: snapshotter.run(
            handle=progress, cfg=cfg, key=b"k" * 32, task_status=task_status))
        with trio.fail_after(10):
            while stats.written < 2:   # past the first snapshot and its checkpoint request
                progress.durable_seq += 1
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert stats.failed == 0 and progress.rotate_requested


# ------------------------------------------------------------------ a snapshot policy by inputs too

async def no_scrub(*_args, **_kwargs) -> None:
    pass


def test_a_snapshot_is_due_by_time_or_by_inputs_and_only_with_new_inputs():
    due = functools.partial(snapshotter.snapshot_due, last_seq=1_000, due_at=60.0, every_inputs=500)
    assert not due(durable_seq=1_000, now=61.0)           # nothing new: never
    assert due(durable_seq=1_001, now=60.0)               # the interval passed
    assert not due(durable_seq=1_499, now=59.0)
    assert due(durable_seq=1_500, now=59.0)               # enough inputs before the interval
    assert not snapshotter.snapshot_due(durable_seq=10**9, last_seq=0, now=1.0, due_at=60.0, every_inputs=0)


async def test_a_busy_engine_is_snapshotted_by_inputs_before_the_interval(tmp_path, monkeypatch, autojump_clock):
    taken: list[int] = []

    async def written(data_dir, target_seq, key, keep):
        taken.append(target_seq)
        return {"event": "snapshot_written", "last_seq": target_seq, "elapsed_ms": 1.0}

    monkeypatch.setattr(snapshotter, "snapshot_now", written)
    monkeypatch.setattr(snapshotter, "scrub_journal", no_scrub)   # a thread: the mock clock would run ahead
    cfg = load_config(environ={}, overrides={"data": {"dir": str(tmp_path)},
                                             "snapshot": {"interval_s": 3600, "every_inputs": 1_000}})
    progress = roles._EngineProgress()
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: snapshotter.run(
            handle=progress, cfg=cfg, key=b"k" * 32, task_status=task_status))
        for _ in range(30):                      # 30 s at 100 inputs/s: 3,000 inputs, no interval
            progress.durable_seq += 100
            await trio.sleep(1)
        nursery.cancel_scope.cancel()
    # each within a poll (1 s: 100 inputs) of 1,000 inputs coming after the one before
    assert len(taken) in (2, 3) and all(1_000 <= later - earlier <= 1_100 for earlier, later in zip([0, *taken], taken))


async def test_the_count_starts_from_the_newest_snapshot_on_disk(tmp_path, monkeypatch, autojump_clock):
    (tmp_path / "snapshots").mkdir()
    (tmp_path / "snapshots" / snapshot_name(5_000)).write_bytes(b"")
    taken: list[int] = []

    async def written(data_dir, target_seq, key, keep):
        taken.append(target_seq)
        return {"event": "snapshot_written", "last_seq": target_seq, "elapsed_ms": 1.0}

    monkeypatch.setattr(snapshotter, "snapshot_now", written)
    monkeypatch.setattr(snapshotter, "scrub_journal", no_scrub)   # a thread: the mock clock would run ahead
    cfg = load_config(environ={}, overrides={"data": {"dir": str(tmp_path)},
                                             "snapshot": {"interval_s": 3600, "every_inputs": 1_000}})
    progress = roles._EngineProgress()
    progress.durable_seq = 5_500                 # recovered: 500 inputs past the newest snapshot
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: snapshotter.run(
            handle=progress, cfg=cfg, key=b"k" * 32, task_status=task_status))
        await trio.sleep(10)
        assert taken == []
        progress.durable_seq = 6_000
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    assert taken == [6_000]
