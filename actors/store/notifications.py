"""What the store keeps for the notifications worker (issue 13), shared by SQLite and PostgreSQL.

Tables (migration ``0008_notifications``):

* ``notifications`` — one row per notification, id ``"{shard}-{seq}-{index}"``; ``read_at`` is
  set by ``POST /api/v1/notifications/read``.
* ``notification_deliveries`` — the outbox: one row per notification and channel still to go
  out; deleted once delivered, ``status = 'dead'`` after the last failed attempt (the dead-letter
  list). The worker of shard K dispatches only shard K's rows.
* ``notification_preferences`` — per account (no row: the defaults).
* ``notifier_shards`` — the worker's watermark per engine shard.

:meth:`NotificationStore.record_notifications` writes a batch's notifications, their deliveries
and the watermark in **one transaction**, and skips a batch at or below the watermark: a crash
between deriving and writing re-derives the same rows (same ids), a crash after writing derives
nothing twice. Deliveries are settled in batches (:meth:`settle_deliveries`): a crash between
sending and settling sends again — delivery is at-least-once, receivers de-duplicate by id.

The SQL below is written once with ``?`` placeholders; :func:`numbered` renders it for asyncpg.
"""

from __future__ import annotations

import json
import re
from typing import Any, Collection, Optional, Protocol, Sequence

import attrs

from actors.store.base import Page, encode_cursor

__all__ = ["Notification", "Preferences", "DueDelivery", "DeadLetter", "Settlement", "NotificationStore",
           "DELIVERY_CHANNELS", "numbered", "notification_from_row", "preferences_from_row", "preferences_row",
           "notifications_page", "dead_letters_page"]

DELIVERY_CHANNELS = ("ws", "email", "webhook")


@attrs.frozen(kw_only=True)
class Notification:
    """One notification of one account. ``data`` holds only JSON values; ``created_at`` is the
    engine input's ts (ns); ``read_at`` (ns) once the owner marked it read."""
    id: str
    account_id: int
    shard: int
    seq: int
    index: int
    kind: str
    created_at: int
    title: str
    data: dict[str, Any]
    read_at: Optional[int] = None


@attrs.frozen(kw_only=True)
class Preferences:
    """An account's choices (see :mod:`actors.notifications.preferences`)."""
    account_id: int
    events: tuple[str, ...]
    channels: tuple[str, ...]
    webhook_url: Optional[str] = None
    webhook_secret: Optional[str] = None
    updated_at: int = 0          # ns; 0 = never set (the defaults)

    def wants(self, kind: str) -> bool:
        return kind in self.events


@attrs.frozen(kw_only=True)
class DueDelivery:
    """An outbox row due now, with what sending it needs: the account's webhook (read at send
    time, so a changed URL or secret applies to retries) or its e-mail address."""
    notification: Notification
    channel: str
    attempts: int
    webhook_url: Optional[str]
    webhook_secret: Optional[str]
    email: Optional[str]
    channels: tuple[str, ...]    # the account's channels now (a channel turned off is not sent)

    @property
    def key(self) -> tuple[str, str]:
        return (self.notification.id, self.channel)


@attrs.frozen(kw_only=True)
class DeadLetter:
    notification_id: str
    channel: str
    kind: str
    attempts: int
    last_error: str
    created_at: int
    failed_at: int


@attrs.frozen(kw_only=True)
class Settlement:
    """The outcome of one attempt: ``delivered`` (the row goes), else ``retry_at`` (ns) or dead
    (``retry_at`` None) with ``error``."""
    notification_id: str
    channel: str
    delivered: bool
    attempts: int
    retry_at: Optional[int] = None
    error: str = ""


