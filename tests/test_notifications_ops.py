"""The notifications worker's operability (issue 13): its Prometheus metrics (the gateway's
``/metrics`` embedded, its own listener in split mode), the detection of inputs missing from a
trimmed events stream (real Redis), and the retention task's schedule (trio's mock clock: nothing
sleeps). The purge itself, on both stores, is in test_store.py."""

from __future__ import annotations

import functools
import logging

import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry, generate_latest

from actors.bus import roles
from actors.bus import streams as redis_edge
from actors.config import load_config
from actors.engine.messages import EventBatch
from actors.notifications._gaps import GapDetector
from actors.notifications._retention import FIRST_PURGE_AFTER_S, PURGE_EVERY_S, Retention, cutoff
from actors.notifications.metrics import WorkerCollector, worker_metrics
from actors.notifications.worker import WorkerStatistics
from exness_actors.events import PositionOpened, QuoteUpdated

from notify_helpers import free_port

TS = 1_700_000_000_000_000_000
EDGE_NAMES = ("PREFIX", "REPLY_PREFIX", "QUOTES_STREAM", "HEALTH_PREFIX", "NOTIFICATIONS_STREAM")


def opened(position_id: int, account_id: int = 1) -> PositionOpened:
    return PositionOpened(position_id=position_id, account_id=account_id, order_id=position_id, symbol="BTCUSDT",
                          side="buy", qty=153_846, open_price=6_500_000, margin=10_000, leverage=10,
                          liquidation_price=5_850_000, take_profit=None, stop_loss=None, trailing_stop=None, ts=TS)


def quote() -> QuoteUpdated:
    return QuoteUpdated(symbol="BTCUSDT", bid=6_500_000, ask=6_500_100, ts=TS)


def fill_batch(first_seq: int, last_seq: int, *fills: int) -> EventBatch:
    """An engine batch over ``first_seq … last_seq`` in which the inputs ``fills`` opened a
    position (id = the seq) and the others made no event."""
    return EventBatch([(seq, TS, [opened(seq)]) for seq in fills], last_seq, first_seq)


# ------------------------------------------------------------------ gap detection (pure)

def test_a_batch_starting_past_what_was_covered_is_a_gap_of_exactly_the_inputs_between():
    detector = GapDetector(shard=2, covered=5)
    assert detector.check([fill_batch(1, 3), fill_batch(4, 6)]) == []      # at or below the watermark
    assert detector.check([fill_batch(7, 10, 8), fill_batch(15, 20), fill_batch(21, 21)]) == [(11, 14)]
    assert detector.check([EventBatch([], 30, 0)]) == []                   # first_seq unknown: not checked
    assert detector.check([fill_batch(31, 31), fill_batch(40, 40)]) == [(32, 39)]
    assert (detector.gaps, detector.gap_inputs, detector.last_gap, detector.covered) == (2, 12, (32, 39), 40)
    assert detector.check([fill_batch(41, 40)]) == []                      # a batch of queries only


def test_event_stream_entries_carry_the_batch_s_first_seq_and_read_older_ones():
    batch = fill_batch(7, 9, 8)
    decoded = redis_edge.decode_event_batch(redis_edge.encode_event_batch(batch))
    assert (decoded.first_seq, decoded.last_seq, [item[0] for item in decoded.items]) == (7, 9, [8])
    older = redis_edge._packb([9, []])                                     # an entry of an older engine
    assert redis_edge.decode_event_batch(older).first_seq == 0


# ------------------------------------------------------------------ metrics

def statistics(**values) -> WorkerStatistics:
    base = dict(last_seq=40, recorded_seq=38, received_seq=42, lag=2, notifications=7, batches=9, inbox_depth=1,
                store_errors=1, settled=6,
                channels={"webhook": {"in_flight": 2, "delivered": 5, "failed_attempts": 4, "dead": 1, "dropped": 0,
                                      "store_errors": 0, "deferred_rounds": 3, "targets_busy": 1},
                          "ws": {"in_flight": 0, "delivered": 7, "failed_attempts": 0, "dead": 0, "dropped": 1,
                                 "store_errors": 0, "deferred_rounds": 0}},
                gaps=1, gap_inputs=5, last_gap=(4, 8), purged=11,
                outbox={"webhook": {"pending": 3, "dead": 1}, "ws": {"pending": 0, "dead": 0}})
    base.update(values)
    return WorkerStatistics(**base)


def rendered(stats: WorkerStatistics, shard: int = 3) -> str:
    class Worker:
        def statistics(self) -> WorkerStatistics:
            return stats
    worker = Worker()
    worker.shard = shard  # type: ignore[attr-defined]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(lambda: worker))
    return generate_latest(registry).decode()


