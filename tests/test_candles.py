"""Candles: the pure builder (tables + a property) and the candles actor (pytest-trio)."""

from __future__ import annotations

import functools
from datetime import datetime, timezone

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.history import candles as candles_actor
from actors.config import load_config
from actors.engine.messages import EventBatch
from actors.store.sqlite import SqliteStore
from exness_actors.candles import (
    INTERVAL_NAMES, INTERVALS, MINUTE_NS, WEEK_OFFSET_NS, Candle, CandleBuilder, aggregate,
    bucket_start,
)
from exness_actors.events import BalanceChanged, QuoteUpdated

SECOND = 1_000_000_000
MINUTE = MINUTE_NS
HOUR = 60 * MINUTE
DAY = 24 * HOUR
BTC, ETH = "BTCUSDT", "ETHUSDT"


def utc(*fields: int) -> int:
    """ns since the epoch of a UTC date-time."""
    return int(datetime(*fields, tzinfo=timezone.utc).timestamp()) * SECOND


T0 = utc(2024, 1, 3, 12, 0)   # a Wednesday


def row(candle: Candle) -> tuple:
    return (candle.symbol, candle.interval, *candle.as_tuple(), candle.closed)


def feed(builder: CandleBuilder, quotes: list[tuple[str, int, int]]) -> list[Candle]:
    closed: list[Candle] = []
    for symbol, bid, ts in quotes:
        closed.extend(builder.on_quote(symbol, bid, ts))
    return closed


# ------------------------------------------------------------------ bucket alignment

@pytest.mark.parametrize(("ts", "interval", "expected"), [
    (utc(2024, 1, 3, 12, 34, 56), "1m", utc(2024, 1, 3, 12, 34)),
    (utc(2024, 1, 3, 12, 34, 56), "5m", utc(2024, 1, 3, 12, 30)),
    (utc(2024, 1, 3, 12, 34, 56), "15m", utc(2024, 1, 3, 12, 30)),
    (utc(2024, 1, 3, 12, 44, 59), "30m", utc(2024, 1, 3, 12, 30)),
    (utc(2024, 1, 3, 12, 34, 56), "1h", utc(2024, 1, 3, 12, 0)),
    (utc(2024, 1, 3, 11, 59, 59), "4h", utc(2024, 1, 3, 8, 0)),
    (utc(2024, 1, 3, 23, 59, 59), "1d", utc(2024, 1, 3)),
    # weeks open on Monday 00:00 UTC: 2024-01-01 was a Monday
    (utc(2024, 1, 3, 12, 34, 56), "1w", utc(2024, 1, 1)),
    (utc(2024, 1, 1), "1w", utc(2024, 1, 1)),
    (utc(2023, 12, 31, 23, 59, 59), "1w", utc(2023, 12, 25)),
    (utc(2024, 1, 7, 23, 59, 59), "1w", utc(2024, 1, 1)),
    (utc(2024, 1, 8), "1w", utc(2024, 1, 8)),
    # the epoch was a Thursday: its week opened on Monday 1969-12-29
    (0, "1w", -3 * DAY),
    (WEEK_OFFSET_NS, "1w", WEEK_OFFSET_NS),
])
def test_bucket_start(ts: int, interval: str, expected: int) -> None:
    assert bucket_start(ts, interval) == expected


def test_week_buckets_open_on_mondays() -> None:
    for week in range(0, 3000, 97):
        start = bucket_start(utc(1990, 1, 1) + week * 7 * DAY + 12345 * SECOND, "1w")
        assert datetime.fromtimestamp(start // SECOND, tz=timezone.utc).weekday() == 0


def test_unknown_interval_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="interval must be one of 1m, 5m"):
        bucket_start(0, "2m")


# ------------------------------------------------------------------ builder tables

def test_first_quote_opens_a_live_candle_and_closes_nothing() -> None:
    builder = CandleBuilder()

    closed = builder.on_quote(BTC, 6_500_000, T0 + 5 * SECOND)

    assert closed == ()
    assert row(builder.live(BTC)) == (BTC, "1m", T0, 6_500_000, 6_500_000, 6_500_000, 6_500_000, 1, False)


