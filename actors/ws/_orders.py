"""The WebSocket order lane: ``{"op":"order", "action": …}`` → core command → ``order_result``.

Validation is :mod:`actors.wire.codec`'s (the HTTP API's parsers), so both lanes accept and refuse the
same inputs with the same error codes; business rejections keep the core's reason as the code
(:func:`actors.wire.codec.rejection_of`).

Some actions name an existing order or position and need its instrument to parse prices and
quantities at the right scale; the instrument is read from the engine's state (a symbol never
changes, so reading it outside the engine's turn is safe). The engine still decides ownership
and existence: a position that is not this account's is ``UNKNOWN_POSITION`` whichever way it is
asked, never revealed.

The outcome has the objects the HTTP API answers (rendered by :mod:`actors.wire.codec`): ``order`` and
``position`` for a placement (``POST /orders``), the order for a cancel or modify, the closed part
for a close (``POST /positions/{id}/close``) and the position for a position change. For a cancel
or modify, the record captured when the request was parsed supplies the fields the event does not
carry.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import trio

from actors.engine.interface import EngineClient
from actors.wire import codec as edge
from actors.ws._format import (
    cancelled_order_json,
    modified_order_json,
    order_modification_json,
    position_now_json,
    position_update_json,
)
from actors.wire.codec import (
    EdgeError,
    duplicate_of,
    parse_add_margin,
    parse_close,
    parse_message_id,
    parse_modify_order,
    parse_modify_position,
    parse_place_order,
    rejection_of,
)
from actors.engine.actor import submit_between
from actors.wire import views as views
from actors.bus.streams import BoxedView
from exness_actors.commands import AccountId, CancelOrder, ModifyOrder, OrderId, PositionId
from exness_actors.engine import Engine
from exness_actors.events import (
    OrderAccepted,
    OrderCancelled,
    OrderModified,
    PositionClosed,
    PositionOpened,
    PositionUpdated,
)
from exness_actors.instruments import Instrument

__all__ = ["ACTIONS", "build_command", "outcome", "duplicate_outcome", "remote_outcome", "error_json"]

#: action → the id field it names (None: place)
ACTIONS: dict[str, Optional[str]] = {
    "place": None, "cancel": "order_id", "modify_order": "order_id", "close": "position_id",
    "modify_position": "position_id", "add_margin": "position_id",
}
_ENVELOPE = frozenset({"op", "id", "action"})
_MODIFY_ORDER_FIELDS = ("price", "take_profit", "stop_loss", "expires_at")
DUPLICATE_LOOKUP_S = 2.0


def error_json(error: EdgeError) -> dict:
    return {"code": error.code, "message": error.message, "details": error.details}


def _invalid(field: str, problem: str) -> EdgeError:
    return EdgeError(400, "VALIDATION_ERROR", f"{field}: {problem}", {"field": field, "problem": problem})


def _unknown_position(position_id: int) -> EdgeError:
    # the engine's own wording for a position that is not (or no longer) this account's
    return EdgeError(404, "UNKNOWN_POSITION", f"no open position {position_id!r} on this account",
                     {"reason": "UNKNOWN_POSITION", "ref": str(position_id)})


def _target(action: str, message: Mapping[str, Any]) -> tuple[Optional[int], dict]:
    """The id the action names (None for a placement) and the rest of the message."""
    id_field = ACTIONS[action]
    body = {k: v for k, v in message.items() if k not in _ENVELOPE and k != id_field}
    if id_field is None:
        return None, body
    if message.get(id_field) is None:
        raise _invalid(id_field, "is required")
    return parse_message_id(message[id_field], id_field), body


def _command(action: str, body: dict, account_id: AccountId, target: Optional[int],
             instruments: Mapping[str, Instrument], symbol: Optional[str]) -> Any:
    """The core command; ``symbol`` is the named order's or position's, None when this account
    has no such pending order / open position."""
    if target is None:
        return parse_place_order(body, account_id, instruments)
    if action == "cancel":
        if body:
            raise _invalid(sorted(body)[0], "unknown field (allowed: order_id)")
        return CancelOrder(account_id=account_id, order_id=OrderId(target))
    if action == "modify_order":
        if symbol is None:
            # Not pending on this account: let the engine say UNKNOWN_ORDER or ORDER_NOT_PENDING
            # (a bare ModifyOrder changes nothing), after checking the field names.
            unknown = sorted(k for k in body if k not in _MODIFY_ORDER_FIELDS)
            if unknown:
                raise _invalid(unknown[0], f"unknown field (allowed: {', '.join(_MODIFY_ORDER_FIELDS)})")
            if not body:
                raise EdgeError(400, "VALIDATION_ERROR",
                                "nothing to modify: give price, take_profit, stop_loss or expires_at", {})
            return ModifyOrder(account_id=account_id, order_id=OrderId(target))
        return parse_modify_order(body, account_id, target, instruments[symbol])
    if symbol is None:
        raise _unknown_position(target)
    instrument = instruments[symbol]
    if action == "close":
        return parse_close(body, account_id, target, instrument)
    if action == "modify_position":
        return parse_modify_position(body, account_id, target, instrument)
    return parse_add_margin(body, account_id, target)


def build_command(action: str, message: Mapping[str, Any], account_id: AccountId,
                  instruments: Mapping[str, Any], engine: Optional[Engine] = None) -> tuple[Any, Any]:
    """``(command, context)`` for one order-lane message; :class:`EdgeError` on bad input.

    ``context`` is what :func:`outcome` needs besides the reply: the order or position record
    the action names (None when it is not this account's, or when ``engine`` — the in-process
    engine, read between its turns — is not given: a remote engine answers through views,
    :func:`remote_outcome`).
    """
    target, body = _target(action, message)
    record: Any = None
    if target is not None and engine is not None:
        record = (engine.orders.get(OrderId(target)) if ACTIONS[action] == "order_id"
                  else engine.positions.get(PositionId(target)))
        if record is not None and record.account_id != account_id:
            record = None
    command = _command(action, body, account_id, target, instruments,
                       record.symbol if record is not None else None)
    return command, record


def outcome(action: str, context: Any, events: list, instruments: Mapping[str, Any],
            engine: Optional[Engine] = None) -> Optional[dict]:
    """The ``order_result`` fields for a reply: ``{"ok", "order", "position"}`` or
    ``{"ok": False, "error"}``; None for a duplicate (see :func:`duplicate_outcome`). A
    ``context`` (from :func:`build_command`) comes with the in-process ``engine``."""
    rejection = rejection_of(events)
    if rejection is not None:
        return {"ok": False, "error": error_json(rejection)}
    order_json = position_json = None
    accepted = opened = None
    for event in events:
        kind = type(event)
        if kind is OrderAccepted:
            accepted = event
        elif kind is PositionOpened:
            opened = event
        elif kind is PositionClosed and position_json is None:
            position_json = edge.position_closed_json(event, instruments[event.symbol])
        elif kind is OrderCancelled:
            order_json = (cancelled_order_json(context, instruments[context.symbol], event)
                          if context is not None else {"id": str(event.order_id), "status": "cancelled"})
        elif kind is OrderModified:
            order_json = (modified_order_json(context, instruments[context.symbol], event)
                          if context is not None else {"id": str(event.order_id), "status": "pending"})
        elif kind is PositionUpdated and action in ("modify_position", "add_margin"):
            position_json = (position_now_json(context, engine) if context is not None and engine is not None
                             else {"id": str(event.position_id)})
    if accepted is not None:
        instrument = instruments[accepted.symbol]
        order_json = edge.order_accepted_json(accepted, instrument,
                                              opened.position_id if opened is not None else None)
        if opened is not None:
            position_json = edge.position_opened_json(opened, instrument)
    elif duplicate_of(events) is not None:
        return None
    return {"ok": True, "order": order_json, "position": position_json}


async def duplicate_outcome(events: list, account_id: int, handle: EngineClient, store: Any,
                            instruments: Mapping[str, Instrument]) -> dict:
    """The original outcome of a repeated ``client_order_id`` (as ``POST /orders`` answers it).

    A rejection is answered from the core's memory of it. An order that was created is looked up
    where it now lives: still pending in the engine, else in the persisted order history (the
    persister may be a moment behind the engine, so it is retried for up to
    :data:`DUPLICATE_LOOKUP_S`); the position it opened, while still open, from the engine.
    """
    duplicate = duplicate_of(events)
    assert duplicate is not None
    if duplicate.reason is not None:
        reason = duplicate.reason
        return {"ok": False, "duplicate": True, "error": {
            "code": reason,
            "message": f"a repeat of {duplicate.key!r}, which was rejected with {reason}; nothing happened",
            "details": {"reason": reason, "duplicate": True}}}
    order_id = duplicate.order_id
    assert order_id is not None

    # The gateway's named views (a 1-tuple each: a query's answer cannot be None), so a remote
    # engine in split mode can answer them too.
    (order_json,) = await handle.query(BoxedView(views.pending_order, (account_id, order_id)))
    position_json = None
    if order_json is None and store is not None:
        with trio.move_on_after(DUPLICATE_LOOKUP_S):
            while True:
                record = await store.order(account_id, order_id)
                if record is not None and (record.status != "pending" or record.position_id is not None):
                    order_json = edge.order_record_json(record, instruments[record.symbol])
                    if record.position_id is not None:
                        (position_json,) = await handle.query(
                            BoxedView(views.open_position, (account_id, record.position_id)))
                    break
                await trio.sleep(0.05)
    if order_json is None:
        order_json = {"id": str(order_id)}
    return {"ok": True, "duplicate": True, "order": order_json, "position": position_json}


# ----------------------------------------------------------------- split mode (remote engine)

async def remote_outcome(action: str, message: Mapping[str, Any], account_id: AccountId, handle: EngineClient,
                         instruments: Mapping[str, Instrument]) -> dict:
    """The ``order_result`` fields of an action on an existing order or position when the
    engine is remote (split mode), where this process holds no copy of the engine's state.

    The named order/position is read with a view first (its instrument scales the message's
    prices and quantities, and another account's position is UNKNOWN_POSITION before anything
    else is checked, as in embedded mode) — for a cancel, right before the command in the same
    stream entry — and a modified order or position is read again right after the command in
    the same entry. The answer is rendered from the views' JSON and the events, as the HTTP API
    does in split mode. A placement goes through :func:`outcome`.
    Raises what the handle raises (Overloaded, EngineStopped, EngineTimeout)."""
    try:
        target, body = _target(action, message)
        assert target is not None, "placements take the synchronous path"
        on_order = ACTIONS[action] == "order_id"
        named = BoxedView(views.pending_order if on_order else views.open_position, (account_id, target))
        record = None
        if action != "cancel":
            (record,) = await handle.query(named)
        command = _command(action, body, account_id, target, instruments,
                           record["symbol"] if record is not None else None)
    except EdgeError as error:
        return {"ok": False, "error": error_json(error)}
    before = named if action == "cancel" else None
    after = named if action in ("modify_order", "modify_position", "add_margin") else None
    before_value, reply, after_value = await submit_between(handle, command, before=before, after=after)
    if before is not None:
        record = before_value
    rejection = rejection_of(reply.events)
    if rejection is not None:
        return {"ok": False, "error": error_json(rejection)}
    order_json = position_json = None
    for event in reply.events:
        kind = type(event)
        if kind is PositionClosed and position_json is None:
            position_json = edge.position_closed_json(event, instruments[event.symbol])
        elif kind is OrderCancelled:
            order_json = dict(record) if record is not None else {"id": str(event.order_id)}
            order_json.update(status="cancelled", cancel_reason=event.reason)
        elif kind is OrderModified:
            if after_value is not None:
                order_json = after_value
            elif record is not None:      # it filled or expired right after the change
                order_json = dict(record)
                order_json.update(order_modification_json(event, instruments[record["symbol"]]))
            else:
                order_json = {"id": str(event.order_id), "status": "pending"}
        elif kind is PositionUpdated and action in ("modify_position", "add_margin"):
            if after_value is not None:
                position_json = after_value
            elif record is not None:      # closed by a trigger right after the change
                position_json = dict(record)
                position_json.update(position_update_json(event, instruments[record["symbol"]]),
                                     trailing_stop_price=None, unrealized_pnl=None)
            else:
                position_json = {"id": str(event.position_id)}
    return {"ok": True, "order": order_json, "position": position_json}
