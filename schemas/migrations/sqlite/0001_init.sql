-- exness-actors embedded store (SQLite), migration 0001: market data, trade history, ledger.
--
-- Applied by actors/store_sqlite.py at open (and by `exness-actors migrate`), inside one
-- transaction together with its row in schema_migrations, so re-running is a no-op.
-- Units: money in cents, prices in ticks, quantities in units, times in ns since the epoch
-- (all INTEGER); symbols, sides, kinds, statuses and reasons as the core's enum values (TEXT).
-- The PostgreSQL migrations (schemas/migrations/postgres) mirror these tables and indexes.
-- Users and refresh tokens come in a later migration (0002, the gateway issue).

-- 1m candles of the bid with tick volume; larger intervals are folded from these when served.
CREATE TABLE candles_1m (
    symbol      TEXT    NOT NULL,
    open_time   INTEGER NOT NULL,
    open        INTEGER NOT NULL,
    high        INTEGER NOT NULL,
    low         INTEGER NOT NULL,
    close       INTEGER NOT NULL,
    volume      INTEGER NOT NULL,
    PRIMARY KEY (symbol, open_time)
) WITHOUT ROWID;

-- Every position ever opened (PositionOpened), as it was opened. Closed rows take their
-- leverage and opened_at from here.
CREATE TABLE positions (
    position_id       INTEGER PRIMARY KEY,
    account_id        INTEGER NOT NULL,
    order_id          INTEGER NOT NULL,
    symbol            TEXT    NOT NULL,
    side              TEXT    NOT NULL,
    qty               INTEGER NOT NULL,
    open_price        INTEGER NOT NULL,
    margin            INTEGER NOT NULL,
    leverage          INTEGER NOT NULL,
    liquidation_price INTEGER NOT NULL,
    take_profit       INTEGER,
    stop_loss         INTEGER,
    trailing_stop     INTEGER,
    opened_at         INTEGER NOT NULL,
    seq               INTEGER NOT NULL
);
CREATE INDEX positions_by_account ON positions (account_id, position_id);

-- Trade history: one row per PositionClosed; a partial close is its own row.
CREATE TABLE closed_positions (
    position_id   INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    account_id    INTEGER NOT NULL,
    symbol        TEXT    NOT NULL,
    side          TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    qty           INTEGER NOT NULL,
    open_price    INTEGER NOT NULL,
    close_price   INTEGER NOT NULL,
    margin        INTEGER NOT NULL,
    pnl           INTEGER NOT NULL,
    credit        INTEGER NOT NULL,
    remaining_qty INTEGER NOT NULL,
    leverage      INTEGER,          -- NULL when the open is older than the persisted history
    opened_at     INTEGER,          -- likewise
    closed_at     INTEGER NOT NULL,
    PRIMARY KEY (position_id, seq)
);
-- Pages are newest first: ORDER BY seq DESC, position_id DESC, filtered by account and
-- optionally by symbol, reason and a closed_at range.
CREATE INDEX closed_positions_by_account ON closed_positions (account_id, seq DESC, position_id DESC);
CREATE INDEX closed_positions_by_symbol ON closed_positions (account_id, symbol, seq DESC, position_id DESC);
CREATE INDEX closed_positions_by_reason ON closed_positions (account_id, reason, seq DESC, position_id DESC);
CREATE INDEX closed_positions_by_time ON closed_positions (account_id, closed_at);

-- Order history, upserted as the order's events arrive.
CREATE TABLE orders (
    order_id        INTEGER PRIMARY KEY,
    account_id      INTEGER NOT NULL,
    symbol          TEXT    NOT NULL,
    side            TEXT    NOT NULL,
    type            TEXT    NOT NULL,
    status          TEXT    NOT NULL,   -- pending | filled | cancelled | expired
    price           INTEGER,            -- the entry price (pending) or fill price (market)
    margin          INTEGER NOT NULL,
    leverage        INTEGER NOT NULL,
    qty             INTEGER NOT NULL,
    take_profit     INTEGER,
    stop_loss       INTEGER,
    trailing_stop   INTEGER,
    expires_at      INTEGER,
    client_order_id TEXT    NOT NULL,
    position_id     INTEGER,            -- the position it opened
    fill_price      INTEGER,
    cancel_reason   TEXT,               -- user | expired | size_too_small
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    created_seq     INTEGER NOT NULL,
    seq             INTEGER NOT NULL    -- the seq of the last event that changed the row
);
-- Pages are newest first: ORDER BY order_id DESC (ids are allocated in sequence order).
CREATE INDEX orders_by_account ON orders (account_id, order_id DESC);
CREATE INDEX orders_by_status ON orders (account_id, status, order_id DESC);
CREATE INDEX orders_by_symbol ON orders (account_id, symbol, order_id DESC);

-- The ledger: one row per BalanceChanged; idx = the event's index in its input's events.
CREATE TABLE ledger (
    account_id    INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    idx           INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    free_delta    INTEGER NOT NULL,
    locked_delta  INTEGER NOT NULL,
    free          INTEGER NOT NULL,
    locked        INTEGER NOT NULL,
    ref           TEXT    NOT NULL,
    ts            INTEGER NOT NULL,
    PRIMARY KEY (account_id, seq, idx)
) WITHOUT ROWID;

-- The last engine seq whose events are all in the tables above (one row).
CREATE TABLE persister_state (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq  INTEGER NOT NULL
);
INSERT INTO persister_state (id, last_seq) VALUES (1, 0);
