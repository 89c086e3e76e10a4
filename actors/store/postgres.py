"""The production store: PostgreSQL through asyncpg (``[store] kind = "postgres"``).

Theory of operation
-------------------
asyncpg is an asyncio library and the platform runs on trio, so the store owns an
:class:`~actors.aio_bridge.AsyncioBridge` (an asyncio loop in a thread) and an asyncpg pool that
lives on that loop. A crossing costs ~40–200 µs, so **every store call crosses once**: the whole
body of an operation — acquire a pooled connection, open the transaction, run its statements,
commit — is one ``async def`` below (the ``_db_*`` functions, first argument the pool) run with
``bridge.run``. SQL is composed and rows are turned into the protocol's row types on the trio side.

Writes come in batches from their callers and go to the server in as few round trips as the
semantics allow: ``apply_batch`` and ``write_candles`` use ``executemany`` (asyncpg pipelines
all the rows of a statement, one prepared statement and one sync for the whole list), one
statement kind after the other inside one transaction. ``executemany`` rather than one
``INSERT … SELECT FROM unnest(…)`` per kind: an order modified twice in one batch, or one candle
written twice, must be applied in order (the SQLite store does exactly that), and a set-based
``UPDATE … FROM`` or ``INSERT … ON CONFLICT DO UPDATE`` cannot touch one row twice.

Concurrency: ``apply_batch`` locks ``persister_state`` (``SELECT … FOR UPDATE``), so two
persisters of one database apply batches one after the other and both stay idempotent by seq.
Refresh-token rotation and revocation take a transaction-level advisory lock on the token's
family and then lock the token's row: two uses of one token are serialised (one rotates, the other
sees it spent and revokes the family), and two operations on one family never deadlock.

Values: money columns are NUMERIC (a pnl can pass 2^63 cents; see migration 0001), everything
else BIGINT. Each pooled connection gets a text codec for ``numeric`` that encodes from and
decodes to Python ``int`` — never ``float`` or ``Decimal`` — so integral values round-trip
exactly and a fractional one (which the store never writes) fails loudly instead of rounding.
Times are integer ns in BIGINT columns, like the protocol, the journal and the SQLite store.

Migrations are the ``NNNN_name.sql`` files of ``schemas/migrations/postgres``, applied in version
order by :func:`apply_migrations`: each in its own transaction together with its row in
``schema_migrations`` (version, name, sha-256 checksum, applied_at), under
``pg_advisory_xact_lock`` so concurrent migrators (two containers starting at once) never both
apply one; re-running is a no-op; an applied migration whose file changed is an error.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional, Sequence, TypeVar
from urllib.parse import urlsplit

import asyncpg
import attrs
import trio

from actors._shipped import shipped_path
from actors.aio_bridge import AsyncioBridge, open_bridge
from actors.engine.messages import EventBatch
from actors.store._notify_postgres import PostgresNotifications
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
from exness_actors.candles import WEEK_OFFSET_NS, Candle, interval_ns

__all__ = [
    "PostgresStore", "open_postgres_store", "migrate_postgres", "MigrationError", "Migration",
    "load_migrations", "apply_migrations", "pending_migrations", "MIGRATIONS_DIR",
    "ledger_query", "closed_positions_query", "orders_query", "candles_query", "audit_query", "quote_identifier",
    "describe_url", "DEFAULT_POOL_SIZE",
]

MIGRATIONS_DIR = shipped_path("schemas/migrations/postgres")
DEFAULT_POOL_SIZE = 8
CLOSE_TIMEOUT_S = 10.0

logger = logging.getLogger("exness.store")

R = TypeVar("R")


class MigrationError(RuntimeError):
    """A migration could not be applied (it was rolled back as a whole), an applied one changed,
    or the schema is behind the code and migrating at open is switched off."""


# ----------------------------------------------------------------------------------- migrations

_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# The runner owns the transaction; a COMMIT inside a file would cut it in two (half a migration
# committed, its schema_migrations row not). PL/pgSQL's block BEGIN (no semicolon) is fine.
_TRANSACTION_CONTROL = re.compile(
    r"^\s*(COMMIT|ROLLBACK|START\s+TRANSACTION|BEGIN\s*(;|TRANSACTION\b|WORK\b))",
    re.IGNORECASE | re.MULTILINE)

_CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    TEXT        PRIMARY KEY,            -- the file's NNNN
    name       TEXT        NOT NULL,               -- the rest of its name
    checksum   TEXT        NOT NULL,               -- sha-256 of the file, hex
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)"""
# One advisory lock per target schema: two migrators of one schema queue up, two schemas of one
# database (the tests) do not block each other. The one-argument form's key space (bigint) is
# shared by the whole database, hence the prefixes.
_LOCK_MIGRATIONS = ("SELECT pg_advisory_xact_lock(hashtextextended("
                    "'exness-actors:migrations:' || coalesce($1::text, current_schema(), ''), 0))")
_LOCK_TOKEN_FAMILY = ("SELECT pg_advisory_xact_lock(hashtextextended("
                      "'exness-actors:refresh-family:' || current_schema() || ':' || $1::text, 0))")


@attrs.frozen
class Migration:
    """One ``NNNN_name.sql`` file: ``version`` is ``NNNN``, ``stem`` is ``NNNN_name``."""
    version: str
    name: str
    sql: str
    checksum: str
    path: Path

    @property
    def stem(self) -> str:
        return f"{self.version}_{self.name}"


