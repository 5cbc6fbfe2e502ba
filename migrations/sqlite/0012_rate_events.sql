-- Sliding-window rate limits shared by every instance: one row per allowed event of a bucket
-- (e.g. `send10m:email:jane@example.com`, `ipflow:203.0.113.7`, `sms:all`). A request is allowed
-- while fewer than the limit fall inside the window; refused requests write nothing, so a flood
-- cannot grow the table. The janitor deletes rows older than the longest window.
CREATE TABLE rate_events (
    bucket TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX rate_events_bucket_at ON rate_events (bucket, at);
CREATE INDEX rate_events_at ON rate_events (at);
