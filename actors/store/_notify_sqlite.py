"""The notification tables on SQLite: :class:`SqliteNotifications`, mixed into
:class:`~actors.store.sqlite.SqliteStore` (its ``_call``/``_transaction``/``_query``: one worker
thread, one connection, one transaction per write)."""

from __future__ import annotations

import functools
import sqlite3
from typing import Any, Callable, Collection, Optional, Sequence

from actors.store import notifications as sql
from actors.store.base import Page, check_limit, check_shard, decode_cursor
from actors.store.notifications import DeadLetter, DueDelivery, Notification, Preferences, Settlement

__all__ = ["SqliteNotifications"]


class SqliteNotifications:
    """:class:`~actors.store.notifications.NotificationStore` for the embedded store."""

    _call: Callable[..., Any]
    _transaction: Callable[..., Any]
    _query: Callable[..., Any]
    _connection: sqlite3.Connection

    async def notifier_seq(self, shard: int = 0) -> int:
        check_shard(shard)
        rows = await self._call(self._query, sql.NOTIFIER_SEQ, (shard,))
        return rows[0][0] if rows else 0

    async def record_notifications(self, shard: int, last_seq: int, notifications: Sequence[Notification],
                                   deliveries: Sequence[tuple[str, str, int]], *, now: int) -> int:
        check_shard(shard)
        return await self._call(self._transaction, functools.partial(
            _record, shard, last_seq, [sql.notification_row(n) for n in notifications],
            [(nid, channel, shard, account, now, now) for nid, channel, account in deliveries]))

    async def due_deliveries(self, channel: str, shard: int, *, now: int, limit: int,
                             skip: Collection[tuple[str, str]] = ()) -> list[DueDelivery]:
        rows = await self._call(self._query, sql.DUE, (channel, shard, now, limit))
        return [sql.due_from_row(row) for row in rows if (row[0], channel) not in skip]

    async def next_due_at(self, channel: str, shard: int, *, after: int) -> Optional[int]:
        rows = await self._call(self._query, sql.NEXT_DUE, (channel, shard, after))
        return rows[0][0] if rows else None

    async def settle_deliveries(self, settlements: Sequence[Settlement], *, now: int) -> None:
        if settlements:
            await self._call(self._transaction, functools.partial(_settle, list(settlements), now))

    async def preferences(self, account_id: int) -> Optional[Preferences]:
        rows = await self._call(self._query, sql.PREFERENCES, (account_id,))
        return sql.preferences_from_row(rows[0]) if rows else None

    async def preferences_many(self, account_ids: Sequence[int]) -> dict[int, Preferences]:
        wanted = sorted(set(account_ids))
        found: dict[int, Preferences] = {}
        for start in range(0, len(wanted), 500):      # SQLite's bound-parameter limit
            chunk = wanted[start:start + 500]
            query = (f"SELECT {sql.PREFERENCE_COLUMNS} FROM notification_preferences "
                     f"WHERE account_id IN ({', '.join('?' * len(chunk))})")
            for row in await self._call(self._query, query, chunk):
                found[row[0]] = sql.preferences_from_row(row)
        return found

    async def put_preferences(self, preferences: Preferences) -> None:
        row = sql.preferences_row(preferences)
        await self._call(self._transaction, lambda connection: connection.execute(sql.UPSERT_PREFERENCES, row))

    async def notifications(self, account_id: int, *, cursor: Optional[str] = None, limit: int = 50,
                            unread: bool = False) -> tuple[Page[Notification], int]:
        check_limit(limit)
        keys = decode_cursor(cursor, "notifications", 2) if cursor is not None else ()
        query = sql.page_sql(unread=unread, cursor=cursor is not None)
        rows, count = await self._call(self._transaction, lambda connection: (
            connection.execute(query, (account_id, *keys, limit + 1)).fetchall(),
            connection.execute(sql.UNREAD, (account_id,)).fetchone()[0]))
        return sql.notifications_page(rows, limit), count

    async def mark_read(self, account_id: int, ids: Optional[Sequence[str]], *, now: int) -> tuple[int, int]:
        return await self._call(self._transaction, functools.partial(_mark_read, account_id, ids, now))

    async def dead_letters(self, account_id: int, *, cursor: Optional[str] = None,
                           limit: int = 50) -> Page[DeadLetter]:
        check_limit(limit)
        keys: tuple = ()
        if cursor is not None:
            failed_at, *numbers = decode_cursor(cursor, "dead_letters", 4)
            keys = (failed_at, sql.id_from_numbers(*numbers))
        rows = await self._call(self._query, sql.dead_letters_sql(cursor=cursor is not None),
                                (account_id, *keys, limit + 1))
        return sql.dead_letters_page(rows, limit)

    async def purge_notifications(self, shard: int, *, before: int, limit: int) -> int:
        check_shard(shard)
        return await self._call(self._transaction, functools.partial(_purge, shard, before, limit))

    async def outbox_counts(self, shard: int) -> dict[tuple[str, str], int]:
        check_shard(shard)
        rows = await self._call(self._query, sql.OUTBOX_COUNTS, (shard,))
        return {(row[0], row[1]): int(row[2]) for row in rows}

    async def cut_notifications(self, shard: int, after_seq: int) -> int:
        check_shard(shard)
        return await self._call(self._transaction, functools.partial(_cut, shard, after_seq))


