"""JSON views of core events for the WebSocket server (account stream and order lane).

Orders, positions, closed parts and candles are rendered by :mod:`actors.wire.codec` — the HTTP API's
renderers — so a client sees the same object whichever API it uses. This module adds what only
the streams need: the ``data`` of each account-channel event, and the fields a modification of
an order or position sets (the order lane renders a change from views plus the event).

Every amount and price is a decimal string, timestamps integer milliseconds, ids strings.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from actors.wire import codec as edge
from actors.wire.codec import margin_level_text, money, ns_to_ms
from exness_actors.candles import Candle
from exness_actors.events import (
    AccountCreated, AccountOpened, AlertCancelled, AlertPlaced, AlertTriggered, BalanceChanged, DeadManSwitchFired,
    DeadManSwitchSet, MarginCall, OrderAccepted, OrderCancelled, OrderModified, OrderTriggered, PositionClosed,
    PositionFees, PositionOpened, PositionUpdated, StopOut,
)
from exness_actors.instruments import Instrument
from exness_actors.money import format_fixed

__all__ = ["ACCOUNT_EVENT_TYPES", "account_event_json", "order_modification_json", "position_update_json",
           "candle_json", "fees_by_position", "margin_event_json", "NO_FEES"]


def _price(value: Optional[int], instrument: Instrument) -> Optional[str]:
    return None if value is None else format_fixed(value, instrument.price_decimals)


def _qty(value: int, instrument: Instrument) -> str:
    return format_fixed(value, instrument.qty_decimals)


def candle_json(candle: Candle, instrument: Instrument) -> dict:
    """:func:`actors.wire.codec.candle_json` plus ``closed`` (False while the bucket is live)."""
    data = edge.candle_json(candle, instrument)
    data["closed"] = candle.closed
    return data


def order_modification_json(event: OrderModified, instrument: Instrument) -> dict:
    """The order fields an :class:`OrderModified` sets, rendered."""
    return {"price": _price(event.price, instrument), "qty": _qty(event.qty, instrument),
            "take_profit": _price(event.take_profit, instrument),
            "stop_loss": _price(event.stop_loss, instrument), "expires_at": ns_to_ms(event.expires_at)}


def position_update_json(event: PositionUpdated, instrument: Instrument) -> dict:
    """The position fields a :class:`PositionUpdated` sets, rendered."""
    return {"qty": _qty(event.qty, instrument), "margin": money(event.margin),
            "liquidation_price": _price(max(event.liquidation_price, 0), instrument),
            "take_profit": _price(event.take_profit, instrument),
            "stop_loss": _price(event.stop_loss, instrument),
            "trailing_stop": _price(event.trailing_stop, instrument)}


# ------------------------------------------------------------------------ account stream

#: The events of an account's channel (all carry ``account_id``). :class:`PositionFees` is
#: not a message of its own: its commission and swap ride on the ``position_closed`` before it.
ACCOUNT_EVENT_TYPES = (AccountCreated, BalanceChanged, OrderAccepted, OrderTriggered, OrderCancelled,
                       OrderModified, PositionOpened, PositionUpdated, PositionClosed, AccountOpened,
                       MarginCall, StopOut, PositionFees, AlertPlaced, AlertTriggered, AlertCancelled,
                       DeadManSwitchSet, DeadManSwitchFired)

SymbolLookup = Callable[[int], Optional[str]]
#: ``(commission, swap)`` of a closed part in cents (0, 0 for an isolated account)
Fees = tuple[int, int]
NO_FEES: Fees = (0, 0)


def fees_by_position(events: list) -> dict[int, list[Fees]]:
    """The :class:`PositionFees` of one input's events, by position, in order: the core appends
    each right after its :class:`PositionClosed`'s ledger lines, so the n-th close of a position
    in the list goes with its n-th fees. A position with no entry paid none (isolated)."""
    fees: dict[int, list[Fees]] = {}
    for event in events:
        if type(event) is PositionFees:
            fees.setdefault(event.position_id, []).append((event.commission, event.swap))
    return fees


def margin_event_json(name: str, event: Any) -> dict:
    """``margin_call`` / ``stop_out``: the account's margin level, equity and used margin then."""
    return {"event": name, "margin_level": margin_level_text(event.equity, event.used_margin),
            "equity": money(event.equity), "used_margin": money(event.used_margin),
            "ts": ns_to_ms(event.ts)}


