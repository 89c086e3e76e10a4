"""The notifications worker without the rest of the platform: what it derives, how it records
and delivers (webhooks with signatures, retries and dead letters, e-mail, the ws sink), and that
a cancelled worker loses nothing. The platform end to end is in test_notifications_e2e.py."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json

import pytest
import trio
import trio.testing

from actors.engine.messages import EventBatch
from actors.notifications import KINDS, derive, notification_json
from actors.notifications import worker as notify_worker
from actors.notifications._channels import retry_delay_s, sign
from actors.notifications.preferences import PreferencesError, apply_update, default_preferences
from actors.settings import NotificationSettings
from actors.store.notifications import Preferences
from actors.store.sqlite import SqliteStore
from exness_actors.events import (
    MarginCall, OrderCancelled, PositionClosed, PositionOpened, QuoteUpdated, StopOut)
from exness_actors.instruments import Instrument

from notify_helpers import SmtpReceiver, WebhookReceiver, settings_for

INSTRUMENTS = {"BTCUSDT": Instrument(symbol="BTCUSDT", price_decimals=2, qty_decimals=8)}
TS = 1_700_000_000_000_000_000


def opened(position_id: int = 11, account_id: int = 1, order_id: int = 5) -> PositionOpened:
    return PositionOpened(position_id=position_id, account_id=account_id, order_id=order_id, symbol="BTCUSDT",
                          side="buy", qty=153_846, open_price=6_500_000, margin=10_000, leverage=10,
                          liquidation_price=5_850_000, take_profit=None, stop_loss=None, trailing_stop=None, ts=TS)


def closed(reason: str, position_id: int = 11, account_id: int = 1) -> PositionClosed:
    return PositionClosed(position_id=position_id, account_id=account_id, symbol="BTCUSDT", side="buy",
                          reason=reason, price=7_150_000, qty=153_846, open_price=6_500_000, margin=10_000,
                          pnl=10_000, credit=20_000, remaining_qty=0, ts=TS)


def quote() -> QuoteUpdated:
    return QuoteUpdated(symbol="BTCUSDT", bid=6_500_000, ask=6_500_100, ts=TS)


# ------------------------------------------------------------------ deriving (pure)

@pytest.mark.parametrize("event, kind, fields", [
    (opened(), "order_filled", {"symbol": "BTCUSDT", "side": "buy", "qty": "0.00153846", "price": "65000.00",
                                "margin": "100.00", "leverage": 10, "order_id": "5", "position_id": "11"}),
    (closed("take_profit"), "take_profit", {"close_price": "71500.00", "pnl": "100.00", "reason": "take_profit"}),
    (closed("stop_loss"), "stop_loss", {"reason": "stop_loss"}),
    (closed("trailing_stop"), "trailing_stop", {"reason": "trailing_stop"}),
    (closed("liquidation"), "liquidation", {"reason": "liquidation"}),
    (MarginCall(account_id=1, equity=5_000, used_margin=10_000, ts=TS), "margin_call",
     {"equity": "50.00", "used_margin": "100.00", "margin_level": "50.00"}),
    (OrderCancelled(order_id=9, account_id=1, reason="expired", ts=TS), "order_expired", {"order_id": "9"}),
])
def test_each_event_makes_its_kind(event, kind, fields):
    (notification,) = derive([(42, TS, [quote(), event])], INSTRUMENTS, shard=0)
    assert notification.kind == kind and notification.account_id == 1
    assert notification.id == "0-42-1" and (notification.seq, notification.index) == (42, 1)
    assert notification.created_at == TS
    assert fields.items() <= notification.data.items()
    assert notification.title


@pytest.mark.parametrize("event", [
    quote(), closed("user"), closed("operator"),
    OrderCancelled(order_id=9, account_id=1, reason="user", ts=TS),
])
def test_other_events_make_none(event):
    assert derive([(1, TS, [event])], INSTRUMENTS) == []


def test_only_inputs_that_can_notify_are_forwarded():
    """The forwarder's predicate and derive share one table: every kind's event class can notify,
    an input without one of them makes nothing (the forwarder drops it)."""
    from actors.notifications.kinds import NOTIFYING_EVENTS, can_notify
    notifying = [opened(), closed("take_profit"), MarginCall(account_id=1, equity=1, used_margin=2, ts=TS),
                 StopOut(account_id=1, equity=0, used_margin=1, ts=TS),
                 OrderCancelled(order_id=9, account_id=1, reason="expired", ts=TS)]
    for event in notifying:
        assert can_notify([quote(), event]) and type(event) in NOTIFYING_EVENTS
    assert not can_notify([quote()]) and not can_notify([])
    assert derive([(1, TS, [quote(), quote()])], INSTRUMENTS) == []


def test_a_forwarded_frame_derives_what_the_full_events_derive():
    """The frame keeps only the events that can notify (None elsewhere): same notifications, same ids."""
    from actors.notifications._forward import decode_frame, encode_frame
    items = [(7, TS, [quote(), opened(), quote()]),
             (8, TS, [quote(), StopOut(account_id=1, equity=0, used_margin=10_000, ts=TS), closed("stop_out", 11)]),
             (9, TS, [OrderCancelled(order_id=9, account_id=1, reason="expired", ts=TS)])]
    batch = decode_frame(encode_frame(items, 12))
    assert batch.last_seq == 12 and batch.items[0][2][0] is None and batch.items[0][2][1] == opened()
    assert derive(batch.items, INSTRUMENTS) == derive(items, INSTRUMENTS)
    assert [n.id for n in derive(batch.items, INSTRUMENTS)] == ["0-7-1", "0-8-1", "0-9-0"]


def test_a_stop_out_carries_the_positions_its_input_closed():
    events = [StopOut(account_id=1, equity=0, used_margin=10_000, ts=TS), closed("stop_out", 11),
              closed("stop_out", 12), closed("stop_out", 13, account_id=2)]
    (notification,) = derive([(7, TS, events)], INSTRUMENTS)
    assert notification.kind == "stop_out" and notification.id == "0-7-0"
    assert [p["position_id"] for p in notification.data["positions"]] == ["11", "12"]


def test_derivation_is_a_pure_function_with_stable_ids():
    items = [(5, TS, [quote(), opened()]), (6, TS + 1, [closed("stop_loss")])]
    first, again = derive(items, INSTRUMENTS, shard=3), derive(items, INSTRUMENTS, shard=3)
    assert first == again
    assert [n.id for n in first] == ["3-5-1", "3-6-0"]


def test_the_json_shape():
    (notification,) = derive([(5, TS, [opened()])], INSTRUMENTS)
    body = notification_json(notification)
    assert set(body) == {"id", "kind", "created_at", "account_id", "title", "data"}
    assert body["created_at"] == TS // 1_000_000 and body["account_id"] == "1"


# ------------------------------------------------------------------ preferences

@pytest.mark.parametrize("body, field", [
    ([], "body"),
    ({"colour": "red"}, "colour"),
    ({"events": "order_filled"}, "events"),
    ({"events": ["order_filled", "fireworks"]}, "events"),
    ({"channels": ["ws", "pigeon"]}, "channels"),
    ({"channels": ["webhook"]}, "webhook_url"),
    ({"channels": ["email"]}, "channels"),
    ({"webhook_url": "http://example.com/hook"}, "webhook_url"),
    ({"webhook_url": "ftp://127.0.0.1/hook"}, "webhook_url"),
    ({"webhook_url": "https://user:pw@example.com/hook"}, "webhook_url"),
    ({"webhook_url": "https://" + "a" * 3000}, "webhook_url"),
    ({"webhook_url": 42}, "webhook_url"),
    ({"webhook_url": "https://example.com:99999/"}, "webhook_url"),
    ({"rotate_webhook_secret": "yes"}, "rotate_webhook_secret"),
])
def test_bad_preferences_name_the_field(body, field):
    with pytest.raises(PreferencesError) as caught:
        apply_update(default_preferences(1), body, now=1, email_available=False, allow_http_loopback=True)
    assert caught.value.field == field


def test_preferences_updates_keep_what_is_left_out_and_make_a_secret():
    current = default_preferences(1)
    assert current.events == KINDS and current.channels == ("ws",)
    updated = apply_update(current, {"channels": ["webhook", "ws", "webhook"], "webhook_url": "http://127.0.0.1:9/h"},
                           now=5, email_available=False, allow_http_loopback=True)
    assert updated.channels == ("ws", "webhook") and updated.events == KINDS
    assert updated.webhook_secret and len(updated.webhook_secret) == 64
    same = apply_update(updated, {"events": ["price_alert"]}, now=6, email_available=False, allow_http_loopback=True)
    assert same.webhook_secret == updated.webhook_secret and same.events == ("price_alert",)
    rotated = apply_update(same, {"rotate_webhook_secret": True}, now=7, email_available=False,
                           allow_http_loopback=True)
    assert rotated.webhook_secret != same.webhook_secret
    with pytest.raises(PreferencesError):   # https only when loopback http is not allowed
        apply_update(current, {"webhook_url": "http://127.0.0.1/h"}, now=1, email_available=False,
                     allow_http_loopback=False)


def test_the_retry_delay_doubles_up_to_its_cap():
    settings = NotificationSettings(retry_base_s=1.0, retry_max_s=5.0)
    assert [retry_delay_s(n, settings) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


# ------------------------------------------------------------------ the worker

@pytest.fixture(params=["inline", "process"])
def delivery(request):
    """Where e-mail and webhooks are delivered: the worker's tasks, or its child process."""
    return request.param


