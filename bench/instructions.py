"""Instructions per durable command, per core command and per replayed input (callgrind).

Wall-clock figures on a shared machine move 2–6× with the load; instruction counts do not. Each
figure is the difference of two runs of the same scenario with ``--small`` and ``--large``
inputs (3,000 and 13,000; replay journals of 5,000 and 25,000 inputs, the first 1,000 of them
opening the accounts), divided by the difference in inputs, so the set-up (imports, the 1,000
accounts, trio's start) cancels out. Scenarios:

* ``durable``: market orders fed by one producer through the engine actor
  (``actors/engine/actor.py``, ``fsync = "batch"``), as ``bench/journal.py``'s pipelined load;
  the clean stop's state hash (a pass over every open position, so it grows with the run) is
  left out by journaling the stop's checkpoint without it;
* ``core``: the same market orders applied with ``Engine.submit`` (no actor, no journal);
* ``replay``: ``exness_actors.replay.replay`` of ``bench/replay.py``'s journal (the seeded mix,
  every checkpoint verified), read from its segment files;
* ``replay_core``: the same records read and decoded first, then the inputs applied with
  ``Engine.apply`` (the core's share of a replayed input: this minus ``replay_decode``);
* ``replay_decode``: the same records read and decoded only.

Prints one JSON object per scenario. Needs ``valgrind``. Usage::

    python bench/instructions.py [--scenarios durable,core,replay,replay_core] [--small N] [--large N]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _bench_module(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _market_order(index: int, accounts: int):
    from exness_actors.commands import PlaceOrder
    return PlaceOrder(account_id=1 + index % accounts, symbol="BTCUSDT", side="buy" if index % 2 else "sell",
                      type="market", margin=10_000, leverage=10)


def child_durable(count: int) -> None:
    import trio

    from actors.engine import actor as engine_actor
    from actors.engine.actor import EngineHandle
    from exness_actors.journal import JournalWriter
    from exness_actors.replay import engine_checkpoint
    bench = _bench_module("journal")

    def no_state_hash(handle, first_seq: int, stopping: bool):
        if stopping:
            return engine_checkpoint(handle.engine)
        return original(handle, first_seq, stopping)
    original = engine_actor._checkpoint
    engine_actor._checkpoint = no_state_hash

    async def main(directory: Path) -> None:
        engine = bench.make_engine()
        journal = JournalWriter(directory)
        handle = EngineHandle(engine, 65_536)
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(engine_actor.run, handle=handle, journal=journal, fsync="batch"))
            target = handle.durable_seq + count
            for index in range(count):
                command = _market_order(index, bench.ACCOUNTS)
                try:
                    handle.send_nowait(command)
                except engine_actor.Overloaded:
                    await handle.send(command)
                if index % 512 == 511:
                    await trio.sleep(0)
            while handle.durable_seq < target:
                await trio.sleep(0.001)
            await handle.stop()
        journal.close()

    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(tmp))


def child_core(count: int) -> None:
    bench = _bench_module("journal")
    engine = bench.make_engine()
    submit = engine.submit
    for index in range(count):
        submit(_market_order(index, bench.ACCOUNTS))


def child_replay(directory: str) -> None:
    from exness_actors.engine import Engine
    from exness_actors.journal import iter_payloads
    from exness_actors.replay import replay
    bench = _bench_module("replay")
    replay(Engine(bench.config()), iter_payloads(directory))


def child_replay_decode(directory: str) -> None:
    from exness_actors.journal import iter_payloads
    from exness_actors.replay import decode_record
    for payload in iter_payloads(directory):
        decode_record(payload)


def child_replay_core(directory: str) -> None:
    from exness_actors.engine import Engine
    from exness_actors.journal import iter_payloads
    from exness_actors.replay import Checkpoint, decode_record
    bench = _bench_module("replay")
    records = [decode_record(payload) for payload in iter_payloads(directory)]
    commands = [record for record in records if type(record) is not Checkpoint]
    apply = Engine(bench.config()).apply
    for command in commands:
        apply(command)


def callgrind(args: list[str], keep: str | None = None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(keep or tmp) / f"callgrind.{'.'.join(Path(arg).name for arg in args[1:])}"
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        sys.executable, __file__, *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for line in out.read_text().splitlines():
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError("no totals in the callgrind output")


def measure(scenario: str, small: int, large: int, workdir: Path, keep: str | None = None) -> dict:
    if scenario.startswith("replay"):
        bench = _bench_module("replay")
        sizes = {}
        for size in (small, large):
            directory = workdir / f"journal-{size}"
            if not directory.exists():
                bench.build(directory, 1_000, size, 1)
            sizes[size] = [scenario, str(directory)]
    else:
        sizes = {size: [scenario, str(size)] for size in (small, large)}
    counts = {size: callgrind(["--child", *argv], keep) for size, argv in sizes.items()}
    per_input = (counts[large] - counts[small]) / (large - small)
    from exness_actors import BUILD
    return {"bench": "instructions", "metric": f"{scenario}_instructions_per_input", "value": round(per_input),
            "unit": "instructions", "better": "lower", "build": BUILD, "small": small, "large": large,
            "total_small": counts[small], "total_large": counts[large]}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        scenario, argument = sys.argv[2], sys.argv[3]
        child = {"durable": child_durable, "core": child_core, "replay": child_replay,
                 "replay_core": child_replay_core, "replay_decode": child_replay_decode}[scenario]
        child(int(argument) if scenario in ("durable", "core") else argument)
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenarios", default="durable,core,replay,replay_core,replay_decode")
    parser.add_argument("--small", type=int, help="inputs of the smaller run (default 3,000; replay 5,000)")
    parser.add_argument("--large", type=int, help="inputs of the larger run (default 13,000; replay 25,000)")
    parser.add_argument("--keep", help="keep the callgrind output files in this directory (for callgrind_annotate)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in args.scenarios.split(","):
            replaying = scenario.startswith("replay")
            small = args.small or (5_000 if replaying else 3_000)
            large = args.large or (25_000 if replaying else 13_000)
            print(json.dumps(measure(scenario, small, large, Path(tmp), args.keep)), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")    # the same dict layouts in both runs
    main()
