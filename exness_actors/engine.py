"""The trading core: a pure, deterministic state machine.

Theory of operation
-------------------
:meth:`Engine.apply` takes one sequenced input (a command from :mod:`exness_actors.commands`
carrying ``seq`` and ``ts``) and returns the list of events it caused. It does no I/O, reads no
clock and draws no randomness: time is the input's ``ts``, ids come from counters in the state.
Replaying the same inputs from the same state therefore gives byte-identical events and the
same :meth:`state_hash`.

Each handler **validates fully, then mutates**: a command is either applied completely or
answered with a single rejection event and no change. Each command gets exactly one outcome
(accepted with its effect events, ``OrderRejected``/``CommandRejected``, or
``DuplicateCommand``). Before a command runs, pending orders whose ``expires_at`` has passed are
expired; those events come first and :attr:`Engine.reply_start` says where the command's own
outcome begins.

Money (cents) is conserved exactly::

    Σ free + Σ locked + house == Σ deposits − Σ withdrawals

Margin moves free → locked when a position opens or a pending order is placed; on close the
margin leaves locked, ``credit = max(0, margin + pnl)`` goes to free (negative balance
protection) and ``margin − credit`` goes to the house (negative when the trader won).

Quotes: the raw bid/ask get the instrument's spread markup (bid down, ask up). A quote then pops
from the symbol's trigger indexes (:mod:`exness_actors.triggers`) only what it crosses and
processes it in a fixed order — liquidations, stop-losses, trailing stops, take-profits,
pending entries — ties by id. Long positions close at the bid, shorts at the ask. While a symbol
is halted its pending entries do not fire, but protective triggers and closes still work.
A position opened by a triggered entry is checked against the triggering quote at once, so no
position survives a quote that crossed its liquidation, stop-loss or take-profit. A stop-loss at
or beyond the liquidation price could never fire: it is refused when set (``INVALID_TPSL``) and
removed when a gapped fill or a partial close leaves it there.

Invariants (checked by :meth:`check_invariants`, asserted by the property tests):

* conservation as above; no free or locked balance is negative;
* an account's ``locked`` = Σ its position margins + Σ its pending orders' margins;
* every open position's and pending order's triggers are in the indexes, and nothing else is.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Optional

from sortedcontainers import SortedList

from exness_actors import codec
from exness_actors.commands import (
    MAX_CLIENT_ID, AddMargin, CancelOrder, Clock, ClosePosition, CreateAccount, Deposit,
    EdgeCursor, HaltSymbol, ModifyOrder, ModifyPosition, PlaceOrder, Quote, RaiseIdFloor, ResumeSymbol,
    Withdraw,
)
from exness_actors.errors import InvalidCommand, InvariantViolation
from exness_actors.events import (
    AccountCreated, BalanceChanged, CommandRejected, DuplicateCommand, OrderAccepted,
    OrderCancelled, OrderModified, OrderRejected, OrderTriggered, PositionClosed, PositionOpened,
    PositionUpdated, QuoteRejected, QuoteUpdated, SymbolHalted, SymbolResumed,
)
from exness_actors.instruments import CoreConfig, Instrument
from exness_actors.model import Account, Book, Order, Position, check_order_transition
from exness_actors.money import (
    CENT_DECIMALS, format_fixed, liquidation_price, pnl_cents, qty_for_margin, share_floor,
)
from exness_actors.reasons import (
    BalanceKind, CancelReason, CloseReason, OrderStatus, QuoteRejectReason, RejectReason,
)

_pack = codec.pack_fast
_NEVER = 1 << 127   # after any expires_at (ns timestamps are far smaller)
_QUOTE_UPDATED_TAG = codec.TAGS[QuoteUpdated]

__all__ = ["Engine", "STATE_FORMAT", "TRANSIENT_REASONS"]

STATE_FORMAT = 1

_LIQ, _SL, _TRAIL, _TP, _ENTRY = 0, 1, 2, 3, 4
_CLOSE_REASON = {
    _LIQ: CloseReason.LIQUIDATION.value, _SL: CloseReason.STOP_LOSS.value,
    _TRAIL: CloseReason.TRAILING_STOP.value, _TP: CloseReason.TAKE_PROFIT.value,
}
_MARKET, _LIMIT, _STOP = "market", "limit", "stop"
# Bounds on what the core accepts, so that balances, sizes and prices stay well inside the
# 64-bit integers the journal and every client can carry (the codec still carries any int
# exactly, for outcomes such as the pnl of an absurd price move).
_MAX_LEVEL = 10**12                 # ticks: a price, TP/SL level or trailing distance
MAX_AMOUNT = 10**13                 # cents: one deposit, withdrawal or margin (100 bn USD)
MAX_BALANCE = 10**15                # cents: an account's free + locked after a deposit
MAX_QTY = 1 << 62                   # quantity units of one position
MAX_ID = (1 << 63) - 1

_R = RejectReason
#: Rejections caused by the market's plumbing rather than by the command (no or stale quote, a
#: halt): a retry with the same client id or idempotency key is applied afresh, never answered
#: with the remembered rejection, so a retry after a restart or an outage can succeed.
TRANSIENT_REASONS = frozenset({_R.NO_QUOTE._value_, _R.STALE_QUOTE._value_, _R.MARKET_HALTED._value_})
_KIND_POSITION_MARGIN = BalanceKind.POSITION_MARGIN.value
_KIND_POSITION_CLOSE = BalanceKind.POSITION_CLOSE.value
_KIND_ORDER_MARGIN = BalanceKind.ORDER_MARGIN.value
_KIND_ORDER_RELEASE = BalanceKind.ORDER_RELEASE.value
#: the rolling hash folds its buffer into the digest every this many inputs
HASH_BLOCK = 4096
_FILLED = OrderStatus.FILLED.value
_PENDING = OrderStatus.PENDING.value
_CANCELLED = OrderStatus.CANCELLED.value
_EXPIRED = OrderStatus.EXPIRED.value


class _Reject(Exception):
    """Raised inside a handler's validation phase; turned into one rejection event."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        self.reason = reason._value_   # plain attribute: Enum.value is a slow descriptor
        self.message = message


_OPTIONAL_INT = frozenset({int, type(None)})


# Rejection messages reach clients verbatim, so every amount, price and quantity in them is
# written in the API's units (decimal strings at the instrument's scale), never as the core's
# cents, ticks or units. See docs/decisions.md ("issue 15, item 9").

def _money(cents: int) -> str:
    return format_fixed(cents, CENT_DECIMALS)


def _price(ticks: int, instrument: Instrument) -> str:
    return format_fixed(ticks, instrument.price_decimals)


def _qty(units: int, instrument: Instrument) -> str:
    return format_fixed(units, instrument.qty_decimals)


def _int(value: Any) -> bool:
    return type(value) is int


def _opt_int(value: Any) -> bool:
    return value is None or type(value) is int


