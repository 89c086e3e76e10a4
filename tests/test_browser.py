"""The browser tier: the web terminal in real Chromium against a real ``exness-actors run``.

Journeys: sign up, quotes move, buy with TP/SL, the position row with live P&L and its price
lines, partial close, TP modified from the table, the history row, the session across a reload,
deposit and the ledger, a rejection, sign-out; silent session refresh past token expiry; a limit
order and its cancel; a liquidation from a scripted replay feed; a server restart (the page reconnects
and resumes); a phone viewport. Every journey asserts no console errors and no CSP violations.

``EXNESS_WEB_SCREENSHOTS=1`` also rewrites the README's screenshots in ``docs/``.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import pytest

from web_helpers import ROOT, Platform, browser_required, chromium_path, free_port

pytestmark = pytest.mark.slow
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

PASSWORD = "correct horse battery"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# Reported by the browser itself while the server is down on purpose (the restart journey).
RESTART_NOISE = re.compile(r"WebSocket connection to .* failed|Failed to load resource: net::ERR_CONNECTION_REFUSED")
CSP_PROBE = ("document.addEventListener('securitypolicyviolation', (e) => "
             "console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));")


def wait_until(condition, timeout_s: float = 5.0) -> None:
    """Poll ``condition`` from Python (``wait_for_function`` evaluates a string: the page's CSP refuses it)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = chromium_path()
    if executable is None:
        message = "no chromium on PATH (apt-get install chromium)"
        if browser_required():
            pytest.fail(f"{message}; EXNESS_REQUIRE_BROWSER=1, so this is a failure", pytrace=False)
        pytest.skip(f"{message}; EXNESS_REQUIRE_BROWSER=1 makes this a failure")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def platform(tmp_path_factory) -> Iterator[Platform]:
    server = Platform(tmp_path_factory.mktemp("web") / "data").start()
    yield server
    server.stop()


class Console:
    """Console errors, page errors and CSP violations of one page."""

    def __init__(self, page) -> None:
        self.errors: list[str] = []
        self.tolerate: re.Pattern | None = None
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        page.add_init_script(CSP_PROBE)

    def _console(self, message) -> None:
        if message.type == "error" and not (self.tolerate and self.tolerate.search(message.text)):
            self.errors.append(message.text)


@pytest.fixture
def open_page(browser):
    opened = []

    def open_(url: str, viewport: dict = DESKTOP, color_scheme: str = "light", tolerate: re.Pattern | None = None):
        context = browser.new_context(viewport=viewport, color_scheme=color_scheme)
        page = context.new_page()
        console = Console(page)
        console.tolerate = tolerate
        page.goto(url + "/")
        expect(page.locator("body[data-ready=true]")).to_be_attached()
        opened.append((context, console))
        return page, console

    yield open_
    errors = [error for _, console in opened for error in console.errors]
    for context, _ in opened:
        context.close()
    assert errors == [], errors


def quote(platform: Platform, symbol: str) -> dict:
    with urllib.request.urlopen(f"{platform.url}/api/v1/quotes/{symbol}", timeout=5) as response:
        return json.load(response)


def sign_up(page, email: str) -> None:
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_label("Account", exact=True).get_by_text("Balance")).to_be_visible()


def open_account(page, type_label: str, *, real: bool = False) -> None:
    """Open an account from the switcher's dialog ("Open and switch") and wait until it is current."""
    page.get_by_role("button", name="Open account").click()
    dialog = page.get_by_role("dialog", name="Open a trading account")
    dialog.get_by_label("Account type").select_option(label=type_label)
    dialog.get_by_label("Real" if real else "Demo").check()
    dialog.get_by_role("button", name="Open and switch").click()
    expect(dialog).to_be_hidden()
    kind = "real" if real else "demo"
    selected = page.get_by_label("Trading account", exact=True).locator("option:checked")
    expect(selected).to_contain_text(f"{type_label} · {kind}")


