"""Fixed-point values: money, prices and quantities as integers with a known scale.

Theory of operation
-------------------
Inside the core every amount is a plain ``int``:

* money is integer **cents** of the account currency (USD);
* a price is integer **ticks**, ``price_decimals`` digits after the point;
* a quantity is integer **units**, ``qty_decimals`` digits after the point;
* time is integer nanoseconds.

Values enter from the edge as ``str``/``int``/``Decimal`` through :func:`parse_fixed`, which
refuses floats, booleans, non-finite values and anything with more decimals than the field
allows, naming the field in the error. They leave as decimal strings through
:func:`format_fixed`. Plain integers (leverage, bps, times, ids, cursor keys) enter through
:func:`parse_integer` (JSON values) and :func:`parse_integer_text` (query strings, paths).

These are the only number parsers at the edge. Text is ASCII only (``Decimal()`` and ``int()``
would also take ``"١٠"``, ``"１０"`` and ``"1_0"``), and every magnitude is checked on the digits
and the exponent **before** anything is converted: ``int(Decimal("1e600000"))`` alone costs
seconds, so a tiny request could otherwise stall the process.

Arithmetic that mixes kinds is only done by the named functions below, each of which states
its rounding. **Rounding always favours the house**: a trader never gains a fraction of a cent,
so money is conserved exactly.

The aliases ``Cents``, ``Ticks``, ``Units`` and ``Nanos`` document which kind a value holds; they
are plain ``int`` to the type checker too (the ids are the checked ``NewType``s, see
docs/decisions.md, "Issue 11: the core's modules").
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import TypeAlias

from exness_actors.errors import InvalidValue

__all__ = [
    "Cents",
    "Ticks",
    "Units",
    "Nanos",
    "parse_fixed",
    "parse_integer",
    "parse_integer_text",
    "format_fixed",
    "qty_for_margin",
    "pnl_cents",
    "notional_cents",
    "liquidation_price",
    "mark_up_bid",
    "mark_up_ask",
    "share_floor",
    "MAX_DIGITS",
]

Cents: TypeAlias = int
Ticks: TypeAlias = int
Units: TypeAlias = int
Nanos: TypeAlias = int

#: Largest number of significant digits accepted at the edge; a bigger number is malformed
#: input (it would otherwise let a client make us compute with huge integers).
MAX_DIGITS = 30

CENT_DECIMALS = 2

# What a decimal string may look like: ASCII digits, one optional point, an optional exponent.
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER_TEXT = re.compile(r"-?[0-9]+")


def _shown(value: object) -> str:
    """A client's value quoted in an error, cut short (it may be kilobytes long)."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 48 else text[:45] + "..."


def parse_fixed(value: object, decimals: int, *, field: str, allow_zero: bool = False,
                allow_negative: bool = False) -> int:
    """Parse an edge value into an integer scaled by ``10**decimals``.

    Accepts ``str``, ``int`` and ``Decimal``. Rejects floats (they cannot carry money exactly),
    booleans, NaN/inf, more than ``decimals`` fractional digits, and out-of-range values.
    """
    if isinstance(value, bool) or isinstance(value, float):
        raise InvalidValue(field, f"must be a decimal string or integer, not {type(value).__name__}")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, Decimal):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_DIGITS + 3 or not _DECIMAL_TEXT.fullmatch(text):
            raise InvalidValue(field, f"{_shown(value)} is not a decimal number (ASCII digits, one point)")
        number = Decimal(text)
    else:
        raise InvalidValue(field, f"must be a decimal string or integer, not {type(value).__name__}")
    shown = _shown(value)
    if not number.is_finite():
        raise InvalidValue(field, f"{shown} is not a finite number")
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    if len(digits) + max(exponent, 0) > MAX_DIGITS:
        raise InvalidValue(field, f"{shown} is out of range")
    if exponent < -decimals:
        # Trailing zeros beyond the scale are harmless ("1.500" for 2 decimals).
        normalized = number.normalize()
        norm_exp = normalized.as_tuple().exponent
        assert isinstance(norm_exp, int)
        if norm_exp < -decimals:
            raise InvalidValue(field, f"{shown} has more than {decimals} decimal places")
    scaled = int(number.scaleb(decimals))
    if scaled < 0 and not allow_negative:
        raise InvalidValue(field, f"{shown} must not be negative")
    if scaled == 0 and not allow_zero:
        raise InvalidValue(field, f"{shown} must be greater than zero")
    return scaled


