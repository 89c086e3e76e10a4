"""The Redis edge in one process: exactly-once redelivery, replies, timeouts, bus outages."""

from __future__ import annotations

import functools
import time

import attrs
import msgpack
import pytest
import redis
import trio

from actors.bus import streams as redis_edge
from actors.engine.actor import EngineHandle
from actors.engine.actor import run as run_engine
from actors.engine.messages import EngineStopped, EngineTimeout, Overloaded, ReplySlot, Request
from exness_actors import codec
from exness_actors.commands import Clock, CreateAccount, Deposit, EdgeCursor, PlaceOrder, Quote
from exness_actors.engine import Engine
from exness_actors.events import CommandRejected, DuplicateCommand, OrderAccepted, OrderRejected
from exness_actors.instruments import DEFAULT_INSTRUMENTS, CoreConfig
from exness_actors.journal import JournalWriter, scan_journal
from exness_actors.replay import replay

#: the edge's stream and key names, moved under each test's own prefix
EDGE_NAMES = ("PREFIX", "REPLY_PREFIX", "QUOTES_STREAM", "HEALTH_PREFIX")


def make_engine() -> Engine:
    return Engine(CoreConfig(instruments=DEFAULT_INSTRUMENTS))


@pytest.fixture
def url(redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """REDIS_URL as it is, the edge's streams and keys under ``redis_prefix`` (conftest; deleted after
    the test): another run, or a split-mode system on the same database, is never touched."""
    for name in EDGE_NAMES:
        monkeypatch.setattr(redis_edge, name, redis_prefix + getattr(redis_edge, name))
    return redis_url


# ------------------------------------------------------------------------------------ core

def test_edge_cursor_moves_forward_only_and_is_part_of_the_state() -> None:
    engine = make_engine()
    empty_state = engine.to_state()
    assert len(empty_state) == 14          # embedded states (and hashes) are unchanged
    engine.submit(EdgeCursor("stream:exness", 5, 2))
    engine.submit(EdgeCursor("stream:exness", 5, 1))      # backwards: ignored
    assert engine.edge_cursor("stream:exness") == (5, 2)
    engine.submit(EdgeCursor("stream:exness", 6, 0))
    assert engine.edge_cursor("stream:exness") == (6, 0)
    restored = Engine.from_state(engine.to_state())
    assert restored.edge_cursor("stream:exness") == (6, 0)
    assert restored.state_hash() == engine.state_hash()
    events = engine.submit(EdgeCursor("", -1, 0))
    assert isinstance(events[0], CommandRejected) and events[0].reason == "INVALID_COMMAND"
    assert engine.edge_cursor("") is None


# ------------------------------------------------------------------------------------ edge

def _burst(reply_stream: str, commands: list) -> bytes:
    return msgpack.packb({"r": reply_stream, "i": [[n, 0, codec.encode(c)] for n, c in enumerate(commands, 1)]},
                         use_bin_type=True)


async def _run_engine_and_edge(nursery, tmp_path, url, engine, *, name="edge", quotes=False, **options):
    handle = EngineHandle(engine, 1000)
    journal = JournalWriter(tmp_path / "journal")
    await nursery.start(functools.partial(run_engine, handle=handle, journal=journal, fsync="batch"))
    bus = redis_edge.RedisBus(url, name=name)
    await bus.connect()
    stats = await nursery.start(functools.partial(redis_edge.run_engine_edge, handle=handle, bus=bus,
                                                  quotes=quotes, **options))
    return handle, journal, stats


async def _wait(predicate, timeout=10):
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


async def test_entries_are_applied_once_replied_and_acknowledged_and_redelivery_applies_nothing(tmp_path, url):
    client = redis.Redis.from_url(url)
    reply_stream = redis_edge.REPLY_PREFIX + "test"
    stream = redis_edge.command_stream()
    client.xadd(stream, {"b": _burst(reply_stream, [CreateAccount(account_id=1, initial_deposit=100)])})
    client.xadd(stream, {"b": _burst(reply_stream, [Deposit(account_id=1, amount=50)])})
    client.xadd(stream, {"b": b"\xc1 not msgpack"})       # garbage: acknowledged, nothing applied
    async with trio.open_nursery() as nursery:
        handle, journal, stats = await _run_engine_and_edge(nursery, tmp_path, url, make_engine())
        await _wait(lambda: stats["acks"] == 3)
        assert handle.engine.accounts[1].free == 150
        replies = client.xrange(reply_stream)
        wires = [wire for _id, fields in replies for wire in msgpack.unpackb(fields[b"b"], raw=False)]
        assert [wire[1] for wire in wires] == ["reply", "reply"]
        assert client.xpending(stream, redis_edge.GROUP)["pending"] == 0
        cursor = handle.engine.edge_cursor(stream)
        assert cursor is not None
        state = handle.engine.to_state()
        await handle.stop()
        nursery.cancel_scope.cancel()
    journal.close()

    # A crash after the journal write but before XACK: the entries are pending again. Re-deliver
    # them to a restarted engine (recovered from the journal): nothing is applied twice.
    client.xgroup_setid(stream, redis_edge.GROUP, id="0")
    entries = client.xreadgroup(redis_edge.GROUP, f"engine-{stream}", {stream: ">"})
    assert len(entries[0][1]) == 3    # delivered, never acknowledged
    recovered = replay(make_engine(), scan_journal(tmp_path / "journal").payloads).engine
    assert recovered.to_state() == state
    last_seq = recovered.last_seq
    async with trio.open_nursery() as nursery:
        handle, journal, stats = await _run_engine_and_edge(nursery, tmp_path / "again", url, recovered)
        await _wait(lambda: stats["acks"] >= 3)
        assert stats["skipped_redelivered"] == 3     # the garbage entry too (its cursor was applied)
        assert handle.engine.last_seq == last_seq          # nothing applied
        assert handle.engine.accounts[1].free == 150
        assert client.xpending(stream, redis_edge.GROUP)["pending"] == 0
        await handle.stop()
        nursery.cancel_scope.cancel()
    journal.close()


def _engine_that_traded_a_minute_ago() -> Engine:
    engine = make_engine()
    minute_ago = time.time_ns() - 60 * 10**9
    engine.submit(CreateAccount(account_id=1, initial_deposit=1_000_000), ts=minute_ago)
    engine.submit(Quote(symbol="BTCUSDT", bid=6_500_000, ask=6_500_000), ts=minute_ago)
    return engine


def _order_after_504() -> PlaceOrder:
    return PlaceOrder(account_id=1, symbol="BTCUSDT", side="buy", type="market", margin=10_000,
                      leverage=10, client_order_id="after-504")


def _left_pending(client: redis.Redis, stream: str, reply_stream: str) -> None:
    """An order the engine read and died on before acknowledging it (its gateway answered 504)."""
    client.xgroup_create(stream, redis_edge.GROUP, id="0", mkstream=True)
    client.xadd(stream, {"b": _burst(reply_stream, [_order_after_504()])})
    assert len(client.xreadgroup(redis_edge.GROUP, f"engine-{stream}", {stream: ">"})[0][1]) == 1


async def _feed_quotes(client: redis.Redis, *, delay: float) -> None:
    await trio.sleep(delay)
    while True:
        client.xadd(redis_edge.QUOTES_STREAM, {"b": msgpack.packb([["BTCUSDT", 6_500_000, 6_500_000]])})
        await trio.sleep(0.05)


async def _outcomes(client: redis.Redis, reply_stream: str, count: int) -> list:
    """The first event of each of the first ``count`` replies on ``reply_stream``."""
    with trio.fail_after(10):
        while True:
            wires = [wire for _id, fields in client.xrange(reply_stream)
                     for wire in msgpack.unpackb(fields[b"b"], raw=False)]
            if len(wires) >= count:
                return [codec.decode(wire[4][0]) for wire in wires]
            await trio.sleep(0.02)


async def test_a_command_redelivered_after_a_restart_waits_for_a_fresh_quote(tmp_path, url):
    client = redis.Redis.from_url(url)
    reply_stream = redis_edge.REPLY_PREFIX + "test"
    stream = redis_edge.command_stream()
    _left_pending(client, stream, reply_stream)
    async with trio.open_nursery() as nursery:
        await _run_engine_and_edge(nursery, tmp_path, url, _engine_that_traded_a_minute_ago(), quotes=True)
        nursery.start_soon(functools.partial(_feed_quotes, client, delay=0.3))
        [filled] = await _outcomes(client, reply_stream, 1)
        assert isinstance(filled, OrderAccepted) and filled.status == "filled", filled
        client.xadd(stream, {"b": _burst(reply_stream, [_order_after_504()])})     # the client's retry
        [_, retried] = await _outcomes(client, reply_stream, 2)
        assert isinstance(retried, DuplicateCommand) and retried.order_id == filled.order_id, retried
        nursery.cancel_scope.cancel()


async def test_without_quotes_the_wait_is_bounded_and_a_retry_after_stale_quote_can_fill(tmp_path, url):
    client = redis.Redis.from_url(url)
    reply_stream = redis_edge.REPLY_PREFIX + "test"
    stream = redis_edge.command_stream()
    _left_pending(client, stream, reply_stream)
    async with trio.open_nursery() as nursery:
        await _run_engine_and_edge(nursery, tmp_path, url, _engine_that_traded_a_minute_ago(), quotes=True,
                                   fresh_quotes_wait_s=0.3)
        [stale] = await _outcomes(client, reply_stream, 1)
        assert isinstance(stale, OrderRejected) and stale.reason == "STALE_QUOTE", stale
        nursery.start_soon(functools.partial(_feed_quotes, client, delay=0))
        retried, sent = stale, 1
        with trio.fail_after(10):
            while isinstance(retried, OrderRejected):    # until a quote has reached the engine
                client.xadd(stream, {"b": _burst(reply_stream, [_order_after_504()])})
                sent += 1
                retried = (await _outcomes(client, reply_stream, sent))[sent - 1]
                await trio.sleep(0.05)
        assert isinstance(retried, OrderAccepted) and retried.status == "filled", retried
        nursery.cancel_scope.cancel()


async def test_the_wait_for_fresh_quotes_rides_out_a_full_inbox() -> None:
    class FloodedHandle:
        """Answers the wait's queries in turn; ``Overloaded`` is an inbox full of quotes."""
        answers: list = [Overloaded, True, Overloaded, ["BTCUSDT"], []]
        clocks = 0

        async def query(self, view):
            answer = self.answers.pop(0)
            if answer is Overloaded:
                raise Overloaded("engine inbox is full")
            return answer

        async def send(self, item):
            assert isinstance(item, Clock)
            self.clocks += 1

    handle = FloodedHandle()
    await redis_edge._await_fresh_quotes(handle, 10, "stream:exness")
    assert handle.answers == [] and handle.clocks == 2


async def test_remote_requests_round_trip_and_time_out_cleanly(tmp_path, url):
    async with trio.open_nursery() as nursery:
        handle, journal, _stats = await _run_engine_and_edge(nursery, tmp_path, url, make_engine())
        bus = redis_edge.RedisBus(url, name="gateway")
        await bus.connect()
        assert await bus.ping()
        remote = redis_edge.RemoteEngineHandle(bus=bus, core=handle.engine.config, request_timeout_s=1.0)
        await nursery.start(remote.run)
        reply = await remote.request(CreateAccount(account_id=9, initial_deposit=500))
        assert reply.seq >= 2 and remote.durable_seq == reply.seq      # the cursor took seq 1
        from actors.wire import views as views
        summary = await remote.query(redis_edge.BoxedView(views.account_summary, (9,)))
        assert summary[0]["account_id"] == "9" and summary[0]["balance"] == "5.00"
        # the stream server's throttled summaries (several accounts of one shard, by name)
        (rows,) = await remote.query(redis_edge.BoxedView(views.account_summaries, ([9, 404],)))
        [[account_id, engine_seq, data, symbols]] = rows
        assert (account_id, data["event"], data["balance"], data["margin_level"], symbols) == (
            9, "account_summary", "5.00", None, [])
        assert engine_seq >= reply.seq
        # the engine goes away: requests end in EngineTimeout (HTTP 504), not a hang
        await handle.stop()
        with trio.fail_after(5):
            with pytest.raises(EngineTimeout):
                await remote.request(Deposit(account_id=9, amount=1))
        assert remote.timeouts == 1
        await remote.cleanup()
        nursery.cancel_scope.cancel()
    journal.close()


def test_a_view_of_several_accounts_goes_to_the_shard_of_the_first():
    from actors.wire import views
    assert redis_edge._view_account(redis_edge.BoxedView(views.account_summaries, ([7, 9],))) == 7
    assert redis_edge._view_account(redis_edge.BoxedView(views.account_summaries, ([],))) is None
    assert redis_edge._view_account(redis_edge.BoxedView(views.account_summary, (5,))) == 5


async def test_ws_order_lane_actions_on_a_remote_engine_answer_as_in_embedded_mode(tmp_path, url):
    """The WS lane's functions (actors.ws._orders) through a remote engine, the id read by a view
    first (split mode knows no symbols it has not seen), against the same functions through an
    in-process engine routed as the server routes them with its symbol maps: same oks, same error
    codes, same rendered fields (times aside)."""
    from actors.bus.streams import BoxedView
    from actors.wire import views
    from actors.wire.codec import EdgeError
    from actors.ws._orders import ACTIONS, build_command, error_json, named_id, outcome, route, viewed_outcome
    from actors.ws.server import _failure_fields

    def prepare(engine: Engine) -> Engine:   # quotes never go stale: the actor's clock is the wall's
        engine = Engine(attrs.evolve(engine.config, stale_after_ns=10**19))
        engine.submit(Quote(symbol="BTCUSDT", bid=6_000_000, ask=6_000_100), ts=1)
        engine.submit(CreateAccount(account_id=9, initial_deposit=1_000_000), ts=2)
        engine.submit(CreateAccount(account_id=8, initial_deposit=1_000_000), ts=3)
        return engine

    steps = [
        ("place", {"symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "10.00", "leverage": 5,
                   "client_order_id": "p1"}, 9),
        ("modify_position", {"position_id": "1", "take_profit": "70000.00"}, 9),
        ("add_margin", {"position_id": "1", "amount": "2.50"}, 9),
        ("add_margin", {"position_id": "1", "amount": "2.50"}, 8),          # not account 8's
        ("modify_position", {"position_id": "1", "take_profit": "oops"}, 9),
        ("close", {"position_id": "1", "qty": "0.00001"}, 9),
        ("close", {"position_id": "1"}, 9),
        ("close", {"position_id": "1"}, 9),
        ("place", {"symbol": "BTCUSDT", "side": "buy", "type": "limit", "price": "50000.00",
                   "margin": "10.00", "leverage": 5, "client_order_id": "p2"}, 9),
        ("modify_order", {"order_id": "2", "price": "51000.00", "stop_loss": "45000.00"}, 9),
        ("modify_order", {"order_id": "2", "price": "51000.00"}, 8),
        ("modify_order", {"order_id": "2", "bogus": "1"}, 9),
        ("cancel", {"order_id": "2"}, 8),
        ("cancel", {"order_id": "2"}, 9),
        ("cancel", {"order_id": "2"}, 9),
        ("cancel", {"order_id": "zz"}, 9),
    ]

    def strip(fields: dict) -> dict:
        def clean(value):
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()
                        if k not in ("opened_at", "closed_at", "created_at", "updated_at", "message")}
            return value
        return clean(fields)

    async def lane(handle, action, message, account, *, with_symbols):
        """What WsServer._on_order does, with or without symbol maps (as the views answer them)."""
        try:
            target = named_id(action, message)
            symbol, viewed = None, target is not None
            if target is not None and with_symbols:
                (maps,) = await handle.query(BoxedView(views.owned_symbols))
                orders, positions = maps
                known = (orders if ACTIONS[action] == "order_id" else positions).get(target)
                symbol, viewed = route(action, known, account)
            if viewed:
                return await viewed_outcome(action, message, account, handle, handle.instruments, symbol)
            command = build_command(action, message, account, handle.instruments, symbol)
        except EdgeError as error:
            return {"ok": False, "error": error_json(error)}
        return outcome((await handle.request(command)).events, handle.instruments)

    async with trio.open_nursery() as nursery:
        local = EngineHandle(prepare(make_engine()), 1000)
        local_journal = JournalWriter(tmp_path / "local-journal")
        await nursery.start(functools.partial(run_engine, handle=local, journal=local_journal, fsync="off"))
        expected = [await lane(local, *step, with_symbols=True) for step in steps]
        assert [(e["ok"], e.get("error", {}).get("code")) for e in expected] == [
            (True, None), (True, None), (True, None), (False, "UNKNOWN_POSITION"), (False, "VALIDATION_ERROR"),
            (True, None), (True, None), (False, "UNKNOWN_POSITION"), (True, None), (True, None),
            (False, "UNKNOWN_ORDER"), (False, "VALIDATION_ERROR"), (False, "UNKNOWN_ORDER"), (True, None),
            (False, "ORDER_NOT_PENDING"), (False, "VALIDATION_ERROR")]
        assert expected[13]["order"]["price"] == "51000.00" and expected[13]["order"]["status"] == "cancelled"
        assert expected[1]["position"]["take_profit"] == "70000.00"

        handle, journal, _stats = await _run_engine_and_edge(nursery, tmp_path, url, prepare(make_engine()))
        bus = redis_edge.RedisBus(url, name="ws")
        await bus.connect()
        assert await bus.ping()
        remote = redis_edge.RemoteEngineHandle(bus=bus, core=handle.engine.config, request_timeout_s=1.0)
        await nursery.start(remote.run)
        for step, want in zip(steps, expected):
            got = await lane(remote, *step, with_symbols=False)
            assert strip(got) == strip(want), step
        # the engine goes away: the lane answers ENGINE_TIMEOUT (a retry is safe), never hangs
        await handle.stop()
        with trio.fail_after(5):
            with pytest.raises(EngineTimeout) as raised:
                await viewed_outcome("close", {"position_id": "1"}, 9, remote, remote.instruments, None)
        assert _failure_fields(raised.value)["error"]["code"] == "ENGINE_TIMEOUT"
        await remote.cleanup()
        nursery.cancel_scope.cancel()
    journal.close()
    local_journal.close()