async def start_worker(nursery, store, settings, *, sink=None, backlog=(), delivery="inline"):
    send, receive = trio.open_memory_channel(64)
    worker = await nursery.start(functools.partial(
        notify_worker.run, inbox=receive, store=store, settings=settings, instruments=INSTRUMENTS, sink=sink,
        backlog=backlog, delivery=delivery))
    return worker, send


async def wait_until(predicate, timeout: float = 20) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def webhook_account(store, account_id: int, url: str, channels=("ws", "webhook")) -> Preferences:
    preferences = Preferences(account_id=account_id, events=KINDS, channels=channels, webhook_url=url,
                              webhook_secret=f"secret-{account_id}", updated_at=1)
    await store.put_preferences(preferences)
    return preferences


async def test_a_fill_reaches_a_signed_webhook_and_the_ws_sink(tmp_path, delivery):
    store = await SqliteStore.open(tmp_path)
    published = []

    async def sink(batch):
        published.extend(batch)

    with WebhookReceiver() as receiver:
        await webhook_account(store, 1, receiver.url("/one"))
        async with trio.open_nursery() as nursery:
            worker, send = await start_worker(nursery, store, settings_for(), sink=sink, delivery=delivery)
            await send.send(EventBatch([(3, TS, [quote(), opened()])], 3))
            await wait_until(lambda: receiver.at("/one") and published)
            await wait_until(lambda: worker.statistics().settled == 2)
            nursery.cancel_scope.cancel()
    (hook,) = receiver.at("/one")
    assert hook.headers["X-Exness-Notification-Id"] == "0-3-1"
    expected = "sha256=" + hmac.new(b"secret-1", hook.body, hashlib.sha256).hexdigest()
    assert hook.headers["X-Exness-Signature"] == expected == sign("secret-1", hook.body)
    assert json.loads(hook.body)["kind"] == "order_filled"
    assert published == [(1, json.loads(hook.body))]
    page, unread = await store.notifications(1)
    assert [n.id for n in page.items] == ["0-3-1"] and unread == 1
    assert await store.notifier_seq(0) == 3
    await store.close()


