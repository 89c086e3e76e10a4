"""What a notification is, and which engine events make one (a pure function of the events).

Theory of operation
-------------------
:func:`derive` turns the items of a durable :class:`~actors.engine.messages.EventBatch` —
``(seq, ts, events)`` per engine input — into :class:`Notification` values. It reads nothing but
its arguments, so deriving the same journal twice (live, then again after a crash) gives the same
notifications with the **same ids**: ``"{shard}-{seq}-{index}"``, the engine shard, the input's
seq and the position of the event among that input's events. Receivers de-duplicate on the id
(delivery is at-least-once).

One event makes at most one notification:

=================  ===========================================================================
kind               from
=================  ===========================================================================
order_filled       ``PositionOpened`` (a market order, or a pending order that triggered)
take_profit        ``PositionClosed`` with reason ``take_profit``
stop_loss          ``PositionClosed`` with reason ``stop_loss``
trailing_stop      ``PositionClosed`` with reason ``trailing_stop``
liquidation        ``PositionClosed`` with reason ``liquidation``
margin_call        ``MarginCall``
stop_out           ``StopOut``, with the positions its input closed (reason ``stop_out``)
order_expired      ``OrderCancelled`` with reason ``expired``
price_alert        ``AlertTriggered``
dead_man_switch    ``DeadManSwitchFired``
operator_action    ``OperatorAction`` naming an account (a balance adjustment, a forced close)
=================  ===========================================================================

A position an operator closed is told by its ``OperatorAction`` (which carries the reason), not
by its ``PositionClosed``; a stop-out's closes ride in its ``stop_out`` notification.

Amounts, prices and quantities are decimal strings at the instrument's scale, as everywhere at
the edge; ``created_at`` is the input's time in milliseconds.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Mapping, Optional

from actors.store.notifications import Notification
from exness_actors.events import (
    AlertTriggered, DeadManSwitchFired, MarginCall, OperatorAction, OrderCancelled, PositionClosed, PositionOpened,
    StopOut)
from exness_actors.instruments import Instrument
from exness_actors.money import format_fixed

__all__ = ["Notification", "KINDS", "CHANNELS", "derive", "can_notify", "NOTIFYING_EVENTS", "notification_id",
           "notification_json", "notification_body"]

#: every kind, in the order the documentation lists them
KINDS: tuple[str, ...] = ("order_filled", "take_profit", "stop_loss", "trailing_stop", "liquidation",
                          "margin_call", "stop_out", "order_expired", "price_alert", "dead_man_switch",
                          "operator_action")
#: the channels a notification can go out on (the HTTP list holds every notification regardless)
CHANNELS: tuple[str, ...] = ("ws", "email", "webhook")

_CLOSE_KINDS = {"take_profit": "take_profit", "stop_loss": "stop_loss", "trailing_stop": "trailing_stop",
                "liquidation": "liquidation"}
_MONEY_DECIMALS = 2


def notification_id(shard: int, seq: int, index: int) -> str:
    return f"{shard}-{seq}-{index}"


def notification_json(notification: Notification, *, with_read: bool = False) -> dict[str, Any]:
    """The notification as the API, the WebSocket channel, e-mails and webhooks show it
    (``read`` only in the API's list)."""
    body: dict[str, Any] = {"id": notification.id, "kind": notification.kind,
                            "created_at": notification.created_at // 1_000_000,
                            "account_id": str(notification.account_id), "title": notification.title,
                            "data": notification.data}
    if with_read:
        body["read"] = notification.read_at is not None
    return body


def notification_body(notification: Notification) -> bytes:
    """The exact bytes a webhook receives (and signs): compact JSON with sorted keys, so the same
    notification always makes the same body."""
    return json.dumps(notification_json(notification), separators=(",", ":"), sort_keys=True,
                      ensure_ascii=False).encode("utf-8")


class _Formats:
    """Decimal strings at each symbol's scales (the default scales for an unknown symbol)."""

    def __init__(self, instruments: Mapping[str, Instrument]) -> None:
        self.instruments = instruments

    def _instrument(self, symbol: str) -> Instrument:
        instrument = self.instruments.get(symbol)
        return instrument if instrument is not None else Instrument(symbol=symbol)

    def price(self, symbol: str, ticks: Optional[int]) -> Optional[str]:
        return None if ticks is None else format_fixed(ticks, self._instrument(symbol).price_decimals)

    def qty(self, symbol: str, units: int) -> str:
        return format_fixed(units, self._instrument(symbol).qty_decimals)

    @staticmethod
    def money(cents: int) -> str:
        return format_fixed(cents, _MONEY_DECIMALS)


# ------------------------------------------------------------------ one event -> (kind, title, data)

def _filled(event: Any, fmt: _Formats, _rest: list) -> tuple[str, str, dict]:
    price = fmt.price(event.symbol, event.open_price)
    qty = fmt.qty(event.symbol, event.qty)
    return "order_filled", f"{event.symbol} {event.side} {qty} filled at {price}", {
        "order_id": str(event.order_id), "position_id": str(event.position_id), "symbol": event.symbol,
        "side": event.side, "qty": qty, "price": price, "margin": fmt.money(event.margin),
        "leverage": event.leverage}


def _closed_data(event: Any, fmt: _Formats) -> dict[str, Any]:
    return {"position_id": str(event.position_id), "symbol": event.symbol, "side": event.side,
            "reason": event.reason, "qty": fmt.qty(event.symbol, event.qty),
            "open_price": fmt.price(event.symbol, event.open_price),
            "close_price": fmt.price(event.symbol, event.price), "pnl": fmt.money(event.pnl),
            "remaining_qty": fmt.qty(event.symbol, event.remaining_qty)}


def _closed(event: Any, fmt: _Formats, _rest: list) -> Optional[tuple[str, str, dict]]:
    kind = _CLOSE_KINDS.get(event.reason)
    if kind is None:     # user closes (the trader did it), operator closes and stop-outs: told elsewhere
        return None
    label = kind.replace("_", " ")
    return kind, (f"{event.symbol} {event.side} closed by {label} at "
                  f"{fmt.price(event.symbol, event.price)}, pnl {fmt.money(event.pnl)}"), _closed_data(event, fmt)


def _level(equity: int, used_margin: int) -> Optional[str]:
    """Margin level in percent, two decimals, rounded down (None without used margin)."""
    if used_margin <= 0:
        return None
    return format_fixed(equity * 10_000 // used_margin, 2)


def _margin_call(event: Any, fmt: _Formats, _rest: list) -> tuple[str, str, dict]:
    level = _level(event.equity, event.used_margin)
    return "margin_call", f"Margin call: margin level {level}%", {
        "equity": fmt.money(event.equity), "used_margin": fmt.money(event.used_margin), "margin_level": level}


def _stop_out(event: Any, fmt: _Formats, rest: list) -> tuple[str, str, dict]:
    closed = [_closed_data(other, fmt) for other in rest
              if type(other) is PositionClosed and other.account_id == event.account_id
              and other.reason == "stop_out"]
    level = _level(event.equity, event.used_margin)
    return "stop_out", f"Stop out at margin level {level}%: {len(closed)} position(s) closed", {
        "equity": fmt.money(event.equity), "used_margin": fmt.money(event.used_margin), "margin_level": level,
        "positions": closed}


def _expired(event: Any, fmt: _Formats, _rest: list) -> Optional[tuple[str, str, dict]]:
    if event.reason != "expired":
        return None
    return "order_expired", f"Pending order {event.order_id} expired", {"order_id": str(event.order_id)}


def _alert(event: Any, fmt: _Formats, _rest: list) -> tuple[str, str, dict]:
    price = fmt.price(event.symbol, event.price)
    return "price_alert", f"{event.symbol} is {event.condition} {price}", {
        "alert_id": str(event.alert_id), "symbol": event.symbol, "condition": event.condition, "price": price,
        "quote_price": fmt.price(event.symbol, event.quote_price), "note": event.note}


def _dead_man(event: Any, fmt: _Formats, _rest: list) -> tuple[str, str, dict]:
    return "dead_man_switch", f"Dead-man switch fired: {event.cancelled} pending order(s) cancelled", {
        "cancelled": event.cancelled}


def _operator(event: Any, fmt: _Formats, _rest: list) -> Optional[tuple[str, str, dict]]:
    if event.account_id is None:
        return None
    try:
        detail = json.loads(event.detail) if event.detail else {}
    except ValueError:
        detail = {"text": event.detail}
    label = event.action.replace("_", " ")
    return "operator_action", f"The broker applied {label} to your account: {event.reason}", {
        "action": event.action, "target": event.target, "reason": event.reason, "detail": detail}


_Deriver = Callable[[Any, _Formats, list], Optional[tuple[str, str, dict]]]

#: event class -> its notification (or None); the other events make none
_DERIVERS: dict[type, _Deriver] = {
    PositionOpened: _filled, PositionClosed: _closed, MarginCall: _margin_call, StopOut: _stop_out,
    OrderCancelled: _expired, AlertTriggered: _alert, DeadManSwitchFired: _dead_man, OperatorAction: _operator,
}


#: the event classes that can make a notification (an input without one makes none)
NOTIFYING_EVENTS: frozenset[type] = frozenset(_DERIVERS)


def can_notify(events: Iterable[Any]) -> bool:
    """True when :func:`derive` could make a notification of an input with these events (it
    makes none of an input for which this is False). The process-mode forwarder
    (:mod:`actors.notifications._forward`) keeps only such inputs; one table decides both."""
    notifying = NOTIFYING_EVENTS
    for event in events:
        if type(event) in notifying:
            return True
    return False


def derive(items: Iterable[tuple[int, int, list]], instruments: Mapping[str, Instrument], *,
           shard: int = 0) -> list[Notification]:
    """The notifications of ``(seq, ts, events)`` items, in event order (see the module docstring)."""
    fmt = _Formats(instruments)
    out: list[Notification] = []
    derivers = _DERIVERS
    for seq, ts, events in items:
        for index, event in enumerate(events):
            deriver = derivers.get(type(event))
            if deriver is None:
                continue
            made = deriver(event, fmt, events[index + 1:])
            if made is None:
                continue
            kind, title, data = made
            out.append(Notification(id=notification_id(shard, seq, index), account_id=int(event.account_id),
                                    shard=shard, seq=seq, index=index, kind=kind, created_at=ts,
                                    title=title, data=data))
    return out
