"""Benchmark of the pure trading core (DESIGN.md §2, §7).

Prints one JSON object per line and figure on stdout::

    {"bench": "core", "metric": "inputs_per_s", "value": 312345.0, "unit": "1/s",
     "target": 300000, "better": "higher"}

Progress and diagnostics go to stderr. Usage::

    python bench/core.py                 # full run (a few minutes on 2 cores)
    python bench/core.py --quick         # small run (seconds)
    python bench/core.py --quick --profile   # standard mix under cProfile, top 25 by tottime

Theory of operation
-------------------
**Standard mix.** 3 symbols (BTCUSDT/ETHUSDT 2 price decimals, SOLUSDT 3; qty_decimals 8;
spread 2 bps; max leverage 100), 100,000 accounts created before timing, then 1,000,000
inputs: 70% quotes (a mean-reverting random walk of a few bps per step), 15% market opens
(leverage 1..100 skewed low, random side, margin 10..500 USD, a third with TP/SL a few % away),
8% closes of a random open position, 5% pending limit/stop entries placed a bit away from the
market on the valid side, 2% cancels of a random pending order.

Closes and cancels depend on state (liquidations, TP/SL and triggered entries change what is
open), so the mix is first *simulated* untimed on a throwaway engine: each input is drawn from
the seeded RNG and the live state, recorded as a compact spec tuple, and applied. The recorded
specs are then replayed on fresh engines built from the same initial state: one pass timed as a
whole loop (``inputs_per_s``; no per-call timer overhead) and one pass with ``perf_counter_ns``
around every ``engine.submit`` (``p50_us``, ``p99_us``, ``mean_us_<kind>``). Each replay must end
with the simulation's rolling hash, which proves it did exactly the same work. Command objects
are single-use (``submit`` stamps ``seq``/``ts``), so every pass builds its own list before the
clock starts. Before each timed loop the heap is collected and frozen (``gc.freeze``) so that
the benchmark's own pre-built command list is not scanned by the cyclic GC; objects the engine
creates during the loop are collected as usual.

**Quote cost vs open positions.** Two engines, one with 1,000 and one with 1,000,000 open
positions (10 per account; quick: 100,000), opened with market orders while the price jumps
around a ±1.5% band: leverage 1..20, a third with TP/SL 5-15% away (a stop-loss kept inside 90%
of the liquidation distance), a fifth with a trailing stop of 5-10%, so every liquidation, TP, SL
and trailing level is at least ~3% outside the band.
Then each engine gets a quote at the top and at the bottom of a ±0.1% inner band (merging every
trailing group to the extremes), and the timed quotes walk strictly inside the inner band: they
cross nothing and set no new trailing peak. The engines take turns over ``--quote-reps`` (7)
repetitions of 100,000 quotes (quick: 20,000); ``quote_cost_ratio_1m_vs_1k`` is the ratio of the
best mean quote costs (best-of-N resists noise from other processes on the machine).

**Memory.** ``bytes_per_position`` is the growth of the process RSS (``/proc/self/statm``) while
the 1,000,000 positions are opened into the engine that already holds its accounts and quotes,
divided by the number of positions (``gc.collect()`` before both readings).

Without ``--phase`` the phases (positions, mix, mix-pure) each run in a fresh child interpreter, so
none sees another's heap: freed memory cannot hide RSS growth, and a freed 1M-position heap
cannot slow the mix. ``inputs_per_s`` is the best of ``--throughput-passes`` passes (default 2),
``inputs_per_s_cpu`` the same by CPU time (less sensitive to other processes on the machine);
``mix-pure`` repeats the throughput passes on the pure Python core (``EXNESS_CORE_BUILD=pure``) as
``inputs_per_s_pure``/``inputs_per_s_pure_cpu``. Every line names the ``build`` it measured.

**Cross-margin mix (issue 16).** The ``cross`` phase runs the standard mix over typed cross
accounts (half ``standard``, half with commission and swaps): 80 % of the accounts trade one
symbol, 20 % two or three (``account_symbols``); ``cross_inputs_per_s`` is its throughput. Then
1,000 and 1,000,000 positions (quick: 100,000) on such accounts, and the same no-cross quotes as
above: ``cross_quote_cost_ratio_1m_vs_1k`` (the margin watches must not make a quote touch
unrelated accounts).

**Price alerts (issue 13).** In the positions phase, ``alert_quote_cost_ratio_20k_vs_0``: two
1,000-position engines, one also holding 20,000 price alerts 1-3 % outside the inner band, timed on
the same no-cross quotes (alerts sit in the trigger indexes, so those they do not cross cost nothing).

With ``--quick`` the metric names stay the same (tools key on them) and every line carries
``"quick": true``: 10,000 accounts, 100,000 inputs, 1k vs 100k positions.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import os
import pstats
import random
import subprocess
import sys
import time
from array import array
from typing import Any, Callable, Iterable, Optional

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from actors.runtime import GC_THRESHOLDS  # noqa: E402  (the engine process's collector settings)
from exness_actors import BUILD as CORE_BUILD  # noqa: E402
from exness_actors.account_types import AccountType  # noqa: E402
from exness_actors.commands import (  # noqa: E402
    CancelOrder, ClosePosition, CreateAccount, OpenAccount, PlaceAlert, PlaceOrder, Quote,
)
from exness_actors.engine import Engine  # noqa: E402
from exness_actors.events import (  # noqa: E402
    CommandRejected, OrderAccepted, OrderCancelled, OrderRejected, OrderTriggered,
    PositionClosed, PositionOpened,
)
from exness_actors.instruments import CoreConfig, Instrument  # noqa: E402

perf_counter_ns = time.perf_counter_ns

# ------------------------------------------------------------------------------ configuration

INSTRUMENTS = (
    Instrument(symbol="BTCUSDT", price_decimals=2, qty_decimals=8, max_leverage=100,
               spread_bps=2, min_qty=1_000),
    Instrument(symbol="ETHUSDT", price_decimals=2, qty_decimals=8, max_leverage=100,
               spread_bps=2, min_qty=1_000),
    Instrument(symbol="SOLUSDT", price_decimals=3, qty_decimals=8, max_leverage=100,
               spread_bps=2, min_qty=1_000),
)
SYMBOLS = tuple(i.symbol for i in INSTRUMENTS)
#: Raw mid prices in ticks: 65000.00, 3500.00, 150.000.
CENTERS = {"BTCUSDT": 6_500_000, "ETHUSDT": 350_000, "SOLUSDT": 150_000}
DEPOSIT = 100_000_000            # 1,000,000.00 USD per account: never the limiting factor
SETUP_TS = 1_000_000_000         # accounts and first quotes (ns)
MIX_T0 = 2_000_000_000           # first timed input (ns)
MIX_STEP_NS = 1_000              # engine time between inputs

# Kinds of the standard mix (index into KIND_NAMES) and their shares.
QUOTE, OPEN, CLOSE, PENDING, CANCEL = range(5)
KIND_NAMES = ("quote", "market_open", "close", "pending", "cancel")
MIX_WEIGHTS = (70, 15, 8, 5, 2)


def _half_spread(mid: int) -> int:
    """Raw feed half-spread: ~0.5 bps, at least one tick."""
    return max(1, mid // 20_000)


def _leverage_skewed(rng: random.Random, top: int) -> int:
    """1..top, skewed to low values (median ~ top/8)."""
    return 1 + int((top - 1) * rng.random() ** 3)


def _inside_liquidation(stop_loss: Optional[int], ref: int, is_long: bool, leverage: int) -> Optional[int]:
    """``stop_loss`` moved in to at most 90% of the liquidation distance (~ ref / leverage with no
    maintenance ratio) from ``ref``: the core refuses a stop at or beyond the liquidation price."""
    if stop_loss is None:
        return None
    reach = ref * 9 // (10 * leverage)
    return max(stop_loss, ref - reach) if is_long else min(stop_loss, ref + reach)


#: The cross-margin mix (issue 16): the shipped kinds of cross account, commission on one of them.
CROSS_TYPES = (AccountType(name="standard", margin_call_pct=60, stop_out_pct=0),
               AccountType(name="raw_spread", margin_call_pct=30, stop_out_pct=0, commission_ppm=35,
                           swap_long_ppm=500, swap_short_ppm=500))


def account_symbols(account_id: int, cross: bool) -> tuple[str, ...]:
    """The symbols an account trades: any in the standard mix; in the cross mix 80 % of the
    accounts hold one symbol and 20 % (every fifth) two or three."""
    if not cross:
        return SYMBOLS
    if account_id % 5:
        return (SYMBOLS[account_id % 3],)
    return SYMBOLS[:2 + account_id // 5 % 2]


#: the rolling hash format of every engine the benchmark builds (``--hash-format``)
HASH_FORMAT = 2


def make_engine(n_accounts: int, cross: bool = False) -> Engine:
    """A fresh engine with accounts 1..n_accounts funded and a first quote on every symbol
    (cross: typed cross accounts, every other one with commission and swaps)."""
    engine = Engine(CoreConfig(instruments=INSTRUMENTS, account_types=CROSS_TYPES if cross else (),
                               hash_format=HASH_FORMAT))
    submit = engine.submit
    for account_id in range(1, n_accounts + 1):
        if cross:
            submit(OpenAccount(account_id=account_id, account_type=CROSS_TYPES[account_id % 2].name,
                               initial_deposit=DEPOSIT), SETUP_TS)
        else:
            submit(CreateAccount(account_id=account_id, initial_deposit=DEPOSIT), SETUP_TS)
    for symbol in SYMBOLS:
        mid = CENTERS[symbol]
        h = _half_spread(mid)
        submit(Quote(symbol=symbol, bid=mid - h, ask=mid + h), SETUP_TS)
    return engine


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def log(message: str) -> None:
    print(f"[bench core] {message}", file=sys.stderr, flush=True)


class Emitter:
    def __init__(self, quick: bool) -> None:
        self.quick = quick

    def __call__(self, metric: str, value: float, unit: str, better: str,
                 target: Optional[float] = None) -> None:
        line: dict[str, Any] = {"bench": "core", "metric": metric, "value": round(float(value), 3),
                                "unit": unit, "target": target, "better": better, "build": CORE_BUILD,
                                "hash_format": HASH_FORMAT}
        if self.quick:
            line["quick"] = True
        print(json.dumps(line), flush=True)


class _Timed:
    """Collect, then freeze the heap so pre-built inputs are not GC-scanned in the timed loop, and
    use the collector thresholds the engine process runs with (actors.runtime.GC_THRESHOLDS)."""

    def __enter__(self) -> "_Timed":
        gc.collect()
        gc.freeze()
        self._thresholds = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.set_threshold(*self._thresholds)
        gc.unfreeze()


# ------------------------------------------------------------------------------ standard mix

Spec = tuple  # (kind, ...) — see build_commands


def build_command(spec: Spec) -> Any:
    kind = spec[0]
    if kind == QUOTE:
        return Quote(symbol=spec[1], bid=spec[2], ask=spec[3])
    if kind == OPEN:
        return PlaceOrder(account_id=spec[1], symbol=spec[2], side=spec[3], type="market",
                          margin=spec[4], leverage=spec[5], take_profit=spec[6], stop_loss=spec[7])
    if kind == CLOSE:
        return ClosePosition(account_id=spec[1], position_id=spec[2])
    if kind == PENDING:
        return PlaceOrder(account_id=spec[1], symbol=spec[2], side=spec[3], type=spec[4],
                          margin=spec[5], leverage=spec[6], price=spec[7], take_profit=spec[8],
                          stop_loss=spec[9])
    return CancelOrder(account_id=spec[1], order_id=spec[2])


def build_commands(specs: list[Spec]) -> list[Any]:
    return [build_command(spec) for spec in specs]


class _IdPool:
    """A set with O(1) add, remove and uniform random choice (id -> owning account)."""

    __slots__ = ("ids", "where", "owner")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.where: dict[int, int] = {}
        self.owner: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, ident: int, account_id: int) -> None:
        self.where[ident] = len(self.ids)
        self.ids.append(ident)
        self.owner[ident] = account_id

    def remove(self, ident: int) -> None:
        index = self.where.pop(ident, None)
        if index is None:
            return
        last = self.ids.pop()
        if last != ident:
            self.ids[index] = last
            self.where[last] = index
        del self.owner[ident]

    def choice(self, rng: random.Random) -> tuple[int, int]:
        ident = self.ids[rng.randrange(len(self.ids))]
        return ident, self.owner[ident]


def simulate_mix(n_accounts: int, n_inputs: int, seed: int,
                 cross: bool = False) -> tuple[list[Spec], array, Engine, dict]:
    """Run the standard (or cross) mix untimed; return the specs, their kinds, the engine and statistics."""
    rng = random.Random(seed)
    engine = make_engine(n_accounts, cross)
    books = engine.books
    submit = engine.submit
    positions, pending = _IdPool(), _IdPool()
    mids = dict(CENTERS)
    cum = []
    total = 0
    for weight in MIX_WEIGHTS:
        total += weight
        cum.append(total)
    specs: list[Spec] = []
    kinds = array("b")
    stats: dict[str, int] = {}

    def bump(key: str) -> None:
        stats[key] = stats.get(key, 0) + 1

    for i in range(n_inputs):
        roll = rng.randrange(total)
        kind = 0
        while roll >= cum[kind]:
            kind += 1
        if kind == CLOSE and not positions:
            kind = QUOTE
        if kind == CANCEL and not pending:
            kind = QUOTE

        if kind == QUOTE:
            symbol = SYMBOLS[rng.randrange(3)]
            mid, center = mids[symbol], CENTERS[symbol]
            # a few bps per step, gently pulled back to the centre (stationary spread ~1%)
            step_bps = rng.gauss(0.0, 2.0) - 2.0 * (mid - center) / center
            mid = max(10, mid + round(mid * step_bps / 10_000))
            mids[symbol] = mid
            h = _half_spread(mid)
            spec: Spec = (QUOTE, symbol, mid - h, mid + h)
        elif kind == OPEN:
            account_id = 1 + rng.randrange(n_accounts)
            symbol = rng.choice(account_symbols(account_id, cross))
            is_long = rng.random() < 0.5
            leverage = _leverage_skewed(rng, 100)
            margin = rng.randint(1_000, 50_000)
            take_profit = stop_loss = None
            if rng.random() < 1 / 3:
                book = books[symbol]
                ref = book.bid if is_long else book.ask
                tp_away = ref * rng.randint(100, 500) // 10_000 + 1     # 1..5 %
                sl_away = ref * rng.randint(100, 500) // 10_000 + 1
                if is_long:
                    take_profit, stop_loss = ref + tp_away, ref - sl_away
                else:
                    take_profit, stop_loss = ref - tp_away, ref + sl_away
                stop_loss = _inside_liquidation(stop_loss, ref, is_long, leverage)
            spec = (OPEN, account_id, symbol, "buy" if is_long else "sell", margin, leverage,
                    take_profit, stop_loss)
        elif kind == CLOSE:
            position_id, account_id = positions.choice(rng)
            spec = (CLOSE, account_id, position_id)
        elif kind == PENDING:
            account_id = 1 + rng.randrange(n_accounts)
            symbol = rng.choice(account_symbols(account_id, cross))
            is_long = rng.random() < 0.5
            order_type = "limit" if rng.random() < 0.5 else "stop"
            leverage = _leverage_skewed(rng, 100)
            margin = rng.randint(1_000, 50_000)
            book = books[symbol]
            market = book.ask if is_long else book.bid
            away = market * rng.randint(5, 100) // 10_000 + 1           # 0.05..1 %
            below = (order_type == "limit") == is_long   # buy limit / sell stop sit below
            price = market - away if below else market + away
            take_profit = stop_loss = None
            if rng.random() < 1 / 3:
                tp_away = price * rng.randint(100, 500) // 10_000 + 1
                sl_away = price * rng.randint(100, 500) // 10_000 + 1
                if is_long:
                    take_profit, stop_loss = price + tp_away, price - sl_away
                else:
                    take_profit, stop_loss = price - tp_away, price + sl_away
                stop_loss = _inside_liquidation(stop_loss, price, is_long, leverage)
            spec = (PENDING, account_id, symbol, "buy" if is_long else "sell", order_type, margin,
                    leverage, price, take_profit, stop_loss)
        else:
            order_id, account_id = pending.choice(rng)
            spec = (CANCEL, account_id, order_id)

        specs.append(spec)
        kinds.append(kind)
        events = submit(build_command(spec), MIX_T0 + i * MIX_STEP_NS)
        for event in events:
            cls = type(event)
            if cls is PositionOpened:
                positions.add(event.position_id, event.account_id)
            elif cls is PositionClosed:
                if event.remaining_qty == 0:
                    positions.remove(event.position_id)
                bump(f"closed_{event.reason}")
            elif cls is OrderAccepted:
                if event.status == "pending":
                    pending.add(event.order_id, event.account_id)
            elif cls is OrderTriggered:
                pending.remove(event.order_id)
                bump("entries_triggered")
            elif cls is OrderCancelled:
                pending.remove(event.order_id)
            elif cls is OrderRejected or cls is CommandRejected:
                bump(f"rejected_{KIND_NAMES[kind]}_{event.reason}")
    for index, name in enumerate(KIND_NAMES):
        stats[f"n_{name}"] = kinds.count(index)
    stats["open_positions_at_end"] = len(engine.positions)
    stats["pending_orders_at_end"] = len(engine.orders)
    return specs, kinds, engine, stats


def _mix_timestamps(n: int) -> range:
    return range(MIX_T0, MIX_T0 + n * MIX_STEP_NS, MIX_STEP_NS)


def replay_throughput(n_accounts: int, specs: list[Spec], cross: bool = False) -> tuple[int, int, Engine]:
    """Whole-loop wall and CPU time (ns) of replaying ``specs`` on a fresh engine."""
    engine = make_engine(n_accounts, cross)
    commands = build_commands(specs)
    timestamps = _mix_timestamps(len(commands))
    submit = engine.submit
    with _Timed():
        t0, cpu0 = perf_counter_ns(), time.process_time_ns()
        for command, ts in zip(commands, timestamps):
            submit(command, ts)
        elapsed, cpu = perf_counter_ns() - t0, time.process_time_ns() - cpu0
    return elapsed, cpu, engine


def replay_latency(n_accounts: int, specs: list[Spec]) -> tuple[array, Engine]:
    """Per-call ``engine.submit`` time (ns) of every input, on a fresh engine."""
    engine = make_engine(n_accounts)
    commands = build_commands(specs)
    timestamps = _mix_timestamps(len(commands))
    latencies = array("q", bytes(8 * len(commands)))
    submit = engine.submit
    clock = perf_counter_ns
    with _Timed():
        i = 0
        for command, ts in zip(commands, timestamps):
            t0 = clock()
            submit(command, ts)
            latencies[i] = clock() - t0
            i += 1
    return latencies, engine


def replay_profiled(n_accounts: int, specs: list[Spec]) -> tuple[int, Engine, cProfile.Profile]:
    engine = make_engine(n_accounts)
    commands = build_commands(specs)
    timestamps = _mix_timestamps(len(commands))
    submit = engine.submit
    profiler = cProfile.Profile(perf_counter_ns, 1e-9)
    with _Timed():
        t0 = perf_counter_ns()
        profiler.enable()
        for command, ts in zip(commands, timestamps):
            submit(command, ts)
        profiler.disable()
        elapsed = perf_counter_ns() - t0
    return elapsed, engine, profiler


def _percentile(sorted_values: list[int], fraction: float) -> int:
    """Nearest-rank percentile."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def _timer_overhead_ns() -> int:
    clock = perf_counter_ns
    samples = []
    for _ in range(20_001):
        t0 = clock()
        samples.append(clock() - t0)
    samples.sort()
    return samples[len(samples) // 2]


def _simulated_mix(args: argparse.Namespace) -> tuple[list[Spec], array, bytes]:
    n_accounts, n_inputs = args.accounts, args.inputs
    log(f"standard mix ({CORE_BUILD} core): simulating {n_inputs:,} inputs over {n_accounts:,} accounts (untimed)")
    t = time.monotonic()
    specs, kinds, sim_engine, stats = simulate_mix(n_accounts, n_inputs, args.seed)
    log(f"  simulated in {time.monotonic() - t:.1f} s; {json.dumps(stats, sort_keys=True)}")
    return specs, kinds, sim_engine.rolling_hash


def emit_throughput(args: argparse.Namespace, specs: list[Spec], expected_hash: bytes, emit: Emitter,
                    metric: str) -> None:
    """The best whole-loop wall and CPU time over the throughput passes, as ``metric``/``metric_cpu``."""
    n_inputs = args.inputs
    best = best_cpu = None
    for attempt in range(args.throughput_passes):
        log(f"  throughput pass {attempt + 1}/{args.throughput_passes} (whole loop timed)")
        elapsed, cpu, engine = replay_throughput(args.accounts, specs)
        _check_replay(engine, expected_hash, "throughput")
        del engine
        log(f"  {n_inputs:,} inputs in {elapsed / 1e9:.2f} s = {n_inputs / (elapsed / 1e9):,.0f}/s "
            f"({n_inputs / (cpu / 1e9):,.0f}/s of CPU time)")
        best = elapsed if best is None else min(best, elapsed)
        best_cpu = cpu if best_cpu is None else min(best_cpu, cpu)
    assert best is not None and best_cpu is not None
    emit(metric, n_inputs / (best / 1e9), "1/s", "higher", 300000)
    emit(f"{metric}_cpu", n_inputs / (best_cpu / 1e9), "1/s", "higher", 300000)


def bench_mix_pure(args: argparse.Namespace, emit: Emitter) -> None:
    """Throughput of the pure Python core (run with EXNESS_CORE_BUILD=pure), beside the compiled one."""
    specs, _, expected_hash = _simulated_mix(args)
    emit_throughput(args, specs, expected_hash, emit, "inputs_per_s_pure")


def bench_mix(args: argparse.Namespace, emit: Emitter) -> None:
    n_accounts, n_inputs = args.accounts, args.inputs
    specs, kinds, expected_hash = _simulated_mix(args)
    emit_throughput(args, specs, expected_hash, emit, "inputs_per_s")

    log("  latency pass (each submit timed)")
    latencies, engine = replay_latency(n_accounts, specs)
    _check_replay(engine, expected_hash, "latency")
    del engine
    overhead = _timer_overhead_ns()
    total = sum(latencies)
    log(f"  sum of per-call times {total / 1e9:.2f} s = {n_inputs / (total / 1e9):,.0f}/s; "
        f"perf_counter_ns pair overhead ~{overhead} ns (not subtracted)")
    ordered = sorted(latencies)
    emit("p50_us", _percentile(ordered, 0.50) / 1000, "us", "lower")
    emit("p99_us", _percentile(ordered, 0.99) / 1000, "us", "lower")
    log(f"  p99.9 {_percentile(ordered, 0.999) / 1000:.1f} us, max {ordered[-1] / 1000:.1f} us")
    del ordered
    sums = [0] * len(KIND_NAMES)
    counts = [0] * len(KIND_NAMES)
    for kind, latency in zip(kinds, latencies):
        sums[kind] += latency
        counts[kind] += 1
    for index, name in enumerate(KIND_NAMES):
        if counts[index]:
            emit(f"mean_us_{name}", sums[index] / counts[index] / 1000, "us", "lower")


def _check_replay(engine: Engine, expected_hash: bytes, label: str) -> None:
    if engine.rolling_hash != expected_hash:
        log(f"  WARNING: {label} replay diverged from the simulation (rolling hash differs): "
            "the engine is not deterministic or the replay is broken; figures are suspect")


def profile_mix(args: argparse.Namespace) -> None:
    n_accounts, n_inputs = args.accounts, args.inputs
    log(f"profile: simulating {n_inputs:,} inputs over {n_accounts:,} accounts (untimed)")
    specs, _kinds, sim_engine, stats = simulate_mix(n_accounts, n_inputs, args.seed)
    expected_hash = sim_engine.rolling_hash
    del sim_engine
    log(f"  {json.dumps(stats, sort_keys=True)}")
    elapsed, engine, profiler = replay_profiled(n_accounts, specs)
    _check_replay(engine, expected_hash, "profiled")
    log(f"  under cProfile: {n_inputs:,} inputs in {elapsed / 1e9:.2f} s "
        f"= {n_inputs / (elapsed / 1e9):,.0f}/s (profiler overhead included)")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    print(out.getvalue(), file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ positions phase

BUILD_BAND_BPS = 150     # open prices within ±1.5% of the centre
INNER_BAND_BPS = 10      # measured quotes within ±0.1%


def open_positions(engine: Engine, n_positions: int, per_account: int, rng: random.Random,
                   cross: bool = False) -> int:
    """Open ``n_positions`` market positions whose triggers all lie outside the inner band.

    Leverage 1..20 puts liquidation ≥ ~5% from the open; TP/SL 5-15% (a stop-loss at most 90% of
    the way to the liquidation price, ≥ ~4.5%) and trailing distances 5-10% likewise; open prices
    are within ±1.5%, measured quotes within ±0.1%.
    Returns how many opens failed (should be 0).
    """
    submit = engine.submit
    books = engine.books
    ts = SETUP_TS + 1
    failures = 0
    for i in range(n_positions):
        if i % 16 == 0:
            symbol = SYMBOLS[rng.randrange(3)]
            center = CENTERS[symbol]
            mid = center + center * rng.randint(-BUILD_BAND_BPS, BUILD_BAND_BPS) // 10_000
            h = _half_spread(mid)
            submit(Quote(symbol=symbol, bid=mid - h, ask=mid + h), ts)
        symbol = rng.choice(account_symbols(1 + i // per_account, cross))
        is_long = rng.random() < 0.5
        book = books[symbol]
        ref = book.bid if is_long else book.ask
        take_profit = stop_loss = trailing = None
        roll = rng.random()
        if roll < 1 / 3:
            tp_away = ref * rng.randint(500, 1_500) // 10_000
            sl_away = ref * rng.randint(500, 1_500) // 10_000
            if is_long:
                take_profit, stop_loss = ref + tp_away, ref - sl_away
            else:
                take_profit, stop_loss = ref - tp_away, ref + sl_away
        if roll > 0.8:
            trailing = ref * rng.randint(500, 1_000) // 10_000
        margin = rng.randint(1_000, 50_000)
        leverage = _leverage_skewed(rng, 20)
        events = submit(PlaceOrder(
            account_id=1 + i // per_account, symbol=symbol, side="buy" if is_long else "sell",
            type="market", margin=margin, leverage=leverage, take_profit=take_profit,
            stop_loss=_inside_liquidation(stop_loss, ref, is_long, leverage), trailing_stop=trailing), ts)
        if not any(type(event) is PositionOpened for event in events):
            failures += 1
    return failures


def _inner_band(symbol: str) -> tuple[int, int, int]:
    """(lowest raw bid, highest raw bid, half-spread) of the measured quotes."""
    center = CENTERS[symbol]
    h = _half_spread(center)
    return (center - center * INNER_BAND_BPS // 10_000 + 2 * h,
            center + center * INNER_BAND_BPS // 10_000 - 2 * h, h)


def prime_extremes(engine: Engine) -> None:
    """Quote the inner band's top then bottom: every trailing group merges to the extremes, so
    quotes inside the band set no new peak."""
    for symbol in SYMBOLS:
        lo, hi, h = _inner_band(symbol)
        engine.submit(Quote(symbol=symbol, bid=hi, ask=hi + 2 * h))
        engine.submit(Quote(symbol=symbol, bid=lo, ask=lo + 2 * h))


class QuoteWalk:
    """Raw quotes oscillating strictly inside the inner band (reflecting walk per symbol)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.bids = {s: CENTERS[s] - _half_spread(CENTERS[s]) for s in SYMBOLS}

    def take(self, n: int) -> list[tuple[str, int, int]]:
        rng = self.rng
        out = []
        for _ in range(n):
            symbol = SYMBOLS[rng.randrange(3)]
            lo, hi, h = _inner_band(symbol)
            step = max(1, CENTERS[symbol] // 10_000)           # up to ~1 bp per quote
            bid = self.bids[symbol] + rng.randint(-step, step)
            if bid > hi:
                bid = 2 * hi - bid
            if bid < lo:
                bid = 2 * lo - bid
            self.bids[symbol] = bid
            out.append((symbol, bid, bid + 2 * h))
        return out


def time_quotes(engine: Engine, raw: list[tuple[str, int, int]]) -> float:
    """Mean ns per ``engine.submit`` of the given quotes (whole loop timed)."""
    quotes = [Quote(symbol=s, bid=b, ask=a) for s, b, a in raw]
    submit = engine.submit
    with _Timed():
        t0 = perf_counter_ns()
        for quote in quotes:
            submit(quote)
        elapsed = perf_counter_ns() - t0
    return elapsed / len(quotes)


def _trailing_peaks(engine: Engine) -> list[Any]:
    """min_peak of every trailing book (to check the timed quotes set no new peak)."""
    peaks = []
    for symbol in SYMBOLS:
        book = engine.books[symbol]
        for side in ("long_trailing", "short_trailing"):
            peaks.append(getattr(getattr(book, side, None), "min_peak", None))
    return peaks


def build_position_engine(n_positions: int, seed: int, measure: bool,
                          cross: bool = False) -> tuple[Engine, int]:
    per_account = 10
    n_accounts = max(1, -(-n_positions // per_account))
    log(f"positions: building {n_positions:,} positions over {n_accounts:,} {'cross ' if cross else ''}accounts")
    t = time.monotonic()
    engine = make_engine(n_accounts, cross)
    rss0 = rss1 = 0
    if measure:
        gc.collect()
        rss0 = rss_bytes()
    failures = open_positions(engine, n_positions, per_account, random.Random(seed), cross)
    if measure:
        gc.collect()
        rss1 = rss_bytes()
    elapsed = time.monotonic() - t
    log(f"  built in {elapsed:.1f} s ({elapsed / n_positions * 1e6:.1f} us/position incl. accounts); "
        f"open: {len(engine.positions):,}, failed opens: {failures}")
    if len(engine.positions) != n_positions:
        log(f"  WARNING: expected {n_positions:,} open positions, have {len(engine.positions):,}")
    prime_extremes(engine)
    if len(engine.positions) != n_positions:
        log("  WARNING: priming quotes closed positions; the inner band is not clear")
    return engine, rss1 - rss0


def bench_positions(args: argparse.Namespace, emit: Emitter) -> None:
    big_n = args.positions
    big, grown = build_position_engine(big_n, args.seed + 1, measure=True)
    emit("bytes_per_position", grown / big_n, "B", "lower", 1536)
    log(f"  RSS grew {grown / 2**20:,.1f} MiB for {big_n:,} positions")
    small, _ = build_position_engine(1_000, args.seed + 2, measure=False)
    best_small, best_big = _compare_quote_costs(args, small, big)
    emit("quote_ns_1k", best_small, "ns", "lower")
    emit("quote_ns_1m", best_big, "ns", "lower")
    emit("quote_cost_ratio_1m_vs_1k", best_big / best_small, "ratio", "lower", 2.0)
    del big
    gc.collect()
    bench_alerts(args, emit)


#: price alerts placed for the alert quote-cost comparison (200 on each of 100 accounts)
ALERTS = 20_000


def bench_alerts(args: argparse.Namespace, emit: Emitter) -> None:
    """Issue 13: price alerts sit in the trigger indexes, so alerts a quote does not cross cost it
    nothing. Two 1,000-position engines, one also holding 20,000 alerts 1-3 % outside the inner
    band (half above, half below), timed on the same no-cross quotes."""
    plain, _ = build_position_engine(1_000, args.seed + 2, measure=False)
    alerted, _ = build_position_engine(1_000, args.seed + 2, measure=False)
    rng = random.Random(args.seed + 4)
    accounts = sorted(alerted.accounts)
    for index in range(ALERTS):
        symbol = SYMBOLS[index % len(SYMBOLS)]
        center = CENTERS[symbol]
        above = index % 2 == 0
        distance = center * rng.randint(100, 300) // 10_000
        events = alerted.submit(PlaceAlert(account_id=accounts[index % len(accounts)], symbol=symbol,
                                           condition="above" if above else "below",
                                           price=center + distance if above else center - distance))
        assert type(events[-1]).__name__ == "AlertPlaced", events
    log(f"alerts: {len(alerted.alerts):,} alerts placed")
    best_plain, best_alerted = _compare_quote_costs(args, plain, alerted)
    if len(alerted.alerts) != ALERTS:
        log("  WARNING: timed quotes fired alerts (they were meant to cross nothing)")
    emit("alert_quote_cost_ratio_20k_vs_0", best_alerted / best_plain, "ratio", "lower", 1.5)


def bench_cross(args: argparse.Namespace, emit: Emitter) -> None:
    """The cross-margin mix (issue 16): 80 % single-symbol accounts, 20 % holding 2-3 symbols."""
    n_accounts, n_inputs = args.accounts, args.inputs
    log(f"cross mix: simulating {n_inputs:,} inputs over {n_accounts:,} cross accounts (untimed)")
    specs, _kinds, sim_engine, stats = simulate_mix(n_accounts, n_inputs, args.seed, cross=True)
    expected_hash = sim_engine.rolling_hash
    del sim_engine
    log(f"  {json.dumps(stats, sort_keys=True)}")
    best = None
    for attempt in range(args.throughput_passes):
        elapsed, _cpu, engine = replay_throughput(n_accounts, specs, cross=True)
        _check_replay(engine, expected_hash, "cross throughput")
        del engine
        log(f"  pass {attempt + 1}: {n_inputs / (elapsed / 1e9):,.0f} inputs/s")
        best = elapsed if best is None else min(best, elapsed)
    assert best is not None
    emit("cross_inputs_per_s", n_inputs / (best / 1e9), "1/s", "higher")
    del specs
    gc.collect()
    big, _ = build_position_engine(args.positions, args.seed + 1, measure=False, cross=True)
    small, _ = build_position_engine(1_000, args.seed + 2, measure=False, cross=True)
    best_small, best_big = _compare_quote_costs(args, small, big)
    emit("cross_quote_cost_ratio_1m_vs_1k", best_big / best_small, "ratio", "lower", 2.0)


def _compare_quote_costs(args: argparse.Namespace, small: Engine, big: Engine) -> tuple[float, float]:
    """Best mean ns per no-cross quote of each engine, taking turns over the repetitions."""
    small_n, big_n = len(small.positions), len(big.positions)
    walk = QuoteWalk(random.Random(args.seed + 3))
    per_rep = args.quotes
    reps = args.quote_reps
    peaks_before = (_trailing_peaks(small), _trailing_peaks(big))
    open_before = (len(small.positions), len(big.positions))
    log(f"  timing {reps} × {per_rep:,} no-cross quotes on each engine")
    small_ns, big_ns = [], []
    for rep in range(reps):
        raw = walk.take(per_rep)
        small_ns.append(time_quotes(small, raw))
        big_ns.append(time_quotes(big, raw))
        log(f"  rep {rep + 1}: {small_n:,} positions {small_ns[-1]:.0f} ns/quote, "
            f"{big_n:,} positions {big_ns[-1]:.0f} ns/quote")
    if (len(small.positions), len(big.positions)) != open_before:
        log("  WARNING: timed quotes closed positions (they were meant to cross nothing)")
    if (_trailing_peaks(small), _trailing_peaks(big)) != peaks_before:
        log("  WARNING: timed quotes moved trailing peaks (they were meant to set no new extreme)")
    return min(small_ns), min(big_ns)


# ------------------------------------------------------------------------------ main

def parse_args(argv: Optional[Iterable[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small run: 10k accounts, 100k inputs, 1k vs 100k positions")
    parser.add_argument("--profile", action="store_true",
                        help="run only the standard mix under cProfile; top 25 by tottime to stderr")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--phase", choices=("all", "mix", "mix-pure", "positions", "cross"), default="all",
                        help="run only part of the benchmark")
    parser.add_argument("--accounts", type=int, help="override the number of accounts of the mix")
    parser.add_argument("--inputs", type=int, help="override the number of mix inputs")
    parser.add_argument("--positions", type=int, help="override the size of the big position engine")
    parser.add_argument("--quotes", type=int, help="override the timed quotes per repetition")
    parser.add_argument("--quote-reps", type=int, default=7,
                        help="repetitions of the no-cross quote timing (best is reported)")
    parser.add_argument("--throughput-passes", type=int,
                        help="whole-loop passes of the mix; the best is reported (default 2, quick 1)")
    parser.add_argument("--hash-format", type=int, choices=(1, 2), default=2,
                        help="the rolling hash format of the engines (1: the format before issue 14)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    global HASH_FORMAT
    HASH_FORMAT = args.hash_format
    if args.accounts is None:
        args.accounts = 10_000 if args.quick else 100_000
    if args.inputs is None:
        args.inputs = 100_000 if args.quick else 1_000_000
    if args.positions is None:
        args.positions = 100_000 if args.quick else 1_000_000
    if args.quotes is None:
        args.quotes = 20_000 if args.quick else 100_000
    if args.throughput_passes is None:
        args.throughput_passes = 1 if args.quick else 2
    return args


def _run_phase_in_child(phase: str, args: argparse.Namespace) -> int:
    """Run one phase in a fresh interpreter so phases cannot disturb each other's heap
    (after the 1M-position engine is freed the mix runs ~30% slower in the same process)."""
    command = [sys.executable, os.path.abspath(__file__), "--phase", phase, "--seed", str(args.seed),
               "--accounts", str(args.accounts), "--inputs", str(args.inputs),
               "--positions", str(args.positions), "--quotes", str(args.quotes),
               "--quote-reps", str(args.quote_reps),
               "--throughput-passes", str(args.throughput_passes), "--hash-format", str(args.hash_format)]
    if args.quick:
        command.append("--quick")
    sys.stdout.flush()
    env = {**os.environ, "EXNESS_CORE_BUILD": "pure"} if phase == "mix-pure" else None
    return subprocess.run(command, check=False, env=env).returncode


def main(argv: Optional[Iterable[str]] = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    status = 0
    if args.profile:
        profile_mix(args)
    elif args.phase == "all" or (args.phase == "mix-pure" and CORE_BUILD != "pure"):
        for phase in ("positions", "mix", "mix-pure", "cross") if args.phase == "all" else (args.phase,):
            status = status or _run_phase_in_child(phase, args)
    else:
        emit = Emitter(args.quick)
        phase_function: Callable[[argparse.Namespace, Emitter], None] = {
            "positions": bench_positions, "mix": bench_mix, "mix-pure": bench_mix_pure,
            "cross": bench_cross}[args.phase]
        phase_function(args, emit)
    log(f"{args.phase if not args.profile else 'profile'} done in {time.monotonic() - started:.1f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