async def test_a_failing_webhook_is_retried_with_backoff_then_dead_lettered(tmp_path, delivery):
    store = await SqliteStore.open(tmp_path)
    settings = settings_for(max_attempts=4, retry_base_s=0.05, retry_max_s=1.0)
    with WebhookReceiver() as receiver:
        receiver.status["/down"] = [500]
        await webhook_account(store, 1, receiver.url("/down"), channels=("webhook",))
        async with trio.open_nursery() as nursery:
            worker, send = await start_worker(nursery, store, settings, delivery=delivery)
            await send.send(EventBatch([(3, TS, [opened()])], 3))
            await wait_until(lambda: worker.dispatchers["webhook"].dead == 1)
            await wait_until(lambda: worker.statistics().settled == 4)
            nursery.cancel_scope.cancel()
    hooks = receiver.at("/down")
    assert [hook.headers["X-Exness-Delivery-Attempt"] for hook in hooks] == ["1", "2", "3", "4"]
    gaps = [later.at - earlier.at for earlier, later in zip(hooks, hooks[1:])]
    assert all(gap >= 0.05 * 2 ** n * 0.9 for n, gap in enumerate(gaps))   # never earlier than the backoff
    assert len({hook.body for hook in hooks}) == 1                          # the same bytes every time
    (letter,) = (await store.dead_letters(1)).items
    assert (letter.notification_id, letter.channel, letter.attempts) == ("0-3-0", "webhook", 4)
    assert letter.last_error == "HTTP 500"
    assert await store.due_deliveries("webhook", 0, now=2**62, limit=10) == []
    await store.close()


