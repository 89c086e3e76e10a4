"""Table tests of the trading core: the reference facts of DESIGN.md §2 and each rule."""

from __future__ import annotations

import pytest

from core_helpers import SECOND, SYMBOL, Market, make_engine, of_type, only
from exness_actors.commands import (
    AddMargin, CancelOrder, Clock, ClosePosition, CreateAccount, Deposit, HaltSymbol,
    ModifyOrder, ModifyPosition, PlaceOrder, Quote, ResumeSymbol, Withdraw,
)
from exness_actors.engine import Engine
from exness_actors.errors import InvalidCommand
from exness_actors.events import (
    BalanceChanged, CommandRejected, DuplicateCommand, OrderAccepted, OrderCancelled,
    OrderModified, OrderRejected, OrderTriggered, PositionClosed, PositionOpened, PositionUpdated,
    QuoteRejected, QuoteUpdated,
)
from exness_actors.money import pnl_cents
from exness_actors.triggers import ID_BITS

OPEN = 6_500_000   # 65000.00
MARGIN = 10_000    # 100.00


# --------------------------------------------------------------------------- reference facts

def test_reference_long_l10_closed_10_percent_up_makes_100():
    market = Market()
    market.quote(OPEN)
    position = market.open(leverage=10)
    market.quote(7_150_000)
    closed = only(market.run(ClosePosition(account_id=1, position_id=position.position_id)), PositionClosed)
    assert closed.pnl == 9_999           # ≈ +100.00; the floored qty costs a cent
    assert closed.credit == MARGIN + 9_999


def test_reference_long_l10_10_percent_down_loses_the_margin_by_liquidation():
    market = Market()
    market.quote(OPEN)
    position = market.open(leverage=10)
    assert pnl_cents(True, position.qty, OPEN, 5_850_000, 2, 8) == -MARGIN
    closed = only(market.quote(5_850_000), PositionClosed)
    assert closed.reason == "liquidation" and closed.pnl == -MARGIN and closed.credit == 0


def test_reference_liquidation_at_l10_is_58500():
    market = Market()
    market.quote(OPEN)
    position = market.open(leverage=10)
    # 58500.64: the first price at which the (house-rounded) loss reaches the 100.00 margin.
    assert 5_850_000 <= position.liquidation_price <= 5_850_100
    loss_at_liq = -pnl_cents(True, position.qty, OPEN, position.liquidation_price, 2, 8)
    loss_one_tick_above = -pnl_cents(True, position.qty, OPEN, position.liquidation_price + 1, 2, 8)
    assert loss_at_liq >= MARGIN > loss_one_tick_above


def test_reference_liquidation_at_l100_is_64350():
    market = Market()
    market.quote(OPEN)
    position = market.open(leverage=100)
    assert 6_435_000 <= position.liquidation_price <= 6_435_100
    events = market.quote(position.liquidation_price)
    closed = only(events, PositionClosed)
    assert closed.reason == "liquidation"
    assert closed.credit == 0
    assert market.engine.positions == {}


def test_one_tick_above_liquidation_survives():
    market = Market()
    market.quote(OPEN)
    position = market.open(leverage=100)
    assert of_type(market.quote(position.liquidation_price + 1), PositionClosed) == []
    assert position.position_id in market.engine.positions


@pytest.mark.parametrize("leverage", [1, 2, 5, 10, 25, 50, 100])
@pytest.mark.parametrize("side", ["buy", "sell"])
def test_unchanged_price_gives_zero_pnl(leverage, side):
    market = Market()
    market.quote(OPEN)
    position = market.open(side=side, leverage=leverage)
    closed = only(market.run(ClosePosition(account_id=1, position_id=position.position_id)), PositionClosed)
    assert closed.pnl == 0
    assert closed.credit == MARGIN
    assert market.account.free == 1_000_000


@pytest.mark.parametrize("new_price", [6_600_000, 6_400_000, 6_512_345])
def test_long_and_short_on_the_same_move_have_opposite_pnl(new_price):
    market = Market()
    market.quote(OPEN)
    long = market.open(side="buy", leverage=10)
    short = market.open(side="sell", leverage=10)
    market.quote(new_price)
    long_pnl = only(market.run(ClosePosition(account_id=1, position_id=long.position_id)), PositionClosed).pnl
    short_pnl = only(market.run(ClosePosition(account_id=1, position_id=short.position_id)), PositionClosed).pnl
    assert long_pnl == -short_pnl or long_pnl == -short_pnl - 1 or long_pnl == -short_pnl + 1
    assert (long_pnl > 0) == (new_price > OPEN)
    assert long_pnl + short_pnl <= 0       # rounding never pays the trader


