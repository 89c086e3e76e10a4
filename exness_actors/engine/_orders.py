"""Order handlers: place (market or pending limit/stop), cancel, modify, trigger, expire.

A market order is born ``filled`` (it opens its position at once) or is rejected; a pending
entry reserves its margin at placement, waits in its symbol's trigger index, and ends
``filled`` (a quote crossed it), ``cancelled`` or ``expired``. Every status change goes through
:func:`~exness_actors.model.check_order_transition` before anything changes. Placement
validates fully (:class:`~._validation.Reject`), then mutates.
"""

from __future__ import annotations

from typing import Any

from exness_actors.commands import (
    MAX_CLIENT_ID, ClientOrderId, OrderId,
)
from exness_actors.events import (
    BalanceChanged, DeadManSwitchFired, Event, OrderAccepted, OrderCancelled, OrderModified, OrderRejected,
    OrderTriggered,
)
from exness_actors.model import (
    NEW, OPEN, ORDER_TRANSITIONS, POSITION_TRANSITIONS, Account, Book, Order, check_order_transition,
    check_position_transition,
)
from exness_actors.account_types import commission_cents
from exness_actors.instruments import Instrument
from exness_actors.money import notional_cents, qty_for_margin
from exness_actors.reasons import CancelReason
from exness_actors.reasons import RejectReason as _R

from ._positions import PositionRules
from ._state import (
    BUY, CANCELLED, CLOSE_REASON, EXPIRED, FILLED, KIND_ORDER_MARGIN, KIND_ORDER_RELEASE,
    KIND_POSITION_MARGIN, LIMIT, LIQ, MARKET, PENDING, REJECTED, SELL, SL, STOP, TP,
)
from ._validation import (
    MAX_AMOUNT, MAX_ID, MAX_LEVEL, MAX_QTY, OPTIONAL_INT, Reject, check_slippage, commission_rate,
    check_stop_loss_before_liquidation, check_tpsl, is_int, is_optional_int, money_text,
    price_text, qty_text, stop_loss_inert, updated,
)

__all__ = ["OrderRules"]


