"""Core tests of the broker's side (issue 13): operator commands and their audit trail, instrument
changes through replay and snapshots, balance adjustments, force closes, price alerts, the
dead-man switch and bulk cancels. Table-driven, Arrange/Act/Assert, from core_helpers' stubs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exness_actors import codec
from exness_actors.commands import (
    AdjustBalance, CancelAlert, CancelAllAfter, CancelOrders, Clock, CreateAccount, ForceClosePosition, HaltSymbol,
    PlaceAlert, Quote, ResumeSymbol, UpdateInstrument,
)
from exness_actors.engine import MAX_ALERTS_PER_ACCOUNT, STATE_FORMAT, STATE_FORMAT_BROKER, Engine
from exness_actors.events import (
    AlertCancelled, AlertPlaced, AlertTriggered, BalanceChanged, CommandRejected, DeadManSwitchFired,
    DeadManSwitchSet, DuplicateCommand, InstrumentUpdated, OperatorAction, OrderCancelled, OrderRejected,
    PositionClosed, PositionOpened, QuoteUpdated, SymbolHalted, SymbolResumed,
)
from exness_actors.money import mark_up_bid
from exness_actors.testing.invariants import copy_input, replay

from core_helpers import SECOND, SYMBOL, of_type, only
from core_helpers import Market as _Market

OPEN = 6_500_000
OPERATOR = dict(operator_id=7, reason="risk review")


class Market(_Market):
    """core_helpers' Market that also records each sequenced input and its events (for replay)."""

    def __init__(self, **kwargs: Any) -> None:
        self.inputs: list[Any] = []
        self.outputs: list[list[Any]] = []
        super().__init__(**kwargs)
        self.start_config = self.engine.config

    def run(self, command: Any, *, after: int = 1) -> list:
        events = super().run(command, after=after)
        self.inputs.append(copy_input(command))
        self.outputs.append(events)
        return events


def _replayed(market: Market) -> Engine:
    engine, outputs = replay(market.inputs, market.start_config)
    assert outputs == market.outputs
    assert engine.rolling_hash == market.engine.rolling_hash
    assert engine.state_hash() == market.engine.state_hash()
    return engine


def _restored(engine: Engine) -> Engine:
    return Engine.from_state(codec.unpack(codec.pack(engine.to_state())))


# --------------------------------------------------------------------------- halt / resume

def test_an_operator_halt_is_audited_and_a_legacy_halt_is_not():
    market = Market()
    market.quote(OPEN)
    events = market.run(HaltSymbol(symbol=SYMBOL, **OPERATOR))
    assert [type(e) for e in events] == [SymbolHalted, OperatorAction]
    action = events[1]
    assert (action.operator_id, action.action, action.account_id, action.target, action.reason) == \
        (7, "halt", None, SYMBOL, "risk review")
    assert only(market.order(), OrderRejected).reason == "MARKET_HALTED"
    assert [type(e) for e in market.run(ResumeSymbol(symbol=SYMBOL, **OPERATOR))] == [SymbolResumed, OperatorAction]
    assert [type(e) for e in market.run(HaltSymbol(symbol=SYMBOL))] == [SymbolHalted]


def test_a_halted_symbol_keeps_pending_entries_waiting_and_protective_triggers_firing():
    market = Market()
    market.quote(OPEN)
    position = market.open(stop_loss=6_400_000)
    entry = market.pending(type="limit", price=6_300_000)
    market.run(HaltSymbol(symbol=SYMBOL, **OPERATOR))
    events = market.quote(6_290_000)
    assert only(events, PositionClosed).position_id == position.position_id
    assert entry.order_id in market.engine.orders   # waits for the resume
    market.run(ResumeSymbol(symbol=SYMBOL, **OPERATOR))
    assert of_type(market.quote(6_290_000), PositionOpened)


