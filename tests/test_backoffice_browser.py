"""The browser tier of the back office (``/admin``, issue 13) in real Chromium against a real
``exness-actors run`` whose operators were made with ``exness-actors operator create``.

Journeys: an admin signs in, watches exposure and the house's P&L move with the synthetic feed,
halts and resumes a symbol (a trader's order is refused meanwhile), finds an account by e-mail,
adjusts its balance and force-closes its position, reads it all in the audit log, and keeps the
session across a reload; a viewer sees the same desk without the buttons their role cannot use
(and, with one engine, no shard facts). Several engine shards (split mode) are played by
Playwright routes that turn this one-engine platform's admin answers into a two-shard
deployment's, each checked against its component in schemas/openapi.json: a halt shard 1 missed
shows as partial and is finished with the Halt button, a 503/502 shard error is explained in a
dialog whose Retry sends the action again. Every journey asserts no console errors and no CSP
violations.

``EXNESS_WEB_SCREENSHOTS=1`` also rewrites docs/backoffice.png and docs/backoffice-shards.png.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from test_browser import DESKTOP, PHONE, Console, browser, wait_until  # noqa: F401  (the browser fixture)
from web_helpers import ROOT, Platform

pytestmark = pytest.mark.slow
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

OPERATOR_PASSWORD = "back office password"
UNAUTHORIZED = re.compile(r"Failed to load resource: the server responded with a status of 401")
SHARD_ERROR = re.compile(r"Failed to load resource: the server responded with a status of 50[23]")
OPENAPI = json.loads((ROOT / "schemas" / "openapi.json").read_text())
TRADER_PASSWORD = "correct horse battery"


def http(platform: Platform, method: str, path: str, body: Optional[dict] = None,
         token: Optional[str] = None) -> tuple[int, Any]:
    request = urllib.request.Request(platform.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            data = response.read()
            return response.status, json.loads(data) if data else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def create_operator(data_dir: Path, email: str, role: str) -> None:
    env = {**os.environ, "EXNESS_OPERATOR_PASSWORD": OPERATOR_PASSWORD, "EXNESS_AUTH__ARGON2_TIME_COST": "1",
           "EXNESS_AUTH__ARGON2_MEMORY_KIB": "8", "EXNESS_AUTH__ARGON2_PARALLELISM": "1"}
    done = subprocess.run([sys.executable, "-m", "supervisor", "operator", "create", email, "--role", role,
                           "--data-dir", str(data_dir)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def platform(tmp_path_factory) -> Iterator[Platform]:
    data_dir = tmp_path_factory.mktemp("backoffice") / "data"
    data_dir.mkdir()
    create_operator(data_dir, "admin@broker.example", "admin")
    create_operator(data_dir, "viewer@broker.example", "viewer")
    server = Platform(data_dir).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def trader(platform: Platform) -> dict[str, str]:
    """A trader with an open BTC long, through the public API."""
    email = "client@example.com"
    assert http(platform, "POST", "/api/v1/auth/signup", {"email": email, "password": TRADER_PASSWORD})[0] == 201
    _, pair = http(platform, "POST", "/api/v1/auth/signin", {"email": email, "password": TRADER_PASSWORD})
    status, placed = http(platform, "POST", "/api/v1/orders", {
        "symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "200.00", "leverage": 10},
        token=pair["access_token"])
    assert status == 201, placed
    return {"token": pair["access_token"], "account_id": pair["account_id"], "email": email,
            "position_id": placed["position"]["id"]}


@pytest.fixture
def open_admin(browser):  # noqa: F811  (the imported fixture)
    opened = []

    def open_(url: str, viewport: dict = DESKTOP, color_scheme: str = "light"):
        context = browser.new_context(viewport=viewport, color_scheme=color_scheme)
        page = context.new_page()
        console = Console(page)
        page.goto(url + "/admin")
        expect(page.locator("body[data-ready=true]")).to_be_attached()
        opened.append((context, console))
        return page, console

    yield open_
    errors = [error for _, console in opened for error in console.errors]
    for context, _ in opened:
        context.close()
    assert errors == [], errors


def sign_in(page, email: str, password: str = OPERATOR_PASSWORD) -> None:
    form = page.get_by_role("form", name="Operator sign-in")
    form.get_by_label("Email").fill(email)
    form.get_by_label("Password").fill(password)
    form.get_by_role("button", name="Sign in").click()
    if password == OPERATOR_PASSWORD:
        expect(page.get_by_label("Signed-in operator")).to_contain_text(email)


def answer_reason(page, reason: str) -> None:
    dialog = page.get_by_role("dialog").filter(has=page.get_by_label("Reason"))    # (not the shards one)
    dialog.get_by_label("Reason").fill(reason)
    dialog.get_by_role("button", name="Confirm").click()
    expect(dialog).to_be_hidden()


def test_an_admin_runs_the_desk(platform, trader, open_admin) -> None:
    page, console = open_admin(platform.url)
    expect(page.get_by_role("heading", name="Operator sign-in")).to_be_visible()
    console.tolerate = UNAUTHORIZED      # the browser reports the refused sign-in itself
    sign_in(page, "admin@broker.example", "wrong password!")
    expect(page.get_by_role("form", name="Operator sign-in").get_by_role("alert")).to_contain_text(
        "wrong e-mail or password")
    console.tolerate = None
    sign_in(page, "admin@broker.example")
    expect(page.get_by_label("Signed-in operator")).to_contain_text("admin")

    # exposure and P&L by symbol, live: the trader's long shows, the bid moves with the feed
    exposure = page.get_by_role("table", name="Exposure and P&L by symbol")
    btc = exposure.locator('tr[data-symbol="BTCUSDT"]')
    expect(btc).to_contain_text("Trading")
    bid, long_qty = btc.locator("td").nth(0), btc.locator("td").nth(1)     # (the symbol is the row header)
    expect(bid).not_to_have_text("—")
    first_bid = bid.inner_text()
    expect(bid).not_to_have_text(first_bid, timeout=15_000)
    expect(long_qty).not_to_have_text("0.00000000")
    expect(page.get_by_label("House P&L").locator('[data-field="net"]')).not_to_have_text("—")

    # halt: the dialog asks why, the row says Halted, a trader's order is refused; then resume
    exposure.get_by_role("button", name="Halt BTCUSDT").click()
    answer_reason(page, "exchange outage drill")
    expect(btc).to_contain_text("Halted")
    status, refused = http(platform, "POST", "/api/v1/orders", {
        "symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "10.00", "leverage": 5}, token=trader["token"])
    assert (status, refused["error"]["code"]) == (422, "MARKET_HALTED")
    exposure.get_by_role("button", name="Resume BTCUSDT").click()
    answer_reason(page, "drill over")
    expect(btc).to_contain_text("Trading")

    # find the trader by e-mail, open the account, fund it
    search = page.get_by_role("search", name="Account search")
    search.get_by_label("Email contains").fill("client@")
    search.get_by_role("button", name="Search").click()
    accounts = page.get_by_role("table", name="Accounts")
    expect(accounts.locator("tbody tr")).to_have_count(1)
    expect(accounts).to_contain_text(trader["email"])
    accounts.get_by_role("button", name=f"Account {trader['account_id']}").click()
    detail = page.get_by_label("Account detail")
    expect(detail.get_by_role("heading")).to_contain_text(trader["email"])
    balance = detail.locator('[data-field="balance"]')
    expect(balance).to_have_text("5,000.00")
    adjust = detail.get_by_role("form", name="Adjust balance")
    adjust.get_by_label("Amount").fill("250.00")
    adjust.get_by_label("Adjustment reason").fill("wire 42")
    adjust.get_by_role("button", name="Adjust balance").click()
    expect(balance).to_have_text("5,250.00")
    expect(detail.get_by_role("table", name="Ledger").locator("tbody tr").first).to_contain_text("operator_adjustment")

    # force-close the trader's position
    positions = detail.get_by_role("table", name="Open positions")
    positions.get_by_role("button", name=f"Close position {trader['position_id']}").click()
    answer_reason(page, "risk limit")
    expect(positions).to_contain_text("No open position.")
    _, history = http(platform, "GET", "/api/v1/history/positions", token=trader["token"])
    assert history["positions"][0]["close_reason"] == "operator"

    # the audit log lists every action, newest first, and filters
    audit = page.get_by_role("table", name="Audit log")
    expect(audit.locator("tbody tr")).to_have_count(4, timeout=10_000)
    expect(audit.locator("tbody tr").first).to_contain_text("close_position")
    expect(audit.locator("tbody tr").nth(1)).to_contain_text("adjust_balance")
    filters = page.get_by_role("form", name="Audit filter")
    filters.get_by_label("Action").select_option("halt")
    filters.get_by_role("button", name="Filter").click()
    expect(audit.locator("tbody tr")).to_have_count(1)
    expect(audit.locator("tbody tr").first).to_contain_text("exchange outage drill")

    if os.environ.get("EXNESS_WEB_SCREENSHOTS") == "1":
        screenshot(platform, page, trader)

    # the session survives a reload (the refresh cookie); sign-out ends it
    page.reload()
    expect(page.get_by_label("Signed-in operator")).to_contain_text("admin@broker.example")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    page.reload()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()


def screenshot(platform: Platform, page, trader: dict[str, str]) -> None:
    """docs/backoffice.png: the desk with open positions on both sides."""
    for order in ({"symbol": "BTCUSDT", "side": "buy", "margin": "300.00", "leverage": 20},
                  {"symbol": "ETHUSDT", "side": "sell", "margin": "150.00", "leverage": 10}):
        assert http(platform, "POST", "/api/v1/orders", {**order, "type": "market"}, token=trader["token"])[0] == 201
    filters = page.get_by_role("form", name="Audit filter")
    filters.get_by_label("Action").select_option("")
    filters.get_by_role("button", name="Filter").click()
    page.get_by_role("search", name="Account search").get_by_role("button", name="Search").click()
    page.get_by_role("table", name="Accounts").get_by_role("button", name=f"Account {trader['account_id']}").click()
    page.wait_for_timeout(2500)
    page.evaluate("document.getElementById('toasts').replaceChildren()")
    page.screenshot(path=str(ROOT / "docs" / "backoffice.png"), full_page=True)


def test_a_viewer_sees_the_desk_without_the_buttons(platform, trader, open_admin) -> None:
    page, _ = open_admin(platform.url)
    sign_in(page, "viewer@broker.example")
    exposure = page.get_by_role("table", name="Exposure and P&L by symbol")
    expect(exposure.locator('tr[data-symbol="ETHUSDT"]')).to_be_visible()
    expect(exposure.get_by_role("button")).to_have_count(0)
    page.get_by_role("search", name="Account search").get_by_role("button", name="Search").click()
    page.get_by_role("table", name="Accounts").get_by_role("button", name=f"Account {trader['account_id']}").click()
    detail = page.get_by_label("Account detail")
    expect(detail.get_by_role("heading")).to_contain_text(trader["email"])
    expect(detail.get_by_role("form", name="Adjust balance")).to_be_hidden()
    # one engine: no shard facts anywhere (the page as it always was)
    audit = page.get_by_role("table", name="Audit log")
    expect(audit.locator("tbody tr").first).to_contain_text("admin@broker.example")
    expect(audit.get_by_role("columnheader")).to_have_count(6)
    expect(exposure.locator(".badge")).to_have_count(0)
    expect(exposure.locator('tr[data-symbol="BTCUSDT"] td.status')).to_have_text("Trading")
    # and the server refuses what the page does not offer
    _, pair = http(platform, "POST", "/api/v1/admin/signin",
                   {"email": "viewer@broker.example", "password": OPERATOR_PASSWORD})
    status, body = http(platform, "POST", "/api/v1/admin/symbols/BTCUSDT/halt", {"reason": "x"},
                        token=pair["access_token"])
    assert (status, body["error"]["code"]) == (403, "INSUFFICIENT_ROLE")


def test_the_desk_fits_a_phone(platform, open_admin) -> None:
    page, _ = open_admin(platform.url, PHONE, "dark")
    sign_in(page, "viewer@broker.example")
    expect(page.get_by_role("table", name="Exposure and P&L by symbol").locator("tbody tr")).to_have_count(3)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways: {width}px"


# ------------------------------------------------------------------------------ several shards

def conforms(component: str, instance: Any) -> Any:
    """``instance`` after checking it against ``component`` of schemas/openapi.json: the fixtures
    stay in the documented schema."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = {"$ref": f"#/components/schemas/{component}", "components": OPENAPI["components"]}
    jsonschema.Draft202012Validator(schema).validate(instance)
    return instance


