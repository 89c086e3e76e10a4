"""The process edge over Redis Streams (split mode, DESIGN.md §6).

Streams and keys (``[bus] prefix`` is ``stream:exness``; shard ``k`` of ``shards = N > 1`` adds
``:k`` to the per-shard names):

=============================================  ====================================================
``stream:exness`` / ``stream:exness:<k>``      commands and queries, gateways → engine shard; the
                                               engine reads it through consumer group ``engine``
``stream:exnessReceive:<gateway id>``          replies, engine → the one gateway that asked (each
                                               gateway reads only its own stream)
``stream:exness:events`` / ``…:events:<k>``    every durable engine batch's events, engine → WS
                                               servers, candles (one entry per engine batch:
                                               ``[last_seq, items, first_seq]``)
``stream:exness:quotes``                       raw quotes, feed → every engine shard
``exness:health:<role>:<instance>``            heartbeat (JSON, expires after 10 s) read by
                                               ``exness-actors health`` and the readiness checks
=============================================  ====================================================

Every entry has one field ``b``: msgpack. A gateway's entry is a **burst**: every request and
query its handlers queued since the previous flush (one ``XADD`` per flush, so a process crosses
into Redis once per batch, never once per command — DESIGN.md §6), as
``{"r": reply_stream, "i": [[corr, kind, payload], …]}`` with ``kind`` 0 for a command (the
journal's codec bytes) and 1 for a read query (``[view name, args, kwargs]``, one of the
gateway's views in :mod:`actors.wire.views`). Correlation ids are per gateway.

**Exactly-once effect.** The engine turns each entry into one :class:`~actors.engine.messages.Burst`
``[EdgeCursor(stream, id), *requests]`` that the engine actor applies whole, in one journal
write. The cursor is part of the core's state (journaled, snapshotted), so after a crash the
entries the group redelivers (pending, never acknowledged) at or below the recovered cursor are
acknowledged without being applied again. ``XACK`` is sent only after the replies — which are
released only once the batch is durable — so an acknowledged entry is always in the journal.
The cursor comes *first* in the burst: a torn journal tail can only lose commands whose replies
were never sent (their gateways answer 504 and a retry with the same ``client_order_id`` is
applied once), never apply one twice.

Redis unavailable: every loop here catches connection errors, marks the bus down (gateways
answer 503, readiness fails), backs off with jitter (0.1 s → 5 s) and carries on; nothing
acknowledged is lost because acknowledgement follows durability.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import socket
import time
from typing import Any, Awaitable, Callable, Optional

import attrs
import msgpack
import trio

from actors.engine.actor import EngineHandle, Subscribers, Subscription
from actors.engine.messages import (
    Burst,
    EngineStopped,
    EngineTimeout,
    EventBatch,
    Overloaded,
    Query,
    Reply,
    ReplySlot,
    ReplyTarget,
    Request,
)
from exness_actors import codec
from exness_actors.commands import Clock, EdgeCursor, Quote
from exness_actors.errors import InvalidCommand
from exness_actors.events import InstrumentUpdated
from exness_actors.instruments import SHARD_ID_SPAN, CoreConfig, Instrument

__all__ = [
    "RedisBus", "BusUnavailable", "RemoteEngineHandle", "BoxedView", "run_engine_edge",
    "run_quote_publisher", "events_reader", "heartbeat", "command_stream", "events_stream",
    "QUOTES_STREAM", "REPLY_PREFIX", "GROUP", "health_key", "check_health", "parse_id",
    "NOTIFICATIONS_STREAM", "notifications_publisher", "notifications_reader",
    "ShardClient", "shard_clients", "shard_of_position",
]

log = logging.getLogger("exness.redis_edge")

PREFIX = "stream:exness"
REPLY_PREFIX = "stream:exnessReceive:"
QUOTES_STREAM = "stream:exness:quotes"
#: the notifications worker → every WebSocket server (the ``notifications`` channel)
NOTIFICATIONS_STREAM = "stream:exness:notifications"
HEALTH_PREFIX = "exness:health"
GROUP = "engine"
HEALTH_TTL_S = 10
#: Redis stream trimming (``MAXLEN ~``): commands are kept long enough for any engine restart
COMMANDS_MAXLEN = 1_000_000
EVENTS_MAXLEN = 100_000
QUOTES_MAXLEN = 10_000
REPLIES_MAXLEN = 10_000
NOTIFICATIONS_MAXLEN = 10_000
REPLY_STREAM_TTL_MS = 3_600_000

_packb = msgpack.Packer(use_bin_type=True).pack


def _unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def command_stream(shard: int = 0, shards: int = 1) -> str:
    return PREFIX if shards <= 1 else f"{PREFIX}:{shard}"


def events_stream(shard: int = 0, shards: int = 1) -> str:
    return f"{PREFIX}:events" if shards <= 1 else f"{PREFIX}:events:{shard}"


def health_key(role: str, instance: str) -> str:
    return f"{HEALTH_PREFIX}:{role}:{instance}"


def default_instance() -> str:
    return os.environ.get("EXNESS_INSTANCE") or socket.gethostname()


def parse_id(entry_id: Any) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _drain(receive: trio.MemoryReceiveChannel, first: Any, limit: int) -> list:
    """``first`` and whatever else ``receive`` holds right now, up to ``limit`` items: one batch,
    so the batch crosses into Redis once."""
    items = [first]
    while len(items) < limit:
        try:
            items.append(receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return items


class BusUnavailable(Exception):
    """Redis could not be reached (or the connection broke mid-call)."""


# ------------------------------------------------------------------------------- the client

class RedisBus:
    """The process's Redis client (:class:`actors.bus.redis_client.TrioRedis`: trio sockets, a small
    connection pool, redis-py's command shapes).

    ``await bus.call(fn)`` runs ``fn(client)`` (an ``async def`` taking the client): callers put
    a whole batch (a pipeline) into one ``fn``. Connection errors become :class:`BusUnavailable`
    and clear :attr:`connected` until a call succeeds again; a command Redis refuses raises
    redis-py's ``ResponseError`` as it is.
    """

    def __init__(self, url: str, *, name: str = "exness") -> None:
        self.url = url
        self.name = name
        self.client: Any = None
        self.connected = False
        self.errors = 0
        self.calls = 0

    async def connect(self) -> None:
        """Make the client (connections are opened by the first calls)."""
        from actors.bus.redis_client import TrioRedis
        try:
            self.client = TrioRedis(self.url, name=self.name)
        except ValueError as exc:
            from actors.config import ConfigError
            raise ConfigError(f"bus.redis_url: {exc}") from None

    async def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            with trio.CancelScope(shield=True):
                await client.aclose()

    async def call(self, fn: Callable[[Any], Any]) -> Any:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
        if self.client is None:
            raise BusUnavailable("the Redis client is closed")
        self.calls += 1
        try:
            value = await fn(self.client)
        except (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError) as exc:
            if self.connected:
                log.warning("event=bus_down url=%s error=%r", _redact(self.url), str(exc))
            self.connected = False
            self.errors += 1
            raise BusUnavailable(str(exc) or type(exc).__name__) from None
        if not self.connected:
            log.info("event=bus_up url=%s", _redact(self.url))
        self.connected = True
        return value

    async def ping(self) -> bool:
        try:
            await self.call(lambda client: client.ping())
            return True
        except BusUnavailable:
            return False


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


class Backoff:
    """Exponential backoff with full jitter: 0.1 s doubling to 5 s."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first, self.cap, self.delay = first, cap, first

    async def wait(self) -> None:
        await trio.sleep(random.uniform(self.delay / 2, self.delay))
        self.delay = min(self.cap, self.delay * 2)

    def reset(self) -> None:
        self.delay = self.first