def test_gap_through_liquidation_caps_the_loss_at_the_margin():
    market = Market()
    market.quote(OPEN)
    position = market.open(leverage=50)
    free_before = market.account.free
    house_before = market.engine.house
    events = market.quote(5_000_000)          # a 23% gap straight through the liquidation price
    closed = only(events, PositionClosed)
    assert closed.reason == "liquidation"
    assert closed.price == 5_000_000
    assert closed.pnl < -MARGIN               # the market moved far more than the margin covers
    assert closed.credit == 0                 # negative balance protection
    assert market.account.free == free_before
    assert market.account.locked == 0
    assert market.engine.house - house_before == MARGIN   # the house keeps the margin, absorbs the rest
    market.engine.check_invariants()


def test_short_liquidation_fires_on_the_ask():
    market = Market()
    market.quote(OPEN)
    position = market.open(side="sell", leverage=100)
    assert 6_564_900 <= position.liquidation_price <= 6_565_000
    assert of_type(market.quote(position.liquidation_price - 1), PositionClosed) == []
    closed = only(market.quote(position.liquidation_price), PositionClosed)
    assert closed.reason == "liquidation"


def test_maintenance_ratio_liquidates_earlier():
    plain, kept = Market(), Market(maintenance_bps=5_000)
    for market in (plain, kept):
        market.quote(OPEN)
    liq_plain = plain.open(leverage=10).liquidation_price
    liq_kept = kept.open(leverage=10).liquidation_price
    assert liq_kept > liq_plain                      # a long with mm 50% fires sooner
    closed = only(kept.quote(liq_kept), PositionClosed)
    assert closed.credit > 0                         # half the margin comes back


# --------------------------------------------------------------------------- quotes

def test_spread_markup_rounds_in_the_house_favour():
    market = Market(spread_bps=3)
    updated = only(market.quote(1_000_001, 1_000_001), QuoteUpdated)
    # 1_000_001 * 0.9997 = 999_700.9997 -> 999_700 ; 1_000_001 * 1.0003 = 1_000_301.0003 -> 1_000_302
    assert (updated.bid, updated.ask) == (999_700, 1_000_302)


@pytest.mark.parametrize("bid, ask, reason", [
    (101, 100, "CROSSED"), (0, 100, "NON_POSITIVE"), (-5, 100, "NON_POSITIVE"), (100, 0, "NON_POSITIVE"),
])
def test_bad_quotes_are_rejected_without_state_change(bid, ask, reason):
    market = Market()
    market.quote(OPEN)
    rejected = only(market.quote(bid, ask), QuoteRejected)
    assert rejected.reason == reason
    assert market.engine.quote(SYMBOL)[:2] == (OPEN, OPEN)
    assert market.engine.quotes_rejected == 1


def test_unknown_symbol_quote_is_rejected():
    market = Market()
    assert only(market.quote(100, symbol="NOPE"), QuoteRejected).reason == "UNKNOWN_SYMBOL"


def test_stale_quote_blocks_market_orders_and_closes():
    market = Market()
    market.quote(OPEN)
    position = market.open()
    market.run(Clock(), after=6 * SECOND)
    assert only(market.order(), OrderRejected).reason == "STALE_QUOTE"
    rejected = only(market.run(ClosePosition(account_id=1, position_id=position.position_id)), CommandRejected)
    assert rejected.reason == "STALE_QUOTE"
    market.quote(OPEN)
    assert of_type(market.order(), PositionOpened)


# --------------------------------------------------------------------------- market orders

def test_market_buy_locks_margin_and_opens_at_the_ask():
    market = Market(spread_bps=2)
    market.quote(OPEN)
    ask = market.engine.quote(SYMBOL)[1]
    events = market.order(side="buy", leverage=20)
    assert only(events, OrderAccepted).status == "filled"
    opened = only(events, PositionOpened)
    assert opened.open_price == ask
    assert opened.qty == MARGIN * 20 * 10**10 // (100 * ask)
    assert (market.account.free, market.account.locked) == (1_000_000 - MARGIN, MARGIN)
    change = only(events, BalanceChanged)
    assert (change.free_delta, change.locked_delta) == (-MARGIN, MARGIN)


