"""Issue 16, per-type spreads: each account trades, is stopped and is judged on its type's prices.

Instrument BTCUSDT has ``spread_bps = 10`` (0.1 % per side), ETHUSDT 20. The types:
``standard`` trades on the instrument's spread, ``tight`` on a tenth of it (spread_multiplier
0.1: 1 bps = 100 ppm), ``raw`` on the feed's quote itself (fixed_spread_bps 0), ``wide_iso`` is
isolated on twice the spread. Bid floored, ask ceiled (against the trader).
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core_helpers import only
from exness_actors import codec
from exness_actors.account_types import AccountType, profile_quote
from exness_actors.commands import (
    ClosePosition, CreateAccount, OpenAccount, PlaceOrder, Quote, SetAccountTypes,
)
from exness_actors.engine import Engine
from exness_actors.events import AccountTypesChanged, CommandRejected, PositionClosed, PositionOpened
from exness_actors.errors import InvalidValue
from exness_actors.instruments import CoreConfig, Instrument, core_config_from_mapping
from exness_actors.testing.invariants import account_prices, assert_triggers_respected, check_all

TYPES = (
    AccountType(name="standard"),
    AccountType(name="tight", spread_pct=10, commission_ppm=35),
    AccountType(name="raw", fixed_spread_ppm=0, commission_ppm=35),
    AccountType(name="wide_iso", margin_mode="isolated", spread_pct=200),
)
INSTRUMENTS = (Instrument(symbol="BTCUSDT", price_decimals=2, qty_decimals=8, min_qty=1, spread_bps=10),
               Instrument(symbol="ETHUSDT", price_decimals=2, qty_decimals=8, min_qty=1, spread_bps=20))
CONFIG = CoreConfig(instruments=INSTRUMENTS, account_types=TYPES)
ACCOUNTS = {1: "standard", 2: "tight", 3: "raw", 4: "wide_iso"}


class Desk:
    def __init__(self, types: dict[int, str] = ACCOUNTS, deposit: int = 1_000_000) -> None:
        self.engine = Engine(CONFIG)
        self.ts = 0
        for account_id, name in types.items():
            self.run(OpenAccount(account_id=account_id, account_type=name, initial_deposit=deposit))

    def run(self, command) -> list:
        self.ts += 1
        events = self.engine.submit(command, ts=self.ts)
        check_all(self.engine)
        return events

    def quote(self, symbol: str, bid: int, ask: int | None = None) -> list:
        events = self.run(Quote(symbol=symbol, bid=bid, ask=bid if ask is None else ask))
        assert_triggers_respected(self.engine, symbol)
        return events

    def buy(self, account_id: int, symbol: str = "BTCUSDT", side: str = "buy", **kw) -> list:
        return self.run(PlaceOrder(account_id=account_id, symbol=symbol, side=side, type="market",
                                   margin=kw.pop("margin", 10_000), leverage=kw.pop("leverage", 10), **kw))


# --------------------------------------------------------------------------- configuration

def test_config_reads_a_multiplier_or_a_fixed_spread_and_names_bad_fields():
    config = core_config_from_mapping({}, {"BTCUSDT": {"spread_bps": 10}}, {"types": {
        "raw_spread": {"spread_multiplier": "0.25", "commission_bps": "0.35"},
        "zero": {"fixed_spread_bps": "0"},
        "standard": {}}})
    by_name = {t.name: t for t in config.account_types}
    assert by_name["raw_spread"].spread_profile == (25, -1)
    assert by_name["zero"].spread_profile == (100, 0)
    assert by_name["standard"].spread_profile is None
    for spec, field in (({"spread_multiplier": "11"}, "spread_multiplier"),
                        ({"spread_multiplier": "0.001"}, "spread_multiplier"),
                        ({"fixed_spread_bps": "1000"}, "fixed_spread_bps")):
        with pytest.raises(InvalidValue, match=field):
            core_config_from_mapping({}, {"BTCUSDT": {}}, {"types": {"raw": spec}})


def test_a_type_without_its_own_spread_encodes_as_before_and_one_with_it_round_trips():
    assert AccountType(name="standard").to_wire() == ["standard", "cross", 1000, 60, 0, 0, 0, 0, False, 0]
    for account_type in TYPES:
        assert AccountType.from_wire(account_type.to_wire()) == account_type


# --------------------------------------------------------------------------- hand-computed tables

@pytest.mark.parametrize("account_id, bid, ask", [
    (1, 4_995_000, 5_005_000),     # standard: 50000.00 ∓ 0.1 %
    (2, 4_999_500, 5_000_500),     # tight: ∓ 0.01 %
    (3, 5_000_000, 5_000_000),     # raw: the feed's quote
    (4, 4_990_000, 5_010_000),     # wide_iso: ∓ 0.2 %
])
def test_each_type_fills_at_its_own_ask_and_sees_its_own_quote(account_id, bid, ask):
    desk = Desk()
    quoted = desk.quote("BTCUSDT", 5_000_000)

    opened = only(desk.buy(account_id), PositionOpened)

    assert opened.open_price == ask
    assert desk.engine.account_quote(account_id, "BTCUSDT") == (bid, ask, desk.ts - 1)
    # the market's quote (QuoteUpdated, engine.quote) stays the instrument's spread
    assert [(e.bid, e.ask) for e in quoted if type(e).__name__ == "QuoteUpdated"] == [(4_995_000, 5_005_000)]
    assert desk.engine.quote("BTCUSDT")[:2] == (4_995_000, 5_005_000)


def test_a_short_fills_at_the_profile_bid_and_closes_at_its_ask():
    desk = Desk()
    desk.quote("BTCUSDT", 5_000_000)
    opened = only(desk.buy(2, side="sell"), PositionOpened)
    assert opened.open_price == 4_999_500
    desk.quote("BTCUSDT", 4_000_000)                       # tight ask: 4_000_000 · 1.0001 = 4_000_400
    closed = only(desk.run(ClosePosition(account_id=2, position_id=opened.position_id)), PositionClosed)
    assert closed.price == 4_000_400


def test_a_stop_loss_fires_at_the_profiles_price_not_the_markets():
    desk = Desk()
    desk.quote("BTCUSDT", 5_000_000)
    standard = only(desk.buy(1, stop_loss=4_990_000), PositionOpened)
    tight = only(desk.buy(2, stop_loss=4_990_000), PositionOpened)

    # raw 49940.00: standard bid 4_994_000 · 0.999 = 4_989_006 <= SL; tight bid 4_993_500 > SL
    events = desk.quote("BTCUSDT", 4_994_000)
    assert [(e.position_id, e.reason, e.price) for e in events if isinstance(e, PositionClosed)] == [
        (standard.position_id, "stop_loss", 4_989_006)]
    assert tight.position_id in desk.engine.positions

    # raw 49904.00: tight bid 4_990_400 · 0.9999 = 4_989_900.96 -> 4_989_900 <= SL
    events = desk.quote("BTCUSDT", 4_990_400)
    assert [(e.position_id, e.reason, e.price) for e in events if isinstance(e, PositionClosed)] == [
        (tight.position_id, "stop_loss", 4_989_900)]


def test_a_pending_buy_limit_fills_when_its_profiles_ask_reaches_it():
    desk = Desk()
    desk.quote("BTCUSDT", 5_000_000)
    for account_id in (1, 3):
        desk.run(PlaceOrder(account_id=account_id, symbol="BTCUSDT", side="buy", type="limit",
                            price=4_900_000, margin=10_000, leverage=10))
    # raw 48990.00: raw ask 4_899_000 <= limit; standard ask 4_899_000 · 1.001 = 4_903_899 > limit
    events = desk.quote("BTCUSDT", 4_899_000)
    assert [(e.account_id, e.open_price) for e in events if isinstance(e, PositionOpened)] == [(3, 4_899_000)]


def test_a_cross_accounts_equity_is_at_its_profiles_closing_prices():
    desk = Desk({3: "raw", 1: "standard"}, deposit=100_000)
    desk.quote("BTCUSDT", 5_000_000)
    desk.quote("ETHUSDT", 250_000, 250_100)
    desk.buy(3, margin=10_000, leverage=10)                          # 0.02 BTC at 50000.00
    desk.buy(3, "ETHUSDT", side="sell", margin=5_000, leverage=10)   # 0.2 ETH at 2500.00 (raw bid)
    desk.quote("BTCUSDT", 4_900_000)                                 # long: 0.02 · −1000.00 = −20.00
    desk.quote("ETHUSDT", 255_000, 255_100)                          # short at the raw ask 2551.00: 0.2 · −51.00 = −10.20

    summary = desk.engine.account_summary(3)

    commission = 4 + 2          # 0.35 bps of 1000.00 and of 500.00, rounded up
    assert summary["unrealized_pnl"] == -2_000 - 1_020
    assert summary["equity"] == 100_000 - commission - 3_020
    assert summary["margin_level"] == (100_000 - commission - 3_020, 15_000)


def test_a_margin_stop_out_closes_at_the_profiles_price():
    types = (AccountType(name="standard"), AccountType(name="raw", fixed_spread_ppm=0, stop_out_pct=50,
                                                        margin_call_pct=100))
    engine = Engine(CoreConfig(instruments=INSTRUMENTS, account_types=types))
    engine.submit(OpenAccount(account_id=1, account_type="raw", initial_deposit=20_000), ts=1)
    engine.submit(Quote(symbol="BTCUSDT", bid=5_000_000, ask=5_000_000), ts=2)
    engine.submit(PlaceOrder(account_id=1, symbol="BTCUSDT", side="buy", type="market", margin=10_000,
                             leverage=100), ts=3)                    # 0.2 BTC at 50000.00
    # equity 200.00 + 0.2 · (bid − 50000.00) <= 50 % of 100.00 at bid <= 49250.00
    assert not [e for e in engine.submit(Quote(symbol="BTCUSDT", bid=4_925_100, ask=4_925_100), ts=4)
                if isinstance(e, PositionClosed)]
    events = engine.submit(Quote(symbol="BTCUSDT", bid=4_925_000, ask=4_925_000), ts=5)
    assert [(e.reason, e.price) for e in events if isinstance(e, PositionClosed)] == [("stop_out", 4_925_000)]
    check_all(engine)


# --------------------------------------------------------------------------- state

def test_a_profile_adds_state_only_once_an_account_uses_it():
    desk = Desk({1: "standard"})
    desk.quote("BTCUSDT", 5_000_000)
    assert len(desk.engine.to_state()[15]) == 5 and not desk.engine.profile_books
    desk.run(OpenAccount(account_id=2, account_type="tight", initial_deposit=0))
    assert desk.engine.to_state()[15][5] == [[10, -1]]
    assert len(desk.engine.profile_books["BTCUSDT"]) == 1
    # a profile made after quotes starts from the last raw quote
    assert desk.engine.account_quote(2, "BTCUSDT")[:2] == (4_999_500, 5_000_500)


def test_an_untyped_engine_never_makes_profile_books():
    engine = Engine(CoreConfig(instruments=INSTRUMENTS))
    engine.submit(CreateAccount(account_id=1, initial_deposit=100_000), ts=1)
    engine.submit(Quote(symbol="BTCUSDT", bid=5_000_000, ask=5_000_000), ts=2)
    assert engine.profiles == [] and engine.profile_books == {} and len(engine.to_state()) == 14


def test_a_journaled_spread_change_moves_the_accounts_of_that_type_to_the_new_prices():
    desk = Desk({2: "tight", 1: "standard"})
    desk.quote("BTCUSDT", 5_000_000)
    opened = only(desk.buy(2, stop_loss=4_990_000), PositionOpened)
    changed = [t.to_wire() for t in TYPES]
    changed[1] = AccountType(name="tight", spread_pct=100, fixed_spread_ppm=0, commission_ppm=35).to_wire()

    assert only(desk.run(SetAccountTypes(account_types=changed, rollover_ns=0)), AccountTypesChanged)

    assert desk.engine.profiles == [(10, -1), (100, 0)]
    assert desk.engine.account_quote(2, "BTCUSDT")[:2] == (5_000_000, 5_000_000)
    # its stop-loss now fires on the raw quote: 4_990_400 (tight would have been 4_989_900)
    assert not [e for e in desk.quote("BTCUSDT", 4_990_400) if isinstance(e, PositionClosed)]
    events = desk.quote("BTCUSDT", 4_990_000)
    assert [(e.position_id, e.price) for e in events if isinstance(e, PositionClosed)] == [(opened.position_id, 4_990_000)]
    restored = Engine.from_state(msgpack.unpackb(msgpack.packb(desk.engine.to_state(), use_bin_type=True), raw=False))
    assert restored.state_hash() == desk.engine.state_hash()


def test_halts_reach_every_profiles_book():
    desk = Desk()
    desk.quote("BTCUSDT", 5_000_000)
    desk.run(PlaceOrder(account_id=3, symbol="BTCUSDT", side="buy", type="limit", price=4_900_000,
                        margin=10_000, leverage=10))
    from exness_actors.commands import HaltSymbol, ResumeSymbol
    desk.run(HaltSymbol(symbol="BTCUSDT"))
    assert not [e for e in desk.quote("BTCUSDT", 4_800_000) if isinstance(e, PositionOpened)]
    desk.run(ResumeSymbol(symbol="BTCUSDT"))
    assert [e.open_price for e in desk.quote("BTCUSDT", 4_800_000) if isinstance(e, PositionOpened)] == [4_800_000]


# --------------------------------------------------------------------------- properties

@st.composite
def sessions(draw):
    inputs: list = [OpenAccount(account_id=n, account_type=draw(st.sampled_from(sorted(set(ACCOUNTS.values())))),
                                initial_deposit=draw(st.integers(10_000, 1_000_000))) for n in range(1, 5)]
    prices = {"BTCUSDT": 5_000_000, "ETHUSDT": 250_000}
    inputs += [Quote(symbol=s, bid=p, ask=p + 10) for s, p in prices.items()]
    for _ in range(draw(st.integers(5, 50))):
        kind = draw(st.sampled_from(("quote", "quote", "quote", "market", "pending", "close")))
        symbol = draw(st.sampled_from(sorted(prices)))
        price = prices[symbol]
        if kind == "quote":
            prices[symbol] = max(10_000, price * draw(st.integers(9_900, 10_100)) // 10_000)
            inputs.append(Quote(symbol=symbol, bid=prices[symbol], ask=prices[symbol] + draw(st.integers(0, 30))))
        elif kind == "close":
            inputs.append(ClosePosition(account_id=draw(st.integers(1, 4)), position_id=draw(st.integers(1, 40))))
        else:
            is_buy = draw(st.booleans())
            offset = price * draw(st.integers(5, 200)) // 10_000
            protect = {"stop_loss": price - offset if is_buy else price + offset} if draw(st.booleans()) else {}
            if draw(st.booleans()):
                protect["take_profit"] = price + offset if is_buy else price - offset
            if draw(st.booleans()):
                protect["trailing_stop"] = offset
            if kind == "pending":
                protect = {"price": price + draw(st.integers(-2, 2)) * offset // 2 or price,
                           **{k: v for k, v in protect.items() if k != "trailing_stop"}}
            inputs.append(PlaceOrder(account_id=draw(st.integers(1, 4)), symbol=symbol, side="buy" if is_buy else "sell",
                                     type="market" if kind == "market" else draw(st.sampled_from(("limit", "stop"))),
                                     margin=draw(st.integers(1_000, 20_000)), leverage=draw(st.sampled_from((5, 20, 50))),
                                     **protect))
    return inputs


def _copy(command):
    return codec.from_wire(codec.to_wire(command))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sessions(), st.integers(0, 60))
def test_indexed_triggers_per_profile_equal_the_brute_force_oracle_and_survive_a_restore(inputs, cut):
    """After every quote nothing its account's prices crossed is left (the oracle recomputes each
    account's prices from the raw quote), every trigger close is at its account's price and
    crossed its level, and a snapshot at any point continues to the same hashes."""
    engine, head = Engine(CONFIG), None
    for n, command in enumerate(inputs):
        if n == cut:
            head = Engine.from_state(msgpack.unpackb(msgpack.packb(engine.to_state(), use_bin_type=True), raw=False))
            assert head.state_hash() == engine.state_hash()
        before = {pid: (p.stop_loss, p.take_profit) for pid, p in engine.positions.items()}
        events = engine.submit(_copy(command), ts=n + 1)
        check_all(engine)
        if isinstance(command, Quote):
            assert_triggers_respected(engine, command.symbol)
            for event in events:
                if isinstance(event, PositionOpened):   # a pending entry filled by this quote
                    before[event.position_id] = (event.stop_loss, event.take_profit)
                if isinstance(event, PositionClosed) and event.reason in ("stop_loss", "take_profit"):
                    bid, ask = account_prices(engine, event.account_id, event.symbol)
                    assert event.price == (bid if event.side == "buy" else ask)
                    stop_loss, take_profit = before[event.position_id]
                    level = stop_loss if event.reason == "stop_loss" else take_profit
                    falls = (event.side == "buy") == (event.reason == "stop_loss")
                    assert (event.price <= level) if falls else (event.price >= level)
    if head is not None:
        for n, command in enumerate(inputs[cut:], start=cut):
            head.submit(_copy(command), ts=n + 1)
        assert head.state_hash() == engine.state_hash()
        assert head.rolling_hash == engine.rolling_hash


def test_profile_quote_rounds_against_the_trader():
    assert profile_quote(1_000_001, 1_000_001, 10, (10, -1)) == (999_900, 1_000_102)
    assert profile_quote(1, 1, 9_999, (1_000, -1)) == (1, 2)