def _purge(shard: int, before: int, limit: int, connection: sqlite3.Connection) -> int:
    ids = [(row[0],) for row in connection.execute(sql.EXPIRED, (shard, before, limit))]
    if ids:
        connection.executemany("DELETE FROM notification_deliveries WHERE notification_id = ?", ids)
        connection.executemany("DELETE FROM notifications WHERE id = ?", ids)
    return len(ids)


def _cut(shard: int, after_seq: int, connection: sqlite3.Connection) -> int:
    connection.execute(sql.CUT_DELIVERIES, (shard, shard, after_seq))
    removed = connection.execute(sql.CUT_NOTIFICATIONS, (shard, after_seq)).rowcount
    connection.execute(sql.LOWER_NOTIFIER_SEQ, (after_seq, shard, after_seq))
    return removed


def _record(shard: int, last_seq: int, notifications: list[tuple], deliveries: list[tuple],
            connection: sqlite3.Connection) -> int:
    row = connection.execute(sql.NOTIFIER_SEQ, (shard,)).fetchone()
    if row is not None and last_seq <= row[0]:
        return 0
    inserted = 0
    if notifications:
        inserted = connection.executemany(sql.INSERT_NOTIFICATION, notifications).rowcount
    if deliveries:
        connection.executemany(sql.INSERT_DELIVERY, deliveries)
    connection.execute(sql.UPSERT_NOTIFIER_SEQ, (shard, last_seq))
    return inserted


def _settle(settlements: list[Settlement], now: int, connection: sqlite3.Connection) -> None:
    delivered = [(s.notification_id, s.channel) for s in settlements if s.delivered]
    retry = [(s.attempts, s.retry_at, s.error[:500], now, s.notification_id, s.channel)
             for s in settlements if not s.delivered and s.retry_at is not None]
    dead = [(s.attempts, s.error[:500], now, s.notification_id, s.channel)
            for s in settlements if not s.delivered and s.retry_at is None]
    for statement, rows in ((sql.DELETE_DELIVERY, delivered), (sql.RETRY_DELIVERY, retry),
                            (sql.KILL_DELIVERY, dead)):
        if rows:
            connection.executemany(statement, rows)


def _mark_read(account_id: int, ids: Optional[Sequence[str]], now: int,
               connection: sqlite3.Connection) -> tuple[int, int]:
    if ids is None:
        marked = connection.execute(sql.READ_ALL, (now, account_id)).rowcount
    else:
        marked = connection.executemany(sql.READ_ONE, [(now, account_id, nid) for nid in ids]).rowcount
    unread = connection.execute(sql.UNREAD, (account_id,)).fetchone()[0]
    return marked, unread
