-- exness-actors PostgreSQL store, migration 0013 (issue 13): the broker's operators, their
-- refresh tokens, and the audit log of their actions. Mirrors
-- schemas/migrations/sqlite/0013_operators.sql. Times in ns since the epoch.
--
-- (Numbered after the issue rather than the previous file, so branches adding migrations at the
-- same time do not take one version twice; files apply in version order, and nothing here
-- depends on a migration numbered between 0004 and 0013.)

-- The broker's staff, apart from the traders (users): another table, another kind of token.
-- Created by `exness-actors operator create EMAIL --role R`; never deleted, only disabled, so the
-- audit log's operator ids always name someone.
CREATE TABLE operators (
    operator_id    BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email          TEXT    NOT NULL UNIQUE,   -- normalised: trimmed, lower-case
    password_hash  TEXT    NOT NULL,          -- argon2id, PHC string
    role           TEXT    NOT NULL CHECK (role IN ('viewer', 'risk', 'admin')),
    disabled       BOOLEAN NOT NULL DEFAULT false,
    created_at     BIGINT  NOT NULL
);

-- Operators' refresh tokens: as refresh_tokens (SHA-256 digests, families, reuse revokes the
-- family), owned by an operator.
CREATE TABLE operator_refresh_tokens (
    token_hash   BYTEA   PRIMARY KEY,
    operator_id  BIGINT  NOT NULL REFERENCES operators (operator_id),
    family_id    TEXT    NOT NULL,
    parent_hash  BYTEA,
    issued_at    BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL,
    spent_at     BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX operator_refresh_tokens_by_family ON operator_refresh_tokens (family_id);
CREATE INDEX operator_refresh_tokens_by_operator ON operator_refresh_tokens (operator_id);

-- One row per OperatorAction event (the engine's journal is the audit trail; this is its index
-- for GET /api/v1/admin/audit), written by the persister in the batch's transaction. Key: the
-- engine shard, the input's seq and the event's index among its events. Pages are newest first by
-- (ts, shard, seq, idx), served backwards by the indexes below; the filters are the operator, the
-- action and a ts range.
CREATE TABLE audit_log (
    shard        INTEGER NOT NULL,
    seq          BIGINT  NOT NULL,
    idx          INTEGER NOT NULL,
    operator_id  BIGINT  NOT NULL,
    action       TEXT    NOT NULL,
    account_id   BIGINT,                      -- the account acted on, NULL for symbol actions
    target       TEXT    NOT NULL,            -- the symbol, account or position acted on
    reason       TEXT    NOT NULL,
    detail       TEXT    NOT NULL,            -- compact JSON (the changes, the amount)
    ts           BIGINT  NOT NULL,
    PRIMARY KEY (shard, seq, idx)
);
CREATE INDEX audit_log_by_time ON audit_log (ts, shard, seq, idx);
CREATE INDEX audit_log_by_operator ON audit_log (operator_id, ts, shard, seq, idx);
CREATE INDEX audit_log_by_action ON audit_log (action, ts, shard, seq, idx);