class OrderRules(PositionRules):
    """Placing, cancelling, modifying, triggering and expiring orders."""

    def _on_place(self, cmd: Any, events: list[Event]) -> None:
        account = self.accounts.get(cmd.account_id)
        client_id = cmd.client_order_id
        if account is None:
            self._reject_order(cmd.account_id, ClientOrderId(client_id) if type(client_id) is str else ClientOrderId(""),
                               _R.UNKNOWN_ACCOUNT._value_, "no such account", events)
            return
        if type(client_id) is not str or len(client_id) > MAX_CLIENT_ID:
            self._reject_order(account.id, ClientOrderId(""), _R.INVALID_COMMAND._value_,
                               f"client_order_id must be a string of at most {MAX_CLIENT_ID} characters", events)
            return
        key = "o:" + client_id if client_id else ""
        if key and self._duplicate(account, key, cmd, events):
            return
        try:
            self._place(account, cmd, events)
        except Reject as rejection:
            self._reject_order(account.id, ClientOrderId(client_id), rejection.reason, rejection.message, events)
            if key:
                self._remember(account, key, None, rejection.reason)
            return
        if key:
            self._remember(account, key, OrderId(self.next_order_id - 1), None)

    @staticmethod
    def _reject_order(account_id: Any, client_id: ClientOrderId, reason: str, message: str,
                      events: list[Event]) -> None:
        check_order_transition(NEW, REJECTED)
        events.append(OrderRejected(account_id=account_id, client_order_id=client_id,
                                    reason=reason, message=message))

    def _place(self, account: Account, cmd: Any, events: list[Event]) -> None:
        """Validate the placement (raises Reject; nothing has changed yet), then place it.

        The market path stays inline here (it is the hot one); pending entries go on in
        :meth:`_place_pending`.
        """
        instrument = self.instruments.get(cmd.symbol)
        if instrument is None:
            raise Reject(_R.UNKNOWN_SYMBOL, f"unknown symbol {cmd.symbol!r}")
        book = self._book_of(account, cmd.symbol)
        side, order_type = cmd.side, cmd.type
        if side == BUY:
            is_long = True
        elif side == SELL:
            is_long = False
        else:
            raise Reject(_R.INVALID_COMMAND, f"side must be 'buy' or 'sell', not {side!r}")
        if order_type not in (MARKET, LIMIT, STOP):
            raise Reject(_R.INVALID_COMMAND, f"type must be market, limit or stop, not {order_type!r}")
        optional = OPTIONAL_INT
        if (type(cmd.price) not in optional or type(cmd.take_profit) not in optional
                or type(cmd.stop_loss) not in optional or type(cmd.trailing_stop) not in optional
                or type(cmd.slippage_bps) not in optional or type(cmd.expected_price) not in optional
                or type(cmd.expires_at) not in optional):
            raise Reject(_R.INVALID_COMMAND, "prices, distances and times must be integers at their scale")
        if book.halted:
            raise Reject(_R.MARKET_HALTED, f"{cmd.symbol} is halted")
        leverage = cmd.leverage
        max_leverage = instrument.max_leverage if account.type is None else min(instrument.max_leverage, account.type.max_leverage)
        if not is_int(leverage) or not 1 <= leverage <= max_leverage:
            raise Reject(_R.INVALID_LEVERAGE, f"leverage must be an integer from 1 to {max_leverage}")
        margin = cmd.margin
        if not is_int(margin) or not 0 < margin <= MAX_AMOUNT:
            raise Reject(_R.INVALID_MARGIN, f"margin must be positive and at most {money_text(MAX_AMOUNT)}")
        bid, ask = book.bid, book.ask
        if bid is None or ask is None:
            raise Reject(_R.NO_QUOTE, f"no quote for {cmd.symbol} yet")
        if order_type != MARKET:
            self._place_pending(account, cmd, book, is_long, events)
            return
        # ---- a market order: fill it at the marked-up quote and open its position
        now = self.now
        if now - book.quote_ts > self._stale_after:
            raise Reject(_R.STALE_QUOTE, f"the last {cmd.symbol} quote is too old to trade on")
        price = ask if is_long else bid
        if cmd.slippage_bps is not None or cmd.expected_price is not None:
            check_slippage(cmd, is_long, price, instrument)
        qty = qty_for_margin(margin, leverage, price, instrument.price_decimals, instrument.qty_decimals)
        if qty < instrument.min_qty:
            raise Reject(_R.SIZE_TOO_SMALL, f"margin × leverage buys less than the minimum size {qty_text(instrument.min_qty, instrument)}")
        if qty > MAX_QTY:
            raise Reject(_R.INVALID_MARGIN, f"margin × leverage buys more than the largest position size {qty_text(MAX_QTY, instrument)}")
        close_price = bid if is_long else ask
        check_tpsl(is_long, close_price, cmd.take_profit, cmd.stop_loss, cmd.trailing_stop, instrument)
        liq = self._liquidation_price(account, is_long, qty, price, margin, instrument)
        if (bid <= liq) if is_long else (ask >= liq):
            raise Reject(_R.WOULD_LIQUIDATE, "the position would be liquidated at the current quote; lower the leverage")
        if cmd.stop_loss is not None:
            check_stop_loss_before_liquidation(is_long, cmd.stop_loss, liq, instrument)
        self._check_funds(account, margin, qty, price, instrument)
        # The tables are read inline here (the order path is hot); the checkers raise the error.
        if FILLED not in ORDER_TRANSITIONS[NEW] or OPEN not in POSITION_TRANSITIONS[NEW]:
            check_order_transition(NEW, FILLED)
            check_position_transition(NEW, OPEN)
        # ---- mutate
        order_id = self.next_order_id
        self.next_order_id = order_id + 1   # type: ignore[assignment]  # the next id; no call on the order path
        account.free -= margin
        account.locked += margin
        # positional construction: see the events module docstring
        events.append(OrderAccepted(
            order_id, account.id, cmd.symbol, cmd.side, MARKET, FILLED, price, margin, leverage,
            qty, cmd.take_profit, cmd.stop_loss, cmd.trailing_stop, None, cmd.client_order_id, now))
        events.append(BalanceChanged(
            account.id, KIND_POSITION_MARGIN, -margin, margin, account.free, account.locked,
            str(order_id), now))
        self._remember_finished(account, order_id, FILLED)
        self._open(account, book, order_id, is_long, qty, price, margin, leverage, liq,
                   cmd.take_profit, cmd.stop_loss, cmd.trailing_stop, events)

    def _place_pending(self, account: Account, cmd: Any, book: Book, is_long: bool,
                       events: list[Event]) -> None:
        """A validated limit or stop entry: reserve its margin and index it until it triggers."""
        instrument = book.instrument
        margin, leverage, now, order_type = cmd.margin, cmd.leverage, self.now, cmd.type
        price = cmd.price
        if price is None or price <= 0 or price > MAX_LEVEL:
            raise Reject(_R.INVALID_PRICE, f"a {order_type} order needs a positive price of at most {price_text(MAX_LEVEL, instrument)}")
        market = book.ask if is_long else book.bid
        assert market is not None
        if self._triggers_at_once(order_type, is_long, price, market):
            raise Reject(_R.INVALID_PRICE, f"a {cmd.side} {order_type} at that price would trigger at once (market {price_text(market, instrument)})")
        expires_at = cmd.expires_at
        if expires_at is not None and not now < expires_at <= MAX_ID:
            raise Reject(_R.INVALID_EXPIRY, "expires_at must be in the future")
        qty = qty_for_margin(margin, leverage, price, instrument.price_decimals, instrument.qty_decimals)
        if qty < instrument.min_qty:
            raise Reject(_R.SIZE_TOO_SMALL, f"margin × leverage buys less than the minimum size {qty_text(instrument.min_qty, instrument)}")
        if qty > MAX_QTY:
            raise Reject(_R.INVALID_MARGIN, f"margin × leverage buys more than the largest position size {qty_text(MAX_QTY, instrument)}")
        check_tpsl(is_long, price, cmd.take_profit, cmd.stop_loss, cmd.trailing_stop, instrument)
        if cmd.stop_loss is not None:
            check_stop_loss_before_liquidation(is_long, cmd.stop_loss, self._liquidation_price(
                account, is_long, qty, price, margin, instrument), instrument)
        if margin > account.free:
            raise Reject(_R.INSUFFICIENT_BALANCE, f"free balance {money_text(account.free)} is less than the margin {money_text(margin)}")
        if account.is_cross:
            self._check_cross_order(account, margin, qty, price, instrument)
            self._dirty.add(account.id)
        check_order_transition(NEW, PENDING)
        # ---- mutate
        order_id = self.next_order_id
        self.next_order_id = order_id + 1   # type: ignore[assignment]  # the next id; no call on the order path
        order = Order(order_id, account.id, cmd.symbol, is_long, order_type, price, margin, leverage,
                      qty, cmd.take_profit, cmd.stop_loss, cmd.trailing_stop, expires_at,
                      cmd.client_order_id, now)
        self.orders[order_id] = order
        account.orders[order_id] = order
        account.free -= margin
        account.locked += margin
        self._index_order(book, order)
        if expires_at is not None:
            self._add_expiry(expires_at, order_id)
        events.append(OrderAccepted(
            order_id, account.id, cmd.symbol, cmd.side, order_type, PENDING, price, margin, leverage,
            qty, cmd.take_profit, cmd.stop_loss, cmd.trailing_stop, expires_at,
            cmd.client_order_id, now))
        events.append(BalanceChanged(
            account.id, KIND_ORDER_MARGIN, -margin, margin, account.free, account.locked,
            str(order_id), now))

    def _check_funds(self, account: Account, margin: int, qty: int, price: int, instrument: Instrument) -> None:
        if margin > account.free:
            raise Reject(_R.INSUFFICIENT_BALANCE, f"free balance {money_text(account.free)} is less than the margin {money_text(margin)}")
        if account.is_cross:
            self._check_cross_order(account, margin, qty, price, instrument)

    def _check_cross_order(self, account: Account, margin: int, qty: int, price: int, instrument: Instrument) -> None:
        """A cross order's margin and opening commission must fit the account's free margin."""
        assert account.type is not None
        commission = commission_cents(notional_cents(qty, price, instrument.price_decimals, instrument.qty_decimals),
                                      commission_rate(account.type, instrument))
        shortfall = self._check_free_margin(account, margin, commission)
        if shortfall is not None:
            raise Reject(_R.INSUFFICIENT_MARGIN, shortfall)

    @staticmethod
    def _triggers_at_once(order_type: str, is_long: bool, price: int, market: int) -> bool:
        """Whether a pending entry at ``price`` would already be crossed by the market."""
        if order_type == LIMIT:
            return price >= market if is_long else price <= market
        return price <= market if is_long else price >= market

    def _on_cancel(self, cmd: Any, events: list[Event]) -> None:
        account = self.accounts.get(cmd.account_id)
        if account is None:
            return self._reject_command(cmd, cmd.account_id, _R.UNKNOWN_ACCOUNT, "no such account", events)
        order = account.orders.get(cmd.order_id) if is_int(cmd.order_id) else None
        if order is None:
            return self._reject_missing_order(cmd, account, events)
        check_order_transition(PENDING, CANCELLED)
        self._unindex_order(self._book_of(account, order.symbol), order, expiry=True)
        self._finish_order(order, CANCELLED, CancelReason.USER._value_, events)

    def _on_modify_order(self, cmd: Any, events: list[Event]) -> None:
        account = self.accounts.get(cmd.account_id)
        if account is None:
            return self._reject_command(cmd, cmd.account_id, _R.UNKNOWN_ACCOUNT, "no such account", events)
        order = account.orders.get(cmd.order_id) if is_int(cmd.order_id) else None
        if order is None:
            return self._reject_missing_order(cmd, account, events)
        try:
            if not (is_optional_int(cmd.price) and is_optional_int(cmd.take_profit) and is_optional_int(cmd.stop_loss)
                    and is_optional_int(cmd.expires_at)):
                raise Reject(_R.INVALID_COMMAND, "prices and times must be integers at their scale")
            book = self._book_of(account, order.symbol)
            instrument = book.instrument
            price = order.price if cmd.price is None else cmd.price
            if price <= 0 or price > MAX_LEVEL:
                raise Reject(_R.INVALID_PRICE, f"price must be positive and at most {price_text(MAX_LEVEL, instrument)}")
            if book.halted:
                raise Reject(_R.MARKET_HALTED, f"{order.symbol} is halted")
            market = book.ask if order.is_long else book.bid
            assert market is not None
            if price != order.price and self._triggers_at_once(order.type, order.is_long, price, market):
                raise Reject(_R.INVALID_PRICE, f"that price would trigger at once (market {price_text(market, instrument)})")
            take_profit = updated(order.take_profit, cmd.take_profit)
            stop_loss = updated(order.stop_loss, cmd.stop_loss)
            expires_at = updated(order.expires_at, cmd.expires_at)
            if expires_at is not None and not self.now < expires_at <= MAX_ID:
                raise Reject(_R.INVALID_EXPIRY, "expires_at must be in the future")
            qty = qty_for_margin(order.margin, order.leverage, price, instrument.price_decimals,
                                 instrument.qty_decimals)
            if qty < instrument.min_qty:
                raise Reject(_R.SIZE_TOO_SMALL, f"at that price the margin buys less than the minimum size {qty_text(instrument.min_qty, instrument)}")
            check_tpsl(order.is_long, price, take_profit, stop_loss, None, instrument)
            if stop_loss is not None:
                check_stop_loss_before_liquidation(order.is_long, stop_loss, self._liquidation_price(
                    account, order.is_long, qty, price, order.margin, instrument), instrument)
        except Reject as rejection:
            return self._reject_command(cmd, account.id, _R(rejection.reason), rejection.message, events, ref=order.id)
        self._unindex_order(book, order, expiry=True)
        order.price, order.qty = price, qty
        order.take_profit, order.stop_loss, order.expires_at = take_profit, stop_loss, expires_at
        self._index_order(book, order)
        if expires_at is not None:
            self._add_expiry(expires_at, order.id)
        events.append(OrderModified(order_id=order.id, account_id=account.id, price=price, qty=qty,
                                    take_profit=take_profit, stop_loss=stop_loss, expires_at=expires_at))

    def _reject_missing_order(self, cmd: Any, account: Account, events: list[Event]) -> None:
        finished = account.finished_orders
        status = finished.get(cmd.order_id) if finished and is_int(cmd.order_id) else None
        if status is not None:
            return self._reject_command(cmd, account.id, _R.ORDER_NOT_PENDING,
                                        f"order {cmd.order_id} is {status}", events, ref=cmd.order_id)
        return self._reject_command(cmd, account.id, _R.UNKNOWN_ORDER,
                                    f"no pending order {cmd.order_id!r} on this account", events,
                                    ref=cmd.order_id if is_int(cmd.order_id) else None)

    def _trigger_entry(self, book: Book, order: Order, events: list[Event]) -> None:
        """A pending entry was crossed: open its position at the triggering quote."""
        instrument = book.instrument
        is_long = order.is_long
        price = book.ask if is_long else book.bid
        assert price is not None
        pd, qd = instrument.price_decimals, instrument.qty_decimals
        qty = qty_for_margin(order.margin, order.leverage, price, pd, qd)
        filled = qty >= instrument.min_qty   # else a gap moved the fill so far that the margin buys too little
        check_order_transition(PENDING, FILLED if filled else CANCELLED)
        if filled:
            check_position_transition(NEW, OPEN)
        if order.expires_at is not None:
            self._discard_expiry(order.expires_at, order.id)
        if not filled:
            self._finish_order(order, CANCELLED, CancelReason.SIZE_TOO_SMALL._value_, events)
            return
        account = self.accounts[order.account_id]
        del self.orders[order.id]
        del account.orders[order.id]
        self._remember_finished(account, order.id, FILLED)
        liq = self._liquidation_price(account, is_long, qty, price, order.margin, instrument)
        stop_loss = order.stop_loss
        if stop_loss is not None and stop_loss_inert(is_long, stop_loss, liq):
            stop_loss = None   # a gap moved the fill so far that the stop could never fire
        events.append(OrderTriggered(order_id=order.id, account_id=account.id,
                                     position_id=self.next_position_id, price=price, ts=self.now))
        position = self._open(account, book, order.id, is_long, qty, price, order.margin,
                              order.leverage, liq, order.take_profit, stop_loss,
                              order.trailing_stop, events)
        # The fill may already be past the position's own triggers (a gap): act on it now.
        bid, ask = book.bid, book.ask
        assert bid is not None and ask is not None
        if is_long:
            reason = (LIQ if bid <= liq else
                      SL if position.stop_loss is not None and bid <= position.stop_loss else
                      TP if position.take_profit is not None and bid >= position.take_profit else None)
            close_price = bid
        else:
            reason = (LIQ if ask >= liq else
                      SL if position.stop_loss is not None and ask >= position.stop_loss else
                      TP if position.take_profit is not None and ask <= position.take_profit else None)
            close_price = ask
        if reason is not None:
            self._close(position, position.qty, close_price, CLOSE_REASON[reason], events)

    def _finish_order(self, order: Order, status: str, reason: str, events: list[Event]) -> None:
        """Cancel or expire a pending order (already out of the indexes): release its margin.

        The caller has checked the transition to ``status`` before changing anything.
        """
        account = self.accounts[order.account_id]
        del self.orders[order.id]
        del account.orders[order.id]
        account.free += order.margin
        account.locked -= order.margin
        if account.is_cross:
            self._dirty.add(account.id)
        self._remember_finished(account, order.id, status)
        events.append(OrderCancelled(order.id, account.id, reason, self.now))
        events.append(BalanceChanged(
            account.id, KIND_ORDER_RELEASE, order.margin, -order.margin, account.free,
            account.locked, str(order.id), self.now))

    def _expire(self, events: list[Event]) -> None:
        """Everything due by now, in a fixed order: pending orders' expiries, then dead-man
        switches (issue 13; deadline order, ties by account id), then alerts' expiries."""
        expiries = self.expiries
        now = self.now
        while expiries and expiries[0][0] <= now:
            order = self.orders[expiries[0][1]]
            check_order_transition(PENDING, EXPIRED)
            expiries.pop(0)
            self._refresh_next_expiry()
            self._unindex_order(self._book_for(order.account_id, order.symbol), order, expiry=False)
            self._finish_order(order, EXPIRED, CancelReason.EXPIRED._value_, events)
        deadlines = self.dead_man_deadlines
        while deadlines and deadlines[0][0] <= now:
            account_id = deadlines[0][1]
            self._set_dead_man(account_id, 0)
            self._fire_dead_man(self.accounts[account_id], events)
        alert_expiries = self.alert_expiries
        while alert_expiries and alert_expiries[0][0] <= now:
            self._cancel_alert(self.alerts[alert_expiries[0][1]], "expired", events)
        self._refresh_next_expiry()

    def _fire_dead_man(self, account: Account, events: list[Event]) -> None:
        """The account's dead-man switch ran out: cancel every pending order it has, by id."""
        order_ids = sorted(account.orders)
        events.append(DeadManSwitchFired(account.id, len(order_ids), self.now))
        for order_id in order_ids:
            self._cancel_pending(account.orders[order_id], CancelReason.DEAD_MAN_SWITCH._value_, events)

    def _cancel_pending(self, order: Order, reason: str, events: list[Event]) -> None:
        """Cancel a pending order with ``reason`` (out of its index and expiry queue first)."""
        check_order_transition(PENDING, CANCELLED)
        self._unindex_order(self._book_for(order.account_id, order.symbol), order, expiry=True)
        self._finish_order(order, CANCELLED, reason, events)
