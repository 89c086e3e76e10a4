"""``exness-actors simulate``: deterministic simulation of the whole system (issue 6).

Theory of operation
-------------------
:func:`run_simulation` runs the real actors — engine actor with its journal, synthetic price
feed, persister, candle builder, snapshots, the gateway app — in one ``trio.run`` on trio's mock
clock, with ``traders`` seeded simulated traders placing, modifying, cancelling and closing
through the gateway's request path, for ``seconds`` of simulated time, optionally with crashes,
feed gaps and slow consumers (:mod:`actors.simulation.world`). Invariants are checked after every
engine batch the checker drains; at the end the journal is replayed from empty with the
existing replay code (checkpoints verified) and its final state hash compared with the live
engine's and with the final snapshot's.

**Same seed, same report.** Every source of ordering is pinned (:mod:`actors.simulation.runtime`
lists them), so two runs with the same options produce byte-identical reports, apart from the
``timings`` section (wall-clock figures; ``--no-timings`` leaves it out). The data dir keeps the
journal, snapshots and SQLite store: ``exness-actors replay DIR`` verifies the run afterwards.

The report (:func:`format_report` prints it; ``--report FILE`` writes it as JSON) holds the
options, what the traders did and got (HTTP answers by action and status), the journal's inputs
by type, orders by outcome, closes by reason (``stop_out`` among them), margin calls and
stop-outs of the cross accounts, the typed accounts opened, crashes and recoveries, faults
injected, invariant checks run (cross accounts settled among them: none left at or below its
stop-out level after an input), violations (empty when clean), the final state (with the
house's book and the accounts by type) and the replay verdict.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Optional

import attrs
import trio
import trio.testing

from actors.config import Config, ConfigError, load_config
from actors.engine.keys import load_or_create_key
from actors.engine.recovery import journal_dir, snapshot_dir
from actors.simulation.runtime import deterministic_trio, seeded_random
from actors.simulation.world import MAX_VIOLATIONS_KEPT, SimulationAborted, World
from exness_actors.engine import Engine
from exness_actors.events import (
    AccountOpened, CommandRejected, DuplicateCommand, MarginCall, OrderAccepted, OrderCancelled, OrderRejected,
    OrderTriggered, PositionClosed, PositionOpened, QuoteRejected, QuoteUpdated, StopOut,
)
from exness_actors.journal import iter_payloads
from exness_actors.money import format_fixed
from exness_actors.replay import Checkpoint, ReplayDivergence, decode_record, replay
from exness_actors.snapshot import SnapshotError, list_snapshots, read_snapshot

__all__ = ["SimulationOptions", "SimulationError", "run_simulation", "format_report", "simulation_config",
           "report_json"]

log = logging.getLogger("exness.simulation")

_TEN_YEARS_S = 10 * 365 * 24 * 3600


class SimulationError(ValueError):
    """The options cannot be simulated; the message says which and why."""


@attrs.define(kw_only=True)
class SimulationOptions:
    """What ``exness-actors simulate`` takes (see ``docs/testing.md``)."""
    data_dir: Path
    seed: int = 1
    traders: int = 5
    seconds: float = 30.0
    crash_every: Optional[float] = None
    feed_gaps: bool = False
    slow_consumers: bool = False
    fsync: str = "batch"
    config_file: Optional[str] = None
    ticks_per_s: float = 4.0
    snapshot_every_s: float = 5.0
    action_interval_s: float = 1.0

    def check(self) -> None:
        if not 1 <= self.traders <= 10_000:
            raise SimulationError(f"--traders {self.traders}: give 1 to 10000 traders")
        if not (math.isfinite(self.seconds) and 0 < self.seconds <= 30 * 24 * 3600):
            raise SimulationError(f"--seconds {self.seconds}: give a positive number of simulated seconds")
        if self.crash_every is not None and not (math.isfinite(self.crash_every) and self.crash_every >= 1):
            raise SimulationError(f"--crash-every {self.crash_every}: crashes can be at most one per "
                                  f"simulated second (give 1 or more)")
        if self.fsync not in ("batch", "off"):
            raise SimulationError(f"--fsync {self.fsync}: batch or off (interval reads the wall clock)")
        for name in ("ticks_per_s", "snapshot_every_s", "action_interval_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise SimulationError(f"{name} = {value}: must be a positive number")
        if self.data_dir.exists() and (not self.data_dir.is_dir() or any(self.data_dir.iterdir())):
            raise SimulationError(f"--data-dir {self.data_dir}: a simulation starts from an empty "
                                  f"directory (it is not empty); give a new or empty one")


def simulation_config(options: SimulationOptions) -> Config:
    """The configuration a simulation runs with: the shipped one (and ``--config``, for the
    instruments), never the environment, and these settings on top."""
    tables: dict[str, Any] = {
        "data": {"dir": str(options.data_dir)},
        "journal": {"fsync": options.fsync},
        "feed": {"source": "synthetic", "ticks_per_s": options.ticks_per_s, "unchanged_refresh_s": 1.0},
        "snapshot": {"interval_s": options.snapshot_every_s, "keep": 3},
        # the traders' models (adding margin, liquidations) are isolated margin's: sign-ups open
        # isolated accounts here, not the shipped Standard (cross) one
        "accounts": {"signup_type": "isolated"},
        # rate limiters read time.monotonic: off, so no answer depends on the wall clock
        "limits": {"ip_rate_per_s": 0, "account_rate_per_s": 0, "signup_per_minute": 0,
                   "signin_failures_per_minute": 0, "signin_email_failures_per_minute": 0,
                   "signin_ip_failures_per_minute": 0},
        # the cheapest argon2id, and access tokens that outlive any run (JWT expiry is wall time)
        "auth": {"argon2_time_cost": 1, "argon2_memory_kib": 8, "argon2_parallelism": 1,
                 "access_ttl_s": _TEN_YEARS_S,
                 "jwt_secret": seeded_random(options.seed, "jwt").randbytes(32).hex()},
    }
    if options.feed_gaps:
        tables["feed"].update(jump_probability=0.02, jump_bps=150)
    try:
        return load_config(options.config_file, environ={}, overrides=tables)
    except ConfigError as exc:
        raise SimulationError(f"configuration: {exc}") from None


def run_simulation(options: SimulationOptions, *,
                   progress: Optional[Callable[[float], None]] = None) -> dict[str, Any]:
    """Run the simulation and return its report (a JSON-ready dict; see the module docstring).

    ``progress(simulated_seconds)`` is called as simulated time goes by (a plain call from
    inside the run, which schedules nothing, so it cannot change the outcome).
    Raises :class:`SimulationError` for options that cannot run.
    """
    options.check()
    cfg = simulation_config(options)
    options.data_dir.mkdir(parents=True, exist_ok=True)
    world = World(options, cfg, progress=progress)
    started = time.perf_counter()
    with deterministic_trio(options.seed):
        try:
            trio.run(world.run, clock=trio.testing.MockClock(autojump_threshold=0))
        except SimulationAborted:
            pass
        except Exception as exc:   # an actor failed: that is a finding, reported like the others
            log.error("event=simulation_aborted error=%r", exc, exc_info=exc)
            world.violation("aborted", f"the simulation stopped: {type(exc).__name__}: {_describe(exc)}")
    simulated = time.perf_counter()
    final: dict[str, Any] = {}
    if world.engine is not None:
        try:
            final = _final_checks(world)
        except Exception as exc:   # e.g. an aborted run left no readable journal
            log.error("event=final_checks_failed error=%r", exc, exc_info=exc)
            world.violation("final_checks_failed", f"{type(exc).__name__}: {exc}")
    finished = time.perf_counter()
    report = _report(world, final)
    report["timings"] = {
        "wall_seconds": round(finished - started, 3),
        "simulation_wall_seconds": round(simulated - started, 3),
        "final_replay_wall_seconds": round(finished - simulated, 3),
        "simulated_seconds_per_wall_second": round(options.seconds / max(simulated - started, 1e-9), 1),
        "http_requests_per_wall_second": round(
            sum(sum(c.values()) for c in world.http.values()) / max(simulated - started, 1e-9), 1),
    }
    return report


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(f"{type(inner).__name__}: {_describe(inner)}" for inner in exc.exceptions)
    return str(exc)


def _final_checks(world: World) -> dict[str, Any]:
    """Acknowledged ⇒ journaled; full replay ≡ live; final snapshot ≡ live. Counts for the report."""
    live = world.engine
    assert live is not None
    world.verify_final()
    inputs: collections.Counter = collections.Counter()
    tallies: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

    def payloads() -> Any:
        for payload in iter_payloads(journal_dir(world.data_dir)):
            record = decode_record(payload)
            if type(record) is not Checkpoint:
                inputs[type(record).__name__] += 1
            yield payload

    def tally(_seq: int, _ts: int, events: list) -> None:
        for event in events:
            kind = type(event)
            if kind is QuoteUpdated:
                tallies["quotes"]["accepted"] += 1
            elif kind is QuoteRejected:
                tallies["quotes"][f"rejected {event.reason}"] += 1
            elif kind is OrderAccepted:
                tallies["orders"][f"accepted {event.status}"] += 1
            elif kind is OrderRejected:
                tallies["orders"][f"rejected {event.reason}"] += 1
            elif kind is DuplicateCommand:
                tallies["duplicates"][event.command] += 1
            elif kind is OrderTriggered:
                tallies["orders"]["triggered"] += 1
            elif kind is OrderCancelled:
                tallies["orders"][f"cancelled {event.reason}"] += 1
            elif kind is PositionOpened:
                tallies["positions"]["opened"] += 1
            elif kind is PositionClosed:
                tallies["closes"][event.reason] += 1
                if event.remaining_qty:
                    tallies["positions"]["partially closed"] += 1
            elif kind is CommandRejected:
                tallies["commands_rejected"][f"{event.command} {event.reason}"] += 1
            elif kind is MarginCall:
                tallies["margin"]["margin calls"] += 1
            elif kind is StopOut:
                tallies["margin"]["stop-outs"] += 1
            elif kind is AccountOpened:
                tallies["accounts_opened"][event.account_type] += 1

    replayed = Engine(world.core_config)
    verdict: dict[str, Any] = {}
    try:
        result = replay(replayed, payloads(), on_events=tally)
    except ReplayDivergence as exc:
        world.violation("replay_divergence", str(exc))
        verdict = {"verdict": "diverged", "detail": str(exc)}
    else:
        same = replayed.state_hash() == live.state_hash() and replayed.rolling_hash == live.rolling_hash
        verdict = {"verdict": "match" if same else "MISMATCH", "inputs": result.inputs,
                   "checkpoints_verified": result.checkpoints_verified,
                   "state_hash": replayed.state_hash().hex()}
        if not same:
            world.violation("replay_mismatch", f"replaying the journal gives state hash "
                                               f"{replayed.state_hash().hex()}, the live engine "
                                               f"{live.state_hash().hex()}")
    verdict["final_snapshot"] = _snapshot_verdict(world, live)
    return {"inputs": inputs, "tallies": tallies, "replay": verdict}


def _snapshot_verdict(world: World, live: Engine) -> str:
    snapshots = list_snapshots(snapshot_dir(world.data_dir))
    if not snapshots:
        world.violation("final_snapshot", "no snapshot was written at the graceful stop")
        return "missing"
    seq, path = snapshots[-1]
    try:
        snapshot = read_snapshot(path, key=load_or_create_key(world.data_dir, None))
    except SnapshotError as exc:
        world.violation("final_snapshot", f"the final snapshot {path.name} cannot be read: {exc}")
        return "unreadable"
    if seq != live.last_seq or snapshot.state_hash != live.state_hash():
        world.violation("final_snapshot", f"the final snapshot (seq {seq}) differs from the live engine "
                                          f"(seq {live.last_seq})")
        return "MISMATCH"
    return "match"


def _sorted(counter: Any) -> dict[str, int]:
    return {key: counter[key] for key in sorted(counter)}


def _report(world: World, final: dict[str, Any]) -> dict[str, Any]:
    options = world.options
    engine = world.engine
    tallies = final.get("tallies", {})
    report: dict[str, Any] = {
        "simulation": {
            "seed": options.seed, "traders": options.traders, "simulated_seconds": options.seconds,
            "crash_every_s": options.crash_every, "feed_gaps": options.feed_gaps,
            "slow_consumers": options.slow_consumers, "fsync": options.fsync,
            "ticks_per_s": options.ticks_per_s, "snapshot_every_s": options.snapshot_every_s,
            "action_interval_s": options.action_interval_s,
        },
        "requests": {action: _sorted(answers) for action, answers in sorted(world.http.items())},
        "inputs": _sorted(final.get("inputs", {})),
        "quotes": _sorted(tallies.get("quotes", {})),
        "orders": _sorted(tallies.get("orders", {})),
        "duplicates": _sorted(tallies.get("duplicates", {})),
        "positions": _sorted(tallies.get("positions", {})),
        "closes": _sorted(tallies.get("closes", {})),
        "margin": _sorted(tallies.get("margin", {})),
        "accounts_opened": _sorted(tallies.get("accounts_opened", {})),
        "commands_rejected": _sorted(tallies.get("commands_rejected", {})),
        "crashes": world.crashes,
        "faults": {
            "feed_pauses": world.gaps.pauses if world.gaps is not None else 0,
            "quotes_dropped_by_gaps": world.gaps.dropped if world.gaps is not None else 0,
            "lossy_subscribers_dropped": world.lossy_dropped,
            "slow_reader_batches": world.slow_reader_batches,
            "retries_after_crash": _sorted(world.counters.get("retries_after_crash", {})),
        },
        "checks": {
            "invariant_checks": world.invariant_checks,
            "ledger_checks": world.ledger_checks,
            "acknowledged_commands": world.acks.total,
            "acknowledged_verified_in_journal": world.acks.verified,
            "snapshots_written": world.snapshotter_stats.written,
            "gateway_internal_errors": world.internal_errors,
        },
        "violations": world.violations,
        "violation_count": world.violation_count,
        "violations_by_kind": _sorted(world.violation_kinds),
        "final": {} if engine is None else {
            "last_seq": engine.last_seq, "state_hash": engine.state_hash().hex(),
            "rolling_hash": engine.rolling_hash.hex(), "accounts": len(engine.accounts),
            "open_positions": len(engine.positions), "pending_orders": len(engine.orders),
            "house_pnl": format_fixed(engine.house, 2),
            "house_book": {source: format_fixed(cents, 2) for source, cents in sorted(engine.house_book().items())},
            "accounts_by_type": _sorted(collections.Counter(
                account.type.name if account.type is not None else "untyped (isolated)"
                for account in engine.accounts.values())),
            "deposits": format_fixed(engine.total_deposits, 2),
            "withdrawals": format_fixed(engine.total_withdrawals, 2),
        },
        "replay": final.get("replay", {"verdict": "not run"}),
    }
    report["verdict"] = "clean" if world.violation_count == 0 else "VIOLATIONS"
    return report


def report_json(report: dict[str, Any], *, timings: bool = True) -> str:
    """The report as JSON (sorted keys: the same run gives the same bytes)."""
    shown = report if timings else {key: value for key, value in report.items() if key != "timings"}
    return json.dumps(shown, indent=2, sort_keys=True) + "\n"


def format_report(report: dict[str, Any], *, timings: bool = True) -> str:
    """The report for people: one section per topic, the verdict last (before timings)."""
    lines: list[str] = []
    sim = report["simulation"]
    lines.append(f"exness-actors simulate: seed {sim['seed']}, {sim['traders']} traders, "
                 f"{sim['simulated_seconds']:g} simulated seconds"
                 + (f", a crash about every {sim['crash_every_s']:g} s" if sim["crash_every_s"] else "")
                 + (", feed gaps" if sim["feed_gaps"] else "")
                 + (", slow consumers" if sim["slow_consumers"] else "")
                 + f", fsync {sim['fsync']}")

    def section(title: str, values: dict[str, Any]) -> None:
        if not values:
            return
        lines.append(f"{title}:")
        for key, value in values.items():
            if isinstance(value, dict):
                value = ", ".join(f"{inner} ×{count}" for inner, count in value.items()) or "none"
            lines.append(f"  {key}: {value}")

    section("inputs journaled", report["inputs"])
    section("quotes", report["quotes"])
    section("orders", report["orders"])
    section("duplicates answered", report["duplicates"])
    section("positions", report["positions"])
    section("closes by reason", report["closes"])
    section("margin calls and stop-outs (cross accounts)", report["margin"])
    section("typed accounts opened", report["accounts_opened"])
    section("commands rejected", report["commands_rejected"])
    lines.append("requests by action (status code):")
    for action, answers in report["requests"].items():
        lines.append(f"  {action}: " + ", ".join(f"{key} ×{count}" for key, count in answers.items()))
    if report["crashes"]:
        lines.append(f"crashes: {len(report['crashes'])}")
        for crash in report["crashes"]:
            lines.append("  " + ", ".join(f"{key} {value}" for key, value in crash.items()))
    section("faults", report["faults"])
    section("checks", report["checks"])
    section("final state", report["final"])
    replay_verdict = report["replay"]
    lines.append("replay of the journal: " + ", ".join(f"{key} {value}" for key, value in replay_verdict.items()))
    if report["violations"]:
        lines.append(f"VIOLATIONS ({report['violation_count']}; the first {MAX_VIOLATIONS_KEPT} in full):")
        for violation in report["violations"]:
            lines.append(f"  t={violation['t']} {violation['kind']}: {violation['message']}")
    lines.append(f"verdict: {report['verdict']}")
    if timings and "timings" in report:
        section("timings (wall clock; not part of the deterministic report)", report["timings"])
    return "\n".join(lines) + "\n"
