"""The codec's wire form is the readable one: ``[tag, field1, …]`` in attrs field order.

``codec.encode`` packs the tuple of one precomputed getter per class (issue 14); this pins it to
the plain construction from the class's fields for every command and event, and the legacy
trimming of the operator's halt and resume to their old three-field form.
"""

from __future__ import annotations

import attrs
import pytest

from exness_actors import codec
from exness_actors.commands import COMMAND_TYPES, HaltSymbol, ResumeSymbol
from exness_actors.events import EVENT_TYPES

ALL_TYPES = sorted({**COMMAND_TYPES, **EVENT_TYPES}.items())


def sample(cls: type, salt: int):
    """An instance with a distinct value in every field (the codec does not validate values)."""
    values = {}
    for index, field in enumerate(attrs.fields(cls)):
        values[field.name] = f"s{salt}-{index}" if index % 3 == 1 else salt * 1_000 + index
    return cls(**values)


@pytest.mark.parametrize(("tag", "cls"), ALL_TYPES, ids=[cls.__name__ for _tag, cls in ALL_TYPES])
def test_encode_is_the_tag_then_every_field_in_order(tag, cls):
    message = sample(cls, 7)
    fields = [getattr(message, field.name) for field in attrs.fields(cls)]
    assert codec.encode(message) == codec.pack([tag, *fields])
    assert codec.to_wire(message) == [tag, *fields]
    assert codec.encode_many([message, message]) == codec.pack([[tag, *fields], [tag, *fields]])
    assert codec.encode_many_fast([message]) == codec.pack([[tag, *fields]])
    assert codec.decode(codec.encode(message)) == message


@pytest.mark.parametrize("cls", [HaltSymbol, ResumeSymbol])
def test_a_legacy_halt_or_resume_keeps_its_three_field_form_and_its_hash_bytes_do_not(cls):
    legacy = cls(symbol="BTCUSDT", seq=3, ts=4)
    tag = codec.TAGS[cls]
    assert codec.encode(legacy) == codec.pack([tag, "BTCUSDT", 3, 4])
    full = [getattr(legacy, field.name) for field in attrs.fields(cls)]
    assert codec.encode_many_fast([legacy]) == codec.pack([[tag, *full]])
    by_operator = cls(symbol="BTCUSDT", seq=3, ts=4, operator_id=9, reason="audit")
    assert codec.encode(by_operator) == codec.pack([tag, *[getattr(by_operator, f.name) for f in attrs.fields(cls)]])
