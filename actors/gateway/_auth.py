"""Sign-up, sign-in, token refresh and sign-out.

* **Passwords**: argon2id (argon2-cffi's ``PasswordHasher``), hashed and verified in worker
  threads (at most ``[auth] hash_threads`` at once) so the event loop never stalls. Unknown
  e-mails are checked against a dummy hash, so both failures cost the same and answer the same
  ``INVALID_CREDENTIALS``.
* **Accounts**: a new user's first trading account is a demo ``standard`` (cross-margin) account
  with the demo deposit, opened through the engine (:mod:`actors.gateway._accounts`). If that
  step fails (engine overloaded or stopping) the sign-up still succeeds and the first sign-in
  opens the account; ``ACCOUNT_EXISTS`` counts as success, so the step is idempotent. A sign-in
  picks the first account, or the one its ``account_id`` names; ``POST /auth/switch`` issues
  tokens for another account of the same user (a new refresh family, bound to that account).
* **Tokens**: a short-lived JWT access token (stateless) and an opaque refresh token
  (``secrets.token_urlsafe(32)``) stored only as its SHA-256. Refresh spends the token and issues
  its child in the same family; presenting a spent token again revokes the whole family (someone
  holds a copy: every session descended from that sign-in ends). Sign-out revokes the family.
  Access tokens already issued stay valid until they expire (``[auth] access_ttl_s``).
* **Browsers**: a sign-in with ``refresh_cookie: true`` gets its refresh token as an HttpOnly,
  SameSite=Strict cookie scoped to ``/api/v1/auth`` instead of in the body (the web terminal keeps
  no token where scripts can read it); refresh and sign-out without a body token use the cookie,
  rotate it and clear it when it is refused or revoked.
* **Throttling**: sign-up per IP; failed sign-ins (a failure budget, see :mod:`actors.gateway.ratelimit`)
  first per (e-mail, client IP), so a stranger guessing someone's password spends only their own
  budget and the owner can still sign in from elsewhere; then, much larger, per e-mail from all
  addresses (a distributed guess) and per IP. Past a budget: 429 with ``Retry-After`` and the wait
  in the message, before the password is even checked.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from typing import Any, Awaitable, Callable, Optional, cast

import trio
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from quart import Response, current_app, request
from werkzeug.http import dump_cookie

from actors.wire import codec as edge
from actors.gateway._accounts import ensure_account, signup_account_type
from actors.gateway._common import API, Gateway, NoContent, current_gateway, doc, json_response, rate_limited
from actors.gateway._params import invalid
from actors.gateway._schemas import (
    Credentials, RefreshRequest, SigninRequest, SignupResult, SwitchRequest, TokenPair)
from actors.gateway._settings import GatewaySettings
from actors.engine.messages import EngineStopped, Overloaded
from actors.gateway.ratelimit import retry_after_header
from actors.store.base import AccountRecord, DuplicateEmail
from exness_actors.reasons import RejectReason

__all__ = ["register", "ROUTES", "Passwords", "normalise_email"]

log = logging.getLogger("exness.gateway.auth")

MIN_PASSWORD = 8
MAX_PASSWORD = 128
MAX_EMAIL = 254
MAX_REFRESH_TOKEN = 256
REFRESH_COOKIE = "exness_refresh"
REFRESH_COOKIE_PATH = "/api/v1/auth"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"^[^@\s\x00-\x1f\x7f]{{1,64}}@{_LABEL}(?:\.{_LABEL})+$")


class Passwords:
    """argon2id hashing off the event loop."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.hasher = PasswordHasher(time_cost=settings.argon2_time_cost,
                                     memory_cost=settings.argon2_memory_kib,
                                     parallelism=settings.argon2_parallelism, type=Type.ID)
        self.limiter = trio.CapacityLimiter(settings.hash_threads)
        self._dummy: Optional[str] = None

    async def hash(self, password: str) -> str:
        return await trio.to_thread.run_sync(self.hasher.hash, password, limiter=self.limiter)

    async def verify(self, password_hash: Optional[str], password: str) -> bool:
        """True when ``password`` matches; with no hash (unknown user) a dummy is checked so the
        answer takes as long, and is always False."""
        if password_hash is None:
            if self._dummy is None:
                self._dummy = await self.hash(secrets.token_urlsafe(16))
            candidate = self._dummy
        else:
            candidate = password_hash
        try:
            matched = await trio.to_thread.run_sync(self.hasher.verify, candidate, password,
                                                    limiter=self.limiter)
        except (VerificationError, InvalidHashError):
            return False
        return bool(matched) and password_hash is not None


