"""Print, as one JSON object, what the core computes on a fixed set of journals.

``build_parity.py record RUNS.json N`` records the inputs of N property-machine runs;
``build_parity.py compute RUNS.json`` prints the events (by digest), state hashes and rolling hashes
(in both formats) of replaying those runs, of simulation seeds and of backtests over the shipped samples, and the
answers to every wrong-typed command field. tests/test_core_build.py records once and computes
under each build (``EXNESS_CORE_BUILD=pure`` and the compiled default), requiring identical output.
(The runs are recorded once, not drawn per build: Hypothesis's derandomized draws are not the same
under the two builds even when the core answers the same.)
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import attrs
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from actors.simulation import SimulationOptions, report_json, run_simulation
from exness_actors import _build, codec
from exness_actors.backtest import load_ticks, run_backtest
from exness_actors.engine import HASH_FORMATS, Engine
from exness_actors.instruments import DEFAULT_INSTRUMENTS, CoreConfig
from exness_actors.strategies.examples import MovingAverageCross
from exness_actors.testing import TradingMachine

from test_core_malformed import outcomes

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = (ROOT / "actors" / "data" / "sample_ticks.csv", ROOT / "actors" / "data" / "binance_sample.jsonl")


def events_digest(outputs: list[list[Any]]) -> str:
    digest = hashlib.sha256()
    for events in outputs:
        digest.update(codec.encode_many(events))
    return digest.hexdigest()


def record_machine_runs(examples: int) -> list[dict[str, Any]]:
    """The config and the codec-encoded sequenced inputs of each property-machine run."""
    runs: list[dict[str, Any]] = []

    class Recorded(TradingMachine):
        def teardown(self) -> None:
            super().teardown()
            runs.append({"config": self.config.to_wire(),
                         "inputs": [codec.encode(command).hex() for command in self.inputs]})

    run_state_machine_as_test(Recorded, settings=settings(
        max_examples=examples, derandomize=True, database=None, deadline=None,
        suppress_health_check=list(HealthCheck), stateful_step_count=40))
    return runs


def replay_machine_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run under both rolling hash formats (issue 14): the rolling hashes of every block
    boundary and the end, the state hash (with a snapshot round trip) and the events."""
    found = []
    for run in runs:
        for hash_format in HASH_FORMATS:
            config = attrs.evolve(CoreConfig.from_wire(run["config"]), hash_format=hash_format)
            engine = Engine(config)
            outputs = []
            rolling = []
            for payload in run["inputs"]:
                outputs.append(engine.apply(codec.decode(bytes.fromhex(payload))))
                if len(outputs) % 16 == 0:
                    rolling.append(engine.rolling_hash.hex())
            restored = Engine.from_state(*codec.unpack(codec.pack([engine.to_state(), engine.export_indexes()])))
            found.append({"inputs": len(outputs), "events": events_digest(outputs), "format": hash_format,
                          "state_hash": engine.state_hash().hex(), "rolling_hash": engine.rolling_hash.hex(),
                          "rolling_along": rolling, "restored": restored.rolling_hash.hex(),
                          "restored_state_hash": restored.state_hash().hex()})
    return found


def simulations(seeds: tuple[int, ...]) -> dict[str, Any]:
    reports = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            options = SimulationOptions(data_dir=Path(tmp) / str(seed), seed=seed, traders=3, seconds=5.0,
                                        crash_every=2.0, fsync="off")
            reports[str(seed)] = json.loads(report_json(run_simulation(options), timings=False))
    return reports


def backtests() -> dict[str, Any]:
    config = CoreConfig(instruments=DEFAULT_INSTRUMENTS)
    found = {}
    for sample in SAMPLES:
        result = run_backtest(load_ticks(sample, config), MovingAverageCross, config=config, keep_events=True)
        assert result.events is not None
        found[sample.name] = {"events": events_digest([events for _, _, events in result.events]),
                              "summary": result.summary}
    return found


def compute(runs_file: Path) -> dict[str, Any]:
    runs = json.loads(runs_file.read_text())
    return {"build": _build.BUILD, "malformed": outcomes(), "machine": replay_machine_runs(runs),
            "simulations": simulations((7, 11)), "backtests": backtests()}


def main(argv: list[str]) -> None:
    mode, runs_file = argv[0], Path(argv[1])
    if mode == "record":
        runs_file.write_text(json.dumps(record_machine_runs(int(argv[2]))))
    else:
        print(json.dumps(compute(runs_file), sort_keys=True, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