class NotificationStore(Protocol):
    """The notification half of the store (both :class:`~actors.store.sqlite.SqliteStore` and
    :class:`~actors.store.postgres.PostgresStore` implement it)."""

    async def notifier_seq(self, shard: int = 0) -> int:
        """Every input of ``shard`` up to this seq has its notifications recorded (0: none)."""
        ...

    async def record_notifications(self, shard: int, last_seq: int, notifications: Sequence[Notification],
                                   deliveries: Sequence[tuple[str, str, int]], *, now: int) -> int:
        """In one transaction: unless ``last_seq`` is at or below the watermark, insert the
        notifications and the ``(notification_id, channel, account_id)`` deliveries (due now),
        and move the watermark to ``last_seq``. Returns the notifications inserted."""
        ...

    async def due_deliveries(self, channel: str, shard: int, *, now: int, limit: int,
                             skip: Collection[tuple[str, str]] = ()) -> list[DueDelivery]:
        """Pending deliveries of ``channel`` due at ``now``, oldest due first, but those whose
        ``(notification_id, channel)`` is in ``skip`` (the caller's deliveries in flight)."""
        ...

    async def next_due_at(self, channel: str, shard: int, *, after: int) -> Optional[int]:
        """When the earliest pending delivery of ``channel`` not due at ``after`` becomes due
        (None: none is waiting)."""
        ...

    async def settle_deliveries(self, settlements: Sequence[Settlement], *, now: int) -> None:
        """Record attempts in one transaction (see :class:`Settlement`)."""
        ...

    async def preferences(self, account_id: int) -> Optional[Preferences]:
        ...

    async def preferences_many(self, account_ids: Sequence[int]) -> dict[int, Preferences]:
        ...

    async def put_preferences(self, preferences: Preferences) -> None:
        ...

    async def notifications(self, account_id: int, *, cursor: Optional[str] = None, limit: int = 50,
                            unread: bool = False) -> tuple[Page[Notification], int]:
        """Newest first (seq, index descending) and the account's unread count."""
        ...

    async def mark_read(self, account_id: int, ids: Optional[Sequence[str]], *, now: int) -> tuple[int, int]:
        """Mark ``ids`` (None: all) of the account read; ``(marked now, unread left)``."""
        ...

    async def dead_letters(self, account_id: int, *, cursor: Optional[str] = None,
                           limit: int = 50) -> Page[DeadLetter]:
        """The account's deliveries that gave up, newest first."""
        ...

    async def purge_notifications(self, shard: int, *, before: int, limit: int) -> int:
        """Retention: in one transaction, delete up to ``limit`` of the shard's notifications
        created before ``before`` (ns) that have no pending delivery (all delivered, or
        dead-lettered), with their dead-letter rows. Returns how many went (fewer than ``limit``:
        nothing older is left to purge)."""
        ...

    async def outbox_counts(self, shard: int) -> dict[tuple[str, str], int]:
        """The shard's outbox rows by ``(channel, status)``: ``pending`` and ``dead`` (metrics)."""
        ...

    async def cut_notifications(self, shard: int, after_seq: int) -> int:
        """``run --repair`` cut the shard's journal after ``after_seq``: remove the notifications
        of later inputs (and their deliveries) and lower the watermark to ``after_seq``, so the
        inputs that take those seqs now are derived afresh. Returns the notifications removed."""
        ...


# ------------------------------------------------------------------------------------ SQL

NOTIFICATION_COLUMNS = ("id", "account_id", "shard", "seq", "idx", "kind", "created_at", "title", "data",
                        "read_at")
_COLUMNS = ", ".join(NOTIFICATION_COLUMNS)
_N_COLUMNS = ", ".join(f"n.{name}" for name in NOTIFICATION_COLUMNS)

