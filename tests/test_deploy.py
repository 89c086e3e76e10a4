"""The deployment files (docker-compose.yml, Dockerfile, .dockerignore, .env.example) checked
statically: no Docker needed, so these run everywhere CI does.

Theory of operation: the compose file is parsed with PyYAML (anchors and merge keys resolved) and
each ``exness-actors`` command line in it is checked against ``RUN_ROLES``, a fixed table of the
split-mode command line the deployment is written against (roles, flags, their values). When the
real CLI (``cli._build_parser``) knows those roles, the same command lines are also parsed by
it, so a drift between the CLI and the compose file fails here. ``${VAR…}`` references are
interpolated the way ``docker compose`` does, with the values of ``.env.example``.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import itertools
import re
import shlex
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from actors import cli
from actors.config import load_config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_PATH = ROOT / "docker-compose.yml"
DOCKERFILE_PATH = ROOT / "Dockerfile"
DOCKERIGNORE_PATH = ROOT / ".dockerignore"
ENV_EXAMPLE_PATH = ROOT / ".env.example"
OPERATIONS_DOC_PATH = ROOT / "docs" / "operations.md"

EXPECTED_SERVICES = {"redis", "postgres", "migrate", "engine", "gateway-1", "gateway-2", "ws", "feed",
                     "candles", "snapshotter", "notifications"}
ONE_SHOT_SERVICES = {"migrate"}
DEPENDS_ON_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|(^|_)KEY$|TOKEN", re.IGNORECASE)
PLACEHOLDER = "change-me"

# ----------------------------------------------------------------- the split-mode CLI contract


def _one_of(*allowed: str) -> Callable[[str], bool]:
    return lambda value: value in allowed


def _port(value: str) -> bool:
    return value.isdigit() and 0 < int(value) < 65536


def _non_negative_int(value: str) -> bool:
    return value.isdigit()


def _absolute_path(value: str) -> bool:
    return value.startswith("/")


def _feed_source(value: str) -> bool:
    return value in ("binance", "synthetic") or (value.startswith("replay:") and len(value) > len("replay:"))


# role -> (required flags, optional flags); each flag maps to a check of its value. The engine's
# `--feed redis` is required here: without it the engine role runs a price feed of its own and
# ignores the quotes of the feed service.
RUN_ROLES: dict[str, tuple[dict[str, Callable[[str], bool]], dict[str, Callable[[str], bool]]]] = {
    "engine": ({"--bus": _one_of("redis"), "--store": _one_of("postgres"), "--data-dir": _absolute_path,
                "--feed": _one_of("redis")},
               {"--shard": _non_negative_int}),
    "gateway": ({"--bus": _one_of("redis"), "--store": _one_of("postgres"), "--http-port": _port}, {}),
    "ws": ({"--bus": _one_of("redis"), "--store": _one_of("postgres"), "--ws-port": _port}, {}),
    "feed": ({"--bus": _one_of("redis"), "--feed": _feed_source}, {}),
    "candles": ({"--bus": _one_of("redis"), "--store": _one_of("postgres")}, {}),
    "persister": ({"--bus": _one_of("redis"), "--store": _one_of("postgres")}, {}),
    "snapshotter": ({"--bus": _one_of("redis"), "--data-dir": _absolute_path}, {"--shard": _non_negative_int}),
    "notifications": ({"--bus": _one_of("redis"), "--store": _one_of("postgres")}, {"--shard": _non_negative_int}),
}
# `migrate` may take --store; docker-compose.yml gives the store kind as EXNESS_STORE__KIND instead
MIGRATE_OPTIONAL_FLAGS = {"--store": _one_of("postgres")}
ROLES_WITH_DATA_VOLUME = {"engine", "snapshotter"}
STATELESS_ROLES = {"gateway", "ws", "feed", "candles", "persister", "notifications"}


def contract_errors(argv: list[str]) -> list[str]:
    """What is wrong with an ``exness-actors`` argument vector under the contract ([] = nothing)."""
    if not argv:
        return ["empty command"]
    command, rest = argv[0], argv[1:]
    if rest[:1] == ["--help"]:
        return []
    if command == "run":
        flags = _flag_values(rest)
        if isinstance(flags, str):
            return [flags]
        role = flags.pop("--role", None)
        if role not in RUN_ROLES:
            return [f"run --role {role!r}: not a split-mode role ({sorted(RUN_ROLES)})"]
        required, optional = RUN_ROLES[role]
        return _check_flags(f"run --role {role}", flags, required, optional)
    if command == "migrate":
        flags = _flag_values(rest)
        return [flags] if isinstance(flags, str) else _check_flags("migrate", flags, {}, MIGRATE_OPTIONAL_FLAGS)
    if command == "health":
        flags = _flag_values(rest)
        if isinstance(flags, str):
            return [flags]
        if set(flags) != {"--role"} or flags["--role"] not in RUN_ROLES:
            return [f"health {rest}: expected exactly --role ROLE with ROLE in {sorted(RUN_ROLES)}"]
        return []
    return [f"{command!r} is not a command the deployment may use (run, migrate, health)"]


def _flag_values(args: list[str]) -> dict[str, str] | str:
    if len(args) % 2:
        return f"{args}: every flag takes exactly one value"
    pairs = dict(zip(args[::2], args[1::2]))
    if len(pairs) != len(args) // 2 or not all(flag.startswith("--") for flag in pairs):
        return f"{args}: expected distinct --flag value pairs"
    return pairs


def _check_flags(where: str, flags: dict[str, str], required: dict[str, Callable[[str], bool]],
                 optional: dict[str, Callable[[str], bool]]) -> list[str]:
    errors = [f"{where}: missing {flag}" for flag in required if flag not in flags]
    for flag, value in flags.items():
        check = required.get(flag) or optional.get(flag)
        if check is None:
            errors.append(f"{where}: {flag} is not in the contract ({sorted(required) + sorted(optional)})")
        elif not check(value):
            errors.append(f"{where}: {flag} {value!r} is not an accepted value")
    return errors


def test_the_contract_table_accepts_and_refuses_what_it_should() -> None:
    assert contract_errors(["run", "--role", "engine", "--bus", "redis", "--store", "postgres",
                            "--data-dir", "/data", "--feed", "redis", "--shard", "1"]) == []
    assert contract_errors(["migrate"]) == []
    assert contract_errors(["run", "--role", "feed", "--bus", "redis", "--feed", "replay:/ticks.jsonl"]) == []
    assert contract_errors(["health", "--role", "ws"]) == []
    assert contract_errors(["migrate", "--store", "postgres"]) == []
    assert contract_errors(["run", "--role", "gateway", "--bus", "redis", "--store", "postgres"])  # no port
    assert contract_errors(["run", "--role", "ws", "--bus", "memory", "--store", "postgres", "--ws-port", "7070"])
    assert contract_errors(["run", "--role", "trader", "--bus", "redis"])
    assert contract_errors(["run", "--role", "feed", "--bus", "redis", "--feed", "kraken"])
    assert contract_errors(["health", "--role", "all"])
    assert contract_errors(["run", "--role", "candles", "--bus", "redis", "--store", "postgres", "--shard", "1"])
    assert contract_errors(["run", "--role", "engine", "--bus", "redis", "--store", "postgres", "--data-dir", "/data"])

# ------------------------------------------------------------------------------------ helpers


_REFERENCE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}"
                        r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def variable_references(text: str) -> Iterator[re.Match[str]]:
    """Every ``$VAR`` / ``${VAR…}`` compose interpolates (``$$`` is a literal dollar, skipped)."""
    return _REFERENCE.finditer(text.replace("$$", "\0\0"))


def interpolate(text: str, env: dict[str, str]) -> str:
    """``docker compose`` interpolation: ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+alt}``, ``$VAR``; ``$$`` stays a literal ``$``."""
    def substitute(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op") or "", match.group("arg") or ""
        value = env.get(name)
        if op in (":-", "-"):
            return value if value or (op == "-" and value is not None) else arg
        if op in (":?", "?"):
            if value is None or (op == ":?" and not value):
                raise KeyError(f"{name}: {arg}")
            return value
        if op in (":+", "+"):
            return arg if value or (op == "+" and value is not None) else ""
        return value or ""
    escaped = text.replace("$$", "\0\0")
    return _REFERENCE.sub(substitute, escaped).replace("\0\0", "$")


def parse_env_file(path: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """``KEY=value`` lines of an env file, and the comment block above each key (consecutive keys
    below one block share it; a blank line ends a block)."""
    values: dict[str, str] = {}
    comments: dict[str, list[str]] = {}
    block: list[str] = []
    after_key = False
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            if after_key:
                block, after_key = [], False
            text = stripped.lstrip("#").strip()
            if text and not set(text) <= set("-= "):     # skip rulers such as "# ------ section"
                block.append(text)
        elif "=" in stripped:
            key, _, value = stripped.partition("=")
            values[key.strip()] = value.strip()
            comments[key.strip()] = list(block)
            after_key = True
        else:
            block, after_key = [], False
    return values, comments


def _interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, env) for key, value in node.items()}
    return node


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return parse_env_file(ENV_EXAMPLE_PATH)[0]


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    """The compose file as written (``${…}`` references not interpolated)."""
    return yaml.safe_load(COMPOSE_PATH.read_text())


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any], env_example: dict[str, str]) -> dict[str, Any]:
    """The compose file interpolated with the values of .env.example."""
    return _interpolate_tree(raw_compose, env_example)


def _argv(command: Any) -> list[str]:
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def app_services(compose: dict[str, Any]) -> dict[str, list[str]]:
    """Services running this project's image: name -> their ``exness-actors`` argument vector."""
    image = compose["x-app"]["image"]
    return {name: _argv(service.get("command")) for name, service in compose["services"].items()
            if service.get("image") == image}


