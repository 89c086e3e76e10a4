"""The WebSocket server's streams over real sockets: quotes, seq, resume/resync, candles, the
account channel's privacy, and the server re-syncing its clients when it fell behind the engine.

Every test runs the real system (``supervisor.run_system`` with no feed; the test pushes quotes)
and the WS server on a free port of 127.0.0.1 (:func:`ws_helpers.running_stack`).
"""

from __future__ import annotations

import json

import trio

from actors.auth_tokens import TokenIssuer
from actors.ws.server import WsOptions, WsServer
from exness_actors.commands import Quote
from exness_actors.money import format_fixed
from ws_helpers import SECRET, data_of, next_event, running_stack

BTC = "quotes:BTCUSDT"
ETH = "quotes:ETHUSDT"


async def test_subscribe_and_receive_quotes(tmp_path):
    async with running_stack(tmp_path) as stack, stack.client() as client:
        ack = await client.subscribe(BTC)
        assert ack["channels"] == [BTC] and ack["seq"] == {BTC: 0} and ack["epoch"]

        replies = [await stack.quote(6_500_000 + i, 6_500_100 + i) for i in range(5)]
        messages = [await client.recv() for _ in range(5)]

        assert [m["channel"] for m in messages] == [BTC] * 5
        assert [m["seq"] for m in messages] == [1, 2, 3, 4, 5]
        for reply, message in zip(replies, messages):
            quote = reply.events[0]
            assert message["engine_seq"] == reply.seq
            assert message["data"] == {"symbol": "BTCUSDT", "bid": format_fixed(quote.bid, 2),
                                       "ask": format_fixed(quote.ask, 2), "ts": quote.ts // 1_000_000}
        assert messages[0]["data"]["bid"] == "64987.00"        # decimal strings, 2bps markup

        await stack.quote(300_000, 300_100, symbol="ETHUSDT")  # not subscribed: not delivered
        await stack.quote(6_600_000, 6_600_100)
        message = await client.recv()
        assert (message["channel"], message["seq"]) == (BTC, 6)

        async with stack.client() as late:                     # a new subscriber gets the last quote at once
            ack = await late.subscribe(BTC, ETH)
            assert ack["seq"] == {BTC: 6, ETH: 1}
            current = {(await late.recv())["channel"] for _ in range(2)}
            assert current == {BTC, ETH}


async def test_seq_is_gapless_per_channel_and_frames_batch_messages(tmp_path):
    async with running_stack(tmp_path) as stack, stack.client() as client:
        await client.subscribe(BTC, ETH)
        for i in range(300):   # fire and forget: the engine takes them in a few large batches
            stack.handle.send_nowait(Quote(symbol="BTCUSDT" if i % 2 else "ETHUSDT",
                                           bid=6_500_000 + i, ask=6_500_100 + i))
        messages = [await client.recv() for _ in range(300)]
        for channel in (BTC, ETH):
            seqs = [m["seq"] for m in messages if m["channel"] == channel]
            assert seqs == list(range(1, 151))
            engine_seqs = [m["engine_seq"] for m in messages if m["channel"] == channel]
            assert engine_seqs == sorted(engine_seqs)
        assert client.frames < 300                      # several messages rode in one frame


async def test_resume_with_since_replays_what_was_missed(tmp_path):
    async with running_stack(tmp_path) as stack:
        async with stack.client() as first:
            ack = await first.subscribe(BTC)
            for i in range(3):
                await stack.quote(6_500_000 + i, 6_500_100 + i)
            seen = [await first.recv() for _ in range(3)]
        assert seen[-1]["seq"] == 3
        missed = [await stack.quote(6_510_000 + i, 6_510_100 + i) for i in range(4)]   # while away

        async with stack.client() as again:
            ack2 = await again.subscribe(BTC, since={BTC: 3}, epoch=ack["epoch"])
            assert ack2["seq"] == {BTC: 7}
            replayed = [await again.recv() for _ in range(4)]
            assert [m["seq"] for m in replayed] == [4, 5, 6, 7]
            assert [m["engine_seq"] for m in replayed] == [reply.seq for reply in missed]
            await stack.quote(6_520_000, 6_520_100)
            assert (await again.recv())["seq"] == 8          # then live, continuing the seq


async def test_resync_when_since_is_older_than_the_replay_buffer(tmp_path):
    async with running_stack(tmp_path, ws={"replay_size": 5}) as stack, stack.client() as client:
        for i in range(12):
            await stack.quote(6_500_000 + i, 6_500_100 + i)
        ack = await client.subscribe(BTC, since={BTC: 3})
        assert (await client.recv()) == {"channel": BTC, "op": "resync", "seq": 12,
                                          "reason": client.received[-1]["reason"]}
        await stack.quote(6_600_000, 6_600_100)
        assert (await client.recv())["seq"] == 13            # the stream goes on after the resync

        async with stack.client() as within:                 # inside the buffer: replayed
            await within.subscribe(BTC, since={BTC: 8})
            assert [(await within.recv())["seq"] for _ in range(5)] == [9, 10, 11, 12, 13]
        async with stack.client() as future:                 # a seq never issued: resync
            await future.subscribe(BTC, since={BTC: 99})
            assert (await future.recv())["op"] == "resync"
        async with stack.client() as other_run:              # since from another server run: resync
            await other_run.subscribe(BTC, since={BTC: 12}, epoch="not-" + ack["epoch"])
            assert (await other_run.recv())["op"] == "resync"


async def test_account_channel_needs_auth_and_carries_only_that_accounts_events(tmp_path):
    async with running_stack(tmp_path) as stack:
        token_a = await stack.account(1)
        token_b = await stack.account(2)
        await stack.quote(6_500_000, 6_500_100)
        async with stack.client() as a, stack.client() as b:
            refused = await a.subscribe("account")
            assert (refused["op"], refused["code"]) == ("error", "AUTH_REQUIRED")
            await a.auth(token_a)
            await b.auth(token_b)
            await a.subscribe("account")
            await b.subscribe("account")

            placed = await a.order("a1", "place", symbol="BTCUSDT", side="buy", type="market",
                                   margin="100.00", leverage=100)
            pending = await b.order("b1", "place", symbol="BTCUSDT", side="buy", type="limit",
                                    price="60000.00", margin="50.00", leverage=10)
            cancelled = await b.order("b2", "cancel", order_id=pending["order"]["id"])
            assert placed["ok"] and pending["ok"] and cancelled["ok"]
            await stack.quote(6_300_000, 6_300_100)           # crosses A's liquidation price

            liquidated, _ = await a.recv_until(lambda m: m.get("channel") == "account"
                                               and m["data"]["event"] == "position_closed")
            assert liquidated["data"]["position"]["close_reason"] == "liquidation"
            assert liquidated["data"]["position"]["position_id"] == placed["position"]["id"]
            await a.recv_until(lambda m: m.get("data", {}).get("event") == "balance_changed"
                               and m["data"]["kind"] == "position_close")
            await b.first_match(lambda m: m.get("data", {}).get("kind") == "order_release")

    events_a = data_of(a.received, "account")
    events_b = data_of(b.received, "account")
    assert [m["data"]["event"] for m in events_a] == [
        "order_accepted", "balance_changed", "position_opened", "position_closed", "balance_changed"]
    assert [m["data"]["event"] for m in events_b] == [
        "order_accepted", "balance_changed", "order_cancelled", "balance_changed"]
    for events in (events_a, events_b):
        assert [m["seq"] for m in events] == list(range(1, len(events) + 1))
    # each stream names only its own account's orders and positions, with its own balances
    assert ids_in(events_a) == ({placed["order"]["id"]}, {placed["position"]["id"]})
    assert ids_in(events_b) == ({pending["order"]["id"]}, set())
    assert events_a[1]["data"]["free"] == "9900.00" and events_b[1]["data"]["free"] == "9950.00"


def ids_in(messages: list[dict]) -> tuple[set, set]:
    orders, positions = set(), set()
    for message in messages:
        data = message["data"]
        for key, bucket in (("order_id", orders), ("position_id", positions)):
            if key in data:
                bucket.add(data[key])
        if "order" in data:
            orders.add(data["order"]["id"])
        if "position" in data:
            positions.add(data["position"].get("id") or data["position"]["position_id"])
    return orders, positions


async def test_candles_live_and_closed_with_larger_intervals_folded(tmp_path):
    hour = 1_699_999_200 * 1_000_000_000                   # an hour boundary (UTC)
    now = [hour]
    minute = 60 * 1_000_000_000
    async with running_stack(tmp_path, clock=lambda: now[0]) as stack, stack.client() as client:
        await client.subscribe("candles:BTCUSDT:1m", "candles:BTCUSDT:5m")
        bids = []
        for offset_min, offset_s, raw in [(0, 1, 6_500_000), (0, 30, 6_510_000), (1, 5, 6_490_000),
                                          (4, 10, 6_520_000), (5, 0, 6_530_000)]:
            now[0] = hour + offset_min * minute + offset_s * 1_000_000_000
            reply = await stack.quote(raw, raw + 100)
            bids.append(format_fixed(reply.events[0].bid, 2))
        # the 5m candle of the next bucket is the last message the five quotes produce
        await client.recv_until(lambda m: m.get("channel") == "candles:BTCUSDT:5m"
                                and m["data"]["ts"] == (hour + 5 * minute) // 1_000_000)

    one = data_of(client.received, "candles:BTCUSDT:1m")
    five = data_of(client.received, "candles:BTCUSDT:5m")
    ms = lambda m: (hour + m * minute) // 1_000_000
    assert [(c["data"]["ts"], c["data"]["volume"], c["data"]["closed"]) for c in one] == [
        (ms(0), 1, False), (ms(0), 2, False), (ms(0), 2, True), (ms(1), 1, False), (ms(1), 1, True),
        (ms(4), 1, False), (ms(4), 1, True), (ms(5), 1, False)]
    assert [(c["data"]["ts"], c["data"]["volume"], c["data"]["closed"]) for c in five] == [
        (ms(0), 1, False), (ms(0), 2, False), (ms(0), 3, False), (ms(0), 4, False), (ms(0), 4, True),
        (ms(5), 1, False)]
    closed_five = five[4]["data"]
    assert (closed_five["open"], closed_five["high"], closed_five["low"], closed_five["close"]) == (
        bids[0], bids[3], bids[2], bids[3])
    assert [c["seq"] for c in five] == [1, 2, 3, 4, 5, 6]


async def test_server_that_fell_behind_resubscribes_and_tells_clients_to_resync(tmp_path):
    async with running_stack(tmp_path) as stack, stack.client() as client:
        token = await stack.account(5)
        await client.auth(token)
        await client.subscribe(BTC, "account")
        await stack.quote(6_500_000, 6_500_100)
        assert (await next_event(client))["seq"] == 1
        # What the engine does to a lossy subscriber whose buffer is full (actors/engine/actor.py):
        [subscription] = [s for s in stack.handle.subscriptions if s.name == "ws"]
        subscription.lagged = True
        stack.handle.unsubscribe(subscription)
        resyncs = [await next_event(client) for _ in range(2)]   # every quote and account channel
        assert sorted((m["channel"], m["op"], m["seq"]) for m in resyncs) == [
            ("account", "resync", 1), (BTC, "resync", 2)]
        with trio.fail_after(5):
            while not [s for s in stack.handle.subscriptions if s.name == "ws"]:
                await trio.sleep(0.01)
        await stack.quote(6_520_000, 6_520_100)
        after = await next_event(client)
        assert (after["channel"], after["seq"]) == (BTC, 3) and "data" in after   # resubscribed
    assert stack.server.statistics()["server_lags"] == 1


async def test_a_server_started_mid_hour_folds_the_hours_earlier_minutes(tmp_path):
    hour = 1_699_999_200 * 1_000_000_000
    minute = 60 * 1_000_000_000
    now = [hour]
    async with running_stack(tmp_path, clock=lambda: now[0]) as stack:
        for offset in range(3):                            # minutes 0, 1 and 2 of the hour
            now[0] = hour + offset * minute
            await stack.quote(6_500_000 + offset * 10_000, 6_500_100 + offset * 10_000)
        candles = stack.system.actors["candles"]
        with trio.fail_after(5):                           # the candles actor has seen minute 2
            while getattr(candles.builder.live("BTCUSDT"), "open_time", None) != hour + 2 * minute:
                await trio.sleep(0.01)
        live = candles.builder.live("BTCUSDT").copy()      # minute 2, still open
        # a fresh server (as after a restart) sees minute 2 first: minutes 0-1 come from history
        server = WsServer(handle=stack.handle, options=WsOptions.from_config(stack.cfg),
                          tokens=TokenIssuer(SECRET.encode()), candles=candles)
        channel = server.channels.get(("candles", "BTCUSDT", "1h"))
        folder = await server._seed_folder(live)
        [(_, hourly)] = [pair for pair in folder.on_candle(live) if pair[0] == "1h"]
        server._publish_candle("BTCUSDT", "1h", hourly)
    message = json.loads(channel.last_data)
    assert message["data"]["ts"] == hour // 1_000_000 and message["data"]["volume"] == 3
    assert message["data"]["closed"] is False


def test_a_bucket_that_ends_in_a_quiet_gap_is_closed_by_the_next_candle():
    from actors.ws._candles import IntervalFolder
    from exness_actors.candles import Candle

    minute = 60 * 1_000_000_000
    hour = 1_699_999_200 * 1_000_000_000
    folder = IntervalFolder()
    for offset, price in ((0, 100), (1, 110)):               # minutes 0 and 1 close, then silence
        folder.on_candle(Candle("BTCUSDT", "1m", hour + offset * minute, price, price, price, price, 2, True))
    published = folder.on_candle(Candle("BTCUSDT", "1m", hour + 7 * minute, 90, 90, 90, 90, 1, False))
    five = [candle for interval, candle in published if interval == "5m"]
    assert [(c.open_time, c.volume, c.closed, c.open, c.close) for c in five] == [
        (hour, 4, True, 100, 110),                           # bucket 0–5 closed late, whole
        (hour + 5 * minute, 1, False, 90, 90)]               # bucket 5–10 live
    hourly = [candle for interval, candle in published if interval == "1h"]
    assert [(c.open_time, c.volume, c.closed) for c in hourly] == [(hour, 5, False)]


async def test_the_account_channel_resumes_with_since_across_reconnects(tmp_path):
    order = {"symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "10.00", "leverage": 10}
    async with running_stack(tmp_path) as stack:
        token = await stack.account(1)
        await stack.quote(6_500_000, 6_500_100)
        async with stack.client() as first:
            await first.auth(token)
            ack = await first.subscribe("account")
            await first.order("o1", "place", **order)
            seen = await first.first_match(lambda m: m.get("data", {}).get("event") == "position_opened")
        async with stack.client() as trader:                # activity while the first one is away
            await trader.auth(token)
            missed = await trader.order("o2", "place", **order)
        async with stack.client() as again:
            await again.auth(token)
            await again.subscribe("account", since={"account": seen["seq"]}, epoch=ack["epoch"])
            replayed = [await again.recv() for _ in range(3)]
    assert [m["seq"] for m in replayed] == [seen["seq"] + 1, seen["seq"] + 2, seen["seq"] + 3]
    assert [m["data"]["event"] for m in replayed] == ["order_accepted", "balance_changed", "position_opened"]
    assert replayed[0]["data"]["order"]["id"] == missed["order"]["id"]
