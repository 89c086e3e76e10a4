"""Serving the app with hypercorn's trio worker, as an actor (``task_status.started(info)``)."""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, Callable, Optional

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from quart_trio import QuartTrio

from actors.auth_tokens import TokenIssuer
from actors.gateway import _early_errors, _h11_sends
from actors.gateway._app import create_app
from actors.gateway._settings import GatewaySettings

__all__ = ["run", "GatewayInfo", "hypercorn_config"]

log = logging.getLogger("exness.gateway")

BODY_DRAIN_S = 1.0
"""How long an early response (sent before the app read the request body) waits for the rest of
the body, so the connection can serve the next request; after that it closes the connection."""


@attrs.define(slots=True, kw_only=True, eq=False)
class GatewayInfo:
    """What :func:`run` hands to ``task_status.started``.

    ``port`` is the port actually bound (useful with ``[http] port = 0``); ``url`` the base URL.
    :meth:`request_shutdown` (or setting the ``shutdown`` event given to :func:`run`) starts a
    graceful stop: no new connections, requests in flight get ``[http] graceful_timeout_s`` to
    finish, then :func:`run` returns and ``stopped`` is set.
    """
    app: QuartTrio
    host: str
    port: int
    binds: list[str]
    shutdown: trio.Event
    stopped: trio.Event = attrs.Factory(trio.Event)

    @property
    def url(self) -> str:
        return self.binds[0] if self.binds else f"http://{self.host}:{self.port}"

    def request_shutdown(self) -> None:
        self.shutdown.set()

    def statistics(self) -> dict[str, Any]:
        return {"port": self.port, **self.app.extensions["exness_gateway"].statistics()}


class ConnectionGuard:
    """ASGI wrapper that keeps hypercorn's HTTP/1.1 connections honest under quart-trio.

    Hypercorn ends a response's cycle — start the next keep-alive cycle and its idle timer, or
    close the connection — from inside the app's ``send`` of the last body chunk. quart-trio
    cancels its request nursery as soon as hypercorn reports the stream closed, which is in the
    middle of that work: a connection meant to close stayed open and unread, and one meant to
    stay open lost its idle timer (so shutdown never closed it). The next request on such a
    connection was never answered. So:

    * the last ``send`` of every response runs shielded, and that work completes;
    * once ``draining`` is set (graceful shutdown), every response says ``Connection: close``:
      requests in flight and those still arriving on open connections are answered, then their
      connections close; :meth:`wait_until_idle` tells :func:`run` when all are answered;
    * a response that starts before the request body has arrived (a 401 before the handler
      reads the body, a 404 route) waits up to :data:`BODY_DRAIN_S` for it (quart-trio reads it
      and keeps at most ``max_body_bytes``), so the connection can be reused; a body still
      missing, or declared larger than ``max_body_bytes``, gets ``Connection: close``.
    """

    def __init__(self, app: Any, max_body_bytes: int, draining: trio.Event) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.draining = draining
        self.in_flight = 0
        self._idle: Optional[trio.Event] = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(receive, send, self.max_body_bytes, _declared_length(scope), self.draining)
        self.in_flight += 1
        try:
            await self.app(scope, exchange.receive, exchange.send)
        finally:
            self.in_flight -= 1
            if not self.in_flight and self._idle is not None:
                self._idle.set()

    async def wait_until_idle(self) -> None:
        """Return once no request is in the app (each has been answered)."""
        while self.in_flight:
            self._idle = trio.Event()
            await self._idle.wait()