def account_event_json(event: Any, instruments: Mapping[str, Instrument],
                       order_symbol: SymbolLookup, position_symbol: SymbolLookup,
                       fees: Fees = NO_FEES) -> Optional[dict]:
    """The ``data`` of an account-channel message (``{"event": name, …}``), or None when the
    event's symbol is unknown (an order or position the server never saw; the caller logs it)
    or it is not a message of its own (:class:`PositionFees`).

    ``order_symbol``/``position_symbol`` resolve the symbol of events that carry only an id
    (their prices need the instrument's scale); ``fees`` are a ``PositionClosed``'s
    commission and swap (:func:`fees_by_position`).
    """
    kind = type(event)
    if kind is BalanceChanged:
        return {"event": "balance_changed", "kind": event.kind,
                "free_delta": money(event.free_delta), "locked_delta": money(event.locked_delta),
                "free": money(event.free), "locked": money(event.locked), "ref": event.ref,
                "ts": ns_to_ms(event.ts)}
    if kind is OrderAccepted:
        return {"event": "order_accepted",
                "order": edge.order_accepted_json(event, instruments[event.symbol])}
    if kind is PositionOpened:
        return {"event": "position_opened",
                "position": edge.position_opened_json(event, instruments[event.symbol])}
    if kind is PositionClosed:
        position = edge.position_closed_json(event, instruments[event.symbol])
        position["commission"], position["swap"] = money(fees[0]), money(fees[1])
        return {"event": "position_closed", "position": position}
    if kind is OrderCancelled:
        return {"event": "order_cancelled", "order_id": str(event.order_id), "reason": event.reason,
                "ts": ns_to_ms(event.ts)}
    if kind is AccountCreated:
        return {"event": "account_created", "balance": money(event.balance)}
    if kind is MarginCall:
        return margin_event_json("margin_call", event)
    if kind is StopOut:
        return margin_event_json("stop_out", event)
    if kind is AccountOpened:
        return {"event": "account_opened", "account_type": event.account_type,
                "balance": money(event.balance)}
    if kind is OrderTriggered:
        symbol = order_symbol(event.order_id)
        if symbol is None:
            return None
        return {"event": "order_triggered", "order_id": str(event.order_id),
                "position_id": str(event.position_id), "price": _price(event.price, instruments[symbol]),
                "ts": ns_to_ms(event.ts)}
    if kind is OrderModified:
        symbol = order_symbol(event.order_id)
        if symbol is None:
            return None
        return {"event": "order_modified", "order_id": str(event.order_id),
                **order_modification_json(event, instruments[symbol])}
    if kind is PositionUpdated:
        symbol = position_symbol(event.position_id)
        if symbol is None:
            return None
        return {"event": "position_updated", "position_id": str(event.position_id), "cause": event.cause,
                **position_update_json(event, instruments[symbol])}
    return _broker_event_json(event, instruments)


def _broker_event_json(event: Any, instruments: Mapping[str, Instrument]) -> Optional[dict]:
    """Price alerts and the dead-man switch (issue 13)."""
    kind = type(event)
    if kind is AlertTriggered:
        instrument = instruments[event.symbol]
        return {"event": "alert_triggered", "alert_id": str(event.alert_id), "symbol": event.symbol,
                "condition": event.condition, "price": _price(event.price, instrument),
                "quote_price": _price(event.quote_price, instrument), "note": event.note or None,
                "ts": ns_to_ms(event.ts)}
    if kind is AlertPlaced:
        return {"event": "alert_placed", "alert_id": str(event.alert_id), "symbol": event.symbol,
                "condition": event.condition, "price": _price(event.price, instruments[event.symbol]),
                "note": event.note or None, "expires_at": ns_to_ms(event.expires_at), "ts": ns_to_ms(event.ts)}
    if kind is AlertCancelled:
        return {"event": "alert_cancelled", "alert_id": str(event.alert_id), "reason": event.reason,
                "ts": ns_to_ms(event.ts)}
    if kind is DeadManSwitchSet:
        return {"event": "dead_man_switch_set", "deadline": ns_to_ms(event.deadline_ns) if event.deadline_ns else None,
                "ts": ns_to_ms(event.ts)}
    if kind is DeadManSwitchFired:
        return {"event": "dead_man_switch_fired", "cancelled": event.cancelled, "ts": ns_to_ms(event.ts)}
    return None
