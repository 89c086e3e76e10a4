"""Issue 16 over HTTP: a user's trading accounts (list, open, switch), the account summary of a
cross account, real accounts' deposits, commission and swap on positions, history and ledger.

Quotes are raw ticks (the engine adds the spread: BTCUSDT raw 65000.00 trades at bid 64987.00 /
ask 65013.00). Figures are computed by hand below each case.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal
from typing import Any

from actors.store.base import CLOSED_COLUMNS, ClosedPosition, LedgerEntry, rows_from_items
from actors.wire import codec as edge
from actors.wire import views
from exness_actors.account_types import SHIPPED_TYPES
from exness_actors.commands import Clock, ClosePosition, OpenAccount, PlaceOrder, Quote
from exness_actors.engine import Engine
from exness_actors.instruments import DEFAULT_INSTRUMENTS, CoreConfig
from gateway_helpers import API, PASSWORD, bearer, running_gateway

LEDGER_FIELDS = ("account_id", "seq", "index", "kind", "free_delta", "locked_delta", "free", "locked", "ref", "ts")
BUY_1000_X10 = {"symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "1000.00", "leverage": 10}
SUMMARY_KEYS = {"account_id", "balance", "locked", "used_margin", "equity", "free_margin", "margin_level",
                "unrealized_pnl", "currency", "account_type", "margin_mode", "demo", "margin_call_level",
                "stop_out_level", "in_margin_call"}


def _cents(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01"), rounding=ROUND_FLOOR))


# ------------------------------------------------------------------ listing and opening

async def test_signup_opens_a_demo_standard_account_and_more_can_be_opened(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        user_id = await h.signup("holder@example.com")
        tokens = await h.signin("holder@example.com")
        auth = bearer(tokens)

        _, listed = await h.call("GET", f"{API}/accounts", headers=auth, expect=200)
        [first] = listed["accounts"]
        assert first == {
            "account_id": tokens["account_id"], "account_type": "standard", "demo": True, "current": True,
            "created_at": first["created_at"], "currency": "USD", "margin_mode": "cross", "balance": "5000.00",
            "locked": "0.00", "used_margin": "0.00", "equity": "5000.00", "free_margin": "5000.00",
            "margin_level": None, "unrealized_pnl": "0.00", "margin_call_level": "60.00",
            "stop_out_level": "0.00", "in_margin_call": False}

        status, raw = await h.call("POST", f"{API}/accounts", headers=auth, json={"type": "raw_spread", "demo": True})
        assert status == 201
        assert (raw["account_type"], raw["demo"], raw["current"], raw["balance"], raw["margin_mode"],
                raw["margin_call_level"], raw["stop_out_level"]) == (
            "raw_spread", True, False, "5000.00", "cross", "30.00", "0.00")
        _, real = await h.call("POST", f"{API}/accounts", headers=auth, expect=201,
                               json={"type": "standard", "demo": False})
        assert (real["account_type"], real["demo"], real["balance"], real["equity"]) == (
            "standard", False, "0.00", "0.00")
        _, isolated = await h.call("POST", f"{API}/accounts", headers=auth, expect=201, json={"type": "isolated"})
        assert (isolated["demo"], isolated["margin_mode"], isolated["margin_call_level"]) == (True, "isolated", None)

        _, listed = await h.call("GET", f"{API}/accounts", headers=auth, expect=200)
        assert [(a["account_id"], a["account_type"], a["demo"], a["current"]) for a in listed["accounts"]] == [
            (tokens["account_id"], "standard", True, True), (raw["account_id"], "raw_spread", True, False),
            (real["account_id"], "standard", False, False), (isolated["account_id"], "isolated", True, False)]
        assert len({a["account_id"] for a in listed["accounts"]}) == 4
        # the store knows them as the user's
        records = await h.system.store.accounts_of(int(user_id))
        assert [(r.account_type, r.demo, r.ready) for r in records] == [
            ("standard", True, True), ("raw_spread", True, True), ("standard", False, True), ("isolated", True, True)]
        # another user sees only their own
        other = await h.trader("neighbour@example.com")
        _, theirs = await h.call("GET", f"{API}/accounts", headers=other, expect=200)
        assert [a["account_type"] for a in theirs["accounts"]] == ["standard"]
        assert h.gateway.internal_errors == 0


async def test_open_account_bad_input_names_the_field(tmp_path) -> None:
    async with running_gateway(tmp_path, {"limits": {"accounts_per_user": 2}}) as h:
        auth = await h.trader("picky@example.com")
        path = f"{API}/accounts"
        cases = [
            ({"type": "gold", "demo": True}, 400, "VALIDATION_ERROR", "type"),
            ({"type": "STANDARD"}, 400, "VALIDATION_ERROR", "type"),
            ({"type": 7}, 400, "VALIDATION_ERROR", "type"),
            ({"demo": True}, 400, "VALIDATION_ERROR", "type"),
            ({"type": None}, 400, "VALIDATION_ERROR", "type"),
            ({"type": "standard", "demo": "yes"}, 400, "VALIDATION_ERROR", "demo"),
            ({"type": "standard", "demo": 1}, 400, "VALIDATION_ERROR", "demo"),
            ({"type": "standard", "leverage": 500}, 400, "VALIDATION_ERROR", "leverage"),
            (["standard"], 400, "VALIDATION_ERROR", None),
        ]
        failures = []
        for body, status, code, field in cases:
            got, answer = await h.call("POST", path, headers=auth, json=body)
            error = answer["error"]
            if (got, error["code"], error["details"].get("field")) != (status, code, field):
                failures.append((body, got, error))
        assert not failures, failures
        _, answer = await h.call("POST", path, headers=auth, json={"type": "gold"}, expect=400)
        assert answer["error"]["details"]["allowed"] == ["isolated", "raw_spread", "standard"]
        assert "isolated, raw_spread, standard" in answer["error"]["message"]

        status, _ = await h.call("POST", path, json={"type": "standard"})
        assert status == 401
        await h.call("POST", path, headers=auth, json={"type": "isolated"}, expect=201)
        _, answer = await h.call("POST", path, headers=auth, json={"type": "isolated"}, expect=409)
        assert (answer["error"]["code"], answer["error"]["details"]) == ("ACCOUNT_LIMIT_REACHED", {"limit": 2})
        assert h.gateway.internal_errors == 0


# ------------------------------------------------------------------ switching

async def test_switch_issues_tokens_for_another_account_of_the_same_user_only(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        await h.signup("owner@example.com")
        tokens = await h.signin("owner@example.com")
        auth = bearer(tokens)
        _, second = await h.call("POST", f"{API}/accounts", headers=auth, expect=201, json={"type": "isolated"})
        stranger = await h.trader("stranger@example.com")
        _, stranger_account = await h.call("GET", f"{API}/account", headers=stranger, expect=200)

        # to the second account: every endpoint now works on it
        _, switched = await h.call("POST", f"{API}/auth/switch", headers=auth, expect=200,
                                   json={"account_id": second["account_id"]})
        assert (switched["user_id"], switched["account_id"]) == (tokens["user_id"], second["account_id"])
        _, account = await h.call("GET", f"{API}/account", headers=bearer(switched), expect=200)
        assert (account["account_id"], account["account_type"]) == (second["account_id"], "isolated")
        await h.call("POST", f"{API}/account/deposit", headers=bearer(switched), expect=200, json={"amount": "1.00"})
        _, first = await h.call("GET", f"{API}/account", headers=auth, expect=200)
        assert first["balance"] == "5000.00"                      # the first account did not move
        _, listed = await h.call("GET", f"{API}/accounts", headers=bearer(switched), expect=200)
        assert [a["current"] for a in listed["accounts"]] == [False, True]

        # a refresh keeps the switched account; back to the first by number too
        _, refreshed = await h.call("POST", f"{API}/auth/refresh", expect=200,
                                    json={"refresh_token": switched["refresh_token"]})
        assert refreshed["account_id"] == second["account_id"]
        _, back = await h.call("POST", f"{API}/auth/switch", headers=bearer(refreshed), expect=200,
                               json={"account_id": int(tokens["account_id"])})
        assert back["account_id"] == tokens["account_id"]

        # another user's account and an unknown one answer alike: nothing is revealed
        answers = []
        for account_id in (stranger_account["account_id"], "999999"):
            _, answer = await h.call("POST", f"{API}/auth/switch", headers=auth, expect=404,
                                     json={"account_id": account_id})
            answers.append(answer["error"])
        assert [(e["code"], e["details"]["field"]) for e in answers] == [("UNKNOWN_ACCOUNT", "account_id")] * 2
        assert answers[0]["message"].replace(stranger_account["account_id"], "N") == \
            answers[1]["message"].replace("999999", "N")
        # the stranger's account is untouched and still theirs
        _, still = await h.call("GET", f"{API}/account", headers=stranger, expect=200)
        assert still["balance"] == "5000.00"

        for body, field in (({}, "account_id"), ({"account_id": "abc"}, "account_id"),
                            ({"account_id": 0}, "account_id"), ({"account_id": 1.5}, "account_id"),
                            ({"account_id": "1", "extra": 1}, "extra"),
                            ({"account_id": "1", "refresh_cookie": "yes"}, "refresh_cookie")):
            _, answer = await h.call("POST", f"{API}/auth/switch", headers=auth, json=body, expect=400)
            assert answer["error"]["details"]["field"] == field, (body, answer)
        status, answer = await h.call("POST", f"{API}/auth/switch", json={"account_id": second["account_id"]})
        assert (status, answer["error"]["code"]) == (401, "MISSING_TOKEN")
        assert h.gateway.internal_errors == 0


async def test_signin_picks_the_first_account_or_the_one_it_names(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        await h.signup("chooser@example.com")
        tokens = await h.signin("chooser@example.com")
        _, second = await h.call("POST", f"{API}/accounts", headers=bearer(tokens), expect=201,
                                 json={"type": "raw_spread"})
        stranger = await h.trader("other@example.com")
        _, theirs = await h.call("GET", f"{API}/account", headers=stranger, expect=200)

        again = await h.signin("chooser@example.com")
        assert again["account_id"] == tokens["account_id"]
        _, named = await h.call("POST", f"{API}/auth/signin", expect=200, json={
            "email": "chooser@example.com", "password": PASSWORD, "account_id": second["account_id"]})
        assert named["account_id"] == second["account_id"]
        _, answer = await h.call("POST", f"{API}/auth/signin", expect=404, json={
            "email": "chooser@example.com", "password": PASSWORD, "account_id": theirs["account_id"]})
        assert answer["error"]["code"] == "UNKNOWN_ACCOUNT"
        _, answer = await h.call("POST", f"{API}/auth/signin", expect=400, json={
            "email": "chooser@example.com", "password": PASSWORD, "account_id": "x"})
        assert answer["error"]["details"]["field"] == "account_id"


async def test_a_browser_switch_replaces_the_refresh_cookie_and_revokes_the_old_session(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        await h.signup("browser@example.com")
        response = await h.client.post(f"{API}/auth/signin", json={
            "email": "browser@example.com", "password": PASSWORD, "refresh_cookie": True})
        tokens = await response.get_json()
        old_cookie = response.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
        _, second = await h.call("POST", f"{API}/accounts", headers=bearer(tokens), expect=201,
                                 json={"type": "isolated"})
        response = await h.client.post(f"{API}/auth/switch", headers=bearer(tokens),
                                       json={"account_id": second["account_id"], "refresh_cookie": True})
        switched = await response.get_json()
        assert response.status_code == 200 and switched["refresh_token"] is None
        assert "HttpOnly" in response.headers["Set-Cookie"]
        # the cookie now refreshes into the second account; the replaced one is revoked
        response = await h.client.post(f"{API}/auth/refresh")
        assert (await response.get_json())["account_id"] == second["account_id"]
        _, answer = await h.call("POST", f"{API}/auth/refresh", json={"refresh_token": old_cookie}, expect=401)
        assert answer["error"]["code"] == "REFRESH_TOKEN_REVOKED"


# ------------------------------------------------------------------ real accounts

async def test_a_real_account_cannot_be_funded_by_the_trader(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        await h.signup("real@example.com")
        tokens = await h.signin("real@example.com")
        real = await h.open_and_switch(tokens, "standard", demo=False)
        auth = bearer(real)
        _, account = await h.call("GET", f"{API}/account", headers=auth, expect=200)
        assert (account["demo"], account["balance"]) == (False, "0.00")

        _, answer = await h.call("POST", f"{API}/account/deposit", headers=auth, expect=403,
                                 json={"amount": "100.00", "idempotency_key": "k1"})
        assert answer["error"]["code"] == "REAL_ACCOUNT_DEPOSIT_FORBIDDEN"
        assert answer["error"]["details"] == {"account_id": real["account_id"]}
        _, answer = await h.call("POST", f"{API}/account/withdraw", headers=auth, expect=422,
                                 json={"amount": "1.00"})
        assert answer["error"]["code"] == "INSUFFICIENT_BALANCE"
        _, ledger = await h.call("GET", f"{API}/account/ledger", headers=auth, expect=200)
        assert ledger["entries"] == []
        # the demo account next to it deposits freely
        _, summary = await h.call("POST", f"{API}/account/deposit", headers=bearer(tokens), expect=200,
                                  json={"amount": "100.00"})
        assert (summary["balance"], summary["demo"]) == ("5100.00", True)


# ------------------------------------------------------------------ cross accounts: summary, fees, stop-out

async def test_a_cross_account_summary_table(tmp_path) -> None:
    """standard, 5000.00, long 1000.00 x10 at 65013.00: qty 0.15381539 (10000 / 65013 floored to
    8 decimals); at bid 64987.00 pnl = floor(0.15381539 x -26.00) = -4.00, equity 4996.00, used
    margin 1000.00, free margin 3996.00, margin level 499.60 %."""
    async with running_gateway(tmp_path) as h:
        auth = await h.trader("cross@example.com")
        await h.quote_all()
        _, placed = await h.call("POST", f"{API}/orders", headers=auth, expect=201, json=BUY_1000_X10)
        assert placed["position"]["qty"] == "0.15381539"
        assert (placed["position"]["commission"], placed["position"]["swap"]) == ("0.00", "0.00")
        _, account = await h.call("GET", f"{API}/account", headers=auth, expect=200)
        assert set(account) == SUMMARY_KEYS
        assert {key: account[key] for key in ("balance", "locked", "used_margin", "equity", "free_margin",
                                              "margin_level", "unrealized_pnl", "in_margin_call")} == {
            "balance": "5000.00", "locked": "1000.00", "used_margin": "1000.00", "equity": "4996.00",
            "free_margin": "3996.00", "margin_level": "499.60", "unrealized_pnl": "-4.00", "in_margin_call": False}

        # cross margin: no position has a margin of its own to add to
        _, answer = await h.call("POST", f"{API}/positions/{placed['position']['id']}/margin", headers=auth,
                                 json={"amount": "10.00"}, expect=400)
        assert answer["error"]["code"] == "INVALID_COMMAND"
        # free margin, not the free balance, bounds a new order
        _, answer = await h.call("POST", f"{API}/orders", headers=auth, expect=422,
                                 json={**BUY_1000_X10, "margin": "3996.01"})
        assert answer["error"]["code"] == "INSUFFICIENT_MARGIN"


async def test_raw_spread_commission_on_position_history_and_ledger(tmp_path) -> None:
    """raw_spread: the feed's raw quote (no markup) and 0.35 bps of notional per side, rounded up.
    Open at the raw ask 65000.00: qty 0.15384615, notional 9999.99 -> ceil(0.349999) = 0.35. Close
    at the raw bid 65000.00: notional 9999.99 -> 0.35, pnl 0.00. The closed part's commission is
    0.70; the balance 5000.00 - 0.70 = 4999.30."""
    async with running_gateway(tmp_path) as h:
        auth = await h.trader("raw@example.com", "raw_spread")
        await h.quote_all()
        _, placed = await h.call("POST", f"{API}/orders", headers=auth, expect=201, json=BUY_1000_X10)
        position = placed["position"]
        assert (position["commission"], position["swap"]) == ("0.35", "0.00")
        _, positions = await h.call("GET", f"{API}/positions", headers=auth, expect=200)
        [listed] = positions["positions"]
        assert (listed["commission"], listed["swap"]) == ("0.35", "0.00")
        _, account = await h.call("GET", f"{API}/account", headers=auth, expect=200)
        # equity 5000.00 - 0.35 - 0.00; level floor(4999.65 / 1000.00, 2 decimals of percent)
        assert (account["balance"], account["equity"], account["free_margin"], account["margin_level"]) == (
            "4999.65", "4999.65", "3999.65", "499.96")

        _, closed = await h.call("POST", f"{API}/positions/{position['id']}/close", headers=auth, expect=200)
        assert (closed["close_reason"], closed["pnl"], closed["commission"], closed["swap"]) == (
            "user", "0.00", "0.70", "0.00")
        _, history = await h.call("GET", f"{API}/history/positions", headers=auth, expect=200)
        [row] = history["positions"]
        assert (row["commission"], row["swap"], row["pnl"]) == ("0.70", "0.00", "0.00")
        _, ledger = await h.call("GET", f"{API}/account/ledger", headers=auth, expect=200)
        commissions = [entry for entry in ledger["entries"] if entry["kind"] == "commission"]
        assert [(e["free_delta"], e["ref"]) for e in commissions] == [("-0.35", position["id"])] * 2
        _, account = await h.call("GET", f"{API}/account", headers=auth, expect=200)
        assert account["balance"] == "4999.30"


async def test_margin_call_then_stop_out_through_the_api(tmp_path) -> None:
    """standard (call 60 %, stop-out 0 %), 5000.00, long 4000.00 x100 at 65013.00: qty 6.15261563.
    Raw 64600.00 (bid 64587.08): pnl floor(6.15261563 x -425.92 = -2620.522) = -2620.53, equity
    2379.47 <= 60 % of 4000.00 -> margin call, level 59.48 %. Raw 64000.00 (bid 63987.20): equity below 0 ->
    stop-out at the bid, the house covers the deficit (balance_reset), balance 0.00."""
    async with running_gateway(tmp_path) as h:
        auth = await h.trader("margin-call@example.com")
        await h.quote_all()
        _, placed = await h.call("POST", f"{API}/orders", headers=auth, expect=201, json={
            "symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "4000.00", "leverage": 100})
        qty = Decimal(placed["position"]["qty"])
        assert qty == Decimal("6.15261563")
        await h.quote("BTCUSDT", "64600.00", "64600.00")
        _, account = await h.call("GET", f"{API}/account", headers=auth, expect=200)
        pnl = (qty * (Decimal("64587.08") - Decimal("65013.00"))).quantize(Decimal("0.01"), rounding=ROUND_FLOOR)
        equity = Decimal("5000.00") + pnl
        assert (account["unrealized_pnl"], account["equity"]) == (str(pnl), str(equity)) == ("-2620.53", "2379.47")
        assert account["margin_level"] == _cents(equity / Decimal("4000.00") * 100) == "59.48"
        assert account["in_margin_call"] is True

        await h.quote("BTCUSDT", "64000.00", "64000.00")
        _, positions = await h.call("GET", f"{API}/positions", headers=auth, expect=200)
        assert positions == {"positions": []}
        _, account = await h.call("GET", f"{API}/account", headers=auth, expect=200)
        assert (account["balance"], account["equity"], account["margin_level"], account["in_margin_call"]) == (
            "0.00", "0.00", None, False)
        _, history = await h.call("GET", f"{API}/history/positions?reason=stop_out", headers=auth, expect=200)
        [stopped] = history["positions"]
        assert (stopped["close_reason"], stopped["close_price"], stopped["qty"]) == ("stop_out", "63987.20", str(qty))
        _, ledger = await h.call("GET", f"{API}/account/ledger", headers=auth, expect=200)
        assert ledger["entries"][0]["kind"] == "balance_reset" and ledger["entries"][0]["balance"] == "0.00"
        assert h.gateway.internal_errors == 0


# ------------------------------------------------------------------ swaps, rendered

def test_swaps_show_on_the_live_position_and_in_the_history_row() -> None:
    """raw_spread swaps 5 bps a day of the open notional, charged at the 00:00 UTC rollover: a long
    of 0.15381539 BTC at 65013.00 (notional 9999.99) pays ceil(9999.99 x 0.0005) = 5.00 a night."""
    engine = Engine(CoreConfig(instruments=DEFAULT_INSTRUMENTS, account_types=SHIPPED_TYPES))
    day = 86_400 * 10**9
    start = 20_000 * day + 3_600 * 10**9                     # 01:00 UTC
    items: list[tuple[int, int, list]] = []

    def run(command: Any, ts: int) -> list:
        events = engine.submit(command, ts=ts)
        items.append((engine.last_seq, ts, events))
        return events

    run(OpenAccount(account_id=1, account_type="raw_spread", initial_deposit=500_000), start)
    run(Quote(symbol="BTCUSDT", bid=6_500_000, ask=6_500_000), start + 1)
    run(PlaceOrder(account_id=1, symbol="BTCUSDT", side="buy", type="market", margin=100_000, leverage=10),
        start + 2)
    run(Clock(), start + day)                                 # past one rollover
    run(Quote(symbol="BTCUSDT", bid=6_500_000, ask=6_500_000), start + day + 1)

    [position] = views.open_positions(engine, 1, None)
    assert (position["commission"], position["swap"]) == ("0.35", "5.00")

    run(ClosePosition(account_id=1, position_id=int(position["id"])), start + day + 2)
    [row] = rows_from_items(items).positions_closed
    record = ClosedPosition(**dict(zip(CLOSED_COLUMNS, row)), leverage=10, opened_at=start)
    rendered = edge.closed_position_json(record, engine.instruments["BTCUSDT"])
    assert (rendered["commission"], rendered["swap"]) == ("0.70", "5.00")
    ledger = [edge.ledger_entry_json(LedgerEntry(**dict(zip(LEDGER_FIELDS, row))))
              for row in rows_from_items(items).ledger]
    assert [(entry["kind"], entry["free_delta"], entry["ref"]) for entry in ledger
            if entry["kind"] in ("commission", "swap")] == [
        ("commission", "-0.35", position["id"]), ("swap", "-5.00", position["id"]),
        ("commission", "-0.35", position["id"])]


# ------------------------------------------------------------------ account types and the sign-up's type

async def test_account_types_are_listed_for_anyone(tmp_path) -> None:
    async with running_gateway(tmp_path) as h:
        _, listed = await h.call("GET", f"{API}/account-types", expect=200)
        assert listed["signup_type"] == "standard"
        by_name = {t["name"]: t for t in listed["account_types"]}
        assert list(by_name) == ["isolated", "raw_spread", "standard"]
        assert by_name["raw_spread"] == {
            "name": "raw_spread", "margin_mode": "cross", "max_leverage": 1000, "margin_call_level": "30.00",
            "stop_out_level": "0.00", "commission_bps": "0.35", "swap_long_bps": "5.00", "swap_short_bps": "5.00",
            "swap_free": False, "min_deposit": "200.00", "spread_multiplier": "0.00", "fixed_spread_bps": None}
        assert (by_name["standard"]["margin_call_level"], by_name["standard"]["swap_free"]) == ("60.00", True)
        assert (by_name["isolated"]["margin_mode"], by_name["isolated"]["margin_call_level"]) == ("isolated", None)
        _, answer = await h.call("GET", f"{API}/account-types?type=standard", expect=400)
        assert answer["error"]["details"]["field"] == "type"


async def test_the_signup_type_is_configurable(tmp_path) -> None:
    async with running_gateway(tmp_path, {"accounts": {"signup_type": "raw_spread"}}) as h:
        auth = await h.trader("configured@example.com")
        _, account = await h.call("GET", f"{API}/account", headers=auth, expect=200)
        assert (account["account_type"], account["demo"], account["balance"]) == ("raw_spread", True, "5000.00")
        _, listed = await h.call("GET", f"{API}/account-types", expect=200)
        assert listed["signup_type"] == "raw_spread"


def test_a_signup_type_that_is_not_configured_stops_the_start(tmp_path) -> None:
    import pytest

    from actors.config import ConfigError
    from actors.gateway import create_app
    from gateway_helpers import gateway_config

    cfg = gateway_config(tmp_path, {"accounts": {"signup_type": "platinum"}})
    with pytest.raises(ConfigError, match="signup_type must be one of the configured account types .*platinum"):
        create_app(handle=None, store=None, candles=None, cfg=cfg, tokens=None)


async def test_each_account_type_sees_and_trades_on_its_own_quotes(tmp_path) -> None:
    """The market's quote (public /quotes, the WS quotes channel) is the instrument's spread: BTCUSDT
    2 bps around 65000.00 = 64987.00 / 65013.00. A raw_spread account (spread_multiplier 0) sees
    and fills at the raw 65000.00; a standard one at the market's."""
    async with running_gateway(tmp_path) as h:
        standard = await h.trader("std@example.com")
        raw = await h.trader("raw@example.com", "raw_spread")
        await h.quote_all()

        def btc(body: dict) -> tuple:
            [quote] = [q for q in body["quotes"] if q["symbol"] == "BTCUSDT"]
            return quote["bid"], quote["ask"]

        _, public = await h.call("GET", f"{API}/quotes", expect=200)
        _, own_standard = await h.call("GET", f"{API}/account/quotes", headers=standard, expect=200)
        _, own_raw = await h.call("GET", f"{API}/account/quotes", headers=raw, expect=200)
        assert btc(public) == btc(own_standard) == ("64987.00", "65013.00")
        assert btc(own_raw) == ("65000.00", "65000.00")
        assert len(own_raw["quotes"]) == len(public["quotes"])

        _, placed = await h.call("POST", f"{API}/orders", headers=raw, expect=201, json=BUY_1000_X10)
        assert placed["position"]["open_price"] == "65000.00"
        _, placed = await h.call("POST", f"{API}/orders", headers=standard, expect=201, json=BUY_1000_X10)
        assert placed["position"]["open_price"] == "65013.00"

        _, types = await h.call("GET", f"{API}/account-types", expect=200)
        spreads = {t["name"]: (t["spread_multiplier"], t["fixed_spread_bps"]) for t in types["account_types"]}
        assert spreads == {"isolated": ("1.00", None), "raw_spread": ("0.00", None), "standard": ("1.00", None)}
        _, answer = await h.call("GET", f"{API}/account/quotes", expect=401)
