"""One suite for every :class:`actors.store.base.Store` implementation.

The ``store_kind`` fixture lists the implementations: ``sqlite`` (a file in the test's tmp dir)
and ``postgres`` (the real server at ``database_url``; each test gets a fresh, uniquely named
schema that is dropped afterwards, and is skipped — or fails under EXNESS_REQUIRE_SERVICES=1 — when
the server is not reachable). Every test below runs against both.

Events are built by hand here (the persister tests drive a real engine), so each test controls
exactly which seqs, times and ids the store sees.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
import uuid
from typing import Any, Awaitable, Callable, Optional

import asyncpg
import pytest
import trio

from actors.config import ConfigError, load_config
from actors.engine.messages import EventBatch
from actors.store.base import (
    AccountRecord, DuplicateEmail, InvalidCursor, Page, Store, StoreClosed, TooManyAccounts, encode_cursor,
)
from actors.store.base import open_store as open_store_from_config
from actors.store.postgres import (
    MigrationError, PostgresStore, candles_query, closed_positions_query, ledger_query,
    load_migrations, open_postgres_store, orders_query,
)
from actors.store.sqlite import SqliteStore
from exness_actors.candles import INTERVAL_NAMES, MINUTE_NS, Candle, aggregate, bucket_start
from exness_actors.events import (
    BalanceChanged, OrderAccepted, OrderCancelled, OrderModified, OrderTriggered, PositionClosed,
    PositionFees, PositionOpened, QuoteUpdated,
)
from exness_actors.instruments import MAX_SHARD, SHARD_ID_SPAN

SECOND = 1_000_000_000
MINUTE = MINUTE_NS
DAY = 24 * 60 * MINUTE
BTC, ETH = "BTCUSDT", "ETHUSDT"
MONDAY = 1_704_067_200 * SECOND     # 2024-01-01 00:00 UTC


# ------------------------------------------------------------------ fixtures

@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def postgres_schema(store_kind: str, request: pytest.FixtureRequest) -> Optional[str]:
    """A fresh schema name for a postgres test (None for sqlite); dropped after the test."""
    if store_kind != "postgres":
        yield None
        return
    url = request.getfixturevalue("database_url")
    schema = f"test_store_{uuid.uuid4().hex[:12]}"
    yield schema
    asyncio.run(drop_schema(url, schema))


async def drop_schema(url: str, schema: str) -> None:
    connection = await asyncpg.connect(url, timeout=5)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


@pytest.fixture
async def open_store(store_kind: str, postgres_schema: Optional[str], tmp_path,
                     request: pytest.FixtureRequest) -> Any:
    """Opens (or re-opens) this test's store; everything opened is closed afterwards."""
    opened: list[Store] = []

    async def opener() -> Store:
        if store_kind == "sqlite":
            store = await SqliteStore.open(tmp_path)
        else:
            store = await open_postgres_store(request.getfixturevalue("database_url"),
                                              schema=postgres_schema, max_size=4)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: Callable[[], Awaitable[Store]]) -> Store:
    return await open_store()


# ------------------------------------------------------------------ event tape

class Tape:
    """Sequenced inputs: each ``input(...)`` is one seq (ts = seq seconds after MONDAY)."""

    def __init__(self) -> None:
        self.seq = 0
        self.pending: list[tuple[int, int, list]] = []
        self.ids = itertools.count(1)

    @property
    def ts(self) -> int:
        return MONDAY + self.seq * SECOND

    def input(self, *events: Any) -> int:
        self.seq += 1
        self.pending.append((self.seq, self.ts, list(events)))
        return self.seq

    def batch(self) -> EventBatch:
        items, self.pending = self.pending, []
        return EventBatch(items=items, last_seq=self.seq)

    # event factories, ts = the next input's ts
    def next_ts(self) -> int:
        return MONDAY + (self.seq + 1) * SECOND

    def deposit(self, account: int, amount: int, free: int) -> BalanceChanged:
        return BalanceChanged(account_id=account, kind="deposit", free_delta=amount, locked_delta=0,
                              free=free, locked=0, ref=f"dep{self.seq + 1}", ts=self.next_ts())

    def accepted(self, order_id: int, account: int = 1, *, symbol: str = BTC, type: str = "limit",
                 status: str = "pending", price: Optional[int] = 6_000_000,
                 expires_at: Optional[int] = None) -> OrderAccepted:
        return OrderAccepted(order_id=order_id, account_id=account, symbol=symbol, side="buy",
                             type=type, status=status, price=price, margin=10_000, leverage=10,
                             qty=1_666_666, take_profit=None, stop_loss=None, trailing_stop=None,
                             expires_at=expires_at, client_order_id=f"c{order_id}", ts=self.next_ts())

    def opened(self, position_id: int, order_id: int, account: int = 1, *, symbol: str = BTC,
               price: int = 6_000_000) -> PositionOpened:
        return PositionOpened(position_id=position_id, account_id=account, order_id=order_id,
                              symbol=symbol, side="buy", qty=1_000, open_price=price, margin=10_000,
                              leverage=10, liquidation_price=price - 600_000, take_profit=None,
                              stop_loss=None, trailing_stop=None, ts=self.next_ts())

    def closed(self, position_id: int, account: int = 1, *, symbol: str = BTC, reason: str = "user",
               qty: int = 1_000, remaining: int = 0, price: int = 6_100_000) -> PositionClosed:
        return PositionClosed(position_id=position_id, account_id=account, symbol=symbol, side="buy",
                              reason=reason, price=price, qty=qty, open_price=6_000_000,
                              margin=10_000, pnl=1_000, credit=11_000, remaining_qty=remaining,
                              ts=self.next_ts())


async def walk(fetch: Callable[..., Awaitable[Page]], limit: int, **filters: Any) -> list:
    """Every item of every page, following the cursors."""
    items: list = []
    cursor = None
    for _ in range(1000):
        page = await fetch(cursor=cursor, limit=limit, **filters)
        assert len(page.items) <= limit
        items.extend(page.items)
        if page.next_cursor is None:
            return items
        assert len(page.items) == limit
        cursor = page.next_cursor
    raise AssertionError("the cursors never ended")


# ------------------------------------------------------------------ migrations

async def test_migrations_rerun_is_a_no_op_and_data_survives_a_reopen(store, open_store) -> None:
    assert await store.migrate() == []
    await store.write_candles([Candle(BTC, "1m", MONDAY, 1, 2, 1, 2, 3)])
    await store.apply_batch(EventBatch(items=[], last_seq=5))
    await store.close()

    again = await open_store()

    assert await again.migrate() == []
    assert await again.last_persisted_seq() == 5
    assert [c.as_tuple() for c in await again.read_candles(BTC, "1m")] == [(MONDAY, 1, 2, 1, 2, 3)]


