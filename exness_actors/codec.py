"""One msgpack codec for every command and event.

A message travels as ``[tag, field1, field2, …]`` in the attrs field order of its class. Tags
are fixed in :data:`exness_actors.commands.COMMAND_TYPES` and
:data:`exness_actors.events.EVENT_TYPES`; fields are only ever appended (with defaults), so old
journals keep decoding. Decoding checks the shape strictly and raises
:class:`~exness_actors.errors.InvalidCommand` on anything else — the journal and the Redis edge
never hand the engine a malformed message.
"""

from __future__ import annotations

import re
from operator import attrgetter
from typing import Any, Callable

import attrs
import msgpack

from exness_actors.commands import COMMAND_TYPES, HaltSymbol, ResumeSymbol
from exness_actors.errors import InvalidCommand
from exness_actors.events import EVENT_TYPES

__all__ = ["encode", "encode_many", "encode_many_fast", "pack_fast", "WIRE_TUPLE", "BIGINT_EXT", "decode", "to_wire", "from_wire", "pack", "unpack", "TAGS", "wire_schema"]

_REGISTRY: dict[int, type] = {**COMMAND_TYPES, **EVENT_TYPES}
TAGS: dict[type, int] = {cls: tag for tag, cls in _REGISTRY.items()}
_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in attrs.fields(cls)) for cls in _REGISTRY.values()}


#: Classes that gained optional fields after journals holding them were written, and how many
#: fields they had then: trailing fields still at their defaults are left off the wire, so an
#: old-style record encodes to the very bytes it always did (decoding fills the defaults in).
_LEGACY_FIELD_COUNT: dict[type, int] = {HaltSymbol: 3, ResumeSymbol: 3}


def _trimming(getter: Callable[[Any], Any], defaults: tuple[Any, ...], legacy: int) -> Callable[[Any], tuple[Any, ...]]:
    """``getter`` without the trailing items (past ``legacy``) that equal their defaults."""
    def get(obj: Any) -> tuple[Any, ...]:
        values: tuple[Any, ...] = getter(obj)
        count = len(values)
        while count > legacy and type(values[count - 1]) is type(defaults[count - 1]) \
                and values[count - 1] == defaults[count - 1]:
            count -= 1
        return values[:count]
    return get


# Each class carries its tag as a class attribute, so one attrgetter call (in C) builds the whole
# wire tuple ``(tag, field1, …)``: encoding a command for the journal, and the rolling hash's
# encoding of every event, are one getter call and one packer call.
for _cls, _tag in TAGS.items():
    setattr(_cls, "_wire_tag", _tag)
# (every class has a field, so the getter always names two attributes or more and returns a tuple)
_WIRE: dict[type, Callable[[Any], tuple[Any, ...]]] = {
    cls: attrgetter("_wire_tag", *names) for cls, names in _FIELDS.items()}
#: ``type -> getter`` of a message's wire tuple ``(tag, field1, …)`` (one C call; the rolling hash)
WIRE_TUPLE = dict(_WIRE)
for _cls, _legacy in _LEGACY_FIELD_COUNT.items():
    # the journal's encoding of these trims trailing defaults (the tag is item 0, hence the + 1)
    _WIRE[_cls] = _trimming(_WIRE[_cls], (None, *(f.default for f in attrs.fields(_cls))), _legacy + 1)
_REQUIRED: dict[type, int] = {
    cls: sum(1 for f in attrs.fields(cls) if f.default is attrs.NOTHING) for cls in _REGISTRY.values()}

_packer = msgpack.Packer(use_bin_type=True)
#: the packer's bound method, typed (msgpack ships no type information)
_pack_bytes: Callable[[Any], bytes] = _packer.pack

#: msgpack carries integers in [-2**63, 2**64); the core's integers are exact and unbounded, so a
#: larger one (an absurd pnl after a 10**12× price move) travels as this ext type holding its
#: decimal digits. Packing tries the fast path first and converts only on OverflowError.
BIGINT_EXT = 1


