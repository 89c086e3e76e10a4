"""Hypothesis strategies for the core's values and inputs, for users' own property tests.

Theory of operation
-------------------
Every strategy draws integers at the core's scales (cents, ticks, quantity units, ns) — never a
float. The command strategies draw *mostly valid* commands: ids come from the pools the caller
passes (the accounts, orders and positions it knows about), sizes from a sensible range, prices
around a reference price. A fraction ``invalid_percent`` of the fields is drawn invalid instead
(an unknown id, a zero or negative amount, a leverage out of range, a take-profit on the wrong
side, a key that is too long, …), so rejections are exercised too. Draws shrink towards the
valid, simple end: a failing example is reported with as few oddities as possible.

Pools are plain sequences (ids, or the engine's own ``Position``/``Order`` records, which carry
their owner and symbol): a strategy is built for one step of a test, with the pools of that
moment. With an empty pool the id is drawn from :func:`account_ids` or an unknown range.

Quotes are *raw* feed quotes (the engine adds the spread markup). :func:`quotes` and
:func:`price_paths` draw random walks with occasional gaps of many percent and, unless told
otherwise, occasional crossed (bid > ask) or non-positive quotes, which the engine must reject
without changing anything.

The values stay inside the range the msgpack codec can carry (64-bit integers), so every drawn
command can be journaled.
"""

from __future__ import annotations

import string
from typing import Any, Mapping, Optional, Sequence, TypeVar

from hypothesis import strategies as st

from exness_actors.commands import (
    MAX_CLIENT_ID, AccountId, AddMargin, AdjustBalance, CancelAlert, CancelAllAfter, CancelOrder, CancelOrders,
    ClientOrderId, Clock, ClosePosition, CreateAccount, Deposit, EdgeCursor, ForceClosePosition, HaltSymbol,
    ModifyOrder, ModifyPosition, OpenAccount, OrderId, PlaceAlert, PlaceOrder, PositionId, Quote, RaiseIdFloor,
    ResumeSymbol, SetAccountTypes, UpdateInstrument, Withdraw,
)
from exness_actors.instruments import MAX_SHARD, SHARD_ID_SPAN, CoreConfig, Instrument

__all__ = [
    "symbols", "instruments", "core_configs", "prices", "quotes", "price_paths", "time_steps",
    "account_ids", "client_order_ids", "clocks", "create_accounts", "deposits", "withdraws",
    "place_orders", "cancel_orders", "modify_orders", "close_positions", "modify_positions",
    "add_margins", "halt_symbols", "resume_symbols", "edge_cursors", "raise_id_floors", "commands", "command_strategies",
    "update_instruments", "adjust_balances", "force_closes", "place_alerts", "cancel_alerts", "cancel_all_afters",
    "cancel_orders_in_bulk", "UNKNOWN_SYMBOL",
]

#: A symbol no generated configuration contains (it has a lower-case letter).
UNKNOWN_SYMBOL = "NOSUCHx"

_NS_PER_MS = 1_000_000
_NS_PER_S = 1_000_000_000
_BPS = 10_000
#: Reference price when the caller gives none: 10 000.00 at two decimals.
_DEFAULT_REFERENCE = 1_000_000
#: Highest price drawn (ticks); the engine refuses levels above 10**12, so valid draws stay
#: valid and every value stays far inside the codec's 64-bit integers.
_MAX_PRICE = 10**12

_UPPER = string.ascii_uppercase
_UPPER_ALNUM = string.ascii_uppercase + string.digits


# --------------------------------------------------------------------------- helpers

def _invalid(draw: st.DrawFn, invalid_percent: int) -> bool:
    """Draw whether this field is invalid; shrinks towards "valid"."""
    if invalid_percent <= 0:
        return False
    return draw(st.integers(0, 99)) >= 100 - invalid_percent


def _maybe(draw: st.DrawFn, percent_present: int) -> bool:
    """Draw whether an optional field is given; shrinks towards "absent"."""
    return draw(st.integers(0, 99)) >= 100 - percent_present


#: Trailing distances in basis points of the price: mostly close, sometimes far.
_TRAILING_BPS = st.one_of(st.integers(5, 150), st.integers(5, 1_500))

#: How far from the reference a pending price is drawn (basis points): mostly near, sometimes far.
_PENDING_RANGE = st.sampled_from(((-200, 200), (-200, 200), (-2_000, 2_000)))

_UNKNOWN_IDS = st.one_of(st.integers(10**9, 10**9 + 1_000), st.integers(-3, 0))


def _pick_id(draw: st.DrawFn, pool: Sequence[int], invalid_percent: int) -> int:
    """An id from ``pool`` (any valid account id when it is empty), or sometimes an unknown one."""
    if _invalid(draw, invalid_percent):
        return draw(_UNKNOWN_IDS)
    return draw(st.sampled_from(tuple(pool))) if pool else draw(account_ids())


