"""Read queries over the engine's state: quotes, account summaries, open positions, pending orders.

None of these changes anything or is journaled; the engine actor answers views with them.
"""

from __future__ import annotations

from typing import Any, Optional

from exness_actors.commands import AccountId
from exness_actors.model import Order, Position
from exness_actors.money import pnl_cents

from ._invariants import check_invariants
from ._state import EngineState

__all__ = ["EngineQueries"]


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

    def stale_symbols(self) -> list[str]:
        """Symbols whose last quote is too old to trade on now (never-quoted ones are left out)."""
        now, stale_after = self.now, self._stale_after
        return [symbol for symbol, book in self.books.items()
                if book.bid is not None and now - book.quote_ts > stale_after]

    def unrealized_pnl(self, position: Position) -> int:
        """Pnl if closed now at the current quote, floored, never below −margin."""
        book = self.books[position.symbol]
        price = book.bid if position.is_long else book.ask
        if price is None:
            return 0
        instrument = book.instrument
        pnl = pnl_cents(position.is_long, position.qty, position.open_price, price,
                        instrument.price_decimals, instrument.qty_decimals)
        return max(pnl, -position.margin)

    def trailing_level(self, position: Position) -> Optional[int]:
        """The price at which the position's trailing stop fires now."""
        if position.trailing_stop is None:
            return None
        book = self.books[position.symbol]
        if position.is_long:
            return book.long_trailing.peak_of(position.id) - position.trailing_stop
        return -book.short_trailing.peak_of(position.id) + position.trailing_stop

    def account_summary(self, account_id: AccountId) -> Optional[dict[str, Any]]:
        """Balance (free + locked), locked, equity, free margin, margin level, unrealized pnl.

        ``margin_level`` is ``(numerator, denominator)`` of equity/locked (``None`` with nothing
        locked); the edge renders it as a percentage.
        """
        account = self.accounts.get(account_id)
        if account is None:
            return None
        unrealized = sum(self.unrealized_pnl(p) for p in account.positions.values())
        balance = account.free + account.locked
        equity = balance + unrealized
        return {
            "account_id": account_id, "balance": balance, "free": account.free,
            "locked": account.locked, "unrealized_pnl": unrealized, "equity": equity,
            "free_margin": account.free,
            "margin_level": (equity, account.locked) if account.locked else None,
        }

    def open_positions(self, account_id: AccountId) -> list[Position]:
        account = self.accounts.get(account_id)
        return sorted(account.positions.values(), key=lambda p: p.id) if account else []

    def pending_orders(self, account_id: AccountId) -> list[Order]:
        account = self.accounts.get(account_id)
        return sorted(account.orders.values(), key=lambda o: o.id) if account else []


    def check_invariants(self) -> None:
        """Raise :class:`~exness_actors.errors.InvariantViolation` if the state is inconsistent (tests, audits)."""
        check_invariants(self)
