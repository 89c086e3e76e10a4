"""The embedded store: one SQLite file in the data dir (``exness.sqlite3``), WAL mode.

Theory of operation
-------------------
``sqlite3`` blocks, so every call runs in a worker thread through ``trio.to_thread.run_sync``
with a ``CapacityLimiter(1)``: the event loop never waits on the disk, and the one connection
(opened with ``check_same_thread=False``) is used by one thread at a time, in call order.
Cancelling a caller does not abandon the work half done: the thread finishes the call (a write
commits or rolls back as a whole) and then the cancellation is delivered.

Writes are batched by the callers (the candles actor and the persister) and each call is one
transaction with ``executemany`` per statement. ``journal_mode=WAL`` lets the gateway's reads run
beside the writer; ``synchronous=NORMAL`` fsyncs at checkpoints, not per commit — a power cut may
lose the last commits, which the persister gets back from the journal (it is idempotent by seq)
and the candles actor simply rewrites.

Migrations are the ``NNNN_name.sql`` files of ``schemas/migrations/sqlite`` applied in name order,
each in one transaction with its row in ``schema_migrations``; applied ones are skipped.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar

import trio

from actors._shipped import shipped_path
from actors.engine.messages import EventBatch
from actors.store._notify_sqlite import SqliteNotifications
from actors.store.base import (
    ACCOUNT_COLUMNS,
    AUDIT_COLUMNS,
    MAX_OWNER_MATCHES,
    HISTORY_CUT_QUERIES,
    HISTORY_CUT_TABLES,
    CLOSED_COLUMNS,
    DEFAULT_PAGE_LIMIT,
    LEDGER_COLUMNS,
    ORDER_COLUMNS,
    POSITION_COLUMNS,
    AccountRecord,
    AccountOwner,
    AuditEntry,
    ClosedPosition,
    DuplicateEmail,
    HistoryCut,
    LedgerEntry,
    OperatorRecord,
    OrderRecord,
    Page,
    RefreshRotation,
    StoreClosed,
    TooManyAccounts,
    UserRecord,
    audit_page,
    candle_bound,
    check_limit,
    check_shard,
    closed_positions_page,
    decode_cursor,
    history_cut_args,
    history_cut_sql,
    ledger_page,
    orders_page,
    rows_from_items,
)
from exness_actors.candles import Candle, bucket_start, interval_ns

__all__ = ["SqliteStore", "DATABASE_FILE", "MIGRATIONS_DIR"]

DATABASE_FILE = "exness.sqlite3"
MIGRATIONS_DIR = shipped_path("schemas/migrations/sqlite")

logger = logging.getLogger("exness.store")

R = TypeVar("R")


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


_UPSERT_CANDLE = (
    "INSERT INTO candles_1m (symbol, open_time, open, high, low, close, volume) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (symbol, open_time) DO UPDATE SET "
    "open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close, "
    "volume = excluded.volume")
# The whole-batch transaction makes re-sent rows impossible; ON CONFLICT DO NOTHING is a second
# line of defence should a row ever be re-sent outside it.
_INSERT_ORDER = (f"INSERT INTO orders ({', '.join(ORDER_COLUMNS)}) "
                 f"VALUES ({_placeholders(len(ORDER_COLUMNS))}) ON CONFLICT DO NOTHING")
_INSERT_POSITION = (f"INSERT INTO positions ({', '.join(POSITION_COLUMNS)}) "
                    f"VALUES ({_placeholders(len(POSITION_COLUMNS))}) ON CONFLICT DO NOTHING")
_MODIFY_ORDER = ("UPDATE orders SET price = ?, qty = ?, take_profit = ?, stop_loss = ?, "
                 "expires_at = ?, updated_at = ?, seq = ? WHERE order_id = ?")
_FILL_ORDER = ("UPDATE orders SET status = 'filled', fill_price = ?, position_id = ?, "
               "updated_at = ?, seq = ? WHERE order_id = ?")
_FINISH_ORDER = ("UPDATE orders SET status = ?, cancel_reason = ?, updated_at = ?, seq = ? "
                 "WHERE order_id = ?")
_INSERT_CLOSED = (
    f"INSERT INTO closed_positions ({', '.join(CLOSED_COLUMNS)}, leverage, opened_at) "
    f"SELECT {_placeholders(len(CLOSED_COLUMNS))}, p.leverage, p.opened_at "
    f"FROM (SELECT ? AS id) AS k LEFT JOIN positions AS p ON p.position_id = k.id "
    f"WHERE true ON CONFLICT DO NOTHING")
_INSERT_LEDGER = (f"INSERT INTO ledger ({', '.join(LEDGER_COLUMNS)}) "
                  f"VALUES ({_placeholders(len(LEDGER_COLUMNS))}) ON CONFLICT DO NOTHING")
_INSERT_AUDIT = (f"INSERT INTO audit_log ({', '.join(AUDIT_COLUMNS)}) "
                 f"VALUES ({_placeholders(len(AUDIT_COLUMNS))}) ON CONFLICT DO NOTHING")

_LEDGER_SELECT = f"SELECT {', '.join(LEDGER_COLUMNS)} FROM ledger"
_CLOSED_NAMES = CLOSED_COLUMNS[:-1] + ("leverage", "opened_at", "closed_at")
_CLOSED_FIELDS = ", ".join(_CLOSED_NAMES)
_CLOSED_SELECT = f"SELECT {_CLOSED_FIELDS} FROM closed_positions"
_ORDER_SELECT = f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders"
# the first account's readiness is the account's (migration 0016)
_USER_SELECT = ("SELECT u.user_id, u.email, u.password_hash, u.account_id, coalesce(a.ready, 0), "
                "u.created_at FROM users AS u LEFT JOIN accounts AS a ON a.account_id = u.account_id")
_ACCOUNT_SELECT = f"SELECT {', '.join(ACCOUNT_COLUMNS)} FROM accounts"
_OPERATOR_SELECT = "SELECT operator_id, email, password_hash, role, disabled, created_at FROM operators"
_AUDIT_SELECT = f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit_log"
# every account a user holds (migration 0016), with the holder's e-mail
_OWNER_SELECT = ("SELECT a.account_id, a.user_id, u.email, a.demo FROM accounts AS a "
                 "JOIN users AS u ON u.user_id = a.user_id")


class SqliteStore(SqliteNotifications):
    """The :class:`actors.store.base.Store` of embedded mode. ``SqliteStore(data_dir)`` opens (creating
    the directory and the file when missing) and migrates synchronously — fine at startup, or use
    ``await SqliteStore.open(data_dir)`` from trio code."""

    def __init__(self, data_dir: os.PathLike[str] | str, *,
                 migrations_dir: os.PathLike[str] | str = MIGRATIONS_DIR) -> None:
        self.path = Path(data_dir) / DATABASE_FILE
        self.migrations_dir = Path(migrations_dir)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._limiter = trio.CapacityLimiter(1)
        self._closed = False
        self._connection = sqlite3.connect(self.path, check_same_thread=False,
                                           isolation_level=None)
        try:
            self._connection.execute("PRAGMA journal_mode = WAL")
            self._connection.execute("PRAGMA synchronous = NORMAL")
            self._connection.execute("PRAGMA busy_timeout = 5000")
            #: the migrations this open applied ([] when the schema was already current)
            self.migrations_applied: list[str] = self._migrate()
        except BaseException:
            self._connection.close()
            raise

    @classmethod
    async def open(cls, data_dir: os.PathLike[str] | str, **kwargs: Any) -> "SqliteStore":
        return await trio.to_thread.run_sync(functools.partial(cls, data_dir, **kwargs))

    # ------------------------------------------------------------------ plumbing

    async def _call(self, function: Callable[..., R], *args: Any) -> R:
        if self._closed:
            raise StoreClosed(f"the SQLite store {self.path} is closed")
        return await trio.to_thread.run_sync(functools.partial(function, *args),
                                             limiter=self._limiter)

    def _transaction(self, work: Callable[[sqlite3.Connection], R]) -> R:
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = work(connection)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return result

    def _query(self, sql: str, parameters: Sequence[Any]) -> list[tuple]:
        return self._connection.execute(sql, parameters).fetchall()

    # ------------------------------------------------------------------ lifecycle

    def _migrate(self) -> list[str]:
        connection = self._connection
        connection.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                           "(version TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)")
        done = {row[0] for row in connection.execute("SELECT version FROM schema_migrations")}
        applied = []
        for script in sorted(self.migrations_dir.glob("*.sql")):
            version = script.stem
            if version in done:
                continue
            sql = script.read_text(encoding="utf-8")
            # executescript commits any open transaction first, so BEGIN/COMMIT go inside it:
            # the migration and its schema_migrations row land together or not at all.
            try:
                connection.executescript(
                    f"BEGIN;\n{sql}\n;INSERT INTO schema_migrations (version, applied_at) "
                    f"VALUES ('{version}', {time.time_ns()});\nCOMMIT;")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            applied.append(version)
            logger.info("event=migrated store=sqlite version=%s path=%s", version, self.path)
        return applied

    async def migrate(self) -> list[str]:
        return await self._call(self._migrate)

    async def close(self) -> None:
        if self._closed:
            return
        await trio.to_thread.run_sync(self._connection.close, limiter=self._limiter)
        self._closed = True

    # ------------------------------------------------------------------ candles

    async def write_candles(self, candles: Sequence[Candle]) -> int:
        rows = []
        for candle in candles:
            if candle.interval != "1m":
                raise ValueError(f"only 1m candles are stored, not {candle.interval}")
            rows.append((candle.symbol, candle.open_time, candle.open, candle.high, candle.low,
                         candle.close, candle.volume))
        if not rows:
            return 0
        return await self._call(self._transaction,
                                lambda connection: connection.executemany(_UPSERT_CANDLE, rows).rowcount)

    async def read_candles(self, symbol: str, interval: str, start: Optional[int] = None,
                           end: Optional[int] = None, limit: Optional[int] = None) -> list[Candle]:
        length = interval_ns(interval)
        if limit is not None and (type(limit) is not int or limit < 1):
            raise ValueError(f"limit must be a positive integer or None, not {limit!r}")
        # A bucket is in [start, end) iff its 1m candles are in [align_up(start), align_up(end)).
        conditions, parameters = ["symbol = ?"], [symbol]   # type: tuple[list[str], list[Any]]
        if start is not None:
            conditions.append("open_time >= ?")
            parameters.append(candle_bound(start, interval))
        if end is not None:
            conditions.append("open_time < ?")
            parameters.append(candle_bound(end, interval))
        where = " AND ".join(conditions)
        if interval == "1m":
            sql = (f"SELECT open_time, open, high, low, close, volume FROM candles_1m "
                   f"WHERE {where} ORDER BY open_time DESC LIMIT ?")
            rows = await self._call(self._query, sql, [*parameters, -1 if limit is None else limit])
            return [Candle(symbol, "1m", *row) for row in reversed(rows)]
        # Group the 1m rows by bucket, then take open and close from the first and last 1m row of
        # each bucket (primary-key lookups). The shift keeps the dividend non-negative (SQLite's
        # integer division truncates toward zero) for every open_time >= 0.
        shift = -bucket_start(0, interval)   # 3 days for 1w (Monday alignment), else 0
        sql = (
            "SELECT g.first_time, o.open, g.high, g.low, c.close, g.volume FROM ("
            f"  SELECT (open_time + {shift}) / {length} AS bucket, min(open_time) AS first_time,"
            "   max(open_time) AS last_time, max(high) AS high, min(low) AS low, sum(volume) AS volume"
            f"  FROM candles_1m WHERE {where} GROUP BY bucket ORDER BY bucket DESC LIMIT ?"
            ") AS g JOIN candles_1m AS o ON o.symbol = ? AND o.open_time = g.first_time"
            " JOIN candles_1m AS c ON c.symbol = ? AND c.open_time = g.last_time"
            " ORDER BY g.first_time")
        rows = await self._call(self._query, sql,
                                [*parameters, -1 if limit is None else limit, symbol, symbol])
        return [Candle(symbol, interval, bucket_start(first_time, interval), *values)
                for first_time, *values in rows]

    # ------------------------------------------------------------------ engine events

    async def last_persisted_seq(self, shard: int = 0) -> int:
        check_shard(shard)
        return await self._call(self._last_seq, self._connection, shard)

    @staticmethod
    def _last_seq(connection: sqlite3.Connection, shard: int) -> int:
        row = connection.execute("SELECT last_seq FROM persister_shards WHERE shard = ?", (shard,)).fetchone()
        return row[0] if row is not None else 0

    async def apply_batch(self, batch: EventBatch, shard: int = 0) -> int:
        check_shard(shard)
        return await self._call(self._transaction, functools.partial(self._apply, batch, shard))

    def _apply(self, batch: EventBatch, shard: int, connection: sqlite3.Connection) -> int:
        last_seq = self._last_seq(connection, shard)
        if batch.last_seq <= last_seq:
            return 0
        items = batch.items
        if items and items[0][0] <= last_seq:
            items = [item for item in items if item[0] > last_seq]
        rows = rows_from_items(items)
        for sql, parameters in ((_INSERT_ORDER, rows.orders_accepted),
                                (_INSERT_POSITION, rows.positions_opened),
                                (_MODIFY_ORDER, rows.orders_modified),
                                (_FILL_ORDER, rows.orders_filled),
                                (_FINISH_ORDER, rows.orders_finished),
                                (_INSERT_CLOSED, [(*row, row[0]) for row in rows.positions_closed]),
                                (_INSERT_LEDGER, rows.ledger),
                                (_INSERT_AUDIT, [(shard, *row) for row in rows.audit])):
            if parameters:
                connection.executemany(sql, parameters)
        connection.execute("INSERT INTO persister_shards (shard, last_seq) VALUES (?, ?) "
                           "ON CONFLICT (shard) DO UPDATE SET last_seq = excluded.last_seq",
                           (shard, batch.last_seq))
        return rows.count()

    async def cut_history(self, shard: int, after_seq: int, *, shards: int = 1) -> HistoryCut:
        args = history_cut_args(shard, after_seq, shards)
        return await self._call(self._transaction, functools.partial(_cut_history, args))

    # ------------------------------------------------------------------ history queries

    async def ledger(self, account_id: int, *, cursor: Optional[str] = None,
                     limit: int = DEFAULT_PAGE_LIMIT) -> Page[LedgerEntry]:
        check_limit(limit)
        conditions, parameters = ["account_id = ?"], [account_id]   # type: tuple[list[str], list[Any]]
        if cursor is not None:
            conditions.append("(seq, idx) < (?, ?)")
            parameters.extend(decode_cursor(cursor, "ledger", 2))
        sql = (f"{_LEDGER_SELECT} WHERE {' AND '.join(conditions)} "
               f"ORDER BY seq DESC, idx DESC LIMIT ?")
        rows = await self._call(self._query, sql, [*parameters, limit + 1])
        return ledger_page(rows, limit)

    async def closed_positions(self, account_id: int, *, symbol: Optional[str] = None,
                               reason: Optional[str] = None, start: Optional[int] = None,
                               end: Optional[int] = None, cursor: Optional[str] = None,
                               limit: int = DEFAULT_PAGE_LIMIT) -> Page[ClosedPosition]:
        check_limit(limit)
        conditions, parameters = ["account_id = ?"], [account_id]   # type: tuple[list[str], list[Any]]
        for condition, value in (("symbol = ?", symbol), ("reason = ?", reason),
                                 ("closed_at >= ?", start), ("closed_at < ?", end)):
            if value is not None:
                conditions.append(condition)
                parameters.append(value)
        if cursor is not None:
            conditions.append("(seq, position_id) < (?, ?)")
            parameters.extend(decode_cursor(cursor, "positions", 2))
        sql = (f"{_CLOSED_SELECT} WHERE {' AND '.join(conditions)} "
               f"ORDER BY seq DESC, position_id DESC LIMIT ?")
        rows = await self._call(self._query, sql, [*parameters, limit + 1])
        return closed_positions_page([_closed_position(row) for row in rows[:limit]], len(rows) > limit)

    async def orders(self, account_id: int, *, status: Optional[str] = None,
                     symbol: Optional[str] = None, cursor: Optional[str] = None,
                     limit: int = DEFAULT_PAGE_LIMIT) -> Page[OrderRecord]:
        check_limit(limit)
        conditions, parameters = ["account_id = ?"], [account_id]   # type: tuple[list[str], list[Any]]
        for condition, value in (("status = ?", status), ("symbol = ?", symbol)):
            if value is not None:
                conditions.append(condition)
                parameters.append(value)
        if cursor is not None:
            conditions.append("order_id < ?")
            parameters.extend(decode_cursor(cursor, "orders", 1))
        sql = f"{_ORDER_SELECT} WHERE {' AND '.join(conditions)} ORDER BY order_id DESC LIMIT ?"
        rows = await self._call(self._query, sql, [*parameters, limit + 1])
        return orders_page(rows, limit)

    async def order(self, account_id: int, order_id: int) -> Optional[OrderRecord]:
        rows = await self._call(self._query, f"{_ORDER_SELECT} WHERE order_id = ? AND account_id = ?",
                                [order_id, account_id])
        return OrderRecord(**dict(zip(ORDER_COLUMNS, rows[0]))) if rows else None

    # ------------------------------------------------------------------ users and refresh tokens

    async def create_user(self, email: str, password_hash: str, *, created_at: int,
                          account_type: str = "standard", demo: bool = True) -> UserRecord:
        return await self._call(self._transaction, functools.partial(
            _create_user, email=email, password_hash=password_hash, created_at=created_at,
            account_type=account_type, demo=demo))

    async def user_by_email(self, email: str) -> Optional[UserRecord]:
        rows = await self._call(self._query, f"{_USER_SELECT} WHERE u.email = ?", [email])
        return _user(rows[0]) if rows else None

    async def user_by_id(self, user_id: int) -> Optional[UserRecord]:
        rows = await self._call(self._query, f"{_USER_SELECT} WHERE u.user_id = ?", [user_id])
        return _user(rows[0]) if rows else None

    async def open_account(self, user_id: int, *, account_type: str, demo: bool, created_at: int,
                           limit: int) -> AccountRecord:
        return await self._call(self._transaction, functools.partial(
            _open_account, user_id=user_id, account_type=account_type, demo=demo,
            created_at=created_at, limit=limit))

    async def accounts_of(self, user_id: int) -> list[AccountRecord]:
        rows = await self._call(self._query, f"{_ACCOUNT_SELECT} WHERE user_id = ? ORDER BY account_id",
                                [user_id])
        return [_account(row) for row in rows]

    async def account(self, account_id: int) -> Optional[AccountRecord]:
        rows = await self._call(self._query, f"{_ACCOUNT_SELECT} WHERE account_id = ?", [account_id])
        return _account(rows[0]) if rows else None

    async def mark_account_ready(self, account_id: int) -> None:
        await self._call(self._transaction, lambda connection: connection.execute(
            "UPDATE accounts SET ready = 1 WHERE account_id = ?", (account_id,)))

    async def forget_accounts_ready(self, account_ids: list[int]) -> None:
        await self._call(self._transaction, lambda connection: connection.executemany(
            "UPDATE accounts SET ready = 0 WHERE account_id = ?", [(account,) for account in account_ids]))

    async def add_refresh_token(self, token_hash: bytes, *, user_id: int,
                                family_id: str, issued_at: int, expires_at: int,
                                account_id: Optional[int] = None) -> None:
        await self._call(self._transaction, lambda connection: connection.execute(
            "INSERT INTO refresh_tokens (token_hash, user_id, family_id, parent_hash, issued_at, "
            "expires_at, account_id) SELECT ?, ?, ?, NULL, ?, ?, coalesce(?, account_id) "
            "FROM users WHERE user_id = ?",
            (token_hash, user_id, family_id, issued_at, expires_at, account_id, user_id)))

    async def rotate_refresh_token(self, token_hash: bytes, *, new_hash: bytes,
                                   now: int, expires_at: int) -> RefreshRotation:
        return await self._call(self._transaction, functools.partial(
            _rotate, token_hash=token_hash, new_hash=new_hash, now=now, expires_at=expires_at))

    async def revoke_refresh_family(self, token_hash: bytes, *, now: int) -> bool:
        return await self._call(self._transaction, functools.partial(
            _revoke_family, token_hash=token_hash, now=now))

    async def purge_refresh_tokens(self, *, before: int) -> int:
        return await self._call(self._transaction, lambda connection: connection.execute(
            "DELETE FROM refresh_tokens WHERE expires_at < ?", (before,)).rowcount)

    # ------------------------------------------------------------------ account owners

    async def account_owners_matching(self, email_contains: str, *, after: int = 0,
                                      limit: int = MAX_OWNER_MATCHES) -> list[AccountOwner]:
        rows = await self._call(self._query, f"{_OWNER_SELECT} WHERE instr(u.email, ?) > 0 AND a.account_id > ? "
                                             "ORDER BY a.account_id LIMIT ?",
                                [email_contains, after, min(limit, MAX_OWNER_MATCHES)])
        return [AccountOwner(account_id=row[0], user_id=row[1], email=row[2], demo=bool(row[3])) for row in rows]

    async def account_owners(self, account_ids: Sequence[int]) -> dict[int, AccountOwner]:
        ids = sorted(set(account_ids))[:MAX_OWNER_MATCHES]
        if not ids:
            return {}
        rows = await self._call(self._query, f"{_OWNER_SELECT} WHERE a.account_id IN ({_placeholders(len(ids))})",
                                ids)
        return {row[0]: AccountOwner(account_id=row[0], user_id=row[1], email=row[2], demo=bool(row[3])) for row in rows}

    # ------------------------------------------------------------------ operators

    async def create_operator(self, email: str, password_hash: str, *, role: str,
                              created_at: int) -> OperatorRecord:
        return await self._call(self._transaction, functools.partial(
            _create_operator, email=email, password_hash=password_hash, role=role, created_at=created_at))

    async def operator_by_email(self, email: str) -> Optional[OperatorRecord]:
        rows = await self._call(self._query, f"{_OPERATOR_SELECT} WHERE email = ?", [email])
        return _operator(rows[0]) if rows else None

    async def operator_by_id(self, operator_id: int) -> Optional[OperatorRecord]:
        rows = await self._call(self._query, f"{_OPERATOR_SELECT} WHERE operator_id = ?", [operator_id])
        return _operator(rows[0]) if rows else None

    async def operators(self) -> list[OperatorRecord]:
        return [_operator(row) for row in await self._call(
            self._query, f"{_OPERATOR_SELECT} ORDER BY operator_id", [])]

    async def update_operator(self, email: str, *, role: Optional[str] = None,
                              disabled: Optional[bool] = None, now: int = 0) -> Optional[OperatorRecord]:
        return await self._call(self._transaction, functools.partial(
            _update_operator, email=email, role=role, disabled=disabled, now=now))

    async def add_operator_refresh_token(self, token_hash: bytes, *, operator_id: int, family_id: str,
                                         issued_at: int, expires_at: int) -> None:
        await self._call(self._transaction, lambda connection: connection.execute(
            "INSERT INTO operator_refresh_tokens (token_hash, operator_id, family_id, parent_hash, issued_at, "
            "expires_at) VALUES (?, ?, ?, NULL, ?, ?)", (token_hash, operator_id, family_id, issued_at, expires_at)))

    async def rotate_operator_refresh_token(self, token_hash: bytes, *, new_hash: bytes, now: int,
                                            expires_at: int) -> RefreshRotation:
        return await self._call(self._transaction, functools.partial(
            _rotate_operator, token_hash=token_hash, new_hash=new_hash, now=now, expires_at=expires_at))

    async def revoke_operator_refresh_family(self, token_hash: bytes, *, now: int) -> bool:
        return await self._call(self._transaction, functools.partial(
            _revoke_operator_family, token_hash=token_hash, now=now))

    # ------------------------------------------------------------------ audit log

    async def audit(self, *, operator_id: Optional[int] = None, action: Optional[str] = None,
                    start: Optional[int] = None, end: Optional[int] = None, cursor: Optional[str] = None,
                    limit: int = DEFAULT_PAGE_LIMIT) -> Page[AuditEntry]:
        check_limit(limit)
        conditions, parameters = ["true"], []   # type: tuple[list[str], list[Any]]
        for condition, value in (("operator_id = ?", operator_id), ("action = ?", action),
                                 ("ts >= ?", start), ("ts < ?", end)):
            if value is not None:
                conditions.append(condition)
                parameters.append(value)
        if cursor is not None:
            conditions.append("(ts, shard, seq, idx) < (?, ?, ?, ?)")
            parameters.extend(decode_cursor(cursor, "audit", 4))
        sql = (f"{_AUDIT_SELECT} WHERE {' AND '.join(conditions)} "
               "ORDER BY ts DESC, shard DESC, seq DESC, idx DESC LIMIT ?")
        rows = await self._call(self._query, sql, [*parameters, limit + 1])
        return audit_page(rows, limit)


def _closed_position(row: tuple) -> ClosedPosition:
    return ClosedPosition(**dict(zip(_CLOSED_NAMES, row)))


def _user(row: tuple) -> UserRecord:
    return UserRecord(user_id=row[0], email=row[1], password_hash=row[2], account_id=row[3],
                      account_ready=bool(row[4]), created_at=row[5])


def _account(row: tuple) -> AccountRecord:
    record = AccountRecord(**dict(zip(ACCOUNT_COLUMNS, row)))
    record.demo, record.ready = bool(record.demo), bool(record.ready)
    return record


def _insert_account(connection: sqlite3.Connection, user_id: int, account_type: str, demo: bool,
                    created_at: int) -> AccountRecord:
    # AUTOINCREMENT never reuses an id, so an account id is never handed out twice.
    cursor = connection.execute(
        "INSERT INTO accounts (user_id, account_type, demo, ready, created_at) VALUES (?, ?, ?, 0, ?)",
        (user_id, account_type, int(demo), created_at))
    account_id = cursor.lastrowid
    assert account_id is not None   # an INSERT sets it
    return AccountRecord(account_id=account_id, user_id=user_id, account_type=account_type, demo=demo,
                         ready=False, created_at=created_at)


def _create_user(connection: sqlite3.Connection, email: str, password_hash: str,
                 created_at: int, account_type: str, demo: bool) -> UserRecord:
    try:
        cursor = connection.execute(
            "INSERT INTO users (email, password_hash, account_id, created_at) VALUES (?, ?, 0, ?)",
            (email, password_hash, created_at))
    except sqlite3.IntegrityError:
        raise DuplicateEmail(f"a user with e-mail {email!r} exists") from None
    user_id = cursor.lastrowid
    assert user_id is not None   # an INSERT sets it
    account = _insert_account(connection, user_id, account_type, demo, created_at)
    connection.execute("UPDATE users SET account_id = ? WHERE user_id = ?", (account.account_id, user_id))
    return UserRecord(user_id=user_id, email=email, password_hash=password_hash,
                      account_id=account.account_id, account_ready=False, created_at=created_at)


def _open_account(connection: sqlite3.Connection, user_id: int, account_type: str, demo: bool,
                  created_at: int, limit: int) -> AccountRecord:
    held = connection.execute("SELECT count(*) FROM accounts WHERE user_id = ?", (user_id,)).fetchone()[0]
    if held >= limit:
        raise TooManyAccounts(f"user {user_id} already holds {held} accounts (at most {limit})")
    return _insert_account(connection, user_id, account_type, demo, created_at)


def _rotate(connection: sqlite3.Connection, token_hash: bytes, new_hash: bytes, now: int,
            expires_at: int) -> RefreshRotation:
    row = connection.execute(
        "SELECT t.user_id, t.family_id, t.expires_at, t.spent_at, t.revoked_at, "
        "coalesce(t.account_id, u.account_id) "
        "FROM refresh_tokens AS t JOIN users AS u ON u.user_id = t.user_id "
        "WHERE t.token_hash = ?", (token_hash,)).fetchone()
    if row is None:
        return RefreshRotation(outcome="unknown")
    user_id, family_id, token_expires, spent_at, revoked_at, account_id = row
    known = dict(user_id=user_id, account_id=account_id, family_id=family_id)
    if revoked_at is not None:
        return RefreshRotation(outcome="revoked", **known)
    if spent_at is not None:
        connection.execute("UPDATE refresh_tokens SET revoked_at = ? "
                           "WHERE family_id = ? AND revoked_at IS NULL", (now, family_id))
        return RefreshRotation(outcome="reused", **known)
    if token_expires <= now:
        return RefreshRotation(outcome="expired", **known)
    connection.execute("UPDATE refresh_tokens SET spent_at = ? WHERE token_hash = ?",
                       (now, token_hash))
    connection.execute(
        "INSERT INTO refresh_tokens (token_hash, user_id, family_id, parent_hash, issued_at, "
        "expires_at, account_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (new_hash, user_id, family_id, token_hash, now, expires_at, account_id))
    return RefreshRotation(outcome="rotated", **known)


def _revoke_family(connection: sqlite3.Connection, token_hash: bytes, now: int) -> bool:
    row = connection.execute("SELECT family_id FROM refresh_tokens WHERE token_hash = ?",
                             (token_hash,)).fetchone()
    if row is None:
        return False
    connection.execute("UPDATE refresh_tokens SET revoked_at = ? "
                       "WHERE family_id = ? AND revoked_at IS NULL", (now, row[0]))
    return True


def _rotate_operator(connection: sqlite3.Connection, token_hash: bytes, new_hash: bytes, now: int,
                     expires_at: int) -> RefreshRotation:
    """:func:`_rotate` for an operator's token (``user_id`` is the operator's id, no account)."""
    row = connection.execute("SELECT operator_id, family_id, expires_at, spent_at, revoked_at "
                             "FROM operator_refresh_tokens WHERE token_hash = ?", (token_hash,)).fetchone()
    if row is None:
        return RefreshRotation(outcome="unknown")
    operator_id, family_id, token_expires, spent_at, revoked_at = row
    known = dict(user_id=operator_id, family_id=family_id)
    if revoked_at is not None:
        return RefreshRotation(outcome="revoked", **known)
    if spent_at is not None:
        connection.execute("UPDATE operator_refresh_tokens SET revoked_at = ? "
                           "WHERE family_id = ? AND revoked_at IS NULL", (now, family_id))
        return RefreshRotation(outcome="reused", **known)
    if token_expires <= now:
        return RefreshRotation(outcome="expired", **known)
    connection.execute("UPDATE operator_refresh_tokens SET spent_at = ? WHERE token_hash = ?", (now, token_hash))
    connection.execute(
        "INSERT INTO operator_refresh_tokens (token_hash, operator_id, family_id, parent_hash, issued_at, "
        "expires_at) VALUES (?, ?, ?, ?, ?, ?)", (new_hash, operator_id, family_id, token_hash, now, expires_at))
    return RefreshRotation(outcome="rotated", **known)


def _revoke_operator_family(connection: sqlite3.Connection, token_hash: bytes, now: int) -> bool:
    row = connection.execute("SELECT family_id FROM operator_refresh_tokens WHERE token_hash = ?",
                             (token_hash,)).fetchone()
    if row is None:
        return False
    connection.execute("UPDATE operator_refresh_tokens SET revoked_at = ? "
                       "WHERE family_id = ? AND revoked_at IS NULL", (now, row[0]))
    return True


def _operator(row: tuple) -> OperatorRecord:
    return OperatorRecord(operator_id=row[0], email=row[1], password_hash=row[2], role=row[3],
                          disabled=bool(row[4]), created_at=row[5])


def _create_operator(connection: sqlite3.Connection, email: str, password_hash: str, role: str,
                     created_at: int) -> OperatorRecord:
    try:
        cursor = connection.execute(
            "INSERT INTO operators (email, password_hash, role, disabled, created_at) VALUES (?, ?, ?, 0, ?)",
            (email, password_hash, role, created_at))
    except sqlite3.IntegrityError as error:
        if "UNIQUE" in str(error):
            raise DuplicateEmail(f"an operator with e-mail {email!r} exists") from None
        raise
    operator_id = cursor.lastrowid
    assert operator_id is not None   # an INSERT sets it
    return OperatorRecord(operator_id=operator_id, email=email, password_hash=password_hash, role=role,
                          disabled=False, created_at=created_at)


def _update_operator(connection: sqlite3.Connection, email: str, role: Optional[str],
                     disabled: Optional[bool], now: int) -> Optional[OperatorRecord]:
    row = connection.execute(f"{_OPERATOR_SELECT} WHERE email = ?", (email,)).fetchone()
    if row is None:
        return None
    operator = _operator(row)
    if role is not None:
        connection.execute("UPDATE operators SET role = ? WHERE operator_id = ?", (role, operator.operator_id))
        operator.role = role
    if disabled is not None:
        connection.execute("UPDATE operators SET disabled = ? WHERE operator_id = ?",
                           (int(disabled), operator.operator_id))
        operator.disabled = disabled
        if disabled:
            connection.execute("UPDATE operator_refresh_tokens SET revoked_at = ? "
                               "WHERE operator_id = ? AND revoked_at IS NULL", (now, operator.operator_id))
    return operator


def _cut_history(args: dict[str, int], connection: sqlite3.Connection) -> HistoryCut:
    def fetch(template: str) -> list[tuple]:
        sql, names = history_cut_sql(template, "?")
        return connection.execute(sql, [args[name] for name in names]).fetchall()

    found = {name: fetch(template)[0][0] for name, template in HISTORY_CUT_QUERIES.items()}
    accounts: set[int] = set()
    removed: dict[str, int] = {}
    for table, rows in HISTORY_CUT_TABLES.items():
        accounts.update(row[0] for row in fetch(f"SELECT DISTINCT account_id {rows}") if row[0] is not None)
        removed[table] = fetch(f"SELECT count(*) {rows}")[0][0]
        fetch(f"DELETE {rows}")
    stored = SqliteStore._last_seq(connection, args["shard"])
    rebuild_after = min(stored, args["seq"], (found["rebuild_from"] or args["seq"] + 1) - 1)
    connection.execute("UPDATE persister_shards SET last_seq = ? WHERE shard = ?", (rebuild_after, args["shard"]))
    return HistoryCut(rebuild_after_seq=rebuild_after, max_order_id=found["max_order_id"] or 0,
                      max_position_id=found["max_position_id"] or 0, accounts=sorted(accounts),
                      removed=removed)
