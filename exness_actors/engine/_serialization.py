"""The canonical encoding of the engine's state, its hash, and restoring a state from it.

The encoding is a msgpack-able list with no dict order in it (everything sorted by id or
symbol), so equal states encode to equal bytes and :func:`hash_state` is a state hash that
replay, snapshots and journal checkpoints can compare. The layout is :data:`STATE_FORMAT`;
the edge cursors are appended only in split mode (or with account types), and the account
extras (issue 16: account types, margin-call flags, fees, the house's sources, the rollover)
only with account types, and the broker extras (issue 13: price alerts, their id counter, armed
dead-man switches; format 3, with ``None`` for absent account extras) only once used, so older
states (and their hashes) do not change with those fields. Restoring re-indexes every trigger in one bulk sort per index.

Restore-ready indexes (:func:`export_indexes`): the trigger indexes are derived from the
positions and orders, so the canonical state (and its hash) leaves them out, but re-deriving them
is the largest part of a restore (every position's triggers computed and encoded as big ints). A
snapshot therefore stores them beside the state — per book and index, the sorted entries of the
positions' fixed-level triggers and the pending orders' entries, as the ``marshal`` image of the
list of entry ints (big ints: msgpack stops at 64 bits; marshal reads them back in one C loop,
about three times cheaper than rebuilding them from two int64 columns) — and :func:`restore_state` bulk-loads
them instead of indexing each position. What a restore re-creates itself (alerts, trailing
stops, cross accounts' margin watches) is left out. Loaded and re-derived indexes are equal;
stored indexes whose layout, shape or entry count do not fit the state's positions and orders are
ignored (re-derived). marshal only builds data here (the result must be a list of ints; the
snapshot holding it is authenticated), and a blob a future Python cannot read is such a misfit.
"""

from __future__ import annotations

import hashlib
import marshal
from typing import Any, Final, Optional

from exness_actors import codec
from exness_actors.model import Account, Alert, Book, Order, Position
from exness_actors.triggers import TriggerIndex

from ._hashing import pack_block, unpack_block
from ._state import ENTRY, STATE_FORMAT, STATE_FORMAT_ACCOUNTS, STATE_FORMAT_BROKER, EngineState

__all__ = ["to_state", "hash_state", "restore_state", "export_indexes", "INDEXES_FORMAT"]

#: the layout of :func:`export_indexes` (a reader ignores another one and re-derives the indexes)
INDEXES_FORMAT: Final = 1
_PRIORITY_SHIFT: Final = 53          # an entry is ``key << 57 | priority << 53 | id`` (triggers.py)


def to_state(state: EngineState) -> list[Any]:
    """The canonical, msgpack-able encoding of the whole state (sorted, no dict order)."""
    broker = _broker_extras(state)
    state_format = STATE_FORMAT_BROKER if broker else STATE_FORMAT_ACCOUNTS if state.config.account_types else STATE_FORMAT
    encoded = [state_format, state.config.to_wire(), state.now, state.last_seq, state.next_order_id,
               state.next_position_id, state.house, state.total_deposits, state.total_withdrawals,
               [state._hash_base, _hash_block(state)], _accounts(state), _positions(state),
               _orders(state), [[s, b.bid, b.ask, b.quote_ts, b.halted] for s, b in sorted(state.books.items())]]
    if state.edge_cursors or state.config.account_types or broker:
        # Only in split mode: embedded states (and their hashes) are unchanged by the field.
        encoded.append([[s, ms, n] for s, (ms, n) in sorted(state.edge_cursors.items())])
    if state.config.account_types:
        # Only with account types (issue 16): older states (and their hashes) are unchanged.
        encoded.append(_account_extras(state))
    elif broker:
        encoded.append(None)
    if broker:
        # Only once an alert was placed or a dead-man switch is armed (issue 13).
        encoded.append(broker)
    return encoded


def _hash_block(state: EngineState) -> bytes:
    return pack_block(state._hash_items) if state._hash_v2 else bytes(state._hash_buffer)


def _broker_extras(state: EngineState) -> list[Any]:
    """The alerts, the alert id counter and the armed dead-man switches; empty when unused."""
    if state.next_alert_id == state.config.id_base + 1 and not state.dead_man:
        return []
    alerts = [[a.id, a.account_id, a.symbol, a.is_above, a.price, a.note, a.expires_at, a.client_alert_id,
               a.created_at] for _, a in sorted(state.alerts.items())]
    return [state.next_alert_id, alerts, [[account_id, deadline] for account_id, deadline in sorted(state.dead_man.items())]]


def _restore_broker_extras(state: EngineState, extras: list[Any]) -> None:
    next_alert_id, alerts, dead_man = extras
    state.next_alert_id = next_alert_id
    for alert_id, account_id, symbol, is_above, price, note, expires_at, client_alert_id, created_at in alerts:
        state._add_alert(Alert(alert_id, account_id, symbol, is_above, price, note, expires_at, client_alert_id,
                               created_at))
    for account_id, deadline in dead_man:
        state._set_dead_man(account_id, deadline)


