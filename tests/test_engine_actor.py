"""The engine actor: durable acknowledgement, group commit, overload, queries, fan-out."""

from __future__ import annotations

import errno
import functools
import os
import threading

import pytest
import trio

from actors.engine import actor as engine_actor
from actors.engine.actor import EngineHandle
from actors.engine.faults import FatalIOError
from actors.engine.messages import EngineStopped, Overloaded
from core_helpers import SYMBOL, make_engine
from exness_actors.commands import CreateAccount, PlaceOrder, Quote
from exness_actors.engine import HASH_BLOCK, Engine
from exness_actors.errors import InvalidCommand
from exness_actors.events import AccountCreated, OrderAccepted, OrderCancelled, QuoteUpdated
from exness_actors.journal import JournalWriter, scan_journal
from exness_actors.replay import Checkpoint, decode_record, replay


def trio_clock() -> int:
    return int(trio.current_time() * 1_000_000_000)


class GatedJournal(JournalWriter):
    """A real journal whose fsync waits for the test to open a gate (from a worker thread)."""

    def __init__(self, directory) -> None:
        super().__init__(directory)
        self.gate = threading.Event()
        self.fsync_started = threading.Event()

    def fsync(self) -> None:
        self.fsync_started.set()
        self.gate.wait(timeout=10)
        super().fsync()


async def start(nursery, tmp_path, *, journal=None, inbox_size=100, fsync="batch", engine=None,
                journal_io="thread"):
    engine = engine or make_engine()
    journal = journal or JournalWriter(tmp_path / "journal")
    handle = EngineHandle(engine, inbox_size)
    await nursery.start(functools.partial(engine_actor.run, handle=handle, journal=journal,
                                          fsync=fsync, clock=trio_clock, journal_io=journal_io))
    return handle, journal


async def test_reply_carries_the_commands_own_outcome(tmp_path):
    async with trio.open_nursery() as nursery:
        handle, _ = await start(nursery, tmp_path)
        reply = await handle.request(CreateAccount(account_id=7, initial_deposit=100))
        assert reply.seq == 1
        assert isinstance(reply.events[0], AccountCreated)
        await handle.stop()
    journaled = [decode_record(p) for p in scan_journal(tmp_path / "journal").payloads]
    assert [type(r) for r in journaled] == [CreateAccount, Checkpoint]     # the clean stop's checkpoint
    assert journaled[0].account_id == 7 and journaled[0].seq == 1


async def test_no_reply_or_event_leaves_before_the_batch_is_durable(tmp_path):
    journal = GatedJournal(tmp_path / "journal")
    async with trio.open_nursery() as nursery:
        handle, _ = await start(nursery, tmp_path, journal=journal)
        subscription = handle.subscribe("watcher", max_buffer=10)
        replies = []

        async def ask() -> None:
            replies.append(await handle.request(CreateAccount(account_id=1)))
        nursery.start_soon(ask)
        await trio.to_thread.run_sync(journal.fsync_started.wait, 10)
        await trio.sleep(0.05)
        assert replies == []                                   # applied, written, not yet fsynced
        with pytest.raises(trio.WouldBlock):
            subscription.receive.receive_nowait()
        assert handle.durable_seq == 0
        journal.gate.set()
        batch = await subscription.receive.receive()
        assert batch.last_seq == 1
        await trio.sleep(0)
        assert len(replies) == 1 and handle.durable_seq == 1
        await handle.stop()


