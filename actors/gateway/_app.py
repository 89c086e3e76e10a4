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
from werkzeug.exceptions import HTTPException

from actors.engine.interface import EngineClient
from actors.wire import codec as edge
from actors.auth_tokens import AuthError, TokenIssuer, WrongTokenKind
from actors.gateway import _accounts, _admin, _alerts, _auth, _market, _notifications, _ops, _trading, _web
from actors.gateway._admin_schemas import ADMIN_REQUEST_EXAMPLES, ADMIN_SCHEMA_RULES
from actors.gateway._common import (
    GATEWAY_EXTENSION, MISSING_TOKEN, Gateway, NoContent, PlainText, json_response, rate_limited)
from actors.gateway._links import add_links
from actors.gateway._schemas import REQUEST_EXAMPLES, SCHEMA_RULES, SYMBOL_MARKER, CloseRequest
from actors.gateway._settings import GatewaySettings
from actors.engine.messages import EngineStopped, EngineTimeout, Overloaded
from actors.gateway.metrics import GatewayMetrics
from actors.store.base import InvalidCursor, StoreClosed
from exness_actors.errors import InvalidCommand

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

_API_CSP = "default-src 'none'; frame-ancestors 'none'"
_DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
             "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
             "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
_CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
_CORS_HEADERS = "Authorization, Content-Type"

_HTTP_CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
               405: "METHOD_NOT_ALLOWED", 408: "REQUEST_TIMEOUT", 411: "LENGTH_REQUIRED",
               413: "PAYLOAD_TOO_LARGE", 414: "URI_TOO_LONG", 415: "UNSUPPORTED_MEDIA_TYPE",
               429: "RATE_LIMITED", 431: "HEADERS_TOO_LARGE", 501: "NOT_IMPLEMENTED"}


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


def _challenge(code: str) -> str:
    """``WWW-Authenticate`` of a 401: RFC 6750 section 3.1 gives no error code when the request
    carried no credentials at all."""
    if code == MISSING_TOKEN:
        return 'Bearer realm="exness"'
    return 'Bearer realm="exness", error="invalid_token"'


def _error(status: int, code: str, message: str, details: Optional[dict] = None,
           headers: Optional[dict] = None) -> Response:
    return json_response(edge.error_body(code, message, details), status, headers)


def create_app(*, handle: Optional[EngineClient], store: Any, candles: Any, cfg: Any,
               tokens: Optional[TokenIssuer], feed_stats: Any = None, ws_stats: Any = None,
               persister: Any = None, clock: Callable[[], int] = time.time_ns) -> QuartTrio:
    """The HTTP API over a running engine (see the package docstring).

    ``handle``: the :class:`~actors.engine.actor.EngineHandle`; ``store``: the
    :class:`~actors.store.base.Store`; ``candles``: the :class:`~actors.history.candles.CandlesHandle`;
    ``tokens``: the shared :class:`~actors.auth_tokens.TokenIssuer`. ``feed_stats``,
    ``ws_stats`` (anything with ``statistics()``) and ``persister`` (the persister actor's handle;
    history reads use its ``last_seq`` to wait for their own writes without a database round
    trip) are optional. ``clock`` gives wall time in ns (readiness and token times).
    All of ``handle``, ``store``, ``candles`` and ``tokens`` may be None only to build the
    OpenAPI document.
    """
    settings = GatewaySettings.from_config(cfg)
    components = {"feed": feed_stats, "ws": ws_stats, "candles": candles, "persister": persister}
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
    return app


