-- exness-actors PostgreSQL store, migration 0002: users and refresh tokens (the gateway).
--
-- Applied like 0001 (one transaction with its schema_migrations row). Times in ns since the
-- epoch. Mirrors schemas/migrations/sqlite/0002_users.sql.

-- One row per trader. The trading account has the same id (account_id = user_id); account_ready
-- turns true once the engine has confirmed the account. The identity's sequence never hands out
-- an id twice (like SQLite's AUTOINCREMENT), so an account id never goes to a second user.
CREATE TABLE users (
    user_id        BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email          TEXT    NOT NULL UNIQUE,   -- normalised: trimmed, lower-case
    password_hash  TEXT    NOT NULL,          -- argon2id, PHC string
    account_id     BIGINT  NOT NULL,
    account_ready  BOOLEAN NOT NULL DEFAULT false,
    created_at     BIGINT  NOT NULL
);

-- Refresh tokens, stored as SHA-256 digests of the opaque token (the token itself is never kept).
-- A family is every token descended from one sign-in: rotating spends the token and issues its
-- child; presenting a spent token again revokes the whole family (token theft detection).
-- Rotation locks the presented token's row (SELECT ... FOR UPDATE), so two concurrent uses of
-- one token are serialised: one rotates, the other sees it spent.
CREATE TABLE refresh_tokens (
    token_hash   BYTEA   PRIMARY KEY,
    user_id      BIGINT  NOT NULL REFERENCES users (user_id),
    family_id    TEXT    NOT NULL,
    parent_hash  BYTEA,                       -- NULL for the token issued at sign-in
    issued_at    BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL,
    spent_at     BIGINT,                      -- set when rotated
    revoked_at   BIGINT                       -- set when its family was revoked
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens (expires_at);
