"""The bridge from trio to asyncio libraries (asyncpg: the PostgreSQL store).

Redis does not use it any more: the process edge talks to Redis on trio's own sockets
(actors/bus/redis_client.py), because it makes several calls per request and each crossing here
costs two thread wake-ups (docs/decisions.md).

Choice (DESIGN.md §6): **an asyncio event loop in one dedicated thread**, driven from trio.
``await bridge.run(fn, *args)`` schedules ``fn(*args)`` (an ``async def`` of the asyncio
library) on that loop with ``call_soon_threadsafe`` and parks the trio task until the asyncio
task finishes; the completion is delivered back with trio's ``TrioToken.run_sync_soon``. No trio
worker thread is blocked while the asyncio side waits (on the network, on a lock of a pool), so
any number of calls can be in flight.

Why not trio-asyncio: it runs asyncio *inside* the trio loop, which is tidy, but every
``aio_as_trio`` crossing goes through its own scheduler and it ties the whole process to one
library's version of both loops. A loop in a thread has a fixed, measured cost per crossing (two
thread wake-ups, ~40–120 µs here), keeps the asyncio libraries on a stock asyncio loop (where
they are tested), and isolates their latency spikes from the trio scheduler. The rule that
follows from the cost: **cross once per batch** — the callers here put whole batches of SQL
statements (a transaction) into one ``fn``.

Cancellation: cancelling the trio caller cancels the asyncio task and waits for it to finish,
so a connection is never left mid-command by a caller that went away.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable, Callable, Coroutine, Optional, TypeVar, cast

import outcome
import trio

__all__ = ["AsyncioBridge", "open_bridge"]

T = TypeVar("T")


class AsyncioBridge:
    """An asyncio loop in a daemon thread; use :func:`open_bridge` (an async context manager)."""

    def __init__(self, name: str = "aio-bridge") -> None:
        self.name = name
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self.calls = 0

    def start(self) -> None:
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            ready.set()
            try:
                loop.run_forever()
            finally:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name=self.name, daemon=True)
        self._thread.start()
        ready.wait()

    def stop(self) -> None:
        loop, thread = self.loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self.loop = None
        self._thread = None

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await fn(*args)`` on the asyncio loop; return its result or raise its error."""
        loop = self.loop
        if loop is None:
            raise RuntimeError(f"{self.name}: the bridge is not running")
        self.calls += 1
        token = trio.lowlevel.current_trio_token()
        task_box: list[asyncio.Task] = []
        result: list[outcome.Outcome] = []
        done = trio.Event()

        def deliver(value: outcome.Outcome) -> None:
            result.append(value)
            done.set()

        def finished(task: asyncio.Task) -> None:
            if task.cancelled():
                value: outcome.Outcome = outcome.Error(
                    RuntimeError(f"{self.name}: the asyncio task was cancelled"))
            elif task.exception() is not None:
                value = outcome.Error(task.exception())  # type: ignore[arg-type]
            else:
                value = outcome.Value(task.result())
            try:
                token.run_sync_soon(deliver, value)
            except trio.RunFinishedError:   # the trio side is gone; nobody waits
                pass

        def start() -> None:
            task = loop.create_task(cast(Coroutine[Any, Any, T], fn(*args)))
            task_box.append(task)
            task.add_done_callback(finished)

        loop.call_soon_threadsafe(start)
        try:
            await done.wait()
        except BaseException:
            # Cancelled (or the trio run is ending): cancel the asyncio side and wait for it,
            # shielded, so nothing keeps running on a connection we no longer own.
            def cancel() -> None:
                if task_box:
                    task_box[0].cancel()
            loop.call_soon_threadsafe(cancel)
            with trio.CancelScope(shield=True):
                with trio.move_on_after(5):
                    await done.wait()
            raise
        return result[0].unwrap()


class open_bridge:
    """``async with open_bridge("postgres") as bridge: await bridge.run(pool.fetch, sql)``."""

    def __init__(self, name: str = "aio-bridge") -> None:
        self.bridge = AsyncioBridge(name)

    async def __aenter__(self) -> AsyncioBridge:
        await trio.to_thread.run_sync(self.bridge.start)
        return self.bridge

    async def __aexit__(self, *exc: Any) -> None:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.bridge.stop)
