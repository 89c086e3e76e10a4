"""The notification routes: the account's list (unread count, mark read), its preferences and
the deliveries that gave up (dead letters). The worker that makes and sends them is
:mod:`actors.notifications`; these read and write the store only."""

from __future__ import annotations

import re
from typing import Annotated, Any, Awaitable, Callable, Literal, Optional

import msgspec
from msgspec import Meta
from quart import Response, request

from actors.gateway._common import API, current_gateway, doc, json_response
from actors.gateway._params import QueryParams, invalid
from actors.gateway._schemas import REQUEST_EXAMPLES, Cursor, Limit, _example
from actors.notifications import (
    CHANNELS, KINDS, PreferencesError, apply_update, default_preferences, notification_json, preferences_json)
from actors.store.notifications import DeadLetter

__all__ = ["register", "ROUTES"]

#: ids a read request may name at once
MAX_READ_IDS = 1000
_ID = re.compile(r"^[0-9]{1,10}-[0-9]{1,19}-[0-9]{1,10}$")

Kind = Literal[KINDS]  # type: ignore[valid-type]
Channel = Literal[CHANNELS]  # type: ignore[valid-type]
NotificationId = Annotated[str, Meta(pattern=_ID.pattern, examples=["0-1234-2"],
                                     description="{shard}-{seq}-{index}: stable; de-duplicate on it")]


# ------------------------------------------------------------------ OpenAPI shapes

class NotificationBody(msgspec.Struct, kw_only=True):
    id: NotificationId
    kind: Kind
    created_at: Annotated[int, Meta(description="ms since the Unix epoch (the engine input's time)")]
    account_id: str
    title: Annotated[str, Meta(description="one line for people")]
    data: Annotated[dict, Meta(description="the kind's fields: decimal strings for amounts, prices and "
                                           "quantities (docs/notifications.md lists them per kind)")]
    read: bool


class NotificationPage(msgspec.Struct, kw_only=True):
    notifications: list[NotificationBody]
    next_cursor: Optional[str]
    unread_count: int


class NotificationsQuery(msgspec.Struct, kw_only=True):
    cursor: Cursor = None
    limit: Limit = None
    unread: Optional[Literal["true", "false"]] = None


class ReadRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    ids: Optional[Annotated[list[NotificationId], Meta(min_length=1, max_length=MAX_READ_IDS)]] = None
    all: Optional[Literal[True]] = None


class ReadResult(msgspec.Struct, kw_only=True):
    marked: Annotated[int, Meta(description="notifications that were unread and are now read")]
    unread_count: int


class PreferencesBody(msgspec.Struct, kw_only=True):
    events: list[Kind]
    channels: list[Channel]
    webhook_url: Optional[str]
    webhook_secret: Annotated[Optional[str], Meta(
        description="HMAC-SHA256 key of the X-Exness-Signature header (hex); made when a webhook URL is set")]
    updated_at: Optional[int]


class PreferencesUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    events: Optional[list[Kind]] = None
    channels: Optional[list[Channel]] = None
    webhook_url: Optional[Annotated[str, Meta(max_length=2048, description=(
        "https://, or http:// to a loopback host ([notifications] webhook_allow_http_loopback); "
        "null removes it"))]] = None
    rotate_webhook_secret: bool = False


class DeadLetterBody(msgspec.Struct, kw_only=True):
    notification_id: NotificationId
    channel: Literal["email", "webhook"]
    kind: Kind
    attempts: int
    last_error: str
    created_at: int
    failed_at: int


class DeadLetterPage(msgspec.Struct, kw_only=True):
    dead_letters: list[DeadLetterBody]
    next_cursor: Optional[str]


REQUEST_EXAMPLES[ReadRequest] = {
    "some": _example("mark these read", {"ids": ["0-1234-2", "0-1240-0"]}),
    "all": _example("mark every notification read", {"all": True}),
}
REQUEST_EXAMPLES[PreferencesUpdate] = {
    "kinds": _example("fills and closes by triggers only, on the WebSocket channel", {
        "events": ["order_filled", "take_profit", "stop_loss", "liquidation"], "channels": ["ws"]}),
    "webhook": _example("add a webhook (its signing secret comes back in the answer)", {
        "channels": ["ws", "webhook"], "webhook_url": "https://hooks.example.com/exness"}),
}


# ------------------------------------------------------------------ handlers

@doc(response=NotificationPage, query=NotificationsQuery, errors=(400,), tag="notifications")
async def list_notifications() -> Response:
    """The account's notifications, newest first, with the unread count; unread=true lists the unread only."""
    gw = current_gateway()
    claims = gw.authenticate()
    params = QueryParams(request.args, ("cursor", "limit", "unread"))
    unread = params.choice("unread", ("true", "false"), "false") == "true"
    page, unread_count = await gw.store.notifications(claims.account_id, cursor=params.cursor(),
                                                      limit=params.limit(), unread=unread)
    return json_response({"notifications": [notification_json(item, with_read=True) for item in page.items],
                          "next_cursor": page.next_cursor, "unread_count": unread_count})


