"""Query-string parsing: every parameter is validated and named in the error.

Unknown and repeated parameters are refused (a typo such as ``?simbol=`` would otherwise quietly
return everything). Errors are :class:`~actors.wire.codec.EdgeError` 400 ``VALIDATION_ERROR`` with the
parameter in ``details.field``, like body fields.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from actors.wire.codec import MAX_TIMESTAMP_MS, EdgeError, ms_to_ns
from actors.store.base import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT
from exness_actors.errors import InvalidValue
from exness_actors.instruments import Instrument
from exness_actors.money import parse_integer_text

__all__ = ["QueryParams", "invalid"]

MAX_CURSOR_LENGTH = 256


def invalid(field: str, problem: str) -> EdgeError:
    return EdgeError(400, "VALIDATION_ERROR", f"{field}: {problem}", {"field": field, "problem": problem})


class QueryParams:
    """The query string of one request, checked against the parameters a route accepts."""

    __slots__ = ("values",)

    def __init__(self, args: Any, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        values: dict[str, str] = {}
        for key in args.keys():
            if key not in allowed:
                expected = ", ".join(allowed) if allowed else "none"
                raise invalid(key, f"unknown query parameter (accepted: {expected})")
            found = args.getlist(key)
            if len(found) > 1:
                raise invalid(key, "given more than once")
            values[key] = found[0]
        self.values = values

    def text(self, name: str, *, max_length: int = 64) -> Optional[str]:
        value = self.values.get(name)
        if value is None or value == "":
            return None
        if len(value) > max_length or not value.isprintable():
            raise invalid(name, f"must be printable text of at most {max_length} characters")
        return value

    def integer(self, name: str, low: int, high: int, default: Optional[int] = None) -> Optional[int]:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        try:
            return parse_integer_text(value.strip(), low, high, field=name)
        except InvalidValue as exc:
            raise invalid(name, exc.problem) from None

    def choice(self, name: str, choices: Iterable[str], default: Optional[str] = None) -> Optional[str]:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        choices = tuple(choices)
        if value not in choices:
            raise invalid(name, f"must be one of {', '.join(choices)}")
        return value

    def limit(self, default: int = DEFAULT_PAGE_LIMIT) -> int:
        value = self.integer("limit", 1, MAX_PAGE_LIMIT, default)
        assert value is not None
        return value

    def cursor(self) -> Optional[str]:
        return self.text("cursor", max_length=MAX_CURSOR_LENGTH)

    def time_ns(self, name: str) -> Optional[int]:
        """A timestamp in ms (0 .. MAX_TIMESTAMP_MS, year 2262) as ns."""
        value = self.integer(name, 0, MAX_TIMESTAMP_MS)
        return None if value is None else ms_to_ns(value)

    def time_range(self) -> tuple[Optional[int], Optional[int]]:
        start, end = self.time_ns("start"), self.time_ns("end")
        if start is not None and end is not None and start > end:
            raise invalid("end", "must not be before start")
        return start, end

    def symbol(self, instruments: Mapping[str, Instrument], *, required: bool = False) -> Optional[Instrument]:
        value = self.values.get("symbol")
        if value is None or value == "":
            if required:
                raise invalid("symbol", "is required")
            return None
        instrument = instruments.get(value.strip().upper())
        if instrument is None:
            raise EdgeError(400, "UNKNOWN_SYMBOL", f"unknown symbol {value[:32]!r}",
                            {"field": "symbol", "known": sorted(instruments)})
        return instrument