def _declared_length(scope: dict) -> int:
    """The request's Content-Length; 0 without a body, -1 for a chunked one."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else -1
        if name == b"transfer-encoding":
            return -1
    return 0


class _Exchange:
    """One request and its response passing through :class:`ConnectionGuard`."""

    __slots__ = ("_receive", "_send", "_max_bytes", "_declared", "_draining", "complete", "_arrived", "_received")

    def __init__(self, receive: Callable, send: Callable, max_bytes: int, declared: int,
                 draining: trio.Event) -> None:
        self._receive = receive
        self._send = send
        self._max_bytes = max_bytes
        self._declared = declared
        self._draining = draining
        self.complete = declared == 0   # no body: h11 has its end before the app starts
        self._arrived: Optional[trio.Event] = None
        self._received = 0

    async def receive(self) -> dict:
        message = await self._receive()
        self._received += len(message.get("body", b""))
        # the body's end, http.disconnect, or every declared byte (h11 holds a body to its
        # Content-Length, so the lean path need not wait for the server's closing empty message)
        if not message.get("more_body", False) or 0 < self._declared <= self._received:
            self.complete = True
            if self._arrived is not None:
                self._arrived.set()
        return message

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "http.response.body" and not message.get("more_body", False):
            with trio.CancelScope(shield=True):
                await self._send(message)
            return
        if kind == "http.response.start":
            if not self.complete:
                await self._wait_for_body()
            if not self.complete or self._draining.is_set():
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
        await self._send(message)

    async def _wait_for_body(self) -> None:
        if self._declared > self._max_bytes:
            return
        self._arrived = trio.Event()
        with trio.move_on_after(BODY_DRAIN_S):
            await self._arrived.wait()


def hypercorn_config(settings: GatewaySettings) -> HypercornConfig:
    config = HypercornConfig()
    host = settings.host
    config.bind = [f"[{host}]:{settings.port}" if ":" in host and not host.startswith("[")
                   else f"{host}:{settings.port}"]
    config.accesslog = None                  # the app logs one line per request (DEBUG)
    config.errorlog = logging.getLogger("exness.gateway.server")
    config.graceful_timeout = settings.graceful_timeout_s
    config.backlog = settings.backlog
    config.include_server_header = False
    return config


def _os_error(error: BaseException) -> Optional[OSError]:
    """The ``OSError`` that stopped hypercorn binding (its nurseries wrap it in groups)."""
    if isinstance(error, OSError):
        return error
    if isinstance(error, BaseExceptionGroup):
        return next((found for inner in error.exceptions if (found := _os_error(inner)) is not None), None)
    return None


def _port_of(bind: str) -> int:
    return int(bind.rsplit(":", 1)[1])


async def run(*, handle: Any, store: Any, candles: Any, cfg: Any, tokens: TokenIssuer,
              feed_stats: Any = None, ws_stats: Any = None, persister: Any = None,
              notifications: Any = None, shutdown: Optional[trio.Event] = None, clock: Callable[[], int] = time.time_ns,
              serve: bool = True,
              task_status: trio.TaskStatus[GatewayInfo] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the HTTP API on ``[http] host``/``port`` until ``shutdown`` is set (graceful) or
    the task is cancelled. ``task_status.started`` gets a :class:`GatewayInfo` once listening.

    ``serve=False`` (the simulation) binds no socket: the started :class:`GatewayInfo` carries
    the app (``binds`` empty), which a test client drives. A port that cannot be bound is an
    ``OSError`` naming the address."""
    app = create_app(handle=handle, store=store, candles=candles, cfg=cfg, tokens=tokens,
                     feed_stats=feed_stats, ws_stats=ws_stats, persister=persister,
                     notifications=notifications, clock=clock)
    settings = GatewaySettings.from_config(cfg)
    stop = shutdown if shutdown is not None else trio.Event()
    if not serve:
        unserved = GatewayInfo(app=app, host=settings.host, port=0, binds=[], shutdown=stop)
        task_status.started(unserved)
        await stop.wait()
        unserved.stopped.set()
        return
    config = hypercorn_config(settings)
    _early_errors.install()
    _h11_sends.install()
    info: Optional[GatewayInfo] = None
    guard = ConnectionGuard(app, settings.max_body_bytes, stop)
    try:
        async with trio.open_nursery() as nursery:
            try:
                binds = await nursery.start(functools.partial(hypercorn_serve, guard, config, shutdown_trigger=stop.wait))
            except (OSError, BaseExceptionGroup) as exc:
                failure = _os_error(exc)
                if failure is None:
                    raise
                raise OSError(failure.errno, f"cannot serve HTTP on {settings.host}:{settings.port}: "
                                             f"{failure.strerror or failure}") from None
            info = GatewayInfo(app=app, host=settings.host, port=_port_of(binds[0]), binds=list(binds),
                               shutdown=stop)
            log.info("event=gateway_listening url=%s", info.url)
            task_status.started(info)
            await stop.wait()
            # hypercorn closes idle connections and waits for the others to close; a connection
            # whose client sent its next request as the drain began can miss its wake-up there
            # and would hold the stop for the whole grace period: stop once all are answered
            with trio.move_on_after(settings.graceful_timeout_s):
                await guard.wait_until_idle()
            nursery.cancel_scope.cancel()
    finally:
        if info is not None:
            info.stopped.set()
            log.info("event=gateway_stopped url=%s", info.url)
