"""A real ``exness-actors run`` on free loopback ports, and Chromium for the browser tier
(tests/test_browser.py, bench/web.py).

The browser is Debian's ``chromium`` package driven by Python Playwright (its own browser
download cannot work here). Without a chromium on PATH the browser tier is skipped with a
reason, or fails when ``EXNESS_REQUIRE_BROWSER=1`` (as in ``.ci/run``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
STARTUP_S = 60


def browser_required() -> bool:
    return os.environ.get("EXNESS_REQUIRE_BROWSER", "").strip() == "1"


def chromium_path() -> Optional[str]:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Platform:
    """``exness-actors run`` in ``data_dir`` on fixed free ports: start, stop (SIGTERM), restart."""

    def __init__(self, data_dir: Path, *, feed: str = "synthetic", env: Optional[dict[str, str]] = None) -> None:
        self.data_dir = data_dir
        self.feed = feed
        self.http_port = free_port()
        self.ws_port = free_port()
        self.env = {**os.environ, "EXNESS_JOURNAL__FSYNC": "off", "EXNESS_AUTH__ARGON2_TIME_COST": "1",
                    "EXNESS_AUTH__ARGON2_MEMORY_KIB": "8", "EXNESS_AUTH__ARGON2_PARALLELISM": "1",
                    "EXNESS_SNAPSHOT__INTERVAL_S": "3600", **(env or {})}
        self.process: Optional[subprocess.Popen] = None
        self.log_path = data_dir.parent / f"{data_dir.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> "Platform":
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "run", "--data-dir", str(self.data_dir), "--feed", self.feed,
             "--http-port", str(self.http_port), "--ws-port", str(self.ws_port), "--log-level", "WARNING"],
            cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.process.stdout is not None
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                raise AssertionError(f"the platform exited {self.process.returncode}: "
                                     f"{self.log_path.read_text()[-3000:]}")
            if "HTTP API" in line:
                threading.Thread(target=self._drain, daemon=True).start()
                self._wait_ready(deadline)
                return self
        raise AssertionError(f"the platform did not start: {self.log_path.read_text()[-3000:]}")

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for _ in self.process.stdout:
            pass

    def _wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("the platform never became ready")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()
