"""Candles: OHLC of the bid with tick volume, built from the quotes the engine trades on.

Theory of operation
-------------------
A candle covers one **bucket** of time: ``[open_time, open_time + interval)``, integer ns.
``open``/``high``/``low``/``close`` are the first, highest, lowest and last **bid** (in ticks,
after the engine's spread markup, i.e. the ``QuoteUpdated`` price) of the bucket; ``volume`` is
the **tick volume**, the number of quotes in the bucket (MetaTrader's convention: a CFD broker
has no traded volume of its own to show).

Bucket alignment (UTC, from the Unix epoch):

* ``1m 5m 15m 30m 1h 4h 1d``: ``open_time = ts − ts mod interval`` — minutes, hours and days
  start where a UTC clock says they do (4h buckets start at 00, 04, 08, … UTC);
* ``1w``: weeks start on **Monday 00:00 UTC**, as on MetaTrader and Binance. The epoch
  (1970-01-01) was a Thursday, so the week buckets are shifted by :data:`WEEK_OFFSET_NS`
  (4 days): ``open_time = ts − (ts − 4 days) mod 1 week``. The first Monday after the epoch is
  1970-01-05, and the bucket holding ts 0 opens on Monday 1969-12-29 (a negative open_time).

Every interval's buckets nest inside the next larger one's (a week starts on a day boundary,
which is a 4h boundary, …), so any candle can be folded from the 1m candles of its bucket:
:func:`aggregate`. Only 1m candles are stored; larger ones are folded when served.

:class:`CandleBuilder` keeps the open candle per symbol. A quote inside the open candle's bucket
updates it in place (no allocation: this is the per-quote hot path); a quote in a later bucket
closes the open candle — it is returned — and opens a new one. Gaps produce no empty candles:
a bucket without quotes has no candle. A quote whose ts is *earlier* than the open candle's
bucket (which the engine's sequencer never produces: its ts never goes back) is counted in the
open candle rather than reopening a closed one.

Invariants: ``low <= open, close <= high``; ``volume >= 1``; ``open_time`` is a bucket start of
``interval``; the builder's candles for one symbol come out in strictly increasing open_time.
"""

from __future__ import annotations

from typing import Iterable, Optional

import attrs

__all__ = [
    "Candle", "CandleBuilder", "INTERVALS", "INTERVAL_NAMES", "WEEK_OFFSET_NS", "MINUTE_NS",
    "bucket_start", "interval_ns", "aggregate", "merge_into",
]

MINUTE_NS = 60 * 1_000_000_000
_HOUR = 60 * MINUTE_NS
_DAY = 24 * _HOUR
_WEEK = 7 * _DAY

#: The served intervals and their length in ns, smallest first.
INTERVALS: dict[str, int] = {
    "1m": MINUTE_NS, "5m": 5 * MINUTE_NS, "15m": 15 * MINUTE_NS, "30m": 30 * MINUTE_NS,
    "1h": _HOUR, "4h": 4 * _HOUR, "1d": _DAY, "1w": _WEEK,
}
INTERVAL_NAMES: tuple[str, ...] = tuple(INTERVALS)

#: Weeks open on Monday 00:00 UTC; 1970-01-01 (ts 0) was a Thursday, 4 days after a Monday.
WEEK_OFFSET_NS = 4 * _DAY
_OFFSETS: dict[str, int] = {"1w": WEEK_OFFSET_NS}


def interval_ns(interval: str) -> int:
    """The length of ``interval`` in ns; ``ValueError`` naming the accepted values otherwise."""
    try:
        return INTERVALS[interval]
    except (KeyError, TypeError):
        raise ValueError(f"interval must be one of {', '.join(INTERVAL_NAMES)}, not {interval!r}") from None


def bucket_start(ts: int, interval: str) -> int:
    """The open_time of the ``interval`` bucket holding ``ts`` (see the module docstring)."""
    length = interval_ns(interval)
    return ts - (ts - _OFFSETS.get(interval, 0)) % length


@attrs.define(slots=True, eq=True, repr=True)
class Candle:
    """One candle of ``symbol``. Prices in ticks, ``open_time`` in ns, ``volume`` = quote count.

    ``closed`` says whether the bucket is over (False for the live, still-open candle). It is
    left out of equality: two candles are equal when they hold the same data.
    """
    symbol: str
    interval: str
    open_time: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    closed: bool = attrs.field(default=True, eq=False)

    def copy(self) -> "Candle":
        return Candle(self.symbol, self.interval, self.open_time, self.open, self.high, self.low,
                      self.close, self.volume, self.closed)

    def as_tuple(self) -> tuple[int, int, int, int, int, int]:
        """``(open_time, open, high, low, close, volume)`` — the stored/served row."""
        return (self.open_time, self.open, self.high, self.low, self.close, self.volume)


_NOTHING_CLOSED: tuple[Candle, ...] = ()