def load_migrations(directory: os.PathLike[str] | str = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations of ``directory`` in version order; ``MigrationError`` for a misnamed file
    or two files with one version."""
    directory = Path(directory)
    migrations: dict[str, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: a migration file is named NNNN_name.sql "
                                 "(four digits, then lower-case letters, digits and _)")
        version, name = match.groups()
        if version in migrations:
            raise MigrationError(f"{path} and {migrations[version].path} have one version {version}; "
                                 "renumber one of them")
        data = path.read_bytes()
        control = _TRANSACTION_CONTROL.search(data.decode("utf-8"))
        if control is not None:
            raise MigrationError(f"{path}: {control.group(1).strip()!r}: a migration must not "
                                 "control transactions; the runner applies each file in one")
        migrations[version] = Migration(version=version, name=name, sql=data.decode("utf-8"),
                                        checksum=hashlib.sha256(data).hexdigest(), path=path)
    return [migrations[version] for version in sorted(migrations)]


def quote_identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier (a schema name from the configuration)."""
    if not name or "\x00" in name:
        raise ValueError(f"not a valid SQL identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def _check_checksum(migration: Migration, recorded: str) -> None:
    if recorded != migration.checksum:
        raise MigrationError(
            f"migration {migration.stem} was applied with checksum {recorded[:16]}… but "
            f"{migration.path} now has {migration.checksum[:16]}…: an applied migration must not "
            "change. Restore the file and put the change in a new migration.")


async def apply_migrations(connection: asyncpg.Connection, migrations: Sequence[Migration], *,
                           schema: Optional[str] = None) -> list[str]:
    """Apply the ``migrations`` that ``schema_migrations`` does not list (asyncio side).

    Creates ``schema`` (when given) and ``schema_migrations``. Each migration runs in its own
    transaction with its ``schema_migrations`` row and under the schema's advisory lock; the
    applied list is re-read under the lock, so a migration a concurrent migrator applied in the
    meantime is skipped. Returns the stems applied here (``[]`` = nothing was pending).
    Raises :class:`MigrationError` for a changed applied migration or a failing one (rolled back:
    nothing of it stays, the migrations before it do).
    """
    async with connection.transaction():
        await connection.execute(_LOCK_MIGRATIONS, schema)
        if schema is not None and not await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema):
            # (CREATE SCHEMA IF NOT EXISTS would need the CREATE right even when it exists)
            await connection.execute(f"CREATE SCHEMA {quote_identifier(schema)}")
        await connection.execute(_CREATE_MIGRATIONS_TABLE)
        recorded = {row["version"]: row["checksum"] for row in
                    await connection.fetch("SELECT version, checksum FROM schema_migrations")}
    known = {migration.version for migration in migrations}
    for version in sorted(set(recorded) - known):
        logger.warning("event=migration_unknown store=postgres version=%s note=%s", version,
                       "applied in the database but not in this code's migrations (newer code?)")
    connection.add_log_listener(_log_notice)
    try:
        return await _apply_pending(connection, migrations, recorded, schema)
    finally:
        connection.remove_log_listener(_log_notice)


def _log_notice(connection: asyncpg.Connection, message: asyncpg.PostgresLogMessage) -> None:
    """RAISE NOTICE from a migration (0003 says what it did with TimescaleDB) goes to the log."""
    logger.info("event=migration_notice store=postgres message=%r",
                getattr(message, "message", None) or str(message))


async def _apply_pending(connection: asyncpg.Connection, migrations: Sequence[Migration],
                         recorded: dict[str, str], schema: Optional[str]) -> list[str]:
    applied: list[str] = []
    for migration in migrations:
        if migration.version in recorded:
            _check_checksum(migration, recorded[migration.version])
            continue
        async with connection.transaction():
            await connection.execute(_LOCK_MIGRATIONS, schema)
            checksum = await connection.fetchval(
                "SELECT checksum FROM schema_migrations WHERE version = $1", migration.version)
            if checksum is not None:          # a concurrent migrator was first
                _check_checksum(migration, checksum)
                continue
            try:
                await connection.execute(migration.sql)
            except asyncpg.PostgresError as error:
                raise MigrationError(
                    f"migration {migration.stem} ({migration.path}) failed and was rolled back, "
                    f"nothing of it is applied: {type(error).__name__}: {_describe_error(error)}"
                ) from error
            await connection.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version, migration.name, migration.checksum)
        applied.append(migration.stem)
        logger.info("event=migrated store=postgres version=%s schema=%s", migration.stem,
                    schema or "(search_path)")
    return applied


async def pending_migrations(connection: asyncpg.Connection,
                             migrations: Sequence[Migration]) -> list[str]:
    """The stems of ``migrations`` not applied yet (asyncio side); checks applied checksums."""
    exists = await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    recorded = ({row["version"]: row["checksum"] for row in
                 await connection.fetch("SELECT version, checksum FROM schema_migrations")}
                if exists else {})
    pending = []
    for migration in migrations:
        if migration.version in recorded:
            _check_checksum(migration, recorded[migration.version])
        else:
            pending.append(migration.stem)
    return pending


def _describe_error(error: asyncpg.PostgresError) -> str:
    parts = [str(error)]
    for label in ("detail", "hint", "where"):
        value = getattr(error, label, None)
        if value:
            parts.append(f"{label}: {value}")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------- queries
# Pure functions from a query's arguments to (sql, args): the store runs them, the tests EXPLAIN
# them to check that each list query is served by an index in its order (no sort).