@pytest.mark.parametrize("fields, reason", [
    (dict(account_id=99), "UNKNOWN_ACCOUNT"),
    (dict(symbol="DOGEUSDT"), "UNKNOWN_SYMBOL"),
    (dict(leverage=0), "INVALID_LEVERAGE"),
    (dict(leverage=101), "INVALID_LEVERAGE"),
    (dict(margin=0), "INVALID_MARGIN"),
    (dict(margin=-5), "INVALID_MARGIN"),
    (dict(margin=2_000_000), "INSUFFICIENT_BALANCE"),
    (dict(margin=1, leverage=1), "SIZE_TOO_SMALL"),
    (dict(take_profit=6_400_000), "INVALID_TPSL"),
    (dict(stop_loss=6_600_000), "INVALID_TPSL"),
    (dict(side="sell", take_profit=6_600_000), "INVALID_TPSL"),
    (dict(side="sell", stop_loss=6_400_000), "INVALID_TPSL"),
    (dict(trailing_stop=0), "INVALID_TPSL"),
    (dict(slippage_bps=10, expected_price=6_400_000), "SLIPPAGE_EXCEEDED"),
    (dict(side="sell", slippage_bps=10, expected_price=6_600_000), "SLIPPAGE_EXCEEDED"),
    (dict(slippage_bps=10), "INVALID_PRICE"),
    (dict(side="up"), "INVALID_COMMAND"),
    (dict(type="iceberg"), "INVALID_COMMAND"),
    (dict(client_order_id="x" * 65), "INVALID_COMMAND"),
    (dict(type="limit"), "INVALID_PRICE"),
    (dict(type="limit", price=6_600_000), "INVALID_PRICE"),       # buy limit above the ask
    (dict(type="stop", price=6_400_000), "INVALID_PRICE"),        # buy stop below the ask
    (dict(side="sell", type="limit", price=6_400_000), "INVALID_PRICE"),
    (dict(side="sell", type="stop", price=6_600_000), "INVALID_PRICE"),
    (dict(type="limit", price=6_000_000, expires_at=1), "INVALID_EXPIRY"),
])
def test_order_rejections(fields, reason):
    market = Market(min_qty=1_000)
    market.quote(OPEN)
    before = (market.account.free, market.account.locked, market.engine.next_order_id)
    events = market.order(**fields)
    assert len(events) == 1
    assert only(events, OrderRejected).reason == reason
    assert (market.account.free, market.account.locked, market.engine.next_order_id) == before
    assert market.engine.positions == {} and market.engine.orders == {}


def test_no_quote_rejects_orders():
    market = Market()
    assert only(market.order(), OrderRejected).reason == "NO_QUOTE"


def test_slippage_within_tolerance_fills():
    market = Market()
    market.quote(OPEN)
    assert of_type(market.order(slippage_bps=10, expected_price=6_495_000), PositionOpened)


def test_leverage_that_would_liquidate_at_once_is_rejected():
    market = Market(spread_bps=200)     # 2% spread each side: L100 would be under water at once
    market.quote(OPEN)
    assert only(market.order(leverage=100), OrderRejected).reason == "WOULD_LIQUIDATE"


def test_halted_symbol_refuses_orders_but_closes_and_triggers_work():
    market = Market()
    market.quote(OPEN)
    position = market.open(stop_loss=6_400_000)
    other = market.open()
    market.run(HaltSymbol(symbol=SYMBOL))
    assert only(market.order(), OrderRejected).reason == "MARKET_HALTED"
    assert only(market.quote(6_390_000), PositionClosed).reason == "stop_loss"
    assert position.position_id not in market.engine.positions
    assert of_type(market.run(ClosePosition(account_id=1, position_id=other.position_id)), PositionClosed)
    market.run(ResumeSymbol(symbol=SYMBOL))
    assert of_type(market.order(), PositionOpened)


# --------------------------------------------------------------------------- pending orders

