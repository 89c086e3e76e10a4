"""Binance market-data messages → raw quotes in integer ticks.

Theory of operation
-------------------
Binance publishes prices as decimal strings with up to 8 places (``"25.35190000"``); an instrument
quotes in fewer (``price_decimals``). This module turns one Binance message into a :class:`Tick` —
``(symbol, bid, ask, update_id, kind, event_time_ms)`` with ``bid``/``ask`` in ticks — or raises
:class:`MalformedTick` naming what was wrong. It is pure: the price feed's ``replay`` and
``binance`` sources use it, and so can replay and backtest tools.

What it understands (either the bare ``data`` object, the combined-stream envelope
``{"stream": "btcusdt@bookTicker", "data": {...}}``, or a recorded line
``{"ts": <ms>, "stream": ..., "data": {...}}``):

* **bookTicker** ``{"u": 400900217, "s": "BNBUSDT", "b": "25.35190000", "B": "31.21", "a": "25.36520000",
  "A": "40.66"}`` (spot has no ``"e"``; futures add ``"e": "bookTicker"`` and ``"E"``) → ``kind="book"``,
  ``update_id = u``;
* **aggTrade** ``{"e": "aggTrade", "E": 123, "s": "BNBUSDT", "a": 12345, "p": "0.001", "q": "100",
  "T": 123, "m": true}`` → ``kind="trade"``, ``update_id = a``, bid = ask = the trade price (rounded as
  below, so an off-tick price gives a one-tick spread around it). What a trade *means* to the feed —
  last price only, or a quote when no book is known — is the feed's policy, not this module's.

Invariants
----------
* Prices are converted exactly from their decimal text with integer arithmetic, never through
  ``float``; the **bid is rounded down and the ask up** to the tick (the house's favour), so rounding
  never narrows the spread.
* A returned tick always has ``0 < bid`` and ``bid <= ask`` (``bid < ask`` for a book: a locked or
  crossed book is refused); quantities are not looked at.
* JSON text is decoded with numbers as :class:`~decimal.Decimal`, so a JSON number price is exact and
  accepted; a Python ``float`` (a dict someone built with floats) and ``NaN``/``Infinity`` are refused.
* Every refusal is a :class:`MalformedTick` whose ``reason`` is one short word from
  :data:`MALFORMED_REASONS` (for counting) and whose message says which field and why.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping, NamedTuple, Optional

from exness_actors.errors import InvalidCommand

__all__ = [
    "Tick",
    "RecordedTick",
    "MalformedTick",
    "MALFORMED_REASONS",
    "BOOK",
    "TRADE",
    "price_to_ticks",
    "parse_message",
    "parse_json",
    "parse_recorded_line",
    "stream_name",
]

BOOK = "book"
TRADE = "trade"

#: Longest price text accepted (Binance sends at most ~20 characters).
MAX_PRICE_CHARS = 40
#: Most significant digits in a price; more is not a price but an attempt to make us compute.
MAX_PRICE_DIGITS = 30

#: Every ``MalformedTick.reason``; the feed counts skipped messages by these words.
MALFORMED_REASONS = frozenset({
    "not_json",         # the text does not decode as JSON (or is not UTF-8)
    "not_an_object",    # JSON, but not an object where one is expected
    "missing_field",    # a required field is absent
    "bad_field",        # a field has the wrong type (symbol not a string, id not an integer, ...)
    "not_a_number",     # a price is not a finite decimal number (or is a float)
    "not_positive",     # a price is zero or negative, or rounds to zero ticks
    "crossed",          # bid >= ask for a book (locked or crossed)
    "unknown_symbol",   # a symbol that is not one of the instruments
    "unknown_event",    # a message that is neither a bookTicker nor an aggTrade
    "stream_mismatch",  # the envelope's stream names another symbol or event than the data
    "control_message",  # a reply to a subscribe request ({"result": null, "id": 1}), not market data
})


class MalformedTick(InvalidCommand):
    """A market-data message that cannot become a quote. ``reason`` is a word from
    :data:`MALFORMED_REASONS`; the message says which field and what was expected."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in MALFORMED_REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Tick(NamedTuple):
    """One Binance message as raw prices in ticks of the symbol's instrument."""
    symbol: str
    bid: int                      # ticks, rounded down
    ask: int                      # ticks, rounded up
    update_id: int                # bookTicker ``u`` (order book update id) or aggTrade ``a``
    kind: str                     # BOOK or TRADE
    event_time_ms: Optional[int]  # ``E`` when the message carries one (aggTrade, futures bookTicker)


