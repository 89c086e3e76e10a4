"""Fault tier: `run --repair` after mid-journal damage leaves the engine and the history consistent.

The journal is damaged the way a flipped byte on disk damages it (a bad CRC followed by good
frames), with every snapshot gone, so the repair really cuts acknowledged commands off.
"""

from __future__ import annotations

import functools
import json
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import trio

from actors.engine import repair as repair_journal
from actors.engine.recovery import journal_dir, snapshot_dir
from actors.store.sqlite import SqliteStore
from exness_actors.commands import CreateAccount, PlaceOrder, Quote
from exness_actors.events import OrderAccepted
from exness_actors.journal import FRAME_HEADER, FRAME_HEADER_SIZE, list_segments
from exness_actors.replay import Checkpoint, decode_record
from gateway_helpers import gateway_config
from supervisor import StartupError, run_system

SYMBOL = "BTCUSDT"


def repair_config(data_dir: Path) -> Any:
    return gateway_config(data_dir, {"ws": {"port": 0}, "journal": {"fsync": "batch"}})


@asynccontextmanager
async def running(data_dir: Path, *, repair: bool = False) -> AsyncIterator[Any]:
    async with trio.open_nursery() as nursery:
        system = await nursery.start(functools.partial(
            run_system, repair_config(data_dir), handle_signals=False, feed="none", repair=repair))
        try:
            yield system
        finally:
            system.request_shutdown()


async def place(system: Any, account_id: int) -> tuple[int, int]:
    """A market buy; returns (seq, order_id)."""
    reply = await system.handle.request(PlaceOrder(account_id=account_id, symbol=SYMBOL, side="buy",
                                                   type="market", margin=10_000, leverage=10))
    accepted = [event for event in reply.events if isinstance(event, OrderAccepted)]
    assert accepted, reply.events
    return reply.seq, accepted[0].order_id


async def persisted(system: Any, seq: int) -> None:
    with trio.fail_after(30):
        while await system.store.last_persisted_seq() < seq:
            await trio.sleep(0.01)


def flip_byte_in_frame_of(data_dir: Path, seq: int) -> None:
    """Flip one payload byte of the frame that journals input `seq` (its CRC then fails)."""
    for segment in list_segments(journal_dir(data_dir)):
        data = bytearray(segment.read_bytes())
        offset = 0
        while offset < len(data):
            length, _crc = FRAME_HEADER.unpack_from(data, offset)
            start = offset + FRAME_HEADER_SIZE
            record = decode_record(bytes(data[start:start + length]))
            if not isinstance(record, Checkpoint) and record.seq == seq:
                data[start + length // 2] ^= 0xFF
                segment.write_bytes(bytes(data))
                return
            offset = start + length
    raise AssertionError(f"no frame for seq {seq}")


def drop_snapshots(data_dir: Path) -> None:
    for path in snapshot_dir(data_dir).glob("*.snap"):
        path.unlink()


async def history_run(data_dir: Path) -> dict[int, list[tuple[int, int]]]:
    """Two accounts, ten orders each (account 1 first), then a third account; returns
    account -> [(seq, order_id)]."""
    placed: dict[int, list[tuple[int, int]]] = {1: [], 2: []}
    async with running(data_dir) as system:
        for account in placed:
            await system.handle.request(CreateAccount(account_id=account, initial_deposit=1_000_000))
        await system.handle.request(Quote(symbol=SYMBOL, bid=6_500_000, ask=6_500_000))
        for account in placed:
            for _ in range(10):
                placed[account].append(await place(system, account))
        await system.handle.request(CreateAccount(account_id=3, initial_deposit=1_000_000))
        for number in (1, 2, 3):                    # users 1..3 own accounts 1..3, all confirmed
            user = await system.store.create_user(f"trader{number}@example.com", "hash", created_at=0)
            assert user.account_id == number
            await system.store.mark_account_ready(user.user_id)
    return placed


async def test_repair_truncates_the_history_and_never_reuses_an_id(tmp_path):
    placed = await history_run(tmp_path)
    cut_seq = placed[1][4][0]                       # account 1's fifth order is damaged
    last_seq = placed[2][-1][0] + 1                 # account 3's creation
    issued = max(order_id for orders in placed.values() for _seq, order_id in orders)
    drop_snapshots(tmp_path)
    flip_byte_in_frame_of(tmp_path, cut_seq)

    async with running(tmp_path, repair=True) as system:
        engine_seq = await system.handle.query(lambda engine: engine.last_seq)
        assert engine_seq == cut_seq        # cut seq - 1 kept, then the journaled RaiseIdFloor
        for account, orders in placed.items():
            for seq, order_id in orders:
                kept = await system.store.order(account, order_id)
                assert (kept is not None) == (seq < cut_seq), (account, seq, order_id)
        seq, new_order = await place(system, 1)
        assert new_order > issued
        await persisted(system, seq)
        assert (await system.store.order(1, new_order)).account_id == 1
        ready = {user_id: (await system.store.user_by_id(user_id)).account_ready for user_id in (1, 2, 3)}
        assert ready == {1: True, 2: True, 3: False}    # the next sign-in re-creates account 3
        for account in placed:
            free = await system.handle.query(lambda engine, a=account: engine.accounts[a].free)
            ledger = await system.store.ledger(account, limit=1)
            assert ledger.items[0].free == free

    reports = list(tmp_path.glob("repair-*.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    assert report["kept_through_seq"] == cut_seq - 1
    assert report["lost_seqs"] == {"first": cut_seq, "last": last_seq}
    assert report["accounts"] == [1, 2, 3] and report["accounts_gone"] == [3]
    assert report["next_order_id"] > issued

    async with running(tmp_path) as system:       # the floor is journaled: a plain restart keeps it
        _seq, after_restart = await place(system, 2)
        assert after_restart > new_order


class Killed(Exception):
    """Stands for kill -9 at a point of the repair (nothing after it runs)."""


def kill_at(monkeypatch, target: Any, name: str) -> None:
    def killed(*args: Any, **kwargs: Any) -> Any:
        raise Killed(name)
    monkeypatch.setattr(target, name, killed)


@pytest.mark.parametrize("stage", ["cut_history", "write_report"])
async def test_a_repair_killed_half_way_blocks_a_plain_start_and_finishes_when_run_again(tmp_path, monkeypatch,
                                                                                       stage):
    placed = await history_run(tmp_path)
    cut_seq = placed[1][4][0]
    issued = max(order_id for orders in placed.values() for _seq, order_id in orders)
    drop_snapshots(tmp_path)
    flip_byte_in_frame_of(tmp_path, cut_seq)
    with monkeypatch.context() as patch:
        kill_at(patch, SqliteStore if stage == "cut_history" else repair_journal, stage)
        with pytest.raises(BaseException) as killed:
            async with running(tmp_path, repair=True):
                pass
        assert killed.group_contains(Killed)

    with pytest.raises(BaseException) as refused:
        async with running(tmp_path):
            pass
    assert refused.group_contains(StartupError, match="interrupted repair")

    async with running(tmp_path, repair=True) as system:
        for account, orders in placed.items():
            for seq, order_id in orders:
                assert ((await system.store.order(account, order_id)) is not None) == (seq < cut_seq)
        seq, new_order = await place(system, 1)
        assert new_order > issued
        await persisted(system, seq)
    report = json.loads(max(tmp_path.glob("repair-*.json")).read_text())
    assert report["kept_through_seq"] == cut_seq - 1
    assert report["accounts"] == [1, 2, 3] and report["next_order_id"] > issued
    async with running(tmp_path):                  # finished: plain starts work again
        pass