def _read_ids(body: Any) -> Optional[list[str]]:
    """The ids of a read request, or None for ``{"all": true}``."""
    if not isinstance(body, dict):
        raise invalid("body", "must be a JSON object: {\"ids\": [...]} or {\"all\": true}")
    unknown = sorted(str(key) for key in body if key not in ("ids", "all"))
    if unknown:
        raise invalid(unknown[0][:64], "unknown field (allowed: ids, all)")
    if ("ids" in body) == ("all" in body):
        raise invalid("ids", "give either ids (a list) or all: true")
    if "all" in body:
        if body["all"] is not True:
            raise invalid("all", "must be true")
        return None
    ids = body["ids"]
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_READ_IDS:
        raise invalid("ids", f"must be a list of 1 to {MAX_READ_IDS} notification ids")
    for item in ids:
        if not isinstance(item, str) or not _ID.match(item):
            raise invalid("ids", f"{str(item)[:40]!r} is not a notification id (shard-seq-index)")
    return ids


@doc(request_model=ReadRequest, response=ReadResult, errors=(400, 413, 415), tag="notifications")
async def mark_read() -> Response:
    """Mark notifications read: {"ids": [...]} or {"all": true}. Ids of other accounts, unknown or
    already read ones are skipped."""
    gw = current_gateway()
    claims = gw.authenticate()
    ids = _read_ids(await gw.json_body())
    marked, unread = await gw.store.mark_read(claims.account_id, ids, now=gw.clock())
    return json_response({"marked": marked, "unread_count": unread})


async def _current(account_id: int) -> Any:
    stored = await current_gateway().store.preferences(account_id)
    return stored if stored is not None else default_preferences(account_id)


@doc(response=PreferencesBody, errors=(), tag="notifications")
async def preferences() -> Response:
    """Which kinds are notified and on which channels (defaults: every kind, WebSocket only)."""
    gw = current_gateway()
    claims = gw.authenticate()
    QueryParams(request.args, ())
    return json_response(preferences_json(await _current(claims.account_id)))


@doc(request_model=PreferencesUpdate, response=PreferencesBody, errors=(400, 413, 415), tag="notifications")
async def update_preferences() -> Response:
    """Set kinds, channels and the webhook URL; fields left out keep their value. A webhook
    secret is made when a URL is first set (rotate_webhook_secret: true makes a new one)."""
    gw = current_gateway()
    claims = gw.authenticate()
    body = await gw.json_body()
    settings = gw.cfg.settings.notifications
    try:
        updated = apply_update(await _current(claims.account_id), body, now=gw.clock(),
                               email_available=settings.email_available,
                               allow_http_loopback=settings.webhook_allow_http_loopback)
    except PreferencesError as error:
        raise invalid(error.field, error.problem) from None
    await gw.store.put_preferences(updated)
    return json_response(preferences_json(updated))


def _dead_letter_json(letter: DeadLetter) -> dict[str, Any]:
    return {"notification_id": letter.notification_id, "channel": letter.channel, "kind": letter.kind,
            "attempts": letter.attempts, "last_error": letter.last_error,
            "created_at": letter.created_at // 1_000_000, "failed_at": letter.failed_at // 1_000_000}


@doc(response=DeadLetterPage, query=NotificationsQuery, errors=(400,), tag="notifications")
async def dead_letters() -> Response:
    """E-mail and webhook deliveries that failed [notifications] max_attempts times, newest first."""
    gw = current_gateway()
    claims = gw.authenticate()
    params = QueryParams(request.args, ("cursor", "limit"))
    page = await gw.store.dead_letters(claims.account_id, cursor=params.cursor(), limit=params.limit())
    return json_response({"dead_letters": [_dead_letter_json(letter) for letter in page.items],
                          "next_cursor": page.next_cursor})


#: the routes of this module: (method, path, handler)
ROUTES: tuple[tuple[str, str, Callable[..., Awaitable[Response]]], ...] = (
    ("GET", f"{API}/notifications", list_notifications),
    ("POST", f"{API}/notifications/read", mark_read),
    ("GET", f"{API}/notifications/preferences", preferences),
    ("PUT", f"{API}/notifications/preferences", update_preferences),
    ("GET", f"{API}/notifications/dead-letters", dead_letters),
)


def register(app: Any) -> None:
    for method, path, handler in ROUTES:
        app.add_url_rule(path, view_func=handler, methods=[method])
