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
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

import attrs
import trio

from actors.engine import actor as engine_actor
from actors.engine import repair as repair_journal
from actors.engine import snapshotter
from actors.config import Config, ConfigError, prepare_data_dir
from actors.engine.actor import EngineHandle
from actors.engine.faults import FatalIOError, fatal_io_error
from actors.engine.keys import KeyError_, load_or_create_key
from actors.engine.recovery import Recovered, RecoveryError, account_types_change, journal_dir, recover
from actors import topology
from actors.runtime import tune_gc, wait_for_stop_signal
from actors.engine.snapshot_worker import write_engine_snapshot
from exness_actors import BUILD as CORE_BUILD, BUILD_REASON as CORE_BUILD_REASON
from exness_actors import codec
from exness_actors.engine import Engine
from exness_actors.errors import InvalidValue
from exness_actors.events import CommandRejected
from exness_actors.instruments import CoreConfig
from exness_actors.journal import JournalError, JournalWriter, encode_frame

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
        except BaseExceptionGroup as group:
            cancelled, failures = group.split(trio.Cancelled)
            if cancelled is None:
                if failures is None or not isinstance(failures, Exception):
                    raise
                _restart_or_raise(name, failures, delay)
            else:
                # stopping, and the actor failed on its way out (a final flush on a full disk):
                # one line, and the stop goes on
                if failures is not None:
                    log.error("event=actor_failed_while_stopping actor=%s error=%s", name,
                              ", ".join(repr(error) for error in _leaves(failures)))
                raise cancelled from None
        except Exception as exc:  # a non-critical actor failed: log it and restart
            _restart_or_raise(name, exc, delay)
        if trio.current_time() - began > 60:
            delay = 0.5            # it had been healthy for a while: start the backoff afresh
        await trio.sleep(delay)
        delay = min(delay * 2, max_backoff_s)


def _restart_or_raise(name: str, exc: Exception, delay: float) -> None:
    """A non-critical actor failed: log it (the caller restarts it), unless restarting cannot help."""
    config_errors = exc.split(ConfigError)[0] if isinstance(exc, BaseExceptionGroup) else (
        exc if isinstance(exc, ConfigError) else None)
    if config_errors is not None:
        raise StartupError(f"{name}: {config_errors!r}") from None   # restarting cannot help
    log.error("event=actor_failed actor=%s error=%s restart_in_s=%.1f", name,
              ", ".join(repr(error) for error in _leaves(exc)), delay)


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


def journal_account_types(engine: Engine, journal: JournalWriter, config: CoreConfig, *, ts: int) -> None:
    """Bring the recovered core's account types to ``[accounts]`` through the journal (issue 16):
    apply the ``SetAccountTypes`` as the next input and make it durable before anything runs."""
    change = account_types_change(engine, config)
    if change is None:
        return
    events = engine.submit(change, ts=ts)
    journal.append(encode_frame(codec.encode(change)), first_seq=change.seq)
    journal.fsync()
    refused = [event for event in events if isinstance(event, CommandRejected)]
    if refused:
        raise RecoveryError(f"[accounts] cannot replace the account types in force: {refused[0].message}")
    log.info("event=account_types_changed seq=%d types=%s", change.seq, ",".join(t[0] for t in change.account_types))


async def run_system(cfg: Config, *, repair: bool = False, feed: Optional[str] = None,
                     handle_signals: bool = True, clock: Callable[[], int] = time.time_ns,
                     announce: bool = False, role: str = "all", shard: int = 0,
                     task_status: trio.TaskStatus[System] = trio.TASK_STATUS_IGNORED) -> None:
    """Recover and run every actor until a signal or :meth:`System.request_shutdown`.

    ``role="all"`` is the embedded platform. ``role="engine"`` (split mode, ``[bus] kind =
    "redis"``) runs the engine shard ``shard`` with its journal, snapshotter, persister and
    candles, and serves the command stream over Redis instead of HTTP/WebSocket; with ``[feed]
    source = "redis"`` its quotes come from the feed role (actors/bus/streams.py). Which actors
    run is :func:`actors.topology.placed`'s answer."""
    if role not in ("all", "engine"):
        raise StartupError(f"run_system runs the roles all and engine, not {role!r}")
    log.info("event=core_build build=%s reason=%r", CORE_BUILD, CORE_BUILD_REASON)
    _prepare_data_dir(cfg.data_dir)
    here = topology.placed(role, bus=cfg.settings.bus, feed_source=feed or cfg.settings.feed.source)
    if not cfg.settings.notifications.enabled:
        here = tuple(name for name in here if name != "notifications")
    boot = _Boot(cfg=cfg, role=role, shard=shard, feed=feed, clock=clock, handle_signals=handle_signals,
                 here=here, **_startup_settings(cfg, role, shard))
    from actors.store.base import open_store
    store = await open_store(cfg)
    recovered, journal, backlog = await _recover(boot, store, repair=repair)
    engine = recovered.engine
    recovered_state = (f"seq {engine.last_seq} ({len(engine.accounts)} accounts, {len(engine.positions)} open "
                       f"positions; recovered in {recovered.elapsed_s * 1000:.0f} ms)")   # before the feed moves it
    tune_gc()   # the recovered book is long-lived: keep the cyclic collector off it
    handle = EngineHandle(engine, cfg.settings.engine.inbox_size)
    system = System(cfg, handle, boot.key, store)
    try:
        async with trio.open_nursery() as nursery:
            updates = await _start_consumers(nursery, system, boot, backlog)
            await _start_engine(nursery, system, boot, journal)
            intake = trio.CancelScope()
            await nursery.start(functools.partial(_start_intake, system, boot, intake, *updates))
            if announce:
                _announce(system, boot, recovered_state)
            log.info("event=ready last_seq=%d data_dir=%s", engine.last_seq, cfg.data_dir)
            task_status.started(system)
            await system.shutdown_requested.wait()
            await _drain(system, boot, intake, nursery)
    finally:
        journal.close()
    # The engine has stopped and closed its subscriptions; consumers have flushed and exited.
    await _final_snapshot(system)


