"""The back office's sign-in: operators' tokens and the check every ``/api/v1/admin`` route makes.

* **Sign-in** (``POST /api/v1/admin/signin``) checks an operator's e-mail and argon2id password
  (the traders' hasher and throttles, with budgets of their own) and answers the traders' token
  pair shape with ``operator_id``, ``email`` and ``role`` in place of the user and account ids.
  The access token is of the operator kind (:meth:`actors.auth_tokens.TokenIssuer.issue_operator`):
  it carries the role and never trades. Refresh tokens rotate and their reuse revokes the
  family, exactly as the traders' (:mod:`actors.gateway._auth`), in their own table; with
  ``refresh_cookie`` the page keeps its refresh token in the HttpOnly cookie
  ``exness_admin_refresh`` scoped to ``/api/v1/admin``.
* **Every admin request** (:func:`operator`): a valid operator token (a trader's is 403
  ``TRADER_TOKEN``), the operator still active with the role the token names (else 401
  ``OPERATOR_DISABLED`` / ``ROLE_CHANGED``: one store read, so disabling someone takes effect at
  their next request, not when their token expires), and a role allowed to do what the route does
  (else 403 ``INSUFFICIENT_ROLE``; the role matrix is :data:`actors.operators.PERMISSIONS`).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from quart import Response, g, request

from actors.auth_tokens import AuthError, OperatorClaims
from actors.gateway import _auth
from actors.gateway._admin_schemas import Operator, OperatorSigninRequest, OperatorTokenPair
from actors.gateway._common import API, NoContent, bearer_token, current_gateway, doc, json_response, rate_limited
from actors.gateway._params import QueryParams
from actors.gateway._schemas import RefreshRequest
from actors.gateway.ratelimit import retry_after_header
from actors.operators import PERMISSIONS, READ, allowed
from actors.bus.streams import shard_clients
from actors.store.base import OperatorRecord
from actors.wire import codec as edge

__all__ = ["operator", "admin_signin", "admin_refresh", "admin_signout", "admin_me", "ADMIN", "REFRESH_COOKIE", "COOKIE_PATH"]

log = logging.getLogger("exness.gateway.admin")

ADMIN = f"{API}/admin"
REFRESH_COOKIE = "exness_admin_refresh"
COOKIE_PATH = ADMIN
SIGNIN = "POST /api/v1/admin/signin"


async def operator(permission: str) -> OperatorClaims:
    """The calling operator, checked as the module docstring says."""
    gw = current_gateway()
    assert gw.tokens is not None
    claims = gw.tokens.verify_operator(bearer_token(SIGNIN))      # AuthError / WrongTokenKind
    record = await gw.store.operator_by_id(claims.operator_id)
    if record is None or record.disabled:
        raise AuthError("OPERATOR_DISABLED", "this operator is disabled")
    if record.role != claims.role:
        raise AuthError("ROLE_CHANGED", f"your role is now {record.role}: sign in again")
    g.operator_id = claims.operator_id
    if not allowed(claims.role, permission):
        roles = [role for role, granted in PERMISSIONS.items() if permission in granted]
        raise edge.EdgeError(403, "INSUFFICIENT_ROLE",
                             f"the {claims.role} role cannot do this (it needs {' or '.join(roles)})",
                             {"role": claims.role, "permission": permission, "roles_allowed": roles})
    return claims


def _unauthorized(code: str, message: str, *, clear_cookie: bool = False) -> edge.EdgeError:
    headers = {"WWW-Authenticate": 'Bearer realm="exness-admin"'}
    if clear_cookie:
        headers["Set-Cookie"] = _auth._refresh_cookie("", 0, name=REFRESH_COOKIE, path=COOKIE_PATH)
    return edge.EdgeError(401, code, message, {}, headers=headers)


def _pair(record: OperatorRecord, refresh_token: str, *, cookie: bool) -> Response:
    gw = current_gateway()
    assert gw.tokens is not None
    response = json_response({
        "access_token": gw.tokens.issue_operator(record.operator_id, record.role),
        "refresh_token": None if cookie else refresh_token, "token_type": "Bearer",
        "expires_in": gw.tokens.access_ttl_s, "refresh_expires_in": gw.settings.refresh_ttl_s,
        "operator_id": str(record.operator_id), "email": record.email, "role": record.role,
    })
    if cookie:
        response.headers["Set-Cookie"] = _auth._refresh_cookie(refresh_token, gw.settings.refresh_ttl_s,
                                                               name=REFRESH_COOKIE, path=COOKIE_PATH)
    return response


def _throttle(email: str, address: Any) -> None:
    gw = current_gateway()
    keys = (("operator", email, address), ("operator", email), ("operator", address))
    wait = max(gw.signin_client_failures.retry_after(keys[0]), gw.signin_email_failures.retry_after(keys[1]),
               gw.signin_ip_failures.retry_after(keys[2]))
    if wait:
        gw.metrics.rate_limited.labels("admin_signin").inc()
        raise rate_limited("admin_signin", wait, f"too many failed sign-ins; wait {retry_after_header(wait)} s "
                                                 "before trying again")


def _failed(email: str, address: Any) -> None:
    gw = current_gateway()
    gw.signin_client_failures.acquire(("operator", email, address))
    gw.signin_email_failures.acquire(("operator", email))
    gw.signin_ip_failures.acquire(("operator", address))


@doc(request_model=OperatorSigninRequest, response=OperatorTokenPair, errors=(400, 401, 403, 413, 415, 429),
     auth=False, tag="admin")
async def admin_signin() -> Response:
    """Operators sign in to the back office (operators are created with `exness-actors operator create`).

    Answers the token pair with the operator's id, e-mail and role. Wrong e-mail or password is
    401 INVALID_CREDENTIALS; a disabled operator with the right password is 403
    OPERATOR_DISABLED. Failures are throttled like the traders' sign-ins (429)."""
    gw = current_gateway()
    body = await gw.json_body()
    email, password = _auth._credentials(body, signup=False)
    cookie = _auth._wants_cookie(body)
    address = request.remote_addr
    _throttle(email, address)
    record = await gw.store.operator_by_email(email)
    if not await _auth._passwords().verify(record.password_hash if record else None, password) or record is None:
        _failed(email, address)
        raise _unauthorized("INVALID_CREDENTIALS", "wrong e-mail or password")
    if record.disabled:
        raise edge.EdgeError(403, "OPERATOR_DISABLED", "this operator is disabled; ask an administrator", {})
    refresh_token = secrets.token_urlsafe(32)
    now = gw.clock()
    await gw.store.add_operator_refresh_token(_auth._digest(refresh_token), operator_id=record.operator_id,
                                              family_id=secrets.token_hex(16), issued_at=now,
                                              expires_at=now + gw.settings.refresh_ttl_s * 1_000_000_000)
    log.info("event=operator_signin operator_id=%d role=%s", record.operator_id, record.role)
    return _pair(record, refresh_token, cookie=cookie)


