"""Operations: ping, health, readiness, metrics and the offline API explorer.

* ``/healthz`` — the process is up and serving (no dependency is checked).
* ``/readyz`` — 200 only when the engine takes commands *and answers* a query within
  ``[http] ready_timeout_ms``, *and* every instrument has a quote newer than
  ``[engine] stale_after_ms`` (the feed is alive); else 503 ``NOT_READY`` with the reasons.
  Journal damage the scrub found is reported in ``journal_damage`` either way (a detail: old
  damage does not stop trading, see :mod:`actors.engine.scrubber`).
* ``/metrics`` — Prometheus text from the app's own registry (:mod:`actors.gateway.metrics`).
* ``/docs`` — Swagger UI served from ``actors/static`` (vendored, no CDN) over ``/openapi.json``.
* ``/api/v1/ping`` — the cheapest possible API route, the benchmark's no-op baseline.
"""

from __future__ import annotations

from typing import Any

import trio
from quart import Response
from quart_schema import hide

from actors.engine.interface import EngineClient
from actors.wire.codec import EdgeError
from actors.wire import views as views
from actors.gateway._common import API, Gateway, PlainText, doc, json_response
from actors.gateway._schemas import Readiness, Status
from actors.engine.messages import EngineStopped, Overloaded
from actors.gateway.metrics import CONTENT_TYPE

__all__ = ["register", "DOCS_HTML"]

DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>exness-actors HTTP API</title>
  <link rel="stylesheet" href="/static/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/static/swagger-ui-bundle.js"></script>
  <script src="/static/docs-init.js"></script>
</body>
</html>
"""

_PING = b'{"status":"ok"}'


def _journal_damage(handle: EngineClient) -> dict[str, list[str]]:
    """The scrub's findings, a detail that does not by itself make the process unready
    (``{}`` when none, or when the engine is remote: its journal is not ours to see)."""
    damage = getattr(handle, "journal_damage", None)
    return {"journal_damage": list(damage)} if damage else {}


def register(app: Any, gw: Gateway) -> None:

    @app.get(f"{API}/ping")
    @doc(response=Status, auth=False, errors=(429,), tag="operations")
    async def ping() -> Response:
        """A no-op (the benchmark's baseline for the cost of a request)."""
        return Response(_PING, content_type="application/json")

    @app.get("/healthz")
    @doc(response=Status, auth=False, errors=(), tag="operations")
    async def healthz() -> Response:
        """The process is up and serving HTTP."""
        return Response(_PING, content_type="application/json")

    @app.get("/readyz")
    @doc(response=Readiness, auth=False, errors=(503,), tag="operations")
    async def readyz() -> Response:
        """Ready to trade: the engine answers and every symbol has a fresh quote; else 503."""
        handle = gw.handle
        reasons: dict[str, Any] = {}
        times = None
        if not handle.accepting:
            reasons["engine"] = "not taking commands"
        else:
            try:
                with trio.move_on_after(gw.settings.ready_timeout_s):
                    times = await gw.query(views.quote_times)
                if times is None:
                    reasons["engine"] = "not answering"
            except Overloaded:
                reasons["engine"] = "inbox full"
            except EngineStopped:
                reasons["engine"] = "not taking commands"
        ages: dict[str, int] = {}
        if times is not None:
            now = gw.clock()
            limit_ms = handle.core_config.stale_after_ns // 1_000_000
            missing, stale = [], []
            for symbol in gw.symbols:
                ts = times.get(symbol)
                if ts is None:
                    missing.append(symbol)
                    continue
                ages[symbol] = max(0, now - ts) // 1_000_000
                if ages[symbol] > limit_ms:
                    stale.append(symbol)
            if missing:
                reasons["no_quote"] = missing
            if stale:
                reasons["stale_quotes"] = stale
                reasons["stale_after_ms"] = limit_ms
        if reasons:
            message = "; ".join(f"{key}: {value}" for key, value in reasons.items() if key != "stale_after_ms")
            raise EdgeError(503, "NOT_READY", f"not ready: {message}", {**reasons, **_journal_damage(handle)},
                            headers={"Retry-After": "1"})
        return json_response({"status": "ready", "quote_age_ms": ages, **_journal_damage(handle)})

    @app.get("/metrics")
    @doc(response=PlainText, auth=False, errors=(), tag="operations")
    async def metrics() -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(gw.metrics.render(), content_type=CONTENT_TYPE)

    @app.get("/docs")
    @hide
    async def docs() -> Response:
        return Response(DOCS_HTML, content_type="text/html; charset=utf-8")
