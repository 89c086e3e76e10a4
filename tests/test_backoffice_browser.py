"""The browser tier of the back office (``/admin``, issue 13) in real Chromium against a real
``exness-actors run`` whose operators were made with ``exness-actors operator create``.

Journeys: an admin signs in, watches exposure and the house's P&L move with the synthetic feed,
halts and resumes a symbol (a trader's order is refused meanwhile), finds an account by e-mail,
adjusts its balance and force-closes its position, reads it all in the audit log, and keeps the
session across a reload; a viewer sees the same desk without the buttons their role cannot use.
Every journey asserts no console errors and no CSP violations.

``EXNESS_WEB_SCREENSHOTS=1`` also rewrites docs/backoffice.png.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
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
    dialog = page.get_by_role("dialog")
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
