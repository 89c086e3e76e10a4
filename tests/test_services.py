"""The real Redis and PostgreSQL servers answer.

These tests guarantee that CI (`.ci/run`, with EXNESS_REQUIRE_SERVICES=1) really has the services the
integration tests rely on: a reachable port is not enough, each server must answer a real request.

They are plain synchronous functions: the suite runs pytest-trio in trio_mode, which only takes over
`async def` tests, so `asyncio.run` here starts its own loop with no trio loop in the way.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import redis

pytestmark = pytest.mark.services


def test_redis_answers_ping(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        answered = client.ping()
    finally:
        client.close()

    assert answered is True


def test_postgres_answers_select_1(database_url: str) -> None:
    async def select_one() -> int:
        connection = await asyncpg.connect(database_url, timeout=5)
        try:
            return await connection.fetchval("select 1")
        finally:
            await connection.close()

    assert asyncio.run(select_one()) == 1
