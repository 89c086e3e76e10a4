"""Cancel-on-disconnect on the WebSocket order lane (issue 13): a connection that asked for it has
the pending orders placed through it cancelled when it drops (CancelOrders, reason
cancel_on_disconnect); orders placed elsewhere, and connections that did not ask, keep theirs."""

from __future__ import annotations

import trio

from actors.ws._orders import cancel_on_disconnect_commands, placed_pending_orders
from exness_actors.events import OrderAccepted
from ws_helpers import running_stack

LIMIT = {"symbol": "BTCUSDT", "side": "buy", "type": "limit", "price": "60000.00", "margin": "50.00", "leverage": 10}


async def _pending_ids(stack, account_id: int) -> set[int]:
    return set(await stack.handle.query(lambda engine: [o.id for o in engine.pending_orders(account_id)]))


async def _wait_until(predicate, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(0.02)


async def test_a_dropped_connection_cancels_only_the_orders_it_placed(tmp_path):
    async with running_stack(tmp_path) as stack:
        token = await stack.account(1)
        await stack.quote(6_500_000, 6_500_100)
        async with stack.client() as keeper:
            await keeper.auth(token)
            kept = await keeper.order("k1", "place", **LIMIT)
            async with stack.client() as client:
                await client.auth(token)
                await client.send({"op": "cancel_on_disconnect", "enabled": True, "id": "cod"})
                answer, _ = await client.recv_until(lambda m: m.get("op") == "cancel_on_disconnect")
                assert answer == {"op": "cancel_on_disconnect", "enabled": True, "orders": 0, "id": "cod"}
                first = await client.order("p1", "place", **LIMIT)
                second = await client.order("p2", "place", **LIMIT)
                filled = await client.order("p3", "place", symbol="BTCUSDT", side="buy", type="market",
                                            margin="50.00", leverage=10)
                cancelled = await client.order("c1", "cancel", order_id=second["order"]["id"])
                assert first["ok"] and second["ok"] and filled["ok"] and cancelled["ok"]

            async def only_the_keepers_order_left() -> bool:
                return await _pending_ids(stack, 1) == {int(kept["order"]["id"])}
            await _wait_until(only_the_keepers_order_left)
            assert stack.server.cancels_on_disconnect == 1
            history = await stack.handle.query(
                lambda engine: engine.accounts[1].finished_orders[int(first["order"]["id"])])
            assert history == "cancelled"


async def test_without_the_request_or_after_disabling_orders_stay(tmp_path):
    async with running_stack(tmp_path) as stack:
        token = await stack.account(1)
        await stack.quote(6_500_000, 6_500_100)
        async with stack.client() as plain:
            await plain.auth(token)
            placed = await plain.order("p1", "place", **LIMIT)
        async with stack.client() as toggled:
            await toggled.auth(token)
            await toggled.send({"op": "cancel_on_disconnect", "enabled": True})
            await toggled.recv_until(lambda m: m.get("op") == "cancel_on_disconnect")
            other = await toggled.order("p2", "place", **LIMIT)
            await toggled.send({"op": "cancel_on_disconnect", "enabled": False, "id": 7})
            answer, _ = await toggled.recv_until(lambda m: m.get("op") == "cancel_on_disconnect")
            assert answer == {"op": "cancel_on_disconnect", "enabled": False, "orders": 1, "id": 7}
        await trio.sleep(0.2)
        assert await _pending_ids(stack, 1) == {int(placed["order"]["id"]), int(other["order"]["id"])}
        assert stack.server.cancels_on_disconnect == 0


async def test_the_request_needs_auth_and_a_boolean(tmp_path):
    async with running_stack(tmp_path) as stack, stack.client() as client:
        await client.send({"op": "cancel_on_disconnect", "enabled": True, "id": "a"})
        error, _ = await client.recv_until(lambda m: m.get("op") == "error")
        assert error["code"] == "AUTH_REQUIRED" and error["id"] == "a"
        token = await stack.account(1)
        await client.auth(token)
        for message, field in [({"enabled": "yes"}, "enabled"), ({}, "enabled")]:
            await client.send({"op": "cancel_on_disconnect", **message, "id": "b"})
            error, _ = await client.recv_until(lambda m: m.get("op") == "error")
            assert error["code"] == "VALIDATION_ERROR" and error["details"]["field"] == field
        await client.send({"op": "cancel_on_disconnect", "enabled": True, "colour": 1})
        error, _ = await client.recv_until(lambda m: m.get("op") == "error")
        assert "colour" in error["message"]


def test_the_commands_group_by_account_in_id_order():
    events = [OrderAccepted(order_id=9, account_id=2, symbol="X", side="buy", type="limit", status="pending",
                            price=1, margin=1, leverage=1, qty=1, take_profit=None, stop_loss=None,
                            trailing_stop=None, expires_at=None, client_order_id="", ts=0),
              OrderAccepted(order_id=3, account_id=2, symbol="X", side="buy", type="market", status="filled",
                            price=1, margin=1, leverage=1, qty=1, take_profit=None, stop_loss=None,
                            trailing_stop=None, expires_at=None, client_order_id="", ts=0)]
    assert placed_pending_orders(events) == {9: 2}
    commands = cancel_on_disconnect_commands({9: 2, 4: 1, 5: 2})
    assert [(c.account_id, c.order_ids, c.reason) for c in commands] == [
        (1, [4], "cancel_on_disconnect"), (2, [5, 9], "cancel_on_disconnect")]
