"""The price feed: the pure Binance message parser, and the actor's three sources.

Tiers (STYLE.md rule 11): ``feed_format`` is tested synchronously with tables; the synthetic and
replay sources run under trio's mock clock (``autojump_clock``), so pacing is checked in virtual
time; the Binance client runs against a local server speaking Binance's format
(``tests/binance_server.py``) on a free 127.0.0.1 port, with short real-time settings.
"""

from __future__ import annotations

import json
import random
import re
from contextlib import asynccontextmanager
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import trio

from actors.feed import price_feed
from actors.config import ConfigError, load_config
from exness_actors.commands import Quote
from exness_actors.feed_format import (
    BOOK, TRADE, MalformedTick, Tick, parse_json, parse_message, parse_recorded_line, price_to_ticks,
)
from binance_server import BinanceServer

SAMPLE = Path(__file__).resolve().parent / "data" / "binance_sample.jsonl"
DECIMALS = {"BTCUSDT": 2, "ETHUSDT": 2, "SOLUSDT": 3}


def make_cfg(**feed: Any) -> Any:
    return load_config(environ={}, overrides={"feed": feed})


# --- feed_format: prices ------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "decimals", "bid", "ask"), [
    ("25.35190000", 2, 2535, 2536),        # bid down, ask up
    ("65000.01000000", 2, 6500001, 6500001),  # exactly on the tick: no rounding either way
    ("150.12345678", 3, 150123, 150124),
    ("0.00100000", 3, 1, 1),
    ("0.00150000", 3, 1, 2),
    ("7", 0, 7, 7),
    ("7.5", 0, 7, 8),
    ("1E+2", 2, 10000, 10000),
    (" 12.3 ", 2, 1230, 1230),               # Decimal accepts surrounding spaces
    (12, 2, 1200, 1200),
    (Decimal("99.999"), 2, 9999, 10000),
])
def test_price_to_ticks_rounds_bid_down_and_ask_up(text: Any, decimals: int, bid: int, ask: int) -> None:
    assert price_to_ticks(text, decimals, round_up=False) == bid
    assert price_to_ticks(text, decimals, round_up=True) == ask


@pytest.mark.parametrize(("value", "reason"), [
    ("abc", "not_a_number"),
    ("", "not_a_number"),
    ("NaN", "not_a_number"),
    ("Infinity", "not_a_number"),
    ("1" * 41, "not_a_number"),
    ("1E+99", "not_a_number"),
    (65000.01, "not_a_number"),             # a float cannot carry a price exactly
    (True, "not_a_number"),
    (None, "not_a_number"),
    ("-1.00", "not_positive"),
    ("0.00000000", "not_positive"),
    ("-0", "not_positive"),
    ("0.001", "not_positive"),              # rounds down to zero ticks at 2 decimals
])
def test_price_to_ticks_refuses_bad_values(value: Any, reason: str) -> None:
    with pytest.raises(MalformedTick) as caught:
        price_to_ticks(value, 2, round_up=False, field="b")
    assert caught.value.reason == reason


# --- feed_format: messages ----------------------------------------------------------------------

def book(**changes: Any) -> dict[str, Any]:
    data = {"u": 400900217, "s": "BTCUSDT", "b": "65000.01900000", "B": "31.21000000",
            "a": "65000.02100000", "A": "40.66000000"}
    data.update(changes)
    return {key: value for key, value in data.items() if value is not ...}


def trade(**changes: Any) -> dict[str, Any]:
    data = {"e": "aggTrade", "E": 1718064000120, "s": "SOLUSDT", "a": 815234568, "p": "150.12350000",
            "q": "98.2", "f": 1, "l": 3, "T": 1718064000116, "m": False, "M": True}
    data.update(changes)
    return {key: value for key, value in data.items() if value is not ...}


def test_book_ticker_becomes_a_tick_in_the_house_favour() -> None:
    tick = parse_message(book(), DECIMALS)

    assert tick == Tick("BTCUSDT", 6500001, 6500003, 400900217, BOOK, None)


