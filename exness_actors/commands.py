"""Inputs of the core.

Sender → receiver: the **edge** (gateway, WebSocket server, price feed, supervisor's clock)
builds these; the **engine actor's sequencer** stamps ``seq`` and ``ts`` (integer ns) and hands
them to :meth:`exness_actors.engine.Engine.apply`; the journal records them exactly as applied.

Every amount is already an integer at its scale (cents, ticks, quantity units, ns); the edge
parses decimal strings with :func:`exness_actors.money.parse_fixed`. Optional fields use
``None`` for "not given". In the ``Modify*`` commands ``None`` means "leave unchanged" and ``0``
means "remove" (no valid price, distance or expiry is zero).

They are mutable slotted attrs classes rather than frozen ones: the sequencer stamps
``seq``/``ts`` in place, and a frozen class costs three times as much to build on the quote path
(DESIGN.md §6b). Nothing mutates a command after it is sequenced. Build them with keywords; the
fields are not keyword-only only so that the feed's hot path can build a ``Quote`` positionally
(2.4× cheaper on CPython 3.11, see docs/decisions.md).
"""

from __future__ import annotations

from typing import Any, NewType, Optional, Union

import attrs

__all__ = [
    "AccountId", "OrderId", "PositionId", "ClientOrderId",
    "Quote", "Clock", "CreateAccount", "Deposit", "Withdraw", "PlaceOrder", "CancelOrder",
    "ModifyOrder", "ClosePosition", "ModifyPosition", "AddMargin", "HaltSymbol", "ResumeSymbol",
    "EdgeCursor", "RaiseIdFloor", "UpdateInstrument", "AdjustBalance", "ForceClosePosition", "PlaceAlert",
    "CancelAlert", "CancelAllAfter", "CancelOrders", "Command", "COMMAND_TYPES", "MAX_CLIENT_ID",
    "MAX_REASON", "MAX_ALERT_NOTE",
]

AccountId = NewType("AccountId", int)
OrderId = NewType("OrderId", int)
PositionId = NewType("PositionId", int)
ClientOrderId = NewType("ClientOrderId", str)

#: Longest client_order_id / idempotency key accepted.
MAX_CLIENT_ID = 64
#: Longest operator reason and alert note accepted (characters).
MAX_REASON = 200
MAX_ALERT_NOTE = 200


# --- market data: price feed → engine -------------------------------------------------------

@attrs.define
class Quote:
    """A raw top-of-book quote in ticks; the engine applies the instrument's spread markup."""
    symbol: str
    bid: int
    ask: int
    seq: int = 0
    ts: int = 0


@attrs.define
class Clock:
    """A heartbeat: lets expiries happen when no other input arrives."""
    seq: int = 0
    ts: int = 0


# --- accounts: gateway → engine -------------------------------------------------------------

@attrs.define
class CreateAccount:
    account_id: AccountId
    initial_deposit: int = 0
    seq: int = 0
    ts: int = 0


@attrs.define
class OpenAccount:
    """Open a trading account of a configured type (issue 16); ``CreateAccount`` makes an untyped,
    isolated one exactly as before types existed."""
    account_id: AccountId
    account_type: str
    initial_deposit: int = 0
    seq: int = 0
    ts: int = 0


@attrs.define
class Deposit:
    account_id: AccountId
    amount: int
    idempotency_key: str = ""
    seq: int = 0
    ts: int = 0


@attrs.define
class Withdraw:
    account_id: AccountId
    amount: int
    idempotency_key: str = ""
    seq: int = 0
    ts: int = 0


# --- trading: gateway / WebSocket lane → engine -----------------------------------------------

@attrs.define
class PlaceOrder:
    account_id: AccountId
    symbol: str
    side: str          # "buy" | "sell"
    type: str          # "market" | "limit" | "stop"
    margin: int        # cents
    leverage: int
    price: Optional[int] = None           # ticks; required for limit/stop
    take_profit: Optional[int] = None
    stop_loss: Optional[int] = None
    trailing_stop: Optional[int] = None   # distance in ticks
    slippage_bps: Optional[int] = None
    expected_price: Optional[int] = None
    expires_at: Optional[int] = None      # ns
    client_order_id: ClientOrderId = ClientOrderId("")
    seq: int = 0
    ts: int = 0


