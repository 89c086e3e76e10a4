"""Durable commands per second through the engine actor, and ack latency at fixed rates.

Every command is journaled and fsynced (policy ``batch``, group commit) before its reply is
released. Two loads: (1) request/reply — market open and close of 1,000 accounts issued by many
concurrent client tasks, each awaiting its durable reply (ack latency at 1k, 10k and max
commands/s); (2) engine capacity — one producer feeding market orders with back-pressure,
measuring the durable seq reached per second (``durable_commands_per_s``). Prints one JSON
object per figure. The process is set up as the engine process is (``actors.runtime.tune_gc``
after the book is built, as ``supervisor.run_system`` does after recovery).

    python bench/journal.py [--quick] [--seconds S]
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.engine import actor as engine_actor  # noqa: E402
from actors.engine.actor import EngineHandle  # noqa: E402
from actors.engine.messages import Overloaded  # noqa: E402
from actors.runtime import tune_gc  # noqa: E402
from exness_actors.commands import ClosePosition, CreateAccount, PlaceOrder, Quote  # noqa: E402
from exness_actors.engine import Engine  # noqa: E402
from exness_actors.events import PositionOpened  # noqa: E402
from exness_actors.instruments import DEFAULT_INSTRUMENTS, CoreConfig  # noqa: E402
from exness_actors.journal import JournalWriter  # noqa: E402

ACCOUNTS = 1_000


def emit(metric: str, value: float, unit: str, target: float | None = None, better: str = "higher",
         **extra) -> None:
    line = {"bench": "journal", "metric": metric, "value": round(value, 3), "unit": unit,
            "target": target, "better": better}
    line.update(extra)
    print(json.dumps(line), flush=True)


def make_engine() -> Engine:
    engine = Engine(CoreConfig(instruments=DEFAULT_INSTRUMENTS, stale_after_ns=10**19))
    for account in range(1, ACCOUNTS + 1):
        engine.submit(CreateAccount(account_id=account, initial_deposit=10**12), ts=1)
    engine.submit(Quote(symbol="BTCUSDT", bid=6_500_000, ask=6_500_100), ts=2)
    tune_gc()   # as the engine process does after recovery (supervisor.run_system)
    return engine


async def client(handle: EngineHandle, account: int, deadline: float, latencies: list[float],
                 counter: list[int], rate_gate: trio.MemoryReceiveChannel | None) -> None:
    position_id = None
    while time.perf_counter() < deadline:
        if rate_gate is not None:
            try:
                await rate_gate.receive()
            except trio.EndOfChannel:
                return
        if position_id is None:
            command = PlaceOrder(account_id=account, symbol="BTCUSDT", side="buy", type="market",
                                 margin=10_000, leverage=10)
        else:
            command = ClosePosition(account_id=account, position_id=position_id)
        started = time.perf_counter()
        try:
            reply = await handle.request(command)
        except Overloaded:
            counter[1] += 1
            await trio.sleep(0.001)
            continue
        latencies.append(time.perf_counter() - started)
        counter[0] += 1
        opened = [e for e in reply.events if type(e) is PositionOpened]
        position_id = opened[0].position_id if opened else None


async def pacer(send: trio.MemorySendChannel, rate: float, deadline: float) -> None:
    interval = 1.0 / rate
    next_at = time.perf_counter()
    async with send:
        while time.perf_counter() < deadline:
            now = time.perf_counter()
            due = int((now - next_at) / interval) + 1
            for _ in range(due):
                try:
                    send.send_nowait(None)
                except trio.WouldBlock:
                    break
            next_at += due * interval
            await trio.sleep(max(0.0, next_at - time.perf_counter()))


async def run_load(directory: Path, seconds: float, clients: int, rate: float | None) -> dict:
    engine = make_engine()
    journal = JournalWriter(directory)
    handle = EngineHandle(engine, 65_536)
    latencies: list[float] = []
    counter = [0, 0]
    fsyncs_before = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(engine_actor.run, handle=handle, journal=journal, fsync="batch"))
        fsyncs_before = handle.fsyncs
        started = time.perf_counter()
        deadline = started + seconds
        gate = None
        async with trio.open_nursery() as load:
            if rate is not None:
                gate_send, gate = trio.open_memory_channel(int(rate) + 1000)
                load.start_soon(pacer, gate_send, rate, deadline)
            for index in range(clients):
                load.start_soon(client, handle, 1 + index % ACCOUNTS, deadline, latencies, counter,
                                gate.clone() if gate is not None else None)
            if gate is not None:
                await gate.aclose()
        elapsed = time.perf_counter() - started
        fsyncs = handle.fsyncs - fsyncs_before
        await handle.stop()
    journal.close()
    latencies.sort()
    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000 if latencies else 0.0
    return {"per_s": counter[0] / elapsed, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "overloads": counter[1], "commands": counter[0], "fsyncs": fsyncs,
            "per_fsync": counter[0] / fsyncs if fsyncs else 0}


async def run_pipelined(directory: Path, seconds: float) -> dict:
    """Engine capacity: one producer feeds commands with back-pressure (no per-command reply
    task); throughput is the durable seq reached per second, every batch fsynced."""
    engine = make_engine()
    journal = JournalWriter(directory)
    handle = EngineHandle(engine, 65_536)
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(engine_actor.run, handle=handle, journal=journal, fsync="batch"))
        start_seq = handle.durable_seq
        fsyncs_before = handle.fsyncs
        started = time.perf_counter()
        cpu_started = time.process_time()
        deadline = started + seconds
        index = 0
        while time.perf_counter() < deadline:
            for _ in range(512):
                index += 1
                account = 1 + index % ACCOUNTS
                command = PlaceOrder(account_id=account, symbol="BTCUSDT", side="buy" if index % 2 else "sell",
                                     type="market", margin=10_000, leverage=10)
                try:
                    handle.send_nowait(command)       # no scheduling round trip per command...
                except Overloaded:
                    await handle.send(command)        # ...blocking only when the inbox is full
            await trio.sleep(0)
        sent_seq = start_seq + index
        while handle.durable_seq < sent_seq:
            await trio.sleep(0.001)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        fsyncs = handle.fsyncs - fsyncs_before
        await handle.stop()
    journal.close()
    return {"per_s": index / elapsed, "commands": index, "fsyncs": fsyncs,
            "per_fsync": index / fsyncs if fsyncs else 0, "per_cpu_s": index / cpu if cpu else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--dir", help="where to put the journal (default: a temp dir under /tmp)")
    args = parser.parse_args()
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    random.seed(1)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for label, rate, clients in (("1k", 1_000.0, 200), ("10k", 10_000.0, 1_000), ("max", None, 2_000)):
            result = trio.run(run_load, Path(tmp) / label, seconds, clients, rate)
            print(f"[{label}] {result}", file=sys.stderr)
            emit(f"ack_p50_ms_{label}", result["p50_ms"], "ms", better="lower")
            emit(f"ack_p99_ms_{label}", result["p99_ms"], "ms", better="lower")
            if label == "max":
                emit("durable_requests_per_s", result["per_s"], "1/s",
                     commands_per_fsync=round(result["per_fsync"], 1), clients=clients)
                emit("ack_p99_ms", result["p99_ms"], "ms", better="lower")
        result = trio.run(run_pipelined, Path(tmp) / "pipelined", seconds)
        print(f"[pipelined] {result}", file=sys.stderr)
        # per_cpu_s: the same commands over the process's CPU time (all threads), a figure less
        # disturbed by other load on a shared machine than the wall-clock value
        emit("durable_commands_per_s", result["per_s"], "1/s", 100_000,
             commands_per_fsync=round(result["per_fsync"], 1), per_cpu_s=round(result["per_cpu_s"]))


if __name__ == "__main__":
    main()
