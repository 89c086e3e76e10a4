"""actors/bus/redis_client.py: the edge's Redis client on trio sockets, checked against redis-py's
synchronous client on the same server (same answers in the same shapes), and its connection
handling: pooling, blocking reads, a dropped connection, cancellation, bad set-ups."""

from __future__ import annotations

import pytest
import redis
import trio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from actors.bus.redis_client import TrioRedis


@pytest.fixture
def url(redis_url: str) -> str:
    """REDIS_URL as it is: the tests' keys are under ``redis_prefix`` (conftest), deleted after each test."""
    return redis_url


async def test_stream_commands_answer_in_redis_py_shapes(url: str, redis_prefix: str) -> None:
    s, p, k, nothing = (redis_prefix + name for name in ("s", "p", "k", "nothing"))
    sync = redis.Redis.from_url(url)
    client = TrioRedis(url, name="trio-test")
    try:
        assert await client.ping() is True
        first = await client.xadd(s, {"b": b"\x00\xffbinary", "n": 7}, maxlen=100, approximate=True)
        second = sync.xadd(s, {"b": b"two"})
        assert sync.xrange(s)[0] == (first, {b"b": b"\x00\xffbinary", b"n": b"7"})
        assert await client.xread({s: "0"}, count=10) == sync.xread({s: "0"}, count=10)
        assert await client.xread({s: second.decode()}, block=50) == []      # timed out: empty

        assert await client.xgroup_create(s, "g", id="0", mkstream=True) is True
        with pytest.raises(ResponseError, match="BUSYGROUP"):
            await client.xgroup_create(s, "g", id="0")
        got = await client.xreadgroup("g", "c1", {s: ">"}, count=1)
        assert got == [[s.encode(), [(first, {b"b": b"\x00\xffbinary", b"n": b"7"})]]]
        assert await client.xack(s, "g", first) == 1
        sync.xreadgroup("g", "c1", {s: ">"})           # the second entry is pending now...
        sync.xtrim(s, maxlen=0)                        # ...and deleted: its fields are {}
        pending = await client.xreadgroup("g", "c1", {s: "0"})
        assert pending == [[s.encode(), [(second, {})]]] == sync.xreadgroup("g", "c1", {s: "0"})
        with pytest.raises(ResponseError, match="NOGROUP"):
            await client.xreadgroup("missing", "c", {s: ">"})

        assert await client.set(k, b"v", ex=30) is True and sync.ttl(k) > 0
        assert await client.get(k) == b"v" and await client.get(nothing) is None
        assert await client.pexpire(k, 60_000) is True
        assert await client.delete(k, nothing) == 1

        pipe = client.pipeline(transaction=False)
        pipe.xadd(p, {"x": 1}).pexpire(p, 5000).xadd(p, {"x": 2}, maxlen=1, approximate=False)
        one, expired, two = await pipe.execute()
        assert expired is True and sync.xrange(p) == [(two, {b"x": b"2"})] and one < two
        bad = client.pipeline()
        bad.xadd(p, {"x": 3}).xack(p, "no-such-group")   # XACK without ids: Redis refuses it
        with pytest.raises(ResponseError):
            await bad.execute()
        assert sync.xlen(p) == 2                       # "2" (MAXLEN 1 kept it alone) + the good "3"
        with pytest.raises(ValueError):
            client.pipeline(transaction=True)
        assert sync.client_list(_type="normal") and any(
            entry["name"] == "trio-test" for entry in sync.client_list())
    finally:
        await client.aclose()


async def test_connections_are_pooled_and_concurrent_blocking_reads_get_their_own(url: str,
                                                                                 redis_prefix: str) -> None:
    b = redis_prefix + "b"
    client = TrioRedis(url)
    try:
        for _ in range(5):
            assert await client.ping()
        assert client.connections_opened == 1             # one connection, reused
        results: list = []

        async def blocking_read() -> None:
            results.append(await client.xread({b: "$"}, block=2000))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocking_read)
            nursery.start_soon(blocking_read)
            await trio.sleep(0.2)
            await client.xadd(b, {"v": 1})                # a third connection while two block
        assert client.connections_opened == 3
        assert [len(result[0][1]) for result in results] == [1, 1]
    finally:
        await client.aclose()


async def test_a_killed_connection_fails_one_call_and_the_next_reconnects(url: str,
                                                                          redis_prefix: str) -> None:
    name = redis_prefix + "to-be-killed"     # no other run's connection has this name
    sync = redis.Redis.from_url(url)
    client = TrioRedis(url, name=name)
    try:
        assert await client.ping()
        killed = [sync.client_kill_filter(_id=entry["id"]) for entry in sync.client_list()
                  if entry["name"] == name]
        assert killed == [1]
        with pytest.raises(RedisConnectionError):
            await client.ping()
        assert await client.ping()                        # a fresh connection
        assert client.connections_opened == 2
    finally:
        await client.aclose()


async def test_a_cancelled_call_never_leaves_a_connection_out_of_step(url: str, redis_prefix: str) -> None:
    nothing, after, missing = (redis_prefix + name for name in ("nothing", "after", "missing"))
    client = TrioRedis(url)
    try:
        with trio.move_on_after(0.1):
            await client.xread({nothing: "$"}, block=5000)       # cancelled mid-read
        await client.xadd(after, {"v": 1})
        # had the cancelled connection gone back to the pool, this would read the late XREAD reply
        assert await client.get(missing) is None
        assert (await client.xread({after: "0"}))[0][0] == after.encode()
    finally:
        await client.aclose()


async def test_unreachable_servers_and_bad_set_ups_are_connection_errors(url: str) -> None:
    with pytest.raises(RedisConnectionError):
        await TrioRedis("redis://127.0.0.1:1/0").ping()          # nothing listens on port 1
    wrong_password = url.replace("redis://", "redis://:not-the-password@", 1)
    with pytest.raises(RedisConnectionError, match="set-up"):
        await TrioRedis(wrong_password).ping()                     # no password is configured
    with pytest.raises(RedisConnectionError):
        await TrioRedis(url.rsplit("/", 1)[0] + "/99999").ping()   # no such database
    closed = TrioRedis(url)
    await closed.aclose()
    with pytest.raises(RedisConnectionError, match="closed"):
        await closed.ping()
