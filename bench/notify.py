"""The notifications worker: webhook deliveries per second, and what the worker costs the engine.

* ``webhooks_per_s`` — 1,000 accounts, each with its own webhook URL (1,000 subscribers) on a
  loopback receiver in another process (trio + h11, answers 200 at once); N fills are handed to
  the worker at once and the clock runs until every delivery is settled in the store (signed
  POST, outcome recorded). SQLite store, e-mail off, the ws sink a no-op.
  Delivered as the platform delivers (``--delivery``, default ``auto``: the embedded platform's
  child process; ``inline`` for the worker's own tasks, as before).
* ``engine_ratio`` — the engine actor's inputs per second (journal on, fsync ``off`` so the
  worker's cost is not hidden behind fsyncs; one producer with back-pressure, as
  ``bench/journal.py``) with the worker subscribed (lossless, every account with ws + webhook;
  wired as the platform wires it: in process mode the worker only forwards the inputs that can
  notify, and the child process derives, records and delivers e-mail and webhooks — or, with
  ``--delivery inline``, all of it in the worker's tasks, yielding while the engine has inputs queued) over
  the same run without it (``webhooks_delivered``: how many of the run's webhooks went out while
  it ran; ``notifications``: how many the worker had recorded). The input mix: quotes with a
  market order every ``--orders-every`` inputs (each order is a fill, so a notification and two
  deliveries). ``engine_ratio_all_fills``
  is the same with every input an order: the worst case. ``--repeat N`` alternates N runs
  without and with and reports the median of the N ratios.
* ``engine_cpu_ratio`` (and ``_all_fills``) — the engine process's CPU seconds per input without
  the worker over with it (``time.process_time``: the engine's thread, the worker's tasks in it and
  the store's threads; the delivery child and the receiver are other processes). Less noisy than
  wall time on a shared machine: it says what the worker costs the engine's interpreter, not
  whether a core was free. ``child_cpu_s`` is the child's CPU over the same run (deriving,
  recording and delivering, in process mode).
  ``engine_thread_cpu_ratio`` is the same with the CPU of the engine's thread only
  (``time.thread_time``: the engine and the worker's trio tasks, not the store's threads).

    python bench/notify.py [--quick] [--delivery auto|process|inline] [--repeat N]

Prints one JSON object per figure. The machine is shared (2 cores): figures vary run to run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.engine import actor as engine_actor  # noqa: E402
from actors.engine.actor import EngineHandle  # noqa: E402
from actors.engine.messages import EventBatch, Overloaded  # noqa: E402
from actors.notifications import KINDS  # noqa: E402
from actors.notifications import worker as notify_worker  # noqa: E402
from actors.settings import NotificationSettings  # noqa: E402
from actors.store.notifications import Preferences  # noqa: E402
from actors.store.sqlite import SqliteStore  # noqa: E402
from exness_actors.commands import CreateAccount, PlaceOrder, Quote  # noqa: E402
from exness_actors.engine import Engine  # noqa: E402
from exness_actors.events import PositionOpened  # noqa: E402
from exness_actors.instruments import DEFAULT_INSTRUMENTS, CoreConfig  # noqa: E402
from exness_actors.journal import JournalWriter  # noqa: E402

SUBSCRIBERS = 1_000
INSTRUMENTS = {i.symbol: i for i in DEFAULT_INSTRUMENTS}


def emit(metric: str, value: float, unit: str, target: float | None = None, better: str = "higher",
         **extra) -> None:
    line = {"bench": "notify", "metric": metric, "value": round(value, 3), "unit": unit, "target": target,
            "better": better}
    line.update(extra)
    print(json.dumps(line), flush=True)


# ------------------------------------------------------------------ the receiving end (its own process)

async def _serve_connection(stream: trio.SocketStream, counter: list[int]) -> None:
    import h11
    connection = h11.Connection(h11.SERVER)
    try:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                connection.receive_data(data)
                continue
            if isinstance(event, h11.EndOfMessage):
                counter[0] += 1
                await stream.send_all(connection.send(h11.Response(status_code=200, headers=[
                    ("content-length", "0")])) + connection.send(h11.EndOfMessage()))
                connection.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
        return


async def serve_webhooks(port_file: str) -> None:
    counter = [0]
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    Path(port_file).write_text(str(listeners[0].socket.getsockname()[1]))
    await trio.serve_listeners(functools.partial(_serve_connection, counter=counter), listeners)


class Receiver:
    def __init__(self, directory: Path) -> None:
        port_file = directory / "port"
        self.process = subprocess.Popen([sys.executable, __file__, "--serve-webhooks", str(port_file)])
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text()):
            if time.monotonic() > deadline:
                raise RuntimeError("the webhook receiver did not start")
            time.sleep(0.05)
        self.port = int(port_file.read_text())

    def url(self, account: int) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{account}"

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


# ------------------------------------------------------------------ webhooks per second

def settings() -> NotificationSettings:
    return NotificationSettings(poll_interval_s=0.05, webhook_concurrency=64, webhook_per_target=2)


async def subscribe_all(store: SqliteStore, receiver: Receiver) -> None:
    for account in range(1, SUBSCRIBERS + 1):
        await store.put_preferences(Preferences(account_id=account, events=KINDS, channels=("ws", "webhook"),
                                                webhook_url=receiver.url(account), webhook_secret=f"s{account}",
                                                updated_at=1))


def fill(seq: int, account: int) -> PositionOpened:
    return PositionOpened(position_id=seq, account_id=account, order_id=seq, symbol="BTCUSDT", side="buy",
                          qty=153_846, open_price=6_500_000, margin=10_000, leverage=10, liquidation_price=5_850_000,
                          take_profit=None, stop_loss=None, trailing_stop=None, ts=seq)


async def no_ws(batch: list) -> None:
    return None


def delivery_of(mode: str) -> str:
    """``--delivery`` as the worker's ``delivery``: ``auto`` is what the embedded platform does."""
    return "process" if mode == "auto" else mode


