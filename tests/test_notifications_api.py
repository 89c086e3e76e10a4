"""The notification routes through the real app over a running system (its notifications
worker included): preferences and their validation, the list with the unread count and pages,
marking read, the dead-letter list; and a worker that never saw the events deriving them from
the journal at the next start."""

from __future__ import annotations

import functools

import trio

from gateway_helpers import API, gateway_config, running_gateway
from notify_helpers import WebhookReceiver
from actors.notifications import KINDS
from supervisor import run_system

MARKET = {"symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "100.00", "leverage": 10}
FAST = {"notifications": {"poll_interval_s": 0.05, "retry_base_s": 0.05, "retry_max_s": 0.1, "max_attempts": 2}}


async def eventually(probe, timeout: float = 20):
    with trio.fail_after(timeout):
        while True:
            value = await probe()
            if value:
                return value
            await trio.sleep(0.02)


async def test_preferences_defaults_updates_and_field_errors(tmp_path):
    async with running_gateway(tmp_path, FAST) as h:
        auth = await h.trader("prefs@example.com")
        _, current = await h.call("GET", f"{API}/notifications/preferences", headers=auth, expect=200)
        assert current == {"events": list(KINDS), "channels": ["ws"], "webhook_url": None, "webhook_secret": None,
                           "updated_at": None}
        for body, field in (({"channels": ["ws", "sms"]}, "channels"), ({"events": ["fill"]}, "events"),
                            ({"channels": ["webhook"]}, "webhook_url"), ({"channels": ["email"]}, "channels"),
                            ({"webhook_url": "http://example.com/x"}, "webhook_url"), ({"mute": True}, "mute"),
                            ({"webhook_url": ["https://example.com"]}, "webhook_url")):
            status, error = await h.call("PUT", f"{API}/notifications/preferences", headers=auth, json=body)
            assert status == 400, (body, error)
            assert error["error"]["code"] == "VALIDATION_ERROR" and error["error"]["details"]["field"] == field
        status, error = await h.call("PUT", f"{API}/notifications/preferences", json=[1], headers=auth)
        assert status == 400 and error["error"]["details"]["field"] == "body"
        _, updated = await h.call("PUT", f"{API}/notifications/preferences", headers=auth, expect=200, json={
            "events": ["order_filled", "price_alert"], "channels": ["ws", "webhook"],
            "webhook_url": "https://hooks.example.com/exness"})
        assert updated["events"] == ["order_filled", "price_alert"] and updated["channels"] == ["ws", "webhook"]
        assert len(updated["webhook_secret"]) == 64 and updated["updated_at"] > 0
        _, again = await h.call("GET", f"{API}/notifications/preferences", headers=auth, expect=200)
        assert again == updated
        status, _ = await h.call("GET", f"{API}/notifications/preferences", expect=401)


async def test_the_list_unread_count_pages_and_marking_read(tmp_path):
    async with running_gateway(tmp_path, FAST) as h:
        auth = await h.trader("list@example.com")
        other = await h.trader("other@example.com")
        await h.quote_all()
        for _ in range(3):
            await h.call("POST", f"{API}/orders", headers=auth, expect=201, json=MARKET)

        async def three():
            _, body = await h.call("GET", f"{API}/notifications", headers=auth, expect=200)
            return body if len(body["notifications"]) == 3 else None
        body = await eventually(three)
        assert body["unread_count"] == 3 and body["next_cursor"] is None
        newest = body["notifications"][0]
        assert newest["kind"] == "order_filled" and newest["read"] is False
        assert set(newest) == {"id", "kind", "created_at", "account_id", "title", "data", "read"}
        assert newest["data"]["symbol"] == "BTCUSDT" and newest["data"]["margin"] == "100.00"

        _, first = await h.call("GET", f"{API}/notifications?limit=2", headers=auth, expect=200)
        _, second = await h.call("GET", f"{API}/notifications?limit=2&cursor={first['next_cursor']}", headers=auth,
                                 expect=200)
        ids = [n["id"] for n in first["notifications"] + second["notifications"]]
        assert ids == [n["id"] for n in body["notifications"]] and second["next_cursor"] is None

        _, other_list = await h.call("GET", f"{API}/notifications", headers=other, expect=200)
        assert other_list == {"notifications": [], "next_cursor": None, "unread_count": 0}
        _, marked = await h.call("POST", f"{API}/notifications/read", headers=other, expect=200,
                                 json={"ids": [ids[0]]})
        assert marked == {"marked": 0, "unread_count": 0}          # another account's id: nothing

        _, marked = await h.call("POST", f"{API}/notifications/read", headers=auth, expect=200,
                                 json={"ids": [ids[0], ids[0]]})
        assert marked == {"marked": 1, "unread_count": 2}
        _, unread = await h.call("GET", f"{API}/notifications?unread=true", headers=auth, expect=200)
        assert [n["id"] for n in unread["notifications"]] == ids[1:]
        _, marked = await h.call("POST", f"{API}/notifications/read", headers=auth, expect=200, json={"all": True})
        assert marked == {"marked": 2, "unread_count": 0}

        for body, field in (({}, "ids"), ({"ids": []}, "ids"), ({"ids": ["x"]}, "ids"), ({"all": False}, "all"),
                            ({"ids": ["0-1-1"], "all": True}, "ids"), ({"every": True}, "every")):
            status, error = await h.call("POST", f"{API}/notifications/read", headers=auth, json=body)
            assert status == 400 and error["error"]["details"]["field"] == field, (body, error)
        for query, field in (("limit=0", "limit"), ("unread=maybe", "unread"), ("colour=red", "colour"),
                             ("cursor=bm9wZQ", "cursor")):
            status, error = await h.call("GET", f"{API}/notifications?{query}", headers=auth)
            assert status == 400, (query, error)


async def test_dead_letters_are_listed(tmp_path):
    with WebhookReceiver() as receiver:
        receiver.status["/gone"] = [410]
        async with running_gateway(tmp_path, FAST) as h:
            auth = await h.trader("dead@example.com")
            await h.call("PUT", f"{API}/notifications/preferences", headers=auth, expect=200, json={
                "channels": ["webhook"], "webhook_url": receiver.url("/gone")})
            await h.quote_all()
            await h.call("POST", f"{API}/orders", headers=auth, expect=201, json=MARKET)

            async def dead():
                _, body = await h.call("GET", f"{API}/notifications/dead-letters", headers=auth, expect=200)
                return body["dead_letters"]
            (letter,) = await eventually(dead)
    assert letter["channel"] == "webhook" and letter["kind"] == "order_filled"
    assert letter["attempts"] == 2 and letter["last_error"] == "HTTP 410"
    assert len(receiver.at("/gone")) == 2


async def test_a_worker_that_never_saw_the_events_derives_them_at_the_next_start(tmp_path):
    """The platform runs without the worker, a fill happens, it stops; the next start (worker on)
    derives the fill from the journal after the worker's watermark and delivers it."""
    off = {"notifications": {"enabled": False}}
    async with running_gateway(tmp_path, off) as h:
        auth = await h.trader("late@example.com")
        await h.quote_all()
        _, placed = await h.call("POST", f"{API}/orders", headers=auth, expect=201, json=MARKET)
        assert "notifications" not in h.system.actors
    with WebhookReceiver() as receiver:
        cfg = gateway_config(tmp_path, FAST)
        async with trio.open_nursery() as nursery:
            system = await nursery.start(functools.partial(run_system, cfg, handle_signals=False, feed="none"))
            page, _ = await system.store.notifications(1)
            assert [n.kind for n in page.items] == ["order_filled"]
            assert page.items[0].data["order_id"] == placed["order"]["id"]
            system.request_shutdown()
    assert receiver.hooks == []
