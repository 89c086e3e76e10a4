"""Rolling hash format 2 (issue 14): cheaper per input, yet any event field counts.

- new engines and data dirs use format 2; a config read from an older wire is format 1, so old
  journals keep their hashes; an engine computes one format and says so in its checkpoints;
- a change in any field of any event, or an event moved to another input, changes the hash;
- the hash depends only on the history: a snapshot taken mid-block restores it exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

from actors.engine.recovery import journal_dir, pin_core_config, recover
from core_helpers import SYMBOL, make_engine
from exness_actors import codec
from exness_actors.commands import CreateAccount, PlaceOrder, Quote
from exness_actors.engine import HASH_BLOCK, Engine
from exness_actors.engine._hashing import add_input, fold, pack_block
from exness_actors.events import EVENT_TYPES, QuoteUpdated
from exness_actors.instruments import DEFAULT_INSTRUMENTS, CoreConfig
from exness_actors.journal import JournalWriter, encode_frame
from exness_actors.replay import (
    Checkpoint, HashFormatMismatch, decode_record, encode_checkpoint, engine_checkpoint, replay,
)

KEY = bytes(range(32))


def digest(inputs: list[list[Any]]) -> bytes:
    """The format-2 rolling hash of a history given as each input's events."""
    items: list[Any] = []
    for events in inputs:
        add_input(items, events)
    return fold(bytes(16), pack_block(items))


def sample(cls: type) -> Any:
    """An instance of an event class with a plausible value in every field."""
    values = {}
    for field in attrs.fields(cls):
        kind = str(field.type)
        if "list" in kind:
            values[field.name] = ["standard", "raw"]
        elif "str" in kind or "ClientOrderId" in kind:
            values[field.name] = f"{field.name}-text"
        else:
            values[field.name] = 1_000 + len(values)
    return cls(**values)


def changed(value: Any) -> list[Any]:
    """Other values a diverging replay could put in a field holding ``value``."""
    if isinstance(value, list):
        return [value[:-1], [*value, "x"], list(reversed(value))]
    if isinstance(value, str):
        return [value + "x", value[:-1], "", None]
    return [value + 1, value - 1, -value, 0, None, -1]


# --------------------------------------------------------------------------- any field counts

@pytest.mark.parametrize("cls", sorted(EVENT_TYPES.values(), key=lambda cls: cls.__name__),
                         ids=lambda cls: cls.__name__)
def test_a_change_in_any_field_of_any_event_changes_the_hash(cls: type) -> None:
    event = sample(cls)
    other = sample(QuoteUpdated)
    for events in ([event], [event, other], [other, event]):
        expected = digest([events])
        for field in attrs.fields(cls):
            for value in changed(getattr(event, field.name)):
                diverged = attrs.evolve(event, **{field.name: value})
                altered = [diverged if item is event else item for item in events]
                assert digest([altered]) != expected, (cls.__name__, field.name, value)


def test_minus_one_and_minus_two_are_told_apart_and_so_are_none_and_zero() -> None:
    quote = QuoteUpdated(SYMBOL, 10, 11, 5)
    assert digest([[QuoteUpdated(SYMBOL, -1, 11, 5)]]) != digest([[QuoteUpdated(SYMBOL, -2, 11, 5)]])
    assert digest([[quote]]) != digest([[QuoteUpdated(SYMBOL, 10, 11, 6)]])
    event = sample(EVENT_TYPES[105])            # CommandRejected: ref is Optional[int]
    assert digest([[attrs.evolve(event, ref=None)]]) != digest([[attrs.evolve(event, ref=0)]])


def test_which_input_an_event_belongs_to_counts() -> None:
    first, second = QuoteUpdated(SYMBOL, 10, 11, 5), sample(EVENT_TYPES[104])
    assert digest([[first], [second]]) != digest([[first, second]])
    assert digest([[first, second]]) != digest([[second, first]])
    assert digest([[first], []]) != digest([[first]])


def test_an_event_mutated_after_apply_does_not_change_a_hash_already_taken() -> None:
    engine = make_engine()
    events = engine.submit(Quote(symbol=SYMBOL, bid=100, ask=101), ts=1)
    before = engine.rolling_hash
    events[0].bid = 7
    assert engine.rolling_hash == before


# --------------------------------------------------------------------------- which format runs

def test_new_engines_use_format_2_and_an_older_wire_reads_as_format_1() -> None:
    config = CoreConfig(instruments=DEFAULT_INSTRUMENTS)
    assert config.hash_format == 2 and Engine(config).hash_format == 2
    assert CoreConfig.from_wire(config.to_wire()) == config
    legacy = attrs.evolve(config, hash_format=1)
    assert len(legacy.to_wire()) == 3                       # the wire of before issue 14
    assert CoreConfig.from_wire(legacy.to_wire()).hash_format == 1
    with pytest.raises(Exception, match="hash_format"):
        attrs.evolve(config, hash_format=3)