async def test_sqlite_applies_each_migration_once(tmp_path) -> None:
    first = SqliteStore(tmp_path / "db")
    second_open = None
    try:
        assert first.migrations_applied == ["0001_init", "0002_users", "0003_shards", "0008_notifications", "0013_operators", "0016_accounts",
                                            "0017_notification_retention"]
        await first.close()
        second_open = SqliteStore(tmp_path / "db")
        assert second_open.migrations_applied == []
    finally:
        await first.close()
        if second_open is not None:
            await second_open.close()


# ------------------------------------------------------------------ candles

def minute(offset: int, o: int, h: int, low: int, c: int, v: int, symbol: str = BTC) -> Candle:
    return Candle(symbol, "1m", MONDAY + offset * MINUTE, o, h, low, c, v)


async def test_candles_are_upserted(store) -> None:
    await store.write_candles([minute(0, 1, 2, 1, 2, 3), minute(1, 2, 2, 2, 2, 1)])

    await store.write_candles([minute(1, 2, 9, 1, 5, 4)])

    assert [c.as_tuple() for c in await store.read_candles(BTC, "1m")] == [
        (MONDAY, 1, 2, 1, 2, 3), (MONDAY + MINUTE, 2, 9, 1, 5, 4)]
    assert await store.read_candles(ETH, "1m") == []


def irregular_minutes() -> list[Candle]:
    """~3 weeks of 1m candles with gaps, starting on a Sunday evening (crosses Mondays)."""
    candles = []
    offset = -5 * 60
    step = itertools.cycle([1, 1, 2, 7, 1, 61, 3, 240, 1, 1, 1500])
    for i in range(600):
        offset += next(step)
        price = 1000 + (i * 53) % 97
        candles.append(minute(offset, price, price + i % 7, price - i % 5, price + 1, 1 + i % 4))
    return candles


async def test_read_candles_aggregates_every_interval(store) -> None:
    candles = irregular_minutes()
    await store.write_candles(candles + [minute(0, 5, 5, 5, 5, 1, symbol=ETH)])

    for interval in INTERVAL_NAMES:
        expected = [c.as_tuple() for c in aggregate(candles, interval)]
        stored = await store.read_candles(BTC, interval)
        assert [c.as_tuple() for c in stored] == expected, interval
        assert {(c.symbol, c.interval, c.closed) for c in stored} == {(BTC, interval, True)}
        assert [c.as_tuple() for c in await store.read_candles(BTC, interval, limit=2)] == expected[-2:]


async def test_week_candles_open_on_monday(store) -> None:
    await store.write_candles([minute(-1, 1, 1, 1, 1, 1), minute(0, 2, 2, 2, 2, 1),
                               minute(7 * 24 * 60 - 1, 3, 3, 3, 3, 1)])

    weeks = await store.read_candles(BTC, "1w")

    assert [(c.open_time, c.open, c.close, c.volume) for c in weeks] == [
        (MONDAY - 7 * DAY, 1, 1, 1), (MONDAY, 2, 3, 2)]


async def test_read_candles_range_is_by_bucket_open_time(store) -> None:
    candles = [minute(i, 10 + i, 10 + i, 10 + i, 10 + i, 1) for i in range(0, 180)]
    await store.write_candles(candles)
    hour = 60 * MINUTE

    # start mid-bucket: that bucket opened before start, so it is left out; end is exclusive
    hours = await store.read_candles(BTC, "1h", start=MONDAY + 1, end=MONDAY + 2 * hour)
    assert [(c.open_time, c.volume) for c in hours] == [(MONDAY + hour, 60)]
    hours = await store.read_candles(BTC, "1h", start=MONDAY, end=MONDAY + 2 * hour + 1)
    assert [(c.open_time, c.volume) for c in hours] == [(MONDAY, 60), (MONDAY + hour, 60),
                                                        (MONDAY + 2 * hour, 60)]
    minutes = await store.read_candles(BTC, "1m", start=MONDAY + 10 * MINUTE, end=MONDAY + 20 * MINUTE, limit=3)
    assert [c.open_time for c in minutes] == [MONDAY + m * MINUTE for m in (17, 18, 19)]
    assert bucket_start(hours[0].open_time, "1h") == hours[0].open_time


@pytest.mark.parametrize("interval", INTERVAL_NAMES)
async def test_candle_ranges_up_to_the_last_64_bit_time(store, interval: str) -> None:
    await store.write_candles([minute(i, 10, 10, 10, 10, 1) for i in range(3)])
    latest = 2**63 - 1      # the API's latest time in ns; a bucket after it is past 64 bits
    assert await store.read_candles(BTC, interval, start=latest) == []
    assert len(await store.read_candles(BTC, interval, end=latest)) >= 1


async def test_candle_arguments_are_checked(store) -> None:
    with pytest.raises(ValueError, match="interval"):
        await store.read_candles(BTC, "3m")
    with pytest.raises(ValueError, match="only 1m"):
        await store.write_candles([Candle(BTC, "1h", MONDAY, 1, 1, 1, 1, 1)])


# ------------------------------------------------------------------ apply_batch

async def test_cut_history_removes_rows_past_the_cut_and_rebuilds_orders_changed_after_it(store) -> None:
    tape = Tape()
    tape.input(tape.deposit(1, 500, 500))                                               # 1
    tape.input(tape.accepted(1))                                                        # 2: pending
    tape.input(tape.accepted(2, type="market", status="filled"), tape.opened(1, 2))     # 3: the cut
    tape.input(tape.deposit(2, 700, 700), tape.deposit(3, 900, 900))                    # 4
    tape.input(tape.opened(2, 1))                                                       # 5: order 1 fills
    tape.input(tape.closed(1))                                                          # 6
    batch = tape.batch()
    await store.apply_batch(batch)

    cut = await store.cut_history(0, 3, shards=2)      # account 3 is on the other shard

    assert (cut.rebuild_after_seq, cut.max_order_id, cut.max_position_id) == (1, 2, 2)
    assert cut.accounts == [1, 2]
    assert cut.removed == {"orders": 1, "positions": 1, "closed_positions": 1, "ledger": 1, "audit_log": 0}
    assert await store.last_persisted_seq() == 1
    assert [order.order_id for order in (await store.orders(1)).items] == [2]
    assert (await store.ledger(2)).items == [] and len((await store.ledger(3)).items) == 1
    assert (await store.closed_positions(1)).items == []
    await store.apply_batch(EventBatch(items=batch.items[:3], last_seq=3))   # the persister rebuilds
    assert (await store.order(1, 1)).status == "pending"
    assert len((await store.ledger(1)).items) == 1


async def test_cut_history_arguments_are_checked(store) -> None:
    with pytest.raises(ValueError, match="after_seq"):
        await store.cut_history(0, -1)
    with pytest.raises(ValueError, match="shards"):
        await store.cut_history(2, 5, shards=2)


