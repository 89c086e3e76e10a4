"""RaiseIdFloor: a repair moves the id counters past every id ever issued, never backwards."""

from __future__ import annotations

import pytest

from core_helpers import Market
from exness_actors.commands import RaiseIdFloor
from exness_actors.engine import MAX_ID
from exness_actors.events import CommandRejected, OrderAccepted, PositionOpened

OPEN = 6_500_000


@pytest.mark.parametrize("floor_orders, floor_positions, next_order, next_position", [
    (500, 700, 500, 700),       # both raised
    (1, 1, 2, 2),               # below the counters: unchanged
    (500, 1, 500, 2),           # one raised, one kept
])
def test_the_floor_raises_the_counters_and_never_lowers_them(floor_orders, floor_positions,
                                                             next_order, next_position):
    market = Market()
    market.quote(OPEN)
    market.open()                                   # order 1, position 1

    events = market.run(RaiseIdFloor(next_order_id=floor_orders, next_position_id=floor_positions))

    assert events == []
    opened = market.order()
    assert [e.order_id for e in opened if isinstance(e, OrderAccepted)] == [next_order]
    assert [e.position_id for e in opened if isinstance(e, PositionOpened)] == [next_position]


@pytest.mark.parametrize("orders, positions", [(0, 5), (5, -1), ("5", 5), (5, None), (MAX_ID + 1, 5)])
def test_a_malformed_floor_is_rejected_and_changes_nothing(orders, positions):
    market = Market()

    events = market.run(RaiseIdFloor(next_order_id=orders, next_position_id=positions))

    assert [type(e) for e in events] == [CommandRejected]
    assert "next_order_id" in events[0].message
    assert (market.engine.next_order_id, market.engine.next_position_id) == (1, 1)
