-- Sliding-window rate limits shared by every instance: one row per allowed event of a bucket
-- (e.g. `send:email:jane@example.com`, `ipflow:203.0.113.7`, `sms:all`). A request is allowed
-- while fewer than the limit fall inside the window; refused requests write nothing, so a flood
-- cannot grow the table. `id` follows insertion order, which lets the janitor delete old rows
-- oldest first without an index on `at`.
CREATE TABLE rate_events (
    id BIGSERIAL PRIMARY KEY,
    bucket TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX rate_events_bucket_at ON rate_events (bucket, at);
