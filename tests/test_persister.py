"""The persister actor: a real engine's events → the store, idempotently, live or rebuilt."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import trio
import trio.testing

from actors.history import persister as persister_actor
from actors.config import load_config
from actors.engine.messages import EventBatch
from actors.store.base import Store, rows_from_items
from actors.store.sqlite import SqliteStore
from core_helpers import SECOND, SYMBOL, Market, of_type
from exness_actors.commands import (
    CancelOrder, Clock, ClosePosition, CreateAccount, Deposit, ModifyOrder, Withdraw,
)
from exness_actors.events import (
    BalanceChanged, OrderAccepted, OrderCancelled, PositionClosed, PositionOpened,
)

ETH = "ETHUSDT"


class Recorder(Market):
    """A :class:`Market` that records ``(seq, ts, events)`` of every input that had events and
    cuts them into engine batches, as the engine actor publishes them."""

    def __init__(self, **kwargs: Any) -> None:
        self.items: list[tuple[int, int, list]] = []
        self.batches: list[EventBatch] = []
        self._cut = 0
        super().__init__(**kwargs)

    def run(self, command: Any, *, after: int = SECOND) -> list:
        events = super().run(command, after=after)
        if events:
            self.items.append((self.engine.last_seq, self.engine.now, events))
        return events

    def end_batch(self) -> None:
        self.batches.append(EventBatch(items=self.items[self._cut:], last_seq=self.engine.last_seq))
        self._cut = len(self.items)

    def events(self, kind: type) -> list:
        return [event for _seq, _ts, events in self.items for event in of_type(events, kind)]


def trading_day() -> Recorder:
    """Two accounts: market opens and closes (whole and partial), a stop-loss, pending orders
    cancelled, modified, expired and triggered, deposits and withdrawals."""
    market = Recorder(deposit=1_000_000)
    market.run(CreateAccount(account_id=2, initial_deposit=50_000))
    market.quote(6_500_000, 6_500_100)
    market.quote(300_000, 300_050, symbol=ETH)
    market.end_batch()

    first = market.open()
    market.run(ClosePosition(account_id=1, position_id=first.position_id))
    market.quote(6_500_000, 6_500_100)
    second = market.open(margin=20_000, leverage=5, client_order_id="second")
    market.run(ClosePosition(account_id=1, position_id=second.position_id, qty=second.qty // 3))
    market.end_batch()

    market.quote(6_510_000, 6_510_100)
    market.run(ClosePosition(account_id=1, position_id=second.position_id))
    market.quote(300_100, 300_150, symbol=ETH)
    market.open(account_id=2, symbol=ETH, side="sell", margin=5_000, leverage=2,
                stop_loss=310_000)
    cancelled = market.pending(type="limit", price=6_000_000)
    market.run(CancelOrder(account_id=1, order_id=cancelled.order_id))
    modified = market.pending(type="limit", price=6_100_000, client_order_id="dip")
    market.run(ModifyOrder(account_id=1, order_id=modified.order_id, price=6_200_000, take_profit=7_000_000))
    market.pending(type="stop", price=7_000_000, expires_at=market.ts + 30 * SECOND)
    market.run(Deposit(account_id=1, amount=12_345, idempotency_key="d1"))
    market.run(Withdraw(account_id=2, amount=1_000, idempotency_key="w1"))
    market.end_batch()

    market.quote(6_190_000, 6_199_000)                # triggers the modified limit buy
    market.quote(311_000, 311_100, symbol=ETH)        # the short's stop-loss
    market.run(Clock(), after=60 * SECOND)            # the stop entry expires
    market.end_batch()
    market.quote(6_300_000, 6_300_100)
    market.end_batch()
    return market


async def dump(store: Store, accounts=(1, 2)) -> dict:
    """Everything the store answers, through its public queries."""
    result: dict = {"last_seq": await store.last_persisted_seq()}
    for account in accounts:
        result[("ledger", account)] = (await store.ledger(account, limit=1000)).items
        result[("orders", account)] = (await store.orders(account, limit=1000)).items
        result[("closed", account)] = (await store.closed_positions(account, limit=1000)).items
    return result


@pytest.fixture
def cfg(tmp_path):
    return load_config(environ={}, overrides={"data": {"dir": str(tmp_path)}})


@pytest.fixture
async def stores(tmp_path):
    opened: list[SqliteStore] = []

    async def open_store(name: str) -> SqliteStore:
        store = await SqliteStore.open(tmp_path / name)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        await store.close()


async def persist_live(store: Store, cfg, batches: list[EventBatch]) -> persister_actor.Persister:
    send, receive = trio.open_memory_channel(64)
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(functools.partial(persister_actor.run, inbox=receive,
                                                       settings=cfg.settings.persister, store=store))
        for batch in batches:
            await send.send(batch)
        await send.aclose()
    return handle


async def test_the_actor_writes_what_the_events_say(stores, cfg) -> None:
    market = trading_day()
    store = await stores("live")

    handle = await persist_live(store, cfg, market.batches)

    assert await store.last_persisted_seq() == market.engine.last_seq
    stats = handle.statistics()
    assert (stats.last_seq, stats.lag, stats.batches_received) == (market.engine.last_seq, 0, 5)

    # the ledger: one row per BalanceChanged, newest first, values as the events say
    for account in (1, 2):
        balance_events = [e for e in market.events(BalanceChanged) if e.account_id == account]
        rows = (await store.ledger(account, limit=1000)).items
        assert [(r.kind, r.free_delta, r.locked_delta, r.free, r.locked, r.ref, r.ts) for r in reversed(rows)] == [
            (e.kind, e.free_delta, e.locked_delta, e.free, e.locked, e.ref, e.ts) for e in balance_events]
        account_state = market.engine.accounts[account]
        assert (rows[0].free, rows[0].locked) == (account_state.free, account_state.locked)

    # trade history: one row per PositionClosed
    closes = market.events(PositionClosed)
    rows = (await store.closed_positions(1, limit=1000)).items + (await store.closed_positions(2, limit=1000)).items
    assert sorted((r.position_id, r.qty, r.close_price, r.pnl, r.credit, r.reason, r.closed_at) for r in rows) == sorted(
        (e.position_id, e.qty, e.price, e.pnl, e.credit, e.reason, e.ts) for e in closes)
    assert {r.reason for r in rows} == {"user", "stop_loss"}
    opened = {e.position_id: e for e in market.events(PositionOpened)}
    assert all((r.leverage, r.opened_at) == (opened[r.position_id].leverage, opened[r.position_id].ts) for r in rows)
    partial = [r for r in rows if r.remaining_qty]
    assert len(partial) == 1

    # order history: every accepted order, in its final status
    accepted = market.events(OrderAccepted)
    orders = {o.order_id: o for account in (1, 2) for o in (await store.orders(account, limit=1000)).items}
    assert sorted(orders) == sorted(e.order_id for e in accepted)
    expected_status = {e.order_id: "filled" if e.status == "filled" else "pending" for e in accepted}
    for event in market.events(OrderCancelled):
        expected_status[event.order_id] = "expired" if event.reason == "expired" else "cancelled"
    for event in opened.values():
        expected_status[event.order_id] = "filled"
    assert {i: o.status for i, o in orders.items()} == expected_status
    assert sorted(expected_status.values()) == ["cancelled", "expired", "filled", "filled", "filled",
                                                "filled"]
    dip = next(o for o in orders.values() if o.client_order_id == "dip")
    assert (dip.price, dip.take_profit, dip.status) == (6_200_000, 7_000_000, "filled")
    assert dip.position_id in opened and dip.fill_price == opened[dip.position_id].open_price
    assert await store.order(2, dip.order_id) is None


async def test_rebuild_from_events_equals_live_persistence(stores, cfg) -> None:
    market = trading_day()
    live = await stores("live")
    rebuilt = await stores("rebuilt")
    await persist_live(live, cfg, market.batches)

    stats = await persister_actor.rebuild(rebuilt, iter(market.items), chunk_items=4)

    assert stats.last_seq == market.items[-1][0]
    assert stats.transactions == -(-len(market.items) // 4)
    live_dump, rebuilt_dump = await dump(live), await dump(rebuilt)
    # the live store also saw the batches' trailing inputs without events
    assert live_dump.pop("last_seq") >= rebuilt_dump.pop("last_seq")
    assert rebuilt_dump == live_dump

    again = await persister_actor.rebuild(rebuilt, iter(market.items))
    assert (again.rows_written, again.transactions) == (0, 0)


async def test_a_restart_resending_old_batches_writes_no_duplicates(stores, cfg) -> None:
    market = trading_day()
    once = await stores("once")
    await persist_live(once, cfg, market.batches)
    store = await stores("restarted")

    await persist_live(store, cfg, market.batches[:3])
    restarted = await persist_live(store, cfg, market.batches)    # re-sends the first three

    stats = restarted.statistics()
    assert (stats.batches_received, stats.batches_skipped) == (5, 3)
    assert stats.rows_written == rows_from_items(
        item for batch in market.batches[3:] for item in batch.items).count()
    assert await dump(store) == await dump(once)


async def test_a_batch_overlapping_the_stored_tail_writes_only_its_new_inputs(stores, cfg) -> None:
    market = trading_day()
    once = await stores("once")
    await persist_live(once, cfg, market.batches)
    store = await stores("overlap")
    await persist_live(store, cfg, market.batches[:2])

    merged = EventBatch(items=[item for batch in market.batches[1:] for item in batch.items],
                        last_seq=market.batches[-1].last_seq)
    await persist_live(store, cfg, [merged])

    assert await dump(store) == await dump(once)


async def test_waiting_batches_coalesce_into_one_transaction(stores, cfg) -> None:
    market = trading_day()
    store = await stores("coalesce")
    send, receive = trio.open_memory_channel(64)
    for batch in market.batches:
        send.send_nowait(batch)
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(functools.partial(persister_actor.run, inbox=receive,
                                                       settings=cfg.settings.persister, store=store))
        await send.aclose()

    stats = handle.statistics()
    assert (stats.batches_received, stats.transactions) == (5, 1)
    assert stats.rows_written == rows_from_items(market.items).count() > 0


async def test_statistics_show_the_lag_while_the_store_is_slow(stores, cfg) -> None:
    market = trading_day()
    store = await stores("slow")
    gate = trio.Event()
    real_apply = store.apply_batch

    async def slow_apply(batch: EventBatch, shard: int = 0) -> int:
        await gate.wait()
        return await real_apply(batch, shard)

    store.apply_batch = slow_apply                       # type: ignore[method-assign]
    send, receive = trio.open_memory_channel(64)
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(functools.partial(persister_actor.run, inbox=receive,
                                                       settings=cfg.settings.persister, store=store))
        await send.send(market.batches[0])
        await trio.testing.wait_all_tasks_blocked()
        for batch in market.batches[1:]:
            await send.send(batch)
        stats = handle.statistics()
        assert stats.lag == market.batches[0].last_seq and stats.inbox_depth == 4
        gate.set()
        await send.aclose()
    assert handle.statistics().lag == 0
    assert handle.statistics().last_seq == market.engine.last_seq


def test_the_scenario_covers_every_history_event() -> None:
    market = trading_day()
    kinds = {type(e).__name__ for _s, _t, events in market.items for e in events}
    assert {"BalanceChanged", "OrderAccepted", "OrderCancelled", "OrderModified", "OrderTriggered",
            "PositionOpened", "PositionClosed", "PositionUpdated"} <= kinds
    assert SYMBOL in {e.symbol for e in market.events(PositionOpened)}
