"""The composition root: configuration, recovery, the actor nursery and signals.

``exness-actors run`` recovers the engine (newest valid snapshot + journal tail), then starts the
actors in dependency order with ``nursery.start`` — engine → consumers (persister, candles) →
feed → snapshotter — and prints where it listens. The engine is fail-fast: if it dies, the
process stops taking orders and exits non-zero; every other actor is restarted with exponential
backoff. SIGTERM/SIGINT stop intake, drain the engine, flush the journal, let the consumers
finish, write a final snapshot and exit 0. A journal that cannot be written (disk full, an I/O
error) stops the engine; the process drains the same way, without the final snapshot, and exits
with one line and the exit code of :mod:`actors.engine.faults`.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

import trio

from actors.engine import actor as engine_actor
from actors.engine import repair as repair_journal
from actors.engine import snapshotter
from actors.config import Config, ConfigError, prepare_data_dir
from actors.engine.actor import EngineHandle
from actors.engine.faults import FatalIOError, fatal_io_error
from actors.engine.keys import KeyError_, load_or_create_key
from actors.engine.recovery import Recovered, RecoveryError, journal_dir, recover
from actors import topology
from actors.runtime import tune_gc
from actors.engine.snapshot_worker import write_engine_snapshot
from exness_actors.errors import InvalidValue
from exness_actors.journal import JournalError, JournalWriter

__all__ = ["run_system", "System", "supervised", "StartupError"]

log = logging.getLogger("exness.supervisor")


class StartupError(Exception):
    """The system cannot start; the message tells the operator what to do."""


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")


async def supervised(name: str, actor: Callable[..., Awaitable[Any]], *,
                     task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
                     max_backoff_s: float = 30.0, **kwargs: Any) -> None:
    """Run ``actor`` and restart it with exponential backoff whenever it fails."""
    delay = 0.5
    started = False
    while True:
        began = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                info = await nursery.start(functools.partial(actor, **kwargs))
                if not started:
                    task_status.started(info)
                    started = True
            return
        except Exception as exc:  # a non-critical actor failed: log it and restart
            config_errors = exc.split(ConfigError)[0] if isinstance(exc, BaseExceptionGroup) else (
                exc if isinstance(exc, ConfigError) else None)
            if config_errors is not None:
                raise StartupError(f"{name}: {config_errors!r}") from None   # restarting cannot help
            log.error("event=actor_failed actor=%s error=%s restart_in_s=%.1f", name,
                      ", ".join(repr(error) for error in _leaves(exc)), delay)
        if trio.current_time() - began > 60:
            delay = 0.5            # it had been healthy for a while: start the backoff afresh
        await trio.sleep(delay)
        delay = min(delay * 2, max_backoff_s)


def _leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups: what a log line should name."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


class System:
    """Handles of a running system (what tests, the gateway and simulations reach for)."""

    def __init__(self, cfg: Config, handle: EngineHandle, key: bytes, store: Any) -> None:
        self.cfg = cfg
        self.handle = handle
        self.key = key
        self.store = store
        self.actors: dict[str, Any] = {}
        self.shutdown_requested = trio.Event()
        self.failure: Optional[FatalIOError] = None

    def statistics(self) -> dict[str, Any]:
        out = {"engine": self.handle.statistics()}
        for name, info in self.actors.items():
            if hasattr(info, "statistics"):
                out[name] = info.statistics()
        return out

    def request_shutdown(self) -> None:
        self.shutdown_requested.set()


def _as_placed(name: str, actor: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """``actor`` run the way its restart policy in actors/topology.py asks."""
    if topology.spec(name).restart == "backoff":
        return functools.partial(supervised, name, actor)
    return actor


def _prepare_data_dir(data_dir: Path) -> None:
    try:
        prepare_data_dir(data_dir)
    except ConfigError as exc:
        raise StartupError(str(exc)) from None


async def run_system(cfg: Config, *, repair: bool = False, feed: Optional[str] = None,
                     handle_signals: bool = True, clock: Callable[[], int] = time.time_ns,
                     announce: bool = False, role: str = "all", shard: int = 0,
                     task_status: trio.TaskStatus[System] = trio.TASK_STATUS_IGNORED) -> None:
    """Recover and run every actor until a signal or :meth:`System.request_shutdown`.

    ``role="all"`` is the embedded platform. ``role="engine"`` (split mode, ``[bus] kind =
    "redis"``) runs the engine shard ``shard`` with its journal, snapshotter, persister and
    candles, and serves the command stream over Redis instead of HTTP/WebSocket; with ``[feed]
    source = "redis"`` its quotes come from the feed role (actors/bus/streams.py)."""
    if role not in ("all", "engine"):
        raise StartupError(f"run_system runs the roles all and engine, not {role!r}")
    data_dir = cfg.data_dir
    _prepare_data_dir(data_dir)
    from actors import gateway as gateway_actor
    from actors.ws import server as ws_actor
    try:
        key = load_or_create_key(data_dir, cfg.settings.snapshot.key)
        core_config = cfg.core
        if role == "engine":
            from actors.bus.roles import check_shard
            core_config = core_config.for_shard(check_shard(cfg, shard))   # ids disjoint from every other shard's
        tokens = gateway_actor.token_issuer_from_config(cfg)   # one issuer for HTTP and WS
        http = gateway_actor.GatewaySettings.from_config(cfg)
    except (KeyError_, ConfigError, InvalidValue) as exc:
        raise StartupError(str(exc)) from None

    from actors.store.base import open_store
    store = await open_store(cfg)
    persisted_seq = await store.last_persisted_seq(shard)
    backlog: list[tuple[int, int, list]] = []

    async def recover_from(stored_seq: int, *, cut: bool = False) -> Recovered:
        backlog.clear()
        return await trio.to_thread.run_sync(functools.partial(
            recover, data_dir, core_config, key, repair=cut, persisted_seq=stored_seq,
            on_events=lambda seq, ts, events: backlog.append((seq, ts, events))))

    repaired = None
    try:
        recovered = await recover_from(persisted_seq, cut=repair)
        if recovered.cut is not None:   # --repair cut the journal: cut the history, raise the id floor
            repaired = await repair_journal.reconcile(
                recovered, store=store, shard=shard, shards=cfg.settings.bus.shards if role == "engine" else 1,
                stored_seq=persisted_seq, recover_again=functools.partial(recover_from, cut=True))
            recovered = repaired.recovered
        journal = JournalWriter(journal_dir(data_dir),
                                segment_bytes=cfg.settings.journal.segment_bytes)
        if repaired is not None:
            repair_journal.finish(repaired, data_dir, journal, ts=clock())
    except (RecoveryError, JournalError) as exc:
        await store.close()
        raise StartupError(str(exc)) from None
    engine = recovered.engine
    recovered_state = (f"seq {engine.last_seq} ({len(engine.accounts)} accounts, {len(engine.positions)} open "
                       f"positions; recovered in {recovered.elapsed_s * 1000:.0f} ms)")   # before the feed moves it
    tune_gc()   # the recovered book is long-lived: keep the cyclic collector off it
    handle = EngineHandle(engine, cfg.settings.engine.inbox_size)
    system = System(cfg, handle, key, store)
    keep = cfg.settings.snapshot.keep

    from actors.history import candles as candles_actor
    from actors.history import persister as persister_actor
    from actors.feed import price_feed
    from actors.engine.messages import EventBatch

    # which actors run here: actors/topology.py (in split mode the candles/persister/snapshotter
    # roles may do their work instead, [bus] …_role)
    here = topology.placed(role, bus=cfg.settings.bus, feed_source=feed or cfg.settings.feed.source)
    try:
        async with trio.open_nursery() as nursery:
            # consumers first, so they see every batch the engine publishes
            local_persister = "persister" in here
            local_candles = "candles" in here
            if local_persister:
                persister_sub = handle.subscribe("persister", max_buffer=256, lossless=True)
            if local_candles:
                candles_sub = handle.subscribe("candles", max_buffer=256, lossless=True)
            if backlog and local_persister:   # recovered events the store has not persisted
                await store.apply_batch(EventBatch(backlog, backlog[-1][0]), shard=shard)
                log.info("event=store_caught_up batches=%d last_seq=%d", len(backlog), backlog[-1][0])
            if local_persister:
                system.actors["persister"] = await nursery.start(functools.partial(
                    _as_placed("persister", persister_actor.run), inbox=persister_sub.receive, cfg=cfg,
                    store=store, shard=shard))
            # live candle updates for the WebSocket server (bounded; dropped and counted when full)
            candle_updates_send, candle_updates_receive = trio.open_memory_channel[Any](1024)
            if local_candles:
                system.actors["candles"] = await nursery.start(functools.partial(
                    _as_placed("candles", candles_actor.run), inbox=candles_sub.receive, cfg=cfg, store=store,
                    outbox=candle_updates_send))
            fsync = cfg.settings.journal.fsync
            await nursery.start(functools.partial(
                _engine_until_failure, system, handle=handle, journal=journal, cfg=cfg, fsync=fsync,
                fsync_interval_ms=cfg.settings.journal.fsync_interval_ms, clock=clock))
            system.actors["engine"] = handle
            if "engine_edge" in here:
                from actors.bus import roles
                system.actors["edge"] = await nursery.start(functools.partial(
                    roles.serve_engine_edge, cfg=cfg, handle=handle, shard=shard,
                    quotes=(feed or cfg.settings.feed.source) == "redis",
                    stopping=system.shutdown_requested))

            intake = trio.CancelScope()
            async def _intake(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                with intake:
                    async with trio.open_nursery() as inner:
                        if "price_feed" in here:
                            system.actors["price_feed"] = await inner.start(functools.partial(
                                _as_placed("price_feed", price_feed.run), outbox=handle.inbox_sender(),
                                cfg=cfg, source=feed))
                        if "snapshotter" in here:
                            system.actors["snapshotter"] = await inner.start(functools.partial(
                                _as_placed("snapshotter", snapshotter.run), handle=handle, cfg=cfg, key=key))
                        if "gateway" not in here:   # split mode: no HTTP/WS here (the gateway/ws roles)
                            if handle_signals:
                                inner.start_soon(_watch_signals, system)
                            task_status.started()
                            return
                        # The API is essential: it is not restarted; failing to bind stops the start.
                        try:
                            system.actors["gateway"] = await inner.start(functools.partial(
                                gateway_actor.run, handle=handle, store=store,
                                candles=system.actors["candles"], cfg=cfg, tokens=tokens,
                                feed_stats=system.actors.get("price_feed"),
                                ws_stats=lambda: system.actors["ws"].statistics() if "ws" in system.actors else {},
                                persister=system.actors["persister"], shutdown=system.shutdown_requested))
                        except OSError as exc:
                            raise StartupError(f"cannot serve HTTP on {http.host}:"
                                               f"{http.port}: {exc.strerror or exc}") from None
                        system.actors["ws"] = await inner.start(functools.partial(
                                _as_placed("ws", ws_actor.run), handle=handle, cfg=cfg, tokens=tokens,
                            candles_inbox=candle_updates_receive, candles=system.actors["candles"],
                            store=store))
                        if handle_signals:
                            inner.start_soon(_watch_signals, system)
                        task_status.started()
            await nursery.start(_intake)

            gateway = system.actors.get("gateway")
            if announce and gateway is None:
                print(f"exness-actors: engine shard {shard} ready at {recovered_state}; data dir "
                      f"{data_dir.resolve()}; commands from Redis stream {system.actors['edge']['stream']}",
                      flush=True)
            elif announce:   # the CLI says where it listens; embedded users (tests, benchmarks) read System
                print(f"exness-actors: engine ready at {recovered_state}; data dir {data_dir.resolve()}; "
                      f"feed {feed or cfg.settings.feed.source}\n"
                      f"exness-actors: HTTP API {gateway.url}/api/v1 — docs {gateway.url}/docs — "
                      f"WebSocket {system.actors['ws'].url}", flush=True)
            log.info("event=ready last_seq=%d data_dir=%s", engine.last_seq, data_dir)
            task_status.started(system)

            await system.shutdown_requested.wait()

            # graceful shutdown: requests in flight finish while the engine still runs; then stop
            # intake, drain and flush, let consumers finish
            log.info("event=shutdown_begin last_seq=%d", engine.last_seq)
            if gateway is not None:
                with trio.move_on_after(http.graceful_timeout_s + 1):
                    await gateway.stopped.wait()
            intake.cancel()
            await handle.stop()
            if system.failure is not None:
                # the consumers' store may sit on the same full disk; the next start catches
                # it up from the journal, so do not wait for their retries
                nursery.cancel_scope.cancel()
    finally:
        journal.close()
    # The engine has stopped and closed its subscriptions; consumers have flushed and exited.
    if system.failure is not None:   # the state in memory may be ahead of the journal: no snapshot
        await store.close()
        raise system.failure
    try:
        path = await trio.to_thread.run_sync(write_engine_snapshot, data_dir, engine, key, keep)
    except OSError as error:
        raise fatal_io_error(error, what="writing the final snapshot", path=data_dir / "snapshots",
                             consequence="the journal is complete and durable, so the next start "
                                         "replays it instead") from None
    finally:
        await store.close()
    log.info("event=shutdown_complete last_seq=%d final_snapshot=%s", engine.last_seq, path)


async def _engine_until_failure(system: System, *, task_status: trio.TaskStatus[EngineHandle] = trio.TASK_STATUS_IGNORED,
                                **kwargs: Any) -> None:
    """The engine actor; a fatal I/O error (its journal cannot be written) becomes a graceful
    stop of the whole system — requests in flight are answered — instead of a crash."""
    try:
        await engine_actor.run(task_status=task_status, **kwargs)
    except FatalIOError as failure:
        system.failure = failure
        system.request_shutdown()


async def _watch_signals(system: System) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("event=signal_received signal=%s", signal.Signals(signum).name)
            system.request_shutdown()
            return


if __name__ == "__main__":   # ``python -m supervisor …`` is the CLI too
    from actors.cli import main
    raise SystemExit(main())
