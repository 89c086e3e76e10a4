"""The core package `exness_actors` stays pure (DESIGN.md §1, STYLE.md rule 1).

The core computes; it never does I/O on the network, never reads a clock, never draws an id or a random
number from the OS, and never reaches into the actor layer. Time, ids and randomness enter as data in the
inputs, and the only randomness allowed is an explicitly seeded `random.Random(seed)` instance.

Theory of operation: every `.py` file under `exness_actors/` (subpackages included) is parsed with `ast`
— never imported, so a broken or half-written module is still checked. The walker collects

- `import X`, `from X import Y` (relative imports resolved to absolute names): X must be neither a
  forbidden module nor a third-party distribution outside the core's allowed dependencies,
- `__import__("X")` and `importlib.import_module("X")` (a non-literal name cannot be checked and is itself
  reported),
- attribute uses that resolve, through the file's imports and aliases, to a forbidden function:
  `datetime.datetime.now`, `random.randint`, `os.urandom`, ….

and reports each violation with file, line, the offending name and why it is forbidden.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs

REPO_ROOT = Path(__file__).resolve().parents[1]
CORE_PACKAGE = "exness_actors"

# Modules (and their submodules) the core must never import, with the reason shown in the report.
FORBIDDEN_MODULES: dict[str, str] = {
    "trio": "async runtime: belongs in actors/",
    "trio_websocket": "network I/O: belongs in actors/",
    "asyncio": "async runtime: belongs in actors/",
    "anyio": "async runtime: belongs in actors/",
    "actors": "the core must not depend on the actor layer",
    "supervisor": "the core must not depend on the composition root",
    "socket": "network I/O: belongs in actors/",
    "selectors": "I/O multiplexing: belongs in actors/",
    "ssl": "network I/O: belongs in actors/",
    "http": "network I/O: belongs in actors/",
    "urllib": "network I/O: belongs in actors/",
    "uuid": "ids come from the sequencer as input data, not from uuid",
    "time": "clock: time enters the core as `ts` in the input",
    "threading": "concurrency: belongs in actors/",
    "multiprocessing": "concurrency: belongs in actors/",
    "subprocess": "process I/O: belongs in actors/",
    "secrets": "OS randomness: use a seeded random.Random passed in as data",
    "_thread": "concurrency: belongs in actors/",
    "concurrent": "threads and worker processes: belong in actors/",
}

# Outside the standard library the core may import only these top-level names (DESIGN.md §1);
# `attr` is the attrs distribution's classic namespace.
ALLOWED_THIRD_PARTY = frozenset({"exness_actors", "attrs", "attr", "msgpack", "sortedcontainers", "cryptography"})
# ...and these only inside one subpackage: the Hypothesis strategies that ship in exness_actors.testing.
THIRD_PARTY_ONLY_UNDER: dict[str, str] = {"hypothesis": "exness_actors.testing"}

# Fully qualified functions the core must never use (called, passed or imported by name).
FORBIDDEN_FUNCTIONS: dict[str, str] = {
    "datetime.datetime.now": "clock: time enters the core as `ts` in the input",
    "datetime.datetime.utcnow": "clock: time enters the core as `ts` in the input",
    "datetime.datetime.today": "clock: time enters the core as `ts` in the input",
    "datetime.date.today": "clock: time enters the core as `ts` in the input",
    "os.urandom": "OS randomness: use a seeded random.Random passed in as data",
    "os.getrandom": "OS randomness: use a seeded random.Random passed in as data",
}

# In the `random` module only the seedable generator class is allowed; every module-level function
# (random.random, random.randint, random.seed, …) uses hidden global state seeded from the OS.
ALLOWED_RANDOM_NAMES = frozenset({"Random"})
MODULE_LEVEL_RANDOM_REASON = "module-level random: use an explicitly seeded random.Random(seed) instance"

DYNAMIC_IMPORT_FUNCTIONS = frozenset({"builtins.__import__", "importlib.import_module", "importlib.__import__"})


@attrs.frozen(kw_only=True)
class Violation:
    path: str
    line: int
    kind: str  # "import", "dynamic import", "use"
    name: str
    reason: str

    def row(self) -> str:
        return f"{self.path}:{self.line}".ljust(44) + f"{self.kind:<15}{self.name:<32}{self.reason}"


def forbidden_module_reason(module: str) -> str | None:
    """Why importing `module` is forbidden, or None when it is allowed."""
    for forbidden, reason in FORBIDDEN_MODULES.items():
        if module == forbidden or module.startswith(forbidden + "."):
            return reason
    return None


def third_party_reason(module: str, *, importer: str) -> str | None:
    """Why `importer` (a dotted module name) may not import the non-stdlib `module`, or None."""
    top = module.split(".", 1)[0]
    if not top or top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY:
        return None
    only_under = THIRD_PARTY_ONLY_UNDER.get(top)
    if only_under is None:
        return "not stdlib and not an allowed dependency (attrs, msgpack, sortedcontainers, cryptography)"
    if importer == only_under or importer.startswith(only_under + "."):
        return None
    return f"allowed only under {only_under}"


def forbidden_function_reason(qualified_name: str) -> str | None:
    """Why using the fully qualified `qualified_name` is forbidden, or None when it is allowed."""
    if qualified_name in FORBIDDEN_FUNCTIONS:
        return FORBIDDEN_FUNCTIONS[qualified_name]
    if qualified_name == "random.*":
        return MODULE_LEVEL_RANDOM_REASON
    head, _, rest = qualified_name.partition(".")
    if head == "random" and rest:
        first = rest.split(".", 1)[0]
        if first not in ALLOWED_RANDOM_NAMES:
            return MODULE_LEVEL_RANDOM_REASON
    return None


def resolve_relative(module: str | None, *, level: int, package: str) -> str:
    """Absolute name of `from <level dots><module> import …` written inside `package`.

    Dots that climb above the top-level package resolve to the top level itself, so
    `from .. import actors` inside `exness_actors/x.py` is reported as `actors`.
    """
    if level == 0:
        return module or ""
    parts = package.split(".") if package else []
    base_parts = parts[: max(len(parts) - (level - 1), 0)]
    if module:
        base_parts.append(module)
    return ".".join(base_parts)


class _PurityWalker(ast.NodeVisitor):
    """Collects violations from one module's syntax tree."""

    def __init__(self, *, path: str, package: str, module: str) -> None:
        self.path = path
        self.package = package
        self.module = module
        self.violations: list[Violation] = []
        # local name -> fully qualified name it is bound to by an import (scope-insensitive on purpose:
        # the core has no reason to shadow these names, and being strict here is cheap).
        self.bindings: dict[str, str] = {}
        self.star_modules: list[str] = []

    # -- reporting ---------------------------------------------------------------------------

    def report(self, node: ast.AST, *, kind: str, name: str, reason: str) -> None:
        self.violations.append(
            Violation(path=self.path, line=getattr(node, "lineno", 0), kind=kind, name=name, reason=reason)
        )

    def check_module(self, node: ast.AST, module: str, *, kind: str = "import") -> None:
        reason = forbidden_module_reason(module) or third_party_reason(module, importer=self.module)
        if reason is not None:
            self.report(node, kind=kind, name=module, reason=reason)

    def check_imported_name(self, node: ast.AST, qualified_name: str, *, kind: str = "import") -> None:
        """`from M import N`: N may be a submodule (M.N) or a function of M."""
        reason = forbidden_module_reason(qualified_name) or forbidden_function_reason(qualified_name)
        if reason is not None:
            self.report(node, kind=kind, name=qualified_name, reason=reason)

    # -- imports -------------------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.check_module(node, alias.name)
            if alias.asname:
                self.bindings[alias.asname] = alias.name
            else:
                top = alias.name.split(".", 1)[0]
                self.bindings[top] = top
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = resolve_relative(node.module, level=node.level, package=self.package)
        if module:
            self.check_module(node, module)
        module_reported = bool(module) and (
            forbidden_module_reason(module) or third_party_reason(module, importer=self.module)
        ) is not None
        for alias in node.names:
            if alias.name == "*":
                if module == "random":
                    self.report(node, kind="import", name="random.*", reason=MODULE_LEVEL_RANDOM_REASON)
                self.star_modules.append(module)
                continue
            qualified_name = f"{module}.{alias.name}" if module else alias.name
            if not module_reported:
                self.check_imported_name(node, qualified_name)
            self.bindings[alias.asname or alias.name] = qualified_name
        self.generic_visit(node)

    # -- uses ----------------------------------------------------------------------------------

    def qualified_name(self, node: ast.expr) -> str | None:
        """`a.b.c` with `a` bound by an import -> the fully qualified dotted name, else None."""
        attributes: list[str] = []
        while isinstance(node, ast.Attribute):
            attributes.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        attributes.reverse()
        if node.id in self.bindings:
            root = self.bindings[node.id]
        elif node.id == "__import__":
            root = "builtins.__import__"
        elif self.star_modules:
            # `from datetime import *` then `datetime.now()`: attribute to the star-imported module.
            root = f"{self.star_modules[-1]}.{node.id}"
        else:
            return None
        return ".".join([root, *attributes])

    def visit_Attribute(self, node: ast.Attribute) -> None:
        qualified_name = self.qualified_name(node)
        if qualified_name is not None:
            reason = forbidden_function_reason(qualified_name)
            if reason is not None:
                self.report(node, kind="use", name=qualified_name, reason=reason)
                return  # do not report the inner parts of the same chain again
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        function = self.qualified_name(node.func)
        if function in DYNAMIC_IMPORT_FUNCTIONS:
            self.check_dynamic_import(node, function)
        self.generic_visit(node)

    @staticmethod
    def argument(node: ast.Call, *, position: int, keyword: str) -> ast.expr | None:
        """The call's argument given at `position` or as `keyword=`, if any."""
        if len(node.args) > position:
            return node.args[position]
        return next((given.value for given in node.keywords if given.arg == keyword), None)

    def check_dynamic_import(self, node: ast.Call, function: str) -> None:
        name_node = self.argument(node, position=0, keyword="name")
        if not (isinstance(name_node, ast.Constant) and isinstance(name_node.value, str)):
            self.report(
                node,
                kind="dynamic import",
                name=f"{function.rsplit('.', 1)[-1]}(<non-literal>)",
                reason="a non-literal dynamic import cannot be checked for purity",
            )
            return
        name = name_node.value
        if function == "importlib.import_module":
            package_node = self.argument(node, position=1, keyword="package")
            package = package_node.value if isinstance(package_node, ast.Constant) else self.package
            level = len(name) - len(name.lstrip("."))
            module = resolve_relative(name[level:] or None, level=level, package=package or "")
            self.check_module(node, module, kind="dynamic import")
            return
        # __import__(name, globals=None, locals=None, fromlist=(), level=0)
        level_node = self.argument(node, position=4, keyword="level")
        level = level_node.value if isinstance(level_node, ast.Constant) and isinstance(level_node.value, int) else 0
        module = resolve_relative(name or None, level=level, package=self.package)
        self.check_module(node, module, kind="dynamic import")
        if forbidden_module_reason(module) is not None:
            return
        fromlist_node = self.argument(node, position=3, keyword="fromlist")
        if isinstance(fromlist_node, (ast.List, ast.Tuple)):
            for element in fromlist_node.elts:
                if isinstance(element, ast.Constant) and isinstance(element.value, str):
                    self.check_imported_name(node, f"{module}.{element.value}", kind="dynamic import")


