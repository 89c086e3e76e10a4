"""Independent checks of an engine's state, and replay, for property tests.

Theory of operation
-------------------
:func:`check_all` runs the engine's own :meth:`~exness_actors.engine.Engine.check_invariants`
and then recomputes the same facts **from scratch**, from the global ``positions``/``orders``
tables rather than from the per-account copies the engine maintains, and recomputes derived
values (liquidation prices, pending quantities) with :mod:`exness_actors.money`:

* conservation: ``Σ free + Σ locked + house == deposits − withdrawals`` to the cent (against the
  caller's own ledger when it passes one);
* no free or locked balance is negative;
* ``locked`` of each account = Σ its positions' margins + Σ its pending orders' margins;
* each record is where its owner says it is, with the derived values the money functions give;
* no position's stop-loss lies at or beyond its liquidation price (it could never fire);
* cross accounts are settled (issue 16): none with open positions is at or below its type's
  stop-out level, and one at or below its margin-call level has been called (equity recomputed
  here from the positions and the current quotes).

:func:`assert_triggers_respected` states what must hold right after a quote: nothing the quote
crossed is still open or pending (pending entries excepted while the symbol is halted), each
judged at its account's own prices (per-type spreads, :func:`account_prices`).

:func:`replay` re-applies a recorded list of sequenced inputs to a fresh engine; every input is
copied through the codec first, so the recording is never shared with (or mutated by) the
replaying engine.

Every failed check raises :class:`AssertionError` naming the account, position or order.
"""

from __future__ import annotations

from typing import Any, Iterable, NoReturn, Optional

from exness_actors import codec
from exness_actors.account_types import profile_quote
from exness_actors.commands import AccountId, OrderId, PositionId
from exness_actors.engine import Engine
from exness_actors.instruments import CoreConfig
from exness_actors.money import pnl_cents, qty_for_margin

__all__ = ["check_all", "assert_triggers_respected", "account_prices", "replay", "copy_input"]


def _fail(message: str) -> NoReturn:
    raise AssertionError(message)


def account_prices(engine: Engine, account_id: AccountId, symbol: str) -> tuple[Optional[int], Optional[int]]:
    """The bid and ask ``account_id`` trades ``symbol`` on, recomputed from the feed's raw quote
    and its type's spread profile (never read from the engine's profile books)."""
    book = engine.books[symbol]
    account = engine.accounts[account_id]
    profile = account.type.spread_profile if account.type is not None else None
    if profile is None or book.bid is None:
        return book.bid, book.ask
    return profile_quote(book.raw_bid, book.raw_ask, book.instrument.spread_bps, profile)


def check_all(engine: Engine, *, deposits: Optional[int] = None,
              withdrawals: Optional[int] = None) -> None:
    """Every state invariant, checked by the engine and independently recomputed.

    ``deposits``/``withdrawals`` are the caller's own totals (e.g. summed from the
    ``BalanceChanged`` events it saw); when given, the engine's totals must match them.
    """
    engine.check_invariants()

    if deposits is not None and engine.total_deposits != deposits:
        _fail(f"engine counts {engine.total_deposits} cents deposited, the ledger {deposits}")
    if withdrawals is not None and engine.total_withdrawals != withdrawals:
        _fail(f"engine counts {engine.total_withdrawals} cents withdrawn, the ledger {withdrawals}")

    margins: dict[AccountId, int] = {account_id: 0 for account_id in engine.accounts}
    positions_of: dict[AccountId, set[PositionId]] = {account_id: set() for account_id in engine.accounts}
    orders_of: dict[AccountId, set[OrderId]] = {account_id: set() for account_id in engine.accounts}
    _check_positions(engine, margins, positions_of)
    _check_orders(engine, margins, orders_of)
    _check_accounts(engine, margins, positions_of, orders_of)
    _check_books(engine)
    _check_cross_accounts(engine)
    _check_alerts(engine)