async def test_a_retry_that_succeeds_delivers_once(tmp_path, delivery):
    store = await SqliteStore.open(tmp_path)
    with WebhookReceiver() as receiver:
        receiver.status["/flaky"] = [503, 503, 200]
        await webhook_account(store, 1, receiver.url("/flaky"), channels=("webhook",))
        async with trio.open_nursery() as nursery:
            worker, send = await start_worker(nursery, store, settings_for(), delivery=delivery)
            await send.send(EventBatch([(3, TS, [opened()])], 3))
            await wait_until(lambda: worker.dispatchers["webhook"].delivered == 1)
            await wait_until(lambda: worker.statistics().settled == 3)
            nursery.cancel_scope.cancel()
    assert len(receiver.at("/flaky")) == 3
    assert (await store.dead_letters(1)).items == []
    await store.close()


async def test_a_dead_target_does_not_delay_another_account(tmp_path, delivery):
    store = await SqliteStore.open(tmp_path)
    settings = settings_for(webhook_timeout_s=30.0, webhook_per_target=2)
    with WebhookReceiver() as receiver:
        receiver.hold["/dead"] = trio_event = __import__("threading").Event()
        await webhook_account(store, 1, receiver.url("/dead"), channels=("webhook",))
        await webhook_account(store, 2, receiver.url("/alive"), channels=("webhook",))
        async with trio.open_nursery() as nursery:
            worker, send = await start_worker(nursery, store, settings, delivery=delivery)
            # account 1 first, five fills: its target hangs on every one of them
            await send.send(EventBatch([(seq, TS, [opened(position_id=seq, account_id=1)]) for seq in range(1, 6)], 5))
            await wait_until(lambda: len(receiver.at("/dead")) == 2)     # its two slots are taken
            await send.send(EventBatch([(6, TS, [opened(position_id=6, account_id=2)])], 6))
            await wait_until(lambda: receiver.at("/alive"))
            # account 2 was served while account 1's requests still hang (none answered yet)
            await wait_until(lambda: worker.dispatchers["webhook"].per_target.get(receiver.url("/dead")) == 2)
            assert len(receiver.at("/dead")) == 2
            trio_event.set()
            await wait_until(lambda: worker.dispatchers["webhook"].delivered == 6)
            nursery.cancel_scope.cancel()
    await store.close()


async def test_email_goes_to_the_accounts_address(tmp_path, delivery):
    store = await SqliteStore.open(tmp_path)
    user = await store.create_user("trader@example.com", "hash", created_at=1)
    with SmtpReceiver() as smtp:
        await store.put_preferences(Preferences(account_id=user.account_id, events=KINDS, channels=("email",),
                                                updated_at=1))
        async with trio.open_nursery() as nursery:
            worker, send = await start_worker(nursery, store, settings_for(smtp), delivery=delivery)
            await send.send(EventBatch([(3, TS, [opened(account_id=user.account_id)])], 3))
            await trio.to_thread.run_sync(smtp.wait_for, lambda: smtp.messages)
            await wait_until(lambda: worker.statistics().settled == 1)
            nursery.cancel_scope.cancel()
    (message,) = smtp.messages
    assert smtp.recipients == [["trader@example.com"]]
    assert message["X-Exness-Notification-Id"] == "0-3-0"
    assert "filled at 65000.00" in message["Subject"]
    await store.close()


async def test_preferences_filter_kinds_and_channels(tmp_path, delivery):
    store = await SqliteStore.open(tmp_path)
    published = []

    async def sink(batch):
        published.extend(batch)

    await store.put_preferences(Preferences(account_id=1, events=("take_profit",), channels=("ws",), updated_at=1))
    async with trio.open_nursery() as nursery:
        worker, send = await start_worker(nursery, store, settings_for(), sink=sink, delivery=delivery)
        await send.send(EventBatch([(3, TS, [opened(), closed("take_profit"), opened(account_id=2)])], 3))
        await wait_until(lambda: len(published) == 2)
        nursery.cancel_scope.cancel()
    assert sorted((account, body["kind"]) for account, body in published) == [(1, "take_profit"), (2, "order_filled")]
    await store.close()


