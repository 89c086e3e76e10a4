"""The notifications worker's figures as Prometheus metrics, and the split-mode ``/metrics`` listener.

Theory of operation
-------------------
:func:`worker_metrics` turns one worker's :class:`~actors.notifications.worker.WorkerStatistics`
into metric families labelled by ``shard`` (and ``channel`` for the per-channel ones), at scrape
time. Two places call it:

* **embedded** — the gateway's ``/metrics`` (:mod:`actors.gateway.metrics`): the worker runs in
  the gateway's process, as the feed, candles and persister do;
* **split mode** — the notifications role is a process of its own with no HTTP server, so it
  serves a tiny ``/metrics`` listener (:func:`serve_metrics`) on ``[notifications]
  metrics_port``, and Prometheus scrapes each worker directly (one per shard). Gateways do not
  re-export it: each series then has one source, and a sum over instances counts once.

The metric names (documented in docs/operations.md) are fixed; labels come from fixed sets (the
shard, the three channels, two outbox statuses), so no input can add a series.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Mapping, Optional

import attrs
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["worker_metrics", "WorkerCollector", "serve_metrics", "CONTENT_TYPE", "MetricsListener"]

log = logging.getLogger("exness.notifications")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: gauge name -> (help, statistics key)
_GAUGES = {
    "exness_notifications_last_seq": ("every input of the shard up to this seq is derived", "last_seq"),
    "exness_notifications_recorded_seq": ("...and up to this seq the store's watermark says so", "recorded_seq"),
    "exness_notifications_received_seq": ("the newest input seq the worker has received", "received_seq"),
    "exness_notifications_lag_inputs": ("inputs of the batches in hand not recorded yet", "lag"),
    "exness_notifications_inbox_depth": ("engine event batches waiting for the worker", "inbox_depth"),
}
#: counter name (prometheus adds ``_total``) -> (help, statistics key)
_COUNTERS = {
    "exness_notifications_recorded": ("notifications recorded since the worker started", "notifications"),
    "exness_notifications_batches": ("engine event batches derived", "batches"),
    "exness_notifications_store_errors": ("failed writes of derived notifications (each retried)", "store_errors"),
    "exness_notifications_settled": ("delivery outcomes written to the outbox", "settled"),
    "exness_notifications_gaps": ("split mode: gaps in the events stream (inputs never seen)", "gaps"),
    "exness_notifications_gap_inputs": ("split mode: inputs skipped by those gaps (their notifications are lost)",
                                        "gap_inputs"),
    "exness_notifications_purged": ("notifications removed by the retention purge", "purged"),
}
#: per-channel counter name -> (help, dispatcher statistics key)
_CHANNEL_COUNTERS = {
    "exness_notifications_delivered": ("deliveries that succeeded", "delivered"),
    "exness_notifications_failed_attempts": ("delivery attempts that failed (retried or dead-lettered)",
                                             "failed_attempts"),
    "exness_notifications_dead_lettered": ("deliveries that gave up (the dead-letter list)", "dead"),
    "exness_notifications_dropped": ("deliveries settled unsent: the account turned the channel off", "dropped"),
    "exness_notifications_outbox_read_errors": ("failed reads of the outbox", "store_errors"),
    "exness_notifications_deferred_rounds": ("delivery rounds deferred to a saturated engine", "deferred_rounds"),
}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _as_mapping(statistics: Any) -> Mapping[str, Any]:
    if attrs.has(type(statistics)):
        return attrs.asdict(statistics, recurse=False)
    return statistics if isinstance(statistics, Mapping) else {}


def worker_metrics(statistics: Any, *, shard: int) -> Iterable[Metric]:
    """The metric families of one worker's statistics (a ``WorkerStatistics`` or its mapping)."""
    stats = _as_mapping(statistics)
    label = [str(shard)]
    for name, (help_text, key) in _GAUGES.items():
        family = GaugeMetricFamily(name, help_text, labels=["shard"])
        family.add_metric(label, _number(stats.get(key)))
        yield family
    for name, (help_text, key) in _COUNTERS.items():
        counter = CounterMetricFamily(name, help_text, labels=["shard"])
        counter.add_metric(label, _number(stats.get(key)))
        yield counter
    last_gap = stats.get("last_gap")
    gap_end = GaugeMetricFamily("exness_notifications_last_gap_to_seq",
                                "the last seq of the latest gap in the events stream (0: none)", labels=["shard"])
    gap_end.add_metric(label, _number(last_gap[1]) if last_gap else 0.0)
    yield gap_end
    channels: Mapping[str, Mapping[str, Any]] = stats.get("channels") or {}
    for name, (help_text, key) in _CHANNEL_COUNTERS.items():
        counter = CounterMetricFamily(name, help_text, labels=["shard", "channel"])
        for channel, figures in sorted(channels.items()):
            counter.add_metric([str(shard), channel], _number(figures.get(key)))
        yield counter
    retries = CounterMetricFamily("exness_notifications_retries", "failed attempts that were scheduled again",
                                  labels=["shard", "channel"])
    in_flight = GaugeMetricFamily("exness_notifications_in_flight", "deliveries being sent now",
                                  labels=["shard", "channel"])
    for channel, figures in sorted(channels.items()):
        retries.add_metric([str(shard), channel],
                           max(0.0, _number(figures.get("failed_attempts")) - _number(figures.get("dead"))))
        in_flight.add_metric([str(shard), channel], _number(figures.get("in_flight")))
    yield retries
    yield in_flight
    outbox = GaugeMetricFamily("exness_notifications_outbox",
                               "outbox rows by channel and status (pending: still to go; dead: the dead-letter list), "
                               "counted every few seconds", labels=["shard", "channel", "status"])
    for channel, by_status in sorted((stats.get("outbox") or {}).items()):
        for status, count in sorted(by_status.items()):
            outbox.add_metric([str(shard), channel, status], _number(count))
    yield outbox