def test_the_worker_statistics_become_labelled_metrics():
    text = rendered(statistics())
    for line in ('exness_notifications_last_seq{shard="3"} 40.0', 'exness_notifications_recorded_seq{shard="3"} 38.0',
                 'exness_notifications_lag_inputs{shard="3"} 2.0', 'exness_notifications_recorded_total{shard="3"} 7.0',
                 'exness_notifications_store_errors_total{shard="3"} 1.0',
                 'exness_notifications_gaps_total{shard="3"} 1.0', 'exness_notifications_gap_inputs_total{shard="3"} 5.0',
                 'exness_notifications_last_gap_to_seq{shard="3"} 8.0',
                 'exness_notifications_purged_total{shard="3"} 11.0',
                 'exness_notifications_delivered_total{channel="webhook",shard="3"} 5.0',
                 'exness_notifications_failed_attempts_total{channel="webhook",shard="3"} 4.0',
                 'exness_notifications_dead_lettered_total{channel="webhook",shard="3"} 1.0',
                 'exness_notifications_retries_total{channel="webhook",shard="3"} 3.0',
                 'exness_notifications_in_flight{channel="webhook",shard="3"} 2.0',
                 'exness_notifications_dropped_total{channel="ws",shard="3"} 1.0',
                 'exness_notifications_outbox{channel="webhook",shard="3",status="pending"} 3.0',
                 'exness_notifications_outbox{channel="webhook",shard="3",status="dead"} 1.0'):
        assert line in text, line
    assert "targets_busy" not in text                   # only the documented names
    assert "exness_notifications_last_gap_to_seq{shard=\"0\"} 0.0" in rendered(
        statistics(last_gap=None, gaps=0, gap_inputs=0), shard=0)


def test_a_worker_not_started_yet_exports_nothing():
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(lambda: None))
    assert b"exness_notifications" not in generate_latest(registry)
    assert list(worker_metrics({}, shard=0))             # an empty mapping: zeros, not an error


async def test_the_embedded_gateway_exports_the_worker_on_its_metrics(tmp_path):
    cfg = load_config(environ={}, overrides={
        "data": {"dir": str(tmp_path / "data")}, "journal": {"fsync": "off"}, "http": {"port": 0},
        "ws": {"port": 0}, "snapshot": {"interval_s": 3600}})
    from supervisor import run_system
    async with trio.open_nursery() as nursery:
        system = await nursery.start(functools.partial(run_system, cfg, handle_signals=False, feed="none"))
        response = await system.actors["gateway"].app.test_client().get("/metrics")
        text = await response.get_data(as_text=True)
        system.request_shutdown()
    assert 'exness_notifications_last_seq{shard="0"}' in text
    assert 'exness_notifications_delivered_total{channel="ws",shard="0"} 0.0' in text
    assert "exness_notifications_channels" not in text      # not the generic export besides


async def test_a_restarted_actor_replaces_its_handle_where_metrics_read_it(autojump_clock):
    """The gateway reads the worker's statistics through ``Context.started`` at scrape time; a
    worker restarted with backoff announces its new handle there (else the metrics would freeze
    on the failed one)."""
    from actors import topology
    handles = iter(["first worker", "second worker"])
    announced: dict = {}

    async def fails_once(*, task_status=trio.TASK_STATUS_IGNORED):
        handle = next(handles)
        task_status.started(handle)
        if handle == "first worker":
            raise RuntimeError("the store went away")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        first = await nursery.start(functools.partial(topology.supervised, "notifications", fails_once,
                                                      announce_to=announced))
        await trio.sleep(1)
        assert (first, announced) == ("first worker", {"notifications": "second worker"})
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ retention schedule

class PurgeLog:
    """A store that records the purges asked of it (and can fail once)."""

    def __init__(self, fail_first: bool = False) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self.fail_first = fail_first

    async def purge_notifications(self, shard: int, *, before: int, limit: int) -> int:
        if self.fail_first:
            self.fail_first = False
            raise OSError("the database is away")
        self.calls.append((shard, before, limit))
        return limit if len(self.calls) == 1 else 1      # a full batch first: purged again at once


async def test_retention_purges_after_start_then_periodically_with_the_injected_clock(autojump_clock):
    store = PurgeLog(fail_first=True)
    now = [1_000 * 86_400 * 10**9]
    retention = Retention(store=store, shard=4, retention_days=30, batch=500, clock=lambda: now[0])  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(retention.run)
        await trio.sleep(FIRST_PURGE_AFTER_S - 1)
        assert store.calls == [] and retention.errors == 0
        await trio.sleep(2)
        assert store.calls == [] and retention.errors == 1          # failed: logged, tried next time
        now[0] += PURGE_EVERY_S * 10**9
        await trio.sleep(PURGE_EVERY_S)
        before = cutoff(now[0], 30)
        assert store.calls == [(4, before, 500), (4, before, 500)]  # a full batch, then the rest
        assert (retention.purged, retention.runs) == (501, 1)
        nursery.cancel_scope.cancel()


async def test_retention_zero_keeps_everything(autojump_clock):
    store = PurgeLog()
    retention = Retention(store=store, shard=0, retention_days=0, batch=10, clock=lambda: 0)  # type: ignore[arg-type]
    with trio.move_on_after(10 * PURGE_EVERY_S):
        await retention.run()
    assert store.calls == []