@attrs.define(kw_only=True)
class _Boot:
    """What :func:`run_system` settled before starting the actors."""
    cfg: Config
    role: str
    shard: int
    feed: Optional[str]
    clock: Callable[[], int]
    handle_signals: bool
    here: tuple[str, ...]
    key: bytes
    core_config: Any
    tokens: Any
    http: Any
    #: the notifications worker's watermark at start (None: the worker does not run here)
    notified_seq: Optional[int] = None


def _startup_settings(cfg: Config, role: str, shard: int) -> dict[str, Any]:
    """The snapshot key, the core config (this shard's ids), the token issuer shared by HTTP and
    WS and the HTTP settings; a :class:`StartupError` naming what is wrong."""
    from actors import gateway as gateway_actor
    try:
        key = load_or_create_key(cfg.data_dir, cfg.settings.snapshot.key)
        core_config = cfg.core
        if role == "engine":
            from actors.bus.roles import check_shard
            core_config = core_config.for_shard(check_shard(cfg, shard))   # ids disjoint from every other shard's
        return {"key": key, "core_config": core_config, "tokens": gateway_actor.token_issuer_from_config(cfg),
                "http": gateway_actor.GatewaySettings.from_config(cfg)}
    except (KeyError_, ConfigError, InvalidValue) as exc:
        raise StartupError(str(exc)) from None


async def _recover(boot: _Boot, store: Any, *, repair: bool) -> tuple[Recovered, JournalWriter, list]:
    """Recover the engine (with ``--repair``: cut the journal, then the history), open the journal;
    the recovered events the store has not persisted come back as the backlog."""
    cfg, data_dir, shard = boot.cfg, boot.cfg.data_dir, boot.shard
    persisted_seq = await store.last_persisted_seq(shard)
    replay_from = persisted_seq
    if "notifications" in boot.here:   # its backlog too: the journal after the lower watermark
        boot.notified_seq = await store.notifier_seq(shard)
        replay_from = min(persisted_seq, boot.notified_seq)
    backlog: list[tuple[int, int, list]] = []

    async def recover_from(stored_seq: int, *, cut: bool = False) -> Recovered:
        backlog.clear()
        return await trio.to_thread.run_sync(functools.partial(
            recover, data_dir, boot.core_config, boot.key, repair=cut, persisted_seq=stored_seq,
            on_events=lambda seq, ts, events: backlog.append((seq, ts, events))))

    repaired = None
    try:
        recovered = await recover_from(replay_from, cut=repair)
        if recovered.cut is not None:   # --repair cut the journal: cut the history, raise the id floor
            repaired = await repair_journal.reconcile(
                recovered, store=store, shard=shard, shards=cfg.settings.bus.shards if boot.role == "engine" else 1,
                stored_seq=persisted_seq, recover_again=functools.partial(recover_from, cut=True))
            recovered = repaired.recovered
            if boot.notified_seq is not None:   # notifications of the cut-off inputs go too
                kept = repaired.report.kept_through_seq
                await store.cut_notifications(shard, kept)
                boot.notified_seq = min(boot.notified_seq, kept)
        journal = JournalWriter(journal_dir(data_dir), segment_bytes=cfg.settings.journal.segment_bytes)
        if repaired is not None:
            repair_journal.finish(repaired, data_dir, journal, ts=boot.clock())
        journal_account_types(recovered.engine, journal, boot.core_config, ts=boot.clock())
    except (RecoveryError, JournalError) as exc:
        await store.close()
        raise StartupError(str(exc)) from None
    return recovered, journal, backlog


