"""The topology: which actors exist, what each is handed, how it is restarted, where it runs.

One table, :data:`ACTORS`, in start order, is the only place the system is wired. Each row names
the actor's run function, the function that builds its keyword arguments from a
:class:`Context`, the context fields it reads (``needs``), its restart policy, its stage and the
roles whose process runs it. Three kinds of process start their actors from it with
:func:`start_stage`, and nothing else:

* ``supervisor.run_system`` — the embedded platform (role ``all``) and an engine shard (role
  ``engine``): an in-process :class:`~actors.engine.actor.EngineHandle` in the context;
* ``actors.bus.roles.run_role`` — every other split-mode role: a
  :class:`~actors.bus.streams.RemoteEngineHandle`, event streams read from Redis, a candles mirror;
* ``actors.simulation.world`` — the deterministic simulation: the embedded context, run in
  :data:`SIMULATION` mode, whose every difference from production is a field of :class:`Mode`.

Stages: ``consumer`` actors read the engine's durable event batches and start before it (they
subscribe before it publishes); ``engine`` is the engine and its Redis edge; ``intake`` actors
bring work to the engine, start after it and are stopped first at shutdown.

Restart policies: ``fail-fast`` — the process stops (the engine: recovery rebuilds from what is
durable; a journal that cannot be written becomes a graceful stop through ``Context.on_fatal``);
``essential`` — not restarted, failing to start stops the start (the HTTP API);
``backoff`` — restarted with exponential backoff (:func:`supervised`). Where ``Mode.restarts`` is
off (a split-mode role process, whose process manager restarts it, and the simulation, which
reports a failure instead of hiding it) an actor's failure ends the process.

Adding an actor is one row plus its run function (docs/architecture.md, "Adding an actor").
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Iterator, Optional

import attrs
import trio

from actors.config import ConfigError
from actors.engine.faults import FatalIOError
from actors.runtime import StartupError
from actors.settings import BusSettings

if TYPE_CHECKING:
    from actors.config import Config

__all__ = ["ActorSpec", "ACTORS", "ROLES", "RESTART_POLICIES", "STAGES", "Mode", "EMBEDDED", "SPLIT",
           "SIMULATION", "Context", "in_process", "EVENTS_BUFFER", "CANDLE_UPDATES_BUFFER", "NOTIFICATIONS_BUFFER", "placed", "running", "spec",
           "needs_of", "start_stage", "startup_errors_unwrapped", "supervised", "subscriber", "markdown_table"]

log = logging.getLogger("exness.supervisor")

RESTART_POLICIES = ("fail-fast", "essential", "backoff")
STAGES = ("consumer", "engine", "intake")

#: a lossless consumer's buffer of event batches (in-process subscription or Redis reader alike)
EVENTS_BUFFER = 256
#: live candle updates for the WebSocket server (bounded; dropped and counted when full)
CANDLE_UPDATES_BUFFER = 1024
#: notifications worker → WebSocket server (bounded: the worker's ws deliveries wait when it is full)
NOTIFICATIONS_BUFFER = 256


# ---------------------------------------------------------------------------------------- modes

@attrs.frozen(kw_only=True)
class Mode:
    """How a process runs the actors it places. Production runs them as they are; every way the
    simulation differs is a field here, so the difference is declared in one place and tested
    (tests/test_topology.py)."""

    name: str
    #: restart policies apply (else an actor's failure ends the process, or the simulation's epoch)
    restarts: bool = True
    #: ``thread``: journal writes, snapshots and scrubs run off the event loop (a thread, a worker
    #: process); ``inline``: on it, so under trio's mock clock nothing finishes at a real time
    io: str = attrs.field(default="thread", validator=attrs.validators.in_(("thread", "inline")))
    #: the gateway binds its HTTP socket (else it builds its app, which a test client drives)
    serve: bool = True
    #: actors placed but not run, with why
    omitted: tuple[tuple[str, str], ...] = ()

    def omits(self, name: str) -> bool:
        return any(omitted == name for omitted, _why in self.omitted)


#: ``exness-actors run``: the embedded platform and an engine shard
EMBEDDED = Mode(name="embedded")
#: a split-mode role process other than the engine: its process manager restarts it
SPLIT = Mode(name="split", restarts=False)
#: ``exness-actors simulate`` (actors/simulation/world.py)
SIMULATION = Mode(name="simulation", restarts=False, io="inline", serve=False,
                  omitted=(("ws", "no sockets under the mock clock: traders use the HTTP API's test client"),
                           ("notifications", "no trading state: it has its own tests (SMTP and webhook servers)")))


# -------------------------------------------------------------------------------------- context

@attrs.define(kw_only=True, eq=False)
class Context:
    """What a process hands its actors: the fields the table's ``needs`` name.

    A process fills the fields its placed actors need; embedded and split mode differ only in
    what the fields hold (e.g. ``engine``: the in-process handle or the remote one)."""

    cfg: "Config"
    mode: Mode = EMBEDDED
    #: the actors this process runs (placed, minus what the mode omits)
    here: tuple[str, ...] = ()
    #: this process's engine shard
    shard: int = 0
    #: ``--feed``; ``None``: ``[feed] source``
    feed_source: Optional[str] = None
    #: the :class:`~actors.engine.interface.EngineClient`: ``EngineHandle`` in-process,
    #: ``RemoteEngineHandle`` in split mode
    engine: Any = None
    #: the engine's journal writer (the engine's own process only)
    journal: Any = None
    #: what the snapshotter follows (``EngineProgress``): the handle, or a remote engine's heartbeat
    progress: Any = None
    #: where the feed sends quotes: the engine's inbox, or the publisher to Redis
    quotes: Any = None
    #: ``events(consumer, quotes_only)``: a lossless stream of the engine's durable event batches
    #: (an in-process subscription, or a Redis consumer group); ``quotes_only``: any shard will do
    events: Optional[Callable[[str, bool], trio.MemoryReceiveChannel[Any]]] = None
    #: the :class:`~actors.store.base.Store`
    store: Any = None
    #: the access-token issuer HTTP and WebSocket share
    tokens: Any = None
    #: the snapshot key
    key: Optional[bytes] = None
    #: the candles a process without the candles actor serves (split mode's mirror)
    candles: Any = None
    #: live candle updates, candles → WebSocket server (only where the WebSocket server runs)
    candle_updates: Optional[tuple[trio.MemorySendChannel[Any], trio.MemoryReceiveChannel[Any]]] = None
    #: notifications for the WebSocket server's ``notifications`` channel: in-process, the worker
    #: sends on [0]; in split mode a reader of the notifications stream does (only where ws runs)
    notifications: Optional[tuple[trio.MemorySendChannel[Any], trio.MemoryReceiveChannel[Any]]] = None
    #: True while the in-process engine has inputs queued (it is saturated): the notifications
    #: worker then defers e-mail and webhook deliveries (None in split mode: another process)
    engine_busy: Optional[Callable[[], bool]] = None
    #: where the notifications worker publishes them (split mode: the notifications stream)
    notification_sink: Optional[Callable[[list], Awaitable[None]]] = None
    #: the journal's events after the notifications worker's watermark (derived before the live
    #: batches; also what a restarted worker had taken but not recorded)
    notification_backlog: list = attrs.Factory(list)
    #: wall time in ns (tokens, readiness)
    clock: Callable[[], int] = time.time_ns
    #: the engine's timestamps (``run_system(clock=…)``; the simulation's mock clock)
    engine_clock: Callable[[], int] = time.time_ns
    #: set to stop the process gracefully
    shutdown: trio.Event = attrs.Factory(trio.Event)
    #: a fail-fast actor's fatal I/O error becomes a graceful stop through this (else it is raised)
    on_fatal: Optional[Callable[[FatalIOError], None]] = None
    #: counters that outlive a restart (by actor name; the simulation's outlive its epochs)
    stats: dict[str, Any] = attrs.Factory(dict)
    #: what each actor started so far reported (``task_status.started``), by name
    started: dict[str, Any] = attrs.Factory(dict)


def subscriber(handle: Any) -> Callable[[str, bool], trio.MemoryReceiveChannel[Any]]:
    """``Context.events`` of an in-process engine: a lossless subscription per consumer."""
    def events(name: str, quotes_only: bool = False) -> trio.MemoryReceiveChannel[Any]:
        return handle.subscribe(name, max_buffer=EVENTS_BUFFER, lossless=True).receive
    return events


def in_process(cfg: "Config", *, mode: Mode, here: tuple[str, ...], handle: Any, journal: Any, store: Any,
               key: bytes, tokens: Any, **fields: Any) -> Context:
    """The context of a process that holds the engine: the embedded platform, an engine shard and
    the simulation build theirs here, so they hand their actors the same things."""
    return Context(cfg=cfg, mode=mode, here=here, engine=handle, journal=journal, progress=handle,
                   quotes=handle.inbox_sender() if "price_feed" in here else None, events=subscriber(handle),
                   store=store, key=key, tokens=tokens,
                   candle_updates=trio.open_memory_channel[Any](CANDLE_UPDATES_BUFFER) if "ws" in here else None,
                   notifications=(trio.open_memory_channel[Any](NOTIFICATIONS_BUFFER)
                                  if "ws" in here and "notifications" in here else None),
                   engine_busy=functools.partial(_inputs_queued, handle), **fields)


def _inputs_queued(handle: Any) -> bool:
    return bool(handle.statistics().get("inbox_depth"))


def _require(value: Any, what: str) -> Any:
    if value is None:
        raise RuntimeError(f"this process's context has no {what}")
    return value


# ----------------------------------------------------------------------- what each actor is handed

def _persister(ctx: Context) -> dict[str, Any]:
    return {"inbox": _require(ctx.events, "events")("persister", False), "store": ctx.store, "shard": ctx.shard,
            "settings": ctx.cfg.settings.persister}


def _candles(ctx: Context) -> dict[str, Any]:
    return {"inbox": _require(ctx.events, "events")("candles", True), "store": ctx.store,
            "symbols": [instrument.symbol for instrument in ctx.cfg.core.instruments],
            "settings": ctx.cfg.settings.candles,
            "outbox": ctx.candle_updates[0] if ctx.candle_updates is not None else None}


def _notifications(ctx: Context) -> dict[str, Any]:
    sink, to_ws = ctx.notification_sink, ctx.notifications   # split mode: a stream; in-process: a channel
    if sink is None and to_ws is not None:
        sink = to_ws[0].send
    return {"inbox": _require(ctx.events, "events")("notifications", False), "store": ctx.store, "shard": ctx.shard,
            "settings": ctx.cfg.settings.notifications,
            "instruments": {instrument.symbol: instrument for instrument in ctx.cfg.core.instruments},
            "sink": sink, "backlog": ctx.notification_backlog, "engine_busy": ctx.engine_busy,
            # split mode reads a trimmed Redis stream; in-process the subscription is lossless
            "detect_gaps": ctx.mode.name == SPLIT.name}


def _engine(ctx: Context) -> dict[str, Any]:
    journal = ctx.cfg.settings.journal
    return {"handle": ctx.engine, "journal": _require(ctx.journal, "journal"), "cfg": ctx.cfg,
            "fsync": journal.fsync, "fsync_interval_ms": journal.fsync_interval_ms, "clock": ctx.engine_clock,
            "journal_io": ctx.mode.io}


def _engine_edge(ctx: Context) -> dict[str, Any]:
    return {"cfg": ctx.cfg, "handle": ctx.engine, "shard": ctx.shard, "stopping": ctx.shutdown,
            "quotes": (ctx.feed_source or ctx.cfg.settings.feed.source) == "redis"}


def _price_feed(ctx: Context) -> dict[str, Any]:
    return {"outbox": _require(ctx.quotes, "quotes"), "cfg": ctx.cfg, "source": ctx.feed_source,
            "stats": ctx.stats.get("price_feed")}


def _snapshotter(ctx: Context) -> dict[str, Any]:
    return {"handle": _require(ctx.progress, "progress"), "cfg": ctx.cfg, "key": _require(ctx.key, "key"),
            "io": ctx.mode.io, "stats": ctx.stats.get("snapshotter")}


def _statistics_of(started: dict[str, Any], name: str) -> dict[str, Any]:
    info = started.get(name)
    return info.statistics() if info is not None else {}


def _gateway(ctx: Context) -> dict[str, Any]:
    started = ctx.started
    return {"handle": ctx.engine, "store": ctx.store, "candles": started.get("candles", ctx.candles), "cfg": ctx.cfg,
            "tokens": ctx.tokens, "feed_stats": started.get("price_feed"), "persister": started.get("persister"),
            # read at scrape time: a restarted worker replaces the one before in ``started``
            "notifications": (functools.partial(_statistics_of, started, "notifications")
                              if "notifications" in ctx.here else None),
            "ws_stats": functools.partial(_statistics_of, started, "ws") if "ws" in ctx.here else None,
            "shutdown": ctx.shutdown, "clock": ctx.clock, "serve": ctx.mode.serve}


def _ws(ctx: Context) -> dict[str, Any]:
    return {"handle": ctx.engine, "cfg": ctx.cfg, "tokens": ctx.tokens, "store": ctx.store,
            "candles": ctx.started.get("candles", ctx.candles),
            "candles_inbox": ctx.candle_updates[1] if ctx.candle_updates is not None else None,
            "notifications_inbox": ctx.notifications[1] if ctx.notifications is not None else None}


# ------------------------------------------------------------------------------------ the table

@attrs.frozen(kw_only=True)
class ActorSpec:
    name: str
    #: the actor's run function, as ``module:function`` (imported when it starts)
    run: str
    #: builds the run function's keyword arguments from the context
    arguments: Callable[[Context], dict[str, Any]]
    #: the :class:`Context` fields ``arguments`` reads
    needs: tuple[str, ...]
    restart: str = attrs.field(validator=attrs.validators.in_(RESTART_POLICIES))
    stage: str = attrs.field(validator=attrs.validators.in_(STAGES))
    #: the roles whose process runs it (``all`` is the embedded platform)
    roles: frozenset[str]
    #: ``[bus]`` flag that moves it out of the engine role into its own role process
    own_role_flag: str = ""


ACTORS: tuple[ActorSpec, ...] = (
    ActorSpec(name="persister", run="actors.history.persister:run", arguments=_persister,
              needs=("events", "store", "shard", "cfg"), restart="backoff", stage="consumer",
              roles=frozenset({"all", "engine", "persister"}), own_role_flag="persister_role"),
    ActorSpec(name="candles", run="actors.history.candles:run", arguments=_candles,
              needs=("events", "store", "cfg", "candle_updates"), restart="backoff", stage="consumer",
              roles=frozenset({"all", "engine", "candles"}), own_role_flag="candles_role"),
    ActorSpec(name="notifications", run="actors.notifications:run", arguments=_notifications,
              needs=("events", "store", "shard", "cfg", "notifications", "notification_sink",
                     "notification_backlog", "engine_busy", "mode"),
              restart="backoff", stage="consumer", roles=frozenset({"all", "notifications"})),
    ActorSpec(name="engine", run="actors.engine.actor:run", arguments=_engine,
              needs=("engine", "journal", "cfg", "engine_clock", "mode"), restart="fail-fast", stage="engine",
              roles=frozenset({"all", "engine"})),
    ActorSpec(name="engine_edge", run="actors.bus.roles:serve_engine_edge", arguments=_engine_edge,
              needs=("cfg", "engine", "shard", "shutdown", "feed_source"), restart="fail-fast", stage="engine",
              roles=frozenset({"engine"})),
    ActorSpec(name="price_feed", run="actors.feed.price_feed:run", arguments=_price_feed,
              needs=("quotes", "cfg", "feed_source", "stats"), restart="backoff", stage="intake",
              roles=frozenset({"all", "engine", "feed"})),
    ActorSpec(name="snapshotter", run="actors.engine.snapshotter:run", arguments=_snapshotter,
              needs=("progress", "cfg", "key", "mode", "stats"), restart="backoff", stage="intake",
              roles=frozenset({"all", "engine", "snapshotter"}), own_role_flag="snapshotter_role"),
    ActorSpec(name="gateway", run="actors.gateway:run", arguments=_gateway,
              needs=("started", "engine", "store", "candles", "cfg", "tokens", "here", "shutdown", "clock", "mode"),
              restart="essential", stage="intake", roles=frozenset({"all", "gateway"})),
    ActorSpec(name="ws", run="actors.ws.server:run", arguments=_ws,
              needs=("engine", "cfg", "tokens", "store", "started", "candles", "candle_updates", "notifications"),
              restart="backoff", stage="intake", roles=frozenset({"all", "ws"})),
)

#: every role a process can take, ``all`` first
ROLES: tuple[str, ...] = ("all", "engine", "gateway", "ws", "feed", "candles", "persister", "snapshotter",
                          "notifications")

#: feed sources that start no feed in the engine's process: "none" (tests) and "redis" (the feed role)
_NO_LOCAL_FEED = ("none", "redis")


def spec(name: str) -> ActorSpec:
    """The row of ``name``."""
    for row in ACTORS:
        if row.name == name:
            return row
    raise KeyError(name)


def placed(role: str, *, bus: BusSettings, feed_source: str) -> tuple[str, ...]:
    """The actors a ``role`` process runs, in start order: the table's roles, minus what a
    ``[bus] …_role`` flag moved to its own process, minus a local feed where quotes come from
    elsewhere."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    names = []
    for row in ACTORS:
        if role not in row.roles:
            continue
        if role == "engine" and row.own_role_flag and getattr(bus, row.own_role_flag):
            continue
        if row.name == "price_feed" and role != "feed" and feed_source in _NO_LOCAL_FEED:
            continue
        names.append(row.name)
    return tuple(names)


