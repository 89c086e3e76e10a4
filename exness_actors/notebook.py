"""Journal analysis for notebooks and the ``exness-actors replay`` CLI: iterate, step, export, what-if.

Theory of operation
-------------------
Everything here is a pure function of a data dir's journal and its pinned core config: the journal is
replayed through a fresh :class:`~exness_actors.engine.Engine` (or one restored from a snapshot and
passed in as ``start``), and checkpoints are verified on the way, exactly as recovery does.

* :class:`Journal` — ``Journal.open(data_dir)``; ``inputs()``, ``events()``, ``engine_at(seq)``,
  ``stepper()``, ``closed_positions()``.
* Exports — :func:`export_events` / :func:`export_closed_positions` write CSV or JSON Lines (Parquet
  through an injected writer, see below). **Units:** every amount is the core's integer at its scale —
  money (balances, margin, pnl, credit) in **cents**, prices (price, bid, ask, open_price, TP/SL,
  liquidation_price, trailing distances) in **ticks** (``10**-price_decimals``), quantities in units of
  ``10**-qty_decimals``, timestamps in **ns**. Event rows have the columns ``seq`` (the input's seq),
  ``input_ts`` (the input's ts), ``event`` (the event class name), then the event's own fields (one
  column per field name over every event type; empty in CSV / ``null`` in JSONL where absent). Note that
  ``ts`` and ``type`` are event fields (e.g. ``OrderAccepted.type`` is the order type), hence the names
  ``input_ts`` and ``event``.
* What-if — :func:`load_edits` parses a JSON Lines file of edits (``drop`` / ``insert`` / ``replace``);
  :func:`what_if` replays the original and the edited input streams side by side from empty and
  reports per-account outcome differences and the first point where the event streams diverge.

Parquet: this module belongs to the pure core, which may not import pyarrow (tests/test_purity.py), so
``fmt="parquet"`` needs a ``parquet_writer(rows, columns, path)`` callable from the caller (the CLI
builds one when pyarrow is installed); without one it raises :class:`ExportError` saying so.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import attrs

from exness_actors import codec
from exness_actors.commands import COMMAND_TYPES
from exness_actors.engine import Engine
from exness_actors.errors import InvalidCommand
from exness_actors.events import EVENT_TYPES, PositionClosed
from exness_actors.instruments import CoreConfig
from exness_actors.journal import iter_payloads
from exness_actors.reasons import CloseReason
from exness_actors.replay import Checkpoint, decode_record, replay, verify_checkpoint

__all__ = [
    "Journal", "Stepper", "ExportError", "EditError", "Edit", "AccountOutcome", "WhatIfReport",
    "EVENT_COLUMNS", "CLOSED_POSITION_COLUMNS", "FORMATS",
    "event_rows", "export_events", "export_closed_positions", "write_rows",
    "load_edits", "parse_edit", "command_from_dict", "edited_inputs", "what_if",
]

FORMATS = ("csv", "jsonl", "parquet")
_LIQUIDATION = CloseReason.LIQUIDATION.value
_COMMANDS_BY_NAME: dict[str, type] = {cls.__name__: cls for cls in COMMAND_TYPES.values()}


def _event_columns() -> tuple[str, ...]:
    columns = ["seq", "input_ts", "event"]
    for _tag, cls in sorted(EVENT_TYPES.items()):
        for field in attrs.fields(cls):
            if field.name not in columns:
                columns.append(field.name)
    return tuple(columns)


#: Columns of :func:`export_events` (fixed, so a long journal streams to disk row by row).
EVENT_COLUMNS: tuple[str, ...] = _event_columns()
#: Columns of :func:`export_closed_positions` / :meth:`Journal.closed_positions`.
CLOSED_POSITION_COLUMNS: tuple[str, ...] = (
    "seq", "ts", "position_id", "account_id", "symbol", "side", "reason", "qty", "open_price",
    "close_price", "margin", "pnl", "credit", "remaining_qty")


# ------------------------------------------------------------------------------------------- journal


class Stepper:
    """Walks a journal input by input: ``step()`` applies the next input and returns
    ``(command, events)``, or ``None`` at the end. Checkpoints are verified as they pass
    (:class:`~exness_actors.replay.ReplayDivergence` on a mismatch) unless ``verify=False``.
    Records at or before the starting engine's ``last_seq`` are skipped (a snapshot covered them)."""

    def __init__(self, engine: Engine, payloads: Iterable[bytes], *, verify: bool = True) -> None:
        self.engine = engine
        self._payloads = iter(payloads)
        self._verify = verify
        self._last_input: Any = None
        self.checkpoints_verified = 0

    @property
    def seq(self) -> int:
        """The seq of the last input applied (the engine's ``last_seq``)."""
        return self.engine.last_seq

    def step(self) -> Optional[tuple[Any, list[Any]]]:
        engine = self.engine
        for payload in self._payloads:
            record = decode_record(payload, after_seq=engine.last_seq)
            if record is None:
                continue
            if type(record) is Checkpoint:
                if record.seq < engine.last_seq:
                    continue
                if record.seq > engine.last_seq:
                    raise InvalidCommand(
                        f"checkpoint for seq {record.seq} after seq {engine.last_seq}: inputs are missing")
                if self._verify:
                    verify_checkpoint(engine, record, self._last_input)
                    self.checkpoints_verified += 1
                continue
            if record.seq <= engine.last_seq:
                continue
            events = engine.apply(record)
            self._last_input = record
            return record, events
        return None

    def run_until(self, seq: int) -> Engine:
        """Step up to and including input ``seq`` (or the end of the journal)."""
        while self.engine.last_seq < seq:
            if self.step() is None:
                break
        return self.engine

    def __iter__(self) -> Iterator[tuple[Any, list[Any]]]:
        while True:
            stepped = self.step()
            if stepped is None:
                return
            yield stepped