def _encodable(name: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid(name, "must be valid Unicode text (no lone surrogates)") from None


def normalise_email(value: Any) -> str:
    if not isinstance(value, str):
        raise invalid("email", "must be a string")
    _encodable("email", value)
    email = value.strip().lower()
    if len(email) > MAX_EMAIL or not _EMAIL.match(email):
        raise invalid("email", "must be an e-mail address such as trader@example.com")
    return email


def _credentials(body: Any, *, signup: bool) -> tuple[str, str]:
    if not isinstance(body, dict):
        raise edge.EdgeError(400, "VALIDATION_ERROR", "the request body must be a JSON object", {})
    allowed = ("email", "password") if signup else ("email", "password", "refresh_cookie", "account_id")
    for name in body:
        if name not in allowed:
            raise invalid(name, f"unknown field (allowed: {', '.join(allowed)})")
    for name in ("email", "password"):
        if body.get(name) is None:
            raise invalid(name, "is required")
    email = normalise_email(body["email"])
    password = body["password"]
    if not isinstance(password, str):
        raise invalid("password", "must be a string")
    _encodable("password", password)
    if len(password) > MAX_PASSWORD:
        raise invalid("password", f"must be at most {MAX_PASSWORD} characters")
    if signup and len(password) < MIN_PASSWORD:
        raise invalid("password", f"must be at least {MIN_PASSWORD} characters")
    return email, password


def _wants_cookie(body: dict) -> bool:
    flag = body.get("refresh_cookie", False)
    if not isinstance(flag, bool):
        raise invalid("refresh_cookie", "must be true or false")
    return flag


def _refresh_token(body: Any, cookie: str = REFRESH_COOKIE) -> tuple[str, bool]:
    """The refresh token to spend and whether it came from the cookie (the body's wins)."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise edge.EdgeError(400, "VALIDATION_ERROR", "the request body must be a JSON object", {})
    for name in body:
        if name != "refresh_token":
            raise invalid(name, "unknown field (allowed: refresh_token)")
    token = body.get("refresh_token")
    from_cookie = token is None
    if from_cookie:
        token = request.cookies.get(cookie)
        if not token:
            raise invalid("refresh_token", f"is required (in the body, or the {cookie} cookie of a "
                                           "sign-in with refresh_cookie)")
    if not isinstance(token, str) or not token or len(token) > MAX_REFRESH_TOKEN:
        raise invalid("refresh_token", "must be the refresh_token string from sign-in or refresh")
    return token, from_cookie


def _refresh_cookie(token: str, max_age: int, *, name: str = REFRESH_COOKIE,
                    path: str = REFRESH_COOKIE_PATH) -> str:
    """The ``Set-Cookie`` value carrying ``token`` (an empty token and max_age 0 clear it).
    ``Secure`` when the request came over HTTPS: plain-HTTP development still works."""
    return dump_cookie(name, token, max_age=max_age, path=path,
                       secure=request.scheme == "https", httponly=True, samesite="Strict")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _unauthorized(code: str, message: str, *, clear_cookie: bool = False) -> edge.EdgeError:
    headers = {"WWW-Authenticate": 'Bearer realm="exness"'}
    if clear_cookie:
        headers["Set-Cookie"] = _refresh_cookie("", 0)
    return edge.EdgeError(401, code, message, {}, headers=headers)


PASSWORDS_EXTENSION = "exness_passwords"


def _passwords() -> Passwords:
    """The app's password hasher (it holds the hashing threads' limiter)."""
    return cast(Passwords, current_app.extensions[PASSWORDS_EXTENSION])


def _unknown_account(account_id: int) -> edge.EdgeError:
    """Another user's account and a missing one answer alike: ids are never revealed."""
    return edge.EdgeError(404, RejectReason.UNKNOWN_ACCOUNT.value,
                          f"you hold no trading account {account_id} (GET /api/v1/accounts lists yours)",
                          {**edge.not_found_details("account", account_id), "field": "account_id"})


async def _own_account(gw: Gateway, user_id: int, account_id: int) -> AccountRecord:
    """The user's account ``account_id``, opened in the engine if an earlier step could not."""
    record = await gw.account_record(account_id)
    if record is None or record.user_id != user_id:
        raise _unknown_account(account_id)
    if not record.ready:
        fresh = await gw.store.account(account_id)
        if fresh is not None and not fresh.ready:
            await ensure_account(gw, fresh)
        record.ready = True
    return record


async def _new_family(gw: Gateway, user_id: int, account_id: int) -> str:
    """A new refresh token family for ``account_id``; its first token."""
    refresh_token = secrets.token_urlsafe(32)
    now = gw.clock()
    await gw.store.add_refresh_token(_digest(refresh_token), user_id=user_id, account_id=account_id,
                                     family_id=secrets.token_hex(16), issued_at=now,
                                     expires_at=now + gw.settings.refresh_ttl_s * 1_000_000_000)
    return refresh_token


