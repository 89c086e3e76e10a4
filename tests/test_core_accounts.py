"""Issue 16, the account model in the core: isolated journals unchanged, cross margin, fees."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core_helpers import of_type, only
from exness_actors import codec
from exness_actors.account_types import AccountType
from exness_actors.commands import (
    AddMargin, Clock, ClosePosition, Deposit, OpenAccount, PlaceOrder, Quote, SetAccountTypes, Withdraw,
)
from exness_actors.engine import Engine
from exness_actors.events import (
    AccountOpened, AccountTypesChanged, BalanceChanged, CommandRejected, MarginCall, OrderRejected,
    PositionClosed, PositionFees, PositionOpened, StopOut,
)
from exness_actors.errors import InvalidValue
from exness_actors.instruments import DEFAULT_INSTRUMENTS, CoreConfig, Instrument, core_config_from_mapping
from exness_actors.testing.invariants import check_all

ISOLATED_JOURNAL = Path(__file__).parent / "data" / "isolated_journal.msgpack"


# --------------------------------------------------------------------------- isolated accounts

def test_an_isolated_journal_recorded_on_main_replays_to_the_same_hashes():
    recorded = msgpack.unpackb(ISOLATED_JOURNAL.read_bytes(), raw=False)
    # recorded before rolling hash format 2 (issue 14): its hashes are format 1's
    engine = Engine(CoreConfig(instruments=DEFAULT_INSTRUMENTS, hash_format=1))

    for wire in recorded["inputs"]:
        engine.apply(codec.from_wire(wire))

    assert engine.state_hash() == recorded["state_hash"]
    assert engine.rolling_hash == recorded["rolling_hash"]


# --------------------------------------------------------------------------- cross margin tables


DAY = 86_400 * 10**9
TYPES = (
    AccountType(name="standard", margin_call_pct=60, stop_out_pct=0),
    AccountType(name="tight", margin_call_pct=100, stop_out_pct=50),
    AccountType(name="raw", commission_ppm=100, swap_long_ppm=100, swap_short_ppm=-50),
    AccountType(name="raw_swap_free", commission_ppm=100, swap_long_ppm=100, swap_free=True),
    AccountType(name="isolated", margin_mode="isolated", max_leverage=20),
)
CROSS_CONFIG = CoreConfig(
    instruments=(Instrument(symbol="BTCUSDT", price_decimals=2, qty_decimals=8, min_qty=1),
                 Instrument(symbol="ETHUSDT", price_decimals=2, qty_decimals=8, min_qty=1)),
    account_types=TYPES)


class Desk:
    """One typed account on an engine with the test account types, one input at a time."""

    def __init__(self, account_type: str, deposit: int, *, ts: int = 0) -> None:
        self.engine = Engine(CROSS_CONFIG)
        self.ts = ts
        self.run(OpenAccount(account_id=1, account_type=account_type, initial_deposit=deposit))

    def run(self, command, *, at: int | None = None) -> list:
        self.ts = self.ts + 1 if at is None else at
        events = self.engine.submit(command, ts=self.ts)
        self.engine.check_invariants()
        return events

    def quote(self, symbol: str, price: int) -> list:
        return self.run(Quote(symbol=symbol, bid=price, ask=price))

    def open(self, symbol: str, side: str, margin: int, leverage: int) -> PositionOpened:
        events = self.run(PlaceOrder(account_id=1, symbol=symbol, side=side, type="market",
                                     margin=margin, leverage=leverage))
        return only(events, PositionOpened)

    def summary(self) -> dict:
        return self.engine.account_summary(1)


def test_open_account_names_a_configured_type():
    desk = Desk("standard", 100_000)
    events = desk.run(OpenAccount(account_id=2, account_type="gold", initial_deposit=0))
    assert only(events, CommandRejected).reason == "UNKNOWN_ACCOUNT_TYPE"
    assert "standard" in only(events, CommandRejected).message
    opened = desk.run(OpenAccount(account_id=3, account_type="raw", initial_deposit=0))
    assert only(opened, AccountOpened) == AccountOpened(account_id=3, account_type="raw", balance=0)


def test_margin_level_equity_and_free_margin_of_a_cross_account():
    desk = Desk("standard", 100_000)                   # 1000.00
    desk.quote("BTCUSDT", 5_000_000)                   # 50000.00
    desk.open("BTCUSDT", "buy", 10_000, 10)            # 0.02 BTC, margin 100.00
    desk.quote("BTCUSDT", 4_900_000)                   # −20.00

    summary = desk.summary()

    assert (summary["balance"], summary["locked"], summary["equity"]) == (100_000, 10_000, 98_000)
    assert summary["free_margin"] == 88_000
    assert summary["margin_level"] == (98_000, 10_000)   # 980 %
    assert summary["unrealized_pnl"] == -2_000


@pytest.mark.parametrize("account_type, margin, reason", [
    ("standard", 10_001, "INSUFFICIENT_BALANCE"),      # more than the free balance
    ("standard", 9_000, "INSUFFICIENT_MARGIN"),        # fits the cash, not the free margin
])
def test_orders_that_would_leave_free_margin_negative_are_rejected(account_type, margin, reason):
    desk = Desk(account_type, 20_000)
    desk.quote("BTCUSDT", 5_000_000)
    desk.open("BTCUSDT", "buy", 10_000, 100)           # 0.2 BTC
    desk.quote("BTCUSDT", 4_990_000)                   # −20.00: free margin 80.00, free 100.00

    events = desk.run(PlaceOrder(account_id=1, symbol="BTCUSDT", side="buy", type="market",
                                 margin=margin, leverage=1))

    assert only(events, OrderRejected).reason == reason


def test_margin_call_and_stop_out_across_two_symbols():
    desk = Desk("tight", 30_000)                       # call 100 %, stop-out 50 %
    desk.quote("BTCUSDT", 5_000_000)
    desk.quote("ETHUSDT", 250_000)
    btc = desk.open("BTCUSDT", "buy", 10_000, 100)     # 0.2 BTC
    eth = desk.open("ETHUSDT", "sell", 10_000, 100)    # 4 ETH; used 200.00
    assert not of_type(desk.quote("BTCUSDT", 5_050_000), MarginCall)    # +100.00

    called = desk.quote("ETHUSDT", 255_000)            # −200.00: equity 200.00 = 100 %
    again = desk.quote("ETHUSDT", 256_000)             # still called: no second event
    stopped = desk.quote("ETHUSDT", 257_500)           # −300.00: equity 100.00 = 50 %

    assert only(called, MarginCall) == MarginCall(account_id=1, equity=20_000, used_margin=20_000, ts=desk.ts - 2)
    assert not of_type(again, MarginCall)
    assert only(stopped, StopOut).equity == 10_000
    closed = only(stopped, PositionClosed)             # the largest loss only: then 100 % > 50 %
    assert (closed.position_id, closed.reason, closed.pnl) == (eth.position_id, "stop_out", -30_000)
    assert desk.engine.accounts[1].free == -10_000     # covered by the BTC gain while it is open
    assert list(desk.engine.accounts[1].positions) == [btc.position_id]
    assert not of_type(desk.quote("BTCUSDT", 5_100_000), MarginCall)    # 200 %: recovered
    assert only(desk.quote("BTCUSDT", 5_050_000), MarginCall).equity == 10_000   # 100 %: called again


def test_a_stop_out_at_zero_closes_everything_and_the_house_absorbs_the_deficit():
    desk = Desk("standard", 10_000)
    desk.quote("BTCUSDT", 5_000_000)
    desk.open("BTCUSDT", "buy", 10_000, 100)           # 0.2 BTC, all the balance as margin

    events = desk.quote("BTCUSDT", 4_900_000)          # −200.00: equity −100.00

    assert [type(e).__name__ for e in events if not isinstance(e, (BalanceChanged,))][1:] == [
        "MarginCall", "StopOut", "PositionClosed", "PositionFees"]
    assert only(events, PositionClosed).reason == "stop_out"
    assert [e.kind for e in of_type(events, BalanceChanged)] == ["position_close", "balance_reset"]
    assert desk.engine.accounts[1].free == 0
    assert desk.engine.house_book()["losses_absorbed"] == 10_000


def test_commission_at_open_partial_close_and_close():
    desk = Desk("raw", 100_000)                        # 1 bps per side
    desk.quote("BTCUSDT", 5_000_000)
    opened = desk.open("BTCUSDT", "buy", 10_000, 10)   # 0.02 BTC, notional 1000.00: 0.10
    desk.quote("BTCUSDT", 5_100_000)
    partial = desk.run(ClosePosition(account_id=1, position_id=opened.position_id, qty=1_000_000))
    rest = desk.run(ClosePosition(account_id=1, position_id=opened.position_id))

    charges = [e.free_delta for e in of_type(partial + rest, BalanceChanged) if e.kind == "commission"]
    assert charges == [-6, -6]                         # 510.00 × 1 bps = 5.1 cents, rounded up
    assert only(partial, PositionFees).commission == 5 + 6
    assert only(rest, PositionFees).commission == 5 + 6
    assert desk.engine.house_book()["commission"] == 22
    assert desk.engine.accounts[1].free == 100_000 - 22 + 2_000       # +20.00 pnl


def test_a_swap_is_charged_across_the_rollover_and_not_on_a_swap_free_account():
    for account_type, expected in (("raw", [-10]), ("raw_swap_free", [])):
        desk = Desk(account_type, 100_000, ts=DAY // 2)
        desk.quote("BTCUSDT", 5_000_000)
        opened = desk.open("BTCUSDT", "buy", 10_000, 10)           # notional 1000.00: 1 bps/day

        before = desk.run(Clock(), at=DAY - 1)
        after = desk.run(Clock(), at=DAY + 1)

        assert not of_type(before, BalanceChanged)
        assert [e.free_delta for e in of_type(after, BalanceChanged) if e.kind == "swap"] == expected
        assert desk.engine.positions[opened.position_id].swap == -sum(expected)


def test_isolated_type_keeps_per_position_margin_and_caps_leverage():
    desk = Desk("isolated", 100_000)
    desk.quote("BTCUSDT", 5_000_000)
    too_high = desk.run(PlaceOrder(account_id=1, symbol="BTCUSDT", side="buy", type="market", margin=10_000, leverage=21))
    opened = desk.open("BTCUSDT", "buy", 10_000, 10)
    assert only(too_high, OrderRejected).reason == "INVALID_LEVERAGE"
    assert opened.liquidation_price == 4_500_049       # the isolated rule: loss reaches 99.99 + a cent


def test_cross_accounts_refuse_add_margin_and_withdrawals_beyond_free_margin():
    desk = Desk("standard", 20_000)
    desk.quote("BTCUSDT", 5_000_000)
    opened = desk.open("BTCUSDT", "buy", 10_000, 100)
    desk.quote("BTCUSDT", 4_990_000)                   # −20.00: free margin 80.00
    assert only(desk.run(AddMargin(account_id=1, position_id=opened.position_id, amount=100)), CommandRejected).reason == "INVALID_COMMAND"
    assert only(desk.run(Withdraw(account_id=1, amount=9_000)), CommandRejected).reason == "INSUFFICIENT_MARGIN"
    assert of_type(desk.run(Deposit(account_id=1, amount=100)), BalanceChanged)


# --------------------------------------------------------------------------- properties


SYMBOLS = ("BTCUSDT", "ETHUSDT")
START = {"BTCUSDT": 5_000_000, "ETHUSDT": 250_000}


class BruteForceEngine:
    """The oracle: after every input, every cross account is settled, watched or not. (It wraps
    an engine rather than subclassing it: the compiled core's classes cannot be subclassed.)"""

    def __init__(self, config):
        self.engine = Engine(config)

    def submit(self, command, ts):
        engine = self.engine
        engine._dirty.update(a.id for a in engine.accounts.values() if a.is_cross)
        return engine.submit(command, ts)

    def state_hash(self):
        return self.engine.state_hash()


@st.composite
def cross_sessions(draw):
    types = ("standard", "tight", "raw", "raw_swap_free", "isolated")
    inputs = [OpenAccount(account_id=n, account_type=draw(st.sampled_from(types)),
                          initial_deposit=draw(st.integers(1_000, 100_000))) for n in range(1, 5)]
    prices = dict(START)
    inputs += [Quote(symbol=s, bid=p, ask=p + draw(st.integers(0, 50))) for s, p in prices.items()]
    for _ in range(draw(st.integers(5, 60))):
        kind = draw(st.sampled_from(("quote", "quote", "quote", "order", "order", "close", "deposit", "clock")))
        symbol = draw(st.sampled_from(SYMBOLS))
        if kind == "quote":
            prices[symbol] = max(1_000, prices[symbol] * draw(st.integers(9_700, 10_300)) // 10_000)
            inputs.append(Quote(symbol=symbol, bid=prices[symbol], ask=prices[symbol] + draw(st.integers(0, 50))))
        elif kind == "order":
            inputs.append(PlaceOrder(account_id=draw(st.integers(1, 4)), symbol=symbol,
                                     side=draw(st.sampled_from(("buy", "sell"))), type="market",
                                     margin=draw(st.integers(100, 30_000)), leverage=draw(st.sampled_from((1, 10, 20, 100)))))
        elif kind == "close":
            inputs.append(ClosePosition(account_id=draw(st.integers(1, 4)), position_id=draw(st.integers(1, 40)),
                                        qty=draw(st.one_of(st.none(), st.integers(1, 10**7)))))
        elif kind == "deposit":
            inputs.append(Deposit(account_id=draw(st.integers(1, 4)), amount=draw(st.integers(1, 5_000))))
        else:
            inputs.append(Clock())
    steps = [draw(st.integers(1, DAY // 3)) for _ in inputs]
    return inputs, steps


def _copy(command):
    return codec.from_wire(codec.to_wire(command))


def _no_cross_account_at_or_below_its_stop_out(engine: Engine) -> None:
    for account in engine.accounts.values():
        if account.is_cross and account.positions:
            equity = engine.cross_equity(account)
            assert equity * 100 > account.type.stop_out_pct * account.locked, account.id


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cross_sessions())
def test_indexed_margin_watches_equal_the_brute_force_oracle(session):
    inputs, steps = session
    indexed, oracle = Engine(CROSS_CONFIG), BruteForceEngine(CROSS_CONFIG)
    ts = 0
    for command, step in zip(inputs, steps):
        ts += step
        assert indexed.submit(_copy(command), ts) == oracle.submit(_copy(command), ts)
        check_all(indexed)
        _no_cross_account_at_or_below_its_stop_out(indexed)
    assert indexed.state_hash() == oracle.state_hash()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cross_sessions(), st.integers(0, 60))
def test_snapshot_and_tail_equal_the_full_run_with_cross_accounts(session, cut):
    inputs, steps = session
    full, ts = Engine(CROSS_CONFIG), 0
    stamps = []
    for command, step in zip(inputs, steps):
        ts += step
        stamps.append(ts)
        full.submit(_copy(command), ts)
    cut = min(cut, len(inputs))
    head = Engine(CROSS_CONFIG)
    for command, stamp in zip(inputs[:cut], stamps[:cut]):
        head.submit(_copy(command), stamp)
    restored = Engine.from_state(msgpack.unpackb(msgpack.packb(head.to_state(), use_bin_type=True), raw=False))
    for command, stamp in zip(inputs[cut:], stamps[cut:]):
        restored.submit(_copy(command), stamp)
    assert restored.state_hash() == full.state_hash()
    assert restored.rolling_hash == full.rolling_hash


def test_house_book_sources_add_up_to_the_house():
    desk = Desk("raw", 100_000)
    desk.quote("BTCUSDT", 5_000_000)
    opened = desk.open("BTCUSDT", "buy", 10_000, 10)
    desk.run(Clock(), at=DAY + 1)
    desk.quote("BTCUSDT", 4_900_000)
    desk.run(ClosePosition(account_id=1, position_id=opened.position_id))
    book = desk.engine.house_book()
    assert book["total"] == (book["trader_losses"] - book["trader_gains"] - book["losses_absorbed"]
                             + book["commission"] + book["swap"])
    assert desk.engine.net_exposure()["BTCUSDT"]["long_qty"] == 0


def test_a_journaled_change_of_account_types_applies_to_open_accounts():
    desk = Desk("tight", 30_000)
    stricter = [t.to_wire() for t in TYPES if t.name != "tight"] + [
        AccountType(name="tight", margin_call_pct=400, stop_out_pct=50).to_wire()]
    desk.quote("BTCUSDT", 5_000_000)
    desk.open("BTCUSDT", "buy", 10_000, 100)                    # equity 300.00 / used 100.00 = 300 %

    changed = desk.run(SetAccountTypes(account_types=stricter, rollover_ns=0))
    refused = desk.run(SetAccountTypes(account_types=[TYPES[0].to_wire()], rollover_ns=0))

    assert only(changed, AccountTypesChanged).names == [t[0] for t in stricter]
    assert only(changed, MarginCall).equity == 30_000           # 300 % is at or below the new 400 %
    assert "'tight'" in only(refused, CommandRejected).message
    assert desk.engine.config.account_type("tight").margin_call_pct == 400


def test_a_pending_entry_reserves_used_margin_and_pays_commission_when_it_fills():
    desk = Desk("raw", 100_000)                        # 1 bps per side
    desk.quote("BTCUSDT", 5_000_000)
    desk.run(PlaceOrder(account_id=1, symbol="BTCUSDT", side="buy", type="limit", margin=10_000,
                        leverage=10, price=4_900_000))
    assert desk.summary()["free_margin"] == 90_000     # the reservation is used margin

    filled = desk.quote("BTCUSDT", 4_900_000)          # 0.02040816 BTC at 49000.00

    opened = only(filled, PositionOpened)
    assert [e.free_delta for e in of_type(filled, BalanceChanged) if e.kind == "commission"] == [-10]
    assert desk.engine.positions[opened.position_id].commission == 10
    assert desk.summary()["free_margin"] == 90_000 - 10


def test_a_pending_entry_beyond_the_free_margin_is_refused():
    desk = Desk("standard", 20_000)
    desk.quote("BTCUSDT", 5_000_000)
    desk.open("BTCUSDT", "buy", 10_000, 100)
    desk.quote("BTCUSDT", 4_990_000)                   # −20.00: free margin 80.00

    events = desk.run(PlaceOrder(account_id=1, symbol="BTCUSDT", side="buy", type="limit", margin=9_000,
                                 leverage=1, price=4_000_000))

    rejected = only(events, OrderRejected)
    assert rejected.reason == "INSUFFICIENT_MARGIN"
    assert rejected.message == "free margin 80.00 is less than the margin 90.00"


def test_swap_rates_per_instrument_override_the_types_rates():
    config_types = core_config_from_mapping(
        {}, {"BTCUSDT": {}, "ETHUSDT": {}},
        {"rollover_utc": "21:00", "types": {"raw": {"swap_long_bps": "1", "swap_short_bps": "-0.5",
                                                    "swaps": {"ETHUSDT": ["2", "-1"]}}}})
    raw = config_types.account_type("raw")

    assert config_types.rollover_ns == 21 * 3600 * 10**9
    assert (raw.swap_ppm("BTCUSDT", True), raw.swap_ppm("BTCUSDT", False)) == (100, -50)
    assert (raw.swap_ppm("ETHUSDT", True), raw.swap_ppm("ETHUSDT", False)) == (200, -100)
    assert AccountType.from_wire(raw.to_wire()) == raw
    engine = Engine(config_types)
    engine.submit(OpenAccount(account_id=1, account_type="raw", initial_deposit=100_000), ts=DAY // 2)
    engine.submit(Quote(symbol="ETHUSDT", bid=250_000, ask=250_000))
    engine.submit(PlaceOrder(account_id=1, symbol="ETHUSDT", side="buy", type="market", margin=10_000, leverage=10))
    swapped = engine.submit(Clock(), ts=DAY + 22 * 3600 * 10**9)      # past two 21:00 UTC rollovers
    assert [e.free_delta for e in of_type(swapped, BalanceChanged)] == [-40]   # 2 × 1000.00 × 2 bps


@pytest.mark.parametrize("spec, field", [
    ({"margin_mode": "hedged"}, "margin_mode"),
    ({"stop_out_level": 70}, "stop_out_level"),
    ({"commission_bps": "0.001"}, "commission_bps"),
    ({"swaps": {"ETHUSDT": ["1"]}}, "swaps.ETHUSDT"),
    ({"margin_mode": "isolated", "commission_bps": "1"}, "margin_mode"),
])
def test_a_bad_account_type_names_its_field(spec, field):
    with pytest.raises(InvalidValue, match=field):
        core_config_from_mapping({}, {"BTCUSDT": {}}, {"types": {"raw": spec}})


def test_a_state_with_account_types_has_its_own_format_and_restores():
    desk = Desk("raw", 100_000)
    desk.quote("BTCUSDT", 5_000_000)
    desk.open("BTCUSDT", "buy", 10_000, 10)

    state = desk.engine.to_state()

    assert state[0] == 2 and Engine(CoreConfig(instruments=DEFAULT_INSTRUMENTS)).to_state()[0] == 1
    assert Engine.from_state(state).state_hash() == desk.engine.state_hash()