async def test_bus_down_means_engine_stopped_not_a_hang():
    bus = redis_edge.RedisBus("redis://127.0.0.1:1/0")   # nothing listens on port 1
    await bus.connect()
    assert not await bus.ping()
    remote = redis_edge.RemoteEngineHandle(bus=bus, core=CoreConfig(instruments=DEFAULT_INSTRUMENTS))
    with pytest.raises(EngineStopped):
        remote.send_nowait(Request(CreateAccount(account_id=1), ReplySlot()))
    assert not remote.accepting
    await bus.close()


def test_health_check_reports_missing_and_present_heartbeats(url):
    ok, message = redis_edge.check_health(url, "engine", "test-host")
    assert not ok and "no heartbeat" in message
    redis.Redis.from_url(url).set(redis_edge.health_key("engine", "test-host"), b'{"ready": true}', ex=10)
    ok, _ = redis_edge.check_health(url, "engine", "test-host")
    assert ok
    redis.Redis.from_url(url).set(redis_edge.health_key("engine", "test-host"),
                                  b'{"ready": false, "reason": "Redis unreachable"}', ex=10)
    ok, message = redis_edge.check_health(url, "engine", "test-host")
    assert not ok and "Redis unreachable" in message
    ok, message = redis_edge.check_health("redis://127.0.0.1:1/0", "engine", "test-host")
    assert not ok and "unreachable" in message
