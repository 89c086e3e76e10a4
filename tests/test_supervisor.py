"""The supervisor: restart policy, configuration precedence, startup errors, the replay CLI."""

from __future__ import annotations

import functools
from pathlib import Path

import trio
import pytest

import supervisor
from actors import cli
from actors.config import ConfigError, load_config
from actors.engine.recovery import journal_dir
from exness_actors import codec
from exness_actors.commands import CreateAccount, Quote
from exness_actors.engine import Engine
from exness_actors.journal import JournalWriter, encode_frame
from exness_actors.replay import encode_checkpoint
from core_helpers import make_engine


async def test_failing_actor_is_restarted_with_growing_backoff(autojump_clock):
    starts: list[float] = []

    async def flaky(*, task_status=trio.TASK_STATUS_IGNORED):
        starts.append(trio.current_time())
        task_status.started("info")
        if len(starts) < 4:
            raise RuntimeError("boom")

    async with trio.open_nursery() as nursery:
        info = await nursery.start(lambda task_status: supervisor.supervised("flaky", flaky, task_status=task_status))
    assert info == "info"
    gaps = [round(b - a, 3) for a, b in zip(starts, starts[1:])]
    assert gaps == [0.5, 1.0, 2.0]


async def test_an_actor_failing_while_it_is_stopped_is_one_log_line_not_a_crash(autojump_clock, caplog):
    """A final flush on a full disk fails during the shutdown's cancellation: the error and the
    Cancelled arrive together; the stop goes on and the failure is logged, not raised."""
    async def flushes_on_a_full_disk(*, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await trio.sleep(0)
                    raise OSError(28, "No space left on device")

    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(supervisor.supervised, "candles", flushes_on_a_full_disk))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert "event=actor_failed_while_stopping actor=candles" in caplog.text
    assert "No space left on device" in caplog.text


async def test_supervised_actor_that_fails_before_starting_is_retried(autojump_clock):
    attempts = []

    async def late(*, task_status=trio.TASK_STATUS_IGNORED):
        attempts.append(1)
        if len(attempts) < 3:
            raise OSError("port busy")
        task_status.started(len(attempts))

    async with trio.open_nursery() as nursery:
        assert await nursery.start(lambda task_status: supervisor.supervised("late", late, task_status=task_status)) == 3


def test_config_precedence_flags_over_env_over_file(tmp_path):
    file = tmp_path / "extra.toml"
    file.write_text('[http]\nport = 8100\nhost = "0.0.0.0"\n[ws]\nport = 7100\n')
    cfg = load_config(file, environ={"EXNESS_HTTP__PORT": "8200", "DATABASE_URL": "postgresql://x/y"},
                      overrides={"http": {"port": 8300}})
    assert cfg["http"]["port"] == 8300          # flag
    assert cfg["http"]["host"] == "0.0.0.0"     # file
    assert cfg["ws"]["port"] == 7100            # file over shipped
    assert cfg["store"]["database_url"] == "postgresql://x/y"
    assert cfg["feed"]["source"] == "synthetic"  # shipped default
    env_only = load_config(file, environ={"EXNESS_HTTP__PORT": "8200"})
    assert env_only["http"]["port"] == 8200


@pytest.mark.parametrize("text, match", [
    ("[instruments.BTCUSDT]\nmax_leverage = 0\n", "max_leverage"),
    ("[instruments.BTCUSDT]\nmin_qty = 0.5\n", "min_qty"),           # a TOML float: refused
    ("[instruments.BTCUSDT]\nmin_qty = \"0.000000001\"\n", "decimal places"),
    ("not toml at all [", "not valid TOML"),
])
def test_bad_config_is_a_clear_error(tmp_path, text, match):
    file = tmp_path / "bad.toml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(file, environ={})


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml", environ={})


