"""Example strategies for ``exness-actors backtest``.

A strategy is a callable ``strategy(view) -> list[command]`` (see
:class:`exness_actors.backtest.StrategyView`). Keep per-run state on the strategy object (a class
with ``__call__``; the backtest instantiates a class it is given) or in ``view.state``, never in
module globals, so that two runs of the same inputs are identical. All arithmetic is on integers.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Optional

__all__ = ["MovingAverageCross", "moving_average_cross", "buy_and_hold"]


class _Averages:
    """Running sums of the last ``fast`` and ``slow`` bids of one symbol."""

    __slots__ = ("fast_window", "slow_window", "fast_sum", "slow_sum", "prices", "above")

    def __init__(self, fast: int, slow: int) -> None:
        self.fast_window = fast
        self.slow_window = slow
        self.fast_sum = 0
        self.slow_sum = 0
        self.prices: deque[int] = deque()
        self.above: bool | None = None   # was the fast average above the slow one last time?

    def push(self, price: int) -> None:
        prices = self.prices
        prices.append(price)
        self.fast_sum += price
        self.slow_sum += price
        if len(prices) > self.fast_window:
            self.fast_sum -= prices[-self.fast_window - 1]
        if len(prices) > self.slow_window:
            self.slow_sum -= prices.popleft()

    def ready(self) -> bool:
        return len(self.prices) >= self.slow_window


class MovingAverageCross:
    """Long when the fast moving average of the bid crosses above the slow one; flat when it
    crosses back below. Each entry is a market buy with ``margin`` (decimal string, USD) at
    ``leverage`` and a stop loss ``stop_loss_bps`` below the bid."""

    def __init__(self, fast: int = 20, slow: int = 100, margin: str = "100.00", leverage: int = 10,
                 stop_loss_bps: int = 50) -> None:
        if not 0 < fast < slow:
            raise ValueError("need 0 < fast < slow")
        if not 0 < stop_loss_bps < 10_000:
            raise ValueError("stop_loss_bps must be in 1..9999")
        self.fast = fast
        self.slow = slow
        self.margin = margin
        self.leverage = leverage
        self.stop_loss_bps = stop_loss_bps
        self._averages: dict[str, _Averages] = {}

    def __call__(self, view: Any) -> list[Any]:
        averages = self._averages.get(view.symbol)
        if averages is None:
            averages = self._averages[view.symbol] = _Averages(self.fast, self.slow)
        averages.push(view.bid)
        if not averages.ready():
            return []
        # fast_sum / fast > slow_sum / slow, compared exactly
        above = averages.fast_sum * self.slow > averages.slow_sum * self.fast
        previous, averages.above = averages.above, above
        if previous is None or previous == above:
            return []
        longs = [p for p in view.positions_for() if p.is_long]
        if above and not longs:
            stop_loss = view.bid * (10_000 - self.stop_loss_bps) // 10_000
            return [view.market("buy", self.margin, self.leverage, stop_loss=stop_loss)]
        if not above:
            return [view.close(p.id) for p in longs]
        return []


def moving_average_cross(view: Any) -> list[Any]:
    """:class:`MovingAverageCross` with its defaults, as a plain function (state in ``view.state``)."""
    strategy: Optional[MovingAverageCross] = view.state.get("moving_average_cross")
    if strategy is None:
        strategy = view.state["moving_average_cross"] = MovingAverageCross()
    return strategy(view)


def buy_and_hold(view: Any) -> list[Any]:
    """One long of 100.00 USD margin at leverage 10 on the first quote of each symbol."""
    seen = view.state.setdefault("buy_and_hold", set())
    if view.symbol in seen:
        return []
    seen.add(view.symbol)
    return [view.market("buy", "100.00", 10)]