def _issue_pair(gw: Gateway, user_id: int, account_id: int, refresh_token: str, *, cookie: bool) -> Response:
    assert gw.tokens is not None
    response = json_response({
        "access_token": gw.tokens.issue_access(user_id, account_id),
        "refresh_token": None if cookie else refresh_token, "token_type": "Bearer",
        "expires_in": gw.tokens.access_ttl_s, "refresh_expires_in": gw.settings.refresh_ttl_s,
        "user_id": str(user_id), "account_id": str(account_id),
    })
    if cookie:
        response.headers["Set-Cookie"] = _refresh_cookie(refresh_token, gw.settings.refresh_ttl_s)
    return response


@doc(request_model=Credentials, response=SignupResult, status=201, errors=(400, 409, 413, 415, 429),
     auth=False, tag="auth")
async def signup() -> Response:
    """Create a user and their first trading account: a demo Standard account (cross margin)
    with the demo deposit.

    The e-mail is trimmed and lower-cased; the password needs 8 to 128 characters. A taken
    e-mail is 409 EMAIL_TAKEN. More accounts: POST /api/v1/accounts."""
    gw = current_gateway()
    wait = gw.signup_limiter.acquire(request.remote_addr)
    if wait:
        gw.metrics.rate_limited.labels("signup").inc()
        raise rate_limited("signup", wait, "too many sign-ups from this address; try again later")
    email, password = _credentials(await gw.json_body(), signup=True)
    password_hash = await _passwords().hash(password)
    try:
        user = await gw.store.create_user(email, password_hash, created_at=gw.clock(),
                                          account_type=signup_account_type(gw), demo=True)
    except DuplicateEmail:
        raise edge.EdgeError(409, "EMAIL_TAKEN", "a user with this e-mail already exists; sign in instead",
                             {"field": "email"}) from None
    try:
        record = await gw.store.account(user.account_id)
        assert record is not None   # created with the user
        await ensure_account(gw, record)
    except (Overloaded, EngineStopped) as exc:
        # The user exists; the first sign-in creates the account.
        log.warning("event=account_create_deferred user_id=%d reason=%s", user.user_id, type(exc).__name__)
    log.info("event=signup user_id=%d", user.user_id)
    return json_response({"user_id": str(user.user_id)}, 201)


@doc(request_model=SigninRequest, response=TokenPair, errors=(400, 401, 413, 415, 429, 503),
     auth=False, tag="auth")
async def signin() -> Response:
    """Exchange e-mail and password for an access token and a refresh token.

    Wrong e-mail and wrong password answer the same 401 INVALID_CREDENTIALS. Repeated
    failures for one e-mail from one address are throttled first (429 with Retry-After), so a
    stranger cannot lock the owner out; failures for one e-mail from many addresses, or from
    one address for many e-mails, are throttled past larger budgets. With ``refresh_cookie``
    the refresh token comes as an HttpOnly cookie instead (for browsers). The tokens are for
    the user's first trading account, or the one ``account_id`` names (404 UNKNOWN_ACCOUNT
    when the user holds no such account)."""
    gw = current_gateway()
    body = await gw.json_body()
    email, password = _credentials(body, signup=False)
    cookie = _wants_cookie(body)
    wanted = body.get("account_id")
    wanted_id = edge.parse_message_id(wanted, "account_id") if wanted is not None else None
    address = request.remote_addr
    wait = max(gw.signin_client_failures.retry_after((email, address)),
               gw.signin_email_failures.retry_after(email), gw.signin_ip_failures.retry_after(address))
    if wait:
        gw.metrics.rate_limited.labels("signin").inc()
        raise rate_limited("signin", wait, f"too many failed sign-ins; wait {retry_after_header(wait)} s "
                                           "before trying again")
    user = await gw.store.user_by_email(email)
    if not await _passwords().verify(user.password_hash if user else None, password) or user is None:
        gw.signin_client_failures.acquire((email, address))
        gw.signin_email_failures.acquire(email)
        gw.signin_ip_failures.acquire(address)
        raise _unauthorized("INVALID_CREDENTIALS", "wrong e-mail or password")
    account_id = user.account_id if wanted_id is None else wanted_id
    await _own_account(gw, user.user_id, account_id)
    refresh_token = await _new_family(gw, user.user_id, account_id)
    log.info("event=signin user_id=%d account_id=%d", user.user_id, account_id)
    return _issue_pair(gw, user.user_id, account_id, refresh_token, cookie=cookie)


