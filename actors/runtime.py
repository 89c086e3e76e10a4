"""Process-level concerns: tuning of the engine process, and the stop signals.

The engine keeps a large, long-lived book (accounts, positions, orders, index entries) whose
objects form no reference cycles worth collecting. CPython's cyclic collector would rescan it over
and over: measured on the core benchmark, the default thresholds cost ~14% of throughput at
100k accounts, and recovery ran 2× slower with the collector on.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
from types import FrameType
from typing import Iterator, Optional

import trio

__all__ = ["StartupError", "tune_gc", "GC_THRESHOLDS", "STOP_SIGNALS", "wait_for_stop_signal", "restoring_stop_signals"]

log = logging.getLogger("exness.supervisor")

class StartupError(Exception):
    """The system cannot start; the message tells the operator what to do."""


#: the signals that ask a process for a graceful stop
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: young-generation allocations between collections, then the two older generations' ratios
GC_THRESHOLDS = (100_000, 50, 100)


def tune_gc() -> None:
    """Freeze what exists (the recovered book) out of the collector, and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _repeated_stop_signal(signum: int, frame: Optional[FrameType]) -> None:
    log.warning("event=signal_ignored signal=%s reason=already_stopping", signal.Signals(signum).name)


async def wait_for_stop_signal(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                               ) -> signal.Signals:
    """Wait for SIGTERM or SIGINT and return it.

    A second one must not cut the drain short (no final snapshot, no clean exit): ``timeout(1)``
    and a shell's process group deliver SIGTERM twice, and trio re-raises a signal still queued
    when its receiver closes. So a handler that logs and ignores is installed first: it is what
    the receiver restores when it closes, and it stays until :func:`restoring_stop_signals`
    puts the process's own handlers back. SIGKILL still stops at once. Start it with
    ``nursery.start``: it reports started once the signals are caught, so a stop signal sent as
    soon as the process says it is ready is a graceful stop, not a kill."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _repeated_stop_signal)
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        task_status.started()
        async for received in signals:
            log.info("event=signal_received signal=%s", signal.Signals(received).name)
            return signal.Signals(received)
    raise AssertionError("the signal receiver ended")   # pragma: no cover - it never ends


@contextlib.contextmanager
def restoring_stop_signals() -> Iterator[None]:
    """Put back the stop signals' handlers as they were on entry (see :func:`wait_for_stop_signal`)."""
    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
