"""A small HTTP/1.1 client for webhooks: trio sockets (TLS through ``trio.SSLStream``) and
``h11`` for the protocol, with keep-alive connections per origin.

Why not httpx (already a dependency, used by the tests): under trio it goes through anyio and
httpcore's pool, and measured here (bench/notify.py's receiver, 64 requests in flight, a loaded
2-core machine) it made ~57 POSTs/s where this client, on the same sockets, made ~1,100/s. A
webhook is one request shape — POST a small JSON body, read the status, discard the answer — so
the client is short: docs/decisions.md has the numbers.

Every request runs under one deadline (connect, TLS, send, answer: ``timeout_s``). An idle
connection the receiver closed in the meantime fails on reuse before any answer: that request is
sent once more on a fresh connection (the receiver cannot have processed it). At most
``idle_per_origin`` connections are kept per ``scheme://host:port``; an answer body larger than
``max_answer_bytes`` is not read (the connection is closed instead).
"""

from __future__ import annotations

import ssl
from collections import defaultdict
from typing import Optional, Union
from urllib.parse import urlsplit

import h11
import trio

__all__ = ["WebhookClient", "WebhookError"]

_Stream = Union[trio.SocketStream, trio.SSLStream]
_READ = 65536


class WebhookError(Exception):
    """The request did not get an answer (what happened, for the dead-letter list)."""


class _Connection:
    __slots__ = ("stream", "protocol")

    def __init__(self, stream: _Stream) -> None:
        self.stream = stream
        self.protocol = h11.Connection(h11.CLIENT)


class WebhookClient:
    def __init__(self, *, timeout_s: float, idle_per_origin: int = 4, max_answer_bytes: int = 1 << 20,
                 ssl_context: Optional[ssl.SSLContext] = None, user_agent: str = "exness-actors") -> None:
        self.timeout_s = timeout_s
        self.idle_per_origin = idle_per_origin
        self.max_answer_bytes = max_answer_bytes
        self.ssl_context = ssl_context
        self.user_agent = user_agent
        self._idle: dict[tuple[str, str, int], list[_Connection]] = defaultdict(list)
        self.connections_opened = 0

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """POST ``body``; the answer's status. :class:`WebhookError` when there is none in time."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        origin = (parts.scheme, host, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.netloc.rpartition("@")[2]
        request_headers = [("Host", authority), ("User-Agent", self.user_agent),
                           ("Content-Length", str(len(body))), *headers.items()]
        try:
            with trio.fail_after(self.timeout_s):
                idle = self._idle[origin]
                while idle:          # a kept connection, unless the receiver closed it meanwhile
                    connection = idle.pop()
                    status = await self._exchange(connection, origin, target, request_headers, body, reused=True)
                    if status is not None:
                        return status
                connection = await self._connect(origin)
                status = await self._exchange(connection, origin, target, request_headers, body, reused=False)
                assert status is not None
                return status
        except trio.TooSlowError:
            raise WebhookError("timeout") from None

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        try:
            stream: _Stream = await trio.open_tcp_stream(host, port)
            if scheme == "https":
                context = self.ssl_context or ssl.create_default_context()
                stream = trio.SSLStream(stream, context, server_hostname=host, https_compatible=True)
                await stream.do_handshake()
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as error:
            raise WebhookError(f"connect: {type(error).__name__}: {error}") from None
        self.connections_opened += 1
        return _Connection(stream)

    async def _exchange(self, connection: _Connection, origin: tuple[str, str, int], target: str,
                        headers: list[tuple[str, str]], body: bytes, *, reused: bool) -> Optional[int]:
        """One request and its answer; None when a reused connection turned out closed."""
        protocol = connection.protocol
        answered = False
        try:
            data = protocol.send(h11.Request(method="POST", target=target, headers=headers))
            await connection.stream.send_all(data + protocol.send(h11.Data(data=body)) +
                                             protocol.send(h11.EndOfMessage()))
            status, answered = await self._answer(connection)
        except _Answered as early:
            await _close(connection)
            return early.status
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, h11.ProtocolError,
                ssl.SSLError, _Closed) as error:
            await _close(connection)
            if reused and not answered:
                return None
            raise WebhookError(f"{type(error).__name__}: {error}".rstrip(": ")) from None
        except BaseException:
            await _close(connection)
            raise
        if protocol.our_state is h11.DONE and protocol.their_state is h11.DONE:
            protocol.start_next_cycle()
            idle = self._idle[origin]
            if len(idle) < self.idle_per_origin:
                idle.append(connection)
                return status
        await _close(connection)
        return status

    async def _answer(self, connection: _Connection) -> tuple[int, bool]:
        protocol = connection.protocol
        status: Optional[int] = None
        size = 0
        while True:
            event = protocol.next_event()
            if event is h11.NEED_DATA:
                protocol.receive_data(bytes(await connection.stream.receive_some(_READ)))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > self.max_answer_bytes and status is not None:
                    raise _Answered(status)
            elif isinstance(event, h11.EndOfMessage):
                assert status is not None
                return status, True
            elif isinstance(event, h11.ConnectionClosed):
                raise _Closed("the receiver closed the connection")

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                await _close(connection)
        self._idle.clear()


class _Closed(Exception):
    pass


class _Answered(Exception):
    """The answer was too long to read: its status counts, the connection is dropped."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


async def _close(connection: _Connection) -> None:
    with trio.CancelScope(shield=True):
        try:
            await connection.stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