async def test_queries_see_the_state_in_order_with_commands(tmp_path):
    async with trio.open_nursery() as nursery:
        handle, _ = await start(nursery, tmp_path)
        await handle.request(CreateAccount(account_id=1, initial_deposit=500))
        summary = await handle.query(lambda engine: engine.account_summary(1))
        assert summary["free"] == 500
        with pytest.raises(ZeroDivisionError):
            await handle.query(lambda engine: 1 // 0)
        await handle.stop()


async def test_full_inbox_is_overload_not_a_queue(tmp_path):
    journal = GatedJournal(tmp_path / "journal")
    async with trio.open_nursery() as nursery:
        handle, _ = await start(nursery, tmp_path, journal=journal, inbox_size=2)
        # Hold the pipeline at the fsync so the inbox fills up.
        for account in range(1, 20):
            try:
                handle.send_nowait(CreateAccount(account_id=account))
            except Overloaded:
                break
            await trio.sleep(0.01)
        else:
            pytest.fail("the inbox never reported overload")
        assert handle.overloads == 1
        journal.gate.set()
        await handle.stop()


async def test_unencodable_command_is_refused_and_its_seq_reused(tmp_path):
    async with trio.open_nursery() as nursery:
        handle, _ = await start(nursery, tmp_path)
        with pytest.raises(InvalidCommand):
            await handle.request(CreateAccount(account_id=object()))   # type: ignore[arg-type]
        reply = await handle.request(CreateAccount(account_id=1))
        assert reply.seq == 1
        await handle.stop()


async def test_a_command_too_large_for_a_journal_record_is_refused_and_the_engine_goes_on(tmp_path):
    """A record over the journal's frame limit used to raise while the batch was framed, after
    the core had applied it: the engine stopped. It is refused before it is applied."""
    from exness_actors.journal import MAX_PAYLOAD_BYTES

    async with trio.open_nursery() as nursery:
        handle, _ = await start(nursery, tmp_path)
        await handle.request(CreateAccount(account_id=1, initial_deposit=10**6))
        huge = PlaceOrder(account_id=1, symbol=SYMBOL, side="buy", type="market", margin=100, leverage=2,
                          client_order_id="x" * (MAX_PAYLOAD_BYTES + 1))
        with pytest.raises(InvalidCommand, match="journal record"):
            await handle.request(huge)
        reply = await handle.request(CreateAccount(account_id=2))
        assert reply.seq == 2 and handle.engine.last_seq == 2
        await handle.stop()
    assert [decode_record(p).seq for p in scan_journal(tmp_path / "journal").payloads][:2] == [1, 2]


async def test_lagging_lossy_subscriber_is_dropped_without_slowing_the_engine(tmp_path):
    async with trio.open_nursery() as nursery:
        handle, _ = await start(nursery, tmp_path, fsync="off")
        slow = handle.subscribe("slow-ws-client", max_buffer=1)
        await handle.request(CreateAccount(account_id=1, initial_deposit=10**9))
        for _ in range(5):
            await handle.request(Quote(symbol=SYMBOL, bid=6_500_000, ask=6_500_000))
        assert slow.lagged
        assert slow not in handle.subscriptions
        await handle.stop()


async def test_clock_is_injected_for_a_due_expiry(tmp_path, autojump_clock):
    async with trio.open_nursery() as nursery:
        # inline journal writes: under the autojumping mock clock a worker thread's (real) duration
        # would let the clock jump past the test's own deadline on a loaded machine
        handle, _ = await start(nursery, tmp_path, fsync="off", journal_io="inline")
        watcher = handle.subscribe("watcher", max_buffer=100, lossless=True)
        await handle.request(CreateAccount(account_id=1, initial_deposit=10**9))
        await handle.request(Quote(symbol=SYMBOL, bid=6_500_000, ask=6_500_000))
        expires = trio_clock() + 5_000_000_000
        reply = await handle.request(PlaceOrder(account_id=1, symbol=SYMBOL, side="buy", type="limit",
                                                margin=10_000, leverage=10, price=6_000_000, expires_at=expires))
        assert reply.events[0].status == "pending"
        cancelled = []
        with trio.move_on_after(10_000):
            async for batch in watcher.receive:
                cancelled += [e for _s, _t, events in batch.items for e in events if isinstance(e, OrderCancelled)]
                if cancelled:
                    break
        assert cancelled and cancelled[0].reason == "expired"
        assert trio_clock() >= expires
        await handle.stop()


async def test_journal_replays_to_the_same_state_with_verified_checkpoints(tmp_path):
    async with trio.open_nursery() as nursery:
        handle, _ = await start(nursery, tmp_path, fsync="off", inbox_size=HASH_BLOCK * 3)
        await handle.request(CreateAccount(account_id=1, initial_deposit=10**9))
        for index in range(HASH_BLOCK + 10):
            handle.send_nowait(Quote(symbol=SYMBOL, bid=6_500_000 + index % 50, ask=6_500_100 + index % 50))
        await handle.request(PlaceOrder(account_id=1, symbol=SYMBOL, side="buy", type="market",
                                        margin=10_000, leverage=10))
        live_hash = await handle.query(lambda engine: engine.state_hash())
        await handle.stop()
    payloads = scan_journal(tmp_path / "journal").payloads
    assert any(isinstance(decode_record(p), Checkpoint) for p in payloads)
    result = replay(make_engine(), payloads)
    assert result.checkpoints_verified >= 1
    assert result.engine.state_hash() == live_hash


async def test_a_query_may_answer_none(tmp_path):
    async with trio.open_nursery() as nursery:
        handle, _ = await start(nursery, tmp_path)
        assert await handle.query(lambda engine: engine.quote("BTCUSDT")) is None
        await handle.stop()


class FailingJournal(GatedJournal):
    """A gated journal whose next write fails with ``errno`` once the gate opens."""

    def __init__(self, directory, errno_value: int) -> None:
        super().__init__(directory)
        self.errno_value = errno_value
        self.failing = False

    def append(self, data: bytes, *, first_seq: int) -> None:
        if self.failing:
            raise OSError(self.errno_value, os.strerror(self.errno_value))
        super().append(data, first_seq=first_seq)


@pytest.mark.parametrize(("errno_value", "exit_code", "kind"), [(errno.ENOSPC, 3, "disk full"),
                                                                (errno.EIO, 4, "I/O error")])
async def test_a_journal_write_failure_refuses_every_request_held_and_raises_one_clear_error(
        tmp_path, errno_value, exit_code, kind):
    journal = FailingJournal(tmp_path / "journal", errno_value)
    engine = make_engine()
    handle = EngineHandle(engine, 100)
    outcomes: list = []

    async def order(account_id: int) -> None:
        try:
            outcomes.append(await handle.request(CreateAccount(account_id=account_id, initial_deposit=100)))
        except EngineStopped as error:
            outcomes.append(error)

    with pytest.raises(ExceptionGroup) as group:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(engine_actor.run, handle=handle, journal=journal,
                                                  clock=trio_clock))
            nursery.start_soon(order, 1)
            await trio.to_thread.run_sync(journal.fsync_started.wait)   # batch 1 is being made durable
            journal.failing = True
            for account_id in range(2, 40):                              # the next batches, the inbox
                nursery.start_soon(order, account_id)
                await trio.sleep(0)
            journal.gate.set()
    [failure] = group.value.exceptions
    assert isinstance(failure, FatalIOError) and failure.exit_code == exit_code
    message = str(failure)
    assert message.startswith(f"{kind}: writing the journal {tmp_path / 'journal'}") and "free of" in message
    assert len(outcomes) == 39 and not handle.accepting
    assert outcomes[0].seq == 1                                          # durable before the failure
    assert all(isinstance(outcome, EngineStopped) for outcome in outcomes[1:]), outcomes
    with pytest.raises(EngineStopped):
        await handle.request(CreateAccount(account_id=99, initial_deposit=100))


