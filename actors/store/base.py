"""The store: what the platform keeps in a database, behind one async protocol.

Two implementations share this contract and one test suite (``tests/test_store.py``):
:class:`actors.store.sqlite.SqliteStore` (embedded mode: one SQLite file in the data dir) and
:class:`actors.store.postgres.PostgresStore` (asyncpg; see docs/storage.md). Everything crossing
the protocol is a plain Python value: ``int`` for money (cents), prices (ticks), quantities
(units), seqs and times (ns since the epoch); ``str`` for symbols, sides, kinds, statuses and
reasons (the core's enum values); :class:`~exness_actors.candles.Candle` for candles. The edge
converts to decimal strings and milliseconds.

What is stored (DESIGN.md §4 persister and candles, §5 history resources):

* ``candles_1m`` — written by the candles actor (:meth:`Store.write_candles`, an upsert: a candle
  may be rewritten); larger intervals are folded from 1m when read.
* trade history, order history, the ledger and the positions ever opened — written by the
  persister from the engine's :class:`~actors.engine.messages.EventBatch` through
  :meth:`Store.apply_batch`. The event → row translation is :func:`rows_from_items` here, shared by
  every implementation, so they cannot disagree about what an event means.
* ``persister_shards.last_seq`` — per engine shard (0 unless split mode has ``[bus] shards`` >
  1), the last engine seq whose rows are all stored. ``apply_batch`` writes a batch's rows and
  this seq in **one transaction** and skips inputs at or below it, so re-sending batches (a
  restart, a rebuild from the journal) never duplicates a row.
* ``users``, ``accounts`` and ``refresh_tokens`` — written and read by the gateway (migrations
  0002 and 0016). A user holds one or more trading accounts (:class:`AccountRecord`: type, demo or
  real); the first is opened at sign-up and is the one a sign-in picks by default
  (``users.account_id``). Account ids come from the ``accounts`` table's own sequence (the first
  account of a user who signed up before 0016 kept the user's id). Refresh tokens are kept as
  SHA-256 digests only, each family bound to one account; rotation and family revocation are
  single transactions (:meth:`Store.rotate_refresh_token`), so two concurrent uses of one token
  can never both succeed.
* ``operators`` and ``operator_refresh_tokens`` — the broker's staff (migration 0013), created by
  ``exness-actors operator create``, signed in at ``/api/v1/admin/signin``; their refresh tokens
  work exactly like the traders'. ``audit_log`` — one row per ``OperatorAction`` event, written by
  the persister in the same transaction as the rest of the batch, read by ``GET /api/v1/admin/audit``.

Pages: list queries return a :class:`Page` — newest first, ``limit`` items at most, and an opaque
``next_cursor`` (None on the last page) that encodes the last returned key. Orderings are total
(ties broken by id), so walking the cursors yields every row exactly once even while new rows
arrive (new rows sort before the first page and are not seen by a walk already under way).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Generic, Iterable, Optional, Protocol, Sequence, TypeVar

import attrs

from actors.engine.messages import EventBatch
from exness_actors.candles import Candle, bucket_start, interval_ns
from exness_actors.events import (
    BalanceChanged,
    OperatorAction,
    OrderAccepted,
    OrderCancelled,
    OrderModified,
    PositionClosed,
    PositionFees,
    PositionOpened,
)
from exness_actors.errors import InvalidValue
from exness_actors.instruments import MAX_SHARD, SHARD_ID_SPAN
from exness_actors.money import parse_integer_text
from exness_actors.reasons import CancelReason, OrderStatus

__all__ = [
    "Store", "Page", "LedgerEntry", "ClosedPosition", "OrderRecord", "BatchRows",
    "InvalidCursor", "StoreClosed", "rows_from_items", "encode_cursor", "decode_cursor",
    "check_limit", "check_shard", "open_store", "MAX_PAGE_LIMIT", "DEFAULT_PAGE_LIMIT", "ledger_page",
    "closed_positions_page", "orders_page", "candle_bound", "MAX_TIME_NS",
    "HistoryCut", "HISTORY_CUT_TABLES", "history_cut_sql", "history_cut_args",
    "UserRecord", "DuplicateEmail", "RefreshRotation", "ROTATION_OUTCOMES", "AccountRecord",
    "TooManyAccounts", "OperatorRecord", "AuditEntry", "AccountOwner", "audit_page", "AUDIT_COLUMNS",
    "OPERATOR_ROLES", "MAX_OWNER_MATCHES",
]

DEFAULT_PAGE_LIMIT = 50
MAX_PAGE_LIMIT = 1000
#: The latest time (ns) a store column holds.
MAX_TIME_NS = 2**63 - 1
#: The largest value of each key a cursor carries, by query: what the store columns it is
#: compared with can hold (BIGINT; the ledger's ``idx`` is an INTEGER in PostgreSQL).
_CURSOR_KEY_LIMITS = {"ledger": (2**63 - 1, 2**31 - 1), "positions": (2**63 - 1, 2**63 - 1),
                      "orders": (2**63 - 1,), "candles": (MAX_TIME_NS,),
                      "audit": (MAX_TIME_NS, 2**31 - 1, 2**63 - 1, 2**31 - 1), "accounts": (2**63 - 1,),
                      "notifications": (2**63 - 1, 2**31 - 1),
                      "dead_letters": (MAX_TIME_NS, 2**31 - 1, 2**63 - 1, 2**31 - 1)}
#: The operators' roles, least to most allowed (``actors.operators`` says what each may do).
OPERATOR_ROLES = ("viewer", "risk", "admin")
#: The most accounts :meth:`Store.account_owners_matching` returns at once.
MAX_OWNER_MATCHES = 1000

T = TypeVar("T")


class InvalidCursor(ValueError):
    """A ``cursor`` that this store did not hand out for this query (the edge answers 400)."""


class StoreClosed(RuntimeError):
    """The store was used after :meth:`Store.close`."""


class DuplicateEmail(ValueError):
    """:meth:`Store.create_user` with an e-mail address that already has a user (HTTP 409)."""


class TooManyAccounts(ValueError):
    """:meth:`Store.open_account` for a user who already holds ``limit`` accounts (HTTP 409)."""


# ---------------------------------------------------------------------------------- row types

@attrs.define(slots=True, kw_only=True, eq=True, repr=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: Optional[str]


@attrs.define(slots=True, kw_only=True, eq=True, repr=True)
class LedgerEntry:
    """One ``BalanceChanged``: ``index`` is the event's position among its input's events."""
    account_id: int
    seq: int
    index: int
    kind: str
    free_delta: int
    locked_delta: int
    free: int
    locked: int
    ref: str
    ts: int


@attrs.define(slots=True, kw_only=True, eq=True, repr=True)
class ClosedPosition:
    """One ``PositionClosed`` (a partial close is its own row, keyed by ``(position_id, seq)``).

    ``leverage`` and ``opened_at`` come from the position's ``PositionOpened``; they are None when
    that event is older than the persisted history (a rebuild from a journal tail).
    """
    position_id: int
    seq: int
    account_id: int
    symbol: str
    side: str
    reason: str
    qty: int
    open_price: int
    close_price: int
    margin: int
    pnl: int
    credit: int
    commission: int
    """commission of the closed part, at its open and at this close (cross accounts; else 0)"""
    swap: int
    """swaps charged to the closed part (negative: credited; cross accounts; else 0)"""
    remaining_qty: int
    leverage: Optional[int]
    opened_at: Optional[int]
    closed_at: int


@attrs.define(slots=True, kw_only=True, eq=True, repr=True)
class OrderRecord:
    """An order as its events left it. ``status``: pending, filled, cancelled or expired.

    ``price`` is the entry price of a pending order (the fill price of a market order);
    ``fill_price`` and ``position_id`` are set once it filled; ``cancel_reason`` once it was
    cancelled or expired. ``seq`` is the seq of the last event that changed the order.
    """
    order_id: int
    account_id: int
    symbol: str
    side: str
    type: str
    status: str
    price: Optional[int]
    margin: int
    leverage: int
    qty: int
    take_profit: Optional[int]
    stop_loss: Optional[int]
    trailing_stop: Optional[int]
    expires_at: Optional[int]
    client_order_id: str
    position_id: Optional[int]
    fill_price: Optional[int]
    cancel_reason: Optional[str]
    created_at: int
    updated_at: int
    created_seq: int
    seq: int


@attrs.define(slots=True, kw_only=True, eq=True, repr=True)
class UserRecord:
    """A trader. ``email`` is normalised (trimmed, lower-case); ``password_hash`` an argon2id PHC
    string; ``account_id`` the account a sign-in picks when it names none (the first one opened)
    and ``account_ready`` whether the engine has confirmed that account."""
    user_id: int
    email: str
    password_hash: str
    account_id: int
    account_ready: bool
    created_at: int


@attrs.define(slots=True, kw_only=True, eq=True, repr=True)
class AccountRecord:
    """One trading account of a user. ``account_type`` names a configured account type (the
    engine's ``OpenAccount``); ``demo`` accounts get the demo deposit and deposit freely, real ones
    open empty and are funded by an operator; ``ready`` is true once the engine confirmed it.
    Nothing but ``ready`` ever changes."""
    account_id: int
    user_id: int
    account_type: str
    demo: bool
    ready: bool
    created_at: int


#: Column order of :class:`AccountRecord` in the stores' SELECTs.
ACCOUNT_COLUMNS = tuple(attrs.fields_dict(AccountRecord))


@attrs.define(slots=True, kw_only=True, eq=True, repr=True)
class OperatorRecord:
    """One of the broker's staff. ``role``: one of :data:`OPERATOR_ROLES`; a ``disabled``
    operator cannot sign in and their tokens stop working."""
    operator_id: int
    email: str
    password_hash: str
    role: str
    disabled: bool
    created_at: int


@attrs.define(slots=True, kw_only=True, eq=True, repr=True)
class AuditEntry:
    """One ``OperatorAction`` (``index``: its position among its input's events)."""
    shard: int
    seq: int
    index: int
    operator_id: int
    action: str
    account_id: Optional[int]
    target: str
    reason: str
    detail: str
    ts: int


@attrs.define(slots=True, kw_only=True, eq=True, repr=True)
class AccountOwner:
    """Who holds a trading account, and whether it is a demo one (the back office's account search)."""
    account_id: int
    user_id: int
    email: str
    demo: bool


#: What :meth:`Store.rotate_refresh_token` can answer.
ROTATION_OUTCOMES = ("rotated", "unknown", "expired", "revoked", "reused")


@attrs.define(slots=True, kw_only=True, eq=True, repr=True)
class RefreshRotation:
    """The outcome of presenting a refresh token.

    ``outcome``: ``rotated`` (the token is now spent and its child stored), ``unknown`` (no such
    token), ``expired``, ``revoked`` (its family was revoked earlier) or ``reused`` (it had been
    spent already: its whole family is now revoked). ``user_id``/``account_id``/``family_id`` are
    set whenever the token was known.
    """
    outcome: str
    user_id: Optional[int] = None
    account_id: Optional[int] = None
    family_id: Optional[str] = None


#: Column order of the tuples in :class:`BatchRows` (and of the SELECTs building the row types).
ORDER_COLUMNS = tuple(attrs.fields_dict(OrderRecord))
LEDGER_COLUMNS = ("account_id", "seq", "idx", "kind", "free_delta", "locked_delta", "free",
                  "locked", "ref", "ts")
AUDIT_COLUMNS = ("shard", "seq", "idx", "operator_id", "action", "account_id", "target", "reason",
                 "detail", "ts")
CLOSED_COLUMNS = tuple(name for name in attrs.fields_dict(ClosedPosition)
                       if name not in ("leverage", "opened_at"))
_CLOSED_COMMISSION = CLOSED_COLUMNS.index("commission")
POSITION_COLUMNS = ("position_id", "account_id", "order_id", "symbol", "side", "qty", "open_price",
                    "margin", "leverage", "liquidation_price", "take_profit", "stop_loss",
                    "trailing_stop", "opened_at", "seq")


# ---------------------------------------------------------------------- event → row translation

@attrs.define(slots=True)
class BatchRows:
    """The rows of some engine inputs, per statement, each list in event order.

    Applying them in the field order below reproduces the events' effect: an order's insert comes
    before its modifications, which come before its fill or cancellation (an order is modified
    only while pending, and filled or cancelled once); a position's open comes before its closes.
    An order is marked filled from its ``PositionOpened`` (market and triggered orders alike).
    """
    orders_accepted: list[tuple] = attrs.Factory(list)     # ORDER_COLUMNS
    positions_opened: list[tuple] = attrs.Factory(list)    # POSITION_COLUMNS
    orders_modified: list[tuple] = attrs.Factory(list)     # price, qty, take_profit, stop_loss, expires_at, updated_at, seq, order_id
    orders_filled: list[tuple] = attrs.Factory(list)       # fill_price, position_id, updated_at, seq, order_id
    orders_finished: list[tuple] = attrs.Factory(list)     # status, cancel_reason, updated_at, seq, order_id
    positions_closed: list[tuple] = attrs.Factory(list)    # CLOSED_COLUMNS
    ledger: list[tuple] = attrs.Factory(list)              # LEDGER_COLUMNS
    audit: list[tuple] = attrs.Factory(list)               # AUDIT_COLUMNS but the shard (the store adds it)

    def count(self) -> int:
        return (len(self.orders_accepted) + len(self.positions_opened) + len(self.orders_modified)
                + len(self.orders_filled) + len(self.orders_finished) + len(self.positions_closed)
                + len(self.ledger) + len(self.audit))


_EXPIRED = CancelReason.EXPIRED.value
_STATUS_EXPIRED = OrderStatus.EXPIRED.value
_STATUS_CANCELLED = OrderStatus.CANCELLED.value
_STATUS_FILLED = OrderStatus.FILLED.value


def rows_from_items(items: Iterable[tuple[int, int, list]]) -> BatchRows:
    """Translate ``(seq, ts, events)`` items into rows. Events that are not history (quotes,
    rejections, duplicates, halts, position updates) produce none; an ``OperatorAction`` is an
    audit row."""
    rows = BatchRows()
    orders_accepted = rows.orders_accepted
    ledger = rows.ledger
    closed = rows.positions_closed
    for seq, ts, events in items:
        for index, event in enumerate(events):
            kind = type(event)
            if kind is BalanceChanged:
                ledger.append((event.account_id, seq, index, event.kind, event.free_delta,
                               event.locked_delta, event.free, event.locked, event.ref, event.ts))
            elif kind is OrderAccepted:
                filled = event.status == _STATUS_FILLED
                orders_accepted.append((
                    event.order_id, event.account_id, event.symbol, event.side, event.type,
                    event.status, event.price, event.margin, event.leverage, event.qty,
                    event.take_profit, event.stop_loss, event.trailing_stop, event.expires_at,
                    event.client_order_id, None, event.price if filled else None, None,
                    event.ts, event.ts, seq, seq))
            elif kind is PositionOpened:
                rows.positions_opened.append((
                    event.position_id, event.account_id, event.order_id, event.symbol, event.side,
                    event.qty, event.open_price, event.margin, event.leverage,
                    event.liquidation_price, event.take_profit, event.stop_loss,
                    event.trailing_stop, event.ts, seq))
                # The fill of market and triggered orders alike (OrderTriggered carries the same
                # price and position id, so it needs no row of its own).
                rows.orders_filled.append((event.open_price, event.position_id, event.ts, seq,
                                           event.order_id))
            elif kind is PositionClosed:
                closed.append((
                    event.position_id, seq, event.account_id, event.symbol, event.side,
                    event.reason, event.qty, event.open_price, event.price, event.margin,
                    event.pnl, event.credit, 0, 0, event.remaining_qty, event.ts))
            elif kind is PositionFees:
                # follows its PositionClosed in the same input: fill that row's fees
                for back in range(len(closed) - 1, -1, -1):
                    row = closed[back]
                    if row[1] != seq:
                        break
                    if row[0] == event.position_id:
                        closed[back] = (*row[:_CLOSED_COMMISSION], event.commission, event.swap,
                                        *row[_CLOSED_COMMISSION + 2:])
                        break
            elif kind is OrderCancelled:
                status = _STATUS_EXPIRED if event.reason == _EXPIRED else _STATUS_CANCELLED
                rows.orders_finished.append((status, event.reason, event.ts, seq, event.order_id))
            elif kind is OrderModified:
                rows.orders_modified.append((event.price, event.qty, event.take_profit,
                                             event.stop_loss, event.expires_at, ts, seq,
                                             event.order_id))
            elif kind is OperatorAction:
                rows.audit.append((seq, index, event.operator_id, event.action, event.account_id,
                                   event.target, event.reason, event.detail, event.ts))
    return rows


# ------------------------------------------------------------------------------------- cursors

def encode_cursor(query: str, *keys: int) -> str:
    """An opaque cursor for ``query`` (``ledger``, ``positions``, ``orders``) after ``keys``."""
    text = ":".join([query, *(str(int(key)) for key in keys)])
    return base64.urlsafe_b64encode(text.encode("ascii")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, query: str, count: int) -> tuple[int, ...]:
    """The keys inside a cursor from :func:`encode_cursor` for the same query; else InvalidCursor."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
        name, *keys = text.split(":")
        limits = _CURSOR_KEY_LIMITS[query]
        if name != query or len(keys) != count or len(limits) != count:
            raise ValueError(text)
        return tuple(parse_integer_text(key, 0, limit, field="cursor") for key, limit in zip(keys, limits))
    except (ValueError, TypeError, UnicodeError, binascii.Error, AttributeError, InvalidValue):
        raise InvalidCursor(f"cursor {cursor!r} is not a {query} cursor from this API; "
                            "start again without a cursor") from None


def candle_bound(time: int, interval: str) -> int:
    """The first 1m open_time of the first ``interval`` bucket opening at or after ``time``
    (ns), capped at the largest 64-bit integer (every stored open_time is below it)."""
    return min(bucket_start(time - 1, interval) + interval_ns(interval), MAX_TIME_NS)


# ------------------------------------------------------------------------- repair (history cut)

@attrs.frozen(kw_only=True)
class HistoryCut:
    """What :meth:`Store.cut_history` removed, and what it found before removing it."""
    rebuild_after_seq: int
    """The shard's watermark now: the persister re-applies every event after it, which rebuilds
    the orders created before the cut but changed after it (their rows were removed)."""
    max_order_id: int
    """The largest order id of the shard the history held before the cut (0: none)."""
    max_position_id: int
    accounts: list[int]
    """Accounts that lost rows, ascending."""
    removed: dict[str, int]
    """Rows removed per table."""


#: the shard's rows past the cut, per table (``{seq}`` = the last kept seq)
HISTORY_CUT_TABLES = {
    "orders": "FROM orders WHERE order_id > {low} AND order_id <= {high} AND seq > {seq}",
    "positions": "FROM positions WHERE position_id > {low} AND position_id <= {high} AND seq > {seq}",
    "closed_positions": ("FROM closed_positions WHERE position_id > {low} AND position_id <= {high} "
                         "AND seq > {seq}"),
    "ledger": "FROM ledger WHERE seq > {seq} AND account_id % {shards} = {shard}",
    "audit_log": "FROM audit_log WHERE shard = {shard} AND seq > {seq}",
}
HISTORY_CUT_QUERIES = {
    "max_order_id": "SELECT max(order_id) FROM orders WHERE order_id > {low} AND order_id <= {high}",
    "max_position_id": "SELECT max(position_id) FROM positions WHERE position_id > {low} AND position_id <= {high}",
    "rebuild_from": ("SELECT min(created_seq) FROM orders WHERE order_id > {low} AND order_id <= {high} "
                     "AND seq > {seq} AND created_seq <= {seq}"),
}


def history_cut_sql(template: str, placeholder: str) -> tuple[str, list[str]]:
    """Render a ``{name}`` template with numbered placeholders (``?`` for SQLite, ``$`` for
    PostgreSQL); return the SQL and the names of its arguments in order."""
    names: list[str] = []

    def number(match: re.Match) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"{placeholder}{names.index(name) + 1}"

    return re.sub(r"\{(\w+)\}", number, template), names


def history_cut_args(shard: int, after_seq: int, shards: int) -> dict[str, int]:
    """The values of a cut's template names: the shard's id range and account residue class."""
    check_shard(shard)
    if type(after_seq) is not int or after_seq < 0:
        raise ValueError(f"after_seq must be a non-negative integer, not {after_seq!r}")
    if type(shards) is not int or not shard < shards <= MAX_SHARD + 1:
        raise ValueError(f"shards must be an integer above shard {shard}, not {shards!r}")
    low = shard * SHARD_ID_SPAN
    return {"seq": after_seq, "low": low, "high": low + SHARD_ID_SPAN, "shards": shards, "shard": shard}


def check_shard(shard: int) -> int:
    if type(shard) is not int or not 0 <= shard <= MAX_SHARD:
        raise ValueError(f"shard must be an integer from 0 to {MAX_SHARD}, not {shard!r}")
    return shard


def check_limit(limit: int) -> int:
    if type(limit) is not int or not 1 <= limit <= MAX_PAGE_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_PAGE_LIMIT}, not {limit!r}")
    return limit


# ------------------------------------------------------------------------------------ pages
# Every store fetches ``limit + 1`` rows of a list query, newest first; these turn them into the
# page and its cursor, the same way for every implementation.

def _page(items: list, more: bool, query: str, key: Any) -> Page:
    return Page(items=items, next_cursor=encode_cursor(query, *key(items[-1])) if more else None)


def ledger_page(rows: Sequence[Sequence[Any]], limit: int) -> Page[LedgerEntry]:
    """Rows in ``LEDGER_COLUMNS`` order."""
    items = [LedgerEntry(account_id=r[0], seq=r[1], index=r[2], kind=r[3], free_delta=r[4],
                         locked_delta=r[5], free=r[6], locked=r[7], ref=r[8], ts=r[9])
             for r in rows[:limit]]
    return _page(items, len(rows) > limit, "ledger", lambda e: (e.seq, e.index))


def closed_positions_page(items: list[ClosedPosition], more: bool) -> Page[ClosedPosition]:
    return _page(items, more, "positions", lambda p: (p.seq, p.position_id))


def orders_page(rows: Sequence[Sequence[Any]], limit: int) -> Page[OrderRecord]:
    """Rows in ``ORDER_COLUMNS`` order."""
    items = [OrderRecord(**dict(zip(ORDER_COLUMNS, row))) for row in rows[:limit]]
    return _page(items, len(rows) > limit, "orders", lambda o: (o.order_id,))


def audit_page(rows: Sequence[Sequence[Any]], limit: int) -> Page[AuditEntry]:
    """Rows in ``AUDIT_COLUMNS`` order, newest first by (ts, shard, seq, idx)."""
    items = [AuditEntry(shard=r[0], seq=r[1], index=r[2], operator_id=r[3], action=r[4], account_id=r[5],
                        target=r[6], reason=r[7], detail=r[8], ts=r[9]) for r in rows[:limit]]
    return _page(items, len(rows) > limit, "audit", lambda e: (e.ts, e.shard, e.seq, e.index))


# ------------------------------------------------------------------------------------ protocol

class Store(Protocol):
    """What the actors and the gateway need from a database. All methods may block on I/O, so
    all are async; implementations keep the event loop free (a worker thread, or an async
    driver) and batch their writes."""

    #: the migrations the last open (or ``migrate``) applied, by version
    migrations_applied: list[str]

    # -- lifecycle
    async def migrate(self) -> list[str]:
        """Apply the schema migrations not applied yet; return their versions ([] = no-op)."""
        ...

    async def close(self) -> None:
        ...

    # -- candles (candles actor)
    async def write_candles(self, candles: Sequence[Candle]) -> int:
        """Upsert 1m candles (one transaction); return how many were written."""
        ...

    async def read_candles(self, symbol: str, interval: str, start: Optional[int] = None,
                           end: Optional[int] = None, limit: Optional[int] = None) -> list[Candle]:
        """``interval`` candles whose open_time is in ``[start, end)`` (ns; None = unbounded),
        each folded from all the stored 1m candles of its bucket; the most recent ``limit`` of
        them (None = all), ascending by open_time. ``ValueError`` for an unknown interval."""
        ...

    # -- engine events (persister)
    async def last_persisted_seq(self, shard: int = 0) -> int:
        """The last seq of engine shard ``shard`` whose rows are all stored (0: none yet)."""
        ...

    async def apply_batch(self, batch: EventBatch, shard: int = 0) -> int:
        """Store the rows of the batch's inputs above ``last_persisted_seq(shard)`` and move it
        to ``batch.last_seq``, in one transaction; return the number of rows written (0 when the
        whole batch was already stored). Each engine shard numbers its inputs from 1, so each
        has its own watermark; their rows never collide (shards hold disjoint accounts, and
        their order and position ids are disjoint: ``CoreConfig.id_base``)."""
        ...

    async def cut_history(self, shard: int, after_seq: int, *, shards: int = 1) -> HistoryCut:
        """``run --repair`` cut shard ``shard``'s journal after ``after_seq``: in one transaction,
        remove the shard's history rows written by later inputs (its order and position id
        range; ledger rows of its accounts, ``account_id % shards == shard``) and lower its
        watermark to :attr:`HistoryCut.rebuild_after_seq`, so the persister rebuilds from there."""
        ...

    # -- history queries (gateway)
    async def ledger(self, account_id: int, *, cursor: Optional[str] = None,
                     limit: int = DEFAULT_PAGE_LIMIT) -> Page[LedgerEntry]:
        """Newest first: ``ORDER BY seq DESC, index DESC``."""
        ...

    async def closed_positions(self, account_id: int, *, symbol: Optional[str] = None,
                               reason: Optional[str] = None, start: Optional[int] = None,
                               end: Optional[int] = None, cursor: Optional[str] = None,
                               limit: int = DEFAULT_PAGE_LIMIT) -> Page[ClosedPosition]:
        """Newest first: ``ORDER BY seq DESC, position_id DESC``; ``start``/``end`` bound
        ``closed_at`` (ns, start inclusive, end exclusive)."""
        ...

    async def orders(self, account_id: int, *, status: Optional[str] = None,
                     symbol: Optional[str] = None, cursor: Optional[str] = None,
                     limit: int = DEFAULT_PAGE_LIMIT) -> Page[OrderRecord]:
        """Newest first: ``ORDER BY order_id DESC`` (ids are allocated in sequence order, so
        this is creation order)."""
        ...

    async def order(self, account_id: int, order_id: int) -> Optional[OrderRecord]:
        """The order, or None when it does not exist or belongs to another account."""
        ...

    # -- users, their accounts and refresh tokens (gateway)
    async def create_user(self, email: str, password_hash: str, *, created_at: int,
                          account_type: str = "standard", demo: bool = True) -> UserRecord:
        """Insert a user and their first trading account (``account_type``, ``demo``; not
        ready) in one transaction; :class:`DuplicateEmail` when the (normalised) e-mail is taken."""
        ...

    async def user_by_email(self, email: str) -> Optional[UserRecord]:
        ...

    async def user_by_id(self, user_id: int) -> Optional[UserRecord]:
        ...

    async def open_account(self, user_id: int, *, account_type: str, demo: bool, created_at: int,
                           limit: int) -> AccountRecord:
        """Add a trading account (not ready) to the user; :class:`TooManyAccounts` when they
        already hold ``limit`` (checked in the same transaction)."""
        ...

    async def accounts_of(self, user_id: int) -> list[AccountRecord]:
        """The user's accounts, oldest first."""
        ...

    async def account(self, account_id: int) -> Optional[AccountRecord]:
        ...

    async def mark_account_ready(self, account_id: int) -> None:
        """Record that the engine has the trading account."""
        ...

    async def forget_accounts_ready(self, account_ids: list[int]) -> None:
        """Record that the engine no longer has these accounts (a repair cut off their
        creation): the next sign-in or switch to them creates them again."""
        ...

    async def add_refresh_token(self, token_hash: bytes, *, user_id: int, family_id: str,
                                issued_at: int, expires_at: int, account_id: Optional[int] = None) -> None:
        """Store the first token of a new family (a sign-in or a switch) for ``account_id``
        (None: the user's first account)."""
        ...

    async def rotate_refresh_token(self, token_hash: bytes, *, new_hash: bytes, now: int,
                                   expires_at: int) -> RefreshRotation:
        """In one transaction: if ``token_hash`` is live (known, unspent, unrevoked, not
        expired at ``now``) mark it spent and store ``new_hash`` as its child in the same family
        (``rotated``); if it was spent already revoke its whole family (``reused``); otherwise
        change nothing (``unknown``, ``revoked``, ``expired``)."""
        ...

    async def revoke_refresh_family(self, token_hash: bytes, *, now: int) -> bool:
        """Revoke every token of ``token_hash``'s family (sign-out); False if it is unknown."""
        ...

    async def purge_refresh_tokens(self, *, before: int) -> int:
        """Delete tokens that expired before ``before`` (ns); return how many."""
        ...

    # -- account owners (the back office's account search)
    async def account_owners_matching(self, email_contains: str, *, after: int = 0,
                                      limit: int = MAX_OWNER_MATCHES) -> list[AccountOwner]:
        """Accounts whose holder's e-mail contains ``email_contains`` (already lower-case),
        ascending by account id above ``after``, at most ``limit``."""
        ...

    async def account_owners(self, account_ids: Sequence[int]) -> dict[int, AccountOwner]:
        """The holders of these accounts (accounts without one are left out)."""
        ...

    # -- operators and their refresh tokens (the back office)
    async def create_operator(self, email: str, password_hash: str, *, role: str,
                              created_at: int) -> OperatorRecord:
        """Insert an operator; :class:`DuplicateEmail` when the e-mail is taken by another one."""
        ...

    async def operator_by_email(self, email: str) -> Optional[OperatorRecord]:
        ...

    async def operator_by_id(self, operator_id: int) -> Optional[OperatorRecord]:
        ...

    async def operators(self) -> list[OperatorRecord]:
        """Every operator, by id."""
        ...

    async def update_operator(self, email: str, *, role: Optional[str] = None,
                              disabled: Optional[bool] = None, now: int = 0) -> Optional[OperatorRecord]:
        """Change an operator's role or disabled flag (None: unchanged) and answer the result
        (None: no such operator). Disabling also revokes every refresh token they hold."""
        ...

    async def add_operator_refresh_token(self, token_hash: bytes, *, operator_id: int, family_id: str,
                                         issued_at: int, expires_at: int) -> None:
        ...

    async def rotate_operator_refresh_token(self, token_hash: bytes, *, new_hash: bytes, now: int,
                                            expires_at: int) -> RefreshRotation:
        """As :meth:`rotate_refresh_token`; ``user_id`` is the operator's id, ``account_id`` None."""
        ...

    async def revoke_operator_refresh_family(self, token_hash: bytes, *, now: int) -> bool:
        ...

    # -- the audit log (persister writes, the back office reads)
    async def audit(self, *, operator_id: Optional[int] = None, action: Optional[str] = None,
                    start: Optional[int] = None, end: Optional[int] = None, cursor: Optional[str] = None,
                    limit: int = DEFAULT_PAGE_LIMIT) -> Page[AuditEntry]:
        """Newest first: ``ORDER BY ts DESC, shard DESC, seq DESC, idx DESC``; ``start``/``end``
        bound ``ts`` (ns, start inclusive, end exclusive)."""
        ...


async def open_store(cfg: Any) -> Store:
    """The store ``cfg`` asks for (``[store] kind``), migrated and ready."""
    settings = cfg.settings.store
    kind = settings.kind
    if kind == "sqlite":
        from actors.store.sqlite import SqliteStore
        return await SqliteStore.open(cfg.data_dir)
    if kind == "postgres":
        # [store] database_url (DATABASE_URL fills it), optional schema (tables go there,
        # created when missing), pool_size, migrate_on_open (false: fail at open while
        # migrations are pending, for deployments that run `exness-actors migrate` as a step).
        from actors.config import ConfigError
        from actors.store.postgres import open_postgres_store
        url = settings.database_url
        if not url:
            raise ConfigError("[store] kind = 'postgres' needs a database URL: set DATABASE_URL "
                              "(or [store] database_url), e.g. postgresql://user@host:5432/dbname")
        return await open_postgres_store(
            url, schema=settings.schema or None, migrate=settings.migrate_on_open, max_size=settings.pool_size)
    raise ValueError(f"[store] kind must be 'sqlite' or 'postgres', not {kind!r}")
