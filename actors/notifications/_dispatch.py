"""The delivery side of the worker: one dispatcher per channel, reading the outbox.

Theory of operation
-------------------
A dispatcher owns one channel of one engine shard. It asks the store for the deliveries due
now (:meth:`NotificationStore.due_deliveries`), starts what its limits allow, and records every
outcome through ONE settle task that writes them in batches (:meth:`settle_deliveries`: one
transaction per batch, never one per notification). Until its outcome is written, a delivery is
*in flight* and is not fetched again.

Limits, so that nothing slow is in anybody else's way:

* **webhooks** — at most ``webhook_concurrency`` POSTs at once and ``webhook_per_target`` per
  URL: a receiver that hangs holds its own two slots until ``webhook_timeout_s``, the other
  accounts' deliveries go on. A failed attempt is retried after ``retry_base_s · 2^(n-1)``
  (at most ``retry_max_s``); the ``max_attempts``-th failure puts it on the dead-letter list.
* **e-mail** — at most ``smtp_concurrency`` SMTP sessions (worker threads), each carrying up to
  :data:`EMAILS_PER_SESSION` messages; same retries and dead letters.
* **yielding** — where the engine runs in the same process (``engine_busy``: its inbox holds
  inputs, i.e. it is saturated), e-mail and webhook dispatchers start one round of deliveries per
  ``poll_interval_s`` only: the deliveries wait in the outbox and the engine keeps the interpreter.
* **ws** — a publication to the stream servers (``sink``): in-process a bounded channel to the
  WebSocket server, in split mode a Redis stream. It waits when that is full; only this
  dispatcher waits.

A dispatcher wakes when the deriver recorded new deliveries (:meth:`Dispatcher.poke`), when a
delivery in flight finished, when the earliest retry is due, or after ``poll_interval_s``
(deliveries recorded by another process). Cancelled (a crash, a stop) it loses nothing: what was
not settled is still pending in the store and goes out again after the restart (at-least-once).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Awaitable, Callable, Optional, Sequence

import trio

from actors.notifications import _channels
from actors.notifications._http import WebhookClient
from actors.notifications.kinds import notification_json
from actors.settings import NotificationSettings
from actors.store.notifications import DueDelivery, Notification, NotificationStore, Settlement

__all__ = ["Dispatcher", "Settler", "WebhookDispatcher", "EmailDispatcher", "WsDispatcher", "EMAILS_PER_SESSION"]

log = logging.getLogger("exness.notifications")

EMAILS_PER_SESSION = 20
_FETCH = 256
_SETTLE_EVERY_S = 0.02


class Settler:
    """Writes outcomes in batches; tells each dispatcher when its deliveries are settled."""

    def __init__(self, store: NotificationStore, clock: Callable[[], int], *,
                 every_s: float = _SETTLE_EVERY_S) -> None:
        self.store = store
        self.clock = clock
        #: outcomes gather this long into one transaction
        self.every_s = every_s
        self._pending: list[tuple[Settlement, "Dispatcher"]] = []
        self._wake = trio.Event()
        self._writing = False
        self.settled = 0
        self.errors = 0

    def add(self, settlement: Settlement, dispatcher: "Dispatcher") -> None:
        self._pending.append((settlement, dispatcher))
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            await trio.sleep(self.every_s)        # let outcomes gather into one transaction
            self._wake = trio.Event()
            batch, self._pending = self._pending, []
            self._writing = True
            failures = 0
            while True:
                try:
                    await self.store.settle_deliveries([s for s, _ in batch], now=self.clock())
                    break
                except Exception as error:   # the store is down: keep the outcomes and retry
                    failures += 1
                    self.errors += 1
                    log.warning("event=settle_failed settlements=%d attempt=%d error=%r", len(batch), failures, error)
                    await trio.sleep(min(0.1 * 2 ** failures, 5.0))
            self._writing = False
            self.settled += len(batch)
            for settlement, dispatcher in batch:
                dispatcher.settled(settlement)

    async def flush(self) -> None:
        """Wait until every outcome added so far is written (``run`` writes them)."""
        while self._pending or self._writing:
            await trio.sleep(self.every_s)


class Dispatcher:
    """The common loop (see the module docstring); subclasses start deliveries."""

    channel = ""

    def __init__(self, *, store: NotificationStore, settler: Settler, settings: NotificationSettings,
                 shard: int, clock: Callable[[], int], engine_busy: Optional[Callable[[], bool]] = None) -> None:
        self.store = store
        self.engine_busy = engine_busy
        self.deferred_rounds = 0
        self.settler = settler
        self.settings = settings
        self.shard = shard
        self.clock = clock
        self.inflight: set[tuple[str, str]] = set()
        self._wake = trio.Event()
        self.nursery: Optional[trio.Nursery] = None
        self.delivered = 0
        self.failed_attempts = 0
        self.dead = 0
        self.dropped = 0
        self.store_errors = 0

    def statistics(self) -> dict[str, Any]:
        return {"in_flight": len(self.inflight), "delivered": self.delivered, "failed_attempts": self.failed_attempts,
                "dead": self.dead, "dropped": self.dropped, "store_errors": self.store_errors,
                "deferred_rounds": self.deferred_rounds}

    def poke(self) -> None:
        self._wake.set()

    def settled(self, settlement: Settlement) -> None:
        self.inflight.discard((settlement.notification_id, settlement.channel))
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            while True:
                self._wake = trio.Event()
                room = self.room()
                if room <= 0:         # everything it may run is running: a settlement pokes
                    with trio.move_on_after(self.settings.poll_interval_s):
                        await self._wake.wait()
                    continue
                if self.engine_busy is not None and self.engine_busy():
                    self.deferred_rounds += 1   # the engine is saturated: one round per poll interval
                    await trio.sleep(self.settings.poll_interval_s)
                try:
                    due = await self.store.due_deliveries(self.channel, self.shard, now=self.clock(),
                                                          limit=len(self.inflight) + min(_FETCH, 2 * room),
                                                          skip=self.inflight)
                except Exception as error:
                    self.store_errors += 1
                    log.warning("event=outbox_read_failed channel=%s error=%r", self.channel, error)
                    await trio.sleep(self.settings.poll_interval_s)
                    continue
                fetched = len(due)
                fresh = [delivery for delivery in due if delivery.key not in self.inflight]
                fresh = [delivery for delivery in fresh if self._still_wanted(delivery)]
                started = await self.start(fresh) if fresh else 0
                with trio.move_on_after(await self._idle_s(started, fetched)):
                    await self._wake.wait()

    def room(self) -> int:
        """How many more deliveries could start now."""
        return _FETCH

    async def _idle_s(self, started: int, fetched: int) -> float:
        """How long to wait for a poke: not at all when a full page came back and work started;
        else until the next retry is due (deliveries due but held back — in flight, or over a
        limit — are looked at again when an outcome is settled, which pokes)."""
        if started and fetched >= min(_FETCH, 2 * max(1, self.room())):
            return 0
        poll = self.settings.poll_interval_s
        now = self.clock()
        try:
            next_due = await self.store.next_due_at(self.channel, self.shard, after=now)
        except Exception:
            return poll
        if next_due is None:
            return poll
        return max(0.0, min(poll, (next_due - now) / 1e9))

    def _still_wanted(self, delivery: DueDelivery) -> bool:
        """A channel the account turned off since: settled without sending."""
        if delivery.channel in delivery.channels:
            return True
        self._settle(delivery, None, dropped=True)
        return False

    def _settle(self, delivery: DueDelivery, error: Optional[str], *, dropped: bool = False,
                give_up: bool = False) -> None:
        """Queue the outcome of an attempt: delivered (or ``dropped``: nothing to send to any
        more), a retry later, or — at ``max_attempts``, or when retrying cannot help
        (``give_up``) — the dead-letter list."""
        attempts = delivery.attempts + 1
        if error is None:
            if dropped:
                self.dropped += 1
            else:
                self.delivered += 1
            settlement = Settlement(notification_id=delivery.notification.id, channel=delivery.channel,
                                    delivered=True, attempts=attempts)
        else:
            self.failed_attempts += 1
            retry_at = None
            if attempts < self.settings.max_attempts and not give_up:
                retry_at = self.clock() + int(_channels.retry_delay_s(attempts, self.settings) * 1e9)
            else:
                self.dead += 1
                log.warning("event=delivery_dead channel=%s notification=%s account=%d attempts=%d error=%r",
                            delivery.channel, delivery.notification.id, delivery.notification.account_id,
                            attempts, error)
            settlement = Settlement(notification_id=delivery.notification.id, channel=delivery.channel,
                                    delivered=False, attempts=attempts, retry_at=retry_at, error=error)
        self.inflight.add(delivery.key)
        self.settler.add(settlement, self)

    async def start(self, due: Sequence[DueDelivery]) -> int:
        raise NotImplementedError


class WebhookDispatcher(Dispatcher):
    channel = "webhook"

    def __init__(self, *, client: WebhookClient, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client = client
        self.per_target: Counter[str] = Counter()
        self.busy = 0

    def statistics(self) -> dict[str, Any]:
        return super().statistics() | {"targets_busy": len(+self.per_target)}

    def room(self) -> int:
        return self.settings.webhook_concurrency - self.busy

    async def start(self, due: Sequence[DueDelivery]) -> int:
        started = 0
        settings = self.settings
        assert self.nursery is not None
        for delivery in due:
            if self.busy >= settings.webhook_concurrency:
                break
            url = delivery.webhook_url
            if url is None or delivery.webhook_secret is None:
                self._settle(delivery, None, dropped=True)    # the webhook was removed
                continue
            if self.per_target[url] >= settings.webhook_per_target:
                continue
            self.per_target[url] += 1
            self.busy += 1
            self.inflight.add(delivery.key)
            self.nursery.start_soon(self._deliver, delivery, url, delivery.webhook_secret)
            started += 1
        return started

    async def _deliver(self, delivery: DueDelivery, url: str, secret: str) -> None:
        try:
            error = await _channels.post_webhook(self.client, url, delivery.notification, secret,
                                                 delivery.attempts + 1)
        finally:
            self.per_target[url] -= 1
            self.busy -= 1
        self._settle(delivery, error)


class EmailDispatcher(Dispatcher):
    channel = "email"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sessions = trio.CapacityLimiter(self.settings.smtp_concurrency)

    def room(self) -> int:
        return int(self.sessions.available_tokens) * EMAILS_PER_SESSION

    async def start(self, due: Sequence[DueDelivery]) -> int:
        assert self.nursery is not None
        ready = []
        for delivery in due:
            if delivery.email:
                ready.append(delivery)
            else:
                self._settle(delivery, "the account has no e-mail address", give_up=True)
        started = 0
        for first in range(0, len(ready), EMAILS_PER_SESSION):
            if self.sessions.available_tokens < 1:
                break
            chunk = ready[first:first + EMAILS_PER_SESSION]
            self.inflight.update(delivery.key for delivery in chunk)
            await self.sessions.acquire_on_behalf_of(chunk[0].key)
            self.nursery.start_soon(self._session, chunk)
            started += len(chunk)
        return started

    async def _session(self, chunk: list[DueDelivery]) -> None:
        settings = self.settings
        try:
            messages = [_channels.email_message(delivery.notification, to=str(delivery.email),
                                                sender=settings.smtp_from) for delivery in chunk]
            results = await trio.to_thread.run_sync(_channels.send_emails, settings, messages,
                                                    abandon_on_cancel=True)
        finally:
            self.sessions.release_on_behalf_of(chunk[0].key)
        for delivery, error in zip(chunk, results):
            self._settle(delivery, error)


class WsDispatcher(Dispatcher):
    """Publishes to the stream servers: ``sink([(account_id, notification json), …])``.

    What the deriver just recorded is handed over in memory (:meth:`hand_over`) and published
    without being read back from the outbox (a round trip through the store per recorded batch
    was most of this channel's cost). The outbox is read at start and every ``poll_interval_s``
    for what is left there (deliveries a stopped worker had not settled). A handed-over delivery
    is in flight until its outcome is written, so the outbox read never sends it again."""

    channel = "ws"

    def __init__(self, *, sink: Callable[[list[tuple[int, dict]]], Awaitable[None]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sink = sink
        self._handed: list[Notification] = []

    def hand_over(self, notifications: Sequence[Notification]) -> None:
        """Publish these (recorded with a ``ws`` delivery) without reading the outbox."""
        inflight, channel = self.inflight, self.channel
        for notification in notifications:
            key = (notification.id, channel)
            if key not in inflight:
                inflight.add(key)
                self._handed.append(notification)
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        poll = self.settings.poll_interval_s
        read_outbox_at = trio.current_time()       # at once: what a stopped worker left
        while True:
            self._wake = trio.Event()
            if self._handed:
                handed, self._handed = self._handed, []
                await self.sink([(notification.account_id, notification_json(notification)) for notification in handed])
                self.delivered += len(handed)
                for notification in handed:     # first attempt, delivered: what _settle would make
                    self.settler.add(Settlement(notification_id=notification.id, channel=self.channel,
                                                delivered=True, attempts=1), self)
                continue
            if trio.current_time() >= read_outbox_at:
                try:
                    due = await self.store.due_deliveries(self.channel, self.shard, now=self.clock(), limit=_FETCH,
                                                          skip=self.inflight)
                except Exception as error:
                    self.store_errors += 1
                    log.warning("event=outbox_read_failed channel=%s error=%r", self.channel, error)
                    due = []
                fresh = [delivery for delivery in due if delivery.key not in self.inflight]
                fresh = [delivery for delivery in fresh if self._still_wanted(delivery)]
                if fresh:
                    self.inflight.update(delivery.key for delivery in fresh)
                    await self._publish(fresh)
                if len(due) >= _FETCH:
                    continue
                read_outbox_at = trio.current_time() + poll
            with trio.move_on_at(read_outbox_at):
                await self._wake.wait()

    async def _publish(self, due: Sequence[DueDelivery]) -> None:
        await self.sink([(delivery.notification.account_id, notification_json(delivery.notification))
                         for delivery in due])
        for delivery in due:
            self._settle(delivery, None)
