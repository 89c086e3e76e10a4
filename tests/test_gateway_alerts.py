"""HTTP tests of price alerts and the dead-man switch (issue 13), through the real app over a real
system (feed none: the tests push the quotes)."""

from __future__ import annotations

import trio

from exness_actors.events import AlertTriggered, DeadManSwitchFired, OrderCancelled
from gateway_helpers import API, running_gateway


async def test_an_alert_is_placed_listed_fires_once_and_is_gone(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        await h.quote_all()
        auth = await h.trader("alerts@example.com")
        _, alert = await h.call("POST", f"{API}/alerts", headers=auth, expect=201, json={
            "symbol": "btcusdt", "condition": "above", "price": "66000.00", "note": "breakout"})
        assert (alert["symbol"], alert["condition"], alert["price"], alert["note"]) == \
            ("BTCUSDT", "above", "66000.00", "breakout")
        _, listed = await h.call("GET", f"{API}/alerts", headers=auth, expect=200)
        assert listed == {"alerts": [alert]}
        subscription = h.system.handle.subscribe("alerts-test")
        await h.quote("BTCUSDT", "66100.00", "66110.00")
        fired = []
        with trio.fail_after(5):
            while not fired:
                batch = await subscription.receive.receive()
                fired += [e for _seq, _ts, events in batch.items for e in events if type(e) is AlertTriggered]
        assert str(fired[0].alert_id) == alert["id"] and fired[0].quote_price >= 6_600_000
        await h.quote("BTCUSDT", "66200.00", "66210.00")
        _, listed = await h.call("GET", f"{API}/alerts", headers=auth, expect=200)
        assert listed == {"alerts": []}
        status, body = await h.call("DELETE", f"{API}/alerts/{alert['id']}", headers=auth)
        assert status == 404 and body["error"]["code"] == "UNKNOWN_ALERT"


async def test_alert_input_errors_name_the_field_and_rejections_keep_the_core_reason(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        await h.quote_all()
        auth = await h.trader("alert-errors@example.com")
        for body, status, code, field in [
            ({"symbol": "BTCUSDT", "condition": "crosses", "price": "1.00"}, 400, "VALIDATION_ERROR", "condition"),
            ({"symbol": "BTCUSDT", "condition": "above", "price": "1.001"}, 400, "VALIDATION_ERROR", "price"),
            ({"symbol": "BTCUSDT", "condition": "above"}, 400, "VALIDATION_ERROR", "price"),
            ({"symbol": "BTCUSDT", "condition": "above", "price": "70000", "colour": 1}, 400, "VALIDATION_ERROR", "colour"),
            ({"symbol": "BTCUSDT", "condition": "above", "price": "70000", "note": "x" * 201}, 400, "VALIDATION_ERROR", "note"),
            ({"symbol": "BTCUSDT", "condition": "above", "price": "70000", "expires_at": "soon"}, 400, "VALIDATION_ERROR", "expires_at"),
            ({"symbol": "DOGEUSDT", "condition": "above", "price": "1.00"}, 400, "UNKNOWN_SYMBOL", "symbol"),
        ]:
            got, answer = await h.call("POST", f"{API}/alerts", headers=auth, json=body)
            assert (got, answer["error"]["code"]) == (status, code), (body, answer)
            assert answer["error"]["details"].get("field") == field, answer
        got, answer = await h.call("POST", f"{API}/alerts", headers=auth, json={
            "symbol": "BTCUSDT", "condition": "above", "price": "60000.00"})
        assert (got, answer["error"]["code"]) == (422, "INVALID_PRICE")
        got, answer = await h.call("DELETE", f"{API}/alerts/abc", headers=auth)
        assert (got, answer["error"]["code"]) == (404, "UNKNOWN_ALERT")
        got, _ = await h.call("GET", f"{API}/alerts")
        assert got == 401


async def test_a_repeated_client_alert_id_answers_the_original_and_delete_cancels(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        await h.quote_all()
        auth = await h.trader("alert-repeat@example.com")
        body = {"symbol": "BTCUSDT", "condition": "below", "price": "60000.00", "client_alert_id": "a-1"}
        _, first = await h.call("POST", f"{API}/alerts", headers=auth, json=body, expect=201)
        _, again = await h.call("POST", f"{API}/alerts", headers=auth, json=body, expect=200)
        assert again == first
        _, cancelled = await h.call("DELETE", f"{API}/alerts/{first['id']}", headers=auth, expect=200)
        assert cancelled == first
        other = await h.trader("alert-other@example.com")
        _, mine = await h.call("POST", f"{API}/alerts", headers=auth, expect=201, json={
            "symbol": "BTCUSDT", "condition": "below", "price": "60000.00"})
        got, answer = await h.call("DELETE", f"{API}/alerts/{mine['id']}", headers=other)
        assert (got, answer["error"]["code"]) == (404, "UNKNOWN_ALERT")


async def test_cancel_all_after_arms_refreshes_disarms_and_fires(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        await h.quote_all()
        auth = await h.trader("deadman@example.com")
        _, pending = await h.call("POST", f"{API}/orders", headers=auth, expect=201, json={
            "symbol": "BTCUSDT", "side": "buy", "type": "limit", "price": "60000.00", "margin": "100.00",
            "leverage": 10})
        _, armed = await h.call("POST", f"{API}/orders/cancel-all-after", headers=auth, expect=200,
                                json={"timeout_s": 60})
        assert armed["armed"] is True and armed["timeout_s"] == 60
        assert armed["deadline"] - armed["now"] == 60_000
        _, disarmed = await h.call("POST", f"{API}/orders/cancel-all-after", headers=auth, expect=200,
                                   json={"timeout_s": 0})
        assert (disarmed["armed"], disarmed["deadline"]) == (False, None)
        for body, field in [({"timeout_s": -1}, "timeout_s"), ({"timeout_s": 86_401}, "timeout_s"),
                            ({"timeout_s": "1.5"}, "timeout_s"), ({}, "timeout_s"), ({"timeout": 1}, "timeout")]:
            got, answer = await h.call("POST", f"{API}/orders/cancel-all-after", headers=auth, json=body)
            assert (got, answer["error"]["details"].get("field")) == (400, field), (body, answer)
        subscription = h.system.handle.subscribe("deadman-test")
        await h.call("POST", f"{API}/orders/cancel-all-after", headers=auth, expect=200, json={"timeout_s": 1})
        seen: list = []
        with trio.fail_after(10):   # the engine injects a Clock input at the deadline
            while not any(type(e) is DeadManSwitchFired for e in seen):
                batch = await subscription.receive.receive()
                seen += [e for _seq, _ts, events in batch.items for e in events]
        cancelled = [e for e in seen if type(e) is OrderCancelled]
        assert [(str(e.order_id), e.reason) for e in cancelled] == [(pending["order"]["id"], "dead_man_switch")]
        _, orders = await h.call("GET", f"{API}/orders", headers=auth, expect=200)
        assert orders["orders"] == []
