"""The candles actor: quotes → 1m candles → store, and the live candle for the WebSocket server.

Theory of operation
-------------------
The engine publishes an :class:`~actors.engine.messages.EventBatch` per durable batch. This actor feeds
every ``QuoteUpdated`` of it into a pure :class:`~exness_actors.candles.CandleBuilder` (OHLC of the
bid, tick volume; DESIGN.md §4). A candle closes when a quote of a later minute arrives — or, for
a quiet symbol, once the engine's time (the batch's last ``ts``) has left its minute.

Closed candles wait in ``pending``; a **flusher task** hands them to the store when
``[candles] flush_candles`` of them are waiting or ``flush_interval_s`` has passed, so the
receive loop never waits for the disk (the store itself runs off the event loop). While a write
is under way its candles are ``inflight``; a failed write is retried with backoff (the candles go
back to the front of ``pending``) and after :data:`MAX_WRITE_ATTEMPTS` the actor fails, to be
restarted by the supervisor. On the way out (inbox closed or cancelled) everything in memory —
including the open candles — is written, shielded, within :data:`FINAL_FLUSH_TIMEOUT_S`.

On start, each instrument's last stored 1m candle becomes the open candle again
(:meth:`CandleBuilder.seed`), so a restart within a minute continues that candle instead of
overwriting it with a partial one; the 1m candles stored earlier in its week seed the running
aggregates behind :meth:`CandlesHandle.live` for larger intervals.

The optional ``outbox`` gets :class:`~exness_actors.candles.Candle` objects: each closed 1m
candle as it closes (``closed`` True), then, once per batch and symbol that had quotes, a copy of
the live 1m candle (``closed`` False). It is written with ``send_nowait`` only: when it is full
the update is dropped and counted (``live_updates_dropped``) — the WebSocket server must never
slow the candles down.

Reads (:meth:`CandlesHandle.read`) merge the store with memory: buckets before the first candle
not yet stored come from the store as they are; the bucket holding it is folded from its stored
1m candles, the unwritten closed ones and the live one.
"""

from __future__ import annotations

import logging
import time
from typing import Optional, Sequence

import attrs
import trio

from actors.engine.messages import EventBatch
from actors.settings import CandlesSettings
from actors.store.base import Store
from exness_actors.candles import (
    INTERVAL_NAMES, MINUTE_NS, Candle, CandleBuilder, aggregate, bucket_start, interval_ns,
    merge_into,
)
from exness_actors.events import QuoteUpdated

__all__ = ["run", "CandlesHandle", "CandlesStatistics", "MAX_WRITE_ATTEMPTS"]

logger = logging.getLogger("exness.candles")

_DEFAULTS = CandlesSettings()   # [candles] as shipped
MAX_WRITE_ATTEMPTS = 5
FINAL_FLUSH_TIMEOUT_S = 5.0
_LARGER_INTERVALS = INTERVAL_NAMES[1:]


@attrs.define(slots=True, kw_only=True)
class CandlesStatistics:
    quotes: int                  # QuoteUpdated events seen
    candles_closed: int          # 1m candles closed
    candles_written: int         # 1m candle rows written to the store (the final flush included)
    flushes: int                 # store writes
    store_errors: int            # failed store writes (retried)
    pending_candles: int         # closed candles not yet in the store (store lag)
    last_flush_ms: float         # duration of the last store write
    live_updates_sent: int
    live_updates_dropped: int    # outbox full or gone
    inbox_depth: int