# ------------------------------------------------------------------------------- views

class BoxedView:
    """A gateway read query: ``function(engine, *args, **kwargs)`` answered as a 1-tuple.

    Picklable in the sense the edge needs: a view of :mod:`actors.wire.views` by name and
    plain arguments, so a remote gateway can ask for it over the bus."""

    __slots__ = ("function", "args", "kwargs")

    def __init__(self, function: Callable, args: tuple = (), kwargs: Optional[dict] = None) -> None:
        if isinstance(function, functools.partial):
            args = function.args + tuple(args)
            kwargs = {**function.keywords, **(kwargs or {})}
            function = function.func
        self.function = function
        self.args = args
        self.kwargs = kwargs or {}

    def __call__(self, engine: Any) -> tuple:
        return (self.function(engine, *self.args, **self.kwargs),)

    def wire(self) -> list:
        return [self.function.__name__, list(self.args), self.kwargs]


#: The views a remote gateway may run, and which of them are about one account (routed to the
#: account's shard; the others go to shard 0).
def _views() -> dict[str, Callable]:
    from actors.wire import views as views
    return {name: getattr(views, name) for name in views.__all__}


_ACCOUNT_VIEWS = {"account_summary", "pending_orders", "order_state", "pending_order",
                  "open_positions", "open_position", "position_symbol", "new_positions",
                  "alerts", "alert", "admin_account"}


def _edge_cursor(engine: Any, *, stream: str) -> Optional[tuple[int, int]]:
    """The engine's view of where it is in ``stream`` (journaled ``EdgeCursor`` inputs)."""
    return engine.edge_cursor(stream)


#: views about several accounts of one shard (the caller groups them): routed by the first
_ACCOUNTS_VIEWS = {"account_summaries"}


def _view_account(view: BoxedView) -> Optional[int]:
    if view.function.__name__ in _ACCOUNTS_VIEWS:
        accounts = view.args[0] if view.args else view.kwargs.get("account_ids")
        return int(accounts[0]) if accounts else None
    if view.function.__name__ not in _ACCOUNT_VIEWS:
        return None
    if view.args:
        return int(view.args[0])
    account = view.kwargs.get("account_id")
    return int(account) if account is not None else None


# ------------------------------------------------------------------------------- engine side

