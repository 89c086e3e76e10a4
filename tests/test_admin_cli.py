"""``exness-actors operator``: operators are created on the command line only, with the password
from EXNESS_OPERATOR_PASSWORD or a prompt — never an argument — and can sign in at once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from types import SimpleNamespace

import pytest

from actors.cli import main
from actors.config import load_config
from actors.operators import PASSWORD_ENV, run_command
from gateway_helpers import API, running_gateway
from test_store import drop_schema
from web_helpers import ROOT

PASSWORD = "a long operator password"
CHEAP_ARGON2 = {"EXNESS_AUTH__ARGON2_TIME_COST": "1", "EXNESS_AUTH__ARGON2_MEMORY_KIB": "8",
                "EXNESS_AUTH__ARGON2_PARALLELISM": "1"}


@pytest.fixture
def cheap(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CHEAP_ARGON2.items():
        monkeypatch.setenv(name, value)


def test_create_list_set_role_disable_enable(tmp_path, monkeypatch, capsys, cheap) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    data = str(tmp_path)

    assert main(["operator", "create", " Ops@Broker.Example ", "--role", "risk", "--data-dir", data]) == 0
    created = capsys.readouterr().out
    assert main(["operator", "create", "ops@broker.example", "--role", "admin", "--data-dir", data]) == 1
    duplicate = capsys.readouterr().err
    assert main(["operator", "set-role", "ops@broker.example", "--role", "admin", "--data-dir", data]) == 0
    assert main(["operator", "disable", "ops@broker.example", "--data-dir", data]) == 0
    assert main(["operator", "list", "--data-dir", data]) == 0
    listed = capsys.readouterr().out.splitlines()[-1]
    assert main(["operator", "enable", "ops@broker.example", "--data-dir", data]) == 0
    assert main(["operator", "disable", "nobody@broker.example", "--data-dir", data]) == 1

    assert created.strip() == "created operator 1 ops@broker.example (risk)"
    assert "exists already" in duplicate
    assert listed.split() == ["1", "ops@broker.example", "admin", "disabled"]


def test_the_password_is_never_an_argument_and_is_checked(tmp_path, monkeypatch, capsys, cheap) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    cfg = load_config(overrides={"data": {"dir": str(tmp_path)}}, environ={})

    with pytest.raises(SystemExit):       # argparse: no such argument
        main(["operator", "create", "ops@broker.example", "--role", "admin", "--password", PASSWORD])
    no_terminal = run_command(cfg, SimpleNamespace(action="create", email="ops@broker.example", role="admin"),
                              interactive=False)
    answers = iter([PASSWORD, "something else"])
    mismatch = run_command(cfg, SimpleNamespace(action="create", email="ops@broker.example", role="admin"),
                           read_secret=lambda prompt: next(answers), interactive=True)
    short = run_command(cfg, SimpleNamespace(action="create", email="ops@broker.example", role="admin"),
                        read_secret=lambda prompt: "short", interactive=True)
    bad_role = run_command(cfg, SimpleNamespace(action="create", email="ops@broker.example", role="root"),
                           interactive=False)
    bad_email = run_command(cfg, SimpleNamespace(action="disable", email="not an address", role=None))
    prompted = run_command(cfg, SimpleNamespace(action="create", email="ops@broker.example", role="viewer"),
                           read_secret=lambda prompt: PASSWORD, interactive=True)
    errors = capsys.readouterr().err

    assert (no_terminal, mismatch, short, bad_role, bad_email, prompted) == (1, 1, 1, 1, 1, 0)
    assert PASSWORD_ENV in errors and "differ" in errors and "12 to 128" in errors
    assert "--role must be one of viewer, risk, admin" in errors and "not an e-mail address" in errors


async def test_an_operator_created_on_the_command_line_signs_in(tmp_path) -> None:
    env = {**CHEAP_ARGON2, PASSWORD_ENV: PASSWORD, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "supervisor", "operator", "create", "ops@broker.example",
                           "--role", "admin", "--data-dir", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    async with running_gateway(tmp_path) as h:
        _, pair = await h.call("POST", f"{API}/admin/signin", expect=200,
                               json={"email": "ops@broker.example", "password": PASSWORD})
        assert pair["role"] == "admin"


@pytest.mark.services
def test_operators_on_the_postgres_store(database_url, monkeypatch, capsys, cheap) -> None:
    schema = f"test_admin_cli_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("EXNESS_STORE__SCHEMA", schema)
    try:
        assert main(["operator", "create", "pg@broker.example", "--role", "viewer", "--store", "postgres"]) == 0
        assert main(["operator", "disable", "pg@broker.example", "--store", "postgres"]) == 0
        assert main(["operator", "list", "--store", "postgres"]) == 0
        listed = capsys.readouterr().out.splitlines()[-1]
        assert listed.split() == ["1", "pg@broker.example", "viewer", "disabled"]
    finally:
        asyncio.run(drop_schema(database_url, schema))
