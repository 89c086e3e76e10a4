"""Where a request's time goes: per-request stage stamps, event-loop task steps and GC pauses.

Theory of operation
-------------------
Off unless the process starts with ``EXNESS_STAGE_PROFILE=<file>`` (``bench/http_orders.py
--stages`` sets it for the server it starts). When off, :data:`ACTIVE` is None and the lean HTTP
path (:mod:`actors.gateway._fast`) pays one ``is None`` test per request; nothing else runs.

When on, for the life of :func:`profiling` (the supervisor wraps the running system in it):

* every request on the lean path gets a :class:`RequestStamps` (wall-clock ns, the engine's own
  clock, so its ``ts`` stamp lines up): arrival in the ASGI app, authenticated, submitted to the
  engine, the engine's apply stamp (the reply's ``ts``), the group commit that covered its
  ``seq`` (write + fsync start and end, from a wrapper around the journal task's ``_write``),
  the reply in the handler's hands, answer built, rendered, sent;
* a trio instrument measures every uninterrupted task step (from ``before_task_step`` to
  ``after_task_step``): per task name the count, total and longest, and the longest steps with
  when they ran — a step that holds the loop delays every request that is ready meanwhile;
* ``gc.callbacks`` time each collection by generation.

At exit the whole record is written as JSON to the file; the bench cuts it to its measured window.
Measurement only: nothing here changes what is answered.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import trio

__all__ = ["ACTIVE", "ENV", "Profile", "RequestStamps", "Stamped", "profiling"]

#: the environment variable naming the file the profile is written to (unset: no profiling)
ENV = "EXNESS_STAGE_PROFILE"
#: task steps at least this long are kept one by one (with their start time)
LONG_STEP_NS = 1_000_000
#: at most this many long steps are kept (the longest)
LONG_STEPS_KEPT = 2000

#: the running profile, or None (the normal case)
ACTIVE: Optional["Profile"] = None


class RequestStamps:
    """One request's stamps (``time.time_ns``); 0 where a stage did not happen."""

    __slots__ = ("route", "arrived", "authenticated", "submitted", "applied", "seq", "replied",
                 "answered", "rendered", "sent", "status")

    def __init__(self, route: str, arrived: int) -> None:
        self.route = route
        self.arrived = arrived
        self.authenticated = self.submitted = self.applied = self.seq = self.replied = 0
        self.answered = self.rendered = self.sent = self.status = 0

    def row(self) -> list:
        return [self.route, self.status, self.arrived, self.authenticated, self.submitted, self.applied,
                self.seq, self.replied, self.answered, self.rendered, self.sent]


class Stamped:
    """The gateway as a profiled request's handler sees it: the same object, except that
    ``submit`` stamps the request's submit, apply (the reply's ``ts`` and ``seq``) and reply."""

    def __init__(self, gateway: Any, stamps: RequestStamps) -> None:
        self._gateway = gateway
        self._stamps = stamps

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gateway, name)

    async def submit(self, command: Any, **kwargs: Any) -> Any:
        stamps = self._stamps
        stamps.submitted = time.time_ns()
        result = await self._gateway.submit(command, **kwargs)
        stamps.replied = time.time_ns()
        reply = result[1]
        stamps.applied = reply.ts
        stamps.seq = reply.seq
        return result


