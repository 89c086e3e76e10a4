"""The web terminal in real Chromium against a local ``exness-actors run`` (synthetic feed: 3
symbols, about 10 ticks/s each).

Prints one JSON line per figure:

* ``web.first_quote_ms`` — navigation start to the first live (WebSocket) quote drawn in the
  watchlist (a ``performance.mark`` the page sets); target ≤ 1,000;
* ``web.order_to_row_p50_ms`` / ``web.order_to_row_p99_ms`` — a click on **Buy** to the new
  position row in the DOM, timed in the page, over 200 market orders (``--quick``: 50); target
  p99 ≤ 100;
* ``web.main_thread_busy_ratio`` — main-thread task time per second of wall time (Chrome's
  ``Performance.getMetrics`` TaskDuration) over 10 s while the 3 symbols tick with 50 open
  positions; target ≤ 0.10;
* ``web.page_bytes`` — bytes transferred for the page and its assets, a cold cache, without the
  chart library.

Needs Debian's ``chromium`` and Python ``playwright`` (the test extra).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from web_helpers import Platform, chromium_path  # noqa: E402

PASSWORD = "correct horse battery"
CHART_LIBRARY = "lightweight-charts"

ORDER_LOOP = """async (count) => {
  const rows = document.querySelector("#positions tbody");
  const buy = document.querySelector('#ticket button[value="buy"]');
  const counted = () => rows.querySelectorAll("tr[data-id]").length;
  const times = [];
  for (let i = 0; i < count; i++) {
    const before = counted();
    const started = performance.now();
    await new Promise((resolve) => {
      const observer = new MutationObserver(() => {
        if (counted() > before) { observer.disconnect(); resolve(); }
      });
      observer.observe(rows, { childList: true });
      buy.click();
    });
    times.push(performance.now() - started);
  }
  return times;
}"""


def emit(metric: str, value: float, unit: str, *, target: float | None = None, quick: bool) -> None:
    line: dict = {"bench": "web", "metric": metric, "value": round(value, 3), "unit": unit}
    if target is not None:
        line["target"] = target
    if quick:
        line["quick"] = True
    print(json.dumps(line), flush=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def signed_in_page(browser, url: str, email: str):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready=true]", state="attached")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_selector("#ticket:not([hidden])")
    page.get_by_label("Margin").fill("10.00")
    return context, page


def first_quote_and_bytes(browser, url: str, quick: bool) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(url + "/")
    # polled from here: wait_for_function would evaluate a string, which the page's CSP refuses
    while not page.evaluate("performance.getEntriesByName('exness:first-live-quote').length"):
        page.wait_for_timeout(50)
    emit("web.first_quote_ms", page.evaluate(
        "performance.getEntriesByName('exness:first-live-quote')[0].startTime"), "ms", target=1000, quick=quick)
    page.wait_for_load_state("networkidle")
    transferred = page.evaluate("""(library) => {
      const navigation = performance.getEntriesByType("navigation")[0].transferSize;
      return performance.getEntriesByType("resource").filter((entry) => !entry.name.includes(library))
        .reduce((total, entry) => total + entry.transferSize, navigation);
    }""", CHART_LIBRARY)
    emit("web.page_bytes", transferred, "bytes", quick=quick)
    context.close()


def order_to_row(browser, url: str, count: int, quick: bool) -> None:
    context, page = signed_in_page(browser, url, "bench-orders@example.com")
    times = page.evaluate(ORDER_LOOP, count)
    emit("web.order_to_row_p50_ms", percentile(times, 0.50), "ms", quick=quick)
    emit("web.order_to_row_p99_ms", percentile(times, 0.99), "ms", target=100, quick=quick)
    context.close()


def main_thread_busy(browser, url: str, seconds: float, quick: bool) -> None:
    context, page = signed_in_page(browser, url, "bench-busy@example.com")
    page.evaluate(ORDER_LOOP, 50)
    page.wait_for_timeout(1000)
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable")

    def task_seconds() -> float:
        metrics = cdp.send("Performance.getMetrics")["metrics"]
        return next(metric["value"] for metric in metrics if metric["name"] == "TaskDuration")

    busy_before, started = task_seconds(), time.monotonic()
    page.wait_for_timeout(seconds * 1000)
    busy, elapsed = task_seconds() - busy_before, time.monotonic() - started
    emit("web.main_thread_busy_ratio", busy / elapsed, "ratio", target=0.10, quick=quick)
    context.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 orders, 5 s of ticking")
    args = parser.parse_args(argv)
    executable = chromium_path()
    if executable is None:
        print("bench/web.py needs chromium on PATH (apt-get install chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as scratch:
        platform = Platform(Path(scratch) / "data", env={"EXNESS_LIMITS__ACCOUNT_RATE_PER_S": "100000",
                                                         "EXNESS_LIMITS__ACCOUNT_BURST": "100000"}).start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
                first_quote_and_bytes(browser, platform.url, args.quick)
                order_to_row(browser, platform.url, 50 if args.quick else 200, args.quick)
                main_thread_busy(browser, platform.url, 5 if args.quick else 10, args.quick)
                browser.close()
        finally:
            platform.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
