"""hypercorn's HTTP/1.1 protocol with :mod:`actors.gateway._h11_sends` installed: a response that
declares its length is written with one socket write, byte for byte what hypercorn wrote in
three; a streamed one still gets its head written at once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import h11
import pytest
import trio
import trio.testing
from hypercorn.config import Config
from hypercorn.events import RawData
from hypercorn.protocol.events import Body, EndBody, Response
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import TrioSingleTask

from actors.gateway import _h11_sends

SHIPPED = [(H11Protocol, "_send_h11_event"), (TCPServer, "protocol_send"), (TrioSingleTask, "restart"),
           (TrioSingleTask, "stop")]
ORIGINAL = {(owner, name): getattr(owner, name) for owner, name in SHIPPED}


def _protocol() -> tuple[H11Protocol, list[bytes]]:
    writes: list[bytes] = []

    async def send(event: Any) -> None:
        if isinstance(event, RawData):
            writes.append(event.data)

    config = Config()
    config.include_date_header = False   # two responses a second apart must be the same bytes
    context = SimpleNamespace(event_class=trio.Event)
    protocol = H11Protocol(None, config, context, None, None, False, None, None, send)  # type: ignore[arg-type]
    protocol.connection.receive_data(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
    protocol.connection.next_event()   # the request
    protocol.connection.next_event()   # its end
    return protocol, writes


async def _respond(protocol: H11Protocol, headers: list, chunks: list[bytes]) -> None:
    await protocol.stream_send(Response(stream_id=1, status_code=200, headers=headers))
    for chunk in chunks:
        await protocol.stream_send(Body(stream_id=1, data=chunk))
    await protocol.stream_send(EndBody(stream_id=1))


def _as_shipped() -> None:
    for (owner, name), function in ORIGINAL.items():
        setattr(owner, name, function)


@pytest.fixture
def hypercorn_as_shipped():
    _as_shipped()
    yield
    _as_shipped()


@pytest.mark.parametrize("body", [b'{"ok":true}', b""])
async def test_a_response_with_a_length_is_one_write_of_the_same_bytes(hypercorn_as_shipped, body) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    shipped, shipped_writes = _protocol()
    await _respond(shipped, headers, [body] if body else [])
    _h11_sends.install()
    coalesced, writes = _protocol()
    await _respond(coalesced, headers, [body] if body else [])
    assert len(shipped_writes) > 1 and len(writes) == 1
    assert writes[0] == b"".join(shipped_writes) and writes[0].endswith(b"\r\n\r\n" + body)
    assert coalesced.connection.our_state is h11.DONE


async def test_a_streamed_response_has_its_head_written_before_its_first_chunk(hypercorn_as_shipped) -> None:
    _h11_sends.install()
    protocol, writes = _protocol()
    await protocol.stream_send(Response(stream_id=1, status_code=200, headers=[(b"content-type", b"text/plain")]))
    assert len(writes) == 1 and writes[0].startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in writes[0].lower()
    await protocol.stream_send(Body(stream_id=1, data=b"abc"))
    await protocol.stream_send(EndBody(stream_id=1))
    assert writes[1:] == [b"3\r\nabc\r\n", b"0\r\n\r\n"]


class _SlowStream:
    """A stream whose ``send_all`` waits for the test's go-ahead, recording the order of writes."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.go = trio.Event()

    async def send_all(self, data: bytes) -> None:
        await self.go.wait()
        self.sent.append(data)


class _Steps(trio.abc.Instrument):
    def __init__(self) -> None:
        self.count = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.count += 1


async def _steps_of_one_send(server: Any) -> int:
    steps = _Steps()
    trio.lowlevel.add_instrument(steps)
    try:
        await server.protocol_send(RawData(data=b"one"))
        await trio.lowlevel.checkpoint()
    finally:
        trio.lowlevel.remove_instrument(steps)
    return steps.count


async def test_the_send_lock_still_serializes_writes_and_is_taken_at_once_when_free(hypercorn_as_shipped) -> None:
    server = TCPServer.__new__(TCPServer)
    server.send_lock = trio.Lock()
    server.stream = _SlowStream()
    server.stream.go.set()
    shipped_steps = await _steps_of_one_send(server)
    _h11_sends.install()
    server.stream = _SlowStream()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.protocol_send, RawData(data=b"first"))
        await trio.testing.wait_all_tasks_blocked()
        assert server.send_lock.locked()
        nursery.start_soon(server.protocol_send, RawData(data=b"second"))
        await trio.testing.wait_all_tasks_blocked()
        server.stream.go.set()
    assert server.stream.sent == [b"first", b"second"] and not server.send_lock.locked()
    # free, the lock costs no scheduling round: one step less than hypercorn's
    assert await _steps_of_one_send(server) == shipped_steps - 1
    assert server.stream.sent[-1] == b"one"


async def test_the_idle_timer_still_restarts_and_stops(hypercorn_as_shipped) -> None:
    from hypercorn.trio.task_group import TaskGroup
    _h11_sends.install()
    timer = TrioSingleTask()
    fired: list[str] = []

    async def action() -> None:
        await trio.sleep_forever()
        fired.append("never")

    async with TaskGroup() as group:
        await timer.restart(group, action)
        first = timer._handle
        await timer.restart(group, action)
        assert first.cancel_called and timer._handle is not first
        await timer.stop()
        assert timer._handle is None and not timer._lock.locked()
    assert fired == []


async def test_a_cancelled_caller_is_cancelled_at_a_free_lock_as_at_trio_acquire() -> None:
    """A free lock is taken without a scheduling round, but cancellation still lands there: the
    code after the lock must not run on in a cancelled scope (it answered 500 during shutdown)."""
    lock = trio.Lock()
    reached = False
    with trio.CancelScope() as scope:
        scope.cancel()
        await _h11_sends._acquire(lock)
        reached = True
    assert (reached, lock.locked(), scope.cancelled_caught) == (False, False, True)
