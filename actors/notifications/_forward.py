"""Process mode's forwarder: the worker's half that stays in the engine's interpreter.

Theory of operation
-------------------
In process mode (``[notifications] delivery = "process"``, or ``auto`` in embedded mode) the
child process (:mod:`actors.notifications._delivery`) derives, records *and* delivers. The
worker only forwards: it takes the lossless event batches as before, keeps the inputs whose events
can make a notification (:func:`~actors.notifications.kinds.can_notify`, next to ``derive``: one
table decides both), encodes them — msgpack of the core codec's wire tuples, in one call per
frame, with ``None`` in place of each event that cannot make a notification (``derive`` skips it;
the positions, and so the ids, are kept) — and queues them for the child's stdin with the group's
last seq, so the child's watermark advances over inputs that make nothing (quotes) without them
being sent.

**Nothing is lost.** A forwarded frame stays in :attr:`Forwarder.frames` until the child reports
that it derived past it (``derived``: everything up to that seq is recorded, or made no
notification); a new child says where its store's watermark is when it is ready and every frame
above that is written to it again (same stable ids: rows written before are kept by ``ON CONFLICT
DO NOTHING``). The frames are bounded (:data:`FORWARD_BUFFER_INPUTS` inputs): when they are full
:meth:`Forwarder.forward` waits for the child, the worker stops reading its inbox and the lossless
subscription back-pressures the engine, exactly as when an inline worker falls behind. A crash of
the whole platform is covered as before: the store's watermark is the child's, and the journal's
events after it come back as ``backlog``.

Stretches without a forwarded input are not written one frame per batch: the writer sends the
latest seq as an empty frame at most every :data:`EMPTY_EVERY_S` (and along with any frame).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Optional, Sequence

import msgpack
import trio

from actors.engine.messages import EventBatch
from actors.notifications.kinds import NOTIFYING_EVENTS, can_notify
from actors.store.notifications import Notification
from exness_actors import codec

__all__ = ["Forwarder", "WsForward", "FORWARD_BUFFER_INPUTS", "EMPTY_EVERY_S", "notification_wire",
           "notification_from_wire", "encode_frame", "decode_frame"]

#: the most inputs forwarded and not yet derived by the child (then the forwarder waits)
FORWARD_BUFFER_INPUTS = 8192
#: the longest the child's watermark trails a stretch without forwarded inputs (plus its own
#: :data:`~actors.notifications.worker.WATERMARK_EVERY_S` before it writes it)
EMPTY_EVERY_S = 0.1
#: frames gather this long into one write to the child (fewer wake-ups and system calls here)
WRITE_EVERY_S = 0.01

_packb = msgpack.Packer(use_bin_type=True).pack


def encode_frame(items: Sequence[tuple[int, int, list]], last_seq: int) -> bytes:
    """``[last_seq, [[seq, ts, [wire tuple or None, …]], …]]`` (see the module docstring)."""
    wire, notifying = codec.WIRE_TUPLE, NOTIFYING_EVENTS
    return codec.pack_fast([last_seq, [[seq, ts, [wire[type(event)](event) if type(event) in notifying else None
                                                   for event in events]] for seq, ts, events in items]])


def decode_frame(raw: bytes) -> EventBatch:
    last_seq, items = codec.unpack(raw)
    from_wire = codec.from_wire
    return EventBatch([(seq, ts, [None if event is None else from_wire(event) for event in events])
                       for seq, ts, events in items], last_seq)


class Forwarder:
    """The frames forwarded to the child and not yet derived by it (see the module docstring)."""

    def __init__(self, *, last_seq: int, limit: Optional[int] = None) -> None:
        self.limit = limit if limit is not None else FORWARD_BUFFER_INPUTS
        #: ``(last_seq, items, encoded frame)`` in seq order, until the child derived past them
        self.frames: deque[tuple[int, list, bytes]] = deque()
        #: inputs in :attr:`frames`
        self.buffered = 0
        #: every input up to here was taken from the inbox (forwarded, or making nothing)
        self.forwarded_seq = last_seq
        #: the child derived up to here (every notification up to it is recorded)...
        self.derived_seq = last_seq
        #: ...and its store's watermark is here
        self.recorded_seq = last_seq
        #: the highest seq written to the current child's stdin
        self.sent_seq = last_seq
        self.forwarded_inputs = 0
        #: times :meth:`forward` waited for room (the back-pressure)
        self.waits = 0
        #: the inputs of a call of :meth:`forward` waiting for room (taken from the inbox, not in a frame)
        self._waiting: list[tuple[int, int, list]] = []
        self._wake = trio.Event()
        self._room = trio.Event()

    @property
    def unrecorded(self) -> list[tuple[int, int, list]]:
        """The inputs forwarded and not derived yet (a restarted worker derives them again)."""
        return [item for _, items, _ in self.frames for item in items if item[0] > self.derived_seq] + self._waiting

    async def forward(self, batches: Sequence[EventBatch]) -> None:
        """Queue the inputs of ``batches`` that can make a notification; wait while the frames are full."""
        known = self.forwarded_seq
        items = [item for batch in batches if batch.last_seq > known
                 for item in batch.items if item[0] > known and can_notify(item[2])]
        last_seq = max([known, *(batch.last_seq for batch in batches),
                        *(item[0] for batch in batches for item in batch.items[-1:])])
        if last_seq <= known:
            return
        if items:
            self._waiting = items
            while self.buffered and self.buffered + len(items) > self.limit:
                self.waits += 1
                self._room = trio.Event()
                await self._room.wait()
            self._waiting = []
            self.frames.append((last_seq, items, _packb(encode_frame(items, last_seq))))
            self.buffered += len(items)
            self.forwarded_inputs += len(items)
            self.forwarded_seq = last_seq
            self._wake.set()
        else:
            self.forwarded_seq = last_seq      # the writer sends it within EMPTY_EVERY_S

    def derived(self, derived_seq: int, recorded_seq: Optional[int] = None) -> None:
        """The child derived up to ``derived_seq``: release the frames it covers."""
        if recorded_seq is not None:
            self.recorded_seq = recorded_seq
        if derived_seq <= self.derived_seq:
            return
        self.derived_seq = derived_seq
        frames = self.frames
        while frames and frames[0][0] <= derived_seq:
            self.buffered -= len(frames.popleft()[1])
        self._room.set()

    def child_ready(self, derived_seq: int, recorded_seq: int) -> None:
        """A (new) child starts from ``derived_seq``: what is above it is written to it again."""
        self.derived(derived_seq, recorded_seq)
        self.sent_seq = derived_seq
        self._wake.set()

    async def write_forever(self, stdin: trio.abc.SendStream) -> None:
        """Write the frames (and the seq of empty stretches) to one child's stdin, in seq order."""
        while True:
            with trio.move_on_after(EMPTY_EVERY_S):
                await self._wake.wait()
            await trio.sleep(WRITE_EVERY_S)      # let frames gather into one write
            self._wake = trio.Event()
            out = [frame for seq, _, frame in self.frames if seq > self.sent_seq]
            top = self.frames[-1][0] if out else self.sent_seq
            if self.forwarded_seq > max(top, self.sent_seq):
                out.append(_packb(encode_frame([], self.forwarded_seq)))
                top = self.forwarded_seq
            if out:
                await stdin.send_all(b"".join(out))
                self.sent_seq = max(self.sent_seq, top)

    def statistics(self) -> dict[str, Any]:
        return {"buffered_inputs": self.buffered, "frames": len(self.frames), "limit": self.limit,
                "forwarded_inputs": self.forwarded_inputs, "waits": self.waits, "sent_seq": self.sent_seq,
                "derived_seq": self.derived_seq}


class WsForward:
    """The child's ``ws`` "dispatcher": it keeps what was recorded with a ``ws`` delivery for the
    next report to the worker, whose :class:`~actors.notifications._dispatch.WsDispatcher`
    publishes it (the WebSocket server is in the worker's process)."""

    def __init__(self) -> None:
        self.pending: list[Notification] = []

    def hand_over(self, notifications: Sequence[Notification]) -> None:
        self.pending.extend(notifications)

    def take(self) -> list[Notification]:
        taken, self.pending = self.pending, []
        return taken

    def statistics(self) -> dict[str, Any]:
        return {"pending": len(self.pending)}

    def poke(self) -> None:
        pass


def notification_wire(notification: Notification) -> list:
    n = notification
    return [n.id, n.account_id, n.shard, n.seq, n.index, n.kind, n.created_at, n.title, n.data]


def notification_from_wire(wire: list) -> Notification:
    id_, account_id, shard, seq, index, kind, created_at, title, data = wire
    return Notification(id=id_, account_id=account_id, shard=shard, seq=seq, index=index, kind=kind,
                        created_at=created_at, title=title, data=data)

