"""The canonical encoding of the engine's state, its hash, and restoring a state from it.

The encoding is a msgpack-able list with no dict order in it (everything sorted by id or
symbol), so equal states encode to equal bytes and :func:`hash_state` is a state hash that
replay, snapshots and journal checkpoints can compare. The layout is :data:`STATE_FORMAT`;
the edge cursors are appended only in split mode (or with account types), and the account
extras (issue 16: account types, margin-call flags, fees, the house's sources, the rollover)
only with account types, and the broker extras (issue 13: price alerts, their id counter, armed
dead-man switches; format 3, with ``None`` for absent account extras) only once used, so older
states (and their hashes) do not change with those fields. Restoring re-indexes every trigger in one bulk sort per index.
"""

from __future__ import annotations

import hashlib
from typing import Any

from exness_actors import codec
from exness_actors.model import Account, Alert, Order, Position

from ._hashing import pack_block, unpack_block
from ._state import STATE_FORMAT, STATE_FORMAT_ACCOUNTS, STATE_FORMAT_BROKER, EngineState

__all__ = ["to_state", "hash_state", "restore_state"]


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


def hash_state(encoded: list[Any]) -> bytes:
    """BLAKE2b of a state from :func:`to_state` (to hash and store it without encoding twice)."""
    return hashlib.blake2b(codec.pack(encoded), digest_size=32).digest()


def restore_state(state: EngineState, encoded: list[Any]) -> None:
    """Fill a fresh state (built from the encoding's config) with the rest of the encoding."""
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
    books = list(state.books.values()) + [book for extra in state.profile_books.values() for book in extra]
    indexes = [index for book in books
               for index in (book.bid_falls, book.bid_rises, book.ask_rises, book.ask_falls)]
    for index in indexes:
        index.begin_bulk()        # one sort per index instead of an insort per entry
    _restore_positions(state, positions)
    _restore_orders(state, orders)
    if len(encoded) > 16:
        _restore_broker_extras(state, encoded[16])
    for index in indexes:
        index.end_bulk()
    if len(encoded) > 15 and encoded[15] is not None:
        _restore_account_extras(state, encoded[15])


def _restore_positions(state: EngineState, positions: list[Any]) -> None:
    for (pid, account_id, symbol, is_long, qty, open_price, margin, leverage, liq, tp, sl,
         trailing, peak, order_id, opened_at) in positions:
        position = Position(pid, account_id, symbol, is_long, qty, open_price, margin, leverage,
                            liq, tp, sl, trailing, order_id, opened_at)
        state.positions[pid] = position
        state.accounts[account_id].positions[pid] = position
        state._index_position(state._book_for(account_id, symbol), position, trailing_peak=peak)


def _restore_orders(state: EngineState, orders: list[Any]) -> None:
    for (oid, account_id, symbol, is_long, order_type, price, margin, leverage, qty, tp, sl,
         trailing, expires_at, client_order_id, created_at) in orders:
        order = Order(oid, account_id, symbol, is_long, order_type, price, margin, leverage, qty,
                      tp, sl, trailing, expires_at, client_order_id, created_at)
        state.orders[oid] = order
        state.accounts[account_id].orders[oid] = order
        state._index_order(state._book_for(account_id, symbol), order)
        if expires_at is not None:
            state._add_expiry(expires_at, oid)
