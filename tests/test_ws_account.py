"""Issue 16 on the WebSocket ``account`` channel: throttled account summaries, margin call,
stop-out, and the fees of a closed position (the real engine, journal and stream server)."""

from __future__ import annotations

import trio

from exness_actors.commands import OpenAccount
from actors.ws._summaries import SummaryTracker, chunked_by_shard, summary_key
from ws_helpers import data_of, is_summary, load_schema, running_stack, schema_errors, summaries_of

BTC = "quotes:BTCUSDT"


async def open_cross(stack, account_id: int, account_type: str = "standard", deposit_cents: int = 100_000) -> str:
    reply = await stack.handle.request(OpenAccount(account_id=account_id, account_type=account_type,
                                                   initial_deposit=deposit_cents))
    assert type(reply.events[0]).__name__ == "AccountOpened", reply.events
    return stack.tokens.issue_access(account_id, account_id)


async def summary_where(client, predicate, timeout: float = 5.0) -> dict:
    message, _ = await client.recv_until(lambda m: is_summary(m) and predicate(m["data"]), timeout)
    return message["data"]


async def test_a_cross_account_sees_its_summary_margin_call_and_stop_out(tmp_path):
    async with running_stack(tmp_path) as stack:
        token = await open_cross(stack, 7)                      # standard: call 60 %, stop-out 0 %
        await stack.quote(6_500_000, 6_500_000)                 # BTC spread 2 bps: bid 64987.00, ask 65013.00
        async with stack.client() as client:
            await client.auth(token)
            await client.subscribe("account")
            first = await summary_where(client, lambda d: True)
            assert first == {**first, "balance": "1000.00", "equity": "1000.00", "used_margin": "0.00",
                             "free_margin": "1000.00", "margin_level": None, "account_type": "standard",
                             "margin_mode": "cross", "margin_call_level": "60.00", "stop_out_level": "0.00",
                             "in_margin_call": False, "currency": "USD", "unrealized_pnl": "0.00"}

            placed = await client.order("o1", "place", symbol="BTCUSDT", side="buy", type="market",
                                        margin="500.00", leverage=10)
            assert placed["ok"], placed
            qty = placed["position"]["qty"]
            opened = await summary_where(client, lambda d: d["used_margin"] == "500.00")
            assert opened["margin_level"] is not None and opened["in_margin_call"] is False

            await stack.quote(6_000_000, 6_000_000)             # equity moves with the quote
            moved = await summary_where(client, lambda d: d["equity"] != opened["equity"])
            assert moved["used_margin"] == "500.00" and moved["unrealized_pnl"].startswith("-")

            await stack.quote(5_550_000, 5_550_000)             # ~ -730: equity ~270 <= 60 % of 500
            call, _ = await client.recv_until(lambda m: m.get("data", {}).get("event") == "margin_call")
            await stack.quote(5_560_000, 5_560_000)             # still called: no second margin call
            await stack.quote(5_000_000, 5_000_000)             # ~ -1150: equity < 0, stop-out
            closed, before = await client.recv_until(
                lambda m: m.get("data", {}).get("event") == "position_closed")
            after = await summary_where(client, lambda d: d["used_margin"] == "0.00")
    events = data_of(client.received, "account")
    names = [m["data"]["event"] for m in events]
    assert names.count("margin_call") == 1 and names.count("stop_out") == 1
    assert names.index("margin_call") < names.index("stop_out") < names.index("position_closed")
    data = call["data"]
    assert set(data) == {"event", "margin_level", "equity", "used_margin", "ts"}
    assert data["used_margin"] == "500.00" and 0 < float(data["margin_level"]) <= 60
    stop_out = events[names.index("stop_out")]["data"]
    assert float(stop_out["equity"]) <= 0 and stop_out["used_margin"] == "500.00"
    position = closed["data"]["position"]
    assert position["close_reason"] == "stop_out" and position["qty"] == qty
    assert (position["commission"], position["swap"]) == ("0.00", "0.00")       # standard: spread only
    assert after["margin_level"] is None and after["in_margin_call"] is False
    assert after["equity"] == after["balance"] and not after["balance"].startswith("-")   # protected
    assert [m["seq"] for m in events] == list(range(1, len(events) + 1))       # summaries take no seq
    assert all("seq" not in m for m in client.received if is_summary(m))
    server_schema = load_schema("server.json")
    for frame in stack.seen:
        assert schema_errors(frame, server_schema) == [], frame


