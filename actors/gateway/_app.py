"""The Quart-Trio application: routes, per-request hooks and the error contract.

Theory of operation
-------------------
Every request passes through one ``before_request`` hook (start time, per-IP token bucket) and
one ``after_request`` hook (security and CORS headers, latency histogram, one DEBUG log line).
Handlers authenticate by verifying the JWT only (no database), parse bodies exactly
(:mod:`actors.wire.codec`) and talk to the engine once per command.

Errors: every failure is a JSON ``{"error": {"code", "message", "details"}}`` body.
:class:`~actors.wire.codec.EdgeError` carries its own status; auth failures are 401, ``Overloaded`` and
``EngineStopped`` 503 with ``Retry-After``, ``EngineTimeout`` (split mode) 504; Quart/werkzeug HTTP errors (404 route, 405, 413
body too large, …) keep their status with a JSON body. Anything else is a bug: it is logged with
its traceback and answered 500 ``INTERNAL_ERROR`` (counted in
``exness_http_internal_errors_total``; the tests assert that malformed input never gets there).
"""

from __future__ import annotations

import logging
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any, Callable, Optional

import msgspec
from quart import Response, g, request
from quart.globals import request_ctx
from quart_schema import QuartSchema
from quart_schema.openapi import OpenAPIProvider
from quart_trio import QuartTrio

from actors.engine.interface import EngineClient
from actors.wire import codec as edge
from actors.auth_tokens import TokenIssuer
from actors.gateway import _accounts, _admin, _alerts, _auth, _fast, _market, _notifications, _ops, _trading, _web
from actors.gateway._admin_schemas import ADMIN_REQUEST_EXAMPLES, ADMIN_SCHEMA_RULES
from actors.gateway._common import (
    GATEWAY_EXTENSION, Gateway, NoContent, PlainText, json_response, rate_limited)
from actors.gateway._links import add_links
from actors.gateway._schemas import REQUEST_EXAMPLES, SCHEMA_RULES, SYMBOL_MARKER, CloseRequest
from actors.gateway._responses import API_CSP, DOCS_CSP, ERROR_TYPES, ErrorContext, error_answer
from actors.gateway._settings import GatewaySettings
from actors.gateway.metrics import GatewayMetrics

__all__ = ["create_app", "STATIC_DIR", "API_TITLE", "API_VERSION"]

log = logging.getLogger("exness.gateway")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
API_TITLE = "exness-actors HTTP API"
API_VERSION = "1.0.0"
API_DESCRIPTION = (
    "Leveraged crypto CFD trading. Amounts and prices are decimal strings (requests also accept "
    "JSON numbers, parsed exactly); timestamps are integer milliseconds since the Unix epoch. "
    "Errors are `{\"error\": {\"code\", \"message\", \"details\"}}`; business rejections are 422 with "
    "the core's reason as the code. Authenticate with `Authorization: Bearer <access_token>` from "
    "POST /api/v1/auth/signin.")

_REF_TEMPLATE = "#/components/schemas/{name}"
_RESPONSE_DESCRIPTIONS = {
    400: "Invalid input: VALIDATION_ERROR (details.field names the field), MALFORMED_JSON, UNKNOWN_SYMBOL",
    401: "Missing, invalid or expired credentials or token",
    404: "No such resource on this account (UNKNOWN_ORDER, UNKNOWN_POSITION, UNKNOWN_SYMBOL, UNKNOWN_ACCOUNT, …); "
         "details.resource and details.id name it",
    403: "Forbidden: not allowed for this account (REAL_ACCOUNT_DEPOSIT_FORBIDDEN: a real account is funded "
         "by the broker), a valid token of the other kind (OPERATOR_TOKEN on a trading route, TRADER_TOKEN on "
         "/api/v1/admin), a role that may not do this (INSUFFICIENT_ROLE) or a disabled operator "
         "(OPERATOR_DISABLED)",
    409: "Conflict (EMAIL_TAKEN, ORDER_NOT_PENDING, ACCOUNT_LIMIT_REACHED)",
    413: "Body larger than [http] max_body_bytes",
    415: "Body not sent as application/json",
    422: "Business rejection: the code is the core's reject reason",
    429: "Rate limited; see Retry-After",
    431: "Request headers larger than the server accepts (HEADERS_TOO_LARGE); the connection closes",
    503: "Engine overloaded or stopping (OVERLOADED, ENGINE_STOPPED), or not ready; see Retry-After",
    504: "Split mode: the engine did not answer in time (ENGINE_TIMEOUT); see Retry-After",
}
_OPERATION_RESPONSE_DESCRIPTIONS = {
    ("post_place_order", 200): "A repeated client_order_id: the original order; nothing new was created",
}