def find_violations(source: str, *, path: str, module: str, is_package: bool = False) -> list[Violation]:
    """Violations in the source of the dotted `module` (`is_package` for an `__init__.py`)."""
    tree = ast.parse(source, filename=path)
    package = module if is_package else module.rpartition(".")[0]
    walker = _PurityWalker(path=path, package=package, module=module)
    walker.visit(tree)
    return sorted(walker.violations, key=lambda violation: (violation.path, violation.line, violation.name))


def core_module_files() -> Iterator[Path]:
    yield from sorted((REPO_ROOT / CORE_PACKAGE).rglob("*.py"))


def module_name_of(file: Path) -> tuple[str, bool]:
    """Dotted module name of `file` and whether it is a package (`__init__.py`)."""
    parts = list(file.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def format_report(violations: list[Violation]) -> str:
    header = "location".ljust(44) + f"{'kind':<15}{'name':<32}why"
    lines = [
        f"{len(violations)} purity violation(s) in the core package `{CORE_PACKAGE}` "
        "(DESIGN.md §1: stdlib, attrs, msgpack, sortedcontainers, cryptography only; "
        "no async runtime, network, clocks, uuid or OS randomness; no actors/supervisor):",
        header,
        "-" * len(header),
        *(violation.row() for violation in violations),
    ]
    return "\n".join(lines)


def test_core_package_is_pure() -> None:
    files = list(core_module_files())
    assert files, f"no modules found under {REPO_ROOT / CORE_PACKAGE}"

    violations: list[Violation] = []
    for file in files:
        module, is_package = module_name_of(file)
        violations += find_violations(
            file.read_text(encoding="utf-8"),
            path=str(file.relative_to(REPO_ROOT)),
            module=module,
            is_package=is_package,
        )

    assert not violations, format_report(violations)


# -- the walker itself is tested, so the purity test above can really fail ----------------------

IMPURE_SOURCE = '''\
import time
import trio, msgpack
import asyncio.streams as streams
from socket import create_connection
from http import client
from urllib.parse import urlsplit
from .. import actors
from ..supervisor import main
import random
from random import randint, Random
from os import urandom
from datetime import datetime, date
import datetime as dt_module
import os
import importlib
from importlib import import_module
import requests
from hypothesis import strategies


def impure(name):
    stamp = datetime.now()
    day = date.today()
    also = dt_module.datetime.utcnow()
    roll = random.random() + random.randint(1, 6)
    pick = random.choice([1, 2])
    noise = os.urandom(8)
    clock = __import__("threading")
    uid = importlib.import_module("uuid")
    worker = import_module("multiprocessing.pool")
    secret = __import__("secrets")
    unknown = importlib.import_module(name)
    factory = datetime.utcnow
    return stamp, day, also, roll, pick, noise, clock, uid, worker, secret, unknown, factory
'''

EXPECTED_IN_IMPURE_SOURCE = {
    (1, "time"),
    (2, "trio"),
    (3, "asyncio.streams"),
    (4, "socket"),
    (5, "http"),
    (6, "urllib.parse"),
    (7, "actors"),
    (8, "supervisor"),
    (10, "random.randint"),
    (11, "os.urandom"),
    (17, "requests"),
    (18, "hypothesis"),
    (22, "datetime.datetime.now"),
    (23, "datetime.date.today"),
    (24, "datetime.datetime.utcnow"),
    (25, "random.random"),
    (25, "random.randint"),
    (26, "random.choice"),
    (27, "os.urandom"),
    (28, "threading"),
    (29, "uuid"),
    (30, "multiprocessing.pool"),
    (31, "secrets"),
    (32, "import_module(<non-literal>)"),
    (33, "datetime.datetime.utcnow"),
}

PURE_SOURCE = '''\
from __future__ import annotations

import datetime
import hashlib
import os.path
import random
from decimal import Decimal
from random import Random

import attrs
import msgpack
from sortedcontainers import SortedList

from . import money
from .codec import encode
from ._units import Cents


def pure(seed: int, ts_ns: int, rng: random.Random) -> object:
    generator = random.Random(seed)
    other = Random(seed + 1)
    stamp = datetime.datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=datetime.timezone.utc)
    draw = rng.randint(1, 6) + generator.random() + other.random()
    return stamp, draw, Decimal("1.5"), os.path.join("a", "b"), hashlib.blake2b(b"x").hexdigest()
'''


def test_walker_reports_every_forbidden_import_and_call() -> None:
    violations = find_violations(IMPURE_SOURCE, path="exness_actors/impure.py", module="exness_actors.impure")

    found = {(violation.line, violation.name) for violation in violations}
    missing = sorted(EXPECTED_IN_IMPURE_SOURCE - found)
    unexpected = sorted(found - EXPECTED_IN_IMPURE_SOURCE)
    assert found == EXPECTED_IN_IMPURE_SOURCE, f"missing: {missing}; unexpected: {unexpected}"
    report = format_report(violations)
    assert "exness_actors/impure.py:1 " in report
    assert "clock: time enters the core as `ts` in the input" in report


def test_walker_accepts_pure_code() -> None:
    violations = find_violations(PURE_SOURCE, path="exness_actors/pure.py", module="exness_actors.pure")

    assert violations == [], format_report(violations)


def test_relative_imports_resolve_to_absolute_names() -> None:
    cases = [
        # (module, level, package, expected)
        ("money", 1, "exness_actors", "exness_actors.money"),
        (None, 1, "exness_actors.journal", "exness_actors.journal"),
        ("codec", 2, "exness_actors.journal", "exness_actors.codec"),
        ("actors", 2, "exness_actors", "actors"),
        ("time", 0, "exness_actors", "time"),
    ]
    for module, level, package, expected in cases:
        assert resolve_relative(module, level=level, package=package) == expected, (module, level, package)


def test_relative_import_of_the_actor_layer_is_reported() -> None:
    source = "from ...actors import engine\n"

    violations = find_violations(
        source, path="exness_actors/journal/segments.py", module="exness_actors.journal.segments"
    )

    assert [(violation.line, violation.name) for violation in violations] == [(1, "actors")]


def test_hypothesis_is_allowed_only_in_the_testing_subpackage() -> None:
    source = "from hypothesis import strategies\nimport hypothesis.stateful\n"

    in_testing = find_violations(
        source, path="exness_actors/testing/strategies.py", module="exness_actors.testing.strategies"
    )
    in_engine = find_violations(source, path="exness_actors/engine.py", module="exness_actors.engine")

    assert in_testing == []
    assert [(violation.line, violation.name) for violation in in_engine] == [
        (1, "hypothesis"),
        (2, "hypothesis.stateful"),
    ]