class CandlesHandle:
    """What ``task_status.started`` hands out: statistics, the live candles and merged reads."""

    def __init__(self, *, store: Store, outbox: Optional[trio.MemorySendChannel] = None,
                 flush_candles: int = _DEFAULTS.flush_candles,
                 flush_interval_s: float = _DEFAULTS.flush_interval_s,
                 inbox: Optional[trio.MemoryReceiveChannel] = None) -> None:
        self.store = store
        self.outbox = outbox
        self.flush_candles = flush_candles
        self.flush_interval_s = flush_interval_s
        self.builder = CandleBuilder("1m")
        self._inbox = inbox
        self._pending: list[Candle] = []
        self._inflight: list[Candle] = []
        # per symbol and larger interval: the closed 1m candles of the current bucket, folded
        self._running: dict[str, dict[str, Candle]] = {}
        # per symbol: (open_time, volume) of the candle restored from the store at start
        self._seeded: dict[str, tuple[int, int]] = {}
        self._now: Optional[int] = None
        self._checked_minute: Optional[int] = None
        self._wake = trio.Event()
        self._quotes = 0
        self._closed = 0
        self._written = 0
        self._flushes = 0
        self._errors = 0
        self._last_flush_ms = 0.0
        self._sent = 0
        self._dropped = 0

    # ------------------------------------------------------------------ public

    def statistics(self) -> CandlesStatistics:
        return CandlesStatistics(
            quotes=self._quotes, candles_closed=self._closed, candles_written=self._written,
            flushes=self._flushes, store_errors=self._errors,
            pending_candles=len(self._pending) + len(self._inflight),
            last_flush_ms=self._last_flush_ms, live_updates_sent=self._sent,
            live_updates_dropped=self._dropped,
            inbox_depth=self._inbox.statistics().current_buffer_used if self._inbox else 0)

    def live(self, symbol: str, interval: str = "1m") -> Optional[Candle]:
        """The open ``interval`` candle of ``symbol`` (``closed`` False), or None when there is
        none: no quote yet, or the bucket is over and no quote has opened the next one."""
        interval_ns(interval)
        live = self.builder.live(symbol)
        if interval == "1m":
            return live
        running = self._running.get(symbol, {}).get(interval)
        if live is not None:
            start = bucket_start(live.open_time, interval)
            if running is None or running.open_time != start:
                return Candle(symbol, interval, start, live.open, live.high, live.low, live.close,
                              live.volume, False)
            result = running.copy()
            merge_into(result, live)
            return result
        if running is not None and self._now is not None \
                and bucket_start(self._now, interval) == running.open_time:
            result = running.copy()
            result.closed = False
            return result
        return None

    async def read(self, symbol: str, interval: str, start: Optional[int] = None,
                   end: Optional[int] = None, limit: Optional[int] = None) -> list[Candle]:
        """Like :meth:`Store.read_candles`, with the candles not yet stored and the live one
        merged in (the last candle is the live one, ``closed`` False, when it is in range)."""
        interval_ns(interval)
        memory = [c for c in self._inflight if c.symbol == symbol]
        memory += [c for c in self._pending if c.symbol == symbol]
        live = self.builder.live(symbol)
        if live is not None:
            memory.append(live)
        if not memory:
            return await self.store.read_candles(symbol, interval, start, end, limit)
        first = min(candle.open_time for candle in memory)
        cut = bucket_start(first, interval)
        older: list[Candle] = []
        if start is None or start < cut:
            older = await self.store.read_candles(symbol, interval, start,
                                                  cut if end is None else min(end, cut), limit)
        if end is not None and end <= cut:
            return older
        prefix = await self.store.read_candles(symbol, "1m", cut, first) if cut < first else []
        recent = [candle for candle in aggregate(prefix + memory, interval)
                  if (start is None or candle.open_time >= start)
                  and (end is None or candle.open_time < end)]
        result = older + recent
        return result[-limit:] if limit is not None else result

    # ------------------------------------------------------------------ actor internals

    async def seed(self, symbols: list[str]) -> None:
        for symbol in symbols:
            last = await self.store.read_candles(symbol, "1m", limit=1)
            if not last:
                continue
            candle = last[0]
            self.builder.seed(candle)
            self._seeded[symbol] = (candle.open_time, candle.volume)
            week = bucket_start(candle.open_time, "1w")
            for earlier in await self.store.read_candles(symbol, "1m", week, candle.open_time):
                self._fold_running(earlier)
        logger.info("event=started symbols=%d seeded=%d", len(symbols), len(self._seeded))

    def on_batch(self, batch: EventBatch) -> None:
        """Feed one engine batch (synchronous: no await between the quotes of a batch)."""
        if not batch.items:
            return
        on_quote = self.builder.on_quote
        touched: dict[str, None] = {}
        quotes = 0
        for _seq, _ts, events in batch.items:
            for event in events:
                if type(event) is QuoteUpdated:
                    quotes += 1
                    closed = on_quote(event.symbol, event.bid, event.ts)
                    if closed:
                        self._on_closed(closed[0])
                    touched[event.symbol] = None
        self._quotes += quotes
        now = batch.items[-1][1]
        self._now = now
        minute = now // MINUTE_NS
        if self._checked_minute is None or minute > self._checked_minute:
            self._checked_minute = minute
            for candle in self.builder.close_until(now):
                self._on_closed(candle)
        if self.outbox is not None:
            for symbol in touched:
                live = self.builder.live(symbol)
                if live is not None:
                    self._publish(live)
        if len(self._pending) >= self.flush_candles:
            self._wake.set()

    def _on_closed(self, candle: Candle) -> None:
        self._fold_running(candle)
        seeded = self._seeded.pop(candle.symbol, None)
        if seeded == (candle.open_time, candle.volume):
            return   # the candle restored at start, closed unchanged: already stored
        self._closed += 1
        self._pending.append(candle)
        if self.outbox is not None:
            self._publish(candle)

    def _fold_running(self, candle: Candle) -> None:
        running = self._running.setdefault(candle.symbol, {})
        for interval in _LARGER_INTERVALS:
            start = bucket_start(candle.open_time, interval)
            current = running.get(interval)
            if current is not None and current.open_time == start:
                merge_into(current, candle)
            else:
                running[interval] = Candle(candle.symbol, interval, start, candle.open,
                                           candle.high, candle.low, candle.close, candle.volume,
                                           True)

    def _publish(self, candle: Candle) -> None:
        assert self.outbox is not None
        try:
            self.outbox.send_nowait(candle)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self._dropped += 1
        else:
            self._sent += 1

    async def flusher(self) -> None:
        """Write ``pending`` when enough is waiting or the flush interval has passed."""
        while True:
            with trio.move_on_after(self.flush_interval_s):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.flush()

    async def flush(self) -> None:
        failures = 0
        while self._pending:
            self._inflight, self._pending = self._pending, []
            started = time.perf_counter()
            try:
                written = await self.store.write_candles(self._inflight)
            except Exception as error:
                failures += 1
                self._errors += 1
                self._pending[:0] = self._inflight
                self._inflight = []
                if failures >= MAX_WRITE_ATTEMPTS:
                    logger.error("event=store_failed candles=%d attempts=%d error=%r",
                                 len(self._pending), failures, error)
                    raise
                retry_in = min(0.1 * 2 ** failures, 5.0)
                logger.warning("event=store_error candles=%d attempt=%d retry_in_s=%.1f error=%r",
                               len(self._pending), failures, retry_in, error)
                await trio.sleep(retry_in)
                continue
            self._inflight = []
            self._written += written
            self._flushes += 1
            self._last_flush_ms = (time.perf_counter() - started) * 1000
            logger.debug("event=flushed candles=%d ms=%.1f", written, self._last_flush_ms)

    async def final_flush(self) -> None:
        """Write everything in memory, the open candles too (a restart seeds from them)."""
        candles = self._inflight + self._pending
        candles += [live for live in map(self.builder.live, self.builder.symbols()) if live is not None]
        if not candles:
            return
        written = await self.store.write_candles(candles)
        self._written += written
        self._inflight, self._pending = [], []
        logger.info("event=final_flush candles=%d", written)


