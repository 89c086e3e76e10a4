"""A Redis client on trio's own sockets, for the process edge (actors/bus/streams.py).

Why not redis-py's asyncio client behind the asyncio bridge (actors/aio_bridge.py), as the
PostgreSQL store does: every call then crosses two threads — a wake-up of the asyncio thread,
a GIL hand-off each way, a wake-up of trio — and the edge makes several calls per request (the
gateway's flush and reply read, the engine's read, replies and acknowledgements). Measured in
split mode (``bench/split.py``): see docs/decisions.md. Here a call is a ``send_all`` and a
``receive_some`` on trio's epoll loop, in the caller's task.

What it is made of: commands are packed by ``hiredis.pack_command`` and replies parsed by
``hiredis.Reader`` (the C parser redis-py itself uses), errors are redis-py's exception classes
(``ResponseError`` for a command Redis refused, ``ConnectionError``/``TimeoutError`` for the
connection), URLs are parsed by redis-py's ``parse_url`` (``redis://``, ``rediss://``,
``unix://``; user, password, db). The methods the edge uses answer in redis-py's shapes
(``decode_responses=False``), so code written against redis-py runs unchanged:

* ``xadd``, ``xack``, ``xgroup_create``, ``xread``, ``xreadgroup`` (``[[stream, [(id, {field:
  value}), …]], …]``, ``{}`` for a pending entry trimmed away; ``[]`` when a blocking read times
  out), ``get``, ``set``,
  ``delete``, ``pexpire``, ``ping``;
* ``pipeline(transaction=False)`` with ``xadd``, ``xack``, ``pexpire``: the queued commands go out
  in one write and their replies are read back in order; ``execute()`` raises the first
  ``ResponseError`` like redis-py.

Connections: a small pool. A call takes an idle connection (or opens one: connect, AUTH, SELECT,
CLIENT SETNAME in one round trip) and gives it back when the call completed; a blocking read
holds its connection for the read, so concurrent readers each get their own. A connection that
failed, timed out or was cancelled mid-call is closed, never reused (its reply stream would be out
of step), and a connection error empties the pool (after a Redis restart every idle connection is
dead). Every call has a deadline: ``CALL_TIMEOUT_S`` plus a blocking read's own block time.
"""

from __future__ import annotations

import ssl
from typing import Any, Callable, Mapping, Optional, Sequence, cast

import hiredis
import trio
from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["TrioRedis", "CALL_TIMEOUT_S", "CONNECT_TIMEOUT_S"]

CONNECT_TIMEOUT_S = 2.0
CALL_TIMEOUT_S = 10.0
MAX_IDLE = 8
_RECEIVE_BYTES = 1 << 16


def _identity(reply: Any) -> Any:
    return reply


def _ok(reply: Any) -> bool:
    return reply == b"OK" or reply is True or reply == 1


def _streams(reply: Any) -> list:
    """XREAD/XREADGROUP: ``[[name, [[id, [f, v, …] | nil], …]], …]`` → redis-py's shape (a
    trimmed pending entry's nil fields become ``{}``, as redis-py answers them)."""
    if not reply:
        return []
    return [[name, [(entry_id, dict(zip(fields[::2], fields[1::2])) if fields is not None else {})
                    for entry_id, fields in entries]]
            for name, entries in reply]


def _fields(fields: Mapping[Any, Any]) -> list:
    flat: list = []
    for key, value in fields.items():
        flat.append(key)
        flat.append(value)
    return flat


class _Connection:
    __slots__ = ("stream", "reader")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.reader = hiredis.Reader(replyError=ResponseError)

    async def roundtrip(self, packed: bytes, count: int) -> list:
        await self.stream.send_all(packed)
        replies: list = []
        reader = self.reader
        while len(replies) < count:
            reply = reader.gets()
            if reply is False:        # incomplete: read more
                data = await self.stream.receive_some(_RECEIVE_BYTES)
                if not data:
                    raise RedisConnectionError("Redis closed the connection")
                reader.feed(cast(bytes, data))   # hiredis takes a bytearray too: no copy
                continue
            replies.append(reply)
        return replies