async def ready(worker) -> None:
    """The delivery child runs (its start-up is not measured)."""
    if worker.delivery is not None:
        with trio.fail_after(60):
            await worker.delivery.ready.wait()


def child_cpu_s(worker) -> float | None:
    """The delivery child's CPU seconds so far (Linux ``/proc``)."""
    if worker is None or worker.delivery is None or worker.delivery.pid is None:
        return None
    try:
        fields = Path(f"/proc/{worker.delivery.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure_webhooks(directory: Path, receiver: Receiver, notifications: int, delivery: str) -> dict:
    store = await SqliteStore.open(directory)
    await subscribe_all(store, receiver)
    items = [(seq, seq, [fill(seq, 1 + seq % SUBSCRIBERS)]) for seq in range(1, notifications + 1)]
    send, receive = trio.open_memory_channel(1024)
    async with trio.open_nursery() as nursery:
        worker = await nursery.start(functools.partial(
            notify_worker.run, inbox=receive, store=store, settings=settings(), instruments=INSTRUMENTS, sink=no_ws,
            delivery=delivery_of(delivery)))
        await ready(worker)
        started = time.perf_counter()
        for first in range(0, len(items), 1000):
            chunk = items[first:first + 1000]
            await send.send(EventBatch(chunk, chunk[-1][0]))
        webhook = worker.dispatchers["webhook"]
        while webhook.delivered + webhook.failed_attempts < notifications or worker.statistics().settled < 2 * notifications:
            await trio.sleep(0.01)
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    await store.close()
    return {"per_s": notifications / elapsed, "delivered": webhook.delivered, "failed": webhook.failed_attempts,
            "seconds": elapsed}


# ------------------------------------------------------------------ the engine with and without the worker

def make_engine() -> Engine:
    engine = Engine(CoreConfig(instruments=DEFAULT_INSTRUMENTS, stale_after_ns=10**19))
    for account in range(1, SUBSCRIBERS + 1):
        engine.submit(CreateAccount(account_id=account, initial_deposit=10**12), ts=1)
    engine.submit(Quote(symbol="BTCUSDT", bid=6_500_000, ask=6_500_100), ts=2)
    return engine


def command(index: int, orders_every: int) -> object:
    if index % orders_every == 0:
        return PlaceOrder(account_id=1 + index % SUBSCRIBERS, symbol="BTCUSDT", side="buy" if index % 2 else "sell",
                          type="market", margin=10_000, leverage=10)
    bid = 6_500_000 + (index % 200) - 100
    return Quote(symbol="BTCUSDT", bid=bid, ask=bid + 100)


async def engine_rate(directory: Path, seconds: float, orders_every: int, receiver: Receiver | None,
                      delivery: str = "auto") -> dict:
    engine = make_engine()
    journal = JournalWriter(directory / "journal")
    handle = EngineHandle(engine, 65_536)
    store = await SqliteStore.open(directory) if receiver is not None else None
    async with trio.open_nursery() as nursery:
        worker = None
        if receiver is not None:
            await subscribe_all(store, receiver)
            subscription = handle.subscribe("notifications", max_buffer=256, lossless=True)
            worker = await nursery.start(functools.partial(   # wired as the platform wires it
                notify_worker.run, inbox=subscription.receive, store=store, settings=settings(),
                instruments=INSTRUMENTS, sink=no_ws, engine_busy=lambda: bool(handle.statistics()["inbox_depth"]),
                delivery=None if delivery == "auto" else delivery))
            await ready(worker)
        await nursery.start(functools.partial(engine_actor.run, handle=handle, journal=journal, fsync="off"))
        start_seq = handle.durable_seq
        child_before = child_cpu_s(worker)
        cpu_started, thread_started = time.process_time(), time.thread_time()
        started = time.perf_counter()
        deadline = started + seconds
        index = 0
        while time.perf_counter() < deadline:
            for _ in range(512):
                index += 1
                item = command(index, orders_every)
                try:
                    handle.send_nowait(item)
                except Overloaded:
                    await handle.send(item)
            await trio.sleep(0)
        while handle.durable_seq < start_seq + index:
            await trio.sleep(0.001)
        elapsed = time.perf_counter() - started
        cpu_s = time.process_time() - cpu_started
        thread_s = time.thread_time() - thread_started
        result = {"per_s": index / elapsed, "inputs": index, "cpu_s": cpu_s, "cpu_per_input_us": cpu_s / index * 1e6,
                  "thread_cpu_per_input_us": thread_s / index * 1e6}
        if worker is not None:
            stats = worker.statistics()
            child_after = child_cpu_s(worker)
            result.update(notifications=stats.notifications, worker_lag=stats.lag,
                          webhooks_delivered=worker.dispatchers["webhook"].delivered,
                          delivery="process" if worker.delivery is not None else "inline",
                          forwarder=stats.forwarder,
                          child_cpu_s=None if child_before is None or child_after is None
                          else round(child_after - child_before, 3))
        await handle.stop()
        nursery.cancel_scope.cancel()
    journal.close()
    if store is not None:
        await store.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--orders-every", type=int, default=10, help="one market order every N inputs (default 10)")
    parser.add_argument("--delivery", choices=("auto", "process", "inline"), default="auto",
                        help="where e-mail and webhooks go out (default auto: as the embedded platform, a child)")
    parser.add_argument("--repeat", type=int, default=1, help="alternate N runs without/with; median ratios")
    parser.add_argument("--skip-webhooks", action="store_true", help="only the engine ratios")
    parser.add_argument("--serve-webhooks", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_webhooks:
        trio.run(serve_webhooks, args.serve_webhooks)
        return
    seconds = args.seconds or (2.0 if args.quick else 8.0)
    notifications = 2_000 if args.quick else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        receiver = Receiver(root)
        try:
            if not args.skip_webhooks:
                hooks = trio.run(measure_webhooks, root / "hooks", receiver, notifications, args.delivery)
                print(f"[webhooks] {hooks}", file=sys.stderr)
                emit("webhooks_per_s", hooks["per_s"], "1/s", subscribers=SUBSCRIBERS, notifications=notifications,
                     delivery=delivery_of(args.delivery))
            for label, every in (("", args.orders_every), ("_all_fills", 1)):
                runs = []
                for attempt in range(args.repeat):
                    without = trio.run(engine_rate, root / f"without{label}{attempt}", seconds, every, None)
                    with_worker = trio.run(engine_rate, root / f"with{label}{attempt}", seconds, every, receiver,
                                           args.delivery)
                    print(f"[engine{label}] without {without} with {with_worker}", file=sys.stderr)
                    runs.append((with_worker["per_s"] / without["per_s"],
                                 without["cpu_per_input_us"] / with_worker["cpu_per_input_us"], without, with_worker,
                                 without["thread_cpu_per_input_us"] / with_worker["thread_cpu_per_input_us"]))
                ratio, _cpu, without, with_worker, _thread = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
                emit(f"engine_ratio{label}", ratio, "ratio",
                     0.9 if not label else None, inputs_per_s_without=round(without["per_s"]),
                     inputs_per_s_with=round(with_worker["per_s"]), orders_every=every,
                     notifications=with_worker.get("notifications"), delivery=with_worker.get("delivery"),
                     webhooks_delivered=with_worker.get("webhooks_delivered"),
                     runs=len(runs), ratios=[round(run[0], 3) for run in runs])
                emit(f"engine_cpu_ratio{label}", statistics.median(run[1] for run in runs), "ratio", None,
                     cpu_per_input_us_without=round(without["cpu_per_input_us"], 2),
                     cpu_per_input_us_with=round(with_worker["cpu_per_input_us"], 2),
                     child_cpu_s=with_worker.get("child_cpu_s"), delivery=with_worker.get("delivery"),
                     ratios=[round(run[1], 3) for run in runs])
                emit(f"engine_thread_cpu_ratio{label}", statistics.median(run[4] for run in runs), "ratio", None,
                     thread_cpu_per_input_us_without=round(without["thread_cpu_per_input_us"], 2),
                     thread_cpu_per_input_us_with=round(with_worker["thread_cpu_per_input_us"], 2),
                     delivery=with_worker.get("delivery"), ratios=[round(run[4], 3) for run in runs])
        finally:
            receiver.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
