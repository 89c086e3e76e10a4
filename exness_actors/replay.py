"""Journal records and verified replay.

Theory of operation
-------------------
A journal payload is either a sequenced **input** (a command, encoded by
:mod:`exness_actors.codec`) or a **checkpoint** ``[0, seq, rolling_hash]`` or
``[0, seq, rolling_hash, state_hash]`` (rolling hash format 1), or
``[0, seq, rolling_hash, state_hash or None, hash_format]`` (format 2 and later: the journal
says which format its checkpoints use, and an engine computing another one is told so before
anything is compared). The engine actor writes one whenever the sequence
crosses a multiple of :data:`exness_actors.engine.HASH_BLOCK`, one when the snapshotter has
written a snapshot, and one with the state hash at clean shutdown (computing the state hash
costs a pass over the whole state, so the running engine never does it). Replay applies the
inputs in order to an engine and, at every checkpoint, compares the engine's rolling hash of
output events (and the state hash, when recorded) with the recorded one: the journal verifies
itself, short ones too, and the first divergence is reported precisely (seq, the input,
expected and actual hash). Journals written before the state hash existed hold only the
three-element form, which still verifies.

Recovery, the snapshot worker, ``exness-actors replay`` and backtests all use :func:`replay`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Optional

import attrs
import msgpack

from exness_actors import codec
from exness_actors.commands import COMMAND_TYPES
from exness_actors.engine import HASH_FORMAT_V1, Engine
from exness_actors.errors import CoreError, InvalidCommand

__all__ = ["Checkpoint", "encode_checkpoint", "engine_checkpoint", "decode_record", "first_uncovered", "replay", "ReplayResult",
           "ReplayDivergence", "HashFormatMismatch", "CHECKPOINT_TAG", "verify_checkpoint"]

CHECKPOINT_TAG = 0


@attrs.define(slots=True)
class Checkpoint:
    seq: int
    rolling_hash: bytes
    state_hash: Optional[bytes] = None
    hash_format: int = HASH_FORMAT_V1


def encode_checkpoint(seq: int, rolling_hash: bytes, state_hash: Optional[bytes] = None, *,
                      hash_format: int = HASH_FORMAT_V1) -> bytes:
    """A checkpoint record; format 1 keeps its old layout, later formats name themselves."""
    record: tuple[Any, ...]
    if hash_format != HASH_FORMAT_V1:
        record = (CHECKPOINT_TAG, seq, rolling_hash, state_hash, hash_format)
    elif state_hash is None:
        record = (CHECKPOINT_TAG, seq, rolling_hash)
    else:
        record = (CHECKPOINT_TAG, seq, rolling_hash, state_hash)
    packed: bytes = msgpack.packb(record, use_bin_type=True)
    return packed


def engine_checkpoint(engine: Engine, state_hash: Optional[bytes] = None) -> bytes:
    """The checkpoint record of ``engine`` at its ``last_seq``, in the format it computes."""
    return encode_checkpoint(engine.last_seq, engine.rolling_hash, state_hash, hash_format=engine.hash_format)


def _seq_positions() -> dict[int, int]:
    """Wire tag → index of ``seq`` in the command's wire list (the tag is element 0). Not
    always the last but one: commands that gained optional fields after ``seq, ts`` (an
    operator's halt) carry them after it."""
    return {tag: 1 + [field.name for field in attrs.fields(cls)].index("seq")
            for tag, cls in COMMAND_TYPES.items()}


_SEQ_POSITION = _seq_positions()


def decode_record(payload: bytes, *, after_seq: int = -1) -> Any:
    """A command or a :class:`Checkpoint`; :class:`InvalidCommand` for anything else.

    A command at or before ``after_seq`` is returned as ``None`` without being built (its
    ``seq`` sits at a fixed place per wire tag), which makes skipping a covered prefix cheap.
    """
    try:
        data = codec.unpack(payload)
    except Exception as exc:
        raise InvalidCommand(f"undecodable journal record: {exc}") from None
    if not isinstance(data, list) or not data:
        raise InvalidCommand("a journal record must be a non-empty array")
    if data[0] != CHECKPOINT_TAG:
        position = _SEQ_POSITION.get(data[0])
        if position is not None and len(data) > position and type(data[position]) is int \
                and data[position] <= after_seq:
            return None
        return input_from_wire(data)
    return _checkpoint(data)


#: ``tag -> (class, fewest items, most items)`` of every input, for :func:`input_from_wire`
_INPUT_SHAPES: dict[int, tuple[type, int, int]] = {
    tag: (cls, 1 + sum(1 for f in attrs.fields(cls) if f.default is attrs.NOTHING), 1 + len(attrs.fields(cls)))
    for tag, cls in COMMAND_TYPES.items()}


def input_from_wire(data: list[Any]) -> Any:
    """The command of a decoded input record ``[tag, field1, …]``: :func:`codec.from_wire`
    without its generic steps (journal records are inputs only, the array is a list already)."""
    tag = data[0]
    shape = _INPUT_SHAPES.get(tag) if type(tag) is int else None
    if shape is None:
        raise InvalidCommand(f"unknown input tag {tag!r}")
    cls, fewest, most = shape
    if not fewest <= len(data) <= most:
        raise InvalidCommand(f"{cls.__name__}: expected {most - 1} fields, got {len(data) - 1}")
    try:
        return cls(*data[1:])     # the wire order is the field order
    except (TypeError, ValueError) as exc:
        raise InvalidCommand(f"{cls.__name__}: {exc}") from None


def first_uncovered(payloads: Sequence[bytes], last_seq: int) -> int:
    """The index of the first payload a state at ``last_seq`` has not applied: a binary search
    that decodes ~2·log2(n) records instead of every covered one; 0 when a probe does not decode.

    Along a journal the records' positions increase strictly — input ``s`` sits at ``s``, the
    checkpoint taken after it at ``s + ½`` — so the covered records (inputs up to ``last_seq``,
    checkpoints before it) are a prefix. A checkpoint *at* ``last_seq`` is not covered: replay
    still verifies the starting state against it. The snapshot worker verified the covered
    records when it built the snapshot, so they need no second look.
    """
    low, high = 0, len(payloads)
    while low < high:
        middle = (low + high) // 2
        position = _position(payloads[middle])
        if position is None:
            return 0
        seq, is_checkpoint = position
        if seq < last_seq or (seq == last_seq and not is_checkpoint):
            low = middle + 1
        else:
            high = middle
    return low


def _position(payload: bytes) -> Optional[tuple[int, bool]]:
    """``(seq, is_checkpoint)`` of a journal record, None when it does not decode as one."""
    try:
        data = codec.unpack(payload)
    except Exception:
        return None
    if type(data) is not list or len(data) < 3:
        return None
    if data[0] == CHECKPOINT_TAG:
        seq = data[1]
        return (seq, True) if type(seq) is int else None
    index = _SEQ_POSITION.get(data[0])
    seq = data[index] if index is not None and index < len(data) else None
    return (seq, False) if type(seq) is int else None


def _checkpoint(data: list[Any]) -> Checkpoint:
    if len(data) == 5:
        _tag, seq, rolling, state, hash_format = data
        if (isinstance(seq, int) and isinstance(rolling, bytes) and (state is None or isinstance(state, bytes))
                and type(hash_format) is int and hash_format != HASH_FORMAT_V1):
            return Checkpoint(seq, rolling, state, hash_format)
    elif (len(data) in (3, 4) and isinstance(data[1], int)
            and all(isinstance(digest, bytes) for digest in data[2:])):
        return Checkpoint(*data[1:])
    raise InvalidCommand("malformed checkpoint record")


class HashFormatMismatch(CoreError):
    """The journal's checkpoints use another rolling hash format than the engine replaying it."""

    def __init__(self, seq: int, journal_format: int, engine_format: int) -> None:
        super().__init__(
            f"the journal's checkpoint at seq {seq} uses rolling hash format {journal_format} but the "
            f"engine replaying it computes format {engine_format}: replay under the core config the "
            f"journal was written with (its data dir's core-config.msgpack, or a snapshot of it)")
        self.seq = seq
        self.journal_format = journal_format
        self.engine_format = engine_format


class ReplayDivergence(CoreError):
    """Replay produced a different history from the one the journal recorded."""

    def __init__(self, seq: int, expected: bytes, actual: bytes, last_input: Any, *,
                 what: str = "rolling hash") -> None:
        super().__init__(
            f"replay diverged at seq {seq}: journal checkpoint {what} {expected.hex()} but "
            f"replay computed {actual.hex()} (last input applied: {last_input!r})")
        self.seq = seq
        self.expected = expected
        self.actual = actual
        self.last_input = last_input


def verify_checkpoint(engine: Engine, checkpoint: Checkpoint, last_input: Any, *,
                      check_state: bool = True) -> None:
    """:class:`ReplayDivergence` unless ``engine`` (at the checkpoint's seq) matches it
    (:class:`HashFormatMismatch` when the two use different rolling hash formats)."""
    if checkpoint.hash_format != engine.hash_format:
        raise HashFormatMismatch(checkpoint.seq, checkpoint.hash_format, engine.hash_format)
    actual = engine.rolling_hash
    if actual != checkpoint.rolling_hash:
        raise ReplayDivergence(checkpoint.seq, checkpoint.rolling_hash, actual, last_input)
    if check_state and checkpoint.state_hash is not None:
        actual = engine.state_hash()
        if actual != checkpoint.state_hash:
            raise ReplayDivergence(checkpoint.seq, checkpoint.state_hash, actual, last_input, what="state hash")


@attrs.define(slots=True)
class ReplayResult:
    engine: Engine
    inputs: int = 0
    checkpoints_verified: int = 0
    states_verified: int = 0    # checkpoints that also carried the state hash (clean shutdowns)
    last_state_verified: Optional[int] = None   # the seq of the last of those
    skipped: int = 0          # records at or before the engine's starting seq
    stopped_at: Optional[int] = None


def replay(engine: Engine, payloads: Iterable[bytes], *, until_seq: Optional[int] = None,
           on_events: Optional[Callable[[int, int, list[Any]], None]] = None,
           verify: bool = True, verify_state: bool = True,
           progress: Optional[Callable[[int], None]] = None) -> ReplayResult:
    """Apply journal ``payloads`` to ``engine`` (records at or before its ``last_seq`` are skipped).

    ``on_events(seq, ts, events)`` sees every input's events (for rebuilding stores).
    ``progress(seq)`` is called at every checkpoint record (every ``HASH_BLOCK`` inputs), so a
    caller can show how far replay got without a cost per input (the CLI's progress bar).
    ``verify_state=False`` skips the state hashes (a pass over the whole state each; recovery,
    which must be fast, leaves them to ``exness-actors replay`` and the snapshot worker).
    Raises :class:`ReplayDivergence` at the first checkpoint that does not match, and
    :class:`InvalidCommand` for a record that does not decode or is out of sequence.
    """
    result = ReplayResult(engine)
    apply = engine.apply
    last_input: Any = None
    source: Iterable[bytes] = payloads
    if engine.last_seq and isinstance(payloads, Sequence):
        start = first_uncovered(payloads, engine.last_seq)
        if start:
            result.skipped += start
            source = payloads[start:]
    for payload in source:
        record = decode_record(payload, after_seq=engine.last_seq)
        if record is None:
            result.skipped += 1
            continue
        if type(record) is Checkpoint:
            if record.seq < engine.last_seq:
                continue      # before our starting point (a snapshot covered it)
            if record.seq > engine.last_seq:
                raise InvalidCommand(f"checkpoint for seq {record.seq} after seq {engine.last_seq}: inputs are missing")
            if verify:
                verify_checkpoint(engine, record, last_input, check_state=verify_state)
                result.checkpoints_verified += 1
                if verify_state and record.state_hash is not None:
                    result.states_verified += 1
                    result.last_state_verified = record.seq
            if progress is not None:
                progress(record.seq)
            continue
        seq = record.seq
        if seq <= engine.last_seq:
            result.skipped += 1
            continue
        if until_seq is not None and seq > until_seq:
            result.stopped_at = engine.last_seq
            break
        events = apply(record)
        last_input = record
        result.inputs += 1
        if on_events is not None and events:
            on_events(seq, record.ts, events)
    return result
