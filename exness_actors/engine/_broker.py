"""The broker's side (issue 13): operator commands, price alerts, the dead-man switch.

Operator commands (``HaltSymbol``/``ResumeSymbol`` with an operator, ``UpdateInstrument``,
``AdjustBalance``, ``ForceClosePosition``) name the operator (``operator_id`` > 0) and a
reason (1..:data:`~exness_actors.commands.MAX_REASON` characters). Each one that takes effect
ends with one :class:`~exness_actors.events.OperatorAction`: the journal is the audit trail. A
halt or resume without an operator (id 0, no reason: journals older than issue 13, or the
supervisor) behaves exactly as before and records no action.

``UpdateInstrument`` replaces the instrument in the core's config (so the state hash and every
snapshot carry it) at its seq; what it changes applies from then on: the spread from the next
quote, leverage, minimum size and maintenance ratio to new orders and positions (and to the
liquidation price a partial close or added margin recomputes), fee overrides to commissions
and swaps charged from then on. Scales (decimals) never change.

Price alerts sit in their symbol's bid indexes (``above``: ``bid_rises``, ``below``:
``bid_falls``), so a quote pays nothing for alerts it does not cross; one that fires is popped
and gone (:meth:`~._state.EngineState._fire_alert`). An alert that would fire at once is
refused (``INVALID_PRICE``), so an alert always fires on a quote that *crossed* its price.

The dead-man switch keeps ``account → deadline`` (engine time, from the inputs' ``ts``) in a
queue that :meth:`~._orders.OrderRules._expire` drains before each input, so a replay fires it
at the same seq.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import attrs

from exness_actors.commands import MAX_ALERT_NOTE, MAX_CLIENT_ID, MAX_REASON, AccountId, OrderId
from exness_actors.errors import InvalidValue
from exness_actors.events import (
    AlertPlaced, BalanceChanged, DeadManSwitchSet, Event, InstrumentUpdated, OperatorAction, PositionClosed,
    SymbolHalted, SymbolResumed,
)
from exness_actors.instruments import Instrument
from exness_actors.model import Account, Alert
from exness_actors.reasons import AlertCondition, BalanceKind, CancelReason, CloseReason, OperatorActionKind
from exness_actors.reasons import RejectReason as _R

from ._market import MarketRules
from ._state import MAX_ALERTS_PER_ACCOUNT
from ._validation import (
    MAX_AMOUNT, MAX_BALANCE, MAX_ID, MAX_LEVEL, MAX_QTY, Reject, is_int, money_text, price_text, qty_text,
)

__all__ = ["BrokerRules", "INSTRUMENT_FIELDS", "FEE_FIELDS", "MAX_DEAD_MAN_NS", "MAX_CANCEL_ORDERS"]

#: The instrument fields ``UpdateInstrument`` may change (integers at their scale).
INSTRUMENT_FIELDS = ("spread_bps", "max_leverage", "min_qty", "maintenance_bps", "commission_ppm",
                     "swap_long_ppm", "swap_short_ppm")
#: Of those, the fee overrides: ``None`` sets one back to the account types' rates.
FEE_FIELDS = ("commission_ppm", "swap_long_ppm", "swap_short_ppm")
#: The longest dead-man timeout: one day (Kraken's limit).
MAX_DEAD_MAN_NS = 86_400 * 10**9
#: The most order ids one ``CancelOrders`` may name.
MAX_CANCEL_ORDERS = 10_000
_ABOVE, _BELOW = AlertCondition.ABOVE._value_, AlertCondition.BELOW._value_
_CANCEL_ORDERS_REASONS = (CancelReason.USER._value_, CancelReason.CANCEL_ON_DISCONNECT._value_)


def _detail(fields: dict[str, Any]) -> str:
    """The compact, canonical JSON text of an ``OperatorAction.detail``."""
    return json.dumps(fields, separators=(",", ":"), sort_keys=True)


def _operator_problem(cmd: Any) -> Optional[tuple[_R, str]]:
    """Why the command's operator fields are unacceptable (None when they are fine)."""
    operator_id, reason = cmd.operator_id, cmd.reason
    if not is_int(operator_id) or not 0 < operator_id <= MAX_ID:
        return _R.INVALID_COMMAND, "operator_id must be a positive integer"
    if type(reason) is not str or not reason.strip() or len(reason) > MAX_REASON:
        return _R.INVALID_REASON, f"reason must be a non-empty text of at most {MAX_REASON} characters"
    return None


