"""The ``exness-actors`` command line: run the platform (or one split-mode role), migrate the
store, check a role's health, replay and verify a data dir, backtest a strategy, simulate.

``run`` hands the merged configuration to the composition root (:func:`supervisor.run_system` for
the embedded platform and the engine role, :func:`actors.bus.roles.run_role` for the others); the
other commands work on files and exit with the codes of :mod:`actors.engine.faults`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import trio

from actors import topology
from actors.config import Config, ConfigError, load_config
from actors.engine.faults import EXIT_CANNOT_START, EXIT_CODES, EXIT_INTERRUPTED, FatalIOError
from actors.engine.recovery import journal_dir
from actors.runtime import restoring_stop_signals
from exness_actors.errors import InvalidValue
from supervisor import StartupError, run_system, setup_logging

__all__ = ["main"]

DESCRIPTION = ("A leveraged crypto CFD trading platform: run it, migrate, check health, replay, verify, backtest, "
               "simulate, manage the back office's operators.")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exness-actors", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    for add_command in (_add_run, _add_replay, _add_verify, _add_migrate, _add_backtest, _add_health,
                        _add_simulate, _add_operator):
        add_command(commands)
    return parser


def _add_run(commands: Any) -> None:
    run = commands.add_parser("run", help="run the platform (embedded by default)",
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="exit codes:\n" + "\n".join(f"  {code:>3}  {meaning}"
                                                                  for code, meaning in EXIT_CODES.items()))
    run.add_argument("--config", help="a TOML file merged over the shipped config.toml")
    run.add_argument("--data-dir", help="journal, snapshots, key file and SQLite store")
    run.add_argument("--role", default="all", choices=topology.ROLES,
                     help="all = the embedded platform; the others are split-mode processes over Redis "
                          "(docs/operations.md)")
    run.add_argument("--bus", choices=["memory", "redis"],
                     help="memory (embedded) | redis (split mode; REDIS_URL)")
    run.add_argument("--store", choices=["sqlite", "postgres"], help="sqlite (embedded) | postgres (DATABASE_URL)")
    run.add_argument("--shard", type=int, default=None,
                     help="engine, persister and snapshotter roles: which shard of [bus] shards (default 0)")
    run.add_argument("--feed", help="synthetic | replay:FILE | binance | redis (the engine role: quotes from the feed role)")
    run.add_argument("--http-port", type=int, help="HTTP API port (0 picks a free one)")
    run.add_argument("--ws-port", type=int, help="WebSocket port (0 picks a free one)")
    run.add_argument("--repair", action="store_true",
                     help="truncate a corrupt journal at the first bad frame (the rest is set aside as *.corrupt)")
    run.add_argument("--log-level", default="INFO")


def _add_replay(commands: Any) -> None:
    replay = commands.add_parser("replay", help="replay a data dir's journal and verify its checkpoints")
    replay.add_argument("data_dir")
    replay.add_argument("--config", help="only used when the data dir has no pinned core config")
    replay.add_argument("--until", type=int, metavar="SEQ", help="stop after this seq")
    replay.add_argument("--from-snapshot", action="store_true",
                        help="start from the newest readable snapshot (at or before --until) instead of empty")
    replay.add_argument("--what-if", metavar="FILE",
                        help="JSON Lines of edits (drop/insert/replace inputs); compare outcomes with the original")
    replay.add_argument("--export-events", metavar="PATH", help="write every event (one row each)")
    replay.add_argument("--export-positions", metavar="PATH", help="write the closed positions")
    replay.add_argument("--format", choices=["csv", "jsonl", "parquet"],
                        help="export format (default: from the file suffix, else csv; parquet needs pyarrow)")


def _add_verify(commands: Any) -> None:
    verify = commands.add_parser("verify", help="check every frame of a data dir's journal; keep verified copies")
    verify.add_argument("data_dir")
    verify.add_argument("--archive", metavar="DIR",
                        help="copy every verified segment here (a segment already there at its size is skipped)")


def _add_migrate(commands: Any) -> None:
    migrate = commands.add_parser("migrate", help="apply the store's schema migrations")
    migrate.add_argument("--config")
    migrate.add_argument("--data-dir", help="the SQLite store's directory")
    migrate.add_argument("--store", choices=["sqlite", "postgres"],
                         help="sqlite (the data dir's file) | postgres (DATABASE_URL; [store] schema)")


def _add_operator(commands: Any) -> None:
    operator = commands.add_parser(
        "operator", help="create, list, disable, enable operators (the back office's users)",
        description="Operators sign in to the back office (/admin, /api/v1/admin). The password of a new "
                    "operator comes from EXNESS_OPERATOR_PASSWORD or a prompt, never from an argument.")
    actions = operator.add_subparsers(dest="action", required=True)
    for name, text in (("create", "create an operator"), ("list", "list the operators"),
                       ("disable", "stop an operator signing in (revokes their sessions)"),
                       ("enable", "let a disabled operator sign in again"), ("set-role", "change a role")):
        action = actions.add_parser(name, help=text)
        if name != "list":
            action.add_argument("email")
        if name in ("create", "set-role"):
            action.add_argument("--role", required=True, choices=["viewer", "risk", "admin"],
                                help="viewer: reads; risk: also halts/resumes symbols and force-closes "
                                     "positions; admin: also changes instruments and adjusts balances")
        action.add_argument("--config")
        action.add_argument("--data-dir", help="the SQLite store's directory")
        action.add_argument("--store", choices=["sqlite", "postgres"],
                            help="sqlite (the data dir's file) | postgres (DATABASE_URL; [store] schema)")


def _add_backtest(commands: Any) -> None:
    backtest = commands.add_parser("backtest", help="run a strategy over recorded or CSV ticks on the real core")
    backtest.add_argument("--ticks", required=True, help="recorded Binance JSONL or CSV (timestamp,[symbol,]bid,ask)")
    backtest.add_argument("--strategy", required=True, metavar="MODULE:NAME",
                          help="MODULE:NAME imports MODULE from the current directory first, then from the "
                               "installed packages (e.g. exness_actors.strategies.examples:MovingAverageCross); "
                               "FILE.py:NAME loads a Python file by its path")
    backtest.add_argument("--symbol", default="BTCUSDT", help="symbol of a CSV without a symbol column")
    backtest.add_argument("--deposit", default="5000.00", help="starting balance, USD")
    backtest.add_argument("--out", default="backtest-out", help="trades.csv, equity.csv/.svg(.png), summary.json")
    backtest.add_argument("--data-dir", help="also write a journal here, so `exness-actors replay DIR` reproduces the run")
    backtest.add_argument("--config", help="instruments: a TOML merged over config.toml")
    backtest.add_argument("--account-type", help="trade an account of this [accounts] type (cross margin, commission, "
                                                 "swaps), e.g. standard | raw_spread; default: an untyped isolated one")


def _add_health(commands: Any) -> None:
    health = commands.add_parser("health", help="exit 0 when this host's ROLE process reports ready (split mode)")
    health.add_argument("--role", required=True, choices=topology.ROLES[1:])
    health.add_argument("--instance", help="the instance name (default: EXNESS_INSTANCE or the host name)")
    health.add_argument("--config")


def _add_simulate(commands: Any) -> None:
    simulate = commands.add_parser(
        "simulate", help="deterministic whole-system simulation: seeded traders, faults, invariants, replay")
    simulate.add_argument("--traders", type=int, default=5, help="simulated traders (default 5)")
    simulate.add_argument("--seconds", type=float, default=30.0, help="simulated seconds (default 30)")
    simulate.add_argument("--seed", type=int, default=1, help="the same seed gives the same report (default 1)")
    simulate.add_argument("--data-dir", help="journal, snapshots and store of the run: a new or empty "
                                             "directory (default: a new temporary one)")
    simulate.add_argument("--crash-every", type=float, metavar="SECONDS",
                          help="crash abruptly about every SECONDS simulated seconds, recover and check")
    simulate.add_argument("--feed-gaps", action="store_true",
                          help="pause the feed now and then and make its price jumps larger")
    simulate.add_argument("--slow-consumers", action="store_true",
                          help="add an event subscriber that never reads and one that reads slowly")
    simulate.add_argument("--fsync", choices=["batch", "off"], default="batch",
                          help="journal fsync policy (off: faster; a crash then keeps the page cache)")
    simulate.add_argument("--config", help="instruments: a TOML merged over config.toml (the environment is ignored)")
    simulate.add_argument("--report", metavar="FILE", help="also write the report as JSON")
    simulate.add_argument("--no-timings", action="store_true",
                          help="leave out the wall-clock section: same seed, byte-identical output")
    simulate.add_argument("--log-level", default="ERROR",
                          help="stderr logging (ERROR by default: the report says what happened)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        out.setdefault("data", {})["dir"] = args.data_dir
    if getattr(args, "bus", None):
        out.setdefault("bus", {})["kind"] = args.bus
    if getattr(args, "store", None):
        out.setdefault("store", {})["kind"] = args.store
    if getattr(args, "feed", None):
        out.setdefault("feed", {})["source"] = args.feed
    if getattr(args, "http_port", None) is not None:
        out.setdefault("http", {})["port"] = args.http_port
    if getattr(args, "ws_port", None) is not None:
        out.setdefault("ws", {})["port"] = args.ws_port
    if getattr(args, "shard", None) is not None:
        out.setdefault("bus", {})["shard"] = args.shard
    return out


def _progress_bar(description: str, unit: str, total: Optional[float] = None) -> Any:
    """A progress bar on stderr for work that may take more than a second, or None.

    Only when stderr is a terminal and not under CI, so logs, pipes and test output never carry
    one; tqdm's ``delay`` keeps it hidden for work that ends within a second.
    """
    if os.environ.get("CI") or not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    tqdm.monitor_interval = 0   # no monitor thread: nothing runs beside a deterministic simulation
    return tqdm(total=total, desc=description, unit=f" {unit}", delay=1.0, file=sys.stderr, leave=False,
                dynamic_ncols=True, unit_scale=total is None)


def _advance(bar: Any) -> Optional[Callable[[float], None]]:
    """A ``progress(position)`` callback that moves ``bar`` to an absolute position."""
    if bar is None:
        return None

    def progress(position: float) -> None:
        whole = int(position)   # simulated seconds, seqs, quotes: whole units read best
        if whole > bar.n:
            bar.update(whole - bar.n)
    return progress


def _cmd_simulate(args: argparse.Namespace, *, reexec: bool) -> int:
    """Run the deterministic whole-system simulation (actors.simulation.simulate); exit 1 on any violation."""
    import shutil
    import tempfile

    from actors.simulation.simulate import SimulationError, SimulationOptions, format_report, report_json, run_simulation
    from actors.simulation.runtime import REEXEC_ENV

    if reexec and any(os.environ.get(name) != value for name, value in REEXEC_ENV.items()):
        # Same seed, same report: iterating sets of strings depends on PYTHONHASHSEED, so the
        # command line always runs with it fixed.
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, "-m", "actors.cli", *sys.argv[1:]], {**os.environ, **REEXEC_ENV})
    setup_logging(args.log_level)
    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="exness-simulate-"))
    options = SimulationOptions(data_dir=data_dir, seed=args.seed, traders=args.traders, seconds=args.seconds,
                                crash_every=args.crash_every, feed_gaps=args.feed_gaps,
                                slow_consumers=args.slow_consumers, fsync=args.fsync, config_file=args.config)
    bar = _progress_bar("simulating", "simulated s", total=args.seconds)
    try:
        report = run_simulation(options, progress=_advance(bar))
    except SimulationError as exc:
        if not args.data_dir:   # the temporary dir made above holds nothing worth keeping
            shutil.rmtree(data_dir, ignore_errors=True)
        print(f"exness-actors simulate: {exc}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    timings = not args.no_timings
    sys.stdout.write(format_report(report, timings=timings))
    if args.report:
        Path(args.report).write_text(report_json(report, timings=timings))
    print(f"exness-actors simulate: data dir {data_dir} (verify it: exness-actors replay {data_dir})",
          file=sys.stderr)
    return 0 if report["verdict"] == "clean" else 1


def _cmd_replay(args: argparse.Namespace) -> int:
    """Replay a data dir's journal, verify its checkpoints, print a summary (exit 1 on divergence)."""
    import collections

    from exness_actors.events import OrderAccepted, OrderRejected, PositionClosed
    from exness_actors.journal import JournalCorruption, JournalError, iter_payloads
    from exness_actors.money import format_fixed
    from exness_actors.replay import ReplayDivergence, replay

    data_dir = Path(args.data_dir)
    if not (data_dir / "journal").is_dir():
        print(f"exness-actors replay: {data_dir} has no journal/ directory", file=sys.stderr)
        return 2
    if _parquet_writer() is None and "parquet" in _export_formats(args).values():
        print("exness-actors replay: parquet export needs pyarrow: pip install 'exness-actors[parquet]' "
              "(or export csv/jsonl with --format or a .csv/.jsonl suffix)", file=sys.stderr)
        return 2
    config = _replay_core_config(args, data_dir)
    engine = _replay_start(args, data_dir, config)
    counts: collections.Counter = collections.Counter()

    def tally(_seq: int, _ts: int, events: list) -> None:
        for event in events:
            kind = type(event)
            if kind is OrderAccepted:
                counts["orders accepted"] += 1
            elif kind is OrderRejected:
                counts[f"orders rejected {event.reason}"] += 1
            elif kind is PositionClosed:
                counts[f"closes {event.reason}"] += 1

    started = time.perf_counter()
    bar = _progress_bar("replaying", "inputs")
    try:
        result = replay(engine, iter_payloads(journal_dir(data_dir), after_seq=engine.last_seq or None),
                        until_seq=args.until, on_events=tally, progress=_advance(bar))
    except ReplayDivergence as exc:
        print(f"exness-actors replay: {exc}", file=sys.stderr)
        return 1
    except JournalCorruption as exc:
        print(f"exness-actors replay: {exc.where}. {_damage_advice(data_dir, exc.path)}", file=sys.stderr)
        return 2
    except JournalError as exc:
        print(f"exness-actors replay: {exc}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - started
    rate = result.inputs / elapsed if elapsed else 0.0
    print(f"replayed {result.inputs} inputs to seq {engine.last_seq} in {elapsed:.2f} s ({rate:.0f} inputs/s); "
          f"{result.checkpoints_verified} checkpoints verified; state hash {engine.state_hash().hex()}")
    print(_state_verdict(result.last_state_verified, engine.last_seq))
    print(f"accounts {len(engine.accounts)}, open positions {len(engine.positions)}, pending orders "
          f"{len(engine.orders)}, house pnl {format_fixed(engine.house, 2)} USD")
    if engine.config.account_types or not args.from_snapshot:
        # issue 16; a legacy state (no account types) does not carry the sources across a snapshot
        print("house pnl by source: " + ", ".join(
            f"{name.replace('_', ' ')} {format_fixed(amount, 2)}" for name, amount in engine.house_book().items()
            if name != "total") + " USD")
    for name, count in sorted(counts.items()):
        print(f"  {name}: {count}")
    return _replay_tools(args, data_dir, config)


def _replay_core_config(args: argparse.Namespace, data_dir: Path) -> Any:
    """The core config the data dir pinned, else the configured one."""
    import msgpack
    from exness_actors.instruments import CoreConfig
    pinned = data_dir / "core-config.msgpack"
    if pinned.exists():
        return CoreConfig.from_wire(msgpack.unpackb(pinned.read_bytes(), raw=False, use_list=True))
    return load_config(args.config).core


def _replay_start(args: argparse.Namespace, data_dir: Path, config: Any) -> Any:
    """An empty engine, or with ``--from-snapshot`` the newest readable snapshot at or before
    ``--until``."""
    from actors.engine.recovery import snapshot_dir
    from exness_actors.engine import Engine
    from exness_actors.snapshot import SnapshotError, list_snapshots, read_snapshot
    if not args.from_snapshot:
        return Engine(config)
    key_text = os.environ.get("EXNESS_SNAPSHOT__KEY") or (
        (data_dir / "snapshot.key").read_text() if (data_dir / "snapshot.key").exists() else "")
    try:
        key = bytes.fromhex(key_text.strip())
    except ValueError:
        key = b""
    for seq, path in reversed(list_snapshots(snapshot_dir(data_dir))):
        if args.until is not None and seq > args.until:
            continue
        try:
            snapshot = read_snapshot(path, key=key)
            engine = Engine.from_state(snapshot.state, snapshot.indexes)
            print(f"starting from snapshot {path.name} (seq {seq})")
            return engine
        except (SnapshotError, ValueError) as exc:
            print(f"skipping snapshot {path.name}: {exc}", file=sys.stderr)
    return Engine(config)


def _cmd_verify(args: argparse.Namespace) -> int:
    """Check every frame of every segment (exit 1 on damage); copy verified segments with --archive."""
    from actors.engine.recovery import journal_dir
    from actors.engine.scrubber import scrub

    data_dir = Path(args.data_dir)
    if not journal_dir(data_dir).is_dir():
        print(f"exness-actors verify: {data_dir} has no journal/ directory", file=sys.stderr)
        return 2
    report = scrub(journal_dir(data_dir), include_last=True,
                   archive_dir=Path(args.archive) if args.archive else None)
    damaged = report.damaged
    for check in report.checked:
        torn_tail = not check.ok and check not in damaged
        print(check.describe() + (" (a torn tail: harmless, the next start truncates it)" if torn_tail else ""))
    for path in report.archived:
        print(f"archived {path}")
    for check in damaged:
        print(f"exness-actors verify: {check.describe()}. {_damage_advice(data_dir, check.path)}", file=sys.stderr)
    if damaged:
        return 1
    print(f"{len(report.checked)} segments verified, no damage")
    return 0


def _damage_advice(data_dir: Path, segment: Path) -> str:
    """What to do about a damaged segment: depends on whether a snapshot already covers it."""
    from actors.engine.recovery import snapshot_dir
    from exness_actors.journal import list_segments, segment_first_seq
    from exness_actors.snapshot import list_snapshots

    restore = ("Restore the segment from a verified copy (`exness-actors verify --archive`, "
               "`[journal] archive_dir`) and check it with `exness-actors verify`")
    later = [path for path in list_segments(journal_dir(data_dir)) if path.name > segment.name]
    snapshots = list_snapshots(snapshot_dir(data_dir))
    newest = snapshots[-1][0] if snapshots else 0
    if later and segment_first_seq(later[0]) - 1 <= newest:
        return (f"The newest snapshot (seq {newest}) covers this segment: `run` starts without reading it "
                f"and `run --repair` would not change it. {restore} so the journal replays from the start "
                "again; meanwhile `replay --from-snapshot` starts after it.")
    return (f"`run` refuses to start on it. {restore}; without a copy, `run --repair` truncates the journal "
            "there, losing every later input (it writes what was lost to repair-<seq>.json).")


def _state_verdict(verified_seq: Optional[int], last_seq: int) -> str:
    """Whether a clean shutdown's state hash vouches for the replayed end state."""
    if verified_seq == last_seq:
        return f"final state hash verified at seq {last_seq} (the clean shutdown's checkpoint)"
    if verified_seq is None:
        return "no state hash checkpoint in the journal (no clean shutdown recorded); the rolling hash only"
    return (f"state hash last verified at seq {verified_seq}; the {last_seq - verified_seq} inputs after it "
            "are checked by the rolling hash only (no clean shutdown since)")


def _parquet_writer() -> Optional[Callable[..., None]]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        return None

    def write(rows: list[dict], columns: tuple[str, ...], path: str) -> None:
        table = pyarrow.Table.from_pylist([{column: row.get(column) for column in columns} for row in rows])
        pyarrow.parquet.write_table(table, path)
    return write


def _export_formats(args: argparse.Namespace) -> dict[str, str]:
    """Each export path asked for, with its format (--format, else from the suffix, else csv)."""
    paths = [path for path in (args.export_events, args.export_positions) if path]
    return {path: args.format or {".jsonl": "jsonl", ".parquet": "parquet"}.get(Path(path).suffix, "csv")
            for path in paths}


def _replay_tools(args: argparse.Namespace, data_dir: Path, config: Any) -> int:
    """--export-events, --export-positions and --what-if (exness_actors.notebook)."""
    from exness_actors import notebook
    from exness_actors.replay import ReplayDivergence

    journal = notebook.Journal.open(data_dir, config=config)
    formats = _export_formats(args)
    for path, export in ((args.export_events, notebook.export_events),
                         (args.export_positions, notebook.export_closed_positions)):
        if not path:
            continue
        fmt = formats[path]
        try:
            rows = export(journal, path, fmt, parquet_writer=_parquet_writer())
        except notebook.ExportError as exc:
            print(f"exness-actors replay: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {rows} rows to {path} ({fmt})")
    if args.what_if:
        try:
            report = notebook.what_if(journal, notebook.load_edits(args.what_if))
        except notebook.EditError as exc:
            print(f"exness-actors replay --what-if: {exc}", file=sys.stderr)
            return 2
        except ReplayDivergence as exc:
            print(f"exness-actors replay: {exc}", file=sys.stderr)
            return 1
        print(report)
    return 0


def _plot_png(result: Any, path: Path) -> None:
    """``equity.png`` beside ``equity.svg`` when matplotlib is installed (the ``plot`` extra):
    equity in USD with the trades' closes marked, drawdown below, UTC time."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    import datetime

    from exness_actors.equity_chart import drawdown_ppm, equity_at, summary_line

    def when(ts: int) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(ts // 1_000_000_000, tz=datetime.timezone.utc)

    points = result.equity      # exact integers up to here; floats only to draw
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(11, 6), height_ratios=(3, 1))
    top.plot([when(ts) for ts, _ in points], [cents / 100 for _, cents in points], linewidth=1)
    for label, colour, trades in (("close with a gain", "tab:green", [t for t in result.trades if t.pnl > 0]),
                                  ("close without a gain", "tab:red", [t for t in result.trades if t.pnl <= 0])):
        top.scatter([when(t.closed_ts) for t in trades], [equity_at(points, t.closed_ts) / 100 for t in trades],
                    s=14, color=colour, label=label, zorder=3)
    drawdown = drawdown_ppm(points)
    bottom.fill_between([when(ts) for ts, _ in drawdown], [-ppm / 10_000 for _, ppm in drawdown], 0,
                        color="tab:red", alpha=0.3)
    top.set_ylabel("equity (USD)")
    top.legend(loc="best", fontsize="small")
    top.set_title(summary_line(result.summary), fontsize="small")
    bottom.set_ylabel("drawdown (%)")
    bottom.set_xlabel("time (UTC)")
    for axes in (top, bottom):
        axes.grid(alpha=0.3)
    figure.suptitle("Backtest equity")
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _load_strategy(spec: str) -> Any:
    """``MODULE:NAME`` (the working directory first, then the installed packages) or ``FILE.py:NAME``.

    Raises LookupError saying what was not found."""
    source, colon, name = spec.rpartition(":")
    if not (colon and source and name):
        raise LookupError("give MODULE:NAME or FILE.py:NAME, "
                          "e.g. exness_actors.strategies.examples:MovingAverageCross")
    if source.endswith(".py"):
        module = _import_file(Path(source))
    else:
        with _first_on_path(Path.cwd()):
            module = _import_module(source, where=f"the current directory ({Path.cwd()}) or the installed packages")
    try:
        return getattr(module, name)
    except AttributeError:
        raise LookupError(f"{source} has no attribute {name!r}") from None


@contextlib.contextmanager
def _first_on_path(directory: Path) -> Iterator[None]:
    """Search ``directory`` first for imports inside the block (as ``python -m`` searches its cwd)."""
    entry = str(directory.resolve())
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        sys.path.remove(entry)


def _import_module(name: str, *, where: str) -> Any:
    import importlib
    importlib.invalidate_caches()   # a module written since the last import is seen
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise LookupError(f"no module named {exc.name!r} in {where}") from None
    except Exception as exc:   # the strategy's own code failed while importing
        raise LookupError(f"importing {name} failed: {type(exc).__name__}: {exc}") from None


def _import_file(path: Path) -> Any:
    """Load a strategy file as a module (its directory is searched first while it imports)."""
    import importlib.util
    if not path.is_file():
        raise LookupError(f"{path}: no such file")
    module_name = "exness_strategy_" + "".join(c if c.isalnum() else "_" for c in path.stem)
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        with _first_on_path(path.parent):
            spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise LookupError(f"importing {path} failed: {type(exc).__name__}: {exc}") from None
    return module


def _cmd_backtest(args: argparse.Namespace) -> int:
    from exness_actors.backtest import LoadStats, load_ticks, run_backtest, summary_json, write_outputs
    from exness_actors.money import parse_fixed

    try:
        config = load_config(args.config).core
        deposit = parse_fixed(args.deposit, 2, field="--deposit")
    except (ConfigError, InvalidValue) as exc:
        print(f"exness-actors backtest: {exc}", file=sys.stderr)
        return 2
    try:
        strategy = _load_strategy(args.strategy)
    except LookupError as exc:
        print(f"exness-actors backtest: cannot load strategy {args.strategy!r}: {exc}", file=sys.stderr)
        return 2
    if not Path(args.ticks).exists():
        print(f"exness-actors backtest: --ticks {args.ticks}: no such file", file=sys.stderr)
        return 2
    journal_dir = None
    if args.data_dir:
        journal_dir = Path(args.data_dir) / "journal"
    stats = LoadStats()
    started = time.perf_counter()
    bar = _progress_bar("backtesting", "quotes")
    try:
        result = run_backtest(load_ticks(args.ticks, config, symbol=args.symbol, stats=stats), strategy,
                              config=config, deposit_cents=deposit, load_stats=stats, journal_dir=journal_dir,
                              progress=_advance(bar), account_type=args.account_type)
    except ValueError as exc:
        print(f"exness-actors backtest: {exc}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - started
    write_outputs(result, Path(args.out), config, plot=_plot_png)
    sys.stdout.write(summary_json(result.summary))
    print(f"backtest: {result.summary.get('inputs')} inputs in {elapsed:.2f} s; outputs in {args.out}"
          + (f"; journal in {args.data_dir} (exness-actors replay {args.data_dir})" if args.data_dir else ""))
    return 0


def _cmd_migrate(cfg: Config) -> int:
    """Apply the configured store's pending migrations; say which ran (exit 1 on failure)."""
    kind = cfg.settings.store.kind
    if kind == "postgres":
        from actors.store.postgres import describe_url, migrate_postgres
        url = cfg.settings.store.database_url
        if not url:
            print("exness-actors migrate: --store postgres needs DATABASE_URL "
                  "(or [store] database_url), e.g. postgresql://user@host:5432/dbname", file=sys.stderr)
            return 1
        schema = cfg.settings.store.schema or None
        where = describe_url(url) + (f" schema {schema}" if schema else "")
        try:
            store = trio.run(functools.partial(migrate_postgres, url, schema=schema))
        except Exception as exc:   # connection refused, auth, a failing or changed migration
            print(f"exness-actors migrate: the postgres store at {where} was not migrated: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        applied = store.migrations_applied
        candles = ("candles_1m is a TimescaleDB hypertable" if store.timescaledb else
                   "candles_1m is a plain indexed table (TimescaleDB is not available on this server)")
    elif kind == "sqlite":
        from actors.store.base import open_store

        async def _migrate_sqlite() -> list[str]:
            store = await open_store(cfg)       # SQLite migrates when it opens
            await store.close()
            return store.migrations_applied
        where = str(cfg.data_dir)
        try:
            applied = trio.run(_migrate_sqlite)
        except Exception as exc:
            print(f"exness-actors migrate: the sqlite store in {where} was not migrated: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        candles = ""
    else:
        print(f"exness-actors migrate: [store] kind must be 'sqlite' or 'postgres', not {kind!r}",
              file=sys.stderr)
        return 2
    if applied:
        print(f"exness-actors migrate: applied {len(applied)} migration(s) to the {kind} store at "
              f"{where}: {', '.join(applied)}; it is up to date")
    else:
        print(f"exness-actors migrate: no pending migrations; the {kind} store at {where} is up to date")
    if candles:
        print(f"exness-actors migrate: {candles}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "replay":
        return _cmd_replay(args)
    if args.command == "verify":
        return _cmd_verify(args)
    if args.command == "backtest":
        return _cmd_backtest(args)
    if args.command == "simulate":
        return _cmd_simulate(args, reexec=argv is None)
    setup_logging(getattr(args, "log_level", "INFO"))
    try:
        cfg = load_config(args.config, overrides=_overrides(args))
    except ConfigError as exc:
        print(f"exness-actors: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        return _cmd_migrate(cfg)
    if args.command == "operator":
        from actors.operators import run_command
        return run_command(cfg, args)
    if args.command == "health":
        from actors.bus.streams import check_health
        url = cfg.settings.bus.redis_url
        if not url:
            print("exness-actors health: set REDIS_URL (split mode keeps heartbeats in Redis)", file=sys.stderr)
            return 1
        ok, message = check_health(str(url), args.role, args.instance)
        print(message, file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    role = args.role
    bus = cfg.settings.bus.kind
    if role != "all" and bus != "redis":
        print(f"exness-actors: --role {role} is a split-mode process: it needs --bus redis "
              "(or [bus] kind = \"redis\") and REDIS_URL", file=sys.stderr)
        return 2
    if role == "all" and bus == "redis":
        print("exness-actors: --role all is the embedded platform (--bus memory); in split mode run "
              "each role as its own process (docs/operations.md)", file=sys.stderr)
        return 2
    try:
        with restoring_stop_signals():
            if role in ("all", "engine"):
                trio.run(functools.partial(run_system, cfg, repair=args.repair, announce=True, role=role,
                                           shard=cfg.settings.bus.shard))
            else:
                from actors.bus import roles
                trio.run(functools.partial(roles.run_role, cfg, role))
    except ConfigError as exc:
        print(f"exness-actors: configuration error: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"exness-actors: cannot start: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    except FatalIOError as exc:
        print(f"exness-actors: stopped: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
