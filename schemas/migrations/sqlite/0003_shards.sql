-- exness-actors embedded store (SQLite), migration 0003: one persister watermark per engine shard
-- (mirrors schemas/migrations/postgres/0004_shards.sql; embedded mode has one shard, 0).
CREATE TABLE persister_shards (
    shard     INTEGER PRIMARY KEY CHECK (shard >= 0),
    last_seq  INTEGER NOT NULL CHECK (last_seq >= 0)
);
INSERT INTO persister_shards (shard, last_seq) SELECT 0, last_seq FROM persister_state;
DROP TABLE persister_state;
