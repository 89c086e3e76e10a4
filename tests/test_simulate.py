"""``exness-actors simulate``: the deterministic whole-system simulation (actors/simulation*.py).

The tier runs the real actors under the mock clock with a few seeds and fault mixes; each run is
a few simulated seconds and well under a second or two of wall time. What is asserted is what
the simulation promises: the same seed gives a byte-identical report (also across processes and
string-hash seeds), every run is clean, a deliberately broken engine or gateway is caught and
exits 1, and ``exness-actors replay`` verifies the data dir a simulation leaves behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

import pytest

from actors import cli
from actors.simulation.simulate import SimulationOptions, format_report, report_json, run_simulation
from actors.simulation.traders import ACCOUNT_MIX

REPO = Path(__file__).resolve().parents[1]

#: A short run with every fault on (fsync off: the tier checks logic, not the disk).
FAULTY = {"traders": 3, "seconds": 10.0, "crash_every": 4.0, "feed_gaps": True, "slow_consumers": True,
          "fsync": "off"}


def simulate(tmp_path: Path, name: str, **options) -> dict:
    return run_simulation(SimulationOptions(data_dir=tmp_path / name, **options))


def assert_clean(report: dict) -> None:
    assert report["violations"] == [] and report["violation_count"] == 0, format_report(report)
    assert report["verdict"] == "clean"
    assert report["replay"]["verdict"] == "match" and report["replay"]["final_snapshot"] == "match"
    assert report["replay"]["inputs"] == report["final"]["last_seq"]
    assert report["checks"]["acknowledged_verified_in_journal"] == report["checks"]["acknowledged_commands"] > 0
    assert report["checks"]["gateway_internal_errors"] == 0
    assert not any(status.startswith("5") and "OVERLOADED" not in status
                   for answers in report["requests"].values() for status in answers)


def test_same_seed_gives_the_same_report_and_another_seed_does_not(tmp_path):
    first = simulate(tmp_path, "a", seed=11, **FAULTY)
    again = simulate(tmp_path, "b", seed=11, **FAULTY)
    other = simulate(tmp_path, "c", seed=12, **FAULTY)

    assert report_json(first, timings=False) == report_json(again, timings=False)
    assert format_report(first, timings=False) == format_report(again, timings=False)
    assert first["timings"]["wall_seconds"] > 0 and "timings" not in json.loads(report_json(first, timings=False))
    assert other["final"]["state_hash"] != first["final"]["state_hash"]
    assert report_json(other, timings=False) != report_json(first, timings=False)


@pytest.mark.parametrize("seed, options", [
    (1, {"traders": 4, "seconds": 12.0}),
    (2, {"traders": 4, "seconds": 15.0, "crash_every": 4.0, "feed_gaps": True}),   # fsync batch: the real path
    (3, {"traders": 6, "seconds": 12.0, "slow_consumers": True, "fsync": "off"}),
    (4, {"traders": 5, "seconds": 20.0, "crash_every": 3.0, "feed_gaps": True, "slow_consumers": True,
         "fsync": "off"}),
])
def test_seed_tier_runs_clean(tmp_path, seed, options):
    report = simulate(tmp_path, "data", seed=seed, **options)

    assert_clean(report)
    assert report["requests"]["invalid_request"] and report["orders"].get("accepted filled", 0) > 0
    assert report["checks"]["invariant_checks"] > 10 and report["checks"]["ledger_checks"] > 0
    cross = sum(ACCOUNT_MIX[(index - 1) % 3] != "isolated" for index in range(1, options["traders"] + 1))
    assert report["final"]["accounts"] == options["traders"] + cross        # sign-ups + typed accounts
    assert report["accounts_opened"].get("isolated") == options["traders"]          # every sign-up
    assert sum(report["accounts_opened"].values()) == options["traders"] + cross
    if options.get("crash_every"):
        crashes = report["crashes"]
        assert len(crashes) == int(options["seconds"] // options["crash_every"])
        assert all(c["recovered_seq"] >= c["durable_seq"] for c in crashes)        # nothing durable lost
        assert all(c["torn_bytes_truncated"] == c["torn_bytes_appended"] for c in crashes)
        assert any(c["torn_bytes_appended"] for c in crashes)
    if options.get("feed_gaps"):
        assert report["faults"]["feed_pauses"] > 0 and report["faults"]["quotes_dropped_by_gaps"] > 0
    if options.get("slow_consumers"):
        assert report["faults"]["lossy_subscribers_dropped"] > 0 and report["faults"]["slow_reader_batches"] > 0


def test_cli_report_matches_across_processes_and_replay_verifies_the_data_dir(tmp_path, capsys):
    """The CLI (its own process, PYTHONHASHSEED fixed by re-exec) gives the report this process
    (a random string-hash seed) gives; ``exness-actors replay`` verifies what it left behind."""
    args = ["--seed", "5", "--traders", "3", "--seconds", "8", "--crash-every", "3", "--feed-gaps", "--fsync", "off"]
    data_dir, report_file = tmp_path / "cli", tmp_path / "report.json"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONHASHSEED"}
    done = subprocess.run([sys.executable, "-m", "supervisor", "simulate", *args, "--data-dir", str(data_dir),
                           "--report", str(report_file), "--no-timings"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verdict: clean" in done.stdout and "timings" not in done.stdout
    assert f"exness-actors replay {data_dir}" in done.stderr

    here = simulate(tmp_path, "here", seed=5, traders=3, seconds=8.0, crash_every=3.0, feed_gaps=True, fsync="off")
    assert report_file.read_text() == report_json(here, timings=False)
    assert done.stdout == format_report(here, timings=False)

    assert cli.main(["replay", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert here["final"]["state_hash"] in out
    assert "0 checkpoints verified" not in out and "final state hash verified" in out   # a short run too


def _credit_a_cent(monkeypatch):
    """An engine bug: new accounts get one cent more than was deposited (untyped and typed ones:
    sign-ups open typed accounts)."""
    from exness_actors.engine import Engine

    for name in ("_on_create_account", "_on_open_account"):
        def broken(self, cmd, events, _open=getattr(Engine, name)):
            _open(self, cmd, events)
            if cmd.account_id in self.accounts:
                self.accounts[cmd.account_id].free += 1
        monkeypatch.setattr(Engine, name, broken)


def _crash_a_view(monkeypatch):
    """A gateway bug: reading the positions raises."""
    from actors.wire import views as _views

    def broken(engine, account_id, symbol):
        raise KeyError("boom")
    monkeypatch.setattr(_views, "open_positions", broken)


def _fsync_that_syncs_nothing(monkeypatch):
    """A storage bug: replies are released after an "fsync" that made nothing durable."""
    from actors.simulation.world import _TrackedJournal
    from exness_actors.journal import JournalWriter
    monkeypatch.setattr(_TrackedJournal, "fsync", JournalWriter.fsync)


SHORT = ["--seed", "2", "--traders", "3", "--seconds", "6", "--fsync", "off"]


@pytest.mark.parametrize("breakage, argv, kind", [
    (_credit_a_cent, SHORT, "invariant"),
    (_crash_a_view, SHORT, "http_5xx"),
    (_fsync_that_syncs_nothing, ["--seed", "2", "--traders", "3", "--seconds", "6", "--crash-every", "4"],
     "acknowledged_lost"),
])
def test_a_broken_system_is_reported_and_exits_1(tmp_path, capsys, monkeypatch, breakage, argv, kind):
    breakage(monkeypatch)
    report_file = tmp_path / "report.json"
    code = cli.main(["simulate", *argv, "--data-dir", str(tmp_path / "data"), "--report", str(report_file)])
    assert code == 1
    out = capsys.readouterr().out
    assert "verdict: VIOLATIONS" in out and f" {kind}: " in out
    report = json.loads(report_file.read_text())
    assert report["violations_by_kind"][kind] > 0 and report["violations"][0]["message"]


#: a run whose cross traders are margin called and stopped out (feed gaps: jumps of up to 1.5 %)
STOPPED_OUT = {"seed": 2, "traders": 6, "seconds": 30.0, "feed_gaps": True, "fsync": "off"}


def test_cross_traders_are_margin_called_and_stopped_out_and_stay_settled(tmp_path):
    report = simulate(tmp_path, "data", **STOPPED_OUT)

    assert_clean(report)        # the checker held every cross account settled after every batch
    assert report["closes"]["stop_out"] > 0 and report["margin"]["stop-outs"] > 0
    assert report["margin"]["margin calls"] > 0
    assert report["accounts_opened"] == {"isolated": 6, "raw_spread": 2, "standard": 2}
    assert report["final"]["accounts_by_type"] == {"isolated": 6, "raw_spread": 2, "standard": 2}
    assert Decimal(report["final"]["house_book"]["commission"]) > 0         # raw_spread pays commission
    assert report["requests"]["all_in"] and report["requests"]["add_margin"]
    # adding margin to a cross position is refused with a 4xx (a 2xx would have been a violation)
    assert "400 INVALID_COMMAND" in report["requests"]["add_margin"]


def test_an_engine_that_never_settles_cross_accounts_is_reported(tmp_path):
    """An engine bug: cross accounts are never margin called nor stopped out (patched into the
    pure core in a child process, as below)."""
    report_file = tmp_path / "report.json"
    argv = ["simulate", "--seed", "2", "--traders", "6", "--seconds", "30", "--feed-gaps", "--fsync", "off",
            "--data-dir", str(tmp_path / "data"), "--report", str(report_file)]
    script = ("import sys\n"
              "from actors.cli import main\n"
              "from exness_actors.engine import Engine\n"
              "Engine._settle = lambda self, account, events: None\n"
              f"sys.exit(main({argv!r}))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "EXNESS_CORE_BUILD": "pure"})
    assert done.returncode == 1, done.stderr[-3000:]
    report = json.loads(report_file.read_text())
    messages = [v["message"] for v in report["violations"] if v["kind"] == "invariant"]
    assert messages and any("was not called" in m or "stop-out level" in m for m in messages), messages


def test_an_engine_that_forgets_client_ids_is_reported_and_exits_1(tmp_path):
    """An engine bug: the idempotency memory never finds a repeat. The bug is patched into the pure
    core in a child process: the compiled core calls its own methods directly, so a patch on the
    class would not be seen there (exness_actors/_build.py)."""
    report_file = tmp_path / "report.json"
    argv = ["simulate", "--seed", "2", "--traders", "5", "--seconds", "15", "--fsync", "off",
            "--data-dir", str(tmp_path / "data"), "--report", str(report_file)]
    script = ("import sys\n"
              "from actors.cli import main\n"
              "from exness_actors.engine import Engine\n"
              "Engine._duplicate = lambda self, account, key, cmd, events: False\n"
              f"sys.exit(main({argv!r}))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "EXNESS_CORE_BUILD": "pure"})
    assert done.returncode == 1, done.stderr[-3000:]
    assert "verdict: VIOLATIONS" in done.stdout and " idempotency: " in done.stdout
    report = json.loads(report_file.read_text())
    assert report["violations_by_kind"]["idempotency"] > 0 and report["violations"][0]["message"]


@pytest.mark.parametrize("argv, message", [
    (["--crash-every", "0.5"], "--crash-every"),
    (["--traders", "0"], "--traders"),
    (["--seconds", "-1"], "--seconds"),
])
def test_bad_options_are_clear_errors(tmp_path, capsys, argv, message):
    assert cli.main(["simulate", "--data-dir", str(tmp_path / "d"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_used_data_dir_is_refused(tmp_path, capsys):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "journal").mkdir()
    assert cli.main(["simulate", "--data-dir", str(tmp_path / "used")]) == 2
    assert "empty directory" in capsys.readouterr().err


# ------------------------------------------------------------------ progress callbacks and bars

def test_replay_reports_progress_at_checkpoints():
    from exness_actors import codec
    from exness_actors.commands import CreateAccount
    from exness_actors.engine import Engine
    from exness_actors.replay import encode_checkpoint, replay
    from exness_actors.testing import machine_config

    live = Engine(machine_config())
    payloads = []
    for seq in (1, 2, 3):
        command = CreateAccount(account_id=seq, initial_deposit=100, seq=seq, ts=seq)
        live.apply(command)
        payloads.append(codec.encode(command))
    payloads.append(encode_checkpoint(3, live.rolling_hash, hash_format=live.hash_format))
    seen: list[int] = []
    result = replay(Engine(machine_config()), payloads, progress=seen.append)
    assert seen == [3] and result.checkpoints_verified == 1


def test_backtest_reports_progress_every_block_of_quotes():
    from exness_actors.backtest import PROGRESS_EVERY, Tick, run_backtest
    from exness_actors.testing import machine_config

    ticks = [Tick(ts_ns=1_000_000 * i, symbol="BTCUSD", bid=6_500_000 + i % 7, ask=6_500_010 + i % 7)
             for i in range(PROGRESS_EVERY + 10)]
    seen: list[int] = []
    run_backtest(ticks, lambda view: None, config=machine_config(), progress=seen.append)
    assert seen == [PROGRESS_EVERY]


def test_no_progress_bar_without_a_terminal(capsys):
    assert cli._progress_bar("replaying", "inputs") is None
    assert cli._advance(None) is None


def test_engine_journal_io_must_be_thread_or_inline():
    import trio

    from actors.engine import actor as engine_actor
    from actors.engine.actor import EngineHandle
    from exness_actors.engine import Engine
    from exness_actors.testing import machine_config

    async def start() -> None:
        await engine_actor.run(handle=EngineHandle(Engine(machine_config()), 8), journal=None,
                               journal_io="sometimes")
    with pytest.raises(ValueError, match="journal_io"):
        trio.run(start)


def test_rejected_options_leave_no_temporary_data_dir_behind(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert cli.main(["simulate", "--traders", "0"]) == 2
    assert "--traders" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