INSERT_NOTIFICATION = (f"INSERT INTO notifications ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                       "ON CONFLICT (id) DO NOTHING")
INSERT_DELIVERY = ("INSERT INTO notification_deliveries (notification_id, channel, shard, account_id, due_at, "
                   "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (notification_id, channel) DO NOTHING")
NOTIFIER_SEQ = "SELECT last_seq FROM notifier_shards WHERE shard = ?"
UPSERT_NOTIFIER_SEQ = ("INSERT INTO notifier_shards (shard, last_seq) VALUES (?, ?) "
                       "ON CONFLICT (shard) DO UPDATE SET last_seq = excluded.last_seq")
DUE = (f"SELECT {_N_COLUMNS}, d.channel, d.attempts, p.webhook_url, p.webhook_secret, u.email, p.channels "
       "FROM notification_deliveries AS d JOIN notifications AS n ON n.id = d.notification_id "
       "LEFT JOIN notification_preferences AS p ON p.account_id = d.account_id "
       "LEFT JOIN users AS u ON u.user_id = d.account_id "
       "WHERE d.status = 'pending' AND d.channel = ? AND d.shard = ? AND d.due_at <= ? "
       "ORDER BY d.due_at, d.notification_id LIMIT ?")
NEXT_DUE = ("SELECT min(due_at) FROM notification_deliveries WHERE status = 'pending' AND channel = ? "
            "AND shard = ? AND due_at > ?")
DELETE_DELIVERY = "DELETE FROM notification_deliveries WHERE notification_id = ? AND channel = ?"
RETRY_DELIVERY = ("UPDATE notification_deliveries SET attempts = ?, due_at = ?, last_error = ?, updated_at = ? "
                  "WHERE notification_id = ? AND channel = ?")
KILL_DELIVERY = ("UPDATE notification_deliveries SET status = 'dead', attempts = ?, last_error = ?, "
                 "updated_at = ? WHERE notification_id = ? AND channel = ?")
PREFERENCE_COLUMNS = "account_id, events, channels, webhook_url, webhook_secret, updated_at"
PREFERENCES = f"SELECT {PREFERENCE_COLUMNS} FROM notification_preferences WHERE account_id = ?"
UPSERT_PREFERENCES = (f"INSERT INTO notification_preferences ({PREFERENCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
                      "ON CONFLICT (account_id) DO UPDATE SET events = excluded.events, "
                      "channels = excluded.channels, webhook_url = excluded.webhook_url, "
                      "webhook_secret = excluded.webhook_secret, updated_at = excluded.updated_at")
UNREAD = "SELECT count(*) FROM notifications WHERE account_id = ? AND read_at IS NULL"
READ_ALL = "UPDATE notifications SET read_at = ? WHERE account_id = ? AND read_at IS NULL"
READ_ONE = "UPDATE notifications SET read_at = ? WHERE account_id = ? AND id = ? AND read_at IS NULL"
CUT_DELIVERIES = ("DELETE FROM notification_deliveries WHERE shard = ? AND notification_id IN "
                  "(SELECT id FROM notifications WHERE shard = ? AND seq > ?)")
CUT_NOTIFICATIONS = "DELETE FROM notifications WHERE shard = ? AND seq > ?"
LOWER_NOTIFIER_SEQ = "UPDATE notifier_shards SET last_seq = ? WHERE shard = ? AND last_seq > ?"
#: retention (:meth:`NotificationStore.purge_notifications`): the oldest settled notifications
#: (index ``notifications_by_age``, migration 0017); a pending delivery keeps its notification
EXPIRED = ("SELECT n.id FROM notifications AS n WHERE n.shard = ? AND n.created_at < ? AND NOT EXISTS "
           "(SELECT 1 FROM notification_deliveries AS d WHERE d.notification_id = n.id AND d.status = 'pending') "
           "ORDER BY n.created_at LIMIT ?")
OUTBOX_COUNTS = ("SELECT channel, status, count(*) FROM notification_deliveries WHERE shard = ? "
                 "GROUP BY channel, status")
DEAD_COLUMNS = "d.notification_id, d.channel, n.kind, d.attempts, d.last_error, n.created_at, d.updated_at"


def page_sql(*, unread: bool, cursor: bool) -> str:
    """The notifications page query: ``account_id, [cursor seq, cursor idx,] limit``."""
    conditions = ["account_id = ?"]
    if unread:
        conditions.append("read_at IS NULL")
    if cursor:
        conditions.append("(seq, idx) < (?, ?)")
    return (f"SELECT {_COLUMNS} FROM notifications WHERE {' AND '.join(conditions)} "
            "ORDER BY seq DESC, idx DESC LIMIT ?")


def dead_letters_sql(*, cursor: bool) -> str:
    """``account_id, [cursor updated_at, cursor notification id,] limit``; newest failure first."""
    where = "d.account_id = ? AND d.status = 'dead'"
    if cursor:
        where += " AND (d.updated_at, d.notification_id) < (?, ?)"
    return (f"SELECT {DEAD_COLUMNS} FROM notification_deliveries AS d JOIN notifications AS n "
            f"ON n.id = d.notification_id WHERE {where} ORDER BY d.updated_at DESC, d.notification_id DESC "
            "LIMIT ?")


def numbered(sql: str) -> str:
    """``?`` placeholders as ``$1, $2, …`` (asyncpg)."""
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _match: f"${next(counter)}", sql)


