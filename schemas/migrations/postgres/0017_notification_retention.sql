-- exness-actors PostgreSQL store, migration 0017 (issue 13, retention): the notifications worker purges
-- a shard's notifications older than [notifications] retention_days, oldest first, in bounded
-- batches; this index finds them without scanning the table. Mirrors
-- schemas/migrations/sqlite/0017_notification_retention.sql.
--
-- (Numbered after the last file rather than the issue: 0013 is taken. Nothing here depends on a
-- migration numbered after 0008.)

CREATE INDEX notifications_by_age ON notifications (shard, created_at);
