"""The compiled core (mypyc, from the same .py source) and the pure core are one core.

- Both builds give identical events, state hashes and rolling hashes on the same journals:
  property-machine runs, simulation seeds, backtests over the shipped samples, and every
  wrong-typed command field (tests/build_parity.py computes them, once per build).
- A compiled build whose sources changed since it was built is never run: the package falls back
  to the pure source and warns.

Where no compiled build is installed the parity test skips, unless ``EXNESS_REQUIRE_COMPILED=1``
(CI sets it) makes that a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from exness_actors import _build

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.parent / "exness_actors"
#: set-iteration order in the Hypothesis machine depends on string hashing: fix it for the record
ENV = {**os.environ, "PYTHONHASHSEED": "0"}


def run_parity(*args: str, build: str = "") -> str:
    env = {**ENV, "EXNESS_CORE_BUILD": build} if build else ENV
    done = subprocess.run([sys.executable, str(TESTS / "build_parity.py"), *args], cwd=TESTS, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_compiled_and_the_pure_core_compute_the_same(tmp_path: Path) -> None:
    if _build.BUILD != "compiled":
        if os.environ.get("EXNESS_REQUIRE_COMPILED") == "1":
            pytest.fail(f"EXNESS_REQUIRE_COMPILED=1 but this process runs the pure core: {_build.BUILD_REASON}")
        pytest.skip(f"no compiled core to compare: {_build.BUILD_REASON}")
    runs = tmp_path / "runs.json"
    run_parity("record", str(runs), "60", build="pure")
    pure = json.loads(run_parity("compute", str(runs), build="pure"))
    compiled = json.loads(run_parity("compute", str(runs)))

    assert (pure.pop("build"), compiled.pop("build")) == ("pure", "compiled")
    assert sum(run["inputs"] for run in pure["machine"]) > 1_000
    assert {run["format"] for run in pure["machine"]} == {1, 2}      # both rolling hash formats
    for part in pure:
        assert compiled[part] == pure[part], f"the builds differ in {part}"


def test_a_stale_compiled_build_falls_back_to_the_pure_source_and_warns(tmp_path: Path) -> None:
    copy = tmp_path / "exness_actors"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / _build.MANIFEST).write_text(json.dumps({"sources_sha256": "0" * 64}))
    probe = ("import exness_actors._build as b, exness_actors.engine as e, exness_actors.codec as c\n"
             "print(b.BUILD, e.__file__.endswith('.py'), c.__file__.endswith('.py'), sep=',')\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={**ENV, "PYTHONPATH": str(tmp_path)},
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "pure,True,True"
    assert "the compiled core is stale" in done.stderr


def test_the_manifest_digest_covers_every_compiled_module_and_what_it_was_compiled_against(tmp_path: Path) -> None:
    copy = tmp_path / "exness_actors"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    before = _build.source_digest(copy)
    for relative in _build.COMPILED_MODULES + _build.COMPILED_AGAINST:
        source = copy / relative
        original = source.read_bytes()
        source.write_bytes(original + b"\n")
        assert _build.source_digest(copy) != before, relative
        source.write_bytes(original)


def test_every_engine_module_is_compiled_and_every_core_import_of_theirs_is_tracked() -> None:
    """A pure module in the compiled engine's class chain breaks the compiled build at run time
    (mypyc checks the self type); a core module they import unlisted leaves a stale build unseen."""
    engine_modules = {f"engine/{path.name}" for path in (PACKAGE / "engine").glob("*.py")}
    assert engine_modules <= set(_build.COMPILED_MODULES)
    listed = set(_build.COMPILED_MODULES) | set(_build.COMPILED_AGAINST)
    for relative in _build.COMPILED_MODULES:
        source = (PACKAGE / relative).read_text()
        imported = {f"{name.replace('.', '/')}.py" for name in
                    re.findall(r"^from exness_actors\.([\w.]+) import", source, flags=re.M)}
        packages = {name for name in imported if (PACKAGE / name.removesuffix(".py")).is_dir()}
        assert imported - packages <= listed, (relative, sorted(imported - packages - listed))


def test_a_manifest_without_its_extension_modules_runs_the_pure_source(tmp_path: Path) -> None:
    copy = tmp_path / "exness_actors"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    (copy / _build.MANIFEST).write_text(json.dumps({"sources_sha256": _build.source_digest(copy)}))
    probe = "import exness_actors as c; print(c.BUILD, c.BUILD_REASON, sep=',')"
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={**ENV, "PYTHONPATH": str(tmp_path)},
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "pure,compiled build is incomplete: an extension module is missing"