def test_the_formats_give_different_hashes_for_the_same_history() -> None:
    engines = [make_engine(hash_format=1), make_engine(hash_format=2)]
    for engine in engines:
        engine.submit(CreateAccount(account_id=1, initial_deposit=10_000), ts=1)
        engine.submit(Quote(symbol=SYMBOL, bid=100, ask=101), ts=2)
    assert engines[0].state_hash() != engines[1].state_hash()      # the config is part of the state
    assert engines[0].rolling_hash != engines[1].rolling_hash


def test_a_snapshot_mid_block_restores_the_rolling_hash_exactly() -> None:
    live = make_engine()
    live.submit(CreateAccount(account_id=1, initial_deposit=1_000_000), ts=1)
    for index in range(HASH_BLOCK + 50):
        live.submit(Quote(symbol=SYMBOL, bid=6_500_000 + index % 7, ask=6_500_100 + index % 7), ts=2 + index)
        if index == 30:
            live.submit(PlaceOrder(account_id=1, symbol=SYMBOL, side="buy", type="market", margin=10_000,
                                   leverage=10), ts=2 + index)
        if index in (100, HASH_BLOCK + 20):
            restored = Engine.from_state(codec.unpack(codec.pack(live.to_state())))
            assert restored.rolling_hash == live.rolling_hash and restored.state_hash() == live.state_hash()
            restored.submit(Quote(symbol=SYMBOL, bid=1, ask=2), ts=10**9)
            live.submit(Quote(symbol=SYMBOL, bid=1, ask=2), ts=10**9)
            assert restored.rolling_hash == live.rolling_hash


# --------------------------------------------------------------------------- the journal says which

def test_format_2_checkpoints_name_their_format_and_format_1_keeps_its_layout() -> None:
    engine = make_engine()
    engine.submit(Quote(symbol=SYMBOL, bid=100, ask=101), ts=1)
    record = codec.unpack(engine_checkpoint(engine))
    assert record == [0, 1, engine.rolling_hash, None, 2]
    assert decode_record(engine_checkpoint(engine)) == Checkpoint(1, engine.rolling_hash, None, 2)
    old = make_engine(hash_format=1)
    old.submit(Quote(symbol=SYMBOL, bid=100, ask=101), ts=1)
    assert codec.unpack(engine_checkpoint(old)) == [0, 1, old.rolling_hash]
    assert decode_record(encode_checkpoint(1, b"h" * 16, b"s" * 32)).hash_format == 1


def test_replaying_a_journal_under_the_other_format_says_so() -> None:
    for written, replayed in ((2, 1), (1, 2)):
        engine = make_engine(hash_format=written)
        command = Quote(symbol=SYMBOL, bid=100, ask=101)
        engine.submit(command, ts=1)
        payloads = [codec.encode(command), engine_checkpoint(engine)]
        with pytest.raises(HashFormatMismatch, match=f"format {written} but the engine .* computes format {replayed}"):
            replay(make_engine(hash_format=replayed), payloads)
        assert replay(make_engine(hash_format=written), payloads).checkpoints_verified == 1


def _journal(data_dir: Path, engine: Engine, commands: list[Any]) -> None:
    frames = []
    first = engine.last_seq + 1
    for command in commands:
        engine.submit(command, ts=engine.now + 1)
        frames.append(codec.encode(command))
    frames.append(engine_checkpoint(engine))
    with JournalWriter(journal_dir(data_dir)) as writer:
        writer.append(b"".join(encode_frame(frame) for frame in frames), first_seq=first)
        writer.fsync()


def test_a_new_data_dir_is_format_2_and_an_old_one_stays_format_1(tmp_path: Path) -> None:
    configured = CoreConfig(instruments=DEFAULT_INSTRUMENTS)           # what the settings build: format 2
    commands = [CreateAccount(account_id=1, initial_deposit=500), Quote(symbol="BTCUSDT", bid=100, ask=101)]
    for name, pinned_format in (("new", 2), ("old", 1)):
        data_dir = tmp_path / name
        data_dir.mkdir()
        pinned = pin_core_config(data_dir, attrs.evolve(configured, hash_format=pinned_format))
        _journal(data_dir, Engine(pinned), commands)

        recovered = recover(data_dir, configured, KEY)
        assert recovered.engine.hash_format == pinned_format
        assert recovered.replayed == 2
