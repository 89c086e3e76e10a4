"""A ready Hypothesis state machine that trades against the core and checks it after every step.

Theory of operation
-------------------
:class:`TradingMachine` owns one :class:`~exness_actors.engine.Engine` (a small fixed set of
instruments with spreads; config variants with and without a maintenance ratio, with a tiny
idempotency window, and as engine shards whose ids need all 53 bits). Every rule builds one
input with the strategies of :mod:`exness_actors.testing.strategies` and hands it to
:meth:`TradingMachine.submit`, which
advances the machine's clock, stamps ``seq``/``ts`` through ``Engine.submit``, records a codec
copy of the sequenced input and its events, and checks the step:

* **one outcome**: from ``engine.reply_start`` on, a ``PlaceOrder`` has exactly one of
  ``OrderAccepted``/``OrderRejected``/``DuplicateCommand``; any other command has a
  ``CommandRejected`` alone, a ``DuplicateCommand`` alone, or effect events and no rejection;
  before ``reply_start`` there are only expiries;
* **rejections change nothing**: balances, positions, orders and books are as before (the
  idempotency memory may record the rejection — that is how a repeat returns it);
* **idempotency**: a model of each account's bounded key window predicts exactly which
  ``client_order_id``/idempotency keys are duplicates and what they answer (a transient
  rejection is tried afresh);
* **quotes**: the spread markup, which quotes are refused, and that every close or fill the
  quote caused was really crossed (by the new bid for longs, the ask for shorts) with the right
  reason, in the documented order; afterwards nothing crossed survives
  (:func:`~exness_actors.testing.invariants.assert_triggers_respected`);
* **money**: every close's pnl and credit recomputed with :mod:`exness_actors.money`.

After every step the invariants run: :func:`~exness_actors.testing.invariants.check_all`
against the machine's own ledger of deposits and withdrawals, the idempotency model, and a model
of each trailing stop's peak. At the end of each run (:meth:`teardown`) the recorded inputs are
replayed from an empty engine (same events, same state hash, same rolling hash), and each
snapshot taken during the run is packed through msgpack, restored and continued with the rest of
the inputs: it must end exactly where the live engine did.

Subclass it and add rules that call ``self.submit(command, advance=…)``; use
``TradingMachine.TestCase`` (or your subclass's) as the pytest test class.
"""

from __future__ import annotations

from typing import Any, Optional

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from exness_actors import codec
from exness_actors.commands import (
    MAX_CLIENT_ID, AccountId, CancelOrders, ClientOrderId, Clock, CreateAccount, Deposit, OrderId, PlaceOrder,
    Quote, UpdateInstrument, Withdraw,
)
from exness_actors.engine import TRANSIENT_REASONS, Engine
from exness_actors.events import (
    AlertCancelled, AlertTriggered, BalanceChanged, CommandRejected, DeadManSwitchFired, DuplicateCommand, OrderAccepted, OrderCancelled,
    OrderRejected, OrderTriggered, PositionClosed, PositionOpened, PositionUpdated, QuoteRejected,
    QuoteUpdated,
)
from exness_actors.instruments import MAX_SHARD, CoreConfig, Instrument
from exness_actors.money import liquidation_price, mark_up_ask, mark_up_bid, pnl_cents, qty_for_margin
from exness_actors.testing.invariants import assert_triggers_respected, check_all, copy_input, replay
from exness_actors.testing.strategies import (
    add_margins, adjust_balances, cancel_alerts, cancel_all_afters, cancel_orders, cancel_orders_in_bulk,
    close_positions, create_accounts, deposits, force_closes, halt_symbols, modify_orders, modify_positions,
    place_alerts, place_orders, price_paths, quotes, resume_symbols, time_steps, withdraws,
)
from exness_actors.triggers import PRIORITY

__all__ = ["TradingMachine", "machine_config", "ledger_view", "index_view", "SYMBOLS", "START_PRICES", "STALE_AFTER_NS"]

_NS_PER_MS = 1_000_000
_NS_PER_S = 1_000_000_000

STALE_AFTER_NS = 5 * _NS_PER_S
SYMBOLS = ("BTCUSD", "XRPUSD")
#: Raw mid prices the random walks start from: 65 000.00 and 0.5000.
START_PRICES = {"BTCUSD": 6_500_000, "XRPUSD": 5_000}

_ORDER_OUTCOMES = (OrderAccepted, OrderRejected, DuplicateCommand)
_REFUSALS = (CommandRejected, OrderRejected, DuplicateCommand)
#: close reason -> processing order within a quote (the core's own table, less pending entries)
_CLOSE_PRIORITY = {reason: priority for reason, priority in PRIORITY.items()
                   if reason not in ("entry", "margin_check", "alert")}
_ENTRY_PRIORITY = PRIORITY["entry"]
_ALERT_PRIORITY = PRIORITY["alert"]

#: Time between ordinary steps: short, so quotes stay fresh; rarely past the staleness limit.
_STEP = time_steps(STALE_AFTER_NS, max_step_ns=20 * _NS_PER_MS, stale_percent=1)
#: A clock tick: far enough to pass pending orders' expiries, sometimes past the staleness limit.
_TICK = time_steps(STALE_AFTER_NS, max_step_ns=2 * _NS_PER_S, stale_percent=10)
_FUNDING_KEYS = st.sampled_from(("k1", "k2", "k3", "k4"))
#: Client order ids from a wide space: repeats are left to the ``repeat_key`` rule (mostly).
_CLIENT_IDS = st.integers(0, 10**6).map(lambda n: f"c{n}")
#: Share of invalid fields in the machine's draws (each command has several fields).
_INVALID_PERCENT = 4
_MAX_ACCOUNTS = 5
_MAX_SNAPSHOTS = 3


