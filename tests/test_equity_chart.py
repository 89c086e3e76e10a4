"""The backtest's equity.svg: labelled axes in USD and UTC, a drawdown panel, trade marks, exact
integer arithmetic all the way to the pixels."""

from __future__ import annotations

import ast
import inspect
import xml.etree.ElementTree as ElementTree

import pytest

from exness_actors import equity_chart
from exness_actors.backtest import Trade, write_outputs
from exness_actors.equity_chart import MAX_TRADE_MARKS, equity_svg, round_ticks, time_ticks
from exness_actors.instruments import DEFAULT_INSTRUMENTS, CoreConfig

SVG = "{http://www.w3.org/2000/svg}"
DAY_NS = 86_400 * 10**9
START_NS = 1_718_064_000 * 10**9          # 2024-06-11 00:00:00 UTC


def _trade(pnl: int, opened_ts: int, closed_ts: int, *, side: str = "buy", reason: str = "manual") -> Trade:
    return Trade(position_id=1, symbol="BTCUSDT", side=side, qty=1, open_price=1, close_price=1, margin=10_000,
                 pnl=pnl, reason=reason, opened_ts=opened_ts, closed_ts=closed_ts)


def _summary(**overrides: object) -> dict:
    summary = {"start_equity": 500_000, "end_equity": 450_000, "return_pct": "-10.00",
               "max_drawdown_pct": "20.00", "trades": 3, "wins": 1, "losses": 2, "liquidations": 1}
    summary.update(overrides)
    return summary


def _texts(svg: str) -> list[str]:
    return [element.text for element in ElementTree.fromstring(svg).iter(f"{SVG}text")]


def _elements(svg: str, tag: str) -> list[ElementTree.Element]:
    return list(ElementTree.fromstring(svg).iter(f"{SVG}{tag}"))


# ------------------------------------------------------------------------------------ axes

@pytest.mark.parametrize("low, high, most, step, ticks", [
    (0, 1_000, 5, 200, [0, 200, 400, 600, 800, 1_000]),
    (499_410, 500_000, 6, 100, list(range(499_400, 500_001, 100))),      # whole dollars around 5,000
    (400_000, 600_000, 6, 50_000, [400_000, 450_000, 500_000, 550_000, 600_000]),
    (-350, 250, 6, 100, [-400, -300, -200, -100, 0, 100, 200, 300]),
    (1_000, 1_000, 6, 50, [900, 950, 1_000, 1_050, 1_100]),            # a flat curve still has an axis
])
def test_round_ticks_enclose_the_range_at_round_steps(low, high, most, step, ticks):
    assert round_ticks(low, high, most) == (step, ticks)


@pytest.mark.parametrize("start, end, step_s, count", [
    (START_NS, START_NS + 300 * 10**9, 60, 6),                 # 5 minutes: every minute
    (START_NS + 7 * 10**9, START_NS + 60 * 10**9, 10, 6),      # aligned to round seconds: 10..60
    (START_NS, START_NS + 3 * DAY_NS, 43_200, 7),              # 3 days: every 12 hours
])
def test_time_ticks_are_round_utc_times(start, end, step_s, count):
    step, ticks = time_ticks(start, end)
    assert step == step_s and len(ticks) == count
    assert all(tick % (step_s * 10**9) == 0 and start <= tick <= end for tick in ticks)


# ------------------------------------------------------------------------------------ the chart

def _two_day_run() -> tuple[list, list]:
    hour = 3_600 * 10**9
    equity = [500_000, 520_000, 600_000, 480_000, 450_000]    # peak 6,000, then 25% down
    points = [(START_NS + k * 12 * hour, value) for k, value in enumerate(equity)]
    trades = [_trade(20_000, START_NS, START_NS + 12 * hour),
              _trade(-12_000, START_NS + 12 * hour, START_NS + 36 * hour, side="sell"),
              _trade(-10_000, START_NS + 36 * hour, START_NS + 48 * hour, reason="liquidation")]
    return points, trades


def test_the_chart_has_a_title_labelled_axes_and_the_summary():
    points, trades = _two_day_run()
    texts = _texts(equity_svg(points, trades, _summary()))
    assert texts[0] == "Backtest equity — BTCUSDT — 2024-06-11 00:00:00 to 2024-06-13 00:00:00 UTC"
    assert texts[1] == ("start 5000.00 USD · end 4500.00 USD · return -10.00% · max drawdown 20.00% · "
                        "3 closes: 1 won, 2 lost, 1 liquidated")
    assert {"equity (USD)", "drawdown", "time (UTC, 2024-06-11 to 2024-06-13)"} <= set(texts)
    assert {"4,500", "5,000", "5,500", "6,000"} <= set(texts)                 # USD ticks
    assert {"0%", "-10%", "-20%", "-30%"} <= set(texts)                        # drawdown ticks
    assert {"06-11", "06:00", "12:00", "06-12", "06-13"} <= set(texts)         # UTC times, dates at midnight