async def test_a_raw_spread_close_carries_its_commission(tmp_path):
    async with running_stack(tmp_path) as stack:
        token = await open_cross(stack, 8, "raw_spread", deposit_cents=1_000_000)
        await stack.quote(6_500_000, 6_500_000)
        async with stack.client() as client:
            await client.auth(token)
            await client.subscribe("account")
            placed = await client.order("o1", "place", symbol="BTCUSDT", side="sell", type="market",
                                        margin="1000.00", leverage=10)
            assert placed["ok"], placed
            closing = await client.order("o2", "close", position_id=placed["position"]["id"])
            assert closing["ok"], closing
            # the close's events and its order_result come from two server tasks, in either order
            closed = await client.first_match(lambda m: m.get("data", {}).get("event") == "position_closed")
            while sum(m.get("data", {}).get("kind") == "commission" for m in client.received) < 2:
                await client.recv_until(lambda m: m.get("data", {}).get("kind") == "commission")  # the close's
    events = [m["data"] for m in data_of(client.received, "account")]
    charged = [e for e in events if e["event"] == "balance_changed" and e["kind"] == "commission"]
    assert len(charged) == 2                                 # at open and at close
    position = closed["data"]["position"]
    commission = -sum(float(e["free_delta"]) for e in charged)
    assert float(position["commission"]) == commission > 0 and position["swap"] == "0.00"
    assert position["close_reason"] == "user"


async def test_an_isolated_close_reports_zero_fees(tmp_path):
    async with running_stack(tmp_path) as stack:
        token = await stack.account(3)
        await stack.quote(6_500_000, 6_500_100)
        async with stack.client() as client:
            await client.auth(token)
            await client.subscribe("account")
            first = await summary_where(client, lambda d: True)
            assert (first["margin_mode"], first["account_type"], first["margin_call_level"]) == ("isolated", None, None)
            placed = await client.order("o1", "place", symbol="BTCUSDT", side="buy", type="market",
                                        margin="100.00", leverage=100)
            await stack.quote(6_300_000, 6_300_100)               # liquidation
            closed, _ = await client.recv_until(lambda m: m.get("data", {}).get("event") == "position_closed")
    assert closed["data"]["position"]["position_id"] == placed["position"]["id"]
    assert (closed["data"]["position"]["commission"], closed["data"]["position"]["swap"]) == ("0.00", "0.00")


async def test_summaries_are_throttled_and_the_last_value_wins(tmp_path):
    async with running_stack(tmp_path, ws={"account_summary_interval_ms": 1000}) as stack:
        token = await open_cross(stack, 9)
        await stack.quote(6_500_000, 6_500_000)
        async with stack.client() as client:
            await client.auth(token)
            await client.subscribe("account")
            placed = await client.order("o1", "place", symbol="BTCUSDT", side="buy", type="market",
                                        margin="100.00", leverage=5)
            assert placed["ok"]
            await summary_where(client, lambda d: d["used_margin"] == "100.00")
            started = trio.current_time()
            for step in range(1, 21):                          # 20 quotes, each moving the equity
                await stack.quote(6_500_000 + step * 1_000, 6_500_000 + step * 1_000)
            quoting = trio.current_time() - started
            last = (await stack.handle.query(lambda engine: (engine.account_summary(9),)))[0]
            final_equity = f"{last['equity'] // 100}.{last['equity'] % 100:02d}"
            await summary_where(client, lambda d: d["equity"] == final_equity, timeout=5)
            elapsed = trio.current_time() - started
    during = [s for s in summaries_of(client.received) if s["used_margin"] == "100.00"]
    # one round per second at most: the first summary, then one per interval that passed
    assert len(during) <= 2 + int(elapsed), (len(during), elapsed, quoting)
    assert during[-1]["equity"] == final_equity