def _check_cross_accounts(engine: Engine) -> None:
    """No cross account is left at or below its stop-out level, nor uncalled at its call level."""
    for account_id, account in engine.accounts.items():
        account_type = account.type
        if not account.is_cross or account_type is None:
            continue
        unrealized = 0
        for position in account.positions.values():
            book = engine.books[position.symbol]
            bid, ask = account_prices(engine, account_id, position.symbol)
            price = bid if position.is_long else ask
            if price is None:
                _fail(f"cross account {account_id} holds {position.symbol} with no quote")
            unrealized += pnl_cents(position.is_long, position.qty, position.open_price, price,
                                    book.instrument.price_decimals, book.instrument.qty_decimals)
        equity, used = account.free + account.locked + unrealized, account.locked
        if account.positions and equity * 100 <= account_type.stop_out_pct * used:
            _fail(f"cross account {account_id} stays at margin level {equity}/{used} with open positions, "
                  f"at or below its stop-out level {account_type.stop_out_pct} %")
        if used and equity * 100 <= account_type.margin_call_pct * used and not account.in_margin_call:
            _fail(f"cross account {account_id} is at margin level {equity}/{used}, at or below its call "
                  f"level {account_type.margin_call_pct} %, and was not called")



def _check_alerts(engine: Engine) -> None:
    """Each price alert (issue 13): its owner, its symbol, its expiry still ahead; the expiry queue."""
    expiring = set()
    for alert_id, alert in engine.alerts.items():
        account = engine.accounts.get(alert.account_id)
        if alert.id != alert_id or account is None or (account.alerts or {}).get(alert_id) is not alert:
            _fail(f"alert {alert_id} is not filed under its account {alert.account_id}")
        if alert.symbol not in engine.books or alert.price <= 0:
            _fail(f"alert {alert_id} on {alert.symbol!r} at {alert.price}")
        if alert.expires_at is not None:
            if alert.expires_at <= engine.now:
                _fail(f"alert {alert_id} expired at {alert.expires_at} but is still active at {engine.now}")
            expiring.add((alert.expires_at, alert_id))
    if set(engine.alert_expiries) != expiring:
        _fail(f"alert expiry schedule {list(engine.alert_expiries)} != the alerts' expiries {sorted(expiring)}")
    for account_id, deadline in engine.dead_man.items():
        if deadline <= engine.now:
            _fail(f"account {account_id}'s dead-man switch passed its deadline {deadline} at {engine.now} unfired")


def _check_positions(engine: Engine, margins: dict[AccountId, int],
                     positions_of: dict[AccountId, set[PositionId]]) -> None:
    """Each position's own fields; adds its margin and id to its account's totals."""
    for position_id, position in engine.positions.items():
        if position.id != position_id:
            _fail(f"position {position.id} is filed under id {position_id}")
        if position.account_id not in engine.accounts:
            _fail(f"position {position_id} belongs to unknown account {position.account_id}")
        instrument = engine.instruments.get(position.symbol)
        if instrument is None:
            _fail(f"position {position_id} is on unknown symbol {position.symbol!r}")
            return
        if position.margin <= 0:
            _fail(f"position {position_id} has margin {position.margin}")
        if position.qty < instrument.min_qty:
            _fail(f"position {position_id} has qty {position.qty} below the minimum {instrument.min_qty}")
        # a cross position's is out of reach (issue 16: its account is watched as a whole)
        expected_liq = engine._liquidation_price(engine.accounts[position.account_id], position.is_long,
                                                 position.qty, position.open_price, position.margin, instrument)
        if position.liquidation_price != expected_liq:
            _fail(f"position {position_id}: liquidation price {position.liquidation_price}, "
                  f"recomputed {expected_liq}")
        for level_name in ("take_profit", "stop_loss", "trailing_stop"):
            level = getattr(position, level_name)
            if level is not None and (type(level) is not int or level <= 0):
                _fail(f"position {position_id}: {level_name} {level!r} is not a positive integer")
        stop_loss = position.stop_loss
        if stop_loss is not None and (stop_loss <= expected_liq if position.is_long else stop_loss >= expected_liq):
            _fail(f"position {position_id}: stop_loss {stop_loss} can never fire before liquidation at {expected_liq}")
        margins[position.account_id] += position.margin
        positions_of[position.account_id].add(position_id)


