"""What the handlers check before they change anything: bounds, TP/SL rules, message wording.

Every check here is pure and raises :class:`Reject` (turned into one rejection event by the
handler that called it); nothing here touches the state.

Rejection messages reach clients verbatim, so every amount, price and quantity in them is
written in the API's units (decimal strings at the instrument's scale), never as the core's
cents, ticks or units. See docs/decisions.md ("issue 15, item 9").
"""

from __future__ import annotations

from typing import Any, Final, Optional

from exness_actors.account_types import AccountType
from exness_actors.instruments import Instrument
from exness_actors.money import CENT_DECIMALS, format_fixed
from exness_actors.reasons import RejectReason

__all__ = [
    "MAX_LEVEL", "MAX_AMOUNT", "MAX_BALANCE", "MAX_QTY", "MAX_ID", "OPTIONAL_INT", "TRANSIENT_REASONS",
    "Reject", "money_text", "price_text", "qty_text", "is_int", "is_optional_int", "updated",
    "stop_loss_inert", "check_stop_loss_before_liquidation", "check_slippage", "check_tpsl",
    "commission_rate", "swap_rate",
]

# Bounds on what the core accepts, so that balances, sizes and prices stay well inside the
# 64-bit integers the journal and every client can carry (the codec still carries any int
# exactly, for outcomes such as the pnl of an absurd price move).
MAX_LEVEL: Final = 10**12                  # ticks: a price, TP/SL level or trailing distance
MAX_AMOUNT: Final = 10**13                 # cents: one deposit, withdrawal or margin (100 bn USD)
MAX_BALANCE: Final = 10**15                # cents: an account's free + locked after a deposit
MAX_QTY: Final = 1 << 62                   # quantity units of one position
MAX_ID: Final = (1 << 63) - 1

OPTIONAL_INT = frozenset({int, type(None)})

_R = RejectReason
#: Rejections caused by the market's plumbing rather than by the command (no or stale quote, a
#: halt): a retry with the same client id or idempotency key is applied afresh, never answered
#: with the remembered rejection, so a retry after a restart or an outage can succeed.
TRANSIENT_REASONS = frozenset({_R.NO_QUOTE._value_, _R.STALE_QUOTE._value_, _R.MARKET_HALTED._value_})


class Reject(Exception):
    """Raised inside a handler's validation phase; turned into one rejection event."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        self.reason: str = reason._value_   # plain attribute: Enum.value is a slow descriptor
        self.message = message


def money_text(cents: int) -> str:
    return format_fixed(cents, CENT_DECIMALS)


def price_text(ticks: int, instrument: Instrument) -> str:
    return format_fixed(ticks, instrument.price_decimals)


def qty_text(units: int, instrument: Instrument) -> str:
    return format_fixed(units, instrument.qty_decimals)


def is_int(value: Any) -> bool:
    return type(value) is int


def is_optional_int(value: Any) -> bool:
    return value is None or type(value) is int


def updated(current: Optional[int], change: Optional[int]) -> Optional[int]:
    """``None`` keeps the current value, ``0`` removes it, anything else replaces it."""
    if change is None:
        return current
    return None if change == 0 else change


def stop_loss_inert(is_long: bool, stop_loss: int, liquidation: int) -> bool:
    """True when liquidation would always fire first (it wins a tie: it is processed first)."""
    return stop_loss <= liquidation if is_long else stop_loss >= liquidation


def check_stop_loss_before_liquidation(is_long: bool, stop_loss: int, liquidation: int,
                                       instrument: Instrument) -> None:
    if stop_loss_inert(is_long, stop_loss, liquidation):
        raise Reject(_R.INVALID_TPSL, f"stop_loss must be {'above' if is_long else 'below'} the "
                     f"liquidation price {price_text(liquidation, instrument)}, or the position is liquidated "
                     "before it fires")


def check_slippage(cmd: Any, is_long: bool, price: int, instrument: Instrument) -> None:
    bps, expected = cmd.slippage_bps, cmd.expected_price
    if bps is None or expected is None:
        raise Reject(_R.INVALID_PRICE, "slippage_bps and expected_price go together")
    if bps < 0 or bps >= 10_000 or expected <= 0:
        raise Reject(_R.INVALID_PRICE, "slippage_bps must be in 0..9999 and expected_price positive")
    if is_long:
        moved = price * 10_000 > expected * (10_000 + bps)
    else:
        moved = price * 10_000 < expected * (10_000 - bps)
    if moved:
        raise Reject(_R.SLIPPAGE_EXCEEDED, f"fill price {price_text(price, instrument)} moved more than {bps} bps from {price_text(expected, instrument)}")


def check_tpsl(is_long: bool, reference: int, take_profit: Optional[int],
               stop_loss: Optional[int], trailing_stop: Optional[int], instrument: Instrument) -> None:
    """TP/SL must lie on the right side of the price a close would fill at."""
    if take_profit is not None:
        if take_profit <= 0 or take_profit > MAX_LEVEL or (
                take_profit <= reference if is_long else take_profit >= reference):
            raise Reject(_R.INVALID_TPSL, f"take_profit must be {'above' if is_long else 'below'} {price_text(reference, instrument)}")
    if stop_loss is not None:
        if stop_loss <= 0 or stop_loss > MAX_LEVEL or (
                stop_loss >= reference if is_long else stop_loss <= reference):
            raise Reject(_R.INVALID_TPSL, f"stop_loss must be {'below' if is_long else 'above'} {price_text(reference, instrument)}")
    if trailing_stop is not None and not 0 < trailing_stop <= MAX_LEVEL:
        raise Reject(_R.INVALID_TPSL, "trailing_stop must be a positive distance")


def commission_rate(account_type: AccountType, instrument: Instrument) -> int:
    """A cross account's commission per side (ppm): the instrument's operator override, else its type's."""
    override = instrument.commission_ppm
    return account_type.commission_ppm if override is None else override


def swap_rate(account_type: AccountType, instrument: Instrument, is_long: bool) -> int:
    """A cross position's daily swap (ppm): the instrument's operator override, else its type's."""
    override = instrument.swap_long_ppm if is_long else instrument.swap_short_ppm
    return account_type.swap_ppm(instrument.symbol, is_long) if override is None else override
