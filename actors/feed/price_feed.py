"""The price feed actor: raw top-of-book quotes, in ticks, into the engine's inbox.

Sources (``[feed] source``, or the ``source=`` argument / ``--feed`` flag):

* ``synthetic`` (the embedded default): a seeded random walk per instrument. One
  ``random.Random(seed)`` drives everything — arrival times (Poisson, ``ticks_per_s`` per symbol),
  steps, jumps and spreads — so a seed always yields the same quotes at the same (trio) times.
* ``replay:FILE``: a recording of Binance messages, one JSON object a line,
  ``{"ts": <ms>, "stream": "btcusdt@bookTicker", "data": {...}}``, at the recorded pace divided by
  ``replay_speed`` (``0`` = as fast as the engine takes them), once or in a loop.
* ``binance``: Binance's combined WebSocket stream (bookTicker, optionally aggTrade) with reconnect
  (exponential backoff with jitter), ping keepalive, gap and staleness detection.
* ``redis``: ticks from the Redis edge in split mode; provided by the edge, not built here yet.

Theory of operation
-------------------
Every source ends in :class:`_Emitter.send`, which does ``await outbox.send(Quote(symbol, bid, ask))``:
the engine inbox is bounded, so a slow engine slows the synthetic and replay sources down (they
never drop a quote). The Binance source cannot slow the exchange down, so its network reader never
blocks on the engine: it keeps the *latest* quote per symbol and a sender task forwards them
(conflation — a slow engine gets the freshest price, and skipped intermediate quotes are counted).
Keeping the reader unblocked also keeps pongs flowing, so back-pressure is never mistaken for a
dead connection.

Binance messages are parsed by the pure :mod:`exness_actors.feed_format` (exact decimal → ticks,
bid rounded down, ask up). Policy applied here, shared by replay and binance:

* **aggTrade** updates the last trade price only; it becomes a quote (bid = floor, ask = ceil of the
  price) only for a symbol with no bookTicker seen yet on this connection / replay pass, so a
  trade-only recording still moves prices while a book, once known, is never overwritten by trades.
* **Gaps**: bookTicker ``u`` must increase per symbol. A backward ``u`` is counted as a gap, the
  message dropped and ``u`` re-based on it (one stale message is dropped; a reset id sequence
  recovers on the next message); an equal ``u`` is a duplicate and dropped. The first message of a
  symbol after a reconnect is counted as a gap too (updates were missed while disconnected).
* **Unchanged quotes** (same bid and ask as the last one sent) are not re-sent more often than
  every ``unchanged_refresh_s``: Binance sends a bookTicker for every size change, which would
  fill the journal with identical prices, while the periodic refresh keeps the engine's quote fresh.
* **Malformed** messages (not JSON, wrong shape, bad or crossed prices, unknown symbols) are counted
  by reason and skipped; the feed never stops for bad data.

The actor ends when the engine stops taking input (closed outbox, ``EngineStopped``) and when a
non-looping replay reaches the end of its file; otherwise it runs until cancelled.

Configuration (``[feed]``; times in seconds, prices as decimal strings; defaults in brackets):

* all sources: ``source`` [synthetic], ``unchanged_refresh_s`` [1.0; 0 = send every quote];
* synthetic: ``seed`` [1], ``ticks_per_s`` per symbol [10], ``start_prices`` (table of
  ``SYMBOL = "price"``) [BTCUSDT 65000, ETHUSDT 3500, SOLUSDT 150, others 100], ``step_bps`` (largest
  ordinary step) [2], ``jump_probability`` per tick [0.001], ``jump_bps`` (largest jump) [30];
* replay: ``source = "replay:FILE"`` (or ``"replay"`` with ``replay_file``), ``replay_speed`` [1.0;
  0 = as fast as possible], ``replay_loop`` [false];
* binance: ``binance_url`` [wss://stream.binance.com:9443], ``binance_streams`` [["bookTicker"]; add
  "aggTrade" for trades], ``connect_timeout_s`` [10], ``close_timeout_s`` [2], ``reconnect_initial_s``
  [0.5], ``reconnect_max_s`` [30], ``healthy_after_s`` (uptime that resets the backoff) [30],
  ``ping_interval_s`` [20; 0 = no pings], ``ping_timeout_s`` [10], ``stale_after_s`` [10].

Logs go to the ``exness.price_feed`` logger, one ``key=value`` line per event.
"""

