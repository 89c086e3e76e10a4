"""Backtests: loading recorded ticks, the example strategy, determinism, journal replay, metrics."""

from __future__ import annotations

import builtins
import csv
import json
from pathlib import Path

import attrs
import pytest

from exness_actors import feed_format
from exness_actors.account_types import SHIPPED_TYPES
from exness_actors.backtest import (
    CORE_CONFIG_FILE, LoadStats, Tick, equity_metrics, load_ticks, percent, run_backtest,
    write_outputs,
)
from exness_actors.commands import Deposit
from exness_actors.engine import HASH_BLOCK, Engine
from exness_actors.instruments import DEFAULT_INSTRUMENTS, CoreConfig
from exness_actors.journal import iter_payloads
from exness_actors.replay import replay
from exness_actors.strategies.examples import MovingAverageCross, buy_and_hold, moving_average_cross

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_CSV = ROOT / "actors" / "data" / "sample_ticks.csv"
SAMPLE_JSONL = ROOT / "actors" / "data" / "binance_sample.jsonl"
CONFIG = CoreConfig(instruments=DEFAULT_INSTRUMENTS)


@pytest.fixture
def no_float(monkeypatch):
    """Fail if a float is built from text while loading (prices must be parsed exactly)."""
    real = builtins.float

    class Guard(real):
        def __new__(cls, *args):
            if args and isinstance(args[0], (str, bytes)):
                raise AssertionError(f"float() used on {args[0]!r}")
            return real.__new__(real, *args)

    monkeypatch.setattr(builtins, "float", Guard)


def test_csv_loading_is_exact_and_counts_malformed_rows(tmp_path, no_float):
    path = tmp_path / "ticks.csv"
    path.write_text(
        "timestamp,symbol,bid,ask\n"
        "1000,BTCUSDT,65000.005,65000.011\n"     # off-tick: bid rounds down, ask up
        "1100,SOLUSDT,150.1234,150.1235\n"
        "1200,BTCUSDT,abc,65000.00\n"             # not a number
        "1.5,BTCUSDT,65000.00,65000.01\n"         # bad timestamp
        "1300,DOGEUSDT,1.00,1.01\n"               # unknown symbol
        "1400,BTCUSDT,65000.02,65000.01\n"        # crossed
        "1500,BTCUSDT,65000.00\n"                 # short row
        "1600,BTCUSDT,0.001,1.00\n"               # bid rounds to zero
        "\n"
        "1700,BTCUSDT,1e3,1000.01\n"              # exponent form is still exact
    )
    stats = LoadStats()
    ticks = list(load_ticks(path, CONFIG, stats=stats))
    assert ticks == [
        Tick(1_000_000_000, "BTCUSDT", 6_500_000, 6_500_002),
        Tick(1_100_000_000, "SOLUSDT", 150_123, 150_124),
        Tick(1_700_000_000, "BTCUSDT", 100_000, 100_001),
    ]
    assert all(type(v) is int for t in ticks for v in (t.ts_ns, t.bid, t.ask))
    assert stats.ticks == 3 and stats.malformed == 6
    assert stats.reasons == {"not_a_number": 1, "bad_timestamp": 1, "unknown_symbol": 1,
                             "crossed": 1, "bad_row": 1, "not_positive": 1}


def test_csv_without_symbol_column_uses_the_given_symbol(tmp_path):
    path = tmp_path / "eth.csv"
    path.write_text("timestamp,bid,ask\n5,3500.10,3500.20\n")
    assert list(load_ticks(path, CONFIG, symbol="ETHUSDT")) == [Tick(5_000_000, "ETHUSDT", 350_010, 350_020)]
    assert list(load_ticks(path, CONFIG)) == [Tick(5_000_000, "BTCUSDT", 350_010, 350_020)]