async def test_a_worker_cancelled_mid_delivery_loses_nothing(tmp_path, delivery):
    """Cancel the worker while a webhook is in flight and before a later batch is derived; a new
    worker over the same store (and the journal's events after its watermark) delivers all."""
    store = await SqliteStore.open(tmp_path)
    items = [(1, TS, [opened(position_id=1)]), (2, TS, [quote()]), (3, TS, [closed("take_profit", 1)])]
    import threading
    with WebhookReceiver() as receiver:
        receiver.hold["/hook"] = held = threading.Event()
        await webhook_account(store, 1, receiver.url("/hook"), channels=("webhook",))
        async with trio.open_nursery() as nursery:
            worker, send = await start_worker(nursery, store, settings_for(), delivery=delivery)
            await send.send(EventBatch(items[:1], 1))
            await trio.to_thread.run_sync(receiver.wait_for, lambda: receiver.at("/hook"))
            nursery.cancel_scope.cancel()       # mid-delivery; batches 2 and 3 never reached it
        assert await store.notifier_seq(0) == 1
        held.set()
        async with trio.open_nursery() as nursery:
            worker, send = await start_worker(nursery, store, settings_for(), backlog=items, delivery=delivery)
            await wait_until(lambda: worker.dispatchers["webhook"].delivered == 2)
            await wait_until(lambda: worker.statistics().settled == 2)
            nursery.cancel_scope.cancel()
    ids = [hook.headers["X-Exness-Notification-Id"] for hook in receiver.at("/hook")]
    assert set(ids) == {"0-1-0", "0-3-0"} and ids.count("0-1-0") == 2     # at-least-once, same id
    page, _ = await store.notifications(1)
    assert [n.id for n in page.items] == ["0-3-0", "0-1-0"]
    assert await store.notifier_seq(0) == 3
    await store.close()


async def test_deliveries_yield_to_a_saturated_engine_in_the_same_process(tmp_path):
    """While the engine has inputs queued, webhook rounds start once per poll interval; the
    deliveries wait in the outbox, and go out at full pace once it is idle."""
    store = await SqliteStore.open(tmp_path)
    busy = [True]
    with WebhookReceiver() as receiver:
        await webhook_account(store, 1, receiver.url("/hook"), channels=("webhook",))
        send, receive = trio.open_memory_channel(64)
        async with trio.open_nursery() as nursery:
            worker = await nursery.start(functools.partial(
                notify_worker.run, inbox=receive, store=store, settings=settings_for(poll_interval_s=0.2),
                instruments=INSTRUMENTS, engine_busy=lambda: busy[0], delivery="inline"))
            webhook = worker.dispatchers["webhook"]
            await send.send(EventBatch([(seq, TS, [opened(position_id=seq)]) for seq in range(1, 4)], 3))
            await wait_until(lambda: webhook.deferred_rounds >= 2)
            assert webhook.delivered <= 3
            busy[0] = False
            await wait_until(lambda: webhook.delivered == 3)
            rounds = webhook.deferred_rounds
            await send.send(EventBatch([(4, TS, [opened(position_id=4)])], 4))
            await wait_until(lambda: webhook.delivered == 4)
            assert webhook.deferred_rounds == rounds          # idle engine: no deferral
            nursery.cancel_scope.cancel()
    assert len(receiver.at("/hook")) == 4
    await store.close()


# ------------------------------------------------------------------ the delivery child process

def test_delivery_runs_in_a_child_where_an_engine_shares_the_process(tmp_path):
    from actors.notifications._delivery import delivery_mode
    store = SqliteStore(tmp_path)
    assert delivery_mode("auto", store, engine_in_process=True) == "process"      # embedded mode
    assert delivery_mode("auto", store, engine_in_process=False) == "inline"      # split mode's own role
    assert delivery_mode("process", store, engine_in_process=False) == "process"
    assert delivery_mode("inline", store, engine_in_process=True) == "inline"
    assert delivery_mode("process", object(), engine_in_process=True) == "inline"  # not SQLite: inline
    with pytest.raises(ValueError, match="delivery"):
        NotificationSettings(delivery="thread")
    trio.run(store.close)


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return any(line.split()[1:2] == ["Z"] for line in status if line.startswith("State:"))
    except FileNotFoundError:
        return True