def test_agg_trade_becomes_a_trade_tick_around_its_price() -> None:
    tick = parse_message(trade(), DECIMALS)

    assert tick == Tick("SOLUSDT", 150123, 150124, 815234568, TRADE, 1718064000120)


def test_envelopes_and_json_text_are_understood() -> None:
    envelope = {"stream": "btcusdt@bookTicker", "data": book()}
    recorded = {"ts": 1718064000235, **envelope}

    assert parse_message(envelope, DECIMALS) == parse_message(book(), DECIMALS)
    assert parse_json(json.dumps(envelope), DECIMALS) == parse_message(book(), DECIMALS)
    assert parse_json(json.dumps(envelope).encode(), DECIMALS).bid == 6500001
    assert parse_recorded_line(json.dumps(recorded), DECIMALS) == (1718064000235, parse_message(book(), DECIMALS))


def test_a_trade_without_its_event_type_is_recognised_by_its_stream() -> None:
    tick = parse_message({"stream": "solusdt@aggTrade", "data": trade(e=...)}, DECIMALS)

    assert tick.kind == TRADE and tick.bid == 150123


def test_json_numbers_are_parsed_exactly_not_through_float() -> None:
    text = '{"u": 5, "s": "BTCUSDT", "b": 65000.019, "B": "1", "a": 65000.021, "A": "1"}'

    tick = parse_json(text, DECIMALS)

    assert (tick.bid, tick.ask) == (6500001, 6500003)


@pytest.mark.parametrize(("message", "reason"), [
    (book(s=...), "missing_field"),
    (book(b=...), "missing_field"),
    (book(a=...), "missing_field"),
    (book(u=...), "missing_field"),
    (trade(p=...), "missing_field"),
    (trade(a=...), "missing_field"),
    (book(s=5), "bad_field"),
    (book(u="400900217"), "bad_field"),
    (book(u=-1), "bad_field"),
    (book(u=True), "bad_field"),
    (trade(E="now"), "bad_field"),
    (book(b="abc"), "not_a_number"),
    (book(a=65000.02), "not_a_number"),
    (book(b="-65000.01"), "not_positive"),
    (book(b="0.00000000"), "not_positive"),
    (book(b="65000.03", a="65000.02"), "crossed"),
    (book(b="65000.02", a="65000.02"), "crossed"),           # a locked book is refused too
    (book(s="BNBUSDT"), "unknown_symbol"),
    (trade(s="BNBUSDT"), "unknown_symbol"),
    (book(e="depthUpdate"), "unknown_event"),
    ({"s": "BTCUSDT", "b": "1", "a": "2"}, "missing_field"),              # a book without u
    ({"s": "BTCUSDT", "price": "1"}, "unknown_event"),
    ({"stream": "ethusdt@bookTicker", "data": book()}, "stream_mismatch"),
    ({"stream": "btcusdt@aggTrade", "data": book()}, "stream_mismatch"),
    ({"stream": "ethusdt@aggTrade", "data": trade(e=..., s="BTCUSDT")}, "stream_mismatch"),
    ({"stream": "solusdt@aggTrade", "data": trade(e=..., p=...)}, "missing_field"),
    ({"stream": 5, "data": book()}, "bad_field"),
    ({"stream": "btcusdt@bookTicker", "data": [1, 2]}, "not_an_object"),
    ({"result": None, "id": 1}, "control_message"),
    ([book()], "not_an_object"),
    ("text", "not_an_object"),
])
def test_malformed_messages_are_refused_with_a_reason(message: Any, reason: str) -> None:
    with pytest.raises(MalformedTick) as caught:
        parse_message(message, DECIMALS)

    assert caught.value.reason == reason
    assert caught.value.detail