def test_every_trade_is_marked_open_and_close():
    points, trades = _two_day_run()
    svg = equity_svg(points, trades, _summary())
    closes = [c.get("fill") for c in _elements(svg, "circle")]
    assert closes.count("#2ca02c") == 2 and closes.count("#d62728") == 2    # one each in the legend
    marks = [p.get("d") for p in _elements(svg, "path")]
    assert sum(d.endswith("z") for d in marks) == 3 + 2                       # opens, and the legend's
    assert sum("m0,-8" in d for d in marks) == 1 + 1                          # the liquidation's cross


def test_the_drawdown_panel_is_shaded_down_to_its_deepest_point():
    points, trades = _two_day_run()
    svg = equity_svg(points, trades, _summary())
    (area,) = _elements(svg, "polygon")
    ys = [int(pair.split(",")[1]) for pair in area.get("points").split()]
    zero_y, deepest = ys[0], max(ys)
    assert ys[-1] == zero_y and deepest > zero_y
    # 25% down on a -30%..0% axis: five sixths of the panel's height below the zero line at its top
    height = equity_chart.DRAWDOWN_BOTTOM - equity_chart.DRAWDOWN_TOP
    assert zero_y == equity_chart.DRAWDOWN_TOP and deepest == equity_chart.DRAWDOWN_BOTTOM - height * 5 // 30


def test_a_long_curve_is_reduced_per_pixel_column_and_keeps_its_spikes():
    points = [(START_NS + k * 10**9, 500_000 + (k % 7) * 10) for k in range(100_000)]
    points[50_000] = (points[50_000][0], 100_000)                  # one crash for a second
    svg = equity_svg(points)
    (line,) = _elements(svg, "polyline")
    coords = line.get("points").split()
    assert len(coords) <= 4 * (equity_chart.WIDTH - equity_chart.LEFT - equity_chart.RIGHT + 1)
    assert max(int(pair.split(",")[1]) for pair in coords) == equity_chart.EQUITY_BOTTOM   # the crash


def test_many_trades_are_thinned_and_the_legend_says_so():
    points = [(START_NS + k * 10**9, 500_000) for k in range(100)]
    trades = [_trade(1, START_NS, START_NS + k * 10**9) for k in range(2 * MAX_TRADE_MARKS + 1)]
    svg = equity_svg(points, trades)
    assert "(1 trade in 3 marked)" in _texts(svg)
    assert len(_elements(svg, "circle")) == -(-len(trades) // 3) + 2


def test_no_quotes_still_gives_a_valid_chart():
    svg = equity_svg([], [], _summary(trades=0, wins=0, losses=0, liquidations=0))
    assert "no quotes: nothing to draw" in _texts(svg)


def test_the_chart_makes_no_float():
    tree = ast.parse(inspect.getsource(equity_chart))
    floats = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Constant) and type(node.value) is float]
    divisions = [node.lineno for node in ast.walk(tree) if isinstance(node, (ast.Div, ast.BinOp))
                 and isinstance(getattr(node, "op", node), ast.Div)]
    calls = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Name) and node.id == "float"]
    assert floats == divisions == calls == []


def test_write_outputs_draws_the_chart_with_the_trades(tmp_path):
    from exness_actors.backtest import load_ticks, run_backtest
    from exness_actors.strategies.examples import MovingAverageCross
    from pathlib import Path
    config = CoreConfig(instruments=DEFAULT_INSTRUMENTS)
    sample = Path(__file__).resolve().parents[1] / "actors" / "data" / "sample_ticks.csv"
    result = run_backtest(load_ticks(sample, config), MovingAverageCross, config=config)
    write_outputs(result, tmp_path, config)
    svg = (tmp_path / "equity.svg").read_text()
    texts = _texts(svg)
    assert "equity (USD)" in texts and "time (UTC, 2024-06-11)" in texts
    assert texts[1].startswith("start 5000.00 USD") and f"{result.summary['trades']} closes" in texts[1]
    assert len([c for c in _elements(svg, "circle")]) == len(result.trades) + 2