from __future__ import annotations

import heapq
import logging
import random
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from actors.config import Config, ConfigError
from actors.engine.messages import EngineStopped
from exness_actors.commands import Quote
from exness_actors.feed_format import BOOK, TRADE, MalformedTick, Tick, parse_json, parse_recorded_line, stream_name
from exness_actors.instruments import Instrument
from exness_actors.money import parse_fixed

__all__ = [
    "run",
    "FeedStats",
    "FeedSettings",
    "SyntheticWalk",
    "backoff_delay",
    "binance_stream_url",
    "SAMPLE_RECORDING",
    "DEFAULT_START_PRICES",
    "DEFAULT_BINANCE_URL",
]

log = logging.getLogger("exness.price_feed")

#: A small Binance recording (BTCUSDT, ETHUSDT, SOLUSDT) shipped for demos: ``--feed replay:<this>``.
SAMPLE_RECORDING = Path(__file__).resolve().parent.parent / "data" / "binance_sample.jsonl"

DEFAULT_START_PRICES = {"BTCUSDT": "65000", "ETHUSDT": "3500", "SOLUSDT": "150"}
FALLBACK_START_PRICE = "100"
DEFAULT_BINANCE_URL = "wss://stream.binance.com:9443"

SOURCES = "synthetic | replay:FILE | binance | redis"
_REPLAY_CHUNK_BYTES = 64 * 1024
_LOGGED_PER_REASON = 10       # log every malformed message up to this many per reason...
_LOG_EVERY = 1000             # ...then one line per this many


# --- configuration ----------------------------------------------------------------------------

def _number(feed: Mapping[str, Any], key: str, default: float, *, allow_zero: bool = False) -> float:
    value = feed.get(key, default)
    if isinstance(value, bool):
        raise ConfigError(f"feed.{key}: expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"feed.{key}: expected a number, got {value!r}") from None
    if not number == number or number in (float("inf"), float("-inf")) or number < 0 \
            or (number == 0 and not allow_zero):
        expected = "zero or a positive number" if allow_zero else "a positive number"
        raise ConfigError(f"feed.{key}: expected {expected}, got {value!r}")
    return number


def _flag(feed: Mapping[str, Any], key: str, default: bool) -> bool:
    value = feed.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"feed.{key}: expected true or false, got {value!r}")
    return value