@pytest.mark.parametrize(("text", "reason"), [
    ("not json", "not_json"),
    ('{"u": 1, "s": "BTCUSDT", "b": "1", ', "not_json"),
    (b"\xff\xfe\x00", "not_json"),
    ('{"u": 1, "s": "BTCUSDT", "b": NaN, "B": "1", "a": "2", "A": "1"}', "not_a_number"),
    ("[1, 2]", "not_an_object"),
    ("null", "not_an_object"),
])
def test_malformed_frames_are_refused_with_a_reason(text: Any, reason: str) -> None:
    with pytest.raises(MalformedTick) as caught:
        parse_json(text, DECIMALS)

    assert caught.value.reason == reason


@pytest.mark.parametrize(("line", "reason"), [
    ({"stream": "btcusdt@bookTicker", "data": book()}, "missing_field"),
    ({"ts": "1718064000235", "stream": "btcusdt@bookTicker", "data": book()}, "bad_field"),
    ({"ts": 1718064000235, "stream": "btcusdt@bookTicker"}, "missing_field"),
])
def test_recorded_lines_need_a_time_and_data(line: Any, reason: str) -> None:
    with pytest.raises(MalformedTick) as caught:
        parse_recorded_line(json.dumps(line), DECIMALS)

    assert caught.value.reason == reason


# --- actor helpers -------------------------------------------------------------------------------

def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    rng = random.Random(3)
    for attempt in range(12):
        ceiling = min(30.0, 0.5 * 2**attempt)

        delay = price_feed.backoff_delay(attempt, initial_s=0.5, max_s=30.0, rng=rng)

        assert ceiling / 2 <= delay <= ceiling


def test_binance_stream_url_lists_every_symbol_and_stream() -> None:
    url = price_feed.binance_stream_url("wss://stream.binance.com:9443/stream/", ["BTCUSDT", "SOLUSDT"],
                                        (BOOK, TRADE))

    assert url == ("wss://stream.binance.com:9443/stream?streams="
                   "btcusdt@bookTicker/btcusdt@aggTrade/solusdt@bookTicker/solusdt@aggTrade")


@pytest.mark.parametrize(("feed", "message"), [
    ({"source": "carrier-pigeon"}, "feed.source"),
    ({"source": "replay"}, "replay:PATH"),
    ({"source": "redis"}, "feed source 'redis' needs bus = redis (split mode)"),
    ({"source": "binance", "binance_url": "http://example.com"}, "feed.binance_url"),
    ({"ticks_per_s": 0}, "feed.ticks_per_s"),
    ({"ticks_per_s": "fast"}, "feed.ticks_per_s"),
    ({"replay_speed": -1}, "feed.replay_speed"),
    ({"replay_loop": "yes"}, "feed.replay_loop"),
    ({"seed": 1.5}, "feed.seed"),
    ({"start_prices": {"BTCUSDT": "65000.001"}}, "feed.start_prices.BTCUSDT"),
    ({"binance_streams": ["depth"]}, "feed.binance_streams"),
])
async def test_bad_configuration_fails_before_starting_and_names_the_key(feed: dict, message: str) -> None:
    send, _receive = trio.open_memory_channel[Quote](10)

    with pytest.raises(ConfigError, match=re.escape(message)):
        await price_feed.run(outbox=send, cfg=make_cfg(**feed))


async def test_a_missing_recording_fails_before_starting() -> None:
    send, _receive = trio.open_memory_channel[Quote](10)

    with pytest.raises(ConfigError, match="cannot open the recording"):
        await price_feed.run(outbox=send, cfg=make_cfg(), source="replay:/nonexistent/recording.jsonl")


# --- synthetic -----------------------------------------------------------------------------------

async def run_synthetic(seed: int, count: int, **feed: Any) -> list[tuple[float, Quote]]:
    """The first ``count`` quotes of a synthetic feed, with their (virtual) time since the start."""
    send, receive = trio.open_memory_channel[Quote](0)
    received: list[tuple[float, Quote]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(price_feed.run, outbox=send, cfg=make_cfg(seed=seed, **feed)))
        started = trio.current_time()
        async for quote in receive:
            received.append((round(trio.current_time() - started, 9), quote))
            if len(received) == count:
                break
        nursery.cancel_scope.cancel()
    return received


