"""The pure core stays readable: no function in `exness_actors/` is longer than 80 lines (issue 11).

Theory of operation: every `.py` file under `exness_actors/` (subpackages included) is parsed with
`ast`, never imported. Every `def` and `async def` — methods and nested functions too — is measured
from its `def` line to its last line (decorators not counted) and reported with file, line and name
when it is longer than the limit. The other engineer's shape test covers `actors/` and
`supervisor.py`; this one is the core's.
"""

from __future__ import annotations

import ast
from pathlib import Path

import attrs

REPO_ROOT = Path(__file__).resolve().parents[1]
CORE_PACKAGE = REPO_ROOT / "exness_actors"
MAX_FUNCTION_LINES = 80


@attrs.frozen
class LongFunction:
    path: str
    line: int
    name: str
    length: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.name} is {self.length} lines (at most {MAX_FUNCTION_LINES})"


def long_functions(source: str, *, path: str, limit: int = MAX_FUNCTION_LINES) -> list[LongFunction]:
    """Every function in `source` longer than `limit` lines, with its qualified name."""
    found: list[LongFunction] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}."
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (child.end_lineno or child.lineno) - child.lineno + 1
                if length > limit:
                    found.append(LongFunction(path, child.lineno, name[:-1], length))
            visit(child, name)

    visit(ast.parse(source, filename=path), "")
    return found


def _function_source(name: str, body_lines: int, *, indent: str = "") -> str:
    body = "".join(f"{indent}    x{number} = {number}\n" for number in range(body_lines))
    return f"{indent}def {name}():\n{body}"


def test_the_measure_counts_from_def_to_last_line() -> None:
    cases = [
        # (source, expected (line, name, length) of what is too long)
        (_function_source("short", 79), []),
        (_function_source("exactly_at_the_limit", 79) + "\n", []),
        (_function_source("one_too_many", 80), [(1, "one_too_many", 81)]),
        ("class Engine:\n" + _function_source("handler", 85, indent="    "), [(2, "Engine.handler", 86)]),
        ("def outer():\n" + _function_source("inner", 81, indent="    "),
         [(1, "outer", 83), (2, "outer.inner", 82)]),
        ("async " + _function_source("actor", 90), [(1, "actor", 91)]),
    ]
    for source, expected in cases:
        found = long_functions(source, path="example.py")

        assert [(item.line, item.name, item.length) for item in found] == expected, source[:40]


def test_the_decorators_are_not_counted() -> None:
    source = "@decorator\n" * 5 + _function_source("decorated", 79)

    assert long_functions(source, path="example.py") == []


def test_no_function_in_the_core_is_longer_than_80_lines() -> None:
    found: list[LongFunction] = []
    for path in sorted(CORE_PACKAGE.rglob("*.py")):
        relative = str(path.relative_to(REPO_ROOT))
        found.extend(long_functions(path.read_text(encoding="utf-8"), path=relative))

    assert found == [], "\n".join(str(item) for item in found)
