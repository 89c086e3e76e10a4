"""The back office with several engine shards, in one process: how the gateway merges the
shards' views, how a remote handle addresses one shard, and how its copy of the instruments
follows the engine (the end-to-end journey is tests/test_split_admin.py)."""

from __future__ import annotations

import functools

import pytest
import trio

from actors.auth_tokens import TokenIssuer
from actors.bus import streams as redis_edge
from actors.config import load_config
from actors.gateway._common import Gateway
from actors.gateway._settings import GatewaySettings
from actors.gateway.metrics import GatewayMetrics
from actors.ws.server import WsOptions, WsServer
from actors.engine.messages import EventBatch, ReplySlot, Request
from actors.gateway._admin import merged_figures, merged_scan, merged_symbols
from exness_actors.commands import HaltSymbol, UpdateInstrument
from exness_actors.engine import Engine
from exness_actors.instruments import DEFAULT_INSTRUMENTS, SHARD_ID_SPAN, CoreConfig
from test_redis_edge import _run_engine_and_edge, url  # noqa: F401  (url is a fixture)

BOOK_KEYS = ("spread", "commission", "swap", "trader_losses", "trader_gains", "losses_absorbed", "total")


def _figures(book: int, long_qty: int, long_notional: int, halted: bool, bid: int) -> dict:
    return {"book": {key: book for key in BOOK_KEYS},
            "exposure": {"BTCUSDT": {"long_qty": long_qty, "short_qty": 0, "long_notional": long_notional,
                                     "short_notional": 0}},
            "symbols": {"BTCUSDT": {"bid": bid, "ask": bid + 10, "halted": halted},
                        "ETHUSDT": {"bid": None, "ask": None, "halted": False}}}


def test_house_figures_of_several_shards_are_summed_exactly_and_halted_anywhere_shows() -> None:
    one = _figures(101, 7, 10**15 + 1, False, 6_500_000)
    assert merged_figures([one]) is one            # one engine: as it answered
    merged = merged_figures([one, _figures(-3, 5, 2, True, 6_500_100)])
    assert merged["book"] == {key: 98 for key in BOOK_KEYS}
    assert merged["exposure"]["BTCUSDT"] == {"long_qty": 12, "short_qty": 0, "long_notional": 10**15 + 3,
                                             "short_notional": 0}
    assert merged["symbols"]["BTCUSDT"] == {"bid": 6_500_000, "ask": 6_500_010, "halted": True, "halted_shards": [1]}
    assert merged["symbols"]["ETHUSDT"]["halted_shards"] == []
    assert all(type(value) is int for value in merged["book"].values())


def _symbol_row(symbol: str, halted: bool, max_leverage: int = 100) -> dict:
    return {"symbol": symbol, "price_decimals": 2, "qty_decimals": 8, "max_leverage": max_leverage,
            "spread_bps": 2, "min_qty": "0.00001", "maintenance_ratio": "0.0000", "halted": halted,
            "bid": "1.00", "ask": "1.01", "quote_ts": 5}


def test_symbols_of_several_shards_name_the_halted_ones_and_those_out_of_step() -> None:
    rows = [_symbol_row("BTCUSDT", True), _symbol_row("ETHUSDT", False)]
    assert merged_symbols([rows]) is rows
    other = [dict(_symbol_row("BTCUSDT", False), bid="1.02", quote_ts=6), _symbol_row("ETHUSDT", False, 50)]
    merged = merged_symbols([rows, other])
    assert [(row["symbol"], row["halted"], row["halted_shards"], row["differing_shards"]) for row in merged] == [
        ("BTCUSDT", True, [0], []), ("ETHUSDT", False, [], [1])]
    assert merged[0]["bid"] == "1.00"              # shard 0's quote; a later tick is no difference


def _account(account_id: int) -> dict:
    return {"account_id": str(account_id)}


def test_account_scans_of_several_shards_merge_in_id_order_up_to_what_every_shard_looked_at() -> None:
    # shard 0 (even ids) stopped at 4 (its limit), shard 1 (odd ids) looked at all it has
    merged = merged_scan([([_account(2), _account(4)], 4), ([_account(1), _account(3), _account(5)], None)])
    assert merged == ([_account(1), _account(2), _account(3), _account(4)], 4)   # 5 comes with the next call
    assert merged_scan([([_account(2)], None), ([_account(1)], None)]) == ([_account(1), _account(2)], None)
    assert merged_scan([([], 4000), ([_account(1)], 2001)]) == ([_account(1)], 2001)