class BrokerRules(MarketRules):
    """Operator commands, price alerts, the dead-man switch and bulk cancels."""

    # ------------------------------------------------------------------ operators

    def _operator_action(self, cmd: Any, action: OperatorActionKind, account_id: Optional[AccountId],
                         target: str, detail: dict[str, Any], events: list[Event]) -> None:
        events.append(OperatorAction(cmd.operator_id, action._value_, account_id, target, cmd.reason,
                                     _detail(detail), self.now))

    def _on_halt(self, cmd: Any, events: list[Event]) -> None:
        self._halt_or_resume(cmd, True, events)

    def _on_resume(self, cmd: Any, events: list[Event]) -> None:
        self._halt_or_resume(cmd, False, events)

    def _halt_or_resume(self, cmd: Any, halt: bool, events: list[Event]) -> None:
        book = self.books.get(cmd.symbol)
        if book is None:
            return self._reject_command(cmd, None, _R.UNKNOWN_SYMBOL, f"unknown symbol {cmd.symbol!r}", events)
        by_operator = not (cmd.operator_id == 0 and cmd.reason == "")
        if by_operator:
            problem = _operator_problem(cmd)
            if problem is not None:
                return self._reject_command(cmd, None, problem[0], problem[1], events)
        book.halted = halt
        for extra in self.profile_books.get(cmd.symbol, ()):
            extra.halted = halt
        events.append(SymbolHalted(symbol=cmd.symbol) if halt else SymbolResumed(symbol=cmd.symbol))
        if by_operator:
            self._operator_action(cmd, OperatorActionKind.HALT if halt else OperatorActionKind.RESUME, None,
                                  cmd.symbol, {}, events)

    def _on_update_instrument(self, cmd: Any, events: list[Event]) -> None:
        problem = _operator_problem(cmd)
        if problem is not None:
            return self._reject_command(cmd, None, problem[0], problem[1], events)
        instrument = self.instruments.get(cmd.symbol) if type(cmd.symbol) is str else None
        if instrument is None:
            return self._reject_command(cmd, None, _R.UNKNOWN_SYMBOL, f"unknown symbol {cmd.symbol!r}", events)
        try:
            changes = self._instrument_changes(cmd.changes)
            updated = attrs.evolve(instrument, **dict(changes))
        except Reject as rejection:
            return self._reject_command(cmd, None, _R(rejection.reason), rejection.message, events)
        except InvalidValue as exc:
            return self._reject_command(cmd, None, _R.INVALID_COMMAND, f"changes: {exc}", events)
        self._replace_instrument(updated)
        events.append(InstrumentUpdated(cmd.symbol, changes, self.now))
        self._operator_action(cmd, OperatorActionKind.UPDATE_INSTRUMENT, None, cmd.symbol,
                              {field: value for field, value in changes}, events)

    @staticmethod
    def _instrument_changes(changes: Any) -> list[list[Any]]:
        """``[[field, value], …]`` checked: known fields, once each, integers (or None for fees)."""
        if type(changes) is not list or not changes or len(changes) > len(INSTRUMENT_FIELDS):
            raise Reject(_R.INVALID_COMMAND, "changes must be a non-empty list of [field, value] pairs")
        checked: list[list[Any]] = []
        seen: set[str] = set()
        for change in changes:
            if type(change) not in (list, tuple) or len(change) != 2:
                raise Reject(_R.INVALID_COMMAND, "changes must be a non-empty list of [field, value] pairs")
            field, value = change[0], change[1]
            if type(field) is not str or field not in INSTRUMENT_FIELDS or field in seen:
                raise Reject(_R.INVALID_COMMAND, f"changes: {field!r} is not a changeable instrument field "
                             f"(or appears twice); one of {', '.join(INSTRUMENT_FIELDS)}")
            if not (is_int(value) or (value is None and field in FEE_FIELDS)):
                raise Reject(_R.INVALID_COMMAND, f"changes: {field} must be an integer at its scale")
            if field == "min_qty" and value > MAX_QTY:
                raise Reject(_R.INVALID_COMMAND, "changes: min_qty is larger than the largest position size")
            seen.add(field)
            checked.append([field, value])
        return checked

    def _replace_instrument(self, instrument: Instrument) -> None:
        symbol = instrument.symbol
        self.config = attrs.evolve(self.config, instruments=tuple(
            instrument if existing.symbol == symbol else existing for existing in self.config.instruments))
        self.instruments[symbol] = instrument
        self.books[symbol].instrument = instrument
        for extra in self.profile_books.get(symbol, ()):   # per-type spreads follow it from the next quote
            extra.instrument = instrument

    def _on_adjust_balance(self, cmd: Any, events: list[Event]) -> None:
        problem = _operator_problem(cmd)
        if problem is not None:
            return self._reject_command(cmd, cmd.account_id, problem[0], problem[1], events)
        account = self.accounts.get(cmd.account_id) if is_int(cmd.account_id) else None
        if account is None:
            return self._reject_command(cmd, cmd.account_id, _R.UNKNOWN_ACCOUNT, "no such account", events)
        key = cmd.idempotency_key
        if type(key) is not str or len(key) > MAX_CLIENT_ID:
            return self._reject_command(cmd, account.id, _R.INVALID_COMMAND, f"idempotency_key must be a string of at most {MAX_CLIENT_ID} characters", events)
        remembered = "a:" + key if key else ""
        if remembered and self._duplicate(account, remembered, cmd, events):
            return
        amount = cmd.amount
        try:
            self._check_adjustment(account, amount)
        except Reject as rejection:
            if remembered:
                self._remember(account, remembered, None, rejection.reason)
            return self._reject_command(cmd, account.id, _R(rejection.reason), rejection.message, events)
        if remembered:
            self._remember(account, remembered, None, None)
        account.free += amount
        if amount > 0:
            self.total_deposits += amount
        else:
            self.total_withdrawals -= amount
        if account.is_cross:
            self._dirty.add(account.id)
        events.append(BalanceChanged(account.id, BalanceKind.OPERATOR_ADJUSTMENT._value_, amount, 0, account.free,
                                     account.locked, key, self.now))
        detail = {"amount": money_text(amount), "idempotency_key": key} if key else {"amount": money_text(amount)}
        self._operator_action(cmd, OperatorActionKind.ADJUST_BALANCE, account.id, str(account.id), detail, events)

    def _check_adjustment(self, account: Account, amount: Any) -> None:
        if not is_int(amount) or amount == 0 or not -MAX_AMOUNT <= amount <= MAX_AMOUNT:
            raise Reject(_R.INVALID_AMOUNT, f"amount must be a non-zero number of cents of at most {money_text(MAX_AMOUNT)} either way")
        if amount > 0 and account.free + account.locked + amount > MAX_BALANCE:
            raise Reject(_R.INVALID_AMOUNT, f"the balance would exceed {money_text(MAX_BALANCE)}")
        if amount < 0 and -amount > account.free:
            raise Reject(_R.INSUFFICIENT_BALANCE, f"free balance {money_text(account.free)} is less than {money_text(-amount)}")
        if amount < 0 and account.is_cross and -amount > self._free_margin(account):
            raise Reject(_R.INSUFFICIENT_MARGIN, f"free margin {money_text(self._free_margin(account))} is less than {money_text(-amount)}")

    def _on_force_close(self, cmd: Any, events: list[Event]) -> None:
        problem = _operator_problem(cmd)
        if problem is not None:
            return self._reject_command(cmd, None, problem[0], problem[1], events)
        position = self.positions.get(cmd.position_id) if is_int(cmd.position_id) else None
        if position is None:
            return self._reject_command(cmd, None, _R.UNKNOWN_POSITION, f"no open position {cmd.position_id!r}",
                                        events, ref=cmd.position_id if is_int(cmd.position_id) else None)
        book = self._book_for(position.account_id, position.symbol)   # at the account's own prices
        if self.now - book.quote_ts > self._stale_after:
            return self._reject_command(cmd, position.account_id, _R.STALE_QUOTE,
                                        f"the last {position.symbol} quote is too old to close on", events, ref=position.id)
        price = book.bid if position.is_long else book.ask
        assert price is not None
        qty, instrument = position.qty, book.instrument
        first = len(events)
        self._close(position, qty, price, CloseReason.OPERATOR._value_, events)
        pnl = sum(event.pnl for event in events[first:] if isinstance(event, PositionClosed))
        self._operator_action(cmd, OperatorActionKind.CLOSE_POSITION, position.account_id, str(position.id),
                              {"qty": qty_text(qty, instrument), "price": price_text(price, instrument),
                               "pnl": money_text(pnl)}, events)

    # ------------------------------------------------------------------ price alerts

    def _on_place_alert(self, cmd: Any, events: list[Event]) -> None:
        account = self.accounts.get(cmd.account_id) if is_int(cmd.account_id) else None
        if account is None:
            return self._reject_command(cmd, cmd.account_id, _R.UNKNOWN_ACCOUNT, "no such account", events)
        client_id = cmd.client_alert_id
        if type(client_id) is not str or len(client_id) > MAX_CLIENT_ID:
            return self._reject_command(cmd, account.id, _R.INVALID_COMMAND, f"client_alert_id must be a string of at most {MAX_CLIENT_ID} characters", events)
        key = "l:" + client_id if client_id else ""
        if key and self._duplicate(account, key, cmd, events):
            return
        try:
            self._check_alert(account, cmd)
        except Reject as rejection:
            if key:
                self._remember(account, key, None, rejection.reason)
            return self._reject_command(cmd, account.id, _R(rejection.reason), rejection.message, events)
        alert_id = self.next_alert_id
        self.next_alert_id = alert_id + 1
        if key:
            self._remember(account, key, OrderId(alert_id), None)
        alert = Alert(alert_id, account.id, cmd.symbol, cmd.condition == _ABOVE, cmd.price, cmd.note,
                      cmd.expires_at, client_id, self.now)
        self._add_alert(alert)
        events.append(AlertPlaced(alert_id, account.id, alert.symbol, cmd.condition, alert.price, alert.note,
                                  alert.expires_at, client_id, self.now))

    def _check_alert(self, account: Account, cmd: Any) -> None:
        book = self.books.get(cmd.symbol) if type(cmd.symbol) is str else None
        if book is None:
            raise Reject(_R.UNKNOWN_SYMBOL, f"unknown symbol {cmd.symbol!r}")
        condition, price, note, expires_at = cmd.condition, cmd.price, cmd.note, cmd.expires_at
        if condition not in (_ABOVE, _BELOW):
            raise Reject(_R.INVALID_COMMAND, f"condition must be 'above' or 'below', not {condition!r}")
        if not is_int(price) or not 0 < price <= MAX_LEVEL:
            raise Reject(_R.INVALID_PRICE, f"price must be positive and at most {price_text(MAX_LEVEL, book.instrument)}")
        if type(note) is not str or len(note) > MAX_ALERT_NOTE:
            raise Reject(_R.INVALID_COMMAND, f"note must be a text of at most {MAX_ALERT_NOTE} characters")
        if expires_at is not None and (not is_int(expires_at) or not self.now < expires_at <= MAX_ID):
            raise Reject(_R.INVALID_EXPIRY, "expires_at must be in the future")
        if account.alerts is not None and len(account.alerts) >= MAX_ALERTS_PER_ACCOUNT:
            raise Reject(_R.TOO_MANY_ALERTS, f"an account may hold at most {MAX_ALERTS_PER_ACCOUNT} active alerts")
        bid = book.bid
        if bid is None:
            raise Reject(_R.NO_QUOTE, f"no quote for {cmd.symbol} yet")
        if (bid >= price) if condition == _ABOVE else (bid <= price):
            raise Reject(_R.INVALID_PRICE, f"the bid {price_text(bid, book.instrument)} is already {condition} "
                         f"{price_text(price, book.instrument)}: the alert would fire at once")

    def _on_cancel_alert(self, cmd: Any, events: list[Event]) -> None:
        account = self.accounts.get(cmd.account_id) if is_int(cmd.account_id) else None
        if account is None:
            return self._reject_command(cmd, cmd.account_id, _R.UNKNOWN_ACCOUNT, "no such account", events)
        alert_id = cmd.alert_id
        alert = account.alerts.get(alert_id) if account.alerts and is_int(alert_id) else None
        if alert is None:
            return self._reject_command(cmd, account.id, _R.UNKNOWN_ALERT, f"no active alert {alert_id!r} on this account",
                                        events, ref=alert_id if is_int(alert_id) else None)
        self._cancel_alert(alert, "cancelled", events)

    # ------------------------------------------------------------------ dead-man switch, bulk cancel

    def _on_cancel_all_after(self, cmd: Any, events: list[Event]) -> None:
        account = self.accounts.get(cmd.account_id) if is_int(cmd.account_id) else None
        if account is None:
            return self._reject_command(cmd, cmd.account_id, _R.UNKNOWN_ACCOUNT, "no such account", events)
        timeout = cmd.timeout_ns
        if not is_int(timeout) or not 0 <= timeout <= MAX_DEAD_MAN_NS:
            return self._reject_command(cmd, account.id, _R.INVALID_COMMAND,
                                        f"timeout must be 0 (disarm) to {MAX_DEAD_MAN_NS // 10**9} seconds", events)
        deadline = self.now + timeout if timeout else 0
        self._set_dead_man(account.id, deadline)
        events.append(DeadManSwitchSet(account.id, deadline, self.now))

    def _on_cancel_orders(self, cmd: Any, events: list[Event]) -> None:
        account = self.accounts.get(cmd.account_id) if is_int(cmd.account_id) else None
        if account is None:
            return self._reject_command(cmd, cmd.account_id, _R.UNKNOWN_ACCOUNT, "no such account", events)
        order_ids, reason = cmd.order_ids, cmd.reason
        if (type(order_ids) is not list or len(order_ids) > MAX_CANCEL_ORDERS
                or not all(is_int(order_id) for order_id in order_ids)):
            return self._reject_command(cmd, account.id, _R.INVALID_COMMAND,
                                        f"order_ids must be a list of at most {MAX_CANCEL_ORDERS} integers", events)
        if reason not in _CANCEL_ORDERS_REASONS:
            return self._reject_command(cmd, account.id, _R.INVALID_COMMAND,
                                        f"reason must be one of {', '.join(_CANCEL_ORDERS_REASONS)}", events)
        for order_id in sorted(set(order_ids)):
            order = account.orders.get(order_id)
            if order is not None:   # no longer pending (filled, cancelled, expired): skipped
                self._cancel_pending(order, reason, events)
