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
"""

from __future__ import annotations

from typing import Any

import h11
from hypercorn.events import RawData
from hypercorn.protocol.h11 import H11Protocol

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


def install() -> None:
    """Coalesce hypercorn's HTTP/1.1 response writes (idempotent; affects every hypercorn server in
    the process, as :func:`actors.gateway._early_errors.install` does)."""
    H11Protocol._send_h11_event = _send_h11_event   # type: ignore[method-assign]