def test_ohlc_of_the_bid_and_tick_volume_within_a_minute() -> None:
    builder = CandleBuilder()

    closed = feed(builder, [(BTC, 100, T0), (BTC, 105, T0 + 10 * SECOND), (BTC, 97, T0 + 20 * SECOND),
                            (BTC, 101, T0 + 30 * SECOND), (BTC, 101, T0 + 59 * SECOND)])

    assert closed == []
    assert builder.live(BTC).as_tuple() == (T0, 100, 105, 97, 101, 5)


def test_a_quote_in_a_later_minute_closes_the_previous_candle() -> None:
    builder = CandleBuilder()
    feed(builder, [(BTC, 100, T0), (BTC, 103, T0 + 30 * SECOND)])

    closed = builder.on_quote(BTC, 99, T0 + MINUTE)

    assert [row(candle) for candle in closed] == [(BTC, "1m", T0, 100, 103, 100, 103, 2, True)]
    assert builder.live(BTC).as_tuple() == (T0 + MINUTE, 99, 99, 99, 99, 1)


def test_gaps_produce_no_empty_candles() -> None:
    builder = CandleBuilder()

    closed = feed(builder, [(BTC, 100, T0), (BTC, 110, T0 + 7 * MINUTE + SECOND),
                            (BTC, 120, T0 + 3 * HOUR)])

    assert [candle.as_tuple() for candle in closed] == [
        (T0, 100, 100, 100, 100, 1), (T0 + 7 * MINUTE, 110, 110, 110, 110, 1)]
    assert builder.live(BTC).open_time == T0 + 3 * HOUR


def test_symbols_have_their_own_candles() -> None:
    builder = CandleBuilder()

    closed = feed(builder, [(BTC, 100, T0), (ETH, 5, T0 + 1), (BTC, 101, T0 + MINUTE)])

    assert [(c.symbol, c.open_time) for c in closed] == [(BTC, T0)]
    assert builder.live(ETH).as_tuple() == (T0, 5, 5, 5, 5, 1)


def test_a_quote_from_the_past_counts_in_the_open_candle() -> None:
    builder = CandleBuilder()
    feed(builder, [(BTC, 100, T0 + MINUTE)])

    closed = builder.on_quote(BTC, 90, T0)

    assert closed == ()
    assert builder.live(BTC).as_tuple() == (T0 + MINUTE, 100, 100, 90, 90, 2)


def test_close_until_closes_only_candles_whose_minute_is_over() -> None:
    builder = CandleBuilder()
    feed(builder, [(BTC, 100, T0), (ETH, 5, T0 + MINUTE)])

    closed = builder.close_until(T0 + MINUTE + 30 * SECOND)

    assert [(c.symbol, c.open_time, c.closed) for c in closed] == [(BTC, T0, True)]
    assert builder.live(BTC) is None
    assert builder.live(ETH) is not None


def test_live_is_a_copy() -> None:
    builder = CandleBuilder()
    feed(builder, [(BTC, 100, T0)])

    live = builder.live(BTC)
    live.high = 999

    assert builder.live(BTC).high == 100


def test_seed_continues_a_stored_candle() -> None:
    builder = CandleBuilder()
    builder.seed(Candle(BTC, "1m", T0, 100, 120, 90, 110, 7))

    closed = feed(builder, [(BTC, 130, T0 + 50 * SECOND), (BTC, 1, T0 + MINUTE)])

    assert [candle.as_tuple() for candle in closed] == [(T0, 100, 130, 90, 130, 8)]


def test_live_for_folds_the_closed_minutes_of_the_bucket_with_the_open_one() -> None:
    builder = CandleBuilder()
    closed = feed(builder, [(BTC, 100, T0 + 3 * HOUR + 59 * MINUTE),   # previous hour: ignored
                            (BTC, 110, T0 + 4 * HOUR), (BTC, 120, T0 + 4 * HOUR + MINUTE),
                            (BTC, 105, T0 + 4 * HOUR + 2 * MINUTE)])

    live = builder.live_for(BTC, "1h", closed)

    assert row(live) == (BTC, "1h", T0 + 4 * HOUR, 110, 120, 105, 105, 3, False)
    assert builder.live_for(ETH, "1h", closed) is None


# ------------------------------------------------------------------ aggregation tables

def minute(offset: int, o: int, h: int, low: int, c: int, v: int = 1, symbol: str = BTC) -> Candle:
    return Candle(symbol, "1m", T0 + offset * MINUTE, o, h, low, c, v)


