"""The notification tables on PostgreSQL: :class:`PostgresNotifications`, mixed into
:class:`~actors.store.postgres.PostgresStore` (its ``_call``: each operation is one ``_db_*``
function run on the asyncio bridge, one crossing, one transaction)."""

from __future__ import annotations

from typing import Any, Callable, Collection, Optional, Sequence

import asyncpg

from actors.store import notifications as sql
from actors.store.base import Page, check_limit, check_shard, decode_cursor
from actors.store.notifications import DeadLetter, DueDelivery, Notification, Preferences, Settlement, numbered

__all__ = ["PostgresNotifications"]

_NOTIFIER_SEQ = numbered(sql.NOTIFIER_SEQ)
_INSERT_NOTIFICATION = numbered(sql.INSERT_NOTIFICATION)
_INSERT_DELIVERY = numbered(sql.INSERT_DELIVERY)
_DUE = numbered(sql.DUE)
_NEXT_DUE = numbered(sql.NEXT_DUE)
_DELETE_DELIVERY = numbered(sql.DELETE_DELIVERY)
_RETRY_DELIVERY = numbered(sql.RETRY_DELIVERY)
_KILL_DELIVERY = numbered(sql.KILL_DELIVERY)
_PREFERENCES = numbered(sql.PREFERENCES)
_PREFERENCES_MANY = (f"SELECT {sql.PREFERENCE_COLUMNS} FROM notification_preferences "
                     "WHERE account_id = ANY($1::bigint[])")
_UPSERT_PREFERENCES = numbered(sql.UPSERT_PREFERENCES)
_UNREAD = numbered(sql.UNREAD)
_READ_ALL = numbered(sql.READ_ALL)
_EXPIRED = numbered(sql.EXPIRED)
_OUTBOX_COUNTS = numbered(sql.OUTBOX_COUNTS)
_READ_MANY = ("UPDATE notifications SET read_at = $1 WHERE account_id = $2 AND id = ANY($3::text[]) "
              "AND read_at IS NULL")


class PostgresNotifications:
    """:class:`~actors.store.notifications.NotificationStore` for the production store."""

    _call: Callable[..., Any]

    async def notifier_seq(self, shard: int = 0) -> int:
        check_shard(shard)
        rows = await self._call(_db_fetch, _NOTIFIER_SEQ, (shard,))
        return rows[0][0] if rows else 0

    async def record_notifications(self, shard: int, last_seq: int, notifications: Sequence[Notification],
                                   deliveries: Sequence[tuple[str, str, int]], *, now: int) -> int:
        check_shard(shard)
        return await self._call(_db_record, shard, last_seq, [sql.notification_row(n) for n in notifications],
                                [(nid, channel, shard, account, now, now) for nid, channel, account in deliveries])

    async def due_deliveries(self, channel: str, shard: int, *, now: int, limit: int,
                             skip: Collection[tuple[str, str]] = ()) -> list[DueDelivery]:
        rows = await self._call(_db_fetch, _DUE, (channel, shard, now, limit))
        return [sql.due_from_row(tuple(row)) for row in rows if (row[0], channel) not in skip]

    async def next_due_at(self, channel: str, shard: int, *, after: int) -> Optional[int]:
        rows = await self._call(_db_fetch, _NEXT_DUE, (channel, shard, after))
        return rows[0][0] if rows else None

    async def settle_deliveries(self, settlements: Sequence[Settlement], *, now: int) -> None:
        if settlements:
            await self._call(_db_settle, list(settlements), now)

    async def preferences(self, account_id: int) -> Optional[Preferences]:
        rows = await self._call(_db_fetch, _PREFERENCES, (account_id,))
        return sql.preferences_from_row(tuple(rows[0])) if rows else None

    async def preferences_many(self, account_ids: Sequence[int]) -> dict[int, Preferences]:
        if not account_ids:
            return {}
        rows = await self._call(_db_fetch, _PREFERENCES_MANY, (sorted(set(account_ids)),))
        return {row[0]: sql.preferences_from_row(tuple(row)) for row in rows}

    async def put_preferences(self, preferences: Preferences) -> None:
        await self._call(_db_execute, _UPSERT_PREFERENCES, sql.preferences_row(preferences))

    async def notifications(self, account_id: int, *, cursor: Optional[str] = None, limit: int = 50,
                            unread: bool = False) -> tuple[Page[Notification], int]:
        check_limit(limit)
        keys = decode_cursor(cursor, "notifications", 2) if cursor is not None else ()
        query = numbered(sql.page_sql(unread=unread, cursor=cursor is not None))
        rows, count = await self._call(_db_page, query, (account_id, *keys, limit + 1), account_id)
        return sql.notifications_page([tuple(row) for row in rows], limit), count

    async def mark_read(self, account_id: int, ids: Optional[Sequence[str]], *, now: int) -> tuple[int, int]:
        return await self._call(_db_mark_read, account_id, None if ids is None else list(ids), now)

    async def dead_letters(self, account_id: int, *, cursor: Optional[str] = None,
                           limit: int = 50) -> Page[DeadLetter]:
        check_limit(limit)
        keys: tuple = ()
        if cursor is not None:
            failed_at, *numbers = decode_cursor(cursor, "dead_letters", 4)
            keys = (failed_at, sql.id_from_numbers(*numbers))
        rows = await self._call(_db_fetch, numbered(sql.dead_letters_sql(cursor=cursor is not None)),
                                (account_id, *keys, limit + 1))
        return sql.dead_letters_page([tuple(row) for row in rows], limit)

    async def purge_notifications(self, shard: int, *, before: int, limit: int) -> int:
        check_shard(shard)
        return await self._call(_db_purge, shard, before, limit)

    async def outbox_counts(self, shard: int) -> dict[tuple[str, str], int]:
        check_shard(shard)
        rows = await self._call(_db_fetch, _OUTBOX_COUNTS, (shard,))
        return {(row[0], row[1]): int(row[2]) for row in rows}

    async def cut_notifications(self, shard: int, after_seq: int) -> int:
        check_shard(shard)
        return await self._call(_db_cut, shard, after_seq)