def bid_cell(page, symbol: str):
    return page.locator(f'#watchlist tr[data-symbol="{symbol}"] [data-bid]')


def buy(page, **fields: str) -> None:
    for label, value in fields.items():
        page.get_by_label(label.replace("_", " ").capitalize(), exact=True).fill(value)
    page.get_by_role("button", name="Buy").click()


def test_trade_journey_from_signup_to_history(platform, open_page) -> None:
    page, _ = open_page(platform.url)
    first_bid = bid_cell(page, "BTCUSDT").inner_text()
    expect(bid_cell(page, "BTCUSDT")).not_to_have_text(first_bid, timeout=10_000)   # quotes move
    sign_up(page, "journey@example.com")
    expect(page.locator('[data-field="balance"]')).to_have_text("5,000.00")
    # sign-up opened a Standard (cross) account; this journey trades an isolated one (its
    # positions have a liquidation price and take added margin)
    open_account(page, "Isolated")
    expect(page.locator('[data-field="balance"]')).to_have_text("5,000.00")

    ask = Decimal(quote(platform, "BTCUSDT")["ask"])
    take_profit, stop_loss = str((ask * Decimal("1.05")).quantize(Decimal("0.01"))), \
        str((ask * Decimal("0.95")).quantize(Decimal("0.01")))
    page.get_by_label("Margin").fill("200.00")
    page.get_by_label("Leverage").fill("10")
    expect(page.locator('[data-preview="qty"]')).to_contain_text("BTC")
    buy(page, take_profit=take_profit, stop_loss=stop_loss)
    positions = page.get_by_role("table", name="Open positions")
    row = positions.locator("tbody tr").first
    expect(row).to_contain_text("BTCUSDT")
    expect(row).to_contain_text(re.compile(r"[+−]\d+\.\d\d"))
    expect(page.locator("[data-last-fill]")).to_contain_text("liquidation")
    lines = page.evaluate("window.exnessTerminal.priceLines()")
    assert {"Long #1", "TP #1", "SL #1", "Liq. #1"} <= set(lines), lines
    assert lines["TP #1"] == take_profit and lines["SL #1"] == stop_loss
    # the price scale fits the entry, TP and SL lines (5 % away here) as well as the candles
    wait_until(lambda: page.evaluate("window.exnessTerminal.linesOffScreen()") == [])

    # the session survives a reload (the refresh cookie), the position is still there
    page.reload()
    expect(page.locator('[data-field="equity"]')).not_to_have_text("—")
    expect(positions.locator("tbody tr").first).to_contain_text("BTCUSDT")

    qty = Decimal(positions.locator("tbody tr").first.locator("td").nth(2).inner_text())
    half = str((qty / 2).quantize(Decimal("0.00000001")))
    positions.get_by_role("button", name="Edit").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Close quantity").fill(half)
    dialog.get_by_role("button", name="Close part").click()
    expect(dialog).to_be_hidden()
    expect(positions.locator("tbody tr").first.locator("td").nth(2)).to_have_text(str(qty - Decimal(half)))

    # modify the take-profit from the table: the cell and the chart's line move
    new_take_profit = str((ask * Decimal("1.08")).quantize(Decimal("0.01")))
    positions.get_by_role("button", name="Edit").first.click()
    dialog.get_by_label("Take profit").fill(new_take_profit)
    dialog.get_by_role("button", name="Save TP/SL").click()
    expect(dialog).to_be_hidden()
    expect(positions.locator("tbody tr").first.locator("td").nth(6)).to_have_text(f"{Decimal(new_take_profit):,}")
    assert page.evaluate("window.exnessTerminal.priceLines()")["TP #1"] == new_take_profit
    margin_cell = positions.locator("tbody tr").first.locator("td").nth(4)
    margin = Decimal(margin_cell.inner_text().replace(",", ""))
    positions.get_by_role("button", name="Edit").first.click()
    dialog.get_by_label("Add margin").fill("50.00")
    dialog.get_by_role("button", name="Add margin").click()
    expect(margin_cell).to_have_text(f"{margin + 50:,}")

    page.get_by_role("tab", name="History").click()
    history = page.get_by_role("table", name="History")
    expect(history.locator("tbody tr").first).to_contain_text("Closed")
    expect(history.locator("tbody tr").first).to_contain_text(half)

    # demo funds, and the ledger
    page.get_by_role("button", name="Funds").click()
    dialog.get_by_label("Amount").fill("1000.00")
    dialog.get_by_role("button", name="Deposit").click()
    expect(dialog).to_be_hidden()
    page.get_by_role("tab", name="Ledger").click()
    expect(page.get_by_role("table", name="Ledger").locator("tbody tr").first).to_contain_text("deposit")

    # a rejection shows the server's message
    page.get_by_label("Leverage").fill("1000")
    page.get_by_role("button", name="Sell").click()
    expect(page.locator("#ticket [data-error]")).to_contain_text("leverage")
    expect(page.locator(".toast.error")).to_contain_text("Rejected")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    page.reload()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    expect(page.get_by_label("Account", exact=True)).to_be_hidden()