def _install_hooks(app: QuartTrio, gateway: Gateway) -> None:
    settings = gateway.settings
    metrics = gateway.metrics
    ip_limiter = gateway.ip_limiter
    any_origin = "*" in settings.cors_origins
    origins = frozenset(settings.cors_origins)
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
        headers["X-Content-Type-Options"] = "nosniff"
        headers["X-Frame-Options"] = "DENY"
        headers["Referrer-Policy"] = "no-referrer"
        if path.startswith("/static/"):
            headers["Cache-Control"] = "public, max-age=86400"
        else:   # the terminal's routes set their own (actors.gateway._web)
            headers.setdefault("Cache-Control", "no-store")
            headers.setdefault("Content-Security-Policy", _DOCS_CSP if path == "/docs" else _API_CSP)
        if origins:
            origin = request.headers.get("Origin")
            if origin and (any_origin or origin in origins):
                headers["Access-Control-Allow-Origin"] = origin
                headers["Vary"] = "Origin"
                headers["Access-Control-Expose-Headers"] = "Retry-After"
                if request.method == "OPTIONS":
                    headers["Access-Control-Allow-Methods"] = _CORS_METHODS
                    headers["Access-Control-Allow-Headers"] = _CORS_HEADERS
                    headers["Access-Control-Max-Age"] = "600"
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

    @app.errorhandler(edge.EdgeError)
    async def _edge_error(error: edge.EdgeError) -> Response:
        return _error(error.status, error.code, error.message, error.details, error.headers or None)

    @app.errorhandler(AuthError)
    async def _auth_error(error: AuthError) -> Response:
        return _error(401, error.code, error.message, {}, {"WWW-Authenticate": _challenge(error.code)})

    @app.errorhandler(WrongTokenKind)
    async def _wrong_token(error: WrongTokenKind) -> Response:
        # a valid token of the other kind (trader ↔ operator): known, but not allowed here
        return _error(403, error.code, error.message, {})

    @app.errorhandler(Overloaded)
    async def _overloaded(error: Overloaded) -> Response:
        return _error(503, "OVERLOADED", "the engine is busy; retry shortly", {}, {"Retry-After": "1"})

    @app.errorhandler(EngineStopped)
    async def _stopped(error: EngineStopped) -> Response:
        return _error(503, "ENGINE_STOPPED", "the engine is not taking commands (shutting down or restarting)",
                      {}, {"Retry-After": "5"})

    @app.errorhandler(EngineTimeout)
    async def _timeout(error: EngineTimeout) -> Response:
        return _error(504, "ENGINE_TIMEOUT", str(error), {}, {"Retry-After": "1"})

    @app.errorhandler(StoreClosed)
    async def _store_closed(error: StoreClosed) -> Response:
        return _error(503, "SHUTTING_DOWN", "the service is shutting down", {}, {"Retry-After": "5"})

    @app.errorhandler(InvalidCursor)
    async def _bad_cursor(error: InvalidCursor) -> Response:
        return _error(400, "VALIDATION_ERROR", f"cursor: {error}", {"field": "cursor", "problem": str(error)})

    @app.errorhandler(InvalidCommand)
    async def _invalid_command(error: InvalidCommand) -> Response:
        # The engine refused to journal the command (a value it cannot encode): bad input that
        # got past the edge's checks, so a 400, but logged as the edge should have caught it.
        log.warning("event=invalid_command error=%r", str(error))
        return _error(400, "INVALID_COMMAND", f"the command cannot be accepted: {error}", {})

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        headers = {}
        valid_methods = getattr(error, "valid_methods", None)
        if status == 405 and valid_methods:
            headers["Allow"] = ", ".join(sorted(valid_methods))
        details: dict[str, Any] = {}
        if status == 413:
            details["max_bytes"] = gateway.settings.max_body_bytes
            message = f"the request body is larger than {gateway.settings.max_body_bytes} bytes"
        elif status == 404:
            message = f"no route {request.path[:200]!r}; the API lives under /api/v1 (see /docs)"
        else:
            message = error.description or error.name
        return _error(status, _HTTP_CODES.get(status, error.name.upper().replace(" ", "_")), message,
                      details, headers or None)

    @app.errorhandler(Exception)
    async def _bug(error: Exception) -> Response:
        gateway.internal_errors += 1
        gateway.metrics.internal_errors.inc()
        log.error("event=internal_error method=%s path=%s error=%r", request.method, request.path[:200],
                  error, exc_info=error)
        return _error(500, "INTERNAL_ERROR", "an unexpected error occurred; it has been logged", {})