class _Parameters:
    """Collects query arguments and hands out their ``$n`` placeholders."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


_LEDGER_SELECT = f"SELECT {', '.join(LEDGER_COLUMNS)} FROM ledger"
_CLOSED_NAMES = CLOSED_COLUMNS[:-1] + ("leverage", "opened_at", "closed_at")
_CLOSED_SELECT = f"SELECT {', '.join(_CLOSED_NAMES)} FROM closed_positions"
_ORDER_SELECT = f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders"
# the first account's readiness is the account's (migration 0016)
_USER_SELECT = ("SELECT u.user_id, u.email, u.password_hash, u.account_id, coalesce(a.ready, false), "
                "u.created_at FROM users AS u LEFT JOIN accounts AS a ON a.account_id = u.account_id")
_ACCOUNT_SELECT = f"SELECT {', '.join(ACCOUNT_COLUMNS)} FROM accounts"
_OPERATOR_SELECT = "SELECT operator_id, email, password_hash, role, disabled, created_at FROM operators"
_AUDIT_SELECT = f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit_log"
# every account a user holds (migration 0016), with the holder's e-mail
_OWNER_SELECT = ("SELECT a.account_id, a.user_id, u.email, a.demo FROM accounts AS a "
                 "JOIN users AS u ON u.user_id = a.user_id")


def ledger_query(account_id: int, cursor: Optional[str], limit: int) -> tuple[str, list[Any]]:
    """Index: the primary key (account_id, seq, idx), scanned backwards."""
    param = _Parameters()
    conditions = [f"account_id = {param(account_id)}"]
    if cursor is not None:
        seq, index = decode_cursor(cursor, "ledger", 2)
        conditions.append(f"(seq, idx) < ({param(seq)}, {param(index)})")
    sql = (f"{_LEDGER_SELECT} WHERE {' AND '.join(conditions)} "
           f"ORDER BY seq DESC, idx DESC LIMIT {param(limit + 1)}")
    return sql, param.values


def closed_positions_query(account_id: int, *, symbol: Optional[str], reason: Optional[str],
                           start: Optional[int], end: Optional[int], cursor: Optional[str],
                           limit: int) -> tuple[str, list[Any]]:
    """Indexes: closed_positions_by_{account,symbol,reason} (account_id[, symbol|reason], seq,
    position_id), scanned backwards; the other filters are checked on the way."""
    param = _Parameters()
    conditions = [f"account_id = {param(account_id)}"]
    for template, value in (("symbol = {}", symbol), ("reason = {}", reason),
                            ("closed_at >= {}", start), ("closed_at < {}", end)):
        if value is not None:
            conditions.append(template.format(param(value)))
    if cursor is not None:
        seq, position_id = decode_cursor(cursor, "positions", 2)
        conditions.append(f"(seq, position_id) < ({param(seq)}, {param(position_id)})")
    sql = (f"{_CLOSED_SELECT} WHERE {' AND '.join(conditions)} "
           f"ORDER BY seq DESC, position_id DESC LIMIT {param(limit + 1)}")
    return sql, param.values


def orders_query(account_id: int, *, status: Optional[str], symbol: Optional[str],
                 cursor: Optional[str], limit: int) -> tuple[str, list[Any]]:
    """Indexes: orders_by_{account,status,symbol} (account_id[, status|symbol], order_id),
    scanned backwards."""
    param = _Parameters()
    conditions = [f"account_id = {param(account_id)}"]
    for template, value in (("status = {}", status), ("symbol = {}", symbol)):
        if value is not None:
            conditions.append(template.format(param(value)))
    if cursor is not None:
        (order_id,) = decode_cursor(cursor, "orders", 1)
        conditions.append(f"order_id < {param(order_id)}")
    sql = (f"{_ORDER_SELECT} WHERE {' AND '.join(conditions)} "
           f"ORDER BY order_id DESC LIMIT {param(limit + 1)}")
    return sql, param.values


def audit_query(*, operator_id: Optional[int], action: Optional[str], start: Optional[int],
                end: Optional[int], cursor: Optional[str], limit: int) -> tuple[str, list[Any]]:
    """Indexes: audit_log_by_{time,operator,action} ([operator_id|action,] ts, shard, seq, idx),
    scanned backwards."""
    param = _Parameters()
    conditions = ["true"]
    for template, value in (("operator_id = {}", operator_id), ("action = {}", action),
                            ("ts >= {}", start), ("ts < {}", end)):
        if value is not None:
            conditions.append(template.format(param(value)))
    if cursor is not None:
        ts, shard, seq, index = decode_cursor(cursor, "audit", 4)
        conditions.append(f"(ts, shard, seq, idx) < ({param(ts)}, {param(shard)}, {param(seq)}, {param(index)})")
    sql = (f"{_AUDIT_SELECT} WHERE {' AND '.join(conditions)} "
           f"ORDER BY ts DESC, shard DESC, seq DESC, idx DESC LIMIT {param(limit + 1)}")
    return sql, param.values


def candles_query(symbol: str, interval: str, start: Optional[int], end: Optional[int],
                  limit: Optional[int]) -> tuple[str, list[Any]]:
    """The ``interval`` candles of ``symbol`` with open_time in ``[start, end)``, the newest
    ``limit`` of them, ascending. Index: the primary key (symbol, open_time).

    Buckets are computed with integer arithmetic on the ns open_time:
    ``open_time - ((open_time - offset) % length + length) % length`` is the start of the bucket
    (the double modulo floors for negative times too; ``offset`` aligns weeks on Mondays), the same
    :func:`~exness_actors.candles.bucket_start` the core uses. This is what ``date_bin`` and
    TimescaleDB's integer ``time_bucket`` compute; written out, one query serves plain PostgreSQL
    and TimescaleDB alike and needs no conversion to and from timestamptz.
    """
    length = interval_ns(interval)
    param = _Parameters()
    symbol_param = param(symbol)
    # A bucket is in [start, end) iff its 1m candles are in [align_up(start), align_up(end)).
    conditions = [f"symbol = {symbol_param}"]
    if start is not None:
        conditions.append(f"open_time >= {param(candle_bound(start, interval))}")
    if end is not None:
        conditions.append(f"open_time < {param(candle_bound(end, interval))}")
    where = " AND ".join(conditions)
    limit_param = param(limit)         # LIMIT NULL = no limit
    if interval == "1m":
        sql = (f"SELECT open_time, open, high, low, close, volume FROM candles_1m WHERE {where} "
               f"ORDER BY open_time DESC LIMIT {limit_param}")
        return sql, param.values
    offset = WEEK_OFFSET_NS if interval == "1w" else 0
    bucket = f"open_time - ((open_time - {offset}) % {length} + {length}) % {length}"
    # Group the 1m rows by bucket; open and close come from the first and last 1m row of each
    # bucket, high/low/volume from the aggregate. The open and close are scalar subqueries: one
    # primary-key lookup each per returned bucket, whatever the planner thinks of the number of
    # groups (it cannot estimate it for the bucket expression, and with joins it sometimes picked
    # two full hash joins of the symbol's rows).
    sql = (
        "SELECT g.bucket,"
        f" (SELECT open FROM candles_1m WHERE symbol = {symbol_param} AND open_time = g.first_time),"
        " g.high, g.low,"
        f" (SELECT close FROM candles_1m WHERE symbol = {symbol_param} AND open_time = g.last_time),"
        " g.volume FROM ("
        f" SELECT {bucket} AS bucket, min(open_time) AS first_time, max(open_time) AS last_time,"
        "  max(high) AS high, min(low) AS low, sum(volume)::bigint AS volume"
        f" FROM candles_1m WHERE {where} GROUP BY 1 ORDER BY 1 DESC LIMIT {limit_param}"
        ") AS g ORDER BY g.bucket DESC")
    return sql, param.values


# One statement for the whole list, like apply_batch's inserts (below). A list may hold one
# candle twice (a rewrite of a minute); executemany would apply both in order, so the last one
# wins — DISTINCT ON over the list's ordinality keeps exactly that one, and ON CONFLICT DO
# UPDATE (which cannot touch a row twice in one statement) then sees each key once.
_UPSERT_CANDLES = (
    "INSERT INTO candles_1m (symbol, open_time, open, high, low, close, volume) "
    "SELECT DISTINCT ON (symbol, open_time) symbol, open_time, open, high, low, close, volume "
    "FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], "
    "$6::bigint[], $7::bigint[]) WITH ORDINALITY "
    "AS u (symbol, open_time, open, high, low, close, volume, position) "
    "ORDER BY symbol, open_time, position DESC "
    "ON CONFLICT (symbol, open_time) DO UPDATE SET open = excluded.open, high = excluded.high, "
    "low = excluded.low, close = excluded.close, volume = excluded.volume")


# apply_batch is set-based: each kind of row goes to the server as one statement over arrays,
# one array per column (``unnest($1::bigint[], $2::text[], ...)``), so a batch of any size costs
# one round trip per kind (seven kinds) and the server handles the rows in one pass. That is
# exact because within one kind every key appears once: an order is accepted once, filled or
# finished once, a position opened once, a ledger or closed row has its own key. Only an order's
# modifications can repeat within a batch, and each OrderModified carries the order's whole new
# state (price, qty, TP, SL, expiry), so the last one of the batch is the one to apply. The kinds
# run in BatchRows' field order: an order's insert before its changes, a position's open before
# its closes. The whole-batch transaction (and the seq check under the row lock) makes re-sent
# rows impossible; ON CONFLICT DO NOTHING is a second line of defence, as in the SQLite store.
_COLUMN_TYPES = {
    **dict.fromkeys(("symbol", "side", "type", "status", "client_order_id", "cancel_reason",
                     "reason", "kind", "ref", "action", "target", "detail"), "text"),
    **dict.fromkeys(("margin", "pnl", "credit", "commission", "swap", "free_delta", "locked_delta",
                     "free", "locked"), "numeric"),
    **dict.fromkeys(("leverage", "idx", "shard"), "integer"),
}   # every other column is bigint (migration 0001)


def _unnest(columns: Sequence[str]) -> str:
    arrays = ", ".join(f"${number}::{_COLUMN_TYPES.get(name, 'bigint')}[]"
                       for number, name in enumerate(columns, start=1))
    return f"unnest({arrays}) AS u ({', '.join(columns)})"


def _update_orders(assignments: str, columns: Sequence[str]) -> str:
    return (f"UPDATE orders AS o SET {assignments} FROM {_unnest(columns)} "
            "WHERE o.order_id = u.order_id")


_INSERT_ORDERS = (f"INSERT INTO orders ({', '.join(ORDER_COLUMNS)}) "
                  f"SELECT * FROM {_unnest(ORDER_COLUMNS)} ON CONFLICT DO NOTHING")
_INSERT_POSITIONS = (f"INSERT INTO positions ({', '.join(POSITION_COLUMNS)}) "
                     f"SELECT * FROM {_unnest(POSITION_COLUMNS)} ON CONFLICT DO NOTHING")
# Column lists of the BatchRows tuples (see actors.store.base.BatchRows).
_MODIFY_ORDERS = _update_orders(
    "price = u.price, qty = u.qty, take_profit = u.take_profit, stop_loss = u.stop_loss, "
    "expires_at = u.expires_at, updated_at = u.updated_at, seq = u.seq",
    ("price", "qty", "take_profit", "stop_loss", "expires_at", "updated_at", "seq", "order_id"))
_FILL_ORDERS = _update_orders(
    "status = 'filled', fill_price = u.fill_price, position_id = u.position_id, "
    "updated_at = u.updated_at, seq = u.seq",
    ("fill_price", "position_id", "updated_at", "seq", "order_id"))
_FINISH_ORDERS = _update_orders(
    "status = u.status, cancel_reason = u.cancel_reason, updated_at = u.updated_at, seq = u.seq",
    ("status", "cancel_reason", "updated_at", "seq", "order_id"))
# leverage and opened_at from the position's open (NULL when it is older than the history).
_INSERT_CLOSED = (
    f"INSERT INTO closed_positions ({', '.join(CLOSED_COLUMNS)}, leverage, opened_at) "
    f"SELECT {', '.join('u.' + name for name in CLOSED_COLUMNS)}, p.leverage, p.opened_at "
    f"FROM {_unnest(CLOSED_COLUMNS)} LEFT JOIN positions AS p ON p.position_id = u.position_id "
    "ON CONFLICT DO NOTHING")
_INSERT_LEDGER = (f"INSERT INTO ledger ({', '.join(LEDGER_COLUMNS)}) "
                  f"SELECT * FROM {_unnest(LEDGER_COLUMNS)} ON CONFLICT DO NOTHING")
_INSERT_AUDIT = (f"INSERT INTO audit_log ({', '.join(AUDIT_COLUMNS)}) "
                 f"SELECT * FROM {_unnest(AUDIT_COLUMNS)} ON CONFLICT DO NOTHING")


# ------------------------------------------------------------------ asyncio side (one per call)

async def _init_connection(connection: asyncpg.Connection) -> None:
    await connection.set_type_codec("numeric", schema="pg_catalog", encoder=str, decoder=int,
                                    format="text")


async def _db_create_pool(url: str, schema: Optional[str], min_size: int, max_size: int,
                          connect_timeout: float) -> asyncpg.Pool:
    # jit off: the store runs short OLTP statements, and the planner's cost estimate for the
    # candle aggregation (it cannot estimate the number of buckets) made it spend ~300 ms
    # compiling a 100 ms query.
    settings = {"application_name": "exness-actors", "jit": "off"}
    if schema is not None:
        # This schema only (pg_catalog is always searched): a table missing from it must be an
        # error, never silently found in public. Migration 0003 qualifies TimescaleDB's functions.
        settings["search_path"] = quote_identifier(schema)
    return await asyncpg.create_pool(url, min_size=min_size, max_size=max_size,
                                     timeout=connect_timeout, server_settings=settings,
                                     init=_init_connection)


async def _db_close_pool(pool: asyncpg.Pool) -> None:
    try:
        await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_S)
    except Exception:          # a connection that will not come back: drop them all
        pool.terminate()


async def _db_prepare(pool: asyncpg.Pool, migrations: Sequence[Migration], schema: Optional[str],
                      migrate: bool) -> tuple[list[str], bool]:
    async with pool.acquire() as connection:
        if migrate:
            applied = await apply_migrations(connection, migrations, schema=schema)
        else:
            applied = []
            pending = await pending_migrations(connection, migrations)
            if pending:
                raise MigrationError(
                    f"the database schema is behind this code: {len(pending)} migration(s) "
                    f"pending ({', '.join(pending)}); run `exness-actors migrate --store postgres` "
                    "(or set [store] migrate_on_open = true)")
        timescaledb = await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')")
    return applied, timescaledb


async def _db_migrate(pool: asyncpg.Pool, migrations: Sequence[Migration],
                      schema: Optional[str]) -> list[str]:
    async with pool.acquire() as connection:
        return await apply_migrations(connection, migrations, schema=schema)


async def _db_fetch(pool: asyncpg.Pool, sql: str, args: Sequence[Any]) -> list[asyncpg.Record]:
    async with pool.acquire() as connection:
        return await connection.fetch(sql, *args)


async def _db_write_candles(pool: asyncpg.Pool, rows: list[tuple]) -> int:
    async with pool.acquire() as connection:
        await connection.execute(_UPSERT_CANDLES, *zip(*rows))     # one statement: atomic
    return len(rows)


async def _db_apply_batch(pool: asyncpg.Pool, items: list, last_seq: int, shard: int) -> int:
    async with pool.acquire() as connection, connection.transaction():
        # the shard's watermark row, created at its first batch and locked for the transaction
        await connection.execute("INSERT INTO persister_shards (shard, last_seq) VALUES ($1, 0) "
                                 "ON CONFLICT (shard) DO NOTHING", shard)
        stored = await connection.fetchval(
            "SELECT last_seq FROM persister_shards WHERE shard = $1 FOR UPDATE", shard)
        if last_seq <= stored:
            return 0
        if items and items[0][0] <= stored:
            items = [item for item in items if item[0] > stored]
        rows = rows_from_items(items)
        # the last modification of each order (a dict keeps the last value per key)
        modified = list({row[-1]: row for row in rows.orders_modified}.values())
        for sql, parameters in ((_INSERT_ORDERS, rows.orders_accepted),
                                (_INSERT_POSITIONS, rows.positions_opened),
                                (_MODIFY_ORDERS, modified),
                                (_FILL_ORDERS, rows.orders_filled),
                                (_FINISH_ORDERS, rows.orders_finished),
                                (_INSERT_CLOSED, rows.positions_closed),
                                (_INSERT_LEDGER, rows.ledger),
                                (_INSERT_AUDIT, [(shard, *row) for row in rows.audit])):
            if parameters:
                await connection.execute(sql, *zip(*parameters))    # rows -> column arrays
        await connection.execute("UPDATE persister_shards SET last_seq = $1 WHERE shard = $2", last_seq, shard)
    return rows.count()


async def _db_cut_history(pool: asyncpg.Pool, args: dict[str, int]) -> HistoryCut:
    async with pool.acquire() as connection, connection.transaction():
        async def fetch(template: str) -> list:
            sql, names = history_cut_sql(template, "$")
            return await connection.fetch(sql, *[args[name] for name in names])

        found = {name: (await fetch(template))[0][0] for name, template in HISTORY_CUT_QUERIES.items()}
        accounts: set[int] = set()
        removed: dict[str, int] = {}
        for table, rows in HISTORY_CUT_TABLES.items():
            accounts.update(row[0] for row in await fetch(f"SELECT DISTINCT account_id {rows}")
                            if row[0] is not None)
            removed[table] = (await fetch(f"SELECT count(*) {rows}"))[0][0]
            await fetch(f"DELETE {rows}")
        stored = await connection.fetchval(
            "SELECT last_seq FROM persister_shards WHERE shard = $1 FOR UPDATE", args["shard"]) or 0
        rebuild_after = min(stored, args["seq"], (found["rebuild_from"] or args["seq"] + 1) - 1)
        await connection.execute("UPDATE persister_shards SET last_seq = $1 WHERE shard = $2",
                                 rebuild_after, args["shard"])
    return HistoryCut(rebuild_after_seq=rebuild_after, max_order_id=found["max_order_id"] or 0,
                      max_position_id=found["max_position_id"] or 0, accounts=sorted(accounts),
                      removed=removed)


_INSERT_ACCOUNT = ("INSERT INTO accounts (user_id, account_type, demo, ready, created_at) "
                   "VALUES ($1, $2, $3, false, $4) RETURNING account_id")


async def _db_create_user(pool: asyncpg.Pool, email: str, password_hash: str,
                          created_at: int, account_type: str, demo: bool) -> Optional[tuple[int, int]]:
    """The new user's id and first account's id, or None when the e-mail is taken. The NOT
    EXISTS guard keeps a duplicate sign-up from drawing an id from the sequence (ids stay dense,
    as in SQLite); the unique index still decides a race between two sign-ups with one address."""
    try:
        async with pool.acquire() as connection, connection.transaction():
            user_id = await connection.fetchval(
                "INSERT INTO users (email, password_hash, account_id, created_at) "
                "SELECT $1::text, $2::text, 0, $3::bigint "
                "WHERE NOT EXISTS (SELECT 1 FROM users WHERE email = $1::text) RETURNING user_id",
                email, password_hash, created_at)
            if user_id is None:
                return None
            account_id = await connection.fetchval(_INSERT_ACCOUNT, user_id, account_type, demo, created_at)
            await connection.execute("UPDATE users SET account_id = $1 WHERE user_id = $2",
                                     account_id, user_id)
            return user_id, account_id
    except asyncpg.UniqueViolationError:
        return None


async def _db_open_account(pool: asyncpg.Pool, user_id: int, account_type: str, demo: bool,
                           created_at: int, limit: int) -> Optional[int]:
    """The new account's id, or None when the user already holds ``limit`` accounts. The user's
    row is locked first, so two concurrent opens for one user count one after the other."""
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SELECT 1 FROM users WHERE user_id = $1 FOR UPDATE", user_id)
        held = await connection.fetchval("SELECT count(*) FROM accounts WHERE user_id = $1", user_id)
        if held >= limit:
            return None
        return await connection.fetchval(_INSERT_ACCOUNT, user_id, account_type, demo, created_at)


async def _db_execute(pool: asyncpg.Pool, sql: str, args: Sequence[Any]) -> str:
    async with pool.acquire() as connection:
        return await connection.execute(sql, *args)


async def _db_rotate(pool: asyncpg.Pool, token_hash: bytes, new_hash: bytes, now: int,
                     expires_at: int) -> RefreshRotation:
    async with pool.acquire() as connection, connection.transaction():
        family_id = await connection.fetchval(
            "SELECT family_id FROM refresh_tokens WHERE token_hash = $1", token_hash)
        if family_id is None:
            return RefreshRotation(outcome="unknown")
        await connection.execute(_LOCK_TOKEN_FAMILY, family_id)
        # Read again under the lock: the state the previous holder committed.
        row = await connection.fetchrow(
            "SELECT t.user_id, t.family_id, t.expires_at, t.spent_at, t.revoked_at, "
            "coalesce(t.account_id, u.account_id) "
            "FROM refresh_tokens AS t JOIN users AS u ON u.user_id = t.user_id "
            "WHERE t.token_hash = $1 FOR UPDATE OF t", token_hash)
        if row is None:                     # purged meanwhile
            return RefreshRotation(outcome="unknown")
        user_id, family_id, token_expires, spent_at, revoked_at, account_id = row
        known = dict(user_id=user_id, account_id=account_id, family_id=family_id)
        if revoked_at is not None:
            return RefreshRotation(outcome="revoked", **known)
        if spent_at is not None:
            await connection.execute("UPDATE refresh_tokens SET revoked_at = $1 "
                                     "WHERE family_id = $2 AND revoked_at IS NULL", now, family_id)
            return RefreshRotation(outcome="reused", **known)
        if token_expires <= now:
            return RefreshRotation(outcome="expired", **known)
        await connection.execute("UPDATE refresh_tokens SET spent_at = $1 WHERE token_hash = $2",
                                 now, token_hash)
        await connection.execute(
            "INSERT INTO refresh_tokens (token_hash, user_id, family_id, parent_hash, issued_at, "
            "expires_at, account_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            new_hash, user_id, family_id, token_hash, now, expires_at, account_id)
        return RefreshRotation(outcome="rotated", **known)


async def _db_revoke_family(pool: asyncpg.Pool, token_hash: bytes, now: int) -> bool:
    async with pool.acquire() as connection, connection.transaction():
        family_id = await connection.fetchval(
            "SELECT family_id FROM refresh_tokens WHERE token_hash = $1", token_hash)
        if family_id is None:
            return False
        await connection.execute(_LOCK_TOKEN_FAMILY, family_id)
        await connection.execute("UPDATE refresh_tokens SET revoked_at = $1 "
                                 "WHERE family_id = $2 AND revoked_at IS NULL", now, family_id)
        return True


async def _db_rotate_operator(pool: asyncpg.Pool, token_hash: bytes, new_hash: bytes, now: int,
                              expires_at: int) -> RefreshRotation:
    """:func:`_db_rotate` for an operator's token (``user_id`` is the operator's id, no account)."""
    async with pool.acquire() as connection, connection.transaction():
        family_id = await connection.fetchval(
            "SELECT family_id FROM operator_refresh_tokens WHERE token_hash = $1", token_hash)
        if family_id is None:
            return RefreshRotation(outcome="unknown")
        await connection.execute(_LOCK_TOKEN_FAMILY, family_id)
        row = await connection.fetchrow(
            "SELECT operator_id, family_id, expires_at, spent_at, revoked_at FROM operator_refresh_tokens "
            "WHERE token_hash = $1 FOR UPDATE", token_hash)
        if row is None:                     # purged meanwhile
            return RefreshRotation(outcome="unknown")
        operator_id, family_id, token_expires, spent_at, revoked_at = row
        known = dict(user_id=operator_id, family_id=family_id)
        if revoked_at is not None:
            return RefreshRotation(outcome="revoked", **known)
        if spent_at is not None:
            await connection.execute("UPDATE operator_refresh_tokens SET revoked_at = $1 "
                                     "WHERE family_id = $2 AND revoked_at IS NULL", now, family_id)
            return RefreshRotation(outcome="reused", **known)
        if token_expires <= now:
            return RefreshRotation(outcome="expired", **known)
        await connection.execute("UPDATE operator_refresh_tokens SET spent_at = $1 WHERE token_hash = $2",
                                 now, token_hash)
        await connection.execute(
            "INSERT INTO operator_refresh_tokens (token_hash, operator_id, family_id, parent_hash, issued_at, "
            "expires_at) VALUES ($1, $2, $3, $4, $5, $6)", new_hash, operator_id, family_id, token_hash, now,
            expires_at)
        return RefreshRotation(outcome="rotated", **known)


async def _db_revoke_operator_family(pool: asyncpg.Pool, token_hash: bytes, now: int) -> bool:
    async with pool.acquire() as connection, connection.transaction():
        family_id = await connection.fetchval(
            "SELECT family_id FROM operator_refresh_tokens WHERE token_hash = $1", token_hash)
        if family_id is None:
            return False
        await connection.execute(_LOCK_TOKEN_FAMILY, family_id)
        await connection.execute("UPDATE operator_refresh_tokens SET revoked_at = $1 "
                                 "WHERE family_id = $2 AND revoked_at IS NULL", now, family_id)
        return True


async def _db_create_operator(pool: asyncpg.Pool, email: str, password_hash: str, role: str,
                              created_at: int) -> Optional[int]:
    """The new operator's id, or None when the e-mail is taken."""
    try:
        async with pool.acquire() as connection:
            return await connection.fetchval(
                "INSERT INTO operators (email, password_hash, role, disabled, created_at) "
                "SELECT $1::text, $2::text, $3::text, false, $4::bigint "
                "WHERE NOT EXISTS (SELECT 1 FROM operators WHERE email = $1::text) RETURNING operator_id",
                email, password_hash, role, created_at)
    except asyncpg.UniqueViolationError:
        return None


