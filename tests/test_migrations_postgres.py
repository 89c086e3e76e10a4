"""PostgreSQL migrations: the runner of actors/store/postgres.py and `exness-actors migrate`.

Each test works in a fresh, uniquely named schema (dropped afterwards) of the real server at
``database_url``; without a server the tests are skipped, under EXNESS_REQUIRE_SERVICES=1 they fail.
The runner is asyncio code (it runs on the store's bridge), so these are plain functions driving it
with ``asyncio.run``; the CLI tests call ``cli.main`` like a shell would.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from actors import cli
from actors.store.postgres import (
    MigrationError, apply_migrations, load_migrations, pending_migrations, quote_identifier,
)

pytestmark = pytest.mark.services

SHIPPED = [migration.stem for migration in load_migrations()]


@pytest.fixture
def schema(database_url: str) -> str:
    name = f"test_migrate_{uuid.uuid4().hex[:12]}"
    yield name

    async def drop() -> None:
        connection = await asyncpg.connect(database_url, timeout=5)
        try:
            await connection.execute(f"DROP SCHEMA IF EXISTS {quote_identifier(name)} CASCADE")
        finally:
            await connection.close()
    asyncio.run(drop())


def with_connection(url: str, schema: str, work: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
    """Run ``work(connection)`` on a connection whose search_path is ``schema`` only."""
    async def main() -> Any:
        connection = await asyncpg.connect(url, timeout=5,
                                           server_settings={"search_path": quote_identifier(schema)})
        try:
            return await work(connection)
        finally:
            await connection.close()
    return asyncio.run(main())


def migrate(url: str, schema: str, directory: Path | None = None) -> list[str]:
    migrations = load_migrations() if directory is None else load_migrations(directory)
    return with_connection(url, schema, lambda c: apply_migrations(c, migrations, schema=schema))


def tables(url: str, schema: str) -> set[str]:
    async def work(connection: asyncpg.Connection) -> set[str]:
        rows = await connection.fetch("SELECT table_name FROM information_schema.tables "
                                      "WHERE table_schema = $1", schema)
        return {row[0] for row in rows}
    return with_connection(url, schema, work)


def recorded(url: str, schema: str) -> list[tuple]:
    return with_connection(url, schema, lambda c: c.fetch(
        "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"))


def write(directory: Path, name: str, sql: str) -> Path:
    path = directory / name
    path.write_text(sql, encoding="utf-8")
    return path


# ------------------------------------------------------------------ the shipped migrations

def test_migrations_apply_from_empty_and_a_rerun_is_a_no_op(database_url: str, schema: str) -> None:
    assert SHIPPED[:4] == ["0001_init", "0002_users", "0003_timescale", "0004_shards"]

    assert migrate(database_url, schema) == SHIPPED

    assert {"candles_1m", "positions", "closed_positions", "orders", "ledger", "persister_shards",
            "users", "refresh_tokens", "schema_migrations"} <= tables(database_url, schema)
    rows = recorded(database_url, schema)
    assert [f"{row['version']}_{row['name']}" for row in rows] == SHIPPED
    assert [row["checksum"] for row in rows] == [m.checksum for m in load_migrations()]
    assert all(row["applied_at"] is not None for row in rows)

    assert migrate(database_url, schema) == []
    assert len(recorded(database_url, schema)) == len(SHIPPED)
    assert with_connection(database_url, schema,
                           lambda c: pending_migrations(c, load_migrations())) == []


def test_the_timescale_migration_is_a_no_op_without_the_extension(database_url: str, schema: str,
                                                                    caplog) -> None:
    async def timescale_usable(connection: asyncpg.Connection) -> bool:
        return await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') OR ("
            " EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')"
            " AND current_setting('shared_preload_libraries') LIKE '%timescaledb%')")
    if with_connection(database_url, schema, timescale_usable):
        pytest.skip("this server has TimescaleDB: test_candles_become_a_hypertable_with_timescale covers it")
    caplog.set_level(logging.INFO, logger="exness.store")

    migrate(database_url, schema)

    async def state(connection: asyncpg.Connection) -> tuple:
        kind = await connection.fetchval("SELECT relkind::text FROM pg_class WHERE oid = 'candles_1m'::regclass")
        function = await connection.fetchval("SELECT to_regproc('candles_now_ns')")
        extension = await connection.fetchval(
            "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
        key = await connection.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'candles_1m'::regclass "
            "AND contype = 'p'")
        return kind, function, extension, key
    assert with_connection(database_url, schema, state) == ("r", None, 0, "PRIMARY KEY (symbol, open_time)")
    assert "0003_timescale" in [f"{r['version']}_{r['name']}" for r in recorded(database_url, schema)]
    assert "timescaledb is not available" in caplog.text


def test_candles_become_a_hypertable_with_timescale(database_url: str, schema: str) -> None:
    async def installed_after(connection: asyncpg.Connection) -> bool:
        return await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')"
            " AND current_setting('shared_preload_libraries') LIKE '%timescaledb%'")
    if not with_connection(database_url, schema, installed_after):
        pytest.skip("TimescaleDB is not available on this server (the no-op is tested instead)")

    migrate(database_url, schema)

    hypertables = with_connection(database_url, schema, lambda c: c.fetch(
        "SELECT hypertable_name FROM timescaledb_information.hypertables WHERE hypertable_schema = $1",
        schema))
    assert [row[0] for row in hypertables] == ["candles_1m"]


def test_concurrent_migrators_apply_each_migration_once(database_url: str, schema: str) -> None:
    migrations = load_migrations()

    async def race() -> list[list[str]]:
        async def one() -> list[str]:
            connection = await asyncpg.connect(
                database_url, timeout=5, server_settings={"search_path": quote_identifier(schema)})
            try:
                return await apply_migrations(connection, migrations, schema=schema)
            finally:
                await connection.close()
        return await asyncio.gather(one(), one(), one())

    results = asyncio.run(race())

    assert sorted(stem for result in results for stem in result) == SHIPPED
    assert len(recorded(database_url, schema)) == len(SHIPPED)


# ------------------------------------------------------------------ the runner, on made-up migrations

def test_slow_concurrent_migrations_are_applied_by_one_migrator(database_url: str, schema: str,
                                                                tmp_path: Path) -> None:
    # A slow first migration keeps the window open: without the lock both would run it (and the
    # second CREATE TABLE would fail).
    write(tmp_path, "0001_slow.sql", "CREATE TABLE slow (id int); SELECT pg_sleep(0.3);")
    write(tmp_path, "0002_next.sql", "CREATE TABLE next (id int);")
    migrations = load_migrations(tmp_path)

    async def race() -> list[list[str]]:
        async def one() -> list[str]:
            connection = await asyncpg.connect(
                database_url, timeout=5, server_settings={"search_path": quote_identifier(schema)})
            try:
                return await apply_migrations(connection, migrations, schema=schema)
            finally:
                await connection.close()
        return await asyncio.gather(one(), one())

    results = asyncio.run(race())

    assert sorted(stem for result in results for stem in result) == ["0001_slow", "0002_next"]
    assert {"slow", "next"} <= tables(database_url, schema)


def test_a_failing_migration_leaves_nothing_half_applied(database_url: str, schema: str,
                                                         tmp_path: Path) -> None:
    write(tmp_path, "0001_first.sql", "CREATE TABLE first_table (id int);")
    broken = write(tmp_path, "0002_broken.sql",
                   "CREATE TABLE half_done (id int);\nINSERT INTO half_done VALUES (1);\n"
                   "SELECT 1 / 0;\n")
    write(tmp_path, "0003_after.sql", "CREATE TABLE after_table (id int);")

    with pytest.raises(MigrationError) as failure:
        migrate(database_url, schema, tmp_path)

    message = str(failure.value)
    assert "0002_broken" in message and "rolled back" in message and "division by zero" in message
    assert str(broken) in message
    assert tables(database_url, schema) == {"schema_migrations", "first_table"}
    assert [row["version"] for row in recorded(database_url, schema)] == ["0001"]

    # fixed, the run goes on from the failed one
    write(tmp_path, "0002_broken.sql", "CREATE TABLE half_done (id int);")
    assert migrate(database_url, schema, tmp_path) == ["0002_broken", "0003_after"]
    assert {"half_done", "after_table"} <= tables(database_url, schema)


def test_a_changed_applied_migration_is_an_error(database_url: str, schema: str,
                                                 tmp_path: Path) -> None:
    write(tmp_path, "0001_first.sql", "CREATE TABLE first_table (id int);")
    migrate(database_url, schema, tmp_path)
    write(tmp_path, "0001_first.sql", "CREATE TABLE first_table (id bigint);")
    write(tmp_path, "0002_second.sql", "CREATE TABLE second_table (id int);")

    with pytest.raises(MigrationError, match=r"0001_first was applied with checksum .* must not change"):
        migrate(database_url, schema, tmp_path)
    with pytest.raises(MigrationError, match="0001_first"):
        with_connection(database_url, schema,
                        lambda c: pending_migrations(c, load_migrations(tmp_path)))

    assert "second_table" not in tables(database_url, schema)


def test_migration_files_are_named_and_numbered(tmp_path: Path) -> None:
    write(tmp_path, "0001_first.sql", "SELECT 1;")
    write(tmp_path, "0001_again.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match="one version 0001"):
        load_migrations(tmp_path)

    (tmp_path / "0001_again.sql").unlink()
    write(tmp_path, "2_Bad-Name.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_name.sql"):
        load_migrations(tmp_path)

    (tmp_path / "2_Bad-Name.sql").unlink()
    write(tmp_path, "0002_commits.sql", "CREATE TABLE t (id int);\ncommit;\nCREATE TABLE u (id int);")
    with pytest.raises(MigrationError, match="0002_commits.sql: 'commit'.*must not control transactions"):
        load_migrations(tmp_path)
    write(tmp_path, "0002_commits.sql", "DO $$\nBEGIN\n  PERFORM 1;\nEND\n$$;")
    assert [m.stem for m in load_migrations(tmp_path)] == ["0001_first", "0002_commits"]


# ------------------------------------------------------------------ exness-actors migrate

def with_password(url: str, password: str) -> str:
    """``url`` with a password (the test server trusts local connections, so any will do)."""
    parts = urlsplit(url)
    if parts.password is not None or parts.username is None:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{password}@{parts.netloc.split('@', 1)[1]}"))


def test_the_migrate_command_applies_the_postgres_migrations(database_url: str, schema: str,
                                                             monkeypatch, capsys) -> None:
    url = with_password(database_url, "sekret-pw")
    password = urlsplit(url).password
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("EXNESS_STORE__SCHEMA", schema)

    assert cli.main(["migrate", "--store", "postgres"]) == 0
    first = capsys.readouterr().out
    assert cli.main(["migrate", "--store", "postgres"]) == 0
    second = capsys.readouterr().out

    assert all(stem in first for stem in SHIPPED) and f"applied {len(SHIPPED)}" in first, first
    assert "no pending migrations" in second and "up to date" in second, second
    assert "candles_1m is a plain indexed table" in first or "hypertable" in first
    assert schema in first and password not in first + second     # where, never the password


def test_the_migrate_command_reports_a_failure(monkeypatch, capsys) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")   # no server
    monkeypatch.setenv("EXNESS_STORE__SCHEMA", "unused")

    assert cli.main(["migrate", "--store", "postgres"]) == 1

    error = capsys.readouterr().err
    assert "exness-actors migrate:" in error and "127.0.0.1:1/nowhere" in error, error


def test_the_migrate_command_keeps_the_sqlite_path(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("EXNESS_STORE__KIND", raising=False)

    assert cli.main(["migrate", "--data-dir", str(tmp_path)]) == 0
    assert cli.main(["migrate", "--data-dir", str(tmp_path), "--store", "sqlite"]) == 0

    out = capsys.readouterr().out
    assert "0001_init" in out and "no pending migrations" in out, out
    assert (tmp_path / "exness.sqlite3").exists()


def test_migration_0016_backfills_each_users_account_and_its_refresh_tokens(database_url: str, schema: str,
                                                                            tmp_path: Path) -> None:
    """A database from before issue 16: one account per user (id = user id). After 0016 each user
    holds that account (isolated, demo, as ready as it was), refresh tokens name it, and the
    accounts' identity hands out ids past every existing one."""
    old = tmp_path / "old"
    old.mkdir()
    for migration in load_migrations():
        if migration.version < "0016":
            write(old, migration.path.name, migration.sql)
    migrate(database_url, schema, old)

    async def seed(connection: asyncpg.Connection) -> None:
        for user_id, ready in ((1, True), (2, False)):
            await connection.execute(
                "INSERT INTO users (email, password_hash, account_id, account_ready, created_at) "
                "OVERRIDING SYSTEM VALUE SELECT $1, 'h', $2, $3, $4", f"u{user_id}@example.com", user_id,
                ready, user_id * 10)
        await connection.execute("INSERT INTO refresh_tokens (token_hash, user_id, family_id, issued_at, "
                                 "expires_at) VALUES ($1, 2, 'fam', 0, 100)", b"t" * 32)
    with_connection(database_url, schema, seed)

    assert migrate(database_url, schema)[0] == "0016_accounts"          # (and any later ones)

    async def check(connection: asyncpg.Connection) -> tuple:
        accounts = [tuple(row) for row in await connection.fetch(
            "SELECT account_id, user_id, account_type, demo, ready, created_at FROM accounts ORDER BY 1")]
        token_account = await connection.fetchval("SELECT account_id FROM refresh_tokens")
        fresh = await connection.fetchval("INSERT INTO accounts (user_id, account_type, demo, created_at) "
                                          "VALUES (1, 'raw_spread', true, 30) RETURNING account_id")
        columns = {row[0] for row in await connection.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND "
            "table_name = 'users'", schema)}
        return accounts, token_account, fresh, columns
    accounts, token_account, fresh, columns = with_connection(database_url, schema, check)
    assert accounts == [(1, 1, "isolated", True, True, 10), (2, 2, "isolated", True, False, 20)]
    assert token_account == 2 and fresh == 3
    assert "account_ready" not in columns and "account_id" in columns


def test_migration_0016_on_an_empty_database_starts_account_ids_at_1(database_url: str, schema: str) -> None:
    migrate(database_url, schema)
    first = with_connection(database_url, schema, lambda c: c.fetchval(
        "INSERT INTO users (email, password_hash, account_id, created_at) VALUES ('a@b.c', 'h', 0, 0) "
        "RETURNING user_id"))
    account = with_connection(database_url, schema, lambda c: c.fetchval(
        "INSERT INTO accounts (user_id, account_type, demo, created_at) VALUES ($1, 'standard', true, 0) "
        "RETURNING account_id", first))
    assert (first, account) == (1, 1)