async def run_engine_edge(*, handle: EngineHandle, bus: RedisBus, shard: int = 0, shards: int = 1,
                          read_count: int = 512, quotes: bool = True, fresh_quotes_wait_s: float = 10.0,
                          task_status: trio.TaskStatus[dict] = trio.TASK_STATUS_IGNORED) -> None:
    """Feed one engine shard from its command stream, answer on the gateways' reply streams,
    publish its durable events, and (``quotes``) apply the feed's quotes stream. Commands are
    read only once the engine's quotes are fresh, or ``fresh_quotes_wait_s`` has passed."""
    stream = command_stream(shard, shards)
    stats: dict[str, Any] = {"entries": 0, "skipped_redelivered": 0, "replies": 0, "acks": 0,
                             "events_published": 0, "quotes": 0, "bad_items": 0,
                             "stream": stream}
    events_sub = handle.subscribe("redis-events", max_buffer=4096, lossless=True)
    to_replier, from_reader = trio.open_memory_channel[Any](64)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_command_reader, handle, bus, stream, read_count, to_replier, stats,
                               fresh_quotes_wait_s)
            nursery.start_soon(_replier, bus, stream, from_reader, stats)
            nursery.start_soon(_events_publisher, bus, events_sub, events_stream(shard, shards), stats)
            if quotes:
                nursery.start_soon(_quotes_reader, handle, bus, stats)
            task_status.started(stats)
    finally:
        # a lossless subscriber nobody reads would block the engine's shutdown
        handle.unsubscribe(events_sub)


async def _ensure_group(bus: RedisBus, stream: str) -> None:
    from redis.exceptions import ResponseError

    async def create(client: Any) -> None:
        try:
            await client.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    await bus.call(create)


#: how often the start-up wait for fresh quotes asks the engine again
_FRESH_QUOTES_POLL_S = 0.05


def _stale_symbols(engine: Any) -> list[str]:
    return engine.stale_symbols()


def _has_quotes(engine: Any) -> bool:
    return any(engine.quote(symbol) is not None for symbol in engine.books)


async def _await_fresh_quotes(handle: EngineHandle, wait_s: float, stream: str) -> None:
    """Hold the commands back after a start until no symbol the engine had quoted is stale, for
    at most ``wait_s``. A command redelivered from before a crash (its gateway answered 504)
    would otherwise meet the restored book's old quotes first and be refused ``STALE_QUOTE``.
    Each check sends a ``Clock``, so the core judges staleness at the current time (an engine
    that never had a quote has nothing to wait for, and is sent none)."""
    stale: list[str] = []
    with trio.move_on_after(wait_s):
        if not await _query_when_room(handle, _has_quotes):
            return
        while True:
            await handle.send(Clock())
            stale = await _query_when_room(handle, _stale_symbols)
            if not stale:
                return
            await trio.sleep(_FRESH_QUOTES_POLL_S)
    log.warning("event=commands_before_fresh_quotes stream=%s stale=%s waited_s=%g",
                stream, ",".join(stale) or "unknown", wait_s)


async def _query_when_room(handle: EngineHandle, view: Callable[[Any], Any]) -> Any:
    """``handle.query(view)``, waiting while the inbox is full (a burst of quotes at start)."""
    while True:
        try:
            return await handle.query(view)
        except Overloaded:
            await trio.sleep(_FRESH_QUOTES_POLL_S)


async def _command_reader(handle: EngineHandle, bus: RedisBus, stream: str, read_count: int,
                          to_replier: trio.MemorySendChannel, stats: dict,
                          fresh_quotes_wait_s: float) -> None:
    from redis.exceptions import ResponseError
    views = _views()
    try:
        await _await_fresh_quotes(handle, fresh_quotes_wait_s, stream)
    except EngineStopped:
        return
    consumer = f"engine-{stream}"
    try:
        cursor = await handle.query(functools.partial(_edge_cursor, stream=stream))
    except EngineStopped:
        return
    submitted: tuple[int, int] = cursor if cursor is not None else (-1, -1)
    backoff = Backoff()
    need_group = True
    pending_from: Optional[str] = "0"     # re-read our pending entries first (after a crash)
    async with to_replier:
        while True:
            try:
                if need_group:
                    await _ensure_group(bus, stream)
                    need_group = False
                start = pending_from if pending_from is not None else ">"
                block = None if pending_from is not None else 1000

                async def read(client: Any, start: str = start, block: Optional[int] = block) -> Any:
                    return await client.xreadgroup(GROUP, consumer, {stream: start},
                                                   count=read_count, block=block)

                response = await bus.call(read)
                backoff.reset()
            except BusUnavailable:
                need_group = True
                pending_from = "0"
                await backoff.wait()
                continue
            except ResponseError as exc:
                if "NOGROUP" in str(exc):   # Redis restarted without its data: make it again
                    log.warning("event=group_missing stream=%s", stream)
                    need_group = True
                    pending_from = "0"
                    continue
                raise
            entries = response[0][1] if response else []
            if pending_from is not None:
                if not entries:
                    pending_from = None   # caught up with what was delivered before
                    continue
                pending_from = entries[-1][0].decode()
            skipped: list[bytes] = []
            for entry_id, fields in entries:
                if not fields:          # deleted by trimming while pending
                    skipped.append(entry_id)
                    continue
                ident = parse_id(entry_id)
                if ident <= submitted:
                    skipped.append(entry_id)   # applied before the crash: exactly once
                    stats["skipped_redelivered"] += 1
                    continue
                reply_stream, outs, items = _decode_burst(fields.get(b"b"), views, handle)
                items.insert(0, EdgeCursor(stream, ident[0], ident[1]))
                try:
                    await handle.send(Burst(items))
                except EngineStopped:
                    # shutting down: this entry stays pending and goes to the next engine
                    log.info("event=edge_reader_stopped stream=%s", stream)
                    return
                submitted = ident
                stats["entries"] += 1
                await to_replier.send((entry_id, reply_stream, outs))
            if skipped:
                await to_replier.send((None, None, skipped))