async def _db_update_operator(pool: asyncpg.Pool, email: str, role: Optional[str],
                              disabled: Optional[bool], now: int) -> Optional[asyncpg.Record]:
    async with pool.acquire() as connection, connection.transaction():
        row = await connection.fetchrow(
            f"UPDATE operators SET role = coalesce($2, role), disabled = coalesce($3, disabled) "
            f"WHERE email = $1 RETURNING operator_id, email, password_hash, role, disabled, created_at",
            email, role, disabled)
        if row is not None and disabled:
            await connection.execute("UPDATE operator_refresh_tokens SET revoked_at = $1 "
                                     "WHERE operator_id = $2 AND revoked_at IS NULL", now, row[0])
        return row


# SKIP LOCKED: a token being rotated right now is left for the next purge, so a purge never
# waits on (or deadlocks with) a rotation or a family revocation.
_PURGE_TOKENS = ("DELETE FROM refresh_tokens WHERE token_hash IN (SELECT token_hash FROM "
                 "refresh_tokens WHERE expires_at < $1 FOR UPDATE SKIP LOCKED)")


def _affected(status: str) -> int:
    """The row count of a command status such as ``DELETE 3`` or ``UPDATE 1``."""
    return int(status.rsplit(" ", 1)[-1])


# --------------------------------------------------------------------------------------- store