def parse_integer(value: object, low: int, high: int, *, field: str) -> int:
    """An integer from a decoded JSON value (``int`` or an integral ``Decimal``) in ``low..high``.

    A ``Decimal`` is judged on its digits and exponent first, so ``1e999999999`` is refused
    without ever being built as an ``int``.
    """
    if isinstance(value, Decimal):
        if not value.is_finite() or value != value.to_integral_value():
            raise InvalidValue(field, "must be an integer")
        _, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)
        if len(digits) + exponent > len(str(max(abs(low), abs(high)))):
            raise InvalidValue(field, f"must be between {low} and {high}")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue(field, "must be an integer")
    if not low <= value <= high:
        raise InvalidValue(field, f"must be between {low} and {high}")
    return value


def parse_integer_text(text: str, low: int, high: int, *, field: str) -> int:
    """An integer written in ASCII digits (``-`` allowed when ``low`` < 0) in ``low..high``;
    no sign, spaces, underscores or other scripts' digits."""
    longest = len(str(max(abs(low), abs(high)))) + 1
    if len(text) > longest or not _INTEGER_TEXT.fullmatch(text):
        raise InvalidValue(field, f"must be an integer from {low} to {high}")
    number = int(text)
    if not low <= number <= high:
        raise InvalidValue(field, f"must be an integer from {low} to {high}")
    return number


def format_fixed(amount: int, decimals: int) -> str:
    """Render a scaled integer as a decimal string with exactly ``decimals`` places."""
    if decimals == 0:
        return str(amount)
    sign = "-" if amount < 0 else ""
    digits = str(abs(amount)).rjust(decimals + 1, "0")
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}"


def qty_for_margin(margin: Cents, leverage: int, price: Ticks, price_decimals: int,
                   qty_decimals: int) -> Units:
    """Quantity bought by ``margin`` at ``leverage`` and ``price``: ``floor(margin·L / price)``.

    Rounded down: the trader never holds more exposure than the margin pays for.
    """
    numerator = margin * leverage * 10 ** (price_decimals + qty_decimals)
    return Units(numerator // (price * 10**CENT_DECIMALS))


def notional_cents(qty: Units, price: Ticks, price_decimals: int, qty_decimals: int) -> Cents:
    """Value of ``qty`` at ``price`` in cents, rounded down."""
    return Cents(qty * price * 10**CENT_DECIMALS // 10 ** (price_decimals + qty_decimals))


def pnl_cents(is_long: bool, qty: Units, open_price: Ticks, close_price: Ticks,
              price_decimals: int, qty_decimals: int) -> Cents:
    """Profit of a position closed at ``close_price``, **floored** to cents.

    Flooring favours the house for gains (the trader gets less) and for losses (the loss is
    rounded up in magnitude).
    """
    move = close_price - open_price if is_long else open_price - close_price
    return Cents(qty * move * 10**CENT_DECIMALS // 10 ** (price_decimals + qty_decimals))


def liquidation_price(is_long: bool, qty: Units, open_price: Ticks, margin: Cents,
                      maintenance_bps: int, price_decimals: int, qty_decimals: int) -> Ticks:
    """The price at which the position's loss reaches ``margin·(1 − mm)``.

    The liquidation threshold in cents is ``T = floor(margin·(1−mm))``. With losses rounded by
    :func:`pnl_cents` (floored pnl), the loss at a move of ``d`` ticks against the position is
    ``ceil(qty·d·100 / 10**(p+q))``, which reaches ``T`` first at
    ``d = floor((T−1)·10**(p+q) / (100·qty)) + 1``. A long fires when ``bid ≤ open − d``, a short
    when ``ask ≥ open + d``: it never fires later than the loss reaching the threshold, and at
    one tick before it the loss is still below the threshold.
    """
    threshold = margin * (10_000 - maintenance_bps) // 10_000
    distance = (threshold - 1) * 10 ** (price_decimals + qty_decimals) // (10**CENT_DECIMALS * qty) + 1
    return Ticks(open_price - distance if is_long else open_price + distance)


def mark_up_bid(raw_bid: Ticks, spread_bps: int) -> Ticks:
    """The bid a trader sells at: ``raw·(1 − spread)``, rounded down (house's favour)."""
    return Ticks(raw_bid * (10_000 - spread_bps) // 10_000)


def mark_up_ask(raw_ask: Ticks, spread_bps: int) -> Ticks:
    """The ask a trader buys at: ``raw·(1 + spread)``, rounded up (house's favour)."""
    return Ticks(-(-raw_ask * (10_000 + spread_bps) // 10_000))


def share_floor(amount: int, part: int, whole: int) -> int:
    """``amount·part/whole`` rounded down (used to split a margin on partial close)."""
    return amount * part // whole