@doc(request_model=RefreshRequest, response=OperatorTokenPair, errors=(400, 401, 413, 415, 429),
     auth=False, tag="admin")
async def admin_refresh() -> Response:
    """Spend an operator's refresh token (body or exness_admin_refresh cookie) for a new pair.

    As for traders: single use, and a reused token revokes every session of its sign-in. The
    new access token carries the operator's current role."""
    gw = current_gateway()
    old, from_cookie = _auth._refresh_token(await gw.json_body(optional=True), REFRESH_COOKIE)
    new = secrets.token_urlsafe(32)
    now = gw.clock()
    rotation = await gw.store.rotate_operator_refresh_token(
        _auth._digest(old), new_hash=_auth._digest(new), now=now,
        expires_at=now + gw.settings.refresh_ttl_s * 1_000_000_000)
    if rotation.outcome == "rotated":
        assert rotation.user_id is not None
        record = await gw.store.operator_by_id(rotation.user_id)
        if record is None or record.disabled:
            raise _unauthorized("OPERATOR_DISABLED", "this operator is disabled", clear_cookie=from_cookie)
        return _pair(record, new, cookie=from_cookie)
    messages = {"reused": ("REFRESH_TOKEN_REUSED", "this refresh token was already used; every session from "
                                                   "the same sign-in is now revoked: sign in again"),
                "revoked": ("REFRESH_TOKEN_REVOKED", "this refresh token was revoked: sign in again"),
                "expired": ("REFRESH_TOKEN_EXPIRED", "this refresh token has expired: sign in again")}
    if rotation.outcome == "reused":
        log.warning("event=operator_refresh_token_reused operator_id=%s action=family_revoked", rotation.user_id)
    code, message = messages.get(rotation.outcome, ("INVALID_REFRESH_TOKEN", "unknown refresh token: sign in again"))
    raise _unauthorized(code, message, clear_cookie=from_cookie)


@doc(request_model=RefreshRequest, response=NoContent, status=204, errors=(400, 401, 413, 415, 429),
     auth=False, tag="admin")
async def admin_signout() -> Response:
    """Revoke an operator's refresh token and every token of the same sign-in (204)."""
    gw = current_gateway()
    token, from_cookie = _auth._refresh_token(await gw.json_body(optional=True), REFRESH_COOKIE)
    if not await gw.store.revoke_operator_refresh_family(_auth._digest(token), now=gw.clock()):
        raise _unauthorized("INVALID_REFRESH_TOKEN", "unknown refresh token", clear_cookie=from_cookie)
    response = Response("", status=204)
    if from_cookie:
        response.headers["Set-Cookie"] = _auth._refresh_cookie("", 0, name=REFRESH_COOKIE, path=COOKIE_PATH)
    return response


@doc(response=Operator, errors=(400, 403), tag="admin")
async def admin_me() -> Response:
    """The signed-in operator: id, e-mail, role, what the role may do, and how many engine shards there are."""
    claims = await operator(READ)
    QueryParams(request.args, ())
    record = await current_gateway().store.operator_by_id(claims.operator_id)
    assert record is not None
    handle = current_gateway().handle
    return json_response({"operator_id": str(record.operator_id), "email": record.email, "role": record.role,
                          "permissions": sorted(PERMISSIONS[record.role]),
                          "shards": len(shard_clients(handle)) if handle is not None else 1})