async def test_a_killed_delivery_child_is_restarted_and_loses_nothing(tmp_path):
    """SIGKILL the child while a webhook is in flight: a new child starts, sends that delivery
    again (same id: at-least-once) and goes on with new ones; the store's outbox ends empty."""
    import os
    import signal
    import threading
    store = await SqliteStore.open(tmp_path)
    with WebhookReceiver() as receiver:
        receiver.hold["/hook"] = held = threading.Event()
        await webhook_account(store, 1, receiver.url("/hook"), channels=("webhook",))
        async with trio.open_nursery() as nursery:
            worker, send = await start_worker(nursery, store, settings_for(), delivery="process")
            await send.send(EventBatch([(1, TS, [opened(position_id=1)])], 1))
            await trio.to_thread.run_sync(receiver.wait_for, lambda: receiver.at("/hook"))
            first = worker.delivery.pid
            os.kill(first, signal.SIGKILL)
            await send.send(EventBatch([(2, TS, [closed("take_profit", 1)])], 2))   # pokes a dead child
            held.set()
            await wait_until(lambda: worker.delivery.starts == 2 and worker.delivery.pid not in (None, first))
            assert process_gone(first)
            await wait_until(lambda: worker.dispatchers["webhook"].delivered == 2)
            await wait_until(lambda: worker.statistics().settled >= 2)
            assert worker.statistics().delivery_process["starts"] == 2
            nursery.cancel_scope.cancel()
    ids = [hook.headers["X-Exness-Notification-Id"] for hook in receiver.at("/hook")]
    assert set(ids) == {"0-1-0", "0-2-0"} and ids.count("0-1-0") == 2 and ids.count("0-2-0") == 1
    assert await store.due_deliveries("webhook", 0, now=2**62, limit=10) == []
    assert (await store.dead_letters(1)).items == []
    await store.close()


async def test_stopping_the_worker_ends_its_delivery_child(tmp_path):
    store = await SqliteStore.open(tmp_path)
    async with trio.open_nursery() as nursery:
        worker, send = await start_worker(nursery, store, settings_for(), delivery="process")
        with trio.fail_after(30):
            await worker.delivery.ready.wait()
        pid = worker.delivery.pid
        assert pid is not None and not process_gone(pid)
        nursery.cancel_scope.cancel()
    assert process_gone(pid)
    assert worker.delivery.pid is None
    await store.close()


async def test_the_child_writing_the_same_sqlite_file_never_fails_the_persisters_writes(tmp_path):
    """Two processes write one SQLite file (WAL, busy_timeout): the child settles webhook
    deliveries while this process writes history batches as the persister does; no write fails."""
    store = await SqliteStore.open(tmp_path)
    fills = 300
    with WebhookReceiver() as receiver:
        await webhook_account(store, 1, receiver.url("/hook"), channels=("webhook",))
        async with trio.open_nursery() as nursery:
            worker, send = await start_worker(nursery, store, settings_for(webhook_concurrency=16, webhook_per_target=16),
                                              delivery="process")
            await worker.delivery.ready.wait()
            await send.send(EventBatch([(seq, TS, [opened(position_id=seq, order_id=seq)])
                                        for seq in range(1, fills + 1)], fills))
            for seq in range(1, fills + 1):          # the persister's transactions, one per batch, meanwhile
                await store.apply_batch(EventBatch([(seq, TS, [opened(position_id=seq, order_id=seq)])], seq))
            await wait_until(lambda: worker.dispatchers["webhook"].delivered == fills, timeout=60)
            nursery.cancel_scope.cancel()
    assert await store.last_persisted_seq(0) == fills
    webhook = worker.dispatchers["webhook"]
    assert webhook.failed_attempts == webhook.store_errors == worker.delivery.settle_errors == 0
    assert await store.due_deliveries("webhook", 0, now=2**62, limit=10) == []
    await store.close()


async def test_ws_deliveries_a_stopped_worker_left_are_published_by_the_next(tmp_path):
    """What the deriver records goes to the ws sink from memory; what is still in the outbox at
    start (a worker stopped before publishing it) is read from there — each published once."""
    store = await SqliteStore.open(tmp_path)
    (left,) = derive([(1, TS, [opened(position_id=1)])], INSTRUMENTS)
    await store.record_notifications(0, 1, [left], [(left.id, "ws", 1)], now=1)
    published = []

    async def sink(batch):
        published.extend(batch)

    async with trio.open_nursery() as nursery:
        worker, send = await start_worker(nursery, store, settings_for(), sink=sink)
        await send.send(EventBatch([(2, TS, [opened(position_id=2)])], 2))
        await wait_until(lambda: worker.statistics().settled == 2)
        await trio.sleep(0.2)                       # several outbox reads later: nothing twice
        nursery.cancel_scope.cancel()
    assert sorted(body["id"] for _, body in published) == ["0-1-0", "0-2-0"]
    assert await store.due_deliveries("ws", 0, now=2**62, limit=10) == []
    await store.close()


# ------------------------------------------------------------------ process mode: deriving in the child

def make_fill(seq: int, account_id: int = 1) -> EventBatch:
    return EventBatch([(seq, TS, [quote(), opened(position_id=seq, order_id=seq, account_id=account_id)])], seq)


