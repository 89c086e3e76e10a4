"""Outputs of the core.

Sender → receiver: :meth:`exness_actors.engine.Engine.apply` returns these; the **engine actor**
routes the events of one command back to its caller as the reply, and fans every event out to
subscribers (candles, persister, WebSocket server) once the batch that caused them is durable.

Each command yields exactly one outcome: accepted (its effect events), rejected
(``OrderRejected`` / ``CommandRejected`` and nothing else) or a duplicate (``DuplicateCommand``
and nothing else). Quotes yield ``QuoteUpdated`` (or ``QuoteRejected``) followed by whatever the
quote triggered.

Amounts are integers at their scale; the edge formats them as decimal strings.

The field order is part of the wire format (append only). The engine builds the frequent events
positionally — keyword construction costs 2.4× as much on CPython 3.11 (docs/decisions.md);
everyone else should use keywords.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import attrs

from exness_actors.commands import AccountId, ClientOrderId, OrderId, PositionId

__all__ = [
    "QuoteUpdated", "QuoteRejected", "AccountCreated", "BalanceChanged", "CommandRejected",
    "DuplicateCommand", "OrderAccepted", "OrderRejected", "OrderTriggered", "OrderCancelled",
    "OrderModified", "PositionOpened", "PositionUpdated", "PositionClosed", "SymbolHalted",
    "SymbolResumed", "AccountOpened", "MarginCall", "StopOut", "PositionFees", "AccountTypesChanged",
    "OperatorAction", "InstrumentUpdated", "AlertPlaced", "AlertTriggered", "AlertCancelled", "DeadManSwitchSet",
    "DeadManSwitchFired", "Event", "EVENT_TYPES",
]


@attrs.define
class QuoteUpdated:
    """The marked-up quote the engine now trades on."""
    symbol: str
    bid: int
    ask: int
    ts: int


@attrs.define
class QuoteRejected:
    symbol: str
    bid: int
    ask: int
    reason: str


@attrs.define
class AccountCreated:
    account_id: AccountId
    balance: int


@attrs.define
class BalanceChanged:
    """One ledger line: how the free and locked balances of an account moved and why."""
    account_id: AccountId
    kind: str            # BalanceKind
    free_delta: int
    locked_delta: int
    free: int
    locked: int
    ref: str             # order/position id or idempotency key, as text
    ts: int


@attrs.define
class CommandRejected:
    """A non-order command (deposit, withdraw, close, modify, add margin, …) was refused."""
    command: str
    account_id: Optional[AccountId]
    reason: str
    message: str
    ref: Optional[int] = None   # the order/position id the command named


@attrs.define
class DuplicateCommand:
    """A repeated ``client_order_id``/idempotency key: nothing happened this time.

    ``order_id`` is the order the original created (if any) and ``reason`` the original
    rejection (if it was rejected).
    """
    command: str
    account_id: AccountId
    key: str
    order_id: Optional[OrderId]
    reason: Optional[str]


@attrs.define
class OrderAccepted:
    order_id: OrderId
    account_id: AccountId
    symbol: str
    side: str
    type: str
    status: str
    price: Optional[int]
    margin: int
    leverage: int
    qty: int
    take_profit: Optional[int]
    stop_loss: Optional[int]
    trailing_stop: Optional[int]
    expires_at: Optional[int]
    client_order_id: ClientOrderId
    ts: int


@attrs.define
class OrderRejected:
    account_id: AccountId
    client_order_id: ClientOrderId
    reason: str
    message: str


@attrs.define
class OrderTriggered:
    """A pending order's price was crossed: it filled at ``price`` into ``position_id``."""
    order_id: OrderId
    account_id: AccountId
    position_id: PositionId
    price: int
    ts: int


@attrs.define
class OrderCancelled:
    order_id: OrderId
    account_id: AccountId
    reason: str          # CancelReason
    ts: int


@attrs.define
class OrderModified:
    order_id: OrderId
    account_id: AccountId
    price: Optional[int]
    qty: int
    take_profit: Optional[int]
    stop_loss: Optional[int]
    expires_at: Optional[int]


@attrs.define
class PositionOpened:
    position_id: PositionId
    account_id: AccountId
    order_id: OrderId
    symbol: str
    side: str
    qty: int
    open_price: int
    margin: int
    leverage: int
    liquidation_price: int
    take_profit: Optional[int]
    stop_loss: Optional[int]
    trailing_stop: Optional[int]
    ts: int


@attrs.define
class PositionUpdated:
    """TP/SL/trailing modified, margin added or part closed: the position as it now stands."""
    position_id: PositionId
    account_id: AccountId
    cause: str           # "modify" | "add_margin" | "partial_close"
    qty: int
    margin: int
    liquidation_price: int
    take_profit: Optional[int]
    stop_loss: Optional[int]
    trailing_stop: Optional[int]


