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

Accounts (issue 16): an account opened with a type (``OpenAccount``) is ``cross`` or
``isolated`` by its type; ``CreateAccount`` makes an untyped isolated one, exactly as before
types existed. Cross accounts are settled after every input that changed them — margin call,
stop-out, margin watches, commissions and swaps: :mod:`._cross`.

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

Modules (h11-style: one public class here, the parts in private modules)
-------------------------------------------------------------------------
* :mod:`._state` — :class:`~._state.EngineState`: the fields, the idempotency memory, the
  expiry queue and the trigger indexing every handler shares;
* :mod:`._queries` and :mod:`._invariants` — read queries and the invariant checks;
* :mod:`._accounts`, :mod:`._cross`, :mod:`._positions`, :mod:`._orders`, :mod:`._market`,
  :mod:`._broker` — the handlers, each layer a subclass of the one before, so :class:`Engine` is
  one plain class (``_broker``: operator commands, price alerts, the dead-man switch, issue 13);
* :mod:`._validation` — bounds and the pure checks a handler runs before it changes anything;
* :mod:`._serialization` — the canonical state encoding, its hash, and restoring it.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from exness_actors import codec
from exness_actors.commands import (
    AddMargin, AdjustBalance, CancelAlert, CancelAllAfter, CancelOrder, CancelOrders, Clock, ClosePosition, Command,
    CreateAccount, Deposit, EdgeCursor, ForceClosePosition, HaltSymbol, ModifyOrder, ModifyPosition, OpenAccount,
    PlaceAlert, PlaceOrder, Quote, RaiseIdFloor, ResumeSymbol, SetAccountTypes, UpdateInstrument, Withdraw,
)
from exness_actors.errors import InvalidCommand
from exness_actors.events import Event, QuoteUpdated
from exness_actors.instruments import CoreConfig

from ._broker import BrokerRules
from ._hashing import HASH_BLOCK, HASH_FORMAT_V1, HASH_FORMAT_V2, HASH_FORMATS, add_input, fold, pack_block
from ._serialization import export_indexes, hash_state, restore_state, to_state
from ._state import MAX_ALERTS_PER_ACCOUNT, STATE_FORMAT, STATE_FORMAT_ACCOUNTS, STATE_FORMAT_BROKER
from ._validation import MAX_AMOUNT, MAX_BALANCE, MAX_ID, MAX_QTY, TRANSIENT_REASONS

__all__ = ["Engine", "STATE_FORMAT", "STATE_FORMAT_ACCOUNTS", "STATE_FORMAT_BROKER", "MAX_ALERTS_PER_ACCOUNT",
           "TRANSIENT_REASONS", "HASH_BLOCK", "HASH_FORMAT_V1", "HASH_FORMAT_V2", "HASH_FORMATS", "MAX_ID",
           "MAX_AMOUNT", "MAX_BALANCE", "MAX_QTY"]

_pack = codec.pack_fast
_QUOTE_UPDATED_TAG = codec.TAGS[QuoteUpdated]

Handler = Callable[[Any, list[Event]], None]


class Engine(BrokerRules):
    """The whole trading state and the rules that move it. See the module docstring."""

    def __init__(self, config: CoreConfig) -> None:
        super().__init__(config)
        self._handlers: dict[type, Handler] = {
            Quote: self._on_quote, Clock: self._on_clock, CreateAccount: self._on_create_account,
            Deposit: self._on_deposit, Withdraw: self._on_withdraw, PlaceOrder: self._on_place,
            CancelOrder: self._on_cancel, ModifyOrder: self._on_modify_order,
            ClosePosition: self._on_close, ModifyPosition: self._on_modify_position,
            AddMargin: self._on_add_margin, HaltSymbol: self._on_halt, ResumeSymbol: self._on_resume,
            EdgeCursor: self._on_edge_cursor, RaiseIdFloor: self._on_raise_id_floor,
            OpenAccount: self._on_open_account, SetAccountTypes: self._on_set_account_types,
            UpdateInstrument: self._on_update_instrument, AdjustBalance: self._on_adjust_balance,
            ForceClosePosition: self._on_force_close, PlaceAlert: self._on_place_alert,
            CancelAlert: self._on_cancel_alert, CancelAllAfter: self._on_cancel_all_after,
            CancelOrders: self._on_cancel_orders,
        }

    # ------------------------------------------------------------------ entry points

    def apply(self, command: Command) -> list[Event]:
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
        events: list[Event] = []
        if self.next_expiry <= self.now:
            self._expire(events)
        if self.next_rollover <= self.now:
            self._rollover(events)
        self.reply_start = len(events)
        handler(command, events)
        if self._dirty:
            self._settle_accounts(events)
        self.last_seq = seq
        if self._hash_v2:
            add_input(self._hash_items, events)
        elif len(events) == 1 and type(events[0]) is QuoteUpdated:
            event = events[0]   # the common case, packed without the generic dispatch
            self._hash_buffer += _pack([(_QUOTE_UPDATED_TAG, event.symbol, event.bid, event.ask, event.ts)])
        else:
            self._hash_buffer += codec.encode_many_fast(events)
        if not seq % HASH_BLOCK:
            self._hash_base = fold(self._hash_base, self._hash_block())
            self._hash_buffer = bytearray()
            self._hash_items = []
        return events

    def _hash_block(self) -> bytes:
        """The rolling hash's current block, as it is folded (:mod:`._hashing`)."""
        return pack_block(self._hash_items) if self._hash_v2 else bytes(self._hash_buffer)

    @property
    def rolling_hash(self) -> bytes:
        """Digest of every event emitted so far (journal checkpoints record it with the seq)."""
        return fold(self._hash_base, self._hash_block())

    def submit(self, command: Command, ts: Optional[int] = None) -> list[Event]:
        """Stamp the next ``seq`` (and ``ts``, never going back in time) and apply.

        This is the sequencer's job in the engine actor; tests, benchmarks and backtests use it.
        """
        command.seq = self.last_seq + 1
        command.ts = self.now if ts is None or ts < self.now else ts
        return self.apply(command)

    # ------------------------------------------------------------------ state, hashing, restore

    def to_state(self) -> list[Any]:
        """The canonical, msgpack-able encoding of the whole state (sorted, no dict order)."""
        return to_state(self)

    def state_hash(self) -> bytes:
        """BLAKE2b of the canonical state encoding."""
        return hash_state(to_state(self))

    @staticmethod
    def hash_state(state: list[Any]) -> bytes:
        """BLAKE2b of a state from :meth:`to_state` (to hash and store it without encoding twice)."""
        return hash_state(state)

    def export_indexes(self) -> list[Any]:
        """The trigger indexes ready to load: a snapshot stores them beside :meth:`to_state`
        (taken at the same seq), so :meth:`from_state` need not re-derive them (._serialization)."""
        return export_indexes(self)

    @classmethod
    def from_state(cls, state: list[Any], indexes: Any = None) -> "Engine":
        """The engine of a :meth:`to_state` encoding; ``indexes`` from :meth:`export_indexes` of
        the same engine are loaded instead of re-derived (ignored if they do not fit the state)."""
        if state[0] not in (STATE_FORMAT, STATE_FORMAT_ACCOUNTS, STATE_FORMAT_BROKER):
            raise InvalidCommand(f"unsupported state format {state[0]}")
        engine = cls(CoreConfig.from_wire(state[1]))
        restore_state(engine, state, indexes)
        engine._watch_all()
        return engine
