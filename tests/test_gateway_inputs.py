"""Bad input, other accounts' ids, rate limits and load shedding: always a specific 4xx/503 JSON
error, never a 500.

The tables run against one system per table (a module-scoped system would outlive pytest-trio's
per-test event loop); each row is ``body → status, code, field``.
"""

from __future__ import annotations

import base64
import json
import re
import time

import pytest

from actors.auth_tokens import TokenIssuer
from actors.engine.actor import EngineHandle
from actors.gateway import create_app
from exness_actors.commands import Clock
from exness_actors.engine import Engine
from gateway_helpers import API, gateway_config, running_gateway

MARKET = {"symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "100", "leverage": 10}


def _with_deep(name: str, depth: int) -> bytes:
    """MARKET with ``name`` set to a list nested ``depth`` deep (a repeated key: the last wins)."""
    return (json.dumps(MARKET)[:-1] + f', "{name}": {"[" * depth}{"]" * depth}}}').encode()
JSON = {"Content-Type": "application/json"}


def _raw(body: str | bytes) -> bytes:
    return body.encode() if isinstance(body, str) else body


def _forged(text: str) -> str:
    """A cursor a client made up: the API's encoding around keys it never handed out."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# (label, body: dict → json / bytes → raw, status, code, field)
ORDER_ROWS = [
    ("malformed json", b'{"symbol": ', 400, "MALFORMED_JSON", None),
    ("trailing garbage", b'{"symbol": "BTCUSDT"} x', 400, "MALFORMED_JSON", None),
    ("NaN literal", b'{"symbol": "BTCUSDT", "margin": NaN}', 400, "MALFORMED_JSON", None),
    ("Infinity literal", b'{"margin": -Infinity}', 400, "MALFORMED_JSON", None),
    ("invalid utf-8", b'{"symbol": "\xff\xfe"}', 400, "MALFORMED_JSON", None),
    ("deep nesting", b"[" * 5000 + b"]" * 5000, 400, "MALFORMED_JSON", None),
    ("5000-digit integer", b'{"margin": ' + b"9" * 5000 + b"}", 400, "MALFORMED_JSON", None),
    ("array body", b"[1, 2]", 400, "VALIDATION_ERROR", None),
    ("string body", b'"order"', 400, "VALIDATION_ERROR", None),
    ("null body", b"null", 400, "VALIDATION_ERROR", None),
    ("empty body", b"", 400, "VALIDATION_ERROR", "body"),
    ("missing symbol", {k: v for k, v in MARKET.items() if k != "symbol"}, 400, "VALIDATION_ERROR", "symbol"),
    ("missing margin", {k: v for k, v in MARKET.items() if k != "margin"}, 400, "VALIDATION_ERROR", "margin"),
    ("null leverage", {**MARKET, "leverage": None}, 400, "VALIDATION_ERROR", "leverage"),
    ("unknown field", {**MARKET, "quantity": "1"}, 400, "VALIDATION_ERROR", "quantity"),
    ("symbol not a string", {**MARKET, "symbol": 7}, 400, "VALIDATION_ERROR", "symbol"),
    ("unknown symbol", {**MARKET, "symbol": "DOGEUSDT"}, 400, "UNKNOWN_SYMBOL", "symbol"),
    ("bad side", {**MARKET, "side": "long"}, 400, "VALIDATION_ERROR", "side"),
    ("side as list", {**MARKET, "side": ["buy"]}, 400, "VALIDATION_ERROR", "side"),
    ("bad type", {**MARKET, "type": "fok"}, 400, "VALIDATION_ERROR", "type"),
    ("leverage as text", {**MARKET, "leverage": "ten"}, 400, "VALIDATION_ERROR", "leverage"),
    ("leverage fractional", {**MARKET, "leverage": 10.5}, 400, "VALIDATION_ERROR", "leverage"),
    ("leverage boolean", {**MARKET, "leverage": True}, 400, "VALIDATION_ERROR", "leverage"),
    ("leverage zero", {**MARKET, "leverage": 0}, 400, "VALIDATION_ERROR", "leverage"),
    ("leverage above max", {**MARKET, "leverage": 101}, 400, "VALIDATION_ERROR", "leverage"),
    ("leverage huge", {**MARKET, "leverage": 10**40}, 400, "VALIDATION_ERROR", "leverage"),
    ("margin 3 decimals (number)", b'{"symbol": "BTCUSDT", "side": "buy", "type": "market", '
                                   b'"margin": 100.123, "leverage": 10}', 400, "VALIDATION_ERROR", "margin"),
    ("margin 3 decimals (string)", {**MARKET, "margin": "100.123"}, 400, "VALIDATION_ERROR", "margin"),
    ("margin negative", {**MARKET, "margin": "-5"}, 400, "VALIDATION_ERROR", "margin"),
    ("margin zero", {**MARKET, "margin": 0}, 400, "VALIDATION_ERROR", "margin"),
    ("margin 'NaN'", {**MARKET, "margin": "NaN"}, 400, "VALIDATION_ERROR", "margin"),
    ("margin text", {**MARKET, "margin": "a lot"}, 400, "VALIDATION_ERROR", "margin"),
    ("margin object", {**MARKET, "margin": {"amount": 1}}, 400, "VALIDATION_ERROR", "margin"),
    ("margin 1e30", b'{"symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": 1e30, '
                    b'"leverage": 10}', 400, "VALIDATION_ERROR", "margin"),
    ("margin beyond int64", {**MARKET, "margin": "123456789012345678901234"}, 400, "VALIDATION_ERROR", "margin"),
    ("margin 1e999999999", b'{"symbol": "BTCUSDT", "side": "buy", "type": "market", '
                           b'"margin": 1e999999999, "leverage": 10}', 400, "VALIDATION_ERROR", "margin"),
    ("price on a market order", {**MARKET, "price": "65000"}, 400, "VALIDATION_ERROR", "price"),
    ("limit without price", {**MARKET, "type": "limit"}, 400, "VALIDATION_ERROR", "price"),
    ("price with 3 decimals", {**MARKET, "type": "limit", "price": "60000.001"}, 400, "VALIDATION_ERROR", "price"),
    ("slippage alone", {**MARKET, "slippage_bps": 5}, 400, "VALIDATION_ERROR", "expected_price"),
    ("slippage negative", {**MARKET, "slippage_bps": -1, "expected_price": "65000"}, 400,
     "VALIDATION_ERROR", "slippage_bps"),
    ("expires_at negative", {**MARKET, "type": "limit", "price": "60000", "expires_at": -1}, 400,
     "VALIDATION_ERROR", "expires_at"),
    ("expires_at text", {**MARKET, "type": "limit", "price": "60000", "expires_at": "soon"}, 400,
     "VALIDATION_ERROR", "expires_at"),
    ("client_order_id too long", {**MARKET, "client_order_id": "x" * 65}, 400, "VALIDATION_ERROR", "client_order_id"),
    ("client_order_id control char", {**MARKET, "client_order_id": "a\nb"}, 400, "VALIDATION_ERROR",
     "client_order_id"),
    ("client_order_id number", {**MARKET, "client_order_id": 12}, 400, "VALIDATION_ERROR", "client_order_id"),
    ("take_profit float-ish text", {**MARKET, "take_profit": "7e4.5"}, 400, "VALIDATION_ERROR", "take_profit"),
    ("leverage 1e600000", b'{"symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "100", '
                          b'"leverage": 1e600000}', 400, "VALIDATION_ERROR", "leverage"),
    ("expires_at 1e999999999", b'{"symbol": "BTCUSDT", "side": "buy", "type": "limit", "price": "60000", '
                               b'"margin": "100", "leverage": 10, "expires_at": 1e999999999}', 400,
     "VALIDATION_ERROR", "expires_at"),
    ("expires_at past 2262 (ns beyond 64 bits)", {**MARKET, "type": "limit", "price": "60000",
                                                  "expires_at": 9_223_372_036_855}, 400,
     "VALIDATION_ERROR", "expires_at"),
    ("margin in Arabic-Indic digits", {**MARKET, "margin": "١٠٠"}, 400, "VALIDATION_ERROR", "margin"),
    ("margin in fullwidth digits", {**MARKET, "margin": "１００"}, 400, "VALIDATION_ERROR", "margin"),
    ("margin with an underscore", {**MARKET, "margin": "1_00"}, 400, "VALIDATION_ERROR", "margin"),
    ("price in fullwidth digits", {**MARKET, "type": "limit", "price": "６００００"}, 400, "VALIDATION_ERROR", "price"),
    ("oversize body", {**MARKET, "client_order_id": "x" * 20_000}, 413, "PAYLOAD_TOO_LARGE", None),
]


async def _check_rows(h, method: str, path: str, rows, headers: dict) -> None:
    failures = []
    for label, body, status, code, field in rows:
        if isinstance(body, (dict, list)):
            raw = json.dumps(body).encode()
        else:
            raw = _raw(body)
        got_status, got = await h.call(method, path, headers={**headers, **JSON}, data=raw)
        error = got.get("error", {}) if isinstance(got, dict) else {}
        observed = (got_status, error.get("code"), error.get("details", {}).get("field"))
        if observed != (status, code, field):
            failures.append((label, observed, (status, code, field), error.get("message")))
        elif status == 400 and field is not None:
            assert field in error["message"], (label, error["message"])
    assert not failures, "\n".join(map(str, failures))
    assert h.gateway.internal_errors == 0


async def test_order_body_table(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        auth = await h.trader("table@example.com")
        await h.quote_all()
        await _check_rows(h, "POST", f"{API}/orders", ORDER_ROWS, auth)
        # JSON numbers are fine when exact; nothing above placed an order
        _, placed = await h.call("POST", f"{API}/orders", headers={**auth, **JSON}, expect=201,
                                 data=b'{"symbol": "btcusdt", "side": "buy", "type": "market", '
                                      b'"margin": 100.10, "leverage": 10}')
        assert placed["order"]["margin"] == "100.10" and placed["order"]["id"] == "1"
        # business rejections speak the API's units too (decimal strings, not cents or ticks)
        _, poor = await h.call("POST", f"{API}/orders", headers=auth, expect=422,
                               json={**MARKET, "margin": "99999999.00"})
        assert re.fullmatch(r"free balance \d+\.\d\d is less than the margin 99999999\.00",
                            poor["error"]["message"]), poor
        _, wrong = await h.call("POST", f"{API}/orders", headers=auth, expect=422,
                                json={**MARKET, "take_profit": "1.00"})
        assert re.fullmatch(r"take_profit must be above \d+\.\d\d", wrong["error"]["message"]), wrong


async def test_values_nested_as_deep_as_json_allows_are_400s(tmp_path) -> None:
    """Past some depth the decoder refuses the body (MALFORMED_JSON); just below it a value
    decodes but is too deep to repr or compare: still a 400 naming the field, never a 500."""
    async with running_gateway(tmp_path, {"limits": {"account_burst": 10_000}}) as h:
        auth = await h.trader("deep@example.com")
        seen = set()
        for name in ("margin", "leverage", "side", "symbol", "client_order_id", "take_profit"):
            for depth in range(600, 1000, 10):
                status, body = await h.call("POST", f"{API}/orders", headers={**auth, **JSON},
                                            data=_with_deep(name, depth))
                error = body["error"]
                assert status == 400 and error["code"] in ("MALFORMED_JSON", "VALIDATION_ERROR"), (name, depth, body)
                if error["code"] == "VALIDATION_ERROR":
                    assert error["details"]["field"] == name, (name, depth, body)
                seen.add(error["code"])
        assert seen == {"MALFORMED_JSON", "VALIDATION_ERROR"}
        assert h.gateway.internal_errors == 0


async def test_content_type_and_methods(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        auth = await h.trader("ctype@example.com")
        status, body = await h.call("POST", f"{API}/orders", headers={**auth, "Content-Type": "text/plain"},
                                    data=json.dumps(MARKET).encode())
        assert (status, body["error"]["code"]) == (415, "UNSUPPORTED_MEDIA_TYPE")
        status, body = await h.call("POST", f"{API}/orders", headers={**auth, "Content-Type": "application/x-www-form-urlencoded"},
                                    data=b"symbol=BTCUSDT")
        assert status == 415
        await h.call("POST", f"{API}/account/deposit", headers={**auth, "Content-Type": "application/json; charset=utf-8"},
                     data=b'{"amount": "1"}', expect=200)
        response = await h.client.put(f"{API}/orders", headers=auth)
        assert response.status_code == 405 and "POST" in response.headers["Allow"]
        assert (await response.get_json())["error"]["code"] == "METHOD_NOT_ALLOWED"
        status, body = await h.call("GET", "/api/v2/orders")
        assert (status, body["error"]["code"]) == (404, "NOT_FOUND")
        assert h.gateway.internal_errors == 0


async def test_other_endpoints_bad_input_table(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        auth = await h.trader("others@example.com", "isolated")   # add margin needs an isolated account
        await h.quote_all()
        _, placed = await h.call("POST", f"{API}/orders", headers=auth, expect=201, json=MARKET)
        position_id = placed["position"]["id"]
        _, pending = await h.call("POST", f"{API}/orders", headers=auth, expect=201,
                                  json={**MARKET, "type": "limit", "price": "60000"})
        order_id = pending["order"]["id"]
        signup = f"{API}/auth/signup"
        cases = [
            # (method, path, body, status, code, field)
            ("POST", signup, {"email": "nope", "password": "long enough"}, 400, "VALIDATION_ERROR", "email"),
            ("POST", signup, {"email": "a@b", "password": "long enough"}, 400, "VALIDATION_ERROR", "email"),
            ("POST", signup, {"email": 5, "password": "long enough"}, 400, "VALIDATION_ERROR", "email"),
            ("POST", signup, {"email": "x@example.com", "password": "short"}, 400, "VALIDATION_ERROR", "password"),
            ("POST", signup, {"email": "x@example.com", "password": "p" * 129}, 400, "VALIDATION_ERROR", "password"),
            ("POST", signup, {"email": "x@example.com", "password": 12345678}, 400, "VALIDATION_ERROR", "password"),
            ("POST", signup, b'{"email": "x@example.com", "password": "\\ud800 lone surrogate"}', 400,
             "VALIDATION_ERROR", "password"),
            ("POST", signup, {"email": "x@example.com"}, 400, "VALIDATION_ERROR", "password"),
            ("POST", signup, {"email": "x@example.com", "password": "long enough", "admin": True}, 400,
             "VALIDATION_ERROR", "admin"),
            ("POST", f"{API}/auth/signin", {"email": "x@example.com", "password": None}, 400, "VALIDATION_ERROR", "password"),
            ("POST", f"{API}/auth/refresh", {}, 400, "VALIDATION_ERROR", "refresh_token"),
            ("POST", f"{API}/auth/refresh", {"refresh_token": 42}, 400, "VALIDATION_ERROR", "refresh_token"),
            ("POST", f"{API}/auth/signout", {"refresh_token": "t" * 300}, 400, "VALIDATION_ERROR", "refresh_token"),
            ("POST", f"{API}/account/deposit", {"amount": "0"}, 400, "VALIDATION_ERROR", "amount"),
            ("POST", f"{API}/account/deposit", {"amount": "1.001"}, 400, "VALIDATION_ERROR", "amount"),
            ("POST", f"{API}/account/deposit", {"amount": "1", "idempotency_key": "k" * 65}, 400,
             "VALIDATION_ERROR", "idempotency_key"),
            ("POST", f"{API}/account/withdraw", {}, 400, "VALIDATION_ERROR", "amount"),
            ("PATCH", f"{API}/orders/{order_id}", {}, 400, "VALIDATION_ERROR", None),
            ("PATCH", f"{API}/orders/{order_id}", {"price": None}, 400, "VALIDATION_ERROR", "price"),
            ("PATCH", f"{API}/orders/{order_id}", {"qty": "1"}, 400, "VALIDATION_ERROR", "qty"),
            ("PATCH", f"{API}/orders/{order_id}", {"expires_at": 1.5}, 400, "VALIDATION_ERROR", "expires_at"),
            ("PATCH", f"{API}/positions/{position_id}", {"stop_loss": "abc"}, 400, "VALIDATION_ERROR", "stop_loss"),
            ("PATCH", f"{API}/positions/{position_id}", {}, 400, "VALIDATION_ERROR", None),
            ("POST", f"{API}/positions/{position_id}/close", {"qty": "abc"}, 400, "VALIDATION_ERROR", "qty"),
            ("POST", f"{API}/positions/{position_id}/close", {"qty": "0.000000001"}, 400, "VALIDATION_ERROR", "qty"),
            ("POST", f"{API}/positions/{position_id}/close", {"all": True}, 400, "VALIDATION_ERROR", "all"),
            ("POST", f"{API}/positions/{position_id}/close", b"[]", 400, "VALIDATION_ERROR", None),
            ("POST", f"{API}/positions/{position_id}/close", b"null", 400, "VALIDATION_ERROR", None),
            ("POST", f"{API}/positions/{position_id}/close", b"false", 400, "VALIDATION_ERROR", None),
            ("POST", f"{API}/positions/{position_id}/close", {"qty": "０.１"}, 400, "VALIDATION_ERROR", "qty"),
            ("POST", f"{API}/account/deposit", {"amount": "١٠"}, 400, "VALIDATION_ERROR", "amount"),
            ("POST", f"{API}/account/deposit", {"amount": "１０"}, 400, "VALIDATION_ERROR", "amount"),
            ("POST", f"{API}/account/deposit", {"amount": "1_0"}, 400, "VALIDATION_ERROR", "amount"),
            ("POST", f"{API}/positions/{position_id}/margin", {"amount": "1_0"}, 400, "VALIDATION_ERROR", "amount"),
            ("PATCH", f"{API}/positions/{position_id}", {"stop_loss": "１"}, 400, "VALIDATION_ERROR", "stop_loss"),
            ("PATCH", f"{API}/orders/{order_id}", {"expires_at": 9_223_372_036_855}, 400, "VALIDATION_ERROR",
             "expires_at"),
            ("POST", f"{API}/positions/{position_id}/close", {"qty": "99"}, 422, "INVALID_QTY", None),
            ("POST", f"{API}/positions/{position_id}/margin", {"amount": -1}, 400, "VALIDATION_ERROR", "amount"),
            ("POST", f"{API}/positions/{position_id}/margin", {"amount": "999999"}, 422, "INSUFFICIENT_BALANCE", None),
            # ids in paths
            ("GET", f"{API}/orders/abc", None, 404, "UNKNOWN_ORDER", "order_id"),
            ("GET", f"{API}/orders/0", None, 404, "UNKNOWN_ORDER", "order_id"),
            ("GET", f"{API}/orders/-1", None, 404, "UNKNOWN_ORDER", "order_id"),
            ("GET", f"{API}/orders/{'9' * 30}", None, 404, "UNKNOWN_ORDER", "order_id"),
            ("GET", f"{API}/orders/%E2%91%A0", None, 404, "UNKNOWN_ORDER", "order_id"),
            ("GET", f"{API}/orders/999999", None, 404, "UNKNOWN_ORDER", None),
            ("DELETE", f"{API}/orders/1e3", None, 404, "UNKNOWN_ORDER", "order_id"),
            ("GET", f"{API}/positions/x1", None, 404, "UNKNOWN_POSITION", "position_id"),
            ("POST", f"{API}/positions/999/close", None, 404, "UNKNOWN_POSITION", None),
            ("GET", f"{API}/quotes/NOPE", None, 404, "UNKNOWN_SYMBOL", None),
            # query strings
            ("GET", f"{API}/orders?status=open", None, 400, "VALIDATION_ERROR", "status"),
            ("GET", f"{API}/orders?limit=0", None, 400, "VALIDATION_ERROR", "limit"),
            ("GET", f"{API}/orders?limit=1001", None, 400, "VALIDATION_ERROR", "limit"),
            ("GET", f"{API}/orders?limit=abc", None, 400, "VALIDATION_ERROR", "limit"),
            ("GET", f"{API}/orders?limit=1&limit=2", None, 400, "VALIDATION_ERROR", "limit"),
            ("GET", f"{API}/orders?cursor=garbage", None, 400, "VALIDATION_ERROR", "cursor"),
            ("GET", f"{API}/orders?status=all&cursor=garbage", None, 400, "VALIDATION_ERROR", "cursor"),
            ("GET", f"{API}/orders?simbol=BTCUSDT", None, 400, "VALIDATION_ERROR", "simbol"),
            ("GET", f"{API}/orders?symbol=DOGE", None, 400, "UNKNOWN_SYMBOL", "symbol"),
            ("GET", f"{API}/account?x=1", None, 400, "VALIDATION_ERROR", "x"),
            ("GET", f"{API}/account/ledger?cursor=bGVkZ2VyOjE", None, 400, "VALIDATION_ERROR", "cursor"),
            ("GET", f"{API}/history/positions?reason=margin_call", None, 400, "VALIDATION_ERROR", "reason"),
            ("GET", f"{API}/history/positions?start=yesterday", None, 400, "VALIDATION_ERROR", "start"),
            ("GET", f"{API}/history/positions?start=10&end=5", None, 400, "VALIDATION_ERROR", "end"),
            ("GET", f"{API}/history/positions?end=99999999999999999999", None, 400, "VALIDATION_ERROR", "end"),
            ("GET", f"{API}/history/positions?start=9223372036855", None, 400, "VALIDATION_ERROR", "start"),
            ("GET", f"{API}/history/positions?end=253402300799999", None, 400, "VALIDATION_ERROR", "end"),
            ("GET", f"{API}/history/positions?start=1_0", None, 400, "VALIDATION_ERROR", "start"),
            ("GET", f"{API}/candles?symbol=BTCUSDT&start=9223372036855", None, 400, "VALIDATION_ERROR", "start"),
            ("GET", f"{API}/orders?limit=%EF%BC%91", None, 400, "VALIDATION_ERROR", "limit"),
            ("GET", f"{API}/orders?cursor={_forged('orders:99999999999999999999')}", None, 400,
             "VALIDATION_ERROR", "cursor"),
            ("GET", f"{API}/orders?status=all&cursor={_forged('orders:9223372036854775808')}", None, 400,
             "VALIDATION_ERROR", "cursor"),
            ("GET", f"{API}/account/ledger?cursor={_forged('ledger:18446744073709551616:0')}", None, 400,
             "VALIDATION_ERROR", "cursor"),
            ("GET", f"{API}/account/ledger?cursor={_forged('ledger:1:' + '9' * 100)}", None, 400,
             "VALIDATION_ERROR", "cursor"),
            ("GET", f"{API}/history/positions?cursor={_forged('positions:99999999999999999999:1')}", None, 400,
             "VALIDATION_ERROR", "cursor"),
            ("GET", f"{API}/history/positions?cursor={_forged('positions:1:-1')}", None, 400,
             "VALIDATION_ERROR", "cursor"),
            ("GET", f"{API}/candles", None, 400, "VALIDATION_ERROR", "symbol"),
            ("GET", f"{API}/candles?symbol=BTCUSDT&interval=2m", None, 400, "VALIDATION_ERROR", "interval"),
            ("GET", f"{API}/candles?symbol=BTCUSDT&limit=1001", None, 400, "VALIDATION_ERROR", "limit"),
            ("GET", f"{API}/candles?symbol=BTCUSDT&start=-5", None, 400, "VALIDATION_ERROR", "start"),
        ]
        failures = []
        for method, path, body, status, code, field in cases:
            raw = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
            got_status, got = await h.call(method, path, headers={**auth, **JSON}, data=raw)
            error = got.get("error", {}) if isinstance(got, dict) else {}
            observed = (got_status, error.get("code"), error.get("details", {}).get("field"))
            if observed != (status, code, field):
                failures.append((method, path, body, observed, error.get("message")))
        assert not failures, "\n".join(map(str, failures))
        assert h.gateway.internal_errors == 0


async def test_other_accounts_ids_are_not_found(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        alice = await h.trader("alice@example.com")
        mallory = await h.trader("mallory@example.com")
        await h.quote_all()
        _, placed = await h.call("POST", f"{API}/orders", headers=alice, expect=201, json=MARKET)
        position_id, filled_id = placed["position"]["id"], placed["order"]["id"]
        _, pending = await h.call("POST", f"{API}/orders", headers=alice, expect=201,
                                  json={**MARKET, "type": "limit", "price": "60000"})
        order_id = pending["order"]["id"]
        attempts = [
            ("GET", f"{API}/orders/{order_id}", None, "UNKNOWN_ORDER"),
            ("GET", f"{API}/orders/{filled_id}", None, "UNKNOWN_ORDER"),
            ("DELETE", f"{API}/orders/{order_id}", None, "UNKNOWN_ORDER"),
            ("PATCH", f"{API}/orders/{order_id}", {"price": "59000"}, "UNKNOWN_ORDER"),
            ("GET", f"{API}/positions/{position_id}", None, "UNKNOWN_POSITION"),
            ("PATCH", f"{API}/positions/{position_id}", {"stop_loss": "50000"}, "UNKNOWN_POSITION"),
            ("POST", f"{API}/positions/{position_id}/close", None, "UNKNOWN_POSITION"),
            ("POST", f"{API}/positions/{position_id}/close", {"qty": "0.001"}, "UNKNOWN_POSITION"),
            ("POST", f"{API}/positions/{position_id}/margin", {"amount": "10"}, "UNKNOWN_POSITION"),
        ]
        for method, path, body, code in attempts:
            status, got = await h.call(method, path, headers=mallory, json=body)
            assert (status, got["error"]["code"]) == (404, code), (method, path, got)
            assert "status" not in got["error"]["details"]        # nothing about alice's order leaks
        for path, key in ((f"{API}/orders", "orders"), (f"{API}/orders?status=all", "orders"),
                          (f"{API}/positions", "positions"), (f"{API}/history/positions", "positions")):
            _, listed = await h.call("GET", path, headers=mallory, expect=200)
            assert listed[key] == [], path
        _, ledger = await h.call("GET", f"{API}/account/ledger", headers=mallory, expect=200)
        assert [entry["kind"] for entry in ledger["entries"]] == ["deposit"]
        # alice's things are untouched
        _, mine = await h.call("GET", f"{API}/orders/{order_id}", headers=alice, expect=200)
        assert mine["status"] == "pending"
        await h.call("GET", f"{API}/positions/{position_id}", headers=alice, expect=200)


async def test_rate_limits_per_ip_and_per_account(tmp_path) -> None:
    async with running_gateway(tmp_path, {"limits": {"ip_rate_per_s": 0.5, "ip_burst": 4}}) as h:
        statuses = [(await h.client.get(f"{API}/ping")).status_code for _ in range(4)]
        assert statuses == [200] * 4
        response = await h.client.get(f"{API}/ping")
        assert response.status_code == 429 and int(response.headers["Retry-After"]) == 2
        body = await response.get_json()
        assert body["error"]["code"] == "RATE_LIMITED" and body["error"]["details"]["scope"] == "ip"

    async with running_gateway(tmp_path / "account", {"limits": {"account_rate_per_s": 1, "account_burst": 2}}) as h:
        alice, bob = await h.trader("a@example.com"), await h.trader("b@example.com")
        for _ in range(2):
            await h.call("GET", f"{API}/account", headers=alice, expect=200)
        response = await h.client.get(f"{API}/account", headers=alice)
        assert response.status_code == 429 and response.headers["Retry-After"] == "1"
        assert (await response.get_json())["error"]["details"]["scope"] == "account"
        await h.call("GET", f"{API}/account", headers=bob, expect=200)      # another account is fine
        _, metrics = await h.call("GET", "/metrics")
        assert 'exness_http_rate_limited_total{scope="account"} 1.0' in metrics


async def test_full_or_stopped_engine_is_503_with_retry_after(tmp_path) -> None:
    cfg = gateway_config(tmp_path)
    handle = EngineHandle(Engine(cfg.core), inbox_size=1)      # no engine task: nothing drains it
    tokens = TokenIssuer(b"s" * 32)
    app = create_app(handle=handle, store=None, candles=None, cfg=cfg, tokens=tokens)
    client = app.test_client()
    auth = {"Authorization": f"Bearer {tokens.issue_access(1, 1)}"}
    handle.send_nowait(Clock())                                 # the inbox is now full
    for method, path, body in (("POST", f"{API}/orders", MARKET), ("GET", f"{API}/account", None),
                               ("GET", f"{API}/quotes", None), ("DELETE", f"{API}/orders/1", None)):
        response = await client.open(path, method=method, headers=auth, json=body)
        payload = await response.get_json()
        assert (response.status_code, payload["error"]["code"]) == (503, "OVERLOADED"), path
        assert response.headers["Retry-After"] == "1"
    response = await client.get("/readyz")
    assert response.status_code == 503 and (await response.get_json())["error"]["details"]["engine"] == "inbox full"
    handle.accepting = False
    response = await client.post(f"{API}/orders", headers=auth, json=MARKET)
    payload = await response.get_json()
    assert (response.status_code, payload["error"]["code"]) == (503, "ENGINE_STOPPED")
    assert response.headers["Retry-After"] == "5"
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert app.extensions["exness_gateway"].internal_errors == 0


@pytest.mark.parametrize("clock_offset_s, expected", [(0, 200), (60, 503)])
async def test_readyz_needs_fresh_quotes_for_every_symbol(tmp_path, clock_offset_s: int, expected: int) -> None:
    async with running_gateway(tmp_path, clock=lambda: time.time_ns() + clock_offset_s * 10**9) as h:
        status, body = await h.call("GET", "/readyz")
        assert status == 503 and body["error"]["details"]["no_quote"] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
        await h.quote("BTCUSDT", "65000", "65000")
        status, body = await h.call("GET", "/readyz")
        assert status == 503 and body["error"]["details"]["no_quote"] == ["ETHUSDT", "SOLUSDT"]
        await h.quote_all()
        status, body = await h.call("GET", "/readyz")
        assert status == expected, body
        if expected == 503:
            assert body["error"]["details"]["stale_quotes"] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
        await h.call("GET", "/healthz", expect=200)