async def test_apply_batch_writes_rows_and_last_seq_once(store) -> None:
    tape = Tape()
    tape.input(QuoteUpdated(BTC, 6_000_000, 6_000_100, tape.next_ts()))
    tape.input(tape.deposit(1, 500, 500))
    tape.input(tape.accepted(1, type="market", status="filled"), tape.opened(1, 1))
    batch = tape.batch()

    assert await store.last_persisted_seq() == 0
    assert await store.apply_batch(batch) == 4          # ledger, order, position, order fill
    assert await store.apply_batch(batch) == 0
    assert await store.last_persisted_seq() == 3

    # a batch that overlaps the stored ones writes only what is new
    tape.input(tape.closed(1))
    overlapping = EventBatch(items=batch.items[1:] + tape.batch().items, last_seq=tape.seq)
    assert await store.apply_batch(overlapping) == 1
    assert await store.last_persisted_seq() == 4

    assert len((await store.ledger(1)).items) == 1
    assert len((await store.orders(1)).items) == 1
    assert len((await store.closed_positions(1)).items) == 1

    # a batch with no events still moves last_seq; an old one never moves it back
    assert await store.apply_batch(EventBatch(items=[], last_seq=10)) == 0
    assert await store.apply_batch(EventBatch(items=[], last_seq=7)) == 0
    assert await store.last_persisted_seq() == 10


async def test_each_engine_shard_has_its_own_watermark(store) -> None:
    """Split mode with [bus] shards = 2: both shards number their inputs from 1 and write one
    store. Shard 1's accounts are odd and its ids start at SHARD_ID_SPAN + 1 (CoreConfig.id_base),
    so nothing collides; each shard's seqs are skipped against its own watermark only."""
    base = SHARD_ID_SPAN
    zero, one = Tape(), Tape()
    zero.input(zero.deposit(2, 500, 500))
    zero.input(zero.accepted(1, 2, type="market", status="filled"), zero.opened(1, 1, 2))
    one.input(one.deposit(3, 700, 700))
    one.input(one.accepted(base + 1, 3, type="market", status="filled"), one.opened(base + 1, base + 1, 3))
    one.input(one.closed(base + 1, 3))
    batch_zero, batch_one = zero.batch(), one.batch()

    assert await store.apply_batch(batch_zero, shard=0) == 4
    assert (await store.last_persisted_seq(0), await store.last_persisted_seq(1)) == (2, 0)
    assert await store.apply_batch(batch_one, shard=1) == 5      # seqs 1..3 again, another shard
    assert (await store.last_persisted_seq(0), await store.last_persisted_seq(1)) == (2, 3)
    assert await store.apply_batch(batch_one, shard=1) == 0      # re-sent: skipped
    assert await store.apply_batch(batch_zero, shard=0) == 0

    assert [o.order_id for o in (await store.orders(2)).items] == [1]
    assert [o.order_id for o in (await store.orders(3)).items] == [base + 1]
    assert (await store.order(3, base + 1)).position_id == base + 1
    assert (await store.order(2, base + 1)) is None
    assert [p.position_id for p in (await store.closed_positions(3)).items] == [base + 1]
    assert len((await store.ledger(2)).items) == len((await store.ledger(3)).items) == 1

    for bad in (-1, "0", None, MAX_SHARD + 1):
        with pytest.raises(ValueError, match="shard must be"):
            await store.last_persisted_seq(bad)
        with pytest.raises(ValueError, match="shard must be"):
            await store.apply_batch(batch_zero, shard=bad)


async def test_a_failing_batch_writes_nothing(store) -> None:
    tape = Tape()
    tape.input(tape.accepted(1))
    broken = tape.deposit(1, 5, 5)
    broken.kind = None                     # NOT NULL: the ledger insert fails after the order's
    tape.input(broken)

    with pytest.raises(Exception, match="(?i)null"):
        await store.apply_batch(tape.batch())

    assert await store.last_persisted_seq() == 0
    assert (await store.orders(1)).items == []


async def test_orders_follow_their_events(store) -> None:
    tape = Tape()
    tape.input(tape.accepted(1), tape.accepted(2), tape.accepted(3, expires_at=MONDAY + DAY))
    created = tape.ts
    tape.input(OrderModified(order_id=1, account_id=1, price=5_900_000, qty=1_700_000,
                             take_profit=7_000_000, stop_loss=None, expires_at=None))
    modified_at = tape.ts
    tape.input(OrderTriggered(order_id=1, account_id=1, position_id=9, price=5_899_000, ts=tape.next_ts()),
               tape.opened(9, 1, price=5_899_000))
    filled_seq, filled_at = tape.seq, tape.ts
    tape.input(OrderCancelled(order_id=2, account_id=1, reason="user", ts=tape.next_ts()))
    tape.input(OrderCancelled(order_id=3, account_id=1, reason="expired", ts=tape.next_ts()))
    tape.input(tape.accepted(4, type="market", status="filled", price=6_000_100),
               tape.opened(10, 4, price=6_000_100))
    await store.apply_batch(tape.batch())

    one = await store.order(1, 1)
    assert (one.status, one.price, one.qty, one.take_profit, one.fill_price, one.position_id) == (
        "filled", 5_900_000, 1_700_000, 7_000_000, 5_899_000, 9)
    assert (one.created_at, one.updated_at, one.seq, one.created_seq) == (created, filled_at, filled_seq, 1)
    assert modified_at < filled_at
    two, three, four = await store.order(1, 2), await store.order(1, 3), await store.order(1, 4)
    assert (two.status, two.cancel_reason, two.fill_price) == ("cancelled", "user", None)
    assert (three.status, three.cancel_reason, three.expires_at) == ("expired", "expired", MONDAY + DAY)
    assert (four.type, four.status, four.fill_price, four.position_id) == ("market", "filled", 6_000_100, 10)
    assert four.client_order_id == "c4"
    assert await store.order(2, 1) is None               # another account's order is not revealed
    assert await store.order(1, 99) is None


async def test_closed_positions_keep_partial_closes_and_open_facts(store) -> None:
    tape = Tape()
    tape.input(tape.accepted(1, type="market", status="filled"), tape.opened(1, 1))
    opened_at = tape.ts
    tape.input(tape.closed(1, qty=400, remaining=600))
    tape.input(tape.closed(1, qty=600, remaining=0, reason="take_profit"))
    tape.input(tape.closed(77))                          # opened before the persisted history
    await store.apply_batch(tape.batch())

    rows = (await store.closed_positions(1)).items

    assert [(r.position_id, r.seq, r.qty, r.remaining_qty, r.reason) for r in rows] == [
        (77, 4, 1_000, 0, "user"), (1, 3, 600, 0, "take_profit"), (1, 2, 400, 600, "user")]
    assert (rows[1].leverage, rows[1].opened_at, rows[1].closed_at) == (10, opened_at, MONDAY + 3 * SECOND)
    assert (rows[1].open_price, rows[1].close_price, rows[1].pnl, rows[1].credit) == (6_000_000, 6_100_000, 1_000, 11_000)
    assert (rows[0].leverage, rows[0].opened_at) == (None, None)


