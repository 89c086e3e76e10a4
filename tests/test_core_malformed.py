"""A malformed field in any command is a rejection, on the pure and on the compiled core alike.

mypyc checks annotations at run time: a float or a string read into a local the checker knows
as ``int`` raises ``TypeError`` in the compiled build where the pure core answers with a
rejection. This table puts a wrong-typed value into every field of every command (after a valid
session: an account, a quote, an open position and a pending order) and requires an answer that
is events, or the core's own ``CoreError`` for what cannot be parsed. tests/test_core_build.py
runs :func:`outcomes` under both builds and requires identical results.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from exness_actors.commands import (AddMargin, CancelOrder, ClosePosition, CreateAccount, Deposit, EdgeCursor,
                                    HaltSymbol, ModifyOrder, ModifyPosition, PlaceOrder, Quote, RaiseIdFloor,
                                    ResumeSymbol, Withdraw)
from exness_actors.errors import CoreError

from core_helpers import SYMBOL, Market

#: One valid command of each kind, against the session :func:`session` builds.
VALID: tuple[Any, ...] = (
    Quote(symbol=SYMBOL, bid=6_000_000, ask=6_000_100),
    CreateAccount(account_id=2, initial_deposit=1_000),
    Deposit(account_id=1, amount=1_000, idempotency_key="d"),
    Withdraw(account_id=1, amount=1_000, idempotency_key="w"),
    PlaceOrder(account_id=1, symbol=SYMBOL, side="buy", type="limit", margin=10_000, leverage=10, price=5_900_000,
               take_profit=6_500_000, stop_loss=5_500_000, trailing_stop=None, slippage_bps=None,
               expected_price=None, expires_at=10**12, client_order_id="c"),
    PlaceOrder(account_id=1, symbol=SYMBOL, side="sell", type="market", margin=10_000, leverage=10,
               take_profit=5_000_000, stop_loss=7_000_000, trailing_stop=50_000, slippage_bps=100,
               expected_price=6_000_000),
    CancelOrder(account_id=1, order_id=2),
    ModifyOrder(account_id=1, order_id=2, price=5_800_000, take_profit=6_600_000, stop_loss=5_400_000,
                expires_at=10**12),
    ClosePosition(account_id=1, position_id=1, qty=1_000),
    ModifyPosition(account_id=1, position_id=1, take_profit=6_600_000, stop_loss=5_400_000, trailing_stop=60_000),
    AddMargin(account_id=1, position_id=1, amount=1_000),
    HaltSymbol(symbol=SYMBOL),
    ResumeSymbol(symbol=SYMBOL),
    EdgeCursor(source="s", entry_ms=1, entry_seq=0),
    RaiseIdFloor(next_order_id=10, next_position_id=10),
)
#: Wrong-typed values: a float, a numeric string, None, bytes, a bool, an absurd int. (An unhashable
#: value in an id or symbol field is not here: the pure core raises TypeError on it too.)
BAD_VALUES: tuple[Any, ...] = (1.5, "7", None, b"7", True, 10**40)


def session() -> Market:
    market = Market()
    market.quote(6_000_000, 6_000_100)
    market.open()
    market.pending(type="limit", price=5_900_000)
    return market


def cases() -> list[tuple[str, Any]]:
    found = []
    for valid in VALID:
        for field in attrs.fields(type(valid)):
            if field.name in ("seq", "ts"):
                continue
            for bad in BAD_VALUES:
                found.append((f"{type(valid).__name__}.{field.name}={bad!r}", attrs.evolve(valid, **{field.name: bad})))
    return found


def outcome(command: Any) -> str:
    """The events the command causes on a fresh session, or the CoreError it raises."""
    market = session()
    try:
        events = market.run(command)
    except CoreError as error:
        return f"{type(error).__name__}: {error}"
    return repr(events) + " state " + market.engine.state_hash().hex()


def outcomes() -> dict[str, str]:
    return {name: outcome(command) for name, command in cases()}


@pytest.mark.parametrize("name, command", cases(), ids=[name for name, _ in cases()])
def test_a_wrong_typed_field_is_answered_not_crashed(name: str, command: Any) -> None:
    outcome(command)
