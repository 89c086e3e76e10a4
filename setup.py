"""Build step only (the project's metadata is in pyproject.toml): copy the files the code reads
at run time from the repository root — config.toml and the SQL migrations, see
actors/_shipped.py — into the wheel as ``actors/_shipped/…``."""

import runpy
import shutil
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


setup(cmdclass={"build_py": BuildWithShippedFiles})
