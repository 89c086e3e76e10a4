"""Order and position status changes follow the transition tables (STYLE.md §2, issue 11).

The tables in :mod:`exness_actors.model` are data the core consults on every status change: an
edge missing from a table is an :class:`InvariantViolation` raised before anything changes.
Each engine case removes one edge from a table and drives the engine across it.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from exness_actors.commands import CancelOrder, Clock, ClosePosition
from exness_actors.errors import InvariantViolation
from exness_actors.model import (
    CLOSED, NEW, OPEN, ORDER_TRANSITIONS, POSITION_TRANSITIONS, check_order_transition,
    check_position_transition,
)
from exness_actors.reasons import OrderStatus
from core_helpers import SECOND, Market

PENDING, FILLED, CANCELLED, EXPIRED, REJECTED = (
    OrderStatus.PENDING.value, OrderStatus.FILLED.value, OrderStatus.CANCELLED.value,
    OrderStatus.EXPIRED.value, OrderStatus.REJECTED.value,
)

LEGAL_ORDER_MOVES = {(NEW, FILLED), (NEW, PENDING), (NEW, REJECTED), (PENDING, FILLED),
                     (PENDING, CANCELLED), (PENDING, EXPIRED)}
LEGAL_POSITION_MOVES = {(NEW, OPEN), (OPEN, OPEN), (OPEN, CLOSED)}


def test_the_order_table_allows_exactly_the_documented_moves() -> None:
    states = list(ORDER_TRANSITIONS)
    for current in states:
        for target in states:
            if (current, target) in LEGAL_ORDER_MOVES:
                check_order_transition(current, target)
            else:
                with pytest.raises(InvariantViolation, match=f"order cannot move from {current} to {target}"):
                    check_order_transition(current, target)


def test_the_position_table_allows_exactly_the_documented_moves() -> None:
    states = list(POSITION_TRANSITIONS)
    for current in states:
        for target in states:
            if (current, target) in LEGAL_POSITION_MOVES:
                check_position_transition(current, target)
            else:
                with pytest.raises(InvariantViolation, match=f"position cannot move from {current} to {target}"):
                    check_position_transition(current, target)


def _pending_limit(market: Market) -> int:
    return market.pending(type="limit", price=6_400_000, expires_at=100 * SECOND).order_id


def _open_position(market: Market) -> int:
    return market.open().position_id


# (table, current, target removed, arrange → returns an id, act on that id)
ENGINE_CASES: list[tuple[dict[str, frozenset[str]], str, str, Callable[[Market], Any], Callable[[Market, Any], Any]]] = [
    (ORDER_TRANSITIONS, NEW, FILLED, lambda m: None, lambda m, _: m.order(type="market")),
    (ORDER_TRANSITIONS, NEW, PENDING, lambda m: None, lambda m, _: m.order(type="limit", price=6_400_000)),
    (ORDER_TRANSITIONS, NEW, REJECTED, lambda m: None, lambda m, _: m.order(symbol="NOPE")),
    (ORDER_TRANSITIONS, NEW, REJECTED, lambda m: None, lambda m, _: m.order(account_id=99)),
    (ORDER_TRANSITIONS, PENDING, CANCELLED, _pending_limit,
     lambda m, order_id: m.run(CancelOrder(account_id=1, order_id=order_id), after=0)),
    (ORDER_TRANSITIONS, PENDING, EXPIRED, _pending_limit, lambda m, _: m.run(Clock(), after=200 * SECOND)),
    (ORDER_TRANSITIONS, PENDING, FILLED, _pending_limit, lambda m, _: m.quote(6_390_000)),
    (POSITION_TRANSITIONS, NEW, OPEN, lambda m: None, lambda m, _: m.order(type="market")),
    (POSITION_TRANSITIONS, NEW, OPEN, _pending_limit, lambda m, _: m.quote(6_390_000)),
    (POSITION_TRANSITIONS, OPEN, CLOSED, _open_position,
     lambda m, position_id: m.run(ClosePosition(account_id=1, position_id=position_id), after=0)),
    (POSITION_TRANSITIONS, OPEN, OPEN, _open_position,
     lambda m, position_id: m.run(ClosePosition(account_id=1, position_id=position_id, qty=1000), after=0)),
]


def _ledger(market: Market) -> tuple[Any, ...]:
    engine = market.engine
    return (market.account.free, market.account.locked, sorted(engine.positions), sorted(engine.orders),
            engine.next_order_id, engine.next_position_id, engine.house)


def _case_id(case: tuple[Any, ...]) -> str:
    table, current, target = case[:3]
    return f"{'order' if table is ORDER_TRANSITIONS else 'position'} {current} to {target}"


@pytest.mark.parametrize("table, current, target, arrange, act", ENGINE_CASES,
                         ids=[_case_id(case) for case in ENGINE_CASES])
def test_the_engine_consults_the_tables_before_changing_anything(
        monkeypatch: pytest.MonkeyPatch, table: dict[str, frozenset[str]], current: str, target: str,
        arrange: Callable[[Market], Any], act: Callable[[Market, Any], Any]) -> None:
    market = Market()
    market.quote(6_500_000)
    ident = arrange(market)
    before = _ledger(market)
    monkeypatch.setitem(table, current, table[current] - {target})

    with pytest.raises(InvariantViolation, match=f"cannot move from {current} to {target}"):
        act(market, ident)

    assert _ledger(market) == before
