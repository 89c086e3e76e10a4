"""Benchmark of the pure candle builder (DESIGN.md §4 candles, §7).

Prints one JSON object per line and figure on stdout::

    {"bench": "candles", "metric": "quotes_per_s", "value": 2500000.0, "unit": "1/s",
     "target": 500000, "better": "higher"}

Usage::

    python bench/candles.py            # 1,000,000 quotes, best of 5 passes
    python bench/candles.py --quick    # 100,000 quotes, best of 3 ("quick": true on every line)

Theory of operation
-------------------
The quotes are generated before timing: 3 symbols (BTCUSDT, ETHUSDT, SOLUSDT) round-robin, each a
random walk of the bid in ticks, with exponential inter-arrival gaps averaging 20 ms over all
symbols (~50 quotes/s, a busy Binance bookTicker), so a 1m candle collects ~1,000 quotes per symbol
and ~1 in 1,000 quotes closes one — the realistic mix of the in-place update path and the
allocating close path. Each pass feeds every quote through ``CandleBuilder.on_quote`` on a fresh
builder in one tight loop (no per-call timer); ``quotes_per_s`` is the best pass. The heap is
collected and frozen before timing so the pre-built quote list is not scanned by the cyclic GC.
``candles_closed`` is reported too, so a change in the workload shows up next to the speed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import time

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from exness_actors.candles import CandleBuilder  # noqa: E402

TARGET_QUOTES_PER_S = 500_000
SYMBOLS = (("BTCUSDT", 6_500_000), ("ETHUSDT", 300_000), ("SOLUSDT", 150_000))
START_TS = 1_704_067_200 * 1_000_000_000   # 2024-01-01 00:00 UTC
MEAN_GAP_NS = 20_000_000


def make_quotes(count: int, seed: int = 1) -> list[tuple[str, int, int]]:
    rng = random.Random(seed)
    bids = [price for _symbol, price in SYMBOLS]
    quotes = []
    ts = START_TS
    for i in range(count):
        index = i % len(SYMBOLS)
        bid = bids[index]
        bid = max(1, bid + int(rng.gauss(0, bid * 0.0002)))
        bids[index] = bid
        ts += int(rng.expovariate(1 / MEAN_GAP_NS))
        quotes.append((SYMBOLS[index][0], bid, ts))
    return quotes


def one_pass(quotes: list[tuple[str, int, int]]) -> tuple[float, int]:
    builder = CandleBuilder("1m")
    on_quote = builder.on_quote
    closed = 0
    started = time.perf_counter()
    for symbol, bid, ts in quotes:
        if on_quote(symbol, bid, ts):
            closed += 1
    elapsed = time.perf_counter() - started
    return elapsed, closed


def emit(metric: str, value: float, unit: str, *, quick: bool, target: float | None = None,
         better: str | None = None) -> None:
    line: dict = {"bench": "candles", "metric": metric, "value": value, "unit": unit}
    if target is not None:
        line["target"] = target
    if better is not None:
        line["better"] = better
    if quick:
        line["quick"] = True
    print(json.dumps(line), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run (100k quotes)")
    args = parser.parse_args(argv)
    count, passes = (100_000, 3) if args.quick else (1_000_000, 5)

    print(f"generating {count:,} quotes over {len(SYMBOLS)} symbols", file=sys.stderr)
    quotes = make_quotes(count)
    gc.collect()
    gc.freeze()
    best = float("inf")
    closed = 0
    for number in range(passes):
        elapsed, closed = one_pass(quotes)
        best = min(best, elapsed)
        print(f"pass {number + 1}/{passes}: {count / elapsed:,.0f} quotes/s, {closed} candles closed",
              file=sys.stderr)
    gc.unfreeze()

    emit("quotes_per_s", round(count / best, 1), "1/s", quick=args.quick,
         target=TARGET_QUOTES_PER_S, better="higher")
    emit("candles_closed", closed, "1", quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
