"""WebSocket fan-out: quote updates delivered per second to 1,000 subscribed clients.

The server side is the real stack in this process: ``supervisor.run_system`` (engine, journal
with the default fsync policy, store, candles; no price feed) and ``actors.ws.server.run``. The clients
are a load generator in a **separate process** on loopback (this script with
``--load-generator``): raw non-blocking sockets and a minimal RFC 6455 frame parser, so the
clients are cheap enough not to be the bottleneck. Each client subscribes to the BTCUSDT and
ETHUSDT quote channels; it counts the data messages it receives, unpacking batched frames.

Phases (each ``--seconds`` long, after a short warm-up):

1. ``engine alone``: SOLUSDT quotes (no subscriber) keep the engine's inbox full while the
   clients are connected and subscribed but idle → engine inputs/s without WS load.
2. ``fan-out``: BTCUSDT/ETHUSDT quotes at ``--rate`` per second in total (by default a demand
   of 400,000 updates/s: 400 quotes/s to 1,000 clients) → ``updates_per_s`` delivered (the headline; target 300,000 at
   1,000 clients), delivery latency (engine time of a frame's newest quote → receipt), frames/s,
   updates per frame, the server's CPU. No client may be dropped.
3. ``engine under fan-out``: phases 1 and 2 at once → engine inputs/s with the WS load and the
   slowdown ratio (3 / 1). The engine never waits for the WS server (one lossy subscription);
   what they share is this process's one core.
4. ``saturated``: a closed loop keeps about ``--pending-per-client`` messages pending per client
   → ``max_updates_per_s``, the ceiling (frames grow large; latency grows with them).

``--writer tasks`` runs the server with a writer task per client (trio-websocket's
``send_message``) instead of the shared flusher, for comparison; ``--profile PHASE`` writes a
pyinstrument profile of one phase. Prints one JSON object per metric (``bench``, ``metric``,
``value``, ``unit``, ``target``, ``better``). ``--quick``: 200 clients, 3 s phases. Results
depend on what else runs on the machine: ``load_average`` is reported with the headline.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BENCH = "ws_fanout"
#: upper bounds (ms) of the delivery-latency histogram buckets (the last one is open-ended)
LATENCY_BUCKETS_MS = [1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1000,
                      2000, 5000, 10_000, float("inf")]


def quantile_ms(histogram: list[int], q: float) -> float:
    total = sum(histogram)
    if not total:
        return float("nan")
    running = 0
    for bound, count in zip(LATENCY_BUCKETS_MS, histogram):
        running += count
        if running >= q * total:
            return bound
    return float("inf")


# ------------------------------------------------------------------ raw WebSocket client (load generator)

def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame (mask key 0: the payload goes out as is; servers must accept any key)."""
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


