"""The back office's HTTP API (issue 13) through the real app over a real system: operator
sign-in and tokens, the authorization matrix (every role × every admin route, trader tokens, no
token), halts and instrument changes journaled and replayed to the same hash, balance
adjustments, forced closes, accounts, the house's book and exposure, and the audit log."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Awaitable, Callable, Optional

import msgpack
import trio
from argon2 import PasswordHasher, Type

from actors.engine.recovery import journal_dir
from actors.gateway import _admin, _trading
from exness_actors.engine import Engine
from exness_actors.instruments import CoreConfig
from exness_actors.journal import scan_journal
from exness_actors.replay import replay
from gateway_helpers import API, Harness, bearer, running_gateway
from test_ws_protocol import connect_in_memory, make_server

ADMIN = f"{API}/admin"
OPERATOR_PASSWORD = "operator password 1"
ROLES = ("viewer", "risk", "admin")
_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.ID)


async def make_operator(h: Harness, email: str, role: str) -> dict[str, str]:
    """An operator in the store, signed in: the Authorization header of their access token."""
    await h.system.store.create_operator(email, _HASHER.hash(OPERATOR_PASSWORD), role=role, created_at=0)
    _, pair = await h.call("POST", f"{ADMIN}/signin", json={"email": email, "password": OPERATOR_PASSWORD},
                           expect=200)
    return bearer(pair)


async def desk(h: Harness) -> dict[str, Any]:
    """Quotes, a trader with an open BTC long, and one signed-in operator per role."""
    await h.quote_all()
    trader = await h.trader("trader@example.com")
    _, placed = await h.call("POST", f"{API}/orders", headers=trader, expect=201, json={
        "symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "100.00", "leverage": 10})
    _, account = await h.call("GET", f"{API}/account", headers=trader, expect=200)
    operators = {role: await make_operator(h, f"{role}@broker.example", role) for role in ROLES}
    return {"trader": trader, "account_id": account["account_id"], "position_id": placed["position"]["id"],
            **operators}


# ------------------------------------------------------------------ sign-in and tokens


async def test_operator_signin_answers_the_token_pair_with_the_role(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        await h.system.store.create_operator("ops@broker.example", _HASHER.hash(OPERATOR_PASSWORD),
                                             role="risk", created_at=0)

        _, pair = await h.call("POST", f"{ADMIN}/signin", expect=200,
                               json={"email": " OPS@broker.example", "password": OPERATOR_PASSWORD})
        _, me = await h.call("GET", f"{ADMIN}/me", headers=bearer(pair), expect=200)
        status, wrong = await h.call("POST", f"{ADMIN}/signin",
                                     json={"email": "ops@broker.example", "password": "not the password"})
        status_trader, as_trader = await h.call("POST", f"{API}/auth/signin",
                                                json={"email": "ops@broker.example", "password": OPERATOR_PASSWORD})

        assert set(pair) == {"access_token", "refresh_token", "token_type", "expires_in", "refresh_expires_in",
                             "operator_id", "email", "role"}
        assert (pair["token_type"], pair["role"], pair["email"], pair["operator_id"]) == (
            "Bearer", "risk", "ops@broker.example", "1")
        assert me == {"operator_id": "1", "email": "ops@broker.example", "role": "risk",
                      "permissions": ["close", "halt", "read"], "shards": 1}
        assert (status, wrong["error"]["code"]) == (401, "INVALID_CREDENTIALS")
        # operators are not traders: the trader sign-in does not know them
        assert (status_trader, as_trader["error"]["code"]) == (401, "INVALID_CREDENTIALS")


async def test_operator_refresh_rotates_reuse_revokes_and_signout_ends_the_session(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        await make_operator(h, "ops@broker.example", "viewer")
        _, pair = await h.call("POST", f"{ADMIN}/signin", expect=200,
                               json={"email": "ops@broker.example", "password": OPERATOR_PASSWORD})

        _, second = await h.call("POST", f"{ADMIN}/refresh", json={"refresh_token": pair["refresh_token"]},
                                 expect=200)
        status, reused = await h.call("POST", f"{ADMIN}/refresh", json={"refresh_token": pair["refresh_token"]})
        status_after, revoked = await h.call("POST", f"{ADMIN}/refresh",
                                             json={"refresh_token": second["refresh_token"]})
        # a trader's refresh route does not take an operator's token, nor the reverse
        status_cross, _ = await h.call("POST", f"{API}/auth/refresh", json={"refresh_token": second["refresh_token"]})
        _, third = await h.call("POST", f"{ADMIN}/signin", expect=200,
                                json={"email": "ops@broker.example", "password": OPERATOR_PASSWORD})
        await h.call("POST", f"{ADMIN}/signout", json={"refresh_token": third["refresh_token"]}, expect=204)
        status_out, _ = await h.call("POST", f"{ADMIN}/refresh", json={"refresh_token": third["refresh_token"]})

        assert second["role"] == "viewer" and second["refresh_token"] != pair["refresh_token"]
        assert (status, reused["error"]["code"]) == (401, "REFRESH_TOKEN_REUSED")
        assert (status_after, revoked["error"]["code"]) == (401, "REFRESH_TOKEN_REVOKED")
        assert status_cross == 401 and status_out == 401


async def test_the_browser_keeps_the_operator_refresh_token_in_a_cookie(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        await make_operator(h, "ops@broker.example", "viewer")
        response = await h.client.post(f"{ADMIN}/signin", json={
            "email": "ops@broker.example", "password": OPERATOR_PASSWORD, "refresh_cookie": True})
        body = await response.get_json()
        cookie = response.headers["Set-Cookie"]
        refreshed = await h.client.post(f"{ADMIN}/refresh", json={})

        assert body["refresh_token"] is None
        assert cookie.startswith("exness_admin_refresh=") and "Path=/api/v1/admin" in cookie
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert refreshed.status_code == 200 and (await refreshed.get_json())["role"] == "viewer"


async def test_disabling_or_demoting_an_operator_takes_effect_at_the_next_request(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        auth = await make_operator(h, "ops@broker.example", "risk")
        await h.call("GET", f"{ADMIN}/pnl", headers=auth, expect=200)

        await h.system.store.update_operator("ops@broker.example", role="viewer")
        status, demoted = await h.call("GET", f"{ADMIN}/pnl", headers=auth)
        await h.system.store.update_operator("ops@broker.example", role="risk", disabled=True)
        status_disabled, disabled = await h.call("GET", f"{ADMIN}/pnl", headers=auth)
        status_signin, signin = await h.call("POST", f"{ADMIN}/signin", json={
            "email": "ops@broker.example", "password": OPERATOR_PASSWORD})

        assert (status, demoted["error"]["code"]) == (401, "ROLE_CHANGED")
        assert (status_disabled, disabled["error"]["code"]) == (401, "OPERATOR_DISABLED")
        assert (status_signin, signin["error"]["code"]) == (403, "OPERATOR_DISABLED")


# ------------------------------------------------------------------ the authorization matrix

#: who may call each admin route: the matrix of docs/api.md, written out here on purpose (not
#: read from actors.operators) so a change of either is caught.
ALLOWED = {
    "admin_me": {"viewer", "risk", "admin"},
    "admin_pnl": {"viewer", "risk", "admin"},
    "admin_exposure": {"viewer", "risk", "admin"},
    "admin_symbols": {"viewer", "risk", "admin"},
    "admin_accounts": {"viewer", "risk", "admin"},
    "admin_account": {"viewer", "risk", "admin"},
    "admin_audit": {"viewer", "risk", "admin"},
    "admin_halt_symbol": {"risk", "admin"},
    "admin_resume_symbol": {"risk", "admin"},
    "admin_close_position": {"risk", "admin"},
    "admin_patch_instrument": {"admin"},
    "admin_adjust_balance": {"admin"},
}
CALLERS = ("nobody", "trader", *ROLES)
Request = Callable[[Harness, dict], Awaitable[tuple[str, Optional[dict]]]]


async def _open_position(h: Harness, world: dict) -> tuple[str, dict]:
    _, placed = await h.call("POST", f"{API}/orders", headers=world["trader"], expect=201, json={
        "symbol": "ETHUSDT", "side": "sell", "type": "market", "margin": "10.00", "leverage": 5})
    return f"{ADMIN}/positions/{placed['position']['id']}/close", {"reason": "matrix"}


def _fixed(path: str, body: Optional[dict] = None) -> Request:
    async def request(h: Harness, world: dict) -> tuple[str, Optional[dict]]:
        return path.format(**world), body
    return request


REQUESTS: dict[str, Callable[[], Request]] = {
    "admin_me": lambda: _fixed(f"{ADMIN}/me"),
    "admin_pnl": lambda: _fixed(f"{ADMIN}/pnl"),
    "admin_exposure": lambda: _fixed(f"{ADMIN}/exposure"),
    "admin_symbols": lambda: _fixed(f"{ADMIN}/symbols"),
    "admin_accounts": lambda: _fixed(f"{ADMIN}/accounts"),
    "admin_account": lambda: _fixed(ADMIN + "/accounts/{account_id}"),
    "admin_audit": lambda: _fixed(f"{ADMIN}/audit"),
    "admin_halt_symbol": lambda: _fixed(f"{ADMIN}/symbols/SOLUSDT/halt", {"reason": "matrix"}),
    "admin_resume_symbol": lambda: _fixed(f"{ADMIN}/symbols/SOLUSDT/resume", {"reason": "matrix"}),
    "admin_patch_instrument": lambda: _fixed(f"{ADMIN}/instruments/SOLUSDT", {"reason": "matrix", "spread_bps": 2}),
    "admin_adjust_balance": lambda: _fixed(ADMIN + "/accounts/{account_id}/adjust",
                                           {"reason": "matrix", "amount": "1.00"}),
}


def _request_for(name: str) -> Request:
    if name == "admin_close_position":
        return _open_position
    return REQUESTS[name]()


async def test_the_authorization_matrix_every_caller_on_every_admin_route(tmp_path) -> None:
    methods = {handler.__name__: method for method, _, handler, permission in _admin.ROUTES if permission}
    assert set(methods) == set(ALLOWED)
    async with running_gateway(tmp_path) as h:
        world = await desk(h)
        outcomes: dict[tuple[str, str], tuple[int, str]] = {}
        for name, method in methods.items():
            request = _request_for(name)
            for caller in CALLERS:
                path, body = await request(h, world)
                headers = {} if caller == "nobody" else world[caller]
                status, answer = await h.call(method, path, headers=headers, json=body)
                code = answer["error"]["code"] if isinstance(answer, dict) and "error" in answer else "ok"
                outcomes[(name, caller)] = (status, code)

        for name in methods:
            for caller in CALLERS:
                status, code = outcomes[(name, caller)]
                if caller == "nobody":
                    expected: Any = (401, "MISSING_TOKEN")
                elif caller == "trader":
                    expected = (403, "TRADER_TOKEN")
                elif caller in ALLOWED[name]:
                    expected = (200, "ok")
                else:
                    expected = (403, "INSUFFICIENT_ROLE")
                assert (status, code) == expected, (name, caller, status, code)
        assert h.gateway.internal_errors == 0


async def test_operator_tokens_never_trade(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        world = await desk(h)
        refused = []
        for method, path, _ in _trading.ROUTES:
            concrete = path.replace("<order_id>", "1").replace("<position_id>", world["position_id"])
            for role in ROLES:
                status, answer = await h.call(method, concrete, headers=world[role], json={} if method != "GET" else None)
                refused.append((method, path, status, answer["error"]["code"]))
        assert {(status, code) for _, _, status, code in refused} == {(403, "OPERATOR_TOKEN")}, refused
        # the trader's position is untouched
        _, positions = await h.call("GET", f"{API}/positions", headers=world["trader"], expect=200)
        assert [p["id"] for p in positions["positions"]] == [world["position_id"]]


async def test_an_operator_token_cannot_open_the_account_stream() -> None:
    """The WebSocket server's auth refuses an operator's token (and a trader's still works)."""
    server = make_server()
    operator_token = server.tokens.issue_operator(1, "admin")
    async with trio.open_nursery() as nursery:
        client, _ = await connect_in_memory(nursery, server)
        await client.send_message(json.dumps({"op": "auth", "token": operator_token}))
        refused = json.loads(await client.get_message())
        await client.send_message(json.dumps({"op": "auth", "token": server.tokens.issue_access(1, 1)}))
        accepted = json.loads(await client.get_message())
        nursery.cancel_scope.cancel()
    assert (refused["op"], refused["code"]) == ("error", "OPERATOR_TOKEN")
    assert accepted["op"] == "authenticated"


# ------------------------------------------------------------------ symbols and instruments


async def _live_hash(h: Harness) -> tuple[int, bytes]:
    return await h.system.handle.query(lambda engine: (engine.last_seq, engine.state_hash()))


async def test_halt_and_resume_through_the_api_and_the_replay_reaches_the_same_hash(tmp_path) -> None:
    """Fails until exness_actors/replay.py's decode_record stops reading the seq at data[-2]: an
    operator's HaltSymbol/ResumeSymbol carries operator_id and reason after seq and ts, so replay
    (and recovery from the journal) skips it once the seq passes the operator id (h-core13)."""
    async with running_gateway(tmp_path) as h:
        world = await desk(h)
        trader = world["trader"]
        _, limit = await h.call("POST", f"{API}/orders", headers=trader, expect=201, json={
            "symbol": "BTCUSDT", "side": "buy", "type": "limit", "price": "64000.00", "margin": "50.00",
            "leverage": 5})
        _, stop_protected = await h.call("POST", f"{API}/orders", headers=trader, expect=201, json={
            "symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "50.00", "leverage": 5,
            "stop_loss": "63000.00"})

        status, forbidden = await h.call("POST", f"{ADMIN}/symbols/BTCUSDT/halt", headers=world["viewer"],
                                         json={"reason": "feed"})
        status_empty, empty = await h.call("POST", f"{ADMIN}/symbols/BTCUSDT/halt", headers=world["risk"],
                                           json={"reason": "   "})
        _, halted = await h.call("POST", f"{ADMIN}/symbols/btcusdt/halt", headers=world["risk"], expect=200,
                                 json={"reason": "exchange outage"})
        status_order, refused = await h.call("POST", f"{API}/orders", headers=trader, json={
            "symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "10.00", "leverage": 5})
        # the quote falls through the limit entry and the stop-loss: the stop fires, the entry waits
        await h.quote("BTCUSDT", "62900.00", "62900.00")
        _, orders = await h.call("GET", f"{API}/orders", headers=trader, expect=200)
        _, positions = await h.call("GET", f"{API}/positions", headers=trader, expect=200)
        _, exposure = await h.call("GET", f"{ADMIN}/exposure", headers=world["viewer"], expect=200)
        _, resumed = await h.call("POST", f"{ADMIN}/symbols/BTCUSDT/resume", headers=world["admin"],
                                  expect=200, json={"reason": "exchange back"})
        await h.quote("BTCUSDT", "62950.00", "62950.00")
        _, after_resume = await h.call("GET", f"{API}/orders", headers=trader, expect=200)
        seq, live = await _live_hash(h)

        assert (status, forbidden["error"]["code"]) == (403, "INSUFFICIENT_ROLE")
        assert (status_empty, empty["error"]["details"]["field"]) == (400, "reason")
        assert (halted["symbol"], halted["halted"]) == ("BTCUSDT", True)
        assert (status_order, refused["error"]["code"]) == (422, "MARKET_HALTED")
        assert [order["id"] for order in orders["orders"]] == [limit["order"]["id"]]
        assert stop_protected["position"]["id"] not in [p["id"] for p in positions["positions"]]
        assert {row["symbol"]: row["halted"] for row in exposure["symbols"]}["BTCUSDT"] is True
        assert resumed["halted"] is False and after_resume["orders"] == []
    _assert_replays_to(tmp_path, h, seq, live)


def _assert_replays_to(tmp_path, h: Harness, seq: int, live: bytes) -> None:
    """The data dir's journal, replayed from the config it pinned at its start, reaches ``live``
    at ``seq`` (and every checkpoint on the way agrees)."""
    pinned = h.cfg.data_dir / "core-config.msgpack"
    config = CoreConfig.from_wire(msgpack.unpackb(pinned.read_bytes(), raw=False, use_list=True))
    result = replay(Engine(config), scan_journal(journal_dir(h.cfg.data_dir)).payloads, until_seq=seq)
    assert result.engine.last_seq == seq
    assert result.engine.state_hash() == live


async def test_an_instrument_change_is_journaled_takes_effect_at_once_and_replays(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        world = await desk(h)
        status, forbidden = await h.call("PATCH", f"{ADMIN}/instruments/ETHUSDT", headers=world["risk"],
                                         json={"reason": "vol", "spread_bps": 10})
        status_bad, bad = await h.call("PATCH", f"{ADMIN}/instruments/ETHUSDT", headers=world["admin"],
                                       json={"reason": "vol", "max_leverage": 0})
        status_unknown, unknown = await h.call("PATCH", f"{ADMIN}/instruments/DOGEUSDT", headers=world["admin"],
                                               json={"reason": "vol", "max_leverage": 5})
        _, changed = await h.call("PATCH", f"{ADMIN}/instruments/ETHUSDT", headers=world["admin"], expect=200,
                                  json={"reason": "volatility", "spread_bps": 10, "max_leverage": 20})
        await h.quote("ETHUSDT", "3500.00", "3500.00")
        _, quote = await h.call("GET", f"{API}/quotes/ETHUSDT", expect=200)
        status_leverage, too_much = await h.call("POST", f"{API}/orders", headers=world["trader"], json={
            "symbol": "ETHUSDT", "side": "buy", "type": "market", "margin": "10.00", "leverage": 25})
        # raised above the configured maximum: the gateway's own checks follow at once
        await h.call("PATCH", f"{ADMIN}/instruments/ETHUSDT", headers=world["admin"], expect=200,
                     json={"reason": "promo", "max_leverage": 150})
        _, instruments = await h.call("GET", f"{API}/instruments", expect=200)
        _, levered = await h.call("POST", f"{API}/orders", headers=world["trader"], expect=201, json={
            "symbol": "ETHUSDT", "side": "buy", "type": "market", "margin": "10.00", "leverage": 120})
        seq, live = await _live_hash(h)

        assert (status, forbidden["error"]["code"]) == (403, "INSUFFICIENT_ROLE")
        assert (status_bad, bad["error"]["details"]["field"]) == (400, "max_leverage")
        assert (status_unknown, unknown["error"]["code"]) == (404, "UNKNOWN_SYMBOL")
        assert (changed["symbol"], changed["spread_bps"], changed["max_leverage"]) == ("ETHUSDT", 10, 20)
        # 10 bps on each side of 3500.00
        assert (quote["bid"], quote["ask"]) == ("3496.50", "3503.50")
        assert (status_leverage, too_much["error"]["details"]["field"]) == (400, "leverage")
        assert {i["symbol"]: i["max_leverage"] for i in instruments["instruments"]}["ETHUSDT"] == 150
        assert levered["position"]["leverage"] == 120
    _assert_replays_to(tmp_path, h, seq, live)


# ------------------------------------------------------------------ accounts, adjustments, closes


async def test_adjusting_a_real_account_funds_and_debits_it_with_a_ledger_entry(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        world = await desk(h)
        path = f"{ADMIN}/accounts/{world['account_id']}/adjust"

        _, funded = await h.call("POST", path, headers=world["admin"], expect=200,
                                 json={"amount": "250.00", "reason": "bank transfer 42", "idempotency_key": "wire-42"})
        _, again = await h.call("POST", path, headers=world["admin"], expect=200,
                                json={"amount": "250.00", "reason": "bank transfer 42", "idempotency_key": "wire-42"})
        _, debited = await h.call("POST", path, headers=world["admin"], expect=200,
                                  json={"amount": "-100.50", "reason": "chargeback 7"})
        too_much, refused = await h.call("POST", path, headers=world["admin"],
                                         json={"amount": "-1000000.00", "reason": "oops"})
        zero, zero_body = await h.call("POST", path, headers=world["admin"], json={"amount": "0", "reason": "x"})
        no_reason, no_reason_body = await h.call("POST", path, headers=world["admin"], json={"amount": "1.00"})
        floaty, floaty_body = await h.call("POST", path, headers=world["admin"], json={"amount": "1.001", "reason": "x"})
        unknown, unknown_body = await h.call("POST", f"{ADMIN}/accounts/999/adjust", headers=world["admin"],
                                             json={"amount": "1.00", "reason": "x"})
        risk, risk_body = await h.call("POST", path, headers=world["risk"], json={"amount": "1.00", "reason": "x"})
        _, ledger = await h.call("GET", f"{API}/account/ledger", headers=world["trader"], expect=200)

        assert Decimal(funded["balance"]) == Decimal("5250.00")
        assert again["balance"] == funded["balance"]            # the same key: nothing new
        assert Decimal(debited["balance"]) == Decimal("5149.50")
        assert (too_much, refused["error"]["code"]) == (422, "INSUFFICIENT_BALANCE")
        assert (zero, zero_body["error"]["details"]["field"]) == (400, "amount")
        assert (no_reason, no_reason_body["error"]["details"]["field"]) == (400, "reason")
        assert (floaty, floaty_body["error"]["details"]["field"]) == (400, "amount")
        assert (unknown, unknown_body["error"]["code"]) == (404, "UNKNOWN_ACCOUNT")
        assert (risk, risk_body["error"]["code"]) == (403, "INSUFFICIENT_ROLE")
        adjustments = [(e["kind"], e["free_delta"]) for e in ledger["entries"] if e["kind"] == "operator_adjustment"]
        assert adjustments == [("operator_adjustment", "-100.50"), ("operator_adjustment", "250.00")]


async def test_force_closing_a_position_closes_it_with_reason_operator(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        world = await desk(h)
        path = f"{ADMIN}/positions/{world['position_id']}/close"

        status, viewer = await h.call("POST", path, headers=world["viewer"], json={"reason": "risk limit"})
        _, closed = await h.call("POST", path, headers=world["risk"], expect=200, json={"reason": "risk limit"})
        status_again, again = await h.call("POST", path, headers=world["risk"], json={"reason": "risk limit"})
        status_bad, bad = await h.call("POST", f"{ADMIN}/positions/abc/close", headers=world["risk"],
                                       json={"reason": "x"})
        _, history = await h.call("GET", f"{API}/history/positions", headers=world["trader"], expect=200)

        assert (status, viewer["error"]["code"]) == (403, "INSUFFICIENT_ROLE")
        assert (closed["position_id"], closed["close_reason"], closed["remaining_qty"]) == (
            world["position_id"], "operator", "0.00000000")
        assert (status_again, again["error"]["code"]) == (404, "UNKNOWN_POSITION")
        assert (status_bad, bad["error"]["code"]) == (404, "UNKNOWN_POSITION")
        assert [(p["position_id"], p["close_reason"]) for p in history["positions"]] == [
            (world["position_id"], "operator")]


async def test_accounts_list_search_filter_and_detail(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        world = await desk(h)
        await h.trader("alice@example.com")
        await h.trader("bob@other.org")
        viewer = world["viewer"]

        _, everyone = await h.call("GET", f"{ADMIN}/accounts", headers=viewer, expect=200)
        _, first = await h.call("GET", f"{ADMIN}/accounts?limit=2", headers=viewer, expect=200)
        _, rest = await h.call("GET", f"{ADMIN}/accounts?limit=2&cursor={first['next_cursor']}", headers=viewer,
                               expect=200)
        _, example = await h.call("GET", f"{ADMIN}/accounts?email=EXAMPLE.com", headers=viewer, expect=200)
        _, leveraged = await h.call("GET", f"{ADMIN}/accounts?min_margin_level=100", headers=viewer, expect=200)
        _, near_call = await h.call("GET", f"{ADMIN}/accounts?max_margin_level=100", headers=viewer, expect=200)
        bad, bad_body = await h.call("GET", f"{ADMIN}/accounts?min_margin_level=abc", headers=viewer)
        typo, typo_body = await h.call("GET", f"{ADMIN}/accounts?emial=x", headers=viewer)
        _, detail = await h.call("GET", f"{ADMIN}/accounts/{world['account_id']}", headers=viewer, expect=200)
        missing, missing_body = await h.call("GET", f"{ADMIN}/accounts/999", headers=viewer)

        assert [(a["email"], a["positions"]) for a in everyone["accounts"]] == [
            ("trader@example.com", 1), ("alice@example.com", 0), ("bob@other.org", 0)]
        assert everyone["next_cursor"] is None
        assert [a["account_id"] for a in first["accounts"] + rest["accounts"]] == [
            a["account_id"] for a in everyone["accounts"]]
        assert [a["email"] for a in example["accounts"]] == ["trader@example.com", "alice@example.com"]
        assert [a["email"] for a in leveraged["accounts"]] == ["trader@example.com"]
        assert near_call["accounts"] == []
        assert (bad, bad_body["error"]["details"]["field"]) == (400, "min_margin_level")
        assert (typo, typo_body["error"]["details"]["field"]) == (400, "emial")
        assert (detail["email"], detail["balance"]) == ("trader@example.com", "5000.00")
        assert [p["id"] for p in detail["open_positions"]] == [world["position_id"]]
        assert detail["pending_orders"] == [] and detail["closed_positions"] == []
        assert [e["kind"] for e in detail["ledger"]] == ["position_margin", "deposit"]
        assert (missing, missing_body["error"]["code"]) == (404, "UNKNOWN_ACCOUNT")


async def test_house_pnl_and_exposure_follow_the_traders_positions(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        world = await desk(h)
        _, pnl = await h.call("GET", f"{ADMIN}/pnl", headers=world["viewer"], expect=200)
        _, exposure = await h.call("GET", f"{ADMIN}/exposure", headers=world["viewer"], expect=200)

        btc = {row["symbol"]: row for row in exposure["symbols"]}["BTCUSDT"]
        assert set(pnl["realized"]) == {"spread", "commission", "swap", "trader_losses", "trader_gains",
                                        "losses_absorbed", "total"}
        assert Decimal(pnl["net"]) == Decimal(pnl["realized"]["total"]) + Decimal(pnl["unrealized"])
        by_symbol = {row["symbol"]: row["unrealized"] for row in pnl["by_symbol"]}
        # the trader bought at the ask: marked at the bid the house is up the spread
        assert Decimal(by_symbol["BTCUSDT"]) > 0 and by_symbol["ETHUSDT"] == "0.00"
        assert (btc["long_qty"], btc["short_qty"], btc["net_qty"]) == ("0.01538153", "0.00000000", "0.01538153")
        assert btc["long_notional"] == "999.99" and btc["halted"] is False     # qty × open price, floored
        assert btc["house_unrealized"] == by_symbol["BTCUSDT"]
        assert exposure["totals"]["net_notional"] == btc["net_notional"]


# ------------------------------------------------------------------ the audit log


async def test_every_operator_action_is_in_the_audit_log_with_filters(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        world = await desk(h)
        await h.call("POST", f"{ADMIN}/symbols/SOLUSDT/halt", headers=world["risk"], expect=200,
                     json={"reason": "maintenance"})
        await h.call("POST", f"{ADMIN}/symbols/SOLUSDT/resume", headers=world["risk"], expect=200,
                     json={"reason": "maintenance done"})
        await h.call("PATCH", f"{ADMIN}/instruments/SOLUSDT", headers=world["admin"], expect=200,
                     json={"reason": "vol", "spread_bps": 4})
        await h.call("POST", f"{ADMIN}/accounts/{world['account_id']}/adjust", headers=world["admin"],
                     expect=200, json={"amount": "25.00", "reason": "promo"})
        await h.call("POST", f"{ADMIN}/positions/{world['position_id']}/close", headers=world["risk"],
                     expect=200, json={"reason": "limit breach"})
        # a rejected action is not an action
        await h.call("POST", f"{ADMIN}/accounts/{world['account_id']}/adjust", headers=world["admin"],
                     json={"amount": "-99999.00", "reason": "too much"})
        viewer = world["viewer"]

        _, log = await h.call("GET", f"{ADMIN}/audit", headers=viewer, expect=200)
        _, by_admin = await h.call("GET", f"{ADMIN}/audit?operator=admin@broker.example", headers=viewer, expect=200)
        admin_id = log["entries"][1]["operator_id"]
        _, by_id = await h.call("GET", f"{ADMIN}/audit?operator={admin_id}", headers=viewer, expect=200)
        _, halts = await h.call("GET", f"{ADMIN}/audit?action=halt", headers=viewer, expect=200)
        _, page = await h.call("GET", f"{ADMIN}/audit?limit=2", headers=viewer, expect=200)
        _, page2 = await h.call("GET", f"{ADMIN}/audit?limit=2&cursor={page['next_cursor']}", headers=viewer,
                                expect=200)
        newest = log["entries"][0]["ts"]
        _, window = await h.call("GET", f"{ADMIN}/audit?from={newest}&to={newest + 1}", headers=viewer, expect=200)
        _, nobody = await h.call("GET", f"{ADMIN}/audit?operator=nobody@broker.example", headers=viewer, expect=200)
        bad, bad_body = await h.call("GET", f"{ADMIN}/audit?action=delete", headers=viewer)
        backwards, backwards_body = await h.call("GET", f"{ADMIN}/audit?from=10&to=5", headers=viewer)

        entries = log["entries"]
        assert [(e["action"], e["target"], e["operator_email"], e["reason"]) for e in entries] == [
            ("close_position", world["position_id"], "risk@broker.example", "limit breach"),
            ("adjust_balance", world["account_id"], "admin@broker.example", "promo"),
            ("update_instrument", "SOLUSDT", "admin@broker.example", "vol"),
            ("resume", "SOLUSDT", "risk@broker.example", "maintenance done"),
            ("halt", "SOLUSDT", "risk@broker.example", "maintenance"),
        ]
        assert entries[1]["detail"] == {"amount": "25.00"} and entries[1]["account_id"] == world["account_id"]
        assert entries[2]["detail"] == {"spread_bps": 4} and entries[4]["account_id"] is None
        assert [e["action"] for e in by_admin["entries"]] == ["adjust_balance", "update_instrument"]
        assert by_id["entries"] == by_admin["entries"]
        assert [e["reason"] for e in halts["entries"]] == ["maintenance"]
        assert page["entries"] + page2["entries"] == entries[:4]
        assert [e["action"] for e in window["entries"]] == ["close_position"]
        assert nobody["entries"] == []
        assert (bad, bad_body["error"]["details"]["field"]) == (400, "action")
        assert (backwards, backwards_body["error"]["details"]["field"]) == (400, "to")


async def test_the_admin_examples_of_the_spec_work(tmp_path) -> None:
    import json

    from actors.gateway import openapi_text

    document = json.loads(openapi_text())
    async with running_gateway(tmp_path) as h:
        world = await desk(h)
        await h.system.store.create_operator("ops@example.com", _HASHER.hash("operator password 1"), role="viewer",
                                             created_at=0)
        tried = []
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                if "admin" not in operation.get("tags", ()) or "requestBody" not in operation:
                    continue
                media = operation["requestBody"]["content"]["application/json"]
                if operation["operationId"] in ("post_admin_refresh", "post_admin_signout"):
                    continue      # the refresh-token placeholder is the traders' example
                assert media.get("examples"), operation["operationId"]
                for example in media["examples"].values():
                    concrete = (path.replace("{account_id}", world["account_id"]).replace("{symbol}", "SOLUSDT")
                                .replace("{position_id}", world["position_id"]))
                    status, body = await h.call(method.upper(), concrete, headers=world["admin"],
                                                json=example["value"])
                    assert 200 <= status < 300, (operation["operationId"], example, status, body)
                    tried.append(operation["operationId"])
        assert sorted(set(tried)) == ["patch_admin_patch_instrument", "post_admin_adjust_balance",
                                      "post_admin_close_position", "post_admin_halt_symbol",
                                      "post_admin_resume_symbol", "post_admin_signin"]


async def test_a_halt_and_an_instrument_change_survive_a_restart(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        world = await desk(h)
        await h.call("POST", f"{ADMIN}/symbols/ETHUSDT/halt", headers=world["risk"], expect=200,
                     json={"reason": "before the restart"})
        await h.call("PATCH", f"{ADMIN}/instruments/SOLUSDT", headers=world["admin"], expect=200,
                     json={"reason": "before the restart", "max_leverage": 7})
        seq, live = await _live_hash(h)
    async with running_gateway(tmp_path) as h:
        _, pair = await h.call("POST", f"{ADMIN}/signin", expect=200,
                               json={"email": "viewer@broker.example", "password": OPERATOR_PASSWORD})
        _, symbols = await h.call("GET", f"{ADMIN}/symbols", headers=bearer(pair), expect=200)
        recovered = await h.system.handle.query(lambda engine: engine.state_hash() if engine.last_seq == seq else None)

        by_symbol = {row["symbol"]: row for row in symbols["symbols"]}
        assert by_symbol["ETHUSDT"]["halted"] is True and by_symbol["BTCUSDT"]["halted"] is False
        assert by_symbol["SOLUSDT"]["max_leverage"] == 7
        assert recovered in (None, live)      # (None: the restart journaled something since)


async def test_a_real_account_is_funded_by_an_operator_and_then_trades(tmp_path) -> None:
    """A trader opens a real account (empty; its deposit route answers 403): the operator's
    adjustment is its first money, the trader trades on it, and debits beyond its free balance or
    its free margin are refused. The account search lists both accounts of the trader."""
    async with running_gateway(tmp_path) as h:
        world = await desk(h)
        trader = world["trader"]
        _, real = await h.call("POST", f"{API}/accounts", headers=trader, expect=201,
                               json={"type": "standard", "demo": False})
        _, pair = await h.call("POST", f"{API}/auth/switch", headers=trader, expect=200,
                               json={"account_id": real["account_id"]})
        on_real = bearer(pair)
        status_deposit, deposit = await h.call("POST", f"{API}/account/deposit", headers=on_real,
                                               json={"amount": "100.00"})
        path = f"{ADMIN}/accounts/{real['account_id']}/adjust"

        _, funded = await h.call("POST", path, headers=world["admin"], expect=200,
                                 json={"amount": "1000.00", "reason": "wire 7", "idempotency_key": "wire-7"})
        await h.call("POST", f"{API}/orders", headers=on_real, expect=201, json={
            "symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "500.00", "leverage": 10})
        status, refused = await h.call("POST", path, headers=world["admin"],
                                       json={"amount": "-900.00", "reason": "more than the free balance"})
        # within the free balance (500.00) but beyond the free margin (500.00 less the open loss)
        status_margin, margin = await h.call("POST", path, headers=world["admin"],
                                             json={"amount": "-499.00", "reason": "more than the free margin"})
        _, account = await h.call("GET", f"{API}/account", headers=on_real, expect=200)
        _, detail = await h.call("GET", f"{ADMIN}/accounts/{real['account_id']}", headers=world["viewer"],
                                 expect=200)
        _, search = await h.call("GET", f"{ADMIN}/accounts?email=trader@", headers=world["viewer"], expect=200)

        assert (status_deposit, deposit["error"]["code"]) == (403, "REAL_ACCOUNT_DEPOSIT_FORBIDDEN")
        assert funded["balance"] == "1000.00" and account["balance"] == "1000.00"
        assert (status, refused["error"]["code"]) == (422, "INSUFFICIENT_BALANCE")
        assert (status_margin, margin["error"]["code"]) == (422, "INSUFFICIENT_MARGIN")
        assert (detail["email"], detail["demo"], detail["account_type"]) == ("trader@example.com", False, "standard")
        assert [e["kind"] for e in detail["ledger"]][-1] == "operator_adjustment"
        assert len(detail["open_positions"]) == 1
        assert [(a["account_id"], a["demo"]) for a in search["accounts"]] == [
            (world["account_id"], True), (real["account_id"], False)]
