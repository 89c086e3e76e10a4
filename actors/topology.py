"""The topology: which actors exist, what each needs, how it is restarted and in which roles it runs.

One table, :data:`ACTORS`, in start order. :func:`placed` answers "which actors run in this
process" for a role and the settings; the supervisor (roles ``all`` and ``engine``), the split-mode
roles (``actors/bus/roles.py``) and the simulation ask it instead of deciding on their own, and
docs/architecture.md shows the same table (``tests/test_topology.py`` checks both).

Restart policies: ``fail-fast`` — the process stops (the engine: recovery rebuilds from what is
durable); ``essential`` — not restarted, failing to start stops the start (the HTTP API);
``backoff`` — restarted with exponential backoff (``supervisor.supervised``).
"""

from __future__ import annotations

import attrs

from actors.settings import BusSettings

__all__ = ["ActorSpec", "ACTORS", "ROLES", "RESTART_POLICIES", "placed", "spec", "markdown_table"]

RESTART_POLICIES = ("fail-fast", "essential", "backoff")


@attrs.frozen(kw_only=True)
class ActorSpec:
    name: str
    #: the actor's run function, as ``module:function``
    run: str
    #: what it is handed when it starts
    needs: tuple[str, ...]
    restart: str = attrs.field(validator=attrs.validators.in_(RESTART_POLICIES))
    #: the roles whose process runs it (``all`` is the embedded platform)
    roles: frozenset[str]
    #: ``[bus]`` flag that moves it out of the engine role into its own role process
    own_role_flag: str = ""


ACTORS: tuple[ActorSpec, ...] = (
    ActorSpec(name="persister", run="actors.history.persister:run", needs=("engine events (lossless)", "store"),
              restart="backoff", roles=frozenset({"all", "engine", "persister"}), own_role_flag="persister_role"),
    ActorSpec(name="candles", run="actors.history.candles:run", needs=("engine events (lossless)", "store"),
              restart="backoff", roles=frozenset({"all", "engine", "candles"}), own_role_flag="candles_role"),
    ActorSpec(name="notifications", run="actors.notifications:run",
              needs=("engine events (lossless)", "store", "ws publication"), restart="backoff",
              roles=frozenset({"all", "notifications"})),
    ActorSpec(name="engine", run="actors.engine.actor:run", needs=("recovered engine", "journal"),
              restart="fail-fast", roles=frozenset({"all", "engine"})),
    ActorSpec(name="engine_edge", run="actors.bus.roles:serve_engine_edge", needs=("engine", "Redis"),
              restart="fail-fast", roles=frozenset({"engine"})),
    ActorSpec(name="price_feed", run="actors.feed.price_feed:run", needs=("engine inbox",),
              restart="backoff", roles=frozenset({"all", "engine", "feed"})),
    ActorSpec(name="snapshotter", run="actors.engine.snapshotter:run", needs=("engine", "snapshot key"),
              restart="backoff", roles=frozenset({"all", "engine", "snapshotter"}), own_role_flag="snapshotter_role"),
    ActorSpec(name="gateway", run="actors.gateway:run", needs=("engine client", "store", "candles", "tokens"),
              restart="essential", roles=frozenset({"all", "gateway"})),
    ActorSpec(name="ws", run="actors.ws.server:run", needs=("engine client", "candle updates", "store", "tokens"),
              restart="backoff", roles=frozenset({"all", "ws"})),
)

#: every role a process can take, ``all`` first
ROLES: tuple[str, ...] = ("all", "engine", "gateway", "ws", "feed", "candles", "persister", "snapshotter",
                          "notifications")

#: feed sources that start no feed in the engine's process: "none" (tests) and "redis" (the feed role)
_NO_LOCAL_FEED = ("none", "redis")


def spec(name: str) -> ActorSpec:
    """The row of ``name``."""
    for row in ACTORS:
        if row.name == name:
            return row
    raise KeyError(name)


def placed(role: str, *, bus: BusSettings, feed_source: str) -> tuple[str, ...]:
    """The actors a ``role`` process runs, in start order: the table's roles, minus what a
    ``[bus] …_role`` flag moved to its own process, minus a local feed where quotes come from
    elsewhere."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    names = []
    for row in ACTORS:
        if role not in row.roles:
            continue
        if role == "engine" and row.own_role_flag and getattr(bus, row.own_role_flag):
            continue
        if row.name == "price_feed" and role != "feed" and feed_source in _NO_LOCAL_FEED:
            continue
        names.append(row.name)
    return tuple(names)


def markdown_table() -> str:
    """The table as docs/architecture.md shows it."""
    lines = ["| actor | run function | needs | restart | roles |", "|---|---|---|---|---|"]
    for row in ACTORS:
        roles = ", ".join(role for role in ROLES if role in row.roles)
        moved = f" (`[bus] {row.own_role_flag}`: own role)" if row.own_role_flag else ""
        lines.append(f"| {row.name} | `{row.run}` | {', '.join(row.needs)} | {row.restart} | {roles}{moved} |")
    return "\n".join(lines)
