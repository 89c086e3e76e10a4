"""Split mode: one process per role, joined by Redis Streams (DESIGN.md §6, docs/operations.md).

=============  ===========================================================================
role           what the process runs
=============  ===========================================================================
engine         one engine shard: recovery, journal, snapshotter, persister, candles (unless
               ``[bus] candles_role``), and the Redis edge (:func:`serve_engine_edge`);
               see :func:`supervisor.run_system`
gateway        the HTTP API over a :class:`~actors.bus.streams.RemoteEngineHandle`
ws             the WebSocket server over a remote handle and the events stream
feed           the price feed, publishing to ``stream:exness:quotes``
candles        1m candles from the events stream (consumer group ``candles``) into the store
persister      one shard's history from its events stream (consumer group ``persister``) into
               the store; one per shard (``--shard K``)
snapshotter    snapshots of an engine's journal (shares the engine's data volume)
notifications  one shard's notifications (``[bus] shard``) from its events stream, read from
               the stream's start and skipped up to the worker's watermark; publishes the
               ``notifications`` channel to the ws roles over ``stream:exness:notifications``
=============  ===========================================================================

Which actors a role process runs, and what each is handed, is actors/topology.py's: this module
opens, over Redis, the :class:`~actors.topology.Context` fields the placed actors need
(:class:`_SplitProcess`) and runs them with :func:`run_role`.

Every role keeps a heartbeat in Redis (``exness:health:<role>:<instance>``) that
``exness-actors health --role R`` reads for container health checks; it says ``ready`` only
while the role's Redis connection works (and, for the engine, while it takes commands).
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any, Optional

import attrs
import trio

from actors import topology
from actors.bus import streams as redis_edge
from actors.config import ConfigError, prepare_data_dir
from actors.engine.actor import EngineHandle
from actors.engine.keys import load_or_create_key
from actors.engine.messages import EventBatch
from actors.history.candles import CandlesHandle
from actors.runtime import StartupError, tune_gc, wait_for_stop_signal

__all__ = ["serve_engine_edge", "run_role", "ROLES", "MirrorCandles", "check_shard"]

log = logging.getLogger("exness.roles")

ROLES = topology.ROLES

def _redis_url(cfg: Any) -> str:
    url = cfg.settings.bus.redis_url
    if not url:
        raise ConfigError("bus.redis_url: split mode needs Redis; set REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
    return str(url)


def _shards(cfg: Any) -> int:
    return int(cfg.settings.bus.shards)


def check_shard(cfg: Any, shard: int) -> int:
    """``shard`` when it is one of ``[bus] shards``, else a :class:`ConfigError` saying so."""
    shards = _shards(cfg)
    if not 0 <= shard < shards:
        raise ConfigError(f"--shard {shard}: must be in 0..{shards - 1} (bus.shards = {shards})")
    return shard


class _Bus:
    """``async with _Bus(cfg, name) as bus``: a :class:`RedisBus`, closed on the way out."""

    def __init__(self, cfg: Any, name: str) -> None:
        self.url = _redis_url(cfg)
        self.name = name
        self.bus: Optional[redis_edge.RedisBus] = None

    async def __aenter__(self) -> redis_edge.RedisBus:
        self.bus = redis_edge.RedisBus(self.url, name=f"exness-{self.name}")
        await self.bus.connect()
        if not await self.bus.ping():
            log.warning("event=bus_unreachable_at_start url=%s (retrying in the background)",
                        redis_edge._redact(self.url))
        return self.bus

    async def __aexit__(self, *exc: Any) -> None:
        with trio.CancelScope(shield=True):
            if self.bus is not None:
                await self.bus.close()


async def serve_engine_edge(*, cfg: Any, handle: EngineHandle, shard: int, quotes: bool,
                            stopping: trio.Event,
                            task_status: trio.TaskStatus[dict] = trio.TASK_STATUS_IGNORED) -> None:
    """The engine role's Redis side, until ``stopping`` is set (then the engine drains)."""
    shards = _shards(cfg)
    check_shard(cfg, shard)
    async with _Bus(cfg, f"engine-{shard}") as bus:
        async with trio.open_nursery() as nursery:
            stats = await nursery.start(functools.partial(
                redis_edge.run_engine_edge, handle=handle, bus=bus, shard=shard, shards=shards,
                quotes=quotes,
                fresh_quotes_wait_s=cfg.settings.bus.fresh_quotes_wait_s))

            def status() -> dict:
                ready = bus.connected and handle.accepting
                return {"ready": ready, "reason": "" if ready else "Redis unreachable or engine stopping",
                        "shard": shard, "durable_seq": handle.durable_seq, "last_seq": handle.last_seq}

            await nursery.start(functools.partial(redis_edge.heartbeat, bus=bus, role="engine", status=status))
            stats["bus"] = bus
            task_status.started(stats)
            await stopping.wait()
            nursery.cancel_scope.cancel()


