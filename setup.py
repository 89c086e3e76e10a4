"""Build step only (the project's metadata is in pyproject.toml): copy the files the code reads
at run time from the repository root — config.toml and the SQL migrations, see
actors/_shipped.py — into the wheel as ``actors/_shipped/…``; and compile the core's hot modules
with mypyc from their unchanged ``.py`` source where it can (see exness_actors/_build.py).

``EXNESS_COMPILE`` chooses: ``auto`` (the default) compiles when mypyc and a C compiler are there
and builds pure Python otherwise; ``1`` compiles or fails; ``0`` never compiles."""

import json
import os
import runpy
import shutil
import sysconfig
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# the list the code looks up (read from the file: importing the package would need its dependencies)
SHIPPED = runpy.run_path(str(ROOT / "actors" / "_shipped.py"))["SHIPPED"]


class BuildWithShippedFiles(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "actors" / "_shipped"
        for relative in SHIPPED:
            source, destination = ROOT / relative, target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, destination, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, destination)


BUILD = runpy.run_path(str(ROOT / "exness_actors" / "_build.py"), run_name="exness_actors._build_for_setup")


def _can_compile() -> bool:
    """mypyc importable, a C compiler on PATH and the Python headers installed."""
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return False
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return shutil.which(compiler) is not None and headers.exists()


def compiled_extensions() -> list:
    """The mypyc extension modules, after writing the manifest of the sources they come from."""
    choice = os.environ.get("EXNESS_COMPILE", "auto")
    manifest = ROOT / "exness_actors" / BUILD["MANIFEST"]
    manifest.unlink(missing_ok=True)
    if choice == "0" or (choice == "auto" and not _can_compile()):
        return []
    from mypyc.build import mypycify

    manifest.write_text(json.dumps({"sources_sha256": BUILD["source_digest"](ROOT / "exness_actors")}) + "\n")
    return mypycify([f"exness_actors/{relative}" for relative in BUILD["COMPILED_MODULES"]], opt_level="3")


setup(cmdclass={"build_py": BuildWithShippedFiles}, ext_modules=compiled_extensions())
