"""The stage profile (actors/stage_profile.py): off by default; when on, every lean-path request
is stamped stage by stage, the journal's writes and the event loop's task steps are recorded,
and everything it patched is put back at exit."""

from __future__ import annotations

import functools
import json

import trio

from actors import stage_profile
from actors.engine import actor as engine_actor
from actors.gateway import create_app, token_issuer_from_config
from actors.gateway._common import Gateway
from exness_actors.commands import Quote
from gateway_helpers import API, PASSWORD, gateway_config
from supervisor import run_system

ORDER = {"symbol": "BTCUSDT", "side": "buy", "type": "market", "margin": "10.00", "leverage": 10}


async def _one_order(tmp_path, *, check_during=None) -> int:
    cfg = gateway_config(tmp_path / "data", {"journal": {"fsync": "batch"}})
    async with trio.open_nursery() as nursery:
        system = await nursery.start(functools.partial(run_system, cfg, handle_signals=False, feed="none"))
        app = create_app(handle=system.handle, store=system.store, candles=system.actors["candles"], cfg=cfg,
                         tokens=token_issuer_from_config(cfg), persister=system.actors["persister"])
        client = app.test_client()
        await system.handle.request(Quote(symbol="BTCUSDT", bid=6_500_000, ask=6_500_000))
        for step in ("signup", "signin"):
            response = await client.post(f"{API}/auth/{step}", json={"email": "p@profile.test", "password": PASSWORD})
        token = (await response.get_json())["access_token"]
        response = await client.post(f"{API}/orders", json=ORDER, headers={"Authorization": f"Bearer {token}"})
        if check_during is not None:
            check_during()
        system.request_shutdown()
    return response.status_code


async def test_off_unless_the_environment_names_a_file(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(stage_profile.ENV, raising=False)
    write, submit = engine_actor._write, Gateway.submit   # the profile patches neither of these for good

    def nothing_patched() -> None:
        assert stage_profile.ACTIVE is None
        assert engine_actor._write is write and Gateway.submit is submit

    assert await _one_order(tmp_path, check_during=nothing_patched) == 201


async def test_a_profiled_run_stamps_each_stage_of_an_order_and_puts_everything_back(tmp_path, monkeypatch) -> None:
    target = tmp_path / "profile.json"
    monkeypatch.setenv(stage_profile.ENV, str(target))
    write, submit = engine_actor._write, Gateway.submit   # the profile patches neither of these for good

    def active() -> None:
        assert stage_profile.ACTIVE is not None and engine_actor._write is not write

    assert await _one_order(tmp_path, check_during=active) == 201
    assert stage_profile.ACTIVE is None and engine_actor._write is write and Gateway.submit is submit
    profile = json.loads(target.read_text())
    rows = [dict(zip(profile["request_fields"], row)) for row in profile["requests"]]
    (order,) = [row for row in rows if row["route"] == f"{API}/orders"]
    assert order["status"] == 201 and order["seq"] > 0
    stamps = [order[name] for name in ("arrived", "authenticated", "submitted", "applied", "replied",
                                       "answered", "rendered", "sent")]
    assert all(stamps) and stamps == sorted(stamps)
    covering = [w for w in profile["writes"] if w[0] <= order["seq"]][-1]   # (first_seq, start, end, bytes, fsync)
    assert covering[4] is True and order["applied"] <= covering[1] <= covering[2] <= order["replied"]
    assert profile["steps"] and profile["per_second"]
    assert all(count >= 1 and total >= 0 for count, total, *_ in profile["steps"].values())
