"""README.md tells a newcomer the truth about `exness-actors run`: its ready lines, its flags and the
files of a fresh data dir, checked against the real CLI parser and a real run."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import trio

import supervisor
from actors import cli
from actors.config import load_config

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def _ready_block() -> list[str]:
    running = _section("Running it")
    start = running.index("```\n") + 4
    return running[start:running.index("```", start)].strip().splitlines()


def _pattern(documented: str) -> re.Pattern:
    """The documented line with its run-dependent parts (numbers, the data dir's path) left open."""
    pattern = re.sub(r"\d+", r"\\d+", re.escape(documented))
    return re.compile(pattern.replace(re.escape("/…/data"), ".+/data") + "$")


async def test_readme_shows_the_ready_lines_and_the_files_of_a_fresh_run(tmp_path, capsys) -> None:
    cfg = load_config(environ={}, overrides={
        "data": {"dir": str(tmp_path / "data")}, "http": {"port": 0}, "ws": {"port": 0},
        "journal": {"fsync": "off"}, "snapshot": {"interval_s": 3600},
        "auth": {"argon2_time_cost": 1, "argon2_memory_kib": 8, "argon2_parallelism": 1}})
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            system = await nursery.start(functools.partial(supervisor.run_system, cfg, announce=True,
                                                           handle_signals=False))
            system.request_shutdown()
    printed = capsys.readouterr().out.strip().splitlines()
    documented = _ready_block()
    assert len(printed) == len(documented)
    for line, shown in zip(printed, documented):
        assert _pattern(shown).match(line), (shown, line)
    assert "ready at seq 0 " in printed[0] and "ready at seq 0 " in documented[0]   # a fresh dir
    data_dir_paragraph = _section("Running it").split("The data dir holds", 1)[1].split("\n\n", 1)[0]
    for name in sorted(path.name for path in (tmp_path / "data").iterdir()):
        assert f"`{name}" in data_dir_paragraph, f"README's data dir list omits {name}"


def test_readme_flag_table_lists_every_run_flag() -> None:
    parser = cli._build_parser()
    commands = next(action for action in parser._actions if action.dest == "command")
    run = commands.choices["run"]
    flags = {flag for action in run._actions for flag in action.option_strings if flag.startswith("--")}
    table = _section("Running it").split("| flag | meaning |", 1)[1].split("\n\n", 1)[0]
    missing = sorted(flag for flag in flags - {"--help"} if f"`{flag}" not in table and f", {flag}" not in table)
    assert missing == []