class Engine:
    """The whole trading state and the rules that move it. See the module docstring."""

    def __init__(self, config: CoreConfig) -> None:
        self.config = config
        self.instruments = {i.symbol: i for i in config.instruments}
        self.books: dict[str, Book] = {i.symbol: Book(i) for i in config.instruments}
        self.accounts: dict[int, Account] = {}
        self.positions: dict[int, Position] = {}
        self.orders: dict[int, Order] = {}
        self.expiries: SortedList = SortedList()       # (expires_at, order_id)
        #: expires_at of the earliest pending expiry (a plain int: checked on every input)
        self.next_expiry = _NEVER
        self.next_order_id = config.id_base + 1
        self.next_position_id = config.id_base + 1
        self.house = 0
        self.total_deposits = 0
        self.total_withdrawals = 0
        self.now = 0
        self.last_seq = 0
        #: split mode: the last applied entry of each command stream, ``source -> (ms, seq)``
        #: (:class:`~exness_actors.commands.EdgeCursor`); empty in embedded mode
        self.edge_cursors: dict[str, tuple[int, int]] = {}
        # Rolling hash of the output events: the encoded events of the current block of
        # HASH_BLOCK inputs are buffered and folded into ``_hash_base`` at each block boundary,
        # so a per-input BLAKE2b is avoided; :attr:`rolling_hash` is
        # BLAKE2b(base ‖ buffer) and depends only on the events, never on when it is read.
        self._hash_base = bytes(16)
        self._hash_buffer = bytearray()
        #: index in the last ``apply`` result where the command's own outcome begins
        self.reply_start = 0
        #: statistics (not part of the state)
        self.quotes_rejected = 0
        self._stale_after = config.stale_after_ns
        self._window = config.idempotency_window
        self._handlers: dict[type, Callable[[Any, list], None]] = {
            Quote: self._on_quote, Clock: self._on_clock, CreateAccount: self._on_create_account,
            Deposit: self._on_deposit, Withdraw: self._on_withdraw, PlaceOrder: self._on_place,
            CancelOrder: self._on_cancel, ModifyOrder: self._on_modify_order,
            ClosePosition: self._on_close, ModifyPosition: self._on_modify_position,
            AddMargin: self._on_add_margin, HaltSymbol: self._on_halt, ResumeSymbol: self._on_resume,
            EdgeCursor: self._on_edge_cursor, RaiseIdFloor: self._on_raise_id_floor,
        }

    # ------------------------------------------------------------------ entry points

    def apply(self, command: Any) -> list:
        """Apply one sequenced input; return the events it caused."""
        handler = self._handlers.get(type(command))
        if handler is None:
            raise InvalidCommand(f"not a core input: {type(command).__name__}")
        seq = command.seq
        if seq != self.last_seq + 1:
            raise InvalidCommand(f"input out of sequence: got seq {seq}, expected {self.last_seq + 1}")
        ts = command.ts
        if type(ts) is not int:
            raise InvalidCommand("ts must be integer nanoseconds")
        if ts > self.now:
            self.now = ts
        events: list = []
        if self.next_expiry <= self.now:
            self._expire(events)
        self.reply_start = len(events)
        handler(command, events)
        self.last_seq = seq
        if len(events) == 1 and type(events[0]) is QuoteUpdated:
            event = events[0]   # the common case, packed without the generic dispatch
            self._hash_buffer += _pack([(_QUOTE_UPDATED_TAG, event.symbol, event.bid, event.ask, event.ts)])
        else:
            self._hash_buffer += codec.encode_many_fast(events)
        if not seq % HASH_BLOCK:
            self._hash_base = hashlib.blake2b(self._hash_base + self._hash_buffer, digest_size=16).digest()
            self._hash_buffer = bytearray()
        return events

    @property
    def rolling_hash(self) -> bytes:
        """Digest of every event emitted so far (journal checkpoints record it with the seq)."""
        return hashlib.blake2b(self._hash_base + self._hash_buffer, digest_size=16).digest()

    def submit(self, command: Any, ts: Optional[int] = None) -> list:
        """Stamp the next ``seq`` (and ``ts``, never going back in time) and apply.

        This is the sequencer's job in the engine actor; tests, benchmarks and backtests use it.
        """
        command.seq = self.last_seq + 1
        command.ts = self.now if ts is None or ts < self.now else ts
        return self.apply(command)

    # ------------------------------------------------------------------ quotes

    def _on_quote(self, quote: Quote, events: list) -> None:
        book = self.books.get(quote.symbol)
        raw_bid, raw_ask = quote.bid, quote.ask
        reason = None
        if book is None:
            reason = QuoteRejectReason.UNKNOWN_SYMBOL._value_
        elif type(raw_bid) is not int or type(raw_ask) is not int or raw_bid <= 0 or raw_ask <= 0:
            reason = QuoteRejectReason.NON_POSITIVE._value_
        elif raw_ask > _MAX_LEVEL:
            reason = QuoteRejectReason.OUT_OF_RANGE._value_
        elif raw_bid > raw_ask:
            reason = QuoteRejectReason.CROSSED._value_
        else:
            # money.mark_up_bid/ask inlined: the two calls cost ~200 ns, an eighth of the quote path
            # (tests/test_core_properties.py pins this to those functions).
            spread = book.instrument.spread_bps
            bid = raw_bid * (10_000 - spread) // 10_000 if spread else raw_bid
            ask = -(-raw_ask * (10_000 + spread) // 10_000) if spread else raw_ask
            if bid <= 0:
                reason = QuoteRejectReason.NON_POSITIVE._value_
        if reason is not None:
            self.quotes_rejected += 1
            events.append(QuoteRejected(symbol=quote.symbol, bid=raw_bid, ask=raw_ask, reason=reason))
            return
        assert book is not None
        book.bid = bid
        book.ask = ask
        book.quote_ts = ts = quote.ts
        events.append(QuoteUpdated(quote.symbol, bid, ask, ts))

        crossed: list[tuple[int, int]] = []
        long_trailing = book.long_trailing
        if long_trailing.min_peak < bid or long_trailing.best_level >= bid:
            long_trailing.on_price(bid, crossed, _TRAIL)
        short_trailing = book.short_trailing
        if short_trailing.min_peak < -ask or short_trailing.best_level >= -ask:
            short_trailing.on_price(-ask, crossed, _TRAIL)
        index = book.bid_falls
        if index.best >= bid:
            index.pop_crossed(bid, crossed)
        index = book.bid_rises
        if index.best >= -bid:
            index.pop_crossed(bid, crossed)
        index = book.ask_rises
        if index.best >= -ask:
            index.pop_crossed(ask, crossed)
        index = book.ask_falls
        if index.best >= ask:
            index.pop_crossed(ask, crossed)
        if crossed:
            self._process_crossed(book, crossed, events)

    def _process_crossed(self, book: Book, crossed: list[tuple[int, int]], events: list) -> None:
        crossed.sort()
        positions = self.positions
        for priority, ident in crossed:
            if priority == _ENTRY:
                order = self.orders.get(ident)
                if order is None:
                    continue
                if book.halted:
                    self._index_order(book, order)   # halted: entries wait for the resume
                    continue
                self._trigger_entry(book, order, events)
            else:
                position = positions.get(ident)
                if position is None:
                    continue   # closed earlier in this same quote
                price = book.bid if position.is_long else book.ask
                assert price is not None
                self._close(position, position.qty, price, _CLOSE_REASON[priority], events)

    def _on_clock(self, _clock: Clock, _events: list) -> None:
        """Time moved on; expiries already ran in :meth:`apply`."""

    def _on_edge_cursor(self, cmd: EdgeCursor, events: list) -> None:
        """Record the process edge's stream position; it never moves backwards (no events)."""
        source, ms, entry = cmd.source, cmd.entry_ms, cmd.entry_seq
        if (type(source) is not str or not source or len(source) > MAX_CLIENT_ID
                or type(ms) is not int or type(entry) is not int
                or not 0 <= ms < 2**63 or not 0 <= entry < 2**63):
            events.append(CommandRejected("EdgeCursor", None, RejectReason.INVALID_COMMAND,
                                          "source must be a short string and the entry id two ints"))
            return
        if (ms, entry) > self.edge_cursors.get(source, (-1, -1)):
            self.edge_cursors[source] = (ms, entry)

    def _on_raise_id_floor(self, cmd: RaiseIdFloor, events: list) -> None:
        """Move the id counters up to the floor (a repair's cut-off ids); no events."""
        low, high = self.config.id_base + 1, MAX_ID
        orders, positions = cmd.next_order_id, cmd.next_position_id
        if not (_int(orders) and _int(positions) and low <= orders <= high and low <= positions <= high):
            events.append(CommandRejected("RaiseIdFloor", None, RejectReason.INVALID_COMMAND,
                                          f"next_order_id and next_position_id must be integers in {low}..{high}"))
            return
        self.next_order_id = max(self.next_order_id, orders)
        self.next_position_id = max(self.next_position_id, positions)

    def edge_cursor(self, source: str) -> Optional[tuple[int, int]]:
        """The last applied entry id of ``source`` as ``(ms, seq)``, None if none."""
        return self.edge_cursors.get(source)

    def _expire(self, events: list) -> None:
        expiries = self.expiries
        now = self.now
        while expiries and expiries[0][0] <= now:
            _at, order_id = expiries.pop(0)
            self._refresh_next_expiry()
            order = self.orders[order_id]
            self._unindex_order(self.books[order.symbol], order, expiry=False)
            self._finish_order(order, _EXPIRED, CancelReason.EXPIRED._value_, events)

    # ------------------------------------------------------------------ accounts

    def _on_create_account(self, cmd: CreateAccount, events: list) -> None:
        account_id, deposit = cmd.account_id, cmd.initial_deposit
        if not _int(account_id) or not 0 < account_id <= MAX_ID:
            return self._reject_command(cmd, None, _R.INVALID_COMMAND, "account_id must be a positive integer", events)
        if account_id in self.accounts:
            return self._reject_command(cmd, account_id, _R.ACCOUNT_EXISTS, f"account {account_id} already exists", events)
        if not _int(deposit) or not 0 <= deposit <= MAX_AMOUNT:
            return self._reject_command(cmd, account_id, _R.INVALID_AMOUNT, "initial_deposit must be a non-negative number of cents", events)
        account = Account(account_id, free=deposit)
        self.accounts[account_id] = account
        self.total_deposits += deposit
        events.append(AccountCreated(account_id=account_id, balance=deposit))
        if deposit:
            events.append(BalanceChanged(account_id=account_id, kind=BalanceKind.DEPOSIT.value,
                                         free_delta=deposit, locked_delta=0, free=deposit, locked=0,
                                         ref="initial", ts=self.now))

    def _on_deposit(self, cmd: Deposit, events: list) -> None:
        self._funding(cmd, events, deposit=True)

    def _on_withdraw(self, cmd: Withdraw, events: list) -> None:
        self._funding(cmd, events, deposit=False)

    def _funding(self, cmd: Any, events: list, *, deposit: bool) -> None:
        account = self.accounts.get(cmd.account_id)
        if account is None:
            return self._reject_command(cmd, cmd.account_id, _R.UNKNOWN_ACCOUNT, "no such account", events)
        key = cmd.idempotency_key
        if type(key) is not str or len(key) > MAX_CLIENT_ID:
            return self._reject_command(cmd, cmd.account_id, _R.INVALID_COMMAND, f"idempotency_key must be a string of at most {MAX_CLIENT_ID} characters", events)
        if key:
            key = "f:" + key
            if self._duplicate(account, key, cmd, events):
                return
        amount = cmd.amount
        reason = None
        if not _int(amount) or not 0 < amount <= MAX_AMOUNT:
            reason, message = _R.INVALID_AMOUNT, f"amount must be positive and at most {_money(MAX_AMOUNT)}"
        elif deposit and account.free + account.locked + amount > MAX_BALANCE:
            reason, message = _R.INVALID_AMOUNT, f"the balance would exceed {_money(MAX_BALANCE)}"
        elif not deposit and amount > account.free:
            reason, message = _R.INSUFFICIENT_BALANCE, f"free balance {_money(account.free)} is less than {_money(amount)}"
        if reason is not None:
            if key:
                self._remember(account, key, None, reason._value_)
            return self._reject_command(cmd, account.id, reason, message, events)
        if key:
            self._remember(account, key, None, None)
        if deposit:
            account.free += amount
            self.total_deposits += amount
        else:
            account.free -= amount
            self.total_withdrawals += amount
        events.append(BalanceChanged(
            account_id=account.id, kind=(BalanceKind.DEPOSIT if deposit else BalanceKind.WITHDRAW).value,
            free_delta=amount if deposit else -amount, locked_delta=0, free=account.free,
            locked=account.locked, ref=cmd.idempotency_key, ts=self.now))

    # ------------------------------------------------------------------ orders

    def _on_place(self, cmd: PlaceOrder, events: list) -> None:
        account = self.accounts.get(cmd.account_id)
        client_id = cmd.client_order_id
        if account is None:
            events.append(OrderRejected(account_id=cmd.account_id, client_order_id=client_id if type(client_id) is str else "",
                                        reason=_R.UNKNOWN_ACCOUNT._value_, message="no such account"))
            return
        if type(client_id) is not str or len(client_id) > MAX_CLIENT_ID:
            events.append(OrderRejected(account_id=account.id, client_order_id="",
                                        reason=_R.INVALID_COMMAND._value_,
                                        message=f"client_order_id must be a string of at most {MAX_CLIENT_ID} characters"))
            return
        key = "o:" + client_id if client_id else ""
        if key and self._duplicate(account, key, cmd, events):
            return
        try:
            self._place(account, cmd, events)
        except _Reject as rejection:
            if key:
                self._remember(account, key, None, rejection.reason)
            events.append(OrderRejected(account_id=account.id, client_order_id=client_id,
                                        reason=rejection.reason, message=rejection.message))
            return
        if key:
            self._remember(account, key, self.next_order_id - 1, None)

    def _place(self, account: Account, cmd: PlaceOrder, events: list) -> None:
        # ---- validate (raises _Reject; nothing has changed yet)
        instrument = self.instruments.get(cmd.symbol)
        if instrument is None:
            raise _Reject(_R.UNKNOWN_SYMBOL, f"unknown symbol {cmd.symbol!r}")
        book = self.books[cmd.symbol]
        side, order_type = cmd.side, cmd.type
        if side == "buy":
            is_long = True
        elif side == "sell":
            is_long = False
        else:
            raise _Reject(_R.INVALID_COMMAND, f"side must be 'buy' or 'sell', not {side!r}")
        if order_type not in (_MARKET, _LIMIT, _STOP):
            raise _Reject(_R.INVALID_COMMAND, f"type must be market, limit or stop, not {order_type!r}")
        optional = _OPTIONAL_INT
        if (type(cmd.price) not in optional or type(cmd.take_profit) not in optional
                or type(cmd.stop_loss) not in optional or type(cmd.trailing_stop) not in optional
                or type(cmd.slippage_bps) not in optional or type(cmd.expected_price) not in optional
                or type(cmd.expires_at) not in optional):
            raise _Reject(_R.INVALID_COMMAND, "prices, distances and times must be integers at their scale")
        if book.halted:
            raise _Reject(_R.MARKET_HALTED, f"{cmd.symbol} is halted")
        leverage = cmd.leverage
        if not _int(leverage) or not 1 <= leverage <= instrument.max_leverage:
            raise _Reject(_R.INVALID_LEVERAGE, f"leverage must be an integer from 1 to {instrument.max_leverage}")
        margin = cmd.margin
        if not _int(margin) or not 0 < margin <= MAX_AMOUNT:
            raise _Reject(_R.INVALID_MARGIN, f"margin must be positive and at most {_money(MAX_AMOUNT)}")
        bid, ask = book.bid, book.ask
        if bid is None or ask is None:
            raise _Reject(_R.NO_QUOTE, f"no quote for {cmd.symbol} yet")
        pd, qd = instrument.price_decimals, instrument.qty_decimals
        now = self.now

        if order_type == _MARKET:
            if now - book.quote_ts > self._stale_after:
                raise _Reject(_R.STALE_QUOTE, f"the last {cmd.symbol} quote is too old to trade on")
            price = ask if is_long else bid
            if cmd.slippage_bps is not None or cmd.expected_price is not None:
                self._check_slippage(cmd, is_long, price, instrument)
            qty = qty_for_margin(margin, leverage, price, pd, qd)
            if qty < instrument.min_qty:
                raise _Reject(_R.SIZE_TOO_SMALL, f"margin × leverage buys less than the minimum size {_qty(instrument.min_qty, instrument)}")
            if qty > MAX_QTY:
                raise _Reject(_R.INVALID_MARGIN, f"margin × leverage buys more than the largest position size {_qty(MAX_QTY, instrument)}")
            close_price = bid if is_long else ask
            self._check_tpsl(is_long, close_price, cmd.take_profit, cmd.stop_loss, cmd.trailing_stop, instrument)
            liq = liquidation_price(is_long, qty, price, margin, instrument.maintenance_bps, pd, qd)
            if (bid <= liq) if is_long else (ask >= liq):
                raise _Reject(_R.WOULD_LIQUIDATE, "the position would be liquidated at the current quote; lower the leverage")
            if cmd.stop_loss is not None:
                _check_stop_loss_before_liquidation(is_long, cmd.stop_loss, liq, instrument)
            if margin > account.free:
                raise _Reject(_R.INSUFFICIENT_BALANCE, f"free balance {_money(account.free)} is less than the margin {_money(margin)}")
            # ---- mutate
            order_id = self.next_order_id
            self.next_order_id = order_id + 1
            account.free -= margin
            account.locked += margin
            # positional construction: see the events module docstring
            events.append(OrderAccepted(
                order_id, account.id, cmd.symbol, side, _MARKET, _FILLED, price, margin, leverage,
                qty, cmd.take_profit, cmd.stop_loss, cmd.trailing_stop, None, cmd.client_order_id, now))
            events.append(BalanceChanged(
                account.id, _KIND_POSITION_MARGIN, -margin, margin, account.free, account.locked,
                str(order_id), now))
            self._remember_finished(account, order_id, _FILLED)
            self._open(account, book, order_id, is_long, qty, price, margin, leverage, liq,
                       cmd.take_profit, cmd.stop_loss, cmd.trailing_stop, events)
            return

        # pending limit / stop entry
        price = cmd.price
        if price is None or price <= 0 or price > _MAX_LEVEL:
            raise _Reject(_R.INVALID_PRICE, f"a {order_type} order needs a positive price of at most {_price(_MAX_LEVEL, instrument)}")
        market = ask if is_long else bid
        if order_type == _LIMIT:
            immediate = price >= market if is_long else price <= market
        else:
            immediate = price <= market if is_long else price >= market
        if immediate:
            raise _Reject(_R.INVALID_PRICE, f"a {side} {order_type} at that price would trigger at once (market {_price(market, instrument)})")
        expires_at = cmd.expires_at
        if expires_at is not None and not now < expires_at <= MAX_ID:
            raise _Reject(_R.INVALID_EXPIRY, "expires_at must be in the future")
        qty = qty_for_margin(margin, leverage, price, pd, qd)
        if qty < instrument.min_qty:
            raise _Reject(_R.SIZE_TOO_SMALL, f"margin × leverage buys less than the minimum size {_qty(instrument.min_qty, instrument)}")
        if qty > MAX_QTY:
            raise _Reject(_R.INVALID_MARGIN, f"margin × leverage buys more than the largest position size {_qty(MAX_QTY, instrument)}")
        self._check_tpsl(is_long, price, cmd.take_profit, cmd.stop_loss, cmd.trailing_stop, instrument)
        if cmd.stop_loss is not None:
            _check_stop_loss_before_liquidation(is_long, cmd.stop_loss, liquidation_price(
                is_long, qty, price, margin, instrument.maintenance_bps, pd, qd), instrument)
        if margin > account.free:
            raise _Reject(_R.INSUFFICIENT_BALANCE, f"free balance {_money(account.free)} is less than the margin {_money(margin)}")
        # ---- mutate
        order_id = self.next_order_id
        self.next_order_id = order_id + 1
        order = Order(order_id, account.id, cmd.symbol, is_long, order_type, price, margin, leverage,
                      qty, cmd.take_profit, cmd.stop_loss, cmd.trailing_stop, expires_at,
                      cmd.client_order_id, now)
        self.orders[order_id] = order
        account.orders[order_id] = order
        account.free -= margin
        account.locked += margin
        self._index_order(book, order)
        if expires_at is not None:
            self._add_expiry(expires_at, order_id)
        events.append(OrderAccepted(
            order_id, account.id, cmd.symbol, side, order_type, _PENDING, price, margin, leverage,
            qty, cmd.take_profit, cmd.stop_loss, cmd.trailing_stop, expires_at,
            cmd.client_order_id, now))
        events.append(BalanceChanged(
            account.id, _KIND_ORDER_MARGIN, -margin, margin, account.free, account.locked,
            str(order_id), now))

    @staticmethod
    def _check_slippage(cmd: PlaceOrder, is_long: bool, price: int, instrument: Instrument) -> None:
        bps, expected = cmd.slippage_bps, cmd.expected_price
        if bps is None or expected is None:
            raise _Reject(_R.INVALID_PRICE, "slippage_bps and expected_price go together")
        if bps < 0 or bps >= 10_000 or expected <= 0:
            raise _Reject(_R.INVALID_PRICE, "slippage_bps must be in 0..9999 and expected_price positive")
        if is_long:
            moved = price * 10_000 > expected * (10_000 + bps)
        else:
            moved = price * 10_000 < expected * (10_000 - bps)
        if moved:
            raise _Reject(_R.SLIPPAGE_EXCEEDED, f"fill price {_price(price, instrument)} moved more than {bps} bps from {_price(expected, instrument)}")

    @staticmethod
    def _check_tpsl(is_long: bool, reference: int, take_profit: Optional[int],
                    stop_loss: Optional[int], trailing_stop: Optional[int], instrument: Instrument) -> None:
        """TP/SL must lie on the right side of the price a close would fill at."""
        if take_profit is not None:
            if take_profit <= 0 or take_profit > _MAX_LEVEL or (
                    take_profit <= reference if is_long else take_profit >= reference):
                raise _Reject(_R.INVALID_TPSL, f"take_profit must be {'above' if is_long else 'below'} {_price(reference, instrument)}")
        if stop_loss is not None:
            if stop_loss <= 0 or stop_loss > _MAX_LEVEL or (
                    stop_loss >= reference if is_long else stop_loss <= reference):
                raise _Reject(_R.INVALID_TPSL, f"stop_loss must be {'below' if is_long else 'above'} {_price(reference, instrument)}")
        if trailing_stop is not None and not 0 < trailing_stop <= _MAX_LEVEL:
            raise _Reject(_R.INVALID_TPSL, "trailing_stop must be a positive distance")

    def _on_cancel(self, cmd: CancelOrder, events: list) -> None:
        account = self.accounts.get(cmd.account_id)
        if account is None:
            return self._reject_command(cmd, cmd.account_id, _R.UNKNOWN_ACCOUNT, "no such account", events)
        order = account.orders.get(cmd.order_id) if _int(cmd.order_id) else None
        if order is None:
            return self._reject_missing_order(cmd, account, events)
        self._unindex_order(self.books[order.symbol], order, expiry=True)
        self._finish_order(order, _CANCELLED, CancelReason.USER._value_, events)

    def _on_modify_order(self, cmd: ModifyOrder, events: list) -> None:
        account = self.accounts.get(cmd.account_id)
        if account is None:
            return self._reject_command(cmd, cmd.account_id, _R.UNKNOWN_ACCOUNT, "no such account", events)
        order = account.orders.get(cmd.order_id) if _int(cmd.order_id) else None
        if order is None:
            return self._reject_missing_order(cmd, account, events)
        try:
            if not (_opt_int(cmd.price) and _opt_int(cmd.take_profit) and _opt_int(cmd.stop_loss)
                    and _opt_int(cmd.expires_at)):
                raise _Reject(_R.INVALID_COMMAND, "prices and times must be integers at their scale")
            book = self.books[order.symbol]
            instrument = book.instrument
            price = order.price if cmd.price is None else cmd.price
            if price <= 0 or price > _MAX_LEVEL:
                raise _Reject(_R.INVALID_PRICE, f"price must be positive and at most {_price(_MAX_LEVEL, instrument)}")
            if book.halted:
                raise _Reject(_R.MARKET_HALTED, f"{order.symbol} is halted")
            market = book.ask if order.is_long else book.bid
            assert market is not None
            if price != order.price:
                if order.type == _LIMIT:
                    immediate = price >= market if order.is_long else price <= market
                else:
                    immediate = price <= market if order.is_long else price >= market
                if immediate:
                    raise _Reject(_R.INVALID_PRICE, f"that price would trigger at once (market {_price(market, instrument)})")
            take_profit = _updated(order.take_profit, cmd.take_profit)
            stop_loss = _updated(order.stop_loss, cmd.stop_loss)
            expires_at = _updated(order.expires_at, cmd.expires_at)
            if expires_at is not None and not self.now < expires_at <= MAX_ID:
                raise _Reject(_R.INVALID_EXPIRY, "expires_at must be in the future")
            qty = qty_for_margin(order.margin, order.leverage, price, instrument.price_decimals,
                                 instrument.qty_decimals)
            if qty < instrument.min_qty:
                raise _Reject(_R.SIZE_TOO_SMALL, f"at that price the margin buys less than the minimum size {_qty(instrument.min_qty, instrument)}")
            self._check_tpsl(order.is_long, price, take_profit, stop_loss, None, instrument)
            if stop_loss is not None:
                _check_stop_loss_before_liquidation(order.is_long, stop_loss, liquidation_price(
                    order.is_long, qty, price, order.margin, instrument.maintenance_bps,
                    instrument.price_decimals, instrument.qty_decimals), instrument)
        except _Reject as rejection:
            return self._reject_command(cmd, account.id, _R(rejection.reason), rejection.message, events, ref=order.id)
        self._unindex_order(book, order, expiry=True)
        order.price, order.qty = price, qty
        order.take_profit, order.stop_loss, order.expires_at = take_profit, stop_loss, expires_at
        self._index_order(book, order)
        if expires_at is not None:
            self._add_expiry(expires_at, order.id)
        events.append(OrderModified(order_id=order.id, account_id=account.id, price=price, qty=qty,
                                    take_profit=take_profit, stop_loss=stop_loss, expires_at=expires_at))

    def _reject_missing_order(self, cmd: Any, account: Account, events: list) -> None:
        finished = account.finished_orders
        status = finished.get(cmd.order_id) if finished and _int(cmd.order_id) else None
        if status is not None:
            return self._reject_command(cmd, account.id, _R.ORDER_NOT_PENDING,
                                        f"order {cmd.order_id} is {status}", events, ref=cmd.order_id)
        return self._reject_command(cmd, account.id, _R.UNKNOWN_ORDER,
                                    f"no pending order {cmd.order_id!r} on this account", events,
                                    ref=cmd.order_id if _int(cmd.order_id) else None)

    def _trigger_entry(self, book: Book, order: Order, events: list) -> None:
        """A pending entry was crossed: open its position at the triggering quote."""
        if order.expires_at is not None:
            self._discard_expiry(order.expires_at, order.id)
        instrument = book.instrument
        is_long = order.is_long
        price = book.ask if is_long else book.bid
        assert price is not None
        pd, qd = instrument.price_decimals, instrument.qty_decimals
        qty = qty_for_margin(order.margin, order.leverage, price, pd, qd)
        if qty < instrument.min_qty:   # a gap moved the fill so far that the margin buys too little
            self._finish_order(order, _CANCELLED, CancelReason.SIZE_TOO_SMALL._value_, events)
            return
        account = self.accounts[order.account_id]
        del self.orders[order.id]
        del account.orders[order.id]
        self._remember_finished(account, order.id, _FILLED)
        liq = liquidation_price(is_long, qty, price, order.margin, instrument.maintenance_bps, pd, qd)
        stop_loss = order.stop_loss
        if stop_loss is not None and _stop_loss_inert(is_long, stop_loss, liq):
            stop_loss = None   # a gap moved the fill so far that the stop could never fire
        events.append(OrderTriggered(order_id=order.id, account_id=account.id,
                                     position_id=self.next_position_id, price=price, ts=self.now))
        position = self._open(account, book, order.id, is_long, qty, price, order.margin,
                              order.leverage, liq, order.take_profit, stop_loss,
                              order.trailing_stop, events)
        # The fill may already be past the position's own triggers (a gap): act on it now.
        bid, ask = book.bid, book.ask
        assert bid is not None and ask is not None
        if is_long:
            reason = (_LIQ if bid <= liq else
                      _SL if position.stop_loss is not None and bid <= position.stop_loss else
                      _TP if position.take_profit is not None and bid >= position.take_profit else None)
            close_price = bid
        else:
            reason = (_LIQ if ask >= liq else
                      _SL if position.stop_loss is not None and ask >= position.stop_loss else
                      _TP if position.take_profit is not None and ask <= position.take_profit else None)
            close_price = ask
        if reason is not None:
            self._close(position, position.qty, close_price, _CLOSE_REASON[reason], events)

    def _finish_order(self, order: Order, status: str, reason: str, events: list) -> None:
        """Cancel or expire a pending order (already out of the indexes): release its margin."""
        check_order_transition(_PENDING, status)
        account = self.accounts[order.account_id]
        del self.orders[order.id]
        del account.orders[order.id]
        account.free += order.margin
        account.locked -= order.margin
        self._remember_finished(account, order.id, status)
        events.append(OrderCancelled(order.id, account.id, reason, self.now))
        events.append(BalanceChanged(
            account.id, _KIND_ORDER_RELEASE, order.margin, -order.margin, account.free,
            account.locked, str(order.id), self.now))

    @staticmethod
    def _entry_index(book: Book, order: Order):
        if order.is_long:
            return book.ask_falls if order.type == _LIMIT else book.ask_rises
        return book.bid_rises if order.type == _LIMIT else book.bid_falls

    def _add_expiry(self, expires_at: int, order_id: int) -> None:
        self.expiries.add((expires_at, order_id))
        if expires_at < self.next_expiry:
            self.next_expiry = expires_at

    def _discard_expiry(self, expires_at: int, order_id: int) -> None:
        self.expiries.discard((expires_at, order_id))
        self._refresh_next_expiry()

    def _refresh_next_expiry(self) -> None:
        expiries = self.expiries
        self.next_expiry = expiries[0][0] if expiries else _NEVER

    def _index_order(self, book: Book, order: Order) -> None:
        self._entry_index(book, order).add(order.price, _ENTRY, order.id)

    def _unindex_order(self, book: Book, order: Order, *, expiry: bool) -> None:
        self._entry_index(book, order).discard(order.price, _ENTRY, order.id)
        if expiry and order.expires_at is not None:
            self._discard_expiry(order.expires_at, order.id)

    # ------------------------------------------------------------------ positions

    def _open(self, account: Account, book: Book, order_id: int, is_long: bool, qty: int,
              price: int, margin: int, leverage: int, liq: int, take_profit: Optional[int],
              stop_loss: Optional[int], trailing_stop: Optional[int], events: list) -> Position:
        position_id = self.next_position_id
        self.next_position_id = position_id + 1
        position = Position(position_id, account.id, book.instrument.symbol, is_long, qty, price,
                            margin, leverage, liq, take_profit, stop_loss, trailing_stop, order_id,
                            self.now)
        self.positions[position_id] = position
        account.positions[position_id] = position
        self._index_position(book, position)
        events.append(PositionOpened(
            position_id, account.id, order_id, position.symbol, "buy" if is_long else "sell", qty,
            price, margin, leverage, liq, take_profit, stop_loss, trailing_stop, self.now))
        return position

    @staticmethod
    def _position_triggers(book: Book, position: Position) -> list[tuple[Any, int, int]]:
        """``(index, level, priority)`` of every fixed-level trigger of the position."""
        triggers = []
        if position.is_long:
            triggers.append((book.bid_falls, position.liquidation_price, _LIQ))
            if position.stop_loss is not None:
                triggers.append((book.bid_falls, position.stop_loss, _SL))
            if position.take_profit is not None:
                triggers.append((book.bid_rises, position.take_profit, _TP))
        else:
            triggers.append((book.ask_rises, position.liquidation_price, _LIQ))
            if position.stop_loss is not None:
                triggers.append((book.ask_rises, position.stop_loss, _SL))
            if position.take_profit is not None:
                triggers.append((book.ask_falls, position.take_profit, _TP))
        return triggers

    def _index_position(self, book: Book, position: Position, *, trailing_peak: Optional[int] = None) -> None:
        pid = position.id
        for index, level, priority in self._position_triggers(book, position):
            index.add(level, priority, pid)
        if position.trailing_stop is not None:
            if position.is_long:
                peak = book.bid if trailing_peak is None else trailing_peak
                book.long_trailing.add(pid, position.trailing_stop, peak)
            else:
                peak = -book.ask if trailing_peak is None else trailing_peak
                book.short_trailing.add(pid, position.trailing_stop, peak)

    def _unindex_position(self, book: Book, position: Position) -> None:
        pid = position.id
        for index, level, priority in self._position_triggers(book, position):
            index.discard(level, priority, pid)
        if position.trailing_stop is not None:
            trailing = book.long_trailing if position.is_long else book.short_trailing
            trailing.discard(pid, position.trailing_stop)

    def _close(self, position: Position, qty: int, price: int, reason: str, events: list) -> None:
        """Close ``qty`` of ``position`` at ``price`` (the whole of it when qty == position.qty)."""
        book = self.books[position.symbol]
        instrument = book.instrument
        account = self.accounts[position.account_id]
        full = qty == position.qty
        margin = position.margin if full else share_floor(position.margin, qty, position.qty)
        pnl = pnl_cents(position.is_long, qty, position.open_price, price,
                        instrument.price_decimals, instrument.qty_decimals)
        credit = margin + pnl
        if credit < 0:
            credit = 0
        account.locked -= margin
        account.free += credit
        self.house += margin - credit
        now = self.now
        if full:
            self._unindex_position(book, position)
            del self.positions[position.id]
            del account.positions[position.id]
            remaining = 0
        else:
            if position.is_long:
                book.bid_falls.discard(position.liquidation_price, _LIQ, position.id)
            else:
                book.ask_rises.discard(position.liquidation_price, _LIQ, position.id)
            position.qty -= qty
            position.margin -= margin
            self._reprice_liquidation(book, position)
            self._drop_inert_stop_loss(book, position)
            remaining = position.qty
        events.append(PositionClosed(
            position.id, account.id, position.symbol, "buy" if position.is_long else "sell", reason,
            price, qty, position.open_price, margin, pnl, credit, remaining, now))
        events.append(BalanceChanged(
            account.id, _KIND_POSITION_CLOSE, credit, -margin, account.free, account.locked,
            str(position.id), now))
        if not full:
            events.append(self._position_updated(position, "partial_close"))
            # The remainder's liquidation price was recomputed from a floored margin share and
            # may now lie past the quote we just closed at: liquidate the rest at once then.
            if (price <= position.liquidation_price) if position.is_long else (price >= position.liquidation_price):
                self._close(position, position.qty, price, CloseReason.LIQUIDATION._value_, events)

    def _reprice_liquidation(self, book: Book, position: Position) -> None:
        """Recompute the liquidation price after the margin or size changed, and re-index it."""
        instrument = book.instrument
        position.liquidation_price = liquidation_price(
            position.is_long, position.qty, position.open_price, position.margin,
            instrument.maintenance_bps, instrument.price_decimals, instrument.qty_decimals)
        if position.is_long:
            book.bid_falls.add(position.liquidation_price, _LIQ, position.id)
        else:
            book.ask_rises.add(position.liquidation_price, _LIQ, position.id)

    @staticmethod
    def _drop_inert_stop_loss(book: Book, position: Position) -> None:
        """A stop-loss the new liquidation price has overtaken could never fire: remove it."""
        stop_loss = position.stop_loss
        if stop_loss is None or not _stop_loss_inert(position.is_long, stop_loss, position.liquidation_price):
            return
        (book.bid_falls if position.is_long else book.ask_rises).discard(stop_loss, _SL, position.id)
        position.stop_loss = None

    def _position_updated(self, position: Position, cause: str) -> PositionUpdated:
        return PositionUpdated(position_id=position.id, account_id=position.account_id, cause=cause,
                               qty=position.qty, margin=position.margin,
                               liquidation_price=position.liquidation_price,
                               take_profit=position.take_profit, stop_loss=position.stop_loss,
                               trailing_stop=position.trailing_stop)

    def _owned_position(self, cmd: Any, events: list) -> Optional[Position]:
        account = self.accounts.get(cmd.account_id)
        if account is None:
            self._reject_command(cmd, cmd.account_id, _R.UNKNOWN_ACCOUNT, "no such account", events)
            return None
        position = account.positions.get(cmd.position_id) if _int(cmd.position_id) else None
        if position is None:
            self._reject_command(cmd, account.id, _R.UNKNOWN_POSITION,
                                 f"no open position {cmd.position_id!r} on this account", events,
                                 ref=cmd.position_id if _int(cmd.position_id) else None)
        return position

    def _on_close(self, cmd: ClosePosition, events: list) -> None:
        position = self._owned_position(cmd, events)
        if position is None:
            return
        book = self.books[position.symbol]
        qty = position.qty if cmd.qty is None else cmd.qty
        reason = None
        if not _int(qty) or not 0 < qty <= position.qty:
            reason, message = _R.INVALID_QTY, f"qty must be between {_qty(1, book.instrument)} and the position's {_qty(position.qty, book.instrument)}"
        elif qty < book.instrument.min_qty or (qty < position.qty and position.qty - qty < book.instrument.min_qty):
            reason, message = _R.SIZE_TOO_SMALL, f"both the closed part and the rest must be at least the minimum size {_qty(book.instrument.min_qty, book.instrument)}"
        elif self.now - book.quote_ts > self._stale_after:
            reason, message = _R.STALE_QUOTE, f"the last {position.symbol} quote is too old to close on"
        if reason is not None:
            return self._reject_command(cmd, position.account_id, reason, message, events, ref=position.id)
        price = book.bid if position.is_long else book.ask
        assert price is not None
        self._close(position, qty, price, CloseReason.USER._value_, events)

    def _on_modify_position(self, cmd: ModifyPosition, events: list) -> None:
        position = self._owned_position(cmd, events)
        if position is None:
            return
        book = self.books[position.symbol]
        if not (_opt_int(cmd.take_profit) and _opt_int(cmd.stop_loss) and _opt_int(cmd.trailing_stop)):
            return self._reject_command(cmd, position.account_id, _R.INVALID_COMMAND,
                                        "prices and distances must be integers at their scale", events, ref=position.id)
        take_profit = _updated(position.take_profit, cmd.take_profit)
        stop_loss = _updated(position.stop_loss, cmd.stop_loss)
        trailing = _updated(position.trailing_stop, cmd.trailing_stop)
        reference = book.bid if position.is_long else book.ask
        assert reference is not None
        try:
            self._check_tpsl(position.is_long, reference,
                             take_profit if take_profit != position.take_profit else None,
                             stop_loss if stop_loss != position.stop_loss else None, trailing,
                             book.instrument)
            if stop_loss is not None and stop_loss != position.stop_loss:
                _check_stop_loss_before_liquidation(position.is_long, stop_loss, position.liquidation_price,
                                                    book.instrument)
        except _Reject as rejection:
            return self._reject_command(cmd, position.account_id, _R(rejection.reason),
                                        rejection.message, events, ref=position.id)
        trailing_peak = None
        if trailing is not None and trailing == position.trailing_stop:
            trailing_book = book.long_trailing if position.is_long else book.short_trailing
            trailing_peak = trailing_book.peak_of(position.id)   # unchanged: keep its peak
        self._unindex_position(book, position)
        position.take_profit, position.stop_loss, position.trailing_stop = take_profit, stop_loss, trailing
        self._index_position(book, position, trailing_peak=trailing_peak)
        events.append(self._position_updated(position, "modify"))

    def _on_add_margin(self, cmd: AddMargin, events: list) -> None:
        position = self._owned_position(cmd, events)
        if position is None:
            return
        account = self.accounts[position.account_id]
        amount = cmd.amount
        if not _int(amount) or not 0 < amount <= MAX_AMOUNT:
            return self._reject_command(cmd, account.id, _R.INVALID_AMOUNT, f"amount must be positive and at most {_money(MAX_AMOUNT)}", events, ref=position.id)
        if amount > account.free:
            return self._reject_command(cmd, account.id, _R.INSUFFICIENT_BALANCE,
                                        f"free balance {_money(account.free)} is less than {_money(amount)}", events, ref=position.id)
        book = self.books[position.symbol]
        account.free -= amount
        account.locked += amount
        if position.is_long:
            book.bid_falls.discard(position.liquidation_price, _LIQ, position.id)
        else:
            book.ask_rises.discard(position.liquidation_price, _LIQ, position.id)
        position.margin += amount
        self._reprice_liquidation(book, position)
        events.append(BalanceChanged(
            account_id=account.id, kind=BalanceKind.ADD_MARGIN.value, free_delta=-amount,
            locked_delta=amount, free=account.free, locked=account.locked, ref=str(position.id), ts=self.now))
        events.append(self._position_updated(position, "add_margin"))

    # ------------------------------------------------------------------ operations

    def _on_halt(self, cmd: HaltSymbol, events: list) -> None:
        book = self.books.get(cmd.symbol)
        if book is None:
            return self._reject_command(cmd, None, _R.UNKNOWN_SYMBOL, f"unknown symbol {cmd.symbol!r}", events)
        book.halted = True
        events.append(SymbolHalted(symbol=cmd.symbol))

    def _on_resume(self, cmd: ResumeSymbol, events: list) -> None:
        book = self.books.get(cmd.symbol)
        if book is None:
            return self._reject_command(cmd, None, _R.UNKNOWN_SYMBOL, f"unknown symbol {cmd.symbol!r}", events)
        book.halted = False
        events.append(SymbolResumed(symbol=cmd.symbol))

    # ------------------------------------------------------------------ idempotency

    def _duplicate(self, account: Account, key: str, cmd: Any, events: list) -> bool:
        recent = account.recent_keys
        if recent is None or key not in recent:
            return False
        order_id, reason = recent[key]
        if reason in TRANSIENT_REASONS:
            del recent[key]   # tried again: remembered anew, counted in the window from now
            return False
        events.append(DuplicateCommand(command=type(cmd).__name__, account_id=account.id,
                                       key=key[2:], order_id=order_id, reason=reason))
        return True

    def _remember(self, account: Account, key: str, order_id: Optional[int], reason: Optional[str]) -> None:
        recent = account.recent_keys
        if recent is None:
            recent = account.recent_keys = {}
        recent[key] = (order_id, reason)
        if len(recent) > self._window:
            del recent[next(iter(recent))]

    def _remember_finished(self, account: Account, order_id: int, status: str) -> None:
        finished = account.finished_orders
        if finished is None:
            finished = account.finished_orders = {}
        finished[order_id] = status
        if len(finished) > self._window:
            del finished[next(iter(finished))]

    def _reject_command(self, cmd: Any, account_id: Optional[int], reason: RejectReason, message: str,
                        events: list, *, ref: Optional[int] = None) -> None:
        events.append(CommandRejected(command=type(cmd).__name__,
                                      account_id=account_id if _int(account_id) else None,
                                      reason=reason._value_, message=message, ref=ref))

    # ------------------------------------------------------------------ state, hashing, restore

    def to_state(self) -> list[Any]:
        """The canonical, msgpack-able encoding of the whole state (sorted, no dict order)."""
        accounts = []
        for account_id in sorted(self.accounts):
            account = self.accounts[account_id]
            recent = [[k, o, r] for k, (o, r) in account.recent_keys.items()] if account.recent_keys else []
            finished = [[o, s] for o, s in account.finished_orders.items()] if account.finished_orders else []
            accounts.append([account_id, account.free, account.locked, recent, finished])
        positions = []
        for pid in sorted(self.positions):
            p = self.positions[pid]
            peak = None
            if p.trailing_stop is not None:
                book = self.books[p.symbol]
                peak = (book.long_trailing if p.is_long else book.short_trailing).peak_of(pid)
            positions.append([pid, p.account_id, p.symbol, p.is_long, p.qty, p.open_price, p.margin,
                              p.leverage, p.liquidation_price, p.take_profit, p.stop_loss,
                              p.trailing_stop, peak, p.order_id, p.opened_at])
        orders = []
        for oid in sorted(self.orders):
            o = self.orders[oid]
            orders.append([oid, o.account_id, o.symbol, o.is_long, o.type, o.price, o.margin,
                           o.leverage, o.qty, o.take_profit, o.stop_loss, o.trailing_stop,
                           o.expires_at, o.client_order_id, o.created_at])
        books = [[s, b.bid, b.ask, b.quote_ts, b.halted] for s, b in sorted(self.books.items())]
        state = [STATE_FORMAT, self.config.to_wire(), self.now, self.last_seq, self.next_order_id,
                 self.next_position_id, self.house, self.total_deposits, self.total_withdrawals,
                 [self._hash_base, bytes(self._hash_buffer)], accounts, positions, orders, books]
        if self.edge_cursors:
            # Only in split mode: embedded states (and their hashes) are unchanged by the field.
            state.append([[s, ms, n] for s, (ms, n) in sorted(self.edge_cursors.items())])
        return state

    def state_hash(self) -> bytes:
        """BLAKE2b of the canonical state encoding."""
        return self.hash_state(self.to_state())

    @staticmethod
    def hash_state(state: list[Any]) -> bytes:
        """BLAKE2b of a state from :meth:`to_state` (to hash and store it without encoding twice)."""
        return hashlib.blake2b(codec.pack(state), digest_size=32).digest()

    @classmethod
    def from_state(cls, state: list[Any]) -> "Engine":
        (fmt, config_wire, now, last_seq, next_order_id, next_position_id, house, deposits,
         withdrawals, rolling, accounts, positions, orders, books) = state[:14]
        cursors = state[14] if len(state) > 14 else []
        if fmt != STATE_FORMAT:
            raise InvalidCommand(f"unsupported state format {fmt}")
        engine = cls(CoreConfig.from_wire(config_wire))
        engine.now, engine.last_seq = now, last_seq
        engine.next_order_id, engine.next_position_id = next_order_id, next_position_id
        engine.house, engine.total_deposits, engine.total_withdrawals = house, deposits, withdrawals
        engine.edge_cursors = {source: (ms, n) for source, ms, n in cursors}
        engine._hash_base, engine._hash_buffer = bytes(rolling[0]), bytearray(rolling[1])
        for symbol, bid, ask, quote_ts, halted in books:
            book = engine.books[symbol]
            book.bid, book.ask, book.quote_ts, book.halted = bid, ask, quote_ts, halted
        for account_id, free, locked, recent, finished in accounts:
            account = Account(account_id, free, locked)
            if recent:
                account.recent_keys = {k: (o, r) for k, o, r in recent}
            if finished:
                account.finished_orders = {o: s for o, s in finished}
            engine.accounts[account_id] = account
        indexes = [index for book in engine.books.values()
                   for index in (book.bid_falls, book.bid_rises, book.ask_rises, book.ask_falls)]
        for index in indexes:
            index.begin_bulk()        # one sort per index instead of an insort per entry
        for (pid, account_id, symbol, is_long, qty, open_price, margin, leverage, liq, tp, sl,
             trailing, peak, order_id, opened_at) in positions:
            position = Position(pid, account_id, symbol, is_long, qty, open_price, margin, leverage,
                                liq, tp, sl, trailing, order_id, opened_at)
            engine.positions[pid] = position
            engine.accounts[account_id].positions[pid] = position
            engine._index_position(engine.books[symbol], position, trailing_peak=peak)
        for (oid, account_id, symbol, is_long, order_type, price, margin, leverage, qty, tp, sl,
             trailing, expires_at, client_order_id, created_at) in orders:
            order = Order(oid, account_id, symbol, is_long, order_type, price, margin, leverage, qty,
                          tp, sl, trailing, expires_at, client_order_id, created_at)
            engine.orders[oid] = order
            engine.accounts[account_id].orders[oid] = order
            engine._index_order(engine.books[symbol], order)
            if expires_at is not None:
                engine._add_expiry(expires_at, oid)
        for index in indexes:
            index.end_bulk()
        return engine

    # ------------------------------------------------------------------ invariants

    def check_invariants(self) -> None:
        """Raise :class:`InvariantViolation` if the state is inconsistent (tests, audits)."""
        free = locked = 0
        for account in self.accounts.values():
            if account.free < 0 or account.locked < 0:
                raise InvariantViolation(f"account {account.id} has a negative balance")
            expected = sum(p.margin for p in account.positions.values()) + \
                sum(o.margin for o in account.orders.values())
            if expected != account.locked:
                raise InvariantViolation(f"account {account.id}: locked {account.locked} != margins {expected}")
            free += account.free
            locked += account.locked
        if free + locked + self.house != self.total_deposits - self.total_withdrawals:
            raise InvariantViolation("money is not conserved")
        for book in self.books.values():
            indexed = {(prio, ident) for index in (book.bid_falls, book.bid_rises, book.ask_rises, book.ask_falls)
                       for _level, prio, ident in index.items()}
            expected_entries = set()
            for p in self.positions.values():
                if p.symbol == book.instrument.symbol:
                    expected_entries.add((_LIQ, p.id))
                    if p.stop_loss is not None:
                        expected_entries.add((_SL, p.id))
                    if p.take_profit is not None:
                        expected_entries.add((_TP, p.id))
            for o in self.orders.values():
                if o.symbol == book.instrument.symbol:
                    expected_entries.add((_ENTRY, o.id))
            if indexed != expected_entries:
                raise InvariantViolation(f"{book.instrument.symbol}: trigger index out of step with the book")
            trailing = {ident for ident, _d, _p in book.long_trailing.items()} | \
                {ident for ident, _d, _p in book.short_trailing.items()}
            expected_trailing = {p.id for p in self.positions.values()
                                 if p.symbol == book.instrument.symbol and p.trailing_stop is not None}
            if trailing != expected_trailing:
                raise InvariantViolation(f"{book.instrument.symbol}: trailing book out of step")

    # ------------------------------------------------------------------ read queries

    def quote(self, symbol: str) -> Optional[tuple[int, int, int]]:
        book = self.books.get(symbol)
        if book is None or book.bid is None or book.ask is None:
            return None
        return book.bid, book.ask, book.quote_ts

    def stale_symbols(self) -> list[str]:
        """Symbols whose last quote is too old to trade on now (never-quoted ones are left out)."""
        now, stale_after = self.now, self._stale_after
        return [symbol for symbol, book in self.books.items()
                if book.bid is not None and now - book.quote_ts > stale_after]

    def unrealized_pnl(self, position: Position) -> int:
        """Pnl if closed now at the current quote, floored, never below −margin."""
        book = self.books[position.symbol]
        price = book.bid if position.is_long else book.ask
        if price is None:
            return 0
        instrument = book.instrument
        pnl = pnl_cents(position.is_long, position.qty, position.open_price, price,
                        instrument.price_decimals, instrument.qty_decimals)
        return max(pnl, -position.margin)

    def trailing_level(self, position: Position) -> Optional[int]:
        """The price at which the position's trailing stop fires now."""
        if position.trailing_stop is None:
            return None
        book = self.books[position.symbol]
        if position.is_long:
            return book.long_trailing.peak_of(position.id) - position.trailing_stop
        return -book.short_trailing.peak_of(position.id) + position.trailing_stop

    def account_summary(self, account_id: int) -> Optional[dict[str, Any]]:
        """Balance (free + locked), locked, equity, free margin, margin level, unrealized pnl.

        ``margin_level`` is ``(numerator, denominator)`` of equity/locked (``None`` with nothing
        locked); the edge renders it as a percentage.
        """
        account = self.accounts.get(account_id)
        if account is None:
            return None
        unrealized = sum(self.unrealized_pnl(p) for p in account.positions.values())
        balance = account.free + account.locked
        equity = balance + unrealized
        return {
            "account_id": account_id, "balance": balance, "free": account.free,
            "locked": account.locked, "unrealized_pnl": unrealized, "equity": equity,
            "free_margin": account.free,
            "margin_level": (equity, account.locked) if account.locked else None,
        }

    def open_positions(self, account_id: int) -> list[Position]:
        account = self.accounts.get(account_id)
        return sorted(account.positions.values(), key=lambda p: p.id) if account else []

    def pending_orders(self, account_id: int) -> list[Order]:
        account = self.accounts.get(account_id)
        return sorted(account.orders.values(), key=lambda o: o.id) if account else []


def _stop_loss_inert(is_long: bool, stop_loss: int, liquidation: int) -> bool:
    """True when liquidation would always fire first (it wins a tie: it is processed first)."""
    return stop_loss <= liquidation if is_long else stop_loss >= liquidation


def _check_stop_loss_before_liquidation(is_long: bool, stop_loss: int, liquidation: int,
                                        instrument: Instrument) -> None:
    if _stop_loss_inert(is_long, stop_loss, liquidation):
        raise _Reject(_R.INVALID_TPSL, f"stop_loss must be {'above' if is_long else 'below'} the "
                      f"liquidation price {_price(liquidation, instrument)}, or the position is liquidated "
                      "before it fires")


def _updated(current: Optional[int], change: Optional[int]) -> Optional[int]:
    """``None`` keeps the current value, ``0`` removes it, anything else replaces it."""
    if change is None:
        return current
    return None if change == 0 else change
