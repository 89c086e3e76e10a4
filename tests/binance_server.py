"""A local stand-in for Binance's combined market-data stream, for tests of the price feed.

It speaks what ``wss://stream.binance.com:9443/stream?streams=a@bookTicker/b@aggTrade`` speaks:
a plain ``ws://127.0.0.1:PORT`` WebSocket whose path must be ``/stream?streams=...`` (anything
else is rejected with 404, as Binance does), and text frames
``{"stream": "btcusdt@bookTicker", "data": {...}}``. The test drives it: send book tickers or trades
(each connection gets only the streams it asked for), garbage frames, a clean close (Binance's
24-hour disconnect), an abrupt drop, silence, or a *freeze* (the server stops reading its socket,
so pings go unanswered, as with a dead peer or a black-holed route). ``start_ticking`` streams
prices in the background with increasing ``u``.

Usage::

    async with trio.open_nursery() as nursery:
        server = await nursery.start(BinanceServer().serve)
        cfg = ... {"feed": {"binance_url": server.url}}
        await server.wait_for_connections(1)
        await server.book_ticker("BTCUSDT", "65000.01", "65000.02")
        ...
        nursery.cancel_scope.cancel()
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream


class _PausableStream(trio.abc.Stream):
    """A TCP stream whose reading can be frozen: the WebSocket layer then sees nothing (no pings)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.frozen = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: Optional[int] = None) -> bytes | bytearray:
        if self.frozen:
            await trio.sleep_forever()
        data = await self.stream.receive_some(max_bytes)
        if self.frozen:             # frozen while this read was in flight: swallow it too
            await trio.sleep_forever()
        return data

    async def aclose(self) -> None:
        await self.stream.aclose()


class ClientConnection:
    """One connected client: its WebSocket, the streams it subscribed to, and the raw socket."""

    def __init__(self, ws: WebSocketConnection, streams: list[str], raw: _PausableStream) -> None:
        self.ws = ws
        self.streams = streams
        self.raw = raw
        self.frozen = False
        self.closed = trio.Event()


class BinanceServer:
    def __init__(self) -> None:
        self.port = 0
        self.connections: list[ClientConnection] = []      # open ones
        self.connection_count = 0                          # accepted, ever
        self.rejected_count = 0
        self.requested_paths: list[str] = []
        self.reject_next = 0                               # reject this many handshakes (HTTP 503)
        self.frames_sent = 0
        self._update_ids: dict[str, int] = {}
        self._trade_ids: dict[str, int] = {}
        self._changed = trio.Event()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    # -- serving -----------------------------------------------------------------------------

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1"))
            self.port = listeners[0].socket.getsockname()[1]
            task_status.started(self)

    async def _handle(self, stream: trio.SocketStream) -> None:
        raw = _PausableStream(stream)
        async with trio.open_nursery() as nursery:
            request = await wrap_server_stream(nursery, raw)
            self.requested_paths.append(request.path)
            parts = urlsplit(request.path)
            streams = parse_qs(parts.query).get("streams", [""])[0].split("/")
            if parts.path != "/stream" or not all(streams):
                self.rejected_count += 1
                await request.reject(404, body=b'{"code":-1,"msg":"Invalid request"}')
                nursery.cancel_scope.cancel()
                return
            if self.reject_next > 0:
                self.reject_next -= 1
                self.rejected_count += 1
                await request.reject(503, body=b"try again later")
                nursery.cancel_scope.cancel()
                return
            ws = await request.accept()
            client = ClientConnection(ws, streams, raw)
            self.connections.append(client)
            self.connection_count += 1
            self._notify()
            try:
                while True:
                    await ws.get_message()          # clients send nothing we act on
            except ConnectionClosed:
                pass
            finally:
                # The reader task (in this nursery) finishes the close handshake and ends by itself.
                self.connections.remove(client)
                client.closed.set()
                self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for_connections(self, total: int) -> None:
        """Until ``total`` connections have been accepted (ever) and one is open."""
        while self.connection_count < total or not self.connections:
            await self._changed.wait()

    async def wait_for_disconnect(self) -> None:
        """Until no connection is open."""
        while self.connections:
            await self._changed.wait()

    # -- sending -----------------------------------------------------------------------------

    async def send_frame(self, stream: str, data: Any) -> int:
        """Send ``{"stream", "data"}`` to every open, unfrozen client subscribed to ``stream``."""
        return await self._broadcast(json.dumps({"stream": stream, "data": data}), stream)

    async def send_raw(self, text: str | bytes) -> int:
        """Send any frame (garbage included) to every open, unfrozen client."""
        return await self._broadcast(text, None)

    async def _broadcast(self, frame: str | bytes, stream: Optional[str]) -> int:
        sent = 0
        for client in list(self.connections):
            if client.frozen or (stream is not None and stream not in client.streams):
                continue
            try:
                await client.ws.send_message(frame)
                sent += 1
            except ConnectionClosed:
                pass
        self.frames_sent += sent
        return sent

    def next_update_id(self, symbol: str) -> int:
        self._update_ids[symbol] = self._update_ids.get(symbol, 400_900_000) + 7
        return self._update_ids[symbol]

    async def book_ticker(self, symbol: str, bid: str, ask: str, *, update_id: Optional[int] = None,
                          bid_qty: str = "1.00000000", ask_qty: str = "1.00000000") -> int:
        """A spot bookTicker; ``update_id`` defaults to the next increasing ``u`` of the symbol."""
        u = self.next_update_id(symbol) if update_id is None else update_id
        data = {"u": u, "s": symbol, "b": bid, "B": bid_qty, "a": ask, "A": ask_qty}
        return await self.send_frame(f"{symbol.lower()}@bookTicker", data)

    async def agg_trade(self, symbol: str, price: str, *, qty: str = "0.01000000",
                        event_time_ms: int = 1_718_064_000_000) -> int:
        trade_id = self._trade_ids[symbol] = self._trade_ids.get(symbol, 100) + 1
        data = {"e": "aggTrade", "E": event_time_ms, "s": symbol, "a": trade_id, "p": price, "q": qty,
                "f": trade_id, "l": trade_id, "T": event_time_ms, "m": False, "M": True}
        return await self.send_frame(f"{symbol.lower()}@aggTrade", data)

    async def start_ticking(self, nursery: trio.Nursery, prices: dict[str, int], *,
                            interval_s: float = 0.01, decimals: int = 2) -> None:
        """Stream bookTickers for each symbol forever, walking the bid (in ticks) up by one each time."""
        async def tick() -> None:
            while True:
                for symbol in prices:
                    prices[symbol] += 1
                    bid = prices[symbol]
                    await self.book_ticker(symbol, _decimal(bid, decimals), _decimal(bid + 1, decimals))
                await trio.sleep(interval_s)
        nursery.start_soon(tick)

    # -- misbehaving -------------------------------------------------------------------------

    async def close_all(self, code: int = 1001, reason: str = "going away") -> None:
        """A clean WebSocket close, like Binance's 24-hour disconnect."""
        for client in list(self.connections):
            await client.ws.aclose(code, reason)

    async def drop_all(self) -> None:
        """An abrupt TCP drop: no close frame."""
        for client in list(self.connections):
            await client.raw.aclose()

    def freeze_all(self) -> None:
        """Stop reading (no pongs) and sending to the open clients, keeping the TCP connection up."""
        for client in self.connections:
            client.frozen = True
            client.raw.frozen = True


def _decimal(ticks: int, decimals: int) -> str:
    text = str(ticks).rjust(decimals + 1, "0")
    return f"{text[:-decimals]}.{text[-decimals:]}000000" if decimals else f"{text}.00000000"
