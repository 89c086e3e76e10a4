"""How one notification goes out on e-mail and webhooks (the WebSocket channel is a publication
to the stream servers, see :mod:`actors.notifications.worker`).

**Webhooks**: ``POST`` of :func:`~actors.notifications.kinds.notification_body` (compact JSON,
sorted keys: the same bytes on every attempt) with

* ``X-Exness-Signature: sha256=<hex HMAC-SHA256 of the body with the account's webhook secret>``,
* ``X-Exness-Notification-Id`` (de-duplicate on it: delivery is at-least-once),
* ``X-Exness-Delivery-Attempt`` (1, 2, …).

Any 2xx answer is a delivery; anything else (another status, a timeout, a refused connection) is
a failed attempt. Redirects are not followed (a webhook URL is configured exactly). The HTTP
client is :class:`~actors.notifications._http.WebhookClient` (trio + h11, keep-alive).

**E-mail**: a plain-text message per notification, sent with the standard library's
:mod:`smtplib` in a worker thread (one SMTP session carries several messages); ``Message-ID`` is
derived from the notification id, so a mail client can fold a repeated delivery.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Optional, Sequence

from actors.notifications._http import WebhookClient, WebhookError
from actors.notifications.kinds import notification_body
from actors.settings import NotificationSettings
from actors.store.notifications import Notification

__all__ = ["SIGNATURE_HEADER", "ID_HEADER", "ATTEMPT_HEADER", "USER_AGENT", "sign", "webhook_request",
           "post_webhook", "email_message", "send_emails", "retry_delay_s"]

SIGNATURE_HEADER = "X-Exness-Signature"
ID_HEADER = "X-Exness-Notification-Id"
ATTEMPT_HEADER = "X-Exness-Delivery-Attempt"
USER_AGENT = "exness-actors-notifications/1"
_ERROR_TEXT = 300


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def webhook_request(notification: Notification, secret: str, attempt: int) -> tuple[bytes, dict[str, str]]:
    body = notification_body(notification)
    return body, {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body),
                  ID_HEADER: notification.id, ATTEMPT_HEADER: str(attempt)}


async def post_webhook(client: WebhookClient, url: str, notification: Notification, secret: str,
                       attempt: int) -> Optional[str]:
    """POST one notification; None when delivered, else what went wrong."""
    body, headers = webhook_request(notification, secret, attempt)
    try:
        status = await client.post(url, body, headers)
    except WebhookError as error:
        return str(error)[:_ERROR_TEXT] or "no answer"
    if 200 <= status < 300:
        return None
    return f"HTTP {status}"


def retry_delay_s(attempts: int, settings: NotificationSettings) -> float:
    """The wait after the ``attempts``-th failure: ``retry_base_s`` doubling, at most ``retry_max_s``."""
    return min(settings.retry_base_s * 2 ** max(0, attempts - 1), settings.retry_max_s)


# ------------------------------------------------------------------------------------ e-mail

def _lines(data: dict[str, Any], indent: str = "") -> list[str]:
    lines = []
    for key, value in data.items():
        if isinstance(value, list):
            lines.append(f"{indent}{key}:")
            for item in value:
                lines.extend(_lines(item, indent + "  ") if isinstance(item, dict) else [f"{indent}  {item}"])
                lines.append("")
        elif isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.extend(_lines(value, indent + "  "))
        else:
            lines.append(f"{indent}{key}: {value}")
    return lines


def email_message(notification: Notification, *, to: str, sender: str) -> EmailMessage:
    message = EmailMessage()
    domain = sender.rpartition("@")[2] or "exness-actors.invalid"
    sent = datetime.datetime.fromtimestamp(notification.created_at / 1e9, tz=datetime.timezone.utc)
    message["Subject"] = f"[exness-actors] {notification.title}"
    message["From"] = sender
    message["To"] = to
    message["Date"] = format_datetime(sent)
    message["Message-ID"] = f"<{notification.id}.{notification.account_id}@{domain}>"
    message[ID_HEADER] = notification.id
    body = [notification.title, "", f"kind: {notification.kind}", f"time: {sent.isoformat()}",
            f"notification id: {notification.id}", "", *_lines(notification.data), "",
            "Choose what you are told about: PUT /api/v1/notifications/preferences"]
    message.set_content("\n".join(body) + "\n")
    return message


def _open_session(settings: NotificationSettings) -> smtplib.SMTP:
    timeout = settings.smtp_timeout_s
    if settings.smtp_security == "tls":
        session: smtplib.SMTP = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, timeout=timeout,
                                                 context=ssl.create_default_context())
    else:
        session = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
        if settings.smtp_security == "starttls":
            session.starttls(context=ssl.create_default_context())
    if settings.smtp_username:
        session.login(settings.smtp_username, settings.smtp_password)
    return session


def send_emails(settings: NotificationSettings, messages: Sequence[EmailMessage]) -> list[Optional[str]]:
    """Send ``messages`` in one SMTP session (blocking: run it in a worker thread). One result per
    message: None when the server took it, else the error."""
    try:
        session = _open_session(settings)
    except (OSError, smtplib.SMTPException) as error:
        return [f"SMTP session: {type(error).__name__}: {error}"[:_ERROR_TEXT]] * len(messages)
    results: list[Optional[str]] = []
    try:
        for message in messages:
            try:
                session.send_message(message)
                results.append(None)
            except smtplib.SMTPServerDisconnected as error:
                lost = f"SMTP: {type(error).__name__}: {error}"[:_ERROR_TEXT]
                results.extend([lost] * (len(messages) - len(results)))
                return results
            except (OSError, smtplib.SMTPException) as error:
                results.append(f"SMTP: {type(error).__name__}: {error}"[:_ERROR_TEXT])
    finally:
        try:
            session.quit()
        except (OSError, smtplib.SMTPException):
            session.close()
    return results
