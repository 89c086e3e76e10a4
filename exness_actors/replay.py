"""Journal records and verified replay.

Theory of operation
-------------------
A journal payload is either a sequenced **input** (a command, encoded by
:mod:`exness_actors.codec`) or a **checkpoint** ``[0, seq, rolling_hash]`` or
``[0, seq, rolling_hash, state_hash]``. The engine actor writes one whenever the sequence
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

from typing import Any, Callable, Iterable, Optional

import attrs
import msgpack

from exness_actors import codec
from exness_actors.commands import COMMAND_TYPES
from exness_actors.engine import Engine
from exness_actors.errors import CoreError, InvalidCommand

__all__ = ["Checkpoint", "encode_checkpoint", "decode_record", "replay", "ReplayResult",
           "ReplayDivergence", "CHECKPOINT_TAG", "verify_checkpoint"]

CHECKPOINT_TAG = 0


@attrs.define(slots=True)
class Checkpoint:
    seq: int
    rolling_hash: bytes
    state_hash: Optional[bytes] = None


def encode_checkpoint(seq: int, rolling_hash: bytes, state_hash: Optional[bytes] = None) -> bytes:
    record = (CHECKPOINT_TAG, seq, rolling_hash) if state_hash is None else (
        CHECKPOINT_TAG, seq, rolling_hash, state_hash)
    packed: bytes = msgpack.packb(record, use_bin_type=True)
    return packed


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
        return codec.from_wire(data)
    if (len(data) not in (3, 4) or not isinstance(data[1], int)
            or not all(isinstance(digest, bytes) for digest in data[2:])):
        raise InvalidCommand("malformed checkpoint record")
    return Checkpoint(*data[1:])


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
    """:class:`ReplayDivergence` unless ``engine`` (at the checkpoint's seq) matches it."""
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
    for payload in payloads:
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
