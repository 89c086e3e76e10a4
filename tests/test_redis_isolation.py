"""The suite shares Redis with whoever else uses it: tests work in REDIS_URL's own database under key
prefixes of their own, delete only those keys, and never flush a database (a developer's or CI's other
data there survives a test run). tests/test_split.py starts a redis-server of its own and is exempt."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import redis

TESTS = Path(__file__).resolve().parent
OWN_SERVER = {"test_split.py"}
REDIS_TESTS = ["tests/test_redis_trio.py", "tests/test_redis_edge.py"]


def test_no_test_flushes_or_picks_a_redis_database_of_its_own() -> None:
    offenders = []
    for path in sorted(TESTS.glob("*.py")):
        if path.name in OWN_SERVER or path.name == Path(__file__).name:
            continue
        text = path.read_text(encoding="utf-8")
        for line_number, line in enumerate(text.splitlines(), 1):
            if re.search(r"flush(db|all)|\bDB\s*=\s*\d+|/\{DB\}", line, re.IGNORECASE):
                offenders.append(f"{path.name}:{line_number}: {line.strip()}")
    assert offenders == []


def test_the_redis_tests_leave_other_keys_alone_and_none_of_their_own(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    sentinel = f"someone-else:{uuid.uuid4().hex}"
    client.set(sentinel, b"keep me", ex=600)
    run_id = uuid.uuid4().hex[:8]
    try:
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *REDIS_TESTS],
                             cwd=TESTS.parent, env={**os.environ, "REDIS_URL": redis_url, "EXNESS_TEST_RUN_ID": run_id},
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert client.get(sentinel) == b"keep me"
        assert list(client.scan_iter(match=f"exness-test:{run_id}:*")) == []
    finally:
        client.delete(sentinel)
        client.close()
