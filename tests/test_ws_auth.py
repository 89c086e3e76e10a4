"""Private WebSocket delivery ends when the access token expires, not at the next keepalive
(issue 15, item 26). Mock clock over in-memory streams; the server's wall clock follows it."""

from __future__ import annotations

import json
import time

import trio

from test_ws_protocol import connect_in_memory, make_server

async def _expiry_notice_after(server, token_life_s: float) -> tuple[float, dict]:
    """Authenticate with a token that expires ``token_life_s`` from now, subscribe to the
    account, and wait for the server's next message: (seconds it took, the message)."""
    wall_start = time.time() - trio.current_time()     # tokens are verified on the real clock too
    server.wall_clock = lambda: wall_start + trio.current_time()
    issued_at = server.wall_clock() - server.tokens.access_ttl_s + token_life_s
    token = server.tokens.issue_access(1, 1, now=issued_at)
    async with trio.open_nursery() as nursery:
        client, _ = await connect_in_memory(nursery, server)
        await client.send_message(json.dumps({"op": "auth", "token": token}))
        assert json.loads(await client.get_message())["op"] == "authenticated"
        await client.send_message('{"op":"subscribe","channels":["account"]}')
        assert json.loads(await client.get_message())["op"] == "subscribed"
        started = trio.current_time()
        message = json.loads(await client.get_message())
        elapsed = trio.current_time() - started
        nursery.cancel_scope.cancel()
    return elapsed, message


async def test_the_account_stream_stops_when_the_token_expires(autojump_clock):
    server = make_server(ping_interval_s=20, pong_timeout_s=5, idle_timeout_s=1000)
    elapsed, message = await _expiry_notice_after(server, token_life_s=3.5)
    assert (message["op"], message["code"], message["details"]) == (
        "error", "TOKEN_EXPIRED", {"unsubscribed": ["account"]})
    assert "auth" in message["message"]
    assert 2.5 <= elapsed <= 4.5, elapsed


async def test_a_token_outliving_many_pings_expires_on_time(autojump_clock):
    server = make_server(ping_interval_s=3, pong_timeout_s=1, idle_timeout_s=1000)
    elapsed, message = await _expiry_notice_after(server, token_life_s=7.5)
    assert message["code"] == "TOKEN_EXPIRED"
    assert 6.5 <= elapsed <= 8.5, elapsed
