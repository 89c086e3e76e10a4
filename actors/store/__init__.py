"""History and users in a database: the :class:`Store` interface and :func:`open_store`
(:mod:`.base`), SQLite for embedded mode (:mod:`.sqlite`), PostgreSQL for production
(:mod:`.postgres`, imported on demand: it needs asyncpg)."""


from actors.store.base import Store, Page, InvalidCursor, StoreClosed, HistoryCut, UserRecord, DuplicateEmail, open_store

__all__ = ["Store", "Page", "InvalidCursor", "StoreClosed", "HistoryCut", "UserRecord", "DuplicateEmail", "open_store"]
