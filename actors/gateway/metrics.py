"""Prometheus metrics of one gateway app: its own counters plus the actors' ``statistics()``.

Each app owns a :class:`prometheus_client.CollectorRegistry` (no process-global state: tests
build several apps in one process). Two kinds of series:

* **counted by the gateway** as requests pass: requests by route/method/status, a latency
  histogram per route, orders by outcome and reject reason, rate-limit refusals, internal errors.
  Every label comes from a known set, so no request can mint a new series: the route is its
  *template* (``unmatched`` for none), the method one of :data:`HTTP_METHODS` (else ``OTHER``),
  the status a registered HTTP status (else ``other``);
* **read at scrape time** from the actors (:class:`StatisticsCollector`): the engine handle
  (inbox depth, commands, overloads, journal fsync latency, subscriber queues), the age of each
  symbol's last quote (the feed lag as the engine sees it), and the ``statistics()`` of the feed,
  candles, persister, WebSocket server and notifications worker (its own labelled families,
  :mod:`actors.notifications.metrics`) when they are given. Unknown statistics are exported
  generically: every top-level number becomes a gauge ``exness_<component>_<name>``.

Reading the engine's quotes at scrape time bypasses the engine's query path on purpose: a
scrape must answer even when the engine inbox is full, and a quote's age is observability, not
a trading decision.
"""

from __future__ import annotations

import re
import time
from http import HTTPStatus
from typing import Any, Callable, Iterable, Mapping, Optional

import attrs
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from actors.notifications.metrics import worker_metrics

