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
from typing import Any, Callable, Optional

import attrs
import trio

from actors import stage_profile, topology
from actors.config import Config, ConfigError, prepare_data_dir
from actors.engine import repair as repair_journal
from actors.engine.actor import EngineHandle
from actors.engine.faults import FatalIOError, fatal_io_error
from actors.engine.keys import KeyError_, load_or_create_key
from actors.engine.recovery import Recovered, RecoveryError, account_types_change, journal_dir, recover
from actors.engine.snapshot_worker import write_engine_snapshot
from actors.history import persister
from actors.runtime import StartupError, tune_gc, wait_for_stop_signal
from actors.topology import supervised
from exness_actors import BUILD as CORE_BUILD, BUILD_REASON as CORE_BUILD_REASON
from exness_actors import codec
from exness_actors.engine import Engine
from exness_actors.errors import InvalidValue
from exness_actors.events import CommandRejected
from exness_actors.instruments import CoreConfig
from exness_actors.journal import JournalError, JournalWriter, encode_frame

__all__ = ["run_system", "System", "supervised", "StartupError"]

log = logging.getLogger("exness.supervisor")


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")


class System:
    """Handles of a running system (what tests, the gateway and simulations reach for)."""

    def __init__(self, cfg: Config, handle: EngineHandle, key: bytes, store: Any) -> None:
        self.cfg = cfg
        self.handle = handle
        self.key = key
        self.store = store
        #: what each actor reported when it started, by its name in actors/topology.py
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

    def fail(self, failure: FatalIOError) -> None:
        """The engine's journal cannot be written: stop gracefully, then raise ``failure``."""
        self.failure = failure
        self.request_shutdown()


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
    run, and what each is handed, is actors/topology.py's; ``clock`` stamps the engine's inputs."""
    if role not in ("all", "engine"):
        raise StartupError(f"run_system runs the roles all and engine, not {role!r}")
    log.info("event=core_build build=%s reason=%r", CORE_BUILD, CORE_BUILD_REASON)
    _prepare_data_dir(cfg.data_dir)
    boot = _Boot(cfg=cfg, role=role, shard=shard, feed=feed, clock=clock,
                 here=topology.running(role, topology.EMBEDDED, bus=cfg.settings.bus,
                                       feed_source=feed or cfg.settings.feed.source,
                                       notifications=cfg.settings.notifications.enabled),
                 **_startup_settings(cfg, role, shard))
    from actors.store.base import open_store
    store = await open_store(cfg)
    recovered, journal, backlog = await _recover(boot, store, repair=repair)
    engine = recovered.engine
    recovered_state = (f"seq {engine.last_seq} ({len(engine.accounts)} accounts, {len(engine.positions)} open "
                       f"positions; recovered in {recovered.elapsed_s * 1000:.0f} ms)")   # before the feed moves it
    tune_gc()   # the recovered book is long-lived: keep the cyclic collector off it
    system = System(cfg, EngineHandle(engine, cfg.settings.engine.inbox_size), boot.key, store)
    ctx = topology.in_process(
        cfg, mode=topology.EMBEDDED, here=boot.here, handle=system.handle, journal=journal, store=store,
        key=boot.key, tokens=boot.tokens, shard=shard, feed_source=feed, engine_clock=clock,
        shutdown=system.shutdown_requested, on_fatal=system.fail, started=system.actors,
        notification_backlog=[item for item in backlog if item[0] > (boot.notified_seq or 0)])
    try:
        with topology.startup_errors_unwrapped(), stage_profile.profiling():
            await _run(ctx, system, boot, backlog, recovered_state,
                       handle_signals=handle_signals, announce=announce, task_status=task_status)
    finally:
        journal.close()
    # The engine has stopped and closed its subscriptions; consumers have flushed and exited.
    await _final_snapshot(system)


async def _run(ctx: topology.Context, system: System, boot: _Boot, backlog: list,
               recovered_state: str, *, handle_signals: bool, announce: bool,
               task_status: trio.TaskStatus[System]) -> None:
    """The actors, stage by stage as actors/topology.py places them, until the shutdown drains them."""
    async with trio.open_nursery() as nursery:
        if "persister" in boot.here:
            await persister.catch_up(system.store, backlog, shard=boot.shard)
        await topology.start_stage(ctx, nursery, "consumer")   # first: they see every batch
        await topology.start_stage(ctx, nursery, "engine")
        intake = trio.CancelScope()
        await nursery.start(functools.partial(_start_intake, ctx, intake, handle_signals=handle_signals))
        if announce:
            _announce(system, boot, recovered_state)
        log.info("event=ready last_seq=%d data_dir=%s", system.handle.last_seq, boot.cfg.data_dir)
        task_status.started(system)
        await system.shutdown_requested.wait()
        await _drain(system, boot, intake, nursery)


@attrs.define(kw_only=True)
class _Boot:
    """What :func:`run_system` settled before starting the actors."""
    cfg: Config
    role: str
    shard: int
    feed: Optional[str]
    clock: Callable[[], int]
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
            if boot.notified_seq is not None:   # the notifications of the cut-off inputs go too
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


async def _start_intake(ctx: topology.Context, intake: trio.CancelScope, *, handle_signals: bool,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """What brings work to the engine — the feed, the snapshotter, the HTTP API and the WebSocket
    server — in one nursery that ``intake`` cancels first at shutdown."""
    with intake:
        async with trio.open_nursery() as inner:
            await topology.start_stage(ctx, inner, "intake")
            if handle_signals:
                await inner.start(_watch_signals, ctx.shutdown)
            task_status.started()


def _announce(system: System, boot: _Boot, recovered_state: str) -> None:
    """The CLI says where it listens; embedded users (tests, benchmarks) read :class:`System`."""
    data_dir = boot.cfg.data_dir.resolve()
    gateway = system.actors.get("gateway")
    if gateway is None:
        print(f"exness-actors: engine shard {boot.shard} ready at {recovered_state}; data dir "
              f"{data_dir}; commands from Redis stream {system.actors['engine_edge']['stream']}", flush=True)
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


async def _watch_signals(shutdown: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                         ) -> None:
    await wait_for_stop_signal(task_status=task_status)
    shutdown.set()


if __name__ == "__main__":   # ``python -m supervisor …`` is the CLI too
    from actors.cli import main
    raise SystemExit(main())
