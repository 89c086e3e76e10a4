-- exness-actors embedded store (SQLite), migration 0016 (issue 16): a user holds several trading
-- accounts (demo and real, of different account types); closed positions carry their fees.
-- Mirrors schemas/migrations/postgres/0016_accounts.sql. Times in ns since the epoch.
--
-- (Numbered after the issue rather than the previous file, so branches adding migrations at the
-- same time do not take one number twice; files apply in name order, and nothing here depends on
-- a migration numbered between 0003 and 0016.)

-- One row per trading account. account_id is the engine's account id: AUTOINCREMENT never hands
-- an id out twice, and the backfill below moves the sequence past every existing account, so a
-- new account can never take an id the engine already holds. account_type names a type of
-- config.toml's [accounts] (the engine pins them); demo accounts get the demo deposit and deposit
-- freely, real ones open empty and are funded by an operator. ready turns 1 once the engine has
-- confirmed the account (AccountOpened, or ACCOUNT_EXISTS on a retry).
CREATE TABLE accounts (
    account_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id       INTEGER NOT NULL REFERENCES users (user_id),
    account_type  TEXT    NOT NULL,
    demo          INTEGER NOT NULL CHECK (demo IN (0, 1)),
    ready         INTEGER NOT NULL DEFAULT 0 CHECK (ready IN (0, 1)),
    created_at    INTEGER NOT NULL
);
CREATE INDEX accounts_by_user ON accounts (user_id, account_id);

-- Every existing user's single account (id = user id): created by the engine's untyped
-- CreateAccount, which is exactly the isolated type, with the demo deposit.
INSERT INTO accounts (account_id, user_id, account_type, demo, ready, created_at)
    SELECT account_id, user_id, 'isolated', 1, account_ready, created_at FROM users;
-- users.account_id stays: the account a sign-in picks when it names none (the first one).
-- Its readiness now lives on the account.
ALTER TABLE users DROP COLUMN account_ready;

-- A refresh token family belongs to one account: a refresh keeps the account the sign-in (or
-- POST /auth/switch) chose. Tokens issued before this migration are the user's first account's.
ALTER TABLE refresh_tokens ADD COLUMN account_id INTEGER;
UPDATE refresh_tokens SET account_id = (SELECT u.account_id FROM users AS u WHERE u.user_id = refresh_tokens.user_id);

-- Fees of the closed part (PositionFees follows its PositionClosed): commission at open and close
-- of the part, and the swaps it accumulated (negative: credited). 0 for isolated accounts and for
-- rows written before this migration.
ALTER TABLE closed_positions ADD COLUMN commission INTEGER NOT NULL DEFAULT 0;
ALTER TABLE closed_positions ADD COLUMN swap INTEGER NOT NULL DEFAULT 0;