class WorkerCollector:
    """A ``prometheus_client`` collector over a worker found at scrape time (``source()``: the
    running :class:`~actors.notifications.worker.NotificationWorker`, or None before it started)."""

    def __init__(self, source: Callable[[], Any]) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        worker = self.source()
        if worker is None:
            return
        try:
            statistics = worker.statistics()
        except Exception:            # a scrape never fails because of a component's statistics
            return
        yield from worker_metrics(statistics, shard=worker.shard)


@attrs.define(kw_only=True)
class MetricsListener:
    """What :func:`serve_metrics` reports when it listens."""
    host: str
    port: int
    scrapes: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"


_REQUEST_LIMIT = 8192
_REQUEST_TIMEOUT_S = 5.0


async def serve_metrics(*, source: Callable[[], Any], host: str, port: int,
                        task_status: trio.TaskStatus[MetricsListener] = trio.TASK_STATUS_IGNORED) -> None:
    """Answer ``GET /metrics`` on ``host:port`` with the worker's metrics (and 404 to anything
    else) until cancelled. HTTP/1.0, one request per connection: all a Prometheus scrape needs."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(source))
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()
    info = MetricsListener(host=host, port=bound[1])
    log.info("event=metrics_listening url=%s", info.url)

    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            with trio.move_on_after(_REQUEST_TIMEOUT_S):
                request = b""
                while b"\r\n\r\n" not in request and b"\n\n" not in request and len(request) < _REQUEST_LIMIT:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        return
                    request += chunk
                parts = request.split(b"\r\n", 1)[0].split()
                path = parts[1].split(b"?", 1)[0] if len(parts) >= 2 else b""
                if len(parts) >= 2 and parts[0] in (b"GET", b"HEAD") and path == b"/metrics":
                    info.scrapes += 1
                    status, content_type, body = b"200 OK", CONTENT_TYPE.encode(), generate_latest(registry)
                else:
                    status, content_type, body = b"404 Not Found", b"text/plain; charset=utf-8", b"not found: GET /metrics\n"
                head = (b"HTTP/1.0 " + status + b"\r\nContent-Type: " + content_type +
                        b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n")
                await stream.send_all(head if parts[:1] == [b"HEAD"] else head + body)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, _quietly(answer), listeners)
        task_status.started(info)


def _quietly(handler: Callable[[trio.SocketStream], Any]) -> Callable[[trio.SocketStream], Any]:
    """A scraper that hangs up early is not an error of the worker's."""
    async def guarded(stream: trio.SocketStream) -> None:
        try:
            await handler(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
            log.debug("event=metrics_connection_lost error=%r", error)
    return guarded

