"""The snapshotter role (split mode) runs the snapshotter over a remote engine's progress."""

import trio

from actors.bus import roles
from actors.config import load_config
from actors.engine import snapshotter


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
