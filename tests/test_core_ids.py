"""The id types mean something: mypy refuses a mix-up, the wire never sees them (issue 11).

`AccountId`, `OrderId`, `PositionId` and `ClientOrderId` are `NewType`s used in the core's
commands, events, records and queries, so passing a position id where an account id belongs is
a type error. At run time they are the plain int/str, so the wire schema names those.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from exness_actors import codec

REPO_ROOT = Path(__file__).resolve().parents[1]

PRELUDE = """\
from exness_actors.commands import AccountId, CancelOrder, ClientOrderId, ClosePosition, OrderId, PlaceOrder, PositionId
from exness_actors.engine import Engine

def check(engine: Engine) -> None:
"""

# (statement inside check(engine), the mypy error it must raise or None)
CASES = [
    ("engine.account_summary(AccountId(1))", None),
    ("engine.account_summary(PositionId(1))", 'incompatible type "PositionId"; expected "AccountId"'),
    ("engine.account_summary(1)", 'incompatible type "int"; expected "AccountId"'),
    ("engine.positions[PositionId(7)]", None),
    ("engine.positions[OrderId(7)]", 'Invalid index type "OrderId"'),
    ("engine.orders.get(PositionId(7))", 'No overload variant of "get"'),
    ("CancelOrder(account_id=AccountId(1), order_id=OrderId(2))", None),
    ("CancelOrder(account_id=AccountId(1), order_id=PositionId(2))", 'incompatible type "PositionId"; expected "OrderId"'),
    ("ClosePosition(account_id=OrderId(1), position_id=PositionId(2))", 'incompatible type "OrderId"; expected "AccountId"'),
    ("PlaceOrder(account_id=AccountId(1), symbol='X', side='buy', type='market', margin=1, leverage=1,"
     " client_order_id=ClientOrderId('a'))", None),
    ("PlaceOrder(account_id=AccountId(1), symbol='X', side='buy', type='market', margin=1, leverage=1,"
     " client_order_id='a')", 'incompatible type "str"; expected "ClientOrderId"'),
]


def test_mypy_refuses_an_id_of_the_wrong_kind(tmp_path: Path) -> None:
    source = PRELUDE + "".join(f"    {statement}\n" for statement, _ in CASES)
    module = tmp_path / "id_mixups.py"
    module.write_text(source, encoding="utf-8")
    first_line = source.count("\n", 0, source.index("def check")) + 2

    # A child process: mypy's in-process API raises the interpreter's recursion limit for good.
    out = subprocess.run(
        [sys.executable, "-m", "mypy", str(module), "--strict", "--no-error-summary",
         "--cache-dir", str(tmp_path / "cache"), "--config-file", str(REPO_ROOT / "pyproject.toml")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
    ).stdout

    errors: dict[int, str] = {}
    for line in out.splitlines():
        parts = line.split(":", 3)
        if len(parts) == 4 and parts[2].strip() == "error":
            errors[int(parts[1])] = errors.get(int(parts[1]), "") + parts[3]
    for offset, (statement, expected) in enumerate(CASES):
        found = errors.get(first_line + offset)
        if expected is None:
            assert found is None, f"{statement}: {found}"
        else:
            assert found is not None and expected in found, textwrap.shorten(f"{statement}: {found}", 300)


def test_the_wire_schema_carries_ids_as_their_plain_types() -> None:
    id_fields = {"account_id": "int", "order_id": "int", "position_id": "int", "client_order_id": "str",
                 "next_order_id": "int", "next_position_id": "int"}
    seen = 0
    for name, message in codec.wire_schema().items():
        for field in message["fields"]:
            if field["name"] in id_fields:
                seen += 1
                assert field["type"].replace("Optional[", "").rstrip("]") == id_fields[field["name"]], (name, field)

    assert seen > 20
