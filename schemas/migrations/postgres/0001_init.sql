-- exness-actors PostgreSQL store, migration 0001: market data, trade history, ledger.
--
-- Applied by `exness-actors migrate` (and by actors/store_postgres.py at open unless
-- [store] migrate_on_open = false), inside one transaction together with its row in
-- schema_migrations and under a transaction-level advisory lock, so re-running is a no-op and two
-- migrators never race. Mirrors schemas/migrations/sqlite/0001_init.sql table for table.
--
-- Types (see docs/storage.md):
--   * money in cents is NUMERIC (integral values only; the store writes and reads Python ints).
--     The core bounds deposits and margins (MAX_AMOUNT 1e13, MAX_BALANCE 1e15 cents) but not the
--     pnl of a position — qty up to 2^62 units times a price move up to 1e12 ticks — nor, hence,
--     the credit and the free balance after it, nor a position's margin after repeated top-ups:
--     those can pass 2^63, so every cents column takes NUMERIC for one simple rule.
--   * prices (ticks), quantities (units), ids, seqs and times (ns since the epoch) are BIGINT: the
--     core keeps prices and levels <= 1e12, qty <= 2^62 and ids <= 2^63 - 1.
--   * times stay integer ns, exactly as in the protocol (no timestamptz: it holds microseconds,
--     and the protocol, the journal and the SQLite store all speak ns).
--   * symbols, sides, kinds, statuses and reasons are the core's enum values (TEXT).

-- 1m candles of the bid with tick volume; larger intervals are folded from these when served.
-- The primary key serves every candle query: WHERE symbol = $1 AND open_time in a range.
-- Migration 0003 turns this table into a TimescaleDB hypertable when the extension exists.
CREATE TABLE candles_1m (
    symbol      TEXT   NOT NULL,
    open_time   BIGINT NOT NULL,
    open        BIGINT NOT NULL,
    high        BIGINT NOT NULL,
    low         BIGINT NOT NULL,
    close       BIGINT NOT NULL,
    volume      BIGINT NOT NULL,
    PRIMARY KEY (symbol, open_time)
);

-- Every position ever opened (PositionOpened), as it was opened. Closed rows take their
-- leverage and opened_at from here (primary-key lookups).
CREATE TABLE positions (
    position_id       BIGINT  PRIMARY KEY,
    account_id        BIGINT  NOT NULL,
    order_id          BIGINT  NOT NULL,
    symbol            TEXT    NOT NULL,
    side              TEXT    NOT NULL,
    qty               BIGINT  NOT NULL,
    open_price        BIGINT  NOT NULL,
    margin            NUMERIC NOT NULL,
    leverage          INTEGER NOT NULL,
    liquidation_price BIGINT  NOT NULL,
    take_profit       BIGINT,
    stop_loss         BIGINT,
    trailing_stop     BIGINT,
    opened_at         BIGINT  NOT NULL,
    seq               BIGINT  NOT NULL
);
CREATE INDEX positions_by_account ON positions (account_id, position_id);

-- Trade history: one row per PositionClosed; a partial close is its own row.
CREATE TABLE closed_positions (
    position_id   BIGINT  NOT NULL,
    seq           BIGINT  NOT NULL,
    account_id    BIGINT  NOT NULL,
    symbol        TEXT    NOT NULL,
    side          TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    qty           BIGINT  NOT NULL,
    open_price    BIGINT  NOT NULL,
    close_price   BIGINT  NOT NULL,
    margin        NUMERIC NOT NULL,
    pnl           NUMERIC NOT NULL,
    credit        NUMERIC NOT NULL,
    remaining_qty BIGINT  NOT NULL,
    leverage      INTEGER,          -- NULL when the open is older than the persisted history
    opened_at     BIGINT,           -- likewise
    closed_at     BIGINT  NOT NULL,
    PRIMARY KEY (position_id, seq)
);
-- Pages are newest first: ORDER BY seq DESC, position_id DESC, filtered by account and
-- optionally by symbol, reason and a closed_at range; the cursor is the row comparison
-- (seq, position_id) < ($a, $b). B-trees scan backwards, so ascending keys serve the DESC order
-- and the row comparison becomes an index condition (checked with EXPLAIN in the tests).
CREATE INDEX closed_positions_by_account ON closed_positions (account_id, seq, position_id);
CREATE INDEX closed_positions_by_symbol ON closed_positions (account_id, symbol, seq, position_id);
CREATE INDEX closed_positions_by_reason ON closed_positions (account_id, reason, seq, position_id);
CREATE INDEX closed_positions_by_time ON closed_positions (account_id, closed_at);

-- Order history, upserted as the order's events arrive.
CREATE TABLE orders (
    order_id        BIGINT  PRIMARY KEY,
    account_id      BIGINT  NOT NULL,
    symbol          TEXT    NOT NULL,
    side            TEXT    NOT NULL,
    type            TEXT    NOT NULL,
    status          TEXT    NOT NULL,   -- pending | filled | cancelled | expired
    price           BIGINT,             -- the entry price (pending) or fill price (market)
    margin          NUMERIC NOT NULL,
    leverage        INTEGER NOT NULL,
    qty             BIGINT  NOT NULL,
    take_profit     BIGINT,
    stop_loss       BIGINT,
    trailing_stop   BIGINT,
    expires_at      BIGINT,
    client_order_id TEXT    NOT NULL,
    position_id     BIGINT,             -- the position it opened
    fill_price      BIGINT,
    cancel_reason   TEXT,               -- user | expired | size_too_small
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    created_seq     BIGINT  NOT NULL,
    seq             BIGINT  NOT NULL    -- the seq of the last event that changed the row
);
-- Pages are newest first: ORDER BY order_id DESC (ids are allocated in sequence order), by
-- account and optionally by status and/or symbol; the cursor is order_id < $n.
CREATE INDEX orders_by_account ON orders (account_id, order_id);
CREATE INDEX orders_by_status ON orders (account_id, status, order_id);
CREATE INDEX orders_by_symbol ON orders (account_id, symbol, order_id);

-- The ledger: one row per BalanceChanged; idx = the event's index in its input's events.
-- The primary key serves the pages: WHERE account_id = $1 AND (seq, idx) < (...) ORDER BY
-- seq DESC, idx DESC.
CREATE TABLE ledger (
    account_id    BIGINT  NOT NULL,
    seq           BIGINT  NOT NULL,
    idx           INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    free_delta    NUMERIC NOT NULL,
    locked_delta  NUMERIC NOT NULL,
    free          NUMERIC NOT NULL,
    locked        NUMERIC NOT NULL,
    ref           TEXT    NOT NULL,
    ts            BIGINT  NOT NULL,
    PRIMARY KEY (account_id, seq, idx)
);

-- The last engine seq whose events are all in the tables above (one row). apply_batch locks it
-- (SELECT ... FOR UPDATE), so two writers of one database apply batches one after the other.
CREATE TABLE persister_state (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq  BIGINT  NOT NULL
);
INSERT INTO persister_state (id, last_seq) VALUES (1, 0);
