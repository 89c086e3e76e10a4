"""The lean path: the hot trading routes served straight from ASGI, under the same hypercorn worker.

Theory of operation
-------------------
Placing an order, closing a position and reading the account are most of a trader's requests. Through
Quart each pays for two extra tasks and a nursery (quart-trio), a request object with werkzeug
headers, URL routing, app and request contexts, hooks and a response object — several times the
cost of the handler itself. :class:`FastRoutes` wraps the Quart app's ASGI callable
(``app.asgi_app``, so the served app and the test client both go through it) and answers the
routes of :data:`actors.gateway._trading.FAST_ROUTES` itself; every other request goes to Quart
unchanged.

Nothing about *what* is answered is written twice. The handlers' bodies are the shared
``*_answer`` functions of :mod:`actors.gateway._trading` (the Quart routes call the same ones);
authentication and body parsing are :class:`~actors.gateway._common.Gateway` methods; errors go
through :func:`~actors.gateway._responses.error_answer` and the headers every response carries
are :class:`~actors.gateway._responses.CommonHeaders`, both shared with the Quart app. The steps
run in the Quart app's order: per-IP limit, authentication and per-account limit, the handler
(which reads the body when it needs it), common headers, metrics, one DEBUG line.

A request takes this path only in the shape the path handles exactly like Quart: HTTP, no query
string and no root path, a body declared by ``Content-Length`` within ``[http] max_body_bytes``
(no chunked body, no ``Expect``), and no body at all on a route that does not read one. Any
other request — ``HEAD``, ``OPTIONS``, a query string, a trailing slash, a large body — goes to
Quart, which answers it as it always did. ``[http] fast_path = false`` sends everything to
Quart; ``tests/test_gateway_fast.py`` holds both paths to the same bytes.

When a handler fails before it read the body it declared (a 401 before the order's body
arrived), the body is drained while the error goes out, as Quart's message task does, so
:class:`~actors.gateway._server.ConnectionGuard` can keep the connection alive.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable, Optional

import trio
from werkzeug.exceptions import RequestEntityTooLarge, RequestTimeout

from actors import stage_profile
from actors.gateway._common import Gateway, dumps, rate_limited
from actors.gateway._responses import ErrorContext, error_answer
from actors.gateway._trading import FAST_ROUTES

__all__ = ["FastRoutes"]

log = logging.getLogger("exness.gateway")

#: how long Quart waits for a request body (``BODY_TIMEOUT``) before answering 408
BODY_TIMEOUT_S = 30.0
_JSON = (b"content-type", b"application/json")
_CONTENT_LENGTH = b"content-length"


class _Disconnected(Exception):
    """The client went away before its body arrived: nothing is answered (as in Quart)."""


class _Route:
    """One fast route: its rule (the metrics label), the answer, and whether it reads a body."""

    __slots__ = ("rule", "answer", "reads_body", "prefix", "suffix", "has_argument")

    def __init__(self, rule: str, answer: Callable[..., Awaitable[tuple[Any, int]]], reads_body: bool) -> None:
        self.rule = rule
        self.answer = answer
        self.reads_body = reads_body
        head, marker, rest = rule.partition("<")
        self.has_argument = bool(marker)
        self.prefix = head
        self.suffix = rest.partition(">")[2]

    def argument(self, path: str) -> Optional[str]:
        """The path's one ``<argument>`` (werkzeug's default converter: one non-empty segment;
        "" for a rule without one); None when the path is not this route."""
        if not self.has_argument:
            return "" if path == self.prefix else None
        if path.startswith(self.prefix) and path.endswith(self.suffix):
            value = path[len(self.prefix):len(path) - len(self.suffix)]
            if value and "/" not in value:
                return value
        return None


class _Request:
    """What the fast path reads from one request: a few headers, and the body when asked."""

    __slots__ = ("receive", "authorization", "content_type", "origin", "declared", "length_known", "body_read",
                 "gateway")

    def __init__(self, receive: Callable, gateway: Gateway) -> None:
        self.receive = receive
        self.gateway = gateway
        self.authorization: Optional[str] = None
        self.content_type = ""
        self.origin: Optional[str] = None
        self.declared = 0
        self.length_known = False   # a Content-Length header came (an ASGI test client may send none)
        self.body_read = False

    def read_headers(self, headers: list[tuple[bytes, bytes]], max_body_bytes: int) -> bool:
        """Take the headers the path needs; False if the request must go to Quart instead."""
        authorization = content_type = origin = None
        for name, value in headers:
            if name == b"authorization":
                if authorization is None:
                    authorization = value.decode("latin-1")
            elif name == b"content-type":
                if content_type is None:
                    content_type = value.decode("latin-1")
            elif name == b"content-length":
                if not value.isdigit() or self.declared:
                    return False
                self.declared = int(value)
                self.length_known = True
                if self.declared > max_body_bytes:
                    return False
            elif name == b"origin":
                if origin is None:
                    origin = value.decode("latin-1")
            elif name == b"transfer-encoding" or name == b"expect":
                return False
        self.authorization = authorization
        self.content_type = content_type or ""
        self.origin = origin
        return True

    async def json_body(self, *, optional: bool = False) -> Any:
        """The body, decoded as :meth:`Gateway.json_body` decodes Quart's."""
        return self.gateway.parse_body(await self._read(), self.content_type, optional=optional)

    async def _read(self) -> bytes:
        """The body. With a ``Content-Length``, read until that many bytes arrived: the server's
        closing empty message is not waited for (h11 holds a body to its declared length, so
        nothing can follow), and a body declared empty is not waited for at all. Each
        ``receive`` is a scheduling round of the whole event loop, which under load is most of
        a request's latency (see docs/decisions.md, issue 14's tail). Without one (an ASGI
        client that does not send it), until the server's last message."""
        self.body_read = True
        declared = self.declared if self.length_known else -1
        if not declared:
            return b""
        limit = self.gateway.settings.max_body_bytes
        chunks = []
        size = 0
        with trio.move_on_after(BODY_TIMEOUT_S) as waited:
            while True:
                message = await self.receive()
                if message["type"] != "http.request":
                    raise _Disconnected()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise RequestEntityTooLarge()
                chunks.append(chunk)
                if size >= declared >= 0 or not message.get("more_body", False):
                    break
        if waited.cancelled_caught:
            raise RequestTimeout()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def drain(self) -> None:
        """Read and drop the body nobody read (the connection can then be reused)."""
        while True:
            message = await self.receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return


