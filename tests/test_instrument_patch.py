"""``actors.wire.codec.parse_instrument_patch`` (issue 13): an operator's PATCH body → the core's
``UpdateInstrument.changes``, exact decimals, every bad field named."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from actors.wire.codec import EdgeError, parse_instrument_patch
from core_helpers import Market, SYMBOL
from exness_actors.commands import UpdateInstrument
from exness_actors.events import InstrumentUpdated
from exness_actors.instruments import Instrument

BTC = Instrument(symbol="BTCUSDT", price_decimals=2, qty_decimals=8, max_leverage=100, spread_bps=2, min_qty=1_000)


@pytest.mark.parametrize("body, changes", [
    ({"spread_bps": 5}, [["spread_bps", 5]]),
    ({"max_leverage": 50}, [["max_leverage", 50]]),
    ({"min_qty": "0.001"}, [["min_qty", 100_000]]),
    ({"maintenance_ratio": Decimal("0.25")}, [["maintenance_bps", 2_500]]),
    ({"maintenance_ratio": 0}, [["maintenance_bps", 0]]),
    ({"commission_bps": "0.35", "swap_long_bps": "-1.5", "swap_short_bps": 5}, [
        ["commission_ppm", 35], ["swap_long_ppm", -150], ["swap_short_ppm", 500]]),
    ({"commission_bps": None, "swap_long_bps": None}, [["commission_ppm", None], ["swap_long_ppm", None]]),
    ({"max_leverage": 10, "spread_bps": 0}, [["spread_bps", 0], ["max_leverage", 10]]),   # a fixed order
])
def test_a_patch_becomes_changes_at_the_cores_scale(body: dict, changes: list) -> None:
    assert parse_instrument_patch(body, BTC) == changes


@pytest.mark.parametrize("body, field", [
    ({"spread_bps": -1}, "spread_bps"),
    ({"spread_bps": 10_000}, "spread_bps"),
    ({"spread_bps": 1.5}, "spread_bps"),
    ({"max_leverage": 0}, "max_leverage"),
    ({"max_leverage": 1_001}, "max_leverage"),
    ({"max_leverage": "50"}, "max_leverage"),
    ({"min_qty": "0.000000001"}, "min_qty"),
    ({"min_qty": "0"}, "min_qty"),
    ({"min_qty": None}, "min_qty"),
    ({"maintenance_ratio": "1"}, "maintenance_ratio"),
    ({"maintenance_ratio": "0.00001"}, "maintenance_ratio"),
    ({"commission_bps": "-1"}, "commission_bps"),
    ({"commission_bps": "0.001"}, "commission_bps"),
    ({"swap_short_bps": "10000"}, "swap_short_bps"),
    ({"swap_long_bps": 0.5}, "swap_long_bps"),
    ({"price_decimals": 3}, "price_decimals"),
    ({"symbol": "ETHUSDT"}, "symbol"),
])
def test_a_bad_field_is_a_400_naming_it(body: dict, field: str) -> None:
    with pytest.raises(EdgeError) as caught:
        parse_instrument_patch(body, BTC)
    error = caught.value
    assert (error.status, error.code, error.details.get("field")) == (400, "VALIDATION_ERROR", field)
    assert field in error.message


@pytest.mark.parametrize("body", [{}, [], "spread_bps=5", None])
def test_an_empty_or_non_object_body_is_a_400(body: Any) -> None:
    with pytest.raises(EdgeError) as caught:
        parse_instrument_patch(body, BTC)
    assert (caught.value.status, caught.value.code) == (400, "VALIDATION_ERROR")


def test_what_the_parser_accepts_the_core_applies() -> None:
    market = Market()
    instrument = market.engine.instruments[SYMBOL]
    changes = parse_instrument_patch({"spread_bps": 7, "max_leverage": 20, "min_qty": "0.00002",
                                      "maintenance_ratio": "0.1", "commission_bps": "0.35",
                                      "swap_long_bps": "-2", "swap_short_bps": "2"}, instrument)
    events = market.run(UpdateInstrument(symbol=SYMBOL, changes=changes, operator_id=1, reason="test"))
    assert [type(e) for e in events][0] is InstrumentUpdated
    updated = market.engine.instruments[SYMBOL]
    assert (updated.spread_bps, updated.max_leverage, updated.min_qty, updated.maintenance_bps,
            updated.commission_ppm, updated.swap_long_ppm, updated.swap_short_ppm) == (7, 20, 2_000, 1_000, 35, -200, 200)