def _schema(model: Any) -> tuple[dict, dict]:
    """``(schema, components)`` of a msgspec type, references into ``components.schemas``."""
    (schema,), components = msgspec.json.schema_components([model], ref_template=_REF_TEMPLATE)
    return schema, components


class _OpenAPI(OpenAPIProvider):
    """quart-schema's provider with msgspec schemas built whole: quart-schema keeps only the
    first component of a msgspec model, which loses nested structs (``PlacedOrder`` → ``Order``)
    and leaves dangling references. Also: body-less responses (:class:`NoContent`), required
    query parameters, descriptions without the blank line after the summary, request examples,
    cross-field rules (``SCHEMA_RULES``), the configured symbols as an ``enum`` and links
    (:mod:`actors.gateway._links`)."""

    def build_response_object(self, model: Any, headers_model: Any) -> tuple[dict, dict]:
        if model is NoContent:
            return {"description": "No Content"}, {}
        if model is PlainText:
            return {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": ""}, {}
        schema, components = _schema(model)
        return {"content": {"application/json": {"schema": schema}}, "description": ""}, components

    def build_request_body(self, model: Any, source: Any) -> tuple[dict, dict]:
        schema, components = _schema(model)
        media: dict[str, Any] = {"schema": schema}
        examples = REQUEST_EXAMPLES.get(model) or ADMIN_REQUEST_EXAMPLES.get(model)
        if examples:
            media["examples"] = examples
        return {"content": {"application/json": media}, "required": model is not CloseRequest}, components

    def build_querystring_parameters(self, model: Any) -> tuple[list, dict]:
        _, components = _schema(model)
        schema = components.pop(model.__name__)
        required = set(schema.get("required", ()))
        parameters = []
        for name, property_schema in schema["properties"].items():
            parameter: dict[str, Any] = {"name": name, "in": "query", "schema": property_schema}
            if "description" in property_schema:
                parameter["description"] = property_schema.pop("description")
            if name in required:
                parameter["required"] = True
            parameters.append(parameter)
        return parameters, components

    def build_paths(self, rule: Any) -> tuple[dict, dict]:
        paths, components = super().build_paths(rule)
        for operations in paths.values():
            for operation in operations.values():
                for status, response in operation["responses"].items():
                    response["description"] = _OPERATION_RESPONSE_DESCRIPTIONS.get(
                        (operation["operationId"], int(status)),
                        _RESPONSE_DESCRIPTIONS.get(int(status), HTTPStatus(int(status)).phrase))
                if "description" in operation:
                    operation["description"] = operation["description"].strip()
                    if not operation["description"]:
                        del operation["description"]
        return paths, components

    def schema(self) -> dict[str, Any]:
        document = super().schema()
        components = document["components"]["schemas"]
        for name, component in components.items():
            if "description" in component:
                component["description"] = " ".join(component["description"].split())
            component.update(SCHEMA_RULES.get(name, {}))
            component.update(ADMIN_SCHEMA_RULES.get(name, {}))
        gateway = self._app.extensions["exness_gateway"]
        _fill_symbols(document, list(gateway.symbols))
        add_links(document)
        return document


def _fill_symbols(node: Any, symbols: list[str]) -> None:
    """Replace every symbol marker with an ``enum`` of the configured symbols."""
    if isinstance(node, dict):
        if node.pop(SYMBOL_MARKER, False):
            node["enum"] = symbols
        for value in node.values():
            _fill_symbols(value, symbols)
    elif isinstance(node, list):
        for value in node:
            _fill_symbols(value, symbols)


class _App(QuartTrio):
    """Quart-Trio answering OPTIONS with 204 and ``Allow`` (Quart's default is an empty
    text/html 200)."""

    async def make_default_options_response(self) -> Response:
        adapter = request_ctx.url_adapter
        assert adapter is not None   # set for every request that reached routing
        allowed = ", ".join(sorted(adapter.allowed_methods()))
        response = Response(b"", status=204, headers={"Allow": allowed})
        del response.headers["Content-Type"]
        return response


def _error(status: int, body: dict, headers: Optional[dict] = None) -> Response:
    return json_response(body, status, headers)


def create_app(*, handle: Optional[EngineClient], store: Any, candles: Any, cfg: Any,
               tokens: Optional[TokenIssuer], feed_stats: Any = None, ws_stats: Any = None,
               persister: Any = None, notifications: Any = None,
               clock: Callable[[], int] = time.time_ns) -> QuartTrio:
    """The HTTP API over a running engine (see the package docstring).

    ``handle``: the :class:`~actors.engine.actor.EngineHandle`; ``store``: the
    :class:`~actors.store.base.Store`; ``candles``: the :class:`~actors.history.candles.CandlesHandle`;
    ``tokens``: the shared :class:`~actors.auth_tokens.TokenIssuer`. ``feed_stats``,
    ``ws_stats`` (anything with ``statistics()``) and ``persister`` (the persister actor's handle;
    history reads use its ``last_seq`` to wait for their own writes without a database round
    trip) and ``notifications`` (the statistics of the notifications worker in this process, or
    a callable returning them: its figures on ``/metrics``) are optional. ``clock`` gives wall time in ns (readiness and token times).
    All of ``handle``, ``store``, ``candles`` and ``tokens`` may be None only to build the
    OpenAPI document.
    """
    settings = GatewaySettings.from_config(cfg)
    components = {"feed": feed_stats, "ws": ws_stats, "candles": candles, "persister": persister,
                  "notifications": notifications}
    metrics = GatewayMetrics(handle=handle, components={k: v for k, v in components.items() if v is not None},
                             clock=clock)
    gateway = Gateway(handle=handle, store=store, candles=candles, cfg=cfg, tokens=tokens,
                      settings=settings, metrics=metrics, persister=persister, clock=clock)

    app = _App("exness_actors_gateway", static_folder=str(STATIC_DIR), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["BODY_TIMEOUT"] = 30
    QuartSchema(app, openapi_path="/openapi.json", swagger_ui_path=None, redoc_ui_path=None,
                scalar_ui_path=None, conversion_preference="msgspec",
                openapi_provider_class=_OpenAPI,
                info={"title": API_TITLE, "version": API_VERSION, "description": API_DESCRIPTION},
                security_schemes={"bearer": {"type": "http", "scheme": "bearer", "bearer_format": "JWT"}},
                tags=[{"name": name} for name in
                      ("auth", "account", "market", "orders", "positions", "alerts", "history", "notifications",
                       "operations", "admin")])
    app.extensions["exness_gateway"] = gateway

    _install_hooks(app, gateway)
    _install_error_handlers(app, gateway)
    _auth.register(app, gateway)
    app.extensions[GATEWAY_EXTENSION] = gateway
    _trading.register(app)
    _accounts.register(app, gateway)
    _notifications.register(app)
    _alerts.register(app)
    _admin.register(app)
    _market.register(app, gateway)
    _ops.register(app, gateway)
    _web.register(app, cfg)
    if settings.fast_path:
        app.asgi_app = _fast.FastRoutes(app.asgi_app, gateway)   # type: ignore[method-assign,assignment]
    return app


def _install_hooks(app: QuartTrio, gateway: Gateway) -> None:
    metrics = gateway.metrics
    ip_limiter = gateway.ip_limiter
    common = gateway.common_headers
    cors = common.cors if common.origins else None
    perf_counter = time.perf_counter
    debug = log.isEnabledFor

    @app.before_request
    async def _before() -> None:
        g.started = perf_counter()
        if ip_limiter.rate_per_s > 0:
            wait = ip_limiter.acquire(request.remote_addr)
            if wait:
                metrics.rate_limited.labels("ip").inc()
                raise rate_limited("ip", wait, "too many requests from this address; slow down")

    @app.after_request
    async def _after(response: Response) -> Response:
        path = request.path
        headers = response.headers
        for name, value in common.security:
            headers[name] = value
        if path.startswith("/static/"):
            headers["Cache-Control"] = "public, max-age=86400"
        else:   # the terminal's routes set their own (actors.gateway._web)
            headers.setdefault("Cache-Control", "no-store")
            headers.setdefault("Content-Security-Policy", DOCS_CSP if path == "/docs" else API_CSP)
        if cors is not None:
            for name, value in cors(request.headers.get("Origin"), request.method):
                headers[name] = value
        rule = request.url_rule
        route = rule.rule if rule is not None else "unmatched"
        started = getattr(g, "started", None)
        elapsed = perf_counter() - started if started is not None else 0.0
        metrics.observe_request(route, request.method, response.status_code, elapsed)
        if debug(logging.DEBUG):
            log.debug("event=http_request method=%s route=%s status=%d ms=%.2f account=%s ip=%s",
                      request.method, route, response.status_code, elapsed * 1000,
                      getattr(g, "account_id", "-"), request.remote_addr)
        return response


def _install_error_handlers(app: QuartTrio, gateway: Gateway) -> None:
    """One handler for every class of :data:`~actors.gateway._responses.ERROR_TYPES` (Quart
    picks it along the exception's MRO; :func:`error_answer` then does the same)."""

    async def _handle(error: Exception) -> Response:
        context = ErrorContext(request.method, request.path, gateway.settings, gateway.count_internal_error)
        return _error(*error_answer(error, context))

    for error_type in ERROR_TYPES:
        app.register_error_handler(error_type, _handle)