def _widen(obj: Any) -> Any:
    if type(obj) is int and not -(1 << 63) <= obj < (1 << 64):
        return msgpack.ExtType(BIGINT_EXT, str(obj).encode())
    if isinstance(obj, (list, tuple)):
        return [_widen(item) for item in obj]
    if isinstance(obj, dict):
        return {key: _widen(value) for key, value in obj.items()}
    return obj


def _ext_hook(code: int, data: bytes) -> Any:
    if code == BIGINT_EXT:
        return int(data)
    return msgpack.ExtType(code, data)


def _pack(obj: Any) -> bytes:
    try:
        return _pack_bytes(obj)
    except OverflowError:
        return _pack_bytes(_widen(obj))


def to_wire(message: Any) -> list[Any]:
    return list(_WIRE[type(message)](message))


def from_wire(data: Any) -> Any:
    if not isinstance(data, (list, tuple)) or not data:
        raise InvalidCommand(f"a message must be a non-empty array, got {type(data).__name__}")
    tag = data[0]
    cls = _REGISTRY.get(tag) if isinstance(tag, int) else None
    if cls is None:
        raise InvalidCommand(f"unknown message tag {tag!r}")
    names = _FIELDS[cls]
    values = data[1:]
    if not _REQUIRED[cls] <= len(values) <= len(names):
        raise InvalidCommand(f"{cls.__name__}: expected {len(names)} fields, got {len(values)}")
    try:
        return cls(*values)     # the wire order is the field order
    except (TypeError, ValueError) as exc:
        raise InvalidCommand(f"{cls.__name__}: {exc}") from None


def encode(message: Any) -> bytes:
    """Pack one message to bytes."""
    return _pack(_WIRE[type(message)](message))


def encode_many(messages: list[Any]) -> bytes:
    """Pack a list of messages as one msgpack array (one call for a whole reply)."""
    return _pack([_WIRE[type(m)](m) for m in messages])


def encode_many_fast(messages: list[Any]) -> bytes:
    """Like :func:`encode_many` (one msgpack array of every message's wire tuple) — the
    rolling-hash stream of one input's events — with the untrimmed wire tuples (the bytes format 1
    of the rolling hash always hashed)."""
    return _pack([WIRE_TUPLE[type(m)](m) for m in messages])


def pack_fast(obj: Any) -> bytes:
    """:func:`pack` for hot paths (the same bytes; no function-call indirection to speak of)."""
    return _pack(obj)


def decode(payload: bytes) -> Any:
    try:
        data = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=False,
                               ext_hook=_ext_hook)
    except Exception as exc:  # msgpack raises several unrelated types
        raise InvalidCommand(f"undecodable message: {exc}") from None
    return from_wire(data)


def pack(obj: Any) -> bytes:
    """Pack a plain msgpack-able object (used for states and headers)."""
    return _pack(obj)


def unpack(payload: bytes) -> Any:
    return msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=False, ext_hook=_ext_hook)


#: The id types are ``NewType``s: on the wire they are the plain type underneath.
_ID_TYPES = re.compile(r"\b(AccountId|OrderId|PositionId|ClientOrderId)\b")
_WIRE_TYPE_OF_ID = {"AccountId": "int", "OrderId": "int", "PositionId": "int", "ClientOrderId": "str"}


def _wire_type(annotation: Any) -> str:
    return _ID_TYPES.sub(lambda match: _WIRE_TYPE_OF_ID[match.group(1)], str(annotation))


def wire_schema() -> dict[str, Any]:
    """The wire layout of every message, for ``schemas/`` and for clients in other languages."""
    out: dict[str, Any] = {}
    for tag, cls in sorted(_REGISTRY.items()):
        out[cls.__name__] = {
            "tag": tag,
            "fields": [
                {"name": f.name, "type": _wire_type(f.type), "required": f.default is attrs.NOTHING}
                for f in attrs.fields(cls)
            ],
        }
    return out
