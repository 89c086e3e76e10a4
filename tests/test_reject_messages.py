"""Every rejection a client can get speaks the API's units: amounts and prices as decimal
strings, never the core's cents, ticks or quantity units.

One row per reject path of the core. Each row drives a core with one funded account (10000.00
USD) and a quote whose numbers are easy to spot (bid 65031.36, ask 65032.00 — internally
6503136 and 6503200 ticks), then renders the rejection with :func:`actors.wire.codec.rejection_of`,
which is what the HTTP API and the WebSocket order lane both answer with. A row states the
reason, a fragment that must appear, and the bare integers the message may contain (ids,
leverage, bps); any other integer in the message or a ``details`` value fails the row.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import pytest

from actors.wire import codec as edge
from core_helpers import SECOND, SYMBOL, Market
from exness_actors.commands import (
    AddMargin, CancelOrder, ClosePosition, CreateAccount, Deposit, HaltSymbol, ModifyOrder,
    ModifyPosition, PlaceOrder, Withdraw,
)

BID, ASK = 6_503_136, 6_503_200
MIN_QTY = 100_000                       # 0.001 BTC
LIMIT = dict(type="limit", price=6_000_000)


def _market(**kwargs: Any) -> Market:
    market = Market(min_qty=MIN_QTY, **kwargs)
    market.quote(BID, ASK)
    return market


def _place(**fields: Any) -> Callable[[Market], list]:
    return lambda m: m.order(**fields)


def _on_pending(make: Callable[[int], Any], **fields: Any) -> Callable[[Market], list]:
    def act(m: Market) -> list:
        order = m.pending(**{**LIMIT, **fields})
        return m.run(make(order.order_id))
    return act


def _on_position(make: Callable[[int], Any], **fields: Any) -> Callable[[Market], list]:
    def act(m: Market) -> list:
        position = m.open(**fields)
        return m.run(make(position.position_id))
    return act


def _halted(m: Market) -> list:
    m.run(HaltSymbol(symbol=SYMBOL))
    return m.order()


def _stale(m: Market) -> list:
    m.run(CreateAccount(account_id=9), after=60 * SECOND)
    return m.order()


def _stale_close(m: Market) -> list:
    position = m.open()
    m.run(CreateAccount(account_id=9), after=60 * SECOND)
    return m.run(ClosePosition(account_id=1, position_id=position.position_id))


def _no_quote(m: Market) -> list:
    return m.order(symbol="ETHUSDT")


def _finished(m: Market) -> list:
    order = m.pending(**LIMIT)
    m.run(CancelOrder(account_id=1, order_id=order.order_id))
    return m.run(CancelOrder(account_id=1, order_id=order.order_id))


def _rich(m: Market) -> list:
    for _ in range(99):
        m.run(Deposit(account_id=1, amount=10**13))
    return m.run(Deposit(account_id=1, amount=10**13))


# (label, action, reason, fragment that must show, bare integers allowed)
ROWS = [
    ("withdraw more than free", lambda m: m.run(Withdraw(account_id=1, amount=2_000_000)),
     "INSUFFICIENT_BALANCE", "free balance 10000.00 is less than 20000.00", ()),
    ("deposit above the largest amount", lambda m: m.run(Deposit(account_id=1, amount=10**13 + 1)),
     "INVALID_AMOUNT", "at most 100000000000.00", ()),
    ("deposit past the largest balance", _rich, "INVALID_AMOUNT", "exceed 10000000000000.00", ()),
    ("market margin above free", _place(margin=2_000_000), "INSUFFICIENT_BALANCE",
     "free balance 10000.00 is less than the margin 20000.00", ()),
    ("pending margin above free", _place(margin=2_000_000, **LIMIT), "INSUFFICIENT_BALANCE",
     "free balance 10000.00 is less than the margin 20000.00", ()),
    ("margin above the largest amount", _place(margin=10**13 + 1), "INVALID_MARGIN",
     "at most 100000000000.00", ()),
    ("leverage above max", _place(leverage=1000), "INVALID_LEVERAGE", "from 1 to 100", (1, 100)),
    ("unknown symbol", _place(symbol="DOGEUSDT"), "UNKNOWN_SYMBOL", "DOGEUSDT", ()),
    ("halted", _halted, "MARKET_HALTED", "halted", ()),
    ("no quote", _no_quote, "NO_QUOTE", "ETHUSDT", ()),
    ("stale quote", _stale, "STALE_QUOTE", "too old", ()),
    ("size too small", _place(margin=100, leverage=1), "SIZE_TOO_SMALL", "0.00100000", ()),
    ("limit at the market", _place(type="limit", price=ASK), "INVALID_PRICE", "market 65032.00", ()),
    ("stop below the market", _place(type="stop", price=BID), "INVALID_PRICE", "market 65032.00", ()),
    ("price above the largest", _place(type="limit", price=10**13), "INVALID_PRICE", "10000000000.00", ()),
    ("expiry in the past", _place(expires_at=0, **LIMIT), "INVALID_EXPIRY", "future", ()),
    ("slippage", _place(slippage_bps=10, expected_price=6_400_000), "SLIPPAGE_EXCEEDED",
     "fill price 65032.00 moved more than 10 bps from 64000.00", (10,)),
    ("take profit below a long's bid", _place(take_profit=6_000_000), "INVALID_TPSL",
     "take_profit must be above 65031.36", ()),
    ("stop loss above a long's bid", _place(stop_loss=7_000_000), "INVALID_TPSL",
     "stop_loss must be below 65031.36", ()),
    ("take profit above a short's ask", _place(side="sell", take_profit=7_000_000), "INVALID_TPSL",
     "take_profit must be below 65032.00", ()),
    ("pending take profit below its price", _place(take_profit=5_000_000, **LIMIT), "INVALID_TPSL",
     "take_profit must be above 60000.00", ()),
    ("stop loss beyond the liquidation price", _place(stop_loss=5_000_000), "INVALID_TPSL",
     "liquidation price 58", ()),
    ("trailing stop not positive", _place(trailing_stop=0), "INVALID_TPSL", "positive", ()),
    ("modify a pending order to the market",
     _on_pending(lambda order_id: ModifyOrder(account_id=1, order_id=order_id, price=ASK + 100)),
     "INVALID_PRICE", "market 65032.00", ()),
    ("modify a pending order's take profit",
     _on_pending(lambda order_id: ModifyOrder(account_id=1, order_id=order_id, take_profit=5_000_000)),
     "INVALID_TPSL", "take_profit must be above 60000.00", ()),
    ("modify a pending order's price too far",
     _on_pending(lambda order_id: ModifyOrder(account_id=1, order_id=order_id, price=10**13)),
     "INVALID_PRICE", "10000000000.00", ()),
    ("modify a pending order below the minimum size",
     _on_pending(lambda order_id: ModifyOrder(account_id=1, order_id=order_id, price=1_000_000_000),
                 side="sell", price=7_000_000, margin=10_000, leverage=1), "SIZE_TOO_SMALL", "0.00100000", ()),
    ("cancel a finished order", _finished, "ORDER_NOT_PENDING", "cancelled", None),
    ("cancel an unknown order", lambda m: m.run(CancelOrder(account_id=1, order_id=999)),
     "UNKNOWN_ORDER", "999", (999,)),
    ("close more than the position",
     _on_position(lambda position_id: ClosePosition(account_id=1, position_id=position_id, qty=10**12)),
     "INVALID_QTY", "the position's 0.01537704", ()),
    ("close below the minimum size",
     _on_position(lambda position_id: ClosePosition(account_id=1, position_id=position_id, qty=10)),
     "SIZE_TOO_SMALL", "0.00100000", ()),
    ("close on a stale quote", _stale_close, "STALE_QUOTE", "too old", ()),
    ("close an unknown position", lambda m: m.run(ClosePosition(account_id=1, position_id=999)),
     "UNKNOWN_POSITION", "999", (999,)),
    ("modify a position's stop loss",
     _on_position(lambda position_id: ModifyPosition(account_id=1, position_id=position_id, stop_loss=7_000_000)),
     "INVALID_TPSL", "stop_loss must be below 65031.36", ()),
    ("modify a position's stop loss beyond its liquidation price",
     _on_position(lambda position_id: ModifyPosition(account_id=1, position_id=position_id, stop_loss=5_000_000)),
     "INVALID_TPSL", "liquidation price 58", ()),
    ("add more margin than free",
     _on_position(lambda position_id: AddMargin(account_id=1, position_id=position_id, amount=2_000_000)),
     "INSUFFICIENT_BALANCE", "free balance 9900.00 is less than 20000.00", ()),
    ("add margin above the largest amount",
     _on_position(lambda position_id: AddMargin(account_id=1, position_id=position_id, amount=10**13 + 1)),
     "INVALID_AMOUNT", "at most 100000000000.00", ()),
]

_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _bare_integers(text: str) -> set[int]:
    return {int(number) for number in _NUMBER.findall(text) if "." not in number}


@pytest.mark.parametrize("label, act, reason, fragment, allowed", ROWS, ids=[row[0] for row in ROWS])
def test_rejections_speak_api_units(label: str, act: Callable[[Market], list], reason: str,
                                    fragment: str, allowed: Any) -> None:
    market = _market()
    error = edge.rejection_of(act(market))
    assert error is not None and error.code == reason, (label, error and error.message)
    assert fragment in error.message, error.message
    ids = {int(value) for key, value in error.details.items() if key == "ref"}
    for text in (error.message, *map(str, error.details.values())):
        stray = _bare_integers(text) - set(allowed or ()) - ids
        assert not stray, f"{label}: {text!r} shows internal integers {sorted(stray)}"


def test_would_liquidate_speaks_api_units() -> None:
    market = Market(min_qty=1)
    market.quote(BID, 6_600_000)     # a spread wider than 1% at L100
    error = edge.rejection_of(market.order(leverage=100))
    assert error is not None and error.code == "WOULD_LIQUIDATE"
    assert not _bare_integers(error.message)