def _owner_and_id(draw: st.DrawFn, records: Sequence[Any], accounts: Sequence[int],
                  invalid_percent: int) -> tuple[int, int, Any]:
    """``(account_id, id, record)`` of a record, sometimes with a wrong owner or an unknown id."""
    if records and not _invalid(draw, invalid_percent):
        record = draw(st.sampled_from(tuple(records)))
        return record.account_id, record.id, record
    if records and accounts and draw(st.booleans()):
        # a real id named by another (or the same) account: UNKNOWN_* unless it is the owner
        record = draw(st.sampled_from(tuple(records)))
        return draw(st.sampled_from(tuple(accounts))), record.id, record
    account = draw(st.sampled_from(tuple(accounts))) if accounts else draw(account_ids())
    return account, draw(_UNKNOWN_IDS), None


def _around(draw: st.DrawFn, reference: int, low_bps: int, high_bps: int) -> int:
    """A price ``reference·(1 + x)`` with ``x`` drawn in basis points from ``[low, high]``."""
    moved = reference * (_BPS + draw(st.integers(low_bps, high_bps))) // _BPS
    return min(max(moved, 1), _MAX_PRICE)


def _reference(reference_prices: Optional[Mapping[str, int]], symbol: str) -> int:
    if reference_prices and symbol in reference_prices and reference_prices[symbol]:
        return reference_prices[symbol]
    return _DEFAULT_REFERENCE


# --------------------------------------------------------------------------- configuration

def symbols() -> st.SearchStrategy[str]:
    """Valid instrument symbols: upper-case letters and digits, starting with a letter."""
    return st.builds(lambda head, tail: head + tail, st.sampled_from(_UPPER),
                     st.text(alphabet=_UPPER_ALNUM, max_size=7))


@st.composite
def instruments(draw: st.DrawFn, symbol: Optional[str] = None) -> Instrument:
    """Valid instruments with small scales (0–4 price decimals, 0–8 quantity decimals)."""
    qty_decimals = draw(st.integers(0, 8))
    return Instrument(
        symbol=symbol if symbol is not None else draw(symbols()),
        price_decimals=draw(st.integers(0, 4)),
        qty_decimals=qty_decimals,
        max_leverage=draw(st.integers(1, 200)),
        spread_bps=draw(st.one_of(st.just(0), st.integers(1, 50))),
        min_qty=draw(st.integers(1, max(1, 10 ** min(qty_decimals, 3)))),
        maintenance_bps=draw(st.one_of(st.just(0), st.integers(1, 5_000))),
    )


@st.composite
def core_configs(draw: st.DrawFn, *, min_instruments: int = 1,
                 max_instruments: int = 3) -> CoreConfig:
    """Valid engine configurations: a few instruments, a staleness limit, an idempotency window."""
    chosen = draw(st.lists(instruments(), min_size=min_instruments, max_size=max_instruments,
                           unique_by=lambda instrument: instrument.symbol))
    return CoreConfig(
        instruments=tuple(chosen),
        stale_after_ns=draw(st.integers(1, 60_000)) * _NS_PER_MS,
        idempotency_window=draw(st.one_of(st.integers(1, 8), st.just(1000))),
        # mostly an unsharded engine; sometimes engine shard k of a split deployment
        id_base=draw(st.one_of(st.just(0), st.integers(1, MAX_SHARD).map(lambda k: k * SHARD_ID_SPAN))),
    )


def prices(instrument: Instrument) -> st.SearchStrategy[int]:
    """Positive prices in ticks of ``instrument`` (up to a million units of the quote currency)."""
    return st.integers(1, 10 ** (instrument.price_decimals + 6))


def account_ids() -> st.SearchStrategy[int]:
    """Valid (positive) account ids."""
    return st.integers(1, 1_000_000)


def client_order_ids() -> st.SearchStrategy[str]:
    """Short client ids from a tiny alphabet, so that repeats (duplicates) are common."""
    return st.text(alphabet="abc", min_size=1, max_size=3)


def time_steps(stale_after_ns: int = 5 * _NS_PER_S, *, max_step_ns: int = _NS_PER_S,
               stale_percent: int = 10) -> st.SearchStrategy[int]:
    """How far the clock moves between two inputs (ns): mostly up to ``max_step_ns``,
    sometimes not at all, and with ``stale_percent`` past ``stale_after_ns`` (the last quote
    goes stale)."""

    @st.composite
    def step(draw: st.DrawFn) -> int:
        roll = draw(st.integers(0, 99))
        if roll >= 100 - stale_percent:
            return draw(st.integers(stale_after_ns + 1, 3 * stale_after_ns))
        if roll < 10:
            return 0
        return draw(st.integers(1, max_step_ns))

    return step()


# --------------------------------------------------------------------------- market data

