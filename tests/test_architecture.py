"""The shape of the code, pinned: public names, import directions, one engine interface,
short functions. Read as a newcomer would, docs/architecture.md says the same in prose."""

import ast
import importlib
from pathlib import Path

import pytest

from actors.bus.streams import RemoteEngineHandle
from actors.engine.actor import EngineHandle
from actors.engine.interface import ENGINE_CLIENT_MEMBERS, EngineClient

ROOT = Path(__file__).resolve().parents[1]
ACTORS = ROOT / "actors"

#: every package's public names (its ``__all__``); a change here is a change of the API
PUBLIC_NAMES = {
    "actors.engine": {"run", "EngineHandle", "EngineClient", "Query", "Subscription", "submit_between",
                      "Request", "Reply", "ReplySlot", "EventBatch", "Burst", "Overloaded", "EngineStopped",
                      "EngineTimeout", "recover", "Recovered", "RecoveryError", "journal_dir", "snapshot_dir",
                      "FatalIOError"},
    "actors.feed": {"run", "FeedStats", "FeedSettings"},
    "actors.history": {"Persister", "PersisterStatistics", "CandlesHandle", "CandlesStatistics"},
    "actors.ws": {"run", "WsServer", "WsOptions", "IntervalFolder"},
    "actors.store": {"Store", "Page", "InvalidCursor", "StoreClosed", "HistoryCut", "UserRecord",
                     "DuplicateEmail", "open_store"},
    "actors.bus": {"RedisBus", "RemoteEngineHandle", "run_engine_edge", "check_health", "run_role", "ROLES"},
    "actors.simulation": {"SimulationOptions", "SimulationError", "run_simulation", "format_report",
                          "report_json"},
    "actors.wire": {"EdgeError"},
    "actors.notifications": {"run", "NotificationWorker", "WorkerStatistics", "KINDS", "CHANNELS", "derive",
                             "notification_json", "PreferencesError", "apply_update", "default_preferences",
                             "preferences_json"},
    "actors.gateway": {"create_app", "run", "GatewayInfo", "GatewaySettings", "hypercorn_config",
                       "token_issuer_from_config", "openapi_document", "openapi_text", "export_openapi",
                       "OPENAPI_PATH"},
}

#: package -> packages it must not import (the arrows of docs/architecture.md point the other way)
FORBIDDEN_IMPORTS = {
    "engine": {"gateway", "ws", "bus", "feed", "history", "simulation", "wire"},
    "wire": {"gateway", "ws", "bus", "history", "simulation"},
    "store": {"gateway", "ws", "bus", "feed", "history", "simulation"},
    "history": {"gateway", "ws", "bus", "simulation"},
    "feed": {"gateway", "ws", "bus", "history", "simulation"},
    "gateway": {"ws", "simulation"},
    "ws": {"gateway", "simulation"},
    "notifications": {"gateway", "ws", "bus", "feed", "history", "simulation"},
}
#: modules of the bus that are transport only (the roles module composes the split processes)
BUS_TRANSPORT = ("actors/bus/streams.py", "actors/bus/redis_client.py")

#: functions still longer than the limit, to be split (a ratchet: the list only shrinks).
LONG_FUNCTIONS_ALLOWED: set[str] = set()
MAX_FUNCTION_LINES = 80
MAX_TOP_LEVEL_MODULES = 12

#: where a handle's ``.engine`` (the core's live state) may be read outside actors/engine/: the
#: simulation's checker
ENGINE_STATE_READERS = {"actors/simulation/world.py"}


def python_files(*roots: Path) -> list[Path]:
    files: list[Path] = []
    for root in roots:
        files.extend([root] if root.is_file() else sorted(root.rglob("*.py")))
    return files


def package_of(path: Path) -> str:
    parts = path.relative_to(ACTORS).parts
    return parts[0] if len(parts) > 1 else ""


