"""Split mode end to end, in subprocesses, over a real Redis and PostgreSQL (issue: process edge).

One private ``redis-server`` per test module on a free port (so it can be killed and restarted
without touching the machine's shared Redis), a fresh PostgreSQL schema, and the real CLI:
``exness-actors run --role engine|gateway|ws|feed --bus redis --store postgres``.

* a trader journey through two gateways and the WebSocket server;
* kill -9 the engine under load and restart it: every acknowledged order is present, none twice;
* restart Redis under load: the processes reconnect and nothing acknowledged is lost;
* two engine shards: accounts routed by id, disjoint order/position ids, each shard's history
  in the one PostgreSQL store, and one shard down leaves the other trading.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Optional

import httpx
import pytest
import trio
from conftest import services_required
from trio_websocket import open_websocket_url

ROOT = Path(__file__).resolve().parent.parent
STARTUP_S = 30.0
PASSWORD = "correct horse battery staple"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A private redis-server (no persistence, like the machine's)."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            message = "redis-server is not installed (needed to restart Redis in the split-mode tests)"
            if services_required():
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
        self.binary = binary
        self.port = _free_port()
        self.workdir = workdir
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


class Role:
    """One ``exness-actors run --role …`` subprocess; its announce line gives its URL."""

    def __init__(self, role: str, env: dict[str, str], *args: str, log_dir: Path) -> None:
        self.role = role
        self.args = args
        self.env = env
        self.log_path = log_dir / f"{role}-{uuid.uuid4().hex[:6]}.log"
        self.process: Optional[subprocess.Popen] = None
        self.url: Optional[str] = None

    def start(self, pattern: Optional[str] = None) -> "Role":
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "run", "--role", self.role, "--bus", "redis", *self.args],
            cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=self.log, text=True)
        deadline = time.monotonic() + STARTUP_S
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                if self.process.poll() is not None:
                    raise AssertionError(f"{self.role} exited {self.process.returncode}: {self.log_path.read_text()[-3000:]}")
                continue
            if line.startswith("exness-actors:"):
                if pattern is not None:
                    match = re.search(pattern, line)
                    assert match, line
                    self.url = match.group(1)
                # keep draining stdout so the child never blocks on a full pipe
                threading.Thread(target=self._drain, daemon=True).start()
                return self
        raise AssertionError(f"{self.role} did not announce itself: {self.log_path.read_text()[-3000:]}")

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for _ in self.process.stdout:
            pass

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def terminate(self) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return self.process.wait(10)
        return self.process.returncode


@pytest.fixture
def cluster(tmp_path: Path, database_url: str):
    """Redis + a PostgreSQL schema + env for the roles; yields a small namespace."""
    import asyncpg  # noqa: F401  (the store's driver; a clear ImportError if missing)

    redis = RedisServer(tmp_path)
    redis.start()
    schema = f"split_{uuid.uuid4().hex[:10]}"
    _psql(database_url, f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in database_url else "?"
    env = {
        **os.environ,
        "REDIS_URL": redis.url,
        "DATABASE_URL": f"{database_url}{separator}search_path={schema}",
        "EXNESS_STORE__KIND": "postgres",
        "EXNESS_BUS__REQUEST_TIMEOUT_S": "3",
        "EXNESS_AUTH__JWT_SECRET": "split-test-secret-" + "x" * 32,
        "EXNESS_AUTH__ARGON2_TIME_COST": "1",
        "EXNESS_AUTH__ARGON2_MEMORY_KIB": "8",
        "EXNESS_AUTH__ARGON2_PARALLELISM": "1",
        "EXNESS_LIMITS__ACCOUNT_RATE_PER_S": "100000",
        "EXNESS_LIMITS__ACCOUNT_BURST": "100000",
        "EXNESS_SNAPSHOT__INTERVAL_S": "3600",
        "EXNESS_HTTP__PORT": "0",
        "EXNESS_WS__PORT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("EXNESS_REQUIRE_SERVICES", None)
    roles: list[Role] = []

    class Cluster:
        def role(self, role: str, *args: str, pattern: Optional[str] = None, **extra_env: str) -> Role:
            process = Role(role, {**env, **extra_env}, *args, log_dir=tmp_path).start(pattern)
            roles.append(process)
            return process

        def engine(self, shard: Optional[int] = None, **extra_env: str) -> Role:
            if shard is None:
                return self.role("engine", "--data-dir", str(tmp_path / "engine"), "--feed", "redis", **extra_env)
            return self.role("engine", "--data-dir", str(tmp_path / f"engine{shard}"), "--feed", "redis",
                             "--shard", str(shard), **extra_env)

        def gateway(self) -> Role:
            return self.role("gateway", "--data-dir", str(tmp_path / "gw"), pattern=r"HTTP API (\S+)/api/v1")

    c = Cluster()
    c.redis = redis
    c.tmp = tmp_path
    try:
        yield c
    finally:
        for process in roles:
            process.kill()
        redis.stop()
        _psql(database_url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _psql(url: str, sql: str) -> None:
    import asyncpg

    async def run() -> None:
        import asyncio  # noqa: F401
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    import asyncio
    asyncio.run(run())


def _sign_up(client: httpx.Client, email: str) -> dict[str, str]:
    response = client.post("/api/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return _sign_in(client, email)


def _sign_in(client: httpx.Client, email: str, account_id: str | None = None) -> dict[str, str]:
    body = {"email": email, "password": PASSWORD} | ({"account_id": account_id} if account_id else {})
    response = client.post("/api/v1/auth/signin", json=body)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _isolated_account(client: httpx.Client, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """Open a demo isolated account (the engine opens it over the bus) and switch to it."""
    opened = client.post("/api/v1/accounts", headers=headers, json={"type": "isolated", "demo": True})
    assert opened.status_code == 201, opened.text
    account_id = opened.json()["account_id"]
    switched = client.post("/api/v1/auth/switch", headers=headers, json={"account_id": account_id})
    assert switched.status_code == 200 and switched.json()["account_id"] == account_id, switched.text
    return account_id, {"Authorization": f"Bearer {switched.json()['access_token']}"}


def _wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"{url}/readyz", timeout=2)
            if last.status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{url} never became ready: {getattr(last, 'text', last)}")


def _order(client: httpx.Client, headers: dict, client_order_id: str) -> httpx.Response:
    return client.post("/api/v1/orders", headers=headers, timeout=10, json={
        "symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "10.00", "leverage": 5,
        "client_order_id": client_order_id})


def test_trader_journey_through_two_gateways_and_the_ws_server(cluster) -> None:
    cluster.engine()
    cluster.role("feed", "--feed", "synthetic", EXNESS_FEED__TICKS_PER_S="50")
    gw1, gw2 = cluster.gateway(), cluster.gateway()
    ws = cluster.role("ws", "--data-dir", str(cluster.tmp / "ws"), pattern=r"WebSocket (\S+)")
    _wait_ready(gw1.url)
    _wait_ready(gw2.url)
    with httpx.Client(base_url=gw1.url, timeout=10) as one, httpx.Client(base_url=gw2.url, timeout=10) as two:
        # sign-up opens a Standard (cross) account; this journey adds margin, so it trades an
        # isolated one, opened and switched to through one gateway and signed in to on the other
        account_id, headers = _isolated_account(one, _sign_up(one, "trader@example.com"))
        headers_two = _sign_in(two, "trader@example.com", account_id)      # tokens work on every gateway
        placed = _order(one, headers, "journey-1")
        assert placed.status_code == 201, placed.text
        position_id = placed.json()["position"]["id"]
        again = _order(two, headers_two, "journey-1")            # the same client id, the other gateway
        assert again.status_code == 200 and again.json()["order"]["id"] == placed.json()["order"]["id"]
        positions = two.get("/api/v1/positions", headers=headers_two).json()["positions"]
        assert [p["id"] for p in positions] == [position_id]
        closed = two.post(f"/api/v1/positions/{position_id}/close", headers=headers_two, json={})
        assert closed.status_code == 200, closed.text
        account = one.get("/api/v1/account", headers=headers).json()
        assert account["locked"] == "0.00"
        # history (persisted by the engine's persister into PostgreSQL) through the other gateway
        deadline = time.monotonic() + 10
        while True:
            history = two.get("/api/v1/history/positions", headers=headers_two).json()
            if history.get("positions") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert [p["position_id"] for p in history["positions"]] == [position_id]
        assert one.get("/metrics").status_code == 200
        assert two.get("/readyz").status_code == 200
        bad = one.post("/api/v1/orders", headers=headers, json={"symbol": "BTCUSDT", "side": "up"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "VALIDATION_ERROR"
        token = headers["Authorization"].split()[1]

    async def watch() -> tuple[dict, dict, dict]:
        async with open_websocket_url(ws.url) as socket_:
            await socket_.send_message(json.dumps({"op": "auth", "token": token}))
            await socket_.send_message(json.dumps({"op": "subscribe", "channels": ["quotes:BTCUSDT", "account"]}))
            quote = account_update = summary = None
            ordered = False
            with trio.fail_after(15):
                while quote is None or account_update is None or summary is None:
                    frame = json.loads(await socket_.get_message())
                    for message in frame if isinstance(frame, list) else [frame]:
                        channel = str(message.get("channel", ""))
                        if channel == "quotes:BTCUSDT" and "data" in message:
                            quote = message
                        if channel.startswith("account") and "data" in message:
                            if message["data"]["event"] == "account_summary":   # a view over the bus
                                summary = message
                            else:
                                account_update = message
                    if quote is not None and not ordered:
                        # make an account event happen through a gateway while we listen
                        ordered = True
                        with httpx.Client(base_url=gw2.url, timeout=10) as client:
                            assert _order(client, headers, "ws-1").status_code in (200, 201)
            # the whole order lane over the remote engine: each answer as in embedded mode
            async def lane(request_id: str, **fields: object) -> dict:
                await socket_.send_message(json.dumps({"op": "order", "id": request_id, **fields}))
                with trio.fail_after(15):
                    while True:
                        frame = json.loads(await socket_.get_message())
                        for message in frame if isinstance(frame, list) else [frame]:
                            if message.get("op") == "order_result" and message.get("id") == request_id:
                                return message

            placed = await lane("lane-1", action="place", symbol="BTCUSDT", side="sell", type="market",
                                margin="10.00", leverage=5, client_order_id="lane-1")
            assert placed["ok"] is True and placed["order"]["status"] == "filled", placed
            lane_position = placed["position"]["id"]
            # above the ask, below the liquidation price (a stop beyond it could never fire)
            stop_loss = str((Decimal(placed["position"]["open_price"]) * Decimal("1.1")).quantize(Decimal("0.01")))
            modified = await lane("lane-2", action="modify_position", position_id=lane_position,
                                  stop_loss=stop_loss)
            assert modified["ok"] is True, modified
            assert modified["position"]["stop_loss"] == stop_loss
            assert modified["position"]["unrealized_pnl"] is not None
            margin = await lane("lane-3", action="add_margin", position_id=lane_position, amount="5.00")
            assert margin["ok"] is True and margin["position"]["margin"] == "15.00", margin
            closed = await lane("lane-4", action="close", position_id=lane_position)
            assert closed["ok"] is True and closed["position"]["position_id"] == lane_position, closed
            gone = await lane("lane-5", action="close", position_id=lane_position)
            assert gone["ok"] is False and gone["error"]["code"] == "UNKNOWN_POSITION", gone
            limit = await lane("lane-6", action="place", symbol="BTCUSDT", side="buy", type="limit",
                               price="1000.00", margin="10.00", leverage=5, client_order_id="lane-6")
            assert limit["ok"] is True and limit["order"]["status"] == "pending", limit
            order_id = limit["order"]["id"]
            repriced = await lane("lane-7", action="modify_order", order_id=order_id, price="1100.00")
            assert repriced["ok"] is True and repriced["order"]["price"] == "1100.00", repriced
            assert repriced["order"]["symbol"] == "BTCUSDT"
            bad = await lane("lane-8", action="modify_order", order_id=order_id, price="-1")
            assert bad["ok"] is False and bad["error"]["details"]["field"] == "price", bad
            cancelled = await lane("lane-9", action="cancel", order_id=order_id)
            assert cancelled["ok"] is True, cancelled
            assert cancelled["order"]["status"] == "cancelled" and cancelled["order"]["price"] == "1100.00"
            again = await lane("lane-10", action="cancel", order_id=order_id)
            assert again["ok"] is False and again["error"]["code"] == "ORDER_NOT_PENDING", again
            return quote, account_update, summary

    quote, account_update, summary = trio.run(watch)
    assert quote["data"]["symbol"] == "BTCUSDT"
    assert account_update["channel"].startswith("account")
    assert summary["data"]["currency"] == "USD" and "seq" not in summary


def _load(urls: list[str], headers: dict, stop: threading.Event, acked: dict[str, str],
          errors: list, worker: int) -> None:
    """Place market orders with fresh client ids; retry each until it is acknowledged."""
    clients = [httpx.Client(base_url=url, timeout=10) for url in urls]
    index = 0
    try:
        while not stop.is_set():
            client_order_id = f"w{worker}-{index}"
            index += 1
            attempt = 0
            while True:
                client = clients[(index + attempt) % len(clients)]
                attempt += 1
                try:
                    response = _order(client, headers, client_order_id)
                except httpx.HTTPError:
                    time.sleep(0.1)
                    continue
                if response.status_code in (200, 201):
                    acked[client_order_id] = response.json()["order"]["id"]
                    break
                if response.status_code in (503, 504):
                    time.sleep(0.1)     # engine or Redis away: retry the same client id
                    continue
                errors.append((client_order_id, response.status_code, response.text))
                break
    finally:
        for client in clients:
            client.close()


def _check_exactly_once(url: str, headers: dict, acked: dict[str, str]) -> None:
    with httpx.Client(base_url=url, timeout=20) as client:
        response = client.get("/api/v1/positions", headers=headers)
        assert response.status_code == 200, response.text
        positions = response.json()["positions"]
    order_ids = [p["order_id"] for p in positions]
    assert len(order_ids) == len(set(order_ids))
    # every acknowledged order opened exactly one position, and nothing else did
    assert sorted(order_ids, key=int) == sorted(set(acked.values()), key=int)


def test_engine_kill_9_and_redis_restart_under_load_lose_nothing_and_apply_nothing_twice(cluster) -> None:
    engine = cluster.engine()
    cluster.role("feed", "--feed", "synthetic", EXNESS_FEED__TICKS_PER_S="50")
    gw1, gw2 = cluster.gateway(), cluster.gateway()
    _wait_ready(gw1.url)
    with httpx.Client(base_url=gw1.url, timeout=10) as client:
        headers = _sign_up(client, "load@example.com")
        deposit = client.post("/api/v1/account/deposit", headers=headers,
                              json={"amount": "1000000.00", "idempotency_key": "d1"})
        assert deposit.status_code == 200, deposit.text
    acked: dict[str, str] = {}
    errors: list = []
    stop = threading.Event()
    workers = [threading.Thread(target=_load, args=([gw1.url, gw2.url], headers, stop, acked, errors, n))
               for n in range(4)]
    for thread in workers:
        thread.start()
    try:
        time.sleep(2)
        before_kill = len(acked)
        assert before_kill > 0
        engine.kill()                               # kill -9 mid-load
        time.sleep(1)
        cluster.engine()                            # restart: recovery + redelivered entries
        _wait_ready(gw1.url)
        time.sleep(2)
        after_restart = len(acked)
        assert after_restart > before_kill
        cluster.redis.stop()                        # Redis goes away (and loses everything: no persistence)
        time.sleep(1)
        cluster.redis.start()
        _wait_ready(gw1.url)
        _wait_ready(gw2.url)
        time.sleep(2)
        assert len(acked) > after_restart
    finally:
        stop.set()
        for thread in workers:
            thread.join(60)
    assert not errors, errors[:5]
    _check_exactly_once(gw2.url, headers, acked)


def test_two_engine_shards_route_accounts_keep_ids_apart_and_persist_both_histories(cluster) -> None:
    shards = {"EXNESS_BUS__SHARDS": "2"}
    cluster.engine(0, **shards)
    shard_one = cluster.engine(1, **shards)
    cluster.role("feed", "--feed", "synthetic", EXNESS_FEED__TICKS_PER_S="50", **shards)
    gateway = cluster.role("gateway", "--data-dir", str(cluster.tmp / "gw"),
                           pattern=r"HTTP API (\S+)/api/v1", **shards)
    _wait_ready(gateway.url)
    span = 10**12      # exness_actors.instruments.SHARD_ID_SPAN: shard k's ids start at k * span + 1
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        odd = _sign_up(client, "odd@example.com")       # user (= account) 1: shard 1
        even = _sign_up(client, "even@example.com")     # user 2: shard 0
        opened = {}
        for name, headers in (("odd", odd), ("even", even)):
            placed = _order(client, headers, f"{name}-1")
            assert placed.status_code == 201, placed.text
            opened[name] = placed.json()
        assert int(opened["odd"]["order"]["id"]) == span + 1
        assert int(opened["odd"]["position"]["id"]) == span + 1
        assert int(opened["even"]["order"]["id"]) == 1
        assert int(opened["even"]["position"]["id"]) == 1
        for name, headers in (("odd", odd), ("even", even)):
            position_id = opened[name]["position"]["id"]
            closed = client.post(f"/api/v1/positions/{position_id}/close", headers=headers, json={})
            assert closed.status_code == 200, closed.text
            # history waits for this account's shard's persister (read-your-writes, per shard)
            history = client.get("/api/v1/history/positions", headers=headers).json()
            assert [p["position_id"] for p in history["positions"]] == [position_id], history
            order = client.get(f"/api/v1/orders/{opened[name]['order']['id']}", headers=headers)
            assert order.status_code == 200 and order.json()["status"] == "filled", order.text
        # one account never sees the other shard's ids
        other = client.get(f"/api/v1/orders/{opened['odd']['order']['id']}", headers=even)
        assert other.status_code == 404, other.text

        shard_one.kill()                                 # shard 1 down: shard 0 keeps trading
        assert _order(client, even, "even-2").status_code == 201
        stalled = _order(client, odd, "odd-2")
        assert stalled.status_code == 504, stalled.text
        assert stalled.json()["error"]["code"] == "ENGINE_TIMEOUT"
        cluster.engine(1, **shards)                      # restarted from its own journal
        deadline = time.monotonic() + 20
        while True:                                      # the retried request is applied once
            retried = _order(client, odd, "odd-2")
            if retried.status_code in (200, 201) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert retried.status_code in (200, 201), retried.text
        assert int(retried.json()["order"]["id"]) == span + 2
        positions = client.get("/api/v1/positions", headers=odd).json()["positions"]
        assert [int(p["id"]) for p in positions] == [span + 2]


def test_roles_create_a_missing_data_dir_and_refuse_an_unwritable_one_in_one_line(cluster) -> None:
    """Without a configured JWT secret the gateway and WS roles keep ``jwt.secret`` in their data dir:
    one that does not exist yet is created; one that cannot be created is refused with one line."""
    data_dir = cluster.tmp / "not" / "yet"
    gateway = cluster.role("gateway", "--data-dir", str(data_dir), pattern=r"HTTP API (\S+)/api/v1",
                           EXNESS_AUTH__JWT_SECRET="")
    assert (data_dir / "jwt.secret").stat().st_mode & 0o777 == 0o600
    assert gateway.terminate() == 0
    blocker = cluster.tmp / "a-file"
    blocker.write_text("not a directory")
    env = {**os.environ, "REDIS_URL": cluster.redis.url, "EXNESS_AUTH__JWT_SECRET": "", "EXNESS_HTTP__PORT": "0"}
    refused = subprocess.run([sys.executable, "-m", "supervisor", "run", "--role", "ws", "--bus", "redis",
                              "--data-dir", str(blocker / "data")], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert "Traceback" not in refused.stderr
    assert f"data dir {blocker / 'data'} is not writable" in refused.stderr.strip().splitlines()[-1]
