"""Notifications end to end, across a crash: ``exness-actors run`` in a subprocess with a local
SMTP server and a local webhook receiver. A market fill goes out on the WebSocket
``notifications`` channel, by e-mail and as a signed webhook; the webhook receiver holds the
first delivery open, the process is killed (SIGKILL) while it is in flight, and the restarted
platform delivers it — same id — with nothing lost and nothing recorded twice."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from notify_helpers import SmtpReceiver, WebhookReceiver

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


class Platform:
    """``exness-actors run`` on free ports; its HTTP and WebSocket URLs from the announce line."""

    def __init__(self, data_dir: Path, environ: dict[str, str]) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "EXNESS_HTTP__PORT": "0", "EXNESS_WS__PORT": "0", **environ}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "run", "--data-dir", str(data_dir), "--feed", "synthetic"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.url = self.ws_url = ""
        deadline = time.monotonic() + 60
        while not self.url and time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                raise AssertionError(f"the platform exited {self.process.returncode}")
            if "HTTP API " in line:
                self.url = line.split("HTTP API ", 1)[1].split("/api/v1", 1)[0]
                self.ws_url = line.split("WebSocket ", 1)[1].split(" ", 1)[0]
        assert self.url, "the platform did not announce its URL"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self.process.stdout.close()


def environment(smtp: SmtpReceiver) -> dict[str, str]:
    return {"EXNESS_NOTIFICATIONS__SMTP_HOST": "127.0.0.1", "EXNESS_NOTIFICATIONS__SMTP_PORT": str(smtp.port),
            "EXNESS_NOTIFICATIONS__POLL_INTERVAL_S": "0.1", "EXNESS_NOTIFICATIONS__RETRY_BASE_S": "0.2",
            "EXNESS_NOTIFICATIONS__WEBHOOK_TIMEOUT_S": "60",
            "EXNESS_AUTH__ARGON2_TIME_COST": "1", "EXNESS_AUTH__ARGON2_MEMORY_KIB": "8",
            "EXNESS_AUTH__ARGON2_PARALLELISM": "1", "EXNESS_JOURNAL__FSYNC": "batch"}


async def sign_in(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    credentials = {"email": email, "password": "correct horse battery"}
    assert (await client.post("/api/v1/auth/signup", json=credentials)).status_code == 201
    signed = await client.post("/api/v1/auth/signin", json=credentials)
    return {"Authorization": f"Bearer {signed.json()['access_token']}"}


async def place_when_quoted(client: httpx.AsyncClient, auth: dict) -> dict:
    order = {"symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "100.00", "leverage": 10}
    with trio.fail_after(30):
        while True:
            response = await client.post("/api/v1/orders", json=order, headers=auth)
            if response.status_code == 201:
                return response.json()
            assert response.json()["error"]["code"] in ("NO_QUOTE", "STALE_QUOTE"), response.text
            await trio.sleep(0.1)


async def next_notification(ws) -> dict:
    with trio.fail_after(30):
        while True:
            frame = json.loads(await ws.get_message())
            for message in frame if isinstance(frame, list) else [frame]:
                if message.get("event") == "notification":
                    return message


async def test_a_fill_reaches_ws_email_and_a_signed_webhook_across_a_crash(tmp_path):
    data_dir = tmp_path / "data"
    with SmtpReceiver() as smtp, WebhookReceiver() as hooks:
        hooks.hold["/hook"] = held = threading.Event()      # the first delivery hangs: in flight at the kill
        env = environment(smtp)
        first = await trio.to_thread.run_sync(Platform, data_dir, env)
        try:
            async with httpx.AsyncClient(base_url=first.url, timeout=10) as client:
                auth = await sign_in(client, "crash@example.com")
                prefs = (await client.put("/api/v1/notifications/preferences", headers=auth, json={
                    "channels": ["ws", "email", "webhook"], "webhook_url": hooks.url("/hook")})).json()
                async with open_websocket_url(first.ws_url) as ws:
                    token = auth["Authorization"].split()[1]
                    await ws.send_message(json.dumps({"op": "auth", "token": token}))
                    await ws.send_message(json.dumps({"op": "subscribe", "channels": ["notifications"]}))
                    placed = await place_when_quoted(client, auth)
                    pushed = await next_notification(ws)
            assert pushed["channel"] == "notifications" and pushed["notification"]["kind"] == "order_filled"
            notification_id = pushed["notification"]["id"]
            assert pushed["notification"]["data"]["order_id"] == placed["order"]["id"]
            assert await trio.to_thread.run_sync(hooks.wait_for, lambda: hooks.at("/hook"))
        finally:
            first.kill()                                        # SIGKILL, the webhook still in flight
        held.set()
        second = await trio.to_thread.run_sync(Platform, data_dir, env)
        try:
            assert await trio.to_thread.run_sync(hooks.wait_for, lambda: len(hooks.at("/hook")) >= 2)
            assert await trio.to_thread.run_sync(smtp.wait_for, lambda: smtp.with_id(notification_id))
            async with httpx.AsyncClient(base_url=second.url, timeout=10) as client:
                listed = (await client.get("/api/v1/notifications", headers=auth)).json()
        finally:
            second.kill()
    # the webhook: the same notification, signed with the account's secret, delivered again after the crash
    delivered = hooks.at("/hook")
    assert {hook.headers["X-Exness-Notification-Id"] for hook in delivered} == {notification_id}
    for hook in delivered:
        signature = hmac.new(prefs["webhook_secret"].encode(), hook.body, hashlib.sha256).hexdigest()
        assert hook.headers["X-Exness-Signature"] == f"sha256={signature}"
        assert json.loads(hook.body) == pushed["notification"]
    # the e-mail
    (message, *repeats) = smtp.with_id(notification_id)
    assert smtp.recipients[0] == ["crash@example.com"] and "filled" in message["Subject"]
    # recorded once, with the id every channel carried
    assert [n["id"] for n in listed["notifications"]] == [notification_id]


def delivery_child_pid(log: Path) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if "event=delivery_process_started" in line:
                return int(line.split(" pid=", 1)[1].split()[0])
        time.sleep(0.1)
    raise AssertionError("the platform logged no delivery process")


def gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return any(line.split()[1:2] == ["Z"] for line in status.splitlines() if line.startswith("State:"))


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_the_platform_ends_its_delivery_child(tmp_path, how):
    """``exness-actors run`` delivers e-mail and webhooks from a child process: a graceful stop
    ends it, and so does the platform's death (SIGKILL: the child's stdin closes) — never an
    orphan left delivering."""
    import signal
    log = tmp_path / "platform.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "EXNESS_HTTP__PORT": "0", "EXNESS_WS__PORT": "0"}
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "run", "--data-dir", str(tmp_path / "data"), "--feed", "synthetic"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            while "HTTP API " not in (line := process.stdout.readline()):   # started (its signal handlers too)
                assert line or process.poll() is None, "the platform exited"
            child = delivery_child_pid(log)
            assert not gone(child)
            process.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
            process.wait(timeout=60)
            deadline = time.monotonic() + 15
            while not gone(child) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert gone(child)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stdout.close()
    if how == "sigterm":
        assert process.returncode == 0
        assert "event=delivery_process_stopped" in log.read_text()