async def test_the_forwarder_waits_when_its_frames_are_full_and_drops_nothing():
    from actors.notifications._forward import Forwarder
    forwarder = Forwarder(last_seq=0, limit=2)
    await forwarder.forward([make_fill(1)])
    await forwarder.forward([EventBatch([(2, TS, [quote()])], 2), make_fill(3)])   # the quote is not kept
    assert forwarder.buffered == 2 and forwarder.forwarded_seq == 3
    done = []

    async def third():
        await forwarder.forward([make_fill(4)])
        done.append(4)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(third)
        await trio.testing.wait_all_tasks_blocked()
        assert done == [] and forwarder.waits == 1         # full: it waits (the inbox back-pressures)
        assert [item[0] for item in forwarder.unrecorded] == [1, 3, 4]    # a worker restart derives them
        forwarder.derived(1)
        await trio.testing.wait_all_tasks_blocked()
        assert done == [4]
    assert [seq for seq, _, _ in forwarder.frames] == [3, 4]
    assert [item[0] for item in forwarder.unrecorded] == [3, 4]
    forwarder.child_ready(3, 3)                            # a new child recorded up to 3: 4 is resent
    assert forwarder.sent_seq == 3 and [seq for seq, _, _ in forwarder.frames] == [4]


async def test_process_mode_a_fill_reaches_ws_webhook_and_email_derived_in_the_child(tmp_path):
    store = await SqliteStore.open(tmp_path)
    user = await store.create_user("trader@example.com", "hash", created_at=1)
    account = user.account_id
    published = []

    async def sink(batch):
        published.extend(batch)

    with WebhookReceiver() as receiver, SmtpReceiver() as smtp:
        await webhook_account(store, account, receiver.url("/one"), channels=("ws", "webhook", "email"))
        async with trio.open_nursery() as nursery:
            worker, send = await start_worker(nursery, store, settings_for(smtp), sink=sink, delivery="process")
            await send.send(EventBatch([(2, TS, [quote()])], 2))
            await send.send(make_fill(3, account))
            await wait_until(lambda: receiver.at("/one") and published and smtp.messages)
            await wait_until(lambda: worker.statistics().settled == 3)
            stats = worker.statistics()
            assert stats.notifications == 1 and stats.last_seq == 3
            assert stats.forwarder["forwarded_inputs"] == 1 and stats.forwarder["buffered_inputs"] == 0
            assert worker._notifications == 0          # recorded by the child, not here
            nursery.cancel_scope.cancel()
    (hook,) = receiver.at("/one")
    assert hook.headers["X-Exness-Notification-Id"] == "0-3-1"
    assert published == [(account, json.loads(hook.body))]
    assert smtp.messages[0]["X-Exness-Notification-Id"] == "0-3-1"
    page, _ = await store.notifications(account)
    assert [n.id for n in page.items] == ["0-3-1"]
    assert await store.notifier_seq(0) == 3
    await store.close()


@pytest.mark.parametrize("delivery", ["inline", "process"])
async def test_the_watermark_advances_over_quote_only_stretches(tmp_path, delivery):
    store = await SqliteStore.open(tmp_path)
    async with trio.open_nursery() as nursery:
        worker, send = await start_worker(nursery, store, settings_for(), delivery=delivery)
        for seq in range(1, 51):
            await send.send(EventBatch([(seq, TS, [quote()])], seq))
        await send.send(EventBatch([], 60))                  # a batch of inputs without events
        with trio.fail_after(20):
            while await store.notifier_seq(0) != 60:
                await trio.sleep(0.05)
        assert worker.statistics().last_seq == 60
        if delivery == "process":
            assert worker.forwarder.forwarded_inputs == 0     # nothing was worth forwarding
        nursery.cancel_scope.cancel()
    await store.close()


class WriteLock:
    """Holds the SQLite file's write lock from another connection: the child cannot record."""

    def __init__(self, path) -> None:
        import sqlite3
        self.connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def __enter__(self) -> "WriteLock":
        self.connection.execute("BEGIN IMMEDIATE")
        return self

    def release(self) -> None:
        if self.connection.in_transaction:
            self.connection.execute("ROLLBACK")

    def __exit__(self, *exc) -> None:
        self.release()
        self.connection.close()


