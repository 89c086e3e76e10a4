"""Per-account notification preferences: which kinds, which channels, the webhook.

An account that never set any has :func:`default_preferences`: every kind, on the WebSocket
channel only (e-mail and webhooks are opted into). Every notification of an enabled kind is kept
in the account's list (``GET /api/v1/notifications``) whatever the channels say.

:func:`apply_update` validates a ``PUT /api/v1/notifications/preferences`` body against the
current preferences: fields left out keep their value; a mistake raises
:class:`PreferencesError` naming the field, which the gateway answers 400 ``VALIDATION_ERROR``.

The webhook URL must be ``https://``, or ``http://`` to a loopback host (127.0.0.0/8, ``::1``,
``localhost``) when ``[notifications] webhook_allow_http_loopback`` is on (tests, a local relay).
The signing secret is made here (32 random bytes, hex) the first time a URL is set, and again on
``"rotate_webhook_secret": true``; the owner reads it back from ``GET``.
"""

from __future__ import annotations

import ipaddress
import secrets
from typing import Any, Optional
from urllib.parse import urlsplit

from actors.notifications.kinds import CHANNELS, KINDS
from actors.store.notifications import Preferences

__all__ = ["Preferences", "PreferencesError", "default_preferences", "apply_update", "preferences_json",
           "check_webhook_url", "MAX_URL_LENGTH"]

MAX_URL_LENGTH = 2048
_FIELDS = ("events", "channels", "webhook_url", "rotate_webhook_secret")


class PreferencesError(ValueError):
    """A preferences body that cannot be taken: ``field`` names what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def default_preferences(account_id: int) -> Preferences:
    return Preferences(account_id=account_id, events=KINDS, channels=("ws",))


def preferences_json(preferences: Preferences) -> dict[str, Any]:
    return {"events": list(preferences.events), "channels": list(preferences.channels),
            "webhook_url": preferences.webhook_url, "webhook_secret": preferences.webhook_secret,
            "updated_at": preferences.updated_at // 1_000_000 if preferences.updated_at else None}


def _names(body: dict, field: str, allowed: tuple[str, ...]) -> Optional[tuple[str, ...]]:
    if field not in body:
        return None
    value = body[field]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise PreferencesError(field, f"must be a list of names (any of {', '.join(allowed)})")
    unknown = [item for item in value if item not in allowed]
    if unknown:
        raise PreferencesError(field, f"unknown name {unknown[0][:64]!r}: use any of {', '.join(allowed)}")
    return tuple(name for name in allowed if name in value)     # canonical order, no repeats


def check_webhook_url(url: Any, *, allow_http_loopback: bool) -> str:
    """``url`` when it can receive webhooks; :class:`PreferencesError` (field ``webhook_url``) if not."""
    if not isinstance(url, str) or not url:
        raise PreferencesError("webhook_url", "must be a URL string (or null to remove it)")
    if len(url) > MAX_URL_LENGTH:
        raise PreferencesError("webhook_url", f"must be at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port   # raises ValueError for a bad port
    except ValueError:
        raise PreferencesError("webhook_url", "is not a valid URL") from None
    if not host or parts.username is not None or parts.password is not None or parts.fragment:
        raise PreferencesError("webhook_url", "must be scheme://host[:port]/path, without credentials "
                                              "or fragment")
    if parts.scheme == "https":
        return url
    if parts.scheme == "http" and allow_http_loopback and _is_loopback(host):
        return url
    allowed = "https://, or http:// to a loopback host" if allow_http_loopback else "https://"
    raise PreferencesError("webhook_url", f"must start with {allowed}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def apply_update(current: Preferences, body: Any, *, now: int, email_available: bool,
                 allow_http_loopback: bool) -> Preferences:
    """The preferences after a PUT body (see the module docstring)."""
    if not isinstance(body, dict):
        raise PreferencesError("body", "must be a JSON object")
    unknown = sorted(key for key in body if key not in _FIELDS)
    if unknown:
        raise PreferencesError(str(unknown[0])[:64], f"unknown field (allowed: {', '.join(_FIELDS)})")
    events = _names(body, "events", KINDS)
    channels = _names(body, "channels", CHANNELS)
    webhook_url = current.webhook_url
    if "webhook_url" in body:
        raw = body["webhook_url"]
        webhook_url = None if raw is None else check_webhook_url(raw, allow_http_loopback=allow_http_loopback)
    rotate = body.get("rotate_webhook_secret", False)
    if not isinstance(rotate, bool):
        raise PreferencesError("rotate_webhook_secret", "must be true or false")
    channels = channels if channels is not None else current.channels
    if "webhook" in channels and webhook_url is None:
        raise PreferencesError("webhook_url", "is required while channels has webhook")
    if "email" in channels and "email" not in current.channels and not email_available:
        raise PreferencesError("channels", "email: this server has no SMTP server configured "
                                           "([notifications] smtp_host)")
    secret = current.webhook_secret
    if webhook_url is not None and (secret is None or rotate):
        secret = secrets.token_hex(32)
    if webhook_url is None:
        secret = None
    return Preferences(account_id=current.account_id, events=events if events is not None else current.events,
                       channels=channels, webhook_url=webhook_url, webhook_secret=secret, updated_at=now)
