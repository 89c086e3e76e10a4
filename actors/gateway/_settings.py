"""The gateway's configuration: ``[http]``, ``[limits]`` and ``[auth]``, read once per app.

Every key has a default, so the shipped ``config.toml`` needs no gateway section to work; the
defaults are generous enough that the benchmarks are never throttled. A value of the wrong type
is a :class:`~actors.config.ConfigError` naming the key.

``[http]``: ``host`` ["127.0.0.1"], ``port`` [8000; 0 = any free port], ``max_body_bytes``
[16384], ``cors_origins`` [[]: no CORS; ``["*"]`` allows any origin], ``graceful_timeout_s`` [5],
``backlog`` [1024], ``history_wait_ms`` [1000: how long a history read waits for the persister
to catch up with what was acknowledged before it], ``ready_timeout_ms`` [1000], ``fast_path``
[true: the hot trading routes are served by the lean ASGI path of :mod:`actors.gateway._fast`;
false sends every request through Quart — the same answers, more CPU per request].

``[limits]`` (token buckets; a rate of 0 disables the limit): ``ip_rate_per_s`` [10000],
``ip_burst`` [20000], ``account_rate_per_s`` [10000], ``account_burst`` [20000],
``signup_per_minute`` [600, per IP], ``signin_failures_per_minute`` [5, per e-mail and client
IP], ``signin_email_failures_per_minute`` [50, per e-mail from any address],
``signin_ip_failures_per_minute`` [20, per IP], ``accounts_per_user`` [10: trading accounts one
user may hold; ``POST /api/v1/accounts`` past it is 409 ACCOUNT_LIMIT_REACHED].

``[auth]``: ``jwt_secret`` (else ``<data_dir>/jwt.secret``), ``access_ttl_s`` [900],
``refresh_ttl_s`` [2592000 = 30 days], ``argon2_time_cost`` [3], ``argon2_memory_kib`` [65536],
``argon2_parallelism`` [4], ``hash_threads`` [2: concurrent password hashes].
"""

from __future__ import annotations

from typing import Any, cast

import attrs

from actors.auth_tokens import TokenIssuer, load_or_create_secret
from actors.config import ConfigError

__all__ = ["GatewaySettings", "token_issuer_from_config", "read_setting"]


def read_setting(cfg: Any, section: str, key: str, default: Any, kind: type | tuple[type, ...],
          *, low: float | None = None) -> Any:
    value: Any = cfg[section].get(key, default) if cfg is not None else default
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise ConfigError(f"[{section}] {key} = {value!r}: expected {getattr(kind, '__name__', kind)}")
    if low is not None and cast(float, value) < low:
        raise ConfigError(f"[{section}] {key} = {value!r}: must be at least {low}")
    return value


@attrs.frozen(kw_only=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 16 * 1024
    cors_origins: tuple[str, ...] = ()
    graceful_timeout_s: float = 5.0
    backlog: int = 1024
    history_wait_s: float = 1.0
    ready_timeout_s: float = 1.0
    ip_rate_per_s: float = 10_000.0
    ip_burst: float = 20_000.0
    account_rate_per_s: float = 10_000.0
    account_burst: float = 20_000.0
    signup_per_minute: float = 600.0
    signin_failures_per_minute: float = 5.0
    signin_email_failures_per_minute: float = 50.0
    signin_ip_failures_per_minute: float = 20.0
    accounts_per_user: int = 10
    refresh_ttl_s: int = 30 * 24 * 3600
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65_536
    argon2_parallelism: int = 4
    hash_threads: int = 2
    fast_path: bool = True

    @classmethod
    def from_config(cls, cfg: Any) -> "GatewaySettings":
        number = (int, float)
        origins = read_setting(cfg, "http", "cors_origins", [], (list, tuple))
        if not all(isinstance(origin, str) for origin in origins):
            raise ConfigError(f"[http] cors_origins = {origins!r}: expected a list of origins")
        return cls(
            host=read_setting(cfg, "http", "host", "127.0.0.1", str),
            port=read_setting(cfg, "http", "port", 8000, int, low=0),
            max_body_bytes=read_setting(cfg, "http", "max_body_bytes", 16 * 1024, int, low=64),
            cors_origins=tuple(origin.rstrip("/") for origin in origins),
            graceful_timeout_s=float(read_setting(cfg, "http", "graceful_timeout_s", 5.0, number, low=0)),
            backlog=read_setting(cfg, "http", "backlog", 1024, int, low=1),
            history_wait_s=read_setting(cfg, "http", "history_wait_ms", 1000, number, low=0) / 1000,
            ready_timeout_s=read_setting(cfg, "http", "ready_timeout_ms", 1000, number, low=1) / 1000,
            ip_rate_per_s=float(read_setting(cfg, "limits", "ip_rate_per_s", 10_000, number, low=0)),
            ip_burst=float(read_setting(cfg, "limits", "ip_burst", 20_000, number, low=1)),
            account_rate_per_s=float(read_setting(cfg, "limits", "account_rate_per_s", 10_000, number, low=0)),
            account_burst=float(read_setting(cfg, "limits", "account_burst", 20_000, number, low=1)),
            signup_per_minute=float(read_setting(cfg, "limits", "signup_per_minute", 600, number, low=0)),
            signin_failures_per_minute=float(read_setting(cfg, "limits", "signin_failures_per_minute", 5, number, low=0)),
            signin_email_failures_per_minute=float(
                read_setting(cfg, "limits", "signin_email_failures_per_minute", 50, number, low=0)),
            signin_ip_failures_per_minute=float(read_setting(cfg, "limits", "signin_ip_failures_per_minute", 20, number, low=0)),
            accounts_per_user=read_setting(cfg, "limits", "accounts_per_user", 10, int, low=1),
            refresh_ttl_s=read_setting(cfg, "auth", "refresh_ttl_s", 30 * 24 * 3600, int, low=60),
            argon2_time_cost=read_setting(cfg, "auth", "argon2_time_cost", 3, int, low=1),
            argon2_memory_kib=read_setting(cfg, "auth", "argon2_memory_kib", 65_536, int, low=8),
            argon2_parallelism=read_setting(cfg, "auth", "argon2_parallelism", 4, int, low=1),
            hash_threads=read_setting(cfg, "auth", "hash_threads", 2, int, low=1),
            fast_path=read_setting(cfg, "http", "fast_path", True, bool),
        )


def token_issuer_from_config(cfg: Any) -> TokenIssuer:
    """The :class:`TokenIssuer` of ``[auth]``: the configured ``jwt_secret`` or the data dir's
    ``jwt.secret`` (created 0600 on first use), ``access_ttl_s`` [900]. Build one per process
    and hand it to the gateway and the WebSocket server, so both accept the same tokens."""
    try:
        secret = load_or_create_secret(cfg.data_dir, cfg["auth"].get("jwt_secret"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return TokenIssuer(secret, access_ttl_s=read_setting(cfg, "auth", "access_ttl_s", 900, int, low=1))