def describe_url(url: str) -> str:
    """host:port/database of a URL, without user or password (for logs and messages)."""
    try:
        parts = urlsplit(url)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"
    except ValueError:
        return "(unparsable URL)"


class PostgresStore(PostgresNotifications):
    """The :class:`actors.store.base.Store` on PostgreSQL. Open it with :func:`open_postgres_store`
    (or ``open_store(cfg)`` with ``[store] kind = "postgres"``); close it with :meth:`close`."""

    def __init__(self, *, pool: asyncpg.Pool, bridge: AsyncioBridge, bridge_context: open_bridge,
                 migrations: Sequence[Migration], schema: Optional[str], where: str) -> None:
        self._pool = pool
        self._bridge = bridge
        self._bridge_context = bridge_context
        self._migrations = list(migrations)
        self._closed = False
        self.schema = schema
        #: host:port/database (and schema) — never the credentials
        self.where = where if schema is None else f"{where} schema {schema}"
        #: the migrations the open applied ([] when the schema was already current)
        self.migrations_applied: list[str] = []
        #: whether the timescaledb extension is installed (candles_1m is then a hypertable)
        self.timescaledb = False

    # ------------------------------------------------------------------ plumbing

    async def _call(self, function: Callable[..., Awaitable[R]], *args: Any) -> R:
        if self._closed:
            raise StoreClosed(f"the PostgreSQL store {self.where} is closed")
        return await self._bridge.run(function, self._pool, *args)

    async def run_with_connection(self, function: Callable[..., Awaitable[R]], *args: Any) -> R:
        """``await function(connection, *args)`` with a pooled asyncpg connection, on the
        bridge's asyncio loop (one crossing). For tests and operations scripts, not the actors."""
        async def with_connection(pool: asyncpg.Pool) -> R:
            async with pool.acquire() as connection:
                return await function(connection, *args)
        return await self._call(with_connection)

    # ------------------------------------------------------------------ lifecycle

    async def migrate(self) -> list[str]:
        return await self._call(_db_migrate, self._migrations, self.schema)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            try:
                await self._bridge.run(_db_close_pool, self._pool)
            finally:
                await self._bridge_context.__aexit__(None, None, None)

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
        return await self._call(_db_write_candles, rows)

    async def read_candles(self, symbol: str, interval: str, start: Optional[int] = None,
                           end: Optional[int] = None, limit: Optional[int] = None) -> list[Candle]:
        interval_ns(interval)
        if limit is not None and (type(limit) is not int or limit < 1):
            raise ValueError(f"limit must be a positive integer or None, not {limit!r}")
        sql, args = candles_query(symbol, interval, start, end, limit)
        rows = await self._call(_db_fetch, sql, args)
        return [Candle(symbol, interval, *row) for row in reversed(rows)]

    # ------------------------------------------------------------------ engine events

    async def last_persisted_seq(self, shard: int = 0) -> int:
        check_shard(shard)
        rows = await self._call(_db_fetch, "SELECT last_seq FROM persister_shards WHERE shard = $1", (shard,))
        return rows[0][0] if rows else 0

    async def apply_batch(self, batch: EventBatch, shard: int = 0) -> int:
        check_shard(shard)
        return await self._call(_db_apply_batch, batch.items, batch.last_seq, shard)

    async def cut_history(self, shard: int, after_seq: int, *, shards: int = 1) -> HistoryCut:
        return await self._call(_db_cut_history, history_cut_args(shard, after_seq, shards))

    # ------------------------------------------------------------------ history queries

    async def ledger(self, account_id: int, *, cursor: Optional[str] = None,
                     limit: int = DEFAULT_PAGE_LIMIT) -> Page[LedgerEntry]:
        check_limit(limit)
        sql, args = ledger_query(account_id, cursor, limit)
        rows = await self._call(_db_fetch, sql, args)
        return ledger_page(rows, limit)

    async def closed_positions(self, account_id: int, *, symbol: Optional[str] = None,
                               reason: Optional[str] = None, start: Optional[int] = None,
                               end: Optional[int] = None, cursor: Optional[str] = None,
                               limit: int = DEFAULT_PAGE_LIMIT) -> Page[ClosedPosition]:
        check_limit(limit)
        sql, args = closed_positions_query(account_id, symbol=symbol, reason=reason, start=start,
                                           end=end, cursor=cursor, limit=limit)
        rows = await self._call(_db_fetch, sql, args)
        return closed_positions_page([ClosedPosition(**dict(zip(_CLOSED_NAMES, row))) for row in rows[:limit]], len(rows) > limit)

    async def orders(self, account_id: int, *, status: Optional[str] = None,
                     symbol: Optional[str] = None, cursor: Optional[str] = None,
                     limit: int = DEFAULT_PAGE_LIMIT) -> Page[OrderRecord]:
        check_limit(limit)
        sql, args = orders_query(account_id, status=status, symbol=symbol, cursor=cursor,
                                 limit=limit)
        rows = await self._call(_db_fetch, sql, args)
        return orders_page(rows, limit)

    async def order(self, account_id: int, order_id: int) -> Optional[OrderRecord]:
        rows = await self._call(_db_fetch, f"{_ORDER_SELECT} WHERE order_id = $1 AND account_id = $2",
                                (order_id, account_id))
        return OrderRecord(**dict(zip(ORDER_COLUMNS, rows[0]))) if rows else None

    # ------------------------------------------------------------------ users and refresh tokens

    async def create_user(self, email: str, password_hash: str, *, created_at: int,
                          account_type: str = "standard", demo: bool = True) -> UserRecord:
        created = await self._call(_db_create_user, email, password_hash, created_at, account_type, demo)
        if created is None:
            raise DuplicateEmail(f"a user with e-mail {email!r} exists")
        user_id, account_id = created
        return UserRecord(user_id=user_id, email=email, password_hash=password_hash,
                          account_id=account_id, account_ready=False, created_at=created_at)

    async def user_by_email(self, email: str) -> Optional[UserRecord]:
        rows = await self._call(_db_fetch, f"{_USER_SELECT} WHERE u.email = $1", (email,))
        return _user(rows[0]) if rows else None

    async def user_by_id(self, user_id: int) -> Optional[UserRecord]:
        rows = await self._call(_db_fetch, f"{_USER_SELECT} WHERE u.user_id = $1", (user_id,))
        return _user(rows[0]) if rows else None

    async def open_account(self, user_id: int, *, account_type: str, demo: bool, created_at: int,
                           limit: int) -> AccountRecord:
        account_id = await self._call(_db_open_account, user_id, account_type, demo, created_at, limit)
        if account_id is None:
            raise TooManyAccounts(f"user {user_id} already holds {limit} accounts (at most {limit})")
        return AccountRecord(account_id=account_id, user_id=user_id, account_type=account_type, demo=demo,
                             ready=False, created_at=created_at)

    async def accounts_of(self, user_id: int) -> list[AccountRecord]:
        rows = await self._call(_db_fetch, f"{_ACCOUNT_SELECT} WHERE user_id = $1 ORDER BY account_id",
                                (user_id,))
        return [AccountRecord(**dict(zip(ACCOUNT_COLUMNS, row))) for row in rows]

    async def account(self, account_id: int) -> Optional[AccountRecord]:
        rows = await self._call(_db_fetch, f"{_ACCOUNT_SELECT} WHERE account_id = $1", (account_id,))
        return AccountRecord(**dict(zip(ACCOUNT_COLUMNS, rows[0]))) if rows else None

    async def mark_account_ready(self, account_id: int) -> None:
        await self._call(_db_execute, "UPDATE accounts SET ready = true WHERE account_id = $1",
                         (account_id,))

    async def forget_accounts_ready(self, account_ids: list[int]) -> None:
        await self._call(_db_execute, "UPDATE accounts SET ready = false WHERE account_id = ANY($1::bigint[])",
                         (list(account_ids),))

    async def add_refresh_token(self, token_hash: bytes, *, user_id: int,
                                family_id: str, issued_at: int, expires_at: int,
                                account_id: Optional[int] = None) -> None:
        await self._call(_db_execute,
                         "INSERT INTO refresh_tokens (token_hash, user_id, family_id, parent_hash, "
                         "issued_at, expires_at, account_id) SELECT $1::bytea, $2::bigint, $3::text, NULL, $4::bigint, $5::bigint, "
                         "coalesce($6::bigint, account_id) FROM users WHERE user_id = $2",
                         (token_hash, user_id, family_id, issued_at, expires_at, account_id))

    async def rotate_refresh_token(self, token_hash: bytes, *, new_hash: bytes,
                                   now: int, expires_at: int) -> RefreshRotation:
        return await self._call(_db_rotate, token_hash, new_hash, now, expires_at)

    async def revoke_refresh_family(self, token_hash: bytes, *, now: int) -> bool:
        return await self._call(_db_revoke_family, token_hash, now)

    async def purge_refresh_tokens(self, *, before: int) -> int:
        return _affected(await self._call(_db_execute, _PURGE_TOKENS, (before,)))

    # ------------------------------------------------------------------ account owners

    async def account_owners_matching(self, email_contains: str, *, after: int = 0,
                                      limit: int = MAX_OWNER_MATCHES) -> list[AccountOwner]:
        rows = await self._call(_db_fetch, f"{_OWNER_SELECT} WHERE strpos(u.email, $1) > 0 AND a.account_id > $2 "
                                           "ORDER BY a.account_id LIMIT $3",
                                (email_contains, after, min(limit, MAX_OWNER_MATCHES)))
        return [AccountOwner(account_id=row[0], user_id=row[1], email=row[2], demo=bool(row[3])) for row in rows]

    async def account_owners(self, account_ids: Sequence[int]) -> dict[int, AccountOwner]:
        ids = sorted(set(account_ids))[:MAX_OWNER_MATCHES]
        if not ids:
            return {}
        rows = await self._call(_db_fetch, f"{_OWNER_SELECT} WHERE a.account_id = ANY($1::bigint[])", (ids,))
        return {row[0]: AccountOwner(account_id=row[0], user_id=row[1], email=row[2], demo=bool(row[3])) for row in rows}

    # ------------------------------------------------------------------ operators

    async def create_operator(self, email: str, password_hash: str, *, role: str,
                              created_at: int) -> OperatorRecord:
        operator_id = await self._call(_db_create_operator, email, password_hash, role, created_at)
        if operator_id is None:
            raise DuplicateEmail(f"an operator with e-mail {email!r} exists")
        return OperatorRecord(operator_id=operator_id, email=email, password_hash=password_hash, role=role,
                              disabled=False, created_at=created_at)

    async def operator_by_email(self, email: str) -> Optional[OperatorRecord]:
        rows = await self._call(_db_fetch, f"{_OPERATOR_SELECT} WHERE email = $1", (email,))
        return _operator(rows[0]) if rows else None

    async def operator_by_id(self, operator_id: int) -> Optional[OperatorRecord]:
        rows = await self._call(_db_fetch, f"{_OPERATOR_SELECT} WHERE operator_id = $1", (operator_id,))
        return _operator(rows[0]) if rows else None

    async def operators(self) -> list[OperatorRecord]:
        return [_operator(row) for row in await self._call(_db_fetch, f"{_OPERATOR_SELECT} ORDER BY operator_id", ())]

    async def update_operator(self, email: str, *, role: Optional[str] = None,
                              disabled: Optional[bool] = None, now: int = 0) -> Optional[OperatorRecord]:
        row = await self._call(_db_update_operator, email, role, disabled, now)
        return None if row is None else _operator(row)

    async def add_operator_refresh_token(self, token_hash: bytes, *, operator_id: int, family_id: str,
                                         issued_at: int, expires_at: int) -> None:
        await self._call(_db_execute,
                         "INSERT INTO operator_refresh_tokens (token_hash, operator_id, family_id, parent_hash, "
                         "issued_at, expires_at) VALUES ($1, $2, $3, NULL, $4, $5)",
                         (token_hash, operator_id, family_id, issued_at, expires_at))

    async def rotate_operator_refresh_token(self, token_hash: bytes, *, new_hash: bytes, now: int,
                                            expires_at: int) -> RefreshRotation:
        return await self._call(_db_rotate_operator, token_hash, new_hash, now, expires_at)

    async def revoke_operator_refresh_family(self, token_hash: bytes, *, now: int) -> bool:
        return await self._call(_db_revoke_operator_family, token_hash, now)

    # ------------------------------------------------------------------ audit log

    async def audit(self, *, operator_id: Optional[int] = None, action: Optional[str] = None,
                    start: Optional[int] = None, end: Optional[int] = None, cursor: Optional[str] = None,
                    limit: int = DEFAULT_PAGE_LIMIT) -> Page[AuditEntry]:
        check_limit(limit)
        sql, args = audit_query(operator_id=operator_id, action=action, start=start, end=end,
                                cursor=cursor, limit=limit)
        return audit_page(await self._call(_db_fetch, sql, args), limit)


