-- exness-actors PostgreSQL store, migration 0003: candles_1m as a TimescaleDB hypertable.
--
-- Guarded: on a server without TimescaleDB this migration changes nothing (it is still recorded
-- as applied), and candles_1m stays the plain table of 0001 with its (symbol, open_time) primary
-- key. With the extension, it becomes a hypertable:
--
--   * time column open_time, integer ns (see 0001): chunks of one day (86_400 * 10^9 ns), and an
--     integer_now function (candles_now_ns) that gives the policies "now" in the same unit;
--   * compression of chunks older than 7 days, segmented by symbol and ordered by open_time
--     (the candles actor only rewrites the newest minutes, and upserts into compressed chunks
--     work on TimescaleDB >= 2.11 anyway);
--   * retention: chunks older than 5 years (1826 days) are dropped. Higher intervals are folded
--     from the 1m rows when read, so this bounds every interval's history. Change it with
--     remove_retention_policy / add_retention_policy (docs/storage.md).
--
-- "Available" means the extension is installed in this database already, or its files are
-- installed on the server AND it is in shared_preload_libraries (CREATE EXTENSION fails without
-- that). A server that gets TimescaleDB later is converted by hand (docs/storage.md).
DO $migration$
DECLARE
    installed boolean := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb');
    available boolean := EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
                         AND coalesce(current_setting('shared_preload_libraries', true), '')
                             LIKE '%timescaledb%';
    api text;   -- the schema holding the extension's functions, quoted
BEGIN
    IF NOT (installed OR available) THEN
        RAISE NOTICE 'timescaledb is not available: candles_1m stays a plain indexed table';
        RETURN;
    END IF;
    IF NOT installed THEN
        -- public, not the store's schema: the extension is per database, shared by every schema.
        CREATE EXTENSION IF NOT EXISTS timescaledb SCHEMA public;
    END IF;
    SELECT quote_ident(n.nspname) INTO api
        FROM pg_extension AS e JOIN pg_namespace AS n ON n.oid = e.extnamespace
        WHERE e.extname = 'timescaledb';
    -- Dynamic SQL from here on: these names only exist once the extension does, and the store's
    -- search_path holds its own schema only, so the extension's functions are qualified.
    EXECUTE $sql$
        CREATE OR REPLACE FUNCTION candles_now_ns() RETURNS BIGINT
        LANGUAGE SQL STABLE AS 'SELECT (extract(epoch FROM now()) * 1000000000)::bigint'
    $sql$;
    EXECUTE format($sql$
        SELECT %s.create_hypertable('candles_1m', 'open_time',
                                    chunk_time_interval => 86400000000000::bigint,
                                    migrate_data => true, if_not_exists => true)
    $sql$, api);
    EXECUTE format($sql$
        SELECT %s.set_integer_now_func('candles_1m', 'candles_now_ns', replace_if_exists => true)
    $sql$, api);
    EXECUTE $sql$
        ALTER TABLE candles_1m SET (timescaledb.compress,
                                    timescaledb.compress_segmentby = 'symbol',
                                    timescaledb.compress_orderby = 'open_time')
    $sql$;
    EXECUTE format($sql$
        SELECT %s.add_compression_policy('candles_1m', compress_after => 604800000000000::bigint,
                                         if_not_exists => true)
    $sql$, api);
    EXECUTE format($sql$
        SELECT %s.add_retention_policy('candles_1m', drop_after => 157766400000000000::bigint,
                                       if_not_exists => true)
    $sql$, api);
    RAISE NOTICE 'candles_1m is a TimescaleDB hypertable (1 day chunks, compression after 7 days, retention 1826 days)';
END
$migration$;
