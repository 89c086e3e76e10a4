"""Account types: how a trading account is margined and what it pays (issue 16).

An :class:`AccountType` is configuration, pinned per data dir with the instruments (it is part
of :class:`~exness_actors.instruments.CoreConfig` and so of every snapshot and state hash).
``cross`` accounts are judged as a whole (equity, used margin, margin level, margin call,
stop-out: :mod:`exness_actors.engine._cross`); ``isolated`` accounts keep the per-position
margin and liquidation of an account created without a type, and pay nothing but the spread.

Units: levels are integer percent of equity over used margin; commission and swaps are parts
per million (ppm) of notional — commission per side, swaps per day (positive: the trader pays,
negative: the trader is credited; per instrument where ``swaps.SYMBOL = [long_bps, short_bps]``
is configured, else the type's two rates); money is cents.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from exness_actors.errors import InvalidValue
from exness_actors.money import parse_fixed

__all__ = ["AccountType", "CROSS", "ISOLATED", "SHIPPED_TYPES", "SpreadProfile", "account_types_from_mapping",
           "commission_cents", "profile_quote", "swap_cents"]

CROSS, ISOLATED = "cross", "isolated"
PPM = 1_000_000
#: a spread profile ``(multiplier percent, fixed markup ppm or -1)``: how a type marks up the feed's
#: quote; ``None`` is the instrument's own ``spread_bps`` (the default profile, today's path)
SpreadProfile = tuple[int, int]
MAX_SPREAD_PCT = 1_000


@attrs.frozen(kw_only=True)
class AccountType:
    name: str
    margin_mode: str = CROSS
    max_leverage: int = 1000
    margin_call_pct: int = 60
    stop_out_pct: int = 0
    commission_ppm: int = 0
    swap_long_ppm: int = 0
    swap_short_ppm: int = 0
    swap_free: bool = False
    min_deposit: int = 0
    #: per-instrument swap rates ``(symbol, long ppm, short ppm)`` overriding the two above
    instrument_swaps: tuple[tuple[str, int, int], ...] = ()
    #: the markup on the feed's quote as a percent of the instrument's ``spread_bps`` (100: the
    #: instrument's own spread) ...
    spread_pct: int = 100
    #: ... or, when not -1, a fixed markup per side in ppm of the price for every instrument
    fixed_spread_ppm: int = -1

    def __attrs_post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum() or not self.name.islower():
            raise InvalidValue("name", f"{self.name!r} must be lower-case letters, digits and '_'")
        if self.margin_mode not in (CROSS, ISOLATED):
            raise InvalidValue("margin_mode", f"{self.margin_mode!r} must be 'cross' or 'isolated'")
        if not 1 <= self.max_leverage <= 1000:
            raise InvalidValue("max_leverage", "must be an integer in 1..1000")
        if not 0 <= self.stop_out_pct <= self.margin_call_pct <= 10_000:
            raise InvalidValue("stop_out_level", "levels must satisfy 0 <= stop_out_level <= margin_call_level <= 10000")
        if not 0 <= self.commission_ppm < PPM or not -PPM < self.swap_long_ppm < PPM or not -PPM < self.swap_short_ppm < PPM:
            raise InvalidValue("commission_bps", "commission and swap rates must be below 100 % of notional")
        if self.margin_mode == ISOLATED and (self.commission_ppm or self.swap_long_ppm or self.swap_short_ppm):
            raise InvalidValue("margin_mode", "isolated accounts keep today's semantics: no commission, no swaps")
        if self.min_deposit < 0:
            raise InvalidValue("min_deposit", "must not be negative")
        if not 0 <= self.spread_pct <= MAX_SPREAD_PCT:
            raise InvalidValue("spread_multiplier", "must be between 0 and 10 (times the instrument's spread)")
        if not -1 <= self.fixed_spread_ppm < 100_000:
            raise InvalidValue("fixed_spread_bps", "must be a markup per side of 0 to below 1000 bps")
        for symbol, long_ppm, short_ppm in self.instrument_swaps:
            if self.margin_mode == ISOLATED or not -PPM < long_ppm < PPM or not -PPM < short_ppm < PPM:
                raise InvalidValue(f"swaps.{symbol}", "swap rates must be below 100 % of notional (and none on isolated types)")

    def swap_ppm(self, symbol: str, is_long: bool) -> int:
        """The daily swap rate of a position in ``symbol`` (ppm of its open notional)."""
        for swap_symbol, long_ppm, short_ppm in self.instrument_swaps:
            if swap_symbol == symbol:
                return long_ppm if is_long else short_ppm
        return self.swap_long_ppm if is_long else self.swap_short_ppm

    @property
    def is_cross(self) -> bool:
        return self.margin_mode == CROSS

    @property
    def spread_profile(self) -> "SpreadProfile | None":
        """This type's spread profile; None when it trades on the instruments' own spreads."""
        if self.fixed_spread_ppm < 0 and self.spread_pct == 100:
            return None
        return (self.spread_pct, self.fixed_spread_ppm)

    def to_wire(self) -> list[Any]:
        wire = [self.name, self.margin_mode, self.max_leverage, self.margin_call_pct, self.stop_out_pct,
                self.commission_ppm, self.swap_long_ppm, self.swap_short_ppm, self.swap_free, self.min_deposit]
        if self.instrument_swaps or self.spread_profile is not None:
            wire.append([list(swap) for swap in self.instrument_swaps])
        if self.spread_profile is not None:   # only then: older types encode (and hash) as before
            wire.append([self.spread_pct, self.fixed_spread_ppm])
        return wire

    @classmethod
    def from_wire(cls, data: list[Any]) -> "AccountType":
        (name, mode, leverage, call, stop_out, commission, swap_long, swap_short, swap_free,
         min_deposit, *rest) = data
        swaps = tuple((symbol, long_ppm, short_ppm) for symbol, long_ppm, short_ppm in rest[0]) if rest else ()
        spread_pct, fixed_ppm = rest[1] if len(rest) > 1 else (100, -1)
        return cls(name=name, margin_mode=mode, max_leverage=leverage, margin_call_pct=call,
                   stop_out_pct=stop_out, commission_ppm=commission, swap_long_ppm=swap_long,
                   swap_short_ppm=swap_short, swap_free=swap_free, min_deposit=min_deposit,
                   instrument_swaps=swaps, spread_pct=spread_pct, fixed_spread_ppm=fixed_ppm)


#: The shipped kinds, after what Exness publishes (docs/decisions.md, "Issue 16"): ``standard``
#: (cross, call 60 %, stop-out 0 %, spread only, swap-free), ``raw_spread`` (cross, call 30 %,
#: stop-out 0 %, the feed's raw spread with no markup, 0.35 bps per side, 5 bps a day of swaps,
#: $200 minimum first deposit) and
#: ``isolated`` (per-position margin and liquidation, as before account types).
SHIPPED_TYPES = (
    AccountType(name="isolated", margin_mode=ISOLATED),
    AccountType(name="raw_spread", margin_call_pct=30, stop_out_pct=0, commission_ppm=35,
                swap_long_ppm=500, swap_short_ppm=500, min_deposit=20_000, spread_pct=0),
    AccountType(name="standard", margin_call_pct=60, stop_out_pct=0, swap_free=True),
)


def commission_cents(notional: int, commission_ppm: int) -> int:
    """One side's commission on ``notional`` cents, rounded up (the house's favour)."""
    return -(-notional * commission_ppm // PPM)


def profile_quote(raw_bid: int, raw_ask: int, spread_bps: int, profile: SpreadProfile) -> tuple[int, int]:
    """The feed's quote marked up by a spread profile: bid down, ask up, each rounded against the
    trader (bid floored, ask ceiled; the bid never below one price unit)."""
    spread_pct, fixed_ppm = profile
    markup = fixed_ppm if fixed_ppm >= 0 else spread_bps * spread_pct   # bps·% = ppm
    markup = min(markup, PPM - 1)
    return max(raw_bid * (PPM - markup) // PPM, 1), -(-raw_ask * (PPM + markup) // PPM)


def swap_cents(notional: int, swap_ppm: int) -> int:
    """One day's swap on ``notional`` cents: a charge rounded up, a credit rounded down in size."""
    return -(-notional * swap_ppm // PPM)


def _ppm(value: object, field: str) -> int:
    text = str(value)
    negative = text.startswith("-")
    amount = parse_fixed(text[1:] if negative else text, 2, field=field, allow_zero=True)   # 0.01 bps = 1 ppm
    return -amount if negative else amount


def _account_type(name: str, spec: Mapping[str, Any]) -> AccountType:
    field = f"accounts.types.{name}"
    return AccountType(
        name=name, margin_mode=str(spec.get("margin_mode", CROSS)),
        max_leverage=int(spec.get("max_leverage", 1000)),
        margin_call_pct=int(spec.get("margin_call_level", 60)),
        stop_out_pct=int(spec.get("stop_out_level", 0)),
        commission_ppm=_ppm(spec.get("commission_bps", "0"), f"{field}.commission_bps"),
        swap_long_ppm=_ppm(spec.get("swap_long_bps", "0"), f"{field}.swap_long_bps"),
        swap_short_ppm=_ppm(spec.get("swap_short_bps", "0"), f"{field}.swap_short_bps"),
        swap_free=bool(spec.get("swap_free", False)),
        min_deposit=parse_fixed(spec.get("min_deposit", "0"), 2, field=f"{field}.min_deposit", allow_zero=True),
        instrument_swaps=tuple(_instrument_swap(symbol, rates, f"{field}.swaps.{symbol}")
                               for symbol, rates in sorted(spec.get("swaps", {}).items())),
        spread_pct=parse_fixed(str(spec.get("spread_multiplier", "1")), 2, field=f"{field}.spread_multiplier",
                               allow_zero=True),
        fixed_spread_ppm=(_ppm(spec["fixed_spread_bps"], f"{field}.fixed_spread_bps")
                          if "fixed_spread_bps" in spec else -1),
    )


def _instrument_swap(symbol: str, rates: object, field: str) -> tuple[str, int, int]:
    if not isinstance(rates, list) or len(rates) != 2:
        raise InvalidValue(field, "must be [long_bps, short_bps] per day")
    return symbol, _ppm(rates[0], field), _ppm(rates[1], field)


def account_types_from_mapping(types: Mapping[str, Mapping[str, Any]]) -> tuple[AccountType, ...]:
    """Parse the ``[accounts.types.*]`` tables (in name order: the pinned config is canonical)."""
    return tuple(_account_type(name, types[name]) for name in sorted(types))
