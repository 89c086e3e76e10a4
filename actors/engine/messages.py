"""The closed set of messages actors exchange (besides core commands and events).

Who sends what to whom:

* **anyone → engine inbox** (:data:`InboxItem`, the closed union the engine dispatches on): a
  core command alone (fire and forget: quotes from the feed, clock ticks), a :class:`Request`
  (command + :class:`ReplySlot`) when the caller wants the outcome (gateway, WebSocket order
  lane, simulations), a :class:`Query` (a named view of the state, answered in order with the
  commands), a :class:`Burst` (split mode: one stream entry, applied whole) or :class:`Stop`.
* **engine → subscribers**: :class:`EventBatch` — the events of one durable journal batch, in
  sequence order. Subscribers: candles, persister, WebSocket server, snapshotter (seq only).
* **engine → callers**: the :class:`Reply` put into the request's slot once the batch holding
  the command is durable.

Every channel is bounded. A full engine inbox raises :class:`Overloaded` to the caller
(the gateway answers 503, the WebSocket lane an error), never an unbounded queue.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, Union

import attrs
import trio

from exness_actors.commands import Command

__all__ = ["Request", "Reply", "ReplySlot", "ReplyTarget", "EventBatch", "Burst", "Query", "Stop", "InboxItem",
           "Overloaded", "EngineStopped", "EngineTimeout"]


class Overloaded(Exception):
    """The engine inbox is full: shed load (HTTP 503 / WS error with retry advice)."""


class EngineStopped(Exception):
    """The engine is not taking commands (shutting down, or it failed)."""


class EngineTimeout(Exception):
    """Split mode: the engine did not answer within ``[bus] request_timeout_s`` (HTTP 504).
    The command may or may not have been applied; retrying with the same ``client_order_id``
    is safe (it is never applied twice)."""


@attrs.define(slots=True)
class Reply:
    """The outcome of one command: its own events (from ``Engine.reply_start``) and seq."""
    seq: int
    ts: int
    events: list


class ReplySlot:
    """A one-shot rendezvous: the engine sets the reply, the caller awaits it.

    Cheaper than a memory channel per request (no task, no buffer), and safe from trio only.
    """

    __slots__ = ("_event", "value", "error")

    def __init__(self) -> None:
        self._event = trio.Event()
        self.value: Any = None
        self.error: Optional[BaseException] = None

    def set(self, value: Any) -> None:
        self.value = value
        self._event.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self._event.set()

    async def wait(self) -> Any:
        """The reply (a :class:`Reply`, or a query's answer — which may be ``None``)."""
        await self._event.wait()
        if self.error is not None:
            raise self.error
        return self.value


class ReplyTarget(Protocol):
    """Where the engine puts one outcome: a :class:`ReplySlot`, or a caller's own object that
    reacts at once (the WebSocket order lane, the simulation's acknowledgement log)."""

    def set(self, value: Any) -> None: ...

    def fail(self, error: BaseException) -> None: ...


@attrs.define(slots=True)
class Request:
    command: Any
    reply: ReplyTarget


@attrs.define(slots=True)
class EventBatch:
    """The events of one durable batch: ``items`` is a list of ``(seq, ts, events)`` per input
    that produced events (inputs without events are left out); ``last_seq`` is the batch's last
    sequence number even when it produced no events; ``first_seq`` its first (0: not known —
    batches rebuilt from the journal), so a reader of a trimmed stream can name what it missed."""
    items: list[tuple[int, int, list]]
    last_seq: int
    first_seq: int = 0


class Burst:
    """Inbox items the engine must apply back to back in one batch, never split between two
    journal writes: the process edge's ``EdgeCursor`` followed by the requests and queries of
    one stream entry (actors/bus/streams.py)."""

    __slots__ = ("items",)

    def __init__(self, items: list) -> None:
        self.items = items


class Query:
    """A read of the core answered in order with the commands around it (not journaled):
    ``fn(engine)``, in practice a named view of :mod:`actors.wire.views` (boxed for the bus)."""

    __slots__ = ("fn", "reply")

    def __init__(self, fn: Callable[[Any], Any], reply: ReplySlot) -> None:
        self.fn = fn
        self.reply = reply


class Stop:
    """Asks the engine to finish the batch it is making, make it durable and return."""

    __slots__ = ()


#: Everything the engine inbox carries, dispatched by type (actors/engine/actor.py).
InboxItem = Union[Command, Request, Query, Burst, Stop]
