"""HTTP order path: market open + close through the real HTTP API, against the no-op ceiling.

The server is the real thing, ``supervisor.py run`` in a subprocess: default configuration —
journal ``fsync = "batch"``, so every order is answered only once its batch is fsynced — on a
temporary data dir, synthetic price feed, plus a ``--config`` TOML with:

* ``[limits]`` raised far above anything the bench reaches (the limiters still run on every
  request, they just never throttle);
* ``[auth]`` argon2 cost lowered (``time_cost = 1``, 1 MiB). Password hashing is only on
  sign-up/sign-in, which is untimed set-up here; at the shipped cost (~0.3 s of both cores per
  hash) set-up alone would take minutes. The order path never hashes (JWT check only).

The load generator is a **separate process** (this file with ``--load-generator SPEC``): raw
keep-alive HTTP/1.1 sockets on one epoll loop (``bench/_loadgen.py``), one request in flight per
connection. It reports its own CPU use next to the server's, so one can see it is not the
bottleneck (it uses a fraction of the CPU the server does per request).

Phases, all against the same server process (users signed up and signed in first, untimed; the
bench waits for a BTCUSDT quote):

1. ``sequential``: one connection, open + close in a loop → ``sequential_open_close_ms``, the mean
   time from sending the open to receiving the close's answer;
2. for 32 and then 256 connections: the no-op ``GET /api/v1/ping`` (the ceiling), immediately
   followed by the order phase: each connection loops ``POST /api/v1/orders`` (market BTCUSDT,
   random side, margin "10.00", leverage 10) then ``POST /api/v1/positions/{id}/close``.

Definitions. An **order** is one answered order request — an open or a close, each one engine
command, journaled durably. ``orders_per_s`` counts 2xx answers (opens + closes) completed in the
measured window; ``trades_per_s`` counts the opens alone (one trade = open + close ≈ half the
orders). Latency is from writing the request to reading the whole response, over every order
request answered in the window. Every non-2xx answer (and any request still unanswered at the
end) is an error: ``errors_c32`` / ``errors_c256``. ``ratio_to_noop`` = orders/s ÷ ping/s at 32
connections; its ``per_server_cpu`` is the same ratio per second of the server's CPU (less moved
by other load on a shared machine). Each phase has a short warm-up that is not measured.

Output: one JSON line per figure on stdout; progress on stderr. ``--quick``: 3 s phases, 64 users.
``--py-spy FILE``: record the server with py-spy (raw folded stacks) during the 32-connection
order phase (sampling pauses the server, so those numbers are a bit lower).

``--stages``: start the server with ``EXNESS_STAGE_PROFILE`` (``actors/stage_profile.py``) and
report, for the 32-connection order phase's window, where an order's time goes on the server —
one ``stage_*`` line per stage (p50/p90/p99/max in ms): ``auth`` (arrival in the app to
authenticated: per-IP limit, JWT, per-account limit), ``parse`` (to submitted: body read and
validation), ``queue`` (to the engine's apply stamp), ``commit_wait`` (apply stamp to the start
of the write + fsync that covered it: the rest of the batch's apply and the previous fsync),
``fsync`` (that write + fsync), ``reply`` (fsync end to the handler holding the reply),
``answer`` (building the answer), ``render``, ``write`` (sending the response), ``server``
(arrival to sent) — then ``loop_steps`` (the task names holding the event loop longest, per
step and in total) and ``gc`` (collections by generation). The stamps cost a little CPU, so
the profiled run's throughput is not the unprofiled one's.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _loadgen import Conn, Workload, drive, quantile, request_bytes  # noqa: E402

BENCH = "http_orders"
TARGET_ORDERS_PER_S = 1550          # 1.5x the Bun + Express + PostgreSQL clone on this machine
TARGET_RATIO = 1.0                  # issue 14: an order as cheap as the (Quart) no-op
TARGET_P99_MS = 50
REFERENCE = {"clone_trades_per_s_c32": 1030, "clone_p99_ms_c32": 66, "clone_sequential_open_close_ms": 5.6}
PASSWORD = "bench-password-1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[{BENCH}] {message}", file=sys.stderr, flush=True)


def emit(metric: str, value: float, unit: str, target: Any = None, better: str = "higher", **extra: Any) -> None:
    line = {"bench": BENCH, "metric": metric, "value": round(value, 3), "unit": unit,
            "target": target, "better": better}
    line.update(extra)
    print(json.dumps(line), flush=True)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# ------------------------------------------------------------------ the load generator process

class Recorder:
    """The measured window of one phase: warm-up until ``t0``, measure until ``t_end``, then
    finish. Samples the server's and its own CPU at both edges."""

    def __init__(self, *, warmup_s: float, seconds: float, server_pid: int) -> None:
        now = time.perf_counter()
        self.t0 = now + warmup_s
        self.t_end = self.t0 + seconds
        self.server_pid = server_pid
        self.state = 0            # 0 warm-up, 1 measuring, 2 finished
        self.started_at = self.stopped_at = 0.0
        self.cpu: dict[str, float] = {}
        self.latencies: list[float] = []
        self.open_latencies: list[float] = []
        self.close_latencies: list[float] = []
        self.pairs: list[float] = []
        self.ok = 0
        self.opens = 0
        self.closes = 0
        self.errors: dict[str, int] = {}

    def tick(self, now: float) -> None:
        state = self.state
        if state == 0 and now >= self.t0:
            self.state = 1
            self.started_at = now
            self.cpu["server0"] = process_cpu_s(self.server_pid)
            times = os.times()
            self.cpu["self0"] = times.user + times.system
            print(json.dumps({"event": "window_start"}), flush=True)
        elif state == 1 and now >= self.t_end:
            self.state = 2
            self.stopped_at = now
            self.cpu["server1"] = process_cpu_s(self.server_pid)
            times = os.times()
            self.cpu["self1"] = times.user + times.system

    def answered(self, status: int, latency: float, kind: int) -> None:
        """kind: 0 ping, 1 open, 2 close (only called while measuring)."""
        self.latencies.append(latency)
        if kind == 1:
            self.open_latencies.append(latency)
        elif kind == 2:
            self.close_latencies.append(latency)
        if 200 <= status < 300:
            self.ok += 1
            if kind == 1:
                self.opens += 1
            elif kind == 2:
                self.closes += 1
        else:
            key = str(status)
            self.errors[key] = self.errors.get(key, 0) + 1

    def lost(self) -> None:
        if self.state == 1:
            self.errors["connection_lost"] = self.errors.get("connection_lost", 0) + 1

    def result(self, unfinished: int) -> dict:
        elapsed = (self.stopped_at - self.started_at) if self.state == 2 else float("nan")
        out: dict[str, Any] = {"event": "result", "elapsed_s": elapsed, "ok": self.ok, "opens": self.opens,
                               "closes": self.closes, "errors": dict(self.errors), "unfinished": unfinished}
        for name, values in (("", self.latencies), ("open_", self.open_latencies),
                             ("close_", self.close_latencies)):
            values.sort()
            out[f"{name}p50_ms"] = quantile(values, 0.50) * 1000
            out[f"{name}p99_ms"] = quantile(values, 0.99) * 1000
            if not name:
                out["p90_ms"] = quantile(values, 0.90) * 1000
                out["p999_ms"] = quantile(values, 0.999) * 1000
                out["max_ms"] = values[-1] * 1000 if values else float("nan")
                out["mean_ms"] = sum(values) / len(values) * 1000 if values else float("nan")
        out["pair_mean_ms"] = sum(self.pairs) / len(self.pairs) * 1000 if self.pairs else float("nan")
        out["pairs"] = len(self.pairs)
        if self.state == 2 and elapsed > 0:
            out["server_cpu_pct"] = (self.cpu["server1"] - self.cpu["server0"]) / elapsed * 100
            out["loadgen_cpu_pct"] = (self.cpu["self1"] - self.cpu["self0"]) / elapsed * 100
        return out


