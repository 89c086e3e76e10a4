"""Small stub factories for core tests (Arrange helpers)."""

from __future__ import annotations

from typing import Any

from exness_actors.commands import CreateAccount, PlaceOrder, Quote
from exness_actors.engine import Engine
from exness_actors.events import OrderAccepted, PositionOpened
from exness_actors.instruments import CoreConfig, Instrument

SYMBOL = "BTCUSDT"
SECOND = 1_000_000_000


def make_engine(*, spread_bps: int = 0, maintenance_bps: int = 0, max_leverage: int = 100,
                min_qty: int = 1, window: int = 1000, hash_format: int = 2) -> Engine:
    config = CoreConfig(
        instruments=(Instrument(symbol=SYMBOL, price_decimals=2, qty_decimals=8,
                                max_leverage=max_leverage, spread_bps=spread_bps, min_qty=min_qty,
                                maintenance_bps=maintenance_bps),
                     Instrument(symbol="ETHUSDT", price_decimals=2, qty_decimals=8)),
        stale_after_ns=5 * SECOND, idempotency_window=window, hash_format=hash_format)
    return Engine(config)


class Market:
    """An engine with one funded account, driven one input at a time with a ticking clock."""

    def __init__(self, engine: Engine | None = None, *, deposit: int = 1_000_000, **kwargs: Any) -> None:
        self.engine = engine or make_engine(**kwargs)
        self.ts = 0
        self.run(CreateAccount(account_id=1, initial_deposit=deposit))

    def run(self, command: Any, *, after: int = 1) -> list:
        self.ts += after
        return self.engine.submit(command, ts=self.ts)

    def quote(self, bid: int, ask: int | None = None, symbol: str = SYMBOL, **kw: Any) -> list:
        return self.run(Quote(symbol=symbol, bid=bid, ask=bid if ask is None else ask), **kw)

    def order(self, **fields: Any) -> list:
        defaults: dict[str, Any] = dict(account_id=1, symbol=SYMBOL, side="buy", type="market",
                                        margin=10_000, leverage=10)
        defaults.update(fields)
        return self.run(PlaceOrder(**defaults))

    def open(self, **fields: Any) -> PositionOpened:
        events = self.order(**fields)
        opened = [e for e in events if isinstance(e, PositionOpened)]
        assert opened, events
        return opened[0]

    def pending(self, **fields: Any) -> OrderAccepted:
        events = self.order(**fields)
        accepted = [e for e in events if isinstance(e, OrderAccepted)]
        assert accepted and accepted[0].status == "pending", events
        return accepted[0]

    @property
    def account(self):
        return self.engine.accounts[1]


def of_type(events: list, cls: type) -> list:
    return [e for e in events if isinstance(e, cls)]


def only(events: list, cls: type):
    found = of_type(events, cls)
    assert len(found) == 1, events
    return found[0]
