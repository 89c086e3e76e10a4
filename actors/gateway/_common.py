"""What every route module shares: the :class:`Gateway` (one app's dependencies and helpers),
JSON responses and the documentation decorator."""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Iterable, Optional, cast

import trio
from quart import Response, current_app, g, request
from werkzeug.http import parse_options_header
from quart_schema import document_querystring, document_request, document_response, security_scheme
from quart_schema import tag as schema_tag

from actors.engine.interface import EngineClient
from actors.wire import codec as edge
from actors.auth_tokens import AccessClaims, AuthError, TokenIssuer
from actors.engine.actor import submit_between
from actors.gateway._responses import MISSING_TOKEN, CommonHeaders
from actors.gateway._schemas import ErrorBody
from actors.gateway._settings import GatewaySettings
from actors.engine.messages import Reply
from actors.gateway.metrics import GatewayMetrics
from actors.gateway.ratelimit import RateLimiter, retry_after_header
from actors.bus.streams import BoxedView
from actors.store.base import AccountRecord
from exness_actors.instruments import Instrument

__all__ = ["Gateway", "current_gateway", "GATEWAY_EXTENSION", "json_response", "doc", "NoContent", "PlainText",
           "rate_limited", "API", "MISSING_TOKEN", "bearer_token"]

log = logging.getLogger("exness.gateway")

API = "/api/v1"
#: How many verified access tokens :meth:`Gateway.authenticate` remembers.
VERIFIED_TOKENS_KEPT = 10_000
#: How many accounts' facts (owner, type, demo) :meth:`Gateway.account_record` remembers.
ACCOUNT_RECORDS_KEPT = 10_000

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
#: a JSON answer's bytes (what :func:`json_response` sends)
dumps: Callable[[Any], str] = _dumps


#: where :func:`current_gateway` finds the app's :class:`Gateway` (``app.extensions``)
GATEWAY_EXTENSION = "exness.gateway"


def current_gateway() -> "Gateway":
    """The :class:`Gateway` of the app serving this request (route handlers are plain functions)."""
    return current_app.extensions[GATEWAY_EXTENSION]


def parse_bearer(header: Optional[str], signin: str) -> str:
    """The token of an ``Authorization: Bearer`` header (401 without one; ``signin`` names where
    to get one)."""
    if not header:
        raise AuthError(MISSING_TOKEN, f"this endpoint needs `Authorization: Bearer <access_token>` ({signin} "
                                       "gives one)")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("INVALID_TOKEN", "the Authorization header must be `Bearer <access_token>`")
    return token.strip()


def bearer_token(signin: str) -> str:
    """The request's ``Authorization: Bearer`` token (see :func:`parse_bearer`)."""
    return parse_bearer(request.headers.get("Authorization"), signin)


def _mimetype(content_type: str) -> str:
    """The media type of a Content-Type header, lower-cased, as werkzeug's ``request.mimetype``."""
    if content_type == "application/json":
        return content_type
    return parse_options_header(content_type)[0].lower()


def json_response(data: Any, status: int = 200, headers: Optional[dict] = None) -> Response:
    return Response(_dumps(data), status=status, headers=headers, content_type="application/json")


def rate_limited(scope: str, wait_s: float, message: str) -> edge.EdgeError:
    return edge.EdgeError(429, "RATE_LIMITED", message, {"scope": scope, "retry_after_s": round(wait_s, 3)},
                          headers={"Retry-After": retry_after_header(wait_s)})


class NoContent:
    """Documents a response without a body (204)."""


class PlainText:
    """Documents a text/plain response (``/metrics``)."""


#: Statuses any route can answer: the per-IP rate limit and request headers too large (hypercorn).
ANY_ROUTE_ERRORS = frozenset({429, 431})


def doc(*, request_model: Any = None, response: Any = None, status: int = 200,
        query: Any = None, errors: Iterable[int] = (400,), auth: bool = True,
        tag: Optional[str] = None, also: Optional[dict[int, Any]] = None) -> Callable:
    """Attach the OpenAPI description of a route (quart-schema's ``document_*``).

    ``also`` documents further success responses (status -> model). Every route also lists
    :data:`ANY_ROUTE_ERRORS`, 401 and 403 (a token of the other kind) when ``auth``, and 504 (split mode: the engine did not answer)
    wherever 503 is listed."""
    def decorate(function: Callable) -> Callable:
        if request_model is not None:
            function = document_request(request_model)(function)
        if response is not None:
            function = document_response(response, status)(function)
        for other_status, model in (also or {}).items():
            function = document_response(model, other_status)(function)
        codes = (set(errors) | ANY_ROUTE_ERRORS | ({401, 403} if auth else set())
                 | ({504} if 503 in errors else set()))
        for code in sorted(codes):
            function = document_response(ErrorBody, code)(function)
        if query is not None:
            function = document_querystring(query)(function)
        if auth:
            function = security_scheme([{"bearer": []}])(function)
        if tag is not None:
            function = schema_tag([tag])(function)
        return function
    return decorate


