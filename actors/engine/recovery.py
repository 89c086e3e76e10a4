"""Recovery: newest valid snapshot + journal tail → the engine as it was at the last durable seq.

Layout of a data dir::

    <data_dir>/journal/journal-<first_seq>.seg    journal segments (the source of truth)
    <data_dir>/snapshots/snapshot-<seq>.snap      encrypted snapshots (AES-256-GCM)
    <data_dir>/core-config.msgpack                the core configuration the journal began with
    <data_dir>/snapshot.key                       embedded mode's key file (0600)

A torn tail (the frame being written when the process died) is truncated. Mid-journal
corruption refuses to start with a message naming the file and offset; ``--repair`` truncates
there (setting the damaged bytes aside as ``*.corrupt``; actors/engine/repair.py reconciles the rest). A
``*.corrupt`` file that no ``repair-*.json`` report names means a repair did not finish: a plain
start refuses, ``--repair`` finishes it. A corrupt or wrongly-keyed snapshot
is skipped (logged) and an older one, or the journal from the beginning, is used instead.

The core configuration (instruments, scales) is pinned at the first start: replaying a journal
under other instruments would not reproduce it, so a changed configuration refuses to start
(docs/decisions.md). Account types are the exception (issue 16): replay starts from the pinned
ones, and a changed ``[accounts]`` becomes a journaled ``SetAccountTypes`` input
(:func:`account_types_change`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Optional

import attrs
import msgpack

from exness_actors.engine import Engine
from exness_actors.instruments import SHARD_ID_SPAN, CoreConfig
from exness_actors.commands import RaiseIdFloor, SetAccountTypes
from exness_actors.journal import JournalCut, salvage_payloads, scan_journal, truncate_torn_tail
from exness_actors.replay import Checkpoint, decode_record, replay
from exness_actors.snapshot import list_snapshots, load_newest_valid, read_snapshot, SnapshotError

__all__ = ["recover", "Recovered", "RecoveryError", "LostInput", "journal_dir", "snapshot_dir", "pin_core_config",
           "account_types_change",
           "gc_paused"]

log = logging.getLogger("exness.recovery")


class RecoveryError(Exception):
    """The data dir cannot be recovered as it is; the message says what to do."""


def journal_dir(data_dir: Path) -> Path:
    return data_dir / "journal"


def snapshot_dir(data_dir: Path) -> Path:
    return data_dir / "snapshots"


def _history_part(wire: list) -> list:
    """What a journal's history fixes of a core config: everything but the account types, which
    change through a journaled ``SetAccountTypes`` (issue 16, :func:`account_types_change`)."""
    return [*wire[:3], wire[3] if len(wire) > 3 else 0]


def _snapshot_part(wire: list) -> list:
    """What a snapshot must share with the pinned config: the history part with each instrument
    cut to its scales. An operator's ``UpdateInstrument`` (issue 13) changes an instrument's
    trading settings through the journal, so a snapshot taken after one carries settings that
    differ from the pinned config's, legitimately: the journaled change is the truth."""
    history = _history_part(wire)
    return [[list(instrument[:3]) for instrument in history[0]], *history[1:]]


def pin_core_config(data_dir: Path, config: CoreConfig) -> CoreConfig:
    """Record the core config on first start; refuse a different one later (account types
    aside). Returns the config the journal began with: replay from scratch starts from it."""
    path = data_dir / "core-config.msgpack"
    wire = config.to_wire()
    if path.exists():
        pinned = msgpack.unpackb(path.read_bytes(), raw=False, use_list=True)
        if _history_part(pinned) != _history_part(msgpack.unpackb(msgpack.packb(wire), raw=False, use_list=True)):
            try:
                pinned_base = CoreConfig.from_wire(pinned).id_base
            except Exception:
                pinned_base = config.id_base
            if pinned_base != config.id_base:
                raise RecoveryError(
                    f"{data_dir} holds the journal of engine shard {pinned_base // SHARD_ID_SPAN}, "
                    f"not of shard {config.id_base // SHARD_ID_SPAN}: give each shard its own "
                    f"--data-dir and start it with its own --shard.")
            raise RecoveryError(
                f"the instrument/engine configuration differs from the one {data_dir} was started "
                f"with ({path}); replaying its journal under other instruments would not reproduce "
                f"it. Start with a fresh --data-dir, or restore the original [engine]/[instruments].")
        return CoreConfig.from_wire(pinned)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as handle:
        handle.write(msgpack.packb(wire))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return config


