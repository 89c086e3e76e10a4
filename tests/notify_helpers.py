"""Local receivers for the notification tests: a webhook server and an SMTP server, each in a
thread on a free loopback port, recording what they got."""

from __future__ import annotations

import email
import socket
import threading
import time
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

import attrs
from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@attrs.define
class Hook:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class WebhookReceiver:
    """``POST``s recorded per path. ``status[path]``: the answers to give, in turn (the last one
    repeats; default 200). ``hold[path]``: a :class:`threading.Event` a request waits for before
    answering (a target that hangs)."""

    def __init__(self) -> None:
        self.hooks: list[Hook] = []
        self.status: dict[str, list[int]] = {}
        self.hold: dict[str, threading.Event] = {}
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:   # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.arrived:
                    receiver.hooks.append(Hook(path=self.path, headers=dict(self.headers.items()), body=body,
                                               at=time.monotonic()))
                    receiver.arrived.notify_all()
                held = receiver.hold.get(self.path)
                if held is not None:
                    held.wait(30)
                answers = receiver.status.get(self.path) or [200]
                code = answers.pop(0) if len(answers) > 1 else answers[0]
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Hook]:
        with self.arrived:
            return [hook for hook in self.hooks if hook.path == path]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20) -> bool:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.arrived.wait(left)
        return True

    def __enter__(self) -> "WebhookReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        for event in self.hold.values():
            event.set()
        self.server.shutdown()
        self.server.server_close()


class _Handler:
    def __init__(self, receiver: "SmtpReceiver") -> None:
        self.receiver = receiver

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:   # noqa: N802 - aiosmtpd's name
        message = email.message_from_bytes(envelope.content)
        with self.receiver.arrived:
            self.receiver.messages.append(message)
            self.receiver.recipients.append(list(envelope.rcpt_tos))
            self.receiver.arrived.notify_all()
        return "250 OK"


class SmtpReceiver:
    """An aiosmtpd server in its own thread (its asyncio loop) on a free port."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.recipients: list[list[str]] = []
        self.arrived = threading.Condition()
        self.port = free_port()
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20) -> bool:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.arrived.wait(left)
        return True

    def with_id(self, notification_id: str) -> list[Message]:
        with self.arrived:
            return [m for m in self.messages if m["X-Exness-Notification-Id"] == notification_id]

    def __enter__(self) -> "SmtpReceiver":
        self.controller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.controller.stop()


def settings_for(smtp: Optional[SmtpReceiver] = None, **values: Any) -> Any:
    from actors.settings import NotificationSettings
    base: dict[str, Any] = {"retry_base_s": 0.05, "retry_max_s": 0.2, "poll_interval_s": 0.05, "max_attempts": 4,
                            "webhook_timeout_s": 5.0}
    if smtp is not None:
        base.update(smtp_host="127.0.0.1", smtp_port=smtp.port)
    base.update(values)
    return NotificationSettings(**base)