def _raw_quote(draw: st.DrawFn, symbol: str, around: int, *, invalid_percent: int,
               gap_percent: int, max_gap_bps: int) -> tuple[Quote, Optional[int]]:
    """One raw quote and the mid it was built around (``None`` for an invalid quote)."""
    roll = draw(st.integers(0, 99))
    if roll >= 100 - invalid_percent:
        if draw(st.booleans()):
            # crossed: bid above ask
            ask = _around(draw, around, -200, 200)
            return Quote(symbol=symbol, bid=ask + draw(st.integers(1, max(1, ask // 100))), ask=ask), None
        bid = draw(st.integers(-2, 0))
        ask = draw(st.one_of(st.integers(-2, 0), st.just(around)))
        if draw(st.booleans()):
            bid, ask = around, draw(st.integers(-2, 0))
        return Quote(symbol=symbol, bid=bid, ask=ask), None
    if roll >= 100 - invalid_percent - gap_percent:
        # a gap of many percent, either way (down to -95 %, up to +max_gap_bps)
        move = draw(st.one_of(st.integers(-min(max_gap_bps, 9_500), -500), st.integers(500, max_gap_bps)))
    else:
        move = draw(st.one_of(st.integers(-40, 40), st.integers(-150, 150)))
    mid = min(max(around * (_BPS + move) // _BPS, 1), _MAX_PRICE)
    half_spread = draw(st.integers(0, max(0, mid // 2_000)))
    bid = max(mid - half_spread, 1)
    return Quote(symbol=symbol, bid=bid, ask=mid + half_spread), mid


@st.composite
def quotes(draw: st.DrawFn, symbol: str, around: Optional[int] = None, *,
           invalid_percent: int = 6, gap_percent: int = 8, max_gap_bps: int = 5_000) -> Quote:
    """A raw quote near ``around`` (ticks): a small move, sometimes a gap of many percent, and
    with ``invalid_percent`` a crossed or non-positive quote."""
    reference = around if around is not None else draw(st.integers(100, 10**8))
    quote, _mid = _raw_quote(draw, symbol, reference, invalid_percent=invalid_percent,
                             gap_percent=gap_percent, max_gap_bps=max_gap_bps)
    return quote


@st.composite
def price_paths(draw: st.DrawFn, symbol: str, start: Optional[int] = None, *,
                min_size: int = 1, max_size: int = 50, invalid_percent: int = 6,
                gap_percent: int = 8, max_gap_bps: int = 5_000) -> list[Quote]:
    """A random walk of raw quotes from ``start``: each valid quote moves the walk; gaps and
    invalid quotes as in :func:`quotes`."""
    mid = start if start is not None else draw(st.integers(100, 10**8))
    size = draw(st.integers(min_size, max_size))
    path = []
    for _ in range(size):
        quote, new_mid = _raw_quote(draw, symbol, mid, invalid_percent=invalid_percent,
                                    gap_percent=gap_percent, max_gap_bps=max_gap_bps)
        if new_mid is not None:
            mid = new_mid
        path.append(quote)
    return path


# --------------------------------------------------------------------------- commands

def clocks() -> st.SearchStrategy[Clock]:
    """Clock heartbeats (the sequencer stamps their time)."""
    return st.builds(Clock)


@st.composite
def create_accounts(draw: st.DrawFn, *, accounts: Sequence[int] = (),
                    new_ids: Optional[st.SearchStrategy[int]] = None,
                    invalid_percent: int = 10) -> CreateAccount:
    """Mostly a new account (``new_ids``, default :func:`account_ids`) with an initial deposit;
    sometimes an existing id (``ACCOUNT_EXISTS``), a non-positive id or a negative deposit."""
    if _invalid(draw, invalid_percent):
        choices = [st.integers(-3, 0)] + ([st.sampled_from(tuple(accounts))] if accounts else [])
        account = draw(st.one_of(choices))
    else:
        account = draw(new_ids if new_ids is not None else account_ids())
    if _invalid(draw, invalid_percent):
        deposit = draw(st.integers(-10_000, -1))
    else:
        deposit = draw(st.one_of(st.just(0), st.integers(1, 10**8)))
    return CreateAccount(account_id=AccountId(account), initial_deposit=deposit)


@st.composite
def open_accounts(draw: st.DrawFn, *, accounts: Sequence[int] = (), account_types: Sequence[str] = ("standard",),
                  invalid_percent: int = 10) -> OpenAccount:
    """A typed account (issue 16): mostly a new id and a configured type; sometimes an unknown
    type (``UNKNOWN_ACCOUNT_TYPE``), an existing id or a negative deposit."""
    base = draw(create_accounts(accounts=accounts, invalid_percent=invalid_percent))
    if _invalid(draw, invalid_percent) or not account_types:
        account_type = draw(st.sampled_from(("gold", "", "STANDARD")))
    else:
        account_type = draw(st.sampled_from(tuple(account_types)))
    return OpenAccount(account_id=base.account_id, account_type=account_type, initial_deposit=base.initial_deposit)


@st.composite
def set_account_types(draw: st.DrawFn, *, invalid_percent: int = 10) -> SetAccountTypes:
    """A change of the account types: the shipped kinds, sometimes a malformed one."""
    standard = ["standard", "cross", 1000, 60, 0, 0, 0, 0, False, 0]
    if _invalid(draw, invalid_percent):
        return SetAccountTypes(account_types=[["standard", "sideways"]], rollover_ns=draw(st.integers(-5, 0)))
    return SetAccountTypes(account_types=[standard], rollover_ns=draw(st.integers(0, 86_399)) * 10**9)


def _idempotency_key(draw: st.DrawFn, keys: Optional[st.SearchStrategy[str]],
                     invalid_percent: int) -> str:
    if _invalid(draw, invalid_percent // 2):
        return "k" * (MAX_CLIENT_ID + 1)
    if not _maybe(draw, 50):
        return ""
    return draw(keys if keys is not None else client_order_ids())


_Funding = TypeVar("_Funding", Deposit, Withdraw)


def _funding(draw: st.DrawFn, cls: type[_Funding], accounts: Sequence[int],
             keys: Optional[st.SearchStrategy[str]], max_amount: int, invalid_percent: int) -> _Funding:
    account = _pick_id(draw, accounts, invalid_percent)
    if _invalid(draw, invalid_percent):
        amount = draw(st.integers(-1_000, 0))
    else:
        amount = draw(st.integers(1, max_amount))
    return cls(account_id=AccountId(account), amount=amount,
               idempotency_key=_idempotency_key(draw, keys, invalid_percent))


@st.composite
def deposits(draw: st.DrawFn, *, accounts: Sequence[int] = (),
             keys: Optional[st.SearchStrategy[str]] = None, max_amount: int = 10**7,
             invalid_percent: int = 10) -> Deposit:
    """Deposits to an account of the pool; about half carry an idempotency key from ``keys``."""
    return _funding(draw, Deposit, accounts, keys, max_amount, invalid_percent)


@st.composite
def withdraws(draw: st.DrawFn, *, accounts: Sequence[int] = (),
              keys: Optional[st.SearchStrategy[str]] = None, max_amount: int = 10**7,
              invalid_percent: int = 10) -> Withdraw:
    """Withdrawals from an account of the pool (some larger than the balance)."""
    return _funding(draw, Withdraw, accounts, keys, max_amount, invalid_percent)


def _protective(draw: st.DrawFn, reference: int, *, above: bool,
                invalid_percent: int) -> int:
    """A take-profit or stop-loss level strictly ``above`` (or below) ``reference``; with
    ``invalid_percent`` on the wrong side, exactly at the reference or non-positive."""
    if _invalid(draw, invalid_percent):
        kind = draw(st.integers(0, 2))
        if kind == 0:
            return draw(st.integers(-2, -1))
        if kind == 1:
            return reference
        above = not above
    distance_bps = draw(st.one_of(st.integers(1, 100), st.integers(1, 3_000)))
    level = _around(draw, reference, distance_bps, distance_bps) if above else \
        _around(draw, reference, -distance_bps, -distance_bps)
    if above:
        return level if level > reference else reference + 1
    return level if level < reference else max(reference - 1, 1)


@st.composite
def place_orders(draw: st.DrawFn, *, accounts: Sequence[int] = (),
                 symbols: Sequence[str] = ("BTCUSD",),
                 reference_prices: Optional[Mapping[str, int]] = None,
                 types: Sequence[str] = ("market", "market", "limit", "stop"),
                 sides: Sequence[str] = ("buy", "sell"), max_leverage: int = 100,
                 margins: Optional[st.SearchStrategy[int]] = None, now: int = 0,
                 client_ids: Optional[st.SearchStrategy[str]] = None,
                 invalid_percent: int = 10) -> PlaceOrder:
    """Orders of every kind: market and pending limit/stop, both sides, leverage ``1..max``,
    with or without take-profit, stop-loss, trailing stop, slippage guard and expiry.

    Pending prices are drawn within ±2 % (sometimes ±20 %) of the symbol's reference price, so
    about half of the limit and stop prices would trigger at once (``INVALID_PRICE``).
    """
    symbol = UNKNOWN_SYMBOL if _invalid(draw, invalid_percent // 2) else draw(st.sampled_from(tuple(symbols)))
    side = "hold" if _invalid(draw, invalid_percent // 3) else draw(st.sampled_from(tuple(sides)))
    order_type = "iceberg" if _invalid(draw, invalid_percent // 3) else draw(st.sampled_from(tuple(types)))
    is_long = side != "sell"
    if _invalid(draw, invalid_percent):
        leverage = draw(st.sampled_from((0, -1, max_leverage + 1)))
    else:
        # mostly modest leverage (positions live a while), sometimes anything up to the maximum
        leverage = draw(st.one_of(st.integers(1, min(10, max_leverage)), st.integers(1, max_leverage)))
    if _invalid(draw, invalid_percent):
        margin = draw(st.integers(-100, 0))
    else:
        margin = draw(margins if margins is not None else st.integers(100, 1_000_000))
    reference = _reference(reference_prices, symbol)
    price = None
    if order_type in ("limit", "stop"):
        price = draw(st.integers(-1, 0)) if _invalid(draw, invalid_percent // 2) else \
            _around(draw, reference, *draw(_PENDING_RANGE))
    entry = price if price is not None and price > 0 else reference
    take_profit = stop_loss = trailing_stop = None
    if _maybe(draw, 35):
        take_profit = _protective(draw, entry, above=is_long, invalid_percent=invalid_percent)
    if _maybe(draw, 35):
        stop_loss = _protective(draw, entry, above=not is_long, invalid_percent=invalid_percent)
    if _maybe(draw, 30):
        trailing_stop = draw(st.integers(-1, 0)) if _invalid(draw, invalid_percent) else \
            max(1, entry * draw(_TRAILING_BPS) // _BPS)
    slippage_bps = expected_price = None
    if _maybe(draw, 20):
        slippage_bps = draw(st.integers(0, 300))
        expected_price = _around(draw, reference, -300, 300)
        if _invalid(draw, invalid_percent):
            if draw(st.booleans()):
                slippage_bps = None   # half a slippage guard
            else:
                slippage_bps = draw(st.sampled_from((-1, _BPS)))
    expires_at = None
    if order_type != "market" and _maybe(draw, 30):
        if _invalid(draw, invalid_percent):
            expires_at = max(0, now - draw(st.integers(0, _NS_PER_S)))
        else:
            expires_at = now + draw(st.integers(_NS_PER_MS, 10 * _NS_PER_S))
    client_order_id = ""
    if _invalid(draw, invalid_percent // 3):
        client_order_id = "x" * (MAX_CLIENT_ID + 1)
    elif _maybe(draw, 60):
        client_order_id = draw(client_ids if client_ids is not None else client_order_ids())
    return PlaceOrder(
        account_id=AccountId(_pick_id(draw, accounts, invalid_percent)), symbol=symbol, side=side,
        type=order_type, margin=margin, leverage=leverage, price=price, take_profit=take_profit,
        stop_loss=stop_loss, trailing_stop=trailing_stop, slippage_bps=slippage_bps,
        expected_price=expected_price, expires_at=expires_at, client_order_id=ClientOrderId(client_order_id))


@st.composite
def cancel_orders(draw: st.DrawFn, *, orders: Sequence[Any] = (),
                  accounts: Sequence[int] = (), invalid_percent: int = 10) -> CancelOrder:
    """Cancels of pending orders (records with ``account_id`` and ``id``, e.g. the engine's
    ``Order``), sometimes named by another account or with an unknown id."""
    account, order_id, _order = _owner_and_id(draw, orders, accounts, invalid_percent)
    return CancelOrder(account_id=AccountId(account), order_id=OrderId(order_id))


@st.composite
def modify_orders(draw: st.DrawFn, *, orders: Sequence[Any] = (),
                  accounts: Sequence[int] = (), reference_prices: Optional[Mapping[str, int]] = None,
                  now: int = 0, invalid_percent: int = 10) -> ModifyOrder:
    """New price / take-profit / stop-loss / expiry for a pending order; ``0`` removes a level."""
    account, order_id, order = _owner_and_id(draw, orders, accounts, invalid_percent)
    is_long = order.is_long if order is not None else True
    reference = _reference(reference_prices, order.symbol) if order is not None else _DEFAULT_REFERENCE
    price = take_profit = stop_loss = expires_at = None
    if _maybe(draw, 60):
        price = draw(st.integers(-1, 0)) if _invalid(draw, invalid_percent // 2) else \
            _around(draw, reference, *draw(_PENDING_RANGE))
    entry = price if price is not None and price > 0 else (order.price if order is not None else reference)
    if _maybe(draw, 40):
        take_profit = 0 if draw(st.integers(0, 3)) == 0 else \
            _protective(draw, entry, above=is_long, invalid_percent=invalid_percent)
    if _maybe(draw, 40):
        stop_loss = 0 if draw(st.integers(0, 3)) == 0 else \
            _protective(draw, entry, above=not is_long, invalid_percent=invalid_percent)
    if _maybe(draw, 25):
        expires_at = draw(st.sampled_from((0, max(1, now - 1)))) if _invalid(draw, invalid_percent) \
            else now + draw(st.integers(_NS_PER_MS, 10 * _NS_PER_S))
    return ModifyOrder(account_id=AccountId(account), order_id=OrderId(order_id), price=price,
                       take_profit=take_profit, stop_loss=stop_loss, expires_at=expires_at)


@st.composite
def close_positions(draw: st.DrawFn, *, positions: Sequence[Any] = (),
                    accounts: Sequence[int] = (), invalid_percent: int = 10) -> ClosePosition:
    """Full closes (``qty=None``) and partial closes (``1..qty`` of a position record with
    ``account_id``, ``id`` and ``qty``), sometimes a zero, negative or too large quantity."""
    account, position_id, position = _owner_and_id(draw, positions, accounts, invalid_percent)
    qty = None
    if _maybe(draw, 40):
        whole = position.qty if position is not None else 10**6
        if _invalid(draw, invalid_percent):
            qty = draw(st.sampled_from((0, -1, whole + 1)))
        else:
            qty = draw(st.integers(1, whole))
    return ClosePosition(account_id=AccountId(account), position_id=PositionId(position_id), qty=qty)


@st.composite
def modify_positions(draw: st.DrawFn, *, positions: Sequence[Any] = (),
                     accounts: Sequence[int] = (),
                     reference_prices: Optional[Mapping[str, int]] = None,
                     invalid_percent: int = 10) -> ModifyPosition:
    """New take-profit / stop-loss / trailing distance for an open position; ``0`` removes."""
    account, position_id, position = _owner_and_id(draw, positions, accounts, invalid_percent)
    is_long = position.is_long if position is not None else True
    if position is not None:
        reference = _reference(reference_prices, position.symbol) if reference_prices and \
            position.symbol in reference_prices else position.open_price
    else:
        reference = _DEFAULT_REFERENCE
    take_profit = stop_loss = trailing_stop = None
    if _maybe(draw, 50):
        take_profit = 0 if draw(st.integers(0, 3)) == 0 else \
            _protective(draw, reference, above=is_long, invalid_percent=invalid_percent)
    if _maybe(draw, 50):
        stop_loss = 0 if draw(st.integers(0, 3)) == 0 else \
            _protective(draw, reference, above=not is_long, invalid_percent=invalid_percent)
    if _maybe(draw, 40):
        if draw(st.integers(0, 3)) == 0:
            trailing_stop = 0
        elif _invalid(draw, invalid_percent):
            trailing_stop = -1
        elif position is not None and position.trailing_stop is not None and draw(st.booleans()):
            trailing_stop = position.trailing_stop   # the same distance: keeps the peak
        else:
            trailing_stop = max(1, reference * draw(_TRAILING_BPS) // _BPS)
    return ModifyPosition(account_id=AccountId(account), position_id=PositionId(position_id), take_profit=take_profit,
                          stop_loss=stop_loss, trailing_stop=trailing_stop)


@st.composite
def add_margins(draw: st.DrawFn, *, positions: Sequence[Any] = (),
                accounts: Sequence[int] = (), max_amount: int = 1_000_000,
                invalid_percent: int = 10) -> AddMargin:
    """Margin added to an open position (some more than the free balance, some non-positive)."""
    account, position_id, _position = _owner_and_id(draw, positions, accounts, invalid_percent)
    amount = draw(st.integers(-100, 0)) if _invalid(draw, invalid_percent) else draw(st.integers(1, max_amount))
    return AddMargin(account_id=AccountId(account), position_id=PositionId(position_id), amount=amount)


def _symbol_command(cls: type, symbols: Sequence[str], invalid_percent: int) -> st.SearchStrategy[Any]:
    @st.composite
    def build(draw: st.DrawFn) -> Any:
        symbol = UNKNOWN_SYMBOL if not symbols or _invalid(draw, invalid_percent) else \
            draw(st.sampled_from(tuple(symbols)))
        if _maybe(draw, 30):   # an operator's halt or resume (issue 13), sometimes without a reason
            operator_id, reason = _operator(draw, invalid_percent)
            return cls(symbol=symbol, operator_id=operator_id, reason=reason)
        return cls(symbol=symbol)

    return build()


_REASONS = ("risk review", "feed outage", "client request", "compliance")


def _operator(draw: st.DrawFn, invalid_percent: int) -> tuple[int, str]:
    """An operator id and a reason (issue 13); sometimes a zero id or an empty reason."""
    if _invalid(draw, invalid_percent):
        return draw(st.sampled_from(((0, "x"), (1, ""), (-1, "x"), (1, "x" * 201))))
    return draw(st.integers(1, 5)), draw(st.sampled_from(_REASONS))


#: value ranges of the instrument fields an operator may change (valid draws)
_INSTRUMENT_CHANGES: dict[str, st.SearchStrategy[Any]] = {
    "spread_bps": st.integers(0, 50), "max_leverage": st.integers(1, 200), "min_qty": st.integers(1, 10_000),
    "maintenance_bps": st.integers(0, 5_000), "commission_ppm": st.one_of(st.none(), st.integers(0, 1_000)),
    "swap_long_ppm": st.one_of(st.none(), st.integers(-500, 500)),
    "swap_short_ppm": st.one_of(st.none(), st.integers(-500, 500)),
}


@st.composite
def update_instruments(draw: st.DrawFn, symbols: Sequence[str] = ("BTCUSD",), *,
                       invalid_percent: int = 10) -> UpdateInstrument:
    """An operator's instrument change (issue 13); sometimes an unknown field or a bad value."""
    symbol = UNKNOWN_SYMBOL if not symbols or _invalid(draw, invalid_percent) else draw(st.sampled_from(tuple(symbols)))
    fields = draw(st.lists(st.sampled_from(sorted(_INSTRUMENT_CHANGES)), min_size=1, max_size=3, unique=True))
    changes: list[list[Any]] = [[field, draw(_INSTRUMENT_CHANGES[field])] for field in fields]
    if _invalid(draw, invalid_percent):
        changes.append(draw(st.sampled_from((["price_decimals", 3], ["spread_bps", -1], ["max_leverage", 0]))))
    operator_id, reason = _operator(draw, invalid_percent)
    return UpdateInstrument(symbol=symbol, changes=changes, operator_id=operator_id, reason=reason)


@st.composite
def adjust_balances(draw: st.DrawFn, *, accounts: Sequence[int] = (), keys: Sequence[str] = (),
                    max_amount: int = 10**6, invalid_percent: int = 10) -> AdjustBalance:
    """An operator funds or debits an account (issue 13); sometimes zero, or too large a debit."""
    account = _pick_id(draw, accounts, invalid_percent)
    amount = 0 if _invalid(draw, invalid_percent) else draw(st.integers(1, max_amount)) * draw(st.sampled_from((1, -1)))
    operator_id, reason = _operator(draw, invalid_percent)
    key = draw(st.sampled_from(tuple(keys))) if keys and _maybe(draw, 50) else ""
    return AdjustBalance(account_id=AccountId(account), amount=amount, operator_id=operator_id, reason=reason,
                         idempotency_key=key)


@st.composite
def force_closes(draw: st.DrawFn, *, positions: Sequence[Any] = (), invalid_percent: int = 10) -> ForceClosePosition:
    """An operator force-closes a position (issue 13); sometimes an unknown one."""
    if positions and not _invalid(draw, invalid_percent):
        position_id = draw(st.sampled_from(tuple(positions))).id
    else:
        position_id = draw(st.integers(10**9, 10**9 + 100))
    operator_id, reason = _operator(draw, invalid_percent)
    return ForceClosePosition(position_id=PositionId(position_id), operator_id=operator_id, reason=reason)


@st.composite
def place_alerts(draw: st.DrawFn, *, accounts: Sequence[int] = (), symbols: Sequence[str] = ("BTCUSD",),
                 reference_prices: Optional[Mapping[str, int]] = None, now: int = 0,
                 client_ids: Sequence[str] = (), invalid_percent: int = 10) -> PlaceAlert:
    """A price alert around the reference price (issue 13); sometimes on the wrong side of the
    market, at a bad price or with an expiry in the past."""
    account = _pick_id(draw, accounts, invalid_percent)
    symbol = UNKNOWN_SYMBOL if not symbols or _invalid(draw, invalid_percent) else draw(st.sampled_from(tuple(symbols)))
    reference = _reference(reference_prices, symbol) if reference_prices and symbol in reference_prices \
        else _DEFAULT_REFERENCE
    condition = draw(st.sampled_from(("above", "below")))
    if _invalid(draw, invalid_percent):
        condition = draw(st.sampled_from(("above", "below", "crosses")))
        price = draw(st.sampled_from((0, -1, reference)))
    else:
        offset = max(1, reference * draw(st.integers(1, 300)) // _BPS)
        price = reference + offset if condition == "above" else max(1, reference - offset)
    expires_at = None
    if _maybe(draw, 30):
        expires_at = now + draw(st.integers(-_NS_PER_S, 60 * _NS_PER_S))
    client_alert_id = draw(st.sampled_from(tuple(client_ids))) if client_ids and _maybe(draw, 30) else ""
    note = draw(st.sampled_from(("", "take profit zone", "é" * 201 if invalid_percent else "")))
    return PlaceAlert(account_id=AccountId(account), symbol=symbol, condition=condition, price=price, note=note,
                      expires_at=expires_at, client_alert_id=client_alert_id)


@st.composite
def cancel_alerts(draw: st.DrawFn, *, alerts: Sequence[Any] = (), accounts: Sequence[int] = (),
                  invalid_percent: int = 10) -> CancelAlert:
    """Cancel an alert (the engine's ``Alert`` records carry their owner); sometimes an unknown one."""
    if alerts and not _invalid(draw, invalid_percent):
        alert = draw(st.sampled_from(tuple(alerts)))
        return CancelAlert(account_id=alert.account_id, alert_id=alert.id)
    return CancelAlert(account_id=AccountId(_pick_id(draw, accounts, invalid_percent)),
                       alert_id=draw(st.integers(10**9, 10**9 + 100)))


@st.composite
def cancel_all_afters(draw: st.DrawFn, *, accounts: Sequence[int] = (), invalid_percent: int = 10) -> CancelAllAfter:
    """Arm (a few seconds) or disarm (0) an account's dead-man switch; sometimes a negative timeout."""
    account = _pick_id(draw, accounts, invalid_percent)
    if _invalid(draw, invalid_percent):
        return CancelAllAfter(account_id=AccountId(account), timeout_ns=-1)
    timeout = 0 if draw(st.integers(0, 3)) == 0 else draw(st.integers(1, 5_000)) * _NS_PER_MS
    return CancelAllAfter(account_id=AccountId(account), timeout_ns=timeout)


@st.composite
def cancel_orders_in_bulk(draw: st.DrawFn, *, orders: Sequence[Any] = (), accounts: Sequence[int] = (),
                          invalid_percent: int = 10) -> CancelOrders:
    """Cancel several orders of one account (cancel-on-disconnect); ids of other accounts and
    unknown ids are mixed in (skipped silently)."""
    account = _pick_id(draw, accounts, invalid_percent)
    owned = [order.id for order in orders if order.account_id == account]
    others = [order.id for order in orders if order.account_id != account]
    ids = draw(st.lists(st.sampled_from(owned + others + [10**9 + 7]), max_size=6))
    reason = "bogus" if _invalid(draw, invalid_percent) else draw(st.sampled_from(("cancel_on_disconnect", "user")))
    return CancelOrders(account_id=AccountId(account), order_ids=ids, reason=reason)


def halt_symbols(symbols: Sequence[str] = ("BTCUSD",), *, invalid_percent: int = 10) -> st.SearchStrategy[HaltSymbol]:
    return _symbol_command(HaltSymbol, symbols, invalid_percent)


def resume_symbols(symbols: Sequence[str] = ("BTCUSD",), *, invalid_percent: int = 10) -> st.SearchStrategy[ResumeSymbol]:
    return _symbol_command(ResumeSymbol, symbols, invalid_percent)


@st.composite
def edge_cursors(draw: st.DrawFn, *, sources: Sequence[str] = ("stream:exness",),
                 invalid_percent: int = 10) -> EdgeCursor:
    """A process-edge stream position (split mode); sometimes malformed or going backwards."""
    if _invalid(draw, invalid_percent):
        return EdgeCursor(source=draw(st.sampled_from(("", "x" * 65))), entry_ms=draw(st.integers(-5, 5)),
                          entry_seq=draw(st.integers(-5, 5)))
    return EdgeCursor(source=draw(st.sampled_from(tuple(sources))),
                      entry_ms=draw(st.integers(0, 2**63 - 1)), entry_seq=draw(st.integers(0, 2**20)))


@st.composite
def raise_id_floors(draw: st.DrawFn, *, invalid_percent: int = 10) -> RaiseIdFloor:
    """A repair's id floor; sometimes out of range."""
    low, high = (-5, 0) if _invalid(draw, invalid_percent) else (1, 2**40)
    return RaiseIdFloor(next_order_id=OrderId(draw(st.integers(low, high))),
                        next_position_id=PositionId(draw(st.integers(1, 2**40))))


def command_strategies(*, accounts: Sequence[int] = (), symbols: Sequence[str] = ("BTCUSD",),
                       orders: Sequence[Any] = (), positions: Sequence[Any] = (),
                       reference_prices: Optional[Mapping[str, int]] = None, now: int = 0,
                       invalid_percent: int = 10) -> dict[type, st.SearchStrategy[Any]]:
    """One strategy per core input type, all drawing from the same pools."""
    around = reference_prices or {}
    return {
        Quote: st.sampled_from(tuple(symbols) or (UNKNOWN_SYMBOL,)).flatmap(
            lambda symbol: quotes(symbol, around.get(symbol))),
        Clock: clocks(),
        CreateAccount: create_accounts(accounts=accounts, invalid_percent=invalid_percent),
        Deposit: deposits(accounts=accounts, invalid_percent=invalid_percent),
        Withdraw: withdraws(accounts=accounts, invalid_percent=invalid_percent),
        PlaceOrder: place_orders(accounts=accounts, symbols=symbols, reference_prices=reference_prices,
                                 now=now, invalid_percent=invalid_percent),
        CancelOrder: cancel_orders(orders=orders, accounts=accounts, invalid_percent=invalid_percent),
        ModifyOrder: modify_orders(orders=orders, accounts=accounts, reference_prices=reference_prices,
                                   now=now, invalid_percent=invalid_percent),
        ClosePosition: close_positions(positions=positions, accounts=accounts, invalid_percent=invalid_percent),
        ModifyPosition: modify_positions(positions=positions, accounts=accounts,
                                         reference_prices=reference_prices, invalid_percent=invalid_percent),
        AddMargin: add_margins(positions=positions, accounts=accounts, invalid_percent=invalid_percent),
        HaltSymbol: halt_symbols(symbols, invalid_percent=invalid_percent),
        ResumeSymbol: resume_symbols(symbols, invalid_percent=invalid_percent),
        EdgeCursor: edge_cursors(invalid_percent=invalid_percent),
        RaiseIdFloor: raise_id_floors(invalid_percent=invalid_percent),
        OpenAccount: open_accounts(accounts=accounts, invalid_percent=invalid_percent),
        SetAccountTypes: set_account_types(invalid_percent=invalid_percent),
        UpdateInstrument: update_instruments(symbols, invalid_percent=invalid_percent),
        AdjustBalance: adjust_balances(accounts=accounts, invalid_percent=invalid_percent),
        ForceClosePosition: force_closes(positions=positions, invalid_percent=invalid_percent),
        PlaceAlert: place_alerts(accounts=accounts, symbols=symbols, reference_prices=reference_prices, now=now,
                                 invalid_percent=invalid_percent),
        CancelAlert: cancel_alerts(accounts=accounts, invalid_percent=invalid_percent),
        CancelAllAfter: cancel_all_afters(accounts=accounts, invalid_percent=invalid_percent),
        CancelOrders: cancel_orders_in_bulk(orders=orders, accounts=accounts, invalid_percent=invalid_percent),
    }


def commands(**pools: Any) -> st.SearchStrategy[Any]:
    """Any core input, drawn from the pools (see :func:`command_strategies` for the keywords)."""
    return st.one_of(*command_strategies(**pools).values())
