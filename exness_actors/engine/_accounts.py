"""Account handlers: create an account, deposit, withdraw.

Money enters and leaves the system only here, so these keep the ledger totals
(``total_deposits``/``total_withdrawals``) that the conservation invariant checks. Deposits and
withdrawals with an ``idempotency_key`` are remembered in the account's bounded window.
"""

from __future__ import annotations

from typing import Any

from exness_actors.commands import MAX_CLIENT_ID
from exness_actors.events import AccountCreated, BalanceChanged, Event
from exness_actors.model import Account
from exness_actors.reasons import BalanceKind
from exness_actors.reasons import RejectReason as _R

from ._queries import EngineQueries
from ._validation import MAX_AMOUNT, MAX_BALANCE, MAX_ID, is_int, money_text

__all__ = ["AccountRules"]


class AccountRules(EngineQueries):
    """Creating accounts and moving money in and out of them."""

    def _on_create_account(self, cmd: Any, events: list[Event]) -> None:
        account_id, deposit = cmd.account_id, cmd.initial_deposit
        if not is_int(account_id) or not 0 < account_id <= MAX_ID:
            return self._reject_command(cmd, None, _R.INVALID_COMMAND, "account_id must be a positive integer", events)
        if account_id in self.accounts:
            return self._reject_command(cmd, account_id, _R.ACCOUNT_EXISTS, f"account {account_id} already exists", events)
        if not is_int(deposit) or not 0 <= deposit <= MAX_AMOUNT:
            return self._reject_command(cmd, account_id, _R.INVALID_AMOUNT, "initial_deposit must be a non-negative number of cents", events)
        account = Account(account_id, free=deposit)
        self.accounts[account_id] = account
        self.total_deposits += deposit
        events.append(AccountCreated(account_id=account_id, balance=deposit))
        if deposit:
            events.append(BalanceChanged(account_id=account_id, kind=BalanceKind.DEPOSIT.value,
                                         free_delta=deposit, locked_delta=0, free=deposit, locked=0,
                                         ref="initial", ts=self.now))

    def _on_deposit(self, cmd: Any, events: list[Event]) -> None:
        self._funding(cmd, events, deposit=True)

    def _on_withdraw(self, cmd: Any, events: list[Event]) -> None:
        self._funding(cmd, events, deposit=False)

    def _funding(self, cmd: Any, events: list[Event], *, deposit: bool) -> None:
        account = self.accounts.get(cmd.account_id)
        if account is None:
            return self._reject_command(cmd, cmd.account_id, _R.UNKNOWN_ACCOUNT, "no such account", events)
        key = cmd.idempotency_key
        if type(key) is not str or len(key) > MAX_CLIENT_ID:
            return self._reject_command(cmd, cmd.account_id, _R.INVALID_COMMAND, f"idempotency_key must be a string of at most {MAX_CLIENT_ID} characters", events)
        if key:
            key = "f:" + key
            if self._duplicate(account, key, cmd, events):
                return
        amount = cmd.amount
        reason = None
        if not is_int(amount) or not 0 < amount <= MAX_AMOUNT:
            reason, message = _R.INVALID_AMOUNT, f"amount must be positive and at most {money_text(MAX_AMOUNT)}"
        elif deposit and account.free + account.locked + amount > MAX_BALANCE:
            reason, message = _R.INVALID_AMOUNT, f"the balance would exceed {money_text(MAX_BALANCE)}"
        elif not deposit and amount > account.free:
            reason, message = _R.INSUFFICIENT_BALANCE, f"free balance {money_text(account.free)} is less than {money_text(amount)}"
        elif not deposit and account.is_cross and amount > self._free_margin(account):
            reason, message = _R.INSUFFICIENT_MARGIN, f"free margin {money_text(self._free_margin(account))} is less than {money_text(amount)}"
        elif deposit and account.type is not None and amount < account.type.min_deposit and not (account.free or account.locked):
            reason, message = _R.INVALID_AMOUNT, f"the first deposit of a {account.type.name} account must be at least {money_text(account.type.min_deposit)}"
        if reason is not None:
            if key:
                self._remember(account, key, None, reason._value_)
            return self._reject_command(cmd, account.id, reason, message, events)
        if key:
            self._remember(account, key, None, None)
        if account.is_cross:
            self._dirty.add(account.id)
        if deposit:
            account.free += amount
            self.total_deposits += amount
        else:
            account.free -= amount
            self.total_withdrawals += amount
        events.append(BalanceChanged(
            account_id=account.id, kind=(BalanceKind.DEPOSIT if deposit else BalanceKind.WITHDRAW).value,
            free_delta=amount if deposit else -amount, locked_delta=0, free=account.free,
            locked=account.locked, ref=cmd.idempotency_key, ts=self.now))
