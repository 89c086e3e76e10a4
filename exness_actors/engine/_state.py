"""The engine's state and the bookkeeping every handler shares.

:class:`EngineState` holds the whole trading state (accounts, positions, orders, books, id
counters, the ledger totals, the rolling hash) and the small operations that keep its parts in
step: the idempotency memory, the expiry queue, and the trigger indexes of orders and positions.
The handler layers (:mod:`._accounts`, :mod:`._positions`, :mod:`._orders`, :mod:`._market`)
build on it, each a subclass of the one before, so the final :class:`~exness_actors.engine.Engine`
is one plain class with one instance dict.

Invariant kept here: an open position's fixed-level triggers (liquidation, stop-loss,
take-profit) and its trailing stop are in its symbol's indexes exactly while it is open; a
pending order's entry is indexed exactly while it is pending, and its expiry is queued exactly
while it is pending with an ``expires_at``. All of an account's triggers are in the books of its
spread profile (``books`` for the default, ``profile_books`` otherwise: :meth:`EngineState._book_of`).
"""

from __future__ import annotations

from typing import Any, Final, Optional

from sortedcontainers import SortedList

from exness_actors.account_types import AccountType, SpreadProfile, profile_quote
from exness_actors.commands import AccountId, OrderId, PositionId
from exness_actors.events import AlertCancelled, AlertTriggered, CommandRejected, DuplicateCommand, Event
from exness_actors.instruments import CoreConfig
from exness_actors.model import Account, Alert, Book, Order, Position
from exness_actors.reasons import BalanceKind, CloseReason, OrderStatus, OrderType, RejectReason, Side
from exness_actors.triggers import PRIORITY, TriggerIndex

from ._hashing import HASH_BLOCK, HASH_FORMAT_V2
from ._validation import TRANSIENT_REASONS, is_int

__all__ = ["EngineState", "STATE_FORMAT", "STATE_FORMAT_ACCOUNTS", "STATE_FORMAT_BROKER", "HASH_BLOCK",
           "MAX_ALERTS_PER_ACCOUNT"]

STATE_FORMAT: Final = 1
#: the layout of a state with account types (issue 16): format 1 plus the account extras, so a
#: reader that predates them refuses it instead of silently dropping them
STATE_FORMAT_ACCOUNTS: Final = 2
#: a state with price alerts or dead-man switches (issue 13): format 2's layout plus the broker
#: extras, so a reader that predates them refuses it instead of silently dropping them
STATE_FORMAT_BROKER: Final = 3
NEVER: Final = 1 << 127   # after any expires_at (ns timestamps are far smaller)

# Final: the compiled build reads these as C statics, not from the module's dict
LIQ: Final = PRIORITY["liquidation"]
SL: Final = PRIORITY["stop_loss"]
TRAIL: Final = PRIORITY["trailing_stop"]
TP: Final = PRIORITY["take_profit"]
ENTRY: Final = PRIORITY["entry"]
#: trigger priority -> the close reason it gives (every priority but a pending entry's)
CLOSE_REASON = {priority: CloseReason(name)._value_ for name, priority in PRIORITY.items() if priority < ENTRY}
#: a cross account's margin watch (:mod:`._cross`): the id in the index is the account id
MARGIN_CHECK: Final = PRIORITY["margin_check"]
#: a price alert (issue 13): the id in the index is the alert id
ALERT: Final = PRIORITY["alert"]
#: active price alerts one account may hold (docs/api.md)
MAX_ALERTS_PER_ACCOUNT: Final = 200
MARKET: Final = OrderType.MARKET._value_
LIMIT: Final = OrderType.LIMIT._value_
STOP: Final = OrderType.STOP._value_
BUY: Final = Side.BUY._value_
SELL: Final = Side.SELL._value_
KIND_POSITION_MARGIN: Final = BalanceKind.POSITION_MARGIN._value_
KIND_POSITION_CLOSE: Final = BalanceKind.POSITION_CLOSE._value_
KIND_ORDER_MARGIN: Final = BalanceKind.ORDER_MARGIN._value_
KIND_ORDER_RELEASE: Final = BalanceKind.ORDER_RELEASE._value_
FILLED: Final = OrderStatus.FILLED._value_
PENDING: Final = OrderStatus.PENDING._value_
CANCELLED: Final = OrderStatus.CANCELLED._value_
EXPIRED: Final = OrderStatus.EXPIRED._value_
REJECTED: Final = OrderStatus.REJECTED._value_