__all__ = ["GatewayMetrics", "StatisticsCollector", "CONTENT_TYPE", "statistics_of"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
_STATUSES = frozenset(status.value for status in HTTPStatus)

_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def statistics_of(source: Any) -> Optional[Mapping[str, Any]]:
    """The statistics of ``source`` as a mapping: an object with ``statistics()``, a callable
    returning them, or a mapping; attrs instances are converted. ``None`` when unavailable."""
    if source is None:
        return None
    if hasattr(source, "statistics"):
        value = source.statistics()
    elif callable(source):
        value = source()
    else:
        value = source
    if attrs.has(type(value)):
        value = attrs.asdict(value, recurse=False)
    elif not isinstance(value, Mapping) and hasattr(value, "__dict__"):
        value = vars(value)
    return value if isinstance(value, Mapping) else None


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


class StatisticsCollector:
    """Turns the actors' ``statistics()`` into metric families at scrape time."""

    def __init__(self, *, handle: Any = None, components: Optional[Mapping[str, Any]] = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.handle = handle
        self.components = dict(components or {})
        self.clock = clock

    def collect(self) -> Iterable[Metric]:
        if self.handle is not None:
            yield from self._engine()
        for component, source in self.components.items():
            try:
                stats = statistics_of(source)
            except Exception:   # a component's statistics must never break the scrape
                stats = None
            if stats is None:
                continue
            if component == "feed":
                yield from self._feed(stats)
            if component == "notifications":     # labelled families of its own (by shard, channel)
                if stats:
                    yield from worker_metrics(stats, shard=int(stats.get("shard") or 0))
                continue
            yield from self._generic(component, stats)

    def _engine(self) -> Iterable[Metric]:
        stats = self.handle.statistics()
        gauges = {
            "exness_engine_inbox_depth": ("commands and queries waiting in the engine inbox", "inbox_depth"),
            "exness_engine_inbox_capacity": ("size of the bounded engine inbox", "inbox_capacity"),
            "exness_engine_last_seq": ("seq of the last applied input", "last_seq"),
            "exness_engine_durable_seq": ("seq of the last durable input", "durable_seq"),
            "exness_engine_accounts": ("accounts in the engine", "accounts"),
            "exness_engine_open_positions": ("open positions in the engine", "open_positions"),
            "exness_engine_pending_orders": ("pending orders in the engine", "pending_orders"),
            "exness_journal_fsync_seconds_max": ("slowest journal fsync so far", "fsync_seconds_max"),
            "exness_journal_fsync_seconds_p99": ("p99 of the last 1024 journal fsyncs", "fsync_p99_seconds"),
            "exness_journal_damaged_segments": ("journal segments the last scrub found damaged",
                                                "journal_damaged_segments"),
        }
        for name, (help_text, key) in gauges.items():
            yield GaugeMetricFamily(name, help_text, value=float(stats.get(key) or 0))
        counters = {
            "exness_engine_commands": ("inputs applied", "commands"),
            "exness_engine_batches": ("journal batches made durable", "batches"),
            "exness_engine_overloads": ("requests refused because the inbox was full", "overloads"),
            "exness_engine_quotes_rejected": ("crossed or invalid quotes refused", "quotes_rejected"),
            "exness_journal_fsyncs": ("journal fsyncs", "fsyncs"),
            "exness_journal_fsync_seconds": ("time spent in journal fsyncs", "fsync_seconds_total"),
        }
        for name, (help_text, key) in counters.items():
            yield CounterMetricFamily(name, help_text, value=float(stats.get(key) or 0))
        accepting = GaugeMetricFamily("exness_engine_accepting", "1 while the engine takes commands",
                                      value=1.0 if getattr(self.handle, "accepting", False) else 0.0)
        yield accepting
        queued = GaugeMetricFamily("exness_engine_subscriber_queued",
                                   "event batches waiting for a subscriber", labels=["subscriber"])
        for subscription in stats.get("subscriptions", ()):
            queued.add_metric([str(subscription.get("name"))], float(subscription.get("queued", 0)))
        yield queued
        quote_times = stats.get("quote_ts")
        if quote_times is not None:   # split mode: the engine (and its quotes) is remote
            age = GaugeMetricFamily("exness_quote_age_seconds",
                                    "age of the last quote the engine traded on, per symbol",
                                    labels=["symbol"])
            now = self.clock()
            for symbol, quote_ts in sorted(quote_times.items()):
                age.add_metric([symbol], max(0, now - quote_ts) / 1e9)
            yield age

    @staticmethod
    def _feed(stats: Mapping[str, Any]) -> Iterable[Metric]:
        lag = _number(stats.get("lag_s"))
        if lag is not None:
            yield GaugeMetricFamily("exness_feed_lag_seconds",
                                    "delay between a tick being due and reaching the engine inbox",
                                    value=lag)

    @staticmethod
    def _generic(component: str, stats: Mapping[str, Any]) -> Iterable[Metric]:
        prefix = "exness_" + _NAME_UNSAFE.sub("_", component)
        for key, value in stats.items():
            number = _number(value)
            if number is None:
                continue
            name = f"{prefix}_{_NAME_UNSAFE.sub('_', str(key))}"
            yield GaugeMetricFamily(name, f"{component} statistic {key}", value=number)


class GatewayMetrics:
    """The registry of one app and the counters the gateway updates per request."""

    def __init__(self, *, handle: Any = None, components: Optional[Mapping[str, Any]] = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("exness_http_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("exness_http_request_duration_seconds",
                                 "time from the request reaching the app to its response",
                                 ["route", "method"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.orders = Counter("exness_orders", "orders placed through the gateway",
                              ["outcome", "reason"], registry=self.registry)
        self.rate_limited = Counter("exness_http_rate_limited", "requests refused with 429",
                                    ["scope"], registry=self.registry)
        self.internal_errors = Counter("exness_http_internal_errors",
                                       "requests that failed with an unexpected exception (500)",
                                       registry=self.registry)
        self.collector = StatisticsCollector(handle=handle, components=components, clock=clock)
        self.registry.register(self.collector)
        # label children are cached: .labels() takes a lock and builds a tuple every call
        self._latency_children: dict[tuple[str, str], Any] = {}
        self._request_children: dict[tuple[str, str, int], Any] = {}
        self._order_children: dict[tuple[str, str], Any] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        if method not in HTTP_METHODS:
            method = "OTHER"
        key = (route, method)
        child = self._latency_children.get(key)
        if child is None:
            child = self._latency_children[key] = self.latency.labels(route, method)
        child.observe(seconds)
        request_key = (route, method, status)
        counter = self._request_children.get(request_key)
        if counter is None:
            label = str(status) if status in _STATUSES else "other"
            counter = self._request_children[request_key] = self.requests.labels(route, method, label)
        counter.inc()

    def order(self, outcome: str, reason: str = "") -> None:
        key = (outcome, reason)
        child = self._order_children.get(key)
        if child is None:
            child = self._order_children[key] = self.orders.labels(outcome, reason)
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
