"""The WebSocket ``notifications`` channel: private (auth first), fed by the notifications
worker, every message valid against schemas/ws/server.json, resumable with ``since``, and
ended with the other private channel when the access token expires."""

from __future__ import annotations

import json
import time

import trio

from test_ws_protocol import connect_in_memory, make_server
from ws_helpers import load_schema, running_stack, schema_errors

ORDER = {"symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "10.00", "leverage": 10}


def is_notification(message: dict) -> bool:
    return message.get("event") == "notification"


async def test_the_notifications_channel_carries_the_accounts_notifications(tmp_path):
    server_schema = load_schema("server.json")
    client_schema = load_schema("client.json")
    assert schema_errors({"op": "subscribe", "channels": ["notifications"]}, client_schema) == []
    async with running_stack(tmp_path) as stack:
        token_a = await stack.account(1)
        token_b = await stack.account(2)
        await stack.quote(6_500_000, 6_500_100)
        async with stack.client() as a, stack.client() as b:
            refused = await a.subscribe("notifications")
            assert (refused["op"], refused["code"]) == ("error", "AUTH_REQUIRED")
            await a.auth(token_a)
            await b.auth(token_b)
            ack = await a.subscribe("notifications")
            assert ack["channels"] == ["notifications"] and ack["seq"] == {"notifications": 0}
            await b.subscribe("notifications")
            placed = await a.order("a1", "place", **ORDER)
            first = await a.first_match(is_notification)
            await a.order("a2", "place", **ORDER)
            second, _ = await a.recv_until(lambda m: is_notification(m) and m["seq"] == 2)
            await b.order("b1", "place", **ORDER)
            theirs = await b.first_match(is_notification)
        async with stack.client() as again:                  # resume after the first one
            await again.auth(token_a)
            await again.subscribe("notifications", since={"notifications": 1}, epoch=ack["epoch"])
            (replayed,) = [m for m in [await again.recv()] if is_notification(m)]
    for message in (first, second, theirs, replayed):
        assert schema_errors(message, server_schema) == [], message
    assert first["channel"] == "notifications" and first["seq"] == 1
    assert first["notification"]["kind"] == "order_filled" and first["notification"]["account_id"] == "1"
    assert first["notification"]["data"]["order_id"] == placed["order"]["id"]
    assert theirs["notification"]["account_id"] == "2"
    assert not any(is_notification(m) and m["notification"]["account_id"] != "1" for m in a.received)
    assert replayed == second


async def test_an_expired_token_ends_the_notifications_channel_too(autojump_clock):
    now = [time.time()]
    server = make_server(ping_interval_s=10, pong_timeout_s=5)
    server.wall_clock = lambda: now[0]
    token = server.tokens.issue_access(1, 1, now=now[0])
    async with trio.open_nursery() as nursery:
        client, _ = await connect_in_memory(nursery, server)
        await client.send_message(json.dumps({"op": "auth", "token": token}))
        assert json.loads(await client.get_message())["op"] == "authenticated"
        await client.send_message('{"op":"subscribe","channels":["account","notifications"]}')
        assert json.loads(await client.get_message())["op"] == "subscribed"
        now[0] += server.tokens.access_ttl_s + 1
        expired = json.loads(await client.get_message())
        assert (expired["op"], expired["code"], expired["details"]) == (
            "error", "TOKEN_EXPIRED", {"unsubscribed": ["account", "notifications"]})
        nursery.cancel_scope.cancel()
