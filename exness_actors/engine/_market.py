"""Market handlers: quotes and the triggers they fire, the clock, and process-edge records.

A quote gets the instrument's spread markup (bid down, ask up), then pops from the symbol's
trigger indexes (:mod:`exness_actors.triggers`) only what it crosses and processes it in the
fixed order of :data:`~exness_actors.triggers.PRIORITY` — liquidations, stop-losses, trailing
stops, take-profits, pending entries, then cross accounts' margin watches (which only mark the
account; it is settled after the quote, :mod:`._cross`) — ties by id. Long positions close at the bid, shorts at
the ask. While a symbol is halted its pending entries do not fire, but protective triggers and
closes still work (halts are :mod:`._broker`'s). Price alerts (issue 13) come last and watch
the bid. A crossed or non-positive quote is counted and refused with no state change.

Per-type spreads: after the default book (the instrument's spread, the market's quote in
``QuoteUpdated``), each spread profile in use marks the same raw quote up its own way in its own
book and pops that book's indexes (:meth:`EngineState._book_of`; docs/decisions.md).
"""

from __future__ import annotations

from typing import Any

from exness_actors.commands import (
    MAX_CLIENT_ID, AccountId, Clock, OrderId, PositionId,
)
from exness_actors.events import CommandRejected, Event, QuoteRejected, QuoteUpdated
from exness_actors.model import Book
from exness_actors.reasons import QuoteRejectReason, RejectReason

from ._orders import OrderRules
from ._state import ALERT, CLOSE_REASON, ENTRY, MARGIN_CHECK, TRAIL
from ._validation import MAX_ID, MAX_LEVEL, is_int

__all__ = ["MarketRules"]


class MarketRules(OrderRules):
    """Quotes, the clock, edge cursors and id floors."""

    def _on_quote(self, quote: Any, events: list[Event]) -> None:
        book = self.books.get(quote.symbol)
        raw_bid, raw_ask = quote.bid, quote.ask
        reason = None
        if book is None:
            reason = QuoteRejectReason.UNKNOWN_SYMBOL._value_
        elif type(raw_bid) is not int or type(raw_ask) is not int or raw_bid <= 0 or raw_ask <= 0:
            reason = QuoteRejectReason.NON_POSITIVE._value_
        elif raw_ask > MAX_LEVEL:
            reason = QuoteRejectReason.OUT_OF_RANGE._value_
        elif raw_bid > raw_ask:
            reason = QuoteRejectReason.CROSSED._value_
        else:
            # money.mark_up_bid/ask inlined: the two calls cost ~200 ns, an eighth of the quote path
            # (tests/test_core_properties.py pins this to those functions).
            spread = book.instrument.spread_bps
            bid = raw_bid * (10_000 - spread) // 10_000 if spread else raw_bid
            ask = -(-raw_ask * (10_000 + spread) // 10_000) if spread else raw_ask
            if bid <= 0:
                reason = QuoteRejectReason.NON_POSITIVE._value_
        if reason is not None:
            self.quotes_rejected += 1
            events.append(QuoteRejected(symbol=quote.symbol, bid=raw_bid, ask=raw_ask, reason=reason))
            return
        assert book is not None
        book.bid = bid
        book.ask = ask
        book.raw_bid = raw_bid
        book.raw_ask = raw_ask
        book.quote_ts = ts = quote.ts
        events.append(QuoteUpdated(quote.symbol, bid, ask, ts))
        self._pop_triggers(book, bid, ask, events)
        if self.profile_books:   # per-type spreads: one more book per profile in use, in profile order
            profiles = self.profiles
            for number, extra in enumerate(self.profile_books[quote.symbol]):
                self._mark_up(extra, raw_bid, raw_ask, profiles[number])
                extra.quote_ts = ts
                extra_bid, extra_ask = extra.bid, extra.ask
                assert extra_bid is not None and extra_ask is not None
                self._pop_triggers(extra, extra_bid, extra_ask, events)

    def _pop_triggers(self, book: Book, bid: int, ask: int, events: list[Event]) -> None:
        """Pop what the book's new quote crosses from its indexes and process it."""
        crossed: list[tuple[int, int]] = []
        long_trailing = book.long_trailing
        if long_trailing.min_peak < bid or long_trailing.best_level >= bid:
            long_trailing.on_price(bid, crossed, TRAIL)
        short_trailing = book.short_trailing
        if short_trailing.min_peak < -ask or short_trailing.best_level >= -ask:
            short_trailing.on_price(-ask, crossed, TRAIL)
        index = book.bid_falls
        if index.best >= bid:
            index.pop_crossed(bid, crossed)
        index = book.bid_rises
        if index.best >= -bid:
            index.pop_crossed(bid, crossed)
        index = book.ask_rises
        if index.best >= -ask:
            index.pop_crossed(ask, crossed)
        index = book.ask_falls
        if index.best >= ask:
            index.pop_crossed(ask, crossed)
        if crossed:
            self._process_crossed(book, crossed, events)

    def _process_crossed(self, book: Book, crossed: list[tuple[int, int]], events: list[Event]) -> None:
        crossed.sort()
        positions = self.positions
        for priority, ident in crossed:
            if priority == MARGIN_CHECK:
                self._dirty.add(AccountId(ident))   # settled after the quote (engine._cross)
            elif priority == ALERT:
                bid = book.bid
                assert bid is not None
                self._fire_alert(ident, bid, events)   # alerts watch the bid, halted or not
            elif priority == ENTRY:
                order = self.orders.get(OrderId(ident))
                if order is None:
                    continue
                if book.halted:
                    self._index_order(book, order)   # halted: entries wait for the resume
                    continue
                self._trigger_entry(book, order, events)
            else:
                position = positions.get(PositionId(ident))
                if position is None:
                    continue   # closed earlier in this same quote
                price = book.bid if position.is_long else book.ask
                assert price is not None
                self._close(position, position.qty, price, CLOSE_REASON[priority], events)

    def _on_clock(self, _clock: Clock, _events: list[Event]) -> None:
        """Time moved on; expiries already ran in :meth:`apply`."""

    def _on_edge_cursor(self, cmd: Any, events: list[Event]) -> None:
        """Record the process edge's stream position; it never moves backwards (no events)."""
        source, ms, entry = cmd.source, cmd.entry_ms, cmd.entry_seq
        if (type(source) is not str or not source or len(source) > MAX_CLIENT_ID
                or type(ms) is not int or type(entry) is not int
                or not 0 <= ms < 2**63 or not 0 <= entry < 2**63):
            events.append(CommandRejected("EdgeCursor", None, RejectReason.INVALID_COMMAND,
                                          "source must be a short string and the entry id two ints"))
            return
        if (ms, entry) > self.edge_cursors.get(source, (-1, -1)):
            self.edge_cursors[source] = (ms, entry)

    def _on_raise_id_floor(self, cmd: Any, events: list[Event]) -> None:
        """Move the id counters up to the floor (a repair's cut-off ids); no events."""
        low, high = self.config.id_base + 1, MAX_ID
        orders, positions = cmd.next_order_id, cmd.next_position_id
        if not (is_int(orders) and is_int(positions) and low <= orders <= high and low <= positions <= high):
            events.append(CommandRejected("RaiseIdFloor", None, RejectReason.INVALID_COMMAND,
                                          f"next_order_id and next_position_id must be integers in {low}..{high}"))
            return
        self.next_order_id = OrderId(max(self.next_order_id, orders))
        self.next_position_id = PositionId(max(self.next_position_id, positions))
