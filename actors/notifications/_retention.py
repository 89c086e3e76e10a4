"""Retention: the worker's periodic purge of old, settled notifications.

Theory of operation
-------------------
Without it ``notifications`` (and the dead-letter rows of ``notification_deliveries``) grow
forever. Every :data:`PURGE_EVERY_S` — and once soon after the worker starts — the worker of
shard K deletes shard K's notifications created more than ``[notifications] retention_days``
ago whose deliveries are all settled (delivered rows are already gone; dead-lettered ones go with
their notification). A notification with a delivery still pending (retrying) is kept, however old:
retention never drops what is still to be sent.

The purge runs in transactions of at most ``retention_batch`` notifications, one after the other
with a checkpoint between them, so it never holds a long lock and the deriving half's
transactions interleave with it. ``retention_days = 0`` keeps everything (no purge task).

"Older" is by ``created_at``: the engine input's timestamp, compared with the worker's wall
clock (injected: the tests pass theirs).
"""

from __future__ import annotations

import logging
from typing import Callable

import attrs
import trio

from actors.store.notifications import NotificationStore

__all__ = ["PURGE_EVERY_S", "FIRST_PURGE_AFTER_S", "Retention", "purge_expired"]

log = logging.getLogger("exness.notifications")

#: how often the purge runs
PURGE_EVERY_S = 3600.0
#: the first purge, this long after the worker started (not in the way of its backlog)
FIRST_PURGE_AFTER_S = 60.0
_NS_PER_DAY = 86_400 * 10**9


def cutoff(now: int, retention_days: int) -> int:
    """Notifications created before this (ns) are old enough to purge."""
    return now - retention_days * _NS_PER_DAY


async def purge_expired(store: NotificationStore, shard: int, *, now: int, retention_days: int,
                        batch: int) -> int:
    """Purge everything of ``shard`` old enough at ``now``, ``batch`` notifications per
    transaction; return how many went (0 when ``retention_days`` is 0)."""
    if retention_days <= 0:
        return 0
    before = cutoff(now, retention_days)
    purged = 0
    while True:
        removed = await store.purge_notifications(shard, before=before, limit=batch)
        purged += removed
        if removed < batch:
            return purged
        await trio.sleep(0)      # let the deriver's transaction in between two of ours


@attrs.define(kw_only=True)
class Retention:
    """The purge task and its counters (the worker's statistics show them)."""

    store: NotificationStore
    shard: int
    retention_days: int
    batch: int
    clock: Callable[[], int]
    purged: int = 0
    runs: int = 0
    errors: int = 0

    async def run(self) -> None:
        """Purge now and then until cancelled; a failed purge is logged and tried next time."""
        if self.retention_days <= 0:
            return
        await trio.sleep(FIRST_PURGE_AFTER_S)
        while True:
            await self.purge_once()
            await trio.sleep(PURGE_EVERY_S)

    async def purge_once(self) -> int:
        try:
            removed = await purge_expired(self.store, self.shard, now=self.clock(),
                                          retention_days=self.retention_days, batch=self.batch)
        except Exception as error:
            self.errors += 1
            log.warning("event=retention_failed shard=%d error=%r", self.shard, error)
            return 0
        self.runs += 1
        self.purged += removed
        if removed:
            log.info("event=retention_purged shard=%d notifications=%d retention_days=%d", self.shard, removed,
                     self.retention_days)
        return removed
