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

Every role keeps a heartbeat in Redis (``exness:health:<role>:<instance>``) that
``exness-actors health --role R`` reads for container health checks; it says ``ready`` only
while the role's Redis connection works (and, for the engine, while it takes commands).
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any, Awaitable, Callable, Optional

import trio

from actors import topology
from actors.bus import streams as redis_edge
from actors.history.candles import CandlesHandle
from actors.config import prepare_data_dir
from actors.engine.actor import EngineHandle
from actors.engine.messages import EventBatch
from actors.runtime import tune_gc, wait_for_stop_signal

__all__ = ["serve_engine_edge", "run_role", "ROLES", "MirrorCandles", "check_shard"]

log = logging.getLogger("exness.roles")

ROLES = topology.ROLES

#: roles that keep files in ``--data-dir`` (jwt.secret when ``[auth] jwt_secret`` is unset;
#: the snapshots and their key)
DATA_DIR_ROLES = ("gateway", "ws", "snapshotter")


def _redis_url(cfg: Any) -> str:
    url = cfg.settings.bus.redis_url
    if not url:
        from actors.config import ConfigError
        raise ConfigError("bus.redis_url: split mode needs Redis; set REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
    return str(url)


def _shards(cfg: Any) -> int:
    return int(cfg.settings.bus.shards)


def check_shard(cfg: Any, shard: int) -> int:
    """``shard`` when it is one of ``[bus] shards``, else a :class:`ConfigError` saying so."""
    shards = _shards(cfg)
    if not 0 <= shard < shards:
        from actors.config import ConfigError
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
    """Run one of the roles other than ``all``/``engine`` until a signal (or ``shutdown``)."""
    runner = _RUNNERS.get(_the_actor_of(cfg, role))
    if runner is None:
        raise ValueError(f"role {role!r} runs in supervisor.run_system; the others are {', '.join(_RUNNERS)}")
    if role in DATA_DIR_ROLES:
        prepare_data_dir(cfg.data_dir)
    done = shutdown if shutdown is not None else trio.Event()
    async with _Bus(cfg, role) as bus:
        async with trio.open_nursery() as nursery:
            if handle_signals:
                await nursery.start(_signals, done)
            info = await nursery.start(functools.partial(runner, cfg=cfg, bus=bus, done=done,
                                                         announce=announce))
            tune_gc()   # the started app (routes, schemas, caches) is long-lived: keep the collector off it
            task_status.started(info)
            await done.wait()
            log.info("event=shutdown role=%s", role)
            stop = info.get("stop") if isinstance(info, dict) else None
            if stop is not None:
                with trio.move_on_after(_graceful_timeout_s(cfg) + 1):
                    await stop()
            nursery.cancel_scope.cancel()


def _graceful_timeout_s(cfg: Any) -> float:
    from actors.gateway import GatewaySettings
    return GatewaySettings.from_config(cfg).graceful_timeout_s


def _tokens(cfg: Any) -> Any:
    from actors.gateway import token_issuer_from_config
    return token_issuer_from_config(cfg)


async def _mirror(nursery: trio.Nursery, cfg: Any, bus: redis_edge.RedisBus, remote: Any, store: Any,
                  outbox: Optional[trio.MemorySendChannel] = None) -> MirrorCandles:
    """Events stream → the remote handle's subscribers and a mirror of the candles."""
    shards = _shards(cfg)
    send, receive = trio.open_memory_channel[EventBatch](1024)
    mirror = MirrorCandles(store=store, outbox=outbox)
    await mirror.seed([i.symbol for i in cfg.core.instruments])
    # public quotes come from shard 0 (every shard sees every quote); account events from all
    streams = [redis_edge.events_stream(k, shards) for k in range(shards)]
    nursery.start_soon(functools.partial(redis_edge.events_reader, bus=bus, streams=streams, send=send))

    async def fan_out() -> None:
        async with receive:
            async for batch in receive:
                mirror.on_batch(batch)
                remote.publish(batch)
    nursery.start_soon(fan_out)
    return mirror


async def _open_store(cfg: Any) -> Any:
    from actors.store.base import open_store
    return await open_store(cfg)


async def _remote(nursery: trio.Nursery, cfg: Any, bus: redis_edge.RedisBus) -> redis_edge.RemoteEngineHandle:
    remote = redis_edge.RemoteEngineHandle(
        bus=bus, core=cfg.core, shards=_shards(cfg),
        request_timeout_s=cfg.settings.bus.request_timeout_s,
        max_inflight=cfg.settings.engine.inbox_size)
    await nursery.start(remote.run)
    return remote


async def _run_gateway(*, cfg: Any, bus: redis_edge.RedisBus, done: trio.Event, announce: bool,
                       task_status: trio.TaskStatus[dict] = trio.TASK_STATUS_IGNORED) -> None:
    from actors import gateway as gateway_actor
    store = await _open_store(cfg)
    try:
        async with trio.open_nursery() as nursery:
            remote = await _remote(nursery, cfg, bus)
            mirror = await _mirror(nursery, cfg, bus, remote, store)
            info = await nursery.start(functools.partial(
                gateway_actor.run, handle=remote, store=store, candles=mirror, cfg=cfg, tokens=_tokens(cfg),
                shutdown=done))

            def status() -> dict:
                return {"ready": bus.connected, "reason": "" if bus.connected else "Redis unreachable",
                        "url": info.url, "in_flight": len(remote._pending)}
            await nursery.start(functools.partial(redis_edge.heartbeat, bus=bus, role="gateway", status=status))
            if announce:
                print(f"exness-actors: gateway HTTP API {info.url}/api/v1 — docs {info.url}/docs — "
                      f"engine over Redis ({remote.shards} shard(s))", flush=True)

            async def stop() -> None:
                await info.stopped.wait()
                await remote.cleanup()
            task_status.started({"gateway": info, "remote": remote, "url": info.url, "stop": stop})
    finally:
        with trio.CancelScope(shield=True):
            await store.close()


async def _run_ws(*, cfg: Any, bus: redis_edge.RedisBus, done: trio.Event, announce: bool,
                  task_status: trio.TaskStatus[dict] = trio.TASK_STATUS_IGNORED) -> None:
    from actors.ws import server as ws_actor
    store = await _open_store(cfg)
    try:
        async with trio.open_nursery() as nursery:
            remote = await _remote(nursery, cfg, bus)
            candle_send, candle_receive = trio.open_memory_channel[Any](1024)
            mirror = await _mirror(nursery, cfg, bus, remote, store, outbox=candle_send)
            notifications_send, notifications_receive = trio.open_memory_channel[Any](256)
            await nursery.start(functools.partial(redis_edge.notifications_reader, bus=bus, send=notifications_send))
            server = await nursery.start(functools.partial(
                ws_actor.run, handle=remote, cfg=cfg, tokens=_tokens(cfg), candles_inbox=candle_receive,
                candles=mirror, store=store, notifications_inbox=notifications_receive))

            def status() -> dict:
                return {"ready": bus.connected, "reason": "" if bus.connected else "Redis unreachable",
                        "url": server.url}
            await nursery.start(functools.partial(redis_edge.heartbeat, bus=bus, role="ws", status=status))
            if announce:
                print(f"exness-actors: WebSocket {server.url} — engine over Redis", flush=True)

            async def stop() -> None:
                await remote.cleanup()
            task_status.started({"ws": server, "remote": remote, "url": server.url, "stop": stop})
    finally:
        with trio.CancelScope(shield=True):
            await store.close()


async def _run_feed(*, cfg: Any, bus: redis_edge.RedisBus, done: trio.Event, announce: bool,
                    task_status: trio.TaskStatus[dict] = trio.TASK_STATUS_IGNORED) -> None:
    from actors.feed import price_feed
    from actors.config import ConfigError
    source = cfg.settings.feed.source
    if source == "redis":
        raise ConfigError("feed.source: the feed role publishes to Redis; give it a source "
                          "(synthetic, replay:FILE or binance), not redis")
    send, receive = trio.open_memory_channel[Any](4096)
    async with trio.open_nursery() as nursery:
        published = await nursery.start(functools.partial(redis_edge.run_quote_publisher, bus=bus, receive=receive))
        feed_stats = await nursery.start(functools.partial(price_feed.run, outbox=send, cfg=cfg))

        def status() -> dict:
            return {"ready": bus.connected, "reason": "" if bus.connected else "Redis unreachable",
                    "source": source, **published}
        await nursery.start(functools.partial(redis_edge.heartbeat, bus=bus, role="feed", status=status))
        if announce:
            print(f"exness-actors: feed {source} → Redis stream {redis_edge.QUOTES_STREAM}", flush=True)
        task_status.started({"published": published, "feed": feed_stats})


async def _run_consumer(kind: str, *, cfg: Any, bus: redis_edge.RedisBus, announce: bool,
                        task_status: trio.TaskStatus[dict]) -> None:
    from actors.history import candles as candles_actor
    from actors.history import persister as persister_actor
    store = await _open_store(cfg)
    shards = _shards(cfg)
    try:
        async with trio.open_nursery() as nursery:
            send, receive = trio.open_memory_channel[EventBatch](256)
            # the candles role needs only the quotes: shard 0 sees every quote. A persister keeps
            # one shard's history (its watermark is per shard): one persister per shard, --shard K
            shard = 0 if kind == "candles" else check_shard(cfg, cfg.settings.bus.shard)
            streams = [redis_edge.events_stream(shard, shards)]
            reader_stats: dict = {}
            nursery.start_soon(functools.partial(
                redis_edge.events_reader, bus=bus, streams=streams, send=send, group=kind,
                consumer=f"{kind}-{redis_edge.default_instance()}", stats=reader_stats))
            if kind == "candles":
                actor = await nursery.start(functools.partial(
                    candles_actor.run, inbox=receive, settings=cfg.settings.candles, store=store,
                    symbols=[instrument.symbol for instrument in cfg.core.instruments]))
            else:
                actor = await nursery.start(functools.partial(
                    persister_actor.run, inbox=receive, settings=cfg.settings.persister, store=store, shard=shard))

            def status() -> dict:
                return {"ready": bus.connected, "reason": "" if bus.connected else "Redis unreachable",
                        **reader_stats}
            await nursery.start(functools.partial(redis_edge.heartbeat, bus=bus, role=kind, status=status))
            if announce:
                print(f"exness-actors: {kind} from Redis {', '.join(streams)} into the {cfg.settings.store.kind} store",
                      flush=True)
            task_status.started({kind: actor, "reader": reader_stats})
    finally:
        with trio.CancelScope(shield=True):
            await store.close()


async def _run_candles(*, cfg: Any, bus: redis_edge.RedisBus, done: trio.Event, announce: bool,
                       task_status: trio.TaskStatus[dict] = trio.TASK_STATUS_IGNORED) -> None:
    await _run_consumer("candles", cfg=cfg, bus=bus, announce=announce, task_status=task_status)


async def _run_persister(*, cfg: Any, bus: redis_edge.RedisBus, done: trio.Event, announce: bool,
                         task_status: trio.TaskStatus[dict] = trio.TASK_STATUS_IGNORED) -> None:
    await _run_consumer("persister", cfg=cfg, bus=bus, announce=announce, task_status=task_status)


class _EngineProgress:
    """The snapshotter's view of a remote engine: its durable seq from its heartbeat."""

    def __init__(self) -> None:
        self.durable_seq = 0
        self.rotate_requested = False
        self.journal_damage: list[str] = []

    def request_checkpoint(self) -> None:
        """The engine is another process: it writes its own checkpoints (every HASH_BLOCK
        inputs and at a clean stop), so a snapshot taken here cannot ask it for one."""


async def _run_snapshotter(*, cfg: Any, bus: redis_edge.RedisBus, done: trio.Event, announce: bool,
                           task_status: trio.TaskStatus[dict] = trio.TASK_STATUS_IGNORED) -> None:
    from actors.engine import snapshotter
    from actors.engine.keys import load_or_create_key
    key = load_or_create_key(cfg.data_dir, cfg.settings.snapshot.key)
    shard = cfg.settings.bus.shard
    engine_instance = cfg.settings.bus.engine_instance or redis_edge.default_instance()
    progress = _EngineProgress()

    async def follow() -> None:
        heartbeat_key = redis_edge.health_key("engine", engine_instance)
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

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow)
        stats = await nursery.start(functools.partial(snapshotter.run, handle=progress, cfg=cfg, key=key))

        def status() -> dict:
            return {"ready": bus.connected, "reason": "" if bus.connected else "Redis unreachable",
                    "snapshots": stats.written, "last_seq": stats.last_seq}
        await nursery.start(functools.partial(redis_edge.heartbeat, bus=bus, role="snapshotter", status=status))
        if announce:
            print(f"exness-actors: snapshotter for the engine {engine_instance!r} in {cfg.data_dir}", flush=True)
        task_status.started({"snapshotter": stats})


