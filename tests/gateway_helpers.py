"""Helpers for the gateway tests: a real system (engine, persister, candles) with ``feed="none"``
and the real app over it, plus small wrappers for the calls every test makes.

Quotes are pushed by the tests as raw ticks (the engine adds the instrument's spread), and
argon2 runs with the cheapest parameters so sign-ups cost microseconds.
"""

from __future__ import annotations

import functools
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator, Optional

import attrs
import trio

from actors.config import Config, load_config
from actors.gateway import create_app, token_issuer_from_config
from exness_actors.commands import Quote
from exness_actors.money import parse_fixed
from supervisor import System, run_system

API = "/api/v1"
PASSWORD = "correct horse battery"


def gateway_config(data_dir: Path, overrides: Optional[dict] = None) -> Config:
    tables: dict[str, Any] = {
        "data": {"dir": str(data_dir)},
        "journal": {"fsync": "off"},
        "feed": {"source": "none"},
        "snapshot": {"interval_s": 3600},
        "http": {"port": 0},
        "ws": {"port": 0},
        "auth": {"argon2_time_cost": 1, "argon2_memory_kib": 8, "argon2_parallelism": 1},
    }
    return load_config(overrides=tables, environ={}).with_overrides(overrides or {})


@attrs.define
class Harness:
    system: System
    cfg: Config
    app: Any
    client: Any

    @property
    def gateway(self) -> Any:
        return self.app.extensions["exness_gateway"]

    async def quote(self, symbol: str, bid: str, ask: str) -> None:
        """Push a raw quote (the engine marks it up by the spread) and wait until it is durable."""
        decimals = self.system.handle.engine.instruments[symbol].price_decimals
        await self.system.handle.request(Quote(symbol=symbol, bid=parse_fixed(bid, decimals, field="bid"),
                                               ask=parse_fixed(ask, decimals, field="ask")))

    async def quote_all(self) -> None:
        await self.quote("BTCUSDT", "65000.00", "65000.00")
        await self.quote("ETHUSDT", "3500.00", "3500.00")
        await self.quote("SOLUSDT", "150.000", "150.000")

    async def signup(self, email: str, password: str = PASSWORD) -> str:
        response = await self.client.post(f"{API}/auth/signup", json={"email": email, "password": password})
        assert response.status_code == 201, await response.get_data()
        return (await response.get_json())["user_id"]

    async def signin(self, email: str, password: str = PASSWORD) -> dict:
        response = await self.client.post(f"{API}/auth/signin", json={"email": email, "password": password})
        assert response.status_code == 200, await response.get_data()
        return await response.get_json()

    async def trader(self, email: str, account_type: str = "standard") -> dict[str, str]:
        """Sign up and in; the Authorization header of the new trader. Sign-up opens a demo
        ``standard`` (cross) account; another ``account_type`` is opened (demo) and switched to."""
        await self.signup(email)
        tokens = await self.signin(email)
        if account_type != "standard":
            tokens = await self.open_and_switch(tokens, account_type)
        return {"Authorization": f"Bearer {tokens['access_token']}"}

    async def open_and_switch(self, tokens: dict, account_type: str, *, demo: bool = True) -> dict:
        """Open another account of ``account_type`` for the holder of ``tokens``; its token pair."""
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        _, opened = await self.call("POST", f"{API}/accounts", headers=auth, expect=201,
                                    json={"type": account_type, "demo": demo})
        _, switched = await self.call("POST", f"{API}/auth/switch", headers=auth, expect=200,
                                      json={"account_id": opened["account_id"]})
        return switched

    async def call(self, method: str, path: str, *, headers: Optional[dict] = None, json: Any = None,
                   data: Any = None, expect: Optional[int] = None, **kwargs: Any) -> tuple[int, Any]:
        if json is not None:
            kwargs["json"] = json
        if data is not None:
            kwargs["data"] = data
        response = await self.client.open(path, method=method, headers=headers or {}, **kwargs)
        body = await response.get_data()
        parsed = _json_or_text(body)
        if expect is not None:
            assert response.status_code == expect, (method, path, response.status_code, parsed)
        return response.status_code, parsed


def _json_or_text(body: bytes) -> Any:
    import json

    if not body:
        return None
    try:
        return json.loads(body, parse_float=Decimal)
    except ValueError:
        return body.decode("utf-8", "replace")


@asynccontextmanager
async def running_gateway(tmp_path: Path, overrides: Optional[dict] = None,
                          **app_kwargs: Any) -> AsyncIterator[Harness]:
    """A running system and the app over it; shut down gracefully at the end."""
    cfg = gateway_config(tmp_path, overrides)
    async with trio.open_nursery() as nursery:
        system = await nursery.start(functools.partial(run_system, cfg, handle_signals=False, feed="none"))
        app = create_app(handle=system.handle, store=system.store, candles=system.actors["candles"],
                         cfg=cfg, tokens=token_issuer_from_config(cfg),
                         persister=system.actors["persister"], **app_kwargs)
        try:
            yield Harness(system=system, cfg=cfg, app=app, client=app.test_client())
        finally:
            system.request_shutdown()


def bearer(tokens: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}
