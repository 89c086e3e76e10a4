"""E-mail and webhook delivery in a child process (``[notifications] delivery``).

Theory of operation
-------------------
In embedded mode the notifications worker shares the engine's interpreter, and every CPU-second
spent signing, POSTing and settling webhooks (or building e-mails) is one the engine does not get:
``bench/notify.py``'s ``engine_ratio`` was 0.39–0.79 with delivery inline. The delivery half
needs nothing from the worker but the store's outbox and the settings, so it can run in another
OS process, with its own interpreter and its own core. The deriving half and the ``ws``
dispatcher stay in the worker (the ``ws`` channel feeds the WebSocket server of this process).

:class:`DeliveryProcess` (in the worker's nursery) starts ``python -m
actors.notifications._delivery_child`` with :func:`trio.run_process` and talks to it over its standard
streams:

* **stdin**, parent → child, msgpack objects: the config map first (the data dir, the
  ``[notifications]`` settings, the shard, whether it derives, the instruments — on a pipe, so the
  SMTP password is never on a command line), then, in process mode, the forwarder's frames (bin:
  :mod:`actors.notifications._forward`) that the child derives and records itself, or, for a
  delivery-only child, one ``"p"`` per *poke* (look at the outbox now). **End of file stops the
  child**: when the worker is cancelled the pipe is closed (and the child killed if it is not gone
  within :data:`STOP_GRACE_S`); when the whole process dies, even by SIGKILL, the kernel closes
  the pipe — the child is never orphaned. It ignores SIGINT (a Ctrl-C in a terminal reaches the
  whole process group; the parent decides when it ends) and stops on SIGTERM.
* **stdout**, child → parent: JSON lines — ``{"ready": pid}`` once its dispatchers run (with
  ``derived``/``recorded``: its store's watermark, in process mode), then its dispatchers'
  statistics at most every :data:`REPORT_EVERY_S` when they changed, and in process mode one line
  per derived group: how far it derived (the forwarder releases those frames), what it recorded,
  and the notifications with a ``ws`` delivery (the worker publishes them). The worker's
  ``dispatchers["email"|"webhook"]`` are :class:`RemoteDispatcher` views of the last report.

A child that exits (it crashed, it was killed) is started again after a backoff
(:data:`RESTART_BACKOFF_S` doubling to :data:`RESTART_MAX_S`; back to the start after it ran
:data:`HEALTHY_AFTER_S`). Nothing is lost: deliveries it had not settled are still pending in the
outbox and go out again — at-least-once, same notification ids, exactly as after a crash of the
whole platform.

The store is shared through SQLite's WAL: the child has its own connection (reads of the outbox,
small settle transactions) and the same ``busy_timeout`` as every connection, so a write from one
process waits for the other's (milliseconds) instead of failing. Only the SQLite store is
supported here (a PostgreSQL store is not described by a data dir): with another store the worker
delivers inline and says so in the log.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import attrs
import msgpack
import trio

from actors.notifications._dispatch import Dispatcher, EmailDispatcher, Settler, WebhookDispatcher
from actors.notifications._forward import (
    Forwarder, WsForward, decode_frame, notification_from_wire, notification_wire)
from actors.settings import NotificationSettings
from actors.store.notifications import Notification
from exness_actors.instruments import Instrument

__all__ = ["DeliveryProcess", "RemoteDispatcher", "delivery_mode", "store_data_dir", "REPORT_EVERY_S"]

log = logging.getLogger("exness.notifications")

#: the child's statistics reach the parent at most this often (when they changed)
REPORT_EVERY_S = 0.05
RESTART_BACKOFF_S = 0.2
RESTART_MAX_S = 10.0
#: a child that ran this long restarts after the first backoff again
HEALTHY_AFTER_S = 30.0
#: a stopped child that has not exited this long after its stdin closed is killed
STOP_GRACE_S = 3.0
#: the child's outcomes gather this long into one transaction: fewer writes to the file the
#: engine's process writes too (each one may make the other process's writer wait)
SETTLE_EVERY_S = 0.1
#: what the child writes its outcomes within when it is asked to stop
_FLUSH_S = 2.0
_packb = msgpack.Packer(use_bin_type=True).pack
_POKE = _packb("p")


def delivery_mode(wanted: str, store: Any, *, engine_in_process: bool) -> str:
    """``process`` or ``inline`` for ``wanted`` (``[notifications] delivery``), where ``auto`` means
    a child process when an engine shares this interpreter (embedded mode) and inline elsewhere
    (split mode's ``notifications`` role is a process of its own). A store the child cannot open
    (not SQLite) means inline."""
    if wanted == "inline" or (wanted == "auto" and not engine_in_process):
        return "inline"
    if store_data_dir(store) is None:
        log.warning("event=delivery_inline reason=store_not_sqlite store=%s", type(store).__name__)
        return "inline"
    return "process"


def store_data_dir(store: Any) -> Optional[Path]:
    """The data dir of an SQLite store (what the child opens); None for another store."""
    from actors.store.sqlite import SqliteStore
    return Path(store.path).parent if isinstance(store, SqliteStore) else None


_COUNTERS = ("delivered", "failed_attempts", "dead", "dropped", "store_errors", "deferred_rounds")


class RemoteDispatcher:
    """A dispatcher of the child process as the worker sees it: the last reported statistics
    (counters add up over the children's restarts); :meth:`poke` asks the child to look at the
    outbox now."""

    def __init__(self, channel: str, owner: "DeliveryProcess") -> None:
        self.channel = channel
        self.owner = owner
        self.in_flight = 0
        self.per_target: dict[str, int] = {}
        self._before = dict.fromkeys(_COUNTERS, 0)
        self._now = dict.fromkeys(_COUNTERS, 0)

    def __getattr__(self, name: str) -> int:
        if name in _COUNTERS:
            return self._before[name] + self._now[name]
        raise AttributeError(name)

    def poke(self) -> None:
        self.owner.poke()

    def statistics(self) -> dict[str, Any]:
        statistics: dict[str, Any] = {"in_flight": self.in_flight}
        statistics.update((name, self._before[name] + self._now[name]) for name in _COUNTERS)
        if self.channel == "webhook":
            statistics["targets_busy"] = len(self.per_target)
        return statistics

    def update(self, report: dict[str, Any]) -> None:
        self.in_flight = report.get("in_flight", 0)
        self.per_target = report.get("per_target", {})
        self._now = {name: report.get(name, 0) for name in _COUNTERS}

    def child_exited(self) -> None:
        self.in_flight = 0
        self.per_target = {}
        self._before = {name: self._before[name] + self._now[name] for name in _COUNTERS}
        self._now = dict.fromkeys(_COUNTERS, 0)


class DeliveryProcess:
    """Runs the e-mail and webhook dispatchers of one shard in a child process, restarting it when
    it exits (see the module docstring). ``run`` is its task; cancelling it ends the child."""

    def __init__(self, *, data_dir: Path, settings: NotificationSettings, shard: int,
                 forwarder: Optional[Forwarder] = None, instruments: Mapping[str, Instrument] = {},
                 ws: bool = False, on_ws: Optional[Callable[[list[Notification]], None]] = None) -> None:
        self.data_dir = data_dir
        self.settings = settings
        self.shard = shard
        #: process mode: the child derives and records too, from what this forwards
        self.forwarder = forwarder
        self.instruments = instruments
        #: the child records ``ws`` deliveries and reports them to ``on_ws``
        self.ws = ws
        self.on_ws = on_ws
        self._notifications_before = 0
        self._notifications_now = 0
        self._record_errors_before = 0
        self._record_errors_now = 0
        self._child_ready = trio.Event()
        channels = ("email", "webhook") if settings.email_available else ("webhook",)
        self.dispatchers = {channel: RemoteDispatcher(channel, self) for channel in channels}
        #: the child's pid while one runs
        self.pid: Optional[int] = None
        self.starts = 0
        #: set when the first child's dispatchers run
        self.ready = trio.Event()
        #: settlements the children wrote (their counts add up over restarts)
        self._settled_before = 0
        self._settled_now = 0
        self._settle_errors_before = 0
        self._settle_errors_now = 0
        self._poked = trio.Event()

    @property
    def settled(self) -> int:
        return self._settled_before + self._settled_now

    @property
    def notifications(self) -> int:
        """Notifications the children recorded (process mode)."""
        return self._notifications_before + self._notifications_now

    @property
    def record_errors(self) -> int:
        """Failed writes of derived notifications in the children (each retried; process mode)."""
        return self._record_errors_before + self._record_errors_now

    @property
    def settle_errors(self) -> int:
        """Outcome writes that failed (and were retried) in the children."""
        return self._settle_errors_before + self._settle_errors_now

    def poke(self) -> None:
        self._poked.set()

    def statistics(self) -> dict[str, Any]:
        return {"pid": self.pid, "starts": self.starts, "running": self.pid is not None,
                "settle_errors": self.settle_errors}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        backoff = RESTART_BACKOFF_S
        while True:
            began = trio.current_time()
            try:
                code = await self._run_child()
            except OSError as error:      # it could not be started: try again after the backoff
                log.error("event=delivery_process_failed_to_start error=%r", error)
                code = None
            if trio.current_time() - began >= HEALTHY_AFTER_S:
                backoff = RESTART_BACKOFF_S
            log.warning("event=delivery_process_exited code=%s restart_in_s=%.1f", code, backoff)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_MAX_S)

    async def _run_child(self) -> Optional[int]:
        command = [sys.executable, "-m", "actors.notifications._delivery_child"]
        config = {"data_dir": str(self.data_dir), "shard": self.shard, "settings": attrs.asdict(self.settings),
                  "log_level": logging.getLogger("exness").getEffectiveLevel(),
                  "derive": self.forwarder is not None, "ws": self.ws,
                  "instruments": [attrs.asdict(instrument) for instrument in self.instruments.values()]}
        async with trio.open_nursery() as nursery:
            process = await nursery.start(functools.partial(
                trio.run_process, command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, check=False,
                deliver_cancel=_stop_child, env=_child_environment()))
            self.starts += 1
            self.pid = process.pid
            log.info("event=delivery_process_started pid=%d shard=%d start=%d data_dir=%s", process.pid,
                     self.shard, self.starts, self.data_dir)
            self._child_ready = trio.Event()
            try:
                await process.stdin.send_all(_packb(config))
                if self.forwarder is not None:
                    nursery.start_soon(self._forward, process.stdin)
                else:
                    nursery.start_soon(self._send_pokes, process.stdin)
                await self._read_reports(process.stdout)     # until the child's stdout closes
                await process.wait()
                nursery.cancel_scope.cancel()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await process.wait()                          # the child is gone
                nursery.cancel_scope.cancel()
            finally:
                self.pid = None
                self._settled_before += self._settled_now
                self._settled_now = 0
                self._settle_errors_before += self._settle_errors_now
                self._settle_errors_now = 0
                self._notifications_before += self._notifications_now
                self._notifications_now = 0
                self._record_errors_before += self._record_errors_now
                self._record_errors_now = 0
                for dispatcher in self.dispatchers.values():
                    dispatcher.child_exited()
        return process.returncode

    async def _forward(self, stdin: trio.abc.SendStream) -> None:
        assert self.forwarder is not None
        await self._child_ready.wait()       # the child said where its watermark is
        try:
            await self.forwarder.write_forever(stdin)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return                      # the child is gone: _run_child sees its exit

    async def _send_pokes(self, stdin: trio.abc.SendStream) -> None:
        self._poked.set()          # a new child looks at the outbox at once anyway; this is cheap
        while True:
            await self._poked.wait()
            self._poked = trio.Event()
            try:
                await stdin.send_all(_POKE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return                  # the child is gone: _run_child sees its exit

    async def _read_reports(self, stdout: trio.abc.ReceiveStream) -> None:
        async for line in _lines(stdout):
            try:
                report = json.loads(line)
            except ValueError:
                log.warning("event=delivery_process_bad_report line=%r", line[:200])
                continue
            forwarder = self.forwarder
            if "ready" in report:
                if forwarder is not None:
                    forwarder.child_ready(int(report["derived"]), int(report["recorded"]))
                self._child_ready.set()
                self.ready.set()
                continue
            if "derived" in report:           # process mode: the child derived (and recorded) up to here
                self._notifications_now = report.get("notifications", 0)
                self._record_errors_now = report.get("store_errors", 0)
                if report.get("ws") and self.on_ws is not None:
                    self.on_ws([notification_from_wire(wire) for wire in report["ws"]])
                if forwarder is not None:
                    forwarder.derived(int(report["derived"]), report.get("recorded"))
                continue
            if forwarder is not None and "recorded" in report:
                forwarder.recorded_seq = int(report["recorded"])
            self._settled_now = report.get("settled", 0)
            self._settle_errors_now = report.get("settle_errors", 0)
            for channel, statistics in report.get("channels", {}).items():
                if channel in self.dispatchers:
                    self.dispatchers[channel].update(statistics)


def _child_environment() -> dict[str, str]:
    """This environment, with the directory this ``actors`` package is in first on
    ``PYTHONPATH``: the child imports the same code however the parent was started."""
    import actors
    root = str(Path(actors.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


async def _stop_child(process: trio.Process) -> None:
    """Cancelled: close the child's stdin (it stops and writes the outcomes it has), kill it if it
    is still there after :data:`STOP_GRACE_S`."""
    if process.stdin is not None:
        await process.stdin.aclose()
    with trio.move_on_after(STOP_GRACE_S):
        await process.wait()
        return
    log.warning("event=delivery_process_killed pid=%d reason=did_not_stop", process.pid)
    process.kill()


async def _lines(stream: trio.abc.ReceiveStream) -> Any:
    buffered = b""
    async for chunk in stream:
        buffered += chunk
        *lines, buffered = buffered.split(b"\n")
        for line in lines:
            if line:
                yield line


# --------------------------------------------------------------------------------- the child

def _report(settler: Settler, dispatchers: dict[str, Dispatcher]) -> dict[str, Any]:
    channels = {}
    for name, dispatcher in dispatchers.items():
        statistics = dispatcher.statistics()
        if isinstance(dispatcher, WebhookDispatcher):
            statistics["per_target"] = {url: count for url, count in dispatcher.per_target.items() if count}
        channels[name] = statistics
    return {"settled": settler.settled, "settle_errors": settler.errors, "channels": channels}


class _Out:
    """The child's stdout: one JSON line per report, from several tasks."""

    def __init__(self, stream: trio.abc.SendStream) -> None:
        self.stream = stream
        self.lock = trio.Lock()

    async def send(self, report: dict[str, Any]) -> None:
        line = json.dumps(report, separators=(",", ":")).encode() + b"\n"
        async with self.lock:
            await self.stream.send_all(line)


async def _report_forever(out: _Out, settler: Settler, dispatchers: dict[str, Dispatcher],
                          worker: Any = None) -> None:
    last: Optional[dict[str, Any]] = None
    while True:
        report = _report(settler, dispatchers)
        if worker is not None:
            report["recorded"] = worker.recorded_seq
        if report != last:
            await out.send(report)
            last = report
        await trio.sleep(REPORT_EVERY_S)


async def _objects(stream: trio.abc.ReceiveStream) -> Any:
    """The msgpack objects of the parent's stdin: the config, then frames (bytes) and pokes."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    async for chunk in stream:
        unpacker.feed(chunk)
        for obj in unpacker:
            yield obj


async def _derive_forever(worker: Any, batches: trio.MemoryReceiveChannel, ws: WsForward, out: _Out) -> None:
    """Process mode: derive and record what the worker forwarded, report how far (and the ``ws``
    notifications) after each group."""
    max_batches = worker.settings.max_batches
    async for raw in batches:
        group = [decode_frame(raw)]
        while len(group) < max_batches:
            try:
                group.append(decode_frame(batches.receive_nowait()))
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        await worker.derive_batches(group)
        await out.send({"derived": worker.last_seq, "recorded": worker.recorded_seq,
                        "notifications": worker.notifications, "store_errors": worker.record_errors,
                        "ws": [notification_wire(n) for n in ws.take()]})


async def _until_stopped(cancel_scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            log.info("event=delivery_process_stopping reason=sigterm")
            cancel_scope.cancel()
            return


async def child_main() -> None:
    """The child: read the config, run the dispatchers, poke them on ``p``; in process mode derive
    and record the frames the worker forwards; stop at EOF."""
    from actors.notifications.worker import NotificationWorker, http_client, keep_watermark
    from actors.store.sqlite import SqliteStore

    stdin = trio.lowlevel.FdStream(os.dup(0))
    out = _Out(trio.lowlevel.FdStream(os.dup(1)))
    objects = _objects(stdin)
    try:
        config = await objects.__anext__()
    except StopAsyncIteration:
        return
    logging.getLogger().setLevel(int(config.get("log_level", logging.INFO)))
    settings = NotificationSettings(**config["settings"])
    shard = int(config["shard"])
    store = await SqliteStore.open(config["data_dir"])
    client = http_client(settings)
    settler = Settler(store, time.time_ns, every_s=SETTLE_EVERY_S)
    common: dict[str, Any] = dict(store=store, settler=settler, settings=settings, shard=shard, clock=time.time_ns)
    dispatchers: dict[str, Dispatcher] = {"webhook": WebhookDispatcher(client=client, **common)}
    if settings.email_available:
        dispatchers["email"] = EmailDispatcher(**common)
    worker: Any = None
    ws = WsForward()
    to_derive, from_parent = trio.open_memory_channel[bytes](float("inf"))    # bounded by the worker's frames
    if config.get("derive"):
        instruments = {spec["symbol"]: Instrument(**spec) for spec in config.get("instruments", [])}
        worker = NotificationWorker(store=store, settings=settings, instruments=instruments, shard=shard,
                                    last_seq=await store.notifier_seq(shard), ws=bool(config.get("ws")))
        worker.dispatchers.update(dispatchers)
        if config.get("ws"):
            worker.dispatchers["ws"] = ws
    try:
        async with trio.open_nursery() as nursery:
            settler_scope = trio.CancelScope()

            async def settle() -> None:
                with settler_scope:
                    await settler.run()
            nursery.start_soon(settle)
            async with trio.open_nursery() as delivering:
                for dispatcher in dispatchers.values():
                    await delivering.start(dispatcher.run)
                derived = trio.Event()
                if worker is not None:
                    async def derive() -> None:
                        await _derive_forever(worker, from_parent, ws, out)
                        derived.set()
                    delivering.start_soon(derive)
                    delivering.start_soon(keep_watermark, worker)
                    await out.send({"ready": os.getpid(), "derived": worker.last_seq, "recorded": worker.recorded_seq})
                else:
                    await out.send({"ready": os.getpid()})
                delivering.start_soon(_until_stopped, delivering.cancel_scope)
                delivering.start_soon(_report_forever, out, settler, dispatchers, worker)
                log.info("event=delivery_process_ready pid=%d shard=%d channels=%s derive=%s", os.getpid(), shard,
                         ",".join(dispatchers), worker is not None)
                async for obj in objects:      # frames to derive and pokes; the end of stdin is the stop
                    if isinstance(obj, bytes):
                        to_derive.send_nowait(obj)
                    else:
                        for dispatcher in dispatchers.values():
                            dispatcher.poke()
                to_derive.close()
                if worker is not None:          # what was forwarded is recorded, the watermark written
                    with trio.move_on_after(_FLUSH_S):
                        await derived.wait()
                        await worker.write_watermark()
                delivering.cancel_scope.cancel()
            with trio.move_on_after(_FLUSH_S):   # what was sent is written before the exit
                await settler.flush()
            settler_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()
            await store.close()
        log.info("event=delivery_process_stopped pid=%d settled=%d", os.getpid(), settler.settled)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # the parent decides when this ends
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s process=delivery %(message)s")
    trio.run(child_main)


if __name__ == "__main__":
    main()
