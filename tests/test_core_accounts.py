"""Issue 16, the account model in the core: isolated journals unchanged, cross margin, fees."""

from __future__ import annotations

from pathlib import Path

import msgpack

from exness_actors import codec
from exness_actors.engine import Engine
from exness_actors.instruments import DEFAULT_INSTRUMENTS, CoreConfig

ISOLATED_JOURNAL = Path(__file__).parent / "data" / "isolated_journal.msgpack"


# --------------------------------------------------------------------------- isolated accounts

def test_an_isolated_journal_recorded_on_main_replays_to_the_same_hashes():
    recorded = msgpack.unpackb(ISOLATED_JOURNAL.read_bytes(), raw=False)
    engine = Engine(CoreConfig(instruments=DEFAULT_INSTRUMENTS))

    for wire in recorded["inputs"]:
        engine.apply(codec.from_wire(wire))

    assert engine.state_hash() == recorded["state_hash"]
    assert engine.rolling_hash == recorded["rolling_hash"]
