"""The state's invariants, checked by tests, audits and the property-based machine.

* money is conserved: Σ free + Σ locked + house == Σ deposits − Σ withdrawals;
* no free or locked balance is negative (a cross account's free balance may be, while it has
  open positions: negative balance protection resets it when the last one closes);
* an account's ``locked`` = Σ its position margins + Σ its pending orders' margins;
* every open position's, pending order's and price alert's triggers are in the indexes (a
  position's and order's in its account's spread profile's book), and nothing else is; every
  alert is its account's, and no account holds more than its limit; every account trades on its
  type's spread profile;
* a dead-man switch is armed exactly when its deadline is queued.
"""

from __future__ import annotations

from exness_actors.errors import InvariantViolation
from exness_actors.model import Book

from ._state import ALERT, ENTRY, LIQ, MARGIN_CHECK, MAX_ALERTS_PER_ACCOUNT, SL, TP, EngineState

__all__ = ["check_invariants"]


def check_invariants(state: EngineState) -> None:
    """Raise :class:`InvariantViolation` if the state is inconsistent."""
    _check_money(state)
    _check_alerts(state)
    for book in state.books.values():
        _check_indexes(state, book, 0)
    for extras in state.profile_books.values():
        for number, book in enumerate(extras):
            _check_indexes(state, book, number + 1)
    for account in state.accounts.values():
        key = account.type.spread_profile if account.type is not None else None
        if account.profile != (state.profiles.index(key) + 1 if key in state.profiles else 0):
            raise InvariantViolation(f"account {account.id} trades on the wrong spread profile")


def _check_money(state: EngineState) -> None:
    free = locked = 0
    for account in state.accounts.values():
        if (account.free < 0 and not (account.is_cross and account.positions)) or account.locked < 0:
            raise InvariantViolation(f"account {account.id} has a negative balance")
        expected = sum(p.margin for p in account.positions.values()) + \
            sum(o.margin for o in account.orders.values())
        if expected != account.locked:
            raise InvariantViolation(f"account {account.id}: locked {account.locked} != margins {expected}")
        free += account.free
        locked += account.locked
    if free + locked + state.house != state.total_deposits - state.total_withdrawals:
        raise InvariantViolation("money is not conserved")


def _check_indexes(state: EngineState, book: Book, profile: int) -> None:
    symbol = book.instrument.symbol
    indexed = {(prio, ident) for index in (book.bid_falls, book.bid_rises, book.ask_rises, book.ask_falls)
               for _level, prio, ident in index.items() if prio != MARGIN_CHECK}
    expected_entries: set[tuple[int, int]] = set()
    for p in state.positions.values():
        if p.symbol == symbol and state.accounts[p.account_id].profile == profile:
            expected_entries.add((LIQ, p.id))
            if p.stop_loss is not None:
                expected_entries.add((SL, p.id))
            if p.take_profit is not None:
                expected_entries.add((TP, p.id))
    for o in state.orders.values():
        if o.symbol == symbol and state.accounts[o.account_id].profile == profile:
            expected_entries.add((ENTRY, o.id))
    for alert in state.alerts.values():
        if alert.symbol == symbol and not profile:   # alerts watch the market's bid (the default book)
            expected_entries.add((ALERT, alert.id))
    if indexed != expected_entries:
        raise InvariantViolation(f"{symbol}: trigger index out of step with the book")
    trailing = {ident for ident, _d, _p in book.long_trailing.items()} | \
        {ident for ident, _d, _p in book.short_trailing.items()}
    expected_trailing = {p.id for p in state.positions.values()
                         if p.symbol == symbol and p.trailing_stop is not None
                         and state.accounts[p.account_id].profile == profile}
    if trailing != expected_trailing:
        raise InvariantViolation(f"{symbol}: trailing book out of step")


def _check_alerts(state: EngineState) -> None:
    held = 0
    for account in state.accounts.values():
        alerts = account.alerts or {}
        if len(alerts) > MAX_ALERTS_PER_ACCOUNT:
            raise InvariantViolation(f"account {account.id} holds more than {MAX_ALERTS_PER_ACCOUNT} alerts")
        if any(state.alerts.get(alert_id) is not alert for alert_id, alert in alerts.items()):
            raise InvariantViolation(f"account {account.id}: alerts out of step")
        held += len(alerts)
    if held != len(state.alerts):
        raise InvariantViolation("an alert belongs to no account")
    queued = {alert_id for _at, alert_id in state.alert_expiries}
    if queued != {a.id for a in state.alerts.values() if a.expires_at is not None}:
        raise InvariantViolation("alert expiry queue out of step")
    if set(state.dead_man_deadlines) != {(deadline, account_id) for account_id, deadline in state.dead_man.items()}:
        raise InvariantViolation("dead-man deadline queue out of step")
