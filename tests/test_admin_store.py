"""The store's back-office part (issue 13), against SQLite and PostgreSQL alike: operators and
their refresh tokens, the audit log the persister writes from ``OperatorAction`` events, and
the account owners the account search reads."""

from __future__ import annotations

import json
import re

import asyncpg
import pytest

from actors.store.base import DuplicateEmail, encode_cursor
from actors.store.postgres import audit_query
from exness_actors.events import OperatorAction
from test_store import (  # noqa: F401  (fixtures)
    SECOND, Tape, digest, open_store, plan_of, postgres_schema, postgres_store, postgres_url_and_schema,
    store, store_kind, walk,
)


def action(tape: Tape, operator_id: int, name: str, target: str, *, account_id=None,
           detail: str = "{}") -> OperatorAction:
    return OperatorAction(operator_id=operator_id, action=name, account_id=account_id, target=target,
                          reason=f"{name} {target}", detail=detail, ts=tape.next_ts())


async def audit_tape(store) -> Tape:
    """Five operator actions by two operators, one input carrying two events."""
    tape = Tape()
    tape.input(action(tape, 1, "halt", "BTCUSDT"))                                           # ts 1
    tape.input(tape.deposit(7, 100, 100))                                                    # not audit
    tape.input(action(tape, 2, "adjust_balance", "7", account_id=7, detail='{"amount":"25.00"}'))
    tape.input(action(tape, 1, "resume", "BTCUSDT"), action(tape, 1, "halt", "ETHUSDT"))     # ts 4, 2 rows
    tape.input(action(tape, 2, "close_position", "9", account_id=7))                         # ts 5
    await store.apply_batch(tape.batch())
    return tape


# ------------------------------------------------------------------ operators


async def test_operators_are_created_found_listed_and_unique(store) -> None:
    first = await store.create_operator("ops@example.com", "hash1", role="admin", created_at=5)
    second = await store.create_operator("risk@example.com", "hash2", role="risk", created_at=6)

    assert (first.operator_id, first.role, first.disabled) == (1, "admin", False)
    assert second.operator_id == 2
    with pytest.raises(DuplicateEmail):
        await store.create_operator("ops@example.com", "other", role="viewer", created_at=7)
    assert await store.operator_by_email("ops@example.com") == first
    assert await store.operator_by_id(2) == second
    assert await store.operator_by_id(99) is None and await store.operator_by_email("x@example.com") is None
    assert [operator.email for operator in await store.operators()] == ["ops@example.com", "risk@example.com"]
    # a trader with the same e-mail is someone else (another table)
    user = await store.create_user("ops@example.com", "h", created_at=0)
    assert user.user_id == 1


async def test_disabling_an_operator_revokes_their_refresh_tokens(store) -> None:
    operator = await store.create_operator("ops@example.com", "h", role="risk", created_at=0)
    await store.add_operator_refresh_token(digest("o1"), operator_id=operator.operator_id, family_id="f",
                                           issued_at=0, expires_at=100 * SECOND)

    demoted = await store.update_operator("ops@example.com", role="viewer", now=SECOND)
    rotated = await store.rotate_operator_refresh_token(digest("o1"), new_hash=digest("o2"), now=SECOND,
                                                        expires_at=100 * SECOND)
    disabled = await store.update_operator("ops@example.com", disabled=True, now=2 * SECOND)

    assert (demoted.role, demoted.disabled) == ("viewer", False)
    assert (rotated.outcome, rotated.user_id, rotated.account_id) == ("rotated", operator.operator_id, None)
    assert (disabled.role, disabled.disabled) == ("viewer", True)
    assert (await store.rotate_operator_refresh_token(digest("o2"), new_hash=digest("o3"), now=3 * SECOND,
                                                      expires_at=100 * SECOND)).outcome == "revoked"
    assert (await store.update_operator("ops@example.com", disabled=False)).disabled is False
    assert await store.update_operator("nobody@example.com", role="admin") is None


async def test_operator_refresh_tokens_rotate_and_reuse_revokes_the_family(store) -> None:
    operator = await store.create_operator("ops@example.com", "h", role="admin", created_at=0)
    await store.add_operator_refresh_token(digest("a"), operator_id=operator.operator_id, family_id="fam",
                                           issued_at=0, expires_at=100 * SECOND)
    # a trader's token table is another table: an operator's digest is unknown there
    assert (await store.rotate_refresh_token(digest("a"), new_hash=digest("x"), now=SECOND,
                                             expires_at=SECOND)).outcome == "unknown"

    assert (await store.rotate_operator_refresh_token(digest("a"), new_hash=digest("b"), now=SECOND,
                                                      expires_at=100 * SECOND)).outcome == "rotated"
    assert (await store.rotate_operator_refresh_token(digest("a"), new_hash=digest("c"), now=2 * SECOND,
                                                      expires_at=100 * SECOND)).outcome == "reused"
    assert (await store.rotate_operator_refresh_token(digest("b"), new_hash=digest("d"), now=3 * SECOND,
                                                      expires_at=100 * SECOND)).outcome == "revoked"
    assert await store.revoke_operator_refresh_family(digest("b"), now=4 * SECOND)
    assert not await store.revoke_operator_refresh_family(digest("nope"), now=4 * SECOND)