@pytest.mark.parametrize("fields, reason", [
    (dict(operator_id=7, reason=""), "INVALID_REASON"),
    (dict(operator_id=7, reason="   "), "INVALID_REASON"),
    (dict(operator_id=7, reason="x" * 201), "INVALID_REASON"),
    (dict(operator_id=0, reason="why"), "INVALID_COMMAND"),
    (dict(operator_id=-3, reason="why"), "INVALID_COMMAND"),
])
def test_operator_commands_need_an_operator_and_a_reason(fields: dict, reason: str):
    market = Market()
    market.quote(OPEN)
    position = market.open()
    commands: list[Any] = [
        HaltSymbol(symbol=SYMBOL, **fields), ResumeSymbol(symbol=SYMBOL, **fields),
        UpdateInstrument(symbol=SYMBOL, changes=[["spread_bps", 5]], **fields),
        AdjustBalance(account_id=1, amount=100, **fields),
        ForceClosePosition(position_id=position.position_id, **fields),
    ]
    config = market.engine.config
    for command in commands:
        assert only(market.run(command), CommandRejected).reason == reason
        assert not market.engine.books[SYMBOL].halted and market.engine.config is config
        assert market.engine.positions and market.account.free == 1_000_000 - 10_000


# --------------------------------------------------------------------------- instrument changes

