"""Users and refresh tokens in the store (migration 0002), as the gateway uses them."""

from __future__ import annotations

import hashlib

import pytest
import trio

from actors.store.base import DuplicateEmail
from actors.store.sqlite import SqliteStore

SECOND = 1_000_000_000


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@pytest.fixture
async def store(tmp_path):
    store = await SqliteStore.open(tmp_path)
    yield store
    await store.close()


async def test_migration_0002_is_applied_once(tmp_path) -> None:
    first = await SqliteStore.open(tmp_path)
    assert "0002_users" in first.migrations_applied
    await first.close()
    again = await SqliteStore.open(tmp_path)
    assert again.migrations_applied == []
    await again.close()


async def test_users_get_their_own_account_id_and_unique_emails(store) -> None:
    alice = await store.create_user("alice@example.com", "hash-a", created_at=1)
    bob = await store.create_user("bob@example.com", "hash-b", created_at=2)
    assert (alice.user_id, alice.account_id, alice.account_ready) == (1, 1, False)
    assert bob.account_id == bob.user_id == 2
    with pytest.raises(DuplicateEmail):
        await store.create_user("alice@example.com", "other", created_at=3)
    assert await store.user_by_email("alice@example.com") == alice
    assert await store.user_by_email("nobody@example.com") is None
    await store.mark_account_ready(alice.user_id)
    assert (await store.user_by_id(alice.user_id)).account_ready
    assert await store.user_by_id(99) is None
    third = await store.create_user("carol@example.com", "hash-c", created_at=4)
    assert third.user_id == 3                 # the failed insert used no id


async def test_refresh_rotation_outcomes(store) -> None:
    user = await store.create_user("rot@example.com", "h", created_at=0)
    await store.add_refresh_token(digest("t1"), user_id=user.user_id, family_id="fam", issued_at=0,
                                  expires_at=100 * SECOND)
    rotated = await store.rotate_refresh_token(digest("t1"), new_hash=digest("t2"), now=SECOND,
                                               expires_at=200 * SECOND)
    assert (rotated.outcome, rotated.user_id, rotated.account_id, rotated.family_id) == (
        "rotated", user.user_id, user.account_id, "fam")
    assert (await store.rotate_refresh_token(digest("nope"), new_hash=digest("x"), now=SECOND,
                                             expires_at=SECOND)).outcome == "unknown"
    # the spent t1 again: the family (t1, t2) is revoked
    reused = await store.rotate_refresh_token(digest("t1"), new_hash=digest("t3"), now=2 * SECOND,
                                              expires_at=200 * SECOND)
    assert reused.outcome == "reused"
    assert (await store.rotate_refresh_token(digest("t2"), new_hash=digest("t4"), now=3 * SECOND,
                                             expires_at=300 * SECOND)).outcome == "revoked"
    assert (await store.rotate_refresh_token(digest("t3"), new_hash=digest("t5"), now=3 * SECOND,
                                             expires_at=300 * SECOND)).outcome == "unknown"


async def test_refresh_expiry_signout_and_purge(store) -> None:
    user = await store.create_user("exp@example.com", "h", created_at=0)
    await store.add_refresh_token(digest("a"), user_id=user.user_id, family_id="f1", issued_at=0,
                                  expires_at=10 * SECOND)
    await store.add_refresh_token(digest("b"), user_id=user.user_id, family_id="f2", issued_at=0,
                                  expires_at=100 * SECOND)
    assert (await store.rotate_refresh_token(digest("a"), new_hash=digest("a2"), now=10 * SECOND,
                                             expires_at=20 * SECOND)).outcome == "expired"
    assert await store.revoke_refresh_family(digest("b"), now=SECOND)
    assert not await store.revoke_refresh_family(digest("zzz"), now=SECOND)
    assert (await store.rotate_refresh_token(digest("b"), new_hash=digest("b2"), now=2 * SECOND,
                                             expires_at=20 * SECOND)).outcome == "revoked"
    assert await store.purge_refresh_tokens(before=50 * SECOND) == 1
    assert (await store.rotate_refresh_token(digest("a"), new_hash=digest("a3"), now=SECOND,
                                             expires_at=20 * SECOND)).outcome == "unknown"


async def test_concurrent_rotations_of_one_token_cannot_both_win(store) -> None:
    user = await store.create_user("race@example.com", "h", created_at=0)
    await store.add_refresh_token(digest("r"), user_id=user.user_id, family_id="race", issued_at=0,
                                  expires_at=100 * SECOND)
    outcomes: list[str] = []

    async def rotate(new: str) -> None:
        result = await store.rotate_refresh_token(digest("r"), new_hash=digest(new), now=SECOND,
                                                  expires_at=50 * SECOND)
        outcomes.append(result.outcome)

    async with trio.open_nursery() as nursery:
        for index in range(4):
            nursery.start_soon(rotate, f"new{index}")
    assert sorted(outcomes) == ["reused", "revoked", "revoked", "rotated"]


async def test_migration_0016_backfills_each_users_account_and_its_refresh_tokens(tmp_path) -> None:
    """A data dir from before issue 16: one account per user (id = user id), refresh tokens
    without an account. After 0016 each user holds that account (isolated, demo, as ready as it
    was), refresh keeps it, and new accounts take ids past every existing one."""
    from actors.store.sqlite import MIGRATIONS_DIR

    old = tmp_path / "old-migrations"
    old.mkdir()
    for script in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if script.name < "0016":
            (old / script.name).write_text(script.read_text())
    data = tmp_path / "data"
    before = await SqliteStore.open(data, migrations_dir=old)
    assert "0016_accounts" not in before.migrations_applied
    connection = before._connection
    for user_id, ready in ((1, 1), (2, 0), (3, 1)):
        connection.execute("INSERT INTO users (email, password_hash, account_id, account_ready, created_at) "
                           "VALUES (?, 'h', ?, ?, ?)", (f"u{user_id}@example.com", user_id, ready, user_id * 10))
    connection.execute("INSERT INTO refresh_tokens (token_hash, user_id, family_id, issued_at, expires_at) "
                       "VALUES (?, 3, 'fam', 0, 100)", (b"t" * 32,))
    await before.close()

    store = await SqliteStore.open(data)
    try:
        assert store.migrations_applied[0] == "0016_accounts"   # then whatever came after it
        assert [(a.account_id, a.user_id, a.account_type, a.demo, a.ready, a.created_at)
                for user in (1, 2, 3) for a in await store.accounts_of(user)] == [
            (1, 1, "isolated", True, True, 10), (2, 2, "isolated", True, False, 20),
            (3, 3, "isolated", True, True, 30)]
        assert [(await store.user_by_id(user)).account_ready for user in (1, 2, 3)] == [True, False, True]
        rotation = await store.rotate_refresh_token(b"t" * 32, new_hash=b"u" * 32, now=1, expires_at=100)
        assert (rotation.outcome, rotation.user_id, rotation.account_id) == ("rotated", 3, 3)
        extra = await store.open_account(1, account_type="raw_spread", demo=True, created_at=40, limit=10)
        newcomer = await store.create_user("new@example.com", "h", created_at=50)
        assert (extra.account_id, newcomer.user_id, newcomer.account_id) == (4, 4, 5)
    finally:
        await store.close()
