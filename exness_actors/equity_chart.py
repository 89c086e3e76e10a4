"""The backtest's ``equity.svg``: a chart a quant can read without opening the CSV.

Theory of operation
-------------------
:func:`equity_svg` draws two panels over one time axis (UTC):

* **equity** — the equity curve in USD with a labelled y axis (round steps of 1, 2 or 5 × 10^k
  cents) and grid, every trade marked: its open (a hollow triangle pointing up for a long, down for
  a short) and its close (a dot, green for a gain, red for a loss, a black cross for a liquidation);
* **drawdown** — how far equity stands below its running peak, in percent, shaded.

A title names the symbols and the run's dates; a subtitle gives start and end equity, return, maximum
drawdown and the trade counts from the summary, in the same units as ``summary.json``.

Invariants: money stays integer cents and drawdown integer parts per million up to the mapping to
pixels, which is integer arithmetic too — no float is ever made here. A curve of many points is
reduced to each pixel column's first, lowest, highest and last point, so spikes stay visible. At most
:data:`MAX_TRADE_MARKS` trades are marked (every k-th one, said in the legend).
"""

from __future__ import annotations

import datetime
from bisect import bisect_left
from typing import Any, Iterable, Optional, Sequence
from xml.sax.saxutils import escape

from exness_actors.money import CENT_DECIMALS, format_fixed
from exness_actors.reasons import CloseReason

__all__ = ["equity_svg", "round_ticks", "time_ticks", "summary_line", "drawdown_ppm", "equity_at",
           "MAX_TRADE_MARKS"]

WIDTH, HEIGHT = 960, 560
LEFT, RIGHT = 96, 24
EQUITY_TOP, EQUITY_BOTTOM = 84, 364
DRAWDOWN_TOP, DRAWDOWN_BOTTOM = 392, 492
MAX_TRADE_MARKS = 2000
_NS_PER_S = 1_000_000_000
_PPM = 1_000_000
#: time-axis steps in seconds: round minutes, hours and days
_TIME_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
                 86400, 172800, 604800, 1209600, 2592000)
_GREEN, _RED, _BLUE, _GREY = "#2ca02c", "#d62728", "#1f77b4", "#888888"


def equity_svg(points: Sequence[tuple[int, int]], trades: Iterable[Any] = (),
               summary: Optional[dict[str, Any]] = None) -> str:
    """The chart of ``points`` (ts ns, equity cents) with ``trades`` marked (objects with
    ``side, pnl, reason, opened_ts, closed_ts, symbol`` as :class:`~exness_actors.backtest.Trade`)
    and the subtitle from ``summary`` (the integer summary of :func:`~exness_actors.backtest.run_backtest`)."""
    trades = list(trades)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>']
    parts += _titles(points, trades, summary or {})
    if not points:
        parts.append(_text(WIDTH // 2, (EQUITY_TOP + EQUITY_BOTTOM) // 2, "no quotes: nothing to draw",
                           anchor="middle"))
        parts.append("</svg>\n")
        return "\n".join(parts)
    x_of = _time_scale(points[0][0], points[-1][0])
    parts += _time_grid(points[0][0], points[-1][0], x_of)
    parts += _equity_panel(points, trades, x_of)
    parts += _drawdown_panel(points, x_of)
    parts.append("</svg>\n")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------- axes


