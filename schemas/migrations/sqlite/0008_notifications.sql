-- exness-actors embedded store (SQLite), migration 0008: the notifications worker (issue 13).
-- Mirrors schemas/migrations/postgres/0008_notifications.sql. Times in ns since the epoch.

-- One row per notification: derived from the engine's durable events, id "{shard}-{seq}-{index}"
-- (the same after a re-derivation, so a crash never makes a second one). data is JSON text.
CREATE TABLE notifications (
    id          TEXT    PRIMARY KEY,
    account_id  INTEGER NOT NULL,
    shard       INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    idx         INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    title       TEXT    NOT NULL,
    data        TEXT    NOT NULL,
    read_at     INTEGER
);
CREATE INDEX notifications_by_account ON notifications (account_id, seq DESC, idx DESC);
CREATE INDEX notifications_unread ON notifications (account_id) WHERE read_at IS NULL;

-- What is still to be delivered, per notification and channel (ws, email, webhook): the outbox.
-- A delivered row is deleted; after [notifications] max_attempts failures it stays as 'dead'
-- (the dead-letter list). due_at: when the next attempt may start.
CREATE TABLE notification_deliveries (
    notification_id  TEXT    NOT NULL REFERENCES notifications (id),
    channel          TEXT    NOT NULL CHECK (channel IN ('ws', 'email', 'webhook')),
    shard            INTEGER NOT NULL,
    account_id       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    due_at           INTEGER NOT NULL,
    status           TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'dead')),
    last_error       TEXT    NOT NULL DEFAULT '',
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (notification_id, channel)
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (channel, shard, due_at)
    WHERE status = 'pending';
CREATE INDEX notification_deliveries_dead ON notification_deliveries (account_id, updated_at)
    WHERE status = 'dead';

-- Per-account preferences (no row: the defaults). events and channels: comma-separated names.
CREATE TABLE notification_preferences (
    account_id      INTEGER PRIMARY KEY,
    events          TEXT    NOT NULL,
    channels        TEXT    NOT NULL,
    webhook_url     TEXT,
    webhook_secret  TEXT,
    updated_at      INTEGER NOT NULL
);

-- The notifications worker's watermark per engine shard: every input up to last_seq is derived.
CREATE TABLE notifier_shards (
    shard     INTEGER PRIMARY KEY CHECK (shard >= 0),
    last_seq  INTEGER NOT NULL CHECK (last_seq >= 0)
);
