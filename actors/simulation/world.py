"""The simulated world: the real actors, composed like ``supervisor.run_system``, plus faults.

Theory of operation
-------------------
A run is a sequence of **epochs**, one per life of the system. An epoch recovers the engine
from the data dir with the normal recovery path (newest valid snapshot + journal tail, torn
tail truncated), catches the store up, and starts the embedded platform's actors from the
topology table (actors/topology.py), stage by stage as ``run_system`` does and with the same
arguments, in :data:`~actors.topology.SIMULATION` mode — the one place where the simulation
differs: journal writes, snapshots and scrubs inline on the event loop, the gateway's app without
its HTTP server, no WebSocket server, no restarts — plus the invariant checker (another lossless
subscriber) and the traders (:mod:`actors.simulation.traders`), who call the gateway's app
through a test client. The last epoch ends at ``seconds`` with a graceful stop (intake stops,
the engine drains, consumers finish, a final snapshot is written).

**Crashes** (``crash_every``): at each seeded crash time the epoch's cancel scope is cancelled —
every actor and every request in flight stops where it is, nothing is flushed, no final
snapshot. Then the crash is made harsher than a cancellation: journal bytes written since the
last fsync are cut off (a power cut; with ``fsync = "off"`` the model is a process crash and the
page cache survives), and sometimes the first bytes of a frame are appended, as if the process
died inside a write — recovery must truncate exactly that torn tail. The next epoch recovers and
checks: every command whose reply the engine had released is in the journal at its seq, byte for
byte; a full replay from empty ends in the state that snapshot + tail recovered; the invariants
hold.

**Feed gaps** (``feed_gaps``): the feed's quotes pass through :class:`_FeedGaps`, which drops
them during seeded pauses of 1–8 s while the random walk goes on (so the first quote after a
pause gaps past stops and liquidation prices, and pauses past ``stale_after_ms`` make quotes
stale), and the walk's jump probability and size are raised.

**Slow consumers** (``slow_consumers``): a lossy subscriber that never reads (it must be dropped
as lagged without slowing anyone) and a lossless one that reads one batch every 50 ms (the
engine must slow down, never lose or reorder a batch).

**Invariants**, after every batch of engine output the checker drains: :func:`check_all`
(conservation against the checker's own ledger of deposits and withdrawals when it is in step
with the engine, no negative balance, locked = Σ margins, records consistent) and
:func:`assert_triggers_respected` on every symbol; every subscriber sees gapless, ordered seqs.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Optional

import trio

from actors import topology
from actors.config import Config
from actors.engine.actor import EngineHandle, Subscription
from actors.engine.keys import load_or_create_key
from actors.engine.messages import EventBatch, Reply, Request
from actors.engine.recovery import Recovered, RecoveryError, journal_dir, recover
from actors.engine.snapshot_worker import write_engine_snapshot
from actors.engine.snapshotter import SnapshotterStats
from actors.feed import price_feed
from actors.gateway import token_issuer_from_config
from actors.history import persister as persister_actor
from actors.simulation.runtime import seeded_random, simulated_ns
from actors.simulation.traders import Trader, test_client
from actors.store.sqlite import SqliteStore
from exness_actors import codec
from exness_actors.commands import PlaceOrder
from exness_actors.engine import TRANSIENT_REASONS, Engine
from exness_actors.errors import InvariantViolation
from exness_actors.events import BalanceChanged, OrderAccepted, OrderRejected
from exness_actors.journal import JournalWriter, encode_frame, iter_payloads
from exness_actors.money import format_fixed
from exness_actors.replay import Checkpoint, ReplayDivergence, decode_record, replay
from exness_actors.testing.invariants import assert_triggers_respected, check_all

__all__ = ["World", "AckLog", "SimulationAborted", "MAX_VIOLATIONS_KEPT"]

log = logging.getLogger("exness.simulation")

#: Violations kept in full in the report (all are counted).
MAX_VIOLATIONS_KEPT = 50
#: Simulated downtime between a crash and the restart.
RESTART_DELAY_S = 0.5
#: The slow lossless subscriber reads one batch this often (simulated seconds).
SLOW_READER_DELAY_S = 0.05


class SimulationAborted(Exception):
    """The simulation cannot go on (recovery refused, an actor failed); a violation says why."""


class AckLog:
    """What the engine acknowledged: each released reply's seq and the command's journal bytes.

    ``pending`` holds the acknowledgements not yet checked against a recovered journal;
    ``orders`` maps ``(account_id, client_order_id)`` to the outcome the engine remembers — the
    first it released (``("order", id)`` or ``("rejected", reason)``), or the latest while that was
    a transient rejection — for the traders' retries after a crash.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[int, bytes]] = []
        self.orders: dict[tuple[int, str], tuple[str, str]] = {}
        self.total = 0
        self.verified = 0

    def acknowledged(self, command: Any, reply: Reply) -> None:
        self.total += 1
        self.pending.append((reply.seq, codec.encode(command)))
        if type(command) is PlaceOrder and command.client_order_id:
            key = (command.account_id, command.client_order_id)
            known = self.orders.get(key)
            if known is not None and known[1] not in TRANSIENT_REASONS:   # a transient one is retried afresh
                return
            for event in reply.events:
                if type(event) is OrderAccepted:
                    self.orders[key] = ("order", str(event.order_id))
                elif type(event) is OrderRejected:
                    self.orders[key] = ("rejected", event.reason)


