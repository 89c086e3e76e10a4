"""A minimal, low-overhead HTTP/1.1 load generator for the benchmarks (private to ``bench/``).

Raw keep-alive sockets on one ``selectors`` loop (epoll), one request in flight per connection,
hand-written request bytes and response parsing (status line + ``Content-Length``; the gateway
never answers chunked). Per request it costs a few tens of microseconds of client CPU, far below
what the server spends, so one load process can saturate one server process.

A *workload* is one object per connection: :meth:`Workload.first` gives the first request's bytes
and :meth:`Workload.answer` gets each response (status, body, time) and returns the next request's
bytes, or ``None`` when the connection is finished. :func:`drive` runs a set of workloads until all
of them are finished (or a hard deadline passes).
"""

from __future__ import annotations

import json
import selectors
import socket
import time
from typing import Any, Optional, Sequence

__all__ = ["Conn", "Workload", "drive", "request_bytes", "quantile", "ProtocolError"]

perf_counter = time.perf_counter


class ProtocolError(Exception):
    """The server answered something this minimal client does not understand."""


def request_bytes(method: str, path: str, *, host: str, token: Optional[str] = None,
                  body: Any = None) -> bytes:
    """One complete HTTP/1.1 keep-alive request. ``body`` (a dict) goes as JSON."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    payload = b""
    if body is not None:
        payload = json.dumps(body, separators=(",", ":")).encode()
        lines.append("Content-Type: application/json")
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank quantile of already sorted values (nan when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, int(q * len(sorted_values) + 0.999999) - 1))
    return sorted_values[rank]


class Workload:
    """What one connection does. Subclasses override :meth:`first` and :meth:`answer`."""

    def first(self, now: float) -> Optional[bytes]:
        raise NotImplementedError

    def answer(self, status: int, body: bytes, sent_at: float, now: float) -> Optional[bytes]:
        raise NotImplementedError

    def connection_lost(self, now: float) -> None:
        """The connection broke with a request in flight (it is resent on a new connection)."""


class Conn:
    """One keep-alive connection carrying one :class:`Workload`."""

    __slots__ = ("host", "port", "sock", "buf", "workload", "request", "sent_at", "done", "reconnects",
                 "closed_by_server")

    def __init__(self, host: str, port: int, workload: Workload) -> None:
        self.host = host
        self.port = port
        self.workload = workload
        self.buf = bytearray()
        self.request: Optional[bytes] = None
        self.sent_at = 0.0
        self.done = False
        self.reconnects = 0            # after a broken connection (request lost, resent)
        self.closed_by_server = 0      # after an announced ``Connection: close``
        self.sock = self._connect()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock      # blocking: recv is only called when readable, requests are tiny

    def send(self, request: bytes) -> None:
        self.request = request
        self.sent_at = perf_counter()
        self.sock.sendall(request)

    def reconnect(self, *, announced: bool = False) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        self.buf.clear()
        if announced:
            self.closed_by_server += 1
        else:
            self.reconnects += 1
        self.sock = self._connect()


def _parse(buf: bytearray) -> Optional[tuple[int, bytes, bool]]:
    """Take one complete response off the front of ``buf``: ``(status, body, close)`` or None;
    ``close``: the server said ``Connection: close`` (e.g. hypercorn's keep-alive request cap)."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    if buf[:5] != b"HTTP/":
        raise ProtocolError(f"not an HTTP response: {bytes(buf[:60])!r}")
    status = int(buf[9:12])
    head = bytes(buf[:head_end]).lower()
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        if status in (204, 304) or 100 <= status < 200:
            length = 0
        else:
            raise ProtocolError(f"response without content-length: {bytes(buf[:head_end])!r}")
    else:
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17:stop if stop >= 0 else len(head)])
    end = head_end + 4 + length
    if len(buf) < end:
        return None
    body = bytes(buf[head_end + 4:end])
    del buf[:end]
    return status, body, b"\r\nconnection: close" in head


def drive(conns: list[Conn], *, hard_deadline: float, max_reconnects: int = 50) -> int:
    """Run every connection's workload until each is finished; return how many were still
    unfinished (request in flight) at ``hard_deadline`` (``perf_counter`` time)."""
    selector = selectors.DefaultSelector()
    active = 0
    now = perf_counter()
    for conn in conns:
        request = conn.workload.first(now)
        if request is None:
            conn.done = True
            continue
        selector.register(conn.sock, selectors.EVENT_READ, conn)
        conn.send(request)
        active += 1
    select = selector.select
    while active:
        timeout = hard_deadline - perf_counter()
        if timeout <= 0:
            break
        for key, _ in select(min(timeout, 0.5)):
            conn = key.data
            try:
                data = conn.sock.recv(262144)
            except (ConnectionError, OSError):
                data = b""
            if not data:   # the server closed the connection: resend the request on a new one
                selector.unregister(conn.sock)
                conn.workload.connection_lost(perf_counter())
                if conn.reconnects >= max_reconnects:
                    raise ProtocolError(f"connection to {conn.host}:{conn.port} keeps closing")
                conn.reconnect()
                selector.register(conn.sock, selectors.EVENT_READ, conn)
                assert conn.request is not None
                conn.send(conn.request)
                continue
            buf = conn.buf
            buf += data
            while True:
                parsed = _parse(buf)
                if parsed is None:
                    break
                now = perf_counter()
                request = conn.workload.answer(parsed[0], parsed[1], conn.sent_at, now)
                if request is None:
                    conn.done = True
                    conn.request = None
                    selector.unregister(conn.sock)
                    active -= 1
                    break
                if parsed[2]:   # the server closes this connection: continue on a new one
                    selector.unregister(conn.sock)
                    conn.reconnect(announced=True)
                    selector.register(conn.sock, selectors.EVENT_READ, conn)
                    conn.send(request)
                    break
                conn.send(request)
    selector.close()
    for conn in conns:
        try:
            conn.sock.close()
        except OSError:
            pass
    return active
