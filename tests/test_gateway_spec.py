"""Issue 15 (hardening): the HTTP API agrees with its OpenAPI document, list shapes are
consistent, the documented examples work, and sign-in throttling cannot lock the owner out."""

from __future__ import annotations

import functools
import json
import re
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import httpx
import trio

from actors import gateway as gateway_module
from actors.gateway import openapi_text, token_issuer_from_config
from exness_actors.candles import Candle
from gateway_helpers import API, PASSWORD, gateway_config, running_gateway
from supervisor import run_system

MINUTE_NS = 60 * 1_000_000_000
BASE_NS = 1_718_064_000 * 1_000_000_000


def _stored_candle(minute: int) -> Candle:
    price = 6_500_000 + minute
    return Candle(symbol="BTCUSDT", interval="1m", open_time=BASE_NS + minute * MINUTE_NS,
                  open=price, high=price, low=price, close=price, volume=1)


async def test_candles_are_a_page_with_a_cursor_to_older_candles(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        await h.system.store.write_candles([_stored_candle(minute) for minute in range(5)])
        pages: list[Any] = []
        path = f"{API}/candles?symbol=BTCUSDT&interval=1m&limit=2"
        cursor = None
        while True:
            _, page = await h.call("GET", path + (f"&cursor={cursor}" if cursor else ""), expect=200)
            assert set(page) == {"candles", "next_cursor"}
            pages.append([candle["ts"] for candle in page["candles"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        base_ms = BASE_NS // 1_000_000
        assert pages == [[base_ms + 180_000, base_ms + 240_000], [base_ms + 60_000, base_ms + 120_000],
                         [base_ms]]
        status, body = await h.call("GET", path + "&cursor=b3JkZXJzOjE")
        assert status == 400 and body["error"]["details"]["field"] == "cursor"


async def _signin_from(h: Any, address: str, email: str, password: str) -> Any:
    return await h.client.post(f"{API}/auth/signin", json={"email": email, "password": password},
                               scope_base={"client": (address, 40000)})


async def test_a_stranger_guessing_passwords_cannot_lock_the_owner_out(tmp_path) -> None:
    limits = {"signin_failures_per_minute": 5, "signin_ip_failures_per_minute": 20}
    async with running_gateway(tmp_path, {"limits": limits}) as h:
        await h.signup("owner@example.com")
        for _ in range(5):
            response = await _signin_from(h, "203.0.113.66", "owner@example.com", "wrong password")
            assert response.status_code == 401
        response = await _signin_from(h, "203.0.113.66", "owner@example.com", PASSWORD)
        body = await response.get_json()
        assert (response.status_code, body["error"]["code"]) == (429, "RATE_LIMITED")
        wait = int(response.headers["Retry-After"])
        assert 1 <= wait <= 60 and f"{wait} s" in body["error"]["message"]
        assert body["error"]["details"]["retry_after_s"] > 0

        response = await _signin_from(h, "198.51.100.7", "owner@example.com", PASSWORD)
        assert response.status_code == 200, await response.get_json()


async def test_guesses_for_one_email_from_many_addresses_are_throttled_too(tmp_path) -> None:
    limits = {"signin_failures_per_minute": 5, "signin_email_failures_per_minute": 6}
    async with running_gateway(tmp_path, {"limits": limits}) as h:
        await h.signup("target@example.com")
        for address in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
            for _ in range(2):
                response = await _signin_from(h, address, "target@example.com", "wrong password")
                assert response.status_code == 401
        response = await _signin_from(h, "198.51.100.7", "target@example.com", PASSWORD)
        assert response.status_code == 429


# ------------------------------------------------------------------ the OpenAPI contract

def _operations(document: dict) -> list[tuple[str, str, dict]]:
    return [(method, path, operation) for path, operations in document["paths"].items()
            for method, operation in operations.items()]


def _operation_of(document: dict, method: str, path: str) -> dict:
    path = path.split("?")[0]
    for template, operations in document["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path) and method.lower() in operations:
            return operations[method.lower()]
    raise AssertionError(f"{method} {path} is not in the OpenAPI document")


def _request_examples(operation: dict) -> list[Any]:
    media = operation["requestBody"]["content"]["application/json"]
    assert media.get("examples"), f"{operation['operationId']}: no request example"
    return [example["value"] for example in media["examples"].values()]


class _Recorder:
    """Calls through the harness and remembers every (operation, status) seen."""

    def __init__(self, h: Any, document: dict) -> None:
        self.h = h
        self.document = document
        self.seen: list[tuple[str, str, int]] = []

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        status, body = await self.h.call(method, path, **kwargs)
        operation = _operation_of(self.document, method, path)
        self.seen.append((operation["operationId"], path, status))
        return status, body

    def unlisted(self) -> list[tuple[str, str, int]]:
        by_id = {operation["operationId"]: operation for _, _, operation in _operations(self.document)}
        return [(op, path, status) for op, path, status in self.seen
                if str(status) not in {str(code) for code in by_id[op]["responses"]}]


# The order in which the examples are tried: each may need what an earlier one created.
_EXAMPLE_ORDER = ["post_signup", "post_signin", "post_open_account", "post_switch", "post_deposit",
                  "post_withdraw", "post_place_order",
                  "patch_modify_order", "patch_modify_position", "post_add_margin", "post_close_position",
                  "post_mark_read", "put_update_preferences", "post_place_alert", "post_cancel_all_after",
                  "post_refresh", "post_signout"]


async def test_every_documented_request_example_works_against_the_real_app(tmp_path) -> None:
    document = json.loads(openapi_text())
    # (the admin routes' examples need an operator: tests/test_admin.py sends them)
    with_bodies = {operation["operationId"]: (method, path, operation)
                   for method, path, operation in _operations(document)
                   if "requestBody" in operation and "admin" not in operation.get("tags", ())}
    assert sorted(with_bodies) == sorted(_EXAMPLE_ORDER)
    async with running_gateway(tmp_path) as h:
        await h.quote_all()
        # account 1 (standard, from sign-up) and 2 (isolated: adding margin needs one, and the
        # switch example names it)
        auth = await h.trader("examples@example.com", "isolated")
        _, placed = await h.call("POST", f"{API}/orders", headers=auth, expect=201, json={
            "symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "500.00", "leverage": 10})
        _, pending = await h.call("POST", f"{API}/orders", headers=auth, expect=201, json={
            "symbol": "BTCUSDT", "side": "buy", "type": "limit", "price": "60000.00",
            "margin": "100.00", "leverage": 10})
        ids = {"order_id": pending["order"]["id"], "position_id": placed["position"]["id"]}
        for operation_id in _EXAMPLE_ORDER:
            method, template, operation = with_bodies[operation_id]
            path = template.format(**ids)
            for example in _request_examples(operation):
                status, body = await h.call(method.upper(), path, headers=auth, json=example)
                if operation_id in ("post_refresh", "post_signout"):   # a placeholder token
                    assert status == 401 and body["error"]["code"] == "INVALID_REFRESH_TOKEN", body
                else:
                    assert 200 <= status < 300, (operation_id, example, status, body)
        assert h.gateway.internal_errors == 0


async def test_patching_only_the_take_profit_keeps_the_stop_loss(tmp_path) -> None:
    document = json.loads(openapi_text())
    schema = document["components"]["schemas"]["ModifyPositionRequest"]
    assert "absent" in schema["description"] and "null" in schema["description"]
    async with running_gateway(tmp_path) as h:
        await h.quote_all()
        auth = await h.trader("tp-only@example.com")
        _, placed = await h.call("POST", f"{API}/orders", headers=auth, expect=201, json={
            "symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "100.00", "leverage": 10,
            "stop_loss": "60000.00", "take_profit": "70000.00"})
        path = f"{API}/positions/{placed['position']['id']}"
        _, position = await h.call("PATCH", path, headers=auth, json={"take_profit": "72000.00"}, expect=200)
        assert (position["take_profit"], position["stop_loss"]) == ("72000.00", "60000.00")
        _, position = await h.call("PATCH", path, headers=auth, json={"stop_loss": None}, expect=200)
        assert (position["take_profit"], position["stop_loss"]) == ("72000.00", None)


async def test_every_status_the_api_answers_is_in_the_spec(tmp_path) -> None:
    document = json.loads(openapi_text())
    async with running_gateway(tmp_path) as h:
        api = _Recorder(h, document)
        await h.quote_all()
        auth = await h.trader("statuses@example.com")
        order = {"symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "100.00", "leverage": 10,
                 "client_order_id": "same-twice"}
        assert (await api.call("POST", f"{API}/orders", headers=auth, json=order))[0] == 201
        assert (await api.call("POST", f"{API}/orders", headers=auth, json=order))[0] == 200
        for method, path, body in [
            ("GET", f"{API}/orders/1?colour=red", None), ("GET", f"{API}/orders/999", None),
            ("GET", f"{API}/orders/abc", None), ("DELETE", f"{API}/orders/1", None),
            ("DELETE", f"{API}/orders/999", None), ("GET", f"{API}/positions/999?x=1", None),
            ("GET", f"{API}/account?x=1", None), ("GET", f"{API}/quotes/BTCUSDT?x=1", None),
            ("GET", f"{API}/quotes/DOGEUSDT", None), ("GET", "/healthz?x=1", None),
            ("GET", "/metrics?x=1", None), ("GET", "/readyz?x=1", None), ("GET", f"{API}/ping?x=1", None),
            ("PATCH", f"{API}/orders/1", {"price": "1.00"}), ("POST", f"{API}/orders", {"symbol": 5}),
            ("POST", f"{API}/positions/999/close", {}), ("POST", f"{API}/account/withdraw", {"amount": "1e9"}),
        ]:
            await api.call(method, path, headers=auth, json=body)
        await api.call("GET", f"{API}/account")
        await api.call("POST", f"{API}/orders", headers=auth, data="{}")
        assert api.unlisted() == [], "\n".join(map(str, api.unlisted()))


async def test_not_found_names_the_resource_and_its_id_the_same_way(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        await h.quote_all()
        auth = await h.trader("missing@example.com")
        for method, path, body, resource, identifier in [
            ("GET", f"{API}/orders/999", None, "order", "999"),
            ("GET", f"{API}/orders/abc", None, "order", "abc"),
            ("DELETE", f"{API}/orders/999", None, "order", "999"),
            ("PATCH", f"{API}/orders/999", {"price": "1.00"}, "order", "999"),
            ("GET", f"{API}/positions/999", None, "position", "999"),
            ("POST", f"{API}/positions/999/close", {}, "position", "999"),
            ("PATCH", f"{API}/positions/999", {"stop_loss": None}, "position", "999"),
            ("POST", f"{API}/positions/999/margin", {"amount": "1.00"}, "position", "999"),
            ("GET", f"{API}/quotes/DOGEUSDT", None, "symbol", "DOGEUSDT"),
        ]:
            status, answer = await h.call(method, path, headers=auth, json=body)
            details = answer["error"]["details"]
            assert (status, details["resource"], details["id"]) == (404, resource, identifier), (path, answer)


async def test_no_credentials_get_a_challenge_without_an_error_code(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        response = await h.client.get(f"{API}/account")
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="exness"'
        response = await h.client.get(f"{API}/account", headers={"Authorization": "Bearer not.a.jwt"})
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="exness", error="invalid_token"'


@asynccontextmanager
async def _served(tmp_path) -> AsyncIterator[str]:
    """The gateway on a real socket (hypercorn): its base URL."""
    cfg = gateway_config(tmp_path)
    async with trio.open_nursery() as nursery:
        system = await nursery.start(functools.partial(run_system, cfg, handle_signals=False, feed="none"))
        info = await nursery.start(functools.partial(
            gateway_module.run, handle=system.handle, store=system.store, candles=system.actors["candles"],
            cfg=cfg, tokens=token_issuer_from_config(cfg), persister=system.actors["persister"]))
        try:
            yield info.url
        finally:
            info.request_shutdown()
            system.request_shutdown()


async def test_options_answers_204_without_an_html_body(tmp_path) -> None:
    async with _served(tmp_path) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.options(f"{API}/orders")
        assert response.status_code == 204
        assert "Content-Type" not in response.headers and response.content == b""
        assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST", "OPTIONS"}


async def test_headers_too_large_is_431_with_the_error_body(tmp_path) -> None:
    async with _served(tmp_path) as url:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(b"GET /api/v1/ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
            received = b""
            with trio.fail_after(10):
                while chunk := await stream.receive_some(65536):
                    received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 431"), head
        assert b"content-type: application/json" in head.lower()
        error = json.loads(body)["error"]
        assert error["code"] == "HEADERS_TOO_LARGE" and error["message"] and error["details"]["max_bytes"] > 0


async def test_the_spec_states_the_rules_the_server_enforces() -> None:
    document = json.loads(openapi_text())
    schemas = document["components"]["schemas"]
    order = schemas["PlaceOrderRequest"]
    assert order["then"]["required"] == ["price"] and order["if"]["properties"]["type"]["enum"] == ["limit", "stop"]
    assert order["properties"]["symbol"]["enum"] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert re.match(order["properties"]["margin"]["pattern"], "100.00")
    for bad in ("0", "0.00", "-1", "1e3", "abc", ""):
        assert not re.match(order["properties"]["margin"]["pattern"], bad), bad
    assert schemas["Credentials"]["properties"]["email"]["format"] == "email"
    history = {p["name"]: p["schema"] for p in document["paths"]["/api/v1/history/positions"]["get"]["parameters"]}
    start = history["start"]["anyOf"][0]
    assert (start["minimum"], start["maximum"]) == (0, 9_223_372_036_854)
    assert history["cursor"]["anyOf"][0]["pattern"] == "^[A-Za-z0-9_-]{1,256}$"
    assert history["symbol"]["anyOf"][0]["enum"] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    for name in ("ModifyOrderRequest", "ModifyPositionRequest"):
        assert schemas[name]["minProperties"] == 1 and "null removes" in schemas[name]["description"]
        assert all("default" not in field for field in schemas[name]["properties"].values())   # absent ≠ null


async def test_the_spec_declares_links_between_operations() -> None:
    document = json.loads(openapi_text())
    operations = {operation["operationId"]: operation for _, _, operation in _operations(document)}
    placed = operations["post_place_order"]["responses"]["201"]["links"]
    assert placed["get_get_order"]["parameters"] == {"order_id": "$response.body#/order/id"}
    assert placed["post_close_position"]["parameters"] == {"position_id": "$response.body#/position/id"}
    for operation in operations.values():
        for response in operation["responses"].values():
            for link in response.get("links", {}).values():
                target = operations[link["operationId"]]
                names = {parameter["name"] for parameter in target.get("parameters", [])}
                assert set(link.get("parameters", {})) <= names, link
                assert "requestBody" not in link or "requestBody" in target