def _boxed(function: Callable, *args: Any) -> Callable:
    """``function`` answering a 1-tuple: a reply slot holds only non-None values, and "not
    found" (None) is a normal answer of the gateway's queries. A :class:`BoxedView` names the
    view and its arguments, so a remote engine (split mode) can run it too."""
    return BoxedView(function, args)


class Gateway:
    """One app's dependencies (engine handle, store, candles, tokens, settings) and the helpers
    its handlers share: authentication, body parsing, engine round trips, history consistency.
    Each ``create_app`` builds its own, so apps never share state."""

    def __init__(self, *, handle: Optional[EngineClient], store: Any, candles: Any, cfg: Any,
                 tokens: Optional[TokenIssuer], settings: GatewaySettings, metrics: GatewayMetrics,
                 persister: Any = None, clock: Callable[[], int] = time.time_ns) -> None:
        # None only for the OpenAPI export, where no request ever runs
        self.handle = cast(EngineClient, handle)
        self.store = store
        self.candles = candles
        self.cfg = cfg
        self.tokens = tokens
        self.settings = settings
        self.metrics = metrics
        self.persister = persister
        self.clock = clock
        self.instruments: dict[str, Instrument]
        if handle is None:   # documentation export: no engine
            self.instruments = {i.symbol: i for i in cfg.core.instruments}
        elif handle.remote:
            # split mode: the remote handle's copy follows every InstrumentUpdated (and is read
            # from the engine at start), so share it rather than keep one of our own
            self.instruments = cast(dict, handle.instruments)
        else:
            # in-process: the core's own dict, which must not be read outside the engine's
            # turn; a copy, kept current by the admin routes (the only gateway there is)
            self.instruments = dict(handle.instruments)
        self.symbols: tuple[str, ...] = tuple(sorted(self.instruments))
        self.common_headers = CommonHeaders(settings)
        self.ip_limiter = RateLimiter(settings.ip_rate_per_s, settings.ip_burst)
        self.account_limiter = RateLimiter(settings.account_rate_per_s, settings.account_burst)
        per_minute = settings.signup_per_minute
        self.signup_limiter = RateLimiter(per_minute / 60, per_minute)
        per_minute = settings.signin_failures_per_minute
        self.signin_client_failures = RateLimiter(per_minute / 60, per_minute)
        per_minute = settings.signin_email_failures_per_minute
        self.signin_email_failures = RateLimiter(per_minute / 60, per_minute)
        per_minute = settings.signin_ip_failures_per_minute
        self.signin_ip_failures = RateLimiter(per_minute / 60, per_minute)
        # Access tokens already verified -> claims. A client presents the same token for up to
        # [auth] access_ttl_s; re-checking its HMAC (and PyJWT's per-character base64 checks)
        # on every request is most of the cost of authenticating. Expiry is still checked on
        # every use; the oldest entries go first when the cache is full.
        self._verified: dict[str, AccessClaims] = {}
        # Account id -> its store row: owner, type and demo flag never change once opened, so a
        # deposit or a summary does not read the database each time (``ready`` is not read here).
        self._account_records: dict[int, AccountRecord] = {}
        self.internal_errors = 0
        self.history_waits_timed_out = 0

    # ------------------------------------------------------------------ requests

    def authenticate(self) -> AccessClaims:
        """The caller's verified access token (JWT only: no database), rate-limited per account."""
        claims = self.verify_bearer(request.headers.get("Authorization"))
        g.account_id = claims.account_id
        self.limit_account(claims)
        return claims

    def verify_bearer(self, header: Optional[str]) -> AccessClaims:
        """The claims of an ``Authorization: Bearer <access token>`` header (raises AuthError).

        The claims come from a token's verification the first time it is seen, then from a
        bounded cache (until it expires)."""
        token = parse_bearer(header, "POST /api/v1/auth/signin")
        claims = self._verified.get(token)
        if claims is None or claims.expires_at <= time.time():
            assert self.tokens is not None
            claims = self.tokens.verify_access(token)        # raises AuthError
            verified = self._verified
            if len(verified) >= VERIFIED_TOKENS_KEPT:
                del verified[next(iter(verified))]
            verified[token] = claims
        return claims

    def limit_account(self, claims: AccessClaims) -> None:
        """The per-account rate limit (429 with ``Retry-After``)."""
        wait = self.account_limiter.acquire(claims.account_id)
        if wait:
            self.metrics.rate_limited.labels("account").inc()
            raise rate_limited("account", wait, "too many requests for this account; slow down")

    async def json_body(self, *, optional: bool = False) -> Any:
        """The request's JSON body, decoded exactly (see :meth:`parse_body`); 413 past
        ``[http] max_body_bytes`` (raised by Quart while reading)."""
        raw = await request.get_data(cache=False)
        return self.parse_body(raw, request.headers.get("Content-Type", ""), optional=optional)

    @staticmethod
    def parse_body(raw: bytes | str, content_type: str, *, optional: bool = False) -> Any:
        """A request body decoded exactly (:func:`actors.wire.codec.parse_json_body`).
        ``None`` for an empty body when ``optional``; 415 when it is not declared JSON."""
        if not raw or not raw.strip():
            if optional:
                return None
            raise edge.EdgeError(400, "VALIDATION_ERROR", "body: a JSON object is required",
                                 {"field": "body", "problem": "is required"})
        mimetype = _mimetype(content_type)
        if mimetype != "application/json" and not mimetype.endswith("+json"):
            raise edge.EdgeError(415, "UNSUPPORTED_MEDIA_TYPE",
                                 f"send the body as Content-Type: application/json, not {mimetype or 'nothing'!r}",
                                 {"content_type": mimetype})
        body = edge.parse_json_body(raw)
        if body is None and optional:   # a JSON null is a body that is not an object, not "no body"
            raise edge.EdgeError(400, "VALIDATION_ERROR", "the request body must be a JSON object", {})
        return body

    def count_internal_error(self) -> None:
        """An unexpected exception reached the error contract (answered 500)."""
        self.internal_errors += 1
        self.metrics.internal_errors.inc()

    def instrument(self, symbol: str) -> Instrument:
        """The instrument of ``symbol``; for a symbol no longer configured (old history), the
        default scales, so its rows still render."""
        instrument = self.instruments.get(symbol)
        return instrument if instrument is not None else Instrument(symbol=symbol)

    async def account_record(self, account_id: int) -> Optional[AccountRecord]:
        """The store's row of a trading account (owner, type, demo), remembered once read; None
        for an account the store does not know (made outside the gateway)."""
        record = self._account_records.get(account_id)
        if record is None:
            record = await self.store.account(account_id)
            if record is not None:
                records = self._account_records
                if len(records) >= ACCOUNT_RECORDS_KEPT:
                    del records[next(iter(records))]
                records[account_id] = record
        return record

    # ------------------------------------------------------------------ engine

    async def query(self, function: Callable, *args: Any) -> Any:
        """Run ``function(engine, *args)`` in the engine (one round trip); it may return None."""
        (value,) = await self.handle.query(_boxed(function, *args))
        return value

    async def submit(self, command: Any, *, before: Optional[Callable] = None,
                     after: Optional[Callable] = None) -> tuple[Any, Reply, Any]:
        """Submit ``command`` with optional queries right before and after it, in one go.

        The three items enter the inbox back to back (no checkpoint in between, so nothing
        interleaves) and are normally answered by the same durable batch: ``before`` sees the
        state the command will act on, ``after`` the state it left — without a second round
        trip. Overloaded/EngineStopped are raised only if the *command* could not be queued; if
        just the ``after`` query could not, its value is None and the caller falls back.
        """
        return await submit_between(self.handle, command,
                                    before=_boxed(before) if before is not None else None,
                                    after=_boxed(after) if after is not None else None)

    async def history_caught_up(self, account_id: int) -> None:
        """Wait (at most ``[http] history_wait_ms``) until the store holds everything the
        account's engine shard had made durable when the request arrived, so a history read sees
        the caller's own acknowledged commands (read-your-writes). Past the bound, read what is
        there."""
        if self.handle is None:
            return
        await self.shard_history_caught_up(self.handle.shard_of(account_id))

    async def shard_history_caught_up(self, shard: int) -> None:
        """:meth:`history_caught_up` for everything engine shard ``shard`` had made durable."""
        target = self.handle.durable_seq_of(shard)
        persister = self.persister
        if persister is not None and persister.last_seq >= target:
            return
        deadline = trio.current_time() + self.settings.history_wait_s
        while True:
            if persister is not None and persister.last_seq >= target:
                return
            if await self.store.last_persisted_seq(shard) >= target:
                return
            if trio.current_time() >= deadline:
                self.history_waits_timed_out += 1
                log.warning("event=history_wait_timeout shard=%d target_seq=%d", shard, target)
                return
            await trio.sleep(0.005)

    def statistics(self) -> dict[str, Any]:
        return {
            "internal_errors": self.internal_errors,
            "history_waits_timed_out": self.history_waits_timed_out,
            "ip_limiter": self.ip_limiter.statistics(),
            "account_limiter": self.account_limiter.statistics(),
        }
