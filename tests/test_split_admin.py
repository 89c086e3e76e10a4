"""The back office over two engine shards, end to end in subprocesses (issue 13's sharded gap).

The roles run as in production (``exness-actors run --role engine|feed|gateway --bus redis
--store postgres`` with ``[bus] shards = 2``), over the private Redis and PostgreSQL schema of
``tests/test_split.py``'s ``cluster`` fixture:

* a halt through gateway A refuses orders on both shards, a resume re-opens both, and the
  audit log has the action once per shard, each labelled;
* an instrument change through gateway A is followed by gateway B at once and by a gateway
  started after it (their copies check the leverage at the edge);
* the house's exposure and the account listing cover both shards; a forced close finds a
  position of shard 1;
* with shard 1 down a halt and the exposure answer 503 SHARDS_UNAVAILABLE naming it (no hang,
  no 500), and the same halt repeated once it is back succeeds;
* each shard's journal replays to the state hash it recorded at its clean stop.
"""

from __future__ import annotations

import subprocess
import sys
import time
from decimal import Decimal

import httpx
import msgpack

from actors.engine.recovery import journal_dir
from exness_actors.engine import Engine
from exness_actors.instruments import CoreConfig
from exness_actors.journal import scan_journal
from exness_actors.replay import replay
from test_split import ROOT, _sign_up, _wait_ready, cluster  # noqa: F401  (cluster is a fixture)

SHARDS = {"EXNESS_BUS__SHARDS": "2"}
SPAN = 10**12      # exness_actors.instruments.SHARD_ID_SPAN: shard k's ids start at k * SPAN + 1
ADMIN = "/api/v1/admin"
OPERATOR_PASSWORD = "operator password 1"


