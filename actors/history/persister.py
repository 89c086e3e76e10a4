"""The persister actor: engine events → store (trade history, order history, ledger).

Theory of operation
-------------------
The engine publishes an :class:`~actors.engine.messages.EventBatch` per durable journal batch. The
persister takes one from its inbox, then whatever else is already waiting (``receive_nowait``, up
to ``[persister] max_batches`` batches / ``max_items`` inputs), and writes them all with a single
:meth:`Store.apply_batch` — one transaction for the rows **and** its shard's watermark (``persister_shards``).
Under load the batches coalesce into fewer, larger transactions; when idle each batch is written
at once.

Idempotent by seq: the store skips every input at or below its ``last_seq``, so a restart that
re-sends old batches, or a rebuild from the journal over an existing store, never duplicates a
row. :func:`rebuild` feeds ``(seq, ts, events)`` from a journal replay through the same
:meth:`Persister.write` path as live batches, so "rebuilt" and "persisted live" cannot differ.

A failed write is retried with backoff; after :data:`MAX_WRITE_ATTEMPTS` the actor fails and the
supervisor restarts it. Whatever it had received but not written is then missing from the
store's tail: after a restart, replay the journal from ``handle.last_seq`` (the store's
``last_persisted_seq`` at start) through :func:`rebuild`.
"""

from __future__ import annotations

import logging
import time
from typing import Iterable, Optional, Sequence

import attrs
import trio

from actors.engine.messages import EventBatch
from actors.settings import PersisterSettings
from actors.store.base import Store

__all__ = ["run", "catch_up", "rebuild", "Persister", "PersisterStatistics", "MAX_WRITE_ATTEMPTS"]

logger = logging.getLogger("exness.persister")

REBUILD_CHUNK_ITEMS = 5_000
MAX_WRITE_ATTEMPTS = 5


@attrs.define(slots=True, kw_only=True)
class PersisterStatistics:
    rows_written: int
    transactions: int          # store.apply_batch calls that wrote
    batches_received: int      # EventBatch objects taken from the inbox (or rebuilt)
    batches_skipped: int       # already stored (seq at or below last_seq)
    last_seq: int              # every input up to this seq is in the store
    received_seq: int          # the newest seq received
    lag: int                   # received_seq - last_seq
    inbox_depth: int
    store_errors: int
    last_write_ms: float


class Persister:
    """The write path shared by the actor and :func:`rebuild`; also the actor's handle."""

    def __init__(self, store: Store, *, last_seq: int = 0, shard: int = 0,
                 inbox: Optional[trio.MemoryReceiveChannel] = None) -> None:
        self.store = store
        #: the engine shard whose batches these are (its own watermark in the store)
        self.shard = shard
        #: every input up to this seq is in the store
        self.last_seq = last_seq
        self._inbox = inbox
        self._received_seq = last_seq
        self._rows = 0
        self._transactions = 0
        self._batches = 0
        self._skipped = 0
        self._errors = 0
        self._last_write_ms = 0.0

    def statistics(self) -> PersisterStatistics:
        return PersisterStatistics(
            rows_written=self._rows, transactions=self._transactions,
            batches_received=self._batches, batches_skipped=self._skipped,
            last_seq=self.last_seq, received_seq=self._received_seq,
            lag=max(0, self._received_seq - self.last_seq),
            inbox_depth=self._inbox.statistics().current_buffer_used if self._inbox else 0,
            store_errors=self._errors, last_write_ms=self._last_write_ms)

    async def write(self, batches: Sequence[EventBatch]) -> int:
        """Write ``batches`` (in seq order) in one transaction; return the rows written."""
        self._batches += len(batches)
        fresh = [batch for batch in batches if batch.last_seq > self.last_seq]
        self._skipped += len(batches) - len(fresh)
        if not fresh:
            return 0
        newest = max(batch.last_seq for batch in fresh)
        self._received_seq = max(self._received_seq, newest)
        combined = fresh[0] if len(fresh) == 1 else EventBatch(
            items=[item for batch in fresh for item in batch.items], last_seq=newest)
        failures = 0
        while True:
            started = time.perf_counter()
            try:
                rows = await self.store.apply_batch(combined, shard=self.shard)
                break
            except Exception as error:
                failures += 1
                self._errors += 1
                if failures >= MAX_WRITE_ATTEMPTS:
                    logger.error("event=store_failed last_seq=%d batch_seq=%d attempts=%d error=%r",
                                 self.last_seq, newest, failures, error)
                    raise
                retry_in = min(0.1 * 2 ** failures, 5.0)
                logger.warning("event=store_error batch_seq=%d attempt=%d retry_in_s=%.1f error=%r",
                               newest, failures, retry_in, error)
                await trio.sleep(retry_in)
        self._last_write_ms = (time.perf_counter() - started) * 1000
        self.last_seq = newest
        self._rows += rows
        self._transactions += 1
        logger.debug("event=written batches=%d inputs=%d rows=%d last_seq=%d ms=%.1f",
                     len(fresh), len(combined.items), rows, newest, self._last_write_ms)
        return rows