def test_csv_needs_a_header(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("1,2,3\n")
    with pytest.raises(ValueError, match="header"):
        list(load_ticks(path, CONFIG))


def test_jsonl_loading_matches_feed_format_and_skips_malformed_lines(no_float):
    stats = LoadStats()
    ticks = list(load_ticks(SAMPLE_JSONL, CONFIG, stats=stats))
    decimals = {i.symbol: i.price_decimals for i in DEFAULT_INSTRUMENTS}
    expected = []
    for line in SAMPLE_JSONL.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = feed_format.parse_recorded_line(line, decimals)
        except feed_format.MalformedTick:
            continue
        expected.append(Tick(rec.ts_ms * 1_000_000, rec.tick.symbol, rec.tick.bid, rec.tick.ask))
    assert ticks == expected
    assert stats.ticks == len(ticks) > 300
    assert stats.malformed == 3
    assert stats.reasons == {"not_a_number": 1, "not_json": 1, "unknown_symbol": 1}


def test_jsonl_detected_by_content_whatever_the_suffix(tmp_path):
    path = tmp_path / "rec.txt"
    path.write_text('\n{"ts": 7, "data": {"u": 1, "s": "BTCUSDT", "b": "1.00", "a": "1.01"}}\nnot json\n')
    stats = LoadStats()
    assert list(load_ticks(path, CONFIG, stats=stats)) == [Tick(7_000_000, "BTCUSDT", 100, 101)]
    assert stats.malformed == 1


def _run(strategy=MovingAverageCross, **kw):
    stats = LoadStats()
    result = run_backtest(load_ticks(SAMPLE_CSV, CONFIG, stats=stats), strategy, config=CONFIG,
                          load_stats=stats, **kw)
    return result


def test_example_strategy_trades_on_the_sample_data():
    result = _run()
    s = result.summary
    assert s["quotes"] == s["ticks_loaded"] == 3000 and s["ticks_skipped"] == 0
    assert s["trades"] >= 1 and len(result.trades) == s["trades"]
    assert s["wins"] + s["losses"] <= s["trades"]
    assert s["rejected_commands"] == 0
    assert len(result.equity) == 3000
    assert result.equity[-1][1] == s["end_equity"]
    # money is conserved: the account's equity change is the realized pnl (all positions closed)
    if s["open_positions"] == 0:
        assert s["end_equity"] - s["start_equity"] == s["realized_pnl"]
    result.engine.check_invariants()
    for trade in result.trades:
        assert trade.side == "buy" and trade.opened_ts <= trade.closed_ts
        assert trade.reason in ("user", "stop_loss", "liquidation")


def test_plain_function_and_class_strategies_agree():
    a = _run(MovingAverageCross)
    b = _run(moving_average_cross)
    c = _run(MovingAverageCross())
    assert a.summary == b.summary == c.summary
    assert a.trades == b.trades == c.trades


def test_same_inputs_give_the_same_result():
    a = _run()
    b = _run()
    assert a.summary["state_hash"] == b.summary["state_hash"]
    assert a.summary["rolling_hash"] == b.summary["rolling_hash"]
    assert a.trades == b.trades and a.equity == b.equity


def test_journal_replays_to_the_same_state(tmp_path):
    data_dir = tmp_path / "bt"
    result = _run(journal_dir=data_dir / "journal")
    assert (data_dir / CORE_CONFIG_FILE).exists()
    replayed = replay(Engine(CONFIG), iter_payloads(data_dir / "journal"))
    assert replayed.inputs == result.summary["inputs"]
    assert replayed.checkpoints_verified == result.summary["checkpoints"] >= 1
    assert replayed.engine.state_hash().hex() == result.summary["state_hash"]
    assert replayed.engine.rolling_hash.hex() == result.summary["rolling_hash"]
    with pytest.raises(ValueError, match="already holds a journal"):
        _run(journal_dir=data_dir / "journal")


def test_journal_checkpoints_every_hash_block(tmp_path):
    # enough quotes to cross HASH_BLOCK twice, with a position open across both crossings
    ticks = [Tick(1_000_000_000 + i * 100_000_000, "BTCUSDT", 6_500_000 + (i % 50), 6_500_010 + (i % 50))
             for i in range(2 * HASH_BLOCK + 10)]
    result = run_backtest(ticks, buy_and_hold, config=CONFIG, journal_dir=tmp_path / "journal",
                          equity_every=1000)
    assert result.summary["checkpoints"] == 3          # two blocks + the final one
    assert len(result.equity) == len(ticks) // 1000 + 1
    replayed = replay(Engine(CONFIG), iter_payloads(tmp_path / "journal"))
    assert replayed.checkpoints_verified == 3
    assert replayed.engine.state_hash().hex() == result.summary["state_hash"]


def test_a_tampered_journal_is_caught(tmp_path):
    from exness_actors.replay import ReplayDivergence
    from exness_actors import codec
    ticks = [Tick(10**9 + i, "BTCUSDT", 6_500_000 + i % 7, 6_500_010 + i % 7) for i in range(20)]
    run_backtest(ticks, buy_and_hold, config=CONFIG, journal_dir=tmp_path / "journal")
    payloads = list(iter_payloads(tmp_path / "journal"))
    quote = codec.decode(payloads[5])
    quote.bid += 1
    payloads[5] = codec.encode(quote)
    with pytest.raises(ReplayDivergence):
        replay(Engine(CONFIG), payloads)


def test_strategy_may_not_fund_or_trade_other_accounts():
    ticks = [Tick(10**9, "BTCUSDT", 6_500_000, 6_500_010)]
    with pytest.raises(TypeError, match="trading commands"):
        run_backtest(ticks, lambda view: [Deposit(account_id=1, amount=100)], config=CONFIG)
    with pytest.raises(ValueError, match="account"):
        run_backtest(ticks, lambda view: [view.close(1).__class__(account_id=2, position_id=1)], config=CONFIG)


def test_strategy_commands_follow_the_quote_at_one_ns_steps():
    seen = []

    def strategy(view):
        seen.append((view.ts, view.bid, view.ask, view.account["equity"]))
        if view.index == 0:
            return [view.market("buy", "100.00", 10), view.market("buy", 5000, 10)]
        return []

    ticks = [Tick(10**9, "BTCUSDT", 6_500_000, 6_500_000), Tick(2 * 10**9, "BTCUSDT", 6_500_000, 6_500_000)]
    result = run_backtest(ticks, strategy, config=CONFIG, keep_events=True)
    spread = DEFAULT_INSTRUMENTS[0].spread_bps
    assert seen[0] == (10**9, 6_500_000 * (10_000 - spread) // 10_000,
                       -(-6_500_000 * (10_000 + spread) // 10_000), 500_000)
    stamps = [(seq, ts) for seq, ts, _ in result.events]
    assert stamps == [(1, 10**9), (2, 10**9), (3, 10**9 + 1), (4, 10**9 + 2), (5, 2 * 10**9)]
    assert result.summary["positions_opened"] == 2
    assert [p.margin for p in result.engine.open_positions(1)] == [10_000, 5_000]


def test_summary_math_on_a_hand_made_equity_curve():
    m = equity_metrics(100_000, [110_000, 99_000, 121_000, 90_750, 100_000])
    assert m["return_pct"] == "0.00"
    assert m["max_drawdown_pct"] == "25.00"      # 121000 → 90750
    m = equity_metrics(100_000, [90_000, 95_000, 120_000])
    assert m == {"start_equity": 100_000, "end_equity": 120_000, "return_pct": "20.00",
                 "max_drawdown_pct": "10.00"}
    assert equity_metrics(100_000, [])["max_drawdown_pct"] == "0.00"
    assert percent(-1, 3) == "-33.33" and percent(2, 3) == "66.67" and percent(1, 200_000) == "0.00"
    assert percent(-1, 300_000) == "0.00"


def test_run_summary_matches_equity_metrics():
    result = _run(equity_every=1)
    m = equity_metrics(result.summary["start_equity"], [e for _, e in result.equity])
    for key in ("return_pct", "max_drawdown_pct", "end_equity"):
        assert m[key] == result.summary[key]


def test_write_outputs(tmp_path):
    result = _run(equity_every=10)
    plotted = []
    paths = write_outputs(result, tmp_path / "out", CONFIG,
                          plot=lambda result, path: plotted.append((len(result.equity), path.name)))
    names = sorted(p.name for p in paths)
    assert names == ["equity.csv", "equity.png", "equity.svg", "summary.json", "trades.csv"]
    assert plotted == [(len(result.equity), "equity.png")]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["start_equity"] == "5000.00" and summary["trades"] == result.summary["trades"]
    with open(tmp_path / "out" / "trades.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(result.trades)
    assert rows[0]["margin"] == "100.00" and "." in rows[0]["open_price"]
    with open(tmp_path / "out" / "equity.csv") as handle:
        assert len(list(csv.DictReader(handle))) == len(result.equity) == 300
    assert (tmp_path / "out" / "equity.svg").read_text().startswith("<svg")


def test_a_backtest_on_a_commission_account_applies_and_sums_the_fees():
    # issue 16: raw_spread pays 0.35 bps per side and 5 bps a day of swaps on BTCUSDT, and trades on
    # the feed's raw quote (no markup): a flat market leaves it exactly its fees down
    config = attrs.evolve(CONFIG, account_types=SHIPPED_TYPES)
    day = 86_400 * 10**9
    ticks = [Tick(day // 2 + i * day // 4, "BTCUSDT", 6_500_000, 6_500_000) for i in range(6)]

    result = run_backtest(ticks, buy_and_hold, config=config, account_type="raw_spread")
    isolated = run_backtest(ticks, buy_and_hold, config=config)

    position = next(iter(result.engine.positions.values()))
    assert result.summary["commission"] == position.commission > 0
    assert result.summary["swap"] == position.swap > 0
    assert (isolated.summary["commission"], isolated.summary["swap"]) == (0, 0)
    assert result.summary["end_equity"] == result.summary["start_equity"] - result.summary["commission"] - result.summary["swap"]
    # the isolated account pays the instrument's 2 bps spread instead: 499960 = 500000 − 40
    assert isolated.summary["end_equity"] < isolated.summary["start_equity"]


def test_a_backtest_names_an_unknown_account_type():
    with pytest.raises(ValueError, match="account types: none configured"):
        run_backtest([Tick(10**9, "BTCUSDT", 6_500_000, 6_500_000)], buy_and_hold, config=CONFIG,
                     account_type="raw_spread")
