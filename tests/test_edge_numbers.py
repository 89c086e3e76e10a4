"""Every number a client sends is parsed by one set of parsers (:mod:`exness_actors.money`):
ASCII digits only, and the magnitude checked before anything is converted, so no input is slow.

Synchronous table tests of the edge parsers that the HTTP gateway and the WebSocket order lane
share; the end-to-end rows live in test_gateway_inputs.py and test_ws_orders.py.
"""

from __future__ import annotations

import base64
import json
import time
from decimal import Decimal

import pytest

from actors.wire import codec as edge
from actors.ws._orders import build_command
from actors.wire.codec import EdgeError
from actors.store.base import InvalidCursor, decode_cursor, encode_cursor
from exness_actors.instruments import Instrument
from core_helpers import make_engine

INSTRUMENTS = {"BTCUSDT": Instrument(symbol="BTCUSDT")}
MARKET = {"symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "100", "leverage": 10}
PENDING = {**MARKET, "type": "limit", "price": "60000"}

# Bodies as raw JSON, decoded the way the gateway decodes them: the worst magnitudes a small
# request can carry, on every number field of an order.
WORST = [
    ("leverage", b'"leverage": 1e600000'),
    ("leverage", b'"leverage": 1e999999999'),
    ("leverage", b'"leverage": -1e999999999'),
    ("slippage_bps", b'"slippage_bps": 1e999999999, "expected_price": "1"'),
    ("expires_at", b'"expires_at": 1e999999999'),
    ("margin", b'"margin": 1e999999999'),
    ("margin", b'"margin": 1e-999999999'),
    ("price", b'"price": 123456789e999999990'),
    ("take_profit", b'"take_profit": 1.000000000000000000000000000000000000000000001e999999'),
]


def _place_body(fields: bytes) -> dict:
    """PENDING with ``fields`` (raw JSON members) in place of its own."""
    given = edge.parse_json_body(b"{" + fields + b"}")
    base = json.dumps({k: v for k, v in PENDING.items() if k not in given}).encode()
    return edge.parse_json_body(base[:-1] + b", " + fields + b"}")


@pytest.mark.parametrize("lane", ["http", "ws"])
@pytest.mark.parametrize("field, fields", WORST)
def test_huge_exponents_are_refused_at_once(field: str, fields: bytes, lane: str) -> None:
    body = _place_body(fields)
    engine = make_engine()
    started = time.perf_counter()
    with pytest.raises(EdgeError) as raised:
        if lane == "http":
            edge.parse_place_order(body, 1, INSTRUMENTS)
        else:
            build_command("place", body, 1, engine.instruments, engine)
    elapsed = time.perf_counter() - started
    assert (raised.value.status, raised.value.details["field"]) == (400, field)
    assert elapsed < 0.5, f"{field}: {elapsed:.3f} s"   # microseconds when fixed; 9 s before


NOT_ASCII = ["١٠", "１０", "1_0", "๑๐", "10\u00b2", "²", "1\u200b0", "Ⅻ"]


@pytest.mark.parametrize("text", NOT_ASCII)
def test_decimal_strings_take_ascii_digits_only(text: str) -> None:
    for name, body in (("margin", {**MARKET, "margin": text}), ("price", {**PENDING, "price": text}),
                       ("take_profit", {**MARKET, "take_profit": text})):
        with pytest.raises(EdgeError) as raised:
            edge.parse_place_order(body, 1, INSTRUMENTS)
        assert raised.value.details["field"] == name, text
        assert "not a decimal number" in raised.value.message
    with pytest.raises(EdgeError):
        edge.parse_funding({"amount": text}, 1, deposit=True)


@pytest.mark.parametrize("text, cents", [("10", 1000), (" 10.5 ", 1050), ("+1", 100), (".5", 50),
                                          ("5.", 500), ("1e2", 10000), ("1.500", 150), ("0010", 1000)])
def test_plain_decimal_strings_still_parse(text: str, cents: int) -> None:
    assert edge.parse_funding({"amount": text}, 1, deposit=True).amount == cents


@pytest.mark.parametrize("value", ["١٢", "１２", "1_2", " 12", "+12", "12 ", "-12", "1" * 40])
def test_ids_take_ascii_digits_only(value: str) -> None:
    with pytest.raises(EdgeError):
        edge.parse_path_id(value, "order")
    engine = make_engine()
    with pytest.raises(EdgeError) as raised:
        build_command("cancel", {"order_id": value}, 1, engine.instruments, engine)
    assert raised.value.details["field"] == "order_id"


def test_ws_lane_refuses_non_ascii_prices() -> None:
    engine = make_engine()
    with pytest.raises(EdgeError) as raised:
        build_command("place", {**PENDING, "price": "６００００"}, 1, engine.instruments, engine)
    assert raised.value.details["field"] == "price"


def _forged(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("query, count, text", [
    ("orders", 1, "orders:99999999999999999999"),
    ("orders", 1, "orders:9223372036854775808"),
    ("orders", 1, "orders:-1"),
    ("orders", 1, "orders:١٢"),
    ("orders", 1, "orders:1_2"),
    ("orders", 1, "orders: 12"),
    ("ledger", 2, "ledger:1:" + "9" * 400),
    ("positions", 2, "positions:18446744073709551616:1"),
])
def test_forged_cursors_beyond_64_bits_are_invalid(query: str, count: int, text: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(_forged(text), query, count)


def test_cursors_round_trip_up_to_64_bits() -> None:
    cursor = encode_cursor("positions", 2**63 - 1, 0)
    assert decode_cursor(cursor, "positions", 2) == (2**63 - 1, 0)


def test_json_numbers_keep_their_exact_value() -> None:
    body = edge.parse_json_body(b'{"amount": 100.10, "n": 7}')
    assert body == {"amount": Decimal("100.10"), "n": 7}


@pytest.mark.parametrize("raw", [b"1e28", b'"1e28"', b"100000000000000000000000000"])
def test_out_of_range_messages_quote_the_number_as_sent(raw: bytes) -> None:
    body = edge.parse_json_body(b'{"amount": ' + raw + b"}")
    with pytest.raises(EdgeError) as raised:
        edge.parse_funding(body, 1, deposit=True)
    assert "out of range" in raised.value.message
    assert "Decimal(" not in raised.value.message, raised.value.message