async def run(*, inbox: trio.MemoryReceiveChannel[EventBatch], store: Store, symbols: Sequence[str],
              settings: CandlesSettings = CandlesSettings(),
              outbox: Optional[trio.MemorySendChannel] = None,
              task_status: trio.TaskStatus[CandlesHandle] = trio.TASK_STATUS_IGNORED) -> None:
    """Build candles of ``symbols`` from the engine's batches until the inbox closes (see the
    module docstring).

    ``settings`` (``[candles]``): ``flush_candles`` and ``flush_interval_s`` tune the store writes.
    """
    handle = CandlesHandle(
        store=store, outbox=outbox, inbox=inbox,
        flush_candles=settings.flush_candles, flush_interval_s=settings.flush_interval_s)
    await handle.seed(list(symbols))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handle.flusher)
        task_status.started(handle)
        try:
            async for batch in inbox:
                handle.on_batch(batch)
        finally:
            with trio.move_on_after(FINAL_FLUSH_TIMEOUT_S) as scope:
                scope.shield = True
                await handle.final_flush()
            if scope.cancelled_caught:
                logger.error("event=final_flush_timeout pending=%d", len(handle._pending))
            stats = handle.statistics()
            logger.info("event=stopped quotes=%d candles_written=%d dropped=%d",
                        stats.quotes, stats.candles_written, stats.live_updates_dropped)
        nursery.cancel_scope.cancel()
