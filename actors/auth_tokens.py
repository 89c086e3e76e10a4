"""Access tokens (JWT, HS256 via PyJWT) shared by the HTTP gateway and the WebSocket server.

Access tokens are short-lived and stateless: ``sub`` = user id, ``acc`` = trading account id,
``iat``/``exp`` seconds, ``typ = "access"``, ``knd = "trader"``. Refresh tokens are opaque random
strings kept (hashed) in the store by the gateway, rotated on every use.

Operators (the broker's staff, :mod:`actors.operators`) get access tokens of another kind:
``knd = "operator"``, ``sub`` = operator id, ``rol`` = their role, and no ``acc``. The kind keeps
the two apart in both directions: :meth:`TokenIssuer.verify_access` (trading, HTTP and WebSocket)
refuses an operator token and :meth:`TokenIssuer.verify_operator` (``/api/v1/admin``) refuses a
trader token, each with :class:`WrongTokenKind` (HTTP 403: the token is valid, just not for this).
A trader token without ``knd`` (issued before the kinds existed) is a trader token.

The signing secret comes from ``[auth] jwt_secret`` / ``EXNESS_AUTH__JWT_SECRET``; in embedded mode
a random secret is generated once into ``<data_dir>/jwt.secret`` (mode 0600). Never hard-coded.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

import attrs
import jwt

from exness_actors.commands import AccountId

__all__ = ["TokenIssuer", "AccessClaims", "OperatorClaims", "AuthError", "WrongTokenKind",
           "load_or_create_secret", "TRADER", "OPERATOR"]

ALGORITHM = "HS256"
#: the ``knd`` claim of each kind of access token
TRADER = "trader"
OPERATOR = "operator"


class AuthError(Exception):
    """Authentication failed: ``code`` is the API error code (401)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class WrongTokenKind(AuthError):
    """A valid access token of the other kind (a trader's on an operator route or the reverse):
    the caller is known but not allowed here, so HTTP 403 rather than 401."""


@attrs.frozen
class AccessClaims:
    user_id: int
    account_id: AccountId
    expires_at: int


@attrs.frozen
class OperatorClaims:
    operator_id: int
    role: str
    expires_at: int


class TokenIssuer:
    def __init__(self, secret: bytes, *, access_ttl_s: int = 900, issuer: str = "exness-actors") -> None:
        if len(secret) < 32:
            raise ValueError("the JWT secret must be at least 32 bytes")
        self._secret = secret
        self.access_ttl_s = access_ttl_s
        self.issuer = issuer

    def issue_access(self, user_id: int, account_id: int, *, now: Optional[float] = None) -> str:
        issued = int(time.time() if now is None else now)
        claims = {"sub": str(user_id), "acc": account_id, "iat": issued,
                  "exp": issued + self.access_ttl_s, "iss": self.issuer, "typ": "access", "knd": TRADER}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def issue_operator(self, operator_id: int, role: str, *, now: Optional[float] = None) -> str:
        issued = int(time.time() if now is None else now)
        claims = {"sub": str(operator_id), "rol": role, "iat": issued, "exp": issued + self.access_ttl_s,
                  "iss": self.issuer, "typ": "access", "knd": OPERATOR}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def _decode(self, token: object, now: Optional[float]) -> dict[str, Any]:
        if not isinstance(token, str) or not token or len(token) > 4096:
            raise AuthError("INVALID_TOKEN", "a bearer access token is required")
        options: Any = {"require": ["exp", "iat", "sub"], "verify_exp": now is None}
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM], issuer=self.issuer,
                                options=options)
        except jwt.ExpiredSignatureError:
            raise AuthError("TOKEN_EXPIRED", "the access token has expired: refresh it") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError("INVALID_TOKEN", f"the access token is not valid ({exc})") from None
        if now is not None and claims["exp"] <= now:
            raise AuthError("TOKEN_EXPIRED", "the access token has expired: refresh it")
        if claims.get("typ") != "access":
            raise AuthError("INVALID_TOKEN", "not an access token")
        return claims

    @staticmethod
    def _subject(claims: dict[str, Any]) -> int:
        try:
            return int(claims["sub"])
        except (TypeError, ValueError):
            raise AuthError("INVALID_TOKEN", "the access token has a malformed subject") from None

    def verify_access(self, token: object, *, now: Optional[float] = None) -> AccessClaims:
        """A trader's access token; an operator's is :class:`WrongTokenKind` (they never trade)."""
        claims = self._decode(token, now)
        kind = claims.get("knd", TRADER)
        if kind == OPERATOR:
            raise WrongTokenKind("OPERATOR_TOKEN", "an operator token cannot trade or read a trading "
                                 "account: sign in as a trader (POST /api/v1/auth/signin)")
        if kind != TRADER or not isinstance(claims.get("acc"), int):
            raise AuthError("INVALID_TOKEN", "not an access token")
        return AccessClaims(user_id=self._subject(claims), account_id=AccountId(claims["acc"]),
                            expires_at=claims["exp"])

    def verify_operator(self, token: object, *, now: Optional[float] = None) -> OperatorClaims:
        """An operator's access token; a trader's is :class:`WrongTokenKind`."""
        claims = self._decode(token, now)
        kind = claims.get("knd", TRADER)
        if kind == TRADER:
            raise WrongTokenKind("TRADER_TOKEN", "a trader token cannot reach the back office: sign in "
                                 "as an operator (POST /api/v1/admin/signin)")
        role = claims.get("rol")
        if kind != OPERATOR or not isinstance(role, str):
            raise AuthError("INVALID_TOKEN", "not an operator access token")
        return OperatorClaims(operator_id=self._subject(claims), role=role, expires_at=claims["exp"])


def load_or_create_secret(data_dir: Path, configured: Optional[str] = None) -> bytes:
    """The configured secret (text, ≥ 32 characters), else ``<data_dir>/jwt.secret`` (0600)."""
    if configured:
        secret = configured.encode()
        if len(secret) < 32:
            raise ValueError("[auth] jwt_secret must be at least 32 characters")
        return secret
    path = data_dir / "jwt.secret"
    if path.exists():
        return path.read_text().strip().encode()
    text = os.urandom(32).hex()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    return text.encode()
