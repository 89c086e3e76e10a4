"""The HTTP API through the real app over a real system: the trader's journey and authentication.

Every test starts the engine side with ``run_system(feed="none")`` in a temporary data dir and
drives the app with Quart's test client; quotes are pushed as raw ticks (the engine adds the
spread: BTCUSDT raw 65000.00 trades at bid 64987.00 / ask 65013.00).
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from actors.engine.messages import Overloaded
from gateway_helpers import API, PASSWORD, bearer, gateway_config, running_gateway


# ------------------------------------------------------------------ the journey

async def test_trader_journey_from_signup_to_liquidation_history_and_candles(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        # sign up and in
        user_id = await h.signup("  Trader@Example.COM ")
        tokens = await h.signin("trader@example.com")
        assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 900
        assert tokens["user_id"] == tokens["account_id"] == user_id
        auth = bearer(tokens)
        _, account = await h.call("GET", f"{API}/account", headers=auth, expect=200)
        assert account == {"account_id": user_id, "balance": "5000.00", "locked": "0.00",
                           "used_margin": "0.00", "equity": "5000.00", "free_margin": "5000.00",
                           "margin_level": None, "unrealized_pnl": "0.00", "currency": "USD",
                           "account_type": "standard", "margin_mode": "cross", "demo": True,
                           "margin_call_level": "60.00", "stop_out_level": "0.00", "in_margin_call": False}

        # sign-up opened a Standard (cross) account; this journey trades an isolated one
        tokens = await h.open_and_switch(tokens, "isolated")
        auth = bearer(tokens)
        _, account = await h.call("GET", f"{API}/account", headers=auth, expect=200)
        assert (account["account_id"], account["account_type"], account["margin_mode"], account["balance"],
                account["margin_call_level"], account["stop_out_level"]) == (
            tokens["account_id"], "isolated", "isolated", "5000.00", None, None)

        # a quote
        await h.quote_all()
        _, quote = await h.call("GET", f"{API}/quotes/btcusdt", expect=200)
        assert (quote["symbol"], quote["bid"], quote["ask"]) == ("BTCUSDT", "64987.00", "65013.00")
        assert abs(quote["ts"] - time.time() * 1000) < 60_000

        # a market long with TP/SL
        _, placed = await h.call("POST", f"{API}/orders", headers=auth, expect=201, json={
            "symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "100.00", "leverage": 10,
            "take_profit": "70000.00", "stop_loss": 60000, "client_order_id": "journey-1"})
        order, position = placed["order"], placed["position"]
        assert order["status"] == "filled" and order["fill_price"] == "65013.00"
        assert order["position_id"] == position["id"] and position["order_id"] == order["id"]
        assert (position["side"], position["open_price"], position["margin"], position["leverage"]) == (
            "buy", "65013.00", "100.00", 10)
        assert (position["take_profit"], position["stop_loss"]) == ("70000.00", "60000.00")
        assert position["qty"] == "0.01538153"              # floor(100 * 10 / 65013, 8 decimals)
        assert position["unrealized_pnl"] == "-0.40"         # the spread, floored against the trader
        position_id = position["id"]

        # the same client_order_id again: the original order, nothing new
        status, again = await h.call("POST", f"{API}/orders", headers=auth, json={
            "symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "100.00", "leverage": 10,
            "client_order_id": "journey-1"})
        assert status == 200 and again["order"]["id"] == order["id"]
        assert again["position"]["id"] == position_id

        # a pending limit, listed, then cancelled
        _, pending = await h.call("POST", f"{API}/orders", headers=auth, expect=201, json={
            "symbol": "BTCUSDT", "side": "buy", "type": "limit", "price": "60000.00", "margin": 50,
            "leverage": 5})
        limit_id = pending["order"]["id"]
        assert pending["order"]["status"] == "pending" and "position" not in pending
        _, listed = await h.call("GET", f"{API}/orders", headers=auth, expect=200)
        assert [o["id"] for o in listed["orders"]] == [limit_id] and listed["next_cursor"] is None
        _, account = await h.call("GET", f"{API}/account", headers=auth, expect=200)
        assert (account["locked"], account["free_margin"]) == ("150.00", "4850.00")
        _, cancelled = await h.call("DELETE", f"{API}/orders/{limit_id}", headers=auth, expect=200)
        assert (cancelled["id"], cancelled["status"], cancelled["cancel_reason"]) == (limit_id, "cancelled", "user")
        _, fetched = await h.call("GET", f"{API}/orders/{limit_id}", headers=auth, expect=200)
        assert fetched["status"] == "cancelled"
        status, body = await h.call("DELETE", f"{API}/orders/{limit_id}", headers=auth)
        assert (status, body["error"]["code"]) == (409, "ORDER_NOT_PENDING")
        _, history = await h.call("GET", f"{API}/orders?status=cancelled", headers=auth, expect=200)
        assert [o["id"] for o in history["orders"]] == [limit_id]

        # TP/SL changes, then a partial close
        _, modified = await h.call("PATCH", f"{API}/positions/{position_id}", headers=auth, expect=200,
                                   json={"take_profit": None, "stop_loss": "59000.00"})
        assert (modified["take_profit"], modified["stop_loss"]) == (None, "59000.00")
        _, closed = await h.call("POST", f"{API}/positions/{position_id}/close", headers=auth, expect=200,
                                 json={"qty": "0.00538153"})
        assert (closed["close_reason"], closed["close_price"], closed["qty"], closed["remaining_qty"]) == (
            "user", "64987.00", "0.00538153", "0.01000000")
        assert Decimal(closed["pnl"]) < 0 and Decimal(closed["credit"]) > 0

        # a gap down: the liquidation fires before the stop-loss
        await h.quote("BTCUSDT", "50000.00", "50000.00")
        _, positions = await h.call("GET", f"{API}/positions", headers=auth, expect=200)
        assert positions == {"positions": []}
        _, history = await h.call("GET", f"{API}/history/positions?reason=liquidation", headers=auth, expect=200)
        [liquidated] = history["positions"]
        assert (liquidated["position_id"], liquidated["close_reason"], liquidated["qty"]) == (
            position_id, "liquidation", "0.01000000")
        assert liquidated["credit"] == "0.00" and liquidated["leverage"] == 10
        _, everything = await h.call("GET", f"{API}/history/positions?symbol=BTCUSDT", headers=auth, expect=200)
        assert [p["close_reason"] for p in everything["positions"]] == ["liquidation", "user"]

        # what is left: the deposit minus the partial close's loss and the liquidated margin
        _, account = await h.call("GET", f"{API}/account", headers=auth, expect=200)
        expected = Decimal("5000.00") - Decimal("100.00") + Decimal(closed["credit"])
        assert Decimal(account["balance"]) == expected and account["locked"] == "0.00"

        # the ledger explains it, newest first
        _, ledger = await h.call("GET", f"{API}/account/ledger?limit=100", headers=auth, expect=200)
        kinds = [entry["kind"] for entry in ledger["entries"]]
        assert kinds == ["position_close", "position_close", "order_release", "order_margin",
                         "position_margin", "deposit"]
        assert ledger["entries"][-1]["free_delta"] == "5000.00"
        _, page = await h.call("GET", f"{API}/account/ledger?limit=4", headers=auth, expect=200)
        _, rest = await h.call("GET", f"{API}/account/ledger?limit=4&cursor={page['next_cursor']}",
                               headers=auth, expect=200)
        assert [e["id"] for e in page["entries"] + rest["entries"]] == [e["id"] for e in ledger["entries"]]

        # candles of the bid, the live one included
        _, page = await h.call("GET", f"{API}/candles?symbol=BTCUSDT&interval=1m", expect=200)
        candles = page["candles"]
        assert page["next_cursor"] is None
        assert candles[-1]["close"] == "49990.00" and candles[-1]["low"] == "49990.00"
        assert sum(candle["volume"] for candle in candles) == 2
        assert set(candles[-1]) == {"ts", "open", "high", "low", "close", "volume"}
        _, page = await h.call("GET", f"{API}/candles?symbol=BTCUSDT&interval=1w&limit=1", expect=200)
        weekly = page["candles"]
        assert len(weekly) == 1 and weekly[0]["high"] == "64987.00"

        assert h.gateway.internal_errors == 0


async def test_deposit_withdraw_and_their_idempotency(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        auth = await h.trader("funds@example.com")
        _, summary = await h.call("POST", f"{API}/account/deposit", headers=auth, expect=200,
                                  json={"amount": "250.50", "idempotency_key": "dep-1"})
        assert summary["balance"] == "5250.50"
        _, summary = await h.call("POST", f"{API}/account/deposit", headers=auth, expect=200,
                                  json={"amount": "250.50", "idempotency_key": "dep-1"})
        assert summary["balance"] == "5250.50"            # the repeat changed nothing
        _, summary = await h.call("POST", f"{API}/account/withdraw", headers=auth, expect=200,
                                  json={"amount": 1000})
        assert summary["balance"] == "4250.50"
        status, body = await h.call("POST", f"{API}/account/withdraw", headers=auth,
                                    json={"amount": "999999.00", "idempotency_key": "big"})
        assert (status, body["error"]["code"]) == (422, "INSUFFICIENT_BALANCE")
        status, body = await h.call("POST", f"{API}/account/withdraw", headers=auth,
                                    json={"amount": "1.00", "idempotency_key": "big"})
        assert (status, body["error"]["code"], body["error"]["details"]["duplicate"]) == (
            422, "INSUFFICIENT_BALANCE", True)


async def test_pending_order_modify_and_paging(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        auth = await h.trader("pending@example.com")
        await h.quote_all()
        ids = []
        for price in ("60000", "60001", "60002"):
            _, placed = await h.call("POST", f"{API}/orders", headers=auth, expect=201, json={
                "symbol": "BTCUSDT", "side": "buy", "type": "limit", "price": price, "margin": "20",
                "leverage": 5})
            ids.append(placed["order"]["id"])
        _, first = await h.call("GET", f"{API}/orders?limit=2", headers=auth, expect=200)
        _, second = await h.call("GET", f"{API}/orders?limit=2&cursor={first['next_cursor']}",
                                 headers=auth, expect=200)
        assert [o["id"] for o in first["orders"] + second["orders"]] == ids[::-1]
        assert second["next_cursor"] is None
        _, modified = await h.call("PATCH", f"{API}/orders/{ids[0]}", headers=auth, expect=200,
                                   json={"price": "59000.00", "stop_loss": "58000", "expires_at": None})
        assert (modified["price"], modified["stop_loss"], modified["status"]) == ("59000.00", "58000.00", "pending")
        status, body = await h.call("PATCH", f"{API}/orders/{ids[0]}", headers=auth, json={"price": "70000"})
        assert (status, body["error"]["code"]) == (422, "INVALID_PRICE")
        _, fetched = await h.call("GET", f"{API}/orders/{ids[0]}", headers=auth, expect=200)
        assert fetched["price"] == "59000.00"
        _, eth = await h.call("GET", f"{API}/orders?symbol=ethusdt", headers=auth, expect=200)
        assert eth["orders"] == []


async def test_position_margin_and_trailing_stop(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        auth = await h.trader("margin@example.com", "isolated")   # a position's own margin: isolated
        await h.quote_all()
        _, placed = await h.call("POST", f"{API}/orders", headers=auth, expect=201, json={
            "symbol": "ETHUSDT", "side": "sell", "type": "market", "margin": "100", "leverage": 20})
        position = placed["position"]
        _, more = await h.call("POST", f"{API}/positions/{position['id']}/margin", headers=auth,
                               expect=200, json={"amount": "50.00"})
        assert more["margin"] == "150.00"
        assert Decimal(more["liquidation_price"]) > Decimal(position["liquidation_price"])
        _, trailing = await h.call("PATCH", f"{API}/positions/{position['id']}", headers=auth,
                                   expect=200, json={"trailing_stop": "25.00"})
        assert trailing["trailing_stop"] == "25.00" and trailing["trailing_stop_price"] == "3525.70"
        _, fetched = await h.call("GET", f"{API}/positions/{position['id']}", headers=auth, expect=200)
        assert fetched == trailing
        _, closed = await h.call("POST", f"{API}/positions/{position['id']}/close", headers=auth, expect=200)
        assert closed["remaining_qty"] == "0.00000000" and closed["close_reason"] == "user"
        status, body = await h.call("GET", f"{API}/positions/{position['id']}", headers=auth)
        assert (status, body["error"]["code"]) == (404, "UNKNOWN_POSITION")


async def test_business_rejections_are_422_with_the_core_reason(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        auth = await h.trader("reject@example.com")
        order = {"symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "100", "leverage": 10}
        status, body = await h.call("POST", f"{API}/orders", headers=auth, json=order)
        assert (status, body["error"]["code"]) == (422, "NO_QUOTE")
        await h.quote_all()
        status, body = await h.call("POST", f"{API}/orders", headers=auth, json={**order, "margin": "9000"})
        assert (status, body["error"]["code"], body["error"]["details"]["reason"]) == (
            422, "INSUFFICIENT_BALANCE", "INSUFFICIENT_BALANCE")
        status, body = await h.call("POST", f"{API}/orders", headers=auth,
                                    json={**order, "take_profit": "60000.00"})
        assert (status, body["error"]["code"]) == (422, "INVALID_TPSL")
        _, metrics = await h.call("GET", "/metrics")
        assert 'exness_orders_total{outcome="rejected",reason="NO_QUOTE"} 1.0' in metrics
        assert 'exness_orders_total{outcome="rejected",reason="INVALID_TPSL"} 1.0' in metrics


# ------------------------------------------------------------------ authentication

async def test_signin_failures_and_bad_tokens_are_401(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        await h.signup("who@example.com")
        for email, password in (("who@example.com", "wrong password"), ("nobody@example.com", PASSWORD)):
            status, body = await h.call("POST", f"{API}/auth/signin", json={"email": email, "password": password})
            assert (status, body["error"]["code"]) == (401, "INVALID_CREDENTIALS")
        tokens = await h.signin("WHO@example.com")
        expired = h.gateway.tokens.issue_access(int(tokens["user_id"]), int(tokens["account_id"]),
                                                now=time.time() - 3600)
        other_secret = __import__("actors.auth_tokens", fromlist=["TokenIssuer"]).TokenIssuer(b"x" * 32)
        forged = other_secret.issue_access(int(tokens["user_id"]), int(tokens["account_id"]))
        cases = [
            ({}, "MISSING_TOKEN"),
            ({"Authorization": "Bearer"}, "INVALID_TOKEN"),
            ({"Authorization": "Basic dXNlcjpwYXNz"}, "INVALID_TOKEN"),
            ({"Authorization": "Bearer not.a.jwt"}, "INVALID_TOKEN"),
            ({"Authorization": "Bearer " + "A" * 5000}, "INVALID_TOKEN"),
            ({"Authorization": f"Bearer {forged}"}, "INVALID_TOKEN"),
            ({"Authorization": f"Bearer {expired}"}, "TOKEN_EXPIRED"),
            ({"Authorization": f"Bearer {tokens['refresh_token']}"}, "INVALID_TOKEN"),
        ]
        for headers, code in cases:
            status, body = await h.call("GET", f"{API}/account", headers=headers)
            assert (status, body["error"]["code"]) == (401, code), headers
        response = await h.client.get(f"{API}/positions")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        await h.call("GET", f"{API}/account", headers=bearer(tokens), expect=200)
        assert h.gateway.internal_errors == 0


async def test_refresh_rotates_and_reuse_revokes_the_whole_family(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        await h.signup("rotate@example.com")
        first = await h.signin("rotate@example.com")
        other_session = await h.signin("rotate@example.com")
        _, second = await h.call("POST", f"{API}/auth/refresh", expect=200,
                                 json={"refresh_token": first["refresh_token"]})
        assert second["refresh_token"] != first["refresh_token"]
        await h.call("GET", f"{API}/account", headers=bearer(second), expect=200)
        _, third = await h.call("POST", f"{API}/auth/refresh", expect=200,
                                json={"refresh_token": second["refresh_token"]})

        # someone replays the spent first token: the family (first → second → third) is revoked
        status, body = await h.call("POST", f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert (status, body["error"]["code"]) == (401, "REFRESH_TOKEN_REUSED")
        status, body = await h.call("POST", f"{API}/auth/refresh", json={"refresh_token": third["refresh_token"]})
        assert (status, body["error"]["code"]) == (401, "REFRESH_TOKEN_REVOKED")

        # another sign-in is another family: untouched
        await h.call("POST", f"{API}/auth/refresh", expect=200,
                     json={"refresh_token": other_session["refresh_token"]})
        status, body = await h.call("POST", f"{API}/auth/refresh", json={"refresh_token": "made-up"})
        assert (status, body["error"]["code"]) == (401, "INVALID_REFRESH_TOKEN")


async def test_signout_revokes_the_family(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        await h.signup("bye@example.com")
        tokens = await h.signin("bye@example.com")
        _, rotated = await h.call("POST", f"{API}/auth/refresh", expect=200,
                                  json={"refresh_token": tokens["refresh_token"]})
        status, body = await h.call("POST", f"{API}/auth/signout", json={"refresh_token": rotated["refresh_token"]})
        assert (status, body) == (204, None)
        status, body = await h.call("POST", f"{API}/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
        assert (status, body["error"]["code"]) == (401, "REFRESH_TOKEN_REVOKED")
        await h.call("POST", f"{API}/auth/signout", json={"refresh_token": rotated["refresh_token"]}, expect=204)
        status, body = await h.call("POST", f"{API}/auth/signout", json={"refresh_token": "never-issued"})
        assert (status, body["error"]["code"]) == (401, "INVALID_REFRESH_TOKEN")


async def test_refresh_token_expiry(tmp_path) -> None:
    now = [time.time_ns()]
    async with running_gateway(tmp_path, {"auth": {"refresh_ttl_s": 60}}, clock=lambda: now[0]) as h:
        await h.signup("late@example.com")
        tokens = await h.signin("late@example.com")
        now[0] += 61 * 1_000_000_000
        status, body = await h.call("POST", f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert (status, body["error"]["code"]) == (401, "REFRESH_TOKEN_EXPIRED")


async def test_duplicate_email_is_409_after_normalisation(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        await h.signup("dup@example.com")
        status, body = await h.call("POST", f"{API}/auth/signup",
                                    json={"email": " DUP@Example.com", "password": "another password"})
        assert (status, body["error"]["code"]) == (409, "EMAIL_TAKEN")


async def test_signup_survives_an_engine_failure_and_signin_creates_the_account(tmp_path, monkeypatch) -> None:
    async with running_gateway(tmp_path) as h:
        handle = h.system.handle

        async def overloaded(command):
            raise Overloaded("engine inbox is full")

        def overloaded_now(item):
            raise Overloaded("engine inbox is full")

        with monkeypatch.context() as patch:
            patch.setattr(handle, "request", overloaded)
            patch.setattr(handle, "send_nowait", overloaded_now)
            user_id = await h.signup("patient@example.com")
        assert int(user_id) not in handle.engine.accounts
        tokens = await h.signin("patient@example.com")
        _, account = await h.call("GET", f"{API}/account", headers=bearer(tokens), expect=200)
        assert account["balance"] == "5000.00"
        assert (await h.system.store.user_by_id(int(user_id))).account_ready
        await h.signin("patient@example.com")                 # idempotent from now on
        _, account = await h.call("GET", f"{API}/account", headers=bearer(tokens), expect=200)
        assert account["balance"] == "5000.00"


@pytest.mark.parametrize("key", ["email", "ip"])
async def test_signin_brute_force_is_throttled(tmp_path, key: str) -> None:
    limits = {"signin_failures_per_minute": 5, "signin_ip_failures_per_minute": 8}
    async with running_gateway(tmp_path, {"limits": limits}) as h:
        await h.signup("target@example.com")
        budget = 5 if key == "email" else 8
        for attempt in range(budget):
            email = "target@example.com" if key == "email" else f"guess{attempt}@example.com"
            status, _ = await h.call("POST", f"{API}/auth/signin", json={"email": email, "password": "wrong password"})
            assert status == 401
        response = await h.client.post(f"{API}/auth/signin",
                                       json={"email": "target@example.com", "password": PASSWORD})
        body = await response.get_json()
        assert (response.status_code, body["error"]["code"]) == (429, "RATE_LIMITED")
        assert int(response.headers["Retry-After"]) >= 1


async def test_one_debug_line_per_request_without_secrets(tmp_path, caplog) -> None:
    caplog.set_level("DEBUG", logger="exness.gateway")
    async with running_gateway(tmp_path) as h:
        await h.signup("quiet@example.com")
        tokens = await h.signin("quiet@example.com")
        await h.call("GET", f"{API}/account", headers=bearer(tokens), expect=200)
        await h.call("POST", f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]}, expect=200)
    lines = [record.getMessage() for record in caplog.records if record.name.startswith("exness.gateway")]
    requests = [line for line in lines if line.startswith("event=http_request")]
    assert len(requests) == 4
    assert f"account={tokens['account_id']}" in requests[2] and "route=/api/v1/account" in requests[2]
    text = "\n".join(lines)
    for secret in (PASSWORD, tokens["access_token"], tokens["refresh_token"]):
        assert secret not in text


