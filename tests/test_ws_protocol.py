"""The WebSocket protocol's edges: malformed input, abuse, oversize frames, keepalive and idle
timeouts (mock clock over in-memory streams), and the JSON Schemas of every message."""

from __future__ import annotations

import json
import time

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, wrap_client_stream, wrap_server_stream

from actors.auth_tokens import TokenIssuer
from actors.config import load_config
from actors.engine.actor import EngineHandle
from actors.ws.server import CLOSE_IDLE, CLOSE_PING_TIMEOUT, CLOSE_POLICY, WsOptions, WsServer
from exness_actors.engine import Engine
from ws_helpers import SECRET, data_of, load_schema, running_stack, schema_errors

BTC = "quotes:BTCUSDT"


async def test_malformed_frames_get_errors_and_the_connection_stays_open(tmp_path):
    async with running_stack(tmp_path) as stack, stack.client() as client:
        cases = [
            ("not json", "BAD_JSON"),
            ("[" * 5000, "BAD_JSON"),                       # too deep to decode: not a crash
            ('{"a":' * 5000 + "1" + "}" * 5000, "BAD_JSON"),
            ("[]", "BAD_MESSAGE"),
            ("[1]", "BAD_MESSAGE"),
            ('"subscribe"', "BAD_MESSAGE"),
            ('{"channels": ["quotes:BTCUSDT"]}', "BAD_MESSAGE"),
            ('{"op": "explode"}', "UNKNOWN_OP"),
            ('{"op": "subscribe", "channels": ["quotes:DOGEUSDT"]}', "UNKNOWN_CHANNEL"),
            ('{"op": "subscribe", "channels": ["candles:BTCUSDT:2m"]}', "UNKNOWN_CHANNEL"),
            ('{"op": "subscribe", "channels": ["trades:BTCUSDT"]}', "UNKNOWN_CHANNEL"),
            ('{"op": "subscribe", "channels": ["account"]}', "AUTH_REQUIRED"),
            ('{"op": "subscribe", "channels": "quotes:BTCUSDT"}', "VALIDATION_ERROR"),
            ('{"op": "subscribe", "channels": ["quotes:BTCUSDT"], "since": {"quotes:ETHUSDT": 1}}', "VALIDATION_ERROR"),
            ('{"op": "subscribe", "channels": ["quotes:BTCUSDT"], "since": {"quotes:BTCUSDT": -1}}', "VALIDATION_ERROR"),
            ('{"op": "subscribe", "channels": ["quotes:BTCUSDT"], "colour": 1}', "VALIDATION_ERROR"),
            ('{"op": "auth", "token": "not.a.jwt"}', "INVALID_TOKEN"),
            ('{"op": "auth"}', "INVALID_TOKEN"),
            (b"\xff\xfe", "BAD_FRAME"),
        ]
        for frame, code in cases:
            if isinstance(frame, bytes):
                await client.connection.send_message(frame)
            else:
                await client.send(frame)
            reply = await client.recv()
            assert (reply["op"], reply["code"]) == ("error", code), (frame, reply)
            assert reply["message"]
        await client.send({"op": "ping", "id": 7})
        assert (await client.recv())["op"] == "pong"
        ack = await client.subscribe("quotes:btcusdt")        # symbols are case-insensitive
        assert ack["channels"] == [BTC]
        await stack.quote(6_500_000, 6_500_100)
        assert (await client.recv())["channel"] == BTC
        assert client.connection.closed is None


async def test_values_nested_as_deep_as_json_allows_are_errors_not_crashes(tmp_path):
    """Past some depth a frame does not decode (BAD_JSON); just below it a value decodes but is
    too deep to repr: an error naming what was wrong, and the connection stays open."""
    templates = [('{"op": %s}', "UNKNOWN_OP"),
                 ('{"op": "subscribe", "channels": [%s]}', "UNKNOWN_CHANNEL"),
                 ('{"op": "subscribe", "channels": ["quotes:BTCUSDT"], "since": %s}', "VALIDATION_ERROR"),
                 ('{"op": "auth", "token": %s}', "INVALID_TOKEN")]
    async with running_stack(tmp_path, ws={"max_errors_per_minute": 1000}) as stack, stack.client() as client:
        seen = set()
        for template, code in templates:
            for depth in range(600, 1000, 10):
                await client.send(template % ("[" * depth + "]" * depth))
                reply = await client.recv()
                assert reply["op"] == "error" and reply["code"] in ("BAD_JSON", code), (template, depth, reply)
                seen.add(reply["code"] == "BAD_JSON")
        assert seen == {True, False}
        await client.send({"op": "ping"})
        assert (await client.recv())["op"] == "pong"


