"""The outbox's size for the metrics: pending and dead-lettered deliveries per channel.

A dispatcher knows only what it has in flight; what waits in the outbox (due later, or recorded
by a worker that stopped) and what sits on the dead-letter list are the store's. One grouped
count of the shard's outbox every :data:`COUNT_EVERY_S` keeps those figures for
``statistics()`` (and so for ``/metrics``) without a store query per scrape: a scrape never
waits for the database.
"""

from __future__ import annotations

import logging

import attrs
import trio

from actors.store.notifications import DELIVERY_CHANNELS, NotificationStore

__all__ = ["COUNT_EVERY_S", "OutboxGauge"]

log = logging.getLogger("exness.notifications")

#: how often the outbox is counted
COUNT_EVERY_S = 15.0
_STATUSES = ("pending", "dead")


@attrs.define(kw_only=True)
class OutboxGauge:
    store: NotificationStore
    shard: int
    #: ``{channel: {"pending": n, "dead": n}}`` as last counted (empty until the first count)
    counts: dict[str, dict[str, int]] = attrs.Factory(dict)
    errors: int = 0

    async def run(self) -> None:
        while True:
            await self.refresh()
            await trio.sleep(COUNT_EVERY_S)

    async def refresh(self) -> None:
        try:
            rows = await self.store.outbox_counts(self.shard)
        except Exception as error:     # keep the last figures; the next count tries again
            self.errors += 1
            log.warning("event=outbox_count_failed shard=%d error=%r", self.shard, error)
            return
        self.counts = {channel: {status: rows.get((channel, status), 0) for status in _STATUSES}
                       for channel in DELIVERY_CHANNELS}