def account_types_change(engine: Engine, config: CoreConfig) -> Optional[SetAccountTypes]:
    """The input that brings the recovered core's account types to the configured ones (None
    when they already match); the supervisor journals it before anything else runs."""
    if (engine.config.account_types, engine.config.rollover_ns) == (config.account_types, config.rollover_ns):
        return None
    return SetAccountTypes(account_types=[t.to_wire() for t in config.account_types], rollover_ns=config.rollover_ns)


@attrs.frozen
class LostInput:
    """An input past a repair's cut whose frame could still be read (evidence, never replayed)."""
    seq: int
    command: str
    account_id: Optional[int]


@attrs.define
class Recovered:
    engine: Engine
    snapshot_seq: int
    replayed: int
    skipped_snapshots: list
    torn_tail: Optional[Any]
    repaired: list
    elapsed_s: float
    cut: Optional[JournalCut] = None
    """Set when ``repair`` cut the journal at mid-journal corruption, or finds the evidence of a
    cut whose repair was interrupted (actors/engine/repair.py reconciles)."""
    lost: list[LostInput] = attrs.Factory(list)
    kept_through_seq: int = 0
    """With a cut: the last input kept (a repair's own RaiseIdFloor after it does not count)."""
    stages_ms: dict[str, float] = attrs.Factory(dict)
    """CPU milliseconds of each stage: ``snapshot_read`` (read, decrypt, decode), ``engine_restore``
    (``Engine.from_state``, then freeing the decoded snapshot), ``journal_scan`` (read and check
    the frames), ``tail_replay`` (decode and apply the inputs after the snapshot, verify
    checkpoints)."""