class MirrorCandles(CandlesHandle):
    """Candles for a gateway/WS process in split mode: the live candle and the larger running
    candles follow the events stream; closed candles are read from the store (the candles role
    writes them, within ``[candles] flush_interval_s``). Nothing is written from here."""

    def _on_closed(self, candle: Any) -> None:
        self._fold_running(candle)
        self._seeded.pop(candle.symbol, None)
        self._closed += 1
        if self.outbox is not None:
            self._publish(candle)


async def _signals(done: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    await wait_for_stop_signal(task_status=task_status)
    done.set()


async def run_role(cfg: Any, role: str, *, announce: bool = True, handle_signals: bool = True,
                   shutdown: Optional[trio.Event] = None,
                   task_status: trio.TaskStatus[dict] = trio.TASK_STATUS_IGNORED) -> None:
    """Run one of the roles other than ``all``/``engine`` until a signal (or ``shutdown``): the
    actors actors/topology.py places in ``role``, handed what a :class:`_SplitProcess` opens for
    them. ``task_status.started`` gets what each actor reported when it started, by name."""
    if role in ("all", "engine"):
        raise ValueError(f"role {role!r} runs in supervisor.run_system; the others are "
                         f"{', '.join(r for r in ROLES if r not in ('all', 'engine'))}")
    here = topology.running(role, topology.SPLIT, bus=cfg.settings.bus, feed_source=cfg.settings.feed.source)
    if topology.needs_of(here) & {"tokens", "key"}:
        prepare_data_dir(cfg.data_dir)   # jwt.secret when [auth] jwt_secret is unset; the snapshot key
    done = shutdown if shutdown is not None else trio.Event()
    with topology.startup_errors_unwrapped():
        async with _Bus(cfg, role) as bus, _SplitProcess(cfg, role, here, bus, done) as process:
            async with trio.open_nursery() as nursery:
                if handle_signals:
                    await nursery.start(_signals, done)
                ctx = await process.open(nursery)
                for stage in topology.STAGES:
                    await topology.start_stage(ctx, nursery, stage)
                await process.serve_metrics(nursery)
                await nursery.start(functools.partial(redis_edge.heartbeat, bus=bus, role=role, status=process.status))
                tune_gc()   # the started app (routes, schemas, caches) is long-lived: keep the collector off it
                if announce:
                    print(f"exness-actors: {process.announcement()}", flush=True)
                task_status.started(ctx.started)
                await done.wait()
                log.info("event=shutdown role=%s", role)
                with trio.move_on_after(_graceful_timeout_s(cfg) + 1):
                    await process.stop()
                nursery.cancel_scope.cancel()


def _graceful_timeout_s(cfg: Any) -> float:
    from actors.gateway import GatewaySettings
    return GatewaySettings.from_config(cfg).graceful_timeout_s


#: consumers that read their shard's events stream from its start and skip by their own watermark
_FROM_THE_START = frozenset({"notifications"})


class _EngineProgress:
    """The snapshotter's view of a remote engine: its durable seq from its heartbeat."""

    def __init__(self) -> None:
        self.durable_seq = 0
        self.rotate_requested = False
        self.journal_damage: list[str] = []

    def request_checkpoint(self) -> None:
        """The engine is another process: it writes its own checkpoints (every HASH_BLOCK
        inputs and at a clean stop), so a snapshot taken here cannot ask it for one."""


class _SplitProcess:
    """What a split-mode role process hands its actors: the :class:`~actors.topology.Context`
    fields the placed actors need (``needs`` in actors/topology.py), opened over Redis — a
    remote engine handle, the events streams, a candles mirror, the quotes publisher, a remote
    engine's progress — and closed on the way out."""

    def __init__(self, cfg: Any, role: str, here: tuple[str, ...], bus: redis_edge.RedisBus, done: trio.Event) -> None:
        self.cfg, self.role, self.bus = cfg, role, bus
        self.needs = topology.needs_of(here)
        self.ctx = topology.Context(cfg=cfg, mode=topology.SPLIT, here=here, shard=cfg.settings.bus.shard,
                                    shutdown=done)
        #: what the heartbeat says besides readiness (readers' and publishers' counters)
        self.extras: dict[str, Any] = {}
        self.streams: list[str] = []

    async def __aenter__(self) -> "_SplitProcess":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        with trio.CancelScope(shield=True):
            if self.ctx.store is not None:
                await self.ctx.store.close()

    async def open(self, nursery: trio.Nursery) -> topology.Context:
        ctx, cfg, needs = self.ctx, self.cfg, self.needs
        if "store" in needs:
            from actors.store.base import open_store
            ctx.store = await open_store(cfg)
        if "tokens" in needs:
            from actors.gateway import token_issuer_from_config
            ctx.tokens = token_issuer_from_config(cfg)
        if "key" in needs:
            ctx.key = load_or_create_key(cfg.data_dir, cfg.settings.snapshot.key)
        if "engine" in needs:
            ctx.engine = await self._remote(nursery)
        if "ws" in ctx.here:
            ctx.candle_updates = trio.open_memory_channel[Any](topology.CANDLE_UPDATES_BUFFER)
            ctx.notifications = trio.open_memory_channel[Any](topology.NOTIFICATIONS_BUFFER)
            await nursery.start(functools.partial(redis_edge.notifications_reader, bus=self.bus,
                                                  send=ctx.notifications[0]))
        if "notifications" in ctx.here:
            ctx.notification_sink = redis_edge.notifications_publisher(self.bus)
        if "engine" in needs or "candles" in needs:
            await self._follow_events(nursery)
        if "events" in needs:
            ctx.events = functools.partial(self._consumer_events, nursery)
        if "quotes" in needs:
            ctx.quotes = await self._quote_publisher(nursery)
        if "progress" in needs:
            ctx.progress = self._follow_engine(nursery)
        return ctx

    async def _remote(self, nursery: trio.Nursery) -> redis_edge.RemoteEngineHandle:
        cfg = self.cfg
        remote = redis_edge.RemoteEngineHandle(
            bus=self.bus, core=cfg.core, shards=_shards(cfg), request_timeout_s=cfg.settings.bus.request_timeout_s,
            max_inflight=cfg.settings.engine.inbox_size)
        await nursery.start(remote.run)
        return remote

    async def _follow_events(self, nursery: trio.Nursery) -> None:
        """Every shard's events stream → the remote handle's subscribers and a mirror of the
        candles (public quotes come from shard 0, as every shard sees every quote)."""
        ctx, shards = self.ctx, _shards(self.cfg)
        mirror: Optional[MirrorCandles] = None
        if "candles" in self.needs:
            outbox = ctx.candle_updates[0] if ctx.candle_updates is not None else None
            mirror = ctx.candles = MirrorCandles(store=ctx.store, outbox=outbox)
            await mirror.seed([instrument.symbol for instrument in self.cfg.core.instruments])
        send, receive = trio.open_memory_channel[EventBatch](topology.CANDLE_UPDATES_BUFFER)
        self.streams = [redis_edge.events_stream(k, shards) for k in range(shards)]
        nursery.start_soon(functools.partial(redis_edge.events_reader, bus=self.bus, streams=self.streams, send=send))
        nursery.start_soon(_fan_out, receive, mirror, ctx.engine)

    def _consumer_events(self, nursery: trio.Nursery, name: str, quotes_only: bool) -> trio.MemoryReceiveChannel:
        """A consumer group ``name`` on one shard's events stream: any shard for the quotes (shard
        0), else this process's ``--shard`` (a persister keeps one shard's history). The
        notifications worker reads the stream from its start instead, without a group: it skips
        what its own watermark in the store covers, so batches it had read but not recorded when
        it stopped are read again."""
        cfg = self.cfg
        shard = 0 if quotes_only else check_shard(cfg, self.ctx.shard)
        send, receive = trio.open_memory_channel[EventBatch](topology.EVENTS_BUFFER)
        self.streams = [redis_edge.events_stream(shard, _shards(cfg))]
        reader_stats = self.extras
        if name in _FROM_THE_START:
            reader = functools.partial(redis_edge.events_reader, start="0")
        else:
            reader = functools.partial(redis_edge.events_reader, group=name,
                                       consumer=f"{name}-{redis_edge.default_instance()}")
        nursery.start_soon(functools.partial(reader, bus=self.bus, streams=self.streams, send=send, stats=reader_stats))
        return receive

    async def _quote_publisher(self, nursery: trio.Nursery) -> trio.MemorySendChannel:
        source = self.cfg.settings.feed.source
        if source == "redis":
            raise ConfigError("feed.source: the feed role publishes to Redis; give it a source "
                              "(synthetic, replay:FILE or binance), not redis")
        send, receive = trio.open_memory_channel[Any](4096)
        published = await nursery.start(functools.partial(redis_edge.run_quote_publisher, bus=self.bus,
                                                          receive=receive))
        self.extras["source"] = source
        self.extras["published"] = published
        return send

    def _follow_engine(self, nursery: trio.Nursery) -> _EngineProgress:
        """The remote engine's durable seq, from its heartbeat (``[bus] engine_instance``)."""
        progress, bus, shard = _EngineProgress(), self.bus, self.ctx.shard
        heartbeat_key = redis_edge.health_key("engine", self._engine_instance())

        async def follow() -> None:
            while True:
                try:
                    raw = await bus.call(lambda client: client.get(heartbeat_key))
                    if raw:
                        body = json.loads(raw)
                        if int(body.get("shard", 0)) == shard:
                            progress.durable_seq = max(progress.durable_seq, int(body.get("durable_seq", 0)))
                except (redis_edge.BusUnavailable, ValueError):
                    pass
                await trio.sleep(1.0)
        nursery.start_soon(follow)
        return progress

    def _engine_instance(self) -> str:
        return self.cfg.settings.bus.engine_instance or redis_edge.default_instance()

    async def serve_metrics(self, nursery: trio.Nursery) -> None:
        """The notifications role's Prometheus ``/metrics`` (``[notifications] metrics_port``; 0:
        none): it has no HTTP server of its own, and a gateway would export it once per gateway."""
        settings = self.cfg.settings.notifications
        if "notifications" not in self.ctx.started or not settings.metrics_port:
            return
        from actors.notifications.metrics import serve_metrics
        try:
            listener = await nursery.start(functools.partial(
                serve_metrics, source=lambda: self.ctx.started.get("notifications"), host=settings.metrics_host,
                port=settings.metrics_port))
        except OSError as error:
            raise StartupError(f"notifications: cannot serve /metrics on {settings.metrics_host}:"
                               f"{settings.metrics_port}: {error.strerror or error} "
                               "(set [notifications] metrics_port, or 0 for none)") from None
        self.extras["metrics_url"] = listener.url

    def status(self) -> dict:
        """The heartbeat: ready while Redis answers, and what the actors report (a gap in the
        notifications worker's events stream is a ``detail``: it stays ready, the loss is past)."""
        ready = self.bus.connected
        body: dict[str, Any] = {"ready": ready, "reason": "" if ready else "Redis unreachable", **self.extras}
        for name, info in self.ctx.started.items():
            if hasattr(info, "url"):
                body["url"] = info.url
            if hasattr(info, "statistics"):
                statistics = info.statistics()
                if attrs.has(type(statistics)):      # e.g. the notifications worker's: a JSON object
                    statistics = attrs.asdict(statistics)
                body[name] = json.loads(json.dumps(statistics, default=str))
        worker = body.get("notifications")
        gaps = worker.get("gap_inputs") if isinstance(worker, dict) else 0
        if gaps:
            first, last = body["notifications"]["last_gap"]
            body["detail"] = (f"input gap: {gaps} input(s) of the events stream were never seen (latest: seqs "
                              f"{first}-{last}); their notifications are lost")
        if isinstance(self.ctx.engine, redis_edge.RemoteEngineHandle):
            body["in_flight"] = self.ctx.engine.statistics()["in_flight"]
        return body

    def announcement(self) -> str:
        """The line a role process prints when it is ready (tests read the URLs from it)."""
        started, cfg = self.ctx.started, self.cfg
        if "gateway" in started:
            url = started["gateway"].url
            return f"gateway HTTP API {url}/api/v1 — docs {url}/docs — engine over Redis ({_shards(cfg)} shard(s))"
        if "ws" in started:
            return f"WebSocket {started['ws'].url} — engine over Redis"
        if "price_feed" in started:
            return f"feed {cfg.settings.feed.source} → Redis stream {redis_edge.QUOTES_STREAM}"
        if "snapshotter" in started:
            return f"snapshotter for the engine {self._engine_instance()!r} in {cfg.data_dir}"
        return (f"{', '.join(started)} from Redis {', '.join(self.streams)} into the "
                f"{cfg.settings.store.kind} store")

    async def stop(self) -> None:
        """A graceful stop: the HTTP API answers what is in flight; the remote handle's
        reply stream is removed."""
        gateway = self.ctx.started.get("gateway")
        if gateway is not None:
            await gateway.stopped.wait()
        if isinstance(self.ctx.engine, redis_edge.RemoteEngineHandle):
            await self.ctx.engine.cleanup()


async def _fan_out(receive: trio.MemoryReceiveChannel[EventBatch], mirror: Optional[MirrorCandles],
                   remote: Optional[redis_edge.RemoteEngineHandle]) -> None:
    async with receive:
        async for batch in receive:
            if mirror is not None:
                mirror.on_batch(batch)
            if remote is not None:
                remote.publish(batch)
