-- Durable queue of messages to deliver. The payload (which holds the code until it is sent) is
-- sealed with a key derived from the server secret.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY NOT NULL,
    channel TEXT NOT NULL,
    recipient_masked TEXT NOT NULL,
    verification_id TEXT,
    payload BLOB,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    claimed_by TEXT,
    claimed_until BIGINT,
    sent_at BIGINT,
    last_error TEXT
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX outbox_verification ON outbox (verification_id);
CREATE INDEX outbox_created ON outbox (created_at);
