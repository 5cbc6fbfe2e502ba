-- Email addresses (and later phone numbers) of accounts. `canonical` is the comparison key;
-- the unique index makes an identifier belong to at most one account.
CREATE TABLE identifiers (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    canonical TEXT NOT NULL,
    is_primary BIGINT NOT NULL DEFAULT 0,
    verified_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX identifiers_kind_canonical ON identifiers (kind, canonical);
CREATE INDEX identifiers_user ON identifiers (user_id);