@attrs.define
class PositionClosed:
    """A position (or part of it) closed. ``credit`` went back to free balance:
    ``max(0, margin_released + pnl)`` — negative balance protection."""
    position_id: PositionId
    account_id: AccountId
    symbol: str
    side: str
    reason: str          # CloseReason
    price: int
    qty: int
    open_price: int
    margin: int          # the margin released by this close
    pnl: int
    credit: int
    remaining_qty: int
    ts: int


@attrs.define
class AccountOpened:
    """A typed trading account was opened (issue 16)."""
    account_id: AccountId
    account_type: str
    balance: int


@attrs.define
class MarginCall:
    """A cross account's margin level fell to its type's call level (once until it recovers).

    ``equity`` and ``used_margin`` in cents; the level is ``equity / used_margin``."""
    account_id: AccountId
    equity: int
    used_margin: int
    ts: int


@attrs.define
class StopOut:
    """A cross account reached its stop-out level; its ``PositionClosed`` (reason ``stop_out``)
    events follow, largest loss first, until the level is above the stop-out level again."""
    account_id: AccountId
    equity: int
    used_margin: int
    ts: int


@attrs.define
class PositionFees:
    """What a closing part of a cross position paid: commission at close and the swaps it
    accumulated (follows its ``PositionClosed``; the ledger has them as ``BalanceChanged``)."""
    position_id: PositionId
    account_id: AccountId
    commission: int      # open + close commission of the closed part
    swap: int            # swaps charged to the closed part (negative: credited)


@attrs.define
class AccountTypesChanged:
    """The account types now in force (their names), after a ``SetAccountTypes``."""
    names: list[str]
    rollover_ns: int


@attrs.define
class SymbolHalted:
    symbol: str


@attrs.define
class SymbolResumed:
    symbol: str


# --- issue 13: the broker's side ------------------------------------------------------------

@attrs.define
class OperatorAction:
    """The audit trail: one for every operator command that took effect, after its own events.

    ``action``: ``halt | resume | update_instrument | adjust_balance | close_position``;
    ``target`` the symbol or the id acted on (as text); ``account_id`` the account concerned
    (None for a symbol); ``detail`` a compact JSON text (the changes, the amount, the fill)."""
    operator_id: int
    action: str
    account_id: Optional[AccountId]
    target: str
    reason: str
    detail: str
    ts: int


@attrs.define
class InstrumentUpdated:
    """An instrument's settings changed (``UpdateInstrument``); ``changes`` as applied."""
    symbol: str
    changes: list[list[Any]]
    ts: int


@attrs.define
class AlertPlaced:
    alert_id: int
    account_id: AccountId
    symbol: str
    condition: str
    price: int
    note: str
    expires_at: Optional[int]
    client_alert_id: str
    ts: int


@attrs.define
class AlertTriggered:
    """The bid reached the alert's price: ``quote_price`` is the bid that did it. Fires once;
    the alert is gone afterwards."""
    alert_id: int
    account_id: AccountId
    symbol: str
    condition: str
    price: int
    quote_price: int
    note: str
    ts: int


@attrs.define
class AlertCancelled:
    alert_id: int
    account_id: AccountId
    reason: str          # "cancelled" | "expired"
    ts: int


@attrs.define
class DeadManSwitchSet:
    """The account's cancel-all-after deadline (engine ns); 0: disarmed."""
    account_id: AccountId
    deadline_ns: int
    ts: int


@attrs.define
class DeadManSwitchFired:
    """The deadline passed: ``cancelled`` pending orders follow as ``OrderCancelled``
    (reason ``dead_man_switch``); the switch is disarmed."""
    account_id: AccountId
    cancelled: int
    ts: int


Event = Union[QuoteUpdated, QuoteRejected, AccountCreated, BalanceChanged, CommandRejected,
              DuplicateCommand, OrderAccepted, OrderRejected, OrderTriggered, OrderCancelled,
              OrderModified, PositionOpened, PositionUpdated, PositionClosed, SymbolHalted,
              SymbolResumed, AccountOpened, MarginCall, StopOut, PositionFees,
              AccountTypesChanged, OperatorAction, InstrumentUpdated, AlertPlaced, AlertTriggered,
              AlertCancelled, DeadManSwitchSet, DeadManSwitchFired]

#: Wire tags: stable forever. Append only.
EVENT_TYPES: dict[int, type] = {
    101: QuoteUpdated, 102: QuoteRejected, 103: AccountCreated, 104: BalanceChanged,
    105: CommandRejected, 106: DuplicateCommand, 107: OrderAccepted, 108: OrderRejected,
    109: OrderTriggered, 110: OrderCancelled, 111: OrderModified, 112: PositionOpened,
    113: PositionUpdated, 114: PositionClosed, 115: SymbolHalted, 116: SymbolResumed,
    117: AccountOpened, 118: MarginCall, 119: StopOut, 120: PositionFees,
    121: AccountTypesChanged, 122: OperatorAction, 123: InstrumentUpdated, 124: AlertPlaced,
    125: AlertTriggered, 126: AlertCancelled, 127: DeadManSwitchSet, 128: DeadManSwitchFired,
}
