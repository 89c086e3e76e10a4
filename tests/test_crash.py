"""Crash safety: SIGKILL the running system at random points; every acknowledged command survives.

For several seeds: run the real system (tests/crash_driver.py) in a subprocess while it drives
commands and snapshots every 0.5 s, kill it with SIGKILL after a seeded number of acks, restart
it (it must come up again and keep trading), kill it again, then check:

* every acknowledged command is in the journal at its acknowledged seq, exactly as acknowledged;
* recovery (newest snapshot + tail) gives the same state hash as a full replay from empty;
* the core's invariants hold and replay verified the journal's checkpoints.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from actors.engine.keys import load_or_create_key
from actors.engine.recovery import journal_dir, recover
from crash_driver import driver_config
from exness_actors import codec
from exness_actors.engine import Engine
from exness_actors.journal import iter_payloads
from exness_actors.replay import Checkpoint, decode_record, replay

ROOT = Path(__file__).resolve().parent.parent
DRIVER = Path(__file__).resolve().parent / "crash_driver.py"


def acks(ack_log: Path) -> list[dict]:
    if not ack_log.exists():
        return []
    return [json.loads(line) for line in ack_log.read_text().splitlines() if line.endswith("}")]


def run_and_kill(data_dir: Path, ack_log: Path, seed: int, kill_after: int, timeout: float = 60) -> None:
    before = len(acks(ack_log))
    process = subprocess.Popen([sys.executable, str(DRIVER), str(data_dir), str(ack_log), str(seed)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while len(acks(ack_log)) < before + kill_after:
            if process.poll() is not None:
                raise AssertionError(f"driver exited early ({process.returncode}): "
                                     f"{process.stderr.read().decode(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("the system did not acknowledge commands in time")
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_loses_no_acknowledged_command(tmp_path, seed):
    rng = random.Random(seed)
    data_dir, ack_log = tmp_path / "data", tmp_path / "acks.jsonl"
    for _round in range(2):
        run_and_kill(data_dir, ack_log, seed * 10 + _round, kill_after=rng.randint(200, 1500))
    acknowledged = acks(ack_log)
    assert acknowledged, "nothing was acknowledged"

    records = {}
    checkpoints = 0
    for payload in iter_payloads(journal_dir(data_dir)):
        record = decode_record(payload)
        if isinstance(record, Checkpoint):
            checkpoints += 1
        else:
            records[record.seq] = record
    for ack in acknowledged:
        record = records.get(ack["seq"])
        assert record is not None, f"acknowledged seq {ack['seq']} ({ack['key']}) is missing"
        assert json.loads(json.dumps(codec.to_wire(record))) == ack["wire"], ack

    cfg = driver_config(str(data_dir))
    key = load_or_create_key(data_dir)
    recovered = recover(data_dir, cfg.core, key)
    full = replay(Engine(cfg.core), iter_payloads(journal_dir(data_dir)))
    assert full.checkpoints_verified == checkpoints      # every checkpoint in the journal was checked
    assert recovered.engine.state_hash() == full.engine.state_hash()
    recovered.engine.check_invariants()
    assert recovered.engine.last_seq >= max(a["seq"] for a in acknowledged)
    snapshots = list((data_dir / "snapshots").glob("*.snap"))
    assert os.stat(data_dir / "snapshot.key").st_mode & 0o777 == 0o600
    print(f"seed {seed}: {len(acknowledged)} acks, last seq {recovered.engine.last_seq}, "
          f"{len(snapshots)} snapshots, recovered from seq {recovered.snapshot_seq}")


def test_sigterm_drains_snapshots_and_exits_zero(tmp_path):
    data_dir, ack_log = tmp_path / "data", tmp_path / "acks.jsonl"
    process = subprocess.Popen([sys.executable, str(DRIVER), str(data_dir), str(ack_log), "5"],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(acks(ack_log)) < 300 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, process.stderr.read().decode(errors="replace")[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    acknowledged = acks(ack_log)
    assert len(acknowledged) >= 300
    cfg = driver_config(str(data_dir))
    recovered = recover(data_dir, cfg.core, load_or_create_key(data_dir))
    # the final snapshot covers everything: nothing left to replay
    assert recovered.replayed == 0
    assert recovered.snapshot_seq == recovered.engine.last_seq >= max(a["seq"] for a in acknowledged)
    full = replay(Engine(cfg.core), iter_payloads(journal_dir(data_dir)))
    assert full.engine.state_hash() == recovered.engine.state_hash()


class Server:
    """``exness-actors run`` in a subprocess on free ports; ``url`` from its announce line."""

    def __init__(self, data_dir: Path, **environ: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "EXNESS_HTTP__PORT": "0", "EXNESS_WS__PORT": "0", **environ}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "run", "--data-dir", str(data_dir), "--feed", "synthetic"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = ""
        deadline = time.monotonic() + 60
        while not self.url and time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                raise AssertionError(f"the server exited {self.process.returncode}: {self.stderr()}")
            if "HTTP API " in line:
                self.url = line.split("HTTP API ", 1)[1].split("/api/v1", 1)[0]
        assert self.url, "the server did not announce its URL"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stderr(self) -> str:
        return self.process.stderr.read()[-3000:] if self.process.poll() is not None else ""

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self.process.stdout.close()
        self.process.stderr.close()


PING = b"GET /api/v1/ping HTTP/1.1\r\nHost: test\r\n\r\n"


def _read_answer(sock: socket.socket) -> tuple[str, bytes]:
    """``(outcome, head)``: "answered" with the response head, or "hung" / "closed" (nothing of a
    response came) / "cut" (part of one came)."""
    data = b""
    while True:
        head, found, body = data.partition(b"\r\n\r\n")
        if found:
            length = next((int(line.split(b":", 1)[1]) for line in head.lower().split(b"\r\n")
                           if line.startswith(b"content-length:")), 0)
            if len(body) >= length:
                return "answered", head.lower()
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return "hung", b""
        except OSError:
            chunk = b""
        if not chunk:
            return ("cut" if data else "closed"), b""
        data += chunk


def _keep_alive_client(port: int, answers: list, stop: threading.Event, request: bytes = PING) -> None:
    """Send ``request`` over one keep-alive connection until the server says ``Connection: close``
    or closes it; every request sent must be answered or see the connection closed, never hang."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    except OSError:
        return                           # the server is already gone
    with sock:
        while True:
            try:
                sock.sendall(request)
            except OSError:
                return                   # closed by the server while idle: nothing was in flight
            outcome, head = _read_answer(sock)
            if outcome != "answered":
                if outcome != "closed":
                    answers.append(outcome)
                return
            closing = b"\r\nconnection: close" in head
            answers.append(head.split(b"\r\n", 1)[0].decode().strip() + (" close" if closing else ""))
            if closing or stop.is_set():
                return


