"""hypercorn's HTTP/1.1 protocol with :mod:`actors.gateway._h11_sends` installed: a response that
declares its length is written with one socket write, byte for byte what hypercorn wrote in
three; a streamed one still gets its head written at once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import h11
import pytest
import trio
from hypercorn.config import Config
from hypercorn.events import RawData
from hypercorn.protocol.events import Body, EndBody, Response
from hypercorn.protocol.h11 import H11Protocol

from actors.gateway import _h11_sends

ORIGINAL = H11Protocol._send_h11_event


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


@pytest.fixture
def hypercorn_as_shipped():
    H11Protocol._send_h11_event = ORIGINAL   # type: ignore[method-assign]
    yield
    H11Protocol._send_h11_event = ORIGINAL   # type: ignore[method-assign]


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