def role_of(argv: list[str]) -> str | None:
    if argv[:1] == ["run"] and "--role" in argv:
        return argv[argv.index("--role") + 1]
    return None


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return {name: "service_started" for name in depends}
    return {name: spec.get("condition", "service_started") for name, spec in depends.items()}


def _healthcheck_enabled(service: dict[str, Any]) -> bool:
    check = service.get("healthcheck")
    return bool(check) and not check.get("disable") and check.get("test") not in (None, ["NONE"], "NONE")

# ------------------------------------------------------------------------------------ compose


def test_compose_defines_the_whole_topology(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == EXPECTED_SERVICES
    assert compose["services"]["redis"]["image"].startswith("redis:7")
    assert compose["services"]["postgres"]["image"] == "timescale/timescaledb:latest-pg15"
    roles = {name: role_of(argv) for name, argv in app_services(compose).items()}
    assert roles == {"migrate": None, "engine": "engine", "gateway-1": "gateway", "gateway-2": "gateway",
                     "ws": "ws", "feed": "feed", "candles": "candles",
                     "snapshotter": "snapshotter", "notifications": "notifications"}
    assert app_services(compose)["migrate"][:1] == ["migrate"]


def test_every_long_running_service_has_a_healthcheck_and_a_restart_policy(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name in ONE_SHOT_SERVICES:
            assert service.get("restart") == "no", f"{name}: a one-shot job must not be restarted"
            continue
        assert _healthcheck_enabled(service), f"{name}: no healthcheck"
        assert service.get("restart") in ("always", "unless-stopped", "on-failure"), f"{name}: no restart policy"


def test_app_healthchecks_ask_the_health_command_for_their_own_role(compose: dict[str, Any]) -> None:
    for name, argv in app_services(compose).items():
        role = role_of(argv)
        if role is None:
            continue
        test = compose["services"][name]["healthcheck"]["test"]
        assert test == ["CMD", "exness-actors", "health", "--role", role], f"{name}: healthcheck {test}"


def test_every_exness_actors_command_line_follows_the_cli_contract(compose: dict[str, Any]) -> None:
    problems: dict[str, list[str]] = {}
    for name, argv in app_services(compose).items():
        errors = contract_errors(argv)
        test = compose["services"][name].get("healthcheck", {}).get("test")
        if test and test[:2] == ["CMD", "exness-actors"]:
            errors += [f"healthcheck: {error}" for error in contract_errors(test[2:])]
        if errors:
            problems[name] = errors
    assert problems == {}


def test_compose_command_lines_parse_with_the_real_cli(compose: dict[str, Any]) -> None:
    parser = cli._build_parser()
    subcommands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    run_role = next((action for action in subcommands.choices["run"]._actions if "--role" in action.option_strings),
                    None)
    if run_role is None or run_role.choices is None or not set(RUN_ROLES) <= set(run_role.choices) \
            or "health" not in subcommands.choices:
        pytest.skip("the CLI does not have the split-mode roles and `health` yet; checked against the table only")
    argvs = []
    for name, argv in app_services(compose).items():
        argvs.append((name, argv))
        test = compose["services"][name].get("healthcheck", {}).get("test")
        if test and test[:2] == ["CMD", "exness-actors"]:
            argvs.append((f"{name} healthcheck", test[2:]))
    refused = {}
    for name, argv in argvs:
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                parser.parse_args(argv)
        except SystemExit:
            refused[name] = stderr.getvalue().strip().splitlines()[-1:]
    assert refused == {}


def test_start_order_is_a_valid_dependency_graph(compose: dict[str, Any]) -> None:
    services = compose["services"]
    graph = {name: _depends_on(service) for name, service in services.items()}
    for name, depends in graph.items():
        for dependency, condition in depends.items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            assert condition in DEPENDS_ON_CONDITIONS, f"{name} -> {dependency}: condition {condition!r}"
            if condition == "service_healthy":
                assert _healthcheck_enabled(services[dependency]), f"{name} waits for {dependency}'s health"
            if condition == "service_completed_successfully":
                assert dependency in ONE_SHOT_SERVICES, f"{name} waits for long-running {dependency} to exit"
    order = _topological_order(graph)
    position = {name: index for index, name in enumerate(order)}
    for later in ("migrate", "engine", "gateway-1", "gateway-2", "ws", "candles", "notifications"):
        assert position["postgres"] < position[later]
    for later in ("engine", "gateway-1", "gateway-2", "ws", "feed", "candles", "snapshotter", "notifications"):
        assert position["redis"] < position[later]
    assert graph["migrate"].get("postgres") == "service_healthy"
    assert graph["snapshotter"].get("engine") == "service_healthy"


def test_the_store_is_migrated_before_anything_uses_it(compose: dict[str, Any]) -> None:
    for name, argv in app_services(compose).items():
        if role_of(argv) and "--store" in argv:
            assert _depends_on(compose["services"][name]).get("migrate") == "service_completed_successfully", name
    for name in ("engine", "gateway-1", "gateway-2"):
        assert _depends_on(compose["services"][name]).get("migrate") == "service_completed_successfully", name


def _topological_order(graph: dict[str, dict[str, str]]) -> list[str]:
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        assert state.get(name) != "visiting", f"depends_on cycle: {' -> '.join(path + (name,))}"
        state[name] = "visiting"
        for dependency in sorted(graph[name]):
            visit(dependency, path + (name,))
        state[name] = "done"
        order.append(name)

    for name in sorted(graph):
        visit(name, ())
    return order


def test_services_get_the_environment_their_role_needs(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, argv in app_services(compose).items():
        environment = _environment(services[name])
        if "--bus" in argv:
            assert environment.get("REDIS_URL", "").startswith("redis://"), name
            assert environment.get("EXNESS_BUS__KIND") == "redis", name
            assert "EXNESS_BUS__SHARDS" in environment, name
        if "--store" in argv:
            assert environment.get("DATABASE_URL", "").startswith("postgresql://"), name
            assert environment.get("EXNESS_STORE__KIND") == "postgres", name
        if role_of(argv) in ("gateway", "ws"):
            assert "EXNESS_AUTH__JWT_SECRET" in environment, f"{name}: gateways and ws servers share the JWT secret"
        if role_of(argv) in ROLES_WITH_DATA_VOLUME:
            assert "EXNESS_SNAPSHOT__KEY" in environment, name
    # a service that does the engine's candles/snapshots/history work means the engine must not
    roles = {role_of(argv) for argv in app_services(compose).values()}
    for role, key in (("candles", "EXNESS_BUS__CANDLES_ROLE"), ("persister", "EXNESS_BUS__PERSISTER_ROLE"),
                      ("snapshotter", "EXNESS_BUS__SNAPSHOTTER_ROLE")):
        assert (_environment(services["engine"]).get(key) == "true") == (role in roles), key
    # the snapshotter follows its engine's heartbeat, named by the engine's EXNESS_INSTANCE
    assert _environment(services["engine"])["EXNESS_INSTANCE"] == \
        _environment(services["snapshotter"])["EXNESS_BUS__ENGINE_INSTANCE"]
    assert _environment(services["gateway-1"])["EXNESS_HTTP__HOST"] == "0.0.0.0"
    assert _environment(services["ws"])["EXNESS_WS__HOST"] == "0.0.0.0"
    for name in ("feed", "snapshotter", "migrate", "engine", "candles", "notifications"):
        assert "EXNESS_AUTH__JWT_SECRET" not in _environment(services[name]), f"{name} has no use for the JWT secret"


def test_the_notifications_worker_serves_metrics_on_the_compose_network_only(compose: dict[str, Any]) -> None:
    """Its own /metrics listener (split mode has no gateway in its process): bound on every
    interface of the container, exposed to the compose network (Prometheus), not published."""
    service = compose["services"]["notifications"]
    environment = _environment(service)
    port = environment["EXNESS_NOTIFICATIONS__METRICS_PORT"]
    assert _port(port) and environment["EXNESS_NOTIFICATIONS__METRICS_HOST"] == "0.0.0.0"
    assert [str(exposed) for exposed in service["expose"]] == [port]
    assert "ports" not in service
    assert service["restart"] == "unless-stopped" and service["image"] == compose["x-app"]["image"]
    cfg = load_config(environ=environment)    # the variables parse into the typed settings
    assert cfg.settings.notifications.metrics_port == int(port)


def test_gateways_publish_different_host_ports(compose: dict[str, Any]) -> None:
    published = {}
    for name in ("gateway-1", "gateway-2", "ws"):
        (mapping,) = compose["services"][name]["ports"]
        host_ip, host_port, container_port = str(mapping).rsplit(":", 2)
        published[name] = (host_ip, host_port)
        assert container_port == {"ws": "7070"}.get(name, "8000")
    assert len(set(published.values())) == len(published), published


def _secret_variables(env_names: set[str]) -> set[str]:
    return {name for name in env_names if SECRET_NAME.search(name)}


def test_no_literal_secrets_in_compose(raw_compose: dict[str, Any], env_example: dict[str, str]) -> None:
    text = COMPOSE_PATH.read_text()
    secrets = _secret_variables(set(env_example))
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "EXNESS_AUTH__JWT_SECRET", "EXNESS_SNAPSHOT__KEY"} <= secrets
    # a secret variable never has a default in the file: compose refuses to start without it
    for match in variable_references(text):
        name = match.group("braced") or match.group("bare")
        if name in secrets:
            assert match.group("op") in (":?", "?"), f"{match.group(0)}: a secret must be required (${{{name}:?…}})"
    # interpolate with a recognisable value per secret: every secret-looking value must be one of them
    sentinels = {name: f"sentinel-{name.lower()}" for name in secrets}
    compose = _interpolate_tree(raw_compose, {**env_example, **sentinels})
    allowed = set(sentinels.values())
    for name, service in compose["services"].items():
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key) or key.endswith("_AUTH"):
                assert value in allowed, f"{name}: {key} must come from a required ${{VAR:?…}}, not {value!r}"
            if "://" in value:
                password = urllib.parse.urlsplit(value).password
                assert password is None or password in allowed, f"{name}: {key} has a literal password in its URL"
        argv = _argv(service.get("command"))
        for flag, value in itertools.pairwise(argv):
            if SECRET_NAME.search(flag) or flag in ("--requirepass", "--masterauth"):
                assert value in allowed, f"{name}: {flag} takes a literal secret"
    for name in secrets:
        assert env_example[name] not in text, f"the placeholder of {name} is written into docker-compose.yml"


def test_named_volumes_are_declared_and_the_engine_shares_its_own_with_the_snapshotter(
        compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    mounts: dict[str, dict[str, str]] = {}
    for name, service in compose["services"].items():
        for volume in service.get("volumes") or []:
            source, target = (volume["source"], volume["target"]) if isinstance(volume, dict) \
                else str(volume).split(":")[:2]
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source} is not declared"
            mounts.setdefault(name, {})[target] = source
    assert declared <= {source for service_mounts in mounts.values() for source in service_mounts.values()}
    assert mounts["engine"]["/data"] == mounts["snapshotter"]["/data"]
    assert mounts["engine"]["/data"] in declared
    assert mounts["redis"]["/data"] in declared
    assert mounts["postgres"]["/var/lib/postgresql/data"] in declared
    services = app_services(compose)
    for name in ("engine", "snapshotter"):
        argv = services[name]
        assert argv[argv.index("--data-dir") + 1] == "/data", name
    for name, argv in services.items():
        if role_of(argv) in STATELESS_ROLES:
            assert mounts["engine"]["/data"] not in mounts.get(name, {}).values(), f"{name} is stateless"


def test_env_example_documents_every_variable_the_compose_file_uses(env_example: dict[str, str]) -> None:
    used = {match.group("braced") or match.group("bare")
            for match in variable_references(COMPOSE_PATH.read_text())}
    values, comments = parse_env_file(ENV_EXAMPLE_PATH)
    assert used - set(values) == set(), "used by docker-compose.yml but missing from .env.example"
    assert set(values) - used == set(), "listed in .env.example but not used by docker-compose.yml"
    undocumented = {name for name in values if not comments.get(name)}
    assert undocumented == set(), "each variable needs a comment line above it"
    for name in _secret_variables(set(values)):
        assert PLACEHOLDER in values[name], f"{name}: .env.example holds placeholders, never a real secret"
    assert "secrets.token_urlsafe" in ENV_EXAMPLE_PATH.read_text()


def test_interpolation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} $SET $$SET", env) == "x d d  x $SET"
    assert interpolate("${SET:?need it}", env) == "x"
    with pytest.raises(KeyError):
        interpolate("${UNSET:?need it}", env)
    assert [match.group("braced") or match.group("bare")
            for match in variable_references("${A:?x} $B $$C")] == ["A", "B"]

