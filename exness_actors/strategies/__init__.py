"""Example backtest strategies (see :mod:`exness_actors.backtest` for the protocol)."""

from exness_actors.strategies.examples import MovingAverageCross, buy_and_hold, moving_average_cross

__all__ = ["MovingAverageCross", "moving_average_cross", "buy_and_hold"]
