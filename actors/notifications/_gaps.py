"""Gap detection: inputs of the shard's events stream that the split-mode worker never saw.

Theory of operation
-------------------
In split mode the worker reads its shard's events stream from the start and skips what is at or
below its watermark. The engine's edge trims that stream (``XADD … MAXLEN ~``): a worker stopped
for long enough — or one far behind — finds its oldest entry beyond ``watermark + 1``, and the
notifications of the inputs in between are lost. So are those of entries the engine made durable
but never published (it crashed in between), and those trimmed while the worker was
disconnected from Redis.

Each stream entry carries its engine batch's ``first_seq`` and ``last_seq`` (the batch covers
every input in between, with events or not). :class:`GapDetector` keeps ``covered`` — every
input up to it was seen: the store's watermark at start, then each batch's ``last_seq`` — and a
batch starting after ``covered + 1`` is a gap of exactly ``covered + 1 … first_seq - 1``: one
``event=input_gap`` line with the range, counted (``gaps``, ``gap_inputs``), and the worker goes
on with what is there. Nothing can bring those notifications back (the engine's journal still
holds the inputs: ``exness-actors replay`` shows them); the count is for the alert.

A batch whose ``first_seq`` is 0 (an entry of an older engine, or a batch rebuilt from the
journal) cannot be checked; it only moves ``covered``. Embedded, the worker's subscription is
lossless and its start is the journal's recovery: there is nothing to detect there, and the
worker does not check (its watermark may trail the recovered seq by inputs without events).
"""

from __future__ import annotations

import logging
from typing import Iterable, Optional

import attrs

from actors.engine.messages import EventBatch

__all__ = ["GapDetector"]

log = logging.getLogger("exness.notifications")


@attrs.define(kw_only=True)
class GapDetector:
    shard: int
    #: every input up to this seq was seen (the watermark at start)
    covered: int
    #: gaps found, and the inputs they skipped in all
    gaps: int = 0
    gap_inputs: int = 0
    #: the latest gap's ``(first missing seq, last missing seq)``
    last_gap: Optional[tuple[int, int]] = None

    def check(self, batches: Iterable[EventBatch]) -> list[tuple[int, int]]:
        """Note ``batches`` (in stream order); return the gaps before them, logged and counted."""
        found = []
        for batch in batches:
            first = batch.first_seq
            if first and first > self.covered + 1:
                gap = (self.covered + 1, first - 1)
                found.append(gap)
                self.gaps += 1
                self.gap_inputs += gap[1] - gap[0] + 1
                self.last_gap = gap
                log.error("event=input_gap shard=%d from_seq=%d to_seq=%d missing=%d "
                          "reason=\"events stream trimmed or not published past the worker's watermark; "
                          "these inputs' notifications are lost\"", self.shard, gap[0], gap[1],
                          gap[1] - gap[0] + 1)
            if batch.last_seq > self.covered:
                self.covered = batch.last_seq
        return found
