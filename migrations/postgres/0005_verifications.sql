-- The current code of one identifier within a flow. Only an HMAC of the code is kept; a resend
-- overwrites it (so the previous code dies) and resets the tries.
CREATE TABLE verifications (
    id TEXT PRIMARY KEY NOT NULL,
    flow_id TEXT NOT NULL REFERENCES flows(id) ON DELETE CASCADE,
    channel TEXT NOT NULL,
    destination TEXT NOT NULL,
    identifier_id TEXT,
    code_hash TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    sent_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    status TEXT NOT NULL
);
CREATE UNIQUE INDEX verifications_flow_channel ON verifications (flow_id, channel);