def test_aggregate_to_5m() -> None:
    candles = [minute(0, 10, 12, 9, 11, 3), minute(1, 11, 15, 11, 14, 2), minute(4, 14, 14, 8, 9, 1),
               minute(5, 9, 9, 9, 9, 4), minute(12, 20, 21, 19, 20, 5)]

    result = aggregate(candles, "5m")

    assert [c.as_tuple() for c in result] == [
        (T0, 10, 15, 8, 9, 6), (T0 + 5 * MINUTE, 9, 9, 9, 9, 4), (T0 + 10 * MINUTE, 20, 21, 19, 20, 5)]
    assert {c.interval for c in result} == {"5m"}


def test_aggregate_sorts_its_input_and_to_1h_and_1d() -> None:
    candles = [minute(61, 5, 6, 4, 6), minute(0, 1, 2, 1, 2), minute(59, 2, 3, 2, 3)]

    hours = aggregate(candles, "1h")
    days = aggregate(candles, "1d")

    assert [c.as_tuple() for c in hours] == [(T0, 1, 3, 1, 3, 2), (T0 + HOUR, 5, 6, 4, 6, 1)]
    assert [c.as_tuple() for c in days] == [(utc(2024, 1, 3), 1, 6, 1, 6, 3)]


def test_aggregate_to_weeks_splits_on_monday() -> None:
    sunday_night = utc(2024, 1, 7, 23, 59)
    candles = [Candle(BTC, "1m", sunday_night, 1, 1, 1, 1, 1),
               Candle(BTC, "1m", sunday_night + MINUTE, 2, 2, 2, 2, 1)]

    weeks = aggregate(candles, "1w")

    assert [c.open_time for c in weeks] == [utc(2024, 1, 1), utc(2024, 1, 8)]


def test_aggregate_folds_higher_intervals_too() -> None:
    candles = [minute(i, 100 + i, 110 + i, 90 + i, 101 + i, i + 1) for i in range(0, 24 * 60, 7)]

    assert aggregate(aggregate(candles, "15m"), "4h") == aggregate(candles, "4h")