def test_the_session_is_refreshed_silently(tmp_path, open_page) -> None:
    """Access tokens live 6 s here: past their expiry the page still trades and its account
    channel still delivers (the fill toast comes from it) — refreshed by the timer before expiry
    or, failing that, on the socket's TOKEN_EXPIRED — and a reload still finds the session (the
    cookie rotated without ever being reused)."""
    server = Platform(tmp_path / "data", env={"EXNESS_AUTH__ACCESS_TTL_S": "6"}).start()
    try:
        page, _ = open_page(server.url)
        sign_up(page, "refresh@example.com")
        page.wait_for_timeout(8_000)
        buy(page)
        expect(page.locator(".toast.fill")).to_contain_text("Filled")
        expect(page.get_by_role("table", name="Open positions").locator("tbody tr").first).to_contain_text("BTCUSDT")
        page.reload()
        expect(page.get_by_role("table", name="Open positions").locator("tbody tr").first).to_contain_text("BTCUSDT")
    finally:
        server.stop()


def test_limit_order_then_cancel(platform, open_page) -> None:
    page, _ = open_page(platform.url)
    sign_up(page, "limit@example.com")
    bid = Decimal(quote(platform, "BTCUSDT")["bid"])
    page.get_by_label("Limit").check()
    page.get_by_label("Leverage").fill("5")
    page.get_by_label("Price", exact=True).fill(str((bid * Decimal("0.9")).quantize(Decimal("0.01"))))
    page.get_by_role("button", name="Buy").click()
    page.get_by_role("tab", name="Orders").click()
    orders = page.get_by_role("table", name="Pending orders")
    expect(orders.locator("tbody tr").first).to_contain_text("limit")
    assert any(title.startswith("buy limit") for title in page.evaluate("window.exnessTerminal.priceLines()"))
    new_price = str((bid * Decimal("0.85")).quantize(Decimal("0.01")))
    orders.get_by_role("button", name="Edit").first.click()
    page.get_by_role("dialog").get_by_label("Price").fill(new_price)
    page.get_by_role("dialog").get_by_role("button", name="Save order").click()
    expect(orders.locator("tbody tr").first.locator("td").nth(3)).to_have_text(f"{Decimal(new_price):,}")
    page.get_by_role("button", name="5m", exact=True).click()
    expect(page.get_by_role("button", name="5m", exact=True)).to_have_attribute("aria-pressed", "true")
    orders.get_by_role("button", name="Cancel").first.click()
    expect(orders.locator("tbody tr").first).to_contain_text("No pending orders")
    expect(page.locator('[data-field="locked"]')).to_have_text("0.00")


