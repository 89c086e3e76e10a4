"""The lean path (actors/gateway/_fast.py) answers exactly as the Quart app does.

Two systems run side by side from the same inputs with the same constant clock, one app with
``[http] fast_path = true`` and one with it off; the same requests go to both and every answer
must be the same bytes: status, body and headers. Another test pins that the hot routes really
took the lean path (so the comparison is not vacuous), and a real-socket test that the lean path
keeps hypercorn's connection handling (early errors, ``Connection: close`` while draining).
"""

from __future__ import annotations

import functools
import json
import re
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Optional

import pytest
import trio

from actors import gateway as gateway_module
from actors.engine.messages import Overloaded
from actors.gateway import create_app, token_issuer_from_config
from actors.gateway._fast import FastRoutes
from exness_actors.commands import Quote
from gateway_helpers import API, PASSWORD, gateway_config
from supervisor import run_system

NOW_NS = 1_767_225_600_000_000_000   # a constant clock: both systems stamp the same times

ORDER = {"symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "10.00", "leverage": 10}


class Side:
    """One system and its app; ``auth`` holds the traders' Authorization headers by name."""

    def __init__(self, system: Any, app: Any) -> None:
        self.system = system
        self.app = app
        self.client = app.test_client()
        self.auth: dict[str, dict[str, str]] = {}

    @property
    def gateway(self) -> Any:
        return self.app.extensions["exness_gateway"]

    async def trader(self, name: str) -> None:
        email = f"{name}@fast.test"
        for step in ("signup", "signin"):
            response = await self.client.post(f"{API}/auth/{step}", json={"email": email, "password": PASSWORD})
            assert response.status_code in (200, 201), await response.get_data()
        token = (await response.get_json())["access_token"]
        self.auth[name] = {"Authorization": f"Bearer {token}"}

    async def send(self, method: str, path: str, *, who: Optional[str] = None, headers: Optional[dict] = None,
                   body: Any = None, raw: Optional[bytes] = None) -> tuple[int, bytes, list]:
        all_headers = {**(self.auth[who] if who else {}), **(headers or {})}
        kwargs: dict[str, Any] = {}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        response = await self.client.open(path, method=method, headers=all_headers, **kwargs)
        return response.status_code, await response.get_data(), list(response.headers.items())


@asynccontextmanager
async def two_sides(tmp_path: Path, overrides: Optional[dict] = None) -> AsyncIterator[tuple[Side, Side]]:
    """(lean path, Quart only): two systems fed the same inputs with the same clock."""
    sides = []
    async with trio.open_nursery() as nursery:
        for name, fast in (("fast", True), ("quart", False)):
            cfg = gateway_config(tmp_path / name, {**(overrides or {}), "http": {
                **(overrides or {}).get("http", {}), "fast_path": fast}})
            system = await nursery.start(functools.partial(
                run_system, cfg, handle_signals=False, feed="none", clock=lambda: NOW_NS))
            app = create_app(handle=system.handle, store=system.store, candles=system.actors["candles"],
                             cfg=cfg, tokens=token_issuer_from_config(cfg), persister=system.actors["persister"],
                             clock=lambda: NOW_NS)
            await system.handle.request(Quote(symbol="BTCUSDT", bid=6_500_000, ask=6_500_000))
            sides.append(Side(system, app))
        assert isinstance(sides[0].app.asgi_app, FastRoutes) and not isinstance(sides[1].app.asgi_app, FastRoutes)
        try:
            yield sides[0], sides[1]
        finally:
            for side in sides:
                side.system.request_shutdown()


async def same_answer(fast: Side, quart: Side, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    """Send one request to both; the answers must be identical. Returns (status, parsed body)."""
    status, body, headers = await fast.send(method, path, **kwargs)
    assert (status, body, headers) == await quart.send(method, path, **kwargs), (method, path, kwargs)
    return status, json.loads(body) if body else None


SCRIPT: list[tuple[str, str, dict, int]] = [
    # (method, path, request, status both paths must give)
    ("POST", f"{API}/orders", {"who": "ann", "body": ORDER}, 201),
    ("POST", f"{API}/orders", {"who": "ann", "body": {**ORDER, "side": "sell", "client_order_id": "c-1"}}, 201),
    ("POST", f"{API}/orders", {"who": "ann", "body": {**ORDER, "side": "sell", "client_order_id": "c-1"}}, 200),
    ("POST", f"{API}/orders", {"who": "ann", "body": {**ORDER, "margin": "90000", "client_order_id": "c-2"}}, 422),
    ("POST", f"{API}/orders", {"who": "ann", "body": {**ORDER, "margin": "90000", "client_order_id": "c-2"}}, 422),
    ("POST", f"{API}/orders", {"who": "ann", "body": {**ORDER, "type": "limit", "price": "60000"}}, 201),
    ("POST", f"{API}/orders", {"who": "ann", "body": {**ORDER, "leverage": 1000}}, 400),
    ("POST", f"{API}/orders", {"who": "ann", "body": {"side": "buy"}}, 400),
    ("POST", f"{API}/orders", {"who": "ann", "body": {**ORDER, "margin": 1.555}}, 400),
    ("POST", f"{API}/orders", {"who": "ann", "body": {**ORDER, "symbol": "DOGEUSDT"}}, 400),
    ("POST", f"{API}/orders", {"who": "ann", "raw": b"{", "headers": {"Content-Type": "application/json"}}, 400),
    ("POST", f"{API}/orders", {"who": "ann", "raw": b"[1]", "headers": {"Content-Type": "application/json"}}, 400),
    ("POST", f"{API}/orders", {"who": "ann", "raw": b"{}", "headers": {"Content-Type": "text/plain"}}, 415),
    ("POST", f"{API}/orders", {"who": "ann", "raw": b"{}", "headers": {"Content-Type": "Application/JSON; charset=utf-8"}}, 400),
    ("POST", f"{API}/orders", {"who": "ann", "raw": b"{}", "headers": {"Content-Type": "application/vnd.x+json"}}, 400),
    ("POST", f"{API}/orders", {"who": "ann", "raw": b"  "}, 400),
    ("POST", f"{API}/orders", {"body": ORDER}, 401),
    ("POST", f"{API}/orders", {"body": ORDER, "headers": {"Authorization": "Bearer not-a-token"}}, 401),
    ("POST", f"{API}/orders", {"body": ORDER, "headers": {"Authorization": "Basic YWI6Y2Q="}}, 401),
    ("POST", f"{API}/orders", {"body": ORDER, "headers": {"Authorization": "Bearer "}}, 401),
    ("GET", f"{API}/account", {"who": "ann"}, 200),
    ("GET", f"{API}/account", {"who": "bob"}, 200),
    ("GET", f"{API}/account", {}, 401),
    ("GET", f"{API}/account?verbose=1", {"who": "ann"}, 400),                   # a query string: Quart
    ("HEAD", f"{API}/account", {"who": "ann"}, 200),                            # HEAD: Quart
    ("POST", f"{API}/positions/1/close", {"who": "ann"}, 200),
    ("POST", f"{API}/positions/1/close", {"who": "ann"}, 404),
    ("POST", f"{API}/positions/1/close", {"who": "bob"}, 404),
    ("POST", f"{API}/positions/2/close", {"who": "ann", "body": {"qty": "0.00001"}}, 200),
    ("POST", f"{API}/positions/2/close", {"who": "ann", "body": {"qty": "0.000000001"}}, 400),
    ("POST", f"{API}/positions/2/close", {"who": "ann", "body": {"qty": "abc"}}, 400),
    ("POST", f"{API}/positions/2/close", {"who": "ann", "body": [1]}, 400),
    ("POST", f"{API}/positions/2/close", {"who": "ann", "raw": b"null", "headers": {"Content-Type": "application/json"}}, 400),
    ("POST", f"{API}/positions/2/close", {"who": "ann", "body": {"qty": "1000"}}, 422),
    ("POST", f"{API}/positions/abc/close", {"who": "ann"}, 404),
    ("POST", f"{API}/positions/{'9' * 40}/close", {"who": "ann"}, 404),
    ("POST", f"{API}/positions/2/close", {"who": "ann", "body": {}}, 200),
    ("POST", f"{API}/positions/2/close/", {"who": "ann"}, 404),                  # not the route: Quart
    ("POST", f"{API}/orders/", {"who": "ann", "body": ORDER}, 404),
    ("PUT", f"{API}/orders", {"who": "ann", "body": ORDER}, 405),
    ("OPTIONS", f"{API}/orders", {"headers": {"Origin": "https://trade.test"}}, 204),
    ("POST", f"{API}/orders", {"who": "bob", "body": ORDER, "headers": {"Origin": "https://trade.test"}}, 201),
    ("POST", f"{API}/orders", {"who": "bob", "body": ORDER, "headers": {"Origin": "https://evil.test"}}, 201),
    ("GET", f"{API}/account", {"who": "bob", "headers": {"Origin": "https://trade.test"}}, 200),
    ("POST", f"{API}/orders", {"headers": {"Origin": "https://trade.test"}, "body": ORDER}, 401),
]


async def test_both_paths_answer_every_request_with_the_same_bytes(tmp_path) -> None:
    async with two_sides(tmp_path, {"http": {"cors_origins": ["https://trade.test"]}}) as (fast, quart):
        for side in (fast, quart):
            await side.trader("ann")
            await side.trader("bob")
        got = []
        for method, path, request, status in SCRIPT:
            got.append((await same_answer(fast, quart, method, path, **request))[0])
        assert got == [status for *_, status in SCRIPT]
        metrics = [await (await side.client.get("/metrics")).get_data(as_text=True) for side in (fast, quart)]
        counted = [sorted(line for line in text.splitlines()
                          if line.startswith(("exness_http_requests_total{", "exness_orders_total{")))
                   for text in metrics]
        assert counted[0] == counted[1] and any('route="/api/v1/positions/<position_id>/close"' in line
                                                for line in counted[0])
        assert fast.gateway.internal_errors == quart.gateway.internal_errors == 0


async def test_engine_refusals_and_bugs_are_answered_alike(tmp_path) -> None:
    async with two_sides(tmp_path) as (fast, quart):
        for side in (fast, quart):
            await side.trader("ann")
        for side in (fast, quart):
            side.system.handle.accepting = False
        status, body = await same_answer(fast, quart, "POST", f"{API}/orders", who="ann", body=ORDER)
        assert status == 503 and body["error"]["code"] == "ENGINE_STOPPED"
        status, body = await same_answer(fast, quart, "GET", f"{API}/account", who="ann")
        assert status == 503
        for side in (fast, quart):
            side.system.handle.accepting = True

        def overloaded(*args: Any) -> None:
            raise Overloaded("engine inbox is full")

        def bug(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("a bug")

        for replacement, code, expected in ((overloaded, "OVERLOADED", 503), (bug, "INTERNAL_ERROR", 500)):
            for side in (fast, quart):
                side.system.handle.send_nowait = replacement
            status, body = await same_answer(fast, quart, "POST", f"{API}/positions/7/close", who="ann")
            assert status == expected and body["error"]["code"] == code
            for side in (fast, quart):
                del side.system.handle.send_nowait
        assert fast.gateway.internal_errors == quart.gateway.internal_errors == 1


async def test_rate_limits_are_answered_alike(tmp_path) -> None:
    limits = {"limits": {"account_rate_per_s": 0.001, "account_burst": 2, "ip_rate_per_s": 0.001, "ip_burst": 6}}
    async with two_sides(tmp_path, limits) as (fast, quart):
        for side in (fast, quart):
            await side.trader("ann")          # 2 requests of the IP's 6
        answers = []
        for _ in range(4):                    # 2 pass, then the account's bucket is empty
            answers.append(await _same_but_the_wait(fast, quart, "GET", f"{API}/account", who="ann"))
        answers.append(await _same_but_the_wait(fast, quart, "POST", f"{API}/orders", who="ann", body=ORDER))
        assert [status for status, _ in answers] == [200, 200, 429, 429, 429]
        assert [body["error"]["details"]["scope"] for _, body in answers[2:]] == ["account", "account", "ip"]


async def _same_but_the_wait(fast: Side, quart: Side, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    """As :func:`same_answer`, but a 429's wait (``retry_after_s``, ``Retry-After``, so the body's
    length) is measured in real time, so the two may differ by the time between the two requests."""
    answers = [await side.send(method, path, **kwargs) for side in (fast, quart)]
    (status, body, headers), other = answers
    waits = [dict(answer[2]).get("retry-after") for answer in answers]
    assert (waits[0] is None) == (waits[1] is None) == (status != 429)
    assert waits[0] is None or abs(int(waits[0]) - int(waits[1])) <= 2
    def without_retry(headers: list) -> list:
        return [(name, value) for name, value in headers if name.lower() not in ("retry-after", "content-length")]
    assert (status, without_retry(headers)) == (other[0], without_retry(other[2])), (headers, other[2])
    def without_wait(raw: bytes) -> bytes:
        return re.sub(rb'"retry_after_s":[0-9.]+', b"", raw)
    assert without_wait(body) == without_wait(other[1])
    return status, json.loads(body)


async def test_the_hot_routes_take_the_lean_path_and_the_rest_goes_to_quart(tmp_path) -> None:
    async with two_sides(tmp_path) as (fast, _quart):
        await fast.trader("ann")
        reached: list[str] = []
        middleware = fast.app.asgi_app
        quart_asgi = middleware.app

        async def counting(scope: dict, receive: Any, send: Any) -> None:
            reached.append(f"{scope['method']} {scope['path']}")
            await quart_asgi(scope, receive, send)

        middleware.app = counting
        assert (await fast.send("POST", f"{API}/orders", who="ann", body=ORDER))[0] == 201
        assert (await fast.send("POST", f"{API}/positions/1/close", who="ann"))[0] == 200
        assert (await fast.send("GET", f"{API}/account", who="ann"))[0] == 200
        assert (await fast.send("POST", f"{API}/orders", body=ORDER))[0] == 401
        assert reached == []
        assert (await fast.send("GET", f"{API}/account?x=1", who="ann"))[0] == 400
        assert (await fast.send("GET", f"{API}/positions", who="ann"))[0] == 200
        assert (await fast.send("GET", f"{API}/account", who="ann", raw=b"{}",       # a body it would not read
                                headers={"Content-Length": "2"}))[0] == 200
        assert reached == [f"GET {API}/account", f"GET {API}/positions", f"GET {API}/account"]


async def _read_response(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        assert chunk, f"the server closed the connection mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.lower().split(b"\r\n")
                  if line.startswith(b"content-length:"))
    while len(body) < length:
        body += await stream.receive_some(65536)
    return head.lower(), body


@pytest.mark.parametrize("fast_path", [True, False])
async def test_over_a_real_socket_orders_keep_alive_and_a_draining_gateway_says_close(tmp_path, fast_path) -> None:
    cfg = gateway_config(tmp_path, {"http": {"fast_path": fast_path}})
    async with trio.open_nursery() as nursery:
        system = await nursery.start(functools.partial(run_system, cfg, handle_signals=False, feed="none"))
        await system.handle.request(Quote(symbol="BTCUSDT", bid=6_500_000, ask=6_500_000))
        shutdown = trio.Event()
        with trio.fail_after(30):
            async with trio.open_nursery() as gateway_nursery:
                info = await gateway_nursery.start(functools.partial(
                    gateway_module.run, handle=system.handle, store=system.store, candles=None, cfg=cfg,
                    tokens=token_issuer_from_config(cfg), shutdown=shutdown))
                stream = await trio.open_tcp_stream("127.0.0.1", info.port)
                token = await _signin_over(stream)
                order = json.dumps(ORDER).encode()
                request = (b"POST /api/v1/orders HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
                           b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                           % (token, len(order), order))
                for _ in range(3):                                   # one keep-alive connection
                    await stream.send_all(request)
                    head, body = await _read_response(stream)
                    assert head.startswith(b"http/1.1 201") and b"connection: close" not in head, head
                gateway = info.app.extensions["exness_gateway"]
                entered, release = trio.Event(), trio.Event()
                submit = gateway.submit

                async def held_submit(*args: Any, **kwargs: Any) -> Any:
                    entered.set()
                    await release.wait()
                    return await submit(*args, **kwargs)

                gateway.submit = held_submit
                await stream.send_all(request)
                await entered.wait()                                 # the order is in flight...
                shutdown.set()                                       # ...as the drain begins
                release.set()
                head, body = await _read_response(stream)
                assert head.startswith(b"http/1.1 201") and b"\r\nconnection: close" in head, head
                assert await stream.receive_some(65536) == b""
                await stream.aclose()
        system.request_shutdown()


async def _signin_over(stream: trio.SocketStream) -> bytes:
    for step in (b"signup", b"signin"):
        body = json.dumps({"email": "socket@fast.test", "password": PASSWORD}).encode()
        await stream.send_all(b"POST /api/v1/auth/%s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (step, len(body), body))
        head, answer = await _read_response(stream)
        assert head.startswith((b"http/1.1 200", b"http/1.1 201")), head
    return json.loads(answer)["access_token"].encode()


@pytest.mark.parametrize(("rule", "path", "argument"), [
    ("/api/v1/orders", "/api/v1/orders", ""), ("/api/v1/orders", "/api/v1/orders/", None),
    ("/api/v1/orders", "/api/v1/order", None),
    ("/api/v1/positions/<position_id>/close", "/api/v1/positions/12/close", "12"),
    ("/api/v1/positions/<position_id>/close", "/api/v1/positions//close", None),
    ("/api/v1/positions/<position_id>/close", "/api/v1/positions/1/2/close", None),
    ("/api/v1/positions/<position_id>/close", "/api/v1/positions/12/close/", None),
    ("/api/v1/orders/<order_id>", "/api/v1/orders/", None), ("/api/v1/orders/<order_id>", "/api/v1/orders/7", "7"),
])
def test_a_fast_route_matches_what_werkzeug_routes_to_it(rule, path, argument) -> None:
    from actors.gateway._fast import _Route

    async def answer(*args: Any) -> tuple[Any, int]:
        return {}, 200

    assert _Route(rule, answer, reads_body=False).argument(path) == argument


class _Messages:
    """An ASGI ``receive`` that hands out ``messages`` then blocks forever (as a server does
    when nothing more will come); counts the calls."""

    def __init__(self, *messages: dict) -> None:
        self.messages = list(messages)
        self.calls = 0

    async def __call__(self) -> dict:
        self.calls += 1
        if self.messages:
            await trio.lowlevel.checkpoint()
            return self.messages.pop(0)
        await trio.sleep_forever()
        raise AssertionError("unreachable")


def _lean_request(receive: Any, content_length: Optional[int]) -> Any:
    from types import SimpleNamespace

    from actors.gateway._common import Gateway
    from actors.gateway._fast import _Request

    gateway = SimpleNamespace(settings=SimpleNamespace(max_body_bytes=1 << 16), parse_body=Gateway.parse_body)
    request = _Request(receive, gateway)
    headers = [(b"content-type", b"application/json")]
    if content_length is not None:
        headers.append((b"content-length", b"%d" % content_length))
    assert request.read_headers(headers, 1 << 16)
    return request


async def test_the_lean_path_reads_a_body_up_to_its_declared_length_without_waiting_for_more(autojump_clock) -> None:
    body = json.dumps(ORDER).encode()
    # in one message whose closing empty message never comes, and in three chunks
    for messages in ([{"type": "http.request", "body": body, "more_body": True}],
                     [{"type": "http.request", "body": body[:5], "more_body": True},
                      {"type": "http.request", "body": body[5:9], "more_body": True},
                      {"type": "http.request", "body": body[9:], "more_body": True}]):
        receive = _Messages(*messages)
        with trio.fail_after(1):   # the autojump clock fails at once if the read waits for more
            assert await _lean_request(receive, len(body)).json_body() == ORDER
        assert receive.calls == len(messages)


async def test_the_lean_path_does_not_wait_for_a_body_declared_empty(autojump_clock) -> None:
    receive = _Messages()
    request = _lean_request(receive, 0)
    with trio.fail_after(1):
        assert await request.json_body(optional=True) is None
    assert receive.calls == 0 and request.body_read


async def test_without_a_content_length_the_lean_path_reads_to_the_servers_last_message(autojump_clock) -> None:
    body = json.dumps(ORDER).encode()
    receive = _Messages({"type": "http.request", "body": body, "more_body": True},
                        {"type": "http.request", "body": b"", "more_body": False})
    with trio.fail_after(1):
        assert await _lean_request(receive, None).json_body() == ORDER
    assert receive.calls == 2


async def test_the_lean_path_still_ends_a_body_at_the_servers_last_message(autojump_clock) -> None:
    """A server that ends the body early (a client that went away mid-body) still ends the read."""
    receive = _Messages({"type": "http.request", "body": b"{}", "more_body": False})
    with trio.fail_after(1):
        assert await _lean_request(receive, 10).json_body() == {}
