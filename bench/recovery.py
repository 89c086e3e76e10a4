"""Cold start: newest snapshot (100k accounts + 100k open positions) + a 100k-input journal tail.

Measures ``recover()`` — decrypt and decode the snapshot, rebuild the engine and its trigger
indexes, scan the journal and replay the tail — i.e. the time from process start to an engine
ready to take orders (the actors then start in a few ms). Prints JSON lines: ``ready_ms`` (wall),
``ready_cpu_ms`` (CPU: steadier on a shared machine) and ``stages_cpu_ms`` (where the CPU time
went, the median of the runs per stage, from ``Recovered.stages_ms``).

    python bench/recovery.py [--quick] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.engine.recovery import journal_dir, pin_core_config, recover  # noqa: E402
from actors.engine.snapshot_worker import write_engine_snapshot  # noqa: E402
from exness_actors import BUILD, codec  # noqa: E402
from exness_actors.commands import ClosePosition, CreateAccount, PlaceOrder, Quote  # noqa: E402
from exness_actors.engine import HASH_BLOCK, Engine  # noqa: E402
from exness_actors.instruments import DEFAULT_INSTRUMENTS, CoreConfig  # noqa: E402
from exness_actors.journal import JournalWriter, encode_frame  # noqa: E402
from exness_actors.replay import engine_checkpoint  # noqa: E402

KEY = bytes(range(32))
PRICES = {"BTCUSDT": 6_500_000, "ETHUSDT": 350_000, "SOLUSDT": 150_000}


def emit(metric: str, value: float, unit: str, target=None, better: str = "lower", **extra) -> None:
    line = {"bench": "recovery", "metric": metric, "value": round(value, 3), "unit": unit,
            "target": target, "better": better}
    line.update(extra)
    print(json.dumps(line), flush=True)


def build(data_dir: Path, accounts: int, positions: int, tail: int, seed: int, *,
          rotate_at_snapshot: bool = False) -> Engine:
    rng = random.Random(seed)
    config = CoreConfig(instruments=DEFAULT_INSTRUMENTS, stale_after_ns=10**19)
    pin_core_config(data_dir, config)
    engine = Engine(config)
    ts = 0
    writer = JournalWriter(journal_dir(data_dir))
    frames: list[bytes] = []
    first_seq = 1

    def submit(command) -> list:
        nonlocal ts, first_seq, frames
        ts += 1_000_000
        events = engine.submit(command, ts=ts)
        frames.append(codec.encode(command))
        if engine.last_seq % HASH_BLOCK == 0:
            frames.append(engine_checkpoint(engine))
        if len(frames) >= 4096:
            writer.append(b"".join(encode_frame(f) for f in frames), first_seq=first_seq)
            frames, first_seq = [], engine.last_seq + 1
        return events

    for account in range(1, accounts + 1):
        submit(CreateAccount(account_id=account, initial_deposit=1_000_000))
    for symbol, price in PRICES.items():
        submit(Quote(symbol=symbol, bid=price, ask=price + 10))
    symbols = list(PRICES)
    for index in range(positions):
        symbol = symbols[index % 3]
        price = PRICES[symbol]
        side = "buy" if index % 2 else "sell"
        extra = {}
        if index % 3 == 0:
            extra = ({"take_profit": price * 11 // 10, "stop_loss": price * 9 // 10} if side == "buy"
                     else {"take_profit": price * 9 // 10, "stop_loss": price * 11 // 10})
        submit(PlaceOrder(account_id=1 + index % accounts, symbol=symbol, side=side, type="market",
                          margin=rng.randrange(1_000, 50_000), leverage=rng.choice((1, 2, 5, 10, 20)), **extra))
    snapshot_seq = engine.last_seq
    if frames:
        writer.append(b"".join(encode_frame(f) for f in frames), first_seq=first_seq)
        frames, first_seq = [], engine.last_seq + 1
    writer.fsync()
    write_engine_snapshot(data_dir, engine, KEY, keep=2)
    if rotate_at_snapshot:
        # what the engine does after a snapshot when no input arrived while it was built: the tail
        # starts a new segment, and recovery skips the covered one whole
        writer.rotate_before_next_append()
    # the tail: quotes, opens and closes after the snapshot
    walk = dict(PRICES)
    for index in range(tail):
        kind = rng.random()
        if kind < 0.7:
            symbol = symbols[index % 3]
            walk[symbol] += rng.randint(-3, 3)
            submit(Quote(symbol=symbol, bid=walk[symbol], ask=walk[symbol] + 10))
        elif kind < 0.9:
            submit(PlaceOrder(account_id=rng.randint(1, accounts), symbol=symbols[index % 3],
                              side=rng.choice(("buy", "sell")), type="market", margin=5_000, leverage=5))
        else:
            position = engine.positions.get(rng.randint(1, engine.next_position_id - 1))
            if position is not None:
                submit(ClosePosition(account_id=position.account_id, position_id=position.id))
    if frames:
        writer.append(b"".join(encode_frame(f) for f in frames), first_seq=first_seq)
    writer.fsync()
    writer.close()
    print(f"built: snapshot at seq {snapshot_seq}, journal to seq {engine.last_seq}, "
          f"{len(engine.accounts)} accounts, {len(engine.positions)} positions", file=sys.stderr)
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rotate-at-snapshot", action="store_true",
                        help="start the tail in a new journal segment (default: one segment, every covered "
                             "frame scanned: the case of a snapshot built while inputs kept coming)")
    args = parser.parse_args()
    size = 10_000 if args.quick else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        live = build(data_dir, size, size, size, args.seed, rotate_at_snapshot=args.rotate_at_snapshot)
        runs = []
        cpu_runs = []
        stages: dict[str, list[float]] = {}
        for _ in range(3):
            started, started_cpu = time.perf_counter(), time.process_time()
            if args.profile:
                profiler = cProfile.Profile()
                recovered = profiler.runcall(recover, data_dir, live.config, KEY)
                pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumtime").print_stats(20)
            else:
                recovered = recover(data_dir, live.config, KEY)
            runs.append(time.perf_counter() - started)
            cpu_runs.append(time.process_time() - started_cpu)
            assert recovered.engine.state_hash() == live.state_hash(), "recovered state differs"
            assert recovered.replayed > 0
            for stage, ms in recovered.stages_ms.items():
                stages.setdefault(stage, []).append(ms)
        best = min(runs) * 1000
        emit("ready_ms", best, "ms", 500, accounts=size, positions=size, tail_inputs=size,
             runs_ms=[round(r * 1000, 1) for r in runs], build=BUILD, rotate_at_snapshot=args.rotate_at_snapshot)
        # by CPU time: steadier than wall time on a shared machine (recovery is one thread)
        emit("ready_cpu_ms", min(cpu_runs) * 1000, "ms", 500, runs_ms=[round(r * 1000, 1) for r in cpu_runs],
             build=BUILD)
        medians = {stage: round(statistics.median(values), 1) for stage, values in stages.items()}
        emit("stages_cpu_ms", sum(medians.values()), "ms", None, stages=medians, build=BUILD)


if __name__ == "__main__":
    main()
