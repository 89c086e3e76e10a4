"""Larger-interval candles for the WebSocket server, folded from the 1m candles.

Theory of operation
-------------------
The candles actor publishes, per symbol, each 1m candle as it closes and a copy of the live 1m
candle after every batch with quotes (``actors.history.candles``). An :class:`IntervalFolder` keeps, per
larger interval, the **base**: the closed 1m candles of the interval's current bucket folded
together. Then:

* a live 1m candle → the interval's live candle is the base with the live minute merged in
  (``closed`` False);
* a closed 1m candle → folded into the base; when it was the bucket's last minute, the base is
  the bucket's final candle (``closed`` True) and the next bucket starts empty;
* a 1m candle of a later bucket while a base is open (the bucket's last minutes had no quotes)
  → the base is published as closed first.

A server that starts mid-bucket seeds the bases from the 1m candles already stored for the
current week (:meth:`IntervalFolder.seeded`), so its 1h/4h/1d/1w candles are whole, not partial.

Pure: no I/O, no clock. Invariants: a base holds only closed minutes of its own bucket; the
candles returned for one interval have non-decreasing ``open_time``.
"""

from __future__ import annotations

from typing import Iterable, Optional

from exness_actors.candles import INTERVAL_NAMES, MINUTE_NS, Candle, bucket_start, merge_into

__all__ = ["IntervalFolder", "LARGER_INTERVALS"]

LARGER_INTERVALS = INTERVAL_NAMES[1:]


def _start(candle: Candle, interval: str, open_time: int) -> Candle:
    return Candle(candle.symbol, interval, open_time, candle.open, candle.high, candle.low,
                  candle.close, candle.volume, False)


class IntervalFolder:
    """One symbol's running candles of every interval above 1m. See the module docstring."""

    __slots__ = ("bases",)

    def __init__(self) -> None:
        self.bases: dict[str, Optional[Candle]] = {interval: None for interval in LARGER_INTERVALS}

    @classmethod
    def seeded(cls, first_open_time: int, earlier: Iterable[Candle]) -> "IntervalFolder":
        """A folder whose bases hold the closed minutes before ``first_open_time`` (1m candles of
        the current week in time order, e.g. from ``CandlesHandle.read``)."""
        folder = cls()
        minutes = [minute for minute in earlier if minute.closed and minute.open_time < first_open_time]
        for interval in LARGER_INTERVALS:
            start = bucket_start(first_open_time, interval)
            for minute in minutes:
                if minute.open_time < start:
                    continue
                base = folder.bases[interval]
                if base is None:
                    folder.bases[interval] = _start(minute, interval, start)
                else:
                    merge_into(base, minute)
                    base.closed = False
        return folder

    def on_candle(self, candle: Candle) -> list[tuple[str, Candle]]:
        """The larger-interval candles to publish for one 1m candle, in order."""
        out: list[tuple[str, Candle]] = []
        bases = self.bases
        for interval in LARGER_INTERVALS:
            start = bucket_start(candle.open_time, interval)
            base = bases[interval]
            if base is not None and base.open_time != start:
                base.closed = True              # the bucket ended in a quiet gap
                out.append((interval, base))
                base = bases[interval] = None
            if candle.closed:
                if base is None:
                    base = bases[interval] = _start(candle, interval, start)
                else:
                    merge_into(base, candle)
                    base.closed = False
                if bucket_start(candle.open_time + MINUTE_NS, interval) != start:
                    base.closed = True          # that was the bucket's last minute
                    out.append((interval, base))
                    bases[interval] = None
                continue
            if base is None:
                current = _start(candle, interval, start)
            else:
                current = base.copy()
                merge_into(current, candle)
                current.closed = False
            out.append((interval, current))
        return out