async def test_only_watched_accounts_are_summarised(tmp_path):
    async with running_stack(tmp_path) as stack:
        watched = await open_cross(stack, 11)
        other = await open_cross(stack, 12)
        await stack.quote(6_500_000, 6_500_000)
        async with stack.client() as client, stack.client() as trader:
            await trader.auth(other)
            placed = await trader.order("b1", "place", symbol="BTCUSDT", side="buy", type="market",
                                        margin="100.00", leverage=5)   # 12 holds BTC, nobody watches it
            assert placed["ok"]
            await client.auth(watched)
            await client.subscribe("account")
            await summary_where(client, lambda d: True)
            for step in range(5):
                await stack.quote(6_400_000 - step * 1000, 6_400_000 - step * 1000)
            await trio.sleep(0.3)
            tracker = stack.server._summaries
            assert 12 not in tracker.held and all(12 not in ids for ids in tracker.holders.values())
            assert stack.server.statistics()["summaries_sent"] >= 1


def test_the_tracker_makes_due_only_dirty_accounts_and_holders_of_moved_symbols():
    tracker = SummaryTracker()
    tracker.hold(1, ("BTCUSDT",))
    tracker.hold(2, ("BTCUSDT", "ETHUSDT"))
    tracker.hold(3, ())
    tracker.moved.add("ETHUSDT")
    tracker.dirty.add(3)
    assert tracker.take_due(lambda account: True) == [2, 3]
    assert tracker.take_due(lambda account: True) == []
    tracker.moved.add("BTCUSDT")
    assert tracker.take_due(lambda account: account != 1) == [2]   # 1 lost its subscribers
    assert 1 not in tracker.held and tracker.holders == {"BTCUSDT": {2}, "ETHUSDT": {2}}
    tracker.hold(2, ())
    assert tracker.holders == {} and tracker.held == {}


def test_summaries_are_asked_per_shard_in_chunks_and_compared_without_ts():
    assert chunked_by_shard([1, 2, 3, 4, 5], lambda account: account % 2, size=2) == [[2, 4], [1, 3], [5]]
    assert summary_key({"equity": "1.00", "ts": 1}) == summary_key({"equity": "1.00", "ts": 2})
    assert summary_key({"equity": "1.00", "ts": 1}) != summary_key({"equity": "1.01", "ts": 1})


def test_each_close_gets_the_fees_that_follow_it():
    from actors.ws._format import fees_by_position
    from exness_actors.events import BalanceChanged, PositionClosed, PositionFees

    def closed(position_id: int) -> PositionClosed:
        return PositionClosed(position_id, 1, "BTCUSDT", "buy", "stop_out", 100, 1, 100, 10, -5, 5, 0, 0)

    ledger = BalanceChanged(1, "position_close", 5, -10, 5, 0, "7", 0)
    events = [closed(7), ledger, PositionFees(7, 1, 30, -2), closed(8), ledger, PositionFees(8, 1, 4, 0),
              closed(7), PositionFees(7, 1, 1, 1), closed(9)]
    fees = fees_by_position(events)
    assert fees == {7: [(30, -2), (1, 1)], 8: [(4, 0)]}


async def test_a_failing_summary_view_costs_the_summaries_not_the_server(tmp_path, monkeypatch):
    from actors.wire import views

    def broken(engine, account_ids):
        raise KeyError("boom")

    async with running_stack(tmp_path) as stack:
        token = await open_cross(stack, 21)
        monkeypatch.setattr(views, "account_summaries", broken)
        async with stack.client() as client:
            await client.auth(token)
            await client.subscribe("account", BTC)
            with trio.fail_after(5):
                while stack.server.statistics()["summary_failures"] == 0:
                    await trio.sleep(0.01)
            await stack.quote(6_500_000, 6_500_100)
            quote, _ = await client.recv_until(lambda m: m.get("channel") == BTC)   # still serving
    assert quote["data"]["symbol"] == "BTCUSDT"
