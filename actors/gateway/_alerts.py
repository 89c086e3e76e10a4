"""Price alerts and the dead-man switch (issue 13): trader-facing routes, plain handlers in ROUTES.

* ``POST /api/v1/alerts`` places a price alert in the core (it sits in the symbol's trigger
  indexes and fires once when the bid reaches its price; docs/api.md), ``GET /api/v1/alerts``
  lists the active ones, ``DELETE /api/v1/alerts/{id}`` cancels one. A fired alert reaches the
  trader as an ``alert_triggered`` event on the WebSocket ``account`` channel (and through the
  notifications worker).
* ``POST /api/v1/orders/cancel-all-after {timeout_s}`` arms (or, with 0, disarms) the account's
  dead-man switch: unless sent again within ``timeout_s``, every pending order is cancelled
  (reason ``dead_man_switch``). The deadline is engine time, so a replay fires it identically.
"""

from __future__ import annotations

import functools
from typing import Any, Awaitable, Callable

from quart import Response, request

from actors.gateway._common import API, current_gateway, doc, json_response
from actors.gateway._params import QueryParams
from actors.gateway._schemas import Alert, AlertList, CancelAllAfterRequest, DeadManSwitch, PlaceAlertRequest
from actors.wire import codec as edge
from actors.wire import views as views
from actors.wire.codec import EdgeError
from exness_actors.commands import AccountId, CancelAlert
from exness_actors.events import AlertPlaced, DeadManSwitchSet
from exness_actors.reasons import RejectReason

__all__ = ["register", "ROUTES"]


def _unknown_alert(alert_id: int) -> EdgeError:
    return EdgeError(404, RejectReason.UNKNOWN_ALERT.value, f"no active alert {alert_id} on this account",
                     edge.not_found_details("alert", alert_id))


@doc(request_model=PlaceAlertRequest, response=Alert, status=201, also={200: Alert},
     errors=(400, 404, 409, 413, 415, 422, 503), tag="alerts")
async def place_alert() -> Response:
    """Place a price alert (201): it fires once when the bid reaches price from below (above)
    or from above (below). An account holds at most 200 active alerts (409 TOO_MANY_ALERTS); a
    price the bid is already at or past is 422 INVALID_PRICE. A repeated client_alert_id
    answers the original alert with 200 (404 UNKNOWN_ALERT once it fired or was cancelled)."""
    gw = current_gateway()
    claims = gw.authenticate()
    command = edge.parse_place_alert(await gw.json_body(), claims.account_id, gw.instruments)
    _, reply, _ = await gw.submit(command)
    rejection = edge.rejection_of(reply.events)
    if rejection is not None:
        raise rejection
    for event in reply.events:
        if type(event) is AlertPlaced:
            return json_response(edge.alert_placed_json(event, gw.instrument(event.symbol)), 201)
    duplicate = edge.duplicate_of(reply.events)
    if duplicate is None or duplicate.order_id is None:   # pragma: no cover - every outcome is one of these
        raise RuntimeError(f"unexpected reply to PlaceAlert: {reply.events!r}")
    if duplicate.reason:
        raise EdgeError(edge.status_for(duplicate.reason), duplicate.reason,
                        f"a repeat of {duplicate.key!r}, which was rejected with {duplicate.reason}; nothing happened",
                        {"reason": duplicate.reason, "duplicate": True})
    alert = await gw.query(views.alert, claims.account_id, duplicate.order_id)
    if alert is None:
        raise _unknown_alert(duplicate.order_id)
    return json_response(alert, 200)


@doc(response=AlertList, errors=(400, 503), tag="alerts")
async def list_alerts() -> Response:
    """The account's active price alerts, oldest first."""
    gw = current_gateway()
    claims = gw.authenticate()
    QueryParams(request.args, ())
    return json_response({"alerts": await gw.query(views.alerts, claims.account_id)})


@doc(response=Alert, errors=(404, 503), tag="alerts")
async def cancel_alert(alert_id: str) -> Response:
    """Cancel an active alert; answers it. One that fired, expired or was cancelled is 404 UNKNOWN_ALERT."""
    gw = current_gateway()
    claims = gw.authenticate()
    identifier = edge.parse_alert_id(alert_id)
    alert, reply, _ = await gw.submit(
        CancelAlert(account_id=AccountId(claims.account_id), alert_id=identifier),
        before=functools.partial(views.alert, account_id=claims.account_id, alert_id=identifier))
    rejection = edge.rejection_of(reply.events)
    if rejection is not None:
        raise rejection
    return json_response(alert if alert is not None else {"id": str(identifier)})


@doc(request_model=CancelAllAfterRequest, response=DeadManSwitch, errors=(400, 404, 413, 415, 503), tag="orders")
async def cancel_all_after() -> Response:
    """The dead-man switch: unless this is sent again within timeout_s seconds, every pending
    order of the account is cancelled (cancel reason dead_man_switch). timeout_s 0 disarms it.
    Answers the deadline in engine time (ms); send it again well before then (e.g. every
    timeout_s / 4)."""
    gw = current_gateway()
    claims = gw.authenticate()
    command = edge.parse_cancel_all_after(await gw.json_body(), claims.account_id)
    _, reply, _ = await gw.submit(command)
    rejection = edge.rejection_of(reply.events)
    if rejection is not None:
        raise rejection
    armed = next(event for event in reply.events if type(event) is DeadManSwitchSet)
    return json_response({"armed": armed.deadline_ns != 0, "timeout_s": command.timeout_ns // 10**9,
                          "deadline": edge.ns_to_ms(armed.deadline_ns) if armed.deadline_ns else None,
                          "now": edge.ns_to_ms(armed.ts)})


#: the routes of this module: (method, path, handler)
ROUTES: tuple[tuple[str, str, Callable[..., Awaitable[Response]]], ...] = (
    ("POST", f"{API}/alerts", place_alert),
    ("GET", f"{API}/alerts", list_alerts),
    ("DELETE", f"{API}/alerts/<alert_id>", cancel_alert),
    ("POST", f"{API}/orders/cancel-all-after", cancel_all_after),
)


def register(app: Any) -> None:
    for method, path, handler in ROUTES:
        app.add_url_rule(path, view_func=handler, methods=[method])