@attrs.define
class CancelOrder:
    account_id: AccountId
    order_id: OrderId
    seq: int = 0
    ts: int = 0


@attrs.define
class ModifyOrder:
    account_id: AccountId
    order_id: OrderId
    price: Optional[int] = None
    take_profit: Optional[int] = None
    stop_loss: Optional[int] = None
    expires_at: Optional[int] = None
    seq: int = 0
    ts: int = 0


@attrs.define
class ClosePosition:
    account_id: AccountId
    position_id: PositionId
    qty: Optional[int] = None   # None closes the whole position
    seq: int = 0
    ts: int = 0


@attrs.define
class ModifyPosition:
    account_id: AccountId
    position_id: PositionId
    take_profit: Optional[int] = None
    stop_loss: Optional[int] = None
    trailing_stop: Optional[int] = None
    seq: int = 0
    ts: int = 0


@attrs.define
class AddMargin:
    account_id: AccountId
    position_id: PositionId
    amount: int
    seq: int = 0
    ts: int = 0


# --- operations: admin / supervisor → engine --------------------------------------------------

@attrs.define
class HaltSymbol:
    """Stop new orders on a symbol (pending entries wait; protective triggers still fire).

    ``operator_id``/``reason`` (issue 13) were appended after ``ts``: a halt journaled before
    them has neither, and the codec leaves both off when they are at their defaults, so such a
    record encodes to the very bytes it always did. An operator's halt names both and the core
    records an ``OperatorAction`` for it."""
    symbol: str
    seq: int = 0
    ts: int = 0
    operator_id: int = 0
    reason: str = ""


@attrs.define
class ResumeSymbol:
    """Lift a halt; ``operator_id``/``reason`` as in :class:`HaltSymbol`."""
    symbol: str
    seq: int = 0
    ts: int = 0
    operator_id: int = 0
    reason: str = ""


@attrs.define
class UpdateInstrument:
    """An operator changes an instrument's trading settings (issue 13); it takes effect at its seq.

    ``changes`` is a list of ``[field, value]`` pairs with integer values at the field's scale
    (``spread_bps``, ``max_leverage``, ``min_qty`` in quantity units, ``maintenance_bps``, and the
    fee overrides ``commission_ppm``, ``swap_long_ppm``, ``swap_short_ppm``, where ``None`` goes
    back to the account types' rates). ``actors.wire.codec.parse_instrument_patch`` builds it."""
    symbol: str
    changes: list[list[Any]]
    operator_id: int
    reason: str
    seq: int = 0
    ts: int = 0


@attrs.define
class AdjustBalance:
    """An operator funds (``amount`` > 0) or debits (< 0) an account, in cents (issue 13)."""
    account_id: AccountId
    amount: int
    operator_id: int
    reason: str
    idempotency_key: str = ""
    seq: int = 0
    ts: int = 0


@attrs.define
class ForceClosePosition:
    """An operator closes a whole position at the current quote (close reason ``operator``)."""
    position_id: PositionId
    operator_id: int
    reason: str
    seq: int = 0
    ts: int = 0


@attrs.define
class SetAccountTypes:
    """Replace the account types (issue 16): the supervisor journals one when ``config.toml``'s
    ``[accounts]`` differ from the types the data dir's core runs with, so replay reproduces the
    change. Each type is in :meth:`~exness_actors.account_types.AccountType.to_wire` form."""
    account_types: list[list[Any]]
    rollover_ns: int
    seq: int = 0
    ts: int = 0


# --- price alerts and order safety: gateway / WebSocket lane → engine (issue 13) -------------

