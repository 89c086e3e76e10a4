"""``exness-actors run --repair``: after the journal is cut at mid-journal damage, make the rest agree.

Theory of operation
-------------------
Recovery with ``repair=True`` truncates the journal at the first bad frame
(:class:`exness_actors.journal.JournalCut`). The engine rebuilt from what is left has forgotten
every input after the cut, but the world has not:

* the **history store** holds rows the cut-off inputs wrote (orders, positions, closes, ledger),
  and order rows created before the cut but changed after it. :meth:`Store.cut_history` removes
  the shard's rows past the cut and lowers its watermark to just before the oldest such order;
  recovery then runs again from that watermark, and the persister re-applies the events, which
  rebuilds those orders exactly as they were at the cut.
* **ids** the cut-off inputs issued were seen by clients and by the store. The engine's counters
  would hand them out again (a new fill merging into another account's old row), so one
  :class:`~exness_actors.commands.RaiseIdFloor` input is journaled right after the cut. Its
  floor is above every id that could have been issued: the store's largest ids, and the
  counters plus one id per lost input (an input opens at most one order; a quote may also fill
  every order pending at the cut), the lost inputs being every seq up to the highest one known
  (salvaged frames past the damage, the store's watermark).
* the **operator** gets a report, logged and written to ``repair-<seq>.json`` in the data dir:
  the damage, the seqs kept and lost, the lost inputs that could still be read, the accounts
  concerned, the history rows removed and the id floor.

The report is written last and names the ``*.corrupt`` files of the cut: until a report names them,
recovery refuses a plain start (actors/engine/recovery.py), and ``--repair`` rebuilds the cut from those
files and runs these steps again, so a repair killed half-way is finished, never forgotten.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Awaitable, Callable

import attrs

from actors.engine.recovery import LostInput, Recovered
from actors.store.base import HistoryCut
from exness_actors import codec
from exness_actors.commands import OrderId, PositionId, RaiseIdFloor
from exness_actors.engine import Engine
from exness_actors.journal import JournalWriter, encode_frame

__all__ = ["RepairReport", "Repaired", "reconcile", "finish", "id_floor", "journal_id_floor", "write_report"]

log = logging.getLogger("exness.repair")


@attrs.frozen(kw_only=True)
class RepairReport:
    """What a repair lost and what it did about it (written as JSON for the operator)."""
    damage: dict[str, Any]
    evidence: list[str]
    """The ``*.corrupt`` files of this cut (recovery refuses a plain start while one is unreported)."""
    kept_through_seq: int
    lost_last_seq: int
    lost_readable: list[LostInput]
    history: HistoryCut
    next_order_id: int
    next_position_id: int
    accounts: list[int]
    """Accounts the lost inputs touched, as far as the history and the salvaged frames tell."""
    accounts_gone: list[int]
    """Those of them the engine no longer has (the cut-off inputs created them)."""

    def to_json(self) -> dict[str, Any]:
        lost_seqs = ({"first": self.kept_through_seq + 1, "last": self.lost_last_seq}
                     if self.lost_last_seq > self.kept_through_seq else None)
        return {
            "damage": self.damage,
            "evidence": self.evidence,      # a report naming them marks the repair finished
            "kept_through_seq": self.kept_through_seq,
            "lost_seqs": lost_seqs,
            "lost_commands_readable": [attrs.asdict(lost) for lost in self.lost_readable],
            "lost_commands_unreadable": (self.lost_last_seq - self.kept_through_seq
                                         - len(self.lost_readable)) if lost_seqs else 0,
            "accounts": self.accounts,
            "accounts_gone": self.accounts_gone,
            "history_rows_removed": self.history.removed,
            "history_rebuilt_after_seq": self.history.rebuild_after_seq,
            "next_order_id": self.next_order_id,
            "next_position_id": self.next_position_id,
        }


@attrs.define
class Repaired:
    """The engine recovered after the cut and the history reconciled; the floor still to journal."""
    recovered: Recovered
    report: RepairReport
    floor: RaiseIdFloor


async def reconcile(recovered: Recovered, *, store: Any, shard: int, shards: int, stored_seq: int,
                    recover_again: Callable[[int], Awaitable[Recovered]]) -> Repaired:
    """Cut the history at the journal's cut and recover again from the store's new watermark.

    ``recover_again(persisted_seq)`` recovers the (now clean) journal with the store caught up
    to ``persisted_seq``; its events after that seq rebuild the rows the cut removed."""
    kept = recovered.kept_through_seq
    history = await store.cut_history(shard, kept, shards=shards)
    again = await recover_again(history.rebuild_after_seq)
    last_seq = max([kept, stored_seq, *(lost.seq for lost in recovered.lost)])
    floor = id_floor(again.engine, history, last_seq)
    cut = recovered.cut
    assert cut is not None
    concerned = set(history.accounts) | {lost.account_id for lost in recovered.lost if lost.account_id is not None}
    gone = sorted(account for account in concerned if account not in again.engine.accounts)
    await store.forget_accounts_ready(gone)
    report = RepairReport(
        damage={"segment": cut.path.name, "offset": cut.offset, "reason": cut.reason,
                "set_aside": list(recovered.repaired)},
        evidence=[path.name for path in cut.evidence],
        kept_through_seq=kept, lost_last_seq=last_seq, lost_readable=recovered.lost, history=history,
        next_order_id=floor.next_order_id, next_position_id=floor.next_position_id, accounts=sorted(concerned),
        accounts_gone=gone)
    return Repaired(again, report, floor)


def finish(repaired: Repaired, data_dir: Path, journal: JournalWriter, *, ts: int) -> Path:
    """Journal the id floor durably, then write the report; return the report's path."""
    journal_id_floor(repaired.recovered.engine, journal, repaired.floor, ts)
    return write_report(data_dir, repaired.report)


def id_floor(engine: Engine, history: HistoryCut, last_seq: int) -> RaiseIdFloor:
    """Counters above every id the inputs after ``engine.last_seq`` (up to ``last_seq``) could have issued."""
    lost_inputs = max(last_seq - engine.last_seq, 0)
    next_order = max(engine.next_order_id + lost_inputs, history.max_order_id + 1)
    next_position = max(engine.next_position_id + lost_inputs + len(engine.orders),
                        history.max_position_id + 1)
    return RaiseIdFloor(next_order_id=OrderId(next_order), next_position_id=PositionId(next_position))


def journal_id_floor(engine: Engine, journal: JournalWriter, floor: RaiseIdFloor, ts: int) -> None:
    """Apply ``floor`` as the next input and make it durable before anything else runs."""
    engine.submit(floor, ts=ts)
    journal.append(encode_frame(codec.encode(floor)), first_seq=floor.seq)
    journal.fsync()


def write_report(data_dir: Path, report: RepairReport) -> Path:
    """Write the report durably into the data dir and log its summary; return its path."""
    body = report.to_json()
    path = _unused(data_dir / f"repair-{report.kept_through_seq:020d}.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(body, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    log.warning("event=journal_repair_report path=%s kept_through_seq=%d lost_seqs=%s accounts=%s "
                "history_rows_removed=%s next_order_id=%d next_position_id=%d", path,
                report.kept_through_seq, body["lost_seqs"], body["accounts"], body["history_rows_removed"],
                report.next_order_id, report.next_position_id)
    return path


def _unused(path: Path) -> Path:
    candidate, counter = path, 0
    while candidate.exists():
        counter += 1
        candidate = path.with_name(f"{path.stem}.{counter}{path.suffix}")
    return candidate
