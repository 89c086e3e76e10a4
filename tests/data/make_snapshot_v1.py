"""Write tests/data/snapshot_v1/: a data dir whose snapshot is format 1 (no stored indexes),
written by the code before snapshot format 2. Run from a checkout of that code (commit fb24901),
with this repository's tests/recovery_helpers.py copied into its tests/:

    cd OLD_CHECKOUT && python /path/to/tests/data/make_snapshot_v1.py /path/to/tests/data/snapshot_v1

It records the live engine's state hash in ``expected_state_hash`` (hex).
"""

import shutil
import sys
from pathlib import Path

sys.path.insert(0, "tests")
from recovery_helpers import build_data_dir  # noqa: E402

out = Path(sys.argv[1])
shutil.rmtree(out, ignore_errors=True)
out.mkdir(parents=True)
engine = build_data_dir(out, accounts=40, positions=240, tail=400, seed=5)
(out / "expected_state_hash").write_text(engine.state_hash().hex() + "\n")
print(f"{out}: {len(engine.positions)} positions, {len(engine.orders)} orders, last seq {engine.last_seq}")
