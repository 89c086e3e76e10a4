"""The WebSocket streams (:mod:`.server`): market and account channels, the order lane.

Private helpers: ``_channels`` (subscriptions and replay buffers), ``_format`` (event → JSON),
``_orders`` (the order lane's commands and outcomes), ``_candles`` (larger candle intervals).
"""


from actors.ws.server import run, WsServer, WsOptions
from actors.ws._candles import IntervalFolder

__all__ = ["run", "WsServer", "WsOptions", "IntervalFolder"]