def shards_unavailable(what: str, missing: list[int], applied: list[int]) -> dict:
    """A 503 body as _admin._on_every_shard answers it for a command (docs/backoffice.md)."""
    return conforms("ErrorBody", {"error": {"code": "SHARDS_UNAVAILABLE", "message": (
        f"{what}: engine shard(s) {', '.join(map(str, missing))} did not confirm it (ENGINE_TIMEOUT); it was "
        f"applied on shard(s) {', '.join(map(str, applied))}. Repeat the action once the shard is back: it is safe, "
        "every shard applies it again"), "details": {
        "shards": missing, "errors": {str(shard): "ENGINE_TIMEOUT" for shard in missing}, "applied_on": applied}}})


def shards_disagree(what: str, applied: list[int], refused: dict[int, str]) -> dict:
    return conforms("ErrorBody", {"error": {"code": "SHARDS_DISAGREE", "message": (
        f"{what} was applied on shard(s) {', '.join(map(str, applied))} but refused on shard(s) "
        f"{', '.join(map(str, refused))}"), "details": {
        "applied_on": applied, "refused": {str(shard): code for shard, code in refused.items()}}}})


class TwoShards:
    """Playwright routes that make the one-engine platform's admin API answer as a deployment with
    two engine shards: rows carry ``halted_shards`` (``halted`` per shard from ``self.halted``) and
    ``differing_shards``, every halt/resume/instrument entry of the audit log has its shard-1 twin,
    and a halt or resume answers the next of ``self.answers`` (status, body, shards halted after it)
    — or, when none is queued, goes to the real engine (which then halts or resumes every shard)."""

    def __init__(self, page) -> None:
        self.halted: dict[str, list[int]] = {}
        self.differing: dict[str, list[int]] = {}
        self.answers: list[tuple[int, dict, list[int]]] = []
        self.audit_extra: list[dict] = []
        self.down: list[int] = []       # shards that do not answer the house's figures
        page.route(re.compile(r"/api/v1/admin/pnl$"), self._pnl)
        page.route(re.compile(r"/api/v1/admin/exposure$"), self._exposure)
        page.route(re.compile(r"/api/v1/admin/symbols$"), self._symbols)
        page.route(re.compile(r"/api/v1/admin/audit\?"), self._audit)
        page.route(re.compile(r"/api/v1/admin/symbols/[A-Z]+/(halt|resume)$"), self._action)

    def _shards(self, row: dict) -> None:
        row["halted_shards"] = self.halted.get(row["symbol"], [0, 1] if row["halted"] else [])
        row["halted"] = bool(row["halted_shards"])

    def _pnl(self, route) -> None:
        if not self.down:
            route.continue_()
            return
        listed = ", ".join(map(str, self.down))
        route.fulfill(status=503, json=conforms("ErrorBody", {"error": {"code": "SHARDS_UNAVAILABLE", "message": (
            f"house figures: engine shard(s) {listed} did not answer (ENGINE_TIMEOUT); the figures would leave "
            "them out"), "details": {"shards": self.down, "errors": {str(shard): "ENGINE_TIMEOUT"
                                                                     for shard in self.down}}}}))

    def _exposure(self, route) -> None:
        response = route.fetch()
        body = response.json()
        for row in body["symbols"]:
            self._shards(row)
        route.fulfill(response=response, json=conforms("Exposure", body))

    def _symbols(self, route) -> None:
        response = route.fetch()
        body = response.json()
        for row in body["symbols"]:
            self._shards(row)
            row["differing_shards"] = self.differing.get(row["symbol"], [])
        route.fulfill(response=response, json=conforms("AdminSymbolList", body))

    def _audit(self, route) -> None:
        response = route.fetch()
        body = response.json()
        entries = list(self.audit_extra)
        for entry in body["entries"]:
            entries.append(entry)
            if entry["action"] in ("halt", "resume", "update_instrument"):
                entries.append({**entry, "shard": 1, "id": "1-" + entry["id"].split("-", 1)[1]})
        body["entries"] = sorted(entries, key=lambda entry: (-entry["ts"], entry["shard"]))
        route.fulfill(response=response, json=conforms("AuditPage", body))

    def _action(self, route) -> None:
        symbol, verb = route.request.url.rsplit("/", 2)[-2:]
        if self.answers:
            status, body, halted = self.answers.pop(0)
            self.halted[symbol] = halted
            route.fulfill(status=status, json=body)
            return
        response = route.fetch()
        assert response.status == 200, response.text()
        self.halted[symbol] = [0, 1] if verb == "halt" else []
        row = response.json()
        self._shards(row)
        row["differing_shards"] = self.differing.get(symbol, [])
        route.fulfill(response=response, json=conforms("AdminSymbol", row))


