"""One socket write per fixed-length HTTP/1.1 response instead of three.

hypercorn writes a response as it gets it from the app: the head on ``http.response.start``, the
body on ``http.response.body``, then h11's end of message (no bytes at all for a body with a
``Content-Length``). Each write is ``TCPServer.protocol_send``: a ``trio.Lock`` and a ``send_all``,
each a checkpoint — a scheduling round of the whole event loop, which under load (every ready
task of every connection runs in a round) is what a request's latency is made of: the profiled
"write" stage was the largest part of an order's time (docs/decisions.md, issue 14's tail).

:func:`install` replaces ``H11Protocol._send_h11_event``, the one method that turns h11 events into
bytes and writes them: the head of a response that declares its ``Content-Length`` is held and
written together with the body's first bytes (or its end, for an empty body), and an event that
encodes to no bytes is not written at all. A response without a length (streamed, chunked) still
has its head written at once, so a client sees it before the first chunk, whenever that comes.
The bytes on the wire are the same; only the number of writes changes.

The same function takes two locks per request that are almost never contended: the connection's
send lock (``TCPServer.protocol_send``) and the idle timer's (``TrioSingleTask.restart``/``stop``:
the timer is stopped when a request arrives and restarted when its response is done). ``trio.Lock``
checkpoints even when it is free, so each costs a scheduling round on the request's path.
:func:`install` takes them without a checkpoint when they are free and waits as before when they
are not: the locks serialize exactly as they did, the socket send and the timer's ``nursery.start``
still checkpoint.
"""

from __future__ import annotations

from typing import Any

import h11
import trio
from hypercorn.events import Closed, RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import TrioSingleTask, _cancel_wrapper

__all__ = ["install"]


async def _send_h11_event(self: Any, event: Any) -> None:
    try:
        data = self.connection.send(event)
    except h11.LocalProtocolError:
        if self.connection.their_state != h11.ERROR:
            raise
        return
    held = self.__dict__.pop("_held_head", None)
    if held is not None:
        data = held + data
    elif type(event) is h11.Response and _declares_length(event):
        self._held_head = data
        return
    if data:
        await self.send(RawData(data=data))


def _declares_length(response: h11.Response) -> bool:
    return any(name == b"content-length" for name, _value in response.headers)


async def _acquire(lock: trio.Lock) -> None:
    """Take ``lock``: at once (no scheduling round) when it is free, else wait for it as ``acquire``
    does. A cancelled caller is still cancelled here, as at ``acquire``'s checkpoint: without that,
    requests in flight while the server shut down (the disk-full test in tests/test_crash.py) were
    sometimes answered 500 instead of 503 — the code after the lock ran on in a cancelled scope."""
    if lock.locked():
        await lock.acquire()
    else:
        await trio.lowlevel.checkpoint_if_cancelled()
        lock.acquire_nowait()


_PROTOCOL_SEND = TCPServer.protocol_send


async def _protocol_send(self: Any, event: Any) -> None:
    """``TCPServer.protocol_send`` with the send lock taken by :func:`_acquire`."""
    if not isinstance(event, RawData):
        await _PROTOCOL_SEND(self, event)
        return
    lock = self.send_lock
    await _acquire(lock)
    try:
        try:
            with trio.CancelScope(shield=True):
                await self.stream.send_all(event.data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self.protocol.handle(Closed())
    finally:
        lock.release()


async def _restart(self: Any, task_group: Any, action: Any) -> None:
    """``TrioSingleTask.restart`` with its lock taken by :func:`_acquire`."""
    await _acquire(self._lock)
    try:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = await task_group._nursery.start(_cancel_wrapper(action))
    finally:
        self._lock.release()


async def _stop(self: Any) -> None:
    """``TrioSingleTask.stop`` with its lock taken by :func:`_acquire`."""
    await _acquire(self._lock)
    try:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
    finally:
        self._lock.release()


def install() -> None:
    """Coalesce hypercorn's HTTP/1.1 response writes and take its free locks without a
    checkpoint (idempotent; affects every hypercorn server in the process, as
    :func:`actors.gateway._early_errors.install` does)."""
    H11Protocol._send_h11_event = _send_h11_event   # type: ignore[method-assign]
    TCPServer.protocol_send = _protocol_send         # type: ignore[method-assign]
    TrioSingleTask.restart = _restart                # type: ignore[method-assign]
    TrioSingleTask.stop = _stop                      # type: ignore[method-assign]
