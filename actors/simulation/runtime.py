"""The deterministic runtime under ``exness-actors simulate``: one seed, one history.

Theory of operation
-------------------
The simulation runs the real actors in one ``trio.run`` on :class:`trio.testing.MockClock`
with ``autojump_threshold=0``: whenever every task is blocked, simulated time jumps to the next
deadline, so a simulated minute costs only the CPU work done in it. For two runs with the same
seed to take exactly the same path, every source of ordering must be explicit. They are:

* **trio's scheduler.** Each scheduling round runs the tasks that became runnable in an order
  drawn from ``trio._core._run._r``, an unseeded ``random.Random`` (and, outside Hypothesis,
  only reversed at random, which leaves the order tasks were woken in — e.g. deadline ties
  broken by ``id()`` of cancel scopes — in charge). :func:`deterministic_trio` switches on the
  mode trio itself uses under Hypothesis (``_ALLOW_DETERMINISTIC_SCHEDULING``: sort each batch
  by task creation order, then shuffle it) and seeds ``_r`` from the simulation seed. Both are
  private trio names (trio 0.35); they are restored afterwards.
* **Worker threads.** A thread finishes at a *real* time: under an autojumping clock the
  simulated time (and the batch of commands) it finishes in depends on the machine. The engine
  writes its journal inline (``actors.engine.actor.run(journal_io="inline")``) and every other
  ``trio.to_thread.run_sync`` in the process — the SQLite store, argon2 password hashing,
  recovery — runs inline too while the simulation runs (:func:`run_inline`). No socket, no
  subprocess: the gateway is driven through its test client and snapshots are built in-process.
* **Wall clocks.** The engine's timestamps come from :func:`simulated_ns` (an epoch plus trio's
  mock time), and so do the gateway's. What still reads the wall clock only checks it (JWT
  expiry, with a ten-year lifetime in the simulation) or only measures (metrics, timings that
  the report keeps in a separate section). Rate limiters read ``time.monotonic``: they are
  switched off in the simulation's configuration.
* **Randomness.** Every random choice comes from a ``random.Random`` seeded with a string built
  from the simulation seed (:func:`seeded_random`; string seeds are hashed with SHA-512, not with
  Python's randomised ``hash``). What draws from the OS (snapshot nonces, refresh tokens, salts)
  never reaches the report.
* **String hashing.** Iterating a set of strings depends on ``PYTHONHASHSEED``. The command line
  re-executes itself with ``PYTHONHASHSEED=0`` (see ``supervisor.py``), and the tests compare a
  run in the test process (random hash seed) with one in a subprocess, so a dependence on it
  would show up as a difference.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, Callable, Iterator

import trio

__all__ = ["EPOCH_NS", "simulated_ns", "deterministic_trio", "run_inline", "seeded_random", "REEXEC_ENV"]

#: Simulated wall-clock origin: 2026-01-01T00:00:00Z in ns. Trio's mock clock starts at 0.
EPOCH_NS = 1_767_225_600 * 1_000_000_000

#: The environment the command line re-executes itself with (string hashing fixed).
REEXEC_ENV = {"PYTHONHASHSEED": "0"}


def simulated_ns() -> int:
    """The simulation's wall clock in ns: :data:`EPOCH_NS` plus trio's (mock) time."""
    return EPOCH_NS + round(trio.current_time() * 1_000_000_000)


def seeded_random(seed: int, *parts: Any) -> random.Random:
    """An independent generator for one purpose (``seeded_random(seed, "trader", 3)``)."""
    return random.Random(":".join(["exness-simulate", str(seed), *map(str, parts)]))


async def run_inline(function: Callable[..., Any], *args: Any, **_options: Any) -> Any:
    """``trio.to_thread.run_sync`` without the thread: the call runs on the event loop.

    It keeps the two scheduling points of the real one (a cancellation check before, a
    cancel-shielded checkpoint after), so callers see the same task switches. ``limiter`` and
    ``abandon_on_cancel`` do not apply: one call runs at a time anyway.
    """
    await trio.lowlevel.checkpoint_if_cancelled()
    result = function(*args)
    await trio.lowlevel.cancel_shielded_checkpoint()
    return result


@contextlib.contextmanager
def deterministic_trio(seed: int) -> Iterator[None]:
    """Seed trio's scheduler and run worker-thread calls inline until the block ends.

    Process-wide (these are module globals): use it around a ``trio.run`` that owns the
    process — the simulation — and nothing else concurrently.
    """
    from trio._core import _run as trio_run   # private: the scheduler's randomness (trio 0.35)

    saved_flag = trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    saved_state = trio_run._r.getstate()
    saved_run_sync = trio.to_thread.run_sync
    trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True   # type: ignore[misc]
    trio_run._r.seed(f"exness-simulate:{seed}:scheduler")
    trio.to_thread.run_sync = run_inline               # type: ignore[assignment]
    try:
        yield
    finally:
        trio.to_thread.run_sync = saved_run_sync       # type: ignore[assignment]
        trio_run._r.setstate(saved_state)
        trio_run._ALLOW_DETERMINISTIC_SCHEDULING = saved_flag   # type: ignore[misc]
