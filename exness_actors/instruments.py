"""Instruments and the engine's configuration, parsed exactly from config data.

An :class:`Instrument` fixes the scales of one symbol (price and quantity decimals) and its
trading limits. :class:`CoreConfig` is everything the pure core needs to know; the supervisor
builds it from ``config.toml`` through :func:`core_config_from_mapping`. The scales are written
into every snapshot so a snapshot is never restored under different scales.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import attrs

from exness_actors.account_types import AccountType, account_types_from_mapping
from exness_actors.errors import InvalidValue
from exness_actors.money import parse_fixed

__all__ = ["Instrument", "CoreConfig", "core_config_from_mapping", "DEFAULT_INSTRUMENTS", "SHARD_ID_SPAN",
           "MAX_SHARD"]

_NS_PER_MS = 1_000_000
_PPM = 1_000_000
_NS_PER_DAY = 86_400 * 10**9


@attrs.frozen(kw_only=True)
class Instrument:
    symbol: str
    price_decimals: int = 2
    qty_decimals: int = 8
    max_leverage: int = 100
    spread_bps: int = 0
    min_qty: int = 1  # in quantity units
    maintenance_bps: int = 0  # maintenance ratio in basis points of the margin
    #: issue 13: an operator's fee overrides for this symbol (ppm of notional, as the account
    #: types' rates), applied to cross accounts in place of their type's rates; None: the type's
    commission_ppm: Optional[int] = None
    swap_long_ppm: Optional[int] = None
    swap_short_ppm: Optional[int] = None

    def __attrs_post_init__(self) -> None:
        if not self.symbol or not self.symbol.isalnum() or not self.symbol.isupper():
            raise InvalidValue("symbol", f"{self.symbol!r} must be upper-case letters and digits")
        for name in ("price_decimals", "qty_decimals"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 12:
                raise InvalidValue(name, f"{value!r} must be an integer in 0..12")
        if not isinstance(self.max_leverage, int) or not 1 <= self.max_leverage <= 1000:
            raise InvalidValue("max_leverage", f"{self.max_leverage!r} must be an integer in 1..1000")
        if not isinstance(self.spread_bps, int) or not 0 <= self.spread_bps < 10_000:
            raise InvalidValue("spread_bps", f"{self.spread_bps!r} must be an integer in 0..9999")
        if not isinstance(self.min_qty, int) or self.min_qty < 1:
            raise InvalidValue("min_qty", f"{self.min_qty!r} must be at least one quantity unit")
        if not isinstance(self.maintenance_bps, int) or not 0 <= self.maintenance_bps < 10_000:
            raise InvalidValue("maintenance_ratio", "must be in [0, 1)")
        if self.commission_ppm is not None and (type(self.commission_ppm) is not int
                                                or not 0 <= self.commission_ppm < _PPM):
            raise InvalidValue("commission_ppm", f"{self.commission_ppm!r} must be an integer in 0..{_PPM - 1}")
        for name in ("swap_long_ppm", "swap_short_ppm"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or not -_PPM < value < _PPM):
                raise InvalidValue(name, f"{value!r} must be an integer in {-_PPM + 1}..{_PPM - 1}")

    @property
    def has_fee_overrides(self) -> bool:
        return self.commission_ppm is not None or self.swap_long_ppm is not None or self.swap_short_ppm is not None

    def scales(self) -> list[Any]:
        return [self.symbol, self.price_decimals, self.qty_decimals]

    def to_wire(self) -> list[Any]:
        wire = [self.symbol, self.price_decimals, self.qty_decimals, self.max_leverage,
                self.spread_bps, self.min_qty, self.maintenance_bps]
        if self.has_fee_overrides:   # absent when unused: older states (and hashes) are unchanged
            wire += [self.commission_ppm, self.swap_long_ppm, self.swap_short_ppm]
        return wire

    @classmethod
    def from_wire(cls, data: list[Any]) -> "Instrument":
        symbol, pd, qd, lev, spread, min_qty, mm, *fees = data
        commission, swap_long, swap_short = fees if fees else (None, None, None)
        return cls(symbol=symbol, price_decimals=pd, qty_decimals=qd, max_leverage=lev,
                   spread_bps=spread, min_qty=min_qty, maintenance_bps=mm, commission_ppm=commission,
                   swap_long_ppm=swap_long, swap_short_ppm=swap_short)


#: ids one engine shard may allocate (10**12 orders and as many positions). Shard ids stay below
#: 2**53, so a JavaScript client reads every id exactly: at most MAX_SHARD + 1 shards.
SHARD_ID_SPAN = 10**12
MAX_SHARD = 9006
MAX_ID_BASE = MAX_SHARD * SHARD_ID_SPAN


@attrs.frozen(kw_only=True)
class CoreConfig:
    instruments: tuple[Instrument, ...]
    stale_after_ns: int = 5_000 * _NS_PER_MS
    idempotency_window: int = 1000
    #: order and position ids start at ``id_base + 1``: engine shard ``k`` of a split deployment
    #: uses ``k * SHARD_ID_SPAN``, so ids never collide between shards (0 everywhere else)
    id_base: int = 0
    #: issue 16: the account types :class:`~exness_actors.commands.OpenAccount` may name (none:
    #: only untyped, isolated accounts, exactly as before the types existed)
    account_types: tuple[AccountType, ...] = ()
    #: the daily swap rollover, nanoseconds after midnight UTC
    rollover_ns: int = 0
    #: the rolling hash's format (issue 14; exness_actors/engine/_hashing.py): 2 for every new
    #: engine and data dir; a config read from a wire without it (an older data dir, snapshot
    #: or state) is format 1, so old journals keep replaying to the hashes they recorded
    hash_format: int = 2

    def __attrs_post_init__(self) -> None:
        symbols = [i.symbol for i in self.instruments]
        if len(set(symbols)) != len(symbols):
            raise InvalidValue("instruments", "symbols must be unique")
        if self.stale_after_ns <= 0:
            raise InvalidValue("stale_after_ms", "must be positive")
        if self.idempotency_window < 1:
            raise InvalidValue("idempotency_window", "must be at least 1")
        if type(self.id_base) is not int or not 0 <= self.id_base <= MAX_ID_BASE:
            raise InvalidValue("id_base", f"must be an integer in 0..{MAX_ID_BASE}")
        if type(self.hash_format) is not int or self.hash_format not in (1, 2):
            raise InvalidValue("hash_format", "must be 1 or 2")
        names = [t.name for t in self.account_types]
        if len(set(names)) != len(names):
            raise InvalidValue("accounts.types", "account type names must be unique")
        if not 0 <= self.rollover_ns < _NS_PER_DAY:
            raise InvalidValue("accounts.rollover_utc", "must be a time of day")

    def account_type(self, name: str) -> AccountType | None:
        return next((t for t in self.account_types if t.name == name), None)

    def scales(self) -> list[Any]:
        return [i.scales() for i in self.instruments]

    def to_wire(self) -> list[Any]:
        wire = [[i.to_wire() for i in self.instruments], self.stale_after_ns, self.idempotency_window]
        if self.id_base or self.account_types or self.hash_format != 1:
            wire.append(self.id_base)   # absent when unused: older states (and hashes) are unchanged
        if self.account_types or self.hash_format != 1:
            wire += [[t.to_wire() for t in self.account_types], self.rollover_ns]
        if self.hash_format != 1:
            wire.append(self.hash_format)
        return wire

    @classmethod
    def from_wire(cls, data: list[Any]) -> "CoreConfig":
        instruments, stale, window, *rest = data
        types = tuple(AccountType.from_wire(t) for t in rest[1]) if len(rest) > 1 else ()
        return cls(instruments=tuple(Instrument.from_wire(i) for i in instruments),
                   stale_after_ns=stale, idempotency_window=window, id_base=rest[0] if rest else 0,
                   account_types=types, rollover_ns=rest[2] if len(rest) > 2 else 0,
                   hash_format=rest[3] if len(rest) > 3 else 1)

    def for_shard(self, shard: int) -> "CoreConfig":
        """This config for engine shard ``shard``: ids from ``shard * SHARD_ID_SPAN + 1``."""
        if type(shard) is not int or not 0 <= shard <= MAX_SHARD:
            raise InvalidValue("shard", f"must be an integer in 0..{MAX_SHARD}")
        return attrs.evolve(self, id_base=shard * SHARD_ID_SPAN)


DEFAULT_INSTRUMENTS = (
    Instrument(symbol="BTCUSDT", price_decimals=2, qty_decimals=8, max_leverage=100,
               spread_bps=2, min_qty=1_000),
    Instrument(symbol="ETHUSDT", price_decimals=2, qty_decimals=8, max_leverage=100,
               spread_bps=2, min_qty=10_000),
    Instrument(symbol="SOLUSDT", price_decimals=3, qty_decimals=8, max_leverage=50,
               spread_bps=3, min_qty=1_000_000),
)


def _ratio_to_bps(value: object, field: str) -> int:
    bps = parse_fixed(value, 4, field=field, allow_zero=True)
    if bps >= 10_000:
        raise InvalidValue(field, f"{value!r} must be below 1")
    return bps


def _rollover_ns(text: object) -> int:
    hours, _, minutes = str(text).partition(":")
    if not (hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60):
        raise InvalidValue("accounts.rollover_utc", f"{text!r} must be HH:MM")
    return (int(hours) * 60 + int(minutes)) * 60 * 10**9


def core_config_from_mapping(engine: Mapping[str, Any],
                             instruments: Mapping[str, Mapping[str, Any]],
                             accounts: Mapping[str, Any] | None = None) -> CoreConfig:
    """Build the core's config from the ``[engine]`` and ``[instruments.*]`` tables."""
    parsed = []
    for symbol, spec in instruments.items():
        qty_decimals = int(spec.get("qty_decimals", 8))
        parsed.append(Instrument(
            symbol=symbol,
            price_decimals=int(spec.get("price_decimals", 2)),
            qty_decimals=qty_decimals,
            max_leverage=int(spec.get("max_leverage", 100)),
            spread_bps=int(spec.get("spread_bps", 0)),
            min_qty=parse_fixed(spec.get("min_qty", "0." + "0" * (qty_decimals - 1) + "1"
                                         if qty_decimals else "1"),
                                qty_decimals, field=f"instruments.{symbol}.min_qty"),
            maintenance_bps=_ratio_to_bps(spec.get("maintenance_ratio", "0"),
                                          f"instruments.{symbol}.maintenance_ratio"),
        ))
    return CoreConfig(
        instruments=tuple(parsed),
        stale_after_ns=int(engine.get("stale_after_ms", 5000)) * _NS_PER_MS,
        idempotency_window=int(engine.get("idempotency_window", 1000)),
        account_types=account_types_from_mapping((accounts or {}).get("types", {})),
        rollover_ns=_rollover_ns((accounts or {}).get("rollover_utc", "00:00")),
    )