async def test_unwritable_data_dir_refuses_to_start(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data dir should be")
    cfg = load_config(overrides={"data": {"dir": str(blocker / "data")}}, environ={})
    with pytest.raises(supervisor.StartupError, match="not writable"):
        await supervisor.run_system(cfg, handle_signals=False)


async def test_an_engine_shard_outside_bus_shards_refuses_to_start(tmp_path):
    cfg = load_config(overrides={"data": {"dir": str(tmp_path / "data")}, "bus": {"shards": 2}}, environ={})
    with pytest.raises(supervisor.StartupError, match=r"--shard 2: must be in 0\.\.1 \(bus.shards = 2\)"):
        await supervisor.run_system(cfg, handle_signals=False, role="engine", shard=2)


async def test_a_shards_data_dir_refuses_to_start_as_another_shard(tmp_path):
    from actors.engine.recovery import RecoveryError, pin_core_config
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    cfg = load_config(overrides={"data": {"dir": str(data_dir)}, "bus": {"shards": 2}}, environ={})
    pin_core_config(data_dir, cfg.core.for_shard(1))
    with pytest.raises(RecoveryError, match="journal of engine shard 1, not of shard 0"):
        pin_core_config(data_dir, cfg.core.for_shard(0))
    assert pin_core_config(data_dir, cfg.core.for_shard(1)).id_base == cfg.core.for_shard(1).id_base


def _journal(data_dir, *, corrupt_checkpoint: bool) -> Engine:
    engine = make_engine()
    frames = []
    for account in range(1, 6):
        command = CreateAccount(account_id=account, initial_deposit=1000)
        engine.submit(command, ts=account)
        frames.append(codec.encode(command))
    quote = Quote(symbol="BTCUSDT", bid=100, ask=101)
    engine.submit(quote, ts=10)
    frames.append(codec.encode(quote))
    rolling = engine.rolling_hash if not corrupt_checkpoint else bytes(16)
    frames.append(encode_checkpoint(engine.last_seq, rolling, hash_format=engine.hash_format))
    with JournalWriter(journal_dir(data_dir)) as writer:
        writer.append(b"".join(encode_frame(f) for f in frames), first_seq=1)
        writer.fsync()
    from actors.engine.recovery import pin_core_config
    pin_core_config(data_dir, engine.config)
    return engine


def test_replay_cli_verifies_a_journal(tmp_path, capsys):
    engine = _journal(tmp_path, corrupt_checkpoint=False)
    assert cli.main(["replay", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 checkpoints verified" in out and engine.state_hash().hex() in out


def test_replay_cli_reports_the_first_divergence(tmp_path, capsys):
    _journal(tmp_path, corrupt_checkpoint=True)
    assert cli.main(["replay", str(tmp_path)]) == 1
    assert "diverged at seq 6" in capsys.readouterr().err


def test_cli_config_error_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[instruments.BTCUSDT]\nmax_leverage = -1\n")
    assert cli.main(["run", "--config", str(bad), "--data-dir", str(tmp_path / "d")]) == 2
    assert "configuration error" in capsys.readouterr().err


def test_replay_cli_stops_at_until(tmp_path, capsys):
    _journal(tmp_path, corrupt_checkpoint=False)
    assert cli.main(["replay", str(tmp_path), "--until", "3"]) == 0
    out = capsys.readouterr().out
    assert "replayed 3 inputs to seq 3" in out and "accounts 3" in out


def test_replay_cli_can_start_from_a_snapshot(tmp_path, capsys):
    from actors.engine.keys import load_or_create_key
    from actors.engine.snapshot_worker import write_engine_snapshot
    from exness_actors.journal import iter_payloads
    from exness_actors.replay import replay
    live = _journal(tmp_path, corrupt_checkpoint=False)
    halfway = make_engine()
    replay(halfway, iter_payloads(journal_dir(tmp_path)), until_seq=4)
    write_engine_snapshot(tmp_path, halfway, load_or_create_key(tmp_path), keep=2)
    assert cli.main(["replay", str(tmp_path), "--from-snapshot"]) == 0
    out = capsys.readouterr().out
    assert "starting from snapshot" in out and "(seq 4)" in out
    assert "replayed 2 inputs to seq 6" in out and live.state_hash().hex() in out


def test_replay_cli_without_a_journal_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["replay", str(tmp_path / "nowhere")]) == 2
    assert "has no journal/ directory" in capsys.readouterr().err


def test_replay_cli_exports_and_what_if(tmp_path, capsys):
    _journal(tmp_path, corrupt_checkpoint=False)
    edits = tmp_path / "edits.jsonl"
    edits.write_text('{"op": "drop", "seq": 2}\n')
    events_csv, positions_jsonl = tmp_path / "events.csv", tmp_path / "positions.jsonl"
    assert cli.main(["replay", str(tmp_path), "--export-events", str(events_csv),
                            "--export-positions", str(positions_jsonl), "--what-if", str(edits)]) == 0
    out = capsys.readouterr().out
    assert f"rows to {events_csv} (csv)" in out and f"to {positions_jsonl} (jsonl)" in out
    assert events_csv.read_text().splitlines()[0].startswith("seq,")
    assert "2" in out    # the report names the changed account


def test_replay_cli_bad_what_if_file_is_a_clear_error(tmp_path, capsys):
    _journal(tmp_path, corrupt_checkpoint=False)
    edits = tmp_path / "edits.jsonl"
    edits.write_text('{"op": "explode"}\n')
    assert cli.main(["replay", str(tmp_path), "--what-if", str(edits)]) == 2
    assert "line 1" in capsys.readouterr().err


def test_backtest_cli_writes_outputs_and_a_replayable_journal(tmp_path, capsys):
    from pathlib import Path
    sample = Path(supervisor.__file__).parent / "actors" / "data" / "sample_ticks.csv"
    out, data = tmp_path / "out", tmp_path / "data"
    assert cli.main(["backtest", "--ticks", str(sample), "--strategy",
                            "exness_actors.strategies.examples:MovingAverageCross",
                            "--out", str(out), "--data-dir", str(data)]) == 0
    printed = capsys.readouterr().out
    state_hash = next(line for line in printed.splitlines() if '"state_hash"' in line).split('"')[3]
    assert {"trades.csv", "equity.csv", "summary.json", "equity.svg"} <= {p.name for p in out.iterdir()}
    assert cli.main(["replay", str(data)]) == 0
    assert state_hash in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--strategy", "no_such_module:thing"], "cannot load strategy"),
    (["--strategy", "exness_actors.strategies.examples:Nope"], "cannot load strategy"),
    (["--deposit", "12.345"], "--deposit"),
])
def test_backtest_cli_bad_arguments_are_clear_errors(tmp_path, capsys, argv, message):
    from pathlib import Path
    sample = Path(supervisor.__file__).parent / "actors" / "data" / "sample_ticks.csv"
    base = {"--ticks": str(sample), "--strategy": "exness_actors.strategies.examples:MovingAverageCross",
            "--out": str(tmp_path / "out")}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    args = ["backtest"] + [item for pair in base.items() for item in pair]
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err


