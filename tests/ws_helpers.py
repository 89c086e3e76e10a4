"""Helpers for the WebSocket server tests: a running system + WS server, and a test client.

The stack is the real one: ``supervisor.run_system`` (engine, journal, store, candles actor; no
price feed — the tests push quotes through the handle) and ``actors.ws.server.run`` on a free port of
127.0.0.1, wired the way the supervisor wires it (the candles actor's outbox feeds the server).
"""

from __future__ import annotations

import functools
import json
from collections import deque
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Optional

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

import supervisor
from actors.ws import server as ws_actor
from actors.auth_tokens import TokenIssuer
from actors.config import load_config
from exness_actors.commands import CreateAccount, Quote

SECRET = "w" * 48
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas" / "ws"


@attrs.define
class Stack:
    system: Any
    server: ws_actor.WsServer
    tokens: TokenIssuer
    cfg: Any
    seen: list = attrs.field(factory=list)     # every server message any client received

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def handle(self) -> Any:
        return self.system.handle

    async def quote(self, bid: int, ask: int, symbol: str = "BTCUSDT") -> Any:
        return await self.handle.request(Quote(symbol=symbol, bid=bid, ask=ask))

    async def account(self, account_id: int, deposit_cents: int = 1_000_000, user_id: int = 0) -> str:
        """Create an account and return an access token for it."""
        await self.handle.request(CreateAccount(account_id=account_id, initial_deposit=deposit_cents))
        return self.tokens.issue_access(user_id or account_id, account_id)

    @asynccontextmanager
    async def client(self, **kwargs: Any) -> AsyncIterator["Client"]:
        async with open_websocket_url(self.url, **kwargs) as connection:
            yield Client(connection, self.seen)


