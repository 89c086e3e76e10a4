"""The rolling hash of the engine's output events, in its two formats.

Theory of operation
-------------------
Every input's events feed a rolling digest; journal checkpoints record ``(seq, rolling_hash)``
so replay verifies itself. The digest is folded per block of :data:`HASH_BLOCK` inputs:
``base = BLAKE2b-128(base ‖ block)`` at every multiple of ``HASH_BLOCK``, and
``rolling_hash = BLAKE2b-128(base ‖ block so far)`` at any seq, so the value depends only on
the event history, never on when it is read. The formats differ in what an input adds to the
block and when it is encoded:

* **format 1** (``HASH_FORMAT_V1``, journals written before issue 14): the msgpack encoding of
  the input's events (:func:`exness_actors.codec.encode_many`), packed at once, one packer call
  per input.
* **format 2** (``HASH_FORMAT_V2``, every new engine and data dir): the block is one msgpack
  array, packed once when it is folded or read. An input whose only event is a
  ``QuoteUpdated`` — most inputs — adds that event's four fields to it by reference (``symbol,
  bid, ask, ts``: four list appends, no encoding per input); any other input adds the format-1
  bytes of its events as one ``bin`` item. The block stays uniquely decodable (a string starts
  a quote's four items, a ``bin`` is one other input), so it determines every field of every
  event exactly, and BLAKE2b covers it as in format 1 (docs/decisions.md, "Rolling hash
  format 2").

The block holds only immutable values (str, int, bytes), so an event mutated after ``apply``
cannot change a hash already taken. Invariants: both builds (pure and mypyc) compute the same
hashes (tests/test_core_build.py); an engine computes exactly one format, fixed by its
:class:`~exness_actors.instruments.CoreConfig`.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from exness_actors import codec
from exness_actors.events import QuoteUpdated

__all__ = ["HASH_BLOCK", "HASH_FORMAT_V1", "HASH_FORMAT_V2", "HASH_FORMATS", "add_input", "pack_block", "unpack_block",
           "fold"]

#: the rolling hash folds its block into the digest every this many inputs
HASH_BLOCK: Final = 4096
HASH_FORMAT_V1: Final = 1
HASH_FORMAT_V2: Final = 2
HASH_FORMATS = (HASH_FORMAT_V1, HASH_FORMAT_V2)


def add_input(items: list[Any], events: list[Any]) -> None:
    """Format 2: add one input's events to the block's items."""
    if len(events) == 1 and type(events[0]) is QuoteUpdated:
        event: Any = events[0]      # read as Any: hashing records the fields, it does not check them
        items.append(event.symbol)
        items.append(event.bid)
        items.append(event.ask)
        items.append(event.ts)
    else:
        items.append(codec.encode_many_fast(events))


def pack_block(items: list[Any]) -> bytes:
    """Format 2: the block's bytes (a msgpack array of its items)."""
    return codec.pack(items)


def unpack_block(data: bytes) -> list[Any]:
    """Format 2: the items of a block packed by :func:`pack_block` (snapshots carry it packed)."""
    items = codec.unpack(data)
    if type(items) is not list:
        raise ValueError("a rolling hash block must be a msgpack array")
    return items


def fold(base: bytes, block: bytes) -> bytes:
    """BLAKE2b-128 of ``base ‖ block``: the next base at a block boundary, the rolling hash between."""
    return hashlib.blake2b(base + block, digest_size=16).digest()
