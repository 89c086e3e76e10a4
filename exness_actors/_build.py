"""Which build of the core this process runs: the mypyc-compiled modules or the pure Python source.

Theory of operation: the pure ``.py`` files are the single source of truth. ``setup.py`` may
compile :data:`COMPILED_MODULES` with mypyc from those same files; it then writes
:data:`MANIFEST` holding a digest of their sources (and of :data:`COMPILED_AGAINST`). Python
prefers an extension module to a ``.py`` of the same name, so this module (imported first, by the
package's ``__init__``) decides before any of them is imported:

- ``EXNESS_CORE_BUILD=pure`` in the environment, no manifest, a manifest whose digest is not the
  sources' on disk (someone edited the core since the build) or a missing extension module: a
  finder at the front of ``sys.meta_path`` loads every compiled module from its ``.py`` instead —
  never a mix, never stale compiled code. A stale build also warns.
- otherwise the compiled modules load as usual.

:data:`BUILD` says which (``"compiled"`` or ``"pure"``) and :data:`BUILD_REASON` why; the platform
logs both at start. Invariant: the compiled modules are all loaded from one build or none is.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Optional, Sequence

__all__ = ["BUILD", "BUILD_REASON", "COMPILED_AGAINST", "COMPILED_MODULES", "MANIFEST", "source_digest"]

#: The modules mypyc compiles (the hot path of apply and replay), as paths under the package root.
COMPILED_MODULES: tuple[str, ...] = (
    "engine/__init__.py", "engine/_accounts.py", "engine/_broker.py", "engine/_cross.py", "engine/_hashing.py",
    "engine/_invariants.py", "engine/_market.py",
    "engine/_orders.py", "engine/_positions.py", "engine/_queries.py", "engine/_serialization.py",
    "engine/_state.py", "engine/_validation.py", "triggers.py", "money.py", "model.py", "codec.py", "replay.py",
)
#: Modules the compiled ones import and were compiled against (mypyc bakes their annotations in as
#: run-time checks): a change in them makes the compiled build stale too.
COMPILED_AGAINST: tuple[str, ...] = ("account_types.py", "commands.py", "errors.py", "events.py", "instruments.py",
                                     "reasons.py")
#: Written by setup.py next to the compiled modules: ``{"sources_sha256": …}``.
MANIFEST = "_compiled.json"
PACKAGE = "exness_actors"
PACKAGE_DIR = Path(__file__).resolve().parent


def source_digest(package_dir: Path = PACKAGE_DIR) -> str:
    """SHA-256 over the names and source bytes of the compiled modules and what they were compiled against."""
    digest = hashlib.sha256()
    for relative in COMPILED_MODULES + COMPILED_AGAINST:
        digest.update(relative.encode() + b"\0" + (package_dir / relative).read_bytes() + b"\0")
    return digest.hexdigest()


def _module_name(relative: str) -> str:
    dotted = relative.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    return f"{PACKAGE}.{dotted}"


class _SourceFirstFinder(importlib.abc.MetaPathFinder):
    """Finds each compiled module's ``.py`` ahead of its extension module."""

    def __init__(self, sources: dict[str, Path]) -> None:
        self.sources = sources

    def find_spec(self, fullname: str, path: Optional[Sequence[str]] = None,
                  target: Optional[ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        source = self.sources.get(fullname)
        if source is None:
            return None
        locations = [str(source.parent)] if source.name == "__init__.py" else None
        return importlib.util.spec_from_file_location(fullname, source, submodule_search_locations=locations)


def _compiled_build_state() -> tuple[str, str]:
    """(build, reason) for this process, from the environment and the manifest."""
    if os.environ.get("EXNESS_CORE_BUILD", "") == "pure":
        return "pure", "EXNESS_CORE_BUILD=pure"
    manifest = PACKAGE_DIR / MANIFEST
    if not manifest.exists():
        return "pure", "no compiled build installed"
    recorded = json.loads(manifest.read_text()).get("sources_sha256")
    if recorded != source_digest():
        warnings.warn("the compiled core is stale (its sources changed since the build): running the "
                      "pure Python core; rebuild with `pip install -e .` to compile again", stacklevel=2)
        return "pure", "compiled build is stale: sources changed since it was built"
    if not all(_has_extension(relative) for relative in COMPILED_MODULES):
        return "pure", "compiled build is incomplete: an extension module is missing"
    return "compiled", "mypyc build matches the sources"


def _has_extension(relative: str) -> bool:
    stem = PACKAGE_DIR / relative.removesuffix(".py")
    return any(stem.with_name(stem.name + suffix).exists() for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def _select() -> tuple[str, str]:
    build, reason = _compiled_build_state()
    if build == "pure":
        sources = {_module_name(relative): PACKAGE_DIR / relative for relative in COMPILED_MODULES}
        sys.meta_path.insert(0, _SourceFirstFinder(sources))
    return build, reason


# setup.py runs this file for its names only: choose a build when imported as the package's module.
BUILD, BUILD_REASON = _select() if __name__ == f"{PACKAGE}._build" else ("pure", "read by setup.py")