async def _run_notifications(*, cfg: Any, bus: redis_edge.RedisBus, done: trio.Event, announce: bool,
                             task_status: trio.TaskStatus[dict] = trio.TASK_STATUS_IGNORED) -> None:
    from actors import notifications
    store = await _open_store(cfg)
    shard = check_shard(cfg, cfg.settings.bus.shard)
    stream = redis_edge.events_stream(shard, _shards(cfg))
    try:
        async with trio.open_nursery() as nursery:
            send, receive = trio.open_memory_channel[EventBatch](256)
            reader_stats: dict = {}
            # from the stream's start: the worker skips what its watermark says is derived
            nursery.start_soon(functools.partial(redis_edge.events_reader, bus=bus, streams=[stream], send=send,
                                                 start="0", stats=reader_stats))
            worker = await nursery.start(functools.partial(
                notifications.run, inbox=receive, store=store,
                settings=cfg.settings.notifications, instruments={i.symbol: i for i in cfg.core.instruments},
                shard=shard, sink=redis_edge.notifications_publisher(bus), backlog=[]))

            def status() -> dict:
                return {"ready": bus.connected, "reason": "" if bus.connected else "Redis unreachable",
                        "last_seq": worker.last_seq, **reader_stats}
            await nursery.start(functools.partial(redis_edge.heartbeat, bus=bus, role="notifications", status=status))
            if announce:
                print(f"exness-actors: notifications of shard {shard} from Redis {stream} → "
                      f"{redis_edge.NOTIFICATIONS_STREAM}", flush=True)
            task_status.started({"notifications": worker, "reader": reader_stats})
    finally:
        with trio.CancelScope(shield=True):
            await store.close()


#: the split-mode role processes, by the one actor actors/topology.py places in each
_RUNNERS: dict[str, Callable[..., Awaitable[None]]] = {
    "gateway": _run_gateway, "ws": _run_ws, "price_feed": _run_feed, "candles": _run_candles,
    "persister": _run_persister, "snapshotter": _run_snapshotter, "notifications": _run_notifications,
}


def _the_actor_of(cfg: Any, role: str) -> str:
    """The actor a split-mode ``role`` process runs ("" for the roles that run several)."""
    here = topology.placed(role, bus=cfg.settings.bus, feed_source=cfg.settings.feed.source)
    return here[0] if len(here) == 1 else ""
