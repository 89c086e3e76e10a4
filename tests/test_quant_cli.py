"""The quants' command line: backtest output units, strategy loading, export checks before replay."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from actors import cli
from exness_actors.backtest import load_ticks, run_backtest
from exness_actors.instruments import DEFAULT_INSTRUMENTS, CoreConfig
from exness_actors.strategies.examples import buy_and_hold

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_CSV = ROOT / "actors" / "data" / "sample_ticks.csv"
CONFIG = CoreConfig(instruments=DEFAULT_INSTRUMENTS)
EXAMPLE = "exness_actors.strategies.examples:MovingAverageCross"

STRATEGY_SOURCE = '''
class Flat:
    """Never trades."""
    def __call__(self, view):
        return []
'''


def _backtest(tmp_path: Path, strategy: str) -> int:
    return cli.main(["backtest", "--ticks", str(SAMPLE_CSV), "--strategy", strategy,
                            "--out", str(tmp_path / "out")])


def _printed_summary(stdout: str) -> dict:
    return json.loads(stdout[:stdout.rindex("}") + 1])


# ------------------------------------------------------------------------------------ units

def test_backtest_prints_the_summary_in_the_units_of_summary_json(tmp_path, capsys):
    assert _backtest(tmp_path, EXAMPLE) == 0
    printed = _printed_summary(capsys.readouterr().out)
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert printed == written
    assert printed["start_equity"] == "5000.00" and "." in printed["realized_pnl"]


def test_with_matplotlib_the_backtest_also_draws_equity_png(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the optional plot extra: pip install 'exness-actors[plot]'")
    assert _backtest(tmp_path, EXAMPLE) == 0
    assert (tmp_path / "out" / "equity.png").read_bytes().startswith(b"\x89PNG")


# ------------------------------------------------------------------------------------ strategy loading

def test_a_strategy_module_in_the_working_directory_is_found(tmp_path, monkeypatch, capsys):
    (tmp_path / "mystrat_cwd.py").write_text(STRATEGY_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "mystrat_cwd", raising=False)
    assert _backtest(tmp_path, "mystrat_cwd:Flat") == 0, capsys.readouterr().err
    assert _printed_summary(capsys.readouterr().out)["trades"] == 0
    assert str(tmp_path) not in sys.path      # the working directory is searched, not left on the path


def test_a_strategy_file_path_is_loaded(tmp_path, capsys):
    path = tmp_path / "strategies" / "my-flat.py"
    path.parent.mkdir()
    path.write_text(STRATEGY_SOURCE)
    assert _backtest(tmp_path, f"{path}:Flat") == 0, capsys.readouterr().err
    assert _printed_summary(capsys.readouterr().out)["trades"] == 0


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_here:Flat", "no module named 'no_such_module_here'"),
    ("{dir}/missing.py:Flat", "no such file"),
    ("{dir}/flat.py:Nope", "has no attribute 'Nope'"),
    ("{dir}/flat.py", "MODULE:NAME or FILE.py:NAME"),
])
def test_a_strategy_that_cannot_be_loaded_is_a_clear_error(tmp_path, capsys, spec, message):
    (tmp_path / "flat.py").write_text(STRATEGY_SOURCE)
    assert _backtest(tmp_path, spec.format(dir=tmp_path)) == 2
    err = capsys.readouterr().err
    assert "cannot load strategy" in err and message in err


def test_backtest_help_says_where_strategies_are_found(capsys):
    with pytest.raises(SystemExit):
        cli.main(["backtest", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "current directory" in text and "FILE.py:NAME" in text


# ------------------------------------------------------------------------------------ exports

@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    run_backtest(load_ticks(SAMPLE_CSV, CONFIG), buy_and_hold, config=CONFIG, journal_dir=tmp_path / "data" / "journal")
    return tmp_path / "data"


@pytest.mark.parametrize("flags", [
    ["--export-positions", "closed.parquet"],
    ["--export-events", "events.csv", "--format", "parquet"],
])
def test_parquet_export_without_pyarrow_is_refused_before_replaying(data_dir, monkeypatch, capsys, flags):
    monkeypatch.setitem(sys.modules, "pyarrow", None)      # import pyarrow raises ImportError
    replayed = []
    monkeypatch.setattr("exness_actors.replay.replay", lambda *a, **k: replayed.append(1))
    flags = [str(data_dir / flag) if flag.endswith((".parquet", ".csv")) else flag for flag in flags]
    assert cli.main(["replay", str(data_dir), *flags]) == 2
    err = capsys.readouterr().err
    assert replayed == [] and "pip install 'exness-actors[parquet]'" in err and "use the CLI" not in err
    assert not list(data_dir.glob("*.parquet")) and not (data_dir / "events.csv").exists()


def test_a_raw_spread_backtest_pays_fees_and_its_replay_shows_the_house_by_source(tmp_path, capsys):
    data_dir = tmp_path / "journaled"
    assert cli.main(["backtest", "--ticks", str(SAMPLE_CSV), "--strategy", EXAMPLE, "--out",
                            str(tmp_path / "out"), "--account-type", "raw_spread", "--data-dir", str(data_dir)]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert Decimal(summary["commission"]) > 0 and "stop_outs" in summary
    capsys.readouterr()

    assert cli.main(["replay", str(data_dir)]) == 0

    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("house pnl by source"))
    assert f"commission {summary['commission']}" in line
