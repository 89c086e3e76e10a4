"""The notifications worker's housekeeping: what the retention purge and a metrics scrape cost.

* ``purge_rows_per_s`` — N notifications of one shard, all old enough and settled (a third
  delivered, a third dead-lettered with their dead-letter row, a third with no delivery), and N/10
  young ones that stay; the clock runs over :func:`purge_expired` removing them in batches of
  ``[notifications] retention_batch`` (1000). CPU time of the process (the store's thread
  included), so the shared machine's load moves it less than wall time.
* ``purge_batch_max_ms`` — the longest single purge transaction (wall time): how long the purge
  can hold the store's write lock (SQLite: the whole database) at once.
* ``scrape_us`` — one render of the worker's metrics (``generate_latest`` over
  :class:`~actors.notifications.metrics.WorkerCollector`, three channels), median of 2,000.

    python bench/notify_ops.py [--quick] [--store sqlite|postgres]

PostgreSQL uses ``DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``) in a
schema of its own, dropped afterwards. Prints one JSON object per figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from actors.notifications._retention import purge_expired  # noqa: E402
from actors.notifications.metrics import WorkerCollector  # noqa: E402
from actors.notifications.worker import WorkerStatistics  # noqa: E402
from actors.store.notifications import Notification, Settlement  # noqa: E402
from actors.store.sqlite import SqliteStore  # noqa: E402

DAY = 86_400 * 10**9
NOW = 1_000 * DAY
BATCH = 1000


def emit(metric: str, value: float, unit: str, better: str, **extra: Any) -> None:
    line = {"bench": "notify_ops", "metric": metric, "value": round(value, 3), "unit": unit, "target": None,
            "better": better}
    line.update(extra)
    print(json.dumps(line), flush=True)


async def open_store(kind: str, directory: str) -> tuple[Any, Any]:
    if kind == "sqlite":
        return await SqliteStore.open(directory), None
    from actors.store.postgres import open_postgres_store
    url = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"
    schema = f"bench_notify_ops_{uuid.uuid4().hex[:10]}"
    return await open_postgres_store(url, schema=schema, max_size=2), (url, schema)


async def drop_schema(url: str, schema: str) -> None:
    import asyncpg
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


async def fill(store: Any, old: int) -> None:
    young = old // 10
    for start in range(0, old + young, 5_000):
        seqs = range(start + 1, min(start + 5_000, old + young) + 1)
        made = [Notification(id=f"0-{seq}-0", account_id=seq % 1_000, shard=0, seq=seq, index=0, kind="order_filled",
                             created_at=NOW - (200 if seq <= old else 1) * DAY, title="fill", data={"n": seq})
                for seq in seqs]
        deliveries = [(n.id, "webhook", n.account_id) for n in made if n.seq % 3 != 0]
        await store.record_notifications(0, seqs[-1], made, deliveries, now=1)
        await store.settle_deliveries(
            [Settlement(notification_id=n.id, channel="webhook", delivered=n.seq % 3 == 1, attempts=8,
                        error="" if n.seq % 3 == 1 else "HTTP 500") for n in made if n.seq % 3 != 0], now=2)


class TimedStore:
    """The store, timing each purge transaction."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.seconds: list[float] = []

    async def purge_notifications(self, shard: int, *, before: int, limit: int) -> int:
        began = time.perf_counter()
        removed = await self.store.purge_notifications(shard, before=before, limit=limit)
        self.seconds.append(time.perf_counter() - began)
        return int(removed)


async def bench_purge(kind: str, old: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        store, postgres = await open_store(kind, directory)
        try:
            await fill(store, old)
            timed = TimedStore(store)
            cpu = time.process_time()
            removed = await purge_expired(timed, 0, now=NOW, retention_days=90, batch=BATCH)  # type: ignore[arg-type]
            cpu = time.process_time() - cpu
            assert removed == old, (removed, old)
            page, _ = await store.notifications(1, limit=200)
            assert all(n.created_at > NOW - 90 * DAY for n in page.items)
        finally:
            await store.close()
            if postgres is not None:     # asyncpg wants asyncio: its own loop in a thread
                await trio.to_thread.run_sync(lambda: asyncio.run(drop_schema(*postgres)))
    emit("purge_rows_per_s", old / cpu, "1/s", "higher", store=kind, rows=old, batch=BATCH,
         note="process CPU time (PostgreSQL's own CPU is not counted)")
    emit("purge_batch_max_ms", max(timed.seconds) * 1000, "ms", "lower", store=kind, batches=len(timed.seconds),
         median_ms=round(statistics.median(timed.seconds) * 1000, 3))


def bench_scrape(repeat: int) -> None:
    channel = {"in_flight": 2, "delivered": 5, "failed_attempts": 4, "dead": 1, "dropped": 0, "store_errors": 0,
               "deferred_rounds": 3}
    stats = WorkerStatistics(last_seq=40, recorded_seq=38, received_seq=42, lag=2, notifications=7, batches=9,
                             inbox_depth=1, store_errors=0, settled=6,
                             channels={name: dict(channel) for name in ("ws", "email", "webhook")},
                             outbox={name: {"pending": 3, "dead": 1} for name in ("ws", "email", "webhook")})

    class Worker:
        shard = 0

        def statistics(self) -> WorkerStatistics:
            return stats

    worker = Worker()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(lambda: worker))
    timings = []
    for _ in range(repeat):
        began = time.perf_counter()
        generate_latest(registry)
        timings.append(time.perf_counter() - began)
    emit("scrape_us", statistics.median(timings) * 1e6, "us", "lower", repeat=repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 notifications instead of 100,000")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    trio.run(bench_purge, args.store, 10_000 if args.quick else 100_000)
    bench_scrape(200 if args.quick else 2_000)


if __name__ == "__main__":
    main()
