"""The WebSocket server: quotes, candles and account streams, and the order lane.

Theory of operation
-------------------
One broadcaster, bounded everywhere, never in the engine's way:

* **Engine events** reach the server through ONE lossy subscription
  (``handle.subscribe("ws", lossless=False)``): the engine never waits for the WebSocket side.
  If the server falls so far behind that the engine drops it (``Subscription.lagged``), it
  subscribes again and appends a ``resync`` marker to every quote and account channel — events
  were lost, and clients are told to reload rather than left with a silent gap.
* **Candles** arrive from the candles actor's ``outbox`` (closed 1m candles and live 1m
  updates). Larger intervals are folded here (:mod:`actors.ws._candles`): the closed 1m candles
  of the interval's current bucket plus the live 1m one, seeded from
  :meth:`CandlesHandle.read` for a symbol's first candle, so a restart mid-hour still serves
  the whole hour.
* **Broadcast**: each engine batch is turned into messages synchronously (no await): every
  message is encoded once to JSON text, numbered with its channel's ``seq``, kept in the
  channel's replay buffer (:mod:`actors.ws._channels`) and appended to each subscriber's
  **pending list** — a list append, no task, no channel per message.
* **Writing**: ONE flusher task writes for every client (:meth:`WsServer.flush_clients`): per
  round, each client with pending messages gets them as ONE frame (a JSON array when there are
  several), encoded by its wsproto connection and written with a synchronous non-blocking
  ``write`` under trio-websocket's send lock. trio-websocket's cost is per frame and mostly
  scheduling (``send_message`` yields three times per frame): at 1,000 clients ``send_message``
  from a task per client cost ~53 µs a frame, the flusher ~14 µs (measured for this design;
  ``bench/ws_fanout.py --writer tasks`` runs the server with per-client writer tasks, the
  ``[ws] writer = "tasks"`` fallback that also serves non-socket streams). A socket that does not take a whole frame keeps the rest (and the
  lock) until its client's small drain task sees it writable: only that client waits. The
  busier the server, the more messages ride in each frame; after a busy round the flusher
  pauses so that at most ``flush_duty`` of the CPU goes to writing and the engine keeps the rest.
* **Slow clients**: when a client's pending bytes exceed ``max_pending_bytes`` it is dropped:
  its pending messages are discarded and it is closed with code 4000, reason
  ``"lagged: send buffer full"`` (the close frame follows whatever frame is in flight, so a
  client that reads again sees the reason; one that never reads is cut off after
  ``close_timeout_s``). Nobody else waits for it.
* **Account summaries** (:mod:`actors.ws._summaries`): balance, equity, used and free margin
  and margin level are state, not events. One task asks the engine for them through a named
  view, only for subscribed accounts that had an event or hold a symbol that was quoted, at
  most once per ``account_summary_interval_ms`` (last value wins), and sends each only when it
  changed. ``margin_call`` and ``stop_out`` are events like the others, once per core event;
  ``position_closed`` carries the commission and swap of its :class:`PositionFees`.
* **Order lane** (:mod:`actors.ws._orders`): the reader task parses and validates a message
  and puts a :class:`~actors.engine.messages.Request` in the engine inbox with a reply slot that, when
  the engine releases the durable reply, only queues it for the results task: no task per
  order, any number of orders in flight per connection (up to ``max_inflight_orders``). A full
  engine inbox is an ``OVERLOADED`` error at once (load shedding), never a queue.
* **Keepalive**: every ``ping_interval_s`` the server pings; no pong within ``pong_timeout_s``
  closes with 4001. The same task ends private delivery when the access token expires (its wait
  is cut short at the expiry): ``TOKEN_EXPIRED`` asks the client to authenticate again. A connection with no subscription that sends nothing for
  ``idle_timeout_s`` is closed with 4002. Client mistakes are answered with
  ``{"op":"error"}`` and never close the connection, unless abusive: more than
  ``max_errors_per_minute`` errors close with 1008; a frame over ``max_message_bytes`` closes
  with 1009 (trio-websocket).

The protocol itself (every message, both directions) is specified by the JSON Schemas in
``schemas/ws/`` and summarised in :data:`PROTOCOL`.

Configuration (``[ws]``, all optional): ``host``, ``port`` (0 = a free port; the bound port is
``WsServer.port``), ``replay_size`` (1000), ``account_replay_size`` (256),
``max_account_channels`` (10000), ``max_pending_bytes`` (1 MiB), ``engine_buffer`` (10000
batches), ``ping_interval_s`` (20), ``pong_timeout_s`` (10), ``idle_timeout_s`` (300),
``close_timeout_s`` (5), ``handshake_timeout_s`` (10), ``max_message_bytes`` (65536),
``max_channels`` (100), ``max_inflight_orders`` (1000), ``max_batch_ops`` (100),
``max_errors_per_minute`` (60), ``send_buffer_bytes`` (0 = kernel default; SO_SNDBUF of each
client socket), ``flush_interval_ms`` (0: the shortest time between two flush rounds),
``flush_duty`` (0.5: the most of the CPU a saturated flusher takes), ``writer`` (``flusher``, or
``tasks`` for a writer task per client, for comparison), ``account_summary_interval_ms`` (250:
the shortest time between two rounds of ``account_summary`` messages, so at most 4 per second
per account).
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import time
from collections import deque
from decimal import Decimal
from typing import Any, Callable, Mapping, Optional

import attrs
import msgspec
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, WebSocketServer
from wsproto.events import TextMessage
from wsproto.utilities import LocalProtocolError

from actors.ws._candles import IntervalFolder
from actors.ws._channels import ACCOUNT, NOTIFICATIONS, PRIVATE, Channel, ChannelError, Channels
from actors.ws._format import ACCOUNT_EVENT_TYPES, NO_FEES, account_event_json, candle_json, fees_by_position
from actors.ws._summaries import SummaryTracker, chunked_by_shard, summary_key
from actors.ws._orders import (
    ACTIONS, MAX_CANCEL_ORDERS, build_command, cancel_on_disconnect_commands, duplicate_outcome, error_json, named_id,
    outcome, placed_pending_orders, route, viewed_outcome,
)
from actors.auth_tokens import AccessClaims, AuthError, TokenIssuer
from actors.config import ConfigError
from actors.bus.streams import BoxedView
from actors.wire import views as views
from actors.wire.codec import EdgeError
from actors.engine.interface import EngineClient
from actors.engine.messages import EngineStopped, EngineTimeout, EventBatch, Overloaded, Reply, Request
from exness_actors.candles import Candle, bucket_start
from exness_actors.errors import InvalidCommand
from exness_actors.commands import AccountId
from exness_actors.events import (
    OrderAccepted, OrderCancelled, OrderTriggered, PositionClosed, PositionFees, PositionOpened, QuoteUpdated,
)
from exness_actors.money import format_fixed

__all__ = ["run", "WsServer", "WsOptions", "PROTOCOL", "CLOSE_LAGGED", "CLOSE_PING_TIMEOUT",
           "CLOSE_IDLE", "CLOSE_POLICY", "CLOSE_GOING_AWAY", "CLOSE_INTERNAL_ERROR", "LAGGED_REASON"]

log = logging.getLogger("exness.ws")

CLOSE_GOING_AWAY = 1001      # the server is shutting down
CLOSE_POLICY = 1008          # abusive client (too many invalid messages)
CLOSE_INTERNAL_ERROR = 1011  # a bug while serving this connection (logged)
CLOSE_LAGGED = 4000          # the client did not read fast enough
CLOSE_PING_TIMEOUT = 4001    # no pong in time
CLOSE_IDLE = 4002            # no subscription and no message for idle_timeout_s
LAGGED_REASON = "lagged: send buffer full"
#: on shutdown, the longest wait for clients to answer the 1001 close
SHUTDOWN_CLOSE_S = 1.0

PROTOCOL = """\
client → server (text frames; one JSON object, or a JSON array of up to max_batch_ops of them):
  {"op":"subscribe","channels":[...],"since":{channel: seq}?,"epoch":str?}
  {"op":"unsubscribe","channels":[...]}     {"op":"auth","token":JWT}     {"op":"ping"}
  {"op":"order","id":corr,"action":"place|cancel|modify_order|close|modify_position|add_margin",...}