def imported_modules(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return [name for name in names if name.startswith("actors.")]


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("package", sorted(PUBLIC_NAMES))
def test_each_package_exports_its_public_names(package):
    module = importlib.import_module(package)
    assert set(module.__all__) == PUBLIC_NAMES[package]
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.{name} is in __all__ but not defined"


def test_nothing_imports_another_packages_private_module():
    offenders = []
    for path in python_files(ACTORS, ROOT / "supervisor.py"):
        own = package_of(path) if path.is_relative_to(ACTORS) else None
        for name in imported_modules(ast.parse(path.read_text())):
            parts = name.split(".")
            private = any(part.startswith("_") for part in parts[2:])
            if private and len(parts) > 2 and parts[1] != own:
                offenders.append(f"{relative(path)} imports {name}")
    assert offenders == []


def test_imports_point_the_right_way():
    offenders = []
    for path in python_files(ACTORS):
        package = package_of(path)
        forbidden = set(FORBIDDEN_IMPORTS.get(package, ()))
        if relative(path) in BUS_TRANSPORT:
            forbidden |= {"gateway", "ws", "history", "feed", "simulation"}
        for name in imported_modules(ast.parse(path.read_text())):
            if name.split(".")[1] in forbidden:
                offenders.append(f"{relative(path)} imports {name}")
    assert offenders == []


def test_only_the_engine_package_reads_the_engines_state():
    offenders = []
    for path in python_files(ACTORS, ROOT / "supervisor.py"):
        where = relative(path)
        if where.startswith("actors/engine/") or where in ENGINE_STATE_READERS or where == "supervisor.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "engine" and "handle" in ast.unparse(node.value):
                offenders.append(f"{where}:{node.lineno} {ast.unparse(node)}")
    assert offenders == []


def test_the_stream_server_knows_the_engine_only_as_an_engine_client():
    """The WebSocket server works the same in embedded and split mode: every read is a view."""
    offenders = []
    for path in python_files(ACTORS / "ws"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in ("exness_actors.engine", "actors.engine.actor"):
                names = {alias.name for alias in node.names} & {"Engine", "EngineHandle"}
                offenders.extend(f"{relative(path)}:{node.lineno} imports {name}" for name in sorted(names))
    assert offenders == []


@pytest.mark.parametrize("handle_class", [EngineHandle, RemoteEngineHandle])
def test_both_handles_implement_the_engine_interface(handle_class):
    protocol_members = {name for name in vars(EngineClient) if not name.startswith("_")}
    assert protocol_members == set(ENGINE_CLIENT_MEMBERS)
    instance_attributes = ({"instruments", "core_config"} if handle_class is RemoteEngineHandle
                           else {"accepting", "durable_seq"})
    missing = [name for name in ENGINE_CLIENT_MEMBERS
               if not hasattr(handle_class, name) and name not in instance_attributes]
    assert missing == []


def test_the_remote_handle_sets_what_the_interface_reads():
    source = (ACTORS / "bus" / "streams.py").read_text()
    assert "self.instruments = " in source and "self.core_config = " in source


def test_actors_has_few_top_level_modules():
    modules = sorted(path.name for path in ACTORS.glob("*.py"))
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, modules


def test_no_function_is_longer_than_the_limit():
    too_long = set()
    for path in python_files(ACTORS, ROOT / "supervisor.py", ROOT / "exness_actors"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    too_long.add(f"{relative(path)}:{node.name}")
    assert too_long - LONG_FUNCTIONS_ALLOWED == set()
    assert LONG_FUNCTIONS_ALLOWED - too_long == set(), "split: take it off LONG_FUNCTIONS_ALLOWED"


def test_trading_routes_are_plain_functions_in_a_table():
    from actors.gateway import _trading
    for method, path, handler in _trading.ROUTES:
        assert handler.__qualname__ == handler.__name__, f"{method} {path}: a nested function"
        assert getattr(_trading, handler.__name__) is handler