class _AckSlot:
    """Stands in for a request's reply slot: notes the acknowledgement, then passes it on."""

    __slots__ = ("inner", "command", "acks")

    def __init__(self, inner: Any, command: Any, acks: AckLog) -> None:
        self.inner = inner
        self.command = command
        self.acks = acks

    def set(self, value: Any) -> None:
        if type(value) is Reply:
            self.acks.acknowledged(self.command, value)
        self.inner.set(value)

    def fail(self, error: BaseException) -> None:
        self.inner.fail(error)


class _AckingHandle(EngineHandle):
    """The engine handle, recording every reply the engine releases (see :class:`AckLog`)."""

    def __init__(self, engine: Engine, inbox_size: int, acks: AckLog) -> None:
        super().__init__(engine, inbox_size)
        self._acks = acks

    def send_nowait(self, command: Any) -> None:
        if type(command) is Request:
            command = Request(command.command, _AckSlot(command.reply, command.command, self._acks))
        super().send_nowait(command)


class _TrackedJournal(JournalWriter):
    """A journal writer that remembers how much of its segment the last fsync made durable."""

    def __init__(self, directory: Path, **options: Any) -> None:
        super().__init__(directory, **options)
        self.synced = (self.segment_path, self.segment_size)

    def fsync(self) -> None:
        super().fsync()
        self.synced = (self.segment_path, self.segment_size)


class _FeedGaps:
    """Seeded pauses of the feed (see the module docstring); outlives crashes."""

    def __init__(self, seed: int) -> None:
        self.rng = seeded_random(seed, "feed-gaps")
        self.next_pause_at = self.rng.uniform(3.0, 10.0)
        self.pause_until = -1.0
        self.pauses = 0
        self.dropped = 0

    def outbox(self, inner: Any) -> "_GappyOutbox":
        return _GappyOutbox(self, inner)


class _GappyOutbox:
    def __init__(self, gaps: _FeedGaps, inner: Any) -> None:
        self.gaps = gaps
        self.inner = inner

    async def send(self, quote: Any) -> None:
        gaps = self.gaps
        now = trio.current_time()
        if now >= gaps.next_pause_at:
            gaps.pause_until = now + gaps.rng.uniform(1.0, 8.0)
            gaps.next_pause_at = gaps.pause_until + gaps.rng.uniform(4.0, 15.0)
            gaps.pauses += 1
        if now < gaps.pause_until:
            gaps.dropped += 1
            await trio.lowlevel.checkpoint()
            return
        await self.inner.send(quote)


