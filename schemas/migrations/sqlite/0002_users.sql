-- exness-actors embedded store (SQLite), migration 0002: users and refresh tokens (the gateway).
--
-- Applied like 0001 (one transaction with its schema_migrations row). Times in ns since the epoch.

-- One row per trader. The trading account has the same id (account_id = user_id); account_ready
-- turns 1 once the engine has confirmed the account (AccountCreated, or ACCOUNT_EXISTS on a
-- retry), so a sign-in only talks to the engine for a user whose sign-up could not finish.
CREATE TABLE users (
    user_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    email          TEXT    NOT NULL UNIQUE,   -- normalised: trimmed, lower-case
    password_hash  TEXT    NOT NULL,          -- argon2id, PHC string
    account_id     INTEGER NOT NULL,
    account_ready  INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL
);

-- Refresh tokens, stored as SHA-256 digests of the opaque token (the token itself is never kept).
-- A family is every token descended from one sign-in: rotating spends the token and issues its
-- child; presenting a spent token again revokes the whole family (token theft detection).
CREATE TABLE refresh_tokens (
    token_hash   BLOB    PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users (user_id),
    family_id    TEXT    NOT NULL,
    parent_hash  BLOB,                        -- NULL for the token issued at sign-in
    issued_at    INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    spent_at     INTEGER,                     -- set when rotated
    revoked_at   INTEGER                      -- set when its family was revoked
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens (expires_at);