@asynccontextmanager
async def running_stack(tmp_path: Path, *, ws: Optional[dict] = None,
                        clock: Optional[Callable[[], int]] = None,
                        candles_buffer: int = 1000) -> AsyncIterator[Stack]:
    cfg = load_config(environ={}, overrides={
        "data": {"dir": str(tmp_path / "data")}, "journal": {"fsync": "off"},
        "snapshot": {"interval_s": 3600}, "http": {"port": 0}, "ws": {"port": 0, **(ws or {})}})
    tokens = TokenIssuer(SECRET.encode())
    async with trio.open_nursery() as nursery:
        kwargs: dict[str, Any] = {"handle_signals": False, "feed": "none"}
        if clock is not None:
            kwargs["clock"] = clock
        system = await nursery.start(functools.partial(supervisor.run_system, cfg, **kwargs))
        ws_scope = trio.CancelScope()
        if "ws" in system.actors:               # the supervisor serves it: test that instance
            server = system.actors["ws"]
            tokens = server.tokens
        else:                                   # wired here as the supervisor is asked to wire it
            candles_handle = system.actors["candles"]
            outbox, inbox = trio.open_memory_channel(candles_buffer)
            candles_handle.outbox = outbox      # what the supervisor passes as the candles outbox

            async def serve(task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
                with ws_scope:
                    await ws_actor.run(handle=system.handle, cfg=cfg, tokens=tokens, candles_inbox=inbox,
                                       candles=candles_handle, store=system.store, task_status=task_status)
            server = await nursery.start(serve)
        try:
            yield Stack(system, server, tokens, cfg)
        finally:
            ws_scope.cancel()
            system.request_shutdown()


class Client:
    """A trio-websocket client that unpacks batched frames into single messages."""

    def __init__(self, connection: WebSocketConnection, seen: list) -> None:
        self.connection = connection
        self.buffer: deque = deque()
        self.seen = seen
        self.frames = 0
        self.received: list[dict] = []

    async def send(self, message: Any) -> None:
        await self.connection.send_message(message if isinstance(message, str) else json.dumps(message))

    async def recv(self, timeout: float = 5.0) -> dict:
        if not self.buffer:
            with trio.fail_after(timeout):
                frame = await self.connection.get_message()
            self.frames += 1
            parsed = json.loads(frame, parse_float=Decimal)
            self.seen.append(parsed)
            self.buffer.extend(parsed if isinstance(parsed, list) else [parsed])
        message = self.buffer.popleft()
        self.received.append(message)
        return message

    async def recv_until(self, predicate: Callable[[dict], bool], timeout: float = 5.0) -> tuple[dict, list[dict]]:
        """The first message matching ``predicate`` and the ones before it."""
        skipped = []
        with trio.fail_after(timeout):
            while True:
                message = await self.recv(timeout)
                if predicate(message):
                    return message, skipped
                skipped.append(message)

    async def first_match(self, predicate: Callable[[dict], bool], timeout: float = 5.0) -> dict:
        """The first message matching ``predicate``, among those received already or the next
        ones: an order's events and its ``order_result`` come from two tasks of the server, in
        either order (so a :meth:`recv_until` for the result may have passed the events)."""
        for message in self.received:
            if predicate(message):
                return message
        message, _ = await self.recv_until(predicate, timeout)
        return message

    async def request(self, message: dict, reply_op: str, timeout: float = 5.0) -> dict:
        await self.send(message)
        reply, _ = await self.recv_until(lambda m: m.get("op") in (reply_op, "error"), timeout)
        return reply

    async def subscribe(self, *channels: str, since: Optional[dict] = None, **extra: Any) -> dict:
        message: dict[str, Any] = {"op": "subscribe", "channels": list(channels), **extra}
        if since is not None:
            message["since"] = since
        return await self.request(message, "subscribed")

    async def auth(self, token: str) -> dict:
        return await self.request({"op": "auth", "token": token}, "authenticated")

    async def order(self, request_id: str, action: str, **fields: Any) -> dict:
        await self.send({"op": "order", "id": request_id, "action": action, **fields})
        reply, _ = await self.recv_until(
            lambda m: m.get("op") == "order_result" and m.get("id") == request_id)
        return reply

    async def closed(self, timeout: float = 10.0) -> Any:
        """Read until the server closes; the close reason."""
        with trio.fail_after(timeout):
            while True:
                try:
                    await self.connection.get_message()
                except ConnectionClosed as closed:
                    return closed.reason


def data_of(messages: list[dict], channel: str) -> list[dict]:
    """The channel's numbered data messages (events; not the unnumbered ``account_summary``)."""
    return [m for m in messages if m.get("channel") == channel and "data" in m and "seq" in m]


def summaries_of(messages: list[dict]) -> list[dict]:
    """The ``data`` of the ``account_summary`` messages among ``messages``, in order."""
    return [m["data"] for m in messages
            if m.get("channel") == "account" and m.get("data", {}).get("event") == "account_summary"]


def is_summary(message: dict) -> bool:
    return message.get("channel") == "account" and message.get("data", {}).get("event") == "account_summary"


async def next_event(client: "Client", timeout: float = 5.0) -> dict:
    """The next message that is not an (unnumbered, throttled) ``account_summary``."""
    message, _ = await client.recv_until(lambda m: not is_summary(m), timeout)
    return message


# ------------------------------------------------------------------------------ JSON Schema

def load_schema(name: str) -> dict:
    return json.loads((SCHEMA_DIR / name).read_text())


def schema_errors(instance: Any, schema: dict) -> list[str]:
    """Validation errors of ``instance``: with ``jsonschema`` when it is installed, else with
    :func:`mini_validate` (the subset of draft 2020-12 that ``schemas/ws`` uses)."""
    try:
        import jsonschema
    except ImportError:
        return mini_validate(instance, schema, schema)
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{list(error.absolute_path)}: {error.message}" for error in validator.iter_errors(_plain(instance))]


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float, Decimal)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def mini_validate(value: Any, schema: dict, root: dict, path: str = "$") -> list[str]:
    """A small JSON Schema validator: $ref (local), type, const, enum, pattern, min/maxLength,
    minimum, properties, required, additionalProperties, items, min/maxItems, oneOf, anyOf, allOf."""
    import re
    if "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return mini_validate(value, node, root, path)
    errors: list[str] = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            return [f"{path}: {value!r} is not of type {schema['type']}"]
    if "const" in schema and not (value == schema["const"] and type(value) is type(schema["const"])):
        errors.append(f"{path}: {value!r} is not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", len(value)):
            errors.append(f"{path}: length of {value!r} out of range")
    if _TYPES["number"](value) and "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: {value!r} is below {schema['minimum']}")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{path}: {name!r} is required")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in properties:
                errors += mini_validate(item, properties[name], root, f"{path}.{name}")
            elif extra is False:
                errors.append(f"{path}: unexpected property {name!r}")
            elif isinstance(extra, dict):
                errors += mini_validate(item, extra, root, f"{path}.{name}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
            errors.append(f"{path}: {len(value)} items out of range")
        if "items" in schema:
            for index, item in enumerate(value):
                errors += mini_validate(item, schema["items"], root, f"{path}[{index}]")
    if "oneOf" in schema:
        results = [mini_validate(value, option, root, path) for option in schema["oneOf"]]
        matches = sum(not result for result in results)
        if matches != 1:
            closest = min(results, key=len) if not matches else []
            errors.append(f"{path}: matches {matches} of oneOf (exactly one expected){closest[:3]}")
    for option in schema.get("allOf", ()):
        errors += mini_validate(value, option, root, path)
    if "anyOf" in schema and not any(not mini_validate(value, option, root, path) for option in schema["anyOf"]):
        errors.append(f"{path}: matches none of anyOf")
    return errors