async def test_a_child_killed_between_forwarding_and_recording_loses_nothing(tmp_path):
    """SIGKILL the child (by PID) while it cannot record what was forwarded: the worker keeps the
    frames, the next child starts from the store's watermark, they are sent again, and every
    notification is recorded exactly once (same ids) and delivered at least once."""
    import os
    import signal
    store = await SqliteStore.open(tmp_path)
    with WebhookReceiver() as receiver:
        await webhook_account(store, 1, receiver.url("/hook"), channels=("webhook",))
        async with trio.open_nursery() as nursery:
            worker, send = await start_worker(nursery, store, settings_for(), delivery="process")
            await send.send(make_fill(1))
            await wait_until(lambda: receiver.at("/hook"))
            first = worker.delivery.pid
            with WriteLock(store.path) as lock:
                for seq in (2, 3, 4):
                    await send.send(make_fill(seq))
                await send.send(EventBatch([(5, TS, [quote()])], 5))
                await wait_until(lambda: worker.forwarder.sent_seq == 5)      # written to the child's stdin
                await trio.sleep(0.2)
                assert worker.forwarder.derived_seq == 1 and worker.forwarder.buffered == 3
                os.kill(first, signal.SIGKILL)
                await wait_until(lambda: process_gone(first))
                lock.release()
            await wait_until(lambda: worker.delivery.starts == 2 and worker.delivery.pid not in (None, first))
            await wait_until(lambda: worker.forwarder.derived_seq == 5 and worker.forwarder.buffered == 0)
            await send.send(make_fill(6))
            expected = {f"0-{seq}-1" for seq in (1, 2, 3, 4, 6)}       # 5 was a quote
            await wait_until(lambda: {hook.headers["X-Exness-Notification-Id"]
                                      for hook in receiver.at("/hook")} == expected)
            with trio.fail_after(20):           # every delivery settled
                while await store.due_deliveries("webhook", 0, now=2**62, limit=10):
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    ids = [hook.headers["X-Exness-Notification-Id"] for hook in receiver.at("/hook")]
    assert set(ids) == expected                                      # each delivered at least once
    page, _ = await store.notifications(1, limit=50)
    assert sorted(n.id for n in page.items) == sorted(expected)      # each recorded exactly once
    assert await store.due_deliveries("webhook", 0, now=2**62, limit=10) == []
    assert await store.notifier_seq(0) >= 6
    await store.close()


async def test_process_mode_back_pressures_the_inbox_when_the_child_falls_behind(tmp_path, monkeypatch):
    """The child cannot record (the file's write lock is held): the forwarder keeps at most its
    bound, then stops reading the inbox (which fills: the engine would wait); nothing is dropped."""
    from actors.notifications import _forward
    monkeypatch.setattr(_forward, "FORWARD_BUFFER_INPUTS", 3)
    store = await SqliteStore.open(tmp_path)
    send, receive = trio.open_memory_channel(2)
    async with trio.open_nursery() as nursery:
        worker = await nursery.start(functools.partial(
            notify_worker.run, inbox=receive, store=store, settings=settings_for(), instruments=INSTRUMENTS,
            delivery="process"))
        await worker.delivery.ready.wait()
        with WriteLock(store.path) as lock:
            sent = 0
            with trio.move_on_after(3):
                for seq in range(1, 21):
                    await send.send(make_fill(seq))
                    sent = seq
            assert sent < 20                              # the inbox back-pressured the sender
            forwarder = worker.forwarder
            assert forwarder.buffered <= 3 and forwarder.waits >= 1
            lock.release()
            with trio.fail_after(30):
                for seq in range(sent + 1, 21):
                    await send.send(make_fill(seq))
        await wait_until(lambda: worker.statistics().last_seq == 20, timeout=30)
        nursery.cancel_scope.cancel()
    page, _ = await store.notifications(1, limit=50)
    assert sorted(n.seq for n in page.items) == list(range(1, 21))
    await store.close()


@pytest.mark.parametrize("delivery", ["inline", "process"])
async def test_a_closed_inbox_ends_the_worker_with_everything_recorded(tmp_path, delivery):
    """The inbox closes (a stop): the worker returns once what it took is recorded, and the
    store's watermark covers the last input, quotes included (process mode: the child's)."""
    store = await SqliteStore.open(tmp_path)
    async with trio.open_nursery() as nursery:
        worker, send = await start_worker(nursery, store, settings_for(), delivery=delivery)
        for seq in range(1, 6):
            await send.send(make_fill(seq))
        await send.send(EventBatch([(7, TS, [quote()])], 9))
        await send.aclose()
    assert worker.statistics().last_seq == 9 and worker.statistics().notifications == 5
    assert await store.notifier_seq(0) == 9
    page, _ = await store.notifications(1, limit=50)
    assert sorted(n.seq for n in page.items) == [1, 2, 3, 4, 5]
    await store.close()
