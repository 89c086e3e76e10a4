"""Checkpoints: at every snapshot and at clean shutdown (with the state hash), so short journals verify too."""

from __future__ import annotations

import functools

import pytest
import trio

from actors import cli
from actors.engine import actor as engine_actor
from actors.engine.actor import EngineHandle
from actors.engine.recovery import journal_dir, pin_core_config
from core_helpers import SYMBOL, make_engine
from exness_actors import codec
from exness_actors.commands import CreateAccount, PlaceOrder, Quote
from exness_actors.journal import JournalWriter, encode_frame, scan_journal
from exness_actors.replay import Checkpoint, ReplayDivergence, decode_record, encode_checkpoint, replay


def trio_clock() -> int:
    return int(trio.current_time() * 1_000_000_000)


async def start(nursery, tmp_path):
    handle = EngineHandle(make_engine(), 100)
    journal = JournalWriter(tmp_path / "journal")
    await nursery.start(functools.partial(engine_actor.run, handle=handle, journal=journal,
                                          fsync="off", clock=trio_clock))
    return handle, journal


async def a_few_inputs(handle) -> None:
    await handle.request(CreateAccount(account_id=1, initial_deposit=10**9))
    await handle.request(Quote(symbol=SYMBOL, bid=6_500_000, ask=6_500_100))
    await handle.request(PlaceOrder(account_id=1, symbol=SYMBOL, side="buy", type="market",
                                    margin=10_000, leverage=10))


def checkpoints(tmp_path) -> list[Checkpoint]:
    records = [decode_record(p) for p in scan_journal(tmp_path / "journal").payloads]
    return [record for record in records if isinstance(record, Checkpoint)]


def inputs_then_checkpoint(state_hash: bytes | None = None, *, rolling_hash: bytes | None = None,
                           hash_format: int = 2) -> list[bytes]:
    engine = make_engine(hash_format=hash_format)
    payloads = []
    for command in (CreateAccount(account_id=1, initial_deposit=500), Quote(symbol=SYMBOL, bid=10, ask=11)):
        engine.submit(command, ts=engine.now + 1)
        payloads.append(codec.encode(command))
    payloads.append(encode_checkpoint(engine.last_seq, rolling_hash or engine.rolling_hash,
                                      state_hash if state_hash is not None else engine.state_hash(),
                                      hash_format=engine.hash_format))
    return payloads


async def test_clean_shutdown_writes_a_checkpoint_with_the_state_hash(tmp_path):
    async with trio.open_nursery() as nursery:
        handle, journal = await start(nursery, tmp_path)
        await a_few_inputs(handle)
        live_hash = await handle.query(lambda engine: engine.state_hash())
        await handle.stop()
    journal.close()

    last = checkpoints(tmp_path)[-1]
    assert (last.seq, last.state_hash) == (3, live_hash)
    result = replay(make_engine(), scan_journal(tmp_path / "journal").payloads)
    assert result.checkpoints_verified == 1 and result.states_verified == 1


async def test_a_snapshot_request_writes_a_checkpoint_at_the_next_batch(tmp_path):
    async with trio.open_nursery() as nursery:
        handle, journal = await start(nursery, tmp_path)
        await a_few_inputs(handle)
        handle.request_checkpoint()
        await handle.request(Quote(symbol=SYMBOL, bid=6_500_010, ask=6_500_110))
        assert [c.seq for c in checkpoints(tmp_path)] == [4]
        await handle.stop()
    journal.close()


def test_a_checkpoint_state_hash_is_verified_and_a_wrong_one_is_a_divergence():
    assert replay(make_engine(), inputs_then_checkpoint()).states_verified == 1
    with pytest.raises(ReplayDivergence, match="state hash"):
        replay(make_engine(), inputs_then_checkpoint(bytes(16)))


def test_old_checkpoints_without_a_state_hash_still_verify():
    payloads = inputs_then_checkpoint(hash_format=1)
    old = decode_record(payloads[-1])
    payloads[-1] = encode_checkpoint(old.seq, old.rolling_hash)
    result = replay(make_engine(hash_format=1), payloads)
    assert (result.checkpoints_verified, result.states_verified) == (1, 0)


def test_replay_cli_verifies_a_short_journal_and_its_final_state(tmp_path, capsys):
    pin_core_config(tmp_path, make_engine().config)
    with JournalWriter(journal_dir(tmp_path)) as writer:
        writer.append(b"".join(encode_frame(p) for p in inputs_then_checkpoint()), first_seq=1)
    assert cli.main(["replay", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 checkpoints verified" in out
    assert "final state hash verified at seq 2" in out


def test_recovery_leaves_the_state_hash_to_replay_but_checks_the_rolling_hash():
    payloads = inputs_then_checkpoint(bytes(16))             # a wrong state hash, a right rolling hash
    assert replay(make_engine(), payloads, verify_state=False).checkpoints_verified == 1
    with pytest.raises(ReplayDivergence, match="rolling hash"):
        replay(make_engine(), inputs_then_checkpoint(rolling_hash=bytes(16)), verify_state=False)
