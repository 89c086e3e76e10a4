"""Fault tier: damage in a segment older than the newest snapshot is found at once, not when it costs.

The scrub (actors/engine/scrubber.py) runs when the snapshotter starts and after every snapshot; it reports
damage in the log, on /readyz and in /metrics, and keeps verified copies of sealed segments.
`exness-actors verify` does the same offline; `replay` gives advice that fits the damage.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import httpx
import trio

from actors import cli
from actors.engine.recovery import journal_dir
from actors.engine.scrubber import scrub
from exness_actors.commands import CreateAccount, Deposit
from exness_actors.journal import JournalWriter, encode_frame, list_segments
from gateway_helpers import gateway_config
from supervisor import run_system


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def three_segments(directory: Path) -> list[Path]:
    with JournalWriter(directory, segment_bytes=64) as writer:
        for seq in range(1, 31):
            writer.append(encode_frame(b"payload %d" % seq * 3), first_seq=seq)
    return list_segments(directory)


def test_scrub_finds_damage_in_a_sealed_segment_and_archives_only_verified_ones(tmp_path):
    segments = three_segments(tmp_path / "journal")
    flip_byte(segments[1], 20)
    with open(segments[-1], "ab") as last:
        last.write(b"\x07\x00")                      # a torn tail of the live segment: not damage

    report = scrub(tmp_path / "journal", include_last=True, archive_dir=tmp_path / "archive")

    assert [check.path for check in report.damaged] == [segments[1]]
    assert "CRC mismatch" in report.damaged[0].describe()
    archived = sorted(path.name for path in (tmp_path / "archive").iterdir())
    assert segments[1].name not in archived and segments[0].name in archived
    assert scrub(tmp_path / "journal", archive_dir=tmp_path / "archive").archived == []   # copies kept


def test_the_live_scrub_leaves_the_segment_being_written_alone(tmp_path):
    segments = three_segments(tmp_path / "journal")
    flip_byte(segments[-1], 20)
    assert scrub(tmp_path / "journal").damaged == []
    assert [c.path for c in scrub(tmp_path / "journal", include_last=True).damaged] == [segments[-1]]


def fault_config(data_dir: Path, **snapshot):
    return gateway_config(data_dir, {"ws": {"port": 0}, "snapshot": snapshot,
                                     "journal": {"archive_dir": str(data_dir.parent / "archive")}})


async def wait_for(predicate, *, timeout: float = 30) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


async def a_snapshot_then_more(data_dir: Path) -> None:
    """Inputs, a periodic snapshot (the journal rotates after it), more inputs and another
    snapshot (whose scrub archives the sealed first segment), a clean stop."""
    async with trio.open_nursery() as nursery:
        system = await nursery.start(functools.partial(
            run_system, fault_config(data_dir, interval_s=0.2), handle_signals=False, feed="none"))
        await system.handle.request(CreateAccount(account_id=1, initial_deposit=1_000))
        for index in range(20):
            await system.handle.request(Deposit(account_id=1, amount=1, idempotency_key=f"a{index}"))
        await wait_for(lambda: system.actors["snapshotter"].written >= 1)
        for index in range(20):
            await system.handle.request(Deposit(account_id=1, amount=1, idempotency_key=f"b{index}"))
        await wait_for(lambda: system.actors["snapshotter"].written >= 2)   # its scrub sees a sealed segment
        await wait_for(lambda: system.actors["snapshotter"].scrubs >= 3)
        system.request_shutdown()


async def test_old_damage_is_reported_at_start_on_readyz_and_metrics(tmp_path, caplog):
    data_dir = tmp_path / "data"
    await a_snapshot_then_more(data_dir)
    old = list_segments(journal_dir(data_dir))[0]
    archived = tmp_path / "archive" / old.name
    assert archived.read_bytes() == old.read_bytes()           # the scrub kept a verified copy
    flip_byte(old, old.stat().st_size // 2)

    async with trio.open_nursery() as nursery:
        system = await nursery.start(functools.partial(
            run_system, fault_config(data_dir, interval_s=3600), handle_signals=False, feed="none"))
        await wait_for(lambda: system.handle.journal_damage)
        url = system.actors["gateway"].url
        async with httpx.AsyncClient(base_url=url) as client:
            ready = (await client.get("/readyz")).json()
            metrics = (await client.get("/metrics")).text
        system.request_shutdown()
    assert old.name in ready["error"]["details"]["journal_damage"][0]
    assert "exness_journal_damaged_segments 1.0" in metrics
    assert any("event=journal_damage" in record.getMessage() for record in caplog.records)

    assert cli.main(["verify", str(data_dir)]) == 1
    assert cli.main(["replay", str(data_dir)]) == 2
    shutil.copyfile(archived, old)                             # the operator restores the copy
    assert cli.main(["verify", str(data_dir)]) == 0
    assert cli.main(["replay", str(data_dir)]) == 0


def test_replay_does_not_recommend_repair_for_damage_a_snapshot_covers(tmp_path, capsys):
    trio.run(a_snapshot_then_more, tmp_path / "data")
    old = list_segments(journal_dir(tmp_path / "data"))[0]
    flip_byte(old, old.stat().st_size // 2)

    assert cli.main(["replay", str(tmp_path / "data")]) == 2

    error = capsys.readouterr().err
    assert "covers this segment" in error and "--repair" in error and "would not change it" in error
    assert "`run --repair` truncates" not in error