class _Epoch:
    """One life of the system: what a crash cuts off and the next recovery starts from."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.store: Optional[SqliteStore] = None
        self.journal: Optional[_TrackedJournal] = None
        self.handle: Optional[_AckingHandle] = None
        self.apps: list[Any] = []
        self.lossy: Optional[Subscription] = None
        self.context: Optional[topology.Context] = None


class World:
    """Everything the simulation keeps across epochs, and the epochs themselves."""

    def __init__(self, options: Any, cfg: Config, *, progress: Optional[Callable[[float], None]] = None) -> None:
        self.options = options
        self.cfg = cfg
        self.core_config = cfg.core
        self.data_dir: Path = cfg.data_dir
        self.progress = progress
        self.acks = AckLog()
        self.violations: list[dict] = []
        self.violation_count = 0
        self.violation_kinds: collections.Counter = collections.Counter()
        self.http: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.counters: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.crashes: list[dict] = []
        self.invariant_checks = 0
        self.ledger_checks = 0
        self.seen_seq = 0
        self.deposits = 0
        self.withdrawals = 0
        self.feed_stats = price_feed.FeedStats()
        self.snapshotter_stats = SnapshotterStats()
        #: the embedded platform's actors, as the simulation runs them (actors/topology.py)
        self.actors = topology.running("all", topology.SIMULATION, bus=cfg.settings.bus, feed_source="synthetic")
        self.gaps = _FeedGaps(options.seed) if options.feed_gaps else None
        self.slow_reader_batches = 0
        self.lossy_dropped = 0
        self.internal_errors = 0
        self.traders = [Trader(index, options.seed, self, interval_s=options.action_interval_s)
                        for index in range(1, options.traders + 1)]
        self.engine: Optional[Engine] = None

    # ------------------------------------------------------------------ recording

    def violation(self, kind: str, message: str) -> None:
        self.violation_count += 1
        self.violation_kinds[kind] += 1
        try:
            at: Any = round(trio.current_time(), 3)
        except RuntimeError:   # outside the run: the final checks
            at = "end"
        if len(self.violations) < MAX_VIOLATIONS_KEPT:
            self.violations.append({"t": at, "kind": kind, "message": message})
        log.error("event=violation kind=%s message=%r", kind, message)

    def record_http(self, action: str, status: int, code: str) -> None:
        self.http[action][f"{status} {code}".strip()] += 1

    def count(self, group: str, key: str) -> None:
        self.counters[group][key] += 1

    # ------------------------------------------------------------------ the run

    async def run(self) -> None:
        crash_times = self._crash_times()
        key = load_or_create_key(self.data_dir, None)
        index = 0
        while True:
            crash_at = crash_times[index] if index < len(crash_times) else math.inf
            epoch = _Epoch(index)
            with trio.CancelScope(deadline=crash_at) as scope:
                await self._epoch(epoch, key)
            if not scope.cancelled_caught:
                return
            await self._after_crash(epoch, crash_at)
            index += 1
            await trio.sleep(RESTART_DELAY_S)

    def _crash_times(self) -> list[float]:
        every = self.options.crash_every
        if not every:
            return []
        rng = seeded_random(self.options.seed, "crashes")
        times = []
        at = every
        while at < self.options.seconds:
            times.append(round(at + rng.uniform(0, every / 4), 3))
            at += every
        return [t for t in times if t < self.options.seconds]

    async def _epoch(self, epoch: _Epoch, key: bytes) -> None:
        options = self.options
        data_dir = self.data_dir
        store = epoch.store = await SqliteStore.open(data_dir)
        persisted_seq = await store.last_persisted_seq()
        backlog: list[tuple[int, int, list]] = []
        try:
            recovered = recover(data_dir, self.core_config, key, persisted_seq=persisted_seq,
                                on_events=lambda seq, ts, events: backlog.append((seq, ts, events)))
        except RecoveryError as exc:
            self.violation("recovery_failed", str(exc))
            raise SimulationAborted(f"recovery failed: {exc}") from None
        if self.crashes:
            self._verify_recovery(recovered)
        engine = self.engine = recovered.engine
        cfg = self._epoch_config(epoch.index, engine)
        journal = epoch.journal = _TrackedJournal(journal_dir(data_dir))
        handle = epoch.handle = _AckingHandle(engine, cfg.settings.engine.inbox_size, self.acks)
        ctx = epoch.context = topology.in_process(
            cfg, mode=topology.SIMULATION, here=self.actors, handle=handle, journal=journal, store=store, key=key,
            tokens=token_issuer_from_config(cfg), clock=simulated_ns, engine_clock=simulated_ns,
            stats={"price_feed": self.feed_stats, "snapshotter": self.snapshotter_stats})
        if self.gaps is not None:
            ctx.quotes = self.gaps.outbox(ctx.quotes)
        async with trio.open_nursery() as nursery:
            checker_sub = handle.subscribe("simulation-invariants", max_buffer=4096, lossless=True)
            if options.slow_consumers:
                epoch.lossy = handle.subscribe("simulation-never-reads", max_buffer=16, lossless=False)
                nursery.start_soon(self._slow_reader, handle.subscribe("simulation-slow-reader", max_buffer=8,
                                                                       lossless=True))
            await persister_actor.catch_up(store, backlog)
            await topology.start_stage(ctx, nursery, "consumer")
            nursery.start_soon(self._checker, checker_sub, engine)
            await topology.start_stage(ctx, nursery, "engine")
            async with trio.open_nursery() as intake:
                await topology.start_stage(ctx, intake, "intake")
                app = ctx.started["gateway"].app
                epoch.apps.append(app)
                for trader in self.traders:
                    intake.start_soon(trader.run, test_client(app), options.seconds)
                await trio.sleep_until(options.seconds)
                intake.cancel_scope.cancel()   # end of the run: intake stops, then a graceful stop
            await handle.stop()
        # graceful end: the engine drained and closed its subscriptions; the consumers finished
        journal.close()
        self._count_epoch(epoch)
        write_engine_snapshot(data_dir, engine, key, cfg.settings.snapshot.keep)
        stored = await store.last_persisted_seq()
        if stored != engine.last_seq:
            self.violation("store_behind", f"after the graceful stop the store holds seq {stored}, "
                                           f"the engine {engine.last_seq}")
        await store.close()

    def _epoch_config(self, index: int, engine: Engine) -> Config:
        """The feed of each epoch has its own seed and starts from the recovered quotes."""
        feed: dict[str, Any] = {"seed": seeded_random(self.options.seed, "feed", index).randrange(2**31)}
        if index:
            feed["start_prices"] = {symbol: format_fixed(book.bid, book.instrument.price_decimals)
                                    for symbol, book in engine.books.items() if book.bid is not None}
        return self.cfg.with_overrides({"feed": feed})

    def _count_epoch(self, epoch: _Epoch) -> None:
        for app in epoch.apps:
            self.internal_errors += app.extensions["exness_gateway"].internal_errors
        if epoch.lossy is not None and epoch.lossy.lagged:
            self.lossy_dropped += 1

    # ------------------------------------------------------------------ actors of the simulation

    async def _checker(self, subscription: Subscription, engine: Engine) -> None:
        receive = subscription.receive
        async for batch in receive:
            self._observe(batch, "simulation-invariants")
            while True:
                try:
                    batch = receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                self._observe(batch, "simulation-invariants")
            self._check(engine)
            if self.progress is not None:
                self.progress(trio.current_time())

    def _observe(self, batch: EventBatch, name: str) -> None:
        previous = self.seen_seq
        if batch.last_seq < previous:
            self.violation("event_order", f"{name} got batch ending at seq {batch.last_seq} after seq {previous}")
        for seq, _ts, events in batch.items:
            if seq <= previous:
                self.violation("event_order", f"{name} got seq {seq} after seq {previous}")
            previous = seq
            for event in events:
                if type(event) is BalanceChanged:
                    if event.kind == "deposit":
                        self.deposits += event.free_delta
                    elif event.kind == "withdraw":
                        self.withdrawals -= event.free_delta
        self.seen_seq = max(previous, batch.last_seq)

    def _check(self, engine: Engine) -> None:
        self.invariant_checks += 1
        try:
            if engine.last_seq == self.seen_seq:
                self.ledger_checks += 1
                check_all(engine, deposits=self.deposits, withdrawals=self.withdrawals)
            else:   # the engine is ahead of what it published: its totals are checked, not ours
                check_all(engine)
            for symbol in engine.books:
                assert_triggers_respected(engine, symbol)
        except (AssertionError, InvariantViolation) as exc:
            self.violation("invariant", f"at seq {engine.last_seq}: {exc}")

    async def _slow_reader(self, subscription: Subscription) -> None:
        last = 0
        async for batch in subscription.receive:
            first = batch.items[0][0] if batch.items else batch.last_seq
            if batch.last_seq < last or (batch.items and first <= last):
                self.violation("event_order", f"the slow reader got seqs {first}..{batch.last_seq} after {last}")
            last = batch.last_seq
            self.slow_reader_batches += 1
            await trio.sleep(SLOW_READER_DELAY_S)

    # ------------------------------------------------------------------ crashes

    async def _after_crash(self, epoch: _Epoch, crash_at: float) -> None:
        """The process is gone: close what it held, lose what was not durable, maybe tear a frame."""
        rng = seeded_random(self.options.seed, "crash", epoch.index)
        handle, journal = epoch.handle, epoch.journal
        record: dict[str, Any] = {"at_s": crash_at, "epoch": epoch.index, "applied_seq": None,
                                  "durable_seq": None, "unsynced_bytes_dropped": 0, "torn_bytes_appended": 0}
        if handle is not None:
            record["applied_seq"] = handle.engine.last_seq
            record["durable_seq"] = handle.durable_seq
        if journal is not None:
            path, size = journal.segment_path, journal.segment_size
            journal.close()
            if path is not None and path.exists():
                synced_path, synced_size = journal.synced
                durable = synced_size if synced_path == path else 0   # a segment never synced
                if self.options.fsync == "batch" and size > durable:
                    os.truncate(path, durable)
                    record["unsynced_bytes_dropped"] = size - durable
                if rng.random() < 0.5:
                    frame = encode_frame(rng.randbytes(rng.randint(8, 64)))
                    torn = frame[:rng.randint(1, len(frame) - 1)]
                    with open(path, "ab") as segment:
                        segment.write(torn)
                    record["torn_bytes_appended"] = len(torn)
        if epoch.store is not None:
            await epoch.store.close()   # the process died: its connection just goes away (no flush)
        self._count_epoch(epoch)
        self.crashes.append(record)

    def _verify_recovery(self, recovered: Recovered) -> None:
        """After a crash: acknowledged ⇒ present; snapshot + tail ≡ full replay; invariants hold."""
        crash = self.crashes[-1]
        engine = recovered.engine
        crash.update(recovered_seq=engine.last_seq, snapshot_seq=recovered.snapshot_seq,
                     replayed=recovered.replayed,
                     torn_bytes_truncated=recovered.torn_tail.dropped_bytes if recovered.torn_tail else 0)
        if crash["torn_bytes_truncated"] != crash["torn_bytes_appended"]:
            self.violation("torn_tail", f"recovery truncated {crash['torn_bytes_truncated']} bytes, "
                                        f"{crash['torn_bytes_appended']} torn bytes were appended")
        if crash["applied_seq"] is not None:
            crash["lost_unacknowledged"] = max(crash["applied_seq"] - engine.last_seq, 0)
        full, deposits, withdrawals = self._replay_journal()
        if full is not None and full.state_hash() != engine.state_hash():
            self.violation("recovery_state", f"snapshot + tail recovered state hash {engine.state_hash().hex()} "
                                             f"but a full replay gives {full.state_hash().hex()}")
        crash["acknowledged_verified"] = self._verify_acknowledged(engine.last_seq)
        self.deposits, self.withdrawals, self.seen_seq = deposits, withdrawals, engine.last_seq
        self._check(engine)

    def _replay_journal(self) -> tuple[Optional[Engine], int, int]:
        """A full replay from empty (checkpoints verified); its deposits and withdrawals."""
        totals = [0, 0]

        def ledger(_seq: int, _ts: int, events: list) -> None:
            for event in events:
                if type(event) is BalanceChanged:
                    if event.kind == "deposit":
                        totals[0] += event.free_delta
                    elif event.kind == "withdraw":
                        totals[1] -= event.free_delta

        engine = Engine(self.core_config)
        try:
            replay(engine, iter_payloads(journal_dir(self.data_dir)), on_events=ledger)
        except ReplayDivergence as exc:
            self.violation("replay_divergence", str(exc))
            return None, totals[0], totals[1]
        return engine, totals[0], totals[1]

    def _verify_acknowledged(self, last_seq: int) -> int:
        """Every acknowledged command is in the journal at its seq, byte for byte."""
        pending = dict(self.acks.pending)
        found: dict[int, bytes] = {}
        for payload in iter_payloads(journal_dir(self.data_dir)):
            record = decode_record(payload)
            if type(record) is not Checkpoint and record.seq in pending:
                found[record.seq] = payload
        for seq, payload in sorted(pending.items()):
            if seq > last_seq or seq not in found:
                self.violation("acknowledged_lost", f"the engine acknowledged seq {seq} but the recovered "
                                                    f"journal ends at seq {last_seq}")
            elif found[seq] != payload:
                self.violation("acknowledged_changed", f"the journal holds another command at acknowledged seq {seq}")
        self.acks.verified += len(pending)
        self.acks.pending.clear()
        return len(pending)

    def verify_final(self) -> None:
        """At the end: the acknowledgements since the last recovery are in the journal."""
        assert self.engine is not None
        self._verify_acknowledged(self.engine.last_seq)
