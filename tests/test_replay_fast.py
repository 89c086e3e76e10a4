"""Replay's fast paths (issue 14) agree with the record-by-record path they replace."""

from __future__ import annotations

import pytest

from core_helpers import SYMBOL, make_engine
from exness_actors import codec
from exness_actors.commands import CreateAccount, PlaceOrder, Quote
from exness_actors.engine import Engine
from exness_actors.errors import InvalidCommand
from exness_actors.replay import Checkpoint, decode_record, engine_checkpoint, first_uncovered, input_from_wire, replay


def journal(inputs: int, checkpoint_every: int) -> tuple[list[bytes], dict[int, list]]:
    """Payloads of ``inputs`` inputs with a checkpoint after every ``checkpoint_every``-th, and
    the engine's state after each seq."""
    engine = make_engine()
    payloads: list[bytes] = []
    states = {0: engine.to_state()}
    for seq in range(1, inputs + 1):
        command = CreateAccount(account_id=1, initial_deposit=10**6) if seq == 1 else (
            Quote(symbol=SYMBOL, bid=1_000 + seq, ask=1_010 + seq) if seq % 5 else
            PlaceOrder(account_id=1, symbol=SYMBOL, side="buy", type="market", margin=1_000, leverage=2))
        engine.submit(command, ts=seq)
        payloads.append(codec.encode(command))
        if seq % checkpoint_every == 0:
            payloads.append(engine_checkpoint(engine))
        states[seq] = engine.to_state()
    return payloads, states


def first_uncovered_by_decoding(payloads: list[bytes], last_seq: int) -> int:
    for index, payload in enumerate(payloads):
        record = decode_record(payload)
        seq = record.seq
        if seq > last_seq or (type(record) is Checkpoint and seq == last_seq):
            return index
    return len(payloads)


@pytest.mark.parametrize("checkpoint_every", [1, 3, 7, 1000])
def test_the_covered_prefix_found_by_bisection_is_the_one_found_by_decoding_every_record(checkpoint_every):
    payloads, _ = journal(60, checkpoint_every)
    for last_seq in range(0, 62):
        assert first_uncovered(payloads, last_seq) == first_uncovered_by_decoding(payloads, last_seq), last_seq


def test_replay_from_a_snapshot_skips_the_covered_prefix_and_verifies_the_checkpoint_at_its_seq():
    payloads, states = journal(60, 7)
    full = make_engine()
    replay(full, payloads)
    for start in (7, 20, 59, 60):
        engine = Engine.from_state(states[start])
        result = replay(engine, payloads)
        assert engine.state_hash() == full.state_hash() and engine.rolling_hash == full.rolling_hash
        assert result.inputs == 60 - start
        assert result.checkpoints_verified == 60 // 7 - start // 7 + (start % 7 == 0)


def test_a_record_that_does_not_decode_gives_the_true_boundary_or_the_slow_path():
    payloads, states = journal(30, 7)
    for bad in range(len(payloads)):
        damaged = list(payloads)
        damaged[bad] = b"\xc1"                    # never valid msgpack
        for last_seq in (5, 20, 29):
            assert first_uncovered(damaged, last_seq) in (0, first_uncovered(payloads, last_seq))


def test_inputs_decode_through_the_shape_table_as_through_the_codec():
    for command in (Quote(symbol=SYMBOL, bid=1, ask=2, seq=3, ts=4),
                    PlaceOrder(account_id=1, symbol=SYMBOL, side="buy", type="limit", margin=5, leverage=2,
                               price=7, client_order_id="c", seq=9, ts=10)):
        wire = codec.unpack(codec.encode(command))
        assert input_from_wire(wire) == codec.from_wire(wire) == command
    with pytest.raises(InvalidCommand, match="unknown input tag"):
        input_from_wire([101, SYMBOL, 1, 2, 3])           # an event is no journal record
    with pytest.raises(InvalidCommand, match="expected"):
        input_from_wire([1, SYMBOL])