def _create_operator(cluster, email: str, role: str) -> None:
    env = {**cluster.gateway_env, "EXNESS_OPERATOR_PASSWORD": OPERATOR_PASSWORD}
    done = subprocess.run([sys.executable, "-m", "supervisor", "operator", "create", email, "--role", role,
                           "--store", "postgres"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _operator(client: httpx.Client, email: str) -> dict[str, str]:
    signed_in = client.post(f"{ADMIN}/signin", json={"email": email, "password": OPERATOR_PASSWORD})
    assert signed_in.status_code == 200, signed_in.text
    return {"Authorization": f"Bearer {signed_in.json()['access_token']}"}


def _order(client: httpx.Client, headers: dict, *, symbol: str = "BTCUSDT", leverage: int = 5) -> httpx.Response:
    return client.post("/api/v1/orders", headers=headers, timeout=10, json={
        "symbol": symbol, "side": "buy", "type": "market", "margin": "10.00", "leverage": leverage})


def _max_leverage(client: httpx.Client, symbol: str) -> int:
    instruments = client.get("/api/v1/instruments").json()["instruments"]
    return next(row["max_leverage"] for row in instruments if row["symbol"] == symbol)


def _eventually(check, timeout: float = 20.0):
    """``check()`` until it answers something true (a role catching up), at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def _assert_journal_replays(data_dir) -> None:
    """The shard's journal, replayed from the config it pinned, verifies every checkpoint — the
    last one, written at its clean stop, with the state hash."""
    pinned = data_dir / "core-config.msgpack"
    config = CoreConfig.from_wire(msgpack.unpackb(pinned.read_bytes(), raw=False, use_list=True))
    result = replay(Engine(config), scan_journal(journal_dir(data_dir)).payloads)
    assert result.states_verified >= 1, result
    assert result.engine.last_seq > 0


def test_operator_commands_and_house_figures_cover_every_shard(cluster) -> None:
    engines = [cluster.engine(0, **SHARDS)]
    shard_one = cluster.engine(1, **SHARDS)
    cluster.role("feed", "--feed", "synthetic", EXNESS_FEED__TICKS_PER_S="50", **SHARDS)
    gateway_a = cluster.role("gateway", "--data-dir", str(cluster.tmp / "gw-a"), pattern=r"HTTP API (\S+)/api/v1",
                             **SHARDS)
    gateway_b = cluster.role("gateway", "--data-dir", str(cluster.tmp / "gw-b"), pattern=r"HTTP API (\S+)/api/v1",
                             **SHARDS)
    _wait_ready(gateway_a.url)
    _wait_ready(gateway_b.url)
    cluster.gateway_env = gateway_a.env
    _create_operator(cluster, "admin@broker.example", "admin")
    with httpx.Client(base_url=gateway_a.url, timeout=15) as a, httpx.Client(base_url=gateway_b.url, timeout=15) as b:
        admin = _operator(a, "admin@broker.example")
        odd = _sign_up(a, "odd@example.com")       # user (= account) 1: shard 1
        even = _sign_up(a, "even@example.com")     # user 2: shard 0
        opened = {}
        for name, headers in (("odd", odd), ("even", even)):
            placed = _order(a, headers)
            assert placed.status_code == 201, placed.text
            opened[name] = placed.json()["position"]
        assert int(opened["odd"]["id"]) == SPAN + 1 and int(opened["even"]["id"]) == 1

        # the house sees both shards' positions (exact sums) and both shards' accounts
        exposure = a.get(f"{ADMIN}/exposure", headers=admin)
        assert exposure.status_code == 200, exposure.text
        btc = next(row for row in exposure.json()["symbols"] if row["symbol"] == "BTCUSDT")
        assert Decimal(btc["long_qty"]) == Decimal(opened["odd"]["qty"]) + Decimal(opened["even"]["qty"])
        assert (btc["halted"], btc["halted_shards"]) == (False, [])
        assert a.get(f"{ADMIN}/pnl", headers=admin).status_code == 200
        assert a.get(f"{ADMIN}/me", headers=admin).json()["shards"] == 2
        accounts = a.get(f"{ADMIN}/accounts", headers=admin).json()["accounts"]
        assert [row["account_id"] for row in accounts] == ["1", "2"], accounts      # in id order
        near_call = a.get(f"{ADMIN}/accounts?min_margin_level=100", headers=admin).json()["accounts"]
        assert [row["account_id"] for row in near_call] == ["1", "2"], near_call
        assert a.get(f"{ADMIN}/accounts?max_margin_level=100", headers=admin).json()["accounts"] == []
        found = a.get(f"{ADMIN}/accounts?email=odd@", headers=admin).json()["accounts"]
        assert [(row["account_id"], row["email"], row["positions"]) for row in found] == [("1", "odd@example.com", 1)]

        # a halt through gateway A: every shard halts, orders of both shards' accounts are refused
        halted = a.post(f"{ADMIN}/symbols/BTCUSDT/halt", headers=admin, json={"reason": "exchange outage"})
        assert halted.status_code == 200, halted.text
        assert (halted.json()["halted"], halted.json()["halted_shards"]) == (True, [0, 1])
        for headers in (odd, even):
            refused = _order(b, headers)
            assert (refused.status_code, refused.json()["error"]["code"]) == (422, "MARKET_HALTED"), refused.text
        audit = a.get(f"{ADMIN}/audit?action=halt", headers=admin).json()["entries"]
        assert sorted((entry["shard"], entry["target"], entry["reason"]) for entry in audit) == [
            (0, "BTCUSDT", "exchange outage"), (1, "BTCUSDT", "exchange outage")]
        assert {entry["id"].split("-")[0] for entry in audit} == {"0", "1"}
        resumed = a.post(f"{ADMIN}/symbols/BTCUSDT/resume", headers=admin, json={"reason": "exchange back"})
        assert resumed.status_code == 200 and resumed.json()["halted"] is False, resumed.text
        for headers in (odd, even):
            assert _order(b, headers).status_code == 201

        # an instrument change through gateway A: gateway B's copy follows (it checks the leverage
        # at the edge), both shards trade it, and a gateway started afterwards starts from it
        assert _max_leverage(b, "BTCUSDT") == 100
        assert _order(b, odd, leverage=150).status_code == 400
        patched = a.patch(f"{ADMIN}/instruments/BTCUSDT", headers=admin, json={"reason": "promo", "max_leverage": 200})
        assert patched.status_code == 200 and patched.json()["differing_shards"] == [], patched.text
        assert _eventually(lambda: _max_leverage(b, "BTCUSDT") == 200, timeout=10)
        for headers in (odd, even):
            placed = _order(b, headers, leverage=150)
            assert placed.status_code == 201, placed.text
        gateway_c = cluster.role("gateway", "--data-dir", str(cluster.tmp / "gw-c"),
                                 pattern=r"HTTP API (\S+)/api/v1", **SHARDS)
        _wait_ready(gateway_c.url)
        with httpx.Client(base_url=gateway_c.url, timeout=15) as c:
            assert _eventually(lambda: _max_leverage(c, "BTCUSDT") == 200, timeout=10)
            assert _order(c, even, leverage=150).status_code == 201

        changes = a.get(f"{ADMIN}/audit?action=update_instrument", headers=admin).json()["entries"]
        assert sorted((entry["shard"], entry["detail"]["max_leverage"]) for entry in changes) == [(0, 200), (1, 200)]

        # an adjustment goes to the account's shard (account 1: shard 1)
        adjusted = a.post(f"{ADMIN}/accounts/1/adjust", headers=admin, json={"amount": "2.50", "reason": "goodwill"})
        assert adjusted.status_code == 200, adjusted.text
        assert adjusted.json()["account_id"] == "1"

        # a forced close of shard 1's position is routed to shard 1
        closed = a.post(f"{ADMIN}/positions/{opened['odd']['id']}/close", headers=admin, json={"reason": "risk"})
        assert closed.status_code == 200, closed.text
        assert closed.json()["close_reason"] == "operator"
        held = [p["id"] for p in a.get("/api/v1/positions", headers=odd).json()["positions"]]
        assert opened["odd"]["id"] not in held
        unknown = a.post(f"{ADMIN}/positions/{5 * SPAN + 1}/close", headers=admin, json={"reason": "risk"})
        assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "UNKNOWN_POSITION")

        # shard 1 down: a clear error naming it, within the bus timeout
        shard_one.kill()
        started = time.monotonic()
        partial = a.post(f"{ADMIN}/symbols/ETHUSDT/halt", headers=admin, json={"reason": "feed"})
        assert time.monotonic() - started < 15
        assert partial.status_code == 503, partial.text
        error = partial.json()["error"]
        assert (error["code"], error["details"]["shards"], error["details"]["applied_on"]) == (
            "SHARDS_UNAVAILABLE", [1], [0])
        assert "shard(s) 1" in error["message"]
        time.sleep(1.1)   # past the house figures' cache
        down = a.get(f"{ADMIN}/exposure", headers=admin)
        assert (down.status_code, down.json()["error"]["code"], down.json()["error"]["details"]["shards"]) == (
            503, "SHARDS_UNAVAILABLE", [1])
        engines.append(cluster.engine(1, **SHARDS))     # back from its own journal
        retried = _eventually(lambda: (lambda r: r if r.status_code == 200 else None)(
            a.post(f"{ADMIN}/symbols/ETHUSDT/halt", headers=admin, json={"reason": "feed"})), timeout=30)
        assert retried is not None and retried.json()["halted_shards"] == [0, 1]
        symbols = a.get(f"{ADMIN}/symbols", headers=admin).json()["symbols"]
        eth = next(row for row in symbols if row["symbol"] == "ETHUSDT")
        assert (eth["halted"], eth["halted_shards"]) == (True, [0, 1])

    for engine in engines:                              # a clean stop writes the state hash
        assert engine.terminate() == 0
    for shard in (0, 1):
        _assert_journal_replays(cluster.tmp / f"engine{shard}")
