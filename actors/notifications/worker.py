"""The notifications worker actor: engine events → notifications → WebSocket, e-mail, webhooks.

Theory of operation
-------------------
Two halves joined only by the store, so the engine never waits for a mail server:

1. **Deriving** (this module). The worker reads the engine's *durable* event batches — a
   lossless subscription in-process (like the persister), the shard's events stream in split
   mode — takes whatever is waiting (up to ``[notifications] max_batches``), derives the
   notifications (:func:`~actors.notifications.kinds.derive`: a pure function, stable ids), keeps
   the kinds each account wants (its preferences, re-read at most every
   :data:`PREFERENCES_TTL_S`) and writes them with
   their deliveries — one outbox row per channel — and the shard's watermark in **one
   transaction** (:meth:`NotificationStore.record_notifications`). A batch that makes no
   notification only moves the watermark in memory; it is written at most every
   :data:`WATERMARK_EVERY_S` (re-deriving a stretch of quotes after a crash makes nothing).
   This is all the engine's fan-out ever waits for: one small transaction per group of
   batches, as for the persister.
2. **Delivering** (:mod:`actors.notifications._dispatch`): one dispatcher per channel reads the
   outbox at its own pace, with per-target limits, retries with exponential backoff and a
   dead-letter list. Where an engine shares this interpreter (embedded mode, ``[notifications]
   delivery = "auto"``) the e-mail and webhook dispatchers run in a child process the worker
   starts, restarts and stops (:mod:`actors.notifications._delivery`): their CPU is not the
   engine's. The ``ws`` dispatcher always runs here (it feeds this process's WebSocket server).

In that process mode the child derives and records as well: the worker keeps only a forwarder
(:mod:`actors.notifications._forward`) that sends it the inputs that can make a notification and
holds them until the child reports them derived; the child reports the ``ws`` notifications back.

Nothing is lost in a crash: at start the worker reads its watermark; the journal's events after
it come back as ``backlog`` (embedded: the supervisor's recovery replays them, as for the
persister; split mode: the events stream is read from its beginning and what is at or below the
watermark skipped) and are derived again — same ids, and ``ON CONFLICT DO NOTHING`` keeps rows
written before the crash. Deliveries not settled before the crash are still pending and go out
again: at-least-once; receivers de-duplicate by id.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable, Iterable, Mapping, Optional, Sequence

import attrs
import trio

from actors.engine.messages import EventBatch
from actors.notifications._channels import USER_AGENT
from actors.notifications._delivery import DeliveryProcess, RemoteDispatcher, delivery_mode, store_data_dir
from actors.notifications._http import WebhookClient
from actors.notifications._dispatch import (
    Dispatcher, EmailDispatcher, Settler, WebhookDispatcher, WsDispatcher)
from actors.notifications._forward import Forwarder, WsForward
from actors.notifications._gaps import GapDetector
from actors.notifications._outbox import OutboxGauge
from actors.notifications._retention import Retention
from actors.notifications.kinds import derive
from actors.notifications.preferences import default_preferences
from actors.settings import NotificationSettings
from actors.store.notifications import Notification, NotificationStore, Preferences
from exness_actors.instruments import Instrument

__all__ = ["run", "NotificationWorker", "WorkerStatistics", "WATERMARK_EVERY_S", "Sink", "http_client",
           "keep_watermark", "STOP_DRAIN_S"]

log = logging.getLogger("exness.notifications")

#: the longest the store's watermark trails what was derived (when nothing was recorded)
WATERMARK_EVERY_S = 1.0
#: preferences read for a batch are reused this long (a change applies to what is derived after it)
PREFERENCES_TTL_S = 1.0
_MAX_WRITE_ATTEMPTS = 5
#: process mode, the inbox closed: the longest the worker waits for the child to derive what it forwarded
STOP_DRAIN_S = 10.0

#: publishes ``[(account_id, notification json), …]`` to the stream servers
Sink = Callable[[list[tuple[int, dict]]], Awaitable[None]]


@attrs.define(slots=True, kw_only=True)
class WorkerStatistics:
    last_seq: int             # every input up to here is derived
    recorded_seq: int         # ...and up to here the store says so
    received_seq: int
    lag: int                  # received_seq - last_seq
    notifications: int        # recorded since the start
    batches: int
    inbox_depth: int
    store_errors: int
    settled: int
    channels: dict[str, dict[str, Any]]
    gaps: int = 0             # split mode: stream gaps found (actors/notifications/_gaps.py)...
    gap_inputs: int = 0       # ...and the inputs they skipped
    last_gap: Optional[tuple[int, int]] = None
    purged: int = 0           # notifications the retention purge removed (_retention.py)
    outbox: dict[str, dict[str, int]] = attrs.Factory(dict)   # channel -> pending/dead rows (_outbox.py)
    shard: int = 0
    #: the delivery child process (``pid``, ``starts``, ``running``); None when delivery is inline
    delivery_process: Optional[dict[str, Any]] = None
    #: process mode: the forwarder's frames not yet derived by the child (``buffered_inputs``,
    #: ``frames``, ``limit``, ``forwarded_inputs``, ``waits``); None inline
    forwarder: Optional[dict[str, Any]] = None


def http_client(settings: NotificationSettings) -> WebhookClient:
    """The webhook client: one deadline per request, keep-alive per origin, no redirects."""
    return WebhookClient(timeout_s=settings.webhook_timeout_s, idle_per_origin=settings.webhook_concurrency,
                         user_agent=USER_AGENT)


class NotificationWorker:
    """The deriving half, and the actor's handle (statistics, the dispatchers)."""

    def __init__(self, *, store: NotificationStore, settings: NotificationSettings,
                 instruments: Mapping[str, Instrument], shard: int = 0, last_seq: int = 0,
                 clock: Callable[[], int] = time.time_ns, inbox: Optional[trio.MemoryReceiveChannel] = None,
                 ws: bool = True) -> None:
        self.store = store
        self.settings = settings
        self.instruments = instruments
        self.shard = shard
        self.clock = clock
        self.last_seq = last_seq
        self.recorded_seq = last_seq
        self._received_seq = last_seq
        self._inbox = inbox
        #: channels this worker creates deliveries for
        self.channels = tuple(channel for channel, on in (
            ("ws", ws), ("email", settings.email_available), ("webhook", True)) if on)
        self.dispatchers: dict[str, Dispatcher | RemoteDispatcher | WsForward] = {}
        #: the child process delivering e-mail and webhooks (None: they are delivered here)
        self.delivery: Optional[DeliveryProcess] = None
        #: process mode: the child derives and records; this only forwards (None: derived here)
        self.forwarder: Optional[Forwarder] = None
        self.settler = Settler(store, clock)
        #: split mode: finds inputs the events stream no longer had (None: not checked)
        self.gap_detector: Optional[GapDetector] = None
        self.retention = Retention(store=store, shard=shard, retention_days=settings.retention_days,
                                   batch=settings.retention_batch, clock=clock)
        self.outbox = OutboxGauge(store=store, shard=shard)
        self._notifications = 0
        self._batches = 0
        self._errors = 0
        self._watermark_written_at = 0.0
        #: items taken from the inbox whose notifications are not recorded yet
        self.unrecorded: list[tuple[int, int, list]] = []
        #: account -> (preferences, when read): one store query per batch at most, none while fresh
        self._preferences_cache: dict[int, tuple[Preferences, float]] = {}

    @property
    def notifications(self) -> int:
        """Notifications recorded since the start (by the child too, in process mode)."""
        return self._notifications + (self.delivery.notifications if self.delivery is not None else 0)

    @property
    def record_errors(self) -> int:
        """Failed writes of derived notifications (by the child too, in process mode)."""
        return self._errors + (self.delivery.record_errors if self.delivery is not None else 0)

    def statistics(self) -> WorkerStatistics:
        gaps = self.gap_detector
        last_seq, recorded_seq, received_seq = self.last_seq, self.recorded_seq, self._received_seq
        forwarder = self.forwarder
        if forwarder is not None:
            last_seq = max(last_seq, forwarder.derived_seq)
            recorded_seq = max(recorded_seq, forwarder.recorded_seq)
            received_seq = max(received_seq, forwarder.forwarded_seq)
        return WorkerStatistics(
            last_seq=last_seq, recorded_seq=recorded_seq, received_seq=received_seq,
            lag=max(0, received_seq - last_seq), notifications=self.notifications,
            batches=self._batches, inbox_depth=self._inbox.statistics().current_buffer_used if self._inbox else 0,
            store_errors=self.record_errors,
            settled=self.settler.settled + (self.delivery.settled if self.delivery is not None else 0),
            channels={name: dispatcher.statistics() for name, dispatcher in self.dispatchers.items()},
            gaps=gaps.gaps if gaps else 0, gap_inputs=gaps.gap_inputs if gaps else 0,
            last_gap=gaps.last_gap if gaps else None, purged=self.retention.purged,
            outbox=self.outbox.counts, shard=self.shard,
            delivery_process=self.delivery.statistics() if self.delivery is not None else None,
            forwarder=forwarder.statistics() if forwarder is not None else None)

    async def derive_batches(self, batches: Sequence[EventBatch]) -> int:
        """Derive and record ``batches`` (in seq order); return the notifications recorded."""
        self._batches += len(batches)
        if self.gap_detector is not None:
            self.gap_detector.check(batches)
        known = self.last_seq      # batches come in seq order: only one after a restart straddles it
        items = [item for batch in batches if batch.last_seq > known
                 for item in (batch.items if batch.items and batch.items[0][0] > known
                              else [item for item in batch.items if item[0] > known])]
        # the watermark covers every input of the batches, events or not (exact for the gap check)
        last_seq = max([known, *(batch.last_seq for batch in batches), *(items[-1][:1] if items else ())])
        if last_seq <= known:
            return 0
        self.unrecorded = items
        self._received_seq = max(self._received_seq, last_seq)
        notifications = derive(items, self.instruments, shard=self.shard)
        if not notifications:
            self.last_seq = last_seq
            self.unrecorded = []
            if trio.current_time() - self._watermark_written_at >= WATERMARK_EVERY_S:
                await self._record(last_seq, [])
            return 0
        recorded = await self._record(last_seq, notifications)
        self.unrecorded = []
        return recorded

    async def write_watermark(self) -> None:
        """Write the watermark when it trails what was derived (after a stretch without notifications)."""
        if self.last_seq > self.recorded_seq:
            await self._record(self.last_seq, [])

    async def _record(self, last_seq: int, notifications: list[Notification]) -> int:
        preferences = await self._preferences({n.account_id for n in notifications})
        kept = [n for n in notifications if preferences[n.account_id].wants(n.kind)]
        deliveries = [(n.id, channel, n.account_id) for n in kept
                      for channel in preferences[n.account_id].channels if channel in self.channels]
        failures = 0
        while True:
            try:
                await self.store.record_notifications(self.shard, last_seq, kept, deliveries, now=self.clock())
                break
            except Exception as error:
                failures += 1
                self._errors += 1
                if failures >= _MAX_WRITE_ATTEMPTS:
                    log.error("event=record_failed last_seq=%d attempts=%d error=%r", last_seq, failures, error)
                    raise
                await trio.sleep(min(0.1 * 2 ** failures, 5.0))
        self.last_seq = self.recorded_seq = last_seq
        self._watermark_written_at = trio.current_time()
        self._notifications += len(kept)
        for channel in {channel for _, channel, _ in deliveries}:
            dispatcher = self.dispatchers.get(channel)
            if isinstance(dispatcher, (WsDispatcher, WsForward)):    # published from memory, not read back
                to_ws = {nid for nid, delivery_channel, _ in deliveries if delivery_channel == "ws"}
                dispatcher.hand_over([n for n in kept if n.id in to_ws])
            elif dispatcher is not None:
                dispatcher.poke()
        return len(kept)

    async def _preferences(self, accounts: set[int]) -> dict[int, Preferences]:
        """The accounts' preferences, read at most every :data:`PREFERENCES_TTL_S` per account."""
        now = trio.current_time()
        cache = self._preferences_cache
        stale = sorted(account for account in accounts
                       if account not in cache or now - cache[account][1] >= PREFERENCES_TTL_S)
        if stale:
            stored = await self.store.preferences_many(stale)
            if len(cache) > 100_000:
                cache.clear()
            for account in stale:
                cache[account] = (stored.get(account) or default_preferences(account), now)
        return {account: cache[account][0] for account in accounts}