# ------------------------------------------------------------------------------------ rows

def notification_row(notification: Notification) -> tuple:
    return (notification.id, notification.account_id, notification.shard, notification.seq, notification.index,
            notification.kind, notification.created_at, notification.title,
            json.dumps(notification.data, separators=(",", ":"), ensure_ascii=False), notification.read_at)


def notification_from_row(row: Sequence[Any]) -> Notification:
    return Notification(id=row[0], account_id=row[1], shard=row[2], seq=row[3], index=row[4], kind=row[5],
                        created_at=row[6], title=row[7], data=json.loads(row[8]), read_at=row[9])


def _names(text: Optional[str]) -> tuple[str, ...]:
    return tuple(name for name in (text or "").split(",") if name)


def preferences_row(preferences: Preferences) -> tuple:
    return (preferences.account_id, ",".join(preferences.events), ",".join(preferences.channels),
            preferences.webhook_url, preferences.webhook_secret, preferences.updated_at)


def preferences_from_row(row: Sequence[Any]) -> Preferences:
    return Preferences(account_id=row[0], events=_names(row[1]), channels=_names(row[2]), webhook_url=row[3],
                       webhook_secret=row[4], updated_at=row[5])


def due_from_row(row: Sequence[Any]) -> DueDelivery:
    width = len(NOTIFICATION_COLUMNS)
    channel, attempts, url, secret, email, channels = row[width:width + 6]
    return DueDelivery(notification=notification_from_row(row[:width]), channel=channel, attempts=attempts,
                       webhook_url=url, webhook_secret=secret, email=email,
                       channels=_names(channels) if channels is not None else ("ws",))


def notifications_page(rows: Sequence[Sequence[Any]], limit: int) -> Page[Notification]:
    items = [notification_from_row(row) for row in rows[:limit]]
    more = len(rows) > limit
    return Page(items=items, next_cursor=encode_cursor("notifications", items[-1].seq, items[-1].index)
                if more else None)


def dead_letters_page(rows: Sequence[Sequence[Any]], limit: int) -> Page[DeadLetter]:
    items = [DeadLetter(notification_id=row[0], channel=row[1], kind=row[2], attempts=row[3], last_error=row[4],
                        created_at=row[5], failed_at=row[6]) for row in rows[:limit]]
    more = len(rows) > limit
    # the cursor keeps the failure time and the notification id's three numbers
    return Page(items=items, next_cursor=encode_cursor("dead_letters", items[-1].failed_at,
                                                       *_id_numbers(items[-1].notification_id)) if more else None)


def _id_numbers(notification_id: str) -> tuple[int, int, int]:
    shard, seq, index = (int(part) for part in notification_id.split("-"))
    return shard, seq, index


def id_from_numbers(shard: int, seq: int, index: int) -> str:
    return f"{shard}-{seq}-{index}"
