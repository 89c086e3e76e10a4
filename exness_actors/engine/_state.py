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
while it is pending with an ``expires_at``.
"""

from __future__ import annotations

from typing import Any, Final, Optional

from sortedcontainers import SortedList

from exness_actors.commands import AccountId, OrderId, PositionId
from exness_actors.events import CommandRejected, DuplicateCommand, Event
from exness_actors.instruments import CoreConfig
from exness_actors.model import Account, Book, Order, Position
from exness_actors.reasons import BalanceKind, CloseReason, OrderStatus, OrderType, RejectReason, Side
from exness_actors.triggers import PRIORITY, TriggerIndex

from ._hashing import HASH_BLOCK, HASH_FORMAT_V2
from ._validation import TRANSIENT_REASONS, is_int

__all__ = ["EngineState", "STATE_FORMAT", "STATE_FORMAT_ACCOUNTS", "HASH_BLOCK"]

STATE_FORMAT: Final = 1
#: the layout of a state with account types (issue 16): format 1 plus the account extras, so a
#: reader that predates them refuses it instead of silently dropping them
STATE_FORMAT_ACCOUNTS: Final = 2
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

    # ------------------------------------------------------------------ expiries

    def _add_expiry(self, expires_at: int, order_id: OrderId) -> None:
        self.expiries.add((expires_at, order_id))
        if expires_at < self.next_expiry:
            self.next_expiry = expires_at

    def _discard_expiry(self, expires_at: int, order_id: OrderId) -> None:
        self.expiries.discard((expires_at, order_id))
        self._refresh_next_expiry()

    def _refresh_next_expiry(self) -> None:
        expiries = self.expiries
        self.next_expiry = expiries[0][0] if expiries else NEVER

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
            if trailing_peak is None:   # a new stop starts from the current closing price
                price = book.bid if position.is_long else book.ask
                assert price is not None
                trailing_peak = price if position.is_long else -price
            trailing = book.long_trailing if position.is_long else book.short_trailing
            trailing.add(pid, position.trailing_stop, trailing_peak)

    def _unindex_position(self, book: Book, position: Position) -> None:
        pid = position.id
        for index, level, priority in self._position_triggers(book, position):
            index.discard(level, priority, pid)
        if position.trailing_stop is not None:
            trailing = book.long_trailing if position.is_long else book.short_trailing
            trailing.discard(pid, position.trailing_stop)