async def _start_consumers(nursery: trio.Nursery, system: System, boot: _Boot,
                           backlog: list) -> tuple[trio.MemoryReceiveChannel[Any], trio.MemoryReceiveChannel[Any]]:
    """The persister, candles and the notifications worker (where placed), first, so they see
    every batch the engine publishes; the backlog is persisted (and handed to the worker) before.
    Returns the live candle updates and the notifications for the WS server."""
    from actors.engine.messages import EventBatch
    from actors.history import candles as candles_actor
    from actors.history import persister as persister_actor
    handle, store, cfg = system.handle, system.store, boot.cfg
    subscriptions = {name: handle.subscribe(name, max_buffer=256, lossless=True)
                     for name in ("persister", "candles", "notifications") if name in boot.here}
    persisted_seq = await store.last_persisted_seq(boot.shard) if "persister" in boot.here else 0
    persisted = [item for item in backlog if item[0] > persisted_seq]
    if persisted and "persister" in boot.here:   # recovered events the store has not persisted
        await store.apply_batch(EventBatch(persisted, persisted[-1][0]), shard=boot.shard)
        log.info("event=store_caught_up batches=%d last_seq=%d", len(persisted), persisted[-1][0])
    if "persister" in boot.here:
        system.actors["persister"] = await nursery.start(functools.partial(
            _as_placed("persister", persister_actor.run), inbox=subscriptions["persister"].receive,
            settings=cfg.settings.persister, store=store, shard=boot.shard))
    # live candle updates for the WebSocket server (bounded; dropped and counted when full)
    candle_updates_send, candle_updates_receive = trio.open_memory_channel[Any](1024)
    if "candles" in boot.here:
        system.actors["candles"] = await nursery.start(functools.partial(
            _as_placed("candles", candles_actor.run), inbox=subscriptions["candles"].receive,
            settings=cfg.settings.candles, symbols=[instrument.symbol for instrument in boot.core_config.instruments],
            store=store, outbox=candle_updates_send))
    notifications_send, notifications_receive = trio.open_memory_channel[Any](256)
    if "notifications" in boot.here:
        await _start_notifications(nursery, system, boot, subscriptions["notifications"].receive,
                                   backlog, notifications_send)
    return candle_updates_receive, notifications_receive


async def _start_notifications(nursery: trio.Nursery, system: System, boot: _Boot,
                               inbox: trio.MemoryReceiveChannel[Any], backlog: list,
                               ws: trio.MemorySendChannel[Any]) -> None:
    """The notifications worker: the journal's events after its watermark first, then the live
    batches; what it publishes on the ``notifications`` channel goes to the WS server. ``carry``
    outlives a restart of the worker: what it had taken but not recorded is derived again."""
    from actors import notifications
    carry = [item for item in backlog if item[0] > (boot.notified_seq or 0)]
    system.actors["notifications"] = await nursery.start(functools.partial(
        _as_placed("notifications", notifications.run), inbox=inbox, store=system.store,
        settings=boot.cfg.settings.notifications, instruments=system.handle.instruments, shard=boot.shard,
        sink=ws.send, backlog=carry))


async def _start_engine(nursery: trio.Nursery, system: System, boot: _Boot, journal: JournalWriter) -> None:
    """The engine, and in the engine role its Redis edge."""
    cfg, handle = boot.cfg, system.handle
    await nursery.start(functools.partial(
        _engine_until_failure, system, handle=handle, journal=journal, cfg=cfg, fsync=cfg.settings.journal.fsync,
        fsync_interval_ms=cfg.settings.journal.fsync_interval_ms, clock=boot.clock))
    system.actors["engine"] = handle
    if "engine_edge" in boot.here:
        from actors.bus import roles
        system.actors["edge"] = await nursery.start(functools.partial(
            roles.serve_engine_edge, cfg=cfg, handle=handle, shard=boot.shard,
            quotes=(boot.feed or cfg.settings.feed.source) == "redis", stopping=system.shutdown_requested))