# ------------------------------------------------------------------ split mode, real Redis

@pytest.fixture
def split_cfg(tmp_path, redis_url, redis_prefix, monkeypatch):
    """The notifications role over the real Redis, its streams and keys under this test's prefix."""
    for name in EDGE_NAMES:
        monkeypatch.setattr(redis_edge, name, redis_prefix + getattr(redis_edge, name))
    port = free_port()
    cfg = load_config(environ={}, overrides={
        "data": {"dir": str(tmp_path / "data")}, "journal": {"fsync": "off"},
        "bus": {"kind": "redis", "redis_url": redis_url, "request_timeout_s": 1},
        "notifications": {"poll_interval_s": 0.05, "metrics_port": port}})
    return cfg, port


def _redis(redis_url: str, work) -> None:
    import redis
    client = redis.Redis.from_url(redis_url)
    try:
        work(client)
    finally:
        client.close()


async def _xadd(redis_url: str, stream: str, *batches: EventBatch) -> None:
    def add(client) -> None:
        for batch in batches:
            client.xadd(stream, {"b": redis_edge.encode_event_batch(batch)})
    await trio.to_thread.run_sync(_redis, redis_url, add)


async def _trim_to(redis_url: str, stream: str, entries: int) -> None:
    await trio.to_thread.run_sync(_redis, redis_url, lambda client: client.xtrim(stream, maxlen=entries,
                                                                                 approximate=False))


async def _wait(predicate, timeout: float = 20) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


async def test_a_stream_trimmed_past_the_watermark_is_reported_with_its_range_and_the_rest_flows(
        split_cfg, redis_url, caplog):
    cfg, port = split_cfg
    stream = redis_edge.events_stream(0, 1)
    caplog.set_level(logging.INFO, logger="exness.notifications")
    await _xadd(redis_url, stream, fill_batch(1, 1, 1), fill_batch(2, 3))
    done = trio.Event()
    async with trio.open_nursery() as nursery:                     # the first run derives 1 … 3
        started = await nursery.start(functools.partial(
            roles.run_role, cfg, "notifications", announce=False, handle_signals=False, shutdown=done))
        worker = started["notifications"]
        await _wait(lambda: worker.last_seq == 3)
        done.set()
    assert worker.statistics().gaps == 0

    # while it is stopped the engine goes on (4 … 10), and the stream is trimmed to its last entry
    await _xadd(redis_url, stream, fill_batch(4, 5, 4), fill_batch(6, 8, 7), fill_batch(9, 10, 10))
    await _trim_to(redis_url, stream, 1)

    done = trio.Event()
    async with trio.open_nursery() as nursery:
        started = await nursery.start(functools.partial(
            roles.run_role, cfg, "notifications", announce=False, handle_signals=False, shutdown=done))
        worker = started["notifications"]
        await _wait(lambda: worker.last_seq == 10)
        stats = worker.statistics()
        assert (stats.gaps, stats.gap_inputs, stats.last_gap) == (1, 5, (4, 8))
        gap_lines = [record.getMessage() for record in caplog.records if "event=input_gap" in record.getMessage()]
        assert len(gap_lines) == 1 and "shard=0 from_seq=4 to_seq=8 missing=5" in gap_lines[0]

        # later inputs flow; a gap while reading (11 never published) is found too
        await _xadd(redis_url, stream, fill_batch(12, 12, 12))
        await _wait(lambda: worker.last_seq == 12)
        assert worker.statistics().last_gap == (11, 11) and worker.statistics().gap_inputs == 6
        page, _ = await worker.store.notifications(1)
        assert [n.seq for n in page.items] == [12, 10, 1]          # 4 and 7 are lost, and said to be

        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            missing = await client.get(f"http://127.0.0.1:{port}/other")
        assert 'exness_notifications_gap_inputs_total{shard="0"} 6.0' in metrics
        assert 'exness_notifications_last_seq{shard="0"} 12.0' in metrics
        assert missing.status_code == 404

        def healthy_with_detail() -> bool:
            ok, message = redis_edge.check_health(redis_url, "notifications")
            return ok and "input gap: 6 input(s)" in message and "seqs 11-11" in message
        with trio.fail_after(10):                                  # the heartbeat is rewritten every 2 s
            while not await trio.to_thread.run_sync(healthy_with_detail):
                await trio.sleep(0.2)
        done.set()


async def test_a_metrics_port_in_use_stops_the_role_with_what_to_do(split_cfg):
    import socket
    from actors.runtime import StartupError
    cfg, _ = split_cfg
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = cfg.with_overrides({"notifications": {"metrics_port": port}})
        with trio.fail_after(30), pytest.raises(
                StartupError, match=rf"notifications: cannot serve /metrics on 127\.0\.0\.1:{port}: .*metrics_port"):
            await roles.run_role(cfg, "notifications", announce=False, handle_signals=False)