@doc(request_model=SwitchRequest, response=TokenPair, errors=(400, 404, 413, 415, 429, 503), tag="auth")
async def switch() -> Response:
    """Tokens for another trading account of the signed-in user.

    The access token names the user; the new pair is for ``account_id`` (a new session: its
    refresh token keeps that account). Every other endpoint works on the account in the token.
    An account the user does not hold, another user's included, is 404 UNKNOWN_ACCOUNT. With
    ``refresh_cookie`` the new refresh token replaces the exness_refresh cookie, and the session
    of the cookie it replaces is revoked."""
    gw = current_gateway()
    claims = gw.authenticate()
    body = await gw.json_body()
    if not isinstance(body, dict):
        raise edge.EdgeError(400, "VALIDATION_ERROR", "the request body must be a JSON object", {})
    for name in body:
        if name not in ("account_id", "refresh_cookie"):
            raise invalid(name, "unknown field (allowed: account_id, refresh_cookie)")
    if body.get("account_id") is None:
        raise invalid("account_id", "is required (GET /api/v1/accounts lists your accounts)")
    account_id = edge.parse_message_id(body["account_id"], "account_id")
    cookie = _wants_cookie(body)
    await _own_account(gw, claims.user_id, account_id)
    refresh_token = await _new_family(gw, claims.user_id, account_id)
    old = request.cookies.get(REFRESH_COOKIE) if cookie else None
    if old and len(old) <= MAX_REFRESH_TOKEN:
        await gw.store.revoke_refresh_family(_digest(old), now=gw.clock())
    log.info("event=account_switch user_id=%d from=%d to=%d", claims.user_id, claims.account_id, account_id)
    return _issue_pair(gw, claims.user_id, account_id, refresh_token, cookie=cookie)


@doc(request_model=RefreshRequest, response=TokenPair, errors=(400, 401, 413, 415, 429),
     auth=False, tag="auth")
async def refresh() -> Response:
    """Spend a refresh token for a new access token and a new refresh token.

    A refresh token works once. Presenting a spent one again revokes every token descended
    from the same sign-in (401 REFRESH_TOKEN_REUSED): sign in again. Without a body token
    the exness_refresh cookie is spent and its successor set in its place."""
    gw = current_gateway()
    old, from_cookie = _refresh_token(await gw.json_body(optional=True))
    new = secrets.token_urlsafe(32)
    now = gw.clock()
    rotation = await gw.store.rotate_refresh_token(
        _digest(old), new_hash=_digest(new), now=now,
        expires_at=now + gw.settings.refresh_ttl_s * 1_000_000_000)
    outcome = rotation.outcome
    if outcome == "rotated":
        assert rotation.user_id is not None and rotation.account_id is not None
        return _issue_pair(gw, rotation.user_id, rotation.account_id, new, cookie=from_cookie)
    if outcome == "reused":
        log.warning("event=refresh_token_reused user_id=%s family=%s action=family_revoked",
                    rotation.user_id, rotation.family_id)
        raise _unauthorized("REFRESH_TOKEN_REUSED", "this refresh token was already used; every "
                            "session from the same sign-in is now revoked: sign in again",
                            clear_cookie=from_cookie)
    if outcome == "revoked":
        raise _unauthorized("REFRESH_TOKEN_REVOKED", "this refresh token was revoked: sign in again",
                            clear_cookie=from_cookie)
    if outcome == "expired":
        raise _unauthorized("REFRESH_TOKEN_EXPIRED", "this refresh token has expired: sign in again",
                            clear_cookie=from_cookie)
    raise _unauthorized("INVALID_REFRESH_TOKEN", "unknown refresh token: sign in again",
                        clear_cookie=from_cookie)


@doc(request_model=RefreshRequest, response=NoContent, status=204, errors=(400, 401, 413, 415, 429),
     auth=False, tag="auth")
async def signout() -> Response:
    """Revoke the refresh token and every token from the same sign-in (204).

    Signing out twice with the same token is fine; an unknown token is 401. Without a body
    token the exness_refresh cookie is revoked and cleared."""
    gw = current_gateway()
    token, from_cookie = _refresh_token(await gw.json_body(optional=True))
    if not await gw.store.revoke_refresh_family(_digest(token), now=gw.clock()):
        raise _unauthorized("INVALID_REFRESH_TOKEN", "unknown refresh token", clear_cookie=from_cookie)
    response = Response("", status=204)
    if from_cookie:
        response.headers["Set-Cookie"] = _refresh_cookie("", 0)
    return response


ROUTES: tuple[tuple[str, Callable[..., Awaitable[Response]]], ...] = (
    (f"{API}/auth/signup", signup),
    (f"{API}/auth/signin", signin),
    (f"{API}/auth/refresh", refresh),
    (f"{API}/auth/signout", signout),
    (f"{API}/auth/switch", switch),
)


def register(app: Any, gw: Gateway) -> None:
    app.extensions[PASSWORDS_EXTENSION] = Passwords(gw.settings)
    for path, handler in ROUTES:
        app.add_url_rule(path, view_func=handler, methods=["POST"])