class RecordedTick(NamedTuple):
    """One line of a recorded file: the receive time (ms since the epoch) and its tick."""
    ts_ms: int
    tick: Tick


def stream_name(symbol: str, kind: str = BOOK) -> str:
    """Binance's stream name for a symbol: ``btcusdt@bookTicker`` or ``btcusdt@aggTrade``."""
    return f"{symbol.lower()}@{'aggTrade' if kind == TRADE else 'bookTicker'}"


def price_to_ticks(value: Any, decimals: int, *, round_up: bool, field: str = "price") -> int:
    """Exact ``value × 10**decimals`` rounded down (``round_up=False``) or up, as an int.

    ``value`` is a decimal string, an ``int`` or a ``Decimal`` (what JSON numbers decode to here);
    floats, booleans, non-finite and non-positive values raise :class:`MalformedTick`.
    """
    if isinstance(value, str):
        if not value or len(value) > MAX_PRICE_CHARS:
            raise MalformedTick("not_a_number", f"{field}={value!r} is not a decimal number")
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise MalformedTick("not_a_number", f"{field}={value!r} is not a decimal number") from None
    elif isinstance(value, bool) or isinstance(value, float):
        raise MalformedTick("not_a_number",
                            f"{field}={value!r} is a {type(value).__name__}; expected a decimal string")
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, Decimal):
        number = value
    else:
        raise MalformedTick("not_a_number",
                            f"{field} is a {type(value).__name__}; expected a decimal string")
    if not number.is_finite():
        raise MalformedTick("not_a_number", f"{field}={value!r} is not a finite number")
    sign, digit_tuple, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    if len(digit_tuple) > MAX_PRICE_DIGITS or not -MAX_PRICE_DIGITS <= exponent <= MAX_PRICE_DIGITS:
        raise MalformedTick("not_a_number", f"{field}={value!r} is out of range")
    coefficient = int("".join(map(str, digit_tuple)) or "0")
    if sign and coefficient:
        raise MalformedTick("not_positive", f"{field}={value!r} is negative")
    # number = coefficient × 10**exponent, so number × 10**decimals = coefficient × 10**shift.
    shift = exponent + decimals
    ticks: int
    if shift >= 0:
        ticks = coefficient * 10**shift
    elif round_up:
        ticks = -(-coefficient // 10**-shift)
    else:
        ticks = coefficient // 10**-shift
    if ticks <= 0:
        raise MalformedTick("not_positive",
                            f"{field}={value!r} is not above zero at {decimals} decimal places")
    return ticks


def _field(data: Mapping[str, Any], name: str, what: str) -> Any:
    try:
        return data[name]
    except KeyError:
        raise MalformedTick("missing_field", f"{what} has no {name!r}") from None


def _integer(data: Mapping[str, Any], name: str, what: str) -> int:
    value = _field(data, name, what)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedTick("bad_field", f"{what} {name}={value!r} must be a non-negative integer")
    return value


def _optional_time(data: Mapping[str, Any]) -> Optional[int]:
    value = data.get("E")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedTick("bad_field", f"E={value!r} must be integer milliseconds")
    return value


def _symbol(data: Mapping[str, Any], price_decimals: Mapping[str, int], what: str) -> tuple[str, int]:
    symbol = _field(data, "s", what)
    if not isinstance(symbol, str) or not symbol:
        raise MalformedTick("bad_field", f"{what} s={symbol!r} must be a symbol string")
    decimals = price_decimals.get(symbol)
    if decimals is None:
        raise MalformedTick("unknown_symbol", f"{symbol!r} is not an instrument")
    return symbol, decimals


def _kind_of(data: Mapping[str, Any], stream: Optional[str]) -> str:
    event = data.get("e")
    if event == "aggTrade":
        return TRADE
    if event == "bookTicker":
        return BOOK
    if event is not None:
        raise MalformedTick("unknown_event", f"event type e={event!r} is neither bookTicker nor aggTrade")
    if "u" in data or "b" in data:      # a spot bookTicker has no "e"; an aggTrade has neither u nor b
        return BOOK
    if stream is not None and stream.endswith("@aggTrade"):
        return TRADE
    raise MalformedTick("unknown_event", "neither a bookTicker (u, s, b, a) nor an aggTrade (e, s, a, p)")


def _parse_data(data: Any, price_decimals: Mapping[str, int], stream: Optional[str]) -> Tick:
    if not isinstance(data, Mapping):
        raise MalformedTick("not_an_object", f"data is a {type(data).__name__}, expected an object")
    kind = _kind_of(data, stream)
    if kind == BOOK:
        symbol, decimals = _symbol(data, price_decimals, "bookTicker")
        update_id = _integer(data, "u", "bookTicker")
        bid = price_to_ticks(_field(data, "b", "bookTicker"), decimals, round_up=False, field="b")
        ask = price_to_ticks(_field(data, "a", "bookTicker"), decimals, round_up=True, field="a")
        if bid >= ask:
            raise MalformedTick("crossed", f"{symbol} bid b={data['b']!r} is not below ask a={data['a']!r}")
    else:
        symbol, decimals = _symbol(data, price_decimals, "aggTrade")
        update_id = _integer(data, "a", "aggTrade")
        price = _field(data, "p", "aggTrade")
        bid = price_to_ticks(price, decimals, round_up=False, field="p")
        ask = price_to_ticks(price, decimals, round_up=True, field="p")
    if stream is not None and stream != stream_name(symbol, kind):
        raise MalformedTick("stream_mismatch", f"stream {stream!r} carries a {kind} of {symbol}")
    return Tick(symbol, bid, ask, update_id, kind, _optional_time(data))


def parse_message(message: Any, price_decimals: Mapping[str, int]) -> Tick:
    """Parse a decoded message: a bare ``data`` object, or an envelope with ``stream`` and ``data``.

    ``price_decimals`` maps each known symbol to its instrument's ``price_decimals``; any other
    symbol is refused with reason ``unknown_symbol``.
    """
    if not isinstance(message, Mapping):
        raise MalformedTick("not_an_object", f"message is a {type(message).__name__}, expected an object")
    if "data" in message:
        stream = message.get("stream")
        if stream is not None and not isinstance(stream, str):
            raise MalformedTick("bad_field", f"stream={stream!r} must be a string")
        return _parse_data(message["data"], price_decimals, stream)
    if "result" in message and "id" in message:
        raise MalformedTick("control_message", f"reply to request id={message.get('id')!r}")
    return _parse_data(message, price_decimals, None)


def _reject_constant(name: str) -> Any:
    raise MalformedTick("not_a_number", f"JSON constant {name} is not a number")


def _decode(text: str | bytes) -> Any:
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MalformedTick("not_json", f"not a JSON document ({exc.__class__.__name__})") from None


def parse_json(text: str | bytes, price_decimals: Mapping[str, int]) -> Tick:
    """Parse one WebSocket frame (JSON text): see :func:`parse_message`."""
    return parse_message(_decode(text), price_decimals)


def parse_recorded_line(line: str | bytes, price_decimals: Mapping[str, int]) -> RecordedTick:
    """Parse one line of a recording: ``{"ts": <ms>, "stream": ..., "data": {...}}``."""
    record = _decode(line)
    if not isinstance(record, Mapping):
        raise MalformedTick("not_an_object", f"line is a {type(record).__name__}, expected an object")
    ts_ms = record.get("ts")
    if ts_ms is None:
        raise MalformedTick("missing_field", "recorded line has no 'ts'")
    if isinstance(ts_ms, bool) or not isinstance(ts_ms, int) or ts_ms < 0:
        raise MalformedTick("bad_field", f"ts={ts_ms!r} must be integer milliseconds")
    if "data" not in record:
        raise MalformedTick("missing_field", "recorded line has no 'data'")
    return RecordedTick(ts_ms, parse_message(record, price_decimals))