class _Pipeline:
    """``client.pipeline(transaction=False)``: queue commands, ``await execute()``."""

    def __init__(self, client: "TrioRedis") -> None:
        self._client = client
        self._commands: list[tuple[Sequence[Any], Callable[[Any], Any]]] = []

    def _queue(self, args: Sequence[Any], shape: Callable[[Any], Any] = _identity) -> "_Pipeline":
        self._commands.append((args, shape))
        return self

    def xadd(self, name: Any, fields: Mapping[Any, Any], id: Any = "*", maxlen: Optional[int] = None,
             approximate: bool = True) -> "_Pipeline":
        return self._queue(_xadd_args(name, fields, id, maxlen, approximate))

    def xack(self, name: Any, groupname: Any, *ids: Any) -> "_Pipeline":
        return self._queue(("XACK", name, groupname, *ids))

    def pexpire(self, name: Any, milliseconds: int) -> "_Pipeline":
        return self._queue(("PEXPIRE", name, int(milliseconds)), _ok)

    async def execute(self) -> list:
        commands, self._commands = self._commands, []
        if not commands:
            return []
        replies = await self._client.execute([args for args, _shape in commands])
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return [shape(reply) for (_args, shape), reply in zip(commands, replies)]


def _xadd_args(name: Any, fields: Mapping[Any, Any], id: Any, maxlen: Optional[int], approximate: bool) -> list:
    args: list = ["XADD", name]
    if maxlen is not None:
        args += ["MAXLEN", "~" if approximate else "=", int(maxlen)]
    args.append(id)
    args += _fields(fields)
    return args


def _set_args(name: Any, value: Any, ex: Optional[int]) -> list:
    args: list = ["SET", name, value]
    if ex is not None:
        args += ["EX", int(ex)]
    return args


def _read_args(streams: Mapping[Any, Any], count: Optional[int], block: Optional[int]) -> list:
    args: list = []
    if count is not None:
        args += ["COUNT", int(count)]
    if block is not None:
        args += ["BLOCK", int(block)]
    args.append("STREAMS")
    args += list(streams.keys())
    args += list(streams.values())
    return args


