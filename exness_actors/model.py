"""The mutable records the engine keeps, and the status transition tables.

Records are slotted classes (not attrs): they are created on the order path and must stay
small — an open position costs one ``Position`` plus its index entries (see ``bench/core.py``
for the measured bytes per position).

Transitions are data (STYLE.md §2): an order or position may only move along an edge of
:data:`ORDER_TRANSITIONS` / :data:`POSITION_TRANSITIONS`; anything else is an
:class:`~exness_actors.errors.InvariantViolation`, raised by the engine before it changes anything
(``tests/test_core_transitions.py`` takes each edge away in turn).
"""

from __future__ import annotations

from typing import Optional

from exness_actors.account_types import AccountType
from exness_actors.commands import AccountId, ClientOrderId, OrderId, PositionId
from exness_actors.errors import InvariantViolation
from exness_actors.instruments import Instrument
from exness_actors.reasons import OrderStatus
from exness_actors.triggers import TrailingBook, TriggerIndex

__all__ = ["Account", "Position", "Order", "Alert", "Book", "ORDER_TRANSITIONS", "POSITION_TRANSITIONS",
           "NEW", "OPEN", "CLOSED", "check_order_transition", "check_position_transition"]

#: Position states: a position is ``open`` while it is in the engine's books; ``new`` and
#: ``closed`` are the states before and after. ``new`` is also an order's state before placing.
NEW, OPEN, CLOSED = "new", "open", "closed"

ORDER_TRANSITIONS: dict[str, frozenset[str]] = {
    # A market order is born filled (or rejected); a pending one waits for its trigger.
    NEW: frozenset({OrderStatus.FILLED.value, OrderStatus.PENDING.value, OrderStatus.REJECTED.value}),
    OrderStatus.PENDING.value: frozenset({OrderStatus.FILLED.value, OrderStatus.CANCELLED.value,
                                          OrderStatus.EXPIRED.value}),
    OrderStatus.FILLED.value: frozenset(),
    OrderStatus.CANCELLED.value: frozenset(),
    OrderStatus.EXPIRED.value: frozenset(),
    OrderStatus.REJECTED.value: frozenset(),
}

POSITION_TRANSITIONS: dict[str, frozenset[str]] = {
    NEW: frozenset({OPEN}),
    OPEN: frozenset({OPEN, CLOSED}),   # open → open: partial close, modify, add margin
    CLOSED: frozenset(),
}


def check_order_transition(current: str, target: str) -> None:
    """Raise :class:`InvariantViolation` unless an order may move from ``current`` to ``target``."""
    if target not in ORDER_TRANSITIONS[current]:
        raise InvariantViolation(f"order cannot move from {current} to {target}")


def check_position_transition(current: str, target: str) -> None:
    """Raise :class:`InvariantViolation` unless a position may move from ``current`` to ``target``."""
    if target not in POSITION_TRANSITIONS[current]:
        raise InvariantViolation(f"position cannot move from {current} to {target}")


class Account:
    __slots__ = ("id", "free", "locked", "positions", "orders", "recent_keys", "finished_orders", "type",
                 "is_cross", "in_margin_call", "watches", "alerts", "profile")

    def __init__(self, account_id: AccountId, free: int = 0, locked: int = 0,
                 account_type: Optional[AccountType] = None) -> None:
        self.id = account_id
        self.free = free
        self.locked = locked
        self.positions: dict[PositionId, Position] = {}
        self.orders: dict[OrderId, Order] = {}
        # client_order_id / idempotency key -> (order_id or None, reject reason or None)
        self.recent_keys: Optional[dict[str, tuple[Optional[OrderId], Optional[str]]]] = None
        # finished order id -> final status (bounded, for ORDER_NOT_PENDING)
        self.finished_orders: Optional[dict[OrderId, str]] = None
        #: issue 16: None for an untyped (isolated) account
        self.type = account_type
        self.is_cross = account_type is not None and account_type.is_cross
        #: cross only: a margin call was sent and the level has not recovered above the call level
        self.in_margin_call = False
        #: cross only: the ``(index, level)`` margin-check entries now indexed (engine._cross)
        self.watches: list[tuple[TriggerIndex, int]] = []
        #: issue 13: the account's active price alerts (None until it places one)
        self.alerts: Optional[dict[int, Alert]] = None
        #: its type's spread profile: 0 = the instruments' own spreads (``engine.books``), k > 0 =
        #: ``engine.profile_books[symbol][k - 1]`` (set by the engine when the account opens)
        self.profile = 0