def running(role: str, mode: Mode, *, bus: BusSettings, feed_source: str,
            notifications: bool = True) -> tuple[str, ...]:
    """What a ``role`` process in ``mode`` starts: :func:`placed`, minus what the mode omits (and
    the notifications worker when ``[notifications] enabled`` is off)."""
    return tuple(name for name in placed(role, bus=bus, feed_source=feed_source)
                 if not mode.omits(name) and (notifications or name != "notifications"))


def needs_of(names: Iterable[str]) -> frozenset[str]:
    """The context fields the actors ``names`` read."""
    return frozenset(need for name in names for need in spec(name).needs)


# ------------------------------------------------------------------------------------- starting

@functools.cache
def _resolve(run: str) -> Callable[..., Awaitable[Any]]:
    module, _, function = run.partition(":")
    actor: Callable[..., Awaitable[Any]] = getattr(importlib.import_module(module), function)
    return actor


def bound(row: ActorSpec, ctx: Context) -> Callable[..., Awaitable[Any]]:
    """``row``'s actor with the arguments the context gives it, run as its restart policy asks."""
    actor = functools.partial(_resolve(row.run), **row.arguments(ctx))
    if row.restart == "fail-fast":
        return functools.partial(_fail_fast, actor, ctx)
    if row.restart == "backoff" and ctx.mode.restarts:
        return functools.partial(supervised, row.name, actor, announce_to=ctx.started)
    return actor