server → client (one JSON object per frame, or a JSON array of them when several were pending):
  data:    {"channel","seq","engine_seq"?,"data"}        resync: {"channel","op":"resync","seq","reason"}
  notifications: {"channel":"notifications","seq","event":"notification","notification":{"id","kind",...}}
  replies: subscribed / unsubscribed / authenticated / pong / order_result / error
"""

#: the flusher yields after this many clients (~1.5 ms of writing), so a round over thousands of
#: clients never holds the engine back for long
_FLUSH_CHUNK = 100
#: frames trio-websocket's reader may queue for ours: a pipelining client's frames are read in
#: bulk instead of one task hand-off each (its bytes are bounded by max_message_bytes × this)
_MESSAGE_QUEUE = 16
_ACCOUNT_EVENTS = frozenset(ACCOUNT_EVENT_TYPES)
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(float_hook=Decimal).decode


def _text(message: Mapping[str, Any]) -> str:
    return _encode(message).decode()


# ------------------------------------------------------------------------------ options

@attrs.define(kw_only=True)
class WsOptions:
    host: str = "127.0.0.1"
    port: int = 7070
    replay_size: int = 1000
    account_replay_size: int = 256
    max_account_channels: int = 10_000
    max_pending_bytes: int = 1 << 20
    engine_buffer: int = 10_000
    ping_interval_s: float = 20.0
    pong_timeout_s: float = 10.0
    idle_timeout_s: float = 300.0
    close_timeout_s: float = 5.0
    handshake_timeout_s: float = 10.0
    max_message_bytes: int = 65_536
    max_channels: int = 100
    max_inflight_orders: int = 1000
    max_batch_ops: int = 100
    max_errors_per_minute: int = 60
    send_buffer_bytes: int = 0
    flush_interval_ms: float = 0.0
    flush_duty: float = 0.5
    writer: str = "flusher"
    account_summary_interval_ms: float = 250.0

    @classmethod
    def from_config(cls, cfg: Any) -> "WsOptions":
        """Options from ``cfg["ws"]`` (a :class:`~actors.config.Config` or a plain mapping)."""
        section = dict(cfg["ws"]) if cfg is not None else {}
        values: dict[str, Any] = {}
        for field in attrs.fields(cls):
            if field.name not in section:
                continue
            raw = section[field.name]
            try:
                if field.type in ("str", str):
                    if not isinstance(raw, str):
                        raise TypeError
                    value: Any = raw
                elif field.type in ("int", int):
                    if isinstance(raw, bool) or not isinstance(raw, int):
                        raise TypeError
                    value = raw
                else:
                    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
                        raise TypeError
                    value = float(raw)
            except TypeError:
                raise ConfigError(f"[ws] {field.name} must be {field.type}, not {raw!r}") from None
            if not isinstance(value, str) and value < 0:
                raise ConfigError(f"[ws] {field.name} must not be negative, not {raw!r}")
            values[field.name] = value
        options = cls(**values)
        if options.port > 65535:
            raise ConfigError(f"[ws] port must be 0..65535, not {options.port}")
        if options.writer not in ("flusher", "tasks"):
            raise ConfigError(f"[ws] writer must be flusher or tasks, not {options.writer!r}")
        if not 0 < options.flush_duty <= 1:
            raise ConfigError(f"[ws] flush_duty must be in (0, 1], not {options.flush_duty}")
        for name in ("replay_size", "account_replay_size", "max_pending_bytes", "engine_buffer",
                     "max_message_bytes", "max_channels", "max_inflight_orders", "max_batch_ops"):
            if getattr(options, name) < 1:
                raise ConfigError(f"[ws] {name} must be at least 1")
        return options


# ------------------------------------------------------------------------------ clients

class _Client:
    """One connection's state. ``pending`` is its bounded outgoing queue of encoded messages;
    ``partial`` the unwritten rest of a frame the socket did not take at once."""

    __slots__ = ("id", "ws", "server", "pending", "pending_bytes", "wake", "closing", "close_event",
                 "channels", "claims", "inflight", "last_message_at", "error_times", "cancel_scope",
                 "ping_scope", "frames", "messages", "fd", "partial", "holds_lock",
                 "drain_wake", "gone", "wait_scope", "cancel_on_disconnect", "placed")

    def __init__(self, client_id: int, ws: WebSocketConnection, server: "WsServer") -> None:
        self.id = client_id
        self.ws = ws
        self.server = server
        self.pending: list[str] = []
        self.pending_bytes = 0
        self.wake = trio.Event()                 # writer task (not the flusher): something is pending
        self.closing: Optional[tuple[int, str]] = None
        self.close_event = trio.Event()
        self.channels: dict[Any, Channel] = {}
        self.claims: Optional[AccessClaims] = None
        self.inflight = 0
        self.last_message_at = trio.current_time()
        self.error_times: deque[float] = deque()
        self.cancel_scope: Optional[trio.CancelScope] = None
        self.ping_scope: Optional[trio.CancelScope] = None
        self.frames = 0
        self.messages = 0
        # None: the per-client writer task serves it (not a plain socket, or [ws] writer = "tasks")
        self.fd = _socket_fd(ws) if server.options.writer == "flusher" else None
        self.partial: Optional[memoryview] = None
        self.holds_lock = False                   # the flusher holds trio-websocket's send lock
        self.drain_wake = trio.Event()
        self.gone = False
        self.wait_scope: Optional[trio.CancelScope] = None   # keepalive's wait between checks
        #: issue 13: cancel the pending orders placed through this connection when it drops
        self.cancel_on_disconnect = False
        self.placed: dict[int, int] = {}          # pending order id -> account id, placed through it

    def push(self, text: str) -> None:
        if self.closing is not None:
            return
        was_empty = not self.pending
        self.pending.append(text)
        self.pending_bytes += len(text)
        if self.pending_bytes > self.server.options.max_pending_bytes:
            self.server._drop_lagged(self)
        elif was_empty:
            self.server._mark_dirty(self)

    def push_many(self, texts: list[str], size: int) -> None:
        if self.closing is not None:
            return
        was_empty = not self.pending
        self.pending.extend(texts)
        self.pending_bytes += size
        if self.pending_bytes > self.server.options.max_pending_bytes:
            self.server._drop_lagged(self)
        elif was_empty:
            self.server._mark_dirty(self)

    def request_close(self, code: int, reason: str) -> None:
        """Close after the frame in flight (if any); pending messages are discarded."""
        if self.closing is not None:
            return
        self.closing = (code, reason)
        self.pending = []
        self.pending_bytes = 0
        self.wake.set()
        self.close_event.set()
        if self.ping_scope is not None:
            self.ping_scope.cancel()


def _socket_fd(ws: WebSocketConnection) -> Optional[int]:
    """The file descriptor under a server connection, when it is a plain TCP socket.

    The flusher writes frames to it directly (see :meth:`WsServer.flush_clients`); this reads
    trio-websocket 0.12's private ``_stream``/``_stream_lock``/``_wsproto`` (pinned in
    pyproject), and anything unexpected falls back to ``send_message`` from a per-client task.
    """
    stream = getattr(ws, "_stream", None)
    if not isinstance(stream, trio.SocketStream) or not isinstance(
            getattr(ws, "_stream_lock", None), trio.StrictFIFOLock) or not hasattr(ws, "_wsproto"):
        return None
    try:
        return stream.socket.fileno()
    except (OSError, AttributeError):
        return None


class _ResultSlot:
    """The reply slot of one order-lane request (duck-typed :class:`~actors.engine.messages.ReplySlot`).

    The engine calls :meth:`set`/:meth:`fail` from its journal task once the command is durable;
    they only queue the outcome for the server's results task — cheap, never raising.
    """

    __slots__ = ("client", "request_id", "account_id")

    def __init__(self, client: _Client, request_id: Any, account_id: int) -> None:
        self.client = client
        self.request_id = request_id
        self.account_id = account_id

    def set(self, value: Reply) -> None:
        self.client.server._results_ready(self, value)

    def fail(self, error: BaseException) -> None:
        self.client.server._results_ready(self, error)


class _ProtocolError(Exception):
    def __init__(self, code: str, message: str, details: Optional[dict] = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


# ------------------------------------------------------------------------------ the server

class WsServer:
    """What ``task_status.started`` hands out: the bound address, statistics, and the server."""

    def __init__(self, *, handle: EngineClient, options: WsOptions, tokens: TokenIssuer,
                 candles: Any = None, store: Any = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.handle = handle
        self.options = options
        self.tokens = tokens
        self.candles = candles          # CandlesHandle (optional): seeds the larger intervals
        self.store = store              # Store (optional): duplicate client_order_id lookups
        self.wall_clock = wall_clock
        self.instruments = handle.instruments
        self.channels = Channels(self.instruments, replay_size=options.replay_size,
                                 account_replay_size=options.account_replay_size,
                                 max_account_channels=options.max_account_channels)
        self.epoch = secrets.token_hex(8)
        self.host = options.host
        self.port: Optional[int] = None
        self.clients: dict[_Client, None] = {}
        self.engine_stopped = trio.Event()
        self._next_client_id = 1
        self._staged: list[Channel] = []
        # (symbol, account id) of each pending order / open position, learnt from the events
        self._order_symbols: dict[int, tuple[str, int]] = {}
        self._position_symbols: dict[int, tuple[str, int]] = {}
        self._dirty: dict[_Client, None] = {}      # clients with something to write
        self._retry: dict[_Client, None] = {}      # clients whose socket trio-websocket is using
        self._flush_wake = trio.Event()
        self._results: list[tuple[_ResultSlot, Any]] = []
        self._results_wake = trio.Event()
        self._candle_folders: dict[str, IntervalFolder] = {}
        self._nursery: Optional[trio.Nursery] = None
        self._summaries = SummaryTracker()
        self._fees_events: Optional[list] = None       # the events _fees indexes (see _fees_of)
        self._fees: dict[int, list[tuple[int, int]]] = {}
        self._summary_wake = trio.Event()
        # statistics
        self.connections_total = 0
        self.messages_published = 0
        self.frames_sent = 0
        self.messages_sent = 0
        self.partial_writes = 0
        self.flush_rounds = 0
        self.dropped_lagged = 0
        self.closed_ping_timeout = 0
        self.closed_idle = 0
        self.closed_abusive = 0
        self.resyncs_sent = 0
        self.server_lags = 0
        self.orders = 0
        self.orders_rejected = 0
        self.orders_overloaded = 0
        self.protocol_errors = 0
        self.events_unformatted = 0
        self.batches = 0
        self.candles_received = 0
        self.summaries_sent = 0
        self.summary_rounds = 0
        self.summary_failures = 0
        self.notifications_received = 0
        self.cancels_on_disconnect = 0

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def statistics(self) -> dict[str, Any]:
        pending = [client.pending_bytes for client in self.clients]
        return {
            "port": self.port, "clients": len(self.clients), "connections_total": self.connections_total,
            "batches": self.batches, "messages_published": self.messages_published,
            "frames_sent": self.frames_sent, "messages_sent": self.messages_sent,
            "partial_writes": self.partial_writes, "flush_rounds": self.flush_rounds,
            "pending_bytes_total": sum(pending), "pending_bytes_max": max(pending, default=0),
            "dropped_lagged": self.dropped_lagged, "closed_ping_timeout": self.closed_ping_timeout,
            "closed_idle": self.closed_idle, "closed_abusive": self.closed_abusive,
            "resyncs_sent": self.resyncs_sent, "server_lags": self.server_lags,
            "orders": self.orders, "orders_rejected": self.orders_rejected,
            "orders_overloaded": self.orders_overloaded, "protocol_errors": self.protocol_errors,
            "events_unformatted": self.events_unformatted, "candles_received": self.candles_received,
            "notifications_received": self.notifications_received,
            "cancels_on_disconnect": self.cancels_on_disconnect,
            "account_channels": len(self.channels.accounts), "account_channels_evicted": self.channels.evicted,
            "summaries_sent": self.summaries_sent, "summary_rounds": self.summary_rounds,
            "summary_failures": self.summary_failures,
        }

    # -------------------------------------------------------------- engine events → channels

    async def consume_engine(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the engine's events through one lossy subscription; resubscribe when dropped."""
        first = True
        while True:
            subscription = self.handle.subscribe("ws", max_buffer=self.options.engine_buffer, lossless=False)
            try:
                await self._seed_symbols()
                if first:
                    first = False
                    task_status.started()
                else:
                    self._mark_gap("the stream server fell behind the engine and lost events: reload")
                async for batch in subscription.receive:
                    self._on_batch(batch)
            finally:
                self.handle.unsubscribe(subscription)
            if not subscription.lagged:          # the engine stopped: so does the server
                self.engine_stopped.set()
                log.info("event=engine_stream_ended")
                return
            self.server_lags += 1
            log.warning("event=ws_lagged_behind_engine resubscribing=1 lags=%d", self.server_lags)

    async def _seed_symbols(self) -> None:
        """Learn the symbol and owner of every pending order and open position (events that name
        only an id need the symbol for their prices; the order lane, both). A view run right after
        subscribing: anything applied since is in the stream too, and applying it again is
        harmless. A remote (possibly sharded) engine is not asked: there the maps are learnt from
        the events alone, and the order lane reads what they miss through views."""
        if self.handle.remote:
            return
        try:
            (symbols,) = await self.handle.query(BoxedView(views.owned_symbols))
        except (Overloaded, EngineStopped):
            return
        self._order_symbols, self._position_symbols = symbols

    def _order_symbol(self, order_id: int) -> Optional[str]:
        known = self._order_symbols.get(order_id)
        return known[0] if known is not None else None

    def _position_symbol(self, position_id: int) -> Optional[str]:
        known = self._position_symbols.get(position_id)
        return known[0] if known is not None else None

    def _on_batch(self, batch: EventBatch) -> None:
        """Turn one engine batch into channel messages and hand them to the subscribers."""
        self.batches += 1
        staged = self._staged
        quotes = self.channels.quotes
        holders = self._summaries.holders
        fmt = format_fixed
        published = 0
        for engine_seq, _ts, events in batch.items:
            for event in events:
                kind = type(event)
                if kind is QuoteUpdated:
                    channel = quotes.get(event.symbol)
                    if channel is None:
                        continue
                    channel.seq = seq = channel.seq + 1
                    decimals = channel.instrument.price_decimals  # type: ignore[union-attr]
                    text = (f'{{"channel":"{channel.wire}","seq":{seq},"engine_seq":{engine_seq},'
                            f'"data":{{"symbol":"{event.symbol}","bid":"{fmt(event.bid, decimals)}",'
                            f'"ask":"{fmt(event.ask, decimals)}","ts":{event.ts // 1_000_000}}}}}')
                    channel.replay.append((seq, text))
                    channel.last_data = text
                    published += 1
                    if channel.subscribers:
                        if not channel.out:
                            staged.append(channel)
                        channel.out.append(text)
                    if holders and event.symbol in holders:    # watched accounts' equity moved
                        self._summary_due(moved=event.symbol)
                elif kind in _ACCOUNT_EVENTS:
                    published += self._on_account_event(event, kind, engine_seq, events)
        self.messages_published += published
        if staged:
            self._broadcast_staged()

    def _on_account_event(self, event: Any, kind: type, engine_seq: int, events: list) -> int:
        """Publish one account event on its channel (if anyone ever subscribed to it) and keep
        the symbol maps current; the number of messages published (0 or 1)."""
        published = 0
        if kind is OrderAccepted and event.status == "pending":
            self._order_symbols[event.order_id] = (event.symbol, event.account_id)
        elif kind is PositionOpened:
            self._position_symbols[event.position_id] = (event.symbol, event.account_id)
        channel = self.channels.accounts.get(event.account_id)
        if channel is not None and kind is not PositionFees:   # fees ride on their position_closed
            fees = self._fees_of(events, event.position_id) if kind is PositionClosed else NO_FEES
            data = account_event_json(event, self.instruments, self._order_symbol,
                                      self._position_symbol, fees)
            if data is None:
                self.events_unformatted += 1
                log.warning("event=account_event_unformatted type=%s", kind.__name__)
            else:
                channel.seq += 1
                text = _text({"channel": ACCOUNT, "seq": channel.seq,
                              "engine_seq": engine_seq, "data": data})
                channel.record(text)
                published = 1
                if channel.subscribers:
                    if not channel.out:
                        self._staged.append(channel)
                    channel.out.append(text)
        if channel is not None and channel.subscribers:
            self._summary_due(account_id=event.account_id)
        if kind is OrderTriggered or kind is OrderCancelled:
            self._order_symbols.pop(event.order_id, None)
        elif kind is PositionClosed and event.remaining_qty == 0:
            self._position_symbols.pop(event.position_id, None)
        return published

    def _fees_of(self, events: list, position_id: int) -> tuple[int, int]:
        """The commission and swap of the next close of ``position_id`` in ``events`` (one
        input's events, indexed once: a quote may close thousands of positions)."""
        if self._fees_events is not events:
            self._fees_events = events
            self._fees = fees_by_position(events)
        pending = self._fees.get(position_id)
        return pending.pop(0) if pending else NO_FEES

    def _broadcast_staged(self) -> None:
        for channel in self._staged:
            out = channel.out
            channel.out = []
            size = sum(map(len, out))
            for client in channel.subscribers:
                client.push_many(out, size)
        self._staged.clear()

    def _publish(self, channel: Channel, message: dict, *, data: bool = True) -> None:
        """Number, record and send one message built as a dict (all but the quote hot path)."""
        channel.seq += 1
        message["seq"] = channel.seq
        text = _text(message)
        channel.record(text, data=data)
        self.messages_published += 1
        for client in channel.subscribers:
            client.push(text)

    def _mark_gap(self, reason: str) -> None:
        for account_id, channel in self.channels.accounts.items():   # events were lost: re-read
            if channel.subscribers:
                self._summary_due(account_id=account_id)
        for channel in list(self.channels.all_event_channels()):
            self._publish(channel, {"channel": channel.wire, "op": "resync", "seq": 0, "reason": reason},
                          data=False)
            self.resyncs_sent += len(channel.subscribers)

    # -------------------------------------------------------------- account summaries

    def _summary_due(self, *, account_id: Optional[int] = None, moved: Optional[str] = None) -> None:
        """An account (or the holders of a quoted symbol) needs a fresh ``account_summary``."""
        summaries = self._summaries
        if not summaries.pending:
            self._summary_wake.set()
        if account_id is not None:
            summaries.dirty.add(account_id)
        if moved is not None:
            summaries.moved.add(moved)

    def _watched(self, account_id: int) -> bool:
        channel = self.channels.accounts.get(account_id)
        return channel is not None and bool(channel.subscribers)

    async def publish_summaries(self) -> None:
        """The summaries' throttle (:mod:`actors.ws._summaries`): a round as soon as something
        is due, then at most one round per ``account_summary_interval_ms``."""
        interval = self.options.account_summary_interval_ms / 1000
        while True:
            await self._summary_wake.wait()
            self._summary_wake = trio.Event()
            started = trio.current_time()
            await self._summary_round()
            await trio.sleep_until(started + interval)

    async def _summary_round(self) -> None:
        due = self._summaries.take_due(self._watched)
        if not due:
            return
        self.summary_rounds += 1
        for chunk in chunked_by_shard(due, self.handle.shard_of):
            try:
                (rows,) = await self.handle.query(BoxedView(views.account_summaries, (chunk,)))
            except (Overloaded, EngineStopped, EngineTimeout):   # busy: try these again next round
                self.summary_failures += 1
                for account_id in chunk:
                    self._summary_due(account_id=account_id)
                continue
            except Exception:     # a bug in the view must cost these summaries, not the server
                self.summary_failures += 1
                log.exception("event=account_summaries_failed accounts=%d", len(chunk))
                continue
            for account_id, engine_seq, data, symbols in rows:
                self._publish_summary(int(account_id), engine_seq, data, symbols)

    def _publish_summary(self, account_id: int, engine_seq: int, data: dict, symbols: list) -> None:
        """Send a summary to the account's subscribers unless it is the one they have."""
        channel = self.channels.accounts.get(account_id)
        if channel is None or not channel.subscribers:
            self._summaries.forget(account_id)
            return
        self._summaries.hold(account_id, symbols)
        key = summary_key(data)
        if key == channel.summary_key:
            return
        channel.summary_key = key
        channel.summary = text = _text({"channel": ACCOUNT, "engine_seq": engine_seq, "data": data})
        self.summaries_sent += len(channel.subscribers)
        for client in channel.subscribers:
            client.push(text)
    # -------------------------------------------------------------- notifications → channels

    async def consume_notifications(self, inbox: trio.MemoryReceiveChannel) -> None:
        """Lists of ``(account_id, notification json)`` from the notifications worker (in-process,
        or the notifications stream in split mode), published on the accounts' ``notifications``
        channels. An account whose channel nobody opened reads them over HTTP instead.

        The inbox is not closed on exit: it belongs to the supervisor (the actor may restart).
        """
        channels = self.channels.notifications
        while True:
            try:
                batch = await inbox.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            for account_id, notification in batch:
                self.notifications_received += 1
                channel = channels.get(account_id)
                if channel is not None:
                    self._publish(channel, {"channel": NOTIFICATIONS, "seq": 0, "event": "notification",
                                            "notification": notification})

    # -------------------------------------------------------------- candles → channels

    async def consume_candles(self, inbox: trio.MemoryReceiveChannel) -> None:
        """Closed and live 1m candles from the candles actor; larger intervals folded here
        (:mod:`actors.ws._candles`).

        The inbox is not closed on exit: it belongs to the supervisor (the actor may restart).
        """
        while True:
            try:
                candle = await inbox.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            self.candles_received += 1
            folder = self._candle_folders.get(candle.symbol)
            if folder is None:
                folder = self._candle_folders[candle.symbol] = await self._seed_folder(candle)
            self._publish_candle(candle.symbol, "1m", candle)
            for interval, folded in folder.on_candle(candle):
                self._publish_candle(candle.symbol, interval, folded)

    async def _seed_folder(self, first: Candle) -> IntervalFolder:
        """A folder seeded with the week's 1m candles before ``first`` (store + the candles
        actor's memory), so a server started mid-bucket serves whole larger candles."""
        if self.candles is None:
            return IntervalFolder()
        try:
            earlier = await self.candles.read(first.symbol, "1m", bucket_start(first.open_time, "1w"),
                                              first.open_time)
        except Exception as exc:   # a store hiccup must not stop the stream: serve unseeded
            log.warning("event=candle_seed_failed symbol=%s error=%r", first.symbol, exc)
            return IntervalFolder()
        return IntervalFolder.seeded(first.open_time, earlier)

    def _publish_candle(self, symbol: str, interval: str, candle: Candle) -> None:
        channel = self.channels.candles.get((symbol, interval))
        if channel is None:
            return
        self._publish(channel, {"channel": channel.wire, "seq": 0,
                                "data": candle_json(candle, self.instruments[symbol])})

    # -------------------------------------------------------------- connections

    async def _on_request(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await self.handle_connection(ws)
        except Exception:   # a bug serving one client costs that connection, never the server
            log.exception("event=connection_failed")
            with trio.move_on_after(self.options.close_timeout_s):
                await ws.aclose(CLOSE_INTERNAL_ERROR, "internal error")

    async def handle_connection(self, ws: WebSocketConnection) -> None:
        """Serve one accepted connection until it closes (usable over any trio stream)."""
        client = _Client(self._next_client_id, ws, self)
        self._next_client_id += 1
        self.connections_total += 1
        self.clients[client] = None
        try:
            async with trio.open_nursery() as nursery:
                client.cancel_scope = nursery.cancel_scope
                nursery.start_soon(self._writer if client.fd is None else self._drain, client)
                nursery.start_soon(self._keepalive, client)
                await self._reader(client)
                if client.closing is None:      # the peer went away: nothing left to say
                    nursery.cancel_scope.cancel()
        finally:
            self._forget(client)

    def _forget(self, client: _Client) -> None:
        if client.closing is None:
            client.closing = (1000, "closed")
        client.gone = True
        if client.holds_lock:
            self._mark_dirty(client)            # the flusher owns the send lock: it lets go
        client.pending = []
        for channel in client.channels.values():
            channel.subscribers.pop(client, None)
            if not channel.subscribers:
                self.channels.touch(channel)
        client.channels = {}
        self.clients.pop(client, None)
        if client.cancel_on_disconnect:
            self._cancel_placed(client)

    async def _reader(self, client: _Client) -> None:
        ws = client.ws
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed:
                return
            client.last_message_at = trio.current_time()
            self._on_message(client, message)
            if client.closing is not None:
                return

    # -------------------------------------------------------------- writing: one flusher

    def _mark_dirty(self, client: _Client) -> None:
        if client.fd is None:
            client.wake.set()                   # the compat writer task serves it
            return
        if not self._dirty:
            self._flush_wake.set()
        self._dirty[client] = None

    async def flush_clients(self) -> None:
        """Write every client's pending messages, one frame per client per round.

        One task, synchronous non-blocking writes: the frame is encoded by the connection's
        wsproto and written to its socket under trio-websocket's send lock, taken with
        ``acquire_nowait`` (so pongs, pings and close frames never interleave with a frame).
        Whatever the socket does not take at once stays in ``client.partial`` with the lock
        held; the client's drain task waits until the socket is writable and marks it dirty
        again. Nobody waits for a slow socket but its own drain task.

        Messages that arrive during a round ride in the client's next frame. After a busy round
        the flusher pauses ``flush_duty``-proportionally (at most that share of the CPU goes to
        writing when the server is saturated; the rest is the engine's) and at least
        ``flush_interval_ms``; an idle server flushes at once.
        """
        options = self.options
        minimum = options.flush_interval_ms / 1000
        stretch = (1 - options.flush_duty) / options.flush_duty
        while True:
            if not self._dirty:
                if self._retry:
                    with trio.move_on_after(0.002):
                        await self._flush_wake.wait()
                else:
                    await self._flush_wake.wait()
            self._flush_wake = trio.Event()
            if self._retry:
                for client in self._retry:
                    self._dirty[client] = None
                self._retry = {}
            dirty, self._dirty = self._dirty, {}
            started = time.perf_counter()
            worked = 0.0
            for index, client in enumerate(dirty, 1):
                self._flush(client)
                if not index % _FLUSH_CHUNK:     # let the engine run inside a long round
                    worked += time.perf_counter() - started
                    await trio.lowlevel.checkpoint()
                    started = time.perf_counter()
            worked += time.perf_counter() - started
            self.flush_rounds += 1
            pause = max(minimum, worked * stretch)
            if pause > 0:
                await trio.sleep(pause)
            else:
                await trio.lowlevel.checkpoint()

    def _flush(self, client: _Client) -> None:
        ws = client.ws
        if client.gone:
            self._release(client)
            return
        if client.partial is not None and not self._write(client, client.partial):
            return                               # the socket is still full: the drain task waits
        if client.closing is not None or not client.pending:
            self._release(client)
            return
        if not client.holds_lock:
            lock = ws._stream_lock
            if lock.locked():                    # trio-websocket is sending a control frame
                self._retry[client] = None
                return
            lock.acquire_nowait()
            client.holds_lock = True
        pending = client.pending
        client.pending = []
        client.pending_bytes = 0
        frame = pending[0] if len(pending) == 1 else "[" + ",".join(pending) + "]"
        try:
            data = ws._wsproto.send(TextMessage(data=frame))
        except LocalProtocolError:               # the connection is closing: nothing more to say
            self._release(client)
            return
        client.frames += 1
        client.messages += len(pending)
        self.frames_sent += 1
        self.messages_sent += len(pending)
        if self._write(client, data):
            self._release(client)

    def _write(self, client: _Client, data: Any) -> bool:
        """Write what the socket takes now; True when all of ``data`` went out."""
        try:
            written = os.write(client.fd, data)  # type: ignore[arg-type]
        except BlockingIOError:
            written = 0
        except OSError:                          # reset or closed: the reader sees it too
            client.partial = None
            client.gone = True
            self._release(client)
            return False
        if written == len(data):
            client.partial = None
            return True
        self.partial_writes += 1
        client.partial = memoryview(data)[written:]
        client.drain_wake.set()
        return False

    def _release(self, client: _Client) -> None:
        if client.holds_lock:
            client.holds_lock = False
            client.partial = None
            client.ws._stream_lock.release()

    async def _drain(self, client: _Client) -> None:
        """Wait for the socket to take the rest of a partial frame, then hand back to the flusher."""
        socket_ = client.ws._stream.socket   # type: ignore[attr-defined]   # trio-websocket holds a SocketStream
        while True:
            await client.drain_wake.wait()
            client.drain_wake = trio.Event()
            try:
                await trio.lowlevel.wait_writable(socket_)
            except (trio.ClosedResourceError, trio.BusyResourceError, OSError):
                client.gone = True
                self._mark_dirty(client)
                return
            self._mark_dirty(client)

    async def _writer(self, client: _Client) -> None:
        """The compat writer for connections not over a plain socket: ``send_message``."""
        ws = client.ws
        while True:
            await client.wake.wait()
            if client.closing is not None:
                return
            pending = client.pending
            client.pending = []
            client.pending_bytes = 0
            client.wake = trio.Event()
            frame = pending[0] if len(pending) == 1 else "[" + ",".join(pending) + "]"
            try:
                await ws.send_message(frame)
            except ConnectionClosed:
                return
            client.frames += 1
            client.messages += len(pending)
            self.frames_sent += 1
            self.messages_sent += len(pending)

    async def _keepalive(self, client: _Client) -> None:
        """Pings, idle and token-expiry checks; then performs the close a task asked for."""
        options = self.options
        ws = client.ws
        while client.closing is None:
            await self._wait_until_ping(client, trio.current_time() + options.ping_interval_s)
            if client.closing is not None:
                break
            now = trio.current_time()
            if not client.channels and now - client.last_message_at >= options.idle_timeout_s:
                self.closed_idle += 1
                client.request_close(CLOSE_IDLE, f"idle timeout: no subscription and no message "
                                                 f"for {options.idle_timeout_s:g} s")
                break
            with trio.move_on_after(options.pong_timeout_s) as scope:
                client.ping_scope = scope
                try:
                    await ws.ping()
                except ConnectionClosed:
                    return
            client.ping_scope = None
            if scope.cancelled_caught and client.closing is None:
                self.closed_ping_timeout += 1
                client.request_close(CLOSE_PING_TIMEOUT,
                                     f"ping timeout: no pong within {options.pong_timeout_s:g} s")
        code, reason = client.closing  # type: ignore[misc]
        with trio.move_on_after(options.close_timeout_s):
            try:
                await ws.aclose(code, reason)
            except Exception:   # the peer is gone or broken: the stream is closed either way
                pass
        if client.cancel_scope is not None:
            client.cancel_scope.cancel()

    async def _wait_until_ping(self, client: _Client, ping_at: float) -> None:
        """Sleep until ``ping_at`` (trio time) or a close request, ending private delivery the
        moment the access token expires: the wait is cut short at the expiry, and re-armed
        when an ``auth`` brings another token."""
        while client.closing is None and trio.current_time() < ping_at:
            with trio.move_on_at(min(ping_at, self._token_deadline(client))) as scope:
                client.wait_scope = scope
                await client.close_event.wait()
            client.wait_scope = None
            self._check_token(client)

    def _token_deadline(self, client: _Client) -> float:
        """When (trio time) the client's access token expires; +inf without one."""
        claims = client.claims
        if claims is None:
            return math.inf
        return trio.current_time() + max(0.0, claims.expires_at - self.wall_clock())

    def _check_token(self, client: _Client) -> None:
        claims = client.claims
        if claims is None or claims.expires_at > self.wall_clock():
            return
        client.claims = None
        removed = [key for key in client.channels if key[0] in PRIVATE]
        for key in removed:
            channel = client.channels.pop(key)
            channel.subscribers.pop(client, None)
            self.channels.touch(channel)
        client.push(_text({"op": "error", "code": "TOKEN_EXPIRED",
                           "message": "the access token has expired: send a fresh one with "
                                      "{\"op\":\"auth\"} and subscribe to account again with since",
                           "details": {"unsubscribed": sorted({key[0] for key in removed})}}))

    def _drop_lagged(self, client: _Client) -> None:
        self.dropped_lagged += 1
        log.info("event=client_dropped client=%d reason=lagged pending_bytes=%d",
                 client.id, client.pending_bytes)
        client.request_close(CLOSE_LAGGED, LAGGED_REASON)

    # -------------------------------------------------------------- client messages

    def _on_message(self, client: _Client, message: Any) -> None:
        if isinstance(message, bytes):
            try:
                message = message.decode("utf-8")
            except UnicodeDecodeError:
                self._error(client, None, "BAD_FRAME", "frames must be UTF-8 JSON text")
                return
        try:
            parsed = _decode(message)
        except msgspec.DecodeError as exc:
            self._error(client, None, "BAD_JSON", f"the frame is not valid JSON: {exc}")
            return
        except RecursionError:      # msgspec raises it for nesting deeper than it recurses
            self._error(client, None, "BAD_JSON", "the frame is not valid JSON: nested too deeply")
            return
        if isinstance(parsed, list):
            if not parsed or len(parsed) > self.options.max_batch_ops:
                self._error(client, None, "BAD_MESSAGE",
                            f"a batch must hold 1..{self.options.max_batch_ops} messages")
                return
            for item in parsed:
                self._on_op(client, item)
                if client.closing is not None:
                    return
            return
        self._on_op(client, parsed)

    def _on_op(self, client: _Client, message: Any) -> None:
        if not isinstance(message, dict):
            self._error(client, None, "BAD_MESSAGE", "a message must be a JSON object with an \"op\"")
            return
        request_id = message.get("id")
        if not isinstance(request_id, (str, int)) or isinstance(request_id, bool):
            request_id = None
        op = message.get("op")
        try:
            if op == "order":
                self._on_order(client, message)
            elif op == "subscribe":
                self._on_subscribe(client, message)
            elif op == "unsubscribe":
                self._on_unsubscribe(client, message)
            elif op == "auth":
                self._on_auth(client, message)
            elif op == "cancel_on_disconnect":
                self._on_cancel_on_disconnect(client, message)
            elif op == "ping":
                client.push(_text({"op": "pong", "ts": int(self.wall_clock() * 1000)}
                                  | ({"id": request_id} if request_id is not None else {})))
            elif op is None:
                raise _ProtocolError("BAD_MESSAGE", "the message has no \"op\"")
            else:
                raise _ProtocolError("UNKNOWN_OP", f"unknown op {op!r}: use subscribe, unsubscribe, "
                                                   "auth, ping, order or cancel_on_disconnect", {"op": str(op)[:64]})
        except _ProtocolError as error:
            self._error(client, request_id, error.code, error.message, error.details)

    def _error(self, client: _Client, request_id: Any, code: str, message: str,
               details: Optional[dict] = None) -> None:
        self.protocol_errors += 1
        body: dict[str, Any] = {"op": "error", "code": code, "message": message, "details": details or {}}
        if request_id is not None:
            body["id"] = request_id
        client.push(_text(body))
        now = trio.current_time()
        times = client.error_times
        times.append(now)
        while times and times[0] < now - 60:
            times.popleft()
        if len(times) > self.options.max_errors_per_minute:
            self.closed_abusive += 1
            client.request_close(CLOSE_POLICY, "policy violation: too many invalid messages")

    def _on_subscribe(self, client: _Client, message: dict) -> None:
        _check_fields(message, ("op", "channels", "since", "epoch", "id"))
        names = message.get("channels")
        if not isinstance(names, list) or not names:
            raise _ProtocolError("VALIDATION_ERROR", "channels: must be a non-empty list of channel names",
                                 {"field": "channels"})
        since = message.get("since") or {}
        if not isinstance(since, dict):
            raise _ProtocolError("VALIDATION_ERROR", "since: must be an object {channel: seq}",
                                 {"field": "since"})
        epoch = message.get("epoch")
        if epoch is not None and not isinstance(epoch, str):
            raise _ProtocolError("VALIDATION_ERROR", "epoch: must be a string", {"field": "epoch"})
        claims = client.claims
        if claims is not None and claims.expires_at <= self.wall_clock() and any(
                name in PRIVATE for name in names):
            raise _ProtocolError("TOKEN_EXPIRED", "the access token has expired: send a fresh one "
                                 "with {\"op\":\"auth\"} first")
        account_id = claims.account_id if claims is not None else None
        resolved: dict[Any, str] = {}
        for name in names:
            try:
                key, wire = self.channels.resolve(name, account_id)
            except ChannelError as error:
                raise _ProtocolError(error.code, error.message, {"channel": str(error.channel)[:64]}) from None
            resolved[key] = wire
        wanted_since: dict[str, int] = {}
        since_key: Any
        since_wire: Any
        for name, seq in since.items():
            try:
                since_key, since_wire = self.channels.resolve(name, account_id)
            except ChannelError:
                since_key = since_wire = None
            if since_key not in resolved:
                raise _ProtocolError("VALIDATION_ERROR", f"since: {name!r} is not among the channels",
                                     {"field": "since", "channel": str(name)[:64]})
            if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
                raise _ProtocolError("VALIDATION_ERROR", f"since: the seq of {name!r} must be a "
                                     "non-negative integer", {"field": "since", "channel": name})
            wanted_since[since_wire] = seq
        new = [key for key in resolved if key not in client.channels]
        if len(client.channels) + len(new) > self.options.max_channels:
            raise _ProtocolError("TOO_MANY_CHANNELS",
                                 f"at most {self.options.max_channels} channels per connection")
        stale_epoch = epoch is not None and epoch != self.epoch
        channels = {key: self.channels.get(key) for key in resolved}
        client.push(_text({"op": "subscribed", "channels": list(resolved.values()), "epoch": self.epoch,
                           "seq": {channel.wire: channel.seq for channel in channels.values()}}
                          | ({"id": message["id"]} if _is_id(message.get("id")) else {})))
        for key, channel in channels.items():
            if key in client.channels:
                continue     # already subscribed: nothing to replay, nothing to repeat
            wire = channel.wire
            if wire in wanted_since:
                missed = None if stale_epoch else channel.replay_after(wanted_since[wire])
                if missed is None:
                    self.resyncs_sent += 1
                    client.push(_text({"channel": wire, "op": "resync", "seq": channel.seq,
                                       "reason": "since is older than the replay buffer (or from "
                                                 "another server run): reload over HTTP"}))
                elif missed:
                    client.push_many(missed, sum(map(len, missed)))
            elif key[0] not in PRIVATE and channel.last_data is not None:
                client.push(channel.last_data)     # the current quote / candle at once
            if key[0] == ACCOUNT:                  # the newest summary at once, then a fresh one
                if channel.summary is not None:
                    client.push(channel.summary)
                self._summary_due(account_id=key[1])
            channel.subscribers[client] = None
            client.channels[key] = channel

    def _on_unsubscribe(self, client: _Client, message: dict) -> None:
        _check_fields(message, ("op", "channels", "id"))
        names = message.get("channels")
        if not isinstance(names, list) or not names:
            raise _ProtocolError("VALIDATION_ERROR", "channels: must be a non-empty list of channel names",
                                 {"field": "channels"})
        account_id = client.claims.account_id if client.claims is not None else None
        removed = []
        for name in names:
            try:
                key, wire = self.channels.resolve(name, account_id)
            except ChannelError:
                continue
            channel = client.channels.pop(key, None)
            if channel is not None:
                channel.subscribers.pop(client, None)
                if not channel.subscribers:
                    self.channels.touch(channel)
                removed.append(wire)
        client.push(_text({"op": "unsubscribed", "channels": removed}
                          | ({"id": message["id"]} if _is_id(message.get("id")) else {})))

    def _on_auth(self, client: _Client, message: dict) -> None:
        _check_fields(message, ("op", "token", "id"))
        try:
            claims = self.tokens.verify_access(message.get("token"))
        except AuthError as error:
            raise _ProtocolError(error.code, error.message) from None
        previous = client.claims
        if previous is not None and previous.account_id != claims.account_id:
            for key in [key for key in client.channels if key[0] in PRIVATE]:
                channel = client.channels.pop(key)
                channel.subscribers.pop(client, None)
                self.channels.touch(channel)
        client.claims = claims
        if client.wait_scope is not None:   # the keepalive re-arms for this token's expiry
            client.wait_scope.cancel()
        client.push(_text({"op": "authenticated", "user_id": str(claims.user_id),
                           "account_id": str(claims.account_id), "expires_at": claims.expires_at * 1000}
                          | ({"id": message["id"]} if _is_id(message.get("id")) else {})))

    # -------------------------------------------------------------- the order lane

    def _order_error(self, client: _Client, request_id: Any, code: str, message: str,
                     details: Optional[dict] = None) -> None:
        self.orders_rejected += 1
        client.push(_text({"op": "order_result", "id": request_id, "ok": False,
                           "error": {"code": code, "message": message, "details": details or {}}}))

    def _on_order(self, client: _Client, message: dict) -> None:
        self.orders += 1
        request_id = message.get("id")
        if not _is_id(request_id):
            self._order_error(client, None, "VALIDATION_ERROR",
                              "id: is required (a string of at most 64 characters or an integer)",
                              {"field": "id", "problem": "is required"})
            return
        claims = client.claims
        if claims is None:
            self._order_error(client, request_id, "AUTH_REQUIRED", "orders need {\"op\":\"auth\"} first")
            return
        if claims.expires_at <= self.wall_clock():
            self._order_error(client, request_id, "TOKEN_EXPIRED",
                              "the access token has expired: send a fresh one with {\"op\":\"auth\"}")
            return
        action = message.get("action")
        if action not in ACTIONS:
            self._order_error(client, request_id, "VALIDATION_ERROR",
                              f"action: must be one of {', '.join(ACTIONS)}",
                              {"field": "action", "problem": f"must be one of {', '.join(ACTIONS)}"})
            return
        if client.inflight >= self.options.max_inflight_orders:
            self._order_error(client, request_id, "TOO_MANY_INFLIGHT",
                              f"at most {self.options.max_inflight_orders} orders in flight per "
                              "connection: wait for results", {"retry_after_ms": 10})
            return
        try:
            symbol, viewed = self._named_symbol(action, named_id(action, message), claims.account_id)
            if viewed:
                assert self._nursery is not None
                client.inflight += 1
                self._nursery.start_soon(self._order_viewed, client, request_id, action, message,
                                         claims.account_id, symbol)
                return
            command = build_command(action, message, claims.account_id, self.instruments, symbol)
        except EdgeError as error:
            self.orders_rejected += 1
            client.push(_text({"op": "order_result", "id": request_id, "ok": False,
                               "error": error_json(error)}))
            return
        slot = _ResultSlot(client, request_id, claims.account_id)
        try:
            self.handle.send_nowait(Request(command, slot))  # type: ignore[arg-type]
        except (Overloaded, EngineStopped) as error:
            if isinstance(error, Overloaded):
                self.orders_overloaded += 1
            self.orders_rejected += 1
            client.push(_text({"op": "order_result", "id": request_id} | (_failure_fields(error) or {})))
            return
        client.inflight += 1

    # -------------------------------------------------------------- cancel-on-disconnect (issue 13)

    def _on_cancel_on_disconnect(self, client: _Client, message: dict) -> None:
        """``{"op":"cancel_on_disconnect","enabled":true}``: when this connection drops, the pending
        orders placed through it are cancelled (``CancelOrders``, reason ``cancel_on_disconnect``)."""
        _check_fields(message, ("op", "enabled", "id"))
        enabled = message.get("enabled")
        if not isinstance(enabled, bool):
            raise _ProtocolError("VALIDATION_ERROR", "enabled: must be true or false",
                                 {"field": "enabled", "problem": "must be true or false"})
        if client.claims is None:
            raise _ProtocolError("AUTH_REQUIRED", "cancel_on_disconnect needs {\"op\":\"auth\"} first")
        client.cancel_on_disconnect = enabled
        client.push(_text({"op": "cancel_on_disconnect", "enabled": enabled, "orders": len(client.placed)}
                          | ({"id": message["id"]} if _is_id(message.get("id")) else {})))

    def _note_placed(self, client: _Client, events: list) -> None:
        """Remember the pending orders a placement through ``client`` created; one that comes
        back after the connection dropped is cancelled at once."""
        placed = placed_pending_orders(events)
        if not placed:
            return
        client.placed.update(placed)
        if len(client.placed) > MAX_CANCEL_ORDERS:   # forget those the stream saw finish
            client.placed = {order_id: account_id for order_id, account_id in client.placed.items()
                             if order_id in self._order_symbols}
        if client.gone and client.cancel_on_disconnect:
            self._cancel_placed(client)

    def _cancel_placed(self, client: _Client) -> None:
        commands = cancel_on_disconnect_commands(client.placed)
        client.placed = {}
        if self._nursery is None:
            return
        for command in commands:
            self.cancels_on_disconnect += 1
            self._nursery.start_soon(self._send_cancel, command)

    async def _send_cancel(self, command: Any) -> None:
        """Submit a cancel-on-disconnect, retrying a full inbox with backoff (bounded)."""
        for attempt in range(6):
            try:
                reply = await self.handle.request(command)
            except Overloaded:
                await trio.sleep(0.05 * 2 ** attempt)
                continue
            except Exception as error:   # engine stopped or unreachable: nothing to cancel with
                log.warning("event=cancel_on_disconnect_failed account_id=%s error=%r", command.account_id, error)
                return
            log.info("event=cancel_on_disconnect account_id=%s orders=%d cancelled=%d", command.account_id,
                     len(command.order_ids), sum(1 for event in reply.events if type(event) is OrderCancelled))
            return
        log.warning("event=cancel_on_disconnect_failed account_id=%s error=overloaded", command.account_id)

    def _named_symbol(self, action: str, target: Optional[int], account_id: int) -> tuple[Optional[str], bool]:
        """The symbol of the order or position the action names, if this account's, and whether
        the action goes through views (:func:`~actors.ws._orders.route`; a placement: neither)."""
        if target is None:
            return None, False
        symbols = self._order_symbols if ACTIONS[action] == "order_id" else self._position_symbols
        return route(action, symbols.get(target), account_id)

    def _results_ready(self, slot: _ResultSlot, value: Any) -> None:
        if not self._results:
            self._results_wake.set()
        self._results.append((slot, value))

    async def deliver_results(self) -> None:
        """Format the engine's replies to order-lane requests and queue them to their clients."""
        while True:
            await self._results_wake.wait()
            self._results_wake = trio.Event()
            ready, self._results = self._results, []
            for slot, value in ready:
                client = slot.client
                client.inflight -= 1
                if not isinstance(value, BaseException):
                    self._note_placed(client, value.events)
                if client.closing is not None:
                    continue
                if isinstance(value, BaseException):
                    self.orders_rejected += 1
                    fields: Optional[dict] = _failure_fields(value) or {"ok": False, "error": {
                        "code": "INVALID_COMMAND", "message": str(value), "details": {}}}
                else:
                    fields = outcome(value.events, self.instruments)
                if fields is None:
                    client.inflight += 1
                    assert self._nursery is not None
                    self._nursery.start_soon(self._deliver_duplicate, slot, value)
                    continue
                if not fields["ok"]:
                    self.orders_rejected += 1
                client.push(_text({"op": "order_result", "id": slot.request_id} | fields))

    async def _order_viewed(self, client: _Client, request_id: Any, action: str, message: dict,
                            account_id: AccountId, symbol: Optional[str]) -> None:
        try:
            fields = await viewed_outcome(action, message, account_id, self.handle, self.instruments, symbol)
        except Exception as error:
            failure = _failure_fields(error)
            if failure is not None:
                fields = failure
            else:   # a bug must cost this answer, not the whole server
                log.exception("event=viewed_order_failed client=%d action=%s", client.id, action)
                fields = {"ok": False, "error": {"code": "INTERNAL_ERROR",
                                                 "message": "the order could not be processed", "details": {}}}
        finally:
            client.inflight -= 1
        if not fields["ok"]:
            self.orders_rejected += 1
        if client.closing is None:
            client.push(_text({"op": "order_result", "id": request_id} | fields))

    async def _deliver_duplicate(self, slot: _ResultSlot, reply: Reply) -> None:
        client = slot.client
        try:
            fields = await duplicate_outcome(reply.events, slot.account_id, self.handle, self.store,
                                             self.instruments)
        except (Overloaded, EngineStopped):
            fields = {"ok": False, "error": {"code": "OVERLOADED", "message": "the engine is busy: retry",
                                             "details": {"retry_after_ms": 100}}}
        except Exception:   # a bug in the lookup must cost this answer, not the whole server
            log.exception("event=duplicate_lookup_failed client=%d", client.id)
            fields = {"ok": False, "error": {"code": "INTERNAL_ERROR",
                                             "message": "the original outcome could not be looked up",
                                             "details": {}}}
        finally:
            client.inflight -= 1
        client.push(_text({"op": "order_result", "id": slot.request_id} | fields))

    # -------------------------------------------------------------- shutdown

    async def close_all(self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutting down") -> None:
        for client in list(self.clients):
            client.request_close(code, reason)
        while self.clients:
            await trio.sleep(0.01)


def _failure_fields(error: BaseException) -> Optional[dict]:
    """The ``order_result`` of a request the engine did not answer (None: not one of those)."""
    if isinstance(error, EngineTimeout):     # split mode: applied or not, a retry is safe
        code, message, details = "ENGINE_TIMEOUT", str(error), {"retry_after_ms": 1000}
    elif isinstance(error, Overloaded):
        code, message, details = "OVERLOADED", "the engine is busy: retry shortly", {"retry_after_ms": 100}
    elif isinstance(error, EngineStopped):
        code, message, details = "UNAVAILABLE", "the engine is not taking orders", {}
    elif isinstance(error, InvalidCommand):
        code, message, details = "INVALID_COMMAND", str(error), {}
    else:
        return None
    return {"ok": False, "error": {"code": code, "message": message, "details": details}}


def _is_id(value: Any) -> bool:
    return (isinstance(value, str) and 0 < len(value) <= 64) or (
        isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63)


def _check_fields(message: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(k for k in message if k not in allowed)
    if unknown:
        raise _ProtocolError("VALIDATION_ERROR", f"{unknown[0]}: unknown field (allowed: "
                             f"{', '.join(a for a in allowed if a != 'op')})", {"field": str(unknown[0])[:64]})


class _TunedListener(trio.abc.Listener[trio.SocketStream]):
    """A TCP listener whose accepted sockets get a fixed send buffer (``send_buffer_bytes``):
    bounds the kernel memory a slow client can hold and makes lag visible sooner."""

    def __init__(self, inner: trio.SocketListener, send_buffer_bytes: int) -> None:
        self.inner = inner
        self.socket = inner.socket
        self.send_buffer_bytes = send_buffer_bytes

    async def accept(self) -> trio.SocketStream:
        stream = await self.inner.accept()
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer_bytes)
        return stream

    async def aclose(self) -> None:
        await self.inner.aclose()


# ------------------------------------------------------------------------------ the actor

async def run(*, handle: EngineClient, cfg: Any, tokens: TokenIssuer,
              candles_inbox: Optional[trio.MemoryReceiveChannel] = None, candles: Any = None,
              store: Any = None, notifications_inbox: Optional[trio.MemoryReceiveChannel] = None,
              task_status: trio.TaskStatus[WsServer] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the WebSocket API on ``[ws] host:port`` until cancelled.

    ``handle``: the engine (events, order lane). ``tokens``: verifies access tokens (the same
    secret as the gateway). ``candles_inbox``: the receive side of the candles actor's
    ``outbox``. ``candles``: the :class:`~actors.history.candles.CandlesHandle` (seeds the running candle
    of the larger intervals). ``store``: answers duplicate ``client_order_id`` with the original
    order. ``notifications_inbox``: what the notifications worker publishes (the ``notifications``
    channel). ``task_status.started`` gets the :class:`WsServer` (``.port`` is the bound port).
    On cancellation, or when the engine stops (its event stream ends), every client is closed
    with 1001 (waiting at most :data:`SHUTDOWN_CLOSE_S`) and ``run`` returns.
    """
    options = WsOptions.from_config(cfg)
    try:      # bind first: a port in use is a plain ConfigError (the supervisor does not retry it)
        listeners: list[Any] = await trio.open_tcp_listeners(options.port, host=options.host)
    except OSError as exc:
        raise ConfigError(f"[ws] cannot listen on {options.host}:{options.port}: "
                          f"{exc.strerror or exc}") from None
    if options.send_buffer_bytes:
        listeners = [_TunedListener(listener, options.send_buffer_bytes) for listener in listeners]
    server = WsServer(handle=handle, options=options, tokens=tokens, candles=candles, store=store)
    server.port = listeners[0].socket.getsockname()[1]
    connections_scope = trio.CancelScope(shield=True)

    async def serve_connections(task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED) -> None:
        # Shielded, so that on shutdown the clients still get their close frame; cancelled below.
        with connections_scope:
            async with trio.open_nursery() as handlers:
                task_status.started(handlers)
                await trio.sleep_forever()

    try:
        async with trio.open_nursery() as nursery:
            server._nursery = nursery
            await nursery.start(server.consume_engine)
            nursery.start_soon(server.deliver_results)
            nursery.start_soon(server.publish_summaries)
            if candles_inbox is not None:
                nursery.start_soon(server.consume_candles, candles_inbox)
            if notifications_inbox is not None:
                nursery.start_soon(server.consume_notifications, notifications_inbox)
            handlers = await nursery.start(serve_connections)
            handlers.start_soon(server.flush_clients)   # lives as long as the connections it writes to
            try:
                ws_server = WebSocketServer(
                    server._on_request, listeners, handler_nursery=handlers,
                    max_message_size=options.max_message_bytes, message_queue_size=_MESSAGE_QUEUE,
                    connect_timeout=options.handshake_timeout_s, disconnect_timeout=options.close_timeout_s)
                await nursery.start(ws_server.run)
                log.info("event=ws_listening host=%s port=%d epoch=%s", options.host, server.port, server.epoch)
                task_status.started(server)
                await server.engine_stopped.wait()   # or cancellation (the supervisor's shutdown)
            finally:
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(min(options.close_timeout_s, SHUTDOWN_CLOSE_S)):
                        await server.close_all()
                    connections_scope.cancel()
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            for listener in listeners:
                await listener.aclose()