class _LoopSteps(trio.abc.Instrument):
    """Task step lengths (wall clock and the thread's CPU time), per task name; the longest steps;
    and per wall-clock second, the steps run and their CPU time (steps per request = scheduling
    rounds a request costs, whatever the machine's load)."""

    def __init__(self, profile: "Profile") -> None:
        self.profile = profile
        self.started = 0
        self.started_cpu = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.started = time.perf_counter_ns()
        self.started_cpu = time.thread_time_ns()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if not self.started:   # the step that added this instrument
            return
        elapsed = time.perf_counter_ns() - self.started
        cpu = time.thread_time_ns() - self.started_cpu
        self.started = 0
        profile = self.profile
        name = task.name
        entry = profile.steps.get(name)
        if entry is None:
            profile.steps[name] = [1, elapsed, elapsed, cpu, cpu]
        else:
            entry[0] += 1
            entry[1] += elapsed
            entry[3] += cpu
            if elapsed > entry[2]:
                entry[2] = elapsed
            if cpu > entry[4]:
                entry[4] = cpu
        now = time.time_ns()
        second = profile.per_second.get(now // 1_000_000_000)
        if second is None:
            profile.per_second[now // 1_000_000_000] = [1, cpu]
        else:
            second[0] += 1
            second[1] += cpu
        if elapsed >= LONG_STEP_NS:
            long_steps = profile.long_steps
            item = (elapsed, now - elapsed, _owner(task), cpu)
            if len(long_steps) < LONG_STEPS_KEPT:
                heapq.heappush(long_steps, item)
            else:
                heapq.heappushpop(long_steps, item)


def _owner(task: trio.lowlevel.Task) -> str:
    """Who a step belonged to: the task's name, and where it is waiting now (a wrapper such as
    the topology's ``_fail_fast`` names no actor; the frames it awaits do)."""
    frames = [f"{frame.f_globals.get('__name__', '?')}.{frame.f_code.co_name}"
              for frame, _line in task.iter_await_frames()]
    inner = [frame for frame in frames if not frame.startswith(("trio.", "contextlib.", "actors.topology."))]
    return f"{task.name} @ {' > '.join(inner[:3]) if inner else '-'}"


class Profile:
    """What one profiled run records (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.requests: list[RequestStamps] = []
        self.writes: list[tuple[int, int, int, int, bool]] = []   # first_seq, start, end, bytes, fsync
        self.steps: dict[str, list[int]] = {}     # task name -> count, total ns, max ns, cpu ns, max cpu ns
        self.per_second: dict[int, list[int]] = {}   # unix second -> steps, cpu ns
        self.long_steps: list[tuple[int, int, str, int]] = []   # heap of (ns, start, task name, cpu ns)
        self.gc: list[tuple[int, int, int]] = []                  # generation, start, ns
        self._gc_started = 0
        self._lock = threading.Lock()

    def request(self, route: str) -> RequestStamps:
        stamps = RequestStamps(route, time.time_ns())
        self.requests.append(stamps)
        return stamps

    def wrap_write(self, write: Any) -> Any:
        """The journal task's ``_write(journal, data, first_seq, do_fsync)``, timed (worker thread)."""
        def timed_write(journal: Any, data: bytes, first_seq: int, do_fsync: bool) -> None:
            started = time.time_ns()
            try:
                write(journal, data, first_seq, do_fsync)
            finally:
                ended = time.time_ns()
                with self._lock:
                    self.writes.append((first_seq, started, ended, len(data), do_fsync))
        return timed_write

    def on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter_ns()
        else:
            elapsed = time.perf_counter_ns() - self._gc_started
            self.gc.append((info.get("generation", -1), time.time_ns() - elapsed, elapsed))

    def dump(self) -> dict:
        return {"requests": [stamps.row() for stamps in self.requests],
                "request_fields": ["route", "status", "arrived", "authenticated", "submitted", "applied",
                                   "seq", "replied", "answered", "rendered", "sent"],
                "writes": sorted(self.writes), "steps": self.steps, "per_second": self.per_second,
                "long_steps": sorted(self.long_steps, reverse=True), "gc": self.gc}


@contextlib.contextmanager
def profiling() -> Iterator[Optional[Profile]]:
    """Profile the running system while inside, if ``EXNESS_STAGE_PROFILE`` names a file; call
    it inside ``trio.run``. Yields the profile (None when off)."""
    global ACTIVE
    target = os.environ.get(ENV)
    if not target:
        yield None
        return
    from actors.engine import actor as engine_actor   # the journal task looks ``_write`` up per call
    profile = Profile(Path(target))
    original_write = engine_actor._write
    engine_actor._write = profile.wrap_write(original_write)   # type: ignore[assignment]
    instrument = _LoopSteps(profile)
    trio.lowlevel.add_instrument(instrument)
    gc.callbacks.append(profile.on_gc)
    ACTIVE = profile
    try:
        yield profile
    finally:
        ACTIVE = None
        gc.callbacks.remove(profile.on_gc)
        with contextlib.suppress(KeyError):
            trio.lowlevel.remove_instrument(instrument)
        engine_actor._write = original_write   # type: ignore[assignment]
        profile.path.write_text(json.dumps(profile.dump()))