class CandleBuilder:
    """The open candle per symbol, fed one quote at a time. See the module docstring.

    ``interval`` is ``"1m"`` in production (only 1m candles are stored); building a larger
    interval directly is what the property tests compare :func:`aggregate` against.
    """

    __slots__ = ("interval", "_length", "_offset", "_open")

    def __init__(self, interval: str = "1m") -> None:
        self.interval = interval
        self._length = interval_ns(interval)
        self._offset = _OFFSETS.get(interval, 0)
        self._open: dict[str, Candle] = {}

    def on_quote(self, symbol: str, bid: int, ts: int) -> tuple[Candle, ...]:
        """Count one quote. Returns the candle it closed — ``(candle,)`` — or ``()``.

        At most one candle closes per quote (one open candle per symbol). The empty result is a
        shared tuple, so the common case allocates nothing.
        """
        candle = self._open.get(symbol)
        if candle is not None and ts - candle.open_time < self._length:
            if bid > candle.high:
                candle.high = bid
            elif bid < candle.low:
                candle.low = bid
            candle.close = bid
            candle.volume += 1
            return _NOTHING_CLOSED
        length = self._length
        self._open[symbol] = Candle(symbol, self.interval, ts - (ts - self._offset) % length,
                                    bid, bid, bid, bid, 1, False)
        if candle is None:
            return _NOTHING_CLOSED
        candle.closed = True
        return (candle,)

    def close_until(self, ts: int) -> list[Candle]:
        """Close (and return) every open candle whose bucket ended at or before ``ts``.

        Lets a quiet symbol's last candle be stored once time has moved on elsewhere, instead of
        waiting for its next quote.
        """
        length = self._length
        ended = [symbol for symbol, candle in self._open.items() if ts - candle.open_time >= length]
        closed = []
        for symbol in ended:
            candle = self._open.pop(symbol)
            candle.closed = True
            closed.append(candle)
        return closed

    def live(self, symbol: str) -> Optional[Candle]:
        """A copy of the open candle of ``symbol`` (``closed`` False), or None."""
        candle = self._open.get(symbol)
        return None if candle is None else candle.copy()

    def live_for(self, symbol: str, interval: str,
                 closed_1m_in_bucket: Iterable[Candle] = ()) -> Optional[Candle]:
        """The live ``interval`` candle: the closed candles of its bucket folded with the open one.

        ``closed_1m_in_bucket`` are the already closed candles (from the store or memory) of the
        bucket the open candle is in; candles of other buckets are ignored. None when the symbol
        has no open candle.
        """
        candle = self._open.get(symbol)
        if candle is None:
            return None
        start = bucket_start(candle.open_time, interval)
        parts = [c for c in closed_1m_in_bucket
                 if c.symbol == symbol and bucket_start(c.open_time, interval) == start
                 and c.open_time < candle.open_time]
        parts.append(candle)
        (result,) = aggregate(parts, interval)
        result.closed = False
        return result

    def seed(self, candle: Candle) -> None:
        """Make ``candle`` (e.g. the last one stored before a restart) the open candle again, so
        quotes in the same bucket continue it instead of overwriting it with a partial one."""
        if candle.interval != self.interval:
            raise ValueError(f"seed candle interval {candle.interval!r} is not {self.interval!r}")
        seeded = candle.copy()
        seeded.closed = False
        self._open[candle.symbol] = seeded

    def symbols(self) -> list[str]:
        return list(self._open)


def merge_into(target: Candle, later: Candle) -> None:
    """Fold ``later`` (a candle of the same bucket, after everything in ``target``) into ``target``."""
    if later.high > target.high:
        target.high = later.high
    if later.low < target.low:
        target.low = later.low
    target.close = later.close
    target.volume += later.volume
    target.closed = later.closed


def aggregate(candles: Iterable[Candle], interval: str) -> list[Candle]:
    """Fold candles of one symbol (1m, or any interval no larger than ``interval``) into
    ``interval`` candles, ascending by open_time. The input is sorted first; it must not hold
    two candles of the same open_time. A result is ``closed`` when its last part is.
    """
    length = interval_ns(interval)
    offset = _OFFSETS.get(interval, 0)
    ordered = sorted(candles, key=_open_time)
    result: list[Candle] = []
    current: Optional[Candle] = None
    symbol: Optional[str] = None
    previous_time: Optional[int] = None
    for part in ordered:
        if symbol is None:
            symbol = part.symbol
        elif part.symbol != symbol:
            raise ValueError(f"cannot aggregate candles of {symbol} and {part.symbol} together")
        if INTERVALS[part.interval] > length:
            raise ValueError(f"cannot fold {part.interval} candles into {interval} candles")
        if part.open_time == previous_time:
            raise ValueError(f"two {symbol} candles open at {part.open_time}")
        previous_time = part.open_time
        start = part.open_time - (part.open_time - offset) % length
        if current is not None and current.open_time == start:
            merge_into(current, part)
            continue
        current = Candle(part.symbol, interval, start, part.open, part.high, part.low,
                         part.close, part.volume, part.closed)
        result.append(current)
    return result


def _open_time(candle: Candle) -> int:
    return candle.open_time
