"""Position handlers: open, close (whole, partial, triggered), modify TP/SL/trailing, add margin.

Closing a position releases its margin (or the closed share of it, floored) from locked and
credits ``max(0, margin + pnl)`` to free — negative balance protection — the rest going to the
house. After a partial close or added margin the liquidation price is recomputed and
re-indexed; a stop-loss it overtakes could never fire and is removed. A position moves along
:data:`~exness_actors.model.POSITION_TRANSITIONS` only (``new → open``, ``open → open``,
``open → closed``), checked before anything changes.
"""

from __future__ import annotations

from typing import Any, Optional

from exness_actors.commands import OrderId
from exness_actors.events import BalanceChanged, Event, PositionClosed, PositionOpened, PositionUpdated
from exness_actors.model import (
    CLOSED, OPEN, POSITION_TRANSITIONS, Account, Book, Position, check_position_transition,
)
from exness_actors.money import pnl_cents, share_floor
from exness_actors.reasons import BalanceKind, CloseReason
from exness_actors.reasons import RejectReason as _R

from ._cross import CrossRules
from ._state import BUY, KIND_POSITION_CLOSE, LIQ, SELL, SL
from ._validation import (
    MAX_AMOUNT, Reject, check_stop_loss_before_liquidation, check_tpsl, is_int, is_optional_int,
    money_text, qty_text, stop_loss_inert, updated,
)

__all__ = ["PositionRules"]