async def test_closed_positions_carry_their_commission_and_swap(store) -> None:
    tape = Tape()
    tape.input(tape.accepted(1, type="market", status="filled"), tape.opened(1, 1),
               tape.accepted(2, type="market", status="filled"), tape.opened(2, 2))
    # a partial close of 1 and, in the same input, a stop-out of 2: each PositionFees follows its close
    tape.input(tape.closed(1, qty=400, remaining=600), PositionFees(position_id=1, account_id=1, commission=21, swap=0),
               tape.closed(2, reason="stop_out"), PositionFees(position_id=2, account_id=1, commission=44, swap=-13))
    tape.input(tape.closed(1, qty=600, remaining=0), PositionFees(position_id=1, account_id=1, commission=31, swap=250))
    tape.input(tape.closed(77))                          # an isolated account's close: no fees
    await store.apply_batch(tape.batch())

    rows = (await store.closed_positions(1)).items

    assert [(r.position_id, r.seq, r.reason, r.commission, r.swap) for r in rows] == [
        (77, 4, "user", 0, 0), (1, 3, "user", 31, 250), (2, 2, "stop_out", 44, -13), (1, 2, "user", 21, 0)]
    assert [r.position_id for r in (await store.closed_positions(1, reason="stop_out")).items] == [2]


# ------------------------------------------------------------------ pagination and filters