async def test_synthetic_feed_is_deterministic_for_a_seed(autojump_clock: Any) -> None:
    first = await run_synthetic(7, 300)
    again = await run_synthetic(7, 300)
    other = await run_synthetic(8, 300)

    assert first == again
    assert [quote for _, quote in first] != [quote for _, quote in other]


async def test_synthetic_quotes_are_sane_and_start_at_the_start_prices(autojump_clock: Any) -> None:
    quotes = [quote for _, quote in await run_synthetic(1, 600)]

    assert {quote.symbol for quote in quotes} == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    assert all(0 < quote.bid < quote.ask <= quote.bid + 3 for quote in quotes)
    assert all(quote.seq == 0 and quote.ts == 0 for quote in quotes)
    first = {quote.symbol: quote.bid for quote in reversed(quotes)}
    assert first["BTCUSDT"] == pytest.approx(6_500_000, rel=0.01)   # 65000 at 2 decimals
    assert first["ETHUSDT"] == pytest.approx(350_000, rel=0.01)
    assert first["SOLUSDT"] == pytest.approx(150_000, rel=0.01)     # 150 at 3 decimals


async def test_synthetic_start_prices_are_configurable(autojump_clock: Any) -> None:
    quotes = await run_synthetic(1, 30, start_prices={"BTCUSDT": "100000.50"})

    first_btc = next(quote for _, quote in quotes if quote.symbol == "BTCUSDT")
    assert first_btc.bid == pytest.approx(10_000_050, rel=0.01)


async def test_synthetic_tick_rate_follows_ticks_per_s(autojump_clock: Any) -> None:
    send, receive = trio.open_memory_channel[Quote](0)
    per_symbol: dict[str, int] = {}
    async with trio.open_nursery() as nursery:
        stats = await nursery.start(partial(price_feed.run, outbox=send, cfg=make_cfg(ticks_per_s=5)))
        with trio.move_on_after(120):
            async for quote in receive:
                per_symbol[quote.symbol] = per_symbol.get(quote.symbol, 0) + 1
        nursery.cancel_scope.cancel()

    # Poisson arrivals at 5/s for 120 s: 600 expected per symbol (sd ~25); unchanged quotes are skipped.
    assert all(480 <= count <= 720 for count in per_symbol.values()), per_symbol
    assert stats.statistics()["quotes_sent"] == sum(per_symbol.values())


async def test_a_full_inbox_holds_the_synthetic_feed_back(autojump_clock: Any) -> None:
    send, receive = trio.open_memory_channel[Quote](2)
    async with trio.open_nursery() as nursery:
        stats = await nursery.start(partial(price_feed.run, outbox=send, cfg=make_cfg()))
        await trio.sleep(30)
        assert stats.statistics()["quotes_sent"] == 2      # nobody reads: the feed waits, drops nothing
        assert stats.statistics()["outbox_depth"] == 2
        await receive.receive()
        await trio.sleep(0.5)
        assert stats.statistics()["quotes_sent"] == 3
        nursery.cancel_scope.cancel()


async def test_the_feed_stops_quietly_when_the_engine_closes_its_inbox(autojump_clock: Any) -> None:
    send, receive = trio.open_memory_channel[Quote](0)
    async with trio.open_nursery() as nursery:
        stats = await nursery.start(partial(price_feed.run, outbox=send, cfg=make_cfg()))
        await receive.receive()
        await receive.aclose()
    # the nursery exits on its own: the feed returned

    assert stats.statistics()["stopped_reason"].startswith("engine_closed")


# --- replay --------------------------------------------------------------------------------------

def sample_lines() -> list[dict]:
    lines = []
    for text in SAMPLE.read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except ValueError:
            pass
    return lines


