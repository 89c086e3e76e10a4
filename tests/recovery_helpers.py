"""A data dir as the engine actor leaves it: a journal, a snapshot in the middle of it, a tail after.

Only public APIs that predate snapshot format 2, so ``tests/data/make_snapshot_v1.py`` can run it
under the old code to write the format-1 fixture.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from actors.engine.recovery import journal_dir, pin_core_config
from actors.engine.snapshot_worker import write_engine_snapshot
from exness_actors import codec
from exness_actors.commands import ClosePosition, CreateAccount, PlaceOrder, Quote
from exness_actors.engine import HASH_BLOCK, Engine
from exness_actors.instruments import DEFAULT_INSTRUMENTS, CoreConfig
from exness_actors.journal import JournalWriter, encode_frame
from exness_actors.replay import engine_checkpoint

KEY = bytes(range(32))
PRICES = {"BTCUSDT": 6_500_000, "ETHUSDT": 350_000, "SOLUSDT": 150_000}


def recovery_config() -> CoreConfig:
    return CoreConfig(instruments=DEFAULT_INSTRUMENTS, stale_after_ns=10**19)


def build_data_dir(data_dir: Path, *, accounts: int, positions: int, tail: int, seed: int) -> Engine:
    """Journal ``accounts`` accounts and ``positions`` placements (market orders with and without
    take-profit, stop-loss and trailing stops; limit and stop entries, some expiring), snapshot,
    then a ``tail`` of quotes (walking far enough to fire triggers), orders and closes. Returns
    the live engine."""
    rng = random.Random(seed)
    config = recovery_config()
    pin_core_config(data_dir, config)
    engine = Engine(config)
    writer = JournalWriter(journal_dir(data_dir))
    frames: list[bytes] = []
    first_seq = 1
    ts = 0

    def submit(command: Any) -> None:
        nonlocal ts, frames, first_seq
        ts += 1_000_000
        engine.submit(command, ts=ts)
        frames.append(codec.encode(command))
        if engine.last_seq % HASH_BLOCK == 0:
            frames.append(engine_checkpoint(engine))

    def flush() -> None:
        nonlocal frames, first_seq
        if frames:
            writer.append(b"".join(encode_frame(f) for f in frames), first_seq=first_seq)
            frames, first_seq = [], engine.last_seq + 1

    for account in range(1, accounts + 1):
        submit(CreateAccount(account_id=account, initial_deposit=10_000_000))
    for symbol, price in PRICES.items():
        submit(Quote(symbol=symbol, bid=price, ask=price + 10))
    symbols = list(PRICES)
    for index in range(positions):
        submit(_placement(rng, 1 + index % accounts, symbols[index % 3], ts))
    flush()
    writer.fsync()
    write_engine_snapshot(data_dir, engine, KEY, keep=2)
    walk = dict(PRICES)
    for index in range(tail):
        kind = rng.random()
        symbol = symbols[index % 3]
        if kind < 0.6:
            walk[symbol] += rng.randint(-walk[symbol] // 200, walk[symbol] // 200)
            submit(Quote(symbol=symbol, bid=walk[symbol], ask=walk[symbol] + 10))
        elif kind < 0.85:
            submit(_placement(rng, rng.randint(1, accounts), symbol, ts))
        elif engine.positions:
            position = engine.positions[rng.choice(sorted(engine.positions))]
            submit(ClosePosition(account_id=position.account_id, position_id=position.id))
    submit(Quote(symbol=symbols[0], bid=walk[symbols[0]], ask=walk[symbols[0]] + 10))
    frames.append(engine_checkpoint(engine))      # the tail verifies itself
    flush()
    writer.fsync()
    writer.close()
    return engine


def _placement(rng: random.Random, account_id: int, symbol: str, ts: int) -> PlaceOrder:
    price = PRICES[symbol]
    side = rng.choice(("buy", "sell"))
    is_buy = side == "buy"
    extra: dict[str, Any] = {}
    kind = rng.random()
    if kind < 0.3:
        extra = {"take_profit": price * (11 if is_buy else 9) // 10, "stop_loss": price * (9 if is_buy else 11) // 10}
    elif kind < 0.45:
        extra = {"trailing_stop": price // rng.choice((20, 40, 80))}
    elif kind < 0.6:
        offset = price // rng.choice((50, 100))
        extra = {"type": "limit", "price": price - offset if is_buy else price + offset}
        if rng.random() < 0.5:
            extra["expires_at"] = ts + rng.randint(10, 500) * 1_000_000
    elif kind < 0.7:
        offset = price // rng.choice((50, 100))
        extra = {"type": "stop", "price": price + offset if is_buy else price - offset}
    fields: dict[str, Any] = dict(account_id=account_id, symbol=symbol, side=side, type="market",
                                  margin=rng.randrange(1_000, 50_000), leverage=rng.choice((1, 2, 5, 10)))
    fields.update(extra)
    return PlaceOrder(**fields)
