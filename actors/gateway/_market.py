"""Public market data: instruments, quotes and candles (no authentication).

Quotes are the marked-up prices the engine trades on, read through the engine (so only durable
state is shown). A known symbol with no quote yet answers 200 with ``bid``, ``ask`` and ``ts``
null — the list keeps one entry per instrument and a client can tell "no price yet" from
"no such symbol" (404 UNKNOWN_SYMBOL).

Candles come from the candles actor (:meth:`actors.history.candles.CandlesHandle.read`): the stored ones
merged with the not-yet-stored and the live (still open) one, which is last when in range.
"""

from __future__ import annotations

from typing import Any, Optional

from quart import Response, request

from actors.wire import codec as edge
from actors.wire.codec import EdgeError
from actors.wire import views as views
from actors.gateway._common import API, Gateway, doc, json_response
from actors.gateway._params import QueryParams
from actors.gateway._schemas import CandlePage, CandlesQuery, InstrumentList, Quote, QuoteList
from actors.store.base import decode_cursor, encode_cursor
from exness_actors.candles import INTERVAL_NAMES

__all__ = ["register"]

DEFAULT_CANDLES = 500
MAX_CANDLES = 1000


def register(app: Any, gw: Gateway) -> None:
    @app.get(f"{API}/instruments")
    @doc(response=InstrumentList, auth=False, errors=(400,), tag="market")
    async def list_instruments() -> Response:
        """Tradable symbols with their decimals, maximum leverage, spread and minimum size."""
        QueryParams(request.args, ())
        # rendered per request: an operator's instrument change (issue 13) shows at once
        return json_response({"instruments": [edge.instrument_json(gw.instruments[symbol]) for symbol in gw.symbols]})

    @app.get(f"{API}/quotes")
    @doc(response=QuoteList, auth=False, errors=(400, 503), tag="market")
    async def list_quotes() -> Response:
        """The current bid and ask of every symbol (null until its first quote)."""
        QueryParams(request.args, ())
        return json_response({"quotes": await gw.query(views.quotes, gw.symbols)})

    @app.get(f"{API}/quotes/<symbol>")
    @doc(response=Quote, auth=False, errors=(400, 404, 503), tag="market")
    async def get_quote(symbol: str) -> Response:
        """The current bid and ask of one symbol (null until its first quote); unknown symbol: 404."""
        QueryParams(request.args, ())
        instrument = gw.instruments.get(symbol.strip().upper())
        if instrument is None:
            raise EdgeError(404, "UNKNOWN_SYMBOL", f"unknown symbol {symbol[:32]!r}",
                            {**edge.not_found_details("symbol", symbol[:32]), "known": list(gw.symbols)})
        quotes = await gw.query(views.quotes, (instrument.symbol,))
        return json_response(quotes[0])

    @app.get(f"{API}/candles")
    @doc(response=CandlePage, query=CandlesQuery, auth=False, errors=(400, 503), tag="market")
    async def list_candles() -> Response:
        """OHLC candles of the bid with tick volume, oldest first; the last may be the open one.

        interval: 1m (default), 5m, 15m, 30m, 1h, 4h, 1d, 1w. start/end (ms) bound the candle
        open time (start inclusive, end exclusive); limit keeps the most recent N (default 500).
        next_cursor, when not null, pages back to the older candles."""
        params = QueryParams(request.args, ("symbol", "interval", "start", "end", "cursor", "limit"))
        instrument = params.symbol(gw.instruments, required=True)
        assert instrument is not None
        interval = params.choice("interval", INTERVAL_NAMES, "1m")
        assert interval is not None
        start, end = params.time_range()
        cursor = params.cursor()
        if cursor is not None:
            (before,) = decode_cursor(cursor, "candles", 1)
            end = before if end is None else min(end, before)
        limit = params.integer("limit", 1, MAX_CANDLES, DEFAULT_CANDLES)
        if gw.candles is None:
            raise EdgeError(503, "CANDLES_UNAVAILABLE", "candles are not being served right now", {})
        candles = await gw.candles.read(instrument.symbol, interval, start, end, limit)
        return json_response({"candles": [edge.candle_json(candle, instrument) for candle in candles],
                              "next_cursor": _older_candles_cursor(candles, start, limit)})


def _older_candles_cursor(candles: list, start: Optional[int], limit: Optional[int]) -> Optional[str]:
    """The cursor of the page before a full one (None when older candles cannot exist)."""
    if not candles or len(candles) != limit:
        return None
    oldest = candles[0].open_time
    if start is not None and oldest <= start:
        return None
    return encode_cursor("candles", oldest)