async def start_stage(ctx: Context, nursery: trio.Nursery, stage: str) -> None:
    """Start, in table order, the actors of ``stage`` this process runs (``ctx.here``); what each
    reports when started goes to ``ctx.started``."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
    for row in ACTORS:
        if row.stage != stage or row.name not in ctx.here:
            continue
        try:
            ctx.started[row.name] = await nursery.start(bound(row, ctx))
        except (OSError, BaseExceptionGroup) as exc:
            failure = _os_error(exc) if row.restart == "essential" else None
            if failure is None:
                raise
            raise StartupError(f"{row.name}: {failure.strerror or failure}") from None   # e.g. its port is taken


@contextlib.contextmanager
def startup_errors_unwrapped() -> Iterator[None]:
    """A :class:`StartupError` raised while actors start (inside nurseries, which wrap it in
    exception groups) reaches the caller as itself, so the CLI can say what to do."""
    try:
        yield
    except BaseExceptionGroup as group:
        startup, rest = group.split(StartupError)
        if startup is None or (rest is not None and rest.split(trio.Cancelled)[1] is not None):
            raise
        raise _leaves(startup)[0] from None


def _os_error(error: BaseException) -> Optional[OSError]:
    """The first ``OSError`` in ``error`` (an actor's nursery wraps what fails in it)."""
    return next((leaf for leaf in _leaves(error) if isinstance(leaf, OSError)), None)


async def _fail_fast(actor: Callable[..., Awaitable[Any]], ctx: Context, *,
                     task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    """A fail-fast actor: a fatal I/O error (its journal cannot be written) becomes a graceful
    stop of the whole process through ``ctx.on_fatal`` — requests in flight are answered —
    instead of a crash."""
    try:
        await actor(task_status=task_status)
    except FatalIOError as failure:
        if ctx.on_fatal is None:
            raise
        ctx.on_fatal(failure)


async def supervised(name: str, actor: Callable[..., Awaitable[Any]], *,
                     task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
                     max_backoff_s: float = 30.0, announce_to: Optional[dict[str, Any]] = None,
                     **kwargs: Any) -> None:
    """Run ``actor`` and restart it with exponential backoff whenever it fails. ``announce_to``
    (a process's ``Context.started``) gets what each start reported, under ``name``: a restarted
    actor's handle replaces the one before, so what reads it at run time (metrics) follows it."""
    delay = 0.5
    started = False
    while True:
        began = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                info = await nursery.start(functools.partial(actor, **kwargs))
                if announce_to is not None:
                    announce_to[name] = info
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


# ----------------------------------------------------------------------------------------- docs

def markdown_table() -> str:
    """The table as docs/architecture.md shows it."""
    lines = ["| actor | run function | arguments (context fields read) | stage | restart | roles |",
             "|---|---|---|---|---|---|"]
    for row in ACTORS:
        roles = ", ".join(role for role in ROLES if role in row.roles)
        moved = f" (`[bus] {row.own_role_flag}`: own role)" if row.own_role_flag else ""
        lines.append(f"| {row.name} | `{row.run}` | `{row.arguments.__name__}`: {', '.join(row.needs)} | "
                     f"{row.stage} | {row.restart} | {roles}{moved} |")
    return "\n".join(lines)
