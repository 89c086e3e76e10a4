"""Replay throughput of a 1,000,000-input journal with checkpoint verification on.

Builds a journal of a seeded mix (70% quotes, 15% market opens, 8% closes, 5% pending entries,
2% cancels over 10,000 accounts and 3 symbols) exactly as the engine actor writes it — frames and
rolling-hash checkpoints — then measures, in the same run:

* ``inputs_per_s``: ``exness_actors.replay.replay`` from the segment files (read, CRC, decode,
  apply, verify every checkpoint) — target 300,000 (a day of 3-symbol bookTicker traffic, ~3M
  quotes, in under 10 s);
* ``core_inputs_per_s``: the same inputs applied from memory (already decoded), and
* ``ratio_to_core``: the first over the second — target ≥ 0.8;
* the same three by CPU time (``*_cpu``), steadier than wall time on a shared machine.

    python bench/replay.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.runtime import GC_THRESHOLDS  # noqa: E402
from exness_actors import BUILD, codec  # noqa: E402
from exness_actors.commands import CancelOrder, ClosePosition, CreateAccount, PlaceOrder, Quote  # noqa: E402
from exness_actors.engine import HASH_BLOCK, Engine  # noqa: E402
from exness_actors.events import OrderAccepted, PositionOpened  # noqa: E402
from exness_actors.instruments import DEFAULT_INSTRUMENTS, CoreConfig  # noqa: E402
from exness_actors.journal import JournalWriter, encode_frame, iter_payloads  # noqa: E402
from exness_actors.replay import engine_checkpoint, replay  # noqa: E402

PRICES = {"BTCUSDT": 6_500_000, "ETHUSDT": 350_000, "SOLUSDT": 150_000}


def emit(metric: str, value: float, unit: str, target=None, better: str = "higher", **extra) -> None:
    line = {"bench": "replay", "metric": metric, "value": round(value, 3), "unit": unit,
            "target": target, "better": better}
    line.update(extra)
    print(json.dumps(line), flush=True)


#: the rolling hash format of the journal and the engines (``--hash-format``)
HASH_FORMAT = 2


def config() -> CoreConfig:
    return CoreConfig(instruments=DEFAULT_INSTRUMENTS, stale_after_ns=10**19, hash_format=HASH_FORMAT)


def build(directory: Path, accounts: int, inputs: int, seed: int) -> tuple[list, bytes, bytes]:
    """Write the journal; return the commands (wire form), final state hash and rolling hash."""
    rng = random.Random(seed)
    engine = Engine(config())
    writer = JournalWriter(directory)
    frames: list[bytes] = []
    wires: list = []
    first_seq = 1
    ts = 0
    open_positions: list[int] = []
    pending: list[int] = []
    walk = dict(PRICES)
    symbols = list(PRICES)

    def submit(command) -> list:
        nonlocal ts, frames, first_seq
        ts += 1_000_000
        events = engine.submit(command, ts=ts)
        payload = codec.encode(command)
        frames.append(payload)
        wires.append(payload)
        if engine.last_seq % HASH_BLOCK == 0:
            frames.append(engine_checkpoint(engine))
        if len(frames) >= 4096:
            writer.append(b"".join(encode_frame(f) for f in frames), first_seq=first_seq)
            frames, first_seq = [], engine.last_seq + 1
        for event in events:
            kind = type(event)
            if kind is PositionOpened:
                open_positions.append(event.position_id)
            elif kind is OrderAccepted and event.status == "pending":
                pending.append(event.order_id)
        return events

    for account in range(1, accounts + 1):
        submit(CreateAccount(account_id=account, initial_deposit=100_000_000))
    while engine.last_seq < inputs:
        roll = rng.random()
        symbol = symbols[rng.randrange(3)]
        if roll < 0.70:
            walk[symbol] = max(1_000, walk[symbol] + rng.randint(-walk[symbol] // 2000, walk[symbol] // 2000))
            submit(Quote(symbol=symbol, bid=walk[symbol], ask=walk[symbol] + 5))
        elif roll < 0.85:
            submit(PlaceOrder(account_id=rng.randint(1, accounts), symbol=symbol,
                              side=rng.choice(("buy", "sell")), type="market",
                              margin=rng.randrange(1_000, 50_000), leverage=rng.choice((1, 2, 5, 10, 20, 50))))
        elif roll < 0.93:
            while open_positions:
                position = engine.positions.get(open_positions.pop(rng.randrange(len(open_positions))))
                if position is not None:
                    submit(ClosePosition(account_id=position.account_id, position_id=position.id))
                    break
            else:
                submit(Quote(symbol=symbol, bid=walk[symbol], ask=walk[symbol] + 5))
        elif roll < 0.98:
            side = rng.choice(("buy", "sell"))
            kind = rng.choice(("limit", "stop"))
            below = (side == "buy") == (kind == "limit")
            price = walk[symbol] * (995 if below else 1005) // 1000
            submit(PlaceOrder(account_id=rng.randint(1, accounts), symbol=symbol, side=side, type=kind,
                              margin=10_000, leverage=10, price=price))
        else:
            while pending:
                order = engine.orders.get(pending.pop(rng.randrange(len(pending))))
                if order is not None:
                    submit(CancelOrder(account_id=order.account_id, order_id=order.id))
                    break
            else:
                submit(Quote(symbol=symbol, bid=walk[symbol], ask=walk[symbol] + 5))
    if frames:
        writer.append(b"".join(encode_frame(f) for f in frames), first_seq=first_seq)
    writer.fsync()
    writer.close()
    return wires, engine.state_hash(), engine.rolling_hash


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hash-format", type=int, choices=(1, 2), default=2,
                        help="rolling hash format (1: the format before issue 14)")
    args = parser.parse_args()
    global HASH_FORMAT
    HASH_FORMAT = args.hash_format
    inputs = 100_000 if args.quick else 1_000_000
    accounts = 1_000 if args.quick else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "journal"
        started = time.perf_counter()
        wires, state_hash, rolling = build(directory, accounts, inputs, args.seed)
        print(f"[bench replay] built {inputs:,} inputs in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)

        best_replay = best_core = best_replay_cpu = best_core_cpu = 0.0
        for _ in range(2):
            engine = Engine(config())
            started, started_cpu = time.perf_counter(), time.process_time()
            result = replay(engine, iter_payloads(directory))
            elapsed, cpu = time.perf_counter() - started, time.process_time() - started_cpu
            assert engine.state_hash() == state_hash and engine.rolling_hash == rolling
            best_replay = max(best_replay, result.inputs / elapsed)
            best_replay_cpu = max(best_replay_cpu, result.inputs / cpu)
            checkpoints = result.checkpoints_verified

            commands = [codec.decode(wire) for wire in wires]    # decoded beforehand: core only
            engine = Engine(config())
            apply = engine.apply
            started, started_cpu = time.perf_counter(), time.process_time()
            for command in commands:
                apply(command)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - started_cpu
            assert engine.state_hash() == state_hash
            best_core = max(best_core, len(commands) / elapsed)
            best_core_cpu = max(best_core_cpu, len(commands) / cpu)
        extra = {"build": BUILD, "hash_format": HASH_FORMAT}
        emit("inputs_per_s", best_replay, "1/s", 300_000, inputs=inputs, checkpoints_verified=checkpoints, **extra)
        emit("core_inputs_per_s", best_core, "1/s", **extra)
        emit("ratio_to_core", best_replay / best_core, "ratio", 0.8, **extra)
        emit("seconds_per_3m_quotes_day", 3_000_000 / best_replay, "s", 10, better="lower", **extra)
        # the same by CPU time: steadier than wall time on a shared machine
        emit("inputs_per_s_cpu", best_replay_cpu, "1/s", 300_000, **extra)
        emit("core_inputs_per_s_cpu", best_core_cpu, "1/s", **extra)
        emit("ratio_to_core_cpu", best_replay_cpu / best_core_cpu, "ratio", 0.8, **extra)


if __name__ == "__main__":
    main()