def _account_extras(state: EngineState) -> list[Any]:
    house = [state.house_spread, state.house_commission, state.house_swap, state.house_losses,
             state.house_gains, state.house_absorbed]
    typed = [[a.id, a.type.name, a.in_margin_call] for _, a in sorted(state.accounts.items()) if a.type is not None]
    fees = [[pid, p.commission, p.swap] for pid, p in sorted(state.positions.items()) if p.commission or p.swap]
    raw = [[s, b.raw_bid, b.raw_ask] for s, b in sorted(state.books.items())]
    extras = [house, state.next_rollover, typed, fees, raw]
    if state.profiles:
        # Per-type spreads, only once a profile is in use (older states and hashes unchanged):
        # the profiles in order of first use; their books' quotes follow from the raw quotes.
        extras.append([list(profile) for profile in state.profiles])
    return extras


def _restore_account_types(state: EngineState, extras: list[Any]) -> None:
    """Types, margin-call flags, raw quotes and spread profiles: before positions are indexed."""
    _house, _next_rollover, typed, _fees, raw, *rest = extras
    for symbol, raw_bid, raw_ask in raw:
        state.books[symbol].raw_bid, state.books[symbol].raw_ask = raw_bid, raw_ask
    for spread_pct, fixed_ppm in (rest[0] if rest else []):
        state._add_profile((spread_pct, fixed_ppm))
    for account_id, type_name, in_margin_call in typed:
        account_type = state.config.account_type(type_name)
        account = state.accounts[account_id]
        account.type, account.is_cross = account_type, account_type is not None and account_type.is_cross
        account.in_margin_call = in_margin_call
        key = account_type.spread_profile if account_type is not None else None
        account.profile = state.profiles.index(key) + 1 if key is not None else 0


def _restore_account_extras(state: EngineState, extras: list[Any]) -> None:
    house, next_rollover, _typed, fees, _raw, *_profiles = extras
    (state.house_spread, state.house_commission, state.house_swap, state.house_losses,
     state.house_gains, state.house_absorbed) = house
    state.next_rollover = next_rollover
    for pid, commission, swap in fees:
        state.positions[pid].commission, state.positions[pid].swap = commission, swap


def _accounts(state: EngineState) -> list[Any]:
    accounts = []
    for account_id in sorted(state.accounts):
        account = state.accounts[account_id]
        recent = [[k, o, r] for k, (o, r) in account.recent_keys.items()] if account.recent_keys else []
        finished = [[o, s] for o, s in account.finished_orders.items()] if account.finished_orders else []
        accounts.append([account_id, account.free, account.locked, recent, finished])
    return accounts


def _positions(state: EngineState) -> list[Any]:
    positions = []
    for pid in sorted(state.positions):
        p = state.positions[pid]
        peak = None
        if p.trailing_stop is not None:
            book = state._book_for(p.account_id, p.symbol)
            peak = (book.long_trailing if p.is_long else book.short_trailing).peak_of(pid)
        positions.append([pid, p.account_id, p.symbol, p.is_long, p.qty, p.open_price, p.margin,
                          p.leverage, p.liquidation_price, p.take_profit, p.stop_loss,
                          p.trailing_stop, peak, p.order_id, p.opened_at])
    return positions


def _orders(state: EngineState) -> list[Any]:
    orders = []
    for oid in sorted(state.orders):
        o = state.orders[oid]
        orders.append([oid, o.account_id, o.symbol, o.is_long, o.type, o.price, o.margin,
                       o.leverage, o.qty, o.take_profit, o.stop_loss, o.trailing_stop,
                       o.expires_at, o.client_order_id, o.created_at])
    return orders


def _all_books(state: EngineState) -> list[Book]:
    """Every book, in a fixed order: the default ones by configuration, then each symbol's profile books."""
    return list(state.books.values()) + [book for symbol in sorted(state.profile_books)
                                         for book in state.profile_books[symbol]]


def _trigger_indexes(state: EngineState) -> list[TriggerIndex]:
    return [index for book in _all_books(state)
            for index in (book.bid_falls, book.bid_rises, book.ask_rises, book.ask_falls)]


def export_indexes(state: EngineState) -> list[Any]:
    """The trigger indexes ready to load: ``[INDEXES_FORMAT, [entries, ...]]``, one ``marshal``
    image of a list of ints per index (:func:`_trigger_indexes` order) holding the sorted entries
    of positions' fixed-level triggers and pending entries."""
    columns = []
    for index in _trigger_indexes(state):
        entries = [entry for entry in index.entries() if (entry >> _PRIORITY_SHIFT) & 0xF <= ENTRY]
        columns.append(marshal.dumps(entries))
    return [INDEXES_FORMAT, columns]


