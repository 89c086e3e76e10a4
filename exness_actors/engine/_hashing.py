"""The rolling hash of the engine's output events, in its two formats.

Theory of operation
-------------------
Every input's events feed a rolling digest; journal checkpoints record ``(seq, rolling_hash)``
so replay verifies itself. The digest is folded per block of :data:`HASH_BLOCK` inputs:
``base = BLAKE2b-128(base ‖ block)`` at every multiple of ``HASH_BLOCK``, and
``rolling_hash = BLAKE2b-128(base ‖ block so far)`` at any seq, so the value depends only on
the event history, never on when it is read. The two formats differ in what one input adds to
the block:

* **format 1** (``HASH_FORMAT_V1``, journals written before issue 14): the msgpack encoding of
  the input's events, exactly as :func:`exness_actors.codec.encode_many` packs them.
* **format 2** (``HASH_FORMAT_V2``, the default of new data dirs): one signed 64-bit *input
  digest*, :func:`input_digest`, appended to the block as 8 little-endian bytes. It is CPython's
  ``hash()`` of one flat tuple holding, for every event in order, its wire tag and then each
  field in wire order, where an int stays itself (but ``-1``, whose ``hash`` is ``-2``'s, becomes
  ``(-1,)``), a string becomes :func:`string_code` (its UTF-8 bytes and an end marker read as one
  integer: injective), ``None`` becomes ``()``, a list the tuple of its items so mapped, and
  anything else (a wrong-typed value echoed by a rejection) ``(-2, its msgpack bytes as an int)``.
  The tuple is therefore an injective image of the events (the tag fixes how many fields
  follow); ``hash`` of ints and of tuples is deterministic across processes (only ``str``,
  ``bytes`` and, before 3.12, ``None`` hash differently per process, and none of them reaches
  it). A single ``QuoteUpdated`` — most inputs — takes a shortcut that builds the same tuple
  from its four fields directly. Reading each field once and hashing it in C costs a fraction
  of packing it (docs/decisions.md, "Rolling hash format 2").

Invariants: both builds (pure and mypyc) compute the same digests (tests/test_core_build.py);
an engine computes exactly one format, fixed by its :class:`~exness_actors.instruments.CoreConfig`.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from typing import Any

from exness_actors import codec
from exness_actors.events import QuoteUpdated

__all__ = ["HASH_BLOCK", "HASH_FORMAT_V1", "HASH_FORMAT_V2", "HASH_FORMATS", "input_digest", "string_code",
           "fold", "digests_to_bytes", "digests_from_bytes"]

#: the rolling hash folds its block into the digest every this many inputs
HASH_BLOCK = 4096
HASH_FORMAT_V1 = 1
HASH_FORMAT_V2 = 2
HASH_FORMATS = (HASH_FORMAT_V1, HASH_FORMAT_V2)

_QUOTE_UPDATED_TAG: int = codec.TAGS[QuoteUpdated]
_WIRE = codec.WIRE_TUPLE
_NONE: tuple[()] = ()
_MINUS_ONE: tuple[int] = (-1,)
_OTHER = -2
#: string codes already computed (the symbols, sides, statuses, reasons of every event): a
#: cache only — a code is the same whether it comes from here or is computed again
_CODES: dict[str, int] = {}
_CODES_MAX = 1 << 16


def string_code(text: str) -> int:
    """An integer that determines ``text``: its UTF-8 bytes then ``0x01``, little-endian."""
    code = _CODES.get(text)
    if code is None:
        code = int.from_bytes(text.encode() + b"\x01", "little")
        if len(_CODES) < _CODES_MAX:
            _CODES[text] = code
    return code


def _stable(value: Any) -> Any:
    """``value`` as something ``hash`` treats the same in every process (see the module doc)."""
    if type(value) is int:
        return _MINUS_ONE if value == -1 else value
    if value is None:
        return _NONE
    if type(value) is str:
        return string_code(value)
    if type(value) is list or type(value) is tuple:
        return tuple([_stable(item) for item in value])
    if type(value) is bool:
        return value
    # anything else (a wrong-typed value a rejection echoes back): its msgpack encoding, as an
    # integer in a tuple of its own so it cannot stand for an int
    return (_OTHER, int.from_bytes(codec.pack(value) + b"\x01", "little"))


def input_digest(events: list[Any]) -> int:
    """Format 2: the signed 64-bit digest of one input's events (see the module doc)."""
    if len(events) == 1:
        event = events[0]
        if type(event) is QuoteUpdated:
            # the common case; the same tuple the loop below builds (bid, ask > 0 and ts >= 0
            # are never -1): pinned by tests/test_rolling_hash.py
            return hash((_QUOTE_UPDATED_TAG, string_code(event.symbol), event.bid, event.ask, event.ts))
    flat: list[Any] = []
    for event in events:
        for value in _WIRE[type(event)](event):
            if type(value) is int:
                flat.append(_MINUS_ONE if value == -1 else value)
            else:
                flat.append(_stable(value))
    return hash(tuple(flat))


def digests_to_bytes(digests: list[int]) -> bytes:
    """The block of format 2: each digest as 8 little-endian bytes."""
    packed = array("q", digests)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def digests_from_bytes(data: bytes) -> list[int]:
    packed = array("q")
    packed.frombytes(data)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tolist()


def fold(base: bytes, block: bytes) -> bytes:
    """BLAKE2b-128 of ``base ‖ block``: the next base at a block boundary, the rolling hash between."""
    return hashlib.blake2b(base + block, digest_size=16).digest()
