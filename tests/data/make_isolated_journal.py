"""Record tests/data/isolated_journal.msgpack: a seeded run of isolated accounts (issue 16).

Recorded with main's core before cross margin existed; ``tests/test_core_accounts.py`` replays
it and expects the same state hash and rolling hash, so isolated semantics stay unchanged.
Run from the repository root: ``python tests/data/make_isolated_journal.py``.
"""

from __future__ import annotations

import random
from pathlib import Path

import msgpack

from exness_actors import codec
from exness_actors.commands import (
    AddMargin, Clock, ClosePosition, CreateAccount, Deposit, ModifyPosition, PlaceOrder, Quote,
)
from exness_actors.engine import Engine
from exness_actors.instruments import DEFAULT_INSTRUMENTS, CoreConfig

OUT = Path(__file__).with_name("isolated_journal.msgpack")
PRICES = {"BTCUSDT": 6_500_000, "ETHUSDT": 350_000, "SOLUSDT": 150_000}


def commands(rng: random.Random, engine: Engine) -> list:
    made = [CreateAccount(account_id=n, initial_deposit=500_000) for n in range(1, 6)]
    prices = dict(PRICES)
    for _ in range(1500):
        roll = rng.random()
        symbol = rng.choice(sorted(prices))
        if roll < 0.6:
            prices[symbol] = max(1000, prices[symbol] + rng.randint(-prices[symbol] // 100, prices[symbol] // 100))
            made.append(Quote(symbol=symbol, bid=prices[symbol], ask=prices[symbol] + 5))
        elif roll < 0.8:
            made.append(PlaceOrder(account_id=rng.randint(1, 5), symbol=symbol, side=rng.choice(["buy", "sell"]),
                                   type="market", margin=rng.randint(1_000, 50_000), leverage=rng.choice([1, 10, 50, 100])))
        elif roll < 0.9:
            made.append(ClosePosition(account_id=rng.randint(1, 5), position_id=rng.randint(1, 300)))
        elif roll < 0.94:
            made.append(AddMargin(account_id=rng.randint(1, 5), position_id=rng.randint(1, 300), amount=1_000))
        elif roll < 0.97:
            made.append(Deposit(account_id=rng.randint(1, 5), amount=100_000, idempotency_key=f"d{rng.random()}"))
        elif roll < 0.99:
            made.append(ModifyPosition(account_id=rng.randint(1, 5), position_id=rng.randint(1, 300), trailing_stop=10_000))
        else:
            made.append(Clock())
    return made


def main() -> None:
    engine = Engine(CoreConfig(instruments=DEFAULT_INSTRUMENTS))
    records = []
    ts = 1_700_000_000_000_000_000
    for command in commands(random.Random(16), engine):
        ts += 100_000_000
        engine.submit(command, ts)
        records.append(codec.to_wire(command))
    OUT.write_bytes(msgpack.packb({"inputs": records, "state_hash": engine.state_hash(),
                                   "rolling_hash": engine.rolling_hash}, use_bin_type=True))
    print(len(records), engine.state_hash().hex(), len(engine.positions), engine.house)


if __name__ == "__main__":
    main()