def machine_config(*, maintenance_bps: int = 0, idempotency_window: int = 1000, shard: int = 0) -> CoreConfig:
    """The machine's instruments: a BTC-like one (2 price and 6 quantity decimals, 2 bps spread)
    and an XRP-like one (4 price decimals, whole units, 15 bps spread, leverage up to 20), as
    engine ``shard`` of a split deployment (its ids start at ``shard × SHARD_ID_SPAN + 1``)."""
    config = CoreConfig(
        instruments=(
            Instrument(symbol="BTCUSD", price_decimals=2, qty_decimals=6, max_leverage=100,
                       spread_bps=2, min_qty=100, maintenance_bps=maintenance_bps),
            Instrument(symbol="XRPUSD", price_decimals=4, qty_decimals=0, max_leverage=20,
                       spread_bps=15, min_qty=1, maintenance_bps=maintenance_bps),
        ),
        stale_after_ns=STALE_AFTER_NS,
        idempotency_window=idempotency_window,
    )
    return config.for_shard(shard)


class TradingMachine(RuleBasedStateMachine):
    """Drives an engine with random, mostly valid inputs and checks every step (module docstring)."""

    #: Config variants the run starts from (the first rule picks one).
    CONFIG_VARIANTS: tuple[CoreConfig, ...] = (
        machine_config(),
        machine_config(maintenance_bps=500),
        machine_config(idempotency_window=3),
        machine_config(maintenance_bps=2_500, idempotency_window=3),
        machine_config(shard=18),
        machine_config(maintenance_bps=500, shard=MAX_SHARD),
    )

    def __init__(self) -> None:
        super().__init__()
        self.config: CoreConfig = self.CONFIG_VARIANTS[0]
        self.engine = Engine(self.config)
        self.ts = 0
        #: codec copies of the sequenced inputs, and the events each one caused
        self.inputs: list[Any] = []
        self.outputs: list[list[Any]] = []
        #: (number of inputs applied, msgpack of the state) at each snapshot taken
        self.snapshots: list[tuple[int, bytes]] = []
        #: where each symbol's random walk stands (raw mid, ticks)
        self.mids = dict(START_PRICES)
        #: the machine's own ledger, summed from BalanceChanged events
        self.deposited = 0
        self.withdrawn = 0
        #: account -> idempotency key ("o:…"/"f:…") -> (order id, reject reason), oldest first
        self.recent: dict[AccountId, dict[str, tuple[Optional[OrderId], Optional[str]]]] = {}
        #: position id -> [is_long, symbol, distance, best price seen since the stop was set]
        self.trailing: dict[int, list[Any]] = {}
        self._applying = False

    # ------------------------------------------------------------------ helpers for rules

    @property
    def account_ids(self) -> list[int]:
        return sorted(self.engine.accounts)

    def reference_prices(self) -> dict[str, int]:
        """Each symbol's current mid (marked-up quote), or the walk's mid before any quote."""
        out = {}
        for symbol in self.engine.books:
            quote = self.engine.quote(symbol)
            out[symbol] = (quote[0] + quote[1]) // 2 if quote else self.mids.get(symbol, 10**6)
        return out

    def instrument(self, symbol: str) -> Instrument:
        return self.engine.instruments[symbol]

    def submit(self, command: Any, *, advance: int = 0) -> list[Any]:
        """Advance the clock by ``advance`` ns, apply ``command``, record it and check the step."""
        engine = self.engine
        self.ts += advance
        before = self._ledger_view()
        key = self._idempotency_key(command)
        trigger_view = self._trigger_view() if isinstance(command, Quote) else None
        self._applying = True
        events = engine.submit(command, ts=self.ts)
        self._applying = False
        self.inputs.append(copy_input(command))
        self.outputs.append(events)
        start = engine.reply_start
        reply = events[start:]
        self._check_expiries(events[:start])
        self._check_outcome(command, reply)
        refused = any(isinstance(event, _REFUSALS + (QuoteRejected,)) for event in reply)
        if refused and start == 0 and self._ledger_view() != before:
            raise AssertionError(f"{type(command).__name__} was refused ({reply}) but the state changed")
        self._check_idempotency(command, key, reply)
        self._check_stale_reasons(command, reply)
        self._check_closes(events)
        if isinstance(command, PlaceOrder):
            self._check_market_fill(command, reply)
        if isinstance(command, Quote):
            assert trigger_view is not None
            self._check_quote(command, reply, trigger_view)
        self._follow_trailing(events)
        if isinstance(command, Quote) and command.symbol in engine.books:
            assert_triggers_respected(engine, command.symbol)
        return events

    # ------------------------------------------------------------------ rules

    @initialize(variant=st.integers(0, 100), balances=st.lists(st.integers(10_000, 10**7), min_size=2, max_size=2))
    def start(self, variant: int, balances: list[int]) -> None:
        self.config = self.CONFIG_VARIANTS[variant % len(self.CONFIG_VARIANTS)]
        self.engine = Engine(self.config)
        for account_id, amount in enumerate(balances, start=1):
            self.submit(CreateAccount(account_id=AccountId(account_id), initial_deposit=amount), advance=1)
        for symbol in SYMBOLS:
            self.submit(Quote(symbol=symbol, bid=START_PRICES[symbol], ask=START_PRICES[symbol]), advance=1)

    @precondition(lambda self: len(self.engine.accounts) < _MAX_ACCOUNTS)
    @rule(data=st.data(), advance=_STEP)
    def create_account(self, data: st.DataObject, advance: int) -> None:
        unused = [i for i in range(1, _MAX_ACCOUNTS + 1) if i not in self.engine.accounts]
        command = data.draw(create_accounts(accounts=self.account_ids, new_ids=st.sampled_from(unused),
                                            invalid_percent=_INVALID_PERCENT))
        self.submit(command, advance=advance)

    @rule(data=st.data(), advance=_STEP)
    def deposit(self, data: st.DataObject, advance: int) -> None:
        self.submit(data.draw(deposits(accounts=self.account_ids, keys=_FUNDING_KEYS)), advance=advance)

    @rule(data=st.data(), advance=_STEP)
    def withdraw(self, data: st.DataObject, advance: int) -> None:
        command = data.draw(withdraws(accounts=self.account_ids, keys=_FUNDING_KEYS, max_amount=2 * 10**6))
        self.submit(command, advance=advance)

    @rule(data=st.data(), advance=_STEP, symbol=st.sampled_from(SYMBOLS))
    def quote(self, data: st.DataObject, advance: int, symbol: str) -> None:
        command = data.draw(quotes(symbol, around=self.mids[symbol]))
        events = self.submit(command, advance=advance)
        if isinstance(events[self.engine.reply_start], QuoteUpdated):
            self.mids[symbol] = (command.bid + command.ask) // 2

    @rule(data=st.data(), symbol=st.sampled_from(SYMBOLS))
    def quote_path(self, data: st.DataObject, symbol: str) -> None:
        for command in data.draw(price_paths(symbol, self.mids[symbol], max_size=4)):
            events = self.submit(command, advance=data.draw(_STEP))
            if isinstance(events[self.engine.reply_start], QuoteUpdated):
                self.mids[symbol] = (command.bid + command.ask) // 2

    @precondition(lambda self: self.engine.positions or self.engine.orders)
    @rule(data=st.data(), advance=_STEP, offset=st.sampled_from((0, 0, -1, 1)))
    def quote_at_a_trigger(self, data: st.DataObject, advance: int, offset: int) -> None:
        """A quote whose marked-up bid or ask lands exactly on (or one tick beside) a trigger
        level: liquidation, stop-loss, take-profit, trailing level or pending entry price."""
        engine = self.engine
        levels: list[tuple[str, bool, int]] = []   # (symbol, on the bid?, level)
        for position in sorted(engine.positions.values(), key=lambda p: p.id):
            on_bid = position.is_long
            for level in (position.liquidation_price, position.stop_loss, position.take_profit,
                          engine.trailing_level(position)):
                if level is not None:
                    levels.append((position.symbol, on_bid, level))
        for order in sorted(engine.orders.values(), key=lambda o: o.id):
            levels.append((order.symbol, not order.is_long, order.price))
        symbol, on_bid, level = data.draw(st.sampled_from(levels))
        level = max(level + offset, 1)
        spread = self.instrument(symbol).spread_bps
        gap = data.draw(st.integers(0, max(1, level // 5_000)))
        if on_bid:
            raw_bid = _raw_bid_for(level, spread)
            raw_ask = raw_bid + gap
        else:
            raw_ask = _raw_ask_for(level, spread)
            raw_bid = max(raw_ask - gap, 1)
        command = Quote(symbol=symbol, bid=raw_bid, ask=raw_ask)
        events = self.submit(command, advance=advance)
        if isinstance(events[self.engine.reply_start], QuoteUpdated):
            self.mids[symbol] = (raw_bid + raw_ask) // 2

    def _order(self, data: st.DataObject, symbol: str, types: tuple[str, ...], now: int) -> PlaceOrder:
        return data.draw(place_orders(
            accounts=self.account_ids, symbols=(symbol,), reference_prices=self.reference_prices(),
            types=types, max_leverage=self.instrument(symbol).max_leverage, now=now,
            client_ids=_CLIENT_IDS, invalid_percent=_INVALID_PERCENT))

    @rule(data=st.data(), advance=_STEP, symbol=st.sampled_from(SYMBOLS))
    def market_order(self, data: st.DataObject, advance: int, symbol: str) -> None:
        self.submit(self._order(data, symbol, ("market",), self.ts + advance), advance=advance)

    @rule(data=st.data(), advance=_STEP, symbol=st.sampled_from(SYMBOLS))
    def open_position(self, data: st.DataObject, advance: int, symbol: str) -> None:
        """A valid market order (the most common input): keeps positions around to act on."""
        command = data.draw(place_orders(
            accounts=self.account_ids, symbols=(symbol,), reference_prices=self.reference_prices(),
            types=("market",), max_leverage=self.instrument(symbol).max_leverage,
            margins=st.integers(100, 200_000), client_ids=_CLIENT_IDS, invalid_percent=0))
        self.submit(command, advance=advance)

    @rule(data=st.data(), advance=_STEP, symbol=st.sampled_from(SYMBOLS))
    def pending_order(self, data: st.DataObject, advance: int, symbol: str) -> None:
        self.submit(self._order(data, symbol, ("limit", "stop"), self.ts + advance), advance=advance)

    @precondition(lambda self: self.engine.orders)
    @rule(data=st.data(), advance=_STEP)
    def cancel_order(self, data: st.DataObject, advance: int) -> None:
        command = data.draw(cancel_orders(orders=list(self.engine.orders.values()), accounts=self.account_ids,
                                          invalid_percent=_INVALID_PERCENT))
        self.submit(command, advance=advance)

    @precondition(lambda self: self.engine.orders)
    @rule(data=st.data(), advance=_STEP)
    def modify_order(self, data: st.DataObject, advance: int) -> None:
        command = data.draw(modify_orders(orders=list(self.engine.orders.values()), accounts=self.account_ids,
                                          reference_prices=self.reference_prices(), now=self.ts + advance,
                                          invalid_percent=_INVALID_PERCENT))
        self.submit(command, advance=advance)

    @precondition(lambda self: self.engine.positions)
    @rule(data=st.data(), advance=_STEP)
    def close_position(self, data: st.DataObject, advance: int) -> None:
        command = data.draw(close_positions(positions=list(self.engine.positions.values()),
                                            accounts=self.account_ids, invalid_percent=_INVALID_PERCENT))
        self.submit(command, advance=advance)

    @precondition(lambda self: self.engine.positions)
    @rule(data=st.data(), advance=_STEP)
    def modify_position(self, data: st.DataObject, advance: int) -> None:
        command = data.draw(modify_positions(positions=list(self.engine.positions.values()),
                                             accounts=self.account_ids,
                                             reference_prices=self.reference_prices(),
                                             invalid_percent=_INVALID_PERCENT))
        self.submit(command, advance=advance)

    @precondition(lambda self: self.engine.positions)
    @rule(data=st.data(), advance=_STEP)
    def add_margin(self, data: st.DataObject, advance: int) -> None:
        command = data.draw(add_margins(positions=list(self.engine.positions.values()),
                                        accounts=self.account_ids, max_amount=200_000,
                                        invalid_percent=_INVALID_PERCENT))
        self.submit(command, advance=advance)

    @rule(data=st.data(), advance=_STEP)
    def halt_or_resume(self, data: st.DataObject, advance: int) -> None:
        # Halts are rarer than resumes, so a symbol is halted for a few steps at a time.
        strategy = halt_symbols(SYMBOLS) if data.draw(st.integers(0, 3)) == 0 else resume_symbols(SYMBOLS)
        self.submit(data.draw(strategy), advance=advance)

    # issue 13: the broker's side (no idempotency keys here: the window model covers orders and funding)

    @rule(data=st.data(), advance=_STEP, symbol=st.sampled_from(SYMBOLS))
    def place_alert(self, data: st.DataObject, advance: int, symbol: str) -> None:
        self.submit(data.draw(place_alerts(accounts=self.account_ids, symbols=(symbol,),
                                           reference_prices=self.reference_prices(), now=self.ts + advance,
                                           invalid_percent=_INVALID_PERCENT)), advance=advance)

    @precondition(lambda self: self.engine.alerts)
    @rule(data=st.data(), advance=_STEP)
    def cancel_alert(self, data: st.DataObject, advance: int) -> None:
        self.submit(data.draw(cancel_alerts(alerts=list(self.engine.alerts.values()), accounts=self.account_ids,
                                            invalid_percent=_INVALID_PERCENT)), advance=advance)

    @rule(data=st.data(), advance=_STEP)
    def cancel_all_after(self, data: st.DataObject, advance: int) -> None:
        self.submit(data.draw(cancel_all_afters(accounts=self.account_ids, invalid_percent=_INVALID_PERCENT)),
                    advance=advance)

    @precondition(lambda self: self.engine.orders)
    @rule(data=st.data(), advance=_STEP)
    def cancel_orders_in_bulk(self, data: st.DataObject, advance: int) -> None:
        self.submit(data.draw(cancel_orders_in_bulk(orders=list(self.engine.orders.values()),
                                                    accounts=self.account_ids, invalid_percent=_INVALID_PERCENT)),
                    advance=advance)

    @rule(data=st.data(), advance=_STEP)
    def adjust_balance(self, data: st.DataObject, advance: int) -> None:
        self.submit(data.draw(adjust_balances(accounts=self.account_ids, invalid_percent=_INVALID_PERCENT)),
                    advance=advance)

    @precondition(lambda self: self.engine.positions)
    @rule(data=st.data(), advance=_STEP)
    def force_close(self, data: st.DataObject, advance: int) -> None:
        self.submit(data.draw(force_closes(positions=list(self.engine.positions.values()),
                                           invalid_percent=_INVALID_PERCENT)), advance=advance)

    @rule(data=st.data(), advance=_STEP, symbol=st.sampled_from(SYMBOLS))
    def update_instrument(self, data: st.DataObject, advance: int, symbol: str) -> None:
        """Spread, leverage and fee changes (the minimum size and maintenance ratio would move the
        goalposts of positions already open, which check_all holds to the current instrument)."""
        fields = data.draw(st.lists(st.sampled_from(("spread_bps", "max_leverage", "commission_ppm")),
                                    min_size=1, max_size=2, unique=True))
        values = {"spread_bps": st.integers(0, 30), "max_leverage": st.integers(1, 100),
                  "commission_ppm": st.one_of(st.none(), st.integers(0, 100))}
        changes: list[list[Any]] = [[field, data.draw(values[field])] for field in fields]
        self.submit(UpdateInstrument(symbol=symbol, changes=changes, operator_id=1, reason="machine"), advance=advance)

    @rule(advance=_TICK)
    def clock_tick(self, advance: int) -> None:
        self.submit(Clock(), advance=advance)

    @precondition(lambda self: any(self.recent.values()))
    @rule(data=st.data(), advance=_STEP)
    def repeat_key(self, data: st.DataObject, advance: int) -> None:
        """Repeat a remembered client_order_id / idempotency key: exactly one DuplicateCommand
        answering the original outcome, and nothing else changes — unless the original was a
        transient rejection, which is tried afresh (the step's own idempotency check holds it)."""
        account_id = data.draw(st.sampled_from([a for a, keys in sorted(self.recent.items()) if keys]))
        key = data.draw(st.sampled_from(list(self.recent[account_id])))
        order_id, reason = self.recent[account_id][key]
        if key.startswith("o:"):
            fresh = data.draw(place_orders(accounts=[account_id], symbols=SYMBOLS, invalid_percent=0,
                                           reference_prices=self.reference_prices(), now=self.ts))
            fresh.client_order_id = ClientOrderId(key[2:])
            fresh.account_id = account_id
            command: Any = fresh
        else:
            cls = data.draw(st.sampled_from((Deposit, Withdraw)))
            command = cls(account_id=account_id, amount=data.draw(st.integers(1, 10**6)),
                          idempotency_key=key[2:])
        counts = (len(self.engine.positions), len(self.engine.orders),
                  {a.id: (a.free, a.locked) for a in self.engine.accounts.values()})
        events = self.submit(command, advance=advance)
        if reason in TRANSIENT_REASONS:
            return
        reply = events[self.engine.reply_start:]
        expected = DuplicateCommand(command=type(command).__name__, account_id=account_id,
                                    key=key[2:], order_id=order_id, reason=reason)
        if reply != [expected]:
            raise AssertionError(f"repeating key {key!r} gave {reply}, expected [{expected}]")
        if self.engine.reply_start == 0:
            after = (len(self.engine.positions), len(self.engine.orders),
                     {a.id: (a.free, a.locked) for a in self.engine.accounts.values()})
            if after != counts:
                raise AssertionError(f"a duplicate changed positions/orders/balances: {counts} -> {after}")

    @precondition(lambda self: len(self.snapshots) < _MAX_SNAPSHOTS)
    @rule()
    def take_snapshot(self) -> None:
        """Remember the state and its stored trigger indexes, packed like a real snapshot; check
        it restores to the same hash, and that loading the stored indexes gives exactly the
        indexes re-deriving them gives (contents and order; margin watches included, which both
        re-derive)."""
        blob = codec.pack([self.engine.to_state(), self.engine.export_indexes()])
        state, indexes = codec.unpack(blob)
        restored = Engine.from_state(state, indexes)
        if restored.state_hash() != self.engine.state_hash():
            raise AssertionError("a restored snapshot has a different state hash")
        if index_view(restored) != index_view(Engine.from_state(state)):
            raise AssertionError("the loaded trigger indexes differ from the re-derived ones")
        if ledger_view(restored) != ledger_view(self.engine):
            raise AssertionError(f"a restored snapshot differs from the live engine:\n"
                                 f"{ledger_view(restored)}\n{ledger_view(self.engine)}")
        check_all(restored)
        self.snapshots.append((len(self.inputs), blob))

    # ------------------------------------------------------------------ invariants

    @invariant()
    def state_is_consistent(self) -> None:
        check_all(self.engine, deposits=self.deposited, withdrawals=self.withdrawn)

    @invariant()
    def idempotency_window_matches_model(self) -> None:
        for account_id, account in self.engine.accounts.items():
            actual = list((account.recent_keys or {}).items())
            expected = list(self.recent.get(account_id, {}).items())
            if actual != expected:
                raise AssertionError(f"account {account_id} remembers keys {actual}, the model {expected}")

    @invariant()
    def trailing_stops_follow_the_market(self) -> None:
        engine = self.engine
        actual = {p.id: engine.trailing_level(p) for p in engine.positions.values()
                  if p.trailing_stop is not None}
        expected = {pid: (best - distance if is_long else best + distance)
                    for pid, (is_long, _symbol, distance, best) in self.trailing.items()}
        if actual != expected:
            raise AssertionError(f"trailing-stop levels {actual}, the model says {expected}")

    def teardown(self) -> None:
        if self._applying or not self.inputs:
            return   # the run already failed inside apply; its error is the one to report
        self.check_replay()
        self.check_snapshots()

    def check_replay(self) -> None:
        """Replaying the recorded inputs from empty gives the same events, state and hashes."""
        engine, outputs = replay(self.inputs, self.config)
        _same_outputs(outputs, self.outputs, 0, "replay")
        if engine.state_hash() != self.engine.state_hash():
            raise AssertionError("replay ended in a different state hash than the live engine")
        if engine.rolling_hash != self.engine.rolling_hash:
            raise AssertionError("replay ended with a different rolling hash than the live engine")

    def check_snapshots(self) -> None:
        """snapshot → restore → continue ends exactly where never snapshotting did."""
        for applied, blob in self.snapshots:
            engine = Engine.from_state(*codec.unpack(blob))
            outputs = [engine.apply(copy_input(command)) for command in self.inputs[applied:]]
            _same_outputs(outputs, self.outputs[applied:], applied, f"restore at input {applied}")
            if engine.state_hash() != self.engine.state_hash():
                raise AssertionError(f"restoring the snapshot after input {applied} and continuing "
                                     "ended in a different state hash")
            if engine.rolling_hash != self.engine.rolling_hash:
                raise AssertionError(f"restoring the snapshot after input {applied} and continuing "
                                     "ended with a different rolling hash")

    # ------------------------------------------------------------------ step checks

    def _ledger_view(self) -> tuple[Any, ...]:
        return ledger_view(self.engine)

    def _trigger_view(self) -> dict[str, Any]:
        engine = self.engine
        positions = {p.id: (p.is_long, p.liquidation_price, p.stop_loss, p.take_profit,
                            p.trailing_stop, engine.trailing_level(p)) for p in engine.positions.values()}
        orders = {o.id: (o.is_long, o.type, o.price, o.symbol) for o in engine.orders.values()}
        halted = {s: b.halted for s, b in engine.books.items()}
        alerts = {a.id: (a.symbol, a.is_above, a.price) for a in engine.alerts.values()}
        return {"positions": positions, "orders": orders, "halted": halted, "alerts": alerts}

    def _idempotency_key(self, command: Any) -> Optional[str]:
        """The key the engine will look up for ``command``, or ``None`` if it looks none up."""
        key: str
        if isinstance(command, PlaceOrder):
            prefix, key = "o:", command.client_order_id
        elif isinstance(command, (Deposit, Withdraw)):
            prefix, key = "f:", command.idempotency_key
        else:
            return None
        if command.account_id not in self.engine.accounts or type(key) is not str or \
                not 0 < len(key) <= MAX_CLIENT_ID:
            return None
        return prefix + key

    def _check_expiries(self, prefix: list[Any]) -> None:
        """Before the reply: pending orders expiring, dead-man switches firing, alerts expiring."""
        for event in prefix:
            if isinstance(event, OrderCancelled):
                if event.reason not in ("expired", "dead_man_switch"):
                    raise AssertionError(f"before the command's reply only expiries may happen, got {event}")
            elif isinstance(event, AlertCancelled):
                if event.reason != "expired":
                    raise AssertionError(f"before the command's reply only expiries may happen, got {event}")
            elif not (isinstance(event, DeadManSwitchFired) or
                      (isinstance(event, BalanceChanged) and event.kind == "order_release")):
                raise AssertionError(f"before the command's reply only expiries may happen, got {event}")

    def _check_outcome(self, command: Any, reply: list[Any]) -> None:
        name = type(command).__name__
        if isinstance(command, Quote):
            if not reply or not isinstance(reply[0], (QuoteUpdated, QuoteRejected)):
                raise AssertionError(f"a quote must answer QuoteUpdated or QuoteRejected first: {reply}")
            if isinstance(reply[0], QuoteRejected) and len(reply) != 1:
                raise AssertionError(f"a rejected quote must change nothing: {reply}")
            if any(isinstance(event, _REFUSALS) for event in reply):
                raise AssertionError(f"a quote's events contain a command refusal: {reply}")
            return
        if isinstance(command, Clock):
            if reply:
                raise AssertionError(f"a clock tick has no outcome of its own, got {reply}")
            return
        if isinstance(command, PlaceOrder):
            outcomes = [event for event in reply if isinstance(event, _ORDER_OUTCOMES)]
            if len(outcomes) != 1 or reply[0] is not outcomes[0]:
                raise AssertionError(f"PlaceOrder must have exactly one outcome first, got {reply}")
            if isinstance(outcomes[0], (OrderRejected, DuplicateCommand)) and len(reply) != 1:
                raise AssertionError(f"a refused order must have no other events: {reply}")
            if any(isinstance(event, CommandRejected) for event in reply):
                raise AssertionError(f"PlaceOrder answered with CommandRejected: {reply}")
            return
        refusals = [event for event in reply if isinstance(event, _REFUSALS)]
        if refusals:
            if len(reply) != 1 or isinstance(reply[0], OrderRejected):
                raise AssertionError(f"{name} must be refused by one CommandRejected or DuplicateCommand "
                                     f"alone, got {reply}")
        elif not reply and not isinstance(command, CancelOrders):   # a bulk cancel of nothing is silent
            raise AssertionError(f"{name} had no outcome at all")

    def _check_idempotency(self, command: Any, key: Optional[str], reply: list[Any]) -> None:
        duplicates = [event for event in reply if isinstance(event, DuplicateCommand)]
        if key is None:
            if duplicates:
                raise AssertionError(f"{type(command).__name__} without a usable key was a duplicate: {reply}")
            return
        account_id = command.account_id
        window = self.recent.setdefault(account_id, {})
        if key in window and window[key][1] in TRANSIENT_REASONS:
            del window[key]   # a transient rejection is tried again, not repeated
        if key in window:
            order_id, reason = window[key]
            expected = DuplicateCommand(command=type(command).__name__, account_id=account_id,
                                        key=key[2:], order_id=order_id, reason=reason)
            if reply != [expected]:
                raise AssertionError(f"key {key!r} is remembered as {window[key]}: expected [{expected}], got {reply}")
            return
        if duplicates:
            raise AssertionError(f"key {key!r} was not in the window (or was evicted), yet: {reply}")
        outcome = reply[0]
        if isinstance(outcome, OrderAccepted):
            window[key] = (outcome.order_id, None)
        elif isinstance(outcome, (OrderRejected, CommandRejected)):
            window[key] = (None, outcome.reason)
        else:
            window[key] = (None, None)
        while len(window) > self.config.idempotency_window:
            del window[next(iter(window))]

    def _check_stale_reasons(self, command: Any, reply: list[Any]) -> None:
        """STALE_QUOTE exactly when the quote is too old; fills and user closes only on fresh ones."""
        engine = self.engine
        for event in reply:
            if isinstance(event, (OrderRejected, CommandRejected)) and event.reason == "STALE_QUOTE":
                if isinstance(command, PlaceOrder):
                    symbol = command.symbol
                else:
                    symbol = engine.positions[command.position_id].symbol
                if engine.now - engine.books[symbol].quote_ts <= self.config.stale_after_ns:
                    raise AssertionError(f"STALE_QUOTE on a fresh quote: {event}")
            fresh_needed = (isinstance(event, OrderAccepted) and event.type == "market") or \
                (isinstance(event, PositionClosed) and event.reason == "user")
            if fresh_needed:
                age = engine.now - engine.books[event.symbol].quote_ts
                if age > self.config.stale_after_ns:
                    raise AssertionError(f"traded on a quote {age} ns old: {event}")

    def _check_closes(self, events: list[Any]) -> None:
        for event in events:
            if not isinstance(event, PositionClosed):
                continue
            instrument = self.instrument(event.symbol)
            pnl = pnl_cents(event.side == "buy", event.qty, event.open_price, event.price,
                            instrument.price_decimals, instrument.qty_decimals)
            if event.pnl != pnl or event.credit != max(0, event.margin + pnl):
                raise AssertionError(f"close of position {event.position_id}: pnl {event.pnl}, credit "
                                     f"{event.credit}; recomputed pnl {pnl}, credit {max(0, event.margin + pnl)}")
            if event.qty <= 0 or event.margin < 0:
                raise AssertionError(f"close of nothing: {event}")
            book = self.engine.books[event.symbol]
            expected_price = book.bid if event.side == "buy" else book.ask
            if event.price != expected_price:
                raise AssertionError(f"position {event.position_id} closed at {event.price}, "
                                     f"the market is {book.bid}/{book.ask}")

    def _check_market_fill(self, command: PlaceOrder, reply: list[Any]) -> None:
        accepted = [event for event in reply if isinstance(event, OrderAccepted)]
        if not accepted or accepted[0].type != "market":
            return
        order = accepted[0]
        book = self.engine.books[order.symbol]
        instrument = book.instrument
        expected_price = book.ask if order.side == "buy" else book.bid
        assert expected_price is not None
        expected_qty = qty_for_margin(order.margin, order.leverage, expected_price,
                                      instrument.price_decimals, instrument.qty_decimals)
        opened = [event for event in reply if isinstance(event, PositionOpened)]
        if order.price != expected_price or order.qty != expected_qty or len(opened) != 1 \
                or opened[0].qty != expected_qty or opened[0].open_price != expected_price:
            raise AssertionError(f"market order filled as {order} / {opened}; expected price "
                                 f"{expected_price}, qty {expected_qty}")
        expected_liq = liquidation_price(order.side == "buy", expected_qty, expected_price, order.margin,
                                         instrument.maintenance_bps, instrument.price_decimals,
                                         instrument.qty_decimals)
        if opened[0].liquidation_price != expected_liq:
            raise AssertionError(f"liquidation price {opened[0].liquidation_price}, expected {expected_liq}")

    def _check_quote(self, command: Quote, reply: list[Any], before: dict[str, Any]) -> None:
        engine = self.engine
        instrument = engine.instruments.get(command.symbol)
        raw_bid, raw_ask = command.bid, command.ask
        valid = instrument is not None and type(raw_bid) is int and type(raw_ask) is int and \
            0 < raw_bid <= raw_ask and mark_up_bid(raw_bid, instrument.spread_bps) > 0
        if not valid:
            if not isinstance(reply[0], QuoteRejected):
                raise AssertionError(f"an invalid quote {command} was accepted: {reply}")
            return
        assert instrument is not None
        bid, ask = mark_up_bid(raw_bid, instrument.spread_bps), mark_up_ask(raw_ask, instrument.spread_bps)
        expected = QuoteUpdated(symbol=command.symbol, bid=bid, ask=ask, ts=command.ts)
        if reply[0] != expected:
            raise AssertionError(f"quote {command} gave {reply[0]}, expected {expected}")
        opened_now: dict[int, tuple[Any, ...]] = {}
        primaries: list[tuple[int, int]] = []
        for event in reply[1:]:
            if isinstance(event, PositionOpened):
                opened_now[event.position_id] = (event.side == "buy", event.liquidation_price,
                                                 event.stop_loss, event.take_profit, None, None)
            elif isinstance(event, PositionClosed):
                position = before["positions"].get(event.position_id)
                if position is None:
                    position = opened_now.get(event.position_id)
                else:
                    primaries.append((_CLOSE_PRIORITY.get(event.reason, -1), event.position_id))
                if position is None:
                    raise AssertionError(f"a quote closed a position that was not open: {event}")
                self._check_trigger_reason(event, position, bid, ask)
            elif isinstance(event, (OrderTriggered, OrderCancelled)):
                order = before["orders"].get(event.order_id)
                if order is None or order[3] != command.symbol:
                    raise AssertionError(f"a quote filled or cancelled an order that was not pending: {event}")
                if isinstance(event, OrderCancelled) and event.reason != "size_too_small":
                    raise AssertionError(f"a quote cancelled order {event.order_id} for {event.reason!r}")
                if before["halted"][command.symbol]:
                    raise AssertionError(f"a pending entry fired on halted {command.symbol}: {event}")
                is_long, order_type, price, _symbol = order
                market = ask if is_long else bid
                crossed = (market <= price if order_type == "limit" else market >= price) if is_long \
                    else (market >= price if order_type == "limit" else market <= price)
                if not crossed:
                    raise AssertionError(f"{'buy' if is_long else 'sell'} {order_type} at {price} fired "
                                         f"with the market at {market}: {event}")
                if isinstance(event, OrderTriggered) and event.price != market:
                    raise AssertionError(f"entry filled at {event.price}, the market is {market}")
                primaries.append((_ENTRY_PRIORITY, event.order_id))
            elif isinstance(event, AlertTriggered):
                alert = before["alerts"].get(event.alert_id)
                if alert is None or alert[0] != command.symbol:
                    raise AssertionError(f"a quote fired an alert that was not active: {event}")
                _symbol, is_above, price = alert
                if not (bid >= price if is_above else bid <= price) or event.quote_price != bid:
                    raise AssertionError(f"alert {event.alert_id} ({event.condition} {price}) fired at bid {bid}: {event}")
                primaries.append((_ALERT_PRIORITY, event.alert_id))
        if primaries != sorted(primaries) or len(set(primaries)) != len(primaries):
            raise AssertionError(f"a quote processed its triggers out of order: {primaries}")

    @staticmethod
    def _check_trigger_reason(event: PositionClosed, position: tuple[Any, ...], bid: int, ask: int) -> None:
        is_long, liq, stop_loss, take_profit, distance, level_before = position
        if is_long:
            trailing = None if distance is None else max(level_before + distance, bid) - distance
            crossed = {"liquidation": bid <= liq,
                       "stop_loss": stop_loss is not None and bid <= stop_loss,
                       "trailing_stop": trailing is not None and bid <= trailing,
                       "take_profit": take_profit is not None and bid >= take_profit}
        else:
            trailing = None if distance is None else min(level_before - distance, ask) + distance
            crossed = {"liquidation": ask >= liq,
                       "stop_loss": stop_loss is not None and ask >= stop_loss,
                       "trailing_stop": trailing is not None and ask >= trailing,
                       "take_profit": take_profit is not None and ask <= take_profit}
        first = next((reason for reason in _CLOSE_PRIORITY if crossed[reason]), None)
        if event.reason != first:
            raise AssertionError(f"position {event.position_id} closed for {event.reason!r} at "
                                 f"{bid}/{ask}; the first trigger crossed is {first!r} "
                                 f"(liq {liq}, sl {stop_loss}, trailing {trailing}, tp {take_profit})")
        if event.remaining_qty != 0:
            raise AssertionError(f"a trigger closed only part of position {event.position_id}")

    def _follow_trailing(self, events: list[Any]) -> None:
        """Update the model of trailing-stop peaks from the events of one input."""
        books = self.engine.books
        for event in events:
            if isinstance(event, QuoteUpdated):
                for entry in self.trailing.values():
                    if entry[1] == event.symbol:
                        entry[3] = max(entry[3], event.bid) if entry[0] else min(entry[3], event.ask)
            elif isinstance(event, PositionOpened):
                if event.trailing_stop is not None:
                    book = books[event.symbol]
                    is_long = event.side == "buy"
                    self.trailing[event.position_id] = [is_long, event.symbol, event.trailing_stop,
                                                        book.bid if is_long else book.ask]
            elif isinstance(event, PositionUpdated):
                if event.trailing_stop is None:
                    self.trailing.pop(event.position_id, None)
                    continue
                followed = self.trailing.get(event.position_id)
                if followed is None or followed[2] != event.trailing_stop:
                    position = self.engine.positions[event.position_id]
                    book = books[position.symbol]
                    self.trailing[event.position_id] = [position.is_long, position.symbol, event.trailing_stop,
                                                        book.bid if position.is_long else book.ask]
            elif isinstance(event, PositionClosed) and event.remaining_qty == 0:
                self.trailing.pop(event.position_id, None)
            elif isinstance(event, BalanceChanged):
                if event.kind == "deposit" or (event.kind == "operator_adjustment" and event.free_delta > 0):
                    self.deposited += event.free_delta
                elif event.kind == "withdraw" or event.kind == "operator_adjustment":
                    self.withdrawn -= event.free_delta


def ledger_view(engine: Engine) -> tuple[Any, ...]:
    """What a refused input must leave alone and a restored snapshot must reproduce: balances,
    positions (with their trailing levels), orders, books, expiries and counters — not the
    clock, seq, hashes or idempotency memory."""
    positions = tuple(sorted(
        (p.id, p.account_id, p.symbol, p.is_long, p.qty, p.open_price, p.margin, p.leverage,
         p.liquidation_price, p.take_profit, p.stop_loss, p.trailing_stop, engine.trailing_level(p))
        for p in engine.positions.values()))
    orders = tuple(sorted(
        (o.id, o.account_id, o.symbol, o.is_long, o.type, o.price, o.qty, o.margin, o.leverage,
         o.take_profit, o.stop_loss, o.trailing_stop, o.expires_at)
        for o in engine.orders.values()))
    return (
        engine.next_order_id, engine.next_position_id, engine.house, engine.total_deposits,
        engine.total_withdrawals,
        tuple(sorted((a.id, a.free, a.locked) for a in engine.accounts.values())),
        positions, orders,
        tuple(sorted((s, b.bid, b.ask, b.quote_ts, b.halted) for s, b in engine.books.items())),
        tuple(engine.expiries),
    )


def index_view(engine: Engine) -> list[Any]:
    """Every trigger index's and trailing book's entries, in their order, book by book (the
    default books, then each symbol's spread-profile books)."""
    books = list(engine.books.values()) + [book for symbol in sorted(engine.profile_books)
                                           for book in engine.profile_books[symbol]]
    return [[list(index.items()) for index in (book.bid_falls, book.bid_rises, book.ask_rises, book.ask_falls,
                                               book.long_trailing, book.short_trailing)]
            for book in books]


def _raw_bid_for(level: int, spread_bps: int) -> int:
    """A raw bid whose marked-up bid is ``level`` (or the nearest above it when none is)."""
    raw = -(-level * 10_000 // (10_000 - spread_bps))
    for candidate in (raw - 1, raw, raw + 1):
        if candidate > 0 and mark_up_bid(candidate, spread_bps) == level:
            return candidate
    return max(raw, 1)


def _raw_ask_for(level: int, spread_bps: int) -> int:
    """A raw ask whose marked-up ask is ``level`` (or the nearest below it when none is)."""
    raw = level * 10_000 // (10_000 + spread_bps)
    for candidate in (raw + 1, raw, raw - 1):
        if candidate > 0 and mark_up_ask(candidate, spread_bps) == level:
            return candidate
    return max(raw, 1)


def _same_outputs(actual: list[list[Any]], expected: list[list[Any]], offset: int, what: str) -> None:
    if len(actual) != len(expected):
        raise AssertionError(f"{what}: {len(actual)} event lists, recorded {len(expected)}")
    for index, (got, recorded) in enumerate(zip(actual, expected)):
        if got != recorded:
            raise AssertionError(f"{what}: input {offset + index} gave {got}, recorded {recorded}")
