"""Run the real system in this process and drive commands at it; used by tests/test_crash.py.

    python tests/crash_driver.py DATA_DIR ACK_LOG SEED

Every command whose durable reply arrives is appended to ACK_LOG as one JSON line
(``{"seq", "key", "wire"}``) with a raw ``os.write`` — it survives SIGKILL in the page cache.
The test kills this process at random points and checks that every acknowledged command
is in the recovered journal and state.
"""

from __future__ import annotations

import functools
import json
import os
import random
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.config import load_config  # noqa: E402
from actors.engine.messages import EngineStopped, Overloaded  # noqa: E402
from exness_actors import codec  # noqa: E402
from exness_actors.commands import ClosePosition, CreateAccount, Deposit, PlaceOrder  # noqa: E402
from exness_actors.events import PositionOpened  # noqa: E402
from supervisor import run_system, setup_logging  # noqa: E402


def driver_config(data_dir: str, **extra):
    overrides = {"data": {"dir": data_dir}, "snapshot": {"interval_s": 0.5, "keep": 3},
                 "feed": {"source": "synthetic", "seed": 7, "ticks_per_s": 50},
                 "journal": {"fsync": "batch"}, "http": {"port": 0}, "ws": {"port": 0}}
    for section, values in extra.items():
        overrides.setdefault(section, {}).update(values)
    return load_config(overrides=overrides, environ={})


async def drive(data_dir: str, ack_log: str, seed: int) -> None:
    rng = random.Random(seed)
    fd = os.open(ack_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def ack(reply, command, key: str) -> None:
        # the command as journaled (seq and ts stamped by the engine), so the test can compare
        line = {"seq": reply.seq, "key": key, "wire": codec.to_wire(command)}
        os.write(fd, (json.dumps(line) + "\n").encode())

    async with trio.open_nursery() as nursery:
        system = await nursery.start(functools.partial(run_system, driver_config(data_dir)))
        handle = system.handle
        run_id = f"{os.getpid()}"
        accounts = list(range(1, 11))
        existing = await handle.query(lambda engine: set(engine.accounts))
        for account in accounts:
            if account not in existing:
                command = CreateAccount(account_id=account, initial_deposit=100_000_000)
                ack(await handle.request(command), command, f"create-{account}")
        while await handle.query(lambda engine: engine.quote("BTCUSDT")) is None:
            await trio.sleep(0.01)
        positions: dict[int, list[int]] = {account: [] for account in accounts}
        counter = 0
        while True:
            counter += 1
            account = rng.choice(accounts)
            key = f"{run_id}-{counter}"
            roll = rng.random()
            if roll < 0.5 or not positions[account]:
                command = PlaceOrder(account_id=account, symbol=rng.choice(["BTCUSDT", "ETHUSDT"]),
                                     side=rng.choice(["buy", "sell"]), type="market",
                                     margin=rng.randrange(1_000, 50_000), leverage=rng.randint(1, 20),
                                     client_order_id=key)
            elif roll < 0.8:
                command = ClosePosition(account_id=account, position_id=positions[account].pop(0))
            else:
                command = Deposit(account_id=account, amount=rng.randrange(1, 10_000), idempotency_key=key)
            try:
                reply = await handle.request(command)
            except Overloaded:
                await trio.sleep(0.01)
                continue
            except EngineStopped:
                return      # SIGTERM: the system is shutting down gracefully
            ack(reply, command, key)
            for event in reply.events:
                if type(event) is PositionOpened:
                    positions[account].append(event.position_id)


def main() -> None:
    setup_logging("WARNING")
    data_dir, ack_log, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    trio.run(drive, data_dir, ack_log, seed)


if __name__ == "__main__":
    main()