def _check_orders(engine: Engine, margins: dict[AccountId, int], orders_of: dict[AccountId, set[OrderId]]) -> None:
    """Each pending order's own fields and the expiry schedule; adds its margin and id to its account's."""
    expiring = set()
    for order_id, order in engine.orders.items():
        if order.id != order_id:
            _fail(f"order {order.id} is filed under id {order_id}")
        if order.account_id not in engine.accounts:
            _fail(f"order {order_id} belongs to unknown account {order.account_id}")
        instrument = engine.instruments.get(order.symbol)
        if instrument is None:
            _fail(f"order {order_id} is on unknown symbol {order.symbol!r}")
            return
        if order.type not in ("limit", "stop"):
            _fail(f"pending order {order_id} has type {order.type!r}")
        if order.margin <= 0 or order.price <= 0:
            _fail(f"pending order {order_id} has margin {order.margin} and price {order.price}")
        expected_qty = qty_for_margin(order.margin, order.leverage, order.price,
                                      instrument.price_decimals, instrument.qty_decimals)
        if order.qty != expected_qty:
            _fail(f"pending order {order_id}: qty {order.qty}, recomputed {expected_qty}")
        if order.qty < instrument.min_qty:
            _fail(f"pending order {order_id} has qty {order.qty} below the minimum {instrument.min_qty}")
        if order.expires_at is not None:
            if order.expires_at <= engine.now:
                _fail(f"pending order {order_id} expired at {order.expires_at} but is still pending at {engine.now}")
            expiring.add((order.expires_at, order_id))
        margins[order.account_id] += order.margin
        orders_of[order.account_id].add(order_id)

    if set(engine.expiries) != expiring or len(engine.expiries) != len(expiring):
        _fail(f"expiry schedule {list(engine.expiries)} != pending orders' expiries {sorted(expiring)}")


def _check_accounts(engine: Engine, margins: dict[AccountId, int], positions_of: dict[AccountId, set[PositionId]],
                    orders_of: dict[AccountId, set[OrderId]]) -> None:
    """Each account against the positions and orders filed under it, and money conservation."""
    free_total = locked_total = 0
    for account_id, account in engine.accounts.items():
        if account.id != account_id:
            _fail(f"account {account.id} is filed under id {account_id}")
        if type(account.free) is not int or (account.free < 0 and not (account.is_cross and account.positions)):
            _fail(f"account {account_id} has free balance {account.free!r} (only a cross account with open "
                  "positions may be below zero)")
        if type(account.locked) is not int or account.locked < 0:
            _fail(f"account {account_id} has locked balance {account.locked!r}")
        if account.locked != margins[account_id]:
            _fail(f"account {account_id}: locked {account.locked} != Σ position and pending-order "
                  f"margins {margins[account_id]}")
        if set(account.positions) != positions_of[account_id]:
            _fail(f"account {account_id} lists positions {sorted(account.positions)}, "
                  f"the book has {sorted(positions_of[account_id])}")
        if set(account.orders) != orders_of[account_id]:
            _fail(f"account {account_id} lists orders {sorted(account.orders)}, "
                  f"the book has {sorted(orders_of[account_id])}")
        free_total += account.free
        locked_total += account.locked

    net_funding = engine.total_deposits - engine.total_withdrawals
    if free_total + locked_total + engine.house != net_funding:
        _fail(f"money is not conserved: free {free_total} + locked {locked_total} + house "
              f"{engine.house} = {free_total + locked_total + engine.house} != deposits − "
              f"withdrawals {net_funding}")


def _check_books(engine: Engine) -> None:
    for symbol, book in engine.books.items():
        if (book.bid is None) != (book.ask is None):
            _fail(f"{symbol}: half a quote (bid {book.bid}, ask {book.ask})")
        if book.bid is not None and book.ask is not None and not 0 < book.bid <= book.ask:
            _fail(f"{symbol}: the engine trades on a bad quote (bid {book.bid}, ask {book.ask})")