class FeedSettings:
    """The ``[feed]`` table, checked once with messages that name the key.

    Times are seconds as floats (time, never money); prices are decimal strings parsed exactly.
    """

    def __init__(self, cfg: Config, source: Optional[str] = None) -> None:
        feed = cfg["feed"]
        text = source if source is not None else feed.get("source", "synthetic")
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"feed.source: expected one of {SOURCES}, got {text!r}")
        text = text.strip()
        self.source = text
        self.kind, _, argument = text.partition(":")
        self.replay_file: Optional[Path] = None
        if self.kind == "replay":
            argument = argument or feed.get("replay_file", "")
            if not argument:
                raise ConfigError("feed.source: 'replay' needs a file: replay:PATH (a JSON-lines recording)")
            self.replay_file = Path(argument).expanduser()
        elif self.kind == "redis":
            if cfg.settings.bus.kind != "redis":
                raise ConfigError("feed source 'redis' needs bus = redis (split mode); "
                                  "use synthetic, replay:FILE or binance in embedded mode")
        elif self.kind not in ("synthetic", "binance") or argument:
            raise ConfigError(f"feed.source: expected one of {SOURCES}, got {text!r}")

        self.instruments: tuple[Instrument, ...] = cfg.core.instruments
        if not self.instruments:
            raise ConfigError("[instruments]: the feed needs at least one instrument")
        self.price_decimals = {i.symbol: i.price_decimals for i in self.instruments}
        self.unchanged_refresh_s = _number(feed, "unchanged_refresh_s", 1.0, allow_zero=True)

        # synthetic
        seed = feed.get("seed", 1)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"feed.seed: expected an integer, got {seed!r}")
        self.seed = seed
        self.ticks_per_s = _number(feed, "ticks_per_s", 10.0)
        self.step_bps = _number(feed, "step_bps", 2.0)
        self.jump_probability = _number(feed, "jump_probability", 0.001, allow_zero=True)
        self.jump_bps = _number(feed, "jump_bps", 30.0, allow_zero=True)
        if self.jump_probability > 1:
            raise ConfigError(f"feed.jump_probability: expected a probability in [0, 1], "
                              f"got {self.jump_probability!r}")
        start_prices = feed.get("start_prices", {})
        if not isinstance(start_prices, Mapping):
            raise ConfigError("feed.start_prices: expected a table of SYMBOL = \"decimal price\"")
        self.start_ticks: dict[str, int] = {}
        for instrument in self.instruments:
            value = start_prices.get(instrument.symbol,
                                     DEFAULT_START_PRICES.get(instrument.symbol, FALLBACK_START_PRICE))
            try:
                self.start_ticks[instrument.symbol] = parse_fixed(
                    value, instrument.price_decimals, field=f"feed.start_prices.{instrument.symbol}")
            except Exception as exc:
                raise ConfigError(f"{exc} (a decimal string with at most "
                                  f"{instrument.price_decimals} places)") from None

        # replay
        self.replay_speed = _number(feed, "replay_speed", 1.0, allow_zero=True)
        self.replay_loop = _flag(feed, "replay_loop", False)

        # binance
        self.binance_url = feed.get("binance_url", DEFAULT_BINANCE_URL)
        streams = feed.get("binance_streams", ["bookTicker"])
        if not isinstance(streams, list) or not streams or \
                any(stream not in ("bookTicker", "aggTrade") for stream in streams):
            raise ConfigError(f"feed.binance_streams: expected a list of \"bookTicker\" and/or "
                              f"\"aggTrade\", got {streams!r}")
        self.binance_kinds = tuple(BOOK if stream == "bookTicker" else TRADE for stream in streams)
        self.connect_timeout_s = _number(feed, "connect_timeout_s", 10.0)
        self.close_timeout_s = _number(feed, "close_timeout_s", 2.0)
        self.reconnect_initial_s = _number(feed, "reconnect_initial_s", 0.5)
        self.reconnect_max_s = _number(feed, "reconnect_max_s", 30.0)
        self.healthy_after_s = _number(feed, "healthy_after_s", 30.0, allow_zero=True)
        self.ping_interval_s = _number(feed, "ping_interval_s", 20.0, allow_zero=True)
        self.ping_timeout_s = _number(feed, "ping_timeout_s", 10.0)
        self.stale_after_s = _number(feed, "stale_after_s", 10.0)
        if self.kind == "binance":
            self.stream_url = binance_stream_url(self.binance_url, [i.symbol for i in self.instruments],
                                                 self.binance_kinds)


def binance_stream_url(base: Any, symbols: list[str], kinds: tuple[str, ...] = (BOOK,)) -> str:
    """``wss://host:port/stream?streams=btcusdt@bookTicker/...`` for a base URL (with or without
    the ``/stream`` path)."""
    if not isinstance(base, str) or not base.startswith(("ws://", "wss://")) or "?" in base:
        raise ConfigError(f"feed.binance_url: expected a ws:// or wss:// URL without a query, got {base!r}")
    base = base.rstrip("/")
    if base.endswith("/stream"):
        base = base[: -len("/stream")]
    streams = "/".join(stream_name(symbol, kind) for symbol in symbols for kind in kinds)
    return f"{base}/stream?streams={streams}"


