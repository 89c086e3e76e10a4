"""Cross margin (issue 16): typed accounts, equity and margin level, margin call, stop-out, fees.

Theory of operation
-------------------
A ``cross`` account is judged as a whole: ``equity = free + locked + Σ pnl`` (each position's
pnl at the closing side of the current quote, floored to cents), ``used margin = locked`` (the
positions' margins plus pending orders' reservations) and ``margin level = equity / used``.
Its type fixes a margin-call level and a stop-out level (percent). After every input, each
cross account the input changed is *settled* (:meth:`CrossRules._settle`), in account-id order:

1. at or below the call level, not yet called: one :class:`MarginCall`;
2. at or below the stop-out level: one :class:`StopOut`, then the position with the largest
   loss (ties: the smaller id) closes at the current quote with reason ``stop_out``; re-check,
   repeat while the level is still at or below the stop-out level;
3. above the call level again: the call is re-armed (silently);
4. new *margin watches* are indexed (below).

Margin watches (the indexed scheme; cost and proof in docs/decisions.md). A quote may only
touch the accounts it can change. For each cross account, each *leg* (symbol × side it holds)
gets a share of the account's distance to the next boundary (the call level, or the stop-out
level once called; the call level from below while called), converted into a price on that
leg's closing side, and indexed in the symbol's trigger indexes with priority
``margin_check`` and the account id. While no leg crosses its price, every leg's pnl change is
strictly less than its share, so the sum cannot reach the boundary; a quote that crosses one
pops it and marks the account for settling — exactly like a liquidation price. The prices are
conservative (floors are bounded by one cent per position), never late, so the settled
outcomes equal a brute-force recheck of every account on every quote (tests/test_core_accounts.py).

Negative balance protection: a cross account's realised losses may leave ``free`` negative while
positions stay open (they are covered by the rest of the equity); when its last position closes
with ``free`` below zero, the house absorbs the deficit (``balance_reset``).

Fees: commission per side in ppm of notional (:func:`~exness_actors.account_types.commission_cents`,
rounded up) at open and on every (partial) close; swaps once per daily rollover (the inputs'
``ts`` crossing ``rollover_ns`` past midnight) on every position of a non-swap-free type, in ppm
of the position's open notional per day. Both are ledger entries (``commission``, ``swap``) and
accumulate on the position; the house's P&L keeps them by source.
"""

from __future__ import annotations

from typing import Optional

import attrs

from exness_actors.account_types import AccountType, commission_cents, swap_cents
from exness_actors.commands import OpenAccount, SetAccountTypes
from exness_actors.errors import InvalidValue
from exness_actors.events import (
    AccountOpened, AccountTypesChanged, BalanceChanged, Event, MarginCall, PositionFees, StopOut,
)
from exness_actors.model import Account, Position
from exness_actors.instruments import Instrument
from exness_actors.money import liquidation_price, notional_cents, pnl_cents
from exness_actors.reasons import BalanceKind, CloseReason
from exness_actors.reasons import RejectReason as _R

from ._accounts import AccountRules
from ._queries import Leg
from ._state import MARGIN_CHECK, NEVER
from ._validation import MAX_AMOUNT, MAX_ID, MAX_LEVEL, commission_rate, is_int, money_text, swap_rate

__all__ = ["CrossRules", "NO_SHORT_LIQUIDATION", "DAY_NS"]

#: a cross position has no liquidation price of its own: a long's is 0 (never reached), a
#: short's is beyond any ask the engine accepts
NO_SHORT_LIQUIDATION = 2 * MAX_LEVEL
DAY_NS = 86_400 * 10**9
KIND_COMMISSION = BalanceKind.COMMISSION._value_
KIND_SWAP = BalanceKind.SWAP._value_
KIND_BALANCE_RESET = BalanceKind.BALANCE_RESET._value_
STOP_OUT = CloseReason.STOP_OUT._value_

#: a leg's aggregates: ``[Σ qty, Σ qty·open_price, positions, Σ floored pnl now]``


