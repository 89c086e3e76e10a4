"""Issue 15 (hardening): the HTTP API agrees with its OpenAPI document, list shapes are
consistent, the documented examples work, and sign-in throttling cannot lock the owner out."""

from __future__ import annotations

from typing import Any

from exness_actors.candles import Candle
from gateway_helpers import API, running_gateway

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
