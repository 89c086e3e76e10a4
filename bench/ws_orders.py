"""The WebSocket order lane: orders/s and latency with many clients pipelining place + close.

The server side is the real stack in this process: ``supervisor.run_system`` (engine with the
journal's default ``fsync = "batch"`` — every reply waits for its batch to be durable —, store,
persister, candles; no price feed: a task here keeps a fresh BTCUSDT quote) and
``actors.ws.server.run``. The load generator is a **separate process** on loopback (this script with
``--load-generator``, raw sockets as in ``bench/ws_fanout.py``): ``--clients`` connections, each
authenticated as its own account, each keeping ``--depth`` requests in flight: a market
``place``, then ``close`` of the position it opened, then the next ``place``, …

An "order" is one order-lane request answered (a place or a close: each is one engine command,
validated, journaled and answered). Latency is from the client writing the request to reading
its ``order_result``. Prints JSON lines: ``orders_per_s``, ``p50_ms``, ``p99_ms`` (+ places/s,
server CPU). ``--quick``: 16 clients, 3 s.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(ROOT), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

BENCH = "ws_orders"
SECRET = b"b" * 48


def load_generator(args: argparse.Namespace) -> None:
    from ws_fanout import RawClient, run_loop

    tokens = json.loads(Path(args.tokens).read_text())
    clients = [RawClient("127.0.0.1", args.port) for _ in tokens]
    run_loop(clients, lambda *a: None, lambda: all(c.open or c.closed for c in clients))
    for client, token in zip(clients, tokens):
        client.send_text(json.dumps({"op": "auth", "token": token}))
        client.flush()
        client.state = {"authenticated": False}

    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    counts = {"places": 0, "closes": 0, "errors": 0}
    errors: dict[str, int] = {}
    next_id = [0]
    window = {"measuring": False, "stopping": False}
    place = ('{{"op":"order","id":{id},"action":"place","symbol":"BTCUSDT","side":"buy",'
             '"type":"market","margin":"10.00","leverage":10}}')
    close = '{{"op":"order","id":{id},"action":"close","position_id":"{position}"}}'

    outgoing: list[str] = []

    def send(client: RawClient, template: str, **fields: Any) -> None:
        if window["stopping"]:
            return
        next_id[0] += 1
        request_id = next_id[0]
        sent_at[request_id] = time.perf_counter()
        outgoing.append(template.format(id=request_id, **fields))

    def write(client: RawClient) -> None:
        """The requests a frame's results made ready go out together (one frame, an array when
        several: the protocol's client-side batching)."""
        if outgoing:
            client.send_text(outgoing[0] if len(outgoing) == 1 or not args.batch
                             else "[" + ",".join(outgoing) + "]")
            if not args.batch:
                for text in outgoing[1:]:
                    client.send_text(text)
            outgoing.clear()
            client.flush()

    def on_text(client: RawClient, buf: bytearray, start: int, end: int) -> None:
        parsed = json.loads(bytes(buf[start:end]))
        for message in parsed if isinstance(parsed, list) else [parsed]:
            op = message.get("op")
            if op == "authenticated":
                client.state["authenticated"] = True
                for _ in range(args.depth):
                    send(client, place)
                    write(client)            # the first requests go out one by one
                continue
            if op != "order_result":
                continue
            began = sent_at.pop(message["id"], None)
            if began is None:
                continue
            if window["measuring"]:
                latencies.append((time.perf_counter() - began) * 1000)
            if not message["ok"]:
                code = message["error"]["code"]
                errors[code] = errors.get(code, 0) + 1
                if window["measuring"]:
                    counts["errors"] += 1
                send(client, place)
                continue
            if message.get("position") and "liquidation_price" in message["position"]:
                if window["measuring"]:
                    counts["places"] += 1
                send(client, close, position=message["position"]["id"])
            else:
                if window["measuring"]:
                    counts["closes"] += 1
                send(client, place)
        write(client)

    phase = {"until": time.monotonic() + args.warmup}

    def over() -> bool:
        now = time.monotonic()
        if now < phase["until"]:
            return False
        if not window["measuring"]:
            window["measuring"] = True
            phase["started"] = now
            phase["until"] = now + args.seconds
            return False
        window["stopping"] = True
        phase["elapsed"] = now - phase["started"]
        return True

    def tick() -> None:
        for client in clients:
            if client.outbuf:
                client.flush()
    run_loop(clients, on_text, over, tick=tick, tick_every=0.01)
    latencies.sort()

    def quantile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")
    print(json.dumps({"elapsed": phase["elapsed"], "places": counts["places"], "closes": counts["closes"],
                      "errors": counts["errors"], "error_codes": errors, "p50_ms": quantile(0.5),
                      "p99_ms": quantile(0.99), "max_ms": latencies[-1] if latencies else None,
                      "closed": sum(c.closed for c in clients)}), flush=True)


