"""What every answer shares, whichever path serves it (the Quart app or the lean path of
:mod:`actors.gateway._fast`): the error contract and the headers every response carries.

* :func:`error_answer` maps an exception to ``(status, body, headers)``: :class:`EdgeError`
  carries its own status; auth failures are 401 with ``WWW-Authenticate`` (a valid token of the other kind, trader ↔
  operator, is 403); ``Overloaded`` and
  ``EngineStopped`` 503 with ``Retry-After``; ``EngineTimeout`` (split mode) 504; werkzeug HTTP
  errors (404 route, 405, 408, 413, …) keep their status; anything else is a bug: logged with its
  traceback, counted, and answered 500 ``INTERNAL_ERROR``. The exception's class is looked up
  along its MRO, as Quart picks an error handler.
* :class:`CommonHeaders` holds the security, cache and CORS headers added to every response
  (the Quart app's ``after_request``), computed once per app.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from werkzeug.exceptions import HTTPException

from actors.auth_tokens import AuthError, WrongTokenKind
from actors.engine.messages import EngineStopped, EngineTimeout, Overloaded
from actors.gateway._settings import GatewaySettings
from actors.store.base import InvalidCursor, StoreClosed
from actors.wire import codec as edge
from exness_actors.errors import InvalidCommand

__all__ = ["error_answer", "ERROR_TYPES", "ErrorContext", "CommonHeaders", "API_CSP", "DOCS_CSP", "MISSING_TOKEN"]

log = logging.getLogger("exness.gateway")

#: The 401 code of a request without an Authorization header.
MISSING_TOKEN = "MISSING_TOKEN"

API_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
_CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
_CORS_HEADERS = "Authorization, Content-Type"

_HTTP_CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
               405: "METHOD_NOT_ALLOWED", 408: "REQUEST_TIMEOUT", 411: "LENGTH_REQUIRED",
               413: "PAYLOAD_TOO_LARGE", 414: "URI_TOO_LONG", 415: "UNSUPPORTED_MEDIA_TYPE",
               429: "RATE_LIMITED", 431: "HEADERS_TOO_LARGE", 501: "NOT_IMPLEMENTED"}

#: (status, body, headers or None) of one error answer
Answer = tuple[int, dict, Optional[dict]]


def _challenge(code: str) -> str:
    """``WWW-Authenticate`` of a 401: RFC 6750 section 3.1 gives no error code when the request
    carried no credentials at all."""
    if code == MISSING_TOKEN:
        return 'Bearer realm="exness"'
    return 'Bearer realm="exness", error="invalid_token"'


def _answer(status: int, code: str, message: str, details: Optional[dict] = None,
            headers: Optional[dict] = None) -> Answer:
    return status, edge.error_body(code, message, details), headers


def _edge_error(error: edge.EdgeError, context: "ErrorContext") -> Answer:
    return _answer(error.status, error.code, error.message, error.details, error.headers or None)


def _auth_error(error: AuthError, context: "ErrorContext") -> Answer:
    return _answer(401, error.code, error.message, {}, {"WWW-Authenticate": _challenge(error.code)})


def _wrong_token(error: WrongTokenKind, context: "ErrorContext") -> Answer:
    # a valid token of the other kind (trader ↔ operator): known, but not allowed here
    return _answer(403, error.code, error.message, {})


def _overloaded(error: Overloaded, context: "ErrorContext") -> Answer:
    return _answer(503, "OVERLOADED", "the engine is busy; retry shortly", {}, {"Retry-After": "1"})


def _stopped(error: EngineStopped, context: "ErrorContext") -> Answer:
    return _answer(503, "ENGINE_STOPPED", "the engine is not taking commands (shutting down or restarting)",
                   {}, {"Retry-After": "5"})


def _timeout(error: EngineTimeout, context: "ErrorContext") -> Answer:
    return _answer(504, "ENGINE_TIMEOUT", str(error), {}, {"Retry-After": "1"})


def _store_closed(error: StoreClosed, context: "ErrorContext") -> Answer:
    return _answer(503, "SHUTTING_DOWN", "the service is shutting down", {}, {"Retry-After": "5"})


def _bad_cursor(error: InvalidCursor, context: "ErrorContext") -> Answer:
    return _answer(400, "VALIDATION_ERROR", f"cursor: {error}", {"field": "cursor", "problem": str(error)})


def _invalid_command(error: InvalidCommand, context: "ErrorContext") -> Answer:
    # The engine refused to journal the command (a value it cannot encode): bad input that
    # got past the edge's checks, so a 400, but logged as the edge should have caught it.
    log.warning("event=invalid_command error=%r", str(error))
    return _answer(400, "INVALID_COMMAND", f"the command cannot be accepted: {error}", {})


def _http_error(error: HTTPException, context: "ErrorContext") -> Answer:
    status = error.code or 500
    headers = {}
    valid_methods = getattr(error, "valid_methods", None)
    if status == 405 and valid_methods:
        headers["Allow"] = ", ".join(sorted(valid_methods))
    details: dict[str, Any] = {}
    if status == 413:
        details["max_bytes"] = context.settings.max_body_bytes
        message = f"the request body is larger than {context.settings.max_body_bytes} bytes"
    elif status == 404:
        message = f"no route {context.path[:200]!r}; the API lives under /api/v1 (see /docs)"
    else:
        message = error.description or error.name
    return _answer(status, _HTTP_CODES.get(status, error.name.upper().replace(" ", "_")), message,
                   details, headers or None)


def _bug(error: Exception, context: "ErrorContext") -> Answer:
    context.count_internal_error()
    log.error("event=internal_error method=%s path=%s error=%r", context.method, context.path[:200],
              error, exc_info=error)
    return _answer(500, "INTERNAL_ERROR", "an unexpected error occurred; it has been logged", {})


class ErrorContext:
    """What an error answer may need besides the exception: the request's method and path,
    the settings, and where internal errors are counted."""

    __slots__ = ("method", "path", "settings", "count_internal_error")

    def __init__(self, method: str, path: str, settings: GatewaySettings,
                 count_internal_error: Callable[[], None]) -> None:
        self.method = method
        self.path = path
        self.settings = settings
        self.count_internal_error = count_internal_error


#: exception class -> its answer; the Quart app registers each as an error handler
ERROR_TYPES: dict[type, Callable[[Any, ErrorContext], Answer]] = {
    edge.EdgeError: _edge_error, AuthError: _auth_error, WrongTokenKind: _wrong_token, Overloaded: _overloaded, EngineStopped: _stopped,
    EngineTimeout: _timeout, StoreClosed: _store_closed, InvalidCursor: _bad_cursor,
    InvalidCommand: _invalid_command, HTTPException: _http_error, Exception: _bug,
}


def error_answer(error: Exception, context: ErrorContext) -> Answer:
    """The answer to ``error``: the handler of the nearest class in its MRO (as Quart picks one)."""
    for cls in type(error).__mro__:
        handler = ERROR_TYPES.get(cls)
        if handler is not None:
            return handler(error, context)
    raise error   # pragma: no cover - Exception is in the table


class CommonHeaders:
    """The headers every response gets, computed once per app: security headers, cache and
    content-security policy (API routes: ``no-store`` and :data:`API_CSP`), and CORS for the
    configured origins."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.origins = frozenset(settings.cors_origins)
        self.any_origin = "*" in self.origins
        self.security = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
                         ("Referrer-Policy", "no-referrer"))
        #: what an API route's response gets, in the order the Quart app adds them
        self.api = (*self.security, ("Cache-Control", "no-store"), ("Content-Security-Policy", API_CSP))
        self.api_raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in self.api]

    def cors(self, origin: Optional[str], method: str) -> list[tuple[str, str]]:
        """The CORS headers for a request from ``origin`` (none for an origin not allowed)."""
        if not origin or not (self.any_origin or origin in self.origins):
            return []
        headers = [("Access-Control-Allow-Origin", origin), ("Vary", "Origin"),
                   ("Access-Control-Expose-Headers", "Retry-After")]
        if method == "OPTIONS":
            headers += [("Access-Control-Allow-Methods", _CORS_METHODS),
                        ("Access-Control-Allow-Headers", _CORS_HEADERS), ("Access-Control-Max-Age", "600")]
        return headers