def _user(row: Sequence[Any]) -> UserRecord:
    return UserRecord(user_id=row[0], email=row[1], password_hash=row[2], account_id=row[3],
                      account_ready=bool(row[4]), created_at=row[5])


def _operator(row: Sequence[Any]) -> OperatorRecord:
    return OperatorRecord(operator_id=row[0], email=row[1], password_hash=row[2], role=row[3],
                          disabled=bool(row[4]), created_at=row[5])


async def open_postgres_store(url: str, *, schema: Optional[str] = None, migrate: bool = True,
                              migrations_dir: os.PathLike[str] | str = MIGRATIONS_DIR,
                              min_size: int = 1, max_size: int = DEFAULT_POOL_SIZE,
                              connect_timeout: float = 10.0) -> PostgresStore:
    """Connect to ``url`` (a ``postgresql://`` URL), apply the pending migrations (or, with
    ``migrate=False``, fail with :class:`MigrationError` when some are pending) and return the
    store. ``schema`` puts every table in that schema (created when missing) through the
    connections' ``search_path``; None uses the server's search_path (normally ``public``)."""
    migrations = await trio.to_thread.run_sync(load_migrations, migrations_dir)
    where = describe_url(url)
    bridge_context = open_bridge("postgres")
    bridge = await bridge_context.__aenter__()
    try:
        pool = await bridge.run(_db_create_pool, url, schema, min_size, max_size, connect_timeout)
        store = PostgresStore(pool=pool, bridge=bridge, bridge_context=bridge_context,
                              migrations=migrations, schema=schema, where=where)
        try:
            store.migrations_applied, store.timescaledb = await bridge.run(
                _db_prepare, pool, migrations, schema, migrate)
        except BaseException:
            with trio.CancelScope(shield=True):
                await bridge.run(_db_close_pool, pool)
            raise
    except BaseException:
        await bridge_context.__aexit__(None, None, None)
        raise
    logger.info("event=store_opened store=postgres where=%s migrations_applied=%d timescaledb=%s",
                store.where, len(store.migrations_applied), store.timescaledb)
    return store


async def migrate_postgres(url: str, *, schema: Optional[str] = None,
                           migrations_dir: os.PathLike[str] | str = MIGRATIONS_DIR) -> PostgresStore:
    """Apply the pending migrations and return the (closed) store, whose ``migrations_applied``
    and ``timescaledb`` say what happened (``exness-actors migrate``)."""
    store = await open_postgres_store(url, schema=schema, migrate=True,
                                      migrations_dir=migrations_dir, max_size=1)
    await store.close()
    return store
