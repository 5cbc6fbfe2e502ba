-- Security events (codes sent, verifications, sign-ins, lockouts, sign-outs), with masked
-- identifiers only: never a code or a token. `user_id` is set when the account is known, so a
-- person can see their own events on /user. `id` follows insertion order (the janitor deletes
-- the oldest first, past the retention period).
CREATE TABLE audit_events (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    user_id TEXT,
    event TEXT NOT NULL,
    outcome TEXT NOT NULL,
    identifier TEXT,
    flow_id TEXT,
    ip TEXT,
    user_agent TEXT
);
CREATE INDEX audit_events_user ON audit_events (user_id, at);