async def test_abusive_clients_are_closed_with_1008_and_oversize_frames_with_1009(tmp_path):
    ws = {"max_errors_per_minute": 5, "max_message_bytes": 1024}
    async with running_stack(tmp_path, ws=ws) as stack:
        async with stack.client() as abusive:
            for _ in range(6):
                await abusive.send("garbage")
            reason = await abusive.closed()
            assert reason.code == CLOSE_POLICY and "too many invalid" in reason.reason
        async with stack.client() as large:
            await large.send({"op": "ping", "pad": "x" * 2000})
            reason = await large.closed()
            assert reason.code == 1009
        async with stack.client() as fine:                   # the server carries on
            await fine.send({"op": "ping"})
            assert (await fine.recv())["op"] == "pong"
    assert stack.server.statistics()["closed_abusive"] == 1


# ------------------------------------------------------------------ keepalive (mock clock)

class Blackhole(trio.abc.Stream):
    """A client-side stream that, once ``cut``, silently drops what the client sends (so the
    server never sees a pong) while the server's frames still arrive."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.cut = False

    async def send_all(self, data) -> None:
        if self.cut:
            await trio.lowlevel.checkpoint()
            return
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes=None) -> bytes:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


def make_server(**ws) -> WsServer:
    cfg = load_config(environ={}, overrides={"ws": ws})
    handle = EngineHandle(Engine(cfg.core), 16)        # not running: these tests need no engine
    return WsServer(handle=handle, options=WsOptions.from_config(cfg), tokens=TokenIssuer(SECRET.encode()))


async def connect_in_memory(nursery: trio.Nursery, server: WsServer):
    client_end, server_end = trio.testing.memory_stream_pair()
    client_stream = Blackhole(client_end)

    async def serve() -> None:
        request = await wrap_server_stream(nursery, server_end)
        await server.handle_connection(await request.accept())
    nursery.start_soon(serve)
    connection = await wrap_client_stream(nursery, client_stream, "test", "/")
    return connection, client_stream


async def closed_reason(connection) -> object:
    while True:
        try:
            await connection.get_message()
        except ConnectionClosed as closed:
            return closed.reason


async def test_no_pong_closes_the_connection(autojump_clock):
    server = make_server(ping_interval_s=10, pong_timeout_s=5, close_timeout_s=2, idle_timeout_s=1000)
    async with trio.open_nursery() as nursery:
        healthy, _ = await connect_in_memory(nursery, server)
        silent, stream = await connect_in_memory(nursery, server)
        await healthy.send_message('{"op":"subscribe","channels":["quotes:BTCUSDT"]}')
        await silent.send_message('{"op":"subscribe","channels":["quotes:BTCUSDT"]}')
        await healthy.get_message()
        await silent.get_message()
        stream.cut = True                                  # its pongs are lost from now on
        started = trio.current_time()
        reason = await closed_reason(silent)
        assert (reason.code, reason.reason) == (CLOSE_PING_TIMEOUT, "ping timeout: no pong within 5 s")
        assert 10 + 5 <= trio.current_time() - started <= 10 + 5 + 1
        await trio.sleep(100)                              # pings answered: still open
        assert healthy.closed is None and len(server.clients) == 1
        assert server.statistics()["closed_ping_timeout"] == 1
        nursery.cancel_scope.cancel()


async def test_idle_connections_are_closed_subscribed_ones_are_not(autojump_clock):
    server = make_server(ping_interval_s=10, pong_timeout_s=5, idle_timeout_s=60)
    async with trio.open_nursery() as nursery:
        idle, _ = await connect_in_memory(nursery, server)
        busy, _ = await connect_in_memory(nursery, server)
        await busy.send_message('{"op":"subscribe","channels":["quotes:BTCUSDT"]}')
        started = trio.current_time()
        reason = await closed_reason(idle)
        assert reason.code == CLOSE_IDLE and "idle" in reason.reason
        assert 60 <= trio.current_time() - started <= 70 + 5
        await trio.sleep(600)
        assert busy.closed is None
        nursery.cancel_scope.cancel()


async def test_an_expired_token_ends_the_account_stream(autojump_clock):
    now = [time.time()]
    server = make_server(ping_interval_s=10, pong_timeout_s=5)
    server.wall_clock = lambda: now[0]
    token = server.tokens.issue_access(1, 1, now=now[0])
    async with trio.open_nursery() as nursery:
        client, _ = await connect_in_memory(nursery, server)
        await client.send_message(json.dumps({"op": "auth", "token": token}))
        assert json.loads(await client.get_message())["op"] == "authenticated"
        await client.send_message('{"op":"subscribe","channels":["account","quotes:BTCUSDT"]}')
        assert json.loads(await client.get_message())["op"] == "subscribed"
        now[0] += server.tokens.access_ttl_s + 1
        expired = json.loads(await client.get_message())
        assert (expired["op"], expired["code"], expired["details"]) == (
            "error", "TOKEN_EXPIRED", {"unsubscribed": ["account"]})
        await client.send_message('{"op":"order","id":"x","action":"cancel","order_id":"1"}')
        result = json.loads(await client.get_message())
        assert result["error"]["code"] == "AUTH_REQUIRED"
        # a token already past its expiry on the server's clock (signature checks use the real
        # clock) is told so at once and dropped: it cannot subscribe again
        await client.send_message(json.dumps({"op": "auth", "token": server.tokens.issue_access(1, 1)}))
        messages: list = []
        while len(messages) < 2:    # one frame, or two
            frame = json.loads(await client.get_message())
            messages += frame if isinstance(frame, list) else [frame]
        assert [message.get("code", message["op"]) for message in messages] == ["authenticated", "TOKEN_EXPIRED"]
        await client.send_message('{"op":"subscribe","channels":["account"]}')
        assert json.loads(await client.get_message())["code"] == "AUTH_REQUIRED"
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ schemas

async def test_every_message_matches_the_json_schemas(tmp_path):
    server_schema = load_schema("server.json")
    client_schema = load_schema("client.json")
    sent: list = []
    hour = 1_699_999_200 * 1_000_000_000
    now = [hour]
    async with running_stack(tmp_path, ws={"replay_size": 3}, clock=lambda: now[0]) as stack:
        token = await stack.account(1, deposit_cents=100_000)
        async with stack.client() as client:
            async def send(message: dict) -> None:
                sent.append(message)
                await client.send(message)

            async def order(request_id: str, action: str, **fields) -> dict:
                await send({"op": "order", "id": request_id, "action": action, **fields})
                reply, _ = await client.recv_until(lambda m: m.get("op") == "order_result" and m["id"] == request_id)
                return reply

            await send({"op": "subscribe", "channels": [BTC, "candles:BTCUSDT:1m", "candles:BTCUSDT:1h"]})
            await send({"op": "auth", "token": token})
            await send({"op": "subscribe", "channels": ["account"], "id": "s1"})
            for minute in range(3):
                now[0] = hour + minute * 60_000_000_000
                await stack.quote(6_500_000 + minute * 1000, 6_500_100 + minute * 1000)
            placed = await order("o1", "place", symbol="BTCUSDT", side="buy", type="market",
                                 margin="100.00", leverage=50, take_profit="70000.00", client_order_id="c")
            await order("o1d", "place", symbol="BTCUSDT", side="buy", type="market",
                        margin="100.00", leverage=50, take_profit="70000.00", client_order_id="c")
            limit = await order("o2", "place", symbol="BTCUSDT", side="sell", type="limit", price="70000.00",
                                margin="10.00", leverage=5, expires_at=(hour // 1_000_000) + 86_400_000)
            await order("o3", "modify_order", order_id=limit["order"]["id"], take_profit=None, price="71000.00")
            await order("o4", "modify_position", position_id=placed["position"]["id"], stop_loss="60000.00")
            await order("o5", "add_margin", position_id=placed["position"]["id"], amount="5.00")
            await order("o6", "close", position_id=placed["position"]["id"], qty="0.00100000")
            await order("o7", "cancel", order_id=limit["order"]["id"])
            await order("o8", "place", symbol="BTCUSDT", side="buy", type="market", margin="1.001", leverage=5)
            await order("o9", "place", symbol="BTCUSDT", side="buy", type="market", margin="9000.00", leverage=5)
            await order("o10", "place", symbol="BTCUSDT", side="buy", type="market", margin="100.00", leverage=100)
            now[0] = hour + 3 * 60_000_000_000
            await stack.quote(6_000_000, 6_000_100)          # liquidates o10; triggers nothing else
            await client.recv_until(lambda m: m.get("data", {}).get("event") == "position_closed"
                                    and m["data"]["position"]["close_reason"] == "liquidation")
            await send({"op": "ping", "id": "p"})
            await send({"op": "unsubscribe", "channels": ["candles:BTCUSDT:1h"]})
            await client.send({"op": "nope"})        # deliberately invalid: not checked below
            await client.recv_until(lambda m: m.get("op") == "error")
        async with stack.client() as late:
            sent.append({"op": "subscribe", "channels": [BTC], "since": {BTC: 0}})
            await late.send(sent[-1])
            await late.recv_until(lambda m: m.get("op") == "resync")

    kinds = {m.get("op") or m["channel"].split(":")[0] for frame in stack.seen
             for m in (frame if isinstance(frame, list) else [frame])}
    assert kinds >= {"subscribed", "authenticated", "order_result", "quotes", "candles", "account",
                     "pong", "unsubscribed", "error", "resync"}
    events = {m["data"]["event"] for m in data_of(client.received, "account")}
    assert events >= {"balance_changed", "order_accepted", "order_modified", "order_cancelled",
                      "position_opened", "position_updated", "position_closed"}
    assert any(isinstance(frame, list) for frame in stack.seen)     # batched frames too
    for frame in stack.seen:
        assert schema_errors(frame, server_schema) == [], frame
    for message in sent:
        assert schema_errors(message, client_schema) == [], message
    assert schema_errors({"op": "subscribe", "channels": ["trades:X"]}, client_schema)   # not vacuous
    assert schema_errors({"op": "pong", "ts": "soon"}, server_schema)


def test_schemas_are_valid_json_schema():
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed in this venv; "
                                     "the message checks above use the built-in subset validator")
    for name in ("server.json", "client.json"):
        jsonschema.Draft202012Validator.check_schema(load_schema(name))


async def test_a_port_in_use_is_a_config_error_naming_it(tmp_path):
    from actors.ws import server as ws_actor
    from actors.config import ConfigError

    async with running_stack(tmp_path) as stack:
        cfg = stack.cfg.with_overrides({"ws": {"port": stack.server.port}})
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{stack.server.port}"):
            await ws_actor.run(handle=stack.handle, cfg=cfg, tokens=stack.tokens)


def test_bad_ws_options_are_config_errors():
    from actors.config import ConfigError
    for section, match in [({"port": "x"}, "port"), ({"max_pending_bytes": 0}, "max_pending_bytes"),
                           ({"flush_duty": 1.5}, "flush_duty"), ({"writer": "threads"}, "writer"),
                           ({"ping_interval_s": -1}, "ping_interval_s")]:
        with pytest.raises(ConfigError, match=match):
            WsOptions.from_config({"ws": section})


async def test_the_server_closes_its_clients_and_returns_when_the_engine_stops(tmp_path):
    async with running_stack(tmp_path) as stack, stack.client() as client:
        await client.subscribe(BTC)
        await stack.handle.stop()                        # what the supervisor does last
        reason = await client.closed()
        assert (reason.code, reason.reason) == (1001, "server shutting down")
        assert stack.server.engine_stopped.is_set()
