"""Shared fixtures for the whole suite.

Service fixtures (`redis_url`, `database_url`) point at the real Redis and PostgreSQL servers on
127.0.0.1. When a server does not answer, a test that needs it is skipped with the reason — unless
`EXNESS_REQUIRE_SERVICES=1` is set (as `.ci/run` does), in which case it fails: in CI a missing
service is a broken environment, not a reason to pass quietly.

Redis is shared with whoever else uses it: tests use the database `REDIS_URL` names, put their keys
under `redis_prefix` (unique per test; `exness-test:<run id>:…`) and delete only those keys — no test
flushes a database.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: names this run's Redis keys (EXNESS_TEST_RUN_ID lets a test find the keys of a run it started).
#: Kept short: a prefixed command stream's name must fit an EdgeCursor source (64 characters).
RUN_ID = os.environ.get("EXNESS_TEST_RUN_ID") or uuid.uuid4().hex[:8]
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
CONNECT_TIMEOUT_S = 1.0


def services_required() -> bool:
    """True when a missing service must fail the test instead of skipping it."""
    return os.environ.get("EXNESS_REQUIRE_SERVICES", "").strip() == "1"


def _unreachable_reason(url: str, *, default_port: int) -> str | None:
    """Try a TCP connect to the URL's host and port; return why it failed, or None if it answered."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as error:
        return f"cannot connect to {host}:{port} ({error.__class__.__name__}: {error})"


def _require_service(*, name: str, env_var: str, default_url: str, default_port: int) -> str:
    url = os.environ.get(env_var) or default_url
    reason = _unreachable_reason(url, default_port=default_port)
    if reason is None:
        return url
    message = f"{name} is not reachable at {env_var}={url}: {reason}"
    if services_required():
        pytest.fail(f"{message}; EXNESS_REQUIRE_SERVICES=1, so this is a failure", pytrace=False)
    pytest.skip(f"{message} (start the server or set {env_var}; EXNESS_REQUIRE_SERVICES=1 makes this a failure)")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a reachable Redis server (REDIS_URL, default redis://127.0.0.1:6379/0)."""
    return _require_service(name="Redis", env_var="REDIS_URL", default_url=DEFAULT_REDIS_URL, default_port=6379)


@pytest.fixture(scope="session")
def database_url() -> str:
    """URL of a reachable PostgreSQL server (DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/test)."""
    return _require_service(
        name="PostgreSQL", env_var="DATABASE_URL", default_url=DEFAULT_DATABASE_URL, default_port=5432
    )


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own in REDIS_URL's database; every key under it is deleted afterwards."""
    import redis
    prefix = f"exness-test:{RUN_ID}:{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