def _decode_burst(raw: Optional[bytes], views: dict[str, Callable], handle: EngineHandle
                  ) -> tuple[Optional[str], list, list]:
    """(reply stream, [(corr, slot or error)], inbox items) of one stream entry."""
    outs: list[tuple[Any, Any]] = []
    items: list[Any] = []
    try:
        burst: Any = _unpackb(raw) if raw is not None else None
        reply_stream = burst["r"]
        requests = burst["i"]
        if not isinstance(reply_stream, str) or not reply_stream.startswith(REPLY_PREFIX):
            raise ValueError("bad reply stream")
    except Exception as exc:
        log.warning("event=bad_entry error=%r", f"{type(exc).__name__}: {exc}")
        return None, outs, items
    for request in requests:
        try:
            corr, kind, payload = request
            if kind == 0:
                slot = ReplySlot()
                items.append(Request(codec.decode(payload), slot))
                outs.append((corr, slot))
            elif kind == 1:
                name, args, kwargs = payload
                function = views[name]
                slot = ReplySlot()
                items.append(Query(BoxedView(function, tuple(args), kwargs), slot))
                outs.append((corr, slot))
            else:
                raise ValueError(f"unknown item kind {kind!r}")
        except Exception as exc:
            corr = request[0] if isinstance(request, (list, tuple)) and request else None
            outs.append((corr, InvalidCommand(f"bad request over the bus: {exc}")))
    return reply_stream, outs, items


def _reply_wire(corr: Any, value: Any) -> list:
    if isinstance(value, BaseException):
        kind = "invalid" if isinstance(value, InvalidCommand) else "error"
        return [corr, kind, str(value)]
    if isinstance(value, Reply):
        return [corr, "reply", value.seq, value.ts, [codec.encode(event) for event in value.events]]
    return [corr, "value", value]


async def _replier(bus: RedisBus, stream: str, from_reader: trio.MemoryReceiveChannel,
                   stats: dict) -> None:
    backoff = Backoff()
    async with from_reader:
        async for first in from_reader:
            work = _drain(from_reader, first, 1024)
            replies: dict[str, list] = {}
            acks: list[bytes] = []
            for entry_id, reply_stream, outs in work:
                if entry_id is None:        # redelivered entries already applied
                    acks.extend(outs)
                    continue
                acks.append(entry_id)
                if reply_stream is None:
                    continue
                bucket = replies.setdefault(reply_stream, [])
                for corr, slot in outs:
                    if isinstance(slot, ReplySlot):
                        try:
                            value = await slot.wait()   # released only once durable
                        except Exception as exc:   # the command was refused (InvalidCommand)
                            value = exc
                    else:
                        value = slot
                    bucket.append(_reply_wire(corr, value))

            async def send(client: Any) -> None:
                pipe = client.pipeline(transaction=False)
                for reply_stream, wires in replies.items():
                    if wires:
                        pipe.xadd(reply_stream, {"b": _packb(wires)}, maxlen=REPLIES_MAXLEN,
                                  approximate=True)
                        pipe.pexpire(reply_stream, REPLY_STREAM_TTL_MS)
                if acks:
                    pipe.xack(stream, GROUP, *acks)
                await pipe.execute()

            while True:
                try:
                    await bus.call(send)
                    backoff.reset()
                    break
                except BusUnavailable:
                    await backoff.wait()   # durable already: acknowledging late is harmless
            stats["replies"] += sum(len(w) for w in replies.values())
            stats["acks"] += len(acks)


def encode_event_batch(batch: EventBatch) -> bytes:
    """``[last_seq, items, first_seq]`` (an entry of an older engine has no ``first_seq``)."""
    return _packb([batch.last_seq, [[seq, ts, [codec.encode(e) for e in events]]
                                    for seq, ts, events in batch.items], batch.first_seq])


def decode_event_batch(raw: bytes) -> EventBatch:
    last_seq, items, *rest = _unpackb(raw)
    return EventBatch([(seq, ts, [codec.decode(e) for e in events]) for seq, ts, events in items], last_seq,
                      int(rest[0]) if rest else 0)


