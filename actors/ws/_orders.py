"""The WebSocket order lane: ``{"op":"order", "action": …}`` → core command → ``order_result``.

Validation is :mod:`actors.wire.codec`'s (the HTTP API's parsers), so both lanes accept and refuse the
same inputs with the same error codes; business rejections keep the core's reason as the code
(:func:`actors.wire.codec.rejection_of`).

Some actions name an existing order or position and need its instrument to parse prices and
quantities at the right scale. The server knows the symbol and owner of each pending order and
open position from the event stream (a symbol never changes); when it does not, the record is
read with a view first. The engine still decides ownership and existence: a position that is not
this account's is ``UNKNOWN_POSITION`` whichever way it is asked, never revealed.

The outcome has the objects the HTTP API answers (rendered by :mod:`actors.wire.codec`): ``order`` and
``position`` for a placement (``POST /orders``), the order for a cancel or modify, the closed part
for a close (``POST /positions/{id}/close``) and the position for a position change. For a cancel
or modify, views run in the same inbox batch as the command read the record before (the fields
the event does not carry) and after it. The engine is reached through
:class:`~actors.engine.interface.EngineClient` only, embedded or split alike.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import trio

from actors.engine.interface import EngineClient
from actors.wire import codec as edge
from actors.ws._format import order_modification_json, position_update_json
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
from exness_actors.commands import AccountId, CancelOrder, CancelOrders, ModifyOrder, OrderId
from exness_actors.reasons import CancelReason
from exness_actors.events import (
    OrderAccepted,
    OrderCancelled,
    OrderModified,
    PositionClosed,
    PositionOpened,
    PositionUpdated,
)
from exness_actors.instruments import Instrument

__all__ = ["ACTIONS", "SYNCHRONOUS_ACTIONS", "named_id", "route", "build_command", "outcome", "duplicate_outcome",
           "viewed_outcome", "error_json", "placed_pending_orders", "cancel_on_disconnect_commands",
           "MAX_CANCEL_ORDERS"]

#: action → the id field it names (None: place)
ACTIONS: dict[str, Optional[str]] = {
    "place": None, "cancel": "order_id", "modify_order": "order_id", "close": "position_id",
    "modify_position": "position_id", "add_margin": "position_id",
}
#: actions whose answer needs no view of the named record: with its symbol known, sent as they are
SYNCHRONOUS_ACTIONS = frozenset({"place", "close"})
_ENVELOPE = frozenset({"op", "id", "action"})
_MODIFY_ORDER_FIELDS = ("price", "take_profit", "stop_loss", "expires_at")
DUPLICATE_LOOKUP_S = 2.0
#: the most order ids one cancel-on-disconnect command names (the core's limit of CancelOrders)
MAX_CANCEL_ORDERS = 10_000
_CANCEL_ON_DISCONNECT = CancelReason.CANCEL_ON_DISCONNECT.value


def placed_pending_orders(events: list) -> dict[int, int]:
    """``order id → account id`` of the pending orders a reply's events placed (cancel-on-disconnect)."""
    return {event.order_id: event.account_id for event in events
            if type(event) is OrderAccepted and event.status == "pending"}


def cancel_on_disconnect_commands(placed: Mapping[int, int]) -> list[CancelOrders]:
    """One ``CancelOrders`` (reason ``cancel_on_disconnect``) per account, ids in order, at most
    :data:`MAX_CANCEL_ORDERS` each; the core skips the ids no longer pending."""
    by_account: dict[int, list[int]] = {}
    for order_id, account_id in placed.items():
        by_account.setdefault(account_id, []).append(order_id)
    commands = []
    for account_id in sorted(by_account):
        ids = sorted(by_account[account_id])
        for start in range(0, len(ids), MAX_CANCEL_ORDERS):
            commands.append(CancelOrders(account_id=AccountId(account_id), order_ids=ids[start:start + MAX_CANCEL_ORDERS],
                                         reason=_CANCEL_ON_DISCONNECT))
    return commands


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