class Ping(Workload):
    def __init__(self, rec: Recorder, host: str) -> None:
        self.rec = rec
        self.request = request_bytes("GET", "/api/v1/ping", host=host)

    def first(self, now: float) -> Optional[bytes]:
        return self.request

    def answer(self, status: int, body: bytes, sent_at: float, now: float) -> Optional[bytes]:
        rec = self.rec
        rec.tick(now)
        if rec.state == 1:
            rec.answered(status, now - sent_at, 0)
        elif rec.state == 2:
            return None
        return self.request

    def connection_lost(self, now: float) -> None:
        self.rec.lost()


class OpenClose(Workload):
    """Market open (random side), then close of the position it opened, in a loop. After the
    window a connection still closes the position it holds, then stops."""

    def __init__(self, rec: Recorder, host: str, token: str, rng: random.Random) -> None:
        self.rec = rec
        self.rng = rng
        self.opens = [request_bytes("POST", "/api/v1/orders", host=host, token=token, body={
            "symbol": "BTCUSDT", "side": side, "type": "market", "margin": "10.00", "leverage": 10})
            for side in ("buy", "sell")]
        self.close_head = b"POST /api/v1/positions/"
        self.close_tail = (f"/close HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                           f"Content-Length: 0\r\n\r\n").encode()
        self.closing = False
        self.open_sent = 0.0

    def first(self, now: float) -> Optional[bytes]:
        self.closing = False
        return self.opens[self.rng.getrandbits(1)]

    def answer(self, status: int, body: bytes, sent_at: float, now: float) -> Optional[bytes]:
        rec = self.rec
        rec.tick(now)
        measuring = rec.state == 1
        if not self.closing:
            if measuring:
                rec.answered(status, now - sent_at, 1)
            if status == 201:
                at = body.find(b'"position_id":"')
                if at >= 0:
                    position_id = body[at + 15:body.index(b'"', at + 15)]
                else:
                    position_id = str(json.loads(body)["position"]["id"]).encode()
                self.closing = True
                self.open_sent = sent_at
                return self.close_head + position_id + self.close_tail
        else:
            if measuring:
                rec.answered(status, now - sent_at, 2)
                if 200 <= status < 300:
                    rec.pairs.append(now - self.open_sent)
            self.closing = False
        if rec.state == 2:
            return None
        return self.opens[self.rng.getrandbits(1)]

    def connection_lost(self, now: float) -> None:
        self.rec.lost()


def load_generator(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    host = f"127.0.0.1:{spec['port']}"
    rec = Recorder(warmup_s=spec["warmup_s"], seconds=spec["seconds"], server_pid=spec["server_pid"])
    tokens = spec["tokens"]
    rng = random.Random(spec.get("seed", 1))
    workloads: list[Workload] = []
    for index in range(spec["connections"]):
        if spec["mode"] == "noop":
            workloads.append(Ping(rec, host))
        else:
            workloads.append(OpenClose(rec, host, tokens[index % len(tokens)], rng))
    conns = [Conn("127.0.0.1", spec["port"], workload) for workload in workloads]
    # connecting took a moment: the warm-up starts now
    now = time.perf_counter()
    rec.t0 = now + spec["warmup_s"]
    rec.t_end = rec.t0 + spec["seconds"]
    gc.collect()
    gc.freeze()
    gc.disable()
    unfinished = drive(conns, hard_deadline=rec.t_end + 15.0)
    result = rec.result(unfinished)
    result["keepalive_closes"] = sum(conn.closed_by_server for conn in conns)
    result["broken_connections"] = sum(conn.reconnects for conn in conns)
    print(json.dumps(result), flush=True)


# ------------------------------------------------------------------ set-up (this process)

class Onboard(Workload):
    """Sign up then sign in users taken from a shared list; collects access tokens."""

    def __init__(self, host: str, emails: list[str], tokens: dict[str, str]) -> None:
        self.host = host
        self.emails = emails
        self.tokens = tokens
        self.email: Optional[str] = None
        self.step = ""
        self.retries = 0

    def _next(self) -> Optional[bytes]:
        if not self.emails:
            return None
        self.email = self.emails.pop()
        self.step = "signup"
        return self._request()

    def _request(self) -> bytes:
        return request_bytes("POST", f"/api/v1/auth/{self.step}", host=self.host,
                             body={"email": self.email, "password": PASSWORD})

    def first(self, now: float) -> Optional[bytes]:
        return self._next()

    def answer(self, status: int, body: bytes, sent_at: float, now: float) -> Optional[bytes]:
        if status in (429, 503) and self.retries < 1000:
            self.retries += 1
            time.sleep(0.01)
            return self._request()
        if self.step == "signup":
            if status not in (201, 409):
                raise RuntimeError(f"signup {self.email}: HTTP {status} {body[:300]!r}")
            self.step = "signin"
            return self._request()
        if status != 200:
            raise RuntimeError(f"signin {self.email}: HTTP {status} {body[:300]!r}")
        assert self.email is not None
        self.tokens[self.email] = json.loads(body)["access_token"]
        return self._next()


def setup_users(port: int, users: int) -> list[str]:
    emails = [f"bench{index:04d}@http-orders.test" for index in range(users)]
    tokens: dict[str, str] = {}
    pending = list(reversed(emails))
    host = f"127.0.0.1:{port}"
    conns = [Conn("127.0.0.1", port, Onboard(host, pending, tokens)) for _ in range(min(16, users))]
    drive(conns, hard_deadline=time.perf_counter() + 600)
    missing = [email for email in emails if email not in tokens]
    if missing:
        raise RuntimeError(f"{len(missing)} users could not sign in")
    return [tokens[email] for email in emails]


def http_get_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, what: str, timeout: float, server: "Server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"the server exited with {server.proc.returncode} while waiting for {what}")
        try:
            if predicate():
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


CONFIG = """\
# written by bench/http_orders.py: defaults, except limits that never throttle the bench and a
# cheap password hash (sign-up/sign-in are untimed set-up; orders never hash)
[limits]
ip_rate_per_s = 10000000
ip_burst = 20000000
account_rate_per_s = 10000000
account_burst = 20000000
signup_per_minute = 10000000
signin_failures_per_minute = 10000
signin_email_failures_per_minute = 10000
signin_ip_failures_per_minute = 10000

[auth]
argon2_time_cost = 1
argon2_memory_kib = 1024
argon2_parallelism = 1
access_ttl_s = 3600
"""


class Server:
    def __init__(self, tmp: Path, *, stage_profile: Optional[Path] = None) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.ws_port = free_port()
        config = tmp / "bench.toml"
        config.write_text(CONFIG)
        self.stdout = open(tmp / "server.out", "wb")
        self.stderr = open(tmp / "server.err", "wb")
        command = [sys.executable, str(ROOT / "supervisor.py"), "run", "--config", str(config),
                   "--data-dir", str(tmp / "data"), "--http-port", str(self.port),
                   "--ws-port", str(self.ws_port), "--feed", "synthetic"]
        env = dict(os.environ)
        if stage_profile is not None:
            env["EXNESS_STAGE_PROFILE"] = str(stage_profile)
        self.proc = subprocess.Popen(command, cwd=str(ROOT), stdout=self.stdout, stderr=self.stderr,
                                     stdin=subprocess.DEVNULL, env=env)
        self.pid = self.proc.pid

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.tmp / "server.err").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> Optional[int]:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log(f"server {self.pid} did not exit 30 s after SIGTERM: SIGKILL")
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
        self.stdout.close()
        self.stderr.close()
        return self.proc.returncode


# ------------------------------------------------------------------ phases

def run_phase(server: Server, tmp: Path, *, mode: str, connections: int, seconds: float, warmup_s: float,
              tokens: list[str], py_spy: Optional[str] = None, seed: int = 1) -> dict:
    spec_path = tmp / f"spec-{mode}-{connections}.json"
    spec_path.write_text(json.dumps({"port": server.port, "mode": mode, "connections": connections,
                                     "seconds": seconds, "warmup_s": warmup_s, "tokens": tokens,
                                     "server_pid": server.pid, "seed": seed}))
    log(f"phase {mode} c={connections}: {warmup_s:g} s warm-up + {seconds:g} s")
    load = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--load-generator", str(spec_path)],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    profiler: Optional[subprocess.Popen] = None
    result: Optional[dict] = None
    window_ns = [0]
    try:
        assert load.stdout is not None
        for line in load.stdout:
            message = json.loads(line)
            if message.get("event") == "window_start":
                window_ns[0] = time.time_ns()
            if message.get("event") == "window_start" and py_spy:
                duration = max(1, int(min(10, seconds)))
                pyspy_bin = Path(sys.executable).with_name("py-spy")
                log(f"py-spy recording server {server.pid} for {duration} s -> {py_spy}")
                profiler = subprocess.Popen([str(pyspy_bin), "record", "-p", str(server.pid), "-d",
                                             str(duration), "-f", "raw", "-o", py_spy],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            elif message.get("event") == "result":
                result = message
        load.wait(timeout=60)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
        if profiler is not None:
            try:
                profiler.wait(timeout=60)
            except subprocess.TimeoutExpired:
                profiler.kill()
                profiler.wait()
    if load.returncode != 0 or result is None:
        raise RuntimeError(f"load generator failed (exit {load.returncode}) in phase {mode} c={connections}")
    elapsed = result["elapsed_s"]
    result["window_ns"] = (window_ns[0], window_ns[0] + int(elapsed * 1e9))
    result["per_s"] = result["ok"] / elapsed
    result["opens_per_s"] = result["opens"] / elapsed
    result["error_count"] = sum(result["errors"].values()) + result["unfinished"]
    log(f"  {result['per_s']:.0f}/s ok, p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
        f"errors {result['error_count']} {result['errors'] or ''}; server CPU "
        f"{result.get('server_cpu_pct', float('nan')):.0f}%, load generator CPU "
        f"{result.get('loadgen_cpu_pct', float('nan')):.0f}%; reconnects after Connection: close "
        f"{result['keepalive_closes']}")
    if result.get("loadgen_cpu_pct", 0) > 85:
        log("  warning: the load generator was near a full core; figures may be limited by it")
    return result


def cpu_extras(result: dict) -> dict:
    return {"server_cpu_pct": round(result.get("server_cpu_pct", float("nan")), 1),
            "loadgen_cpu_pct": round(result.get("loadgen_cpu_pct", float("nan")), 1)}


def cpu_ratio(noop: dict, orders: dict) -> float:
    """The same ratio per second of the server's CPU: orders per server-CPU-second over no-ops per
    server-CPU-second. On a shared machine the server gets a different share of the CPU in each
    phase, which moves the wall-clock ratio; this one moves less."""
    try:
        per_cpu = [phase["per_s"] / (phase["server_cpu_pct"] / 100) for phase in (noop, orders)]
    except (KeyError, ZeroDivisionError):
        return float("nan")
    return round(per_cpu[1] / per_cpu[0], 3)


def report_pair(connections: int, noop: dict, orders: dict) -> None:
    c = f"c{connections}"
    emit(f"noop_per_s_{c}", noop["per_s"], "1/s", None, "higher", endpoint="GET /api/v1/ping",
         p50_ms=round(noop["p50_ms"], 3), p99_ms=round(noop["p99_ms"], 3), errors=noop["error_count"],
         **cpu_extras(noop))
    emit(f"orders_per_s_{c}", orders["per_s"], "1/s", TARGET_ORDERS_PER_S if connections == 32 else None,
         "higher", counts="2xx opens + closes (each one durable engine command)", **cpu_extras(orders))
    emit(f"trades_per_s_{c}", orders["opens_per_s"], "1/s", None, "higher",
         counts="2xx market opens (each followed by its close)",
         reference=REFERENCE["clone_trades_per_s_c32"] if connections == 32 else None)
    ratio = orders["per_s"] / noop["per_s"] if noop["per_s"] else float("nan")
    emit("ratio_to_noop" if connections == 32 else f"ratio_to_noop_{c}", ratio, "ratio",
         TARGET_RATIO if connections == 32 else None, "higher", per_server_cpu=cpu_ratio(noop, orders))
    emit(f"p50_ms_{c}", orders["p50_ms"], "ms", None, "lower",
         open_p50_ms=round(orders["open_p50_ms"], 3), close_p50_ms=round(orders["close_p50_ms"], 3))
    emit(f"p99_ms_{c}", orders["p99_ms"], "ms", TARGET_P99_MS if connections == 32 else None, "lower",
         open_p99_ms=round(orders["open_p99_ms"], 3), close_p99_ms=round(orders["close_p99_ms"], 3),
         p999_ms=round(orders["p999_ms"], 3), max_ms=round(orders["max_ms"], 3),
         reference=REFERENCE["clone_p99_ms_c32"] if connections == 32 else None)
    emit(f"errors_{c}", orders["error_count"], "count", 0, "lower", by_status=orders["errors"],
         unfinished=orders["unfinished"])


STAGES = (("auth", "arrived", "authenticated"), ("parse", "authenticated", "submitted"),
          ("queue", "submitted", "applied"), ("commit_wait", "applied", "write_start"),
          ("fsync", "write_start", "write_end"), ("reply", "write_end", "replied"),
          ("answer", "replied", "answered"), ("render", "answered", "rendered"),
          ("write", "rendered", "sent"), ("server", "arrived", "sent"))


def _ms_quantiles(values: list[float]) -> dict:
    values.sort()
    return {"n": len(values), "p50_ms": round(quantile(values, 0.5) / 1e6, 3),
            "p90_ms": round(quantile(values, 0.9) / 1e6, 3), "p99_ms": round(quantile(values, 0.99) / 1e6, 3),
            "max_ms": round(values[-1] / 1e6, 3) if values else float("nan"),
            "mean_ms": round(sum(values) / len(values) / 1e6, 3) if values else float("nan")}


def report_stages(profile: dict, window: tuple[int, int]) -> None:
    """The ``--stages`` lines for the requests that arrived within ``window`` (wall-clock ns)."""
    import bisect
    start, end = window
    fields = profile["request_fields"]
    writes = profile["writes"]            # sorted by first_seq
    write_seqs = [write[0] for write in writes]
    per_stage: dict[str, list[float]] = {name: [] for name, _, _ in STAGES}
    for row in profile["requests"]:
        stamps = dict(zip(fields, row))
        if not (start <= stamps["arrived"] < end) or not stamps["sent"]:
            continue
        if stamps["seq"] and writes:
            at = bisect.bisect_right(write_seqs, stamps["seq"]) - 1
            if at >= 0:
                stamps["write_start"], stamps["write_end"] = writes[at][1], writes[at][2]
        for name, first, last in STAGES:
            if stamps.get(first) and stamps.get(last):
                per_stage[name].append(stamps[last] - stamps[first])
    for name, _, _ in STAGES:
        emit(f"stage_{name}", _ms_quantiles(per_stage[name])["p99_ms"], "ms", None, "lower",
             phase="orders_c32", **_ms_quantiles(per_stage[name]))
    in_window = [w for w in writes if start <= w[1] < end]
    emit("stage_group_commits", len(in_window), "count", None, "lower", phase="orders_c32",
         commands_per_fsync=round(len(per_stage["fsync"]) / len(in_window), 2) if in_window else None)
    seconds = {int(second): entry for second, entry in profile["per_second"].items()}
    whole = range(start // 1_000_000_000 + 1, end // 1_000_000_000)   # the window's whole seconds
    in_seconds = [row for row in profile["requests"]
                  if row[2] // 1_000_000_000 in whole and row[fields.index("sent")]]
    steps_in = sum(seconds.get(second, [0, 0])[0] for second in whole)
    cpu_in = sum(seconds.get(second, [0, 0])[1] for second in whole)
    emit("loop_steps_per_order", steps_in / len(in_seconds) if in_seconds else float("nan"), "steps", None,
         "lower", phase="orders_c32", seconds=len(whole), orders=len(in_seconds),
         loop_cpu_ms_per_order=round(cpu_in / len(in_seconds) / 1e6, 4) if in_seconds else None,
         note="task steps (scheduling rounds x tasks) and event-loop thread CPU per answered order")
    steps = sorted(profile["steps"].items(), key=lambda item: -item[1][4])
    emit("loop_longest_cpu_steps", steps[0][1][4] / 1e6 if steps else 0, "ms", None, "lower", scope="whole run",
         by_task=[{"task": name, "max_cpu_ms": round(entry[4] / 1e6, 3), "max_wall_ms": round(entry[2] / 1e6, 3),
                   "steps": entry[0], "cpu_s": round(entry[3] / 1e9, 3), "wall_s": round(entry[1] / 1e9, 3)}
                  for name, entry in steps[:12]])
    long_in_window = [step for step in profile["long_steps"] if start <= step[1] < end]
    by_task: dict[str, list] = {}
    for elapsed, _at, name, cpu in long_in_window:
        by_task.setdefault(name, []).append((elapsed, cpu))
    emit("loop_steps_over_1ms", len(long_in_window), "count", None, "lower", phase="orders_c32",
         note="wall-clock step length; cpu_ms is the thread's CPU in those steps (the rest: descheduled)",
         by_task=sorted(({"task": name, "count": len(values), "max_ms": round(max(v[0] for v in values) / 1e6, 3),
                          "total_ms": round(sum(v[0] for v in values) / 1e6, 3),
                          "cpu_ms": round(sum(v[1] for v in values) / 1e6, 3)} for name, values in by_task.items()),
                        key=lambda item: -item["total_ms"])[:12])
    collections = [entry for entry in profile["gc"] if start <= entry[1] < end]
    emit("gc_pauses", len(collections), "count", None, "lower", phase="orders_c32",
         by_generation={str(gen): {"count": sum(1 for e in collections if e[0] == gen),
                                   "max_ms": round(max((e[2] for e in collections if e[0] == gen), default=0) / 1e6, 3),
                                   "total_ms": round(sum(e[2] for e in collections if e[0] == gen) / 1e6, 3)}
                        for gen in (0, 1, 2)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s phases, 64 users")
    parser.add_argument("--seconds", type=float, help="measured seconds per phase (default 20; --quick 3)")
    parser.add_argument("--users", type=int, help="accounts to trade from (default 256; --quick 64)")
    parser.add_argument("--py-spy", metavar="FILE",
                        help="record the server with py-spy (raw) during the 32-connection order phase")
    parser.add_argument("--stages", action="store_true",
                        help="profile the server's stages, loop steps and GC (see the docstring)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir (server logs)")
    parser.add_argument("--load-generator", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_generator:
        load_generator(args.load_generator)
        return

    seconds = args.seconds if args.seconds else (3.0 if args.quick else 20.0)
    users = args.users if args.users else (64 if args.quick else 256)
    warmup_s = 0.5 if args.quick else 1.0
    sequential_s = min(seconds, 3.0 if args.quick else 5.0)
    started = time.perf_counter()
    tmp_context = tempfile.TemporaryDirectory(prefix="http_orders-")
    tmp = Path(tmp_context.name)
    profile_path = tmp / "stage-profile.json" if args.stages else None
    server = Server(tmp, stage_profile=profile_path)
    log(f"server pid {server.pid} on port {server.port}; data dir {tmp}")
    results: dict[str, dict] = {}
    try:
        wait_until(lambda: http_get_json(server.port, "/api/v1/ping").get("status") == "ok",
                   "the HTTP API", 60, server)
        began = time.perf_counter()
        tokens = setup_users(server.port, users)
        log(f"{users} users signed up and signed in in {time.perf_counter() - began:.1f} s")
        wait_until(lambda: http_get_json(server.port, "/api/v1/quotes/BTCUSDT").get("bid") is not None,
                   "a BTCUSDT quote", 30, server)

        seq = run_phase(server, tmp, mode="orders", connections=1, seconds=sequential_s, warmup_s=warmup_s,
                        tokens=tokens)
        results["sequential"] = seq
        emit("sequential_open_close_ms", seq["pair_mean_ms"], "ms", None, "lower",
             pairs=seq["pairs"], open_p50_ms=round(seq["open_p50_ms"], 3),
             close_p50_ms=round(seq["close_p50_ms"], 3), errors=seq["error_count"],
             reference=REFERENCE["clone_sequential_open_close_ms"])
        for connections in (32, 256):
            noop = run_phase(server, tmp, mode="noop", connections=connections, seconds=seconds,
                             warmup_s=warmup_s, tokens=tokens)
            orders = run_phase(server, tmp, mode="orders", connections=connections, seconds=seconds,
                               warmup_s=warmup_s, tokens=tokens,
                               py_spy=args.py_spy if connections == 32 else None, seed=connections)
            results[f"noop_c{connections}"] = noop
            results[f"orders_c{connections}"] = orders
            report_pair(connections, noop, orders)
    except BaseException:
        tail = server.tail()
        if tail:
            log("server log tail:\n" + tail)
        raise
    finally:
        code = server.stop()
        log(f"server exited with {code}")
        if profile_path is not None and "orders_c32" in results:
            if profile_path.exists():
                report_stages(json.loads(profile_path.read_text()), results["orders_c32"]["window_ns"])
            else:
                log("no stage profile was written")
        if args.keep:
            log(f"kept {tmp}")
        else:
            tmp_context.cleanup()
    log(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