def _with_waiting(first: EventBatch, inbox: trio.MemoryReceiveChannel, max_batches: int) -> list[EventBatch]:
    """``first`` and the batches already waiting in ``inbox`` after it, up to ``max_batches``."""
    batches = [first]
    while len(batches) < max_batches:
        try:
            batches.append(inbox.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return batches


async def _derive_forever(worker: NotificationWorker, inbox: trio.MemoryReceiveChannel) -> None:
    async for batch in inbox:
        await worker.derive_batches(_with_waiting(batch, inbox, worker.settings.max_batches))


async def _forward_forever(worker: NotificationWorker, forwarder: Forwarder,
                           inbox: trio.MemoryReceiveChannel) -> None:
    async for batch in inbox:
        batches = _with_waiting(batch, inbox, worker.settings.max_batches)
        worker._batches += len(batches)
        await forwarder.forward(batches)


async def keep_watermark(worker: NotificationWorker) -> None:
    while True:
        await trio.sleep(WATERMARK_EVERY_S)
        try:
            await worker.write_watermark()
        except Exception as error:   # the next derived batch (or tick) tries again
            log.warning("event=watermark_write_failed error=%r", error)


async def _start_dispatchers(nursery: trio.Nursery, worker: NotificationWorker, sink: Optional[Sink],
                             client: WebhookClient, engine_busy: Optional[Callable[[], bool]], delivery: str) -> None:
    common = dict(store=worker.store, settler=worker.settler, settings=worker.settings, shard=worker.shard,
                  clock=worker.clock)
    dispatchers: dict[str, Dispatcher] = {}
    if delivery == "process":
        data_dir = store_data_dir(worker.store)
        assert data_dir is not None      # delivery_mode chose "process": an SQLite store

        def to_ws(notifications: list[Notification]) -> None:
            dispatcher = worker.dispatchers.get("ws")
            if isinstance(dispatcher, WsDispatcher):
                dispatcher.hand_over(notifications)
        worker.forwarder = Forwarder(last_seq=worker.last_seq)
        worker.delivery = DeliveryProcess(data_dir=data_dir, settings=worker.settings, shard=worker.shard,
                                          forwarder=worker.forwarder, instruments=worker.instruments,
                                          ws=sink is not None, on_ws=to_ws)
        await nursery.start(worker.delivery.run)
        worker.dispatchers.update(worker.delivery.dispatchers)
    else:
        dispatchers["webhook"] = WebhookDispatcher(client=client, engine_busy=engine_busy, **common)
        if worker.settings.email_available:
            dispatchers["email"] = EmailDispatcher(engine_busy=engine_busy, **common)
    if sink is not None:
        dispatchers["ws"] = WsDispatcher(sink=sink, **common)
    nursery.start_soon(worker.settler.run)
    for name, dispatcher in dispatchers.items():
        await nursery.start(dispatcher.run)
        worker.dispatchers[name] = dispatcher


async def run(*, inbox: trio.MemoryReceiveChannel[EventBatch], store: Any, settings: NotificationSettings,
              instruments: Mapping[str, Instrument], shard: int = 0, sink: Optional[Sink] = None,
              backlog: Iterable[tuple[int, int, list]] = (), clock: Callable[[], int] = time.time_ns,
              client: Optional[WebhookClient] = None, engine_busy: Optional[Callable[[], bool]] = None,
              detect_gaps: bool = False,
              delivery: Optional[str] = None,
              task_status: trio.TaskStatus[NotificationWorker] = trio.TASK_STATUS_IGNORED) -> None:
    """Derive and deliver the notifications of engine shard ``shard`` until the inbox closes or
    the actor is cancelled (see the module docstring).

    ``inbox``: the durable event batches (lossless). ``store``: a
    :class:`~actors.store.notifications.NotificationStore`. ``sink``: publishes to the WebSocket
    servers (None: no ``ws`` channel). ``backlog``: the journal's ``(seq, ts, events)`` after the
    watermark, derived before the live batches; when it is a list it is also the carry-over of a
    restart: emptied once derived, and refilled with what the worker had taken from the inbox but
    not recorded when it fails (the supervisor hands the same list to the restarted worker).
    ``client``: the webhook HTTP client (default: :func:`http_client`). ``engine_busy``: True while
    an engine in this process has inputs queued; e-mail and webhook deliveries delivered inline
    then start at most once per ``poll_interval_s`` (they wait in the outbox; the engine gets the
    interpreter). ``delivery``: ``process`` or ``inline`` (default: ``settings.delivery``, where
    ``auto`` is a child process when ``engine_busy`` is given, i.e. an engine shares this process;
    see :func:`~actors.notifications._delivery.delivery_mode`). ``detect_gaps`` (split mode):
    report inputs the events stream no longer had (:mod:`actors.notifications._gaps`)."""
    last_seq = await store.notifier_seq(shard)
    worker = NotificationWorker(store=store, settings=settings, instruments=instruments, shard=shard,
                                last_seq=last_seq, clock=clock, inbox=inbox, ws=sink is not None)
    if detect_gaps:
        worker.gap_detector = GapDetector(shard=shard, covered=last_seq)
    pending = sorted({item[0]: item for item in backlog if item[0] > last_seq}.values(), key=lambda item: item[0])
    if pending:
        recorded = await worker.derive_batches([EventBatch(pending, pending[-1][0])])
        await worker.write_watermark()
        log.info("event=backlog_derived from_seq=%d last_seq=%d notifications=%d", last_seq, worker.last_seq,
                 recorded)
    if isinstance(backlog, list):
        backlog.clear()
    owned_client = client is None
    client = client if client is not None else http_client(settings)
    delivery = delivery_mode(delivery or settings.delivery, store, engine_in_process=engine_busy is not None)
    log.info("event=started shard=%d last_seq=%d channels=%s delivery=%s", shard, worker.last_seq,
             ",".join(worker.channels), delivery)
    try:
        async with trio.open_nursery() as nursery:
            await _start_dispatchers(nursery, worker, sink, client, engine_busy, delivery)
            nursery.start_soon(worker.retention.run)
            nursery.start_soon(worker.outbox.run)
            forwarder = worker.forwarder
            if forwarder is None:
                nursery.start_soon(keep_watermark, worker)
                task_status.started(worker)
                await _derive_forever(worker, inbox)
                await worker.write_watermark()
            else:                          # the child derives, records and writes the watermark
                task_status.started(worker)
                await _forward_forever(worker, forwarder, inbox)
                with trio.move_on_after(STOP_DRAIN_S):
                    while forwarder.derived_seq < forwarder.forwarded_seq:
                        await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    except BaseException:
        if isinstance(backlog, list):     # a restart derives these again (same ids)
            backlog.extend(worker.forwarder.unrecorded if worker.forwarder is not None else worker.unrecorded)
        raise
    finally:
        if owned_client:
            with trio.CancelScope(shield=True):
                await client.aclose()
        stats = worker.statistics()
        log.info("event=stopped last_seq=%d notifications=%d settled=%d", stats.last_seq, stats.notifications,
                 stats.settled)
