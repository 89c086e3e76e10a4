"""Account, orders, positions and trade history.

Where answers come from:

* **live state** — account summary, pending orders, open positions — from the engine, through
  queries answered in order with the commands (:mod:`actors.wire.views`);
* **history** — ledger, finished orders, closed positions — from the store, after waiting (at
  most ``[http] history_wait_ms``) for the persister to catch up with what was durable when the
  request arrived, so a trader always sees their own acknowledged commands.

A command and the read its answer needs travel together (:meth:`Gateway.submit`): one engine
round trip per order, deposit, cancel or modify. The order path does no database work.

``GET /orders``: ``status=pending`` (the default) lists the live pending orders from the engine;
``filled``, ``cancelled`` and ``expired`` list the order history from the store, and ``all``
every order the store knows. Both are newest first with the same cursor format.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Awaitable, Callable, Optional

from quart import Response, request

from actors.wire import codec as edge
from actors.wire.codec import EdgeError
from actors.wire import views as views
from actors.gateway._common import API, Gateway, current_gateway, doc, json_response
from actors.gateway._params import QueryParams
from actors.gateway._schemas import (
    AccountSummary, AddMarginRequest, ClosedPart, CloseRequest, FundingRequest, HistoryPage,
    HistoryQuery, LedgerPage, LedgerQuery, ModifyOrderRequest, ModifyPositionRequest, Order,
    OrderList, OrdersQuery, PlacedOrder, PlaceOrderRequest, Position, PositionList, PositionsQuery,
)
from actors.store.base import decode_cursor, encode_cursor
from exness_actors.commands import AccountId, CancelOrder, PositionId
from exness_actors.events import BalanceChanged, OrderAccepted, PositionClosed, PositionFees, PositionOpened
from exness_actors.reasons import BalanceKind, CloseReason, RejectReason

__all__ = ["register", "FAST_ROUTES"]

log = logging.getLogger("exness.gateway.trading")

#: how an answer reads the request's JSON body: ``await json_body(optional=False)``
ReadBody = Callable[..., Awaitable[Any]]

_HISTORY_STATUSES = ("filled", "cancelled", "expired")
_CLOSE_REASONS = tuple(reason.value for reason in CloseReason)
_COMMISSION = BalanceKind.COMMISSION.value


def _unknown_order(order_id: int) -> EdgeError:
    return EdgeError(404, RejectReason.UNKNOWN_ORDER.value, f"no order {order_id} on this account",
                     edge.not_found_details("order", order_id))


def _unknown_position(position_id: int) -> EdgeError:
    return EdgeError(404, RejectReason.UNKNOWN_POSITION.value,
                     f"no open position {position_id} on this account", edge.not_found_details("position", position_id))


def _unknown_account(account_id: int) -> EdgeError:
    return EdgeError(404, RejectReason.UNKNOWN_ACCOUNT.value, "no trading account for this user",
                     edge.not_found_details("account", account_id))


def _not_pending(order_id: int, status: str) -> EdgeError:
    return EdgeError(409, RejectReason.ORDER_NOT_PENDING.value, f"order {order_id} is {status}",
                     {"order_id": str(order_id), "status": status})


def _duplicate_rejected(duplicate: Any) -> EdgeError:
    reason = duplicate.reason
    return EdgeError(edge.status_for(reason), reason,
                     f"a repeat of {duplicate.key!r}, which was rejected with {reason}; nothing happened",
                     {"reason": reason, "duplicate": True})



async def with_demo_flag(gw: Gateway, summary: dict, account_id: int) -> dict:
    """The engine's summary with the store's demo flag (null for an account it does not know)."""
    record = await gw.account_record(account_id)
    summary["demo"] = record.demo if record is not None else None
    return summary


async def summary_after(reply: Any, summary: Optional[dict], account_id: int) -> dict:
    gw = current_gateway()
    if summary is None:   # the pipelined query could not be queued (inbox full): ask again
        summary = await gw.query(views.account_summary, account_id)
    if summary is None:
        raise _unknown_account(account_id)
    return await with_demo_flag(gw, summary, account_id)


def _fees_of(events: list, position_id: int) -> dict[str, Optional[str]]:
    """``commission`` and ``swap`` of a position just opened (the reply's commission charge) or
    of a part just closed (its ``PositionFees``)."""
    for event in events:
        if type(event) is PositionFees and event.position_id == position_id:
            return {"commission": edge.money(event.commission), "swap": edge.money(event.swap)}
    ref = str(position_id)
    commission = sum(-event.free_delta for event in events
                     if type(event) is BalanceChanged and event.kind == _COMMISSION and event.ref == ref)
    return {"commission": edge.money(commission), "swap": edge.money(0)}


async def order_with_history(gw: Gateway, account_id: int, order_id: int) -> tuple[dict, Optional[int]]:
    """An order the account owns — pending (engine) or finished (store) — and its position id."""
    state = await gw.query(views.order_state, account_id, order_id)
    if state is not None and state[0] == "pending":
        return state[1], None
    await gw.history_caught_up(account_id)
    record = await gw.store.order(account_id, order_id)
    if record is None:
        raise _unknown_order(order_id)
    order = edge.order_record_json(record, gw.instrument(record.symbol))
    if state is not None and record.status == "pending":   # the store lags the engine
        order["status"] = state[1]
    return order, record.position_id


# ------------------------------------------------------------------ account


@doc(response=AccountSummary, errors=(400, 404, 503), tag="account")
async def get_account() -> Response:
    """The account in the token: balance, used margin, equity, free margin, margin level,
    unrealized pnl, its type and margin mode, demo or real, and its margin-call and stop-out
    levels."""
    gw = current_gateway()
    claims = gw.authenticate()
    QueryParams(request.args, ())
    return json_response(*await account_answer(gw, claims.account_id, "", gw.json_body))


async def account_answer(gw: Gateway, account_id: AccountId, argument: str, json_body: ReadBody) -> tuple[dict, int]:
    """GET /account once authenticated (shared with the lean path, :mod:`actors.gateway._fast`)."""
    summary = await gw.query(views.account_summary, account_id)
    if summary is None:
        raise _unknown_account(account_id)
    return await with_demo_flag(gw, summary, account_id), 200


def _real_deposit_forbidden(account_id: int) -> EdgeError:
    return EdgeError(403, "REAL_ACCOUNT_DEPOSIT_FORBIDDEN",
                     "a real account is funded by the broker, not through this endpoint; contact support "
                     "(demo accounts deposit freely)", {"account_id": str(account_id)})


async def funding(deposit: bool) -> Response:
    gw = current_gateway()
    claims = gw.authenticate()
    if deposit:
        record = await gw.account_record(claims.account_id)
        if record is not None and not record.demo:
            raise _real_deposit_forbidden(claims.account_id)
    command = edge.parse_funding(await gw.json_body(), claims.account_id, deposit=deposit)
    _, reply, summary = await gw.submit(
        command, after=functools.partial(views.account_summary, account_id=claims.account_id))
    rejection = edge.rejection_of(reply.events)
    if rejection is not None:
        raise rejection
    duplicate = edge.duplicate_of(reply.events)
    if duplicate is not None and duplicate.reason:
        raise _duplicate_rejected(duplicate)
    return json_response(await summary_after(reply, summary, claims.account_id))


@doc(request_model=FundingRequest, response=AccountSummary, errors=(400, 403, 413, 415, 422, 503), tag="account")
async def deposit() -> Response:
    """Add funds to a demo account; answers the account summary.

    A repeat with the same idempotency_key changes nothing and answers the summary again. A
    real account is funded by the broker: 403 REAL_ACCOUNT_DEPOSIT_FORBIDDEN."""
    return await funding(True)


@doc(request_model=FundingRequest, response=AccountSummary, errors=(400, 413, 415, 422, 503), tag="account")
async def withdraw() -> Response:
    """Take funds out of the free balance; answers the account summary.

    More than the free balance is 422 INSUFFICIENT_BALANCE."""
    return await funding(False)


@doc(response=LedgerPage, query=LedgerQuery, errors=(400, 503), tag="account")
async def get_ledger() -> Response:
    """Balance movements, newest first, with cursor pagination."""
    gw = current_gateway()
    claims = gw.authenticate()
    params = QueryParams(request.args, ("cursor", "limit"))
    cursor, limit = params.cursor(), params.limit()
    await gw.history_caught_up(claims.account_id)
    page = await gw.store.ledger(claims.account_id, cursor=cursor, limit=limit)
    return json_response({"entries": [edge.ledger_entry_json(entry) for entry in page.items],
                          "next_cursor": page.next_cursor})


# ------------------------------------------------------------------ orders


@doc(request_model=PlaceOrderRequest, response=PlacedOrder, status=201, also={200: PlacedOrder},
     errors=(400, 404, 409, 413, 415, 422, 503), tag="orders")
async def place_order() -> Response:
    """Place a market, limit or stop order (201).

    A filled market order comes with the position it opened. Rejections are 422 with the
    core's reason as the code (INSUFFICIENT_BALANCE, NO_QUOTE, INVALID_TPSL, …). A repeated
    client_order_id answers the original order with 200 (or the original rejection)."""
    gw = current_gateway()
    claims = gw.authenticate()
    return json_response(*await place_order_answer(gw, claims.account_id, "", gw.json_body))


async def place_order_answer(gw: Gateway, account_id: AccountId, argument: str, json_body: ReadBody) -> tuple[dict, int]:
    """POST /orders once authenticated (shared with the lean path, :mod:`actors.gateway._fast`)."""
    command = edge.parse_place_order(await json_body(), account_id, gw.instruments)
    instrument = gw.instrument(command.symbol)
    _, reply, fresh = await gw.submit(command, after=functools.partial(
        views.new_positions, account_id=account_id))
    events = reply.events
    rejection = edge.rejection_of(events)
    if rejection is not None:
        gw.metrics.order("rejected", rejection.code)
        raise rejection
    accepted = opened = None
    for event in events:
        kind = type(event)
        if kind is OrderAccepted:
            accepted = event
        elif kind is PositionOpened:
            opened = event
    if accepted is None:
        duplicate = edge.duplicate_of(events)
        if duplicate is None:   # pragma: no cover - every outcome is one of the three
            raise RuntimeError(f"unexpected reply to PlaceOrder: {events!r}")
        gw.metrics.order("duplicate", duplicate.reason or "")
        if duplicate.reason:
            raise _duplicate_rejected(duplicate)
        assert duplicate.order_id is not None
        order, position_id = await order_with_history(gw, account_id, duplicate.order_id)
        body = {"order": order}
        if position_id is not None:
            position = await gw.query(views.open_position, account_id, position_id)
            if position is not None:
                body["position"] = position
        return body, 200
    gw.metrics.order(accepted.status)
    body = {"order": edge.order_accepted_json(accepted, instrument,
                                              opened.position_id if opened is not None else None)}
    if opened is not None:
        position = fresh.get(opened.position_id) if fresh else None
        if position is None:
            position = edge.position_opened_json(opened, instrument)
            position.update(_fees_of(events, opened.position_id))
        body["position"] = position
    return body, 201


@doc(response=OrderList, query=OrdersQuery, errors=(400, 503), tag="orders")
async def list_orders() -> Response:
    """Orders, newest first.

    status=pending (the default) lists the live pending orders from the engine; filled,
    cancelled and expired list the order history; all lists every order in the history."""
    gw = current_gateway()
    claims = gw.authenticate()
    params = QueryParams(request.args, ("status", "symbol", "cursor", "limit"))
    status = params.choice("status", ("pending", *_HISTORY_STATUSES, "all"), "pending")
    instrument = params.symbol(gw.instruments)
    symbol = instrument.symbol if instrument is not None else None
    cursor, limit = params.cursor(), params.limit()
    if status == "pending":
        before = None
        if cursor is not None:
            try:
                before = decode_cursor(cursor, "orders", 1)[0]
            except ValueError as exc:
                raise EdgeError(400, "VALIDATION_ERROR", f"cursor: {exc}",
                                {"field": "cursor", "problem": str(exc)}) from None
        orders, last_id = await gw.query(views.pending_orders, claims.account_id, symbol, before, limit)
        next_cursor = encode_cursor("orders", last_id) if last_id is not None else None
        return json_response({"orders": orders, "next_cursor": next_cursor})
    await gw.history_caught_up(claims.account_id)
    page = await gw.store.orders(claims.account_id, status=None if status == "all" else status,
                              symbol=symbol, cursor=cursor, limit=limit)
    return json_response({
        "orders": [edge.order_record_json(record, gw.instrument(record.symbol)) for record in page.items],
        "next_cursor": page.next_cursor})


@doc(response=Order, errors=(400, 404, 503), tag="orders")
async def get_order(order_id: str) -> Response:
    """One order: pending from the engine, finished from the history."""
    gw = current_gateway()
    claims = gw.authenticate()
    QueryParams(request.args, ())
    order, _ = await order_with_history(gw, claims.account_id, edge.parse_order_id(order_id))
    return json_response(order)


@doc(response=Order, errors=(404, 409, 503), tag="orders")
async def cancel_order(order_id: str) -> Response:
    """Cancel a pending order; answers it as cancelled (its margin is released).

    An order that already filled, expired or was cancelled is 409 ORDER_NOT_PENDING."""
    gw = current_gateway()
    claims = gw.authenticate()
    identifier = edge.parse_order_id(order_id)
    order, reply, _ = await gw.submit(
        CancelOrder(account_id=claims.account_id, order_id=identifier),
        before=functools.partial(views.pending_order, account_id=claims.account_id, order_id=identifier))
    rejection = edge.rejection_of(reply.events)
    if rejection is not None:
        raise rejection
    if order is None:   # cannot happen: the query ran just before the cancel that succeeded
        order = {"id": str(identifier)}
    order.update(status="cancelled", cancel_reason="user")
    return json_response(order)


@doc(request_model=ModifyOrderRequest, response=Order, errors=(400, 404, 409, 413, 415, 422, 503),
     tag="orders")
async def modify_order(order_id: str) -> Response:
    """Change a pending order's price, take-profit, stop-loss or expiry (null removes TP/SL/expiry)."""
    gw = current_gateway()
    claims = gw.authenticate()
    identifier = edge.parse_order_id(order_id)
    body = await gw.json_body()
    state = await gw.query(views.order_state, claims.account_id, identifier)
    if state is None:
        raise _unknown_order(identifier)
    if state[0] != "pending":
        raise _not_pending(identifier, state[1])
    command = edge.parse_modify_order(body, claims.account_id, identifier,
                                      gw.instrument(state[1]["symbol"]))
    _, reply, order = await gw.submit(command, after=functools.partial(
        views.pending_order, account_id=claims.account_id, order_id=identifier))
    rejection = edge.rejection_of(reply.events)
    if rejection is not None:
        raise rejection
    if order is None:
        order = await gw.query(views.pending_order, claims.account_id, identifier)
    if order is None:   # it triggered or expired right after the change
        order, _ = await order_with_history(gw, claims.account_id, identifier)
    return json_response(order)


# ------------------------------------------------------------------ positions


@doc(response=PositionList, query=PositionsQuery, errors=(400, 503), tag="positions")
async def list_positions() -> Response:
    """Open positions with their unrealized pnl at the current quote."""
    gw = current_gateway()
    claims = gw.authenticate()
    instrument = QueryParams(request.args, ("symbol",)).symbol(gw.instruments)
    positions = await gw.query(views.open_positions, claims.account_id,
                               instrument.symbol if instrument is not None else None)
    return json_response({"positions": positions})


@doc(response=Position, errors=(400, 404, 503), tag="positions")
async def get_position(position_id: str) -> Response:
    """One open position (closed ones are in /history/positions)."""
    gw = current_gateway()
    claims = gw.authenticate()
    QueryParams(request.args, ())
    identifier = edge.parse_position_id(position_id)
    position = await gw.query(views.open_position, claims.account_id, identifier)
    if position is None:
        raise _unknown_position(identifier)
    return json_response(position)


async def position_instrument(gw: Gateway, account_id: int, position_id: int) -> Any:
    symbol = await gw.query(views.position_symbol, account_id, position_id)
    if symbol is None:
        raise _unknown_position(position_id)
    return gw.instrument(symbol)


@doc(request_model=CloseRequest, response=ClosedPart, errors=(400, 404, 413, 415, 422, 503),
     tag="positions")
async def close_position(position_id: str) -> Response:
    """Close a position at the current quote, or part of it with {"qty": …}.

    Answers the closed part: close_price, pnl, close_reason, qty, remaining_qty, credit."""
    gw = current_gateway()
    claims = gw.authenticate()
    return json_response(*await close_answer(gw, claims.account_id, position_id, gw.json_body))


async def close_answer(gw: Gateway, account_id: AccountId, position_id: str, json_body: ReadBody) -> tuple[dict, int]:
    """POST /positions/{id}/close once authenticated (shared with the lean path)."""
    identifier = edge.parse_position_id(position_id)
    body = await json_body(optional=True)
    if body is not None and not isinstance(body, dict):
        raise EdgeError(400, "VALIDATION_ERROR", "the request body must be a JSON object", {})
    if body is not None and body.get("qty") is not None:
        instrument = await position_instrument(gw, account_id, identifier)
        command = edge.parse_close(body, account_id, identifier, instrument)
    else:   # whole position: the qty scale does not matter, validate the rest of the body
        command = edge.parse_close(body, account_id, identifier, gw.instrument(gw.symbols[0]))
    _, reply, _ = await gw.submit(command)
    rejection = edge.rejection_of(reply.events)
    if rejection is not None:
        raise rejection
    for event in reply.events:
        if type(event) is PositionClosed:
            closed = edge.position_closed_json(event, gw.instrument(event.symbol))
            closed.update(_fees_of(reply.events, event.position_id))
            return closed, 200
    raise RuntimeError(f"unexpected reply to ClosePosition: {reply.events!r}")  # pragma: no cover


async def position_after(account_id: AccountId, position_id: PositionId, command: Any) -> Response:
    gw = current_gateway()
    _, reply, position = await gw.submit(command, after=functools.partial(
        views.open_position, account_id=account_id, position_id=position_id))
    rejection = edge.rejection_of(reply.events)
    if rejection is not None:
        raise rejection
    if position is None:
        position = await gw.query(views.open_position, account_id, position_id)
    if position is None:   # closed by a trigger right after the change
        raise _unknown_position(position_id)
    return json_response(position)


@doc(request_model=ModifyPositionRequest, response=Position, errors=(400, 404, 413, 415, 422, 503),
     tag="positions")
async def modify_position(position_id: str) -> Response:
    """Set or remove take-profit, stop-loss and trailing stop (null removes one)."""
    gw = current_gateway()
    claims = gw.authenticate()
    identifier = edge.parse_position_id(position_id)
    body = await gw.json_body()
    instrument = await position_instrument(gw, claims.account_id, identifier)
    command = edge.parse_modify_position(body, claims.account_id, identifier, instrument)
    return await position_after(claims.account_id, identifier, command)


@doc(request_model=AddMarginRequest, response=Position, errors=(400, 404, 413, 415, 422, 503),
     tag="positions")
async def add_margin(position_id: str) -> Response:
    """Move free balance into a position's margin (its liquidation price moves away).

    Isolated accounts only: a cross account's positions share its whole equity (400
    INVALID_COMMAND; deposit instead)."""
    gw = current_gateway()
    claims = gw.authenticate()
    identifier = edge.parse_position_id(position_id)
    command = edge.parse_add_margin(await gw.json_body(), claims.account_id, identifier)
    return await position_after(claims.account_id, identifier, command)


# ------------------------------------------------------------------ history


@doc(response=HistoryPage, query=HistoryQuery, errors=(400, 503), tag="history")
async def position_history() -> Response:
    """Closed positions (each partial close is its own entry), newest first.

    Filters: symbol, reason (user, take_profit, stop_loss, trailing_stop, liquidation, stop_out),
    start/end (ms, on the close time; start inclusive, end exclusive)."""
    gw = current_gateway()
    claims = gw.authenticate()
    params = QueryParams(request.args, ("symbol", "reason", "start", "end", "cursor", "limit"))
    instrument = params.symbol(gw.instruments)
    reason = params.choice("reason", _CLOSE_REASONS)
    start, end = params.time_range()
    cursor, limit = params.cursor(), params.limit()
    await gw.history_caught_up(claims.account_id)
    page = await gw.store.closed_positions(
        claims.account_id, symbol=instrument.symbol if instrument is not None else None,
        reason=reason, start=start, end=end, cursor=cursor, limit=limit)
    return json_response({
        "positions": [edge.closed_position_json(record, gw.instrument(record.symbol))
                      for record in page.items],
        "next_cursor": page.next_cursor})


#: the routes of this module: (method, path, handler)
ROUTES: tuple[tuple[str, str, Callable[..., Awaitable[Response]]], ...] = (
    ("GET", f"{API}/account", get_account),
    ("POST", f"{API}/account/deposit", deposit),
    ("POST", f"{API}/account/withdraw", withdraw),
    ("GET", f"{API}/account/ledger", get_ledger),
    ("POST", f"{API}/orders", place_order),
    ("GET", f"{API}/orders", list_orders),
    ("GET", f"{API}/orders/<order_id>", get_order),
    ("DELETE", f"{API}/orders/<order_id>", cancel_order),
    ("PATCH", f"{API}/orders/<order_id>", modify_order),
    ("GET", f"{API}/positions", list_positions),
    ("GET", f"{API}/positions/<position_id>", get_position),
    ("POST", f"{API}/positions/<position_id>/close", close_position),
    ("PATCH", f"{API}/positions/<position_id>", modify_position),
    ("POST", f"{API}/positions/<position_id>/margin", add_margin),
    ("GET", f"{API}/history/positions", position_history),
)


#: the routes the lean path serves (:mod:`actors.gateway._fast`): (method, rule, answer, reads a body);
#: each answer is what the Quart route above runs once it has authenticated the caller
FAST_ROUTES: tuple[tuple[str, str, Callable[..., Awaitable[tuple[dict, int]]], bool], ...] = (
    ("POST", f"{API}/orders", place_order_answer, True),
    ("POST", f"{API}/positions/<position_id>/close", close_answer, True),
    ("GET", f"{API}/account", account_answer, False),
)


def register(app: Any) -> None:
    for method, path, handler in ROUTES:
        app.add_url_rule(path, view_func=handler, methods=[method])
