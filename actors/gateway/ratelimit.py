"""In-memory token buckets keyed by client (IP, account, e-mail), for the gateway.

Theory of operation
-------------------
A bucket holds at most ``burst`` tokens and refills at ``rate_per_s``; a request takes one
token, or is refused with the time until one is back (the ``Retry-After`` of the 429). Buckets
are created on first use and refilled lazily when touched (no timer task), so a limiter costs
one dict lookup and a few float operations per request.

Memory is bounded: when more than ``max_keys`` buckets exist, the ones that have refilled to
``burst`` — they carry no information — are dropped in one sweep. If every bucket is still
draining (an attack from more distinct keys than ``max_keys``), the oldest half is dropped:
those clients get a fresh bucket, which errs towards letting requests through rather than
growing without bound.

A limiter with ``rate_per_s <= 0`` is disabled (every request passes).

The sign-in throttle uses the same buckets as a *failure budget*: :meth:`RateLimiter.retry_after`
checks without taking, and only a failed attempt :meth:`RateLimiter.acquire`-s a token.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Hashable

__all__ = ["RateLimiter", "retry_after_header"]


class RateLimiter:
    """Token buckets of ``burst`` tokens refilled at ``rate_per_s``, one per key."""

    __slots__ = ("rate_per_s", "burst", "max_keys", "_clock", "_buckets", "refused", "sweeps")

    def __init__(self, rate_per_s: float, burst: float, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1 and rate_per_s > 0:
            raise ValueError(f"burst must be at least 1, not {burst!r}")
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self.max_keys = max_keys
        self._clock = clock
        # key -> [tokens, last refill time]
        self._buckets: dict[Hashable, list[float]] = {}
        self.refused = 0
        self.sweeps = 0

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0

    def _bucket(self, key: Hashable, now: float) -> list[float]:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._sweep(now)
            bucket = self._buckets[key] = [self.burst, now]
            return bucket
        tokens = bucket[0] + (now - bucket[1]) * self.rate_per_s
        bucket[0] = tokens if tokens < self.burst else self.burst
        bucket[1] = now
        return bucket

    def acquire(self, key: Hashable, cost: float = 1.0) -> float:
        """Take ``cost`` tokens: 0.0 when allowed, else the seconds until they are available
        (nothing is taken then)."""
        if self.rate_per_s <= 0:
            return 0.0
        now = self._clock()
        bucket = self._bucket(key, now)
        if bucket[0] >= cost:
            bucket[0] -= cost
            return 0.0
        self.refused += 1
        return (cost - bucket[0]) / self.rate_per_s

    def retry_after(self, key: Hashable, cost: float = 1.0) -> float:
        """Like :meth:`acquire` but takes nothing: 0.0 when ``cost`` tokens are there."""
        if self.rate_per_s <= 0:
            return 0.0
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        now = self._clock()
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate_per_s)
        return 0.0 if tokens >= cost else (cost - tokens) / self.rate_per_s

    def reset(self, key: Hashable) -> None:
        self._buckets.pop(key, None)

    def _sweep(self, now: float) -> None:
        self.sweeps += 1
        rate, burst = self.rate_per_s, self.burst
        full = [key for key, (tokens, updated) in self._buckets.items()
                if tokens + (now - updated) * rate >= burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:
            for key in list(self._buckets)[: len(self._buckets) // 2]:
                del self._buckets[key]

    def statistics(self) -> dict[str, float]:
        return {"keys": len(self._buckets), "refused": self.refused, "sweeps": self.sweeps}


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))
