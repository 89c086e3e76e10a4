"""The topology table (actors/topology.py): who runs where, what each actor is handed, and that
every kind of process — the embedded platform, an engine shard, each split-mode role and the
simulation — starts exactly what the table places, built from the table alone."""

import functools
import importlib
import inspect
import socket
from pathlib import Path
from unittest import mock

import pytest
import trio

import supervisor
from actors import topology
from actors.bus import roles
from actors.bus import streams as redis_edge
from actors.config import load_config
from actors.settings import BusSettings

ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
EDGE_NAMES = ("PREFIX", "REPLY_PREFIX", "QUOTES_STREAM", "HEALTH_PREFIX", "NOTIFICATIONS_STREAM")


@pytest.mark.parametrize("row", topology.ACTORS, ids=lambda row: row.name)
def test_every_run_function_exists(row):
    module, _, function = row.run.partition(":")
    assert callable(getattr(importlib.import_module(module), function))


class _Recording:
    """A stand-in :class:`~actors.topology.Context` that notes which fields are read."""

    def __init__(self) -> None:
        self.read: set[str] = set()

    def __getattr__(self, name: str):
        assert name in attrs_fields(), f"Context has no field {name!r}"
        self.read.add(name)
        return mock.MagicMock(name=name)


def attrs_fields() -> set[str]:
    import attrs
    return {field.name for field in attrs.fields(topology.Context)}


@pytest.mark.parametrize("row", topology.ACTORS, ids=lambda row: row.name)
def test_each_actor_reads_exactly_the_context_fields_it_declares(row):
    context = _Recording()
    row.arguments(context)
    assert context.read == set(row.needs)


@pytest.mark.parametrize("row", topology.ACTORS, ids=lambda row: row.name)
def test_each_actor_is_handed_arguments_its_run_function_takes(row):
    run = topology._resolve(row.run)
    arguments = row.arguments(_Recording())
    inspect.signature(run).bind(**arguments)   # TypeError names an argument it does not take
    required = {name for name, parameter in inspect.signature(run).parameters.items()
                if parameter.default is inspect.Parameter.empty and parameter.kind is parameter.KEYWORD_ONLY}
    assert required <= set(arguments)


def test_the_stages_come_in_order_consumers_engine_intake():
    stages = [topology.STAGES.index(row.stage) for row in topology.ACTORS]
    assert stages == sorted(stages)


@pytest.mark.parametrize(("role", "bus", "feed_source", "expected"), [
    ("all", BusSettings(), "synthetic",
     ("persister", "candles", "notifications", "engine", "price_feed", "snapshotter", "gateway", "ws")),
    ("all", BusSettings(persister_role=True), "none",
     ("persister", "candles", "notifications", "engine", "snapshotter", "gateway", "ws")),
    ("engine", BusSettings(kind="redis"), "redis", ("persister", "candles", "engine", "engine_edge", "snapshotter")),
    ("engine", BusSettings(kind="redis", persister_role=True, candles_role=True, snapshotter_role=True),
     "synthetic", ("engine", "engine_edge", "price_feed")),
    ("gateway", BusSettings(kind="redis"), "redis", ("gateway",)),
    ("feed", BusSettings(kind="redis"), "synthetic", ("price_feed",)),
    ("persister", BusSettings(kind="redis", persister_role=True), "redis", ("persister",)),
    ("notifications", BusSettings(kind="redis"), "redis", ("notifications",)),
])
def test_placement(role, bus, feed_source, expected):
    assert topology.placed(role, bus=bus, feed_source=feed_source) == expected


def test_an_unknown_role_is_named():
    with pytest.raises(ValueError, match="unknown role 'cashier'"):
        topology.placed("cashier", bus=BusSettings(), feed_source="synthetic")


def test_the_architecture_doc_shows_the_table():
    assert topology.markdown_table() in ARCHITECTURE.read_text()


# ------------------------------------------------------------------------------ the simulation

def test_the_simulation_differs_from_production_only_where_its_mode_says():
    import attrs
    differences = {field.name for field in attrs.fields(topology.Mode)
                   if getattr(topology.SIMULATION, field.name) != getattr(topology.EMBEDDED, field.name)}
    assert differences == {"name", "restarts", "io", "serve", "omitted"}
    assert topology.SIMULATION.io == "inline" and not topology.SIMULATION.serve
    embedded = topology.placed("all", bus=BusSettings(), feed_source="synthetic")
    simulated = topology.running("all", topology.SIMULATION, bus=BusSettings(), feed_source="synthetic")
    assert simulated == tuple(name for name in embedded if name not in ("ws", "notifications"))


def test_the_simulation_starts_the_embedded_actors_from_the_table(tmp_path, monkeypatch):
    from actors.simulation.simulate import SimulationOptions, run_simulation, simulation_config
    options = SimulationOptions(data_dir=tmp_path / "sim", seed=3, traders=2, seconds=6.0, crash_every=4.0,
                                fsync="off")
    shipped = load_config(environ={})
    assert simulation_config(options).settings.engine.inbox_size == shipped.settings.engine.inbox_size
    contexts = []
    start_stage = topology.start_stage

    async def recording(ctx, nursery, stage):
        contexts.append(ctx)
        await start_stage(ctx, nursery, stage)
    monkeypatch.setattr(topology, "start_stage", recording)

    report = run_simulation(options)

    assert report["verdict"] == "clean" and report["crashes"]
    expected = topology.running("all", topology.SIMULATION, bus=BusSettings(), feed_source="synthetic")
    epochs = list({id(ctx): ctx for ctx in contexts}.values())
    assert len(epochs) == len(report["crashes"]) + 1
    for ctx in epochs:
        assert ctx.mode is topology.SIMULATION
        assert tuple(ctx.started) == expected
        assert ctx.engine.statistics()["inbox_capacity"] == shipped.settings.engine.inbox_size


