-- Sessions that ended, for a little while: every instance keeps a cache of live sessions (the
-- session-token verify endpoint) and reads this log twice a second to drop ended ones from it,
-- so a sign-out on one instance is seen by the others within a second. Kept for a day.
CREATE TABLE session_revocations (
    session_id TEXT NOT NULL,
    revoked_at BIGINT NOT NULL
);
CREATE INDEX session_revocations_at ON session_revocations (revoked_at);