async def _start_intake(system: System, boot: _Boot, intake: trio.CancelScope,
                        candle_updates: trio.MemoryReceiveChannel[Any],
                        notifications: trio.MemoryReceiveChannel[Any],
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """What brings work to the engine — the feed, the snapshotter, the HTTP API and the WebSocket
    server — in one nursery that ``intake`` cancels first at shutdown."""
    from actors.feed import price_feed
    handle, cfg = system.handle, boot.cfg
    with intake:
        async with trio.open_nursery() as inner:
            if "price_feed" in boot.here:
                system.actors["price_feed"] = await inner.start(functools.partial(
                    _as_placed("price_feed", price_feed.run), outbox=handle.inbox_sender(), cfg=cfg,
                    source=boot.feed))
            if "snapshotter" in boot.here:
                system.actors["snapshotter"] = await inner.start(functools.partial(
                    _as_placed("snapshotter", snapshotter.run), handle=handle, cfg=cfg, key=boot.key))
            if "gateway" in boot.here:
                await _start_api(inner, system, boot, candle_updates, notifications)
            if boot.handle_signals:
                await inner.start(_watch_signals, system)
            task_status.started()


async def _start_api(nursery: trio.Nursery, system: System, boot: _Boot,
                     candle_updates: trio.MemoryReceiveChannel[Any],
                     notifications: trio.MemoryReceiveChannel[Any]) -> None:
    """The HTTP gateway (essential: not restarted; failing to bind stops the start) and the
    WebSocket server."""
    from actors import gateway as gateway_actor
    from actors.ws import server as ws_actor
    handle, store, cfg, actors = system.handle, system.store, boot.cfg, system.actors
    try:
        actors["gateway"] = await nursery.start(functools.partial(
            gateway_actor.run, handle=handle, store=store, candles=actors["candles"], cfg=cfg, tokens=boot.tokens,
            feed_stats=actors.get("price_feed"),
            ws_stats=lambda: actors["ws"].statistics() if "ws" in actors else {},
            persister=actors["persister"], shutdown=system.shutdown_requested))
    except OSError as exc:
        raise StartupError(f"cannot serve HTTP on {boot.http.host}:"
                           f"{boot.http.port}: {exc.strerror or exc}") from None
    actors["ws"] = await nursery.start(functools.partial(
        _as_placed("ws", ws_actor.run), handle=handle, cfg=cfg, tokens=boot.tokens,
        candles_inbox=candle_updates, candles=actors["candles"], store=store, notifications_inbox=notifications))


def _announce(system: System, boot: _Boot, recovered_state: str) -> None:
    """The CLI says where it listens; embedded users (tests, benchmarks) read :class:`System`."""
    data_dir = boot.cfg.data_dir.resolve()
    gateway = system.actors.get("gateway")
    if gateway is None:
        print(f"exness-actors: engine shard {boot.shard} ready at {recovered_state}; data dir "
              f"{data_dir}; commands from Redis stream {system.actors['edge']['stream']}", flush=True)
        return
    print(f"exness-actors: engine ready at {recovered_state}; data dir {data_dir}; "
          f"feed {boot.feed or boot.cfg.settings.feed.source}\n"
          f"exness-actors: HTTP API {gateway.url}/api/v1 — docs {gateway.url}/docs — "
          f"WebSocket {system.actors['ws'].url} — web terminal {gateway.url}/", flush=True)


async def _drain(system: System, boot: _Boot, intake: trio.CancelScope, nursery: trio.Nursery) -> None:
    """Graceful shutdown: requests in flight finish while the engine still runs; then stop
    intake, drain and flush, let the consumers finish."""
    log.info("event=shutdown_begin last_seq=%d", system.handle.last_seq)
    gateway = system.actors.get("gateway")
    if gateway is not None:
        with trio.move_on_after(boot.http.graceful_timeout_s + 1):
            await gateway.stopped.wait()
    intake.cancel()
    await system.handle.stop()
    if system.failure is not None:
        # the consumers' store may sit on the same full disk; the next start catches
        # it up from the journal, so do not wait for their retries
        nursery.cancel_scope.cancel()


async def _final_snapshot(system: System) -> None:
    """The snapshot of a clean stop — none after a fatal I/O error (the state in memory may be
    ahead of the journal), which is raised again here."""
    data_dir, engine = system.cfg.data_dir, system.handle.engine
    if system.failure is not None:
        await system.store.close()
        raise system.failure
    try:
        path = await trio.to_thread.run_sync(write_engine_snapshot, data_dir, engine, system.key,
                                             system.cfg.settings.snapshot.keep)
    except OSError as error:
        raise fatal_io_error(error, what="writing the final snapshot", path=data_dir / "snapshots",
                             consequence="the journal is complete and durable, so the next start "
                                         "replays it instead") from None
    finally:
        await system.store.close()
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


async def _watch_signals(system: System, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                         ) -> None:
    await wait_for_stop_signal(task_status=task_status)
    system.request_shutdown()


if __name__ == "__main__":   # ``python -m supervisor …`` is the CLI too
    from actors.cli import main
    raise SystemExit(main())