# --------------------------------------------------------------- processes start what is placed

async def test_the_embedded_platform_starts_the_placed_actors(tmp_path):
    cfg = load_config(environ={}, overrides={
        "data": {"dir": str(tmp_path / "data")}, "journal": {"fsync": "off"}, "snapshot": {"interval_s": 3600},
        "http": {"port": 0}, "ws": {"port": 0}})
    async with trio.open_nursery() as nursery:
        system = await nursery.start(functools.partial(supervisor.run_system, cfg, handle_signals=False))
        assert tuple(system.actors) == topology.placed("all", bus=cfg.settings.bus, feed_source="synthetic")
        system.request_shutdown()


async def test_an_http_port_in_use_stops_the_start_with_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = load_config(environ={}, overrides={
            "data": {"dir": str(tmp_path / "data")}, "journal": {"fsync": "off"}, "http": {"port": port},
            "ws": {"port": 0}})
        with pytest.raises(supervisor.StartupError, match=rf"gateway: cannot serve HTTP on 127\.0\.0\.1:{port}: "):
            await supervisor.run_system(cfg, handle_signals=False, feed="none")


@pytest.fixture
def split_cfg(tmp_path, redis_url, redis_prefix, monkeypatch):
    """A split-mode configuration over the real Redis, its streams and keys under this test's prefix."""
    for name in EDGE_NAMES:
        monkeypatch.setattr(redis_edge, name, redis_prefix + getattr(redis_edge, name))

    def make(**tables):
        overrides = {"data": {"dir": str(tmp_path / "data")}, "journal": {"fsync": "off"},
                     "snapshot": {"interval_s": 3600}, "http": {"port": 0}, "ws": {"port": 0},
                     "bus": {"kind": "redis", "redis_url": redis_url, "request_timeout_s": 1}}
        for section, values in tables.items():
            overrides[section] = {**overrides.get(section, {}), **values}
        return load_config(environ={}, overrides=overrides)
    return make


async def test_the_engine_role_starts_the_placed_actors(split_cfg):
    cfg = split_cfg(bus={"candles_role": True})
    async with trio.open_nursery() as nursery:
        system = await nursery.start(functools.partial(
            supervisor.run_system, cfg, handle_signals=False, role="engine", feed="redis"))
        assert tuple(system.actors) == topology.placed("engine", bus=cfg.settings.bus, feed_source="redis") == (
            "persister", "engine", "engine_edge", "snapshotter")
        system.request_shutdown()


@pytest.mark.parametrize("role", [role for role in topology.ROLES if role not in ("all", "engine")])
async def test_each_split_role_process_starts_the_placed_actors(split_cfg, role):
    cfg = split_cfg(bus={"candles_role": True, "persister_role": True, "snapshotter_role": True})
    done = trio.Event()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            started = await nursery.start(functools.partial(
                roles.run_role, cfg, role, announce=False, handle_signals=False, shutdown=done))
            placed = topology.placed(role, bus=cfg.settings.bus, feed_source=cfg.settings.feed.source)
            assert tuple(started) == placed and len(placed) == 1
            done.set()


async def test_the_roles_of_run_system_are_not_split_role_processes(split_cfg):
    for role in ("all", "engine"):
        with pytest.raises(ValueError, match="runs in supervisor.run_system"):
            await roles.run_role(split_cfg(), role)


# ------------------------------------------------------------------ adding an actor is one row

async def _newsletter_run(*, inbox, store, task_status=trio.TASK_STATUS_IGNORED):
    """A new actor (as the notifications worker was): it reads the engine's events."""
    task_status.started({"inbox": inbox, "store": store})
    async for _batch in inbox:
        pass


def _newsletter_arguments(ctx):
    return {"inbox": ctx.events("newsletter", False), "store": ctx.store}


@pytest.fixture
def one_more_actor(monkeypatch):
    """The table with one more row, in its own split-mode role too; nothing else changes."""
    row = topology.ActorSpec(
        name="newsletter", run=f"{__name__}:_newsletter_run", arguments=_newsletter_arguments,
        needs=("events", "store"), restart="backoff", stage="consumer",
        roles=frozenset({"all", "engine", "newsletter"}))
    monkeypatch.setattr(topology, "ACTORS", (*topology.ACTORS, row))
    monkeypatch.setattr(topology, "ROLES", (*topology.ROLES, "newsletter"))
    return row


async def test_a_new_row_runs_in_the_embedded_platform(tmp_path, one_more_actor):
    cfg = load_config(environ={}, overrides={
        "data": {"dir": str(tmp_path / "data")}, "journal": {"fsync": "off"}, "http": {"port": 0},
        "ws": {"port": 0}})
    async with trio.open_nursery() as nursery:
        system = await nursery.start(functools.partial(supervisor.run_system, cfg, handle_signals=False, feed="none"))
        assert "newsletter" in system.actors and system.actors["newsletter"]["store"] is system.store
        assert "newsletter" in [subscription.name for subscription in system.handle.subscriptions]
        system.request_shutdown()


async def test_a_new_row_runs_as_its_own_split_role(split_cfg, one_more_actor):
    cfg = split_cfg()
    done = trio.Event()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            started = await nursery.start(functools.partial(
                roles.run_role, cfg, "newsletter", announce=False, handle_signals=False, shutdown=done))
            assert tuple(started) == ("newsletter",)
            assert started["newsletter"]["store"] is not None   # opened because its row needs it
            done.set()