def emit(metric: str, value: float, unit: str, target: Any = None, better: str = "higher", **extra: Any) -> None:
    line = {"bench": BENCH, "metric": metric, "value": round(value, 3), "unit": unit,
            "target": target, "better": better}
    line.update(extra)
    print(json.dumps(line), flush=True)


async def bench(args: argparse.Namespace) -> None:
    import trio

    import supervisor
    from actors.ws import server as ws_actor
    from actors.auth_tokens import TokenIssuer
    from actors.config import load_config
    from exness_actors.commands import CreateAccount, Quote

    data_dir = Path(tempfile.mkdtemp(prefix="ws-orders-"))
    cfg = load_config(environ={}, overrides={
        "data": {"dir": str(data_dir)}, "snapshot": {"interval_s": 3600}, "http": {"port": 0},
        "journal": {"fsync": args.fsync}, "ws": {"port": 0}})
    tokens = TokenIssuer(SECRET, access_ttl_s=3600)
    async with trio.open_nursery() as nursery:
        system = await nursery.start(functools.partial(
            supervisor.run_system, cfg, handle_signals=False, feed="none"))
        handle = system.handle
        ws_scope = trio.CancelScope()

        async def serve(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with ws_scope:
                await ws_actor.run(handle=handle, cfg=cfg, tokens=tokens, store=system.store,
                                   task_status=task_status)
        server = await nursery.start(serve)

        quoting = trio.CancelScope()

        async def keep_quoting() -> None:
            tick = 0
            with quoting:
                while True:
                    tick += 1
                    await handle.send(Quote(symbol="BTCUSDT", bid=6_500_000 + tick % 7,
                                            ask=6_500_100 + tick % 7))
                    await trio.sleep(0.1)
        nursery.start_soon(keep_quoting)
        for account in range(1, args.clients + 1):
            await handle.request(CreateAccount(account_id=account, initial_deposit=100_000_000))
        await handle.request(Quote(symbol="BTCUSDT", bid=6_500_000, ask=6_500_100))
        token_file = data_dir / "tokens.json"
        token_file.write_text(json.dumps([tokens.issue_access(account, account)
                                          for account in range(1, args.clients + 1)]))

        profiler = None
        if args.profile:
            from pyinstrument import Profiler
            profiler = Profiler(async_mode="disabled")
            profiler.start()
        cpu0, wall0 = time.process_time(), time.monotonic()
        result = await trio.run_process(
            [sys.executable, __file__, "--load-generator", "--port", str(server.port),
             "--tokens", str(token_file), "--depth", str(args.depth), "--seconds", str(args.seconds),
             "--warmup", str(args.warmup)] + ([] if args.batch else ["--no-batch"]), capture_stdout=True)
        cpu1, wall1 = time.process_time(), time.monotonic()
        if profiler is not None:
            profiler.stop()
            Path(args.profile).write_text(profiler.output_text(unicode=False, color=False, show_all=True))
        report = json.loads(result.stdout.decode().strip().splitlines()[-1])
        engine = handle.statistics()
        stats = server.statistics()

        elapsed = report["elapsed"]
        orders = report["places"] + report["closes"]
        emit("orders_per_s", orders / elapsed, "1/s", 10000, clients=args.clients, depth=args.depth,
             client_batching=args.batch, load_average=os.getloadavg()[0],
             fsync=args.fsync, errors=report["errors"], error_codes=report["error_codes"],
             server_cpu=round((cpu1 - cpu0) / (wall1 - wall0), 2),
             engine_batches=engine["batches"], engine_fsyncs=engine["fsyncs"],
             server_frames_sent=stats["frames_sent"], server_messages_sent=stats["messages_sent"])
        emit("places_per_s", report["places"] / elapsed, "1/s", None)
        emit("p50_ms", report["p50_ms"], "ms", None, better="lower")
        emit("p99_ms", report["p99_ms"], "ms", None, better="lower", max_ms=report["max_ms"],
             engine_fsync_p99_ms=round(engine["fsync_p99_seconds"] * 1000, 2))
        quoting.cancel()
        ws_scope.cancel()
        system.request_shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 clients, 3 s")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--depth", type=int, default=8, help="requests in flight per client")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--fsync", default="batch", choices=["batch", "interval", "off"])
    parser.add_argument("--no-batch", dest="batch", action="store_false",
                        help="one frame per request even when several are ready at once")
    parser.add_argument("--profile", help="write a pyinstrument profile of the server to this file")
    parser.add_argument("--load-generator", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tokens", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_generator:
        load_generator(args)
        return
    args.clients = args.clients or (16 if args.quick else 64)
    args.seconds = args.seconds or (3.0 if args.quick else 10.0)
    import trio
    trio.run(bench, args)


if __name__ == "__main__":
    main()