def _stored_entries(indexes: Any, count: int) -> Optional[list[list[int]]]:
    """The entries of each of ``count`` indexes from :func:`export_indexes`; None if they do not
    read as that (another layout, shape or Python's marshal format: the caller re-derives them)."""
    if type(indexes) is not list or len(indexes) != 2 or indexes[0] != INDEXES_FORMAT:
        return None
    columns = indexes[1]
    if type(columns) is not list or len(columns) != count:
        return None
    loaded = []
    for column in columns:
        try:
            entries = marshal.loads(column)
        except (EOFError, ValueError, TypeError):
            return None
        if type(entries) is not list or not all(type(entry) is int for entry in entries):
            return None
        loaded.append(entries)
    return loaded


def _fixed_trigger_count(positions: list[Any], orders: list[Any]) -> int:
    """How many index entries the positions' fixed-level triggers and the orders' entries make."""
    count = len(positions) + len(orders)
    for position in positions:
        count += (position[9] is not None) + (position[10] is not None)     # take-profit, stop-loss
    return count


def hash_state(encoded: list[Any]) -> bytes:
    """BLAKE2b of a state from :func:`to_state` (to hash and store it without encoding twice)."""
    return hashlib.blake2b(codec.pack(encoded), digest_size=32).digest()


def restore_state(state: EngineState, encoded: list[Any], indexes: Any = None) -> None:
    """Fill a fresh state (built from the encoding's config) with the rest of the encoding;
    ``indexes`` (from :func:`export_indexes`, taken with the same state) are loaded as they are
    (and ignored, the indexes re-derived, when they do not fit the state)."""
    (_fmt, _config, now, last_seq, next_order_id, next_position_id, house, deposits,
     withdrawals, rolling, accounts, positions, orders, books) = encoded[:14]
    cursors = encoded[14] if len(encoded) > 14 else []
    state.now, state.last_seq = now, last_seq
    state.next_order_id, state.next_position_id = next_order_id, next_position_id
    state.house, state.total_deposits, state.total_withdrawals = house, deposits, withdrawals
    state.edge_cursors = {source: (ms, n) for source, ms, n in cursors}
    state._hash_base = bytes(rolling[0])
    if state._hash_v2:
        state._hash_items = unpack_block(rolling[1])
    else:
        state._hash_buffer = bytearray(rolling[1])
    for symbol, bid, ask, quote_ts, halted in books:
        book = state.books[symbol]
        book.bid, book.ask, book.quote_ts, book.halted = bid, ask, quote_ts, halted
    for account_id, free, locked, recent, finished in accounts:
        account = Account(account_id, free, locked)
        if recent:
            account.recent_keys = {k: (o, r) for k, o, r in recent}
        if finished:
            account.finished_orders = {o: s for o, s in finished}
        state.accounts[account_id] = account
    if len(encoded) > 15 and encoded[15] is not None:
        _restore_account_types(state, encoded[15])
    trigger_indexes = _trigger_indexes(state)
    stored = None if indexes is None else _stored_entries(indexes, len(trigger_indexes))
    if stored is not None and sum(map(len, stored)) != _fixed_trigger_count(positions, orders):
        stored = None
    if stored is not None:
        for index, entries in zip(trigger_indexes, stored):
            index.load_sorted(entries)
    for index in trigger_indexes:
        index.begin_bulk()        # one sort per index instead of an insort per entry
    _restore_positions(state, positions, indexed=stored is not None)
    _restore_orders(state, orders, indexed=stored is not None)
    if len(encoded) > 16:
        _restore_broker_extras(state, encoded[16])
    for index in trigger_indexes:
        index.end_bulk()
    if len(encoded) > 15 and encoded[15] is not None:
        _restore_account_extras(state, encoded[15])


def _restore_positions(state: EngineState, positions: list[Any], *, indexed: bool) -> None:
    """``indexed``: the fixed-level triggers were loaded already; only trailing stops are added."""
    for (pid, account_id, symbol, is_long, qty, open_price, margin, leverage, liq, tp, sl,
         trailing, peak, order_id, opened_at) in positions:
        position = Position(pid, account_id, symbol, is_long, qty, open_price, margin, leverage,
                            liq, tp, sl, trailing, order_id, opened_at)
        state.positions[pid] = position
        account = state.accounts[account_id]
        account.positions[pid] = position
        if not indexed:
            state._index_position(state._book_of(account, symbol), position, trailing_peak=peak)
        elif trailing is not None:
            state._index_trailing(state._book_of(account, symbol), position, peak)


def _restore_orders(state: EngineState, orders: list[Any], *, indexed: bool) -> None:
    for (oid, account_id, symbol, is_long, order_type, price, margin, leverage, qty, tp, sl,
         trailing, expires_at, client_order_id, created_at) in orders:
        order = Order(oid, account_id, symbol, is_long, order_type, price, margin, leverage, qty,
                      tp, sl, trailing, expires_at, client_order_id, created_at)
        state.orders[oid] = order
        state.accounts[account_id].orders[oid] = order
        if not indexed:
            state._index_order(state._book_for(account_id, symbol), order)
        if expires_at is not None:
            state._add_expiry(expires_at, oid)
