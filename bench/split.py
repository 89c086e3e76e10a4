"""Split mode: market open + close through two gateway processes and one engine over Redis,
beside the single-process (embedded) figure of the same run.

Processes (all real CLI, ``supervisor.py run``):

* a private ``redis-server`` on a free port (no persistence, like the machine's);
* ``--role engine --bus redis --store postgres`` (journal ``fsync = "batch"``; synthetic feed in
  the engine process, so the bench measures the order path, not quote fan-in);
* two ``--role gateway --bus redis --store postgres`` processes;
* PostgreSQL: ``DATABASE_URL`` (default the local ``test`` database), a fresh schema dropped at
  the end.

The load generator is ``bench/http_orders.py``'s (raw keep-alive HTTP/1.1 on one epoll loop, in
its own process), with the connections spread evenly over the two gateways. Each connection loops
``POST /api/v1/orders`` (market BTCUSDT) then ``POST /api/v1/positions/{id}/close``; an *order* is
one answered request (open or close), each one durable engine command. Phases: split at 32 and
256 connections, then the embedded server (``bench/http_orders.py``'s ``Server``) at 32 and 256
connections in the same run.

Output: JSON lines (``orders_per_s_c32``, ``ratio_to_single``, ``p99_ms_c32`` …); progress on
stderr. ``--quick``: 3 s phases, 64 users.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import http_orders  # noqa: E402
from _loadgen import Conn, drive  # noqa: E402

TARGET_RATIO = 1.5
TARGET_P99_MS = 50.0
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
log = http_orders.log


def emit(metric: str, value: float, unit: str, target: Any = None, better: str = "higher", **extra: Any) -> None:
    line = {"bench": "split", "metric": metric, "value": round(value, 3), "unit": unit,
            "target": target, "better": better}
    line.update(extra)
    print(json.dumps(line), flush=True)


# ------------------------------------------------------------------ load generator (own process)

def load_generator(spec_path: str) -> None:
    import gc
    spec = json.loads(Path(spec_path).read_text())
    rec = http_orders.Recorder(warmup_s=spec["warmup_s"], seconds=spec["seconds"], server_pid=spec["server_pid"])
    rng = random.Random(spec.get("seed", 1))
    conns = []
    ports = spec["ports"]
    for index in range(spec["connections"]):
        port = ports[index % len(ports)]
        workload = http_orders.OpenClose(rec, f"127.0.0.1:{port}", spec["tokens"][index % len(spec["tokens"])], rng)
        conns.append(Conn("127.0.0.1", port, workload))
    now = time.perf_counter()
    rec.t0 = now + spec["warmup_s"]
    rec.t_end = rec.t0 + spec["seconds"]
    gc.collect()
    gc.freeze()
    gc.disable()
    unfinished = drive(conns, hard_deadline=rec.t_end + 15.0)
    result = rec.result(unfinished)
    result["keepalive_closes"] = sum(conn.closed_by_server for conn in conns)
    print(json.dumps(result), flush=True)


def run_load(tmp: Path, *, ports: list[int], server_pid: int, connections: int, seconds: float,
             warmup_s: float, tokens: list[str], label: str) -> dict:
    spec_path = tmp / f"spec-{label}-{connections}.json"
    spec_path.write_text(json.dumps({"ports": ports, "connections": connections, "seconds": seconds,
                                     "warmup_s": warmup_s, "tokens": tokens, "server_pid": server_pid,
                                     "seed": connections}))
    log(f"phase {label} c={connections}: {warmup_s:g} s warm-up + {seconds:g} s")
    load = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--load-generator", str(spec_path)],
                          stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, timeout=seconds + 120)
    result = None
    for line in load.stdout.splitlines():
        message = json.loads(line)
        if message.get("event") == "result":
            result = message
    if load.returncode != 0 or result is None:
        raise RuntimeError(f"load generator failed (exit {load.returncode}) in {label} c={connections}")
    elapsed = result["elapsed_s"]
    result["per_s"] = result["ok"] / elapsed
    result["error_count"] = sum(result["errors"].values()) + result["unfinished"]
    log(f"  {result['per_s']:.0f}/s ok, p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
        f"errors {result['error_count']} {result['errors'] or ''}; load generator CPU "
        f"{result.get('loadgen_cpu_pct', float('nan')):.0f}%")
    return result


# ------------------------------------------------------------------ the split cluster

class Cluster:
    def __init__(self, tmp: Path, database_url: str) -> None:
        self.tmp = tmp
        self.processes: list[subprocess.Popen] = []
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("bench/split.py needs redis-server on PATH")
        self.redis_port = http_orders.free_port()
        self.redis = subprocess.Popen([binary, "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                       "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.schema = f"bench_split_{uuid.uuid4().hex[:8]}"
        self.database_url = database_url
        _sql(database_url, f"CREATE SCHEMA {self.schema}")
        separator = "&" if "?" in database_url else "?"
        config = tmp / "bench.toml"
        config.write_text(http_orders.CONFIG)
        self.env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                    "DATABASE_URL": f"{database_url}{separator}search_path={self.schema}",
                    "EXNESS_STORE__KIND": "postgres", "EXNESS_AUTH__JWT_SECRET": "bench-" + "s" * 40,
                    "EXNESS_SNAPSHOT__INTERVAL_S": "3600"}
        self.config = config
        self.ports: list[int] = []
        self.gateway_pids: list[int] = []

    def start(self, role: str, *args: str) -> subprocess.Popen:
        out = open(self.tmp / f"{role}-{len(self.processes)}.err", "wb")
        process = subprocess.Popen([sys.executable, str(ROOT / "supervisor.py"), "run", "--role", role,
                                    "--bus", "redis", "--config", str(self.config), *args],
                                   cwd=str(ROOT), env=self.env, stdout=subprocess.DEVNULL, stderr=out,
                                   stdin=subprocess.DEVNULL)
        self.processes.append(process)
        return process

    def up(self) -> None:
        self.start("engine", "--data-dir", str(self.tmp / "engine"), "--feed", "synthetic")
        for index in range(2):
            port = http_orders.free_port()
            process = self.start("gateway", "--data-dir", str(self.tmp / f"gw{index}"), "--http-port", str(port))
            self.ports.append(port)
            self.gateway_pids.append(process.pid)
        for port in self.ports:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if http_orders.http_get_json(port, "/api/v1/quotes/BTCUSDT").get("bid") is not None:
                        break
                except (OSError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gateway on {port} never served a quote; see {self.tmp}/*.err")
                time.sleep(0.2)

    def down(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.redis.kill()
        self.redis.wait()
        _sql(self.database_url, f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")


def _sql(url: str, statement: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s phases, 64 users")
    parser.add_argument("--seconds", type=float, help="measured seconds per phase (default 15; --quick 3)")
    parser.add_argument("--users", type=int, help="accounts (default 256; --quick 64)")
    parser.add_argument("--load-generator", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_generator:
        load_generator(args.load_generator)
        return
    seconds = args.seconds or (3.0 if args.quick else 15.0)
    users = args.users or (64 if args.quick else 256)
    warmup_s = 0.5 if args.quick else 1.0
    database_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    started = time.perf_counter()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="split-") as name:
        tmp = Path(name)
        cluster = Cluster(tmp, database_url)
        try:
            cluster.up()
            log(f"split cluster up: gateways on {cluster.ports}")
            tokens = http_orders.setup_users(cluster.ports[0], users)
            pids = {"engine": cluster.processes[0].pid, "gateway_1": cluster.gateway_pids[0],
                    "gateway_2": cluster.gateway_pids[1], "redis": cluster.redis.pid}
            for connections in (32, 256):
                before = {name: http_orders.process_cpu_s(pid) for name, pid in pids.items()}
                wall = time.perf_counter()
                results[f"split_c{connections}"] = run_load(
                    tmp, ports=cluster.ports, server_pid=cluster.gateway_pids[0], connections=connections,
                    seconds=seconds, warmup_s=warmup_s, tokens=tokens, label="split")
                wall = time.perf_counter() - wall
                cpu = {name: round(100 * (http_orders.process_cpu_s(pid) - before[name]) / wall, 1)
                       for name, pid in pids.items()}
                results[f"split_c{connections}"]["cpu_pct"] = cpu
                log(f"  CPU % of one core over the phase (incl. warm-up and set-up): {cpu}")
        finally:
            cluster.down()
        single_tmp = tmp / "single"
        single_tmp.mkdir()
        server = http_orders.Server(single_tmp)
        try:
            http_orders.wait_until(lambda: http_orders.http_get_json(server.port, "/api/v1/quotes/BTCUSDT")
                                   .get("bid") is not None, "a quote", 60, server)
            tokens = http_orders.setup_users(server.port, users)
            for connections in (32, 256):
                results[f"single_c{connections}"] = run_load(
                    single_tmp, ports=[server.port], server_pid=server.pid, connections=connections,
                    seconds=seconds, warmup_s=warmup_s, tokens=tokens, label="single")
        finally:
            server.stop()
    for connections in (32, 256):
        split, single = results[f"split_c{connections}"], results[f"single_c{connections}"]
        c = f"c{connections}"
        emit(f"orders_per_s_{c}", split["per_s"], "1/s", None, "higher", gateways=2, engines=1,
             errors=split["error_count"], cpu_pct=split.get("cpu_pct"))
        emit(f"single_orders_per_s_{c}", single["per_s"], "1/s", None, "higher", errors=single["error_count"])
        ratio = split["per_s"] / single["per_s"] if single["per_s"] else float("nan")
        emit("ratio_to_single" if connections == 32 else f"ratio_to_single_{c}", ratio, "ratio",
             TARGET_RATIO if connections == 32 else None, "higher")
        emit(f"p50_ms_{c}", split["p50_ms"], "ms", None, "lower", single_p50_ms=round(single["p50_ms"], 3))
        emit(f"p99_ms_{c}", split["p99_ms"], "ms", TARGET_P99_MS if connections == 32 else None, "lower",
             single_p99_ms=round(single["p99_ms"], 3))
    log(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