def test_the_page_reconnects_and_resumes_after_a_server_restart(platform, open_page) -> None:
    page, console = open_page(platform.url)
    sign_up(page, "restart@example.com")
    buy(page)
    expect(page.get_by_role("table", name="Open positions").locator("tbody tr").first).to_contain_text("BTCUSDT")
    console.tolerate = RESTART_NOISE
    platform.stop()
    expect(page.get_by_text("Offline — reconnecting…")).to_be_visible(timeout=10_000)
    platform.start()
    expect(page.get_by_text("Offline — reconnecting…")).to_be_hidden(timeout=20_000)
    moved = bid_cell(page, "BTCUSDT").inner_text()
    expect(bid_cell(page, "BTCUSDT")).not_to_have_text(moved, timeout=10_000)
    buy(page)
    expect(page.get_by_role("table", name="Open positions").locator("tbody tr")).to_have_count(2)


def test_orders_fall_back_to_http_when_the_socket_is_down(tmp_path, open_page) -> None:
    """``[web] ws_url`` points the page at a port nobody listens on: the banner says offline,
    and orders, cancels and closes still work over HTTP."""
    dead = f"ws://127.0.0.1:{free_port()}"
    server = Platform(tmp_path / "data", env={"EXNESS_WEB__WS_URL": dead}).start()
    try:
        page, _ = open_page(server.url, tolerate=RESTART_NOISE)
        expect(page.get_by_text("Offline — reconnecting…")).to_be_visible()
        sign_up(page, "fallback@example.com")
        buy(page)
        positions = page.get_by_role("table", name="Open positions")
        expect(positions.locator("tbody tr").first).to_contain_text("BTCUSDT")
        positions.get_by_role("button", name="Close").first.click()
        expect(positions.locator("tbody tr").first).to_contain_text("No open positions")
    finally:
        server.stop()


def _liquidation_recording(path: Path) -> None:
    """BTCUSDT at 65000 for 3 s, then at 60000 for 1 s (a long at L100 liquidates), looped;
    ETHUSDT and SOLUSDT flat. Ten ticks a second each."""
    lines = []
    for step in range(40):
        ts = 1_718_064_000_000 + step * 100
        btc = "65000.00" if step < 30 else "60000.00"
        for update, (symbol, price) in enumerate((("BTCUSDT", btc), ("ETHUSDT", "3500.00"), ("SOLUSDT", "150.000"))):
            ask = str(Decimal(price) + Decimal("0.01"))
            lines.append(json.dumps({"ts": ts, "stream": f"{symbol.lower()}@bookTicker", "data": {
                "u": step * 3 + update + 1, "s": symbol, "b": price, "B": "1.0", "a": ask, "A": "1.0"}}))
    path.write_text("\n".join(lines) + "\n")


def test_a_liquidation_shows_a_toast_and_a_history_row(tmp_path, open_page) -> None:
    recording = tmp_path / "liquidation.jsonl"
    _liquidation_recording(recording)
    server = Platform(tmp_path / "data", feed=f"replay:{recording}", env={"EXNESS_FEED__REPLAY_LOOP": "true"}).start()
    try:
        page, _ = open_page(server.url)
        sign_up(page, "liquidated@example.com")
        open_account(page, "Isolated")                  # liquidation is per position: isolated margin
        page.get_by_label("Leverage").fill("100")
        expect(bid_cell(page, "BTCUSDT")).to_have_text(re.compile(r"^64,9"), timeout=10_000)
        page.get_by_role("button", name="Buy").click()
        expect(page.locator(".toast.error")).to_contain_text("Liquidation", timeout=10_000)
        page.get_by_role("tab", name="History").click()
        expect(page.get_by_role("table", name="History").locator("tbody tr").first).to_contain_text("Liquidation")
    finally:
        server.stop()