# ------------------------------------------------------------------ the inbox's two lanes (issue 14)


async def test_both_inbox_lanes_are_applied_each_in_its_producers_order(tmp_path):
    """The handle's queue (taken whole per batch) and the channel lane (the feed's clones) both
    reach the core, each producer's items in the order it sent them; a put into the queue wakes
    an apply task that waits on the channel."""
    async with trio.open_nursery() as nursery:
        handle, journal = await start(nursery, tmp_path, fsync="off")
        feed = handle.inbox_sender()
        await trio.sleep(0.01)                                  # the apply task now waits
        await handle.request(CreateAccount(account_id=1, initial_deposit=10**9))
        for step in range(50):
            await feed.send(Quote(symbol=SYMBOL, bid=6_500_000 + step, ask=6_500_100 + step))
            handle.send_nowait(CreateAccount(account_id=100 + step))
        await handle.query(lambda engine: None)                 # after everything above
        await handle.stop()
    journal.close()
    records = [decode_record(payload) for payload in scan_journal(tmp_path / "journal").payloads]
    inputs = [record for record in records if type(record) is not Checkpoint]
    assert [r.account_id for r in inputs if type(r) is CreateAccount] == [1] + list(range(100, 150))
    assert [r.bid for r in inputs if type(r) is Quote] == [6_500_000 + step for step in range(50)]
    assert [r.seq for r in inputs] == list(range(1, 102))