class FastRoutes:
    """ASGI middleware in front of the Quart app: answers the hot routes itself (see the module
    docstring), hands everything else to ``app``."""

    def __init__(self, app: Callable[..., Awaitable[None]], gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway
        self.routes: dict[str, list[_Route]] = {}
        for method, rule, answer, reads_body in FAST_ROUTES:
            self.routes.setdefault(method, []).append(_Route(rule, answer, reads_body))

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        routes = self.routes.get(scope.get("method", "")) if scope["type"] == "http" else None
        if routes is not None and not scope["query_string"] and not scope.get("root_path"):
            path = scope["path"]
            for route in routes:
                argument = route.argument(path)
                if argument is not None:
                    request = _Request(receive, self.gateway)
                    if (request.read_headers(scope["headers"], self.gateway.settings.max_body_bytes)
                            and (route.reads_body or not request.declared)):
                        await self._serve(scope, send, route, argument, request)
                        return
                    break
        await self.app(scope, receive, send)

    async def _serve(self, scope: dict, send: Callable, route: _Route, argument: str, request: _Request) -> None:
        gateway = self.gateway
        started = time.perf_counter()
        profile = stage_profile.ACTIVE   # None unless profiling (EXNESS_STAGE_PROFILE)
        stamps = profile.request(route.rule) if profile is not None else None
        method = scope["method"]
        account: Any = "-"
        extra: Optional[dict] = None
        try:
            limiter = gateway.ip_limiter
            if limiter.rate_per_s > 0:
                wait = limiter.acquire(_remote_addr(scope))
                if wait:
                    gateway.metrics.rate_limited.labels("ip").inc()
                    raise rate_limited("ip", wait, "too many requests from this address; slow down")
            claims = gateway.verify_bearer(request.authorization)
            account = claims.account_id
            gateway.limit_account(claims)
            if stamps is not None:
                stamps.authenticated = time.time_ns()
            answering = gateway if stamps is None else stage_profile.Stamped(gateway, stamps)
            data, status = await route.answer(answering, claims.account_id, argument, request.json_body)
        except _Disconnected:
            return
        except Exception as error:
            context = ErrorContext(method, scope["path"], gateway.settings, gateway.count_internal_error)
            status, data, extra = error_answer(error, context)
        if stamps is not None:
            stamps.answered = time.time_ns()
            stamps.status = status
        body = dumps(data).encode()
        headers = [_JSON, (_CONTENT_LENGTH, b"%d" % len(body))]
        if extra:   # first, as in Quart's response
            headers[:0] = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in extra.items()]
        common = gateway.common_headers
        headers += common.api_raw
        if common.origins:
            headers += [(name.lower().encode("latin-1"), value.encode("latin-1"))
                        for name, value in common.cors(request.origin, method)]
        elapsed = time.perf_counter() - started
        gateway.metrics.observe_request(route.rule, method, status, elapsed)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("event=http_request method=%s route=%s status=%d ms=%.2f account=%s ip=%s",
                      method, route.rule, status, elapsed * 1000, account, _remote_addr(scope))
        if stamps is not None:
            stamps.rendered = time.time_ns()
        if request.declared and not request.body_read:
            await _answer_draining(send, status, headers, body, request)
        else:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        if stamps is not None:
            stamps.sent = time.time_ns()


async def _answer_draining(send: Callable, status: int, headers: list, body: bytes, request: _Request) -> None:
    """Answer while the unread body is drained, as Quart's message task would."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(request.drain)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        nursery.cancel_scope.cancel()


def _remote_addr(scope: dict) -> str:
    """The client's address as Quart's ``request.remote_addr`` gives it."""
    return (scope.get("client") or ["<local>"])[0]
