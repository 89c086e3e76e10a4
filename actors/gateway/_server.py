"""Serving the app with hypercorn's trio worker, as an actor (``task_status.started(info)``)."""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, Callable, Optional

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart_trio import QuartTrio

from actors.auth_tokens import TokenIssuer
from actors.gateway import _early_errors
from actors.gateway._app import create_app
from actors.gateway._settings import GatewaySettings

__all__ = ["run", "GatewayInfo", "hypercorn_config"]

log = logging.getLogger("exness.gateway")


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


def _port_of(bind: str) -> int:
    return int(bind.rsplit(":", 1)[1])


async def run(*, handle: Any, store: Any, candles: Any, cfg: Any, tokens: TokenIssuer,
              feed_stats: Any = None, ws_stats: Any = None, persister: Any = None,
              shutdown: Optional[trio.Event] = None, clock: Callable[[], int] = time.time_ns,
              task_status: trio.TaskStatus[GatewayInfo] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the HTTP API on ``[http] host``/``port`` until ``shutdown`` is set (graceful) or
    the task is cancelled. ``task_status.started`` gets a :class:`GatewayInfo` once listening."""
    app = create_app(handle=handle, store=store, candles=candles, cfg=cfg, tokens=tokens,
                     feed_stats=feed_stats, ws_stats=ws_stats, persister=persister, clock=clock)
    settings = GatewaySettings.from_config(cfg)
    config = hypercorn_config(settings)
    _early_errors.install()
    stop = shutdown if shutdown is not None else trio.Event()
    info: Optional[GatewayInfo] = None
    try:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(functools.partial(serve, app, config, shutdown_trigger=stop.wait))
            info = GatewayInfo(app=app, host=settings.host, port=_port_of(binds[0]), binds=list(binds),
                               shutdown=stop)
            log.info("event=gateway_listening url=%s", info.url)
            task_status.started(info)
    finally:
        if info is not None:
            info.stopped.set()
            log.info("event=gateway_stopped url=%s", info.url)