#: ``(index, level, priority)``: one fixed-level trigger of a position
Trigger = tuple[TriggerIndex, int, int]


class EngineState:
    """The whole trading state and the bookkeeping that keeps its parts in step."""

    def __init__(self, config: CoreConfig) -> None:
        self.config = config
        self.instruments = {i.symbol: i for i in config.instruments}
        self.books: dict[str, Book] = {i.symbol: Book(i) for i in config.instruments}
        #: per-type spreads: the spread profiles in use, in order of first use (profile k is
        #: ``profiles[k - 1]``), and each symbol's book per profile; both empty until an account
        #: of a type with its own spread opens, so untyped and default-spread states are unchanged
        self.profiles: list[SpreadProfile] = []
        self.profile_books: dict[str, list[Book]] = {}
        self.accounts: dict[AccountId, Account] = {}
        self.positions: dict[PositionId, Position] = {}
        self.orders: dict[OrderId, Order] = {}
        self.expiries: SortedList = SortedList()       # (expires_at, order_id)
        #: expires_at of the earliest pending expiry (a plain int: checked on every input)
        self.next_expiry = NEVER
        self.next_order_id = OrderId(config.id_base + 1)
        self.next_position_id = PositionId(config.id_base + 1)
        self.house = 0
        self.total_deposits = 0
        self.total_withdrawals = 0
        # issue 16: the house's P&L by source (cents; see house_book()) — the trading part is
        # losses collected − gains paid − losses absorbed, the rest commission and swaps;
        # spread markup is the share of the trading part that the quotes' markup made
        self.house_spread = 0
        self.house_commission = 0
        self.house_swap = 0
        self.house_losses = 0
        self.house_gains = 0
        self.house_absorbed = 0
        #: the next swap rollover (ns; 0 = not yet placed, NEVER when no account types exist)
        self.next_rollover = 0 if config.account_types else NEVER
        #: cross accounts an input changed, settled (margin call, stop-out, watches) after it
        self._dirty: set[AccountId] = set()
        self.now = 0
        self.last_seq = 0
        # issue 13: price alerts (indexed in their book like the other triggers), their expiry
        # queue, and the dead-man switches (account -> deadline ns) with their deadline queue
        self.alerts: dict[int, Alert] = {}
        self.next_alert_id = config.id_base + 1
        self.alert_expiries: SortedList = SortedList()     # (expires_at, alert_id)
        self.dead_man: dict[AccountId, int] = {}
        self.dead_man_deadlines: SortedList = SortedList()  # (deadline, account_id)
        #: split mode: the last applied entry of each command stream, ``source -> (ms, seq)``
        #: (:class:`~exness_actors.commands.EdgeCursor`); empty in embedded mode
        self.edge_cursors: dict[str, tuple[int, int]] = {}
        # Rolling hash of the output events (:mod:`._hashing`): the current block of HASH_BLOCK
        # inputs is buffered and folded into ``_hash_base`` at each block boundary, so a
        # per-input BLAKE2b is avoided; :attr:`rolling_hash` is BLAKE2b(base ‖ block) and
        # depends only on the events, never on when it is read. Format 1 buffers the encoded
        # events (``_hash_buffer``), format 2 the block's items, packed when folded or read
        # (``_hash_items``).
        self.hash_format = config.hash_format
        self._hash_v2 = config.hash_format == HASH_FORMAT_V2
        self._hash_base = bytes(16)
        self._hash_buffer = bytearray()
        self._hash_items: list[Any] = []
        #: index in the last ``apply`` result where the command's own outcome begins
        self.reply_start = 0
        #: statistics (not part of the state)
        self.quotes_rejected = 0
        self._stale_after = config.stale_after_ns
        self._window = config.idempotency_window

    # ------------------------------------------------------------------ idempotency

    def _duplicate(self, account: Account, key: str, cmd: Any, events: list[Event]) -> bool:
        recent = account.recent_keys
        if recent is None or key not in recent:
            return False
        order_id, reason = recent[key]
        if reason in TRANSIENT_REASONS:
            del recent[key]   # tried again: remembered anew, counted in the window from now
            return False
        events.append(DuplicateCommand(command=type(cmd).__name__, account_id=account.id,
                                       key=key[2:], order_id=order_id, reason=reason))
        return True

    def _remember(self, account: Account, key: str, order_id: Optional[OrderId], reason: Optional[str]) -> None:
        recent = account.recent_keys
        if recent is None:
            recent = account.recent_keys = {}
        recent[key] = (order_id, reason)
        if len(recent) > self._window:
            del recent[next(iter(recent))]

    def _remember_finished(self, account: Account, order_id: OrderId, status: str) -> None:
        finished = account.finished_orders
        if finished is None:
            finished = account.finished_orders = {}
        finished[order_id] = status
        if len(finished) > self._window:
            del finished[next(iter(finished))]

    def _reject_command(self, cmd: Any, account_id: Any, reason: RejectReason, message: str,
                        events: list[Event], *, ref: Optional[int] = None) -> None:
        events.append(CommandRejected(command=type(cmd).__name__,
                                      account_id=account_id if is_int(account_id) else None,
                                      reason=reason._value_, message=message, ref=ref))

    # ------------------------------------------------------------------ spread profiles

    def _book_of(self, account: Account, symbol: str) -> Book:
        """The book ``account`` trades ``symbol`` on: its spread profile's (docs/decisions.md)."""
        profile = account.profile
        return self.books[symbol] if not profile else self.profile_books[symbol][profile - 1]

    def _book_for(self, account_id: AccountId, symbol: str) -> Book:
        """The book of a position or order (``account_id``, ``symbol``)."""
        profile = self.accounts[account_id].profile
        return self.books[symbol] if not profile else self.profile_books[symbol][profile - 1]

    def _use_profile(self, account_type: Optional[AccountType]) -> int:
        """The profile number of ``account_type``'s spread; a profile's books are made on first use."""
        key = account_type.spread_profile if account_type is not None else None
        if key is None:
            return 0
        if key not in self.profiles:
            self._add_profile(key)
        return self.profiles.index(key) + 1

    def _add_profile(self, key: SpreadProfile) -> None:
        self.profiles.append(key)
        for symbol in sorted(self.books):
            book = self.books[symbol]
            extra = Book(book.instrument)
            extra.halted, extra.quote_ts = book.halted, book.quote_ts
            if book.bid is not None:
                self._mark_up(extra, book.raw_bid, book.raw_ask, key)
            self.profile_books.setdefault(symbol, []).append(extra)

    @staticmethod
    def _mark_up(book: Book, raw_bid: int, raw_ask: int, key: SpreadProfile) -> None:
        book.bid, book.ask = profile_quote(raw_bid, raw_ask, book.instrument.spread_bps, key)
        book.raw_bid, book.raw_ask = raw_bid, raw_ask

    # ------------------------------------------------------------------ expiries

    def _add_expiry(self, expires_at: int, order_id: OrderId) -> None:
        self.expiries.add((expires_at, order_id))
        if expires_at < self.next_expiry:
            self.next_expiry = expires_at

    def _discard_expiry(self, expires_at: int, order_id: OrderId) -> None:
        self.expiries.discard((expires_at, order_id))
        self._refresh_next_expiry()

    def _refresh_next_expiry(self) -> None:
        """The earliest of the pending orders' expiries, the alerts' and the dead-man deadlines."""
        expiries = self.expiries
        earliest = expiries[0][0] if expiries else NEVER
        alert_expiries = self.alert_expiries
        if alert_expiries and alert_expiries[0][0] < earliest:
            earliest = alert_expiries[0][0]
        deadlines = self.dead_man_deadlines
        if deadlines and deadlines[0][0] < earliest:
            earliest = deadlines[0][0]
        self.next_expiry = earliest

    # ------------------------------------------------------------------ price alerts (issue 13)

    @staticmethod
    def _alert_index(book: Book, alert: Alert) -> TriggerIndex:
        return book.bid_rises if alert.is_above else book.bid_falls

    def _add_alert(self, alert: Alert) -> None:
        """Store and index an alert (its expiry queued when it has one)."""
        self.alerts[alert.id] = alert
        account = self.accounts[alert.account_id]
        if account.alerts is None:
            account.alerts = {}
        account.alerts[alert.id] = alert
        self._alert_index(self.books[alert.symbol], alert).add(alert.price, ALERT, alert.id)
        if alert.expires_at is not None:
            self.alert_expiries.add((alert.expires_at, alert.id))
            if alert.expires_at < self.next_expiry:
                self.next_expiry = alert.expires_at

    def _drop_alert(self, alert: Alert, *, indexed: bool) -> None:
        """Forget an alert (``indexed``: its index entry is still there, not popped by a quote)."""
        del self.alerts[alert.id]
        account_alerts = self.accounts[alert.account_id].alerts
        assert account_alerts is not None
        del account_alerts[alert.id]
        if indexed:
            self._alert_index(self.books[alert.symbol], alert).discard(alert.price, ALERT, alert.id)
        if alert.expires_at is not None:
            self.alert_expiries.discard((alert.expires_at, alert.id))
            self._refresh_next_expiry()

    def _fire_alert(self, alert_id: int, quote_price: int, events: list[Event]) -> None:
        """A quote crossed an alert (already popped from its index): it fires once and is gone."""
        alert = self.alerts.get(alert_id)
        if alert is None:
            return
        self._drop_alert(alert, indexed=False)
        events.append(AlertTriggered(alert.id, alert.account_id, alert.symbol, alert.condition, alert.price,
                                     quote_price, alert.note, self.now))

    def _cancel_alert(self, alert: Alert, reason: str, events: list[Event]) -> None:
        self._drop_alert(alert, indexed=True)
        events.append(AlertCancelled(alert.id, alert.account_id, reason, self.now))

    # ------------------------------------------------------------------ dead-man switches (issue 13)

    def _set_dead_man(self, account_id: AccountId, deadline: int) -> None:
        """Arm (deadline > 0) or disarm (0) the account's switch."""
        old = self.dead_man.pop(account_id, None)
        if old is not None:
            self.dead_man_deadlines.discard((old, account_id))
        if deadline:
            self.dead_man[account_id] = deadline
            self.dead_man_deadlines.add((deadline, account_id))
        self._refresh_next_expiry()

    # ------------------------------------------------------------------ trigger indexes

    @staticmethod
    def _entry_index(book: Book, order: Order) -> TriggerIndex:
        if order.is_long:
            return book.ask_falls if order.type == LIMIT else book.ask_rises
        return book.bid_rises if order.type == LIMIT else book.bid_falls

    def _index_order(self, book: Book, order: Order) -> None:
        self._entry_index(book, order).add(order.price, ENTRY, order.id)

    def _unindex_order(self, book: Book, order: Order, *, expiry: bool) -> None:
        self._entry_index(book, order).discard(order.price, ENTRY, order.id)
        if expiry and order.expires_at is not None:
            self._discard_expiry(order.expires_at, order.id)

    @staticmethod
    def _position_triggers(book: Book, position: Position) -> list[Trigger]:
        """``(index, level, priority)`` of every fixed-level trigger of the position."""
        triggers = []
        if position.is_long:
            triggers.append((book.bid_falls, position.liquidation_price, LIQ))
            if position.stop_loss is not None:
                triggers.append((book.bid_falls, position.stop_loss, SL))
            if position.take_profit is not None:
                triggers.append((book.bid_rises, position.take_profit, TP))
        else:
            triggers.append((book.ask_rises, position.liquidation_price, LIQ))
            if position.stop_loss is not None:
                triggers.append((book.ask_rises, position.stop_loss, SL))
            if position.take_profit is not None:
                triggers.append((book.ask_falls, position.take_profit, TP))
        return triggers

    def _index_position(self, book: Book, position: Position, *, trailing_peak: Optional[int] = None) -> None:
        pid = position.id
        for index, level, priority in self._position_triggers(book, position):
            index.add(level, priority, pid)
        if position.trailing_stop is not None:
            self._index_trailing(book, position, trailing_peak)

    @staticmethod
    def _index_trailing(book: Book, position: Position, peak: Optional[int]) -> None:
        """Add the position's trailing stop at ``peak`` (None: a new stop, which starts from the
        current closing price)."""
        distance = position.trailing_stop
        assert distance is not None
        if peak is None:
            price = book.bid if position.is_long else book.ask
            assert price is not None
            peak = price if position.is_long else -price
        trailing = book.long_trailing if position.is_long else book.short_trailing
        trailing.add(position.id, distance, peak)

    def _unindex_position(self, book: Book, position: Position) -> None:
        pid = position.id
        for index, level, priority in self._position_triggers(book, position):
            index.discard(level, priority, pid)
        if position.trailing_stop is not None:
            trailing = book.long_trailing if position.is_long else book.short_trailing
            trailing.discard(pid, position.trailing_stop)

