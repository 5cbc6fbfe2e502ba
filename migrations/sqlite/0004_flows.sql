-- Sign-up and sign-in attempts. Referenced by an opaque id; all state lives here.
CREATE TABLE flows (
    id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    identifier_kind TEXT NOT NULL,
    identifier_value TEXT NOT NULL,
    identifier_canonical TEXT NOT NULL,
    user_id TEXT REFERENCES users(id) ON DELETE CASCADE,
    redirect_url TEXT,
    browser_binding TEXT,
    created_at BIGINT NOT NULL,
    last_active_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    completed_at BIGINT,
    session_id TEXT
);
CREATE INDEX flows_expires ON flows (expires_at);
