"""Read queries the gateway runs *inside* the engine (``EngineHandle.query`` / pipelined).

Each function takes the :class:`~exness_actors.engine.Engine` first and renders JSON-ready dicts
right there, so the answer is a consistent snapshot taken in order with the commands around it
(the objects themselves keep changing after the query returns). They only read, are cheap
(no scans of all positions or accounts) and must not raise: an exception would be handed to the
waiting request as a 500.

Only the caller's own account is ever looked at, so another account's ids are simply "not
found" — never revealed.
"""

from __future__ import annotations

import heapq
from typing import Any, Optional

from actors.wire import codec as edge
from exness_actors.engine import Engine
from exness_actors.commands import AccountId, OrderId, PositionId

__all__ = [
    "account_summary", "pending_orders", "order_state", "pending_order", "open_positions",
    "open_position", "position_symbol", "new_positions", "quotes", "account_quotes", "quote_times",
    "owned_symbols", "account_summaries", "alerts", "alert", "traded_instruments",
]


def account_summary(engine: Engine, account_id: AccountId) -> Optional[dict]:
    summary = engine.account_summary(account_id)
    if summary is None:
        return None
    out = {"account_id": str(account_id)}
    out.update(edge.account_json(summary))
    return out


def pending_orders(engine: Engine, account_id: AccountId, symbol: Optional[str], before_id: Optional[OrderId],
                   limit: int) -> tuple[list[dict], Optional[int]]:
    """The account's pending orders, newest first, ``limit`` of them with ids below
    ``before_id``; and the id to continue below when more remain."""
    account = engine.accounts.get(account_id)
    if account is None or not account.orders:
        return [], None
    ids = sorted((order_id for order_id, order in account.orders.items()
                  if (symbol is None or order.symbol == symbol)
                  and (before_id is None or order_id < before_id)), reverse=True)
    instruments = engine.instruments
    page = [edge.pending_order_json(account.orders[order_id], instruments[account.orders[order_id].symbol])
            for order_id in ids[:limit]]
    return page, (ids[limit - 1] if len(ids) > limit else None)


def pending_order(engine: Engine, account_id: AccountId, order_id: OrderId) -> Optional[dict]:
    account = engine.accounts.get(account_id)
    order = account.orders.get(order_id) if account is not None else None
    if order is None:
        return None
    return edge.pending_order_json(order, engine.instruments[order.symbol])


def order_state(engine: Engine, account_id: AccountId, order_id: OrderId) -> Optional[tuple[str, Any]]:
    """``("pending", order)`` while the engine holds it, ``("finished", status)`` when the engine
    still remembers how it ended (filled, cancelled, expired), else None."""
    account = engine.accounts.get(account_id)
    if account is None:
        return None
    order = account.orders.get(order_id)
    if order is not None:
        return "pending", edge.pending_order_json(order, engine.instruments[order.symbol])
    status = account.finished_orders.get(order_id) if account.finished_orders else None
    return ("finished", status) if status is not None else None


def open_positions(engine: Engine, account_id: AccountId, symbol: Optional[str]) -> list[dict]:
    return [edge.position_json(position, engine) for position in engine.open_positions(account_id)
            if symbol is None or position.symbol == symbol]


def open_position(engine: Engine, account_id: AccountId, position_id: PositionId) -> Optional[dict]:
    account = engine.accounts.get(account_id)
    position = account.positions.get(position_id) if account is not None else None
    return None if position is None else edge.position_json(position, engine)


def position_symbol(engine: Engine, account_id: AccountId, position_id: PositionId) -> Optional[str]:
    account = engine.accounts.get(account_id)
    position = account.positions.get(position_id) if account is not None else None
    return None if position is None else position.symbol


def new_positions(engine: Engine, account_id: AccountId) -> dict[int, dict]:
    """The position the command just applied opened, if it is the account's, rendered (else {}).
    Run right after that command (``submit_between(after=…)``): ids are handed out in order, so
    the position it opened is the newest one, opened at the engine's current time."""
    position_id = PositionId(engine.next_position_id - 1)
    position = engine.positions.get(position_id)
    if position is None or position.account_id != account_id or position.opened_at != engine.now:
        return {}
    return {position_id: edge.position_json(position, engine)}


