"""Property tests of the core (DESIGN.md §2, §7): the stateful trading machine, and the rounding,
liquidation, parsing, codec and trigger-index laws it relies on.

Each property states an invariant against an independent reference: exact rationals
(``fractions.Fraction``) for rounding, brute-force scans for the trigger indexes, the codec's
inverse for the wire format.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exness_actors import codec
from exness_actors.commands import COMMAND_TYPES, ClosePosition, CreateAccount, Deposit, PlaceOrder, Quote
from exness_actors.engine import Engine
from exness_actors.errors import InvalidCommand, InvalidValue
from exness_actors.events import CommandRejected, QuoteRejected
from exness_actors.money import (
    format_fixed, liquidation_price, mark_up_ask, mark_up_bid, notional_cents, parse_fixed,
    pnl_cents, qty_for_margin, share_floor,
)
from exness_actors.instruments import MAX_SHARD, SHARD_ID_SPAN, CoreConfig, Instrument
from exness_actors.testing import (
    TradingMachine, assert_triggers_respected, check_all, command_strategies, core_configs, machine_config,
    price_paths, prices,
)
from exness_actors.triggers import NONE, TrailingBook, TriggerIndex

# --------------------------------------------------------------------------- the state machine

TestTrading = TradingMachine.TestCase
TestTrading.settings = settings(
    max_examples=60, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------- rounding

scales = st.integers(0, 12)
margins = st.integers(1, 10**9)
leverages = st.integers(1, 1000)
ticks = st.integers(1, 10**12)
quantities = st.integers(1, 10**15)


@given(margin=margins, leverage=leverages, price=ticks, price_decimals=scales, qty_decimals=scales)
def test_qty_for_margin_rounds_down(margin: int, leverage: int, price: int, price_decimals: int,
                                    qty_decimals: int) -> None:
    qty = qty_for_margin(margin, leverage, price, price_decimals, qty_decimals)
    # exact quantity in units: margin·L (cents) / (price (ticks) · 100 cents per unit of price)
    exact = Fraction(margin * leverage * 10 ** (price_decimals + qty_decimals), price * 100)
    assert qty <= exact < qty + 1
    # the exposure bought never costs more than margin·L
    assert notional_cents(qty, price, price_decimals, qty_decimals) <= margin * leverage


@given(is_long=st.booleans(), qty=quantities, open_price=ticks, close_price=ticks,
       price_decimals=scales, qty_decimals=scales)
def test_pnl_is_floored_to_the_cent(is_long: bool, qty: int, open_price: int, close_price: int,
                                    price_decimals: int, qty_decimals: int) -> None:
    pnl = pnl_cents(is_long, qty, open_price, close_price, price_decimals, qty_decimals)
    move = close_price - open_price if is_long else open_price - close_price
    exact = Fraction(qty * move * 100, 10 ** (price_decimals + qty_decimals))
    assert pnl <= exact < pnl + 1   # the trader never gains a fraction of a cent


@given(qty=quantities, open_price=ticks, close_price=ticks, price_decimals=scales, qty_decimals=scales)
def test_long_and_short_on_the_same_move_mirror_each_other(qty: int, open_price: int, close_price: int,
                                                           price_decimals: int, qty_decimals: int) -> None:
    long_pnl = pnl_cents(True, qty, open_price, close_price, price_decimals, qty_decimals)
    short_pnl = pnl_cents(False, qty, open_price, close_price, price_decimals, qty_decimals)
    assert long_pnl + short_pnl <= 0                  # together they never win from the house
    assert abs(abs(long_pnl) - abs(short_pnl)) <= 1   # and differ by at most the rounding cent


@given(raw=ticks, spread_bps=st.integers(0, 9_999))
def test_spread_markup_favours_the_house(raw: int, spread_bps: int) -> None:
    bid, ask = mark_up_bid(raw, spread_bps), mark_up_ask(raw, spread_bps)
    assert bid <= Fraction(raw * (10_000 - spread_bps), 10_000) < bid + 1
    assert ask - 1 < Fraction(raw * (10_000 + spread_bps), 10_000) <= ask


@given(amount=st.integers(0, 10**12), whole=st.integers(1, 10**12), data=st.data())
def test_share_floor_never_overpays(amount: int, whole: int, data: st.DataObject) -> None:
    part = data.draw(st.integers(0, whole))
    share = share_floor(amount, part, whole)
    assert share <= Fraction(amount * part, whole) < share + 1
    assert 0 <= share <= amount


# --------------------------------------------------------------------------- liquidation


@given(is_long=st.booleans(), qty=quantities, open_price=ticks, margin=margins,
       maintenance_bps=st.one_of(st.just(0), st.integers(1, 9_999)), price_decimals=scales,
       qty_decimals=scales)
def test_liquidation_fires_exactly_when_the_loss_reaches_the_threshold(
        is_long: bool, qty: int, open_price: int, margin: int, maintenance_bps: int,
        price_decimals: int, qty_decimals: int) -> None:
    liq = liquidation_price(is_long, qty, open_price, margin, maintenance_bps, price_decimals, qty_decimals)
    exact_threshold = Fraction(margin * (10_000 - maintenance_bps), 10_000)
    threshold = margin * (10_000 - maintenance_bps) // 10_000   # whole cents, as documented

    def loss(price: int) -> int:
        return -pnl_cents(is_long, qty, open_price, price, price_decimals, qty_decimals)

    before = liq + 1 if is_long else liq - 1
    assert loss(liq) >= threshold
    assert loss(liq) > exact_threshold - 1          # never a whole cent early
    assert loss(before) < threshold <= exact_threshold
    if maintenance_bps == 0:
        assert loss(liq) >= margin                  # the whole margin is gone exactly at liq


# --------------------------------------------------------------------------- parsing

@given(value=st.floats(allow_nan=True, allow_infinity=True), decimals=scales)
def test_parse_fixed_rejects_floats(value: float, decimals: int) -> None:
    with pytest.raises(InvalidValue):
        parse_fixed(value, decimals, field="amount", allow_zero=True, allow_negative=True)


@given(amount=st.integers(-(10**20), 10**20), decimals=scales, extra=st.integers(1, 3),
       last=st.integers(1, 9), as_decimal=st.booleans())
def test_parse_fixed_rejects_too_many_decimals(amount: int, decimals: int, extra: int, last: int,
                                               as_decimal: bool) -> None:
    text = format_fixed(amount, decimals)
    text += ("" if "." in text else ".") + "0" * (extra - 1) + str(last)
    with pytest.raises(InvalidValue):
        parse_fixed(Decimal(text) if as_decimal else text, decimals, field="price",
                    allow_zero=True, allow_negative=True)


@given(amount=st.integers(-(10**20), 10**20), decimals=scales, trailing_zeros=st.integers(0, 3),
       as_decimal=st.booleans())
def test_parse_fixed_round_trips_format_fixed(amount: int, decimals: int, trailing_zeros: int,
                                              as_decimal: bool) -> None:
    text = format_fixed(amount, decimals)
    if trailing_zeros:   # "1.500" is 1.50: zeros beyond the scale are harmless
        text += ("" if "." in text else ".") + "0" * trailing_zeros
    value = Decimal(text) if as_decimal else text
    assert parse_fixed(value, decimals, field="price", allow_zero=True, allow_negative=True) == amount
    if amount < 0:
        with pytest.raises(InvalidValue):
            parse_fixed(value, decimals, field="price", allow_zero=True)
    if amount == 0:
        with pytest.raises(InvalidValue):
            parse_fixed(value, decimals, field="price", allow_negative=True)


# --------------------------------------------------------------------------- codec

COMMAND_STRATEGIES = command_strategies(accounts=[1, 2], symbols=("BTCUSD", "XRPUSD"),
                                        reference_prices={"BTCUSD": 6_500_000, "XRPUSD": 5_000})


def test_every_command_type_has_a_strategy() -> None:
    assert set(COMMAND_STRATEGIES) == set(COMMAND_TYPES.values())


@pytest.mark.parametrize("command_type", list(COMMAND_TYPES.values()), ids=lambda cls: cls.__name__)
@given(data=st.data(), seq=st.integers(0, 2**63 - 1), ts=st.integers(0, 2**63 - 1))
def test_codec_round_trips_every_command(command_type: type, data: st.DataObject, seq: int, ts: int) -> None:
    command = data.draw(COMMAND_STRATEGIES[command_type])
    command.seq, command.ts = seq, ts
    assert type(command) is command_type
    decoded = codec.decode(codec.encode(command))
    assert type(decoded) is command_type and decoded == command
    assert codec.from_wire(codec.to_wire(command)) == command
    assert codec.from_wire(codec.unpack(codec.pack(codec.to_wire(command)))) == command


# --------------------------------------------------------------------------- quotes on any instrument

@given(config=core_configs(), data=st.data())
def test_any_price_path_on_any_instrument_keeps_the_book_sane(config: CoreConfig, data: st.DataObject) -> None:
    assert CoreConfig.from_wire(codec.unpack(codec.pack(config.to_wire()))) == config
    instrument = data.draw(st.sampled_from(config.instruments))
    engine = Engine(config)
    path = data.draw(price_paths(instrument.symbol, data.draw(prices(instrument)), max_size=20))
    for ts, quote in enumerate(path, start=1):
        raw_bid, raw_ask = quote.bid, quote.ask
        events = engine.submit(quote, ts=ts)
        refused = not 0 < raw_bid <= raw_ask or mark_up_bid(raw_bid, instrument.spread_bps) <= 0
        assert isinstance(events[0], QuoteRejected) == refused
        if not refused:
            expected = (mark_up_bid(raw_bid, instrument.spread_bps), mark_up_ask(raw_ask, instrument.spread_bps), ts)
            assert engine.quote(instrument.symbol) == expected
        check_all(engine)


# --------------------------------------------------------------------------- trigger indexes

@st.composite
def index_operations(draw):  # type: ignore[no-untyped-def]
    """A list of ("add", level, priority, id) / ("discard", id) / ("pop", price) operations."""
    size = draw(st.integers(0, 60))
    operations = []
    for _ in range(size):
        kind = draw(st.sampled_from(("add", "add", "add", "discard", "pop", "pop")))
        if kind == "add":
            operations.append(("add", draw(st.integers(1, 40)), draw(st.integers(0, 4)), draw(st.integers(1, 25))))
        elif kind == "discard":
            operations.append(("discard", draw(st.integers(1, 25))))
        else:
            operations.append(("pop", draw(st.integers(0, 41))))
    return operations


#: where ids start: unsharded, shard 18 and the last shard (its largest ids)
id_bases = st.sampled_from((0, 18 * SHARD_ID_SPAN, MAX_SHARD * SHARD_ID_SPAN + SHARD_ID_SPAN - 26))


@given(fires_on_fall=st.booleans(), operations=index_operations(), id_base=id_bases)
def test_trigger_index_pops_exactly_what_a_brute_force_scan_finds(fires_on_fall: bool, operations: list,
                                                                   id_base: int) -> None:
    index = TriggerIndex(fires_on_fall=fires_on_fall)
    model: dict[int, tuple[int, int]] = {}   # id -> (level, priority); one entry per id, as in the engine
    for operation in operations:
        if operation[0] == "add":
            _, level, priority, ident = operation
            ident += id_base
            if ident in model:
                continue
            index.add(level, priority, ident)
            model[ident] = (level, priority)
        elif operation[0] == "discard":
            ident = operation[1] + id_base
            level, priority = model.pop(ident, (99, 0))   # a missing entry: discard is a no-op
            index.discard(level, priority, ident)
        else:
            price = operation[1]
            crossed = {ident: entry for ident, entry in model.items()
                       if (price <= entry[0] if fires_on_fall else price >= entry[0])}
            assert index.crossed(price) == bool(crossed)
            out: list[tuple[int, int]] = []
            index.pop_crossed(price, out)
            assert sorted(out) == sorted((priority, ident) for ident, (_level, priority) in crossed.items())
            # stated order: the most deeply crossed level first
            depth = [(crossed[ident][0] if fires_on_fall else -crossed[ident][0]) for _priority, ident in out]
            assert depth == sorted(depth, reverse=True)
            for ident in crossed:
                del model[ident]
        assert sorted(index.items()) == sorted((level, priority, ident) for ident, (level, priority) in model.items())
        sign = 1 if fires_on_fall else -1
        assert index.best == max((sign * level for level, _priority in model.values()), default=NONE)
        assert len(index) == len(model)


@st.composite
def trailing_operations(draw):  # type: ignore[no-untyped-def]
    """("add", id, distance, peak) / ("discard", id) / ("price", price) operations."""
    size = draw(st.integers(0, 60))
    operations = []
    for _ in range(size):
        kind = draw(st.sampled_from(("add", "add", "discard", "price", "price", "price")))
        if kind == "add":
            operations.append(("add", draw(st.integers(1, 20)), draw(st.integers(1, 15)), draw(st.integers(-30, 60))))
        elif kind == "discard":
            operations.append(("discard", draw(st.integers(1, 20))))
        else:
            operations.append(("price", draw(st.integers(-30, 60))))
    return operations


@given(operations=trailing_operations())
def test_trailing_book_fires_exactly_what_a_brute_force_scan_finds(operations: list) -> None:
    book = TrailingBook()
    model: dict[int, list[int]] = {}   # id -> [distance, peak]
    for operation in operations:
        if operation[0] == "add":
            _, ident, distance, peak = operation
            if ident in model:
                continue
            book.add(ident, distance, peak)
            model[ident] = [distance, peak]
        elif operation[0] == "discard":
            ident = operation[1]
            distance = model.pop(ident, [1, 0])[0]
            book.discard(ident, distance)
        else:
            price = operation[1]
            for entry in model.values():
                entry[1] = max(entry[1], price)
            fired = {ident for ident, (distance, peak) in model.items() if price <= peak - distance}
            out: list[tuple[int, int]] = []
            book.on_price(price, out, 7)
            assert len(out) == len(set(out))
            assert {ident for _priority, ident in out} == fired
            assert all(priority == 7 for priority, _ident in out)
            # stated order: within a peak group the nearest stop (smallest distance) fires first
            for position, (_priority, ident) in enumerate(out):
                for _later_priority, later in out[position + 1:]:
                    if model[ident][1] == model[later][1]:
                        assert (model[ident][0], ident) <= (model[later][0], later)
            for ident in fired:
                del model[ident]
        assert len(book) == len(model)
        assert sorted(book.items()) == sorted((ident, distance, peak) for ident, (distance, peak) in model.items())
        for ident, (_distance, peak) in model.items():
            assert ident in book and book.peak_of(ident) == peak
        assert book.best_level == max((peak - distance for distance, peak in model.values()), default=NONE)
        assert book.min_peak == min((peak for _distance, peak in model.values()), default=-NONE)


# --------------------------------------------------------------------------- regressions found by these tests

@pytest.mark.parametrize("command", [
    Quote(symbol="BTCUSD", bid=10**20, ask=10**20),
    Deposit(account_id=1, amount=2**64),
], ids=["quote-above-2**64", "deposit-above-2**64"])
def test_values_the_codec_cannot_carry_are_refused_without_a_change(command) -> None:  # type: ignore[no-untyped-def]
    """A value the engine accepts must be encodable: its events go into the rolling hash and the
    journal. The engine once accepted prices up to 10**30 and unbounded amounts, mutated the
    state, advanced ``last_seq`` and only then failed with OverflowError in the codec."""
    engine = Engine(machine_config())
    engine.submit(CreateAccount(account_id=1, initial_deposit=100), ts=1)
    engine.submit(Quote(symbol="BTCUSD", bid=6_500_000, ask=6_500_000), ts=2)
    before, seq = engine.state_hash(), engine.last_seq
    try:
        events = engine.submit(command, ts=3)
    except InvalidCommand:
        assert (engine.state_hash(), engine.last_seq) == (before, seq)   # refused before any change
        return
    assert len(events) == 1 and isinstance(events[0], (QuoteRejected, CommandRejected))
    assert engine.books["BTCUSD"].bid != 10**20 and engine.accounts[1].free == 100
    codec.encode_many(events)
    engine.check_invariants()


def test_a_partial_close_never_leaves_the_rest_past_its_liquidation_price() -> None:
    """After a partial close the remainder's liquidation price is recomputed (floored margin
    share, ``T − 1`` cents in the formula) and can move past the quote just closed at. The
    engine once left such a remainder — its loss already its whole margin — open until a later
    quote crossed it again; now it must be liquidated at once (or the close refused)."""
    engine = Engine(CoreConfig(instruments=(Instrument(symbol="BTCUSD", price_decimals=2, qty_decimals=6),)))
    engine.submit(CreateAccount(account_id=1, initial_deposit=100_000), ts=1)
    engine.submit(Quote(symbol="BTCUSD", bid=6_500_000, ask=6_500_000), ts=2)
    engine.submit(PlaceOrder(account_id=1, symbol="BTCUSD", side="buy", type="market", margin=100,
                             leverage=10), ts=3)
    position = engine.positions[1]
    assert (position.qty, position.liquidation_price) == (153, 5_852_941)
    engine.submit(Quote(symbol="BTCUSD", bid=5_852_942, ask=5_852_942), ts=4)   # one tick above liq
    assert_triggers_respected(engine, "BTCUSD")

    # the remaining 82 units keep margin 54, whose liquidation price 5_853_658 is above the bid
    engine.submit(ClosePosition(account_id=1, position_id=1, qty=71), ts=5)

    check_all(engine)
    assert_triggers_respected(engine, "BTCUSD")