def test_an_admin_sees_the_shards(platform, trader, open_admin, tmp_path) -> None:
    page, console = open_admin(platform.url)
    console.tolerate = SHARD_ERROR       # the browser reports the 503 and 502 answers itself
    shards = TwoShards(page)
    shards.differing["ETHUSDT"] = [1]
    sign_in(page, "admin@broker.example")
    exposure = page.get_by_role("table", name="Exposure and P&L by symbol")
    btc, eth = exposure.locator('tr[data-symbol="BTCUSDT"]'), exposure.locator('tr[data-symbol="ETHUSDT"]')
    expect(btc.locator("td.status")).to_have_text("Trading")
    expect(eth.locator("td.status")).to_contain_text("instrument differs on shard 1")
    expect(eth.locator(".shard-mark")).to_be_visible()              # by the symbol: seen on a phone too
    expect(btc.locator(".shard-mark")).to_have_count(0)
    audit = page.get_by_role("table", name="Audit log")
    expect(audit.get_by_role("columnheader", name="Shard")).to_be_visible()    # several shards: always

    # a halt shard 1 does not confirm: the dialog says what happened and what to do
    shards.answers.append((503, shards_unavailable("HaltSymbol BTCUSDT", [1], [0]), [0]))
    shards.audit_extra.append(conforms("AuditEntry", {
        "id": "0-999999-0", "shard": 0, "operator_id": "1", "operator_email": "admin@broker.example",
        "action": "halt", "account_id": None, "target": "BTCUSDT", "reason": "shard drill", "detail": {},
        "ts": int(time.time() * 1000)}))     # the newest entry
    exposure.get_by_role("button", name="Halt BTCUSDT").click()
    answer_reason(page, "shard drill")
    dialog = page.get_by_role("dialog", name="Halt BTCUSDT: not on every shard")
    expect(dialog).to_contain_text("Halt BTCUSDT was applied on shard 0, but not confirmed by shard 1: "
                                   "shard 1 did not answer in time.")
    expect(dialog).to_contain_text("Retry once shard 1 is back: repeating it is safe")
    expect(btc.locator("td.status")).to_contain_text("Halted on shard 0")
    expect(btc.locator("td.status .badge")).to_have_text("partial: trading on shard 1")
    page.screenshot(path=str(tmp_path / "shards-dialog.png"))
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()

    # partial: both buttons; the audit log's shard column shows the lone shard-0 entry
    expect(btc.get_by_role("button")).to_have_text(["Halt", "Resume"])
    first = audit.locator("tbody tr").first
    expect(first).to_contain_text("shard drill")
    expect(first.locator("td").nth(4)).to_have_text("0")
    page.evaluate("document.getElementById('toasts').replaceChildren()")
    page.screenshot(path=str(tmp_path / "shards-desktop.png"), full_page=True)
    if os.environ.get("EXNESS_WEB_SCREENSHOTS") == "1":
        page.screenshot(path=str(ROOT / "docs" / "backoffice-shards.png"), full_page=True)

    # the same on a phone: the badges fit, the page does not scroll sideways
    phone, _ = open_admin(platform.url, PHONE, "dark")
    phone_shards = TwoShards(phone)
    phone_shards.halted, phone_shards.differing = shards.halted, shards.differing
    phone_shards.audit_extra = shards.audit_extra
    sign_in(phone, "admin@broker.example")
    expect(phone.locator('tr[data-symbol="BTCUSDT"] .badge')).to_have_text("partial: trading on shard 1")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways: {width}px"
    phone.screenshot(path=str(tmp_path / "shards-phone.png"), full_page=True)
    phone.get_by_label("Exposure").evaluate("panel => { panel.scrollLeft = panel.scrollWidth; }")
    phone.screenshot(path=str(tmp_path / "shards-phone-status.png"))
    print("screenshots:", tmp_path)

    # the Halt button finishes it: the real engine halts, every shard has it
    btc.get_by_role("button", name="Halt BTCUSDT").click()
    answer_reason(page, "finish the halt")
    expect(btc.locator("td.status")).to_have_text("Halted on shards 0, 1")
    expect(btc.get_by_role("button")).to_have_text(["Resume"])
    expect(page.get_by_role("status").filter(has_text="BTCUSDT halted")).to_be_visible()
    expect(audit.locator("tbody tr").filter(has_text="finish the halt")).to_have_count(2)   # shards 0 and 1

    # shards that disagree: the dialog names the refusal; Retry sends it again, with the same reason
    shards.answers.append((502, shards_disagree("ResumeSymbol BTCUSDT", [0], {1: "UNKNOWN_SYMBOL"}), [1]))
    btc.get_by_role("button", name="Resume BTCUSDT").click()
    answer_reason(page, "shards agree again")
    dialog = page.get_by_role("dialog", name="Resume BTCUSDT: the shards disagree")
    expect(dialog).to_contain_text("Resume BTCUSDT was applied on shard 0 but was refused by shard 1 "
                                   "(shard 1: UNKNOWN_SYMBOL).")
    expect(btc.locator("td.status")).to_contain_text("Halted on shard 1")
    expect(btc.locator("td.status .badge")).to_have_text("partial: trading on shard 0")
    dialog.get_by_role("button", name="Retry").click()
    expect(dialog).to_be_hidden()
    expect(btc.locator("td.status")).to_have_text("Trading")
    expect(page.get_by_role("status").filter(has_text="BTCUSDT resumed")).to_be_visible()
    expect(audit.locator("tbody tr").filter(has_text="shards agree again").first).to_contain_text("resume")
    # a shard that does not answer the house's figures: the live marker says which, until it does
    live = page.get_by_label("House P&L").get_by_role("status")
    shards.down = [1]
    expect(live).to_have_text("paused: shard 1 not answering")
    shards.down = []
    expect(live).to_have_text("live")

    status, placed = http(platform, "POST", "/api/v1/orders", {   # the real engine trades it again
        "symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "10.00", "leverage": 5}, token=trader["token"])
    assert status == 201, placed