class TrioRedis:
    """A pool of Redis connections on trio sockets (see the module docstring)."""

    def __init__(self, url: str, *, name: Optional[str] = None, max_idle: int = MAX_IDLE) -> None:
        options = parse_url(url)
        self.url = url
        self.name = name
        self.max_idle = max_idle
        self._path: Optional[str] = options.get("path")
        self._host: str = options.get("host", "localhost")
        self._port: int = int(options.get("port", 6379))
        self._db: int = int(options.get("db", 0) or 0)
        self._username: Optional[str] = options.get("username")
        self._password: Optional[str] = options.get("password")
        connection_class = options.get("connection_class")
        self._tls = connection_class is SSLConnection
        if connection_class is UnixDomainSocketConnection and not self._path:
            raise ValueError(f"{url}: a unix:// URL needs a socket path")
        self._idle: list[_Connection] = []
        self._closed = False
        #: statistics
        self.connections_opened = 0
        self.calls = 0

    # ------------------------------------------------------------------ connections

    async def _open(self) -> _Connection:
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                stream: trio.abc.Stream
                if self._path:
                    stream = await trio.open_unix_socket(self._path)
                else:
                    stream = await trio.open_tcp_stream(self._host, self._port)
                if self._tls:
                    stream = trio.SSLStream(stream, ssl.create_default_context(), server_hostname=self._host)
                    await stream.do_handshake()
                connection = _Connection(stream)
                setup: list[list] = []
                if self._password is not None:
                    setup.append(["AUTH", self._username, self._password] if self._username else
                                 ["AUTH", self._password])
                if self._db:
                    setup.append(["SELECT", self._db])
                if self.name:
                    setup.append(["CLIENT", "SETNAME", self.name])
                if setup:
                    try:
                        replies = await connection.roundtrip(b"".join(hiredis.pack_command(tuple(c)) for c in setup),
                                                             len(setup))
                    except BaseException:
                        await trio.aclose_forcefully(stream)
                        raise
                    for reply in replies:
                        if isinstance(reply, ResponseError):
                            await trio.aclose_forcefully(stream)
                            raise RedisConnectionError(f"Redis refused the connection set-up: {reply}")
        except trio.TooSlowError:
            raise RedisTimeoutError(f"no connection to Redis within {CONNECT_TIMEOUT_S:g} s") from None
        except (OSError, trio.BrokenResourceError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from None
        self.connections_opened += 1
        return connection

    async def execute(self, commands: Sequence[Sequence[Any]], *, block_s: float = 0.0) -> list:
        """Send ``commands`` in one write and return their raw replies (errors as
        ``ResponseError`` instances, not raised)."""
        if self._closed:
            raise RedisConnectionError("the Redis client is closed")
        self.calls += 1
        packed = b"".join(hiredis.pack_command(tuple(command)) for command in commands)
        connection = self._idle.pop() if self._idle else await self._open()
        try:
            with trio.fail_after(CALL_TIMEOUT_S + block_s):
                replies = await connection.roundtrip(packed, len(commands))
        except BaseException as exc:
            # out of step with its replies (or dead): never reused
            await trio.aclose_forcefully(connection.stream)
            if isinstance(exc, trio.TooSlowError):
                raise RedisTimeoutError(f"Redis did not answer within {CALL_TIMEOUT_S + block_s:g} s") from None
            if isinstance(exc, (OSError, trio.BrokenResourceError, trio.ClosedResourceError, RedisConnectionError)):
                await self._drop_idle()
                raise RedisConnectionError(f"the Redis connection broke: {exc}") from None
            raise
        if len(self._idle) < self.max_idle and not self._closed:
            self._idle.append(connection)
        else:
            await trio.aclose_forcefully(connection.stream)
        return replies

    async def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await trio.aclose_forcefully(connection.stream)

    async def aclose(self) -> None:
        self._closed = True
        await self._drop_idle()

    async def _one(self, args: Sequence[Any], shape: Callable[[Any], Any] = _identity,
                   block_ms: Optional[int] = None) -> Any:
        (reply,) = await self.execute([args], block_s=(block_ms or 0) / 1000)
        if isinstance(reply, ResponseError):
            raise reply
        return shape(reply)

    # ------------------------------------------------------------------ commands (redis-py shapes)

    def pipeline(self, transaction: bool = False) -> _Pipeline:
        if transaction:
            raise ValueError("TrioRedis pipelines are not transactions (MULTI/EXEC is not used by the edge)")
        return _Pipeline(self)

    async def ping(self) -> bool:
        return await self._one(("PING",), lambda reply: reply == b"PONG")

    async def get(self, name: Any) -> Optional[bytes]:
        return await self._one(("GET", name))

    async def set(self, name: Any, value: Any, ex: Optional[int] = None) -> bool:
        return await self._one(_set_args(name, value, ex), _ok)

    async def delete(self, *names: Any) -> int:
        return await self._one(("DEL", *names))

    async def pexpire(self, name: Any, milliseconds: int) -> bool:
        return await self._one(("PEXPIRE", name, int(milliseconds)), _ok)

    async def xadd(self, name: Any, fields: Mapping[Any, Any], id: Any = "*", maxlen: Optional[int] = None,
                   approximate: bool = True) -> bytes:
        return await self._one(_xadd_args(name, fields, id, maxlen, approximate))

    async def xack(self, name: Any, groupname: Any, *ids: Any) -> int:
        return await self._one(("XACK", name, groupname, *ids))

    async def xgroup_create(self, name: Any, groupname: Any, id: Any = "$", mkstream: bool = False) -> bool:
        args: list = ["XGROUP", "CREATE", name, groupname, id]
        if mkstream:
            args.append("MKSTREAM")
        return await self._one(args, _ok)

    async def xread(self, streams: Mapping[Any, Any], count: Optional[int] = None,
                    block: Optional[int] = None) -> list:
        return await self._one(["XREAD", *_read_args(streams, count, block)], _streams, block)

    async def xreadgroup(self, groupname: Any, consumername: Any, streams: Mapping[Any, Any],
                         count: Optional[int] = None, block: Optional[int] = None, noack: bool = False) -> list:
        args: list = ["XREADGROUP", "GROUP", groupname, consumername]
        if noack:
            args.append("NOACK")
        return await self._one(args + _read_args(streams, count, block), _streams, block)