async def history(store: Store) -> Tape:
    """Two accounts; account 1 has 40 deposits, 30 orders over 2 symbols, 24 closes."""
    tape = Tape()
    free = 0
    for i in range(40):
        free += 100 + i
        tape.input(tape.deposit(1, 100 + i, free), tape.deposit(2, 1, i + 1))
    for order_id in range(1, 31):
        symbol = BTC if order_id % 3 else ETH
        tape.input(tape.accepted(order_id, symbol=symbol), tape.accepted(100 + order_id, account=2))
        if order_id % 4 == 0:
            tape.input(OrderCancelled(order_id=order_id, account_id=1, reason="user", ts=tape.next_ts()))
        elif order_id % 4 == 1:
            tape.input(OrderTriggered(order_id=order_id, account_id=1, position_id=order_id,
                                      price=6_000_000, ts=tape.next_ts()),
                       tape.opened(order_id, order_id, symbol=symbol))
            reasons = ["user", "stop_loss", "take_profit", "liquidation"]
            tape.input(tape.closed(order_id, symbol=symbol, qty=500, remaining=500,
                                   reason=reasons[order_id % 4 - 1]),
                       tape.closed(order_id + 1000, symbol=symbol, reason=reasons[(order_id // 4) % 4]))
            tape.input(tape.closed(order_id, symbol=symbol, qty=500, reason="user"))
        if order_id % 10 == 0:
            await store.apply_batch(tape.batch())
    await store.apply_batch(tape.batch())
    return tape


@pytest.mark.parametrize("limit", [1, 7, 50])
async def test_ledger_pages_walk_everything_newest_first(store, limit: int) -> None:
    await history(store)

    entries = await walk(lambda **kw: store.ledger(1, **kw), limit)

    keys = [(e.seq, e.index) for e in entries]
    assert len(keys) == 40 and len(set(keys)) == 40
    assert keys == sorted(keys, reverse=True)
    assert {e.account_id for e in entries} == {1}
    assert entries[0].free == sum(100 + i for i in range(40))
    assert [(e.seq, e.index) for e in await walk(lambda **kw: store.ledger(2, **kw), limit)] == [
        (seq, 1) for seq in range(40, 0, -1)]


@pytest.mark.parametrize("limit", [1, 4, 50])
async def test_closed_position_pages_and_filters(store, limit: int) -> None:
    await history(store)
    everything = await walk(lambda **kw: store.closed_positions(1, **kw), 1000)
    assert len(everything) == 8 * 3
    keys = [(r.seq, r.position_id) for r in everything]
    assert keys == sorted(keys, reverse=True) and len(set(keys)) == len(keys)

    assert await walk(lambda **kw: store.closed_positions(1, **kw), limit) == everything
    for filters in ({"symbol": ETH}, {"reason": "user"}, {"symbol": BTC, "reason": "stop_loss"},
                    {"start": everything[10].closed_at, "end": everything[3].closed_at},
                    {"start": everything[5].closed_at, "reason": "user"}):
        expected = [r for r in everything
                    if r.symbol == filters.get("symbol", r.symbol)
                    and r.reason == filters.get("reason", r.reason)
                    and r.closed_at >= filters.get("start", r.closed_at)
                    and r.closed_at < filters.get("end", r.closed_at + 1)]
        assert expected, filters
        assert await walk(lambda **kw: store.closed_positions(1, **kw), limit, **filters) == expected, filters
    assert (await store.closed_positions(2)).items == []


@pytest.mark.parametrize("limit", [1, 6, 50])
async def test_order_pages_and_filters(store, limit: int) -> None:
    await history(store)

    everything = await walk(lambda **kw: store.orders(1, **kw), limit)

    assert [o.order_id for o in everything] == list(range(30, 0, -1))
    by_status = {status: [o.order_id for o in everything if o.status == status]
                 for status in ("pending", "filled", "cancelled")}
    assert by_status["cancelled"] == [i for i in range(30, 0, -1) if i % 4 == 0]
    assert by_status["filled"] == [i for i in range(30, 0, -1) if i % 4 == 1]
    for status, expected in by_status.items():
        page = await walk(lambda **kw: store.orders(1, **kw), limit, status=status)
        assert [o.order_id for o in page] == expected
    eth = await walk(lambda **kw: store.orders(1, **kw), limit, symbol=ETH, status="pending")
    assert [o.order_id for o in eth] == [i for i in range(30, 0, -1) if i % 3 == 0 and i % 4 in (2, 3)]
    assert [o.order_id for o in await walk(lambda **kw: store.orders(2, **kw), limit)] == list(range(130, 100, -1))


async def test_pages_stay_stable_while_new_rows_arrive(store) -> None:
    tape = await history(store)
    first = await store.ledger(1, limit=15)

    for i in range(5):
        tape.input(tape.deposit(1, 1, 10_000 + i))
    await store.apply_batch(tape.batch())
    rest = []
    cursor = first.next_cursor
    while cursor is not None:
        page = await store.ledger(1, cursor=cursor, limit=15)
        rest.extend(page.items)
        cursor = page.next_cursor

    walked = [(e.seq, e.index) for e in first.items + rest]
    assert len(walked) == 40 and len(set(walked)) == 40
    assert len((await store.ledger(1, limit=100)).items) == 45


async def test_cursors_and_limits_are_checked(store) -> None:
    await history(store)
    ledger_cursor = (await store.ledger(1, limit=2)).next_cursor
    orders_cursor = (await store.orders(1, limit=2)).next_cursor
    assert ledger_cursor and orders_cursor

    for bad in ("", "garbage!", "bGVkZ2VyOng6eQ", orders_cursor):
        with pytest.raises(InvalidCursor):
            await store.ledger(1, cursor=bad)
    with pytest.raises(InvalidCursor):
        await store.orders(1, cursor=ledger_cursor)
    with pytest.raises(InvalidCursor):
        await store.closed_positions(1, cursor=ledger_cursor)
    for limit in (0, -1, 1001):
        with pytest.raises(ValueError, match="limit"):
            await store.orders(1, limit=limit)


async def test_forged_cursor_keys_beyond_64_bits_are_invalid_cursors(store) -> None:
    await history(store)
    huge, negative = 2**63, -1
    for fetch, query, count in ((store.ledger, "ledger", 2), (store.closed_positions, "positions", 2),
                                (store.orders, "orders", 1)):
        for key in (huge, 2**64, 10**40, negative):
            keys = (1,) * (count - 1) + (key,)
            with pytest.raises(InvalidCursor):
                await fetch(1, cursor=encode_cursor(query, *keys))
    with pytest.raises(InvalidCursor):     # a ledger index is a 32-bit column in PostgreSQL
        await store.ledger(1, cursor=encode_cursor("ledger", 1, 2**31))
    edge = 2**63 - 1       # the largest key and time a store column holds still works
    assert (await store.orders(1, cursor=encode_cursor("orders", edge))).items
    assert not (await store.closed_positions(1, start=edge)).items
    assert (await store.closed_positions(1, end=edge)).items
    assert (await store.ledger(1, cursor=encode_cursor("ledger", edge, 2**31 - 1))).items


async def test_an_order_modified_twice_in_one_batch_keeps_the_last_change(store) -> None:
    tape = Tape()
    tape.input(tape.accepted(1))
    for price in (5_900_000, 5_800_000, 5_850_000):
        tape.input(OrderModified(order_id=1, account_id=1, price=price, qty=1_700_000,
                                 take_profit=None, stop_loss=price - 100_000, expires_at=None))
    await store.apply_batch(tape.batch())

    order = await store.order(1, 1)

    assert (order.price, order.stop_loss, order.seq, order.updated_at) == (
        5_850_000, 5_750_000, 4, tape.ts)


async def test_a_candle_written_twice_in_one_call_keeps_the_last(store) -> None:
    assert await store.write_candles([minute(0, 1, 1, 1, 1, 1), minute(0, 1, 4, 1, 3, 2),
                                      minute(1, 3, 3, 3, 3, 1)]) == 3

    assert [c.as_tuple() for c in await store.read_candles(BTC, "1m")] == [
        (MONDAY, 1, 4, 1, 3, 2), (MONDAY + MINUTE, 3, 3, 3, 3, 1)]


async def test_a_closed_store_refuses_calls(store) -> None:
    await store.close()
    await store.close()                    # closing twice is fine

    for call in (store.last_persisted_seq(), store.ledger(1), store.read_candles(BTC, "1m"),
                 store.user_by_id(1), store.apply_batch(EventBatch(items=[], last_seq=1))):
        with pytest.raises(StoreClosed):
            await call


# ------------------------------------------------------------------ users and refresh tokens

def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def test_users_get_their_own_account_id_and_unique_emails(store) -> None:
    alice = await store.create_user("alice@example.com", "hash-a", created_at=1)
    bob = await store.create_user("bob@example.com", "hash-b", created_at=2)
    assert (alice.user_id, alice.account_id, alice.account_ready) == (1, 1, False)
    assert bob.account_id == bob.user_id == 2

    with pytest.raises(DuplicateEmail):
        await store.create_user("alice@example.com", "other", created_at=3)

    assert await store.user_by_email("alice@example.com") == alice
    assert await store.user_by_email("nobody@example.com") is None
    await store.mark_account_ready(alice.user_id)
    assert (await store.user_by_id(alice.user_id)).account_ready
    assert await store.user_by_id(99) is None
    third = await store.create_user("carol@example.com", "hash-c", created_at=4)
    assert third.user_id == 3                 # the refused duplicate used no id
    assert await store.user_by_id(3) == third


async def test_forgetting_accounts_ready_after_a_repair(store) -> None:
    users = [await store.create_user(f"user{n}@example.com", "hash", created_at=n) for n in range(3)]
    for user in users:
        await store.mark_account_ready(user.user_id)
    await store.forget_accounts_ready([users[0].account_id, users[2].account_id, 99])
    await store.forget_accounts_ready([])
    ready = [(await store.user_by_id(user.user_id)).account_ready for user in users]
    assert ready == [False, True, False]


async def test_a_user_holds_several_accounts_with_ids_of_their_own(store) -> None:
    alice = await store.create_user("alice@example.com", "h", created_at=1, account_type="standard", demo=True)
    assert await store.accounts_of(alice.user_id) == [AccountRecord(
        account_id=alice.account_id, user_id=alice.user_id, account_type="standard", demo=True, ready=False,
        created_at=1)]

    raw = await store.open_account(alice.user_id, account_type="raw_spread", demo=False, created_at=5, limit=3)
    bob = await store.create_user("bob@example.com", "h", created_at=6)       # defaults: standard, demo
    isolated = await store.open_account(alice.user_id, account_type="isolated", demo=True, created_at=7, limit=3)

    # ids come from one sequence: no account id is ever handed out twice
    assert (alice.account_id, raw.account_id, bob.account_id, isolated.account_id) == (1, 2, 3, 4)
    assert bob.user_id == 2 and bob.account_id != bob.user_id
    assert [(a.account_id, a.account_type, a.demo) for a in await store.accounts_of(alice.user_id)] == [
        (1, "standard", True), (2, "raw_spread", False), (4, "isolated", True)]
    assert [a.account_id for a in await store.accounts_of(bob.user_id)] == [3]
    assert await store.account(2) == raw and await store.account(99) is None
    with pytest.raises(TooManyAccounts):
        await store.open_account(alice.user_id, account_type="standard", demo=True, created_at=8, limit=3)
    assert len(await store.accounts_of(alice.user_id)) == 3

    # readiness is per account; the user's is their first account's
    await store.mark_account_ready(raw.account_id)
    assert (await store.account(raw.account_id)).ready and not (await store.user_by_id(alice.user_id)).account_ready
    await store.mark_account_ready(alice.account_id)
    assert (await store.user_by_email("alice@example.com")).account_ready
    await store.forget_accounts_ready([raw.account_id])
    assert not (await store.account(raw.account_id)).ready


async def test_concurrent_account_opens_respect_the_limit(store) -> None:
    user = await store.create_user("many@example.com", "h", created_at=0)
    outcomes: list[str] = []

    async def open_one() -> None:
        try:
            await store.open_account(user.user_id, account_type="standard", demo=True, created_at=1, limit=3)
            outcomes.append("opened")
        except TooManyAccounts:
            outcomes.append("refused")

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(open_one)

    assert sorted(outcomes) == ["opened", "opened", "refused", "refused", "refused"]
    assert len(await store.accounts_of(user.user_id)) == 3


async def test_a_refresh_family_keeps_its_account(store) -> None:
    user = await store.create_user("family@example.com", "h", created_at=0)
    other = await store.open_account(user.user_id, account_type="raw_spread", demo=True, created_at=1, limit=5)
    await store.add_refresh_token(digest("first"), user_id=user.user_id, family_id="f1", issued_at=0,
                                  expires_at=100 * SECOND)
    await store.add_refresh_token(digest("second"), user_id=user.user_id, family_id="f2", issued_at=0,
                                  expires_at=100 * SECOND, account_id=other.account_id)

    first = await store.rotate_refresh_token(digest("first"), new_hash=digest("first2"), now=SECOND,
                                             expires_at=100 * SECOND)
    second = await store.rotate_refresh_token(digest("second"), new_hash=digest("second2"), now=SECOND,
                                              expires_at=100 * SECOND)
    again = await store.rotate_refresh_token(digest("second2"), new_hash=digest("second3"), now=2 * SECOND,
                                             expires_at=100 * SECOND)

    assert (first.outcome, first.account_id) == ("rotated", user.account_id)      # None: the first account
    assert (second.outcome, second.account_id) == ("rotated", other.account_id)
    assert (again.outcome, again.account_id) == ("rotated", other.account_id)     # the child keeps it


async def test_refresh_rotation_outcomes(store) -> None:
    user = await store.create_user("rot@example.com", "h", created_at=0)
    await store.add_refresh_token(digest("t1"), user_id=user.user_id, family_id="fam", issued_at=0,
                                  expires_at=100 * SECOND)

    rotated = await store.rotate_refresh_token(digest("t1"), new_hash=digest("t2"), now=SECOND,
                                               expires_at=200 * SECOND)

    assert (rotated.outcome, rotated.user_id, rotated.account_id, rotated.family_id) == (
        "rotated", user.user_id, user.account_id, "fam")
    assert (await store.rotate_refresh_token(digest("nope"), new_hash=digest("x"), now=SECOND,
                                             expires_at=SECOND)).outcome == "unknown"
    # the spent t1 again: the family (t1, t2) is revoked
    reused = await store.rotate_refresh_token(digest("t1"), new_hash=digest("t3"), now=2 * SECOND,
                                              expires_at=200 * SECOND)
    assert (reused.outcome, reused.family_id) == ("reused", "fam")
    assert (await store.rotate_refresh_token(digest("t2"), new_hash=digest("t4"), now=3 * SECOND,
                                             expires_at=300 * SECOND)).outcome == "revoked"
    assert (await store.rotate_refresh_token(digest("t3"), new_hash=digest("t5"), now=3 * SECOND,
                                             expires_at=300 * SECOND)).outcome == "unknown"


async def test_refresh_expiry_signout_and_purge(store) -> None:
    user = await store.create_user("exp@example.com", "h", created_at=0)
    await store.add_refresh_token(digest("a"), user_id=user.user_id, family_id="f1", issued_at=0,
                                  expires_at=10 * SECOND)
    await store.add_refresh_token(digest("b"), user_id=user.user_id, family_id="f2", issued_at=0,
                                  expires_at=100 * SECOND)

    assert (await store.rotate_refresh_token(digest("a"), new_hash=digest("a2"), now=10 * SECOND,
                                             expires_at=20 * SECOND)).outcome == "expired"
    assert await store.revoke_refresh_family(digest("b"), now=SECOND)
    assert not await store.revoke_refresh_family(digest("zzz"), now=SECOND)
    assert (await store.rotate_refresh_token(digest("b"), new_hash=digest("b2"), now=2 * SECOND,
                                             expires_at=20 * SECOND)).outcome == "revoked"
    assert await store.purge_refresh_tokens(before=50 * SECOND) == 1
    assert (await store.rotate_refresh_token(digest("a"), new_hash=digest("a3"), now=SECOND,
                                             expires_at=20 * SECOND)).outcome == "unknown"


async def test_concurrent_rotations_of_one_token_cannot_both_win(store) -> None:
    user = await store.create_user("race@example.com", "h", created_at=0)
    await store.add_refresh_token(digest("r"), user_id=user.user_id, family_id="race", issued_at=0,
                                  expires_at=100 * SECOND)
    outcomes: list[str] = []

    async def rotate(new: str) -> None:
        result = await store.rotate_refresh_token(digest("r"), new_hash=digest(new), now=SECOND,
                                                  expires_at=50 * SECOND)
        outcomes.append(result.outcome)

    async with trio.open_nursery() as nursery:
        for index in range(4):
            nursery.start_soon(rotate, f"new{index}")

    assert sorted(outcomes) == ["reused", "revoked", "revoked", "rotated"]
    # whichever child was issued belongs to the revoked family now
    children = [(await store.rotate_refresh_token(digest(f"new{index}"), new_hash=digest("x"),
                                                  now=2 * SECOND, expires_at=60 * SECOND)).outcome
                for index in range(4)]
    assert sorted(children) == ["revoked", "unknown", "unknown", "unknown"]


# ------------------------------------------------------------------ PostgreSQL only

@pytest.fixture
async def postgres_url_and_schema(database_url: str) -> tuple[str, str]:
    """The server and a fresh schema (dropped afterwards) for tests of the PostgreSQL store."""
    schema = f"test_store_{uuid.uuid4().hex[:12]}"
    yield database_url, schema
    await trio.to_thread.run_sync(asyncio.run, drop_schema(database_url, schema))


@pytest.fixture
async def postgres_store(postgres_url_and_schema: tuple[str, str]) -> Any:
    url, schema = postgres_url_and_schema
    store = await open_postgres_store(url, schema=schema, max_size=4)
    yield store
    await store.close()


@pytest.mark.services
async def test_postgres_keeps_money_beyond_64_bits_exactly(postgres_store) -> None:
    # A pnl is bounded only by qty (2^62 units) times a price move (1e12 ticks): NUMERIC columns.
    huge = 2**62 * 10**12
    tape = Tape()
    tape.input(tape.accepted(1, type="market", status="filled"), tape.opened(1, 1))
    closed = tape.closed(1)
    closed.pnl, closed.credit = huge, huge + 10_000
    tape.input(closed, BalanceChanged(account_id=1, kind="position_close", free_delta=huge + 10_000,
                                      locked_delta=-10_000, free=huge + 10_000, locked=0,
                                      ref="p1", ts=tape.next_ts()))
    await postgres_store.apply_batch(tape.batch())

    row = (await postgres_store.closed_positions(1)).items[0]
    entry = (await postgres_store.ledger(1)).items[0]

    assert (row.pnl, row.credit, type(row.pnl), type(row.margin)) == (huge, huge + 10_000, int, int)
    assert (entry.free_delta, entry.free, entry.locked_delta) == (huge + 10_000, huge + 10_000, -10_000)
    assert type(entry.free) is int


def plan_of(rows: list) -> str:
    return "\n".join(row[0] for row in rows)


@pytest.mark.services
@pytest.mark.parametrize("query, index", [
    pytest.param(lambda: ledger_query(1, None, 50), "ledger_pkey", id="ledger"),
    pytest.param(lambda: ledger_query(1, encode_cursor("ledger", 60, 1), 50), "ledger_pkey",
                 id="ledger-cursor"),
    pytest.param(lambda: closed_positions_query(1, symbol=None, reason=None, start=None, end=None,
                                                cursor=None, limit=50),
                 "closed_positions_by_account", id="closed"),
    pytest.param(lambda: closed_positions_query(1, symbol=ETH, reason=None, start=None, end=None,
                                                cursor=encode_cursor("positions", 100, 9), limit=50),
                 "closed_positions_by_symbol", id="closed-symbol-cursor"),
    pytest.param(lambda: closed_positions_query(1, symbol=None, reason="user", start=None, end=None,
                                                cursor=None, limit=50),
                 "closed_positions_by_reason", id="closed-reason"),
    pytest.param(lambda: orders_query(1, status=None, symbol=None, cursor=None, limit=50),
                 "orders_by_account", id="orders"),
    pytest.param(lambda: orders_query(1, status="pending", symbol=None, cursor=None, limit=50),
                 "orders_by_status", id="orders-status"),
    pytest.param(lambda: orders_query(1, status=None, symbol=BTC, cursor=None, limit=50),
                 "orders_by_symbol", id="orders-symbol"),
    pytest.param(lambda: candles_query(BTC, "1m", MONDAY, MONDAY + DAY, 100), "candles_1m_pkey",
                 id="candles-1m"),
])
async def test_postgres_list_queries_walk_an_index_in_page_order(postgres_store, query, index) -> None:
    """Each page query is an index scan in the page's order: no sort, no sequential scan, even
    when the planner would rather scan a table this small (sequential and bitmap scans off)."""
    await history(postgres_store)
    sql, args = query()

    async def explain(connection: asyncpg.Connection) -> list:
        async with connection.transaction():
            await connection.execute("SET LOCAL enable_seqscan = off")
            await connection.execute("SET LOCAL enable_bitmapscan = off")
            return await connection.fetch(f"EXPLAIN {sql}", *args)

    plan = plan_of(await postgres_store.run_with_connection(explain))

    # (on a TimescaleDB hypertable the candles' index is each chunk's copy of the primary key)
    assert re.search(rf"Index Scan( Backward)? using \S*{index} ", plan), plan
    assert "Sort" not in plan and "Seq Scan" not in plan, plan


@pytest.mark.services
async def test_postgres_retention_walks_the_age_index_oldest_first(postgres_store) -> None:
    """The purge's query reads the oldest notifications of one shard through
    ``notifications_by_age`` (migration 0017): no sort, no sequential scan of the table."""
    from actors.store.notifications import EXPIRED, numbered

    async def explain(connection: asyncpg.Connection) -> list:
        async with connection.transaction():
            await connection.execute("SET LOCAL enable_seqscan = off")
            await connection.execute("SET LOCAL enable_bitmapscan = off")
            return await connection.fetch(f"EXPLAIN {numbered(EXPIRED)}", 0, MONDAY, 1000)

    plan = plan_of(await postgres_store.run_with_connection(explain))
    assert re.search(r"Index Scan using \S*notifications_by_age ", plan), plan
    assert "Sort" not in plan and "Seq Scan" not in plan, plan


@pytest.mark.services
async def test_postgres_candle_buckets_use_the_primary_key(postgres_store) -> None:
    await postgres_store.write_candles(irregular_minutes())
    sql, args = candles_query(BTC, "1w", MONDAY, MONDAY + 21 * DAY, 10)

    plan = plan_of(await postgres_store.run_with_connection(
        lambda connection: connection.fetch(f"EXPLAIN {sql}", *args)))

    assert "candles_1m_pkey" in plan and "Seq Scan" not in plan, plan


@pytest.mark.services
async def test_postgres_two_writers_apply_a_batch_once(postgres_url_and_schema) -> None:
    url, schema = postgres_url_and_schema
    first = await open_postgres_store(url, schema=schema)
    second = await open_postgres_store(url, schema=schema)
    try:
        tape = Tape()
        for i in range(1, 200):
            tape.input(tape.deposit(1, 1, i), tape.accepted(i, type="market", status="filled"),
                       tape.opened(i, i))
        batch = tape.batch()
        written: list[int] = []

        async def apply(store: Store) -> None:
            written.append(await store.apply_batch(batch))

        async with trio.open_nursery() as nursery:
            for store in (first, second, first, second):
                nursery.start_soon(apply, store)

        assert sorted(written) == [0, 0, 0, 199 * 4]
        assert await second.last_persisted_seq() == 199
        assert len(await walk(lambda **kw: first.orders(1, **kw), 1000)) == 199
    finally:
        await first.close()
        await second.close()


@pytest.mark.services
async def test_open_store_reads_the_postgres_settings(postgres_url_and_schema, tmp_path) -> None:
    url, schema = postgres_url_and_schema
    cfg = load_config(environ={"DATABASE_URL": url, "EXNESS_STORE__KIND": "postgres",
                               "EXNESS_STORE__SCHEMA": schema},
                      overrides={"data": {"dir": str(tmp_path)}})

    store = await open_store_from_config(cfg)
    try:
        assert isinstance(store, PostgresStore)
        assert store.migrations_applied == [m.stem for m in load_migrations()]
        assert store.schema == schema and "@" not in store.where
        await store.write_candles([minute(0, 1, 1, 1, 1, 1)])
    finally:
        await store.close()

    # migrate_on_open = false: a current schema opens, a schema behind the code is refused
    current = await open_store_from_config(cfg.with_overrides({"store": {"migrate_on_open": False}}))
    assert len(await current.read_candles(BTC, "1m")) == 1
    await current.close()
    behind = cfg.with_overrides({"store": {"migrate_on_open": False, "schema": schema + "_empty"}})
    with pytest.raises(MigrationError, match="pending.*exness-actors migrate"):
        await open_store_from_config(behind)

    with pytest.raises(ConfigError, match="DATABASE_URL"):
        await open_store_from_config(load_config(environ={"EXNESS_STORE__KIND": "postgres"}))


# ------------------------------------------------------------------ notifications (issue 13)

async def test_notifications_record_deliver_settle_page_and_cut(store) -> None:
    from actors.store.notifications import Notification, Preferences, Settlement

    def made(seq: int, account: int = 7) -> Notification:
        return Notification(id=f"0-{seq}-1", account_id=account, shard=0, seq=seq, index=1, kind="order_filled",
                            created_at=seq * 1000, title=f"fill {seq}", data={"qty": "0.001", "n": seq})

    first = [made(seq) for seq in (1, 2, 3)]
    deliveries = [(n.id, "webhook", 7) for n in first] + [(first[0].id, "ws", 7)]
    assert await store.record_notifications(0, 3, first, deliveries, now=100) == 3
    assert await store.record_notifications(0, 3, first, deliveries, now=100) == 0      # at the watermark
    assert await store.notifier_seq(0) == 3
    await store.put_preferences(Preferences(account_id=7, events=("order_filled",), channels=("webhook",),
                                            webhook_url="https://h.example/x", webhook_secret="k", updated_at=5))
    assert (await store.preferences(7)).webhook_url == "https://h.example/x"
    assert set(await store.preferences_many([7, 8])) == {7}
    due = await store.due_deliveries("webhook", 0, now=100, limit=10, skip={("0-2-1", "webhook")})
    assert [d.notification.id for d in due] == ["0-1-1", "0-3-1"]
    assert due[0].notification == first[0] and due[0].webhook_secret == "k" and due[0].channels == ("webhook",)
    await store.settle_deliveries([
        Settlement(notification_id="0-1-1", channel="webhook", delivered=True, attempts=1),
        Settlement(notification_id="0-2-1", channel="webhook", delivered=False, attempts=1, retry_at=500, error="x"),
        Settlement(notification_id="0-3-1", channel="webhook", delivered=False, attempts=3, error="HTTP 500")],
        now=200)
    assert await store.due_deliveries("webhook", 0, now=499, limit=10) == []
    assert await store.next_due_at("webhook", 0, after=200) == 500
    assert [d.attempts for d in await store.due_deliveries("webhook", 0, now=500, limit=10)] == [1]
    (letter,) = (await store.dead_letters(7)).items
    assert (letter.notification_id, letter.attempts, letter.last_error, letter.failed_at) == ("0-3-1", 3, "HTTP 500", 200)

    page, unread = await store.notifications(7, limit=2)
    assert [n.id for n in page.items] == ["0-3-1", "0-2-1"] and unread == 3
    rest, _ = await store.notifications(7, limit=2, cursor=page.next_cursor)
    assert [n.id for n in rest.items] == ["0-1-1"] and rest.next_cursor is None
    assert await store.mark_read(7, ["0-1-1", "9-9-9"], now=300) == (1, 2)
    assert await store.mark_read(8, None, now=300) == (0, 0)
    unread_page, _ = await store.notifications(7, unread=True)
    assert [n.id for n in unread_page.items] == ["0-3-1", "0-2-1"]
    assert await store.mark_read(7, None, now=301) == (2, 0)

    assert await store.cut_notifications(0, 1) == 2                  # --repair kept seq 1 only
    assert await store.notifier_seq(0) == 1
    page, _ = await store.notifications(7)
    assert [n.id for n in page.items] == ["0-1-1"]
    assert (await store.dead_letters(7)).items == []


async def test_retention_purges_old_settled_notifications_in_bounded_batches(store) -> None:
    """Old and settled (delivered, or dead-lettered) notifications go with their dead-letter rows,
    at most ``limit`` per call, oldest first; a pending delivery keeps its notification however
    old; another shard's and younger ones stay. Times are injected: nothing sleeps."""
    from actors.notifications._retention import cutoff, purge_expired
    from actors.store.notifications import Notification, Settlement

    day = 86_400 * SECOND
    now = 400 * day

    def made(shard: int, seq: int, age_days: int) -> Notification:
        return Notification(id=f"{shard}-{seq}-0", account_id=7, shard=shard, seq=seq, index=0, kind="order_filled",
                            created_at=now - age_days * day, title=f"fill {seq}", data={})

    old = [made(0, seq, 200 - seq) for seq in range(1, 7)]       # 199 … 194 days old
    young = [made(0, 7, 10)]
    other_shard = [made(1, 1, 300)]
    await store.record_notifications(0, 7, old + young, [(n.id, "webhook", 7) for n in old + young], now=1)
    await store.record_notifications(1, 1, other_shard, [], now=1)
    settled = [Settlement(notification_id=n.id, channel="webhook", delivered=True, attempts=1) for n in old[:4]]
    settled.append(Settlement(notification_id=old[4].id, channel="webhook", delivered=False, attempts=8,
                              error="HTTP 500"))                 # dead-lettered: settled
    settled.append(Settlement(notification_id=young[0].id, channel="webhook", delivered=True, attempts=1))
    await store.settle_deliveries(settled, now=2)                # old[5] stays pending (retrying)
    assert await store.outbox_counts(0) == {("webhook", "pending"): 1, ("webhook", "dead"): 1}
    assert (await store.dead_letters(7)).items[0].notification_id == old[4].id

    before = cutoff(now, 90)
    assert await store.purge_notifications(0, before=before, limit=2) == 2      # the two oldest
    page, _ = await store.notifications(7, limit=50)
    assert [n.id for n in page.items] == ["0-7-0", "0-6-0", "0-5-0", "0-4-0", "0-3-0", "1-1-0"]
    assert await purge_expired(store, 0, now=now, retention_days=90, batch=2) == 3   # two calls: 2, then 1
    page, _ = await store.notifications(7, limit=50)
    assert [n.id for n in page.items] == ["0-7-0", "0-6-0", "1-1-0"]   # pending, young, another shard's
    assert (await store.dead_letters(7)).items == []             # the dead-letter row went with it
    assert await store.outbox_counts(0) == {("webhook", "pending"): 1}
    assert await purge_expired(store, 0, now=now, retention_days=0, batch=2) == 0   # 0: keep forever
    assert await store.purge_notifications(1, before=before, limit=10) == 1
    assert await store.notifier_seq(0) == 7                      # the watermark is not retention's