async def _db_purge(pool: asyncpg.Pool, shard: int, before: int, limit: int) -> int:
    async with pool.acquire() as connection, connection.transaction():
        ids = [row[0] for row in await connection.fetch(_EXPIRED, shard, before, limit)]
        if ids:
            await connection.execute("DELETE FROM notification_deliveries WHERE notification_id = ANY($1::text[])",
                                     ids)
            await connection.execute("DELETE FROM notifications WHERE id = ANY($1::text[])", ids)
    return len(ids)


async def _db_cut(pool: asyncpg.Pool, shard: int, after_seq: int) -> int:
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(numbered(sql.CUT_DELIVERIES), shard, shard, after_seq)
        status = await connection.execute(numbered(sql.CUT_NOTIFICATIONS), shard, after_seq)
        await connection.execute(numbered(sql.LOWER_NOTIFIER_SEQ), after_seq, shard, after_seq)
    return int(status.rsplit(" ", 1)[-1])


async def _db_fetch(pool: asyncpg.Pool, query: str, args: Sequence[Any]) -> list[asyncpg.Record]:
    async with pool.acquire() as connection:
        return await connection.fetch(query, *args)


async def _db_execute(pool: asyncpg.Pool, query: str, args: Sequence[Any]) -> str:
    async with pool.acquire() as connection:
        return await connection.execute(query, *args)


async def _db_record(pool: asyncpg.Pool, shard: int, last_seq: int, notifications: list[tuple],
                     deliveries: list[tuple]) -> int:
    async with pool.acquire() as connection, connection.transaction():
        # the shard's watermark row, created at its first batch and locked for the transaction
        await connection.execute("INSERT INTO notifier_shards (shard, last_seq) VALUES ($1, 0) "
                                 "ON CONFLICT (shard) DO NOTHING", shard)
        stored = await connection.fetchval(
            "SELECT last_seq FROM notifier_shards WHERE shard = $1 FOR UPDATE", shard)
        if last_seq <= stored:
            return 0
        if notifications:
            await connection.executemany(_INSERT_NOTIFICATION, notifications)
        if deliveries:
            await connection.executemany(_INSERT_DELIVERY, deliveries)
        await connection.execute("UPDATE notifier_shards SET last_seq = $1 WHERE shard = $2", last_seq, shard)
    return len(notifications)


async def _db_settle(pool: asyncpg.Pool, settlements: list[Settlement], now: int) -> None:
    delivered = [(s.notification_id, s.channel) for s in settlements if s.delivered]
    retry = [(s.attempts, s.retry_at, s.error[:500], now, s.notification_id, s.channel)
             for s in settlements if not s.delivered and s.retry_at is not None]
    dead = [(s.attempts, s.error[:500], now, s.notification_id, s.channel)
            for s in settlements if not s.delivered and s.retry_at is None]
    async with pool.acquire() as connection, connection.transaction():
        for statement, rows in ((_DELETE_DELIVERY, delivered), (_RETRY_DELIVERY, retry), (_KILL_DELIVERY, dead)):
            if rows:
                await connection.executemany(statement, rows)


async def _db_page(pool: asyncpg.Pool, query: str, args: Sequence[Any], account_id: int) -> tuple[list, int]:
    async with pool.acquire() as connection, connection.transaction(isolation="repeatable_read", readonly=True):
        rows = await connection.fetch(query, *args)
        count = await connection.fetchval(_UNREAD, account_id)
    return rows, int(count)


async def _db_mark_read(pool: asyncpg.Pool, account_id: int, ids: Optional[list[str]], now: int
                        ) -> tuple[int, int]:
    async with pool.acquire() as connection, connection.transaction():
        if ids is None:
            status = await connection.execute(_READ_ALL, now, account_id)
        else:
            status = await connection.execute(_READ_MANY, now, account_id, ids)
        unread = await connection.fetchval(_UNREAD, account_id)
    return int(status.rsplit(" ", 1)[-1]), int(unread)