def test_a_stop_out_of_a_cross_account_shows_a_toast_and_a_history_row(tmp_path, open_page) -> None:
    """The sign-up's Standard account (cross, stop-out at 0 %) goes all in: 4,900.00 at 100x; the
    drop to 60000 takes its equity below zero, the position closes with reason stop_out."""
    recording = tmp_path / "crash.jsonl"
    _liquidation_recording(recording)
    server = Platform(tmp_path / "data", feed=f"replay:{recording}", env={"EXNESS_FEED__REPLAY_LOOP": "true"}).start()
    try:
        page, _ = open_page(server.url)
        sign_up(page, "stopped@example.com")
        expect(page.locator('[data-preview="free-after"]')).to_be_visible()      # no liquidation price
        expect(page.locator('[data-preview="liquidation-buy"]')).to_be_hidden()
        page.get_by_label("Margin").fill("4900.00")
        page.get_by_label("Leverage").fill("100")
        expect(bid_cell(page, "BTCUSDT")).to_have_text(re.compile(r"^64,9"), timeout=10_000)
        page.get_by_role("button", name="Buy").click()
        expect(page.locator(".toast.error")).to_contain_text("Stop-out", timeout=10_000)
        page.get_by_role("tab", name="History").click()
        expect(page.get_by_role("table", name="History").locator("tbody tr").first).to_contain_text("Stop-out")
        expect(page.locator('[data-field="balance"]')).to_have_text("0.00")     # the house covered the rest
    finally:
        server.stop()


def test_the_account_switcher_opens_accounts_and_shows_commission(platform, open_page) -> None:
    page, _ = open_page(platform.url)
    sign_up(page, "switcher@example.com")
    switcher = page.get_by_label("Trading account", exact=True)
    expect(switcher.locator("option")).to_have_count(1)
    expect(switcher.locator("option:checked")).to_contain_text("Standard · demo")

    # a demo Raw Spread account: commission on the position, margin level in the bar
    open_account(page, "Raw Spread")
    expect(switcher.locator("option")).to_have_count(2)
    expect(page.locator('[data-field="balance"]')).to_have_text("5,000.00")
    buy(page)                                         # 100.00 at 10x: 0.35 bps of ~1,000 = 0.04
    positions = page.get_by_role("table", name="Open positions")
    row = positions.locator("tbody tr").first
    expect(row.locator("td").nth(9)).to_have_text("0.04")
    expect(row.locator("td").nth(8)).to_have_text("—")                       # cross: no liquidation price
    expect(page.locator('[data-field="margin_level"]')).to_have_text(re.compile(r"^[\d,]+\.\d\d %$"))
    positions.get_by_role("button", name="Close").first.click()
    expect(positions.locator("tbody tr").first).to_contain_text("No open positions")
    page.get_by_role("tab", name="History").click()
    history_row = page.get_by_role("table", name="History").locator("tbody tr").first
    expect(history_row.locator("td").nth(7)).to_have_text("0.08")           # open + close commission
    page.get_by_role("tab", name="Ledger").click()
    expect(page.get_by_role("table", name="Ledger").locator("tbody tr").first).to_contain_text("commission")

    # back to the first account: its own (empty) tables and balance
    switcher.select_option(index=0)
    expect(switcher.locator("option:checked")).to_contain_text("Standard · demo")
    expect(page.get_by_role("table", name="Ledger").locator("tbody tr")).to_have_count(1)
    expect(page.get_by_role("table", name="Ledger").locator("tbody tr").first).to_contain_text("deposit")
    expect(page.locator('[data-field="balance"]')).to_have_text("5,000.00")

    # a real account opens empty and has no demo funds button; the choice survives a reload
    open_account(page, "Standard", real=True)
    expect(page.locator('[data-field="balance"]')).to_have_text("0.00")
    expect(page.get_by_role("button", name="Funds")).to_be_hidden()
    page.reload()
    expect(page.get_by_label("Trading account", exact=True).locator("option:checked")).to_contain_text("Standard · real")
    expect(page.locator('[data-field="balance"]')).to_have_text("0.00")


