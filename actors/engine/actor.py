"""The engine actor: sequencer, journal with group commit, the core, replies and fan-out.

Theory of operation
-------------------
Two tasks joined by a small bounded channel form a pipeline:

1. **apply** — takes whatever the inbox holds (up to ``max_batch`` items), stamps each
   command with the next ``seq`` and a ``ts`` (wall-clock ns, never going backwards), encodes it
   for the journal, applies it to the pure core and collects the replies and events. The batch
   (one bytes object of journal frames) goes to the journal task. While that batch is being made
   durable, the apply task already works on the next one.
2. **journal** — takes every batch that is ready, writes them with one ``write`` and one
   ``fsync`` in a worker thread (group commit; policy ``batch``), and only then releases the
   batches' outputs in order: replies to callers, events to subscribers. **No output leaves
   before its batch is durable.** With policy ``interval`` outputs are released after the write
   and fsync runs at most every ``fsync_interval_ms``; ``off`` never fsyncs (tests, benchmarks).

If anything fails (journal write, a core invariant), the actor raises: the engine is fail-fast,
the supervisor stops the process, and recovery rebuilds from what is durable. A journal that
cannot be written (disk full, an I/O error) first refuses every request it holds — in the batch
being written, queued for the journal, or still in the inbox — with :class:`EngineStopped`, so
no caller waits forever, then raises :class:`~actors.engine.faults.FatalIOError` saying what, where and
how much space is left. The state applied
in memory ahead of durability is never observable: replies, events *and read queries* (which
travel through the inbox like commands and are answered with their batch) wait for the fsync.

The inbox is bounded; :meth:`EngineHandle.request` raises :class:`Overloaded` when it is full
(the gateway answers 503). It has two lanes, each keeping its producers' order: the handle's own
deque (``send_nowait``, ``request``, ``query``, ``send``, ``stop``: the gateway, the WebSocket
server, the bus), which the apply task takes in bulk — a list copy per batch instead of a channel
operation per command on each side — and a trio memory channel whose send clones
(:meth:`EngineHandle.inbox_sender`) are the price feed's and the Redis quotes reader's. A batch
takes the channel's items, then the deque's, and keeps at least half of itself for the deque when
the deque holds that much, so a flood of quotes cannot starve the commands. When both lanes are
empty the apply task waits on the channel, and the first item put into the deque meanwhile sends
it a wake-up there. When idle and a pending order's expiry is due, a ``Clock`` input is injected
so expiries happen without other traffic.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import deque
from typing import Any, Callable, Optional

import trio

from actors.engine.faults import FatalIOError, fatal_io_error
from actors.engine.interface import EngineClient
from actors.engine.messages import (
    Burst, EngineStopped, EventBatch, InboxItem, Overloaded, Query, Reply, ReplySlot, ReplyTarget, Request,
    Stop)
from exness_actors import codec
from exness_actors.commands import Clock
from exness_actors.engine import HASH_BLOCK, Engine
from exness_actors.errors import InvalidCommand
from exness_actors.instruments import CoreConfig, Instrument
from exness_actors.journal import FRAME_HEADER, MAX_PAYLOAD_BYTES, JournalWriter, encode_frame
from exness_actors.replay import engine_checkpoint

__all__ = ["run", "EngineHandle", "Query", "Subscription", "submit_between"]

log = logging.getLogger("exness.engine")


_STOP = Stop()


class _Wake:
    """Put into the channel lane to wake the apply task when the queue gets an item."""


_WAKE = _Wake()


class Subscription:
    """One subscriber's bounded stream of :class:`EventBatch`.

    ``lossless`` subscribers (persister, candles) apply back-pressure: the journal task waits
    for room. Lossy ones (WebSocket clients) are dropped when full: ``lagged`` becomes true and
    their channel is closed, so they re-sync instead of slowing the engine.
    """

    def __init__(self, name: str, *, max_buffer: int, lossless: bool) -> None:
        self.name = name
        self.lossless = lossless
        self.lagged = False
        self._send, self.receive = trio.open_memory_channel[EventBatch](max_buffer)

    def statistics(self) -> dict[str, Any]:
        stats = self._send.statistics()
        return {"name": self.name, "queued": stats.current_buffer_used,
                "capacity": stats.max_buffer_size, "lossless": self.lossless, "lagged": self.lagged}


class Subscribers:
    """The subscriptions of a handle (in-process or remote): each a bounded stream of batches."""

    subscriptions: list[Subscription]

    def subscribe(self, name: str, *, max_buffer: int = 1024, lossless: bool = False) -> Subscription:
        subscription = Subscription(name, max_buffer=max_buffer, lossless=lossless)
        self.subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self.subscriptions:
            self.subscriptions.remove(subscription)
            subscription._send.close()


class _Pending:
    __slots__ = ("parts", "first_seq", "last_seq", "replies", "items")

    def __init__(self, parts: list[bytes], first_seq: int, last_seq: int, replies: list, items: list) -> None:
        self.parts = parts         # the journal frames, each as header and payload
        self.first_seq = first_seq
        self.last_seq = last_seq
        self.replies = replies     # (slot, Reply | value)
        self.items = items         # (seq, ts, events)


async def submit_between(handle: EngineClient, command: Any, *, before: Optional[Callable] = None,
                         after: Optional[Callable] = None) -> tuple[Any, Reply, Any]:
    """Submit ``command`` with optional read queries right before and after it, in one go.

    ``before``/``after`` answer 1-tuples (a :class:`~actors.bus.streams.BoxedView`: a reply slot
    holds only non-None values). The three items enter the inbox back to back — for a remote
    engine, one stream entry — so nothing interleaves: ``before`` sees the state the command
    will act on, ``after`` the state it left, without a second round trip. Overloaded and
    EngineStopped are raised only if the *command* could not be queued; if just the ``after``
    query could not, its value is None and the caller falls back."""
    before_slot = after_slot = None
    if before is not None:
        before_slot = ReplySlot()
        handle.send_nowait(Query(before, before_slot))
    slot = ReplySlot()
    handle.send_nowait(Request(command, slot))
    if after is not None:
        after_slot = ReplySlot()
        try:
            handle.send_nowait(Query(after, after_slot))
        except (Overloaded, EngineStopped):
            after_slot = None
    before_value = (await before_slot.wait())[0] if before_slot is not None else None
    reply = await slot.wait()
    after_value = (await after_slot.wait())[0] if after_slot is not None else None
    return before_value, reply, after_value


class EngineHandle(Subscribers):
    """What other actors hold: submit commands, run queries, subscribe to events."""

    #: the engine runs in this process (see :class:`~actors.engine.interface.EngineClient`)
    remote = False

    def __init__(self, engine: Engine, inbox_size: int) -> None:
        self.engine = engine
        self.inbox_size = inbox_size
        #: the handle's own lane of the inbox (see the module doc), taken whole by the apply task
        self._queue: deque[InboxItem] = deque()
        #: the apply task waits on the channel and nothing is queued: the next put wakes it
        self._apply_waiting = False
        #: producers blocked in :meth:`send` until the apply task takes the queue
        self._room = trio.Event()
        self._send, self._receive = trio.open_memory_channel[Any](inbox_size)
        self.accepting = True
        self.failure: Optional[FatalIOError] = None
        self.rotate_requested = False
        self.checkpoint_requested = False
        #: damaged journal segments the last scrub found (actors/engine/scrubber.py), one line each
        self.journal_damage: list[str] = []
        self.durable_seq = engine.last_seq
        self.subscriptions: list[Subscription] = []
        # statistics
        self.batches = 0
        self.commands = 0
        self.fsyncs = 0
        self.fsync_seconds_total = 0.0
        self.fsync_seconds_max = 0.0
        self.overloads = 0
        self.fsync_latencies: deque[float] = deque(maxlen=1024)

    @property
    def last_seq(self) -> int:
        """The newest seq applied (maybe not durable yet)."""
        return self.engine.last_seq

    @property
    def core_config(self) -> CoreConfig:
        """The core's configuration (fixed for the engine's life, so safe to read anywhere)."""
        return self.engine.config

    @property
    def instruments(self) -> dict[str, Instrument]:
        """The traded instruments by symbol (fixed for the engine's life)."""
        return self.engine.instruments

    def shard_of(self, account_id: Optional[int]) -> int:
        """One engine in this process: every account is on "shard" 0 (a remote handle may have more)."""
        return 0

    def durable_seq_of(self, shard: int) -> int:
        """The seq up to which ``shard``'s journal is durable (what its persister catches up to)."""
        return self.durable_seq

    # -- producers ---------------------------------------------------------------------------

    def send_nowait(self, command: Any) -> None:
        """Fire and forget (quotes, clock). Raises :class:`Overloaded` when the inbox is full."""
        if not self.accepting:
            raise EngineStopped("the engine is not taking commands")
        self._put_nowait(command)

    def _put_nowait(self, item: InboxItem) -> None:
        queue = self._queue
        if len(queue) >= self.inbox_size:
            self.overloads += 1
            raise Overloaded("engine inbox is full")
        queue.append(item)
        if self._apply_waiting:
            self._apply_waiting = False
            try:
                self._send.send_nowait(_WAKE)
            except trio.WouldBlock:
                pass        # the channel is full, so the apply task is runnable already

    async def send(self, command: Any) -> None:
        """Fire and forget with back-pressure (the price feed)."""
        if not self.accepting:
            raise EngineStopped("the engine is not taking commands")
        await self._put(command, stopping=False)

    async def _put(self, item: InboxItem, *, stopping: bool) -> None:
        """Queue ``item``, waiting for room (a checkpoint either way, as a channel's send); a
        command still waiting when the engine stops is refused (``stopping``: the stop itself)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while len(self._queue) >= self.inbox_size:
            await self._room.wait()
            if not (self.accepting or stopping):
                raise EngineStopped("the engine is not taking commands")
        self._put_nowait(item)
        await trio.lowlevel.cancel_shielded_checkpoint()

    def _took(self) -> None:
        """The apply task took the queue: wake the producers waiting for room."""
        self._room.set()
        self._room = trio.Event()

    def inbox_sender(self) -> trio.MemorySendChannel:
        """A clone of the inbox's send side for a producer that owns back-pressure (the feed)."""
        return self._send.clone()

    async def request(self, command: Any) -> Reply:
        """Submit a command and wait until its outcome is durable."""
        slot = ReplySlot()
        self.send_nowait(Request(command, slot))
        return await slot.wait()

    async def query(self, fn: Callable[[Engine], Any]) -> Any:
        """Run ``fn(engine)`` in order with the commands; answered once preceding work is durable."""
        if not self.accepting:
            raise EngineStopped("the engine is not taking commands")
        slot = ReplySlot()
        self._put_nowait(Query(fn, slot))
        return await slot.wait()

    def request_checkpoint(self) -> None:
        """Journal a checkpoint at the end of the next batch (the snapshotter asks after a snapshot)."""
        self.checkpoint_requested = True

    async def stop(self) -> None:
        """Stop intake; the engine drains what it has, makes it durable and returns."""
        if self.accepting:
            self.accepting = False
            await self._put(_STOP, stopping=True)

    # -- observability -------------------------------------------------------------------------

    def _quote_times(self) -> dict[str, int]:
        """When the engine last took a quote, per symbol that has one (ns)."""
        quotes = {symbol: self.engine.quote(symbol) for symbol in self.engine.instruments}
        return {symbol: quote[2] for symbol, quote in quotes.items() if quote is not None}

    def statistics(self) -> dict[str, Any]:
        latencies = sorted(self.fsync_latencies)
        return {
            "inbox_depth": len(self._queue) + self._send.statistics().current_buffer_used,
            "inbox_capacity": self.inbox_size,
            "last_seq": self.engine.last_seq,
            "durable_seq": self.durable_seq,
            "batches": self.batches,
            "commands": self.commands,
            "fsyncs": self.fsyncs,
            "fsync_seconds_total": self.fsync_seconds_total,
            "fsync_seconds_max": self.fsync_seconds_max,
            "fsync_p99_seconds": latencies[int(len(latencies) * 0.99)] if latencies else 0.0,
            "overloads": self.overloads,
            "accounts": len(self.engine.accounts),
            "open_positions": len(self.engine.positions),
            "pending_orders": len(self.engine.orders),
            "quotes_rejected": self.engine.quotes_rejected,
            "journal_damaged_segments": len(self.journal_damage),
            "quote_ts": self._quote_times(),
            "subscriptions": [s.statistics() for s in self.subscriptions],
        }


async def run(*, handle: EngineHandle, journal: JournalWriter, cfg: Any = None,
              fsync: str = "batch", fsync_interval_ms: int = 5, max_batch: int = 4096,
              clock: Callable[[], int] = time.time_ns, journal_io: str = "thread",
              task_status: trio.TaskStatus[EngineHandle] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the engine until :meth:`EngineHandle.stop`; fail fast on any error.

    ``journal_io``: ``"thread"`` (the default) writes and fsyncs each group commit in a worker
    thread, so the event loop keeps running meanwhile; ``"inline"`` does it on the event loop.
    Inline is for deterministic simulation (``exness-actors simulate``): under trio's mock clock
    a thread finishes at a *real* time, so which commands share the next batch would depend on
    the machine; inline, the write is one step of the journal task and nothing else can vary.
    """
    if fsync not in ("batch", "interval", "off"):
        raise ValueError(f"journal.fsync must be batch, interval or off, not {fsync!r}")
    if journal_io not in ("thread", "inline"):
        raise ValueError(f"journal_io must be thread or inline, not {journal_io!r}")
    to_journal, from_apply = trio.open_memory_channel[_Pending](2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_journal_task, handle, journal, from_apply, fsync, fsync_interval_ms,
                           journal_io == "inline", nursery.cancel_scope)
        task_status.started(handle)
        await _apply_task(handle, to_journal, max_batch, clock)
    for subscription in handle.subscriptions:
        subscription._send.close()
    if handle.failure is not None:
        _refuse_inbox(handle)
        log.error("event=engine_failed durable_seq=%d error=%r", handle.durable_seq, str(handle.failure))
        raise handle.failure
    log.info("event=engine_stopped last_seq=%d", handle.engine.last_seq)


async def _apply_task(handle: EngineHandle, to_journal: trio.MemorySendChannel, max_batch: int,
                      clock: Callable[[], int]) -> None:
    async with to_journal:
        stopping = False
        while not stopping:
            items = await _next_items(handle, max_batch, clock)
            batch = _Batch(handle, clock)
            batch.take(items)
            stopping = batch.stopping
            pending = batch.pending(stopping)
            try:
                await to_journal.send(pending)
            except trio.Cancelled:
                _refuse(pending.replies, handle)   # stopped on a journal failure: nobody waits forever
                raise


async def _next_items(handle: EngineHandle, max_batch: int, clock: Callable[[], int]) -> list[Any]:
    """Wait for work (or inject a ``Clock`` when an order expiry falls due first), then take
    what the inbox holds (at most ``max_batch`` items; a burst counts as one): the channel's
    items one by one, then the handle's queue in bulk (see the module doc for the shares)."""
    receive = handle._receive
    queue = handle._queue
    items: list[Any] = []
    if not queue:
        timeout = _until_next_expiry(handle.engine, clock)
        handle._apply_waiting = True
        try:
            if timeout is None:
                items.append(await receive.receive())
            else:
                with trio.move_on_after(timeout):
                    items.append(await receive.receive())
        finally:
            handle._apply_waiting = False
        if items and items[0] is _WAKE:
            items.clear()
        elif not items and not queue:
            items.append(Clock())
    receive_nowait = receive.receive_nowait
    append = items.append
    channel_room = max_batch - min(len(queue), max_batch // 2)    # half a batch kept for the queue
    try:
        while len(items) < channel_room:
            item = receive_nowait()
            if item is not _WAKE:
                append(item)
    except trio.WouldBlock:
        pass
    room = max_batch - len(items)
    if queue and room > 0:
        if len(queue) <= room:
            items.extend(queue)
            queue.clear()
        else:
            popleft = queue.popleft
            for _ in range(room):
                append(popleft())
        handle._took()
    return items


class _Batch:
    """One batch in the making: :meth:`take` stamps, encodes, frames and applies each command
    in one loop; other inbox items are dispatched by type (:data:`_DISPATCH`).

    This loop is the engine's per-command cost outside the core, so it is written for speed:
    locals instead of attribute lookups, each journal frame kept as its two parts (header,
    payload) until the journal task joins every ready batch with one ``b"".join``."""

    __slots__ = ("handle", "engine", "clock", "parts", "replies", "published", "first_seq", "stopping")

    def __init__(self, handle: EngineHandle, clock: Callable[[], int]) -> None:
        self.handle = handle
        self.engine = handle.engine
        self.clock = clock
        self.parts: list[bytes] = []     # frame header, payload, frame header, payload, …
        self.replies: list[tuple[ReplyTarget, Any]] = []
        self.published: list[tuple[int, int, list]] = []
        self.first_seq = self.engine.last_seq + 1
        self.stopping = False

    def take(self, items: list[Any]) -> None:
        """Apply the inbox items in order: a command (alone or in a :class:`Request`) gets the
        next seq and a ts (wall clock, never going backwards), is encoded and framed for the
        journal, then applied; a burst (split mode: a stream entry's cursor and commands) is
        applied whole within this batch, so it lands in one journal write."""
        engine = self.engine
        clock = self.clock
        parts = self.parts
        replies = self.replies
        published = self.published
        encode = codec.encode
        apply = engine.apply
        header = FRAME_HEADER.pack
        crc32 = zlib.crc32
        for item in items:
            kind = type(item)
            if kind is Request:
                command, slot = item.command, item.reply
            elif kind in _DISPATCH:
                _DISPATCH[kind](self, item)
                continue
            else:
                command, slot = item, None
            seq = engine.last_seq + 1
            now = clock()
            last = engine.now
            ts = now if now > last else last
            command.seq = seq
            command.ts = ts
            try:
                payload = encode(command)
            except (TypeError, ValueError, OverflowError) as exc:
                self.refuse(slot, InvalidCommand(f"cannot encode {type(command).__name__}: {exc}"))
                continue
            if len(payload) > MAX_PAYLOAD_BYTES:
                self.refuse(slot, InvalidCommand(
                    f"{type(command).__name__} encodes to {len(payload)} bytes; a journal record holds "
                    f"at most {MAX_PAYLOAD_BYTES}"))
                continue
            try:
                events = apply(command)
            except InvalidCommand as exc:
                # apply() refuses before it mutates (unknown input type, bad seq/ts).
                # Anything else it raises is a bug and stops the engine (fail-fast).
                self.refuse(slot, exc)
                continue
            parts.append(header(len(payload), crc32(payload)))
            parts.append(payload)
            if slot is not None:
                replies.append((slot, Reply(seq, ts, events[engine.reply_start:])))
            if events:
                published.append((seq, ts, events))

    def stop(self, item: Stop) -> None:
        self.stopping = True

    def query(self, item: Query) -> None:
        try:
            self.replies.append((item.reply, item.fn(self.engine)))
        except Exception as exc:  # a bad query is the caller's problem, not ours
            self.replies.append((item.reply, exc))

    def burst(self, item: Burst) -> None:
        self.take(item.items)

    def refuse(self, slot: Optional[ReplyTarget], error: InvalidCommand) -> None:
        """Nothing was journaled and the seq is reused."""
        if slot is not None:
            self.replies.append((slot, error))
        log.warning("event=invalid_command error=%r", str(error))

    def pending(self, stopping: bool) -> _Pending:
        """The batch for the journal task (with a checkpoint frame when one is due)."""
        last_seq = self.engine.last_seq
        checkpoint = _checkpoint(self.handle, self.first_seq, stopping)
        if checkpoint is not None:
            self.parts.append(encode_frame(checkpoint))
        self.handle.commands += last_seq - self.first_seq + 1
        return _Pending(self.parts, self.first_seq, last_seq, self.replies, self.published)


#: inbox item type -> what the batch does with it; a Request or anything else is a core command
_DISPATCH: dict[type, Callable[[_Batch, Any], None]] = {
    Stop: _Batch.stop, Query: _Batch.query, Burst: _Batch.burst,
}


def _checkpoint(handle: EngineHandle, first_seq: int, stopping: bool) -> Optional[bytes]:
    """The checkpoint ending this batch, if one is due: at a HASH_BLOCK boundary, when asked
    (after a snapshot), and at a clean stop — that one with the state hash, whose cost (a pass
    over the whole state) a stopping engine can afford."""
    engine = handle.engine
    last_seq = engine.last_seq
    if stopping and last_seq:
        return engine_checkpoint(engine, engine.state_hash())
    crossed = last_seq >= first_seq and (last_seq // HASH_BLOCK) != ((first_seq - 1) // HASH_BLOCK)
    if not (crossed or (handle.checkpoint_requested and last_seq >= first_seq)):
        return None
    handle.checkpoint_requested = False
    return engine_checkpoint(engine)


def _until_next_expiry(engine: Engine, clock: Callable[[], int]) -> Optional[float]:
    """Seconds until the next pending-order expiry, alert expiry or dead-man deadline (issue 13)."""
    if not (engine.expiries or engine.alert_expiries or engine.dead_man_deadlines):
        return None
    return max(engine.next_expiry - clock(), 0) / 1e9


async def _journal_task(handle: EngineHandle, journal: JournalWriter,
                        from_apply: trio.MemoryReceiveChannel, fsync: str,
                        fsync_interval_ms: int, inline: bool, engine_scope: trio.CancelScope) -> None:
    last_fsync = time.monotonic()
    async with from_apply:
        async for pending in from_apply:
            ready = [pending]
            while True:
                try:
                    ready.append(from_apply.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            data = b"".join([part for p in ready for part in p.parts])
            first_seq = next((p.first_seq for p in ready if p.parts), ready[0].first_seq)
            do_fsync = fsync == "batch" or (
                fsync == "interval" and time.monotonic() - last_fsync >= fsync_interval_ms / 1000)
            if handle.rotate_requested:
                handle.rotate_requested = False
                journal.rotate_before_next_append()
            if data or do_fsync:
                started = time.monotonic()
                try:
                    if inline:
                        _write(journal, data, first_seq, do_fsync)
                        await trio.lowlevel.checkpoint()   # still a scheduling point, as the thread was
                    else:
                        await trio.to_thread.run_sync(_write, journal, data, first_seq, do_fsync)
                except OSError as error:
                    _stop_on_journal_failure(handle, journal, error, ready, from_apply, engine_scope)
                    return
                elapsed = time.monotonic() - started
                if do_fsync:
                    last_fsync = started + elapsed
                    handle.fsyncs += 1
                    handle.fsync_seconds_total += elapsed
                    handle.fsync_latencies.append(elapsed)
                    if elapsed > handle.fsync_seconds_max:
                        handle.fsync_seconds_max = elapsed
            handle.batches += len(ready)
            for batch in ready:
                handle.durable_seq = max(handle.durable_seq, batch.last_seq)
                for slot, value in batch.replies:
                    if isinstance(value, BaseException):
                        slot.fail(value)
                    else:
                        slot.set(value)
                await _publish(handle, EventBatch(batch.items, batch.last_seq, batch.first_seq))


def _stop_on_journal_failure(handle: EngineHandle, journal: JournalWriter, error: OSError,
                             ready: list[_Pending], from_apply: trio.MemoryReceiveChannel,
                             engine_scope: trio.CancelScope) -> None:
    """Stop taking commands, refuse every request this task holds and stop the apply task (which
    refuses the batch it holds); :func:`run` then refuses what is left in the inbox and raises."""
    handle.accepting = False
    handle.failure = fatal_io_error(
        error, what="writing the journal", path=journal.segment_path or journal.directory,
        consequence=f"the engine stopped; every acknowledged command is durable (up to seq "
                    f"{handle.durable_seq}); free space or fix the device, then restart")
    engine_scope.cancel()
    for batch in ready:
        _refuse(batch.replies, handle)
    while True:
        try:
            _refuse(from_apply.receive_nowait().replies, handle)
        except (trio.WouldBlock, trio.EndOfChannel):
            return


def _refuse(replies: list, handle: EngineHandle) -> None:
    for slot, _value in replies:
        slot.fail(_stopped(handle))


def _refuse_inbox(handle: EngineHandle) -> None:
    left: list[Any] = list(handle._queue)
    handle._queue.clear()
    handle._took()      # producers blocked for room see that the engine stopped
    while True:
        try:
            left.append(handle._receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    for item in left:
        for part in item.items if type(item) is Burst else (item,):
            if type(part) is Request or type(part) is Query:
                part.reply.fail(_stopped(handle))


def _stopped(handle: EngineHandle) -> EngineStopped:
    reason = "the journal cannot be written" if handle.failure is not None else "it is stopping"
    return EngineStopped(f"the engine is not taking commands: {reason}")


def _write(journal: JournalWriter, data: bytes, first_seq: int, do_fsync: bool) -> None:
    if data:
        journal.append(data, first_seq=first_seq)
    if do_fsync:
        journal.fsync()


async def _publish(handle: EngineHandle, batch: EventBatch) -> None:
    dropped = []
    for subscription in handle.subscriptions:
        if subscription.lossless:
            # waits only when the subscriber is a full buffer behind; otherwise no checkpoint, so
            # each lossless subscriber added does not delay the ones after it (the WS server)
            try:
                subscription._send.send_nowait(batch)
            except trio.WouldBlock:
                await subscription._send.send(batch)
            continue
        try:
            subscription._send.send_nowait(batch)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            subscription.lagged = True
            dropped.append(subscription)
    for subscription in dropped:
        handle.unsubscribe(subscription)
        log.info("event=subscriber_dropped name=%s reason=lagged", subscription.name)