def test_sigterm_answers_requests_on_keep_alive_connections(tmp_path):
    """SIGTERM under load: requests in flight on keep-alive connections are answered, with
    ``Connection: close``, and the connections are closed — none waits out the grace period
    (30 s here; a client gives up after 20 s)."""
    server = Server(tmp_path / "data", EXNESS_HTTP__GRACEFUL_TIMEOUT_S="30")
    try:
        answers: list = []
        stop = threading.Event()
        clients = [threading.Thread(target=_keep_alive_client, args=(server.port, answers, stop))
                   for _ in range(16)]
        for client in clients:
            client.start()
        while len(answers) < 500:
            time.sleep(0.01)
        server.process.send_signal(signal.SIGTERM)
        for client in clients:
            client.join(timeout=60)
        stop.set()
        assert server.process.wait(timeout=60) == 0, server.stderr()
        assert "hung" not in answers and "cut" not in answers, [a for a in answers if not a.startswith("HTTP")]
        assert any(answer == "http/1.1 200 close" for answer in answers), answers[-20:]
    finally:
        server.close()


def test_a_repeated_sigterm_does_not_cut_the_drain_short(tmp_path):
    """``timeout``, process managers and a shell's process group can deliver SIGTERM twice; the
    second must not kill the process mid-drain (no final snapshot, no clean exit)."""
    server = Server(tmp_path / "data")
    try:
        server.process.send_signal(signal.SIGTERM)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
        assert "event=shutdown_complete" in server.stderr()
        assert list((tmp_path / "data" / "snapshots").glob("*.snap"))
    finally:
        server.close()


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs mounted for the test (root only; skipped with the reason otherwise)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(directory: Path) -> None:
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def _order_request(port: int, token: str) -> bytes:
    body = json.dumps({"symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "1.00",
                       "leverage": 2}).encode()
    return (b"POST /api/v1/orders HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s" % (token.encode(), len(body), body))


def test_disk_full_answers_in_flight_requests_and_exits_with_one_clear_line(small_disk):
    """The journal's disk fills under load: requests in flight are answered 503, the process
    exits with the disk-full exit code (3) and says what, where and how much space, in one line."""
    import httpx

    server = Server(small_disk / "data")
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            credentials = {"email": "full@example.com", "password": "correct horse battery"}
            assert client.post("/api/v1/auth/signup", json=credentials).status_code == 201
            token = client.post("/api/v1/auth/signin", json=credentials).json()["access_token"]
        answers: list = []
        stop = threading.Event()
        request = _order_request(server.port, token)
        clients = [threading.Thread(target=_keep_alive_client, args=(server.port, answers, stop, request))
                   for _ in range(8)]
        for client in clients:
            client.start()
        while len(answers) < 50:
            time.sleep(0.01)
        _fill(small_disk)
        code = server.process.wait(timeout=60)
        for client in clients:
            client.join(timeout=30)
        stderr = server.process.stderr.read()
        assert code == 3, stderr[-3000:]
        assert "Traceback" not in stderr and "ExceptionGroup" not in stderr, stderr[-3000:]
        last = stderr.strip().splitlines()[-1]
        assert "disk full" in last and str(small_disk / "data" / "journal") in last and "free" in last, last
        assert "hung" not in answers and "cut" not in answers, [a for a in answers if not a.startswith("http")]
        assert "http/1.1 503 close" in answers, answers[-20:]
        assert {answer.split()[1] for answer in answers} <= {"201", "422", "503"}, set(answers)
    finally:
        server.close()