@attrs.define
class Journal:
    """A data dir's journal and core config. Every method re-reads the journal from disk, so the
    object is cheap and safe to keep in a notebook while the journal grows."""

    config: CoreConfig
    journal_dir: Path

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str], *, config: Optional[CoreConfig] = None) -> "Journal":
        """``data_dir/journal`` with the config pinned in ``data_dir/core-config.msgpack``
        (or ``config`` when given)."""
        data_dir = Path(data_dir)
        journal_dir = data_dir / "journal"
        if not journal_dir.is_dir():
            raise FileNotFoundError(f"{data_dir} has no journal/ directory")
        if config is None:
            pinned = data_dir / "core-config.msgpack"
            if not pinned.exists():
                raise FileNotFoundError(
                    f"{pinned} does not exist: pass config= (the core config the journal was written with)")
            config = CoreConfig.from_wire(codec.unpack(pinned.read_bytes()))
        return cls(config, journal_dir)

    def payloads(self) -> Iterator[bytes]:
        return iter_payloads(self.journal_dir)

    def records(self) -> Iterator[Any]:
        """Decoded records: commands and :class:`~exness_actors.replay.Checkpoint` s, in order."""
        for payload in self.payloads():
            yield decode_record(payload)

    def inputs(self) -> Iterator[Any]:
        """The journalled commands in seq order (checkpoints skipped; nothing is replayed)."""
        for record in self.records():
            if type(record) is not Checkpoint:
                yield record

    def new_engine(self) -> Engine:
        return Engine(self.config)

    def stepper(self, *, start: Optional[Engine] = None, verify: bool = True) -> Stepper:
        """A :class:`Stepper` from empty state, or from ``start`` (e.g. ``Engine.from_state`` of a
        snapshot); ``start`` is advanced in place."""
        return Stepper(start if start is not None else self.new_engine(), self.payloads(), verify=verify)

    def events(self, *, start: Optional[Engine] = None, verify: bool = True) -> Iterator[tuple[int, int, Any]]:
        """``(seq, ts, event)`` for every event, replaying from empty (or ``start``)."""
        for command, events in self.stepper(start=start, verify=verify):
            seq, ts = command.seq, command.ts
            for event in events:
                yield seq, ts, event

    def engine_at(self, seq: Optional[int] = None, *, start: Optional[Engine] = None,
                  verify: bool = True) -> Engine:
        """The engine right after input ``seq`` (``None``: the end of the journal); query it with
        ``account_summary``, ``open_positions``, ``pending_orders``, ``quote``, ``state_hash``."""
        engine = start if start is not None else self.new_engine()
        if seq is not None and seq < engine.last_seq:
            raise ValueError(f"seq {seq} is before the starting engine's seq {engine.last_seq}")
        replay(engine, self.payloads(), until_seq=seq, verify=verify)
        return engine

    def closed_positions(self, *, start: Optional[Engine] = None, verify: bool = True) -> list[dict[str, Any]]:
        """One dict per ``PositionClosed`` (full or partial close), columns :data:`CLOSED_POSITION_COLUMNS`."""
        return list(_closed_rows(self.events(start=start, verify=verify)))


