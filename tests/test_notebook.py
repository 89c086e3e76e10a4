"""exness_actors.notebook: journal API, exports and what-if."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from exness_actors import codec
from exness_actors.commands import ClosePosition, CreateAccount, Deposit, PlaceOrder, Quote
from exness_actors.engine import Engine
from exness_actors.events import PositionClosed
from exness_actors.journal import JournalWriter, encode_frame
from exness_actors.notebook import (CLOSED_POSITION_COLUMNS, EVENT_COLUMNS, EditError, ExportError, Journal,
                                    export_closed_positions, export_events, load_edits, what_if)
from exness_actors.replay import ReplayDivergence, encode_checkpoint
from core_helpers import SYMBOL, make_engine

CHECKPOINT_AT = 5


def _commands() -> list:
    return [
        CreateAccount(account_id=1, initial_deposit=100_000),                      # 1
        CreateAccount(account_id=2, initial_deposit=100_000),                      # 2
        CreateAccount(account_id=3, initial_deposit=50_000),                       # 3
        Quote(symbol=SYMBOL, bid=1_000_000, ask=1_000_000),                        # 4
        PlaceOrder(account_id=2, symbol=SYMBOL, side="buy", type="market",         # 5 -> position 1
                   margin=10_000, leverage=10, client_order_id="b"),
        PlaceOrder(account_id=1, symbol=SYMBOL, side="buy", type="market",         # 6 -> position 2
                   margin=10_000, leverage=10, client_order_id="a"),
        Deposit(account_id=3, amount=1_000, idempotency_key="d"),                  # 7
        Quote(symbol=SYMBOL, bid=1_100_000, ask=1_100_000),                        # 8
        ClosePosition(account_id=2, position_id=1),                                # 9
        ClosePosition(account_id=1, position_id=2),                                # 10
    ]


def write(data_dir: Path, *, corrupt: bool = False) -> tuple[Engine, dict[int, bytes]]:
    """Journal the inputs above (checkpoints after seq 5 and at the end); return the live engine
    and its state hash after every seq."""
    from actors.engine.recovery import pin_core_config

    engine = make_engine()
    hashes = {0: engine.state_hash()}
    frames = []
    for index, command in enumerate(_commands(), start=1):
        engine.submit(command, ts=index * 1_000)
        frames.append(codec.encode(command))
        hashes[engine.last_seq] = engine.state_hash()
        if engine.last_seq == CHECKPOINT_AT:
            frames.append(encode_checkpoint(engine.last_seq, bytes(16) if corrupt else engine.rolling_hash,
                                            hash_format=engine.hash_format))
    frames.append(encode_checkpoint(engine.last_seq, engine.rolling_hash, hash_format=engine.hash_format))
    with JournalWriter(data_dir / "journal") as writer:
        writer.append(b"".join(encode_frame(f) for f in frames), first_seq=1)
        writer.fsync()
    pin_core_config(data_dir, engine.config)
    return engine, hashes


@pytest.fixture
def journal(tmp_path) -> Journal:
    write(tmp_path)
    return Journal.open(tmp_path)


def test_open_inputs_and_events(journal, tmp_path):
    inputs = list(journal.inputs())
    assert [c.seq for c in inputs] == list(range(1, 11))
    assert inputs[4] == codec.decode(codec.encode(inputs[4]))
    events = list(journal.events())
    assert [seq for seq, _ts, _e in events] == sorted(seq for seq, _ts, _e in events)
    assert {seq for seq, _ts, _e in events} == set(range(1, 11))
    assert all(ts == seq * 1_000 for seq, ts, _e in events)
    closes = [e for _s, _t, e in events if type(e) is PositionClosed]
    assert [(c.account_id, c.position_id) for c in closes] == [(2, 1), (1, 2)]


def test_open_without_journal_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no journal/ directory"):
        Journal.open(tmp_path)


def test_engine_at_every_seq_matches_the_live_engine(tmp_path):
    live, hashes = write(tmp_path)
    journal = Journal.open(tmp_path)
    for seq, expected in hashes.items():
        assert journal.engine_at(seq).state_hash() == expected
    assert journal.engine_at().state_hash() == live.state_hash()
    at6 = journal.engine_at(6)
    assert len(at6.open_positions(1)) == 1 and at6.account_summary(3)["balance"] == 50_000


def test_engine_at_from_a_snapshot_state(journal):
    start = Engine.from_state(journal.engine_at(4).to_state())
    assert journal.engine_at(8, start=start).state_hash() == journal.engine_at(8).state_hash()


def test_events_verify_checkpoints(tmp_path):
    write(tmp_path, corrupt=True)
    journal = Journal.open(tmp_path)
    with pytest.raises(ReplayDivergence, match=f"seq {CHECKPOINT_AT}"):
        list(journal.events())
    assert len(list(journal.events(verify=False))) > 0


def test_stepper_walks_input_by_input(tmp_path):
    _live, hashes = write(tmp_path)
    stepper = Journal.open(tmp_path).stepper()
    assert stepper.seq == 0
    seen = []
    while (stepped := stepper.step()) is not None:
        command, events = stepped
        assert stepper.seq == command.seq and events
        assert stepper.engine.state_hash() == hashes[command.seq]
        seen.append(command.seq)
    assert seen == list(range(1, 11)) and stepper.checkpoints_verified == 2
    assert stepper.step() is None


def test_closed_positions(journal):
    rows = journal.closed_positions()
    assert [r["account_id"] for r in rows] == [2, 1]
    row = rows[1]
    assert set(row) == set(CLOSED_POSITION_COLUMNS)
    assert row["position_id"] == 2 and row["side"] == "buy" and row["reason"] == "user"
    assert row["open_price"] == 1_000_000 and row["close_price"] == 1_100_000
    assert isinstance(row["pnl"], int) and row["pnl"] > 0 and row["seq"] == 10


def test_export_events_csv_and_jsonl(journal, tmp_path):
    total = len(list(journal.events()))
    assert export_events(journal, tmp_path / "e.csv", "csv") == total
    assert export_events(journal, tmp_path / "e.jsonl", "jsonl") == total
    with open(tmp_path / "e.csv", newline="") as file:
        reader = csv.DictReader(file)
        assert tuple(reader.fieldnames) == EVENT_COLUMNS
        csv_rows = list(reader)
    lines = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert len(csv_rows) == len(lines) == total
    assert {"seq", "input_ts", "event", "account_id", "pnl", "bid", "type"} <= set(EVENT_COLUMNS)
    closed = [r for r in lines if r["event"] == "PositionClosed"]
    assert len(closed) == 2 and type(closed[0]["pnl"]) is int and closed[0]["seq"] == 9
    created = next(r for r in csv_rows if r["event"] == "AccountCreated")
    assert created["balance"] == "100000" and created["pnl"] == ""    # ints as integers; empty where absent
    quote = next(r for r in lines if r["event"] == "QuoteUpdated")
    assert quote["bid"] == 1_000_000 and "pnl" not in quote


def test_export_closed_positions(journal, tmp_path):
    assert export_closed_positions(journal, tmp_path / "p.csv", "csv") == 2
    assert export_closed_positions(journal, tmp_path / "p.jsonl", "jsonl") == 2
    with open(tmp_path / "p.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [r["account_id"] for r in rows] == ["2", "1"] and rows[0]["close_price"] == "1100000"
    assert [json.loads(x)["position_id"] for x in (tmp_path / "p.jsonl").read_text().splitlines()] == [1, 2]


def test_export_parquet_needs_a_writer_and_bad_formats_are_refused(journal, tmp_path):
    with pytest.raises(ExportError, match="pyarrow"):
        export_events(journal, tmp_path / "e.parquet", "parquet")
    with pytest.raises(ExportError, match="unknown export format 'xlsx'"):
        export_events(journal, tmp_path / "e.x", "xlsx")
    got = {}

    def writer(rows, columns, path):
        got.update(rows=rows, columns=columns, path=path)

    assert export_closed_positions(journal, tmp_path / "p.parquet", "parquet", parquet_writer=writer) == 2
    assert got["columns"] == CLOSED_POSITION_COLUMNS and len(got["rows"]) == 2


# ------------------------------------------------------------------------------------------- what-if


def _edits(tmp_path, *lines) -> list:
    path = tmp_path / "edits.jsonl"
    path.write_text("\n".join(json.dumps(x) if not isinstance(x, str) else x for x in lines) + "\n")
    return load_edits(path)


def test_what_if_without_edits_is_identical(journal):
    report = what_if(journal, [])
    assert report.identical and report.changed_accounts == []
    assert report.original_state_hash == report.edited_state_hash
    assert "event streams identical" in str(report)


def test_what_if_dropping_an_order_changes_only_that_account(journal, tmp_path):
    report = what_if(journal, _edits(tmp_path, {"op": "drop", "seq": 6}))
    assert report.first_divergence == (6, 6)
    assert report.changed_accounts == [1]
    assert report.original[1].realized_pnl > 0 and report.edited[1].realized_pnl == 0
    assert report.edited[1].balance == 100_000 and report.original[1].balance > 100_000
    assert report.original[2] == report.edited[2] and report.original[3] == report.edited[3]
    assert report.original_inputs == 10 and report.edited_inputs == 9
    text = str(report)
    assert "account 1:" in text and "realized_pnl" in text and "account 2:" not in text


def test_what_if_replace_and_insert(journal, tmp_path):
    # A sell instead of a buy: account 1 loses when the price rises.
    replaced = what_if(journal, _edits(tmp_path, {"op": "replace", "seq": 6, "command": {
        "type": "PlaceOrder", "account_id": 1, "symbol": SYMBOL, "side": "sell", "order_type": "market",
        "margin": 10_000, "leverage": 10, "client_order_id": "a"}}))
    assert replaced.edited[1].realized_pnl < 0 < replaced.original[1].realized_pnl
    assert replaced.changed_accounts == [1]
    # Inserting a deposit for account 3 after seq 3 shifts seqs but only changes account 3's balance.
    inserted = what_if(journal, _edits(tmp_path, {"op": "insert", "after_seq": 3, "command": {
        "type": "Deposit", "account_id": 3, "amount": 5}}))
    assert inserted.edited_inputs == 11 and inserted.changed_accounts == [3]
    assert inserted.edited[3].balance == inserted.original[3].balance + 5
    assert inserted.first_divergence == (4, 4)
    # Before the first input (after_seq 0), with an explicit ts: rejected (no account yet), same outcomes.
    early = what_if(journal, _edits(tmp_path, {"op": "insert", "after_seq": 0, "command": {
        "type": "Deposit", "account_id": 3, "amount": 5, "ts": 1}}))
    assert early.first_divergence == (1, 1) and early.changed_accounts == []


def test_bad_edit_files_name_the_line(journal, tmp_path):
    cases = [
        ("{not json", "line 2: not valid JSON"),
        ({"op": "move", "seq": 1}, "line 2: \"op\" must be one of"),
        ({"op": "drop"}, "line 2: drop takes op, seq: missing seq"),
        ({"op": "drop", "seq": "3"}, "line 2: seq must be an integer"),
        ({"op": "insert", "after_seq": 1, "command": {"type": "Nope"}}, "line 2: bad command: unknown command type"),
        ({"op": "insert", "after_seq": 1, "command": {"type": "Deposit", "account_id": 1}},
         "line 2: bad command: Deposit: missing required field(s) amount"),
        ({"op": "insert", "after_seq": 1, "command": {"type": "Deposit", "account_id": 1, "amount": 1.5}},
         "line 2: bad command: Deposit.amount: 1.5 is a float"),
        ({"op": "insert", "after_seq": 1, "command": {"type": "Deposit", "account_id": 1, "amount": 1, "x": 1}},
         "line 2: bad command: Deposit: unknown field"),
    ]
    for bad, message in cases:
        with pytest.raises(EditError) as info:
            _edits(tmp_path, "# a comment", bad)
        assert message in str(info.value), str(info.value)
    with pytest.raises(EditError, match="line 1: the journal has no input with seq 99"):
        what_if(journal, _edits(tmp_path, {"op": "drop", "seq": 99}))
    with pytest.raises(EditError, match="already changed by the edit on line 1"):
        what_if(journal, _edits(tmp_path, {"op": "drop", "seq": 3}, {"op": "drop", "seq": 3}))


def test_notebook_module_is_pure():
    from test_purity import REPO_ROOT, find_violations

    path = REPO_ROOT / "exness_actors" / "notebook.py"
    assert find_violations(path.read_text(), path=str(path), module="exness_actors.notebook") == []