class PositionRules(CrossRules):
    """Opening, closing and changing positions."""

    def _open(self, account: Account, book: Book, order_id: OrderId, is_long: bool, qty: int,
              price: int, margin: int, leverage: int, liq: int, take_profit: Optional[int],
              stop_loss: Optional[int], trailing_stop: Optional[int], events: list[Event]) -> Position:
        """Open a position (the caller has checked ``new → open`` before changing anything)."""
        position_id = self.next_position_id
        self.next_position_id = position_id + 1   # type: ignore[assignment]  # the next id; no call on the order path
        position = Position(position_id, account.id, book.instrument.symbol, is_long, qty, price,
                            margin, leverage, liq, take_profit, stop_loss, trailing_stop, order_id,
                            self.now)
        self.positions[position_id] = position
        account.positions[position_id] = position
        self._index_position(book, position)
        events.append(PositionOpened(
            position_id, account.id, order_id, position.symbol, BUY if is_long else SELL, qty,
            price, margin, leverage, liq, take_profit, stop_loss, trailing_stop, self.now))
        instrument = book.instrument
        markup = (price - book.raw_ask) if is_long else (book.raw_bid - price)
        self.house_spread += qty * markup * 100 // 10 ** (instrument.price_decimals + instrument.qty_decimals)
        if account.is_cross:
            self._dirty.add(account.id)
            self._open_commission(account, position, events)
        return position

    def _close(self, position: Position, qty: int, price: int, reason: str, events: list[Event]) -> None:
        """Close ``qty`` of ``position`` at ``price`` (the whole of it when qty == position.qty)."""
        account = self.accounts[position.account_id]
        book = self._book_of(account, position.symbol)
        instrument = book.instrument
        full = qty == position.qty
        target = CLOSED if full else OPEN
        if target not in POSITION_TRANSITIONS[OPEN]:   # the table read inline: closes are hot
            check_position_transition(OPEN, target)
        margin = position.margin if full else share_floor(position.margin, qty, position.qty)
        pnl = pnl_cents(position.is_long, qty, position.open_price, price,
                        instrument.price_decimals, instrument.qty_decimals)
        credit = margin + pnl
        cross = account.is_cross
        if credit < 0 and not cross:   # a cross account's losses are covered by its whole equity
            self.house_absorbed -= credit
            credit = 0
        account.locked -= margin
        account.free += credit
        self.house += margin - credit
        self._book_trading_result(book, position.is_long, qty, price, pnl)
        whole = position.qty
        now = self.now
        if full:
            self._unindex_position(book, position)
            del self.positions[position.id]
            del account.positions[position.id]
            remaining = 0
        else:
            if position.is_long:
                book.bid_falls.discard(position.liquidation_price, LIQ, position.id)
            else:
                book.ask_rises.discard(position.liquidation_price, LIQ, position.id)
            position.qty -= qty
            position.margin -= margin
            self._reprice_liquidation(book, position)
            self._drop_inert_stop_loss(book, position)
            remaining = position.qty
        events.append(PositionClosed(
            position.id, account.id, position.symbol, BUY if position.is_long else SELL, reason,
            price, qty, position.open_price, margin, pnl, credit, remaining, now))
        events.append(BalanceChanged(
            account.id, KIND_POSITION_CLOSE, credit, -margin, account.free, account.locked,
            str(position.id), now))
        if cross:
            self._dirty.add(account.id)
            self._close_fees(account, position, qty, whole, price, events)
            self._reset_negative_balance(account, events)
        if not full:
            events.append(self._position_updated(position, "partial_close"))
            # The remainder's liquidation price was recomputed from a floored margin share and
            # may now lie past the quote we just closed at: liquidate the rest at once then.
            if (price <= position.liquidation_price) if position.is_long else (price >= position.liquidation_price):
                self._close(position, position.qty, price, CloseReason.LIQUIDATION._value_, events)

    def _book_trading_result(self, book: Book, is_long: bool, qty: int, price: int, pnl: int) -> None:
        """The house's side of a close: the trader's loss collected or gain paid, and the markup."""
        if pnl < 0:
            self.house_losses -= pnl
        else:
            self.house_gains += pnl
        instrument = book.instrument
        markup = (book.raw_bid - price) if is_long else (price - book.raw_ask)
        self.house_spread += qty * markup * 100 // 10 ** (instrument.price_decimals + instrument.qty_decimals)

    def _reprice_liquidation(self, book: Book, position: Position) -> None:
        """Recompute the liquidation price after the margin or size changed, and re-index it."""
        position.liquidation_price = self._liquidation_price(
            self.accounts[position.account_id], position.is_long, position.qty, position.open_price,
            position.margin, book.instrument)
        if position.is_long:
            book.bid_falls.add(position.liquidation_price, LIQ, position.id)
        else:
            book.ask_rises.add(position.liquidation_price, LIQ, position.id)

    @staticmethod
    def _drop_inert_stop_loss(book: Book, position: Position) -> None:
        """A stop-loss the new liquidation price has overtaken could never fire: remove it."""
        stop_loss = position.stop_loss
        if stop_loss is None or not stop_loss_inert(position.is_long, stop_loss, position.liquidation_price):
            return
        (book.bid_falls if position.is_long else book.ask_rises).discard(stop_loss, SL, position.id)
        position.stop_loss = None

    def _position_updated(self, position: Position, cause: str) -> PositionUpdated:
        return PositionUpdated(position_id=position.id, account_id=position.account_id, cause=cause,
                               qty=position.qty, margin=position.margin,
                               liquidation_price=position.liquidation_price,
                               take_profit=position.take_profit, stop_loss=position.stop_loss,
                               trailing_stop=position.trailing_stop)

    def _owned_position(self, cmd: Any, events: list[Event]) -> Optional[Position]:
        account = self.accounts.get(cmd.account_id)
        if account is None:
            self._reject_command(cmd, cmd.account_id, _R.UNKNOWN_ACCOUNT, "no such account", events)
            return None
        position = account.positions.get(cmd.position_id) if is_int(cmd.position_id) else None
        if position is None:
            self._reject_command(cmd, account.id, _R.UNKNOWN_POSITION,
                                 f"no open position {cmd.position_id!r} on this account", events,
                                 ref=cmd.position_id if is_int(cmd.position_id) else None)
        return position

    def _on_close(self, cmd: Any, events: list[Event]) -> None:
        position = self._owned_position(cmd, events)
        if position is None:
            return
        book = self._book_for(position.account_id, position.symbol)
        qty = position.qty if cmd.qty is None else cmd.qty
        reason = None
        if not is_int(qty) or not 0 < qty <= position.qty:
            reason, message = _R.INVALID_QTY, f"qty must be between {qty_text(1, book.instrument)} and the position's {qty_text(position.qty, book.instrument)}"
        elif qty < book.instrument.min_qty or (qty < position.qty and position.qty - qty < book.instrument.min_qty):
            reason, message = _R.SIZE_TOO_SMALL, f"both the closed part and the rest must be at least the minimum size {qty_text(book.instrument.min_qty, book.instrument)}"
        elif self.now - book.quote_ts > self._stale_after:
            reason, message = _R.STALE_QUOTE, f"the last {position.symbol} quote is too old to close on"
        if reason is not None:
            return self._reject_command(cmd, position.account_id, reason, message, events, ref=position.id)
        price = book.bid if position.is_long else book.ask
        assert price is not None
        self._close(position, qty, price, CloseReason.USER._value_, events)

    def _on_modify_position(self, cmd: Any, events: list[Event]) -> None:
        position = self._owned_position(cmd, events)
        if position is None:
            return
        book = self._book_for(position.account_id, position.symbol)
        if not (is_optional_int(cmd.take_profit) and is_optional_int(cmd.stop_loss) and is_optional_int(cmd.trailing_stop)):
            return self._reject_command(cmd, position.account_id, _R.INVALID_COMMAND,
                                        "prices and distances must be integers at their scale", events, ref=position.id)
        take_profit = updated(position.take_profit, cmd.take_profit)
        stop_loss = updated(position.stop_loss, cmd.stop_loss)
        trailing = updated(position.trailing_stop, cmd.trailing_stop)
        reference = book.bid if position.is_long else book.ask
        assert reference is not None
        try:
            check_tpsl(position.is_long, reference,
                             take_profit if take_profit != position.take_profit else None,
                             stop_loss if stop_loss != position.stop_loss else None, trailing,
                             book.instrument)
            if stop_loss is not None and stop_loss != position.stop_loss:
                check_stop_loss_before_liquidation(position.is_long, stop_loss, position.liquidation_price,
                                                    book.instrument)
        except Reject as rejection:
            return self._reject_command(cmd, position.account_id, _R(rejection.reason),
                                        rejection.message, events, ref=position.id)
        trailing_peak = None
        if trailing is not None and trailing == position.trailing_stop:
            trailing_book = book.long_trailing if position.is_long else book.short_trailing
            trailing_peak = trailing_book.peak_of(position.id)   # unchanged: keep its peak
        self._unindex_position(book, position)
        position.take_profit, position.stop_loss, position.trailing_stop = take_profit, stop_loss, trailing
        self._index_position(book, position, trailing_peak=trailing_peak)
        events.append(self._position_updated(position, "modify"))

    def _on_add_margin(self, cmd: Any, events: list[Event]) -> None:
        position = self._owned_position(cmd, events)
        if position is None:
            return
        account = self.accounts[position.account_id]
        if account.is_cross:
            return self._reject_command(cmd, account.id, _R.INVALID_COMMAND, "a cross account's positions share its whole equity: deposit instead of adding margin", events, ref=position.id)
        amount = cmd.amount
        if not is_int(amount) or not 0 < amount <= MAX_AMOUNT:
            return self._reject_command(cmd, account.id, _R.INVALID_AMOUNT, f"amount must be positive and at most {money_text(MAX_AMOUNT)}", events, ref=position.id)
        if amount > account.free:
            return self._reject_command(cmd, account.id, _R.INSUFFICIENT_BALANCE,
                                        f"free balance {money_text(account.free)} is less than {money_text(amount)}", events, ref=position.id)
        book = self._book_of(account, position.symbol)
        account.free -= amount
        account.locked += amount
        if position.is_long:
            book.bid_falls.discard(position.liquidation_price, LIQ, position.id)
        else:
            book.ask_rises.discard(position.liquidation_price, LIQ, position.id)
        position.margin += amount
        self._reprice_liquidation(book, position)
        events.append(BalanceChanged(
            account_id=account.id, kind=BalanceKind.ADD_MARGIN.value, free_delta=-amount,
            locked_delta=amount, free=account.free, locked=account.locked, ref=str(position.id), ts=self.now))
        events.append(self._position_updated(position, "add_margin"))

