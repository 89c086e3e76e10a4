"""A client that never reads is dropped; a fast client keeps receiving everything; the engine
never waits for either."""

from __future__ import annotations

import socket

import pytest
import trio
from trio_websocket import ConnectionClosed, wrap_client_stream

from actors.ws.server import CLOSE_LAGGED, LAGGED_REASON
from exness_actors.commands import Quote
from ws_helpers import running_stack

BTC = "quotes:BTCUSDT"
CHUNK = 50


async def open_stalled_client(nursery: trio.Nursery, port: int):
    """A real client with a tiny receive buffer whose application never reads: the kernel
    buffers fill and the server's sends to it block."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    return await wrap_client_stream(nursery, trio.SocketStream(sock), "127.0.0.1", "/")


@pytest.mark.parametrize("writer", ["flusher", "tasks"])
async def test_a_client_that_never_reads_is_dropped_and_nobody_else_waits(tmp_path, writer):
    ws = {"max_pending_bytes": 64 * 1024, "send_buffer_bytes": 4096, "writer": writer}
    async with running_stack(tmp_path, ws=ws) as stack, trio.open_nursery() as nursery:
        server = stack.server
        slow = await open_stalled_client(nursery, server.port)
        await slow.send_message('{"op":"subscribe","channels":["quotes:BTCUSDT"]}')
        async with stack.client() as fast:
            await fast.subscribe(BTC)
            received = 0
            pushed = 0
            while server.dropped_lagged == 0 or pushed < 20 * CHUNK:
                assert pushed < 400 * CHUNK, "the stalled client was never dropped"
                for _ in range(CHUNK - 1):   # fire and forget, then one we wait for
                    stack.handle.send_nowait(Quote(symbol="BTCUSDT", bid=6_500_000 + pushed % 1000,
                                                   ask=6_500_100 + pushed % 1000))
                    pushed += 1
                await stack.quote(6_500_000, 6_500_100)
                pushed += 1
                while received < pushed:      # the fast client reads everything as it comes
                    message = await fast.recv()
                    received += 1
                    assert message["seq"] == received
            assert server.statistics()["dropped_lagged"] == 1
            if writer == "flusher":
                assert server.statistics()["partial_writes"] > 0   # its socket stopped taking frames
            assert fast.connection.closed is None
            engine = stack.handle.statistics()
            assert engine["overloads"] == 0 and engine["durable_seq"] == pushed

        # the dropped client, reading again, gets what was in flight and then the reason
        with trio.fail_after(10):
            while True:
                try:
                    await slow.get_message()
                except ConnectionClosed as closed:
                    reason = closed.reason
                    break
        assert (reason.code, reason.reason) == (CLOSE_LAGGED, LAGGED_REASON)
        nursery.cancel_scope.cancel()
