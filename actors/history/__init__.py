"""The engine's event batches written as history: the ledger, orders and positions
(:mod:`.persister`) and 1-minute candles with their live updates (:mod:`.candles`)."""


from actors.history.persister import Persister, PersisterStatistics
from actors.history.candles import CandlesHandle, CandlesStatistics

__all__ = ["Persister", "PersisterStatistics", "CandlesHandle", "CandlesStatistics"]