def test_margin_call_and_stop_out_banners(platform, open_page) -> None:
    """The account channel's margin_call and stop_out messages (injected into the page's socket,
    which stays connected to the real server) raise the banner; it can be dismissed."""
    routes = []

    def handler(ws) -> None:
        ws.connect_to_server()                        # everything else passes through unchanged
        routes.append(ws)

    page, _ = open_page(platform.url)
    page.route_web_socket(re.compile(r"^ws://"), handler)
    page.reload()
    expect(page.locator("body[data-ready=true]")).to_be_attached()
    sign_up(page, "banner@example.com")
    wait_until(lambda: bool(routes))
    banner = page.get_by_role("alert").filter(has_text="Margin call")
    expect(banner).to_be_hidden()

    def inject(data: dict) -> None:
        routes[-1].send(json.dumps({"channel": "account", "seq": 10_000, "engine_seq": 1, "data": data}))

    call = banner.filter(has_text="margin level 55.10 % is at or below 60.00 %")

    def call_shows() -> bool:
        # the account is not really in a margin call: an account summary or /account answer from the
        # real server that lands right after the injected message rightly hides the banner again
        # (it once did between two assertions in CI), so inject until the banner is seen with its text
        inject({"event": "margin_call", "margin_level": "55.10", "equity": "2204.00", "used_margin": "4000.00",
                "ts": 1_718_064_000_000})
        try:
            expect(call).to_be_visible(timeout=1_000)
        except AssertionError:
            return False
        return True

    wait_until(call_shows, timeout_s=15.0)
    inject({"event": "stop_out", "margin_level": "0.00", "equity": "-3.00", "used_margin": "4000.00",
            "ts": 1_718_064_000_100})
    stop_out = page.get_by_role("alert").filter(has_text="Stop-out")
    expect(stop_out).to_contain_text("positions were closed")
    stop_out.get_by_role("button", name="Dismiss").click()
    expect(stop_out).to_be_hidden()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_phone_viewport(platform, open_page, theme) -> None:
    page, _ = open_page(platform.url, PHONE, theme)
    sign_up(page, f"phone-{theme}@example.com")
    buy(page)
    expect(page.locator("[data-last-fill]")).to_contain_text("Filled", timeout=10_000)
    expect(page.get_by_role("table", name="Open positions").locator("tbody tr").first).to_contain_text("BTCUSDT")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways: {width}px"
    if os.environ.get("EXNESS_WEB_SCREENSHOTS") == "1":   # the README shows the phone dark, the desktop light
        page.wait_for_timeout(500)
        if theme == "dark":
            page.screenshot(path=str(ROOT / "docs" / "terminal-phone-dark.png"))
        else:
            page.set_viewport_size(DESKTOP)
            page.wait_for_timeout(500)
            page.screenshot(path=str(ROOT / "docs" / "terminal-desktop-light.png"))


def test_an_unnumbered_account_summary_does_not_move_the_resume_point(platform, open_page) -> None:
    """The terminal's socket resumes each channel from the last seq it saw; ``account_summary``
    messages carry no seq and must leave that point where the last event put it."""
    page, _ = open_page(platform.url)
    since = page.evaluate("""async () => {
        const base = document.querySelector('script[type=module]').src.replace(/main\\.js$/, '');
        const { Socket } = await import(base + 'socket.js');
        const socket = new Socket('ws://127.0.0.1:1', {getToken: () => null, onMessage: () => {},
            onResync: () => {}, onStatus: () => {}, onTokenExpired: () => {}});
        socket.epoch = 'e';
        socket.handle({channel: 'account', seq: 41, data: {event: 'balance_changed'}});
        socket.handle({channel: 'account', data: {event: 'account_summary'}});
        return socket.subscription(['account']).since;
    }""")
    assert since == {"account": 41}