def named_id(action: str, message: Mapping[str, Any]) -> Optional[int]:
    """The order or position id the action names (None for a placement); :class:`EdgeError` if bad."""
    return _target(action, message)[0]


def route(action: str, known: Optional[tuple[str, int]], account_id: int) -> tuple[Optional[str], bool]:
    """For an action on an existing order or position whose ``(symbol, account id)`` the caller
    knows (None: not, or not yet): the symbol to build the command with, and whether the action
    goes through :func:`viewed_outcome` — when it needs the record itself, or when the id is not
    known. Another account's order or position goes to the engine as is (symbol None), and the
    engine says it does not know it."""
    if known is None:
        return None, True
    if known[1] != account_id:
        return None, False
    return known[0], action not in SYNCHRONOUS_ACTIONS


def build_command(action: str, message: Mapping[str, Any], account_id: AccountId,
                  instruments: Mapping[str, Any], symbol: Optional[str]) -> Any:
    """The core command of one order-lane message; :class:`EdgeError` on bad input. ``symbol`` is
    the named order's or position's when it is this account's, None when it is not."""
    target, body = _target(action, message)
    return _command(action, body, account_id, target, instruments, symbol)


def outcome(events: list, instruments: Mapping[str, Any]) -> Optional[dict]:
    """The ``order_result`` fields of a :data:`SYNCHRONOUS_ACTIONS` reply (or of any rejection):
    ``{"ok", "order", "position"}`` or ``{"ok": False, "error"}``; None for a duplicate (see
    :func:`duplicate_outcome`)."""
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
            order_json = {"id": str(event.order_id), "status": "cancelled"}
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


# ----------------------------------------------------------------- actions read through views

async def viewed_outcome(action: str, message: Mapping[str, Any], account_id: AccountId, handle: EngineClient,
                         instruments: Mapping[str, Instrument], symbol: Optional[str]) -> dict:
    """The ``order_result`` fields of an action on an existing order or position, read through
    views (embedded and split mode alike).

    ``symbol`` is the named record's when the caller knows it is this account's (from the event
    stream): the command is built at once and the record is read right before it (and, for a
    change, right after it) in the same inbox batch — for a remote engine, one stream entry. When
    it is None the record is read with a view first (its instrument scales the message's prices
    and quantities, and another account's position is UNKNOWN_POSITION before anything else is
    checked); a cancel needs no instrument and always reads it in the batch. The answer is
    rendered from the views' JSON and the events, as the HTTP API does in split mode.
    Raises what the handle raises (Overloaded, EngineStopped, EngineTimeout)."""
    try:
        target, body = _target(action, message)
        assert target is not None, "placements take the synchronous path"
        on_order = ACTIONS[action] == "order_id"
        named = BoxedView(views.pending_order if on_order else views.open_position, (account_id, target))
        record = None
        read_first = symbol is None and action != "cancel"
        if read_first:
            (record,) = await handle.query(named)
            symbol = record["symbol"] if record is not None else None
        command = _command(action, body, account_id, target, instruments, symbol)
    except EdgeError as error:
        return {"ok": False, "error": error_json(error)}
    before = None if read_first else named
    after = named if action in ("modify_order", "modify_position", "add_margin") else None
    before_value, reply, after_value = await submit_between(handle, command, before=before, after=after)
    if before is not None:
        record = before_value
    rejection = rejection_of(reply.events)
    if rejection is not None:
        return {"ok": False, "error": error_json(rejection)}
    return _viewed_fields(action, reply.events, record, after_value, instruments)


def _viewed_fields(action: str, events: list, record: Optional[dict], after_value: Optional[dict],
                   instruments: Mapping[str, Instrument]) -> dict:
    """The answer of an accepted :func:`viewed_outcome` command: ``record`` is the named order or
    position as it was right before the command, ``after_value`` as it was right after."""
    order_json = position_json = None
    for event in events:
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