def assert_triggers_respected(engine: Engine, symbol: str) -> None:
    """After a quote on ``symbol``: no open position or pending entry it crossed survives.

    Longs are checked on the bid (liquidation ``bid <= liq``, stop-loss ``bid <= sl``,
    take-profit ``bid >= tp``, trailing ``bid <= level``), shorts on the ask symmetrically.
    Pending entries (buy limit ``ask <= price``, buy stop ``ask >= price``, sell limit
    ``bid >= price``, sell stop ``bid <= price``) may only wait while the symbol is halted.
    Price alerts (``above``: ``bid >= price``, ``below``: ``bid <= price``) never survive one.
    """
    book = engine.books[symbol]
    bid, ask = book.bid, book.ask
    if bid is None or ask is None:
        if any(p.symbol == symbol for p in engine.positions.values()) or \
                any(o.symbol == symbol for o in engine.orders.values()):
            _fail(f"{symbol} has positions or orders but no quote")
        return
    for position in engine.positions.values():
        if position.symbol != symbol:
            continue
        bid, ask = account_prices(engine, position.account_id, symbol)
        assert bid is not None and ask is not None
        pid = position.id
        trailing = engine.trailing_level(position)
        if position.is_long:
            if bid <= position.liquidation_price:
                _fail(f"long {pid} is open with bid {bid} <= liquidation price {position.liquidation_price}")
            if position.stop_loss is not None and bid <= position.stop_loss:
                _fail(f"long {pid} is open with bid {bid} <= stop-loss {position.stop_loss}")
            if position.take_profit is not None and bid >= position.take_profit:
                _fail(f"long {pid} is open with bid {bid} >= take-profit {position.take_profit}")
            if trailing is not None and bid <= trailing:
                _fail(f"long {pid} is open with bid {bid} <= trailing-stop level {trailing}")
        else:
            if ask >= position.liquidation_price:
                _fail(f"short {pid} is open with ask {ask} >= liquidation price {position.liquidation_price}")
            if position.stop_loss is not None and ask >= position.stop_loss:
                _fail(f"short {pid} is open with ask {ask} >= stop-loss {position.stop_loss}")
            if position.take_profit is not None and ask <= position.take_profit:
                _fail(f"short {pid} is open with ask {ask} <= take-profit {position.take_profit}")
            if trailing is not None and ask >= trailing:
                _fail(f"short {pid} is open with ask {ask} >= trailing-stop level {trailing}")
    for alert in engine.alerts.values():
        if alert.symbol == symbol and (bid >= alert.price if alert.is_above else bid <= alert.price):
            _fail(f"alert {alert.id} ({alert.condition} {alert.price}) is still active with the bid at {bid}")
    if book.halted:
        return
    for order in engine.orders.values():
        if order.symbol != symbol:
            continue
        bid, ask = account_prices(engine, order.account_id, symbol)
        assert bid is not None and ask is not None
        if order.is_long:
            crossed = ask <= order.price if order.type == "limit" else ask >= order.price
            market = ask
        else:
            crossed = bid >= order.price if order.type == "limit" else bid <= order.price
            market = bid
        if crossed:
            _fail(f"{order.side} {order.type} {order.id} at {order.price} is still pending with the "
                  f"market at {market}")


def copy_input(command: Any) -> Any:
    """A fresh copy of a sequenced input, through the wire codec (as a journal would give it)."""
    return codec.decode(codec.encode(command))


def replay(inputs: Iterable[Any], config: CoreConfig) -> tuple[Engine, list[list[Any]]]:
    """Apply copies of recorded, sequenced ``inputs`` to an empty engine.

    Returns the engine and the list of event lists, one per input.
    """
    engine = Engine(config)
    outputs = [engine.apply(copy_input(command)) for command in inputs]
    return engine, outputs