def _closed_row(seq: int, event: PositionClosed) -> dict[str, Any]:
    return {
        "seq": seq, "ts": event.ts, "position_id": event.position_id, "account_id": event.account_id,
        "symbol": event.symbol, "side": event.side, "reason": event.reason, "qty": event.qty,
        "open_price": event.open_price, "close_price": event.price, "margin": event.margin,
        "pnl": event.pnl, "credit": event.credit, "remaining_qty": event.remaining_qty,
    }


def _closed_rows(events: Iterable[tuple[int, int, Any]]) -> Iterator[dict[str, Any]]:
    for seq, _ts, event in events:
        if type(event) is PositionClosed:
            yield _closed_row(seq, event)


# ------------------------------------------------------------------------------------------- exports


class ExportError(Exception):
    """An export cannot be written as asked (unknown format, parquet without a writer)."""


def event_rows(journal: Journal, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """One dict per event: ``seq``, ``input_ts``, ``event`` and the event's fields."""
    for seq, ts, event in journal.events(**kwargs):
        row = {"seq": seq, "input_ts": ts, "event": type(event).__name__}
        row.update(attrs.asdict(event, recurse=False))
        yield row


ParquetWriter = Callable[[list[dict[str, Any]], tuple[str, ...], Path], None]


def write_rows(rows: Iterable[dict[str, Any]], columns: tuple[str, ...], path: str | os.PathLike[str],
               fmt: str, *, parquet_writer: Optional[ParquetWriter] = None) -> int:
    """Write ``rows`` to ``path`` as ``fmt``; return the number of rows written."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}: expected one of {', '.join(FORMATS)}")
    count = 0
    if fmt == "parquet":
        if parquet_writer is None:
            raise ExportError(
                "parquet export needs pyarrow (pip install 'exness-actors[parquet]'), which the pure core "
                "cannot import: pass parquet_writer= (exness-actors replay --export-* builds one), or "
                "export csv/jsonl instead")
        materialized = list(rows)
        parquet_writer(materialized, columns, path)
        return len(materialized)
    with open(path, "w", newline="", encoding="utf-8") as file:
        if fmt == "csv":
            writer = csv.DictWriter(file, fieldnames=columns, restval="", extrasaction="raise")
            writer.writeheader()
            for row in rows:
                writer.writerow({key: "" if value is None else value for key, value in row.items()})
                count += 1
        else:
            for row in rows:
                file.write(json.dumps(row, separators=(",", ":")))
                file.write("\n")
                count += 1
    return count


def export_events(journal: Journal, path: str | os.PathLike[str], fmt: str = "csv", *,
                  parquet_writer: Optional[ParquetWriter] = None, **kwargs: Any) -> int:
    """Every event, one row each (columns :data:`EVENT_COLUMNS`; units in the module docstring)."""
    return write_rows(event_rows(journal, **kwargs), EVENT_COLUMNS, path, fmt, parquet_writer=parquet_writer)


def export_closed_positions(journal: Journal, path: str | os.PathLike[str], fmt: str = "csv", *,
                            parquet_writer: Optional[ParquetWriter] = None, **kwargs: Any) -> int:
    """Every ``PositionClosed`` (columns :data:`CLOSED_POSITION_COLUMNS`)."""
    return write_rows(_closed_rows(journal.events(**kwargs)), CLOSED_POSITION_COLUMNS, path, fmt,
                      parquet_writer=parquet_writer)


# ------------------------------------------------------------------------------------------- what-if


class EditError(ValueError):
    """A what-if edit is malformed or does not fit the journal; the message names the line."""


@attrs.frozen
class Edit:
    op: str                      # "drop" | "insert" | "replace"
    seq: int                     # drop/replace: the input's seq; insert: after_seq (0 = before the first)
    command: Any = None          # insert/replace: the command (its seq is renumbered; ts 0 = inherit)
    line: int = 0                # 1-based line in the edits file (0: built in code)

    def where(self) -> str:
        return f"edit on line {self.line}" if self.line else f"edit {self.op} {self.seq}"


def _int_field(value: Any) -> bool:
    return type(value) is int


def command_from_dict(data: Any) -> Any:
    """A command from ``{"type": "PlaceOrder", "account_id": 1, ...}`` (fields as the command
    class's attrs fields, integers at their scale; PlaceOrder's order ``type`` is given as
    ``order_type``). Raises :class:`ValueError` with the reason."""
    if not isinstance(data, dict):
        raise ValueError(f"a command must be a JSON object, got {type(data).__name__}")
    name = data.get("type")
    cls = _COMMANDS_BY_NAME.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown command type {name!r}: expected one of {', '.join(sorted(_COMMANDS_BY_NAME))}")
    fields = {f.name: f for f in attrs.fields(cls)}
    kwargs = {key: value for key, value in data.items() if key != "type"}
    # "type" names the command, so PlaceOrder's own ``type`` field (market/limit/stop) is "order_type".
    if "type" in fields and "order_type" in kwargs:
        kwargs["type"] = kwargs.pop("order_type")
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
        raise ValueError(f"{name}: unknown field(s) {', '.join(unknown)}; fields are {', '.join(fields)}")
    missing = [f.name for f in fields.values() if f.default is attrs.NOTHING and f.name not in kwargs]
    if missing:
        shown = ["order_type" if m == "type" else m for m in missing]
        raise ValueError(f"{name}: missing required field(s) {', '.join(shown)}")
    for key, value in kwargs.items():
        if isinstance(value, float):
            raise ValueError(f"{name}.{key}: {value!r} is a float; amounts are integers at their scale "
                             "(cents, ticks, quantity units, ns)")
        if isinstance(value, bool) or not (value is None or isinstance(value, (int, str))):
            raise ValueError(f"{name}.{key}: unsupported value {value!r}")
    for key in ("seq", "ts"):
        if key in kwargs and not _int_field(kwargs[key]):
            raise ValueError(f"{name}.{key} must be an integer")
    command = cls(**kwargs)
    # Round-trip through the wire codec: the same shape checks as a journalled command.
    try:
        return codec.from_wire(codec.to_wire(command))
    except InvalidCommand as exc:
        raise ValueError(str(exc)) from None


def parse_edit(data: Any, *, line: int = 0) -> Edit:
    where = f"line {line}" if line else "edit"
    if not isinstance(data, dict):
        raise EditError(f"{where}: an edit must be a JSON object, got {type(data).__name__}")
    op = data.get("op")
    expected = {"drop": {"op", "seq"}, "insert": {"op", "after_seq", "command"},
                "replace": {"op", "seq", "command"}}
    if op not in expected:
        raise EditError(f"{where}: \"op\" must be one of drop, insert, replace; got {op!r}")
    keys = set(data)
    if keys != expected[op]:
        missing, extra = sorted(expected[op] - keys), sorted(keys - expected[op])
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unexpected {', '.join(extra)}"] if extra else [])
        raise EditError(f"{where}: {op} takes {', '.join(sorted(expected[op]))}: {'; '.join(parts)}")
    seq_key = "after_seq" if op == "insert" else "seq"
    seq = data[seq_key]
    if not _int_field(seq) or seq < (0 if op == "insert" else 1):
        raise EditError(f"{where}: {seq_key} must be an integer >= {0 if op == 'insert' else 1}, got {seq!r}")
    command = None
    if op != "drop":
        try:
            command = command_from_dict(data["command"])
        except (ValueError, TypeError) as exc:
            raise EditError(f"{where}: bad command: {exc}") from None
    return Edit(op, seq, command, line)


def load_edits(path: str | os.PathLike[str]) -> list[Edit]:
    """Parse a what-if file: JSON Lines, one edit per line; blank lines and ``#`` comments are skipped.

    ``{"op":"drop","seq":123}``, ``{"op":"insert","after_seq":123,"command":{"type":"PlaceOrder",...}}``,
    ``{"op":"replace","seq":123,"command":{...}}``. Raises :class:`EditError` naming the line.
    """
    edits: list[Edit] = []
    with open(path, encoding="utf-8") as file:
        for number, text in enumerate(file, start=1):
            text = text.strip()
            if not text or text.startswith("#"):
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise EditError(f"{os.fspath(path)}: line {number}: not valid JSON: {exc.msg} "
                                f"(column {exc.colno})") from None
            try:
                edits.append(parse_edit(data, line=number))
            except EditError as exc:
                raise EditError(f"{os.fspath(path)}: {exc}") from None
    return edits


def _check_edits(edits: list[Edit]) -> tuple[dict[int, Edit], dict[int, list[Edit]]]:
    changes: dict[int, Edit] = {}
    inserts: dict[int, list[Edit]] = {}
    for edit in edits:
        if edit.op == "insert":
            inserts.setdefault(edit.seq, []).append(edit)
            continue
        other = changes.get(edit.seq)
        if other is not None:
            raise EditError(f"{edit.where()}: seq {edit.seq} is already changed by the {other.where()}")
        changes[edit.seq] = edit
    return changes, inserts


def edited_inputs(inputs: Iterable[Any], edits: list[Edit]) -> Iterator[Any]:
    """The edited input stream, re-sequenced 1, 2, …; ts is kept (an inserted/replacing command with no
    ``ts`` takes the ts of the input it follows/replaces). Raises :class:`EditError` for an edit naming a
    seq the journal does not have."""
    changes, inserts = _check_edits(edits)
    seq = 0
    last_ts = 0
    seen: set[int] = set()

    def emit(command: Any, ts: int) -> Any:
        nonlocal seq
        seq += 1
        return attrs.evolve(command, seq=seq, ts=command.ts or ts)

    for edit in inserts.get(0, ()):
        yield emit(edit.command, 0)
    for command in inputs:
        original_seq = command.seq
        seen.add(original_seq)
        change = changes.get(original_seq)
        if change is None:
            yield attrs.evolve(command, seq=seq + 1)
            seq += 1
        elif change.op == "replace":
            yield emit(change.command, command.ts)
        last_ts = command.ts
        for edit in inserts.get(original_seq, ()):
            yield emit(edit.command, last_ts)
    missing = sorted((set(changes) | (set(inserts) - {0})) - seen)
    if missing:
        bad = changes.get(missing[0]) or inserts[missing[0]][0]
        raise EditError(f"{bad.where()}: the journal has no input with seq {missing[0]} "
                        f"(it ends at seq {max(seen) if seen else 0})")


@attrs.define
class AccountOutcome:
    balance: int = 0            # free + locked at the end, cents
    realized_pnl: int = 0       # sum of PositionClosed.pnl, cents
    closes: int = 0
    liquidations: int = 0

    def as_tuple(self) -> tuple[int, int, int, int]:
        return self.balance, self.realized_pnl, self.closes, self.liquidations


@attrs.define
class _Run:
    engine: Engine
    outcomes: dict[int, AccountOutcome] = attrs.field(factory=dict)
    inputs: int = 0

    def tally(self, command: Any, events: list[Any]) -> Iterator[tuple[int, Any]]:
        self.inputs += 1
        outcomes = self.outcomes
        for event in events:
            if type(event) is PositionClosed:
                outcome = outcomes.setdefault(event.account_id, AccountOutcome())
                outcome.realized_pnl += event.pnl
                outcome.closes += 1
                if event.reason == _LIQUIDATION:
                    outcome.liquidations += 1
            yield command.seq, event

    def events(self, commands: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        for command in commands:
            yield from self.tally(command, self.engine.apply(command))

    def finish(self) -> None:
        for account_id, account in self.engine.accounts.items():
            self.outcomes.setdefault(account_id, AccountOutcome()).balance = account.free + account.locked


@attrs.define
class WhatIfReport:
    """Outcomes of the original journal and of the edited input stream, per account."""

    original: dict[int, AccountOutcome]
    edited: dict[int, AccountOutcome]
    original_inputs: int
    edited_inputs: int
    #: (original seq, edited seq) of the input whose events first differ; None if identical
    first_divergence: Optional[tuple[Optional[int], Optional[int]]]
    original_house: int
    edited_house: int
    original_state_hash: bytes
    edited_state_hash: bytes

    @property
    def changed_accounts(self) -> list[int]:
        accounts = sorted(set(self.original) | set(self.edited))
        return [a for a in accounts
                if self.original.get(a, AccountOutcome()).as_tuple() != self.edited.get(a, AccountOutcome()).as_tuple()
                or (a in self.original) != (a in self.edited)]

    @property
    def identical(self) -> bool:
        return self.first_divergence is None

    def __str__(self) -> str:
        lines = [f"what-if: original {self.original_inputs} inputs, edited {self.edited_inputs} inputs"]
        if self.first_divergence is None:
            lines.append("event streams identical")
        else:
            original_seq, edited_seq = self.first_divergence
            lines.append(f"event streams diverge at original seq {_opt(original_seq)} / edited seq {_opt(edited_seq)}")
        lines.append(f"house pnl (cents): original {self.original_house}, edited {self.edited_house}, "
                     f"diff {self.edited_house - self.original_house:+d}")
        changed = self.changed_accounts
        if not changed:
            lines.append("no account outcome changed")
        else:
            lines.append(f"{len(changed)} account(s) changed (money in cents: original -> edited (diff)):")
            for account_id in changed:
                before = self.original.get(account_id)
                after = self.edited.get(account_id)
                if before is None or after is None:
                    lines.append(f"  account {account_id}: only in the {'edited' if before is None else 'original'} run")
                    continue
                parts = []
                for name in ("balance", "realized_pnl", "closes", "liquidations"):
                    a, b = getattr(before, name), getattr(after, name)
                    parts.append(f"{name} {a} -> {b} ({b - a:+d})" if a != b else f"{name} {a}")
                lines.append(f"  account {account_id}: " + ", ".join(parts))
        return "\n".join(lines)


def _opt(value: Optional[int]) -> str:
    return "end" if value is None else str(value)


def what_if(journal: Journal, edits: list[Edit], *, verify: bool = True) -> WhatIfReport:
    """Replay the journal and the edited input stream from empty, side by side, and compare."""
    stepper = journal.stepper(verify=verify)
    original = _Run(stepper.engine)
    edited = _Run(journal.new_engine())

    def original_events() -> Iterator[tuple[int, Any]]:
        # The original goes through a verifying stepper (checkpoints checked on the way).
        for command, events in stepper:
            yield from original.tally(command, events)

    # The edited run reads the original commands from a separate pass over the journal, so the two
    # generators never wait on each other.
    edited_stream = edited.events(edited_inputs(journal.inputs(), edits))
    first: Optional[tuple[Optional[int], Optional[int]]] = None
    left, right = original_events(), edited_stream
    while True:
        a = next(left, None)
        b = next(right, None)
        if a is None and b is None:
            break
        if first is None and (a is None or b is None or a[1] != b[1]):
            first = (None if a is None else a[0], None if b is None else b[0])
    original.finish()
    edited.finish()
    return WhatIfReport(
        original=original.outcomes, edited=edited.outcomes,
        original_inputs=original.inputs, edited_inputs=edited.inputs, first_divergence=first,
        original_house=original.engine.house, edited_house=edited.engine.house,
        original_state_hash=original.engine.state_hash(), edited_state_hash=edited.engine.state_hash())