def backoff_delay(attempt: int, *, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Seconds to wait before reconnect ``attempt`` (0 = the first retry after a healthy connection).

    Exponential, capped at ``max_s``, with "equal jitter": a uniform draw in ``[d/2, d]``, so many
    clients cut off at once do not come back in lockstep, and the wait still grows.
    """
    ceiling = min(max_s, initial_s * 2 ** min(attempt, 62))
    return ceiling / 2 + rng.random() * ceiling / 2


# --- statistics -------------------------------------------------------------------------------

class FeedStats:
    """Counters of one feed, kept across restarts when the supervisor passes the same object back.

    ``statistics()`` is what the gateway exports as metrics. Times are trio's monotonic clock.
    """

    def __init__(self, source: str = "", symbols: tuple[str, ...] = ()) -> None:
        self.source = source
        self.symbols = symbols
        self.outbox: Any = None
        self.quotes_sent = 0
        self.unchanged_skipped = 0
        self.conflated = 0
        self.messages = 0
        self.trades = 0
        self.malformed = 0
        self.malformed_by_reason: dict[str, int] = {}
        self.unknown_symbol = 0
        self.connects = 0
        self.reconnects = 0
        self.connect_failures = 0
        self.consecutive_failures = 0
        self.last_backoff_s = 0.0
        self.disconnect_reasons: dict[str, int] = {}
        self.connected = False
        self.ping_timeouts = 0
        self.stale_events = 0
        self.recycles = 0
        self.gaps = 0
        self.gaps_by_reason: dict[str, int] = {}
        self.duplicates = 0
        self.replay_passes = 0
        self.replay_lines = 0
        self.last_quote_at: dict[str, float] = {}
        self.last_trade_ticks: dict[str, int] = {}
        self.lag_s = 0.0
        self.lag_max_s = 0.0
        self.send_blocked_s = 0.0
        self.exchange_lag_ms: Optional[int] = None
        self.stopped_reason = ""

    def count_malformed(self, error: MalformedTick, where: str) -> None:
        if error.reason == "unknown_symbol":
            self.unknown_symbol += 1
        else:
            self.malformed += 1
        count = self.malformed_by_reason[error.reason] = self.malformed_by_reason.get(error.reason, 0) + 1
        if count <= _LOGGED_PER_REASON or count % _LOG_EVERY == 0:
            log.warning("event=message_skipped source=%s where=%s reason=%s count=%d detail=%r",
                        self.source, where, error.reason, count, error.detail[:200])

    def count_gap(self, symbol: str, reason: str) -> None:
        self.gaps += 1
        self.gaps_by_reason[reason] = self.gaps_by_reason.get(reason, 0) + 1

    def statistics(self) -> dict[str, Any]:
        depth = None
        if isinstance(self.outbox, trio.MemorySendChannel):     # an engine handle reports its own depth
            depth = self.outbox.statistics().current_buffer_used
        return {
            "source": self.source,
            "quotes_sent": self.quotes_sent,
            "unchanged_skipped": self.unchanged_skipped,
            "conflated": self.conflated,
            "messages": self.messages,
            "trades": self.trades,
            "malformed": self.malformed,
            "malformed_by_reason": dict(self.malformed_by_reason),
            "unknown_symbol": self.unknown_symbol,
            "connected": self.connected,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "connect_failures": self.connect_failures,
            "consecutive_failures": self.consecutive_failures,
            "last_backoff_s": self.last_backoff_s,
            "disconnect_reasons": dict(self.disconnect_reasons),
            "ping_timeouts": self.ping_timeouts,
            "stale_events": self.stale_events,
            "recycles": self.recycles,
            "gaps": self.gaps,
            "gaps_by_reason": dict(self.gaps_by_reason),
            "duplicates": self.duplicates,
            "replay_passes": self.replay_passes,
            "replay_lines": self.replay_lines,
            "last_quote_at": dict(self.last_quote_at),
            "last_trade_ticks": dict(self.last_trade_ticks),
            "lag_s": self.lag_s,
            "lag_max_s": self.lag_max_s,
            "send_blocked_s": self.send_blocked_s,
            "exchange_lag_ms": self.exchange_lag_ms,
            "outbox_depth": depth,
            "stopped_reason": self.stopped_reason,
        }


# --- the shared path to the engine ----------------------------------------------------------------

class _Emitter:
    """Sends quotes to the outbox; stops the actor quietly when the engine stops taking them."""

    def __init__(self, outbox: Any, stats: FeedStats, settings: FeedSettings,
                 actor_scope: trio.CancelScope) -> None:
        self.outbox = outbox
        self.stats = stats
        self.refresh_s = settings.unchanged_refresh_s
        self.actor_scope = actor_scope
        self.last_sent: dict[str, tuple[int, int]] = {}

    def is_unchanged(self, symbol: str, bid: int, ask: int, now: float) -> bool:
        """Same prices as the last quote sent, and that one is still recent enough."""
        if self.refresh_s == 0 or self.last_sent.get(symbol) != (bid, ask):
            return False
        return now - self.stats.last_quote_at.get(symbol, -self.refresh_s) < self.refresh_s

    async def send(self, symbol: str, bid: int, ask: int, due: Optional[float]) -> None:
        stats = self.stats
        started = trio.current_time()
        if self.is_unchanged(symbol, bid, ask, started):
            stats.unchanged_skipped += 1
            return
        try:
            await self.outbox.send(Quote(symbol, bid, ask))
        except (trio.BrokenResourceError, trio.ClosedResourceError, EngineStopped) as exc:
            stats.stopped_reason = f"engine_closed ({exc.__class__.__name__})"
            log.info("event=feed_stopped source=%s reason=engine_closed quotes_sent=%d",
                     stats.source, stats.quotes_sent)
            self.actor_scope.cancel()
            await trio.lowlevel.checkpoint()   # raises Cancelled, unwound by the actor's scope
            return
        sent = trio.current_time()
        self.last_sent[symbol] = (bid, ask)
        stats.quotes_sent += 1
        stats.last_quote_at[symbol] = sent
        stats.send_blocked_s += sent - started
        stats.lag_s = sent - (started if due is None else min(due, started))
        if stats.lag_s > stats.lag_max_s:
            stats.lag_max_s = stats.lag_s


class _TickRouter:
    """Which parsed ticks become quotes: the trade policy and the ``u`` gap check (see the module doc)."""

    def __init__(self, stats: FeedStats) -> None:
        self.stats = stats
        self.book_seen: set[str] = set()
        self.last_update_id: dict[str, int] = {}
        self.resync: set[str] = set()

    def mark_reconnect(self) -> None:
        """Data may have been missed: the next book message of every known symbol is a gap."""
        self.resync.update(self.last_update_id)

    def accept(self, tick: Tick) -> bool:
        symbol = tick.symbol
        if tick.kind == TRADE:
            self.stats.trades += 1
            self.stats.last_trade_ticks[symbol] = tick.bid      # the trade price, floored to the tick
            return symbol not in self.book_seen
        self.book_seen.add(symbol)
        previous = self.last_update_id.get(symbol)
        self.last_update_id[symbol] = tick.update_id
        if symbol in self.resync:
            self.resync.discard(symbol)
            self.stats.count_gap(symbol, "reconnect")
            return True
        if previous is None or tick.update_id > previous:
            return True
        if tick.update_id == previous:
            self.stats.duplicates += 1
            return False
        self.stats.count_gap(symbol, "backward")
        log.warning("event=gap source=%s symbol=%s reason=backward update_id=%d previous=%d",
                    self.stats.source, symbol, tick.update_id, previous)
        return False


# --- synthetic ----------------------------------------------------------------------------------

class SyntheticWalk:
    """One instrument's random walk in integer ticks (no floats touch a price).

    Each step moves the bid by a uniform draw in ``±step_bps`` (in hundredths of a basis point,
    truncated toward zero so the walk has no rounding drift); with ``jump_probability`` the step
    is a jump of ``jump_bps/2 .. jump_bps`` either way. The raw spread is one tick, sometimes two or
    three. The bid never falls below 10 ticks.
    """

    __slots__ = ("symbol", "bid", "step_units", "jump_probability", "jump_low", "jump_high")

    def __init__(self, symbol: str, start_ticks: int, *, step_bps: float, jump_probability: float,
                 jump_bps: float) -> None:
        self.symbol = symbol
        self.bid = start_ticks
        self.step_units = max(1, round(step_bps * 100))          # hundredths of a bp
        self.jump_probability = jump_probability
        self.jump_high = round(jump_bps * 100)
        self.jump_low = self.jump_high // 2

    def step(self, rng: random.Random) -> tuple[int, int]:
        draw = rng.randint(-self.step_units, self.step_units)
        if self.jump_high and rng.random() < self.jump_probability:
            draw = rng.randint(self.jump_low, self.jump_high) * (1 if rng.random() < 0.5 else -1)
        move = self.bid * abs(draw) // 1_000_000
        self.bid = max(10, self.bid + move if draw >= 0 else self.bid - move)
        spread = 1 if rng.random() < 0.8 else rng.randint(2, 3)
        return self.bid, self.bid + spread


async def _run_synthetic(settings: FeedSettings, emitter: _Emitter, stats: FeedStats,
                         task_status: Any) -> None:
    rng = random.Random(settings.seed)
    walks = [SyntheticWalk(i.symbol, settings.start_ticks[i.symbol], step_bps=settings.step_bps,
                           jump_probability=settings.jump_probability, jump_bps=settings.jump_bps)
             for i in settings.instruments]
    rate = settings.ticks_per_s
    log.info("event=feed_started source=synthetic seed=%d symbols=%s ticks_per_s=%s",
             settings.seed, ",".join(walk.symbol for walk in walks), rate)
    task_status.started(stats)
    start = trio.current_time()
    schedule = [(rng.expovariate(rate), index) for index in range(len(walks))]
    heapq.heapify(schedule)
    while True:
        offset, index = schedule[0]
        due = start + offset
        await trio.sleep_until(due)
        walk = walks[index]
        bid, ask = walk.step(rng)
        heapq.heapreplace(schedule, (offset + rng.expovariate(rate), index))
        await emitter.send(walk.symbol, bid, ask, due)


# --- replay -------------------------------------------------------------------------------------

async def _run_replay(settings: FeedSettings, emitter: _Emitter, stats: FeedStats,
                      task_status: Any) -> None:
    path = settings.replay_file
    assert path is not None
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"feed.source replay:{path}: cannot open the recording "
                          f"({exc.strerror or exc.__class__.__name__})") from None
    speed = settings.replay_speed
    log.info("event=feed_started source=replay file=%s speed=%s loop=%s", path, speed, settings.replay_loop)
    task_status.started(stats)
    with handle:
        while True:
            valid = await _replay_pass(handle, path, settings, emitter, stats, speed)
            stats.replay_passes += 1
            log.info("event=replay_pass_done file=%s passes=%d valid_lines=%d quotes_sent=%d malformed=%d",
                     path, stats.replay_passes, valid, stats.quotes_sent, stats.malformed)
            if valid == 0:
                stats.stopped_reason = "no_valid_lines"
                log.error("event=feed_stopped source=replay file=%s reason=no_valid_lines", path)
                return
            if not settings.replay_loop:
                stats.stopped_reason = "end_of_recording"
                return
            handle.seek(0)


async def _replay_pass(handle: Any, path: Path, settings: FeedSettings, emitter: _Emitter,
                       stats: FeedStats, speed: float) -> int:
    """One pass over the recording; returns how many lines parsed as ticks."""
    # The recording is read synchronously in chunks of ~64 KiB (a few hundred lines, well under a
    # millisecond from the page cache): one worker-thread hop per chunk would cost more, and would
    # let trio's mock clock jump while the read is in flight.
    router = _TickRouter(stats)
    decimals = settings.price_decimals
    start = trio.current_time()
    first_ts: Optional[int] = None
    line_number = 0
    valid = 0
    while True:
        lines = handle.readlines(_REPLAY_CHUNK_BYTES)
        if not lines:
            return valid
        await trio.lowlevel.checkpoint()
        for line in lines:
            line_number += 1
            if not line.strip():
                continue
            stats.replay_lines += 1
            stats.messages += 1
            try:
                ts_ms, tick = parse_recorded_line(line, decimals)
            except MalformedTick as error:
                stats.count_malformed(error, f"{path.name}:{line_number}")
                continue
            valid += 1
            due: Optional[float] = None
            if speed > 0:
                if first_ts is None:
                    first_ts = ts_ms
                due = start + max(0, ts_ms - first_ts) / 1000 / speed
                if due > trio.current_time():
                    await trio.sleep_until(due)
            if router.accept(tick):
                await emitter.send(tick.symbol, tick.bid, tick.ask, due)


# --- binance ------------------------------------------------------------------------------------

class _Conflator:
    """The latest unsent quote per symbol, forwarded by one sender task (see the module doc)."""

    def __init__(self, emitter: _Emitter, stats: FeedStats) -> None:
        self.emitter = emitter
        self.stats = stats
        self.pending: dict[str, tuple[int, int, float]] = {}
        self.wakeup = trio.Event()

    def put(self, symbol: str, bid: int, ask: int, received_at: float) -> None:
        if symbol in self.pending:
            self.stats.conflated += 1
        elif self.emitter.is_unchanged(symbol, bid, ask, received_at):
            self.stats.unchanged_skipped += 1
            return
        self.pending[symbol] = (bid, ask, received_at)
        self.wakeup.set()

    async def run(self) -> None:
        while True:
            if not self.pending:
                self.wakeup = trio.Event()
                await self.wakeup.wait()
            symbol = next(iter(self.pending))
            bid, ask, received_at = self.pending.pop(symbol)
            await self.emitter.send(symbol, bid, ask, received_at)


class _BinanceClient:
    def __init__(self, settings: FeedSettings, emitter: _Emitter, stats: FeedStats) -> None:
        self.settings = settings
        self.stats = stats
        self.router = _TickRouter(stats)
        self.conflator = _Conflator(emitter, stats)
        self.rng = random.Random()     # jitter only: meant to differ between processes
        self.symbols = tuple(i.symbol for i in settings.instruments)
        self.last_message_at: dict[str, float] = {}
        self.stale: set[str] = set()
        self.has_connected = False

    async def run(self, task_status: Any) -> None:
        settings, stats = self.settings, self.stats
        log.info("event=feed_started source=binance url=%s", settings.stream_url)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.conflator.run)
            task_status.started(stats)
            attempt = 0
            while True:
                connected_at, reason = await self._connect_once()
                kind = reason.split(" ", 1)[0]
                stats.disconnect_reasons[kind] = stats.disconnect_reasons.get(kind, 0) + 1
                healthy = connected_at is not None and \
                    trio.current_time() - connected_at >= settings.healthy_after_s
                if healthy:
                    attempt = 0     # a connection that stayed up a while resets the backoff
                stats.consecutive_failures = 0 if healthy else attempt + 1
                delay = backoff_delay(attempt, initial_s=settings.reconnect_initial_s,
                                      max_s=settings.reconnect_max_s, rng=self.rng)
                attempt += 1
                stats.last_backoff_s = delay
                # Binance closes every connection after 24 h: a healthy close is routine, not a warning.
                level = logging.INFO if healthy else logging.WARNING
                log.log(level, "event=disconnected source=binance reason=%r retry_in_s=%.3f attempt=%d",
                        reason, delay, attempt)
                await trio.sleep(delay)
                stats.reconnects += 1

    async def _connect_once(self) -> tuple[Optional[float], str]:
        """One connection, from handshake to close. Returns when it was up (None = never) and why it ended."""
        settings, stats = self.settings, self.stats
        connected_at: Optional[float] = None
        reason = "unknown"
        try:
            async with open_websocket_url(settings.stream_url, connect_timeout=settings.connect_timeout_s,
                                          disconnect_timeout=settings.close_timeout_s,
                                          message_queue_size=256) as connection:
                connected_at = trio.current_time()
                stats.connects += 1
                stats.connected = True
                if self.has_connected:
                    self.router.mark_reconnect()
                self.has_connected = True
                self.stale.clear()
                log.info("event=connected source=binance url=%s connects=%d", settings.stream_url, stats.connects)
                try:
                    reason = await self._session(connection, connected_at)
                finally:
                    stats.connected = False
        except ConnectionClosed as exc:
            reason = _closed_reason(exc)
        except HandshakeError as exc:
            if connected_at is None:
                stats.connect_failures += 1
                reason = f"connect_failed {exc.__class__.__name__}: {exc.__cause__ or exc}"
            # else: the close handshake timed out after we ended the session; the reason stands
        except (OSError, trio.BrokenResourceError) as exc:
            reason = f"network_error {exc.__class__.__name__}: {exc}"
        return connected_at, reason

    async def _session(self, connection: Any, connected_at: float) -> str:
        ended: list[str] = []
        async with trio.open_nursery() as nursery:
            def recycle(reason: str) -> None:
                if not ended:
                    ended.append(reason)
                nursery.cancel_scope.cancel()

            if self.settings.ping_interval_s > 0:
                nursery.start_soon(self._keepalive, connection, recycle)
            nursery.start_soon(self._watchdog, connected_at, recycle)
            try:
                while True:
                    self._on_frame(await connection.get_message())
            except ConnectionClosed as exc:
                recycle(_closed_reason(exc))
        return ended[0] if ended else "cancelled"

    def _on_frame(self, message: str | bytes) -> None:
        stats = self.stats
        now = trio.current_time()
        stats.messages += 1
        try:
            tick = parse_json(message, self.settings.price_decimals)
        except MalformedTick as error:
            if error.reason != "control_message":
                stats.count_malformed(error, "binance")
            return
        symbol = tick.symbol
        self.last_message_at[symbol] = now
        if symbol in self.stale:
            self.stale.discard(symbol)
            log.info("event=fresh source=binance symbol=%s", symbol)
        if tick.event_time_ms is not None:
            stats.exchange_lag_ms = time.time_ns() // 1_000_000 - tick.event_time_ms
        if self.router.accept(tick):
            self.conflator.put(symbol, tick.bid, tick.ask, now)

    async def _keepalive(self, connection: Any, recycle: Any) -> None:
        """Ping every ``ping_interval_s``; no pong within ``ping_timeout_s`` means a dead connection."""
        number = 0
        while True:
            await trio.sleep(self.settings.ping_interval_s)
            number += 1
            with trio.move_on_after(self.settings.ping_timeout_s) as timeout:
                try:
                    await connection.ping(number.to_bytes(8, "big"))
                except ConnectionClosed:
                    return          # the reader sees the close and ends the session
            if timeout.cancelled_caught:
                self.stats.ping_timeouts += 1
                self.stats.recycles += 1
                log.warning("event=ping_timeout source=binance timeout_s=%s", self.settings.ping_timeout_s)
                recycle("ping_timeout")
                return

    async def _watchdog(self, connected_at: float, recycle: Any) -> None:
        """Flag symbols silent for ``stale_after_s``; recycle the connection when all are."""
        stale_after = self.settings.stale_after_s
        while True:
            await trio.sleep(min(1.0, stale_after / 4))
            now = trio.current_time()
            all_stale = True
            for symbol in self.symbols:
                silent_s = now - max(self.last_message_at.get(symbol, connected_at), connected_at)
                if silent_s < stale_after:
                    all_stale = False
                elif symbol not in self.stale:
                    self.stale.add(symbol)
                    self.stats.stale_events += 1
                    log.warning("event=stale source=binance symbol=%s silent_s=%.1f", symbol, silent_s)
            if all_stale:
                self.stats.recycles += 1
                log.warning("event=recycle source=binance reason=all_stale stale_after_s=%s", stale_after)
                recycle("all_stale")
                return


def _closed_reason(exc: ConnectionClosed) -> str:
    reason = exc.reason
    if reason is None:
        return "server_closed"
    return f"server_closed code={reason.code} name={reason.name} reason={reason.reason!r}"


# --- the actor ----------------------------------------------------------------------------------

async def run(*, outbox: Any, cfg: Config,
              task_status: trio.TaskStatus[FeedStats] = trio.TASK_STATUS_IGNORED,
              source: Optional[str] = None, stats: Optional[FeedStats] = None) -> None:
    """Feed quotes into ``outbox`` (the engine inbox) until cancelled or the source ends.

    ``outbox`` is anything with ``async send(command)``: a clone of the engine inbox's send channel
    or the engine handle. ``source`` overrides ``[feed] source``. ``task_status.started`` gets the
    :class:`FeedStats` (pass the same object back as ``stats`` on a restart to keep the counters).
    Raises :class:`ConfigError` before starting when the configuration is wrong.
    """
    settings = FeedSettings(cfg, source)
    if settings.kind == "redis":
        raise NotImplementedError("feed source 'redis' is provided by the Redis edge (split mode), "
                                  "which is not part of the price feed actor yet")
    if stats is None:
        stats = FeedStats()
    stats.source = settings.source
    stats.symbols = tuple(settings.price_decimals)
    stats.outbox = outbox
    stats.stopped_reason = ""
    with trio.CancelScope() as actor_scope:
        emitter = _Emitter(outbox, stats, settings, actor_scope)
        if settings.kind == "synthetic":
            await _run_synthetic(settings, emitter, stats, task_status)
        elif settings.kind == "replay":
            await _run_replay(settings, emitter, stats, task_status)
        else:
            await _BinanceClient(settings, emitter, stats).run(task_status)