def expected_sample_quotes() -> list[Quote]:
    """What the sample should yield with unchanged_refresh_s = 0, worked out independently."""
    quotes: list[Quote] = []
    book_seen: set[str] = set()
    for line in sample_lines():
        data = line["data"]
        symbol = data["s"]
        if symbol not in DECIMALS or data.get("b") == "NaN":
            continue
        scale = 10 ** DECIMALS[symbol]
        if data.get("e") == "aggTrade":
            if symbol not in book_seen:
                price = Decimal(data["p"]) * scale
                assert price == int(price)
                quotes.append(Quote(symbol, int(price), int(price)))
        else:
            book_seen.add(symbol)
            quotes.append(Quote(symbol, int(Decimal(data["b"]) * scale), int(Decimal(data["a"]) * scale)))
    return quotes


async def run_replay(capacity: int = 0, **feed: Any) -> tuple[list[tuple[float, Quote]], dict]:
    """Replay the sample; the quotes with their virtual time since the start, and the statistics.

    Runs to the end of the recording, or until ``capacity`` quotes when given (for loops)."""
    send, receive = trio.open_memory_channel[Quote](0)
    received: list[tuple[float, Quote]] = []

    async def feed_until_done(task_status: Any) -> None:
        async with send:        # closing it ends the loop below when the replay is over
            await price_feed.run(outbox=send, source=f"replay:{SAMPLE}", task_status=task_status,
                                 cfg=make_cfg(unchanged_refresh_s=0, **feed))

    async with trio.open_nursery() as nursery:
        stats = await nursery.start(feed_until_done)
        started = trio.current_time()
        async for quote in receive:
            received.append((trio.current_time() - started, quote))
            if len(received) == capacity:
                nursery.cancel_scope.cancel()
                break
    return received, stats.statistics()


async def test_replay_of_the_sample_skips_and_counts_malformed_lines(autojump_clock: Any) -> None:
    received, stats = await run_replay(replay_speed=0)

    quotes = [quote for _, quote in received]
    assert quotes == expected_sample_quotes()
    assert quotes[0] == Quote("SOLUSDT", 150130, 150130)        # a trade before any SOLUSDT book
    assert stats["malformed"] == 2                               # a truncated line and a NaN bid
    assert stats["malformed_by_reason"] == {"not_json": 1, "not_a_number": 1, "unknown_symbol": 1}
    assert stats["unknown_symbol"] == 1                          # BNBUSDT is not an instrument
    assert stats["trades"] == sum(1 for line in sample_lines() if line["data"].get("e") == "aggTrade")
    assert stats["replay_passes"] == 1 and stats["stopped_reason"] == "end_of_recording"
    assert stats["gaps"] == 0


async def test_replay_keeps_the_recorded_pace_divided_by_the_speed(autojump_clock: Any) -> None:
    lines = sample_lines()
    recorded_s = (lines[-1]["ts"] - lines[0]["ts"]) / 1000

    at_speed_1, _ = await run_replay(replay_speed=1)
    at_speed_10, _ = await run_replay(replay_speed=10)

    assert recorded_s > 20
    assert at_speed_1[-1][0] == pytest.approx(recorded_s, abs=1e-6)
    assert at_speed_10[-1][0] == pytest.approx(recorded_s / 10, abs=1e-6)
    assert [quote for _, quote in at_speed_1] == [quote for _, quote in at_speed_10]
    first_btc = next(t for t, quote in at_speed_1 if quote.symbol == "BTCUSDT")
    btc_line = next(line for line in lines if line["data"]["s"] == "BTCUSDT")
    assert first_btc == pytest.approx((btc_line["ts"] - lines[0]["ts"]) / 1000, abs=1e-6)


async def test_accelerated_replay_takes_no_virtual_time(autojump_clock: Any) -> None:
    received, _ = await run_replay(replay_speed=0)

    assert received[-1][0] == 0


async def test_replay_in_a_loop_starts_over_without_counting_gaps(autojump_clock: Any) -> None:
    one_pass = expected_sample_quotes()

    received, stats = await run_replay(capacity=2 * len(one_pass) + 5, replay_speed=0, replay_loop=True)

    quotes = [quote for _, quote in received]
    assert quotes[:len(one_pass)] == one_pass
    assert quotes[len(one_pass):2 * len(one_pass)] == one_pass
    assert stats["replay_passes"] >= 2
    assert stats["gaps"] == 0