# ------------------------------------------------------------------ the audit log


async def test_operator_actions_become_audit_rows_newest_first(store) -> None:
    await audit_tape(store)

    page = await store.audit()

    assert [(entry.seq, entry.index, entry.action, entry.target) for entry in page.items] == [
        (5, 0, "close_position", "9"), (4, 1, "halt", "ETHUSDT"), (4, 0, "resume", "BTCUSDT"),
        (3, 0, "adjust_balance", "7"), (1, 0, "halt", "BTCUSDT")]
    adjust = page.items[3]
    assert (adjust.shard, adjust.operator_id, adjust.account_id, adjust.reason) == (0, 2, 7, "adjust_balance 7")
    assert json.loads(adjust.detail) == {"amount": "25.00"}
    assert page.items[4].account_id is None and page.next_cursor is None


@pytest.mark.parametrize("limit", [1, 2, 10])
async def test_audit_pages_and_filters(store, limit: int) -> None:
    tape = await audit_tape(store)
    ts = [MONDAY_SECOND * SECOND + seq * SECOND for seq in range(6)]

    every = await walk(store.audit, limit)
    by_operator = await walk(store.audit, limit, operator_id=1)
    halts = await walk(store.audit, limit, action="halt")
    window = await walk(store.audit, limit, start=ts[3], end=ts[5])

    assert [entry.seq for entry in every] == [5, 4, 4, 3, 1]
    assert [(entry.seq, entry.index) for entry in by_operator] == [(4, 1), (4, 0), (1, 0)]
    assert [entry.target for entry in halts] == ["ETHUSDT", "BTCUSDT"]
    assert [entry.seq for entry in window] == [4, 4, 3]
    assert tape.seq == 5


async def test_audit_rows_past_a_repair_cut_are_removed(store) -> None:
    await audit_tape(store)

    cut = await store.cut_history(0, 3)

    assert cut.removed["audit_log"] == 3 and cut.accounts == [7]
    assert [entry.seq for entry in (await store.audit()).items] == [3, 1]


async def test_each_shard_keeps_its_own_audit_rows(store) -> None:
    tape = Tape()
    tape.input(action(tape, 1, "halt", "BTCUSDT"))
    batch = tape.batch()
    await store.apply_batch(batch, shard=0)
    await store.apply_batch(batch, shard=1)     # shard 1's seq 1 is another input

    assert sorted(entry.shard for entry in (await store.audit()).items) == [0, 1]


# ------------------------------------------------------------------ account owners


async def test_account_owners_by_email_part_and_by_id(store) -> None:
    for email in ("alice@example.com", "bob@example.com", "alice.b@other.org"):
        await store.create_user(email, "h", created_at=0)

    matching = await store.account_owners_matching("alice")
    after_first = await store.account_owners_matching("alice", after=1)
    owners = await store.account_owners([3, 1, 42])

    assert [(owner.account_id, owner.email) for owner in matching] == [(1, "alice@example.com"),
                                                                      (3, "alice.b@other.org")]
    assert [owner.account_id for owner in after_first] == [3]
    assert await store.account_owners_matching("%") == [] and await store.account_owners([]) == {}
    assert sorted(owners) == [1, 3] and owners[1].user_id == 1


# ------------------------------------------------------------------ PostgreSQL only

MONDAY_SECOND = 1_704_067_200


@pytest.mark.services
@pytest.mark.parametrize("filters, index", [
    pytest.param({}, "audit_log_by_time", id="all"),
    pytest.param({"operator_id": 2}, "audit_log_by_operator", id="operator"),
    pytest.param({"action": "halt", "cursor": encode_cursor("audit", 10, 0, 3, 0)}, "audit_log_by_action",
                 id="action-cursor"),
])
async def test_postgres_audit_pages_walk_an_index(postgres_store, filters, index) -> None:
    await audit_tape(postgres_store)
    arguments = {"operator_id": None, "action": None, "start": None, "end": None, "cursor": None, "limit": 50,
                 **filters}
    sql, args = audit_query(**arguments)

    async def explain(connection: asyncpg.Connection) -> list:
        async with connection.transaction():
            await connection.execute("SET LOCAL enable_seqscan = off")
            await connection.execute("SET LOCAL enable_bitmapscan = off")
            return await connection.fetch(f"EXPLAIN {sql}", *args)

    plan = plan_of(await postgres_store.run_with_connection(explain))

    assert re.search(rf"Index Scan( Backward)? using {index} ", plan), plan
    assert "Sort" not in plan, plan
