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
    "EdgeCursor", "RaiseIdFloor", "Command", "COMMAND_TYPES", "MAX_CLIENT_ID",
]

AccountId = NewType("AccountId", int)
OrderId = NewType("OrderId", int)
PositionId = NewType("PositionId", int)
ClientOrderId = NewType("ClientOrderId", str)

#: Longest client_order_id / idempotency key accepted.
MAX_CLIENT_ID = 64


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
    symbol: str
    seq: int = 0
    ts: int = 0


@attrs.define
class ResumeSymbol:
    symbol: str
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
                EdgeCursor, RaiseIdFloor, OpenAccount, SetAccountTypes]

#: Wire tags: stable forever (they are in every journal). Append only.
COMMAND_TYPES: dict[int, type] = {
    1: Quote, 2: Clock, 3: CreateAccount, 4: Deposit, 5: Withdraw, 6: PlaceOrder,
    7: CancelOrder, 8: ModifyOrder, 9: ClosePosition, 10: ModifyPosition, 11: AddMargin,
    12: HaltSymbol, 13: ResumeSymbol, 14: EdgeCursor, 15: RaiseIdFloor, 16: OpenAccount,
    17: SetAccountTypes,
}