def quotes(engine: Engine, symbols: tuple[str, ...]) -> list[dict]:
    return _quotes(engine, symbols, None)


def account_quotes(engine: Engine, account_id: AccountId, symbols: tuple[str, ...]) -> list[dict]:
    """The quotes ``account_id`` trades on: its type's spread (the market's for default types)."""
    return _quotes(engine, symbols, account_id)


def _quotes(engine: Engine, symbols: tuple[str, ...], account_id: Optional[AccountId]) -> list[dict]:
    out = []
    for symbol in symbols:
        quote = engine.quote(symbol) if account_id is None else engine.account_quote(account_id, symbol)
        if quote is None:
            out.append({"symbol": symbol, "bid": None, "ask": None, "ts": None})
        else:
            out.append(edge.quote_json(symbol, quote, engine.instruments[symbol]))
    return out


def traded_instruments(engine: Engine) -> list[list]:
    """Every instrument as the engine trades it now (after operator changes), in its wire form
    (``Instrument.to_wire``): what a remote handle's copy starts from and re-reads after an
    ``InstrumentUpdated`` (split mode)."""
    return [engine.instruments[symbol].to_wire() for symbol in sorted(engine.instruments)]


def quote_times(engine: Engine) -> dict[str, Optional[int]]:
    """Engine time (ns) of each symbol's last quote, None when it has none."""
    out: dict[str, Optional[int]] = {}
    for symbol in engine.instruments:
        quote = engine.quote(symbol)
        out[symbol] = None if quote is None else quote[2]
    return out


def owned_symbols(engine: Engine) -> tuple[dict[OrderId, tuple[str, AccountId]],
                                           dict[PositionId, tuple[str, AccountId]]]:
    """``(symbol, account id)`` of every pending order and of every open position, by id: what the
    stream server seeds its maps with, once per subscription (the one view that scans them all)."""
    orders = {order_id: (order.symbol, order.account_id) for order_id, order in engine.orders.items()}
    positions = {position_id: (position.symbol, position.account_id)
                 for position_id, position in engine.positions.items()}
    return orders, positions


def account_summaries(engine: Engine, account_ids: list[AccountId]) -> list[list]:
    """The WebSocket ``account_summary`` of each account (unknown ids are left out), for the
    stream server's throttled summaries: ``[account_id, engine_seq, data, symbols held]`` each,
    ``data`` the message's JSON-ready body and ``symbols`` the symbols of its open positions
    (whose quotes move its equity). Cost: the accounts' own positions, nothing else."""
    out: list[list] = []
    for account_id in account_ids:
        summary = engine.account_summary(account_id)
        if summary is None:
            continue
        account = engine.accounts[account_id]
        symbols = sorted({position.symbol for position in account.positions.values()})
        data = edge.account_summary_event_json(summary, engine.now)
        out.append([account_id, engine.last_seq, data, symbols])
    return out


def alerts(engine: Engine, account_id: AccountId) -> list[dict]:
    """The account's active price alerts (issue 13), oldest first."""
    account = engine.accounts.get(account_id)
    if account is None or not account.alerts:
        return []
    instruments = engine.instruments
    return [edge.alert_json(alert, instruments[alert.symbol])
            for _alert_id, alert in sorted(account.alerts.items())]


def alert(engine: Engine, account_id: AccountId, alert_id: int) -> Optional[dict]:
    """One of the account's active alerts, None when it is not (or no longer) active."""
    account = engine.accounts.get(account_id)
    found = account.alerts.get(alert_id) if account is not None and account.alerts else None
    return None if found is None else edge.alert_json(found, engine.instruments[found.symbol])


# ------------------------------------------------------------------ the back office (issue 13)
#
# What operators read (``/api/v1/admin``). Unlike the views above some look at every account or
# position, so each is bounded: the house's figures are one pass over the open positions (the
# core's ``net_exposure()``; ~0.1 s at 100,000 positions, so the gateway computes them at most
# once a second whoever asks), and the account scan looks at most ``MAX_SCAN`` accounts per
# call — the gateway pages through the rest with more calls, so the engine never stalls on one
# long read.

#: accounts one :func:`admin_account_scan` looks at
MAX_SCAN = 2_000