async def test_replay_skips_unchanged_quotes_within_the_refresh_interval(autojump_clock: Any) -> None:
    send, receive = trio.open_memory_channel[Quote](10_000)
    async with trio.open_nursery() as nursery:
        stats = await nursery.start(partial(price_feed.run, outbox=send, source=f"replay:{SAMPLE}",
                                            cfg=make_cfg(replay_speed=1, unchanged_refresh_s=5)))
    quotes: list[Quote] = []
    while True:
        try:
            quotes.append(receive.receive_nowait())
        except trio.WouldBlock:
            break

    statistics = stats.statistics()
    assert statistics["unchanged_skipped"] > 0
    assert statistics["quotes_sent"] == len(quotes) == len(expected_sample_quotes()) - statistics["unchanged_skipped"]


async def test_replay_of_a_recording_without_valid_lines_stops_instead_of_spinning(
        autojump_clock: Any, tmp_path: Path) -> None:
    recording = tmp_path / "garbage.jsonl"
    recording.write_text("not json\n\n{\"ts\": 1}\n")
    send, _receive = trio.open_memory_channel[Quote](10)

    async with trio.open_nursery() as nursery:
        stats = await nursery.start(partial(price_feed.run, outbox=send, source=f"replay:{recording}",
                                            cfg=make_cfg(replay_loop=True)))

    assert stats.statistics()["stopped_reason"] == "no_valid_lines"
    assert stats.statistics()["malformed"] == 2


def test_the_sample_ships_with_the_package() -> None:
    assert price_feed.SAMPLE_RECORDING.read_bytes() == SAMPLE.read_bytes()


# --- binance -------------------------------------------------------------------------------------

FAST = dict(reconnect_initial_s=0.02, reconnect_max_s=0.5, healthy_after_s=60, ping_interval_s=5,
            ping_timeout_s=5, stale_after_s=5, connect_timeout_s=2, close_timeout_s=0.2,
            unchanged_refresh_s=0)