@attrs.define
class PlaceAlert:
    """A price alert: fires once when the marked-up **bid** reaches ``price`` (ticks) —
    ``above``: bid ≥ price, ``below``: bid ≤ price — then it is gone. Optional ``expires_at``
    (ns); ``client_alert_id`` makes a retry idempotent."""
    account_id: AccountId
    symbol: str
    condition: str      # "above" | "below"
    price: int
    note: str = ""
    expires_at: Optional[int] = None
    client_alert_id: str = ""
    seq: int = 0
    ts: int = 0


@attrs.define
class CancelAlert:
    account_id: AccountId
    alert_id: int
    seq: int = 0
    ts: int = 0


@attrs.define
class CancelAllAfter:
    """The dead-man switch: unless armed again within ``timeout_ns`` (engine time, from the
    inputs' ``ts``), every pending order of the account is cancelled (reason
    ``dead_man_switch``). ``0`` disarms."""
    account_id: AccountId
    timeout_ns: int
    seq: int = 0
    ts: int = 0


@attrs.define
class CancelOrders:
    """Cancel several pending orders of one account at once (the WebSocket lane's
    cancel-on-disconnect); ids that are no longer pending are skipped silently."""
    account_id: AccountId
    order_ids: list[int]
    reason: str         # CancelReason: "user" | "cancel_on_disconnect"
    seq: int = 0
    ts: int = 0


# --- process edge: the engine's stream reader → engine -------------------------------------

@attrs.define
class EdgeCursor:
    """The process edge's position in a command stream (split mode, DESIGN.md §6).

    The engine's Redis reader puts one ``EdgeCursor`` in front of the commands of each stream
    entry it hands to the engine, in the same atomic burst, so the core's state (journaled and
    snapshotted) records the last stream entry whose commands were applied. After a crash,
    entries the consumer group redelivers at or below the cursor are acknowledged without being
    applied again: exactly-once effect. ``source`` names the stream; ``entry_ms``/``entry_seq``
    are the two parts of a Redis stream id (``<ms>-<seq>``). A cursor never moves backwards.
    """
    source: str
    entry_ms: int
    entry_seq: int
    seq: int = 0
    ts: int = 0


# --- repair: the supervisor → engine ---------------------------------------------------------

@attrs.define
class RaiseIdFloor:
    """Never issue an order or position id below these again (``exness-actors run --repair``).

    A repair that cuts the journal back forgets the ids issued by the cut-off inputs, although
    clients and the history store saw them. The supervisor journals one ``RaiseIdFloor`` right
    after the cut, so the counters pass every id ever issued and replay stays exact. A floor
    below a counter leaves that counter alone (counters never move backwards).
    """
    next_order_id: OrderId
    next_position_id: PositionId
    seq: int = 0
    ts: int = 0


Command = Union[Quote, Clock, CreateAccount, Deposit, Withdraw, PlaceOrder, CancelOrder,
                ModifyOrder, ClosePosition, ModifyPosition, AddMargin, HaltSymbol, ResumeSymbol,
                EdgeCursor, RaiseIdFloor, OpenAccount, SetAccountTypes, UpdateInstrument, AdjustBalance,
                ForceClosePosition, PlaceAlert, CancelAlert, CancelAllAfter, CancelOrders]

#: Wire tags: stable forever (they are in every journal). Append only.
COMMAND_TYPES: dict[int, type] = {
    1: Quote, 2: Clock, 3: CreateAccount, 4: Deposit, 5: Withdraw, 6: PlaceOrder,
    7: CancelOrder, 8: ModifyOrder, 9: ClosePosition, 10: ModifyPosition, 11: AddMargin,
    12: HaltSymbol, 13: ResumeSymbol, 14: EdgeCursor, 15: RaiseIdFloor, 16: OpenAccount,
    17: SetAccountTypes, 18: UpdateInstrument, 19: AdjustBalance, 20: ForceClosePosition,
    21: PlaceAlert, 22: CancelAlert, 23: CancelAllAfter, 24: CancelOrders,
}