async def catch_up(store: Store, backlog: list, *, shard: int = 0) -> None:
    """Persist what recovery replayed past the store's watermark (``backlog``: the recovered
    ``(seq, ts, events)``), before the persister starts: it then begins at the engine's seq."""
    if backlog:
        await store.apply_batch(EventBatch(backlog, backlog[-1][0]), shard=shard)
        logger.info("event=store_caught_up batches=%d last_seq=%d", len(backlog), backlog[-1][0])


async def run(*, inbox: trio.MemoryReceiveChannel[EventBatch], store: Store, shard: int = 0,
              settings: PersisterSettings = PersisterSettings(),
              task_status: trio.TaskStatus[Persister] = trio.TASK_STATUS_IGNORED) -> None:
    """Persist the batches of engine shard ``shard`` until the inbox closes (see the module
    docstring).

    ``settings`` (``[persister]``): ``max_batches`` and ``max_items`` bound how much one
    transaction coalesces.
    """
    max_batches = settings.max_batches
    max_items = settings.max_items
    persister = Persister(store, last_seq=await store.last_persisted_seq(shard), shard=shard, inbox=inbox)
    logger.info("event=started shard=%d last_seq=%d max_batches=%d max_items=%d",
                shard, persister.last_seq, max_batches, max_items)
    task_status.started(persister)
    try:
        async for batch in inbox:
            batches = [batch]
            items = len(batch.items)
            while len(batches) < max_batches and items < max_items:
                try:
                    more = inbox.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                batches.append(more)
                items += len(more.items)
            await persister.write(batches)
    finally:
        stats = persister.statistics()
        logger.info("event=stopped last_seq=%d rows_written=%d transactions=%d lag=%d",
                    stats.last_seq, stats.rows_written, stats.transactions, stats.lag)


async def rebuild(store: Store, events_by_seq: Iterable[tuple[int, int, list]], *,
                  chunk_items: int = REBUILD_CHUNK_ITEMS, shard: int = 0) -> PersisterStatistics:
    """Apply ``(seq, ts, events)`` in seq order (a journal replay) through the live write path,
    ``chunk_items`` inputs per transaction. Inputs already stored are skipped, so this is safe
    over a store that has part or all of them."""
    persister = Persister(store, last_seq=await store.last_persisted_seq(shard), shard=shard)
    started_at = persister.last_seq
    chunk: list[tuple[int, int, list]] = []
    for item in events_by_seq:
        if item[0] <= persister.last_seq:
            continue
        chunk.append(item)
        if len(chunk) >= chunk_items:
            await persister.write([EventBatch(items=chunk, last_seq=chunk[-1][0])])
            chunk = []
    if chunk:
        await persister.write([EventBatch(items=chunk, last_seq=chunk[-1][0])])
    stats = persister.statistics()
    logger.info("event=rebuilt from_seq=%d last_seq=%d rows_written=%d transactions=%d",
                started_at, stats.last_seq, stats.rows_written, stats.transactions)
    return stats