@pytest.mark.parametrize(("candles", "interval", "message"), [
    ([minute(0, 1, 1, 1, 1), minute(1, 1, 1, 1, 1, symbol=ETH)], "5m", "together"),
    ([Candle(BTC, "1h", T0, 1, 1, 1, 1, 1)], "5m", "cannot fold 1h"),
    ([minute(0, 1, 1, 1, 1), minute(0, 2, 2, 2, 2)], "5m", "two BTCUSDT candles"),
])
def test_aggregate_rejects_what_cannot_be_folded(candles: list, interval: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        aggregate(candles, interval)


# ------------------------------------------------------------------ property

quote_steps = st.lists(
    st.tuples(st.integers(min_value=1, max_value=10_000),                  # bid in ticks
              st.one_of(st.integers(0, 90 * SECOND),                       # seconds apart
                        st.integers(0, 3 * HOUR),                          # a gap
                        st.integers(0, 4 * DAY))),                         # a long gap (weeks)
    min_size=1, max_size=200)


@settings(max_examples=150, deadline=None)
@given(steps=quote_steps, start=st.integers(utc(2020, 1, 1), utc(2030, 1, 1)),
       interval=st.sampled_from(INTERVAL_NAMES))
def test_aggregating_1m_candles_equals_building_the_interval_directly(
        steps: list[tuple[int, int]], start: int, interval: str) -> None:
    quotes = []
    ts = start
    for bid, gap in steps:
        ts += gap
        quotes.append((BTC, bid, ts))
    minutes, direct = CandleBuilder("1m"), CandleBuilder(interval)

    from_minutes = aggregate(feed(minutes, quotes) + [minutes.live(BTC)], interval)
    built = feed(direct, quotes) + [direct.live(BTC)]

    assert [row(c) for c in from_minutes] == [row(c) for c in built]
    assert sum(c.volume for c in built) == len(quotes)
    for candle in built:
        assert candle.low <= min(candle.open, candle.close) <= max(candle.open, candle.close) <= candle.high
        assert bucket_start(candle.open_time, interval) == candle.open_time


# ------------------------------------------------------------------ the actor

def quotes_batch(seq: int, quotes: list[tuple[str, int, int]]) -> EventBatch:
    """One batch, one input per quote (seq numbers from ``seq``)."""
    items = [(seq + i, ts, [QuoteUpdated(symbol, bid, bid + 10, ts)])
             for i, (symbol, bid, ts) in enumerate(quotes)]
    return EventBatch(items=items, last_seq=seq + len(quotes) - 1)


@pytest.fixture
def cfg(tmp_path):
    return load_config(environ={}, overrides={"data": {"dir": str(tmp_path)},
                                              "candles": {"flush_interval_s": 3600}})


@pytest.fixture
async def store(tmp_path):
    opened = await SqliteStore.open(tmp_path)
    yield opened
    await opened.close()


async def start_actor(nursery, *, inbox, cfg, store, outbox=None) -> candles_actor.CandlesHandle:
    symbols = [instrument.symbol for instrument in cfg.core.instruments]
    return await nursery.start(functools.partial(candles_actor.run, inbox=inbox, settings=cfg.settings.candles,
                                                 symbols=symbols, store=store, outbox=outbox))


#: 3 minutes of BTC quotes and one ETH quote; BTC's third minute stays open.
ACTOR_QUOTES = [(BTC, 100, T0), (BTC, 104, T0 + 20 * SECOND), (ETH, 7, T0 + 30 * SECOND),
                (BTC, 98, T0 + 40 * SECOND), (BTC, 101, T0 + MINUTE), (BTC, 99, T0 + MINUTE + SECOND),
                (BTC, 110, T0 + 2 * MINUTE), (BTC, 108, T0 + 2 * MINUTE + 5 * SECOND)]


def expected_1m() -> list[tuple]:
    return [(T0, 100, 104, 98, 98, 3), (T0 + MINUTE, 101, 101, 99, 99, 2),
            (T0 + 2 * MINUTE, 110, 110, 108, 108, 2)]


async def test_actor_builds_candles_serves_live_and_merged_reads(cfg, store) -> None:
    send, receive = trio.open_memory_channel(8)
    async with trio.open_nursery() as nursery:
        handle = await start_actor(nursery, inbox=receive, cfg=cfg, store=store)

        await send.send(quotes_batch(1, ACTOR_QUOTES))
        await trio.testing.wait_all_tasks_blocked()

        assert handle.live(BTC).as_tuple() == expected_1m()[-1]
        assert handle.live(BTC, "1h").as_tuple() == (utc(2024, 1, 3, 12), 100, 110, 98, 108, 7)
        assert handle.live(ETH) is None           # its minute is over: closed by engine time
        before_flush = await handle.read(BTC, "1m")
        assert [c.as_tuple() for c in before_flush] == expected_1m()
        assert [c.closed for c in before_flush] == [True, True, False]
        assert await store.read_candles(BTC, "1m") == []

        await handle.flush()

        stored = await store.read_candles(BTC, "1m")
        assert [c.as_tuple() for c in stored] == expected_1m()[:2]
        assert [c.as_tuple() for c in await handle.read(BTC, "1m")] == expected_1m()
        assert [c.as_tuple() for c in await handle.read(BTC, "5m")] == [(T0, 100, 110, 98, 108, 7)]
        assert [c.as_tuple() for c in await handle.read(BTC, "1m", limit=1)] == expected_1m()[-1:]
        assert [c.as_tuple() for c in await handle.read(BTC, "1m", start=T0 + 1, end=T0 + 2 * MINUTE)] \
            == expected_1m()[1:2]
        stats = handle.statistics()
        assert (stats.quotes, stats.candles_closed, stats.candles_written, stats.pending_candles) == (8, 3, 3, 0)

        await send.aclose()

    # the final flush stored the open candle too
    assert [c.as_tuple() for c in await store.read_candles(BTC, "1m")] == expected_1m()
    assert [c.as_tuple() for c in await store.read_candles(ETH, "1m")] == [(T0, 7, 7, 7, 7, 1)]


async def test_reads_match_a_direct_build_before_and_after_flushes(cfg, store) -> None:
    quotes = [(BTC, 1000 + (i * 37) % 101, T0 + i * 13 * SECOND) for i in range(2000)]
    builder = CandleBuilder()
    everything = feed(builder, quotes) + [builder.live(BTC)]
    send, receive = trio.open_memory_channel(8)
    async with trio.open_nursery() as nursery:
        handle = await start_actor(nursery, inbox=receive, cfg=cfg, store=store)
        for part in range(4):
            chunk = quotes[part * 500:(part + 1) * 500]
            await send.send(quotes_batch(1 + part * 500, chunk))
            await trio.testing.wait_all_tasks_blocked()
            if part == 1:
                await handle.flush()
        for interval in ("1m", "15m", "1h", "4h"):
            expected = [row(c) for c in aggregate(everything, interval)]
            assert [row(c) for c in await handle.read(BTC, interval)] == expected, interval
            assert [row(c) for c in await handle.read(BTC, interval, limit=3)] == expected[-3:]
            assert handle.live(BTC, interval).as_tuple() == aggregate(everything, interval)[-1].as_tuple()
        await send.aclose()


async def test_restart_continues_the_stored_open_candle(cfg, store) -> None:
    send, receive = trio.open_memory_channel(8)
    async with trio.open_nursery() as nursery:
        await start_actor(nursery, inbox=receive, cfg=cfg, store=store)
        await send.send(quotes_batch(1, ACTOR_QUOTES))
        await send.aclose()

    send, receive = trio.open_memory_channel(8)
    async with trio.open_nursery() as nursery:
        handle = await start_actor(nursery, inbox=receive, cfg=cfg, store=store)
        assert handle.live(BTC).as_tuple() == expected_1m()[-1]
        await send.send(quotes_batch(100, [(BTC, 120, T0 + 2 * MINUTE + 30 * SECOND),
                                           (BTC, 50, T0 + 3 * MINUTE)]))
        await trio.testing.wait_all_tasks_blocked()
        assert handle.live(BTC, "1h").volume == 9
        await handle.flush()
        assert handle.statistics().candles_written == 1
        await send.aclose()

    assert [c.as_tuple() for c in await store.read_candles(BTC, "1m")] == expected_1m()[:2] + [
        (T0 + 2 * MINUTE, 110, 120, 108, 120, 3), (T0 + 3 * MINUTE, 50, 50, 50, 50, 1)]


async def test_outbox_gets_closed_and_live_candles_and_never_blocks(cfg, store) -> None:
    send, receive = trio.open_memory_channel(8)
    out_send, out_receive = trio.open_memory_channel(3)
    async with trio.open_nursery() as nursery:
        handle = await start_actor(nursery, inbox=receive, cfg=cfg, store=store, outbox=out_send)
        await send.send(quotes_batch(1, ACTOR_QUOTES[:3]))                       # live BTC, live ETH
        await send.send(quotes_batch(4, [(BTC, 101, T0 + MINUTE)]))               # closed BTC, ETH, live BTC
        await trio.testing.wait_all_tasks_blocked()

        received = [out_receive.receive_nowait() for _ in range(3)]
        assert [(c.symbol, c.open_time, c.closed) for c in received] == [
            (BTC, T0, False), (ETH, T0, False), (BTC, T0, True)]
        stats = handle.statistics()
        assert (stats.live_updates_sent, stats.live_updates_dropped) == (3, 2)

        # a non-trading batch moves the engine time on and still feeds nothing to the outbox
        await send.send(EventBatch(items=[(9, T0 + 5 * MINUTE, [BalanceChanged(
            account_id=1, kind="deposit", free_delta=1, locked_delta=0, free=1, locked=0,
            ref="k", ts=T0 + 5 * MINUTE)])], last_seq=9))
        await trio.testing.wait_all_tasks_blocked()
        assert handle.live(BTC) is None
        assert handle.statistics().candles_closed == 3
        await send.aclose()


async def test_flush_interval_writes_without_being_asked(tmp_path, store, autojump_clock) -> None:
    cfg = load_config(environ={}, overrides={"data": {"dir": str(tmp_path)},
                                             "candles": {"flush_interval_s": 1.0}})
    send, receive = trio.open_memory_channel(8)
    async with trio.open_nursery() as nursery:
        handle = await start_actor(nursery, inbox=receive, cfg=cfg, store=store)
        await send.send(quotes_batch(1, ACTOR_QUOTES))
        await trio.testing.wait_all_tasks_blocked()
        assert handle.statistics().candles_written == 0
        # The clock jumps while the write runs in its thread, so wait by polling, not by time.
        for _ in range(100_000):
            if handle.statistics().candles_written:
                break
            await trio.sleep(0.1)
        assert handle.statistics().candles_written == 3
        assert trio.current_time() >= 1.0
        await send.aclose()


def test_intervals_are_the_served_ones() -> None:
    assert INTERVAL_NAMES == ("1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w")
    assert all(INTERVALS[b] % INTERVALS[a] == 0 for a, b in zip(INTERVAL_NAMES, INTERVAL_NAMES[1:]))
