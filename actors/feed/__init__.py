"""Quotes into the engine: a synthetic random walk, a replayed recording or Binance's streams
(:mod:`.price_feed`)."""


from actors.feed.price_feed import run, FeedStats, FeedSettings

__all__ = ["run", "FeedStats", "FeedSettings"]