async def _fill(handle: EngineHandle, first_account: int) -> int:
    """Send commands until the inbox reports overload (the pipeline held at a gated fsync)."""
    for account in range(first_account, first_account + 50):
        try:
            handle.send_nowait(CreateAccount(account_id=account))
        except Overloaded:
            return account
        await trio.sleep(0.01)
    pytest.fail("the inbox never reported overload")


async def test_a_blocked_send_waits_for_room_and_is_refused_once_the_engine_stops(tmp_path):
    journal = GatedJournal(tmp_path / "journal")
    async with trio.open_nursery() as nursery:
        handle, _ = await start(nursery, tmp_path, journal=journal, inbox_size=2)
        next_account = await _fill(handle, 1)
        sent: list[int] = []

        async def blocked_sender(account: int) -> None:
            await handle.send(CreateAccount(account_id=account))
            sent.append(account)

        nursery.start_soon(blocked_sender, next_account)
        await trio.sleep(0.05)
        assert sent == [] and handle.statistics()["inbox_depth"] == 2
        journal.gate.set()                                      # the engine takes the queue...
        with trio.fail_after(5):
            while not sent:
                await trio.sleep(0.01)
        assert sent == [next_account]                           # ...and the blocked send gets in
        # full again while the engine stops: a blocked send is refused, not left hanging
        await trio.sleep(0.05)
        journal.gate.clear()
        await _fill(handle, 1000)
        refused: list[BaseException] = []

        async def refused_sender() -> None:
            try:
                while True:
                    await handle.send(CreateAccount(account_id=9))
            except EngineStopped as exc:
                refused.append(exc)

        nursery.start_soon(refused_sender)
        await trio.sleep(0.05)
        nursery.start_soon(handle.stop)
        await trio.sleep(0.05)
        journal.gate.set()
        with trio.fail_after(5):
            while not refused:
                await trio.sleep(0.01)


async def test_a_flood_of_quotes_on_the_channel_lane_does_not_starve_the_commands(tmp_path):
    handle = EngineHandle(make_engine(), 100)
    feed = handle.inbox_sender()
    for step in range(10):
        feed.send_nowait(Quote(symbol=SYMBOL, bid=6_500_000 + step, ask=6_500_100 + step))
    for account in (1, 2, 3):
        handle.send_nowait(CreateAccount(account_id=account))
    batch = await engine_actor._next_items(handle, 4, trio_clock)
    assert [type(item) for item in batch] == [Quote, Quote, CreateAccount, CreateAccount]
    assert [item.bid for item in batch[:2]] == [6_500_000, 6_500_001]
    assert [item.account_id for item in batch[2:]] == [1, 2]
    batch = await engine_actor._next_items(handle, 4, trio_clock)
    assert [getattr(item, "account_id", None) for item in batch] == [None, None, None, 3]
