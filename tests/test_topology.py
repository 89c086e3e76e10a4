"""The topology table (actors/topology.py): who runs where, and that the docs show the same."""

import importlib
from pathlib import Path

import pytest

from actors import topology
from actors.bus import roles
from actors.settings import BusSettings

ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


@pytest.mark.parametrize("row", topology.ACTORS, ids=lambda row: row.name)
def test_every_run_function_exists(row):
    module, _, function = row.run.partition(":")
    assert callable(getattr(importlib.import_module(module), function))


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


def test_every_split_role_runs_one_actor_of_the_table():
    for role in topology.ROLES[2:]:
        (actor,) = topology.placed(role, bus=BusSettings(kind="redis"), feed_source="synthetic")
        assert actor in roles._RUNNERS
    assert roles.ROLES == topology.ROLES


def test_the_architecture_doc_shows_the_table():
    assert topology.markdown_table() in ARCHITECTURE.read_text()


def test_the_simulation_runs_the_embedded_topology_but_the_websocket_server_and_notifications():
    from actors.simulation.world import SIMULATED_ACTORS
    embedded = topology.placed("all", bus=BusSettings(), feed_source="synthetic")
    assert SIMULATED_ACTORS == tuple(name for name in embedded if name not in ("ws", "notifications"))