@contextlib.contextmanager
def gc_paused():
    """Pause the cyclic garbage collector while building a large state.

    Decoding a snapshot and rebuilding the engine create about ten container objects per account
    and position; with the collector on, each young-generation collection promotes them and the
    growing old generation is rescanned again and again (measured: 3× slower at 100k accounts).
    The state has no reference cycles worth collecting, so the collector resumes afterwards and
    the caller may ``gc.freeze()`` the result so it is never scanned again.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def recover(data_dir: Path, config: CoreConfig, key: bytes, *, repair: bool = False,
            persisted_seq: Optional[int] = None,
            on_events: Optional[Callable[[int, int, list], None]] = None) -> Recovered:
    """Rebuild the engine (see :func:`_recover`) with the garbage collector paused."""
    with gc_paused():
        return _recover(data_dir, config, key, repair=repair, persisted_seq=persisted_seq,
                        on_events=on_events)


def _recover(data_dir: Path, config: CoreConfig, key: bytes, *, repair: bool = False,
            persisted_seq: Optional[int] = None,
            on_events: Optional[Callable[[int, int, list], None]] = None) -> Recovered:
    """Rebuild the engine. With ``persisted_seq``, start from a snapshot no newer than it, so
    ``on_events`` sees every event the store has not persisted yet."""
    started = time.perf_counter()
    stages: dict[str, float] = {}
    stage_started = time.process_time()

    def stage_done(name: str) -> None:
        nonlocal stage_started
        now = time.process_time()
        stages[name] = round((now - stage_started) * 1000, 1)
        stage_started = now

    start_config = pin_core_config(data_dir, config)
    pending = unreported_evidence(data_dir)
    if pending and not repair:
        raise RecoveryError(
            f"an interrupted repair: {', '.join(path.name for path in pending)} in {journal_dir(data_dir)} "
            "were set aside by `--repair`, but no repair-<seq>.json report says the repair finished, so "
            "the history and the id counters may not match the cut journal yet. Run `exness-actors run "
            "--repair` again to finish it (the journal is not cut any further).")
    snapshots = snapshot_dir(data_dir)
    snapshot, skipped = load_newest_valid(snapshots, key=key)
    if snapshot is not None and persisted_seq is not None and snapshot.last_seq > persisted_seq:
        snapshot = _newest_at_or_before(snapshots, key, persisted_seq, skipped)
    for path, reason in skipped:
        log.warning("event=snapshot_skipped path=%s reason=%r", path, reason)
    stage_done("snapshot_read")
    if snapshot is not None:
        engine = Engine.from_state(snapshot.state, snapshot.indexes)
        if _snapshot_part(engine.config.to_wire()) != _snapshot_part(config.to_wire()):
            raise RecoveryError(f"snapshot {snapshot.path} was taken under another instrument configuration")
        snapshot_seq = snapshot.last_seq
        snapshot = None       # its decoded state is garbage now: freed here (and counted), not at return
    else:
        engine = Engine(start_config)
        snapshot_seq = 0
    stage_done("engine_restore")
    try:
        scan = scan_journal(journal_dir(data_dir), repair=repair, after_seq=engine.last_seq or None)
    except Exception as exc:
        raise RecoveryError(str(exc)) from None
    if scan.torn_tail is not None:
        log.warning("event=journal_torn_tail path=%s offset=%d dropped_bytes=%d",
                    scan.torn_tail.path, scan.torn_tail.offset, scan.torn_tail.dropped_bytes)
        truncate_torn_tail(scan)
    for line in scan.repaired:
        log.warning("event=journal_repaired detail=%r", line)
    stage_done("journal_scan")
    wanted = on_events
    if on_events is not None and persisted_seq is not None:
        def wanted(seq: int, ts: int, events: list) -> None:
            if seq > persisted_seq:
                on_events(seq, ts, events)
    result = replay(engine, scan.payloads, on_events=wanted, verify_state=False)   # the restart budget
    stage_done("tail_replay")
    elapsed = time.perf_counter() - started
    log.info("event=recovered snapshot_seq=%d replayed=%d last_seq=%d checkpoints=%d elapsed_ms=%.1f "
             "stages_cpu_ms=%s", snapshot_seq, result.inputs, engine.last_seq, result.checkpoints_verified,
             elapsed * 1000, ",".join(f"{name}:{ms}" for name, ms in stages.items()))
    cut = scan.cut if scan.cut is not None or not pending else evidence_cut(pending)
    if cut is None:
        return Recovered(engine, snapshot_seq, result.inputs, skipped, scan.torn_tail, scan.repaired, elapsed,
                         stages_ms=stages)
    kept = kept_through_seq(engine, scan.payloads)
    return Recovered(engine, snapshot_seq, result.inputs, skipped, scan.torn_tail, scan.repaired, elapsed,
                     cut, lost_inputs(cut, kept), kept, stages_ms=stages)


_EVIDENCE = re.compile(r"journal-\d{20}\.seg(?:\.from-(\d+))?\.corrupt(?:\.\d+)?")


def unreported_evidence(data_dir: Path) -> list[Path]:
    """``*.corrupt`` files a repair set aside that no ``repair-*.json`` report names (the repair
    was interrupted before it finished, or predates the reports)."""
    reported: set[str] = set()
    for report in data_dir.glob("repair-*.json"):
        try:
            reported.update(json.loads(report.read_text()).get("evidence", ()))
        except (OSError, ValueError, AttributeError):
            continue
    try:
        names = sorted(os.listdir(journal_dir(data_dir)))
    except FileNotFoundError:
        return []
    return [journal_dir(data_dir) / name for name in names if _EVIDENCE.fullmatch(name) and name not in reported]


def evidence_cut(evidence: list[Path]) -> JournalCut:
    """The cut an interrupted repair made, rebuilt from the files it set aside."""
    salvaged: list[bytes] = []
    for path in evidence:
        salvaged.extend(salvage_payloads(path.read_bytes()))
    match = _EVIDENCE.fullmatch(evidence[0].name)
    return JournalCut(path=evidence[0], offset=int(match.group(1) or 0) if match else 0,
                      reason="set aside by a repair that did not finish", salvaged=salvaged, evidence=evidence)


def kept_through_seq(engine: Engine, payloads: list[bytes]) -> int:
    """The last input before the journal's trailing RaiseIdFloor inputs (an interrupted repair's)."""
    for payload in reversed(payloads):
        record = decode_record(payload)
        if type(record) is not Checkpoint and type(record) is not RaiseIdFloor:
            return record.seq
    return engine.last_seq


def lost_inputs(cut: JournalCut, kept_through_seq: int) -> list[LostInput]:
    """The readable inputs past a cut (seq order, one per seq); undecodable frames are skipped."""
    found: dict[int, LostInput] = {}
    for payload in cut.salvaged:
        try:
            record = decode_record(payload)
        except Exception:
            continue
        if type(record) is Checkpoint or record.seq <= kept_through_seq:
            continue
        found.setdefault(record.seq, LostInput(record.seq, type(record).__name__,
                                               getattr(record, "account_id", None)))
    return [found[seq] for seq in sorted(found)]


def _newest_at_or_before(directory: Path, key: bytes, seq: int, skipped: list):
    for last_seq, path in reversed(list_snapshots(directory)):
        if last_seq > seq:
            continue
        try:
            return read_snapshot(path, key=key)
        except SnapshotError as exc:
            skipped.append((path, exc.reason))
    return None