def test_a_position_id_names_the_shard_that_opened_it() -> None:
    assert [redis_edge.shard_of_position(position_id) for position_id in (
        1, SHARD_ID_SPAN, SHARD_ID_SPAN + 1, 2 * SHARD_ID_SPAN, 7 * SHARD_ID_SPAN + 9)] == [0, 0, 1, 1, 7]


async def test_a_shard_client_sends_everything_to_its_shard() -> None:
    bus = redis_edge.RedisBus("redis://127.0.0.1:1/0")
    bus.connected = True                            # queued only: nothing is flushed here
    core = CoreConfig(instruments=DEFAULT_INSTRUMENTS)
    remote = redis_edge.RemoteEngineHandle(bus=bus, core=core, shards=3)
    halt = HaltSymbol(symbol="BTCUSDT", operator_id=1, reason="outage")
    clients = redis_edge.shard_clients(remote)
    assert [client.shard for client in clients] == [0, 1, 2]
    for client in clients:
        client.send_nowait(Request(halt, ReplySlot()))
    remote.on_shard(2).send_nowait(Request(halt, ReplySlot()))
    assert [len(items) for items in remote._outbox] == [1, 1, 2]
    with pytest.raises(ValueError):
        remote.on_shard(3)
    single = redis_edge.RemoteEngineHandle(bus=bus, core=core, shards=1)
    assert redis_edge.shard_clients(single) == [single]      # one engine: the handle itself


async def test_a_remote_handle_starts_from_the_engines_instruments_and_follows_their_changes(tmp_path, url):
    """A process started after an instrument change must not trade on the configured values, and
    one running follows a change made through another process (the events stream)."""
    engine = Engine(CoreConfig(instruments=DEFAULT_INSTRUMENTS))
    engine.submit(UpdateInstrument(symbol="BTCUSDT", changes=[["max_leverage", 200]], operator_id=1,
                                   reason="promo"), ts=1)
    async with trio.open_nursery() as nursery:
        handle, journal, _stats = await _run_engine_and_edge(nursery, tmp_path, url, engine)
        bus = redis_edge.RedisBus(url, name="gateway")
        await bus.connect()
        assert await bus.ping()
        remote = redis_edge.RemoteEngineHandle(bus=bus, core=CoreConfig(instruments=DEFAULT_INSTRUMENTS),
                                               request_timeout_s=2.0)
        assert remote.instruments["BTCUSDT"].max_leverage == 100        # the configured value
        send, receive = trio.open_memory_channel[EventBatch](64)
        await nursery.start(functools.partial(redis_edge.events_reader, bus=bus,
                                              streams=[redis_edge.events_stream()], send=send))

        async def fan_out() -> None:
            async for batch in receive:
                remote.publish(batch)
        nursery.start_soon(fan_out)
        cfg = load_config(environ={})
        gateway = Gateway(handle=remote, store=None, candles=None, cfg=cfg, tokens=None,
                          settings=GatewaySettings.from_config(cfg), metrics=GatewayMetrics())
        stream_server = WsServer(handle=remote, options=WsOptions.from_config(cfg), tokens=TokenIssuer(b"k" * 32))
        copy = remote.instruments
        await nursery.start(remote.run)
        with trio.fail_after(5):
            while copy["BTCUSDT"].max_leverage != 200:
                await trio.sleep(0.01)
        reply = await remote.request(UpdateInstrument(symbol="ETHUSDT", changes=[["min_qty", 5000], ["spread_bps", 9]],
                                                      operator_id=1, reason="vol"))
        assert type(reply.events[0]).__name__ == "InstrumentUpdated"
        with trio.fail_after(5):
            while (copy["ETHUSDT"].min_qty, copy["ETHUSDT"].spread_bps) != (5000, 9):
                await trio.sleep(0.01)
            while remote.instrument_refreshes < 2:  # and it asked the engine again after the event
                await trio.sleep(0.01)
        assert copy == handle.engine.instruments
        # the gateway (order checks at the edge, /instruments) and the stream server hold this copy
        assert gateway.instruments is copy and stream_server.instruments is copy
        assert remote.statistics()["instrument_refreshes"] >= 2
        await remote.cleanup()
        nursery.cancel_scope.cancel()
    journal.close()