class CrossRules(AccountRules):
    """Typed accounts, cross-margin settling, margin watches, commissions and swaps."""

    def _close(self, position: Position, qty: int, price: int, reason: str, events: list[Event]) -> None:
        """Close ``qty`` of ``position`` (the position layer above implements it)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ opening an account

    def _on_open_account(self, cmd: OpenAccount, events: list[Event]) -> None:
        account_id, deposit = cmd.account_id, cmd.initial_deposit
        account_type = self.config.account_type(cmd.account_type) if type(cmd.account_type) is str else None
        if not is_int(account_id) or not 0 < account_id <= MAX_ID:
            return self._reject_command(cmd, None, _R.INVALID_COMMAND, "account_id must be a positive integer", events)
        if account_id in self.accounts:
            return self._reject_command(cmd, account_id, _R.ACCOUNT_EXISTS, f"account {account_id} already exists", events)
        if account_type is None:
            names = ", ".join(t.name for t in self.config.account_types) or "none configured"
            return self._reject_command(cmd, account_id, _R.UNKNOWN_ACCOUNT_TYPE, f"account_type must be one of: {names}", events)
        if not is_int(deposit) or not 0 <= deposit <= MAX_AMOUNT:
            return self._reject_command(cmd, account_id, _R.INVALID_AMOUNT, "initial_deposit must be a non-negative number of cents", events)
        account = self.accounts[account_id] = Account(account_id, free=deposit, account_type=account_type)
        account.profile = self._use_profile(account_type)
        self.total_deposits += deposit
        events.append(AccountOpened(account_id=account_id, account_type=account_type.name, balance=deposit))
        if deposit:
            events.append(BalanceChanged(account_id=account_id, kind=BalanceKind.DEPOSIT.value,
                                         free_delta=deposit, locked_delta=0, free=deposit, locked=0,
                                         ref="initial", ts=self.now))

    def _on_set_account_types(self, cmd: SetAccountTypes, events: list[Event]) -> None:
        try:
            types = tuple(AccountType.from_wire(list(wire)) for wire in cmd.account_types)
            config = attrs.evolve(self.config, account_types=types, rollover_ns=cmd.rollover_ns)
        except (InvalidValue, TypeError, ValueError) as exc:
            return self._reject_command(cmd, None, _R.INVALID_COMMAND, f"account types: {exc}", events)
        for account_id in sorted(self.accounts):
            old = self.accounts[account_id].type
            new = config.account_type(old.name) if old is not None else None
            if old is not None and (new is None or new.margin_mode != old.margin_mode):
                return self._reject_command(cmd, None, _R.INVALID_COMMAND, f"account {account_id} is of type {old.name!r}: a type in use keeps its name and margin mode", events)
        self.config = config
        if self.next_rollover == NEVER and types:
            self.next_rollover = 0
        for account_id in sorted(self.accounts):
            account = self.accounts[account_id]
            if account.type is not None:
                account.type = config.account_type(account.type.name)
                profile = self._use_profile(account.type)
                if profile != account.profile:
                    self._refile(account, profile)
                if account.is_cross:
                    self._dirty.add(account.id)
        events.append(AccountTypesChanged(names=[t.name for t in types], rollover_ns=config.rollover_ns))

    def _refile(self, account: Account, profile: int) -> None:
        """Move the account's triggers to another spread profile's books (its type's spread was
        changed): same levels, trailing stops keep their peaks; what the new prices already
        cross fires on the symbol's next quote."""
        peaks: dict[int, int] = {}
        self._unwatch(account)
        for pid in sorted(account.positions):
            position = account.positions[pid]
            book = self._book_of(account, position.symbol)
            if position.trailing_stop is not None:
                peaks[pid] = (book.long_trailing if position.is_long else book.short_trailing).peak_of(pid)
            self._unindex_position(book, position)
        for oid in sorted(account.orders):
            self._unindex_order(self._book_of(account, account.orders[oid].symbol), account.orders[oid], expiry=False)
        account.profile = profile
        for pid in sorted(account.positions):
            position = account.positions[pid]
            self._index_position(self._book_of(account, position.symbol), position, trailing_peak=peaks.get(pid))
        for oid in sorted(account.orders):
            self._index_order(self._book_of(account, account.orders[oid].symbol), account.orders[oid])

    # ------------------------------------------------------------------ the account as a whole

    def _settle_accounts(self, events: list[Event]) -> None:
        dirty = self._dirty
        while dirty:
            account_id = min(dirty)
            dirty.discard(account_id)
            account = self.accounts.get(account_id)
            if account is not None and account.is_cross:
                self._settle(account, events)

    def _settle(self, account: Account, events: list[Event]) -> None:
        """Margin call, stop-out and re-arming as the account now stands; then re-watch it."""
        account_type = account.type
        assert account_type is not None
        call, stop_out = account_type.margin_call_pct, account_type.stop_out_pct
        unrealized, legs = self._legs(account)
        equity, used = account.free + account.locked + unrealized, account.locked
        if used and equity * 100 <= call * used and not account.in_margin_call:
            account.in_margin_call = True
            events.append(MarginCall(account.id, equity, used, self.now))
        if account.positions and equity * 100 <= stop_out * used:
            events.append(StopOut(account.id, equity, used, self.now))
            while account.positions and equity * 100 <= stop_out * used:
                self._close_largest_loss(account, events)
                unrealized, legs = self._legs(account)
                equity, used = account.free + account.locked + unrealized, account.locked
            self._dirty.discard(account.id)
        if account.in_margin_call and (not used or equity * 100 > call * used):
            account.in_margin_call = False
        self._watch(account, equity, used, legs)

    def _close_largest_loss(self, account: Account, events: list[Event]) -> None:
        worst: Optional[tuple[int, int, Position]] = None
        for position in account.positions.values():
            book = self._book_of(account, position.symbol)
            price = book.bid if position.is_long else book.ask
            assert price is not None
            pnl = pnl_cents(position.is_long, position.qty, position.open_price, price,
                            book.instrument.price_decimals, book.instrument.qty_decimals)
            if worst is None or (pnl, position.id) < worst[:2]:
                worst = (pnl, position.id, position)
        assert worst is not None
        position = worst[2]
        book = self._book_of(account, position.symbol)
        price = book.bid if position.is_long else book.ask
        assert price is not None
        self._close(position, position.qty, price, STOP_OUT, events)

    # ------------------------------------------------------------------ margin watches

    def _watch_all(self) -> None:
        """Index every cross account's margin watches (after a restore; they are not state)."""
        for account_id in sorted(self.accounts):
            account = self.accounts[account_id]
            if account.is_cross:
                unrealized, legs = self._legs(account)
                self._watch(account, account.free + account.locked + unrealized, account.locked, legs)

    def _unwatch(self, account: Account) -> None:
        for index, level in account.watches:
            index.discard(level, MARGIN_CHECK, account.id)
        account.watches = []

    def _watch(self, account: Account, equity: int, used: int, legs: dict[tuple[str, bool], Leg]) -> None:
        """Index one price per leg and boundary such that no boundary is reached before one fires."""
        self._unwatch(account)
        if not used or not legs:
            return
        account_type = account.type
        assert account_type is not None
        lower = account_type.stop_out_pct if account.in_margin_call else account_type.margin_call_pct
        loss_share = (equity * 100 - lower * used) // len(legs)        # hundredths of a cent
        gain_share = (account_type.margin_call_pct * used - equity * 100) // len(legs)
        watches = account.watches
        for (symbol, is_long) in sorted(legs):
            qty, weighted, count, pnl = legs[(symbol, is_long)]
            book = self._book_of(account, symbol)
            scale = 10 ** (book.instrument.price_decimals + book.instrument.qty_decimals)
            loss_cents = -(-loss_share // 100)        # a leg may lose at most this minus one cent
            base = (pnl + count - loss_cents) * scale
            if is_long:
                watches.append((book.bid_falls, -(-(base + 100 * weighted) // (100 * qty)) - 1))
            else:
                watches.append((book.ask_rises, (100 * weighted - base) // (100 * qty) + 1))
            if account.in_margin_call:
                gain = (gain_share + 100 * pnl) * scale
                if is_long:
                    watches.append((book.bid_rises, (gain + 10_000 * weighted) // (10_000 * qty) + 1))
                else:
                    watches.append((book.ask_falls, -(-(10_000 * weighted - gain) // (10_000 * qty)) - 1))
        for index, level in watches:
            index.add(level, MARGIN_CHECK, account.id)

    def _liquidation_price(self, account: Account, is_long: bool, qty: int, open_price: int, margin: int,
                           instrument: Instrument) -> int:
        """An isolated position's liquidation price; a cross one's is out of reach (settling guards it)."""
        if account.is_cross:
            return 0 if is_long else NO_SHORT_LIQUIDATION
        return liquidation_price(is_long, qty, open_price, margin, instrument.maintenance_bps,
                                 instrument.price_decimals, instrument.qty_decimals)

    # ------------------------------------------------------------------ fees

    def _charge(self, account: Account, amount: int, kind: str, ref: str, events: list[Event]) -> None:
        """Move ``amount`` cents from the account's free balance to the house (negative: back)."""
        account.free -= amount
        self.house += amount
        events.append(BalanceChanged(account.id, kind, -amount, 0, account.free, account.locked, ref, self.now))
        self._dirty.add(account.id)

    def _open_commission(self, account: Account, position: Position, events: list[Event]) -> None:
        account_type = account.type
        if account_type is None:
            return
        instrument = self.instruments[position.symbol]
        rate = commission_rate(account_type, instrument)
        if not rate:
            return
        fee = commission_cents(notional_cents(position.qty, position.open_price, instrument.price_decimals,
                                              instrument.qty_decimals), rate)
        position.commission += fee
        self.house_commission += fee
        self._charge(account, fee, KIND_COMMISSION, str(position.id), events)

    def _close_fees(self, account: Account, position: Position, qty: int, whole: int, price: int,
                    events: list[Event]) -> None:
        """The closing side's commission, and the closed share (of ``whole``, the size before
        this close) of what the position paid so far."""
        account_type = account.type
        assert account_type is not None
        instrument = self.instruments[position.symbol]
        fee = commission_cents(notional_cents(qty, price, instrument.price_decimals, instrument.qty_decimals),
                               commission_rate(account_type, instrument))
        commission = -(-position.commission * qty // whole) if qty != whole else position.commission
        swap = position.swap * qty // whole if qty != whole else position.swap
        position.commission -= commission
        position.swap -= swap
        if fee:
            self.house_commission += fee
            self._charge(account, fee, KIND_COMMISSION, str(position.id), events)
        events.append(PositionFees(position.id, account.id, commission + fee, swap))

    def _reset_negative_balance(self, account: Account, events: list[Event]) -> None:
        """Negative balance protection for a cross account left with no open position."""
        if account.free >= 0 or account.positions:
            return
        deficit = -account.free
        self.house_absorbed += deficit
        self._charge(account, -deficit, KIND_BALANCE_RESET, "negative_balance", events)

    def _rollover(self, events: list[Event]) -> None:
        """Charge a day's swap (per rollover passed) on every position of a swap-paying account."""
        if self.next_rollover:
            days = (self.now - self.next_rollover) // DAY_NS + 1
            for account_id in sorted(self.accounts):
                self._charge_swaps(self.accounts[account_id], days, events)
        day_start = self.now - self.now % DAY_NS
        rollover = day_start + self.config.rollover_ns
        self.next_rollover = rollover if rollover > self.now else rollover + DAY_NS

    def _charge_swaps(self, account: Account, days: int, events: list[Event]) -> None:
        account_type = account.type
        if account_type is None or account_type.swap_free or not account.is_cross:
            return
        for position_id in sorted(account.positions):
            position = account.positions[position_id]
            instrument = self.instruments[position.symbol]
            rate = swap_rate(account_type, instrument, position.is_long)
            if not rate:
                continue
            swap = days * swap_cents(notional_cents(position.qty, position.open_price, instrument.price_decimals,
                                                    instrument.qty_decimals), rate)
            position.swap += swap
            self.house_swap += swap
            self._charge(account, swap, KIND_SWAP, str(position.id), events)

    # ------------------------------------------------------------------ checks before an order

    def _check_free_margin(self, account: Account, margin: int, commission: int) -> Optional[str]:
        """Why a new order's margin and commission do not fit the free margin (None: they do)."""
        free_margin = self._free_margin(account)
        if margin + commission > free_margin:
            return (f"free margin {money_text(free_margin)} is less than the margin {money_text(margin)}"
                    + (f" plus commission {money_text(commission)}" if commission else ""))
        return None
