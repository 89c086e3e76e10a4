-- exness-actors PostgreSQL store, migration 0004: one persister watermark per engine shard.
--
-- In split mode with [bus] shards = N > 1 every shard numbers its inputs from 1 and its persister
-- writes this same database, so the single-row persister_state cannot say what is stored.
-- persister_shards keeps the last stored seq of each shard; a shard's row is created by its first
-- batch (apply_batch: INSERT ... ON CONFLICT DO NOTHING, then SELECT ... FOR UPDATE), so writers
-- of different shards never wait for each other and two writers of one shard go one at a time.
-- The rows of different shards cannot collide: shards hold disjoint accounts, and shard k
-- allocates order and position ids from k * 10^12 + 1 (CoreConfig.id_base).
CREATE TABLE persister_shards (
    shard     INTEGER PRIMARY KEY CHECK (shard >= 0),
    last_seq  BIGINT  NOT NULL CHECK (last_seq >= 0)
);
INSERT INTO persister_shards (shard, last_seq) SELECT 0, last_seq FROM persister_state;
DROP TABLE persister_state;