class RawClient:
    """One WebSocket connection driven by a selector loop; ``on_text(client, buf, start, end)``
    gets each text frame's payload as a slice of the receive buffer (no copy)."""

    __slots__ = ("sock", "inbuf", "outbuf", "open", "closed", "close_code", "frames", "state")

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        self.sock.sendall((f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.sock.setblocking(False)
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.open = False
        self.closed = False
        self.close_code: Optional[int] = None
        self.frames = 0
        self.state: Any = None

    def send_text(self, text: str | bytes) -> None:
        self.outbuf += client_frame(text.encode() if isinstance(text, str) else text)

    def flush(self) -> None:
        if self.outbuf and not self.closed:
            try:
                sent = self.sock.send(self.outbuf)
            except BlockingIOError:
                return
            except OSError:
                self.closed = True
                return
            del self.outbuf[:sent]

    def on_readable(self, on_text) -> None:
        try:
            data = self.sock.recv(1 << 18)
        except BlockingIOError:
            return
        except OSError:
            self.closed = True
            return
        if not data:
            self.closed = True
            return
        buf = self.inbuf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(f"handshake refused: {bytes(buf[:80])!r}")
            del buf[:end + 4]
            self.open = True
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > size:
                break
            opcode = first & 0x0F
            self.frames += 1
            if opcode == 0x1 or opcode == 0x0:
                on_text(self, buf, start, end)
            elif opcode == 0x9:                                   # ping → pong
                self.outbuf += client_frame(bytes(buf[start:end]), 0xA)
            elif opcode == 0x8:
                self.close_code = int.from_bytes(buf[start:start + 2], "big") if length >= 2 else 1005
                self.outbuf += client_frame(bytes(buf[start:start + 2]), 0x8)
                self.flush()
                self.closed = True
            pos = end
        if pos:
            del buf[:pos]


def run_loop(clients: list[RawClient], on_text, until, tick=None, tick_every: float = 0.25) -> None:
    selector = selectors.DefaultSelector()
    for client in clients:
        selector.register(client.sock, selectors.EVENT_READ, client)
    next_tick = time.monotonic() + tick_every
    while not until():
        for key, _ in selector.select(timeout=0.05):
            client = key.data
            client.on_readable(on_text)
            if client.outbuf:
                client.flush()
            if client.closed:
                selector.unregister(client.sock)
                client.sock.close()
        now = time.monotonic()
        if tick is not None and now >= next_tick:
            next_tick = now + tick_every
            for client in clients:
                if client.outbuf and not client.closed:
                    client.flush()
            tick()


def load_generator(args: argparse.Namespace) -> None:
    """The client process: connect, subscribe, count, report cumulative counters on stdout."""
    clients = []
    for _ in range(args.clients):
        clients.append(RawClient("127.0.0.1", args.port))
    subscribe = json.dumps({"op": "subscribe", "channels": ["quotes:BTCUSDT", "quotes:ETHUSDT"]})
    counters = {"messages": 0, "resyncs": 0, "bytes": 0}
    latency = [0] * len(LATENCY_BUCKETS_MS)

    def on_text(client: RawClient, buf: bytearray, start: int, end: int) -> None:
        counters["messages"] += buf.count(b'"data":', start, end)
        counters["bytes"] += end - start
        if buf.find(b'"resync"', start, end) >= 0:
            counters["resyncs"] += buf.count(b'"resync"', start, end)
        at = buf.rfind(b'"ts":', start, end)      # the newest quote of the frame: its engine time
        if at >= 0:
            stop = at + 5
            while 48 <= buf[stop] <= 57:
                stop += 1
            delay = time.time() * 1000 - int(buf[at + 5:stop])
            latency[bisect.bisect_left(LATENCY_BUCKETS_MS, delay)] += 1

    def handshaken() -> bool:
        return all(client.open or client.closed for client in clients)
    run_loop(clients, on_text, handshaken)
    for client in clients:
        client.send_text(subscribe)
        client.flush()

    def report() -> None:
        closed = [client.close_code for client in clients if client.closed]
        print(json.dumps({"t": time.monotonic(), "messages": counters["messages"],
                          "frames": sum(client.frames for client in clients), "bytes": counters["bytes"],
                          "resyncs": counters["resyncs"], "closed": len(closed), "latency": latency,
                          "close_codes": sorted(set(code for code in closed if code))}), flush=True)
    report()
    parent = os.getppid()
    run_loop(clients, on_text, lambda: os.getppid() != parent, tick=report)


# ------------------------------------------------------------------ the server side (this process)

def emit(metric: str, value: float, unit: str, target: Any = None, better: str = "higher", **extra: Any) -> None:
    line = {"bench": BENCH, "metric": metric, "value": round(value, 3), "unit": unit,
            "target": target, "better": better}
    line.update(extra)
    print(json.dumps(line), flush=True)


class Reports:
    """The load generator's latest counters, read from its stdout."""

    def __init__(self) -> None:
        self.latest: Optional[dict] = None
        self.count = 0

    async def follow(self, stream: Any) -> None:
        buffer = b""
        async for chunk in stream:
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                self.latest = json.loads(line)
                self.count += 1

    async def next(self) -> dict:
        import trio
        seen = self.count
        while self.count == seen:
            await trio.sleep(0.01)
        assert self.latest is not None
        return self.latest


async def bench(args: argparse.Namespace) -> None:
    import trio

    import supervisor
    from actors.ws import server as ws_actor
    from actors.auth_tokens import TokenIssuer
    from actors.config import load_config
    from actors.engine.messages import Overloaded
    from exness_actors.commands import Quote

    data_dir = tempfile.mkdtemp(prefix="ws-fanout-")
    cfg = load_config(environ={}, overrides={
        "data": {"dir": data_dir}, "snapshot": {"interval_s": 3600}, "http": {"port": 0},
        "ws": {"port": 0, "max_pending_bytes": args.max_pending_bytes,
               "flush_interval_ms": args.flush_interval_ms, "flush_duty": args.flush_duty,
               "writer": args.writer}})
    async with trio.open_nursery() as nursery:
        system = await nursery.start(functools.partial(
            supervisor.run_system, cfg, handle_signals=False, feed="none"))
        handle = system.handle
        ws_scope = trio.CancelScope()

        async def serve(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with ws_scope:
                await ws_actor.run(handle=handle, cfg=cfg, tokens=TokenIssuer(os.urandom(32)),
                                   task_status=task_status)
        server = await nursery.start(serve)
        await handle.request(Quote(symbol="BTCUSDT", bid=6_500_000, ask=6_500_100))
        await handle.request(Quote(symbol="ETHUSDT", bid=350_000, ask=350_050))

        process = await trio.lowlevel.open_process(
            [sys.executable, __file__, "--load-generator", "--port", str(server.port),
             "--clients", str(args.clients)], stdout=subprocess.PIPE)
        reports = Reports()
        nursery.start_soon(reports.follow, process.stdout)
        with trio.fail_after(120):
            while server.statistics()["clients"] < args.clients or not reports.latest:
                await trio.sleep(0.05)
            while sum(len(channel.subscribers) for channel in server.channels.quotes.values()) < 2 * args.clients:
                await trio.sleep(0.05)

        pending_limit = args.pending_per_client * 130 * args.clients   # ~130 bytes per quote message

        async def engine_load(done: trio.Event) -> None:
            """SOLUSDT quotes (nobody subscribes) keeping the engine's inbox full: its throughput
            is then what the engine can do with the CPU it gets."""
            tick = 0
            while not done.is_set():
                try:
                    for _ in range(1000):
                        tick += 1
                        handle.send_nowait(Quote(symbol="SOLUSDT", bid=150_000 + tick % 500,
                                                 ask=150_100 + tick % 500))
                except Overloaded:
                    pass
                await trio.sleep(0)

        async def paced_load(done: trio.Event) -> None:
            """BTCUSDT/ETHUSDT quotes at ``--rate`` per second in total (each goes to every client)."""
            tick = 0
            started = time.monotonic()
            while not done.is_set():
                due = int((time.monotonic() - started) * args.rate)
                while tick < due:
                    tick += 1
                    quote = Quote(symbol="BTCUSDT" if tick % 2 else "ETHUSDT",
                                  bid=6_500_000 + tick % 1000, ask=6_500_100 + tick % 1000)
                    try:
                        handle.send_nowait(quote)
                    except Overloaded:           # the saturating engine load filled the inbox
                        await handle.send(quote)
                await trio.sleep(0.001)

        async def saturating_load(done: trio.Event) -> None:
            """BTCUSDT/ETHUSDT quotes, keeping the WS server's pending output near a limit."""
            tick = 0
            per_quote = 130 * args.clients          # every client subscribes to both symbols
            while not done.is_set():
                deficit = pending_limit - sum(client.pending_bytes for client in server.clients)
                for _ in range(min(max(deficit // per_quote, 0), 500)):
                    tick += 1
                    quote = Quote(symbol="BTCUSDT" if tick % 2 else "ETHUSDT",
                                  bid=6_500_000 + tick % 1000, ask=6_500_100 + tick % 1000)
                    try:
                        handle.send_nowait(quote)
                    except Overloaded:
                        await handle.send(quote)
                await trio.sleep(0.001)

        async def phase(name: str, *loads: Any) -> dict:
            done = trio.Event()
            async with trio.open_nursery() as loaders:
                for load in loads:
                    loaders.start_soon(load, done)
                await trio.sleep(min(1.0, args.seconds / 3))           # warm up
                first = await reports.next()
                seq0, frames0, stats0, t0 = handle.durable_seq, server.frames_sent, server.statistics(), time.monotonic()
                cpu0 = time.process_time()
                profiler = None
                if args.profile and name == args.profile:
                    from pyinstrument import Profiler
                    profiler = Profiler(async_mode="disabled")
                    profiler.start()
                await trio.sleep(args.seconds)
                if profiler is not None:
                    profiler.stop()
                    Path(f"/tmp/ws_fanout_profile.txt").write_text(profiler.output_text(unicode=False, color=False, show_all=True))
                last = await reports.next()
                seq1, frames1, stats1, t1 = handle.durable_seq, server.frames_sent, server.statistics(), time.monotonic()
                cpu1 = time.process_time()
                done.set()
            elapsed = last["t"] - first["t"]
            return {"name": name, "inputs_per_s": (seq1 - seq0) / (t1 - t0),
                    "server_cpu": (cpu1 - cpu0) / (t1 - t0),
                    "updates_per_s": (last["messages"] - first["messages"]) / elapsed,
                    "client_frames_per_s": (last["frames"] - first["frames"]) / elapsed,
                    "server_frames_per_s": (frames1 - frames0) / (t1 - t0),
                    "dropped": stats1["dropped_lagged"] - stats0["dropped_lagged"],
                    "server_lags": stats1["server_lags"] - stats0["server_lags"],
                    "closed": last["closed"], "resyncs": last["resyncs"] - first["resyncs"],
                    "latency": [b - a for a, b in zip(first["latency"], last["latency"])]}

        alone = await phase("engine alone", engine_load)
        paced = await phase("fan-out", paced_load)
        both = await phase("engine under fan-out", engine_load, paced_load)
        saturated = await phase("saturated", saturating_load)

        clients = args.clients
        demand = args.rate * clients
        emit("updates_per_s", paced["updates_per_s"], "1/s", 300000, clients=clients,
             demand_per_s=demand, quotes_per_s=args.rate, dropped=paced["dropped"],
             closed=paced["closed"], resyncs=paced["resyncs"], server_cpu=round(paced["server_cpu"], 2),
             flush_interval_ms=args.flush_interval_ms, flush_duty=args.flush_duty, writer=args.writer,
             load_average=round(os.getloadavg()[0], 2))
        emit("delivery_p50_ms", quantile_ms(paced["latency"], 0.5), "ms", None, better="lower",
             note="engine ts of a frame's newest quote to its receipt by the client (bucket upper bound)")
        emit("delivery_p99_ms", quantile_ms(paced["latency"], 0.99), "ms", None, better="lower")
        emit("frames_per_s", paced["server_frames_per_s"], "1/s", None, clients=clients)
        emit("server_cpu_us_per_frame", paced["server_cpu"] / max(paced["server_frames_per_s"], 1) * 1e6,
             "us", None, better="lower", note="all of the server process's CPU (engine included) per frame")
        emit("updates_per_frame", paced["updates_per_s"] / max(paced["client_frames_per_s"], 1), "1", None)
        emit("max_updates_per_s", saturated["updates_per_s"], "1/s", None, clients=clients,
             frames_per_s=round(saturated["server_frames_per_s"]),
             delivery_p50_ms=quantile_ms(saturated["latency"], 0.5),
             delivery_p99_ms=quantile_ms(saturated["latency"], 0.99), dropped=saturated["dropped"],
             note="closed loop keeping ~%d messages pending per client" % args.pending_per_client)
        emit("engine_inputs_per_s_without_ws", alone["inputs_per_s"], "1/s", None)
        emit("engine_inputs_per_s_with_ws", both["inputs_per_s"], "1/s", None,
             updates_per_s_meanwhile=round(both["updates_per_s"]), dropped=both["dropped"],
             server_lags=both["server_lags"],
             delivery_p99_ms_meanwhile=quantile_ms(both["latency"], 0.99))
        emit("engine_slowdown_ratio", both["inputs_per_s"] / alone["inputs_per_s"], "ratio", None,
             note="engine inputs/s with the fan-out running / without (one process, one core shared)")

        process.kill()
        ws_scope.cancel()
        system.request_shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 clients, 3 s phases")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--rate", type=float,
                        help="quotes/s (BTCUSDT+ETHUSDT) in the paced phases, each reaching every "
                             "client (default: a demand of 400,000 updates/s, 400 at 1,000 clients)")
    parser.add_argument("--pending-per-client", type=int, default=200,
                        help="the saturated phase keeps about this many messages pending per client")
    parser.add_argument("--flush-interval-ms", type=float, default=0.0, help="[ws] flush_interval_ms")
    parser.add_argument("--flush-duty", type=float, default=0.5, help="[ws] flush_duty")
    parser.add_argument("--writer", default="flusher", choices=["flusher", "tasks"],
                        help="[ws] writer: one shared flusher, or a writer task per client")
    parser.add_argument("--max-pending-bytes", type=int, default=1 << 20)
    parser.add_argument("--profile", help="pyinstrument one phase (engine alone | fan-out | "
                        "engine under fan-out) into /tmp/ws_fanout_profile.txt")
    parser.add_argument("--load-generator", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_generator:
        load_generator(args)
        return
    args.clients = args.clients or (200 if args.quick else 1000)
    args.seconds = args.seconds or (3.0 if args.quick else 10.0)
    args.rate = args.rate or 400_000 / args.clients
    import trio
    trio.run(bench, args)


if __name__ == "__main__":
    main()