def test_an_instrument_change_takes_effect_at_its_seq():
    market = Market()
    market.quote(OPEN)
    events = market.run(UpdateInstrument(symbol=SYMBOL, changes=[["spread_bps", 10], ["max_leverage", 5]],
                                         **OPERATOR))
    assert only(events, InstrumentUpdated).changes == [["spread_bps", 10], ["max_leverage", 5]]
    action = only(events, OperatorAction)
    assert action.action == "update_instrument" and json.loads(action.detail) == {"spread_bps": 10, "max_leverage": 5}
    assert market.engine.instruments[SYMBOL].spread_bps == 10
    assert market.engine.books[SYMBOL].instrument is market.engine.instruments[SYMBOL]
    assert market.engine.config.instruments[0].max_leverage == 5
    assert only(market.order(leverage=10), OrderRejected).reason == "INVALID_LEVERAGE"
    quote = only(market.quote(OPEN), QuoteUpdated)
    assert (quote.bid, quote.ask) == (OPEN * 9_990 // 10_000, OPEN * 10_010 // 10_000)


@pytest.mark.parametrize("changes, fragment", [
    ([["price_decimals", 3]], "price_decimals"),
    ([["spread_bps", -1]], "spread_bps"),
    ([["spread_bps", 10_000]], "spread_bps"),
    ([["max_leverage", 0]], "max_leverage"),
    ([["min_qty", 0]], "min_qty"),
    ([["min_qty", 1 << 63]], "min_qty"),
    ([["spread_bps", "5"]], "spread_bps"),
    ([["spread_bps", 5], ["spread_bps", 6]], "spread_bps"),
    ([["commission_ppm", 1_000_000]], "commission_ppm"),
    ([], "changes"),
    ("spread_bps=5", "changes"),
])
def test_a_bad_instrument_change_is_refused_naming_the_field(changes: Any, fragment: str):
    market = Market()
    before = market.engine.instruments[SYMBOL]
    rejected = only(market.run(UpdateInstrument(symbol=SYMBOL, changes=changes, **OPERATOR)), CommandRejected)
    assert rejected.reason == "INVALID_COMMAND" and fragment in rejected.message
    assert market.engine.instruments[SYMBOL] is before


def test_an_unknown_symbol_cannot_be_changed():
    market = Market()
    assert only(market.run(UpdateInstrument(symbol="NOPE", changes=[["spread_bps", 1]], **OPERATOR)),
                CommandRejected).reason == "UNKNOWN_SYMBOL"


def test_instrument_changes_replay_and_restore_to_the_same_hashes():
    market = Market()
    market.quote(OPEN)
    market.open()
    market.run(UpdateInstrument(symbol=SYMBOL, changes=[["spread_bps", 7], ["min_qty", 500], ["maintenance_bps", 100],
                                                        ["commission_ppm", 35], ["swap_long_ppm", 50]], **OPERATOR))
    market.quote(OPEN + 1_000)
    market.open(leverage=20)
    restored = _restored(market.engine)
    assert restored.state_hash() == market.engine.state_hash()
    assert restored.instruments[SYMBOL].commission_ppm == 35
    _replayed(market)
    # the fee overrides can be set back to the account types' rates
    market.run(UpdateInstrument(symbol=SYMBOL, changes=[["commission_ppm", None], ["swap_long_ppm", None]],
                                **OPERATOR))
    assert not market.engine.instruments[SYMBOL].has_fee_overrides
    assert len(market.engine.instruments[SYMBOL].to_wire()) == 7


# --------------------------------------------------------------------------- balance adjustments

def test_an_adjustment_funds_or_debits_the_free_balance_and_is_audited():
    market = Market()
    credit = market.run(AdjustBalance(account_id=1, amount=2_500, idempotency_key="k1", **OPERATOR))
    line = only(credit, BalanceChanged)
    assert (line.kind, line.free_delta, line.free, line.ref) == ("operator_adjustment", 2_500, 1_002_500, "k1")
    action = only(credit, OperatorAction)
    assert (action.action, action.account_id, action.target) == ("adjust_balance", 1, "1")
    assert json.loads(action.detail) == {"amount": "25.00", "idempotency_key": "k1"}
    debit = market.run(AdjustBalance(account_id=1, amount=-1_002_500, **OPERATOR))
    assert only(debit, BalanceChanged).free == 0
    market.engine.check_invariants()


def test_a_repeated_adjustment_key_applies_once():
    market = Market()
    market.run(AdjustBalance(account_id=1, amount=2_500, idempotency_key="k1", **OPERATOR))
    again = market.run(AdjustBalance(account_id=1, amount=2_500, idempotency_key="k1", **OPERATOR))
    assert only(again, DuplicateCommand).key == "k1"
    assert market.account.free == 1_002_500


@pytest.mark.parametrize("account_id, amount, reason", [
    (1, 0, "INVALID_AMOUNT"),
    (1, -1_000_001, "INSUFFICIENT_BALANCE"),
    (1, 10**13 + 1, "INVALID_AMOUNT"),
    (1, "100", "INVALID_AMOUNT"),
    (2, 100, "UNKNOWN_ACCOUNT"),
])
def test_a_bad_adjustment_is_refused(account_id: int, amount: Any, reason: str):
    market = Market()
    assert only(market.run(AdjustBalance(account_id=account_id, amount=amount, **OPERATOR)),
                CommandRejected).reason == reason
    assert market.account.free == 1_000_000


# --------------------------------------------------------------------------- force close

def test_an_operator_force_closes_a_whole_position_at_the_quote():
    market = Market()
    market.quote(OPEN)
    position = market.open()
    market.quote(OPEN + 10_000)
    events = market.run(ForceClosePosition(position_id=position.position_id, **OPERATOR))
    closed = only(events, PositionClosed)
    assert (closed.reason, closed.remaining_qty, closed.price) == ("operator", 0, OPEN + 10_000)
    action = only(events, OperatorAction)
    assert (action.action, action.account_id, action.target) == ("close_position", 1, str(position.position_id))
    assert json.loads(action.detail)["pnl"] == f"{closed.pnl / 100:.2f}"
    assert events.index(action) > events.index(closed)
    assert only(market.run(ForceClosePosition(position_id=position.position_id, **OPERATOR)),
                CommandRejected).reason == "UNKNOWN_POSITION"


def test_a_force_close_on_a_stale_quote_is_refused():
    market = Market()
    market.quote(OPEN)
    position = market.open()
    rejected = only(market.run(ForceClosePosition(position_id=position.position_id, **OPERATOR), after=6 * SECOND),
                    CommandRejected)
    assert rejected.reason == "STALE_QUOTE"


# --------------------------------------------------------------------------- price alerts

def _alert(market: Market, **fields: Any) -> list:
    defaults: dict[str, Any] = dict(account_id=1, symbol=SYMBOL, condition="above", price=OPEN + 10_000)
    defaults.update(fields)
    return market.run(PlaceAlert(**defaults))


@pytest.mark.parametrize("condition, price, quotes, fires_at", [
    ("above", OPEN + 100, [OPEN + 99, OPEN + 100], OPEN + 100),
    ("above", OPEN + 100, [OPEN + 50, OPEN + 5_000], OPEN + 5_000),
    ("below", OPEN - 100, [OPEN - 99, OPEN - 100], OPEN - 100),
    ("below", OPEN - 100, [OPEN - 5_000], OPEN - 5_000),
])
def test_an_alert_fires_once_when_the_bid_reaches_its_price(condition: str, price: int, quotes: list[int],
                                                            fires_at: int):
    market = Market()
    market.quote(OPEN)
    placed = only(_alert(market, condition=condition, price=price, note="look"), AlertPlaced)
    for bid in quotes[:-1]:
        assert not of_type(market.quote(bid, bid + 50), AlertTriggered)
    fired = only(market.quote(fires_at, fires_at + 50), AlertTriggered)
    assert (fired.alert_id, fired.condition, fired.price, fired.quote_price, fired.note) == \
        (placed.alert_id, condition, price, fires_at, "look")
    assert not of_type(market.quote(fires_at, fires_at + 50), AlertTriggered)   # once
    assert not market.engine.alerts and not market.account.alerts
    market.engine.check_invariants()


def test_alerts_watch_the_marked_up_bid():
    market = Market(spread_bps=10)
    market.quote(OPEN)
    _alert(market, price=OPEN)    # the marked-up bid is below the raw one
    fired = only(market.quote(OPEN * 10_000 // 9_990 + 1), AlertTriggered)
    assert fired.quote_price >= OPEN


@pytest.mark.parametrize("fields, reason", [
    (dict(condition="above", price=OPEN), "INVALID_PRICE"),      # would fire at once
    (dict(condition="below", price=OPEN + 1), "INVALID_PRICE"),
    (dict(condition="crosses"), "INVALID_COMMAND"),
    (dict(price=0), "INVALID_PRICE"),
    (dict(price="6600000"), "INVALID_PRICE"),
    (dict(symbol="NOPE"), "UNKNOWN_SYMBOL"),
    (dict(symbol="ETHUSDT"), "NO_QUOTE"),
    (dict(note="x" * 201), "INVALID_COMMAND"),
    (dict(expires_at=1), "INVALID_EXPIRY"),
    (dict(account_id=9), "UNKNOWN_ACCOUNT"),
    (dict(client_alert_id="c" * 65), "INVALID_COMMAND"),
])
def test_a_bad_alert_is_refused(fields: dict, reason: str):
    market = Market()
    market.quote(OPEN)
    assert only(_alert(market, **fields), CommandRejected).reason == reason
    assert not market.engine.alerts


def test_an_account_holds_at_most_the_limit_of_alerts():
    market = Market()
    market.quote(OPEN)
    for i in range(MAX_ALERTS_PER_ACCOUNT):
        only(_alert(market, price=OPEN + 1 + i), AlertPlaced)
    assert only(_alert(market), CommandRejected).reason == "TOO_MANY_ALERTS"
    alert_id = next(iter(market.engine.alerts))
    only(market.run(CancelAlert(account_id=1, alert_id=alert_id)), AlertCancelled)
    only(_alert(market), AlertPlaced)


def test_an_alert_expires_and_is_cancelled_once():
    market = Market()
    market.quote(OPEN)
    placed = only(_alert(market, expires_at=market.ts + 10 * SECOND), AlertPlaced)
    assert not of_type(market.run(Clock(), after=5 * SECOND), AlertCancelled)
    expired = only(market.run(Clock(), after=5 * SECOND), AlertCancelled)
    assert (expired.alert_id, expired.reason) == (placed.alert_id, "expired")
    assert not of_type(market.quote(OPEN + 20_000), AlertTriggered)
    assert only(market.run(CancelAlert(account_id=1, alert_id=placed.alert_id)), CommandRejected).reason == "UNKNOWN_ALERT"


def test_a_cancelled_alert_never_fires_and_another_account_cannot_cancel_it():
    market = Market()
    market.run(CreateAccount(account_id=2, initial_deposit=0))
    market.quote(OPEN)
    placed = only(_alert(market), AlertPlaced)
    assert only(market.run(CancelAlert(account_id=2, alert_id=placed.alert_id)), CommandRejected).reason == "UNKNOWN_ALERT"
    cancelled = only(market.run(CancelAlert(account_id=1, alert_id=placed.alert_id)), AlertCancelled)
    assert cancelled.reason == "cancelled"
    assert not of_type(market.quote(OPEN + 20_000), AlertTriggered)


def test_a_repeated_client_alert_id_places_one_alert():
    market = Market()
    market.quote(OPEN)
    placed = only(_alert(market, client_alert_id="a-1"), AlertPlaced)
    again = only(_alert(market, client_alert_id="a-1"), DuplicateCommand)
    assert (again.key, again.order_id) == ("a-1", placed.alert_id)
    assert len(market.engine.alerts) == 1


def test_alerts_fire_after_the_triggers_of_the_same_quote_in_id_order():
    market = Market()
    market.quote(OPEN)
    market.open(take_profit=OPEN + 100)
    first = only(_alert(market, price=OPEN + 200), AlertPlaced)
    second = only(_alert(market, price=OPEN + 100), AlertPlaced)
    events = market.quote(OPEN + 300)
    assert [type(e) for e in events if isinstance(e, (PositionClosed, AlertTriggered))] == \
        [PositionClosed, AlertTriggered, AlertTriggered]
    assert [e.alert_id for e in of_type(events, AlertTriggered)] == [first.alert_id, second.alert_id]


def test_alerts_survive_a_snapshot_and_a_replay():
    market = Market()
    market.quote(OPEN)
    _alert(market, expires_at=market.ts + 100 * SECOND)
    _alert(market, condition="below", price=OPEN - 500)
    restored = _restored(market.engine)
    assert restored.to_state()[0] == STATE_FORMAT_BROKER
    assert restored.state_hash() == market.engine.state_hash()
    restored.check_invariants()
    quote = dict(symbol=SYMBOL, bid=OPEN - 600, ask=OPEN - 500)
    live = market.run(Quote(**quote))
    assert restored.submit(Quote(**quote), ts=market.ts) == live
    assert of_type(live, AlertTriggered)
    _replayed(market)


def test_a_state_without_alerts_or_switches_keeps_its_old_layout():
    market = Market()
    market.quote(OPEN)
    market.open()
    assert market.engine.to_state()[0] == STATE_FORMAT and len(market.engine.to_state()) == 14


# --------------------------------------------------------------------------- dead-man switch

def test_the_dead_man_switch_cancels_every_pending_order_when_not_refreshed():
    market = Market()
    market.quote(OPEN)
    first = market.pending(type="limit", price=6_000_000)
    second = market.pending(type="stop", price=7_000_000)
    armed = only(market.run(CancelAllAfter(account_id=1, timeout_ns=10 * SECOND)), DeadManSwitchSet)
    assert armed.deadline_ns == market.ts + 10 * SECOND
    market.run(CancelAllAfter(account_id=1, timeout_ns=10 * SECOND), after=9 * SECOND)   # refreshed
    assert not of_type(market.run(Clock(), after=9 * SECOND), DeadManSwitchFired)
    events = market.run(Clock(), after=1 * SECOND)
    fired = only(events, DeadManSwitchFired)
    assert fired.cancelled == 2
    cancelled = of_type(events, OrderCancelled)
    assert [(c.order_id, c.reason) for c in cancelled] == [(first.order_id, "dead_man_switch"),
                                                           (second.order_id, "dead_man_switch")]
    assert events.index(fired) < events.index(cancelled[0])
    assert market.account.locked == 0 and not market.engine.dead_man
    assert not of_type(market.run(Clock(), after=100 * SECOND), DeadManSwitchFired)   # disarmed once fired
    market.engine.check_invariants()


def test_a_disarmed_switch_never_fires():
    market = Market()
    market.quote(OPEN)
    market.pending(type="limit", price=6_000_000)
    market.run(CancelAllAfter(account_id=1, timeout_ns=SECOND))
    assert only(market.run(CancelAllAfter(account_id=1, timeout_ns=0)), DeadManSwitchSet).deadline_ns == 0
    assert not of_type(market.run(Clock(), after=10 * SECOND), DeadManSwitchFired)
    assert market.engine.orders


def test_a_late_refresh_fires_first_and_then_arms_again():
    market = Market()
    market.quote(OPEN)
    market.pending(type="limit", price=6_000_000)
    market.run(CancelAllAfter(account_id=1, timeout_ns=SECOND))
    events = market.run(CancelAllAfter(account_id=1, timeout_ns=SECOND), after=2 * SECOND)
    assert [type(e) for e in events][:1] == [DeadManSwitchFired]
    assert market.engine.reply_start == events.index(only(events, DeadManSwitchSet))
    assert market.engine.dead_man == {1: market.ts + SECOND}


@pytest.mark.parametrize("timeout", [-1, 86_400 * SECOND + 1, "10"])
def test_a_bad_timeout_is_refused(timeout: Any):
    market = Market()
    assert only(market.run(CancelAllAfter(account_id=1, timeout_ns=timeout)), CommandRejected).reason == "INVALID_COMMAND"


def test_an_armed_switch_survives_a_snapshot_and_fires_at_the_same_seq_after_replay():
    market = Market()
    market.quote(OPEN)
    market.pending(type="limit", price=6_000_000)
    market.run(CancelAllAfter(account_id=1, timeout_ns=5 * SECOND))
    restored = _restored(market.engine)
    assert restored.state_hash() == market.engine.state_hash()
    live = market.run(Clock(), after=5 * SECOND)
    assert restored.submit(Clock(), ts=market.ts) == live
    assert of_type(live, DeadManSwitchFired)
    _replayed(market)


# --------------------------------------------------------------------------- bulk cancel

def test_cancel_orders_cancels_the_accounts_pending_ones_and_skips_the_rest():
    market = Market()
    market.run(CreateAccount(account_id=2, initial_deposit=100_000))
    market.quote(OPEN)
    mine = market.pending(type="limit", price=6_000_000)
    theirs = market.pending(account_id=2, type="limit", price=6_000_000)
    events = market.run(CancelOrders(account_id=1, order_ids=[mine.order_id, theirs.order_id, 999, mine.order_id],
                                     reason="cancel_on_disconnect"))
    assert [(e.order_id, e.reason) for e in of_type(events, OrderCancelled)] == [(mine.order_id, "cancel_on_disconnect")]
    assert theirs.order_id in market.engine.orders
    assert market.run(CancelOrders(account_id=1, order_ids=[mine.order_id], reason="cancel_on_disconnect")) == []


@pytest.mark.parametrize("order_ids, reason", [([1, "2"], "user"), ("1", "user"), ([1], "dead_man_switch")])
def test_a_malformed_bulk_cancel_is_refused(order_ids: Any, reason: str):
    market = Market()
    assert only(market.run(CancelOrders(account_id=1, order_ids=order_ids, reason=reason)),
                CommandRejected).reason == "INVALID_COMMAND"


# --------------------------------------------------------------------------- wire compatibility

def test_a_halt_without_an_operator_encodes_to_its_old_bytes():
    legacy = HaltSymbol(symbol=SYMBOL, seq=3, ts=4)
    assert codec.encode(legacy) == codec.pack([12, SYMBOL, 3, 4])
    assert codec.decode(codec.pack([12, SYMBOL, 3, 4])) == legacy
    operator = ResumeSymbol(symbol=SYMBOL, seq=3, ts=4, operator_id=7, reason="why")
    assert codec.decode(codec.encode(operator)) == operator
    assert codec.to_wire(operator) == [13, SYMBOL, 3, 4, 7, "why"]


# --------------------------------------------------------------------------- property: alerts

@settings(max_examples=150, deadline=None)
@given(start=st.integers(6_000_000, 7_000_000), spread=st.integers(0, 20),
       moves=st.lists(st.integers(-30_000, 30_000), min_size=1, max_size=40),
       alerts=st.lists(st.tuples(st.booleans(), st.integers(-60_000, 60_000), st.none() | st.integers(1, 40)),
                       min_size=1, max_size=12))
def test_an_alert_fires_exactly_when_the_bid_crosses_its_price_and_exactly_once(
        start: int, spread: int, moves: list[int], alerts: list[tuple[bool, int, Any]]) -> None:
    """Against a brute-force model: each alert fires on the first quote whose marked-up bid is at
    or past its price (above: bid >= price, below: bid <= price), exactly once, unless it expired
    (expires after N quotes) first; an alert the bid already passed at placement is refused."""
    market = Market(spread_bps=spread)
    market.quote(start, start + 100)
    bid0 = mark_up_bid(start, spread)
    expected: dict[int, Any] = {}
    for index, (above, offset, lifetime) in enumerate(alerts):
        price = max(1, bid0 + offset)
        expires_at = market.ts + 1 + lifetime * SECOND if lifetime is not None else None
        events = market.run(PlaceAlert(account_id=1, symbol=SYMBOL, condition="above" if above else "below",
                                       price=price, expires_at=expires_at))
        if (bid0 >= price) if above else (bid0 <= price):
            assert only(events, CommandRejected).reason == "INVALID_PRICE"
            continue
        expected[only(events, AlertPlaced).alert_id] = (above, price, expires_at)
    fired: dict[int, int] = {}
    raw = start
    for step, move in enumerate(moves):
        raw = max(1, raw + move)
        events = market.quote(raw, raw + 100, after=SECOND)
        bid = mark_up_bid(raw, spread)
        now = market.ts
        for alert_id, (above, price, expires_at) in expected.items():
            if alert_id in fired or (expires_at is not None and expires_at <= now):
                continue
            if (bid >= price) if above else (bid <= price):
                fired[alert_id] = step
        got = {e.alert_id: e.quote_price for e in of_type(events, AlertTriggered)}
        assert set(got) == {alert_id for alert_id, at in fired.items() if at == step}
        assert all(quote_price == bid for quote_price in got.values())
    triggered = [e.alert_id for events in market.outputs for e in of_type(events, AlertTriggered)]
    assert sorted(triggered) == sorted(fired)   # exactly once each
    assert set(market.engine.alerts) == {a for a, (_x, _p, e) in expected.items()
                                         if a not in fired and (e is None or e > market.ts)}
    market.engine.check_invariants()
    _replayed(market)


def test_a_journaled_operator_halt_is_skipped_by_its_seq_not_by_its_operator_id() -> None:
    """An operator's halt carries ``operator_id, reason`` after ``seq, ts`` on the wire: skipping a
    covered prefix must read its seq, or replay from the journal drops the halt once the cursor
    passes the operator's id (it failed with "input out of sequence")."""
    from exness_actors import codec
    from exness_actors.commands import HaltSymbol, Quote
    from exness_actors.replay import decode_record

    halt = HaltSymbol(symbol="BTCUSDT", operator_id=3, reason="maintenance", seq=9, ts=1)
    payload = codec.pack(codec.to_wire(halt))
    assert decode_record(payload, after_seq=8) == halt          # operator id 3 < 8: still applied
    assert decode_record(payload, after_seq=9) is None
    legacy = codec.pack(codec.to_wire(HaltSymbol(symbol="BTCUSDT", seq=4, ts=1)))
    assert decode_record(legacy, after_seq=3) is not None and decode_record(legacy, after_seq=4) is None
    quote = codec.pack(codec.to_wire(Quote("BTCUSDT", 1, 2, seq=7, ts=1)))
    assert decode_record(quote, after_seq=6) is not None and decode_record(quote, after_seq=7) is None


def test_the_covered_prefix_search_reads_an_operator_halt_by_its_seq() -> None:
    """``first_uncovered`` bisects the journal by each record's seq: an operator's halt carries
    ``operator_id, reason`` after ``seq, ts``, which must not be read as its position."""
    from exness_actors import codec
    from exness_actors.commands import HaltSymbol, Quote
    from exness_actors.replay import first_uncovered

    records = [codec.pack(codec.to_wire(Quote("BTCUSDT", 1, 2, seq=1, ts=1))),
               codec.pack(codec.to_wire(HaltSymbol(symbol="BTCUSDT", operator_id=99, reason="r", seq=2, ts=1))),
               codec.pack(codec.to_wire(Quote("BTCUSDT", 1, 2, seq=3, ts=1)))]
    assert [first_uncovered(records, seq) for seq in (0, 1, 2, 3)] == [0, 1, 2, 3]
