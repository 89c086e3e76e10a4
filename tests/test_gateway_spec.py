"""Issue 15 (hardening): the HTTP API agrees with its OpenAPI document, list shapes are
consistent, the documented examples work, and sign-in throttling cannot lock the owner out."""

from __future__ import annotations

from typing import Any

from exness_actors.candles import Candle
from gateway_helpers import API, PASSWORD, running_gateway

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
