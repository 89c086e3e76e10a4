"""Fast recovery (issue 14): snapshots carry the trigger indexes ready to load (snapshot format 2).

Loading them must give exactly the indexes re-deriving them gives; recovery from a format-2
snapshot and its tail must end in the live engine's state; format-1 snapshots (written by the
code before) still load; and both builds agree.
"""

from __future__ import annotations

import marshal
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.engine.recovery import recover, snapshot_dir
from exness_actors import codec
from exness_actors.engine import Engine
from exness_actors.snapshot import list_snapshots, read_snapshot
from exness_actors.testing.machine import index_view
from exness_actors.triggers import ID_BITS, TriggerIndex
from recovery_helpers import KEY, build_data_dir, recovery_config

V1_FIXTURE = Path(__file__).parent / "data" / "snapshot_v1"

entries = st.lists(st.tuples(st.integers(1, 10**12), st.integers(0, 6), st.integers(1, 2**ID_BITS - 1)),
                   max_size=60, unique_by=lambda entry: entry[2])


@given(entries=entries, fires_on_fall=st.booleans(), price=st.integers(1, 10**12))
def test_a_bulk_loaded_index_equals_one_built_entry_by_entry(entries, fires_on_fall, price) -> None:
    one_by_one = TriggerIndex(fires_on_fall=fires_on_fall)
    for level, priority, ident in entries:
        one_by_one.add(level, priority, ident)
    loaded = TriggerIndex(fires_on_fall=fires_on_fall)

    loaded.load_sorted(one_by_one.entries())

    assert list(loaded.items()) == list(one_by_one.items())
    assert (loaded.best, len(loaded)) == (one_by_one.best, len(one_by_one))
    popped_loaded: list[tuple[int, int]] = []
    popped_built: list[tuple[int, int]] = []
    loaded.pop_crossed(price, popped_loaded)
    one_by_one.pop_crossed(price, popped_built)
    assert popped_loaded == popped_built and list(loaded.items()) == list(one_by_one.items())


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> tuple[Path, Engine]:
    data_dir = tmp_path_factory.mktemp("recovery")
    return data_dir, build_data_dir(data_dir, accounts=60, positions=400, tail=900, seed=11)


def test_the_snapshot_is_format_2_and_its_indexes_load_as_rederived(live) -> None:
    data_dir, _engine = live
    snapshot = read_snapshot(list_snapshots(snapshot_dir(data_dir))[-1][1], key=KEY)

    loaded = Engine.from_state(snapshot.state, snapshot.indexes)
    rederived = Engine.from_state(snapshot.state)

    assert snapshot.format_version == 2 and snapshot.indexes is not None
    assert index_view(loaded) == index_view(rederived)
    assert sum(len(view) for book in index_view(loaded) for view in book) > 400   # fixed triggers, entries, trailing
    assert loaded.state_hash() == rederived.state_hash() == snapshot.state_hash


def test_recovery_from_a_format_2_snapshot_ends_in_the_live_state(live) -> None:
    data_dir, engine = live

    recovered = recover(data_dir, recovery_config(), KEY)

    assert recovered.snapshot_seq > 0 and recovered.replayed > 800
    assert recovered.engine.state_hash() == engine.state_hash()
    assert recovered.engine.rolling_hash == engine.rolling_hash
    assert index_view(recovered.engine) == index_view(Engine.from_state(recovered.engine.to_state()))


def test_recovery_reports_where_its_time_went(live) -> None:
    data_dir, _engine = live

    recovered = recover(data_dir, recovery_config(), KEY)

    assert set(recovered.stages_ms) == {"snapshot_read", "engine_restore", "journal_scan", "tail_replay"}
    assert all(value >= 0 for value in recovered.stages_ms.values())


@pytest.mark.parametrize("damage", ["format", "shape", "count", "unreadable", "not-ints"])
def test_stored_indexes_that_do_not_fit_the_state_are_rederived(live, damage: str) -> None:
    data_dir, _engine = live
    snapshot = read_snapshot(list_snapshots(snapshot_dir(data_dir))[-1][1], key=KEY)
    indexes = codec.unpack(codec.pack(snapshot.indexes))
    if damage == "format":
        indexes[0] = 99
    elif damage == "shape":
        indexes[1].pop()
    else:
        position = next(i for i, column in enumerate(indexes[1]) if marshal.loads(column))
        entries = marshal.loads(indexes[1][position])
        indexes[1][position] = {"count": marshal.dumps(entries[1:]), "unreadable": b"\x00junk",
                                "not-ints": marshal.dumps([str(entry) for entry in entries])}[damage]

    restored = Engine.from_state(snapshot.state, indexes)

    assert index_view(restored) == index_view(Engine.from_state(snapshot.state))


def test_a_format_1_snapshot_written_by_the_old_code_still_loads(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(V1_FIXTURE, data_dir)
    snapshot = read_snapshot(list_snapshots(snapshot_dir(data_dir))[-1][1], key=KEY)

    recovered = recover(data_dir, recovery_config(), KEY)

    assert snapshot.format_version == 1 and snapshot.indexes is None
    assert recovered.snapshot_seq == snapshot.last_seq and recovered.replayed > 300
    assert recovered.engine.state_hash().hex() == (V1_FIXTURE / "expected_state_hash").read_text().strip()


_CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from actors.engine.recovery import recover
from exness_actors import BUILD
from recovery_helpers import KEY, recovery_config
recovered = recover(Path({data_dir!r}), recovery_config(), KEY)
print(BUILD, recovered.engine.state_hash().hex(), recovered.engine.rolling_hash.hex())
"""


@pytest.mark.parametrize("snapshot_format", [2, 1])
def test_the_pure_build_recovers_the_same_state(live, tmp_path: Path, snapshot_format: int) -> None:
    if snapshot_format == 2:
        data_dir, engine = live
        expected = [engine.state_hash().hex(), engine.rolling_hash.hex()]
    else:
        data_dir = V1_FIXTURE
        expected = [(V1_FIXTURE / "expected_state_hash").read_text().strip(),
                    recover(_copy(V1_FIXTURE, tmp_path / "compiled"), recovery_config(), KEY).engine.rolling_hash.hex()]
    env = {**os.environ, "EXNESS_CORE_BUILD": "pure"}
    child = _CHILD.format(tests=str(Path(__file__).parent), data_dir=str(_copy(data_dir, tmp_path / "pure")))

    out = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, check=True).stdout.split()

    assert out == ["pure", *expected]


def _copy(data_dir: Path, to: Path) -> Path:
    shutil.copytree(data_dir, to)
    return to