# ----------------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


@pytest.fixture(scope="module")
def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions(DOCKERFILE_PATH.read_text())
    starts = [index for index, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert len(starts) >= 2, "the Dockerfile must be multi-stage (build, runtime)"
    return instructions[starts[-1]:]


def test_dockerfile_builds_from_python_311_slim_in_stages() -> None:
    instructions = dockerfile_instructions(DOCKERFILE_PATH.read_text())
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim") in instructions
    assert [arguments for keyword, arguments in instructions if keyword == "FROM"] == \
        ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]
    assert not any(keyword == "RUN" and re.search(r"pip install[^&]*(-e|--editable)\b", arguments)
                   for keyword, arguments in instructions), "the image installs the project, not editable"


def test_the_image_ships_the_compiled_core_and_proves_it_at_build_time() -> None:
    """The build stage has a C compiler, compiles the core (EXNESS_COMPILE=1 fails the build rather
    than quietly shipping pure Python) and checks the installed package runs the compiled build;
    the runtime stage gets no compiler."""
    instructions = dockerfile_instructions(DOCKERFILE_PATH.read_text())
    starts = [index for index, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    build, runtime = instructions[starts[0]:starts[-1]], instructions[starts[-1]:]
    build_runs = " ".join(arguments for keyword, arguments in build if keyword == "RUN")
    assert re.search(r"apt-get install [^&]*\bgcc\b", build_runs), "the build stage installs no C compiler"
    wheel_step = next(arguments for keyword, arguments in build if keyword == "RUN" and "pip wheel" in arguments)
    assert "EXNESS_COMPILE=1" in wheel_step, "the wheel is not built with EXNESS_COMPILE=1"
    assert "exness_actors.BUILD == \"compiled\"" in wheel_step, "the build does not check it runs the compiled core"
    assert "gcc" not in " ".join(arguments for keyword, arguments in runtime if keyword == "RUN")


def test_the_image_runs_as_an_unprivileged_user(final_stage: list[tuple[str, str]]) -> None:
    users = [arguments for keyword, arguments in final_stage if keyword == "USER"]
    assert users, "the runtime stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1]} is root"


def test_the_image_declares_healthcheck_volume_ports_and_entrypoint(final_stage: list[tuple[str, str]]) -> None:
    by_keyword: dict[str, list[str]] = {}
    for keyword, arguments in final_stage:
        by_keyword.setdefault(keyword, []).append(arguments)
    (healthcheck,) = by_keyword["HEALTHCHECK"]
    assert "NONE" not in healthcheck.split() and "exness-actors health --role" in healthcheck
    assert by_keyword["VOLUME"] == ["/data"]
    assert set(" ".join(by_keyword["EXPOSE"]).split()) == {"8000", "7070"}
    assert by_keyword["ENTRYPOINT"] == ['["exness-actors"]']
    assert by_keyword["CMD"] == ['["run"]']


_SECRET_FILES = (".env", ".env.*", "*.key", "*.pem", "*secret*", "id_rsa*", "data", "data/*")


def test_the_dockerfile_copies_no_secrets_and_bakes_none_in() -> None:
    for keyword, arguments in dockerfile_instructions(DOCKERFILE_PATH.read_text()):
        if keyword in ("COPY", "ADD"):
            parts = [part for part in arguments.split() if not part.startswith("--")]
            for source in parts[:-1]:
                name = source.rstrip("/")
                assert not any(fnmatch.fnmatch(name, pattern) for pattern in _SECRET_FILES), f"{keyword} {arguments}"
                assert name not in (".", "*"), f"{keyword} {arguments}: copy the paths the image needs, not the context"
        if keyword in ("ENV", "ARG"):
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", arguments):
                assert not SECRET_NAME.search(name), f"{keyword} {name}: secrets come from the environment at run time"


def test_dockerignore_keeps_secrets_data_and_clutter_out_of_the_build_context() -> None:
    patterns = {line.strip() for line in DOCKERIGNORE_PATH.read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    for required in (".git", ".env", "/data", ".venv", "venv", ".venv-ci", "**/__pycache__", ".pytest_cache",
                     ".hypothesis", "**/*.key", "**/jwt.secret"):
        assert required in patterns, f".dockerignore should exclude {required}"
    assert "!.env.example" in patterns
    assert not any(pattern in ("actors", "actors/", "schemas", "config.toml") for pattern in patterns)

# ----------------------------------------------------------------------------------- the guide


def test_the_operations_guide_covers_every_service_and_variable(env_example: dict[str, str]) -> None:
    guide = OPERATIONS_DOC_PATH.read_text()
    missing_services = {name for name in EXPECTED_SERVICES if f"`{name}`" not in guide}
    assert missing_services == set()
    missing_variables = {name for name in env_example if name not in guide}
    assert missing_variables == set()
    for topic in ("/healthz", "/readyz", "/metrics", "docker compose up -d", "cp .env.example .env",
                  "exness-actors migrate", "--shard", "pg_dump", "exness-actors run"):
        assert topic in guide, f"docs/operations.md does not mention {topic}"


# ----------------------------------------------------------------------------------- the wheel

def test_an_installed_wheel_carries_its_config_and_migrations(tmp_path: Path) -> None:
    """What the Docker image installs: a wheel, not the sources. It must find config.toml and the
    SQL migrations inside the package (actors/_shipped, copied by setup.py), not beside a
    checkout."""
    import subprocess
    import sys
    import zipfile

    import shutil
    source = tmp_path / "src"      # what the Dockerfile copies (and no build/ left in the checkout)
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "config.toml", "supervisor.py"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("actors", "exness_actors", "schemas"):
        shutil.copytree(ROOT / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.so", "_compiled.json"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "wheels"),
                            str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "wheels").glob("exness_actors-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"actors/_shipped/{path.relative_to(ROOT).as_posix()}"
               for path in [ROOT / "config.toml", *sorted((ROOT / "schemas" / "migrations").rglob("*.sql"))]}
    assert shipped <= names, sorted(shipped - names)
    assert "actors/data/binance_sample.jsonl" in names and "actors/static/swagger-ui-bundle.js" in names
    pages = {f"actors/{path.relative_to(ROOT / 'actors').as_posix()}"
             for page in ("terminal", "backoffice", "common")
             for path in (ROOT / "actors" / "static" / page).rglob("*") if path.is_file()}
    assert "actors/static/terminal/vendor/lightweight-charts.standalone.production.mjs" in pages
    assert "actors/static/backoffice/main.js" in pages
    assert "actors/static/common/session.js" in pages and "actors/static/common/base.css" in pages
    assert pages <= names, sorted(pages - names)

    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                                str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    probe = (
        "import actors, actors.config as c, actors.store.postgres as p, actors.store.sqlite as s\n"
        f"assert actors.__file__.startswith({str(site)!r}), actors.__file__\n"
        "assert list(c.load_config()['instruments']) == ['BTCUSDT', 'ETHUSDT', 'SOLUSDT']\n"
        "assert [m.stem for m in p.load_migrations()][:4] == "
        "['0001_init', '0002_users', '0003_timescale', '0004_shards']\n"
        "assert sorted(f.name for f in s.MIGRATIONS_DIR.glob('*.sql'))[0] == '0001_init.sql'\n"
        "import exness_actors; print(exness_actors.BUILD)\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(tmp_path)}
    ran = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 0, ran.stderr[-3000:]
    # setup.py compiles the core by default where a C compiler is (EXNESS_COMPILE=auto)
    assert ran.stdout.strip() == ("compiled" if shutil.which("gcc") else "pure"), ran.stdout
    migrated = subprocess.run([sys.executable, "-m", "supervisor", "migrate", "--store", "sqlite", "--data-dir",
                               str(tmp_path / "data")], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=60)
    assert migrated.returncode == 0 and "0003_shards" in migrated.stdout, migrated.stdout + migrated.stderr
