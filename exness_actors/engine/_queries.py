"""Read queries over the engine's state: quotes, account summaries, open positions, pending orders.

None of these changes anything or is journaled; the engine actor answers views with them.
"""

from __future__ import annotations

from typing import Any, Optional

from exness_actors.commands import AccountId
from exness_actors.model import Account, Order, Position
from exness_actors.money import notional_cents, pnl_cents

from ._invariants import check_invariants
from ._state import EngineState

__all__ = ["EngineQueries", "Leg"]

#: a cross account's leg (symbol × side): ``[Σ qty, Σ qty·open_price, positions, Σ floored pnl now]``
Leg = list[int]


class EngineQueries(EngineState):
    """Read-only questions about the state."""

    def edge_cursor(self, source: str) -> Optional[tuple[int, int]]:
        """The last applied entry id of ``source`` as ``(ms, seq)``, None if none."""
        return self.edge_cursors.get(source)


    def quote(self, symbol: str) -> Optional[tuple[int, int, int]]:
        book = self.books.get(symbol)
        if book is None or book.bid is None or book.ask is None:
            return None
        return book.bid, book.ask, book.quote_ts

    def account_quote(self, account_id: AccountId, symbol: str) -> Optional[tuple[int, int, int]]:
        """The quote ``account_id`` trades ``symbol`` on (its type's spread profile); the market's
        quote for an unknown or default-spread account."""
        account = self.accounts.get(account_id)
        if account is None or not account.profile or symbol not in self.books:
            return self.quote(symbol)
        book = self._book_of(account, symbol)
        if book.bid is None or book.ask is None:
            return None
        return book.bid, book.ask, book.quote_ts

    def stale_symbols(self) -> list[str]:
        """Symbols whose last quote is too old to trade on now (never-quoted ones are left out)."""
        now, stale_after = self.now, self._stale_after
        return [symbol for symbol, book in self.books.items()
                if book.bid is not None and now - book.quote_ts > stale_after]

    def unrealized_pnl(self, position: Position) -> int:
        """Pnl if closed now at the current quote, floored; never below −margin when isolated."""
        book = self._book_for(position.account_id, position.symbol)
        price = book.bid if position.is_long else book.ask
        if price is None:
            return 0
        instrument = book.instrument
        pnl = pnl_cents(position.is_long, position.qty, position.open_price, price,
                        instrument.price_decimals, instrument.qty_decimals)
        return pnl if self.accounts[position.account_id].is_cross else max(pnl, -position.margin)

    def trailing_level(self, position: Position) -> Optional[int]:
        """The price at which the position's trailing stop fires now."""
        if position.trailing_stop is None:
            return None
        book = self._book_for(position.account_id, position.symbol)
        if position.is_long:
            return book.long_trailing.peak_of(position.id) - position.trailing_stop
        return -book.short_trailing.peak_of(position.id) + position.trailing_stop

    def _legs(self, account: Account) -> tuple[int, dict[tuple[str, bool], Leg]]:
        """Σ floored pnl of the account's positions now, and its legs' aggregates."""
        unrealized = 0
        legs: dict[tuple[str, bool], Leg] = {}
        books = self.books if not account.profile else None
        for position in account.positions.values():
            book = books[position.symbol] if books is not None else self._book_of(account, position.symbol)
            instrument = book.instrument
            price = book.bid if position.is_long else book.ask
            assert price is not None
            pnl = pnl_cents(position.is_long, position.qty, position.open_price, price,
                            instrument.price_decimals, instrument.qty_decimals)
            unrealized += pnl
            leg = legs.get((position.symbol, position.is_long))
            if leg is None:
                legs[(position.symbol, position.is_long)] = [position.qty, position.qty * position.open_price, 1, pnl]
            else:
                leg[0] += position.qty
                leg[1] += position.qty * position.open_price
                leg[2] += 1
                leg[3] += pnl
        return unrealized, legs

    def cross_equity(self, account: Account) -> int:
        """Free + locked + Σ pnl at the current quotes (not floored at −margin)."""
        return account.free + account.locked + self._legs(account)[0]

    def _free_margin(self, account: Account) -> int:
        return self.cross_equity(account) - account.locked

    def account_summary(self, account_id: AccountId) -> Optional[dict[str, Any]]:
        """Balance (free + locked), locked, equity, free margin, margin level, unrealized pnl.

        ``margin_level`` is ``(numerator, denominator)`` of equity/locked (``None`` with nothing
        locked); the edge renders it as a percentage. An isolated account's unrealized pnl is
        floored at each position's −margin and its free margin is its free balance; a cross
        account's (issue 16) are the whole account's: ``equity − used margin``.
        """
        account = self.accounts.get(account_id)
        if account is None:
            return None
        if account.is_cross:
            unrealized = self._legs(account)[0]
        else:
            unrealized = sum(self.unrealized_pnl(p) for p in account.positions.values())
        balance = account.free + account.locked
        equity = balance + unrealized
        account_type = account.type
        return {
            "account_id": account_id, "balance": balance, "free": account.free,
            "locked": account.locked, "unrealized_pnl": unrealized, "equity": equity,
            "free_margin": equity - account.locked if account.is_cross else account.free,
            "margin_level": (equity, account.locked) if account.locked else None,
            "account_type": account_type.name if account_type else None,
            "margin_mode": account_type.margin_mode if account_type else "isolated",
            "margin_call_level": account_type.margin_call_pct if account.is_cross and account_type else None,
            "stop_out_level": account_type.stop_out_pct if account.is_cross and account_type else None,
            "in_margin_call": account.in_margin_call,
        }

    def house_book(self) -> dict[str, int]:
        """The house's P&L by source (cents). ``total`` is the house's balance, and equals
        ``trader_losses − trader_gains − losses_absorbed + commission + swap``; ``spread`` is the
        part of the trading result the quotes' markup made (measured against the raw quote)."""
        return {"spread": self.house_spread, "commission": self.house_commission, "swap": self.house_swap,
                "trader_losses": self.house_losses, "trader_gains": self.house_gains,
                "losses_absorbed": self.house_absorbed, "total": self.house}

    def net_exposure(self) -> dict[str, dict[str, int]]:
        """Per symbol: open long and short quantity (units) and notional at the open prices (cents)."""
        exposure = {symbol: {"long_qty": 0, "short_qty": 0, "long_notional": 0, "short_notional": 0}
                    for symbol in sorted(self.books)}
        for position in self.positions.values():
            instrument = self.instruments[position.symbol]
            side = "long" if position.is_long else "short"
            row = exposure[position.symbol]
            row[f"{side}_qty"] += position.qty
            row[f"{side}_notional"] += notional_cents(position.qty, position.open_price,
                                                      instrument.price_decimals, instrument.qty_decimals)
        return exposure

    def open_positions(self, account_id: AccountId) -> list[Position]:
        account = self.accounts.get(account_id)
        return sorted(account.positions.values(), key=lambda p: p.id) if account else []

    def pending_orders(self, account_id: AccountId) -> list[Order]:
        account = self.accounts.get(account_id)
        return sorted(account.orders.values(), key=lambda o: o.id) if account else []


    def check_invariants(self) -> None:
        """Raise :class:`~exness_actors.errors.InvariantViolation` if the state is inconsistent (tests, audits)."""
        check_invariants(self)