@asynccontextmanager
async def binance_feed(capacity: int = 1000, **feed: Any) -> AsyncIterator[tuple[BinanceServer, Any, Any, trio.Nursery]]:
    """A local Binance server and a feed connected to it; everything stops at the end."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(BinanceServer().serve)
            send, receive = trio.open_memory_channel[Quote](capacity)
            cfg = make_cfg(**{"binance_url": server.url, **FAST, **feed})
            stats = await nursery.start(partial(price_feed.run, outbox=send, cfg=cfg, source="binance"))
            await server.wait_for_connections(1)
            yield server, receive, stats, nursery
            nursery.cancel_scope.cancel()


async def wait_until(predicate: Any) -> None:
    while not predicate():
        await trio.sleep(0.005)


async def test_binance_quotes_are_rounded_in_the_house_favour() -> None:
    async with binance_feed() as (server, receive, stats, _):
        await server.book_ticker("BTCUSDT", "65000.01900000", "65000.02100000")
        await server.book_ticker("SOLUSDT", "150.12345678", "150.12355678")

        assert await receive.receive() == Quote("BTCUSDT", 6500001, 6500003)
        assert await receive.receive() == Quote("SOLUSDT", 150123, 150124)
        assert server.requested_paths == [
            "/stream?streams=btcusdt@bookTicker/ethusdt@bookTicker/solusdt@bookTicker"]
        assert stats.statistics()["connected"] is True


async def test_binance_garbage_frames_are_counted_and_skipped() -> None:
    async with binance_feed() as (server, receive, stats, _):
        await server.send_raw("not json at all")
        await server.send_raw(b"\x00\x01binary")
        await server.send_raw("{}")
        await server.send_raw('{"result": null, "id": 1}')                       # a control reply: ignored
        await server.book_ticker("BTCUSDT", "abc", "65000.02")                   # non-numeric
        await server.book_ticker("BTCUSDT", "65000.03", "65000.02")              # crossed
        await server.book_ticker("ETHUSDT", "0.00000000", "3500.01")             # empty bid side
        await server.send_raw(json.dumps({"stream": "bnbusdt@bookTicker", "data": book(s="BNBUSDT")}))
        await server.book_ticker("BTCUSDT", "65000.01", "65000.02")

        assert await receive.receive() == Quote("BTCUSDT", 6500001, 6500002)
        statistics = stats.statistics()
        assert statistics["malformed"] == 6
        assert statistics["unknown_symbol"] == 1
        assert statistics["malformed_by_reason"]["crossed"] == 1
        assert statistics["connects"] == 1 and statistics["reconnects"] == 0


async def test_binance_reconnects_after_a_drop_with_growing_backoff() -> None:
    async with binance_feed() as (server, receive, stats, nursery):
        await server.start_ticking(nursery, {"BTCUSDT": 6_500_000, "ETHUSDT": 350_000})
        before = [await receive.receive() for _ in range(4)]

        server.reject_next = 3               # the next three handshakes fail
        await server.drop_all()
        await server.wait_for_connections(2)
        while (await receive.receive()).bid <= max(quote.bid for quote in before if quote.symbol == "BTCUSDT") + 5:
            pass                              # quotes resume, from the new connection

        statistics = stats.statistics()
        assert statistics["connects"] == 2
        assert statistics["connect_failures"] == 3
        assert statistics["reconnects"] == 4
        assert statistics["consecutive_failures"] == 4
        # attempts 0..3 after an unhealthy connection: the last wait is drawn from [4, 8] × initial
        assert 0.08 <= statistics["last_backoff_s"] <= 0.16
        assert statistics["gaps_by_reason"]["reconnect"] >= 1
        assert sum(statistics["disconnect_reasons"].values()) == 4


async def test_binance_server_close_after_a_healthy_period_reconnects_promptly() -> None:
    async with binance_feed(healthy_after_s=0) as (server, receive, stats, _):
        await server.book_ticker("ETHUSDT", "3500.01", "3500.02")
        await receive.receive()

        await server.close_all(1001, "24h limit")
        await server.wait_for_connections(2)
        await server.book_ticker("ETHUSDT", "3500.05", "3500.06")

        assert await receive.receive() == Quote("ETHUSDT", 350005, 350006)
        statistics = stats.statistics()
        assert statistics["consecutive_failures"] == 0
        assert statistics["last_backoff_s"] <= 0.02
        assert statistics["disconnect_reasons"] == {"server_closed": 1}
        assert statistics["gaps_by_reason"] == {"reconnect": 1}


async def test_binance_backward_update_id_is_a_gap_and_is_dropped() -> None:
    async with binance_feed() as (server, receive, stats, _):
        await server.book_ticker("BTCUSDT", "65000.01", "65000.02", update_id=1000)
        await server.book_ticker("BTCUSDT", "64000.01", "64000.02", update_id=990)     # backwards
        await server.book_ticker("BTCUSDT", "65000.03", "65000.04", update_id=1005)
        await server.book_ticker("BTCUSDT", "65000.05", "65000.06", update_id=1005)    # duplicate
        await server.book_ticker("BTCUSDT", "65000.07", "65000.08", update_id=1006)

        received = [await receive.receive() for _ in range(3)]

        assert [quote.bid for quote in received] == [6500001, 6500003, 6500007]
        statistics = stats.statistics()
        assert statistics["gaps"] == 1 and statistics["gaps_by_reason"] == {"backward": 1}
        assert statistics["duplicates"] == 1


async def test_binance_silent_connection_is_recycled() -> None:
    async with binance_feed(stale_after_s=0.2, ping_interval_s=0.05) as (server, receive, stats, _):
        await server.book_ticker("BTCUSDT", "65000.01", "65000.02")
        await receive.receive()
        # the server goes silent (but still answers pings): every symbol goes stale

        await server.wait_for_connections(2)
        await server.book_ticker("BTCUSDT", "65000.03", "65000.04")

        assert await receive.receive() == Quote("BTCUSDT", 6500003, 6500004)
        statistics = stats.statistics()
        assert statistics["stale_events"] >= 3
        assert statistics["recycles"] >= 1
        assert statistics["disconnect_reasons"].get("all_stale", 0) >= 1
        assert statistics["ping_timeouts"] == 0


async def test_binance_missing_pong_means_a_dead_connection() -> None:
    async with binance_feed(ping_interval_s=0.05, ping_timeout_s=0.2) as (server, receive, stats, _):
        await server.book_ticker("BTCUSDT", "65000.01", "65000.02")
        await receive.receive()

        server.freeze_all()
        await server.wait_for_connections(2)
        await server.book_ticker("BTCUSDT", "65000.03", "65000.04")

        assert await receive.receive() == Quote("BTCUSDT", 6500003, 6500004)
        statistics = stats.statistics()
        assert statistics["ping_timeouts"] == 1
        assert statistics["disconnect_reasons"].get("ping_timeout") == 1


async def test_binance_trades_quote_only_symbols_without_a_book() -> None:
    async with binance_feed(binance_streams=["bookTicker", "aggTrade"]) as (server, receive, stats, _):
        await server.agg_trade("ETHUSDT", "3500.015")
        assert await receive.receive() == Quote("ETHUSDT", 350001, 350002)

        await server.book_ticker("ETHUSDT", "3500.01", "3500.03")
        assert await receive.receive() == Quote("ETHUSDT", 350001, 350003)

        await server.agg_trade("ETHUSDT", "3500.02")
        await server.book_ticker("ETHUSDT", "3500.02", "3500.03")
        assert await receive.receive() == Quote("ETHUSDT", 350002, 350003)   # the trade made no quote

        statistics = stats.statistics()
        assert statistics["trades"] == 2
        assert statistics["last_trade_ticks"] == {"ETHUSDT": 350002}
        assert "ethusdt@aggTrade" in server.requested_paths[0]


async def test_binance_slow_engine_gets_the_latest_price() -> None:
    async with binance_feed(capacity=0) as (server, receive, stats, _):
        await server.book_ticker("BTCUSDT", "65000.01", "65000.11")
        await wait_until(lambda: receive.statistics().tasks_waiting_send == 1)   # the sender is stuck
        for cents in range(2, 6):
            await server.book_ticker("BTCUSDT", f"65000.0{cents}", f"65000.1{cents}")
        await wait_until(lambda: stats.statistics()["messages"] == 5)

        first = await receive.receive()        # the one the sender was blocked on
        latest = await receive.receive()

        assert first.bid == 6500001
        assert latest == Quote("BTCUSDT", 6500005, 6500015)
        assert stats.statistics()["conflated"] == 3


async def test_binance_unchanged_quotes_are_not_resent_within_the_refresh_interval() -> None:
    async with binance_feed(unchanged_refresh_s=60) as (server, receive, stats, _):
        await server.book_ticker("BTCUSDT", "65000.01", "65000.02", bid_qty="1.0")
        await server.book_ticker("BTCUSDT", "65000.01", "65000.02", bid_qty="2.0")    # size change only
        await server.book_ticker("BTCUSDT", "65000.02", "65000.03")

        assert [await receive.receive() for _ in range(2)] == [
            Quote("BTCUSDT", 6500001, 6500002), Quote("BTCUSDT", 6500002, 6500003)]
        assert stats.statistics()["unchanged_skipped"] == 1


async def test_binance_handshake_rejection_is_retried() -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(BinanceServer().serve)
        server.reject_next = 2
        send, receive = trio.open_memory_channel[Quote](10)
        cfg = make_cfg(**{**FAST, "binance_url": server.url + "/stream"})
        with trio.fail_after(10):
            stats = await nursery.start(partial(price_feed.run, outbox=send, cfg=cfg, source="binance"))
            await server.wait_for_connections(1)
        assert stats.statistics()["connect_failures"] == 2
        assert server.rejected_count == 2
        nursery.cancel_scope.cancel()
