"""The WebSocket order lane: the HTTP API's validation and outcomes over ``{"op":"order"}``."""

from __future__ import annotations

from decimal import Decimal

from actors.engine.messages import Overloaded
from ws_helpers import running_stack

MARKET = {"symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "100.00", "leverage": 10}


async def test_orders_need_auth(tmp_path):
    async with running_stack(tmp_path) as stack, stack.client() as client:
        result = await client.order("x1", "place", **MARKET)
    assert result == {"op": "order_result", "id": "x1", "ok": False, "error": {
        "code": "AUTH_REQUIRED", "message": result["error"]["message"], "details": {}}}


async def test_place_modify_cancel_and_close(tmp_path):
    async with running_stack(tmp_path) as stack:
        token = await stack.account(1, deposit_cents=100_000)          # 1000.00 USD
        await stack.quote(6_500_000, 6_500_100)
        async with stack.client() as client:
            await client.auth(token)

            pending = await client.order("p1", "place", symbol="BTCUSDT", side="buy", type="limit",
                                         price="60000.00", margin="50.00", leverage=10)
            assert pending["ok"] and pending["position"] is None
            order = pending["order"]
            assert (order["status"], order["type"], order["price"], order["margin"]) == (
                "pending", "limit", "60000.00", "50.00")
            modified = await client.order("m1", "modify_order", order_id=order["id"], price="61000.00",
                                          stop_loss="55000.00")
            assert modified["ok"]
            assert (modified["order"]["price"], modified["order"]["stop_loss"]) == ("61000.00", "55000.00")
            cancelled = await client.order("c1", "cancel", order_id=order["id"])
            assert cancelled["ok"] and cancelled["order"]["status"] == "cancelled"
            assert cancelled["order"]["cancel_reason"] == "user" and cancelled["order"]["price"] == "61000.00"
            again = await client.order("c2", "cancel", order_id=order["id"])
            assert not again["ok"] and again["error"]["code"] == "ORDER_NOT_PENDING"

            filled = await client.order("p2", "place", **MARKET, client_order_id="first")
            assert filled["ok"] and filled["order"]["status"] == "filled"
            assert filled["order"]["position_id"] == filled["position"]["id"]
            assert filled["order"]["fill_price"] == filled["order"]["price"]
            position = filled["position"]
            assert (position["side"], position["open_price"], position["margin"], position["leverage"]) == (
                "buy", filled["order"]["price"], "100.00", 10)

            protected = await client.order("mp", "modify_position", position_id=position["id"],
                                           take_profit="70000.00")
            assert protected["ok"] and protected["position"]["take_profit"] == "70000.00"
            assert protected["position"]["unrealized_pnl"] is not None     # as GET /positions/{id}
            topped_up = await client.order("am", "add_margin", position_id=position["id"], amount="10.00")
            assert topped_up["ok"] and topped_up["position"]["margin"] == "110.00"

            half = (Decimal(position["qty"]) / 2).quantize(Decimal("0.00000001"))
            partial = await client.order("pc", "close", position_id=position["id"], qty=str(half))
            assert partial["ok"] and partial["position"]["qty"] == str(half)
            assert Decimal(partial["position"]["remaining_qty"]) == Decimal(position["qty"]) - half
            closed = await client.order("fc", "close", position_id=int(position["id"]))   # ids as numbers too
            assert closed["ok"] and closed["position"]["remaining_qty"] == "0.00000000"
            assert closed["position"]["close_reason"] == "user" and closed["position"]["close_price"] == "64987.00"
            gone = await client.order("fc2", "close", position_id=position["id"])
            assert not gone["ok"] and gone["error"]["code"] == "UNKNOWN_POSITION"

            # a repeated client_order_id answers the original outcome and creates nothing
            duplicate = await client.order("p3", "place", **MARKET, client_order_id="first")
            assert duplicate["ok"] and duplicate["duplicate"] is True
            assert duplicate["order"]["id"] == filled["order"]["id"]
            assert duplicate["order"]["status"] == "filled"
            positions = await stack.handle.query(lambda engine: engine.open_positions(1))
            assert positions == []


async def test_validation_errors_name_the_field(tmp_path):
    async with running_stack(tmp_path) as stack:
        token = await stack.account(1)
        await stack.quote(6_500_000, 6_500_100)
        async with stack.client() as client:
            await client.auth(token)
            cases = [
                ({**MARKET, "margin": "10.001"}, "place", "margin"),
                ({**MARKET, "side": "up"}, "place", "side"),
                ({**MARKET, "leverage": 1000}, "place", "leverage"),
                ({**MARKET, "leverage": "ten"}, "place", "leverage"),
                ({**MARKET, "colour": "red"}, "place", "colour"),
                ({**MARKET, "margin": None}, "place", "margin"),
                ({**MARKET, "type": "limit"}, "place", "price"),
                ({"position_id": "abc"}, "close", "position_id"),
                ({}, "cancel", "order_id"),
                ({"order_id": "1", "price": "1.00"}, "cancel", "price"),
                ({**MARKET, "type": "limit", "price": "６００００"}, "place", "price"),
                ({**MARKET, "margin": "1_0"}, "place", "margin"),
                ({**MARKET, "margin": "١٠"}, "place", "margin"),
                ({"position_id": "１"}, "close", "position_id"),
                ({"order_id": "1_0"}, "cancel", "order_id"),
            ]
            for index, (fields, action, field) in enumerate(cases):
                result = await client.order(f"v{index}", action, **fields)
                assert not result["ok"], (fields, result)
                assert result["error"]["code"] == "VALIDATION_ERROR", (fields, result)
                assert result["error"]["details"]["field"] == field, (fields, result)
                assert field in result["error"]["message"]
            bad_action = await client.order("va", "explode")
            assert bad_action["error"]["details"]["field"] == "action"
            await client.send({"op": "order", "action": "place", **MARKET})      # no correlation id
            no_id, _ = await client.recv_until(lambda m: m.get("op") == "order_result")
            assert no_id["id"] is None and no_id["error"]["details"]["field"] == "id"


async def test_business_rejections_keep_the_core_reason(tmp_path):
    async with running_stack(tmp_path) as stack:
        token = await stack.account(1, deposit_cents=10_000)          # 100.00 USD
        other = await stack.account(2)
        await stack.quote(6_500_000, 6_500_100)
        async with stack.client() as client, stack.client() as intruder:
            await client.auth(token)
            await intruder.auth(other)
            cases = [
                ({**MARKET, "margin": "500.00"}, "INSUFFICIENT_BALANCE"),
                ({**MARKET, "type": "limit", "price": "66000.00"}, "INVALID_PRICE"),   # would fill at once
                ({**MARKET, "symbol": "DOGEUSDT"}, "UNKNOWN_SYMBOL"),
                ({**MARKET, "margin": "0.01", "leverage": 1}, "SIZE_TOO_SMALL"),
                ({**MARKET, "stop_loss": "70000.00"}, "INVALID_TPSL"),
            ]
            for index, (fields, code) in enumerate(cases):
                result = await client.order(f"b{index}", "place", **fields)
                assert not result["ok"] and result["error"]["code"] == code, (fields, result)
            poor = await client.order("m1", "place", **{**MARKET, "margin": "500.00"})
            assert poor["error"]["message"] == "free balance 100.00 is less than the margin 500.00"
            wrong_side = await client.order("m2", "place", **{**MARKET, "stop_loss": "70000.00"})
            assert wrong_side["error"]["message"] == "stop_loss must be below 64987.00"   # the marked-up bid

            rejected = await client.order("r1", "place", **{**MARKET, "margin": "500.00"}, client_order_id="k")
            repeat = await client.order("r2", "place", **MARKET, client_order_id="k")   # now affordable
            assert rejected["error"]["code"] == repeat["error"]["code"] == "INSUFFICIENT_BALANCE"
            assert repeat["duplicate"] is True

            mine = await client.order("o1", "place", **{**MARKET, "margin": "50.00"})
            limit = await client.order("o2", "place", symbol="BTCUSDT", side="sell", type="limit",
                                       price="70000.00", margin="10.00", leverage=5)
            # another account's ids are unknown to it, never revealed
            steal = await intruder.order("s1", "close", position_id=mine["position"]["id"])
            assert steal["error"]["code"] == "UNKNOWN_POSITION"
            cancel = await intruder.order("s2", "cancel", order_id=limit["order"]["id"])
            assert cancel["error"]["code"] == "UNKNOWN_ORDER"
            modify = await intruder.order("s3", "modify_order", order_id=limit["order"]["id"], price="71000.00")
            assert modify["error"]["code"] == "UNKNOWN_ORDER"
            still = await stack.handle.query(lambda engine: (len(engine.open_positions(1)),
                                                             len(engine.pending_orders(1))))
            assert still == (1, 1)


async def test_full_engine_inbox_is_an_overloaded_error(tmp_path, monkeypatch):
    async with running_stack(tmp_path) as stack:
        token = await stack.account(1)
        await stack.quote(6_500_000, 6_500_100)
        async with stack.client() as client:
            await client.auth(token)

            def full(command):       # what EngineHandle.send_nowait does when the inbox is full
                raise Overloaded("engine inbox is full")
            monkeypatch.setattr(stack.handle, "send_nowait", full)
            shed = await client.order("q1", "place", **MARKET)
            monkeypatch.undo()
            served = await client.order("q2", "place", **MARKET)
    assert shed["error"]["code"] == "OVERLOADED" and shed["error"]["details"]["retry_after_ms"] > 0
    assert served["ok"]


async def test_a_repeated_client_order_id_of_a_pending_order_answers_that_order(tmp_path):
    async with running_stack(tmp_path) as stack:
        token = await stack.account(1)
        await stack.quote(6_500_000, 6_500_100)
        async with stack.client() as client:
            await client.auth(token)
            limit = {"symbol": "BTCUSDT", "side": "buy", "type": "limit", "price": "60000.00",
                     "margin": "20.00", "leverage": 5, "client_order_id": "pending-1"}
            first = await client.order("l1", "place", **limit)
            again = await client.order("l2", "place", **limit)
            pending = await stack.handle.query(lambda engine: len(engine.pending_orders(1)))
    assert first["ok"] and again["ok"] and again["duplicate"] is True
    assert again["order"] == first["order"]          # the same pending order, as HTTP shows it
    assert again["position"] is None and pending == 1