__all__ += ["house_figures", "admin_symbols", "admin_account_scan", "admin_account_rows", "admin_account"]


def house_figures(engine: Engine) -> dict:
    """The house's realized P&L by source (``house_book()``, cents), the traders' open long and
    short quantity and notional per symbol (``net_exposure()``), and each symbol's marked-up
    quote and halt flag — raw integers; the gateway derives the unrealized P&L and renders."""
    symbols = {}
    for symbol in sorted(engine.instruments):
        book = engine.books[symbol]
        symbols[symbol] = {"bid": book.bid, "ask": book.ask, "halted": book.halted}
    return {"book": engine.house_book(), "exposure": engine.net_exposure(), "symbols": symbols}


def admin_symbols(engine: Engine) -> list[dict]:
    """Every instrument as the engine trades it now (after any operator change), its quote and
    whether it is halted."""
    out = []
    for symbol in sorted(engine.instruments):
        instrument = engine.instruments[symbol]
        book = engine.books[symbol]
        row = edge.instrument_json(instrument)
        quote = engine.quote(symbol)
        row.update(halted=book.halted, bid=None, ask=None, quote_ts=None)
        if quote is not None:
            row.update((key, value) for key, value in edge.quote_json(symbol, quote, instrument).items()
                       if key in ("bid", "ask"))
            row["quote_ts"] = edge.ns_to_ms(quote[2])
        out.append(row)
    return out


def _margin_level_in(summary: dict, bounds: tuple[Optional[int], Optional[int]]) -> bool:
    """Whether equity / locked (in hundredths of a percent) is within ``bounds`` (inclusive,
    None = open). An account with nothing locked has no margin level and is never within."""
    low, high = bounds
    if low is None and high is None:
        return True
    level = summary["margin_level"]
    if level is None:
        return False
    equity, locked = level
    return (low is None or equity * 10_000 >= low * locked) and (high is None or equity * 10_000 <= high * locked)


def _admin_account_row(engine: Engine, account_id: AccountId, summary: dict) -> dict:
    account = engine.accounts[account_id]
    row: dict[str, Any] = {"account_id": str(account_id)}
    row.update(edge.account_json(summary))
    row.update(positions=len(account.positions), orders=len(account.orders))
    return row


def admin_account_scan(engine: Engine, after: int, limit: int,
                       bounds: tuple[Optional[int], Optional[int]]) -> tuple[list[dict], Optional[int]]:
    """Accounts with ids above ``after`` in id order whose margin level is within ``bounds``:
    at most ``limit`` of them, looking at no more than :data:`MAX_SCAN` accounts. Answers the
    rows and the last id looked at (None when no account above it is left)."""
    scanned = heapq.nsmallest(MAX_SCAN, (account_id for account_id in engine.accounts if account_id > after))
    rows: list[dict] = []
    for account_id in scanned:
        summary = engine.account_summary(account_id)
        if summary is not None and _margin_level_in(summary, bounds):
            rows.append(_admin_account_row(engine, account_id, summary))
            if len(rows) == limit:
                return rows, account_id
    if len(scanned) < MAX_SCAN:
        return rows, None
    return rows, scanned[-1]


def admin_account_rows(engine: Engine, account_ids: list[int],
                       bounds: tuple[Optional[int], Optional[int]]) -> list[dict]:
    """The rows of these accounts (in the order given) whose margin level is within ``bounds``;
    unknown ids are left out."""
    rows = []
    for account_id in account_ids[:MAX_SCAN]:
        summary = engine.account_summary(AccountId(account_id))
        if summary is not None and _margin_level_in(summary, bounds):
            rows.append(_admin_account_row(engine, AccountId(account_id), summary))
    return rows


def admin_account(engine: Engine, account_id: AccountId) -> Optional[dict]:
    """One account for the back office: its summary, open positions and pending orders (all of
    them, oldest first), or None."""
    summary = engine.account_summary(account_id)
    if summary is None:
        return None
    row = _admin_account_row(engine, account_id, summary)
    instruments = engine.instruments
    row["open_positions"] = [edge.position_json(position, engine) for position in engine.open_positions(account_id)]
    row["pending_orders"] = [edge.pending_order_json(order, instruments[order.symbol])
                             for order in engine.pending_orders(account_id)]
    return row