async def _events_publisher(bus: RedisBus, subscription: Any, stream: str, stats: dict) -> None:
    backoff = Backoff()
    receive = subscription.receive
    async for first in receive:
        batches = _drain(receive, first, 256)
        payloads = [encode_event_batch(batch) for batch in batches]

        async def send(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            for payload in payloads:
                pipe.xadd(stream, {"b": payload}, maxlen=EVENTS_MAXLEN, approximate=True)
            await pipe.execute()

        while True:
            try:
                await bus.call(send)
                backoff.reset()
                break
            except BusUnavailable:
                await backoff.wait()
        stats["events_published"] += len(batches)


async def _quotes_reader(handle: EngineHandle, bus: RedisBus, stats: dict) -> None:
    """Apply the feed's quotes (``XREAD``, no group: market data is not replayed)."""
    backoff = Backoff()
    last = "$"
    inbox = handle.inbox_sender()
    async with inbox:
        while True:
            async def read(client: Any, last: str = last) -> Any:
                return await client.xread({QUOTES_STREAM: last}, count=256, block=1000)
            try:
                response = await bus.call(read)
                backoff.reset()
            except BusUnavailable:
                last = "$"
                await backoff.wait()
                continue
            if not response:
                continue
            entries = response[0][1]
            last = entries[-1][0].decode()
            for _entry_id, fields in entries:
                try:
                    rows = _unpackb(fields[b"b"])
                except Exception:
                    stats["bad_items"] += 1
                    continue
                for row in rows:
                    try:
                        symbol, bid, ask = row
                        quote = Quote(symbol, bid, ask)
                    except Exception:
                        stats["bad_items"] += 1
                        continue
                    await inbox.send(quote)
                    stats["quotes"] += 1


# ------------------------------------------------------------------------------- feed side

async def run_quote_publisher(*, bus: RedisBus, receive: trio.MemoryReceiveChannel,
                              stats: Optional[dict] = None,
                              task_status: trio.TaskStatus[dict] = trio.TASK_STATUS_IGNORED) -> None:
    """Publish the local price feed's quotes to ``stream:exness:quotes`` (one XADD per batch).
    While Redis is down quotes are dropped and counted: stale prices are worse than none."""
    stats = stats if stats is not None else {"published": 0, "dropped": 0}
    task_status.started(stats)
    async with receive:
        async for first in receive:
            quotes = _drain(receive, first, 1024)
            rows = [[q.symbol, q.bid, q.ask] for q in quotes if type(q) is Quote]
            if not rows:
                continue
            payload = _packb(rows)

            async def send(client: Any) -> None:
                await client.xadd(QUOTES_STREAM, {"b": payload}, maxlen=QUOTES_MAXLEN, approximate=True)

            try:
                await bus.call(send)
                stats["published"] += len(rows)
            except BusUnavailable:
                stats["dropped"] += len(rows)
                await trio.sleep(0.2)


# ------------------------------------------------------------------------------- events in

async def events_reader(*, bus: RedisBus, streams: list[str], send: trio.MemorySendChannel,
                        group: Optional[str] = None, consumer: Optional[str] = None,
                        start: str = "$", stats: Optional[dict] = None,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Read engine event batches into ``send`` as :class:`EventBatch` objects.

    Without ``group`` (WS servers, mirrors): ``XREAD`` from ``start`` — lossy across a Redis
    outage. With ``group`` (the candles role): a consumer group; entries are acknowledged after
    ``send`` accepted them (the consumer's own durability decides the rest)."""
    from redis.exceptions import ResponseError
    stats = stats if stats is not None else {}
    stats.setdefault("batches", 0)
    stats.setdefault("gaps", 0)
    backoff = Backoff()
    last = {stream: start for stream in streams}
    need_group = group is not None
    task_status.started()
    async with send:
        while True:
            try:
                if need_group:
                    for stream in streams:
                        async def create(client: Any, stream: str = stream) -> None:
                            try:
                                await client.xgroup_create(stream, group, id="0", mkstream=True)
                            except ResponseError as exc:
                                if "BUSYGROUP" not in str(exc):
                                    raise
                        await bus.call(create)
                    need_group = False

                if group is not None:
                    async def read(client: Any) -> Any:
                        return await client.xreadgroup(group, consumer, {s: ">" for s in streams},
                                                       count=256, block=1000)
                else:
                    positions = dict(last)

                    async def read(client: Any) -> Any:
                        return await client.xread(positions, count=256, block=1000)
                response = await bus.call(read)
                backoff.reset()
            except BusUnavailable:
                need_group = group is not None
                await backoff.wait()
                continue
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    need_group = True
                    continue
                raise
            for stream_name, entries in response or []:
                name = stream_name.decode()
                acks = []
                for entry_id, fields in entries:
                    last[name] = entry_id.decode()
                    acks.append(entry_id)
                    try:
                        batch = decode_event_batch(fields[b"b"])
                    except Exception as exc:
                        log.warning("event=bad_event_entry stream=%s error=%r", name, str(exc))
                        continue
                    stats["batches"] += 1
                    await send.send(batch)
                if group is not None and acks:
                    async def ack(client: Any, name: str = name, acks: list = acks) -> None:
                        await client.xack(name, group, *acks)
                    try:
                        await bus.call(ack)
                    except BusUnavailable:
                        pass   # redelivered later; consumers are idempotent by seq


# ------------------------------------------------------------------------------- notifications

def notifications_publisher(bus: RedisBus) -> Callable[[list], Awaitable[None]]:
    """The notifications role's ``sink``: one XADD per batch of ``(account_id, notification)``.
    It raises while Redis is down, so the worker keeps those deliveries pending and retries."""
    async def publish(batch: list) -> None:
        payload = _packb([[account_id, notification] for account_id, notification in batch])

        async def send(client: Any) -> None:
            await client.xadd(NOTIFICATIONS_STREAM, {"b": payload}, maxlen=NOTIFICATIONS_MAXLEN, approximate=True)
        await bus.call(send)
    return publish


async def notifications_reader(*, bus: RedisBus, send: trio.MemorySendChannel,
                               task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """A WebSocket server's feed of notifications (``XREAD`` from now on, no group: a client that
    missed some reads them over HTTP)."""
    backoff = Backoff()
    last = "$"
    task_status.started()
    while True:
        async def read(client: Any, last: str = last) -> Any:
            return await client.xread({NOTIFICATIONS_STREAM: last}, count=256, block=1000)
        try:
            response = await bus.call(read)
            backoff.reset()
        except BusUnavailable:
            await backoff.wait()
            continue
        for _stream, entries in response or []:
            for entry_id, fields in entries:
                last = entry_id.decode()
                try:
                    batch = [(int(account_id), notification) for account_id, notification in _unpackb(fields[b"b"])]
                except Exception as exc:
                    log.warning("event=bad_notification_entry error=%r", str(exc))
                    continue
                await send.send(batch)


# ------------------------------------------------------------------------------- gateway side

class RemoteEngineHandle(Subscribers):
    """The :class:`actors.engine.actor.EngineHandle` interface of a remote engine (gateways, WS).

    ``send_nowait`` queues a request or query; a flusher sends everything queued since the
    last flush as one burst per shard (one pipelined write for all); a reader resolves the
    reply slots from this process's own reply stream; a sweeper fails requests older than
    ``request_timeout_s`` with :class:`EngineTimeout` (HTTP 504)."""

    #: the engine is another process (see :class:`~actors.engine.interface.EngineClient`)
    remote = True

    def __init__(self, *, bus: RedisBus, core: CoreConfig, shards: int = 1,
                 request_timeout_s: float = 5.0, max_inflight: int = 10_000,
                 instance: Optional[str] = None) -> None:
        self.bus = bus
        self.core_config = core
        #: the instruments as the engine trades them: the configured ones until the engine's
        #: view answers (asked at start and after every ``InstrumentUpdated``), changed in place
        #: so every holder of this dict (the gateway, the stream server) follows
        self.instruments = {i.symbol: i for i in core.instruments}
        self._instruments_wanted = trio.Event()
        self._instruments_wanted.set()
        self.instrument_refreshes = 0
        self.shards = max(1, int(shards))
        self.request_timeout_s = request_timeout_s
        self.max_inflight = max_inflight
        ident = instance or default_instance()
        self.reply_stream = f"{REPLY_PREFIX}{ident}-{os.getpid()}-{random.getrandbits(32):08x}"
        #: per shard: the newest seq a reply of that shard carried (its journal is durable up to it)
        self.durable_seqs = [0] * self.shards
        self.rotate_requested = False
        self.subscriptions: list[Subscription] = []
        self._outbox: list[list] = [[] for _ in range(self.shards)]
        self._pending: dict[int, tuple[ReplyTarget, float, int]] = {}   # corr -> slot, deadline, shard
        self._next_corr = 1
        self._wake = trio.Event()
        self.stopped = False
        # statistics
        self.sent = 0
        self.bursts = 0
        self.timeouts = 0
        self.overloads = 0

    # -- the EngineHandle interface ---------------------------------------------------------

    @property
    def accepting(self) -> bool:
        return self.bus.connected and not self.stopped

    def shard_of(self, account_id: Optional[int]) -> int:
        """The engine shard that holds ``account_id`` (requests about no account go to shard 0)."""
        if account_id is None or self.shards == 1:
            return 0
        return account_id % self.shards

    @property
    def durable_seq(self) -> int:
        """Shard 0's durable seq (the one an unsharded deployment has)."""
        return self.durable_seqs[0]

    def durable_seq_of(self, shard: int) -> int:
        return self.durable_seqs[shard]

    def send_nowait(self, item: Any, shard: Optional[int] = None) -> None:
        """Queue a request or a query for the shard of its account (shard 0 when it names none),
        or for ``shard`` when given (:class:`ShardClient`)."""
        if not self.accepting:
            raise EngineStopped("the message bus (Redis) is unavailable")
        if len(self._pending) >= self.max_inflight:
            self.overloads += 1
            raise Overloaded("too many requests in flight to the engine")
        if type(item) is Request:
            command, slot = item.command, item.reply
            payload: Any = codec.encode(command)
            if shard is None:
                shard = self.shard_of(getattr(command, "account_id", None))
            kind = 0
        elif type(item) is Query:
            view = item.fn if isinstance(item.fn, BoxedView) else None
            if view is None:
                raise TypeError("a remote engine answers only BoxedView queries")
            payload = view.wire()
            if shard is None:
                shard = self.shard_of(_view_account(view))
            slot, kind = item.reply, 1
        else:
            raise TypeError(f"cannot send {type(item).__name__} to a remote engine")
        if not 0 <= shard < self.shards:
            raise ValueError(f"shard {shard} is not one of the {self.shards} engine shards")
        corr = self._next_corr
        self._next_corr += 1
        self._pending[corr] = (slot, trio.current_time() + self.request_timeout_s, shard)
        self._outbox[shard].append([corr, kind, payload])
        self._wake.set()

    async def send(self, item: Any) -> None:
        self.send_nowait(item)

    async def request(self, command: Any) -> Reply:
        slot = ReplySlot()
        self.send_nowait(Request(command, slot))
        return await slot.wait()

    async def query(self, fn: Callable) -> Any:
        slot = ReplySlot()
        self.send_nowait(Query(fn if isinstance(fn, BoxedView) else BoxedView(fn), slot))
        return await slot.wait()

    def on_shard(self, shard: int) -> "ShardClient":
        """A client whose every request and query goes to engine shard ``shard``."""
        if not 0 <= shard < self.shards:
            raise ValueError(f"shard {shard} is not one of the {self.shards} engine shards")
        return ShardClient(self, shard)

    # The engine handle's own bookkeeping. Lossless or not, a remote subscriber is fed from the
    # events stream without waiting: one that falls behind is dropped (lagged) and re-syncs, as
    # WebSocket clients do.

    async def stop(self) -> None:
        self.stopped = True

    def statistics(self) -> dict[str, Any]:
        return {"remote": True, "bus_connected": self.bus.connected, "reply_stream": self.reply_stream,
                "in_flight": len(self._pending), "sent": self.sent, "bursts": self.bursts,
                "timeouts": self.timeouts, "overloads": self.overloads, "durable_seq": self.durable_seq,
                "instrument_refreshes": self.instrument_refreshes,
                "durable_seqs": list(self.durable_seqs), "shards": self.shards, "subscriptions": [s.statistics() for s in self.subscriptions]}

    # -- tasks ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._flusher)
            nursery.start_soon(self._reader)
            nursery.start_soon(self._sweeper)
            nursery.start_soon(self._instrument_refresher)
            task_status.started()

    def publish(self, batch: EventBatch) -> None:
        """Hand one event batch (from :func:`events_reader`) to the local subscribers, after
        applying its ``InstrumentUpdated`` events to :attr:`instruments`."""
        for _seq, _ts, events in batch.items:
            for event in events:
                if type(event) is InstrumentUpdated:
                    self._instrument_updated(event)
        dropped = []
        for subscription in self.subscriptions:
            try:
                subscription._send.send_nowait(batch)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                subscription.lagged = True
                dropped.append(subscription)
        for subscription in dropped:
            self.unsubscribe(subscription)

    def _instrument_updated(self, event: InstrumentUpdated) -> None:
        """Follow an operator's instrument change at once, then ask the engine for its
        instruments again: events and view answers travel different streams, so only an answer
        asked for after the event is known to be at least as new as it."""
        instrument = self.instruments.get(event.symbol)
        if instrument is not None:
            try:
                self.instruments[event.symbol] = attrs.evolve(instrument, **dict(event.changes))
            except (TypeError, ValueError) as exc:
                log.warning("event=bad_instrument_update symbol=%s error=%r", event.symbol, str(exc))
        self._instruments_wanted.set()

    async def _instrument_refresher(self) -> None:
        """Keep :attr:`instruments` equal to the engine's (shard 0's: every shard applies the
        same operator changes): at start — a process started after a change must not trade on
        the configured values — and after each ``InstrumentUpdated``. Asks one at a time, so a
        later answer is always the newer; retries with backoff while the engine is away."""
        from actors.wire import views
        backoff = Backoff(first=0.2, cap=5.0)
        while True:
            await self._instruments_wanted.wait()
            self._instruments_wanted = trio.Event()
            while True:
                try:
                    (wires,) = await self.query(BoxedView(views.traded_instruments))
                    break
                except (EngineTimeout, EngineStopped, Overloaded):
                    await backoff.wait()
                except Exception as exc:   # an engine that does not know the view: keep trying
                    log.warning("event=instrument_refresh_failed error=%r", str(exc))
                    await backoff.wait()
            backoff.reset()
            for wire in wires:
                try:
                    instrument = Instrument.from_wire(wire)
                except Exception as exc:
                    log.warning("event=bad_instrument_view error=%r", str(exc))
                    continue
                if instrument.symbol in self.instruments:
                    self.instruments[instrument.symbol] = instrument
            self.instrument_refreshes += 1

    def _fail(self, corrs: list[int], error: BaseException) -> None:
        for corr in corrs:
            entry = self._pending.pop(corr, None)
            if entry is not None:
                entry[0].fail(error)

    async def _flusher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            bursts = []
            for shard, items in enumerate(self._outbox):
                if items:
                    bursts.append((command_stream(shard, self.shards), items))
                    self._outbox[shard] = []
            if not bursts:
                continue
            reply_stream = self.reply_stream
            payloads = [(stream, _packb({"r": reply_stream, "i": items})) for stream, items in bursts]

            async def send(client: Any) -> None:
                pipe = client.pipeline(transaction=False)
                for stream, payload in payloads:
                    pipe.xadd(stream, {"b": payload}, maxlen=COMMANDS_MAXLEN, approximate=True)
                await pipe.execute()

            try:
                await self.bus.call(send)
                self.bursts += len(bursts)
                self.sent += sum(len(items) for _, items in bursts)
            except BusUnavailable:
                self._fail([item[0] for _, items in bursts for item in items],
                           EngineStopped("the message bus (Redis) is unavailable"))

    async def _reader(self) -> None:
        last = "0"     # the stream is new (its name is unique to this process)
        backoff = Backoff()
        stream = self.reply_stream
        while True:
            async def read(client: Any, last: str = last) -> Any:
                return await client.xread({stream: last}, count=1024, block=1000)
            try:
                response = await self.bus.call(read)
                backoff.reset()
            except BusUnavailable:
                await backoff.wait()
                continue
            for _name, entries in response or []:
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    try:
                        wires = _unpackb(fields[b"b"])
                    except Exception:
                        continue
                    for wire in wires:
                        self._deliver(wire)

    def _deliver(self, wire: list) -> None:
        corr = wire[0]
        entry = self._pending.pop(corr, None) if isinstance(corr, int) else None
        if entry is None:
            return   # timed out already, or not ours
        slot = entry[0]
        kind = wire[1]
        if kind == "reply":
            seq, ts, events = wire[2], wire[3], wire[4]
            if seq > self.durable_seqs[entry[2]]:
                self.durable_seqs[entry[2]] = seq
            slot.set(Reply(seq, ts, [codec.decode(e) for e in events]))
        elif kind == "value":
            slot.set(wire[2])
        elif kind == "invalid":
            slot.fail(InvalidCommand(wire[2]))
        else:
            slot.fail(RuntimeError(f"engine error: {wire[2]}"))

    async def _sweeper(self) -> None:
        while True:
            await trio.sleep(0.1)
            now = trio.current_time()
            expired = [corr for corr, (_slot, deadline, _shard) in self._pending.items() if deadline <= now]
            if expired:
                self.timeouts += len(expired)
                self._fail(expired, EngineTimeout(
                    f"the engine did not answer within {self.request_timeout_s:g} s; the request may "
                    "or may not have been applied (retrying with the same client_order_id is safe)"))

    async def cleanup(self) -> None:
        """Delete this process's reply stream (on shutdown)."""
        stream = self.reply_stream

        async def delete(client: Any) -> None:
            await client.delete(stream)

        try:
            with trio.move_on_after(2):
                await self.bus.call(delete)
        except BusUnavailable:
            pass


class ShardClient:
    """One shard of a sharded remote engine: every request and query sent through it goes to
    that shard, whatever account it names. What the back office uses to reach each shard with
    a symbol-wide command or a house-wide view (:func:`shard_clients`)."""

    remote = True

    __slots__ = ("engine", "shard")

    def __init__(self, engine: RemoteEngineHandle, shard: int) -> None:
        self.engine = engine
        self.shard = shard

    def send_nowait(self, item: Any) -> None:
        self.engine.send_nowait(item, self.shard)

    # the handle's own, written on ``send_nowait``: here they reach this client's shard
    request = RemoteEngineHandle.request
    query = RemoteEngineHandle.query


def shard_clients(handle: Any) -> list[Any]:
    """A client per engine shard, in shard order: a sharded remote engine's :class:`ShardClient`
    s, else ``[handle]`` (one engine, in-process or remote: the path stays as cheap as a call)."""
    if isinstance(handle, RemoteEngineHandle) and handle.shards > 1:
        return [ShardClient(handle, shard) for shard in range(handle.shards)]
    return [handle]


def shard_of_position(position_id: int) -> int:
    """The engine shard that opened ``position_id`` (the same holds for order ids): shard ``k``
    numbers its ids from ``k × SHARD_ID_SPAN + 1`` (docs/decisions.md, "ids by range")."""
    return max(0, (position_id - 1) // SHARD_ID_SPAN)


# ------------------------------------------------------------------------------- health

async def heartbeat(*, bus: RedisBus, role: str, instance: Optional[str] = None,
                    status: Callable[[], dict], interval_s: float = 2.0,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Keep ``exness:health:<role>:<instance>`` fresh (expires after 10 s) with ``status()``."""
    key = health_key(role, instance or default_instance())
    task_status.started()
    while True:
        body = {"role": role, "pid": os.getpid(), "ts_ms": int(time.time() * 1000), **status()}
        payload = json.dumps(body).encode()

        async def beat(client: Any) -> None:
            await client.set(key, payload, ex=HEALTH_TTL_S)

        try:
            await bus.call(beat)
        except BusUnavailable:
            pass
        await trio.sleep(interval_s)


def check_health(url: str, role: str, instance: Optional[str] = None) -> tuple[bool, str]:
    """Synchronous check for ``exness-actors health`` (Docker HEALTHCHECK): is the role's
    heartbeat present and does it say ready?"""
    import redis
    key = health_key(role, instance or default_instance())
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        raw = client.get(key)
    except Exception as exc:
        return False, f"Redis at {_redact(url)} is unreachable: {exc}"
    if raw is None:
        return False, f"no heartbeat at {key} (the {role} process is not running or cannot reach Redis)"
    try:
        body = json.loads(raw)
    except ValueError:
        return False, f"unreadable heartbeat at {key}"
    if not body.get("ready", False):
        return False, f"{role} is up but not ready: {body.get('reason', 'starting')}"
    detail = body.get("detail")
    return True, f"{role} ready ({key})" + (f"; {detail}" if detail else "")