@pytest.mark.parametrize("side, type_, price, trigger_quote, fill", [
    ("buy", "limit", 6_400_000, 6_390_000, 6_390_000),
    ("buy", "stop", 6_600_000, 6_610_000, 6_610_000),
    ("sell", "limit", 6_600_000, 6_650_000, 6_650_000),
    ("sell", "stop", 6_400_000, 6_300_000, 6_300_000),
])
def test_pending_entries_trigger_at_the_crossing_quote(side, type_, price, trigger_quote, fill):
    market = Market()
    market.quote(OPEN)
    accepted = market.pending(side=side, type=type_, price=price)
    assert market.account.locked == MARGIN                     # reserved at placement
    assert of_type(market.quote((OPEN + price) // 2), OrderTriggered) == []
    events = market.quote(trigger_quote)
    triggered = only(events, OrderTriggered)
    assert triggered.order_id == accepted.order_id and triggered.price == fill
    opened = only(events, PositionOpened)
    assert opened.open_price == fill and opened.side == side
    assert market.engine.orders == {}
    assert market.account.locked == MARGIN
    market.engine.check_invariants()


def test_cancel_releases_the_reserved_margin_and_cannot_repeat():
    market = Market()
    market.quote(OPEN)
    accepted = market.pending(type="limit", price=6_000_000)
    events = market.run(CancelOrder(account_id=1, order_id=accepted.order_id))
    assert only(events, OrderCancelled).reason == "user"
    assert (market.account.free, market.account.locked) == (1_000_000, 0)
    again = only(market.run(CancelOrder(account_id=1, order_id=accepted.order_id)), CommandRejected)
    assert again.reason == "ORDER_NOT_PENDING"
    assert only(market.run(CancelOrder(account_id=1, order_id=12345)), CommandRejected).reason == "UNKNOWN_ORDER"


def test_another_accounts_order_is_unknown():
    market = Market()
    market.run(CreateAccount(account_id=2, initial_deposit=100_000))
    market.quote(OPEN)
    accepted = market.pending(type="limit", price=6_000_000)
    rejected = only(market.run(CancelOrder(account_id=2, order_id=accepted.order_id)), CommandRejected)
    assert rejected.reason == "UNKNOWN_ORDER"
    assert accepted.order_id in market.engine.orders


def test_orders_expire_on_clock_and_on_any_later_input():
    market = Market()
    market.quote(OPEN)
    first = market.pending(type="limit", price=6_000_000, expires_at=market.ts + 10 * SECOND)
    second = market.pending(type="limit", price=6_000_000, expires_at=market.ts + 20 * SECOND)
    events = market.run(Clock(), after=11 * SECOND)
    assert only(events, OrderCancelled).order_id == first.order_id
    assert market.engine.reply_start == len(events)
    events = market.run(Deposit(account_id=1, amount=100), after=10 * SECOND)
    cancelled = only(events, OrderCancelled)
    assert cancelled.order_id == second.order_id and cancelled.reason == "expired"
    assert isinstance(events[market.engine.reply_start], BalanceChanged)
    assert market.account.locked == 0


def test_modify_order_moves_its_trigger():
    market = Market()
    market.quote(OPEN)
    accepted = market.pending(type="limit", price=6_000_000)
    events = market.run(ModifyOrder(account_id=1, order_id=accepted.order_id, price=6_400_000,
                                    stop_loss=6_300_000))
    modified = only(events, OrderModified)
    assert modified.price == 6_400_000 and modified.stop_loss == 6_300_000
    assert of_type(market.quote(6_390_000), OrderTriggered)
    rejected = only(market.run(ModifyOrder(account_id=1, order_id=accepted.order_id, price=1)), CommandRejected)
    assert rejected.reason == "ORDER_NOT_PENDING"


def test_modify_order_to_an_immediate_price_is_rejected():
    market = Market()
    market.quote(OPEN)
    accepted = market.pending(type="limit", price=6_000_000)
    rejected = only(market.run(ModifyOrder(account_id=1, order_id=accepted.order_id, price=6_600_000)), CommandRejected)
    assert rejected.reason == "INVALID_PRICE"
    assert market.engine.orders[accepted.order_id].price == 6_000_000


def test_triggered_entry_past_its_own_stop_loss_closes_at_once():
    market = Market()
    market.quote(OPEN)
    market.pending(type="stop", price=6_600_000, stop_loss=6_550_000)
    events = market.quote(6_540_000, 6_700_000)     # ask gaps over the stop, bid is below the SL
    assert of_type(events, PositionOpened)
    assert only(events, PositionClosed).reason == "stop_loss"
    assert market.engine.positions == {}
    market.engine.check_invariants()


def test_halted_symbol_keeps_pending_entries_waiting():
    market = Market()
    market.quote(OPEN)
    market.pending(type="limit", price=6_400_000)
    market.run(HaltSymbol(symbol=SYMBOL))
    assert of_type(market.quote(6_300_000), OrderTriggered) == []
    market.run(ResumeSymbol(symbol=SYMBOL))
    assert of_type(market.quote(6_300_000), OrderTriggered)


# --------------------------------------------------------------------------- TP / SL / trailing

@pytest.mark.parametrize("side, fields, quote, reason", [
    ("buy", dict(take_profit=6_600_000), 6_600_000, "take_profit"),
    ("buy", dict(stop_loss=6_400_000), 6_400_000, "stop_loss"),
    ("sell", dict(take_profit=6_400_000), 6_400_000, "take_profit"),
    ("sell", dict(stop_loss=6_600_000), 6_600_000, "stop_loss"),
])
def test_tp_and_sl_fire_when_crossed(side, fields, quote, reason):
    market = Market()
    market.quote(OPEN)
    market.open(side=side, **fields)
    one_short = quote - 1 if quote > OPEN else quote + 1
    assert of_type(market.quote(one_short), PositionClosed) == []
    closed = only(market.quote(quote), PositionClosed)
    assert closed.reason == reason and closed.price == quote


def test_trailing_stop_follows_the_peak():
    market = Market()
    market.quote(OPEN)
    position = market.open(trailing_stop=100_000)       # 1000.00 behind the best bid
    market.quote(6_800_000)
    market.quote(6_700_000)                              # 6_800_000 - 100_000 = 6_700_000: fires
    assert position.position_id not in market.engine.positions


def test_trailing_stop_short_follows_the_trough():
    market = Market()
    market.quote(OPEN)
    position = market.open(side="sell", trailing_stop=100_000)
    market.quote(6_200_000)
    assert market.engine.trailing_level(market.engine.positions[position.position_id]) == 6_300_000
    assert of_type(market.quote(6_299_999), PositionClosed) == []
    assert only(market.quote(6_300_000), PositionClosed).reason == "trailing_stop"


def test_processing_order_within_one_quote_is_liquidation_sl_trailing_tp_entry():
    market = Market(deposit=10_000_000)
    market.quote(OPEN)
    ids = [market.open(leverage=100).position_id,                     # liquidation ~64350
           market.open(leverage=1, stop_loss=6_450_000).position_id,   # stop loss
           market.open(leverage=1, trailing_stop=10_000).position_id]  # trailing 6_490_000
    entry = market.pending(type="limit", price=6_460_000).order_id
    events = market.quote(6_000_000)
    reasons = [(e.position_id, e.reason) for e in of_type(events, PositionClosed)]
    assert reasons[:3] == [(ids[0], "liquidation"), (ids[1], "stop_loss"), (ids[2], "trailing_stop")]
    assert events.index(only(events, OrderTriggered)) > events.index(of_type(events, PositionClosed)[2])
    assert only(events, OrderTriggered).order_id == entry


def test_modify_position_sets_and_removes_tpsl():
    market = Market()
    market.quote(OPEN)
    position = market.open()
    pid = position.position_id
    updated = only(market.run(ModifyPosition(account_id=1, position_id=pid, take_profit=6_700_000,
                                             stop_loss=6_300_000)), PositionUpdated)
    assert (updated.take_profit, updated.stop_loss) == (6_700_000, 6_300_000)
    assert only(market.run(ModifyPosition(account_id=1, position_id=pid, stop_loss=6_600_000)),
                CommandRejected).reason == "INVALID_TPSL"
    only(market.run(ModifyPosition(account_id=1, position_id=pid, take_profit=0)), PositionUpdated)
    assert market.engine.positions[pid].take_profit is None
    assert of_type(market.quote(6_800_000), PositionClosed) == []
    market.engine.check_invariants()


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_a_stop_loss_at_or_beyond_the_liquidation_price_is_rejected_when_placed(side):
    market = Market()
    market.quote(OPEN)
    liq = market.open(side=side, leverage=100).liquidation_price          # same order, same liq
    beyond, inside = (liq, liq + 1) if side == "buy" else (liq, liq - 1)
    rejected = only(market.order(side=side, leverage=100, stop_loss=beyond), OrderRejected)
    assert rejected.reason == "INVALID_TPSL" and "liquidation" in rejected.message
    assert only(market.order(side=side, leverage=100, stop_loss=inside), PositionOpened).stop_loss == inside


@pytest.mark.parametrize("side, type_, price", [("buy", "limit", 6_000_000), ("sell", "limit", 7_000_000),
                                                 ("buy", "stop", 7_000_000), ("sell", "stop", 6_000_000)])
def test_a_pending_order_with_a_stop_loss_beyond_its_liquidation_price_is_rejected(side, type_, price):
    market = Market()
    market.quote(OPEN)
    beyond = price * 98 // 100 if side == "buy" else price * 102 // 100   # 2 % away at leverage 100
    rejected = only(market.order(side=side, type=type_, price=price, leverage=100, stop_loss=beyond),
                    OrderRejected)
    assert rejected.reason == "INVALID_TPSL" and "liquidation" in rejected.message
    order = market.pending(side=side, type=type_, price=price, leverage=100)
    modified = only(market.run(ModifyOrder(account_id=1, order_id=order.order_id, stop_loss=beyond)),
                    CommandRejected)
    assert modified.reason == "INVALID_TPSL" and "liquidation" in modified.message


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_modify_position_rejects_a_stop_loss_beyond_the_liquidation_price(side):
    market = Market()
    market.quote(OPEN)
    position = market.open(side=side, leverage=100)
    liq = position.liquidation_price
    beyond = liq - 1 if side == "buy" else liq + 1
    rejected = only(market.run(ModifyPosition(account_id=1, position_id=position.position_id, stop_loss=beyond)),
                    CommandRejected)
    assert rejected.reason == "INVALID_TPSL" and "liquidation" in rejected.message
    assert market.engine.positions[position.position_id].stop_loss is None


def test_a_gap_fill_that_puts_the_stop_loss_past_liquidation_drops_the_stop_loss():
    market = Market()
    market.quote(OPEN)
    # a buy stop at 66000 with leverage 100 liquidates near 65340; its stop-loss 65400 is valid there
    market.pending(type="stop", price=6_600_000, leverage=100, stop_loss=6_540_000)
    events = market.quote(6_700_000)                       # a gap: filled at 67000, liq near 66330
    opened = only(events, PositionOpened)
    assert opened.open_price == 6_700_000 and opened.liquidation_price > 6_540_000
    assert opened.stop_loss is None
    market.engine.check_invariants()


def test_a_partial_close_that_moves_liquidation_past_the_stop_loss_drops_the_stop_loss():
    market = Market()
    market.quote(OPEN)
    position = market.open(margin=10_002, leverage=100, stop_loss=6_435_010)
    assert position.liquidation_price == 6_435_006
    events = market.run(ClosePosition(account_id=1, position_id=position.position_id, qty=7_693_846))
    updated = only(events, PositionUpdated)
    assert updated.liquidation_price == 6_435_012     # the floored margin share moved it up 6 ticks
    assert updated.stop_loss is None and market.engine.positions[position.position_id].stop_loss is None
    market.engine.check_invariants()
    assert only(market.quote(6_435_012), PositionClosed).reason == "liquidation"


# --------------------------------------------------------------------------- closes and margin

def test_partial_close_releases_a_proportional_margin():
    market = Market()
    market.quote(OPEN)
    position = market.open(leverage=10)
    half = position.qty // 2
    market.quote(6_600_000)
    events = market.run(ClosePosition(account_id=1, position_id=position.position_id, qty=half))
    closed = only(events, PositionClosed)
    assert closed.qty == half and closed.remaining_qty == position.qty - half
    assert closed.margin == MARGIN * half // position.qty
    assert closed.pnl == pnl_cents(True, half, OPEN, 6_600_000, 2, 8)
    updated = only(events, PositionUpdated)
    assert updated.cause == "partial_close" and updated.margin == MARGIN - closed.margin
    assert market.account.locked == MARGIN - closed.margin
    market.engine.check_invariants()


@pytest.mark.parametrize("qty, reason", [(0, "INVALID_QTY"), (-1, "INVALID_QTY"), (10**12, "INVALID_QTY")])
def test_close_rejections(qty, reason):
    market = Market()
    market.quote(OPEN)
    position = market.open()
    rejected = only(market.run(ClosePosition(account_id=1, position_id=position.position_id, qty=qty)), CommandRejected)
    assert rejected.reason == reason


def test_closing_someone_elses_position_is_unknown():
    market = Market()
    market.run(CreateAccount(account_id=2, initial_deposit=100_000))
    market.quote(OPEN)
    position = market.open()
    rejected = only(market.run(ClosePosition(account_id=2, position_id=position.position_id)), CommandRejected)
    assert rejected.reason == "UNKNOWN_POSITION"


def test_add_margin_moves_the_liquidation_price_away():
    market = Market()
    market.quote(OPEN)
    position = market.open(leverage=100)
    events = market.run(AddMargin(account_id=1, position_id=position.position_id, amount=MARGIN))
    updated = only(events, PositionUpdated)
    assert updated.margin == 2 * MARGIN
    assert updated.liquidation_price < position.liquidation_price
    assert of_type(market.quote(position.liquidation_price), PositionClosed) == []
    assert only(market.run(AddMargin(account_id=1, position_id=position.position_id, amount=10**9)),
                CommandRejected).reason == "INSUFFICIENT_BALANCE"
    market.engine.check_invariants()


# --------------------------------------------------------------------------- accounts, idempotency

def test_deposit_withdraw_and_their_rejections():
    market = Market(deposit=0)
    assert only(market.run(Deposit(account_id=1, amount=500)), BalanceChanged).free == 500
    assert only(market.run(Withdraw(account_id=1, amount=600)), CommandRejected).reason == "INSUFFICIENT_BALANCE"
    assert only(market.run(Withdraw(account_id=1, amount=0)), CommandRejected).reason == "INVALID_AMOUNT"
    assert only(market.run(Deposit(account_id=9, amount=1)), CommandRejected).reason == "UNKNOWN_ACCOUNT"
    assert only(market.run(Withdraw(account_id=1, amount=200)), BalanceChanged).free == 300
    assert only(market.run(CreateAccount(account_id=1)), CommandRejected).reason == "ACCOUNT_EXISTS"


def test_repeated_idempotency_key_moves_money_once():
    market = Market(deposit=0)
    market.run(Deposit(account_id=1, amount=500, idempotency_key="dep-1"))
    duplicate = only(market.run(Deposit(account_id=1, amount=500, idempotency_key="dep-1")), DuplicateCommand)
    assert duplicate.key == "dep-1"
    assert market.account.free == 500


def test_repeated_client_order_id_returns_the_original_and_creates_nothing():
    market = Market()
    market.quote(OPEN)
    first = market.order(client_order_id="abc")
    order_id = only(first, OrderAccepted).order_id
    again = market.order(client_order_id="abc", margin=20_000)
    assert len(again) == 1
    duplicate = only(again, DuplicateCommand)
    assert (duplicate.order_id, duplicate.reason) == (order_id, None)
    assert len(market.engine.positions) == 1
    rejected_first = market.order(client_order_id="def", leverage=1000)
    rejected_again = only(market.order(client_order_id="def"), DuplicateCommand)
    assert rejected_again.reason == only(rejected_first, OrderRejected).reason == "INVALID_LEVERAGE"


@pytest.mark.parametrize("condition, reason", [
    ("no quote yet", "NO_QUOTE"), ("stale quote", "STALE_QUOTE"), ("halted", "MARKET_HALTED")])
def test_a_transient_rejection_is_not_the_remembered_outcome_so_a_retry_can_fill(condition, reason):
    market = Market()
    if condition != "no quote yet":
        market.quote(OPEN)
    if condition == "stale quote":
        market.run(Clock(), after=6 * SECOND)
    if condition == "halted":
        market.run(HaltSymbol(symbol=SYMBOL))
    assert only(market.order(client_order_id="retry-me"), OrderRejected).reason == reason
    market.run(ResumeSymbol(symbol=SYMBOL))
    market.quote(OPEN)
    filled = only(market.order(client_order_id="retry-me"), OrderAccepted)
    duplicate = only(market.order(client_order_id="retry-me"), DuplicateCommand)
    assert (duplicate.order_id, duplicate.reason) == (filled.order_id, None)
    assert len(market.engine.positions) == 1
    market.engine.check_invariants()


def test_a_retried_transient_rejection_counts_in_the_window_from_its_last_attempt():
    market = Market(window=2)
    market.order(client_order_id="a")                     # NO_QUOTE
    market.quote(OPEN)
    market.order(client_order_id="b")
    market.order(client_order_id="a")                     # filled: now the newest key
    market.order(client_order_id="c")                     # evicts "b", not "a"
    assert list(market.account.recent_keys) == ["o:a", "o:c"]


def test_idempotency_window_is_bounded():
    market = Market(window=2)
    market.quote(OPEN)
    for key in ("a", "b", "c"):
        market.order(client_order_id=key)
    assert of_type(market.order(client_order_id="a"), PositionOpened)   # "a" fell out of the window
    assert of_type(market.order(client_order_id="c"), DuplicateCommand)


# --------------------------------------------------------------------------- determinism, state

def _script(market: Market) -> None:
    market.quote(OPEN)
    market.open(leverage=20, take_profit=6_700_000, trailing_stop=50_000)
    market.open(side="sell", leverage=5, stop_loss=6_600_000)
    market.pending(type="limit", price=6_450_000, expires_at=market.ts + SECOND)
    market.quote(6_550_000)
    market.quote(6_440_000)
    market.run(Clock(), after=2 * SECOND)


def test_same_inputs_give_same_events_and_hash():
    first, second = Market(), Market()
    _script(first)
    _script(second)
    assert first.engine.state_hash() == second.engine.state_hash()
    assert first.engine.rolling_hash == second.engine.rolling_hash


def test_state_round_trip_through_msgpack_keeps_the_hash():
    from exness_actors import codec
    market = Market()
    _script(market)
    restored = Engine.from_state(codec.unpack(codec.pack(market.engine.to_state())))
    assert restored.state_hash() == market.engine.state_hash()
    restored.check_invariants()
    follow = Quote(symbol=SYMBOL, bid=6_000_000, ask=6_000_000)
    follow_copy = Quote(symbol=SYMBOL, bid=6_000_000, ask=6_000_000)
    assert market.engine.submit(follow, ts=market.ts + 1) == restored.submit(follow_copy, ts=market.ts + 1)
    assert restored.state_hash() == market.engine.state_hash()


def test_out_of_sequence_input_is_refused():
    engine = make_engine()
    with pytest.raises(InvalidCommand):
        engine.apply(Quote(symbol=SYMBOL, bid=1, ask=1, seq=5, ts=1))


def test_each_command_gets_exactly_one_outcome():
    market = Market()
    market.quote(OPEN)
    for events in (market.order(), market.order(leverage=0),
                   market.order(type="limit", price=6_000_000)):
        outcomes = of_type(events, OrderAccepted) + of_type(events, OrderRejected) + of_type(events, DuplicateCommand)
        assert len(outcomes) == 1


def test_account_summary():
    market = Market()
    market.quote(OPEN)
    market.open(leverage=10)
    market.quote(6_600_000)
    summary = market.engine.account_summary(1)
    assert summary["locked"] == MARGIN
    assert summary["unrealized_pnl"] == pnl_cents(True, market.engine.positions[1].qty, OPEN, 6_600_000, 2, 8)
    assert summary["equity"] == 1_000_000 + summary["unrealized_pnl"]
    assert summary["free_margin"] == 1_000_000 - MARGIN
    assert market.engine.account_summary(42) is None


def test_place_order_with_float_fields_is_rejected_not_crashed():
    market = Market()
    market.quote(OPEN)
    events = market.run(PlaceOrder(account_id=1, symbol=SYMBOL, side="buy", type="market",
                                   margin=100.0, leverage=10))  # type: ignore[arg-type]
    assert only(events, OrderRejected).reason == "INVALID_MARGIN"


# ------------------------------------------------------------------ engine shards (split mode)

def test_a_shard_numbers_orders_and_positions_from_its_id_base():
    from exness_actors.instruments import MAX_SHARD, SHARD_ID_SPAN
    from exness_actors.errors import InvalidValue

    base_config = make_engine().config
    assert base_config.for_shard(0) == base_config           # shard 0 is the unsharded engine
    shard = base_config.for_shard(3)
    assert shard.id_base == 3 * SHARD_ID_SPAN
    market = Market(Engine(shard))
    market.quote(6_000_000)
    opened = market.open()
    assert opened.position_id == opened.order_id == 3 * SHARD_ID_SPAN + 1
    pending = market.pending(type="limit", price=5_000_000)
    assert pending.order_id == 3 * SHARD_ID_SPAN + 2
    # the base travels with the config: a snapshot restores it, the wire keeps old states unchanged
    restored = Engine.from_state(market.engine.to_state())
    assert restored.config.id_base == shard.id_base
    assert restored.next_order_id == market.engine.next_order_id
    assert len(make_engine(hash_format=1).config.to_wire()) == 3 and shard.to_wire()[3] == shard.id_base
    assert type(base_config).from_wire(shard.to_wire()) == shard
    # every id stays exact as a JavaScript number, and fits the trigger indexes' id field
    assert (base_config.for_shard(MAX_SHARD).id_base + SHARD_ID_SPAN - 1) < 2**53
    assert base_config.for_shard(MAX_SHARD).id_base + SHARD_ID_SPAN < 2**ID_BITS
    for bad in (-1, MAX_SHARD + 1, "1"):
        with pytest.raises(InvalidValue):
            base_config.for_shard(bad)
    with pytest.raises(InvalidValue):
        type(base_config)(instruments=base_config.instruments, id_base=-5)


@pytest.mark.parametrize("shard", [17, 18, 100, 9006])
@pytest.mark.parametrize("side, crash", [("buy", 5_000_000), ("sell", 8_000_000)])
def test_every_shard_fires_its_liquidations_and_stop_losses_by_their_own_ids(shard, side, crash):
    market = Market(Engine(make_engine().config.for_shard(shard)))
    market.quote(OPEN)
    stop_loss = 6_400_000 if side == "buy" else 6_600_000
    liquidated = market.open(side=side, leverage=100)
    stopped = market.open(side=side, leverage=1, stop_loss=stop_loss)
    closed = of_type(market.quote(crash), PositionClosed)
    assert [(c.position_id, c.reason) for c in closed] == [
        (liquidated.position_id, "liquidation"), (stopped.position_id, "stop_loss")]
    assert market.engine.positions == {}
    market.engine.check_invariants()