class Position:
    __slots__ = ("id", "account_id", "symbol", "is_long", "qty", "open_price", "margin", "leverage",
                 "liquidation_price", "take_profit", "stop_loss", "trailing_stop", "order_id",
                 "opened_at", "commission", "swap")

    def __init__(self, position_id: PositionId, account_id: AccountId, symbol: str, is_long: bool, qty: int,
                 open_price: int, margin: int, leverage: int, liquidation_price: int,
                 take_profit: Optional[int], stop_loss: Optional[int],
                 trailing_stop: Optional[int], order_id: OrderId, opened_at: int) -> None:
        self.id = position_id
        self.account_id = account_id
        self.symbol = symbol
        self.is_long = is_long
        self.qty = qty
        self.open_price = open_price
        self.margin = margin
        self.leverage = leverage
        self.liquidation_price = liquidation_price
        self.take_profit = take_profit
        self.stop_loss = stop_loss
        self.trailing_stop = trailing_stop
        self.order_id = order_id
        self.opened_at = opened_at
        #: cross accounts: commission and swaps charged so far (cents; swap negative when credited)
        self.commission = 0
        self.swap = 0

    @property
    def side(self) -> str:
        return "buy" if self.is_long else "sell"


class Order:
    __slots__ = ("id", "account_id", "symbol", "is_long", "type", "price", "margin", "leverage",
                 "qty", "take_profit", "stop_loss", "trailing_stop", "expires_at",
                 "client_order_id", "created_at")

    def __init__(self, order_id: OrderId, account_id: AccountId, symbol: str, is_long: bool, type: str,
                 price: int, margin: int, leverage: int, qty: int, take_profit: Optional[int],
                 stop_loss: Optional[int], trailing_stop: Optional[int],
                 expires_at: Optional[int], client_order_id: ClientOrderId, created_at: int) -> None:
        self.id = order_id
        self.account_id = account_id
        self.symbol = symbol
        self.is_long = is_long
        self.type = type
        self.price = price
        self.margin = margin
        self.leverage = leverage
        self.qty = qty
        self.take_profit = take_profit
        self.stop_loss = stop_loss
        self.trailing_stop = trailing_stop
        self.expires_at = expires_at
        self.client_order_id = client_order_id
        self.created_at = created_at

    @property
    def side(self) -> str:
        return "buy" if self.is_long else "sell"


class Alert:
    """A price alert (issue 13): fires once when the bid reaches ``price`` from the named side."""

    __slots__ = ("id", "account_id", "symbol", "is_above", "price", "note", "expires_at",
                 "client_alert_id", "created_at")

    def __init__(self, alert_id: int, account_id: AccountId, symbol: str, is_above: bool, price: int,
                 note: str, expires_at: Optional[int], client_alert_id: str, created_at: int) -> None:
        self.id = alert_id
        self.account_id = account_id
        self.symbol = symbol
        self.is_above = is_above
        self.price = price
        self.note = note
        self.expires_at = expires_at
        self.client_alert_id = client_alert_id
        self.created_at = created_at

    @property
    def condition(self) -> str:
        return "above" if self.is_above else "below"


class Book:
    """Per-symbol market state: the marked-up quote, the halt flag and the trigger indexes."""

    __slots__ = ("instrument", "bid", "ask", "raw_bid", "raw_ask", "quote_ts", "halted", "bid_falls", "bid_rises",
                 "ask_rises", "ask_falls", "long_trailing", "short_trailing")

    def __init__(self, instrument: Instrument) -> None:
        self.instrument = instrument
        self.bid: Optional[int] = None
        self.ask: Optional[int] = None
        #: the feed's quote before the markup (the house's spread income is measured against it)
        self.raw_bid = 0
        self.raw_ask = 0
        self.quote_ts = 0
        self.halted = False
        self.bid_falls = TriggerIndex(fires_on_fall=True)
        self.bid_rises = TriggerIndex(fires_on_fall=False)
        self.ask_rises = TriggerIndex(fires_on_fall=False)
        self.ask_falls = TriggerIndex(fires_on_fall=True)
        self.long_trailing = TrailingBook()
        self.short_trailing = TrailingBook()