def round_ticks(low: int, high: int, most: int = 6) -> tuple[int, list[int]]:
    """A round step (1, 2 or 5 × 10^k units: cents, parts per million) and the ticks at its
    multiples that enclose ``low..high``, about ``most`` of them."""
    if high <= low:
        low, high = low - 100, high + 100
    step = _round_step(-(-(high - low) // most))
    first, last = low // step * step, -(-high // step) * step
    return step, list(range(first, last + 1, step))


def time_ticks(start_ns: int, end_ns: int, most: int = 8) -> tuple[int, list[int]]:
    """A round step in seconds and the tick times (ns, aligned to UTC multiples of the step) in
    ``start_ns..end_ns``."""
    span_s = max((end_ns - start_ns) // _NS_PER_S, 1)
    step = next((s for s in _TIME_STEPS_S if span_s // s <= most), _TIME_STEPS_S[-1])
    step_ns = step * _NS_PER_S
    first = -(-start_ns // step_ns) * step_ns
    return step, list(range(first, end_ns + 1, step_ns))


def _round_step(at_least: int) -> int:
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            if factor * magnitude >= at_least:
                return factor * magnitude
        magnitude *= 10


def _usd_label(cents: int, step: int) -> str:
    """``5,000`` when the step is whole dollars, else ``5,000.25``."""
    if step % 100 == 0:
        return f"{cents // 100:,}"
    sign = "-" if cents < 0 else ""
    whole, fraction = divmod(abs(cents), 100)
    return f"{sign}{whole:,}.{fraction:02d}"


def _percent_label(ppm: int, step: int) -> str:
    """A drawdown in parts per million as ``-1.5%`` with as many decimals as the step needs."""
    decimals = max(0, 4 - (len(str(step)) - 1))
    return "-" * (ppm > 0) + format_fixed(ppm // 10 ** (4 - decimals), decimals) + "%"


def _utc(ts_ns: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts_ns // _NS_PER_S, tz=datetime.timezone.utc)


def _time_label(ts_ns: int, step_s: int) -> str:
    """``12:30:15`` for steps under a minute, ``12:30`` under a day — and the date (``06-12``) on
    a midnight tick — else the date."""
    moment = _utc(ts_ns)
    if step_s < 60:
        return moment.strftime("%H:%M:%S")
    if step_s < 86400 and ts_ns % (86400 * _NS_PER_S):
        return moment.strftime("%H:%M")
    return moment.strftime("%m-%d")


def _time_scale(start_ns: int, end_ns: int) -> Any:
    span = max(end_ns - start_ns, 1)
    width = WIDTH - LEFT - RIGHT
    return lambda ts: LEFT + (ts - start_ns) * width // span


def _y_scale(low: int, high: int, top: int, bottom: int) -> Any:
    span = max(high - low, 1)
    return lambda value: bottom - (value - low) * (bottom - top) // span


# ---------------------------------------------------------------------------------------------- parts


def _titles(points: Sequence[tuple[int, int]], trades: list[Any], summary: dict[str, Any]) -> list[str]:
    symbols = sorted({t.symbol for t in trades})
    title = "Backtest equity" + (f" — {', '.join(symbols)}" if symbols else "")
    if points:
        first, last = _utc(points[0][0]), _utc(points[-1][0])
        title += f" — {first:%Y-%m-%d %H:%M:%S} to {last:%Y-%m-%d %H:%M:%S} UTC"
    parts = [_text(LEFT, 28, title, size=16, weight="bold")]
    if summary:
        parts.append(_text(LEFT, 50, summary_line(summary), size=12))
    return parts


def summary_line(summary: dict[str, Any]) -> str:
    """The chart's subtitle: start and end equity, return, drawdown and closes, as summary.json says them."""
    money = {key: format_fixed(summary[key], CENT_DECIMALS) for key in ("start_equity", "end_equity")}
    return (f"start {money['start_equity']} USD · end {money['end_equity']} USD · return "
            f"{summary['return_pct']}% · max drawdown {summary['max_drawdown_pct']}% · "
            f"{summary['trades']} closes: {summary['wins']} won, {summary['losses']} lost, "
            f"{summary['liquidations']} liquidated")


def _time_grid(start_ns: int, end_ns: int, x_of: Any) -> list[str]:
    step, ticks = time_ticks(start_ns, end_ns)
    parts = []
    for ts in ticks:
        x = x_of(ts)
        for top, bottom in ((EQUITY_TOP, EQUITY_BOTTOM), (DRAWDOWN_TOP, DRAWDOWN_BOTTOM)):
            parts.append(_line(x, top, x, bottom, "#e6e6e6"))
        parts.append(_line(x, DRAWDOWN_BOTTOM, x, DRAWDOWN_BOTTOM + 5, "black"))
        parts.append(_text(x, DRAWDOWN_BOTTOM + 18, _time_label(ts, step), anchor="middle"))
    first, last = _utc(start_ns), _utc(end_ns)
    days = f"{first:%Y-%m-%d}" + (f" to {last:%Y-%m-%d}" if last.date() != first.date() else "")
    parts.append(_text((LEFT + WIDTH - RIGHT) // 2, DRAWDOWN_BOTTOM + 40, f"time (UTC, {days})",
                       anchor="middle"))
    return parts


def _equity_panel(points: Sequence[tuple[int, int]], trades: list[Any], x_of: Any) -> list[str]:
    step, ticks = round_ticks(min(e for _, e in points), max(e for _, e in points))
    y_of = _y_scale(ticks[0], ticks[-1], EQUITY_TOP, EQUITY_BOTTOM)
    parts = []
    for value in ticks:
        y = y_of(value)
        parts.append(_line(LEFT, y, WIDTH - RIGHT, y, "#e6e6e6"))
        parts.append(_line(LEFT - 5, y, LEFT, y, "black"))
        parts.append(_text(LEFT - 8, y + 4, _usd_label(value, step), anchor="end"))
    parts.append(_axis_title("equity (USD)", EQUITY_TOP, EQUITY_BOTTOM))
    coords = " ".join(f"{x_of(ts)},{y_of(e)}" for ts, e in _envelope(points, x_of))
    parts.append(f'<polyline fill="none" stroke="{_BLUE}" stroke-width="1.5" points="{coords}"/>')
    parts += _trade_marks(points, trades, x_of, y_of)
    parts.append(_frame(EQUITY_TOP, EQUITY_BOTTOM))
    return parts


def _drawdown_panel(points: Sequence[tuple[int, int]], x_of: Any) -> list[str]:
    series = drawdown_ppm(points)
    step, ticks = round_ticks(0, max(max(d for _, d in series), 1), most=3)
    y_of = _y_scale(-ticks[-1], 0, DRAWDOWN_TOP, DRAWDOWN_BOTTOM)
    parts = []
    for value in ticks:
        y = y_of(-value)
        parts.append(_line(LEFT, y, WIDTH - RIGHT, y, "#e6e6e6"))
        parts.append(_line(LEFT - 5, y, LEFT, y, "black"))
        parts.append(_text(LEFT - 8, y + 4, _percent_label(value, step), anchor="end"))
    parts.append(_axis_title("drawdown", DRAWDOWN_TOP, DRAWDOWN_BOTTOM))
    outline = [(x_of(ts), y_of(-d)) for ts, d in _envelope(series, x_of)]
    area = [(outline[0][0], y_of(0)), *outline, (outline[-1][0], y_of(0))]
    parts.append(f'<polygon fill="{_RED}" fill-opacity="0.3" stroke="{_RED}" stroke-width="1" '
                 f'points="{" ".join(f"{x},{y}" for x, y in area)}"/>')
    parts.append(_frame(DRAWDOWN_TOP, DRAWDOWN_BOTTOM))
    return parts


def drawdown_ppm(points: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """(ts, how far equity is below its running peak, in parts per million of the peak; rounded up)."""
    peak = points[0][1]
    series = []
    for ts, equity in points:
        peak = max(peak, equity)
        series.append((ts, -(-(peak - equity) * _PPM // peak) if peak > 0 else 0))
    return series


def _envelope(points: Sequence[tuple[int, int]], x_of: Any) -> list[tuple[int, int]]:
    """Per pixel column: its first, extreme and last points, in time order (spikes survive)."""
    out: list[tuple[int, int]] = []
    column: list[tuple[int, int]] = []
    for point in points:
        if column and x_of(point[0]) != x_of(column[0][0]):
            out += _column_points(column)
            column = []
        column.append(point)
    out += _column_points(column)
    return out


def equity_at(points: Sequence[tuple[int, int]], ts: int, times: Optional[Sequence[int]] = None) -> int:
    """The equity of the first point at or after ``ts`` (the last point's after the end)."""
    times = times if times is not None else [t for t, _ in points]
    return points[min(bisect_left(times, ts), len(points) - 1)][1]


def _column_points(column: list[tuple[int, int]]) -> list[tuple[int, int]]:
    if len(column) <= 4:
        return column
    low = min(column, key=lambda point: point[1])
    high = max(column, key=lambda point: point[1])
    middle = sorted({low, high})
    return [column[0], *middle, column[-1]]


def _trade_marks(points: Sequence[tuple[int, int]], trades: list[Any], x_of: Any, y_of: Any) -> list[str]:
    every = -(-len(trades) // MAX_TRADE_MARKS) if trades else 1
    times = [ts for ts, _ in points]

    def at(ts: int) -> tuple[int, int]:
        return x_of(ts), y_of(equity_at(points, ts, times))

    parts = []
    for trade in trades[::every]:
        if trade.opened_ts >= times[0]:      # before the first quote only when unknown (0)
            x, y = at(trade.opened_ts)
            tip = -6 if trade.side == "buy" else 6
            parts.append(f'<path d="M{x},{y + tip} l-4,{-tip} h8 z" fill="none" stroke="{_BLUE}"/>')
        x, y = at(trade.closed_ts)
        parts.append(_close_mark(x, y, trade))
    parts.append(_legend(every))
    return parts


def _close_mark(x: int, y: int, trade: Any) -> str:
    if trade.reason == CloseReason.LIQUIDATION.value:
        return f'<path d="M{x - 4},{y - 4} l8,8 m0,-8 l-8,8" stroke="black" stroke-width="2"/>'
    colour = _GREEN if trade.pnl > 0 else _RED if trade.pnl < 0 else _GREY
    return f'<circle cx="{x}" cy="{y}" r="3.5" fill="{colour}"/>'


def _legend(every: int) -> str:
    y = EQUITY_TOP - 12
    items = [
        f'<line x1="{LEFT}" y1="{y - 4}" x2="{LEFT + 18}" y2="{y - 4}" stroke="{_BLUE}" stroke-width="1.5"/>',
        _text(LEFT + 22, y, "equity"),
        f'<path d="M{LEFT + 86},{y - 10} l-4,6 h8 z" fill="none" stroke="{_BLUE}"/>',
        f'<path d="M{LEFT + 98},{y + 2} l-4,-6 h8 z" fill="none" stroke="{_BLUE}"/>',
        _text(LEFT + 106, y, "open long / short"),
        f'<circle cx="{LEFT + 232}" cy="{y - 4}" r="3.5" fill="{_GREEN}"/>',
        f'<circle cx="{LEFT + 242}" cy="{y - 4}" r="3.5" fill="{_RED}"/>',
        _text(LEFT + 250, y, "close with a gain / loss"),
        f'<path d="M{LEFT + 404},{y - 8} l8,8 m0,-8 l-8,8" stroke="black" stroke-width="2"/>',
        _text(LEFT + 418, y, "liquidation"),
    ]
    if every > 1:
        items.append(_text(WIDTH - RIGHT, y, f"(1 trade in {every} marked)", anchor="end"))
    return "".join(items)


def _frame(top: int, bottom: int) -> str:
    return (f'<rect x="{LEFT}" y="{top}" width="{WIDTH - LEFT - RIGHT}" height="{bottom - top}" '
            f'fill="none" stroke="black"/>')


def _axis_title(label: str, top: int, bottom: int) -> str:
    y = (top + bottom) // 2
    return (f'<text x="18" y="{y}" text-anchor="middle" transform="rotate(-90 18 {y})">'
            f'{escape(label)}</text>')


def _line(x1: int, y1: int, x2: int, y2: int, colour: str) -> str:
    return f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="{colour}"/>'


def _text(x: int, y: int, text: str, *, anchor: str = "start", size: int = 12, weight: str = "normal") -> str:
    return (f'<text x="{x}" y="{y}" text-anchor="{anchor}" font-size="{size}" font-weight="{weight}">'
            f'{escape(text)}</text>')