def test_the_exit_codes_in_run_help_are_the_documented_ones() -> None:
    from actors.engine.faults import EXIT_CODES

    operations = (Path(supervisor.__file__).resolve().parent / "docs" / "operations.md").read_text()
    table = operations.split("### Exit codes of `exness-actors run`", 1)[1].split("\n\n", 2)[1]
    documented = [int(row.split("|")[1]) for row in table.splitlines()[2:]]
    assert documented == sorted(EXIT_CODES)
    assert EXIT_CODES[3].startswith("stopped because a disk filled up")


async def test_the_start_log_says_which_core_build_runs(tmp_path, caplog):
    import exness_actors
    caplog.set_level("INFO", logger="exness.supervisor")
    cfg = load_config(overrides={"data": {"dir": str(tmp_path / "data")}, "bus": {"shards": 2}}, environ={})
    with pytest.raises(supervisor.StartupError):
        await supervisor.run_system(cfg, handle_signals=False, role="engine", shard=2)
    lines = [record.getMessage() for record in caplog.records if record.name == "exness.supervisor"]
    assert f"event=core_build build={exness_actors.BUILD} reason={exness_actors.BUILD_REASON!r}" in lines


def test_a_change_of_account_types_is_journaled_and_replays(tmp_path):
    # issue 16: a data dir begun without account types (as on main) picks up [accounts] through
    # a journaled SetAccountTypes; a restart replays it from the journal and changes nothing more
    import attrs
    from actors.engine.recovery import pin_core_config, recover
    from exness_actors.commands import SetAccountTypes
    from exness_actors.journal import iter_payloads
    from exness_actors.replay import decode_record
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    engine = _journal(data_dir, corrupt_checkpoint=False)
    typed = attrs.evolve(engine.config, account_types=load_config(environ={}).core.account_types)
    assert pin_core_config(data_dir, typed) == engine.config        # replay starts from the pinned

    recovered = recover(data_dir, typed, b"\0" * 32).engine
    with JournalWriter(journal_dir(data_dir)) as writer:
        supervisor.journal_account_types(recovered, writer, typed, ts=100)
    again = recover(data_dir, typed, b"\0" * 32).engine

    assert again.config.account_types == typed.account_types and again.state_hash() == recovered.state_hash()
    assert sum(isinstance(decode_record(p), SetAccountTypes) for p in iter_payloads(journal_dir(data_dir))) == 1
    with JournalWriter(journal_dir(data_dir)) as writer:
        supervisor.journal_account_types(again, writer, typed, ts=200)
    assert again.last_seq == recovered.last_seq


def test_an_account_type_in_use_cannot_be_dropped_from_the_config(tmp_path):
    import attrs
    from actors.engine.recovery import RecoveryError
    from exness_actors.commands import OpenAccount
    engine = Engine(load_config(environ={}).core)
    engine.submit(OpenAccount(account_id=1, account_type="raw_spread", initial_deposit=0), ts=1)
    without = attrs.evolve(engine.config, account_types=engine.config.account_types[2:])
    with JournalWriter(journal_dir(tmp_path)) as writer, pytest.raises(RecoveryError, match="'raw_spread'"):
        supervisor.journal_account_types(engine, writer, without, ts=2)
