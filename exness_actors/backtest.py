"""Backtests: a strategy trading recorded quotes on the same core as live trading.

Theory of operation
-------------------
:func:`load_ticks` turns a recording into :class:`Tick` s (``ts_ns, symbol, bid, ask`` with raw
prices in integer ticks): either recorded Binance lines (``{"ts": ms, "stream": ..., "data": ...}``,
bookTicker or aggTrade, parsed by :mod:`exness_actors.feed_format`) or a CSV with a header
``timestamp,symbol,bid,ask`` (timestamp in ms; without a ``symbol`` column every row is ``symbol``).
Prices are parsed exactly from their decimal text — never through ``float`` — the bid rounded down
and the ask up to the tick. Lines that cannot become a quote are skipped and counted in
:class:`LoadStats`.

:func:`run_backtest` creates one account in a fresh :class:`~exness_actors.engine.Engine`, then for
each tick submits a :class:`~exness_actors.commands.Quote` (the engine applies the spread) and, when
the engine accepted it, calls ``strategy(view)``. The strategy returns trading commands (built with
the :class:`StrategyView` helpers); they are submitted right after the quote, in order, the k-th at
``quote ts + k`` ns. Everything is sequenced by :meth:`Engine.submit`, exactly as the engine actor
sequences live inputs, so the same inputs give the same fills, events and state hash.

With ``journal_dir`` every applied input is appended to a journal (``codec.encode`` of the stamped
command) with a checkpoint ``engine_checkpoint(engine)`` at every multiple of
:data:`~exness_actors.engine.HASH_BLOCK` (as the engine actor writes them) and one at the end;
``core-config.msgpack`` goes into the journal's parent directory, so ``exness-actors replay DIR``
(``DIR/journal``) reproduces the run bit for bit.

A strategy is any callable ``strategy(view) -> list[command] | None``; a class is instantiated with
no arguments by :func:`resolve_strategy`. Per-run state lives on the strategy object or in
``view.state`` (a dict that is fresh for every run), never in module globals.

This module is pure in the sense of DESIGN.md §1: no clock, no network, no randomness; it only
reads and writes the files it is given. Plotting with matplotlib belongs to the caller (the core may
not import it): :func:`write_outputs` takes an optional ``plot(points, path)`` callable and always
writes a dependency-free ``equity.svg``.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Optional, Union

import attrs
import msgpack

from exness_actors import codec
from exness_actors.commands import (
    AccountId, AddMargin, CancelOrder, ClosePosition, Command, CreateAccount, ModifyOrder, ModifyPosition,
    OpenAccount, OrderId, PlaceOrder, PositionId, Quote,
)
from exness_actors.engine import HASH_BLOCK, Engine
from exness_actors.equity_chart import equity_svg
from exness_actors.events import (
    BalanceChanged, CommandRejected, Event, MarginCall, OrderRejected, PositionClosed, PositionOpened,
    QuoteRejected, StopOut,
)
from exness_actors.feed_format import MalformedTick, parse_recorded_line, price_to_ticks
from exness_actors.instruments import CoreConfig, Instrument
from exness_actors.journal import DEFAULT_SEGMENT_BYTES, JournalWriter, encode_frame, list_segments
from exness_actors.money import CENT_DECIMALS, format_fixed, parse_fixed
from exness_actors.reasons import BalanceKind, CloseReason
from exness_actors.replay import engine_checkpoint

__all__ = [
    "Tick", "LoadStats", "load_ticks", "StrategyView", "Strategy", "resolve_strategy",
    "Trade", "BacktestResult", "run_backtest", "equity_metrics", "percent", "write_outputs",
    "summary_json", "CORE_CONFIG_FILE", "TRADING_COMMANDS",
]

_NS_PER_MS = 1_000_000
CORE_CONFIG_FILE = "core-config.msgpack"
DEFAULT_SYMBOL = "BTCUSDT"
#: The commands a strategy may return (never quotes, accounts or funding).
TRADING_COMMANDS = (PlaceOrder, CancelOrder, ModifyOrder, ClosePosition, ModifyPosition, AddMargin)
_LIQUIDATION = CloseReason.LIQUIDATION.value
#: the ledger kinds a backtest's summary adds up (issue 16)
_FEE_KINDS = (BalanceKind.COMMISSION.value, BalanceKind.SWAP.value)
_FLUSH_FRAMES = 4096
#: ``run_backtest(progress=…)`` is told the number of quotes applied this often.
PROGRESS_EVERY = 4096


# ---------------------------------------------------------------------------------------------- input


class Tick(NamedTuple):
    """One raw quote: receive time (ns since the epoch), symbol, bid and ask in ticks."""
    ts_ns: int
    symbol: str
    bid: int
    ask: int


@attrs.define
class LoadStats:
    """What :func:`load_ticks` read: rows turned into ticks, and skipped rows by reason."""
    ticks: int = 0
    malformed: int = 0
    reasons: Counter[str] = attrs.field(factory=Counter)

    def skip(self, reason: str) -> None:
        self.malformed += 1
        self.reasons[reason] += 1


def _instrument_list(instruments: Union[CoreConfig, Iterable[Instrument]]) -> list[Instrument]:
    if isinstance(instruments, CoreConfig):
        return list(instruments.instruments)
    return list(instruments)


def load_ticks(path: Union[str, Path], instruments: Union[CoreConfig, Iterable[Instrument]], *,
               symbol: str = DEFAULT_SYMBOL, stats: Optional[LoadStats] = None) -> Iterator[Tick]:
    """Yield the ticks of a recording (JSONL Binance lines or CSV), skipping malformed lines.

    The format is taken from the suffix (``.csv``) or else from the first non-blank character
    (``{`` means JSON lines). Skipped lines are counted in ``stats`` (by
    :data:`~exness_actors.feed_format.MALFORMED_REASONS` word, plus ``bad_timestamp`` and
    ``bad_row`` for CSV).
    """
    decimals = {i.symbol: i.price_decimals for i in _instrument_list(instruments)}
    stats = stats if stats is not None else LoadStats()
    path = Path(path)
    with open(path, "r", encoding="utf-8", errors="replace", newline="") as handle:
        if path.suffix.lower() == ".csv":
            is_csv = True
        else:
            first = ""
            while True:
                position = handle.tell()
                line = handle.readline()
                if not line:
                    break
                if line.strip():
                    first = line.lstrip()[:1]
                    handle.seek(position)
                    break
            is_csv = first != "{" and first != ""
            if not first:
                return
        if is_csv:
            yield from _csv_ticks(handle, decimals, symbol, stats)
        else:
            yield from _jsonl_ticks(handle, decimals, stats)


def _jsonl_ticks(handle: io.TextIOBase, decimals: dict[str, int], stats: LoadStats) -> Iterator[Tick]:
    for line in handle:
        if not line.strip():
            continue
        try:
            recorded = parse_recorded_line(line, decimals)
        except MalformedTick as exc:
            stats.skip(exc.reason)
            continue
        tick = recorded.tick
        stats.ticks += 1
        yield Tick(recorded.ts_ms * _NS_PER_MS, tick.symbol, tick.bid, tick.ask)


def _csv_ticks(handle: io.TextIOBase, decimals: dict[str, int], default_symbol: str,
               stats: LoadStats) -> Iterator[Tick]:
    reader = csv.reader(handle)
    header: Optional[list[str]] = None
    for row in reader:
        if not row or not "".join(row).strip():
            continue
        header = [name.strip().lower() for name in row]
        break
    if header is None:
        return
    try:
        ts_col, bid_col, ask_col = header.index("timestamp"), header.index("bid"), header.index("ask")
    except ValueError:
        raise ValueError(f"CSV header must name timestamp, bid and ask (symbol optional), got {header}") from None
    symbol_col = header.index("symbol") if "symbol" in header else None
    width = len(header)
    for row in reader:
        if not row or not "".join(row).strip():
            continue
        if len(row) != width:
            stats.skip("bad_row")
            continue
        text = row[ts_col].strip()
        if not text.isdigit() or not text.isascii():
            stats.skip("bad_timestamp")
            continue
        symbol = row[symbol_col].strip() if symbol_col is not None else default_symbol
        price_decimals = decimals.get(symbol)
        if price_decimals is None:
            stats.skip("unknown_symbol")
            continue
        try:
            bid = price_to_ticks(row[bid_col].strip(), price_decimals, round_up=False, field="bid")
            ask = price_to_ticks(row[ask_col].strip(), price_decimals, round_up=True, field="ask")
        except MalformedTick as exc:
            stats.skip(exc.reason)
            continue
        if bid > ask:
            stats.skip("crossed")
            continue
        stats.ticks += 1
        yield Tick(int(text) * _NS_PER_MS, symbol, bid, ask)


# ---------------------------------------------------------------------------------------------- strategy


class StrategyView:
    """What a strategy sees after each quote, and helpers that build its commands.

    ``bid``/``ask`` are the engine's quote (spread applied) in ticks; ``raw_bid``/``raw_ask`` the
    recorded ones. ``ts`` is the quote's ns timestamp. ``state`` is a dict private to this run.
    """

    def __init__(self, engine: Engine, account_id: AccountId) -> None:
        self._engine = engine
        self.account_id = account_id
        self.symbol = ""
        self.bid = 0
        self.ask = 0
        self.raw_bid = 0
        self.raw_ask = 0
        self.ts = 0
        self.index = -1          # number of quotes applied before this one
        self.state: dict[str, Any] = {}

    # -- reads

    @property
    def account(self) -> dict[str, Any]:
        summary = self._engine.account_summary(self.account_id)
        assert summary is not None
        return summary

    @property
    def positions(self) -> list[Any]:
        return self._engine.open_positions(self.account_id)

    @property
    def orders(self) -> list[Any]:
        return self._engine.pending_orders(self.account_id)

    def positions_for(self, symbol: Optional[str] = None) -> list[Any]:
        symbol = symbol or self.symbol
        return [p for p in self.positions if p.symbol == symbol]

    def orders_for(self, symbol: Optional[str] = None) -> list[Any]:
        symbol = symbol or self.symbol
        return [o for o in self.orders if o.symbol == symbol]

    @property
    def instrument(self) -> Instrument:
        return self._engine.instruments[self.symbol]

    def quote(self, symbol: str) -> Optional[tuple[int, int, int]]:
        return self._engine.quote(symbol)

    # -- conversions (exact, from decimal strings)

    def cents(self, amount: Union[str, int]) -> int:
        """``"100.00"`` → 10000; an int is taken as cents already."""
        if isinstance(amount, int) and not isinstance(amount, bool):
            return amount
        return parse_fixed(amount, CENT_DECIMALS, field="margin")

    def ticks(self, price: str, symbol: Optional[str] = None) -> int:
        """A decimal price string → ticks of ``symbol`` (default: this quote's symbol)."""
        instrument = self._engine.instruments[symbol or self.symbol]
        return parse_fixed(price, instrument.price_decimals, field="price")

    # -- command builders

    def market(self, side: str, margin: Union[str, int], leverage: int, **kw: Any) -> PlaceOrder:
        return self._order("market", side, margin, leverage, None, kw)

    def limit(self, side: str, margin: Union[str, int], leverage: int, price: int, **kw: Any) -> PlaceOrder:
        return self._order("limit", side, margin, leverage, price, kw)

    def stop(self, side: str, margin: Union[str, int], leverage: int, price: int, **kw: Any) -> PlaceOrder:
        return self._order("stop", side, margin, leverage, price, kw)

    def _order(self, kind: str, side: str, margin: Union[str, int], leverage: int,
               price: Optional[int], kw: dict[str, Any]) -> PlaceOrder:
        symbol = kw.pop("symbol", None) or self.symbol
        return PlaceOrder(account_id=self.account_id, symbol=symbol, side=side, type=kind,
                          margin=self.cents(margin), leverage=leverage, price=price, **kw)

    def close(self, position_id: PositionId, qty: Optional[int] = None) -> ClosePosition:
        return ClosePosition(account_id=self.account_id, position_id=position_id, qty=qty)

    def cancel(self, order_id: OrderId) -> CancelOrder:
        return CancelOrder(account_id=self.account_id, order_id=order_id)

    def modify_position(self, position_id: PositionId, **kw: Any) -> ModifyPosition:
        return ModifyPosition(account_id=self.account_id, position_id=position_id, **kw)

    def modify_order(self, order_id: OrderId, **kw: Any) -> ModifyOrder:
        return ModifyOrder(account_id=self.account_id, order_id=order_id, **kw)

    def add_margin(self, position_id: PositionId, amount: Union[str, int]) -> AddMargin:
        return AddMargin(account_id=self.account_id, position_id=position_id, amount=self.cents(amount))


Strategy = Callable[[StrategyView], Optional[Iterable[Any]]]


def resolve_strategy(obj: Any) -> Strategy:
    """A class becomes a fresh instance (constructed with no arguments); a callable is used as is."""
    if isinstance(obj, type):
        obj = obj()
    if not callable(obj):
        raise TypeError(f"a strategy must be callable(view) -> list of commands, got {obj!r}")
    strategy: Strategy = obj
    return strategy


# ---------------------------------------------------------------------------------------------- result


@attrs.frozen
class Trade:
    """One (full or partial) close of a position."""
    position_id: int
    symbol: str
    side: str
    qty: int
    open_price: int
    close_price: int
    margin: int
    pnl: int
    reason: str
    opened_ts: int
    closed_ts: int


@attrs.define
class BacktestResult:
    trades: list[Trade]
    equity: list[tuple[int, int]]       # (ts ns, equity cents)
    summary: dict[str, Any]
    engine: Engine
    events: Optional[list[tuple[int, int, list[Event]]]] = None   # (seq, ts, events) when kept


def percent(numerator: int, denominator: int, places: int = 2) -> str:
    """``100 × numerator / denominator`` as a decimal string, rounded half away from zero."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    scale = 10**places
    magnitude = abs(numerator) * 100 * scale
    q, r = divmod(magnitude, denominator)
    if 2 * r >= denominator:
        q += 1
    text = format_fixed(q, places)
    return "-" + text if numerator < 0 and q else text


def equity_metrics(start: int, equities: Iterable[int]) -> dict[str, Any]:
    """Return and maximum drawdown of an equity path starting at ``start`` (cents).

    The drawdown is the largest ``(peak − equity) / peak`` over the path, the peak including the
    start; both are decimal strings in percent.
    """
    peak = start
    worst = (0, 1)                       # the drawdown as a fraction (num, den)
    end = start
    for equity in equities:
        end = equity
        if equity > peak:
            peak = equity
        elif peak > 0 and (peak - equity) * worst[1] > worst[0] * peak:
            worst = (peak - equity, peak)
    return {
        "start_equity": start, "end_equity": end,
        "return_pct": percent(end - start, start) if start > 0 else "0.00",
        "max_drawdown_pct": percent(worst[0], worst[1]),
    }


# ---------------------------------------------------------------------------------------------- run


class _Journal:
    """Frames of the applied inputs plus checkpoints, appended in batches."""

    def __init__(self, directory: Path, config: CoreConfig, segment_bytes: int) -> None:
        directory = Path(directory)
        if directory.exists() and list_segments(directory):
            raise ValueError(f"{directory} already holds a journal; a backtest needs a fresh one")
        directory.mkdir(parents=True, exist_ok=True)
        wire = msgpack.packb(config.to_wire())
        pinned = directory.parent / CORE_CONFIG_FILE
        if pinned.exists():
            if msgpack.unpackb(pinned.read_bytes(), raw=False) != msgpack.unpackb(wire, raw=False):
                raise ValueError(f"{pinned} pins another core configuration")
        else:
            tmp = pinned.with_suffix(".tmp")
            tmp.write_bytes(wire)
            os.replace(tmp, pinned)
        self.writer = JournalWriter(directory, segment_bytes=segment_bytes)
        self.frames: list[bytes] = []
        self.first_seq = 0
        self.checkpoints = 0

    def add(self, command: Any) -> None:
        if not self.frames:
            self.first_seq = command.seq
        self.frames.append(encode_frame(codec.encode(command)))

    def checkpoint(self, engine: Engine) -> None:
        if not self.frames:
            self.first_seq = engine.last_seq + 1
        self.frames.append(encode_frame(engine_checkpoint(engine)))
        self.checkpoints += 1

    def flush(self) -> None:
        if self.frames:
            self.writer.append(b"".join(self.frames), first_seq=self.first_seq)
            self.frames = []

    def close(self) -> None:
        self.flush()
        self.writer.fsync()
        self.writer.close()


#: events the fast path of :meth:`_Run.apply` may not skip when they come alone
_TALLIED_ALONE = (PositionClosed, PositionOpened, BalanceChanged)


class _Run:
    """One backtest's engine, the journal it writes, and what it tallies from the events."""

    def __init__(self, engine: Engine, journal: Optional[_Journal], *, keep_events: bool) -> None:
        self.engine = engine
        self.journal = journal
        self.kept: Optional[list[tuple[int, int, list[Event]]]] = [] if keep_events else None
        self.opened: dict[PositionId, int] = {}
        self.trades: list[Trade] = []
        self.counts: Counter[str] = Counter()
        self._submit = engine.submit

    def apply(self, command: Command, ts: int) -> list[Event]:
        events = self._submit(command, ts)
        seq = command.seq
        journal = self.journal
        if journal is not None:
            journal.add(command)
            if not seq % HASH_BLOCK:
                journal.checkpoint(self.engine)
            if len(journal.frames) >= _FLUSH_FRAMES:
                journal.flush()
        if self.kept is not None:
            self.kept.append((seq, command.ts, events))
        if len(events) == 1 and type(events[0]) not in _TALLIED_ALONE:
            kind = type(events[0])
            if kind is OrderRejected or kind is CommandRejected:
                self.counts["rejected_commands"] += 1
            elif kind is QuoteRejected:
                self.counts["quotes_rejected"] += 1
            return events
        self._tally(events)
        return events

    def _tally(self, events: list[Event]) -> None:
        counts = self.counts
        for event in events:
            if isinstance(event, PositionOpened):
                self.opened[event.position_id] = event.ts
                counts["positions_opened"] += 1
            elif isinstance(event, PositionClosed):
                self.trades.append(Trade(event.position_id, event.symbol, event.side, event.qty,
                                         event.open_price, event.price, event.margin, event.pnl,
                                         event.reason, self.opened.get(event.position_id, 0), event.ts))
                if event.remaining_qty == 0:
                    self.opened.pop(event.position_id, None)
            elif isinstance(event, (OrderRejected, CommandRejected)):
                counts["rejected_commands"] += 1
            elif isinstance(event, QuoteRejected):
                counts["quotes_rejected"] += 1
            elif isinstance(event, BalanceChanged) and event.kind in _FEE_KINDS:
                counts[event.kind] -= event.free_delta
            elif isinstance(event, (StopOut, MarginCall)):
                counts["stop_outs" if isinstance(event, StopOut) else "margin_calls"] += 1


class _EquityCurve:
    """Equity sampled every ``every`` quotes (and after the last), and the worst drawdown over all."""

    def __init__(self, start_equity: int, every: int) -> None:
        self.start = self.last = self.peak = start_equity
        self.every = every
        self.points: list[tuple[int, int]] = []
        self.worst = (0, 1)   # (drop, peak it dropped from): the largest drop / peak ratio
        self.last_ts = 0
        self.sampled_last = True

    def add(self, quotes: int, ts: int, equity: int) -> None:
        self.last, self.last_ts = equity, ts
        if equity > self.peak:
            self.peak = equity
        elif self.peak > 0 and (self.peak - equity) * self.worst[1] > self.worst[0] * self.peak:
            self.worst = (self.peak - equity, self.peak)
        self.sampled_last = quotes % self.every == 0
        if self.sampled_last:
            self.points.append((ts, equity))

    def finish(self) -> None:
        if not self.sampled_last:
            self.points.append((self.last_ts, self.last))


def run_backtest(ticks: Iterable[Tick], strategy: Any, *, config: CoreConfig,
                 deposit_cents: int = 500_000, account_id: int = 1,
                 journal_dir: Union[str, Path, None] = None, equity_every: int = 1,
                 load_stats: Optional[LoadStats] = None, keep_events: bool = False,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 progress: Optional[Callable[[int], None]] = None,
                 account_type: Optional[str] = None) -> BacktestResult:
    """Run ``strategy`` over ``ticks`` on a fresh engine; see the module docstring.

    ``account_type`` trades an account of that type of ``config`` (issue 16: cross margin,
    commissions, swaps, stop-outs); without it, an untyped isolated account as before.

    ``equity_every`` samples the equity curve every that many accepted quotes (the drawdown is
    still computed over every quote, and the last quote is always sampled).
    ``progress(quotes)`` is called every :data:`PROGRESS_EVERY` accepted quotes (the CLI's
    progress bar).
    """
    if equity_every < 1:
        raise ValueError("equity_every must be at least 1")
    strategy = resolve_strategy(strategy)
    engine = Engine(config)
    journal = _Journal(Path(journal_dir), config, segment_bytes) if journal_dir is not None else None
    run = _Run(engine, journal, keep_events=keep_events)
    tick_iterator = iter(ticks)
    first = next(tick_iterator, None)
    if first is not None:
        tick_iterator = itertools.chain((first,), tick_iterator)
    try:
        opening: Command = (CreateAccount(account_id=AccountId(account_id), initial_deposit=deposit_cents)
                            if account_type is None else
                            OpenAccount(account_id=AccountId(account_id), account_type=account_type,
                                        initial_deposit=deposit_cents))
        run.apply(opening, first.ts_ns if first is not None else 0)
        start = engine.account_summary(AccountId(account_id))
        if start is None:
            known = ", ".join(t.name for t in config.account_types) or "none configured"
            raise ValueError(f"could not create account {account_id} with deposit {deposit_cents}"
                             + (f" and type {account_type!r} (account types: {known})" if account_type else ""))
        curve = _EquityCurve(start["equity"], equity_every)
        quotes = _trade_ticks(run, tick_iterator, strategy, AccountId(account_id), curve, progress)
        curve.finish()
        if journal is not None and engine.last_seq % HASH_BLOCK:
            journal.checkpoint(engine)
    finally:
        if journal is not None:
            journal.close()
    summary = _summary(run, curve, quotes, AccountId(account_id), load_stats)
    return BacktestResult(run.trades, curve.points, summary, engine, run.kept)


def _trade_ticks(run: _Run, ticks: Iterator[Tick], strategy: Callable[[StrategyView], Any],
                 account_id: AccountId, curve: _EquityCurve,
                 progress: Optional[Callable[[int], None]]) -> int:
    """Feed every tick to the engine, then ask the strategy; return the accepted quotes."""
    engine = run.engine
    view = StrategyView(engine, account_id)
    quotes = 0
    for tick in ticks:
        quote = Quote(tick.symbol, tick.bid, tick.ask)
        events = run.apply(quote, tick.ts_ns)
        if type(events[-1]) is QuoteRejected:
            continue
        quotes += 1
        if progress is not None and not quotes % PROGRESS_EVERY:
            progress(quotes)
        view.symbol = tick.symbol
        view.raw_bid, view.raw_ask = tick.bid, tick.ask
        quoted = engine.account_quote(account_id, tick.symbol)   # its type's spread (issue 16)
        assert quoted is not None   # the quote was accepted
        view.bid, view.ask, view.ts = quoted[0], quoted[1], quote.ts
        view.index = quotes - 1
        commands = strategy(view)
        if commands:
            ts = quote.ts
            for command in commands:
                _check_strategy_command(command, account_id)
                ts += 1
                run.apply(command, ts)
        summary = engine.account_summary(account_id)
        assert summary is not None
        curve.add(quotes, engine.now, summary["equity"])
    return quotes


def _check_strategy_command(command: Any, account_id: AccountId) -> None:
    if not isinstance(command, TRADING_COMMANDS):
        raise TypeError(f"a strategy may return only trading commands, got {command!r}")
    if command.account_id != account_id:
        raise ValueError(f"strategy command for account {command.account_id}, "
                         f"the backtest trades account {account_id}")


def _summary(run: _Run, curve: _EquityCurve, quotes: int, account_id: AccountId,
             load_stats: Optional[LoadStats]) -> dict[str, Any]:
    engine, trades, counts, journal = run.engine, run.trades, run.counts, run.journal
    summary: dict[str, Any] = {
        "start_equity": curve.start,
        "end_equity": curve.last,
        "return_pct": percent(curve.last - curve.start, curve.start) if curve.start > 0 else "0.00",
        "max_drawdown_pct": percent(curve.worst[0], curve.worst[1]),
        "trades": len(trades),
        "wins": sum(1 for t in trades if t.pnl > 0),
        "losses": sum(1 for t in trades if t.pnl < 0),
        "liquidations": sum(1 for t in trades if t.reason == _LIQUIDATION),
        "margin_calls": counts["margin_calls"],
        "stop_outs": counts["stop_outs"],
        "commission": counts[BalanceKind.COMMISSION.value],
        "swap": counts[BalanceKind.SWAP.value],
        "realized_pnl": sum(t.pnl for t in trades),
        "positions_opened": counts["positions_opened"],
        "open_positions": len(engine.open_positions(account_id)),
        "pending_orders": len(engine.pending_orders(account_id)),
        "rejected_commands": counts["rejected_commands"],
        "quotes": quotes,
        "quotes_rejected": counts["quotes_rejected"],
        "inputs": engine.last_seq,
        "checkpoints": journal.checkpoints if journal is not None else 0,
        "rolling_hash": engine.rolling_hash.hex(),
        "state_hash": engine.state_hash().hex(),
    }
    if load_stats is not None:
        summary["ticks_loaded"] = load_stats.ticks
        summary["ticks_skipped"] = load_stats.malformed
        summary["skipped_reasons"] = dict(sorted(load_stats.reasons.items()))
    return summary


# ---------------------------------------------------------------------------------------------- output

_MONEY_KEYS = ("start_equity", "end_equity", "realized_pnl", "commission", "swap")


def summary_json(summary: dict[str, Any]) -> str:
    """The summary as people read it (``summary.json`` and the CLI): money in USD decimal strings."""
    readable = dict(summary)
    for key in _MONEY_KEYS:
        readable[key] = format_fixed(readable[key], CENT_DECIMALS)
    return json.dumps(readable, indent=2, sort_keys=True) + "\n"


def write_outputs(result: BacktestResult, out_dir: Union[str, Path],
                  instruments: Union[CoreConfig, Iterable[Instrument]], *,
                  plot: Optional[Callable[["BacktestResult", Path], None]] = None) -> list[Path]:
    """Write ``trades.csv``, ``equity.csv``, ``summary.json`` and ``equity.svg`` into ``out_dir``.

    Money, prices and quantities are decimal strings; ``equity.svg`` is drawn by
    :mod:`exness_actors.equity_chart`. ``plot(result, path)``, when given, is called with
    ``out_dir/equity.png`` (the caller's matplotlib, which the core may not import). Returns the
    paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scales = {i.symbol: i for i in _instrument_list(instruments)}
    written = []

    path = out / "trades.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["position_id", "symbol", "side", "qty", "open_price", "close_price", "margin",
                         "pnl", "reason", "opened_ts_ms", "closed_ts_ms"])
        for t in result.trades:
            instrument = scales[t.symbol]
            writer.writerow([t.position_id, t.symbol, t.side, format_fixed(t.qty, instrument.qty_decimals),
                             format_fixed(t.open_price, instrument.price_decimals),
                             format_fixed(t.close_price, instrument.price_decimals),
                             format_fixed(t.margin, CENT_DECIMALS), format_fixed(t.pnl, CENT_DECIMALS),
                             t.reason, t.opened_ts // _NS_PER_MS, t.closed_ts // _NS_PER_MS])
    written.append(path)

    path = out / "equity.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["ts_ms", "equity"])
        for ts, equity in result.equity:
            writer.writerow([ts // _NS_PER_MS, format_fixed(equity, CENT_DECIMALS)])
    written.append(path)

    path = out / "summary.json"
    path.write_text(summary_json(result.summary), encoding="utf-8")
    written.append(path)

    path = out / "equity.svg"
    path.write_text(equity_svg(result.equity, result.trades, result.summary), encoding="utf-8")
    written.append(path)

    if plot is not None and result.equity:
        path = out / "equity.png"
        plot(result, path)
        written.append(path)
    return written
