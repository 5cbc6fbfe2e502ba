-- The janitor deletes expired sessions by expiry time.
CREATE INDEX sessions_expires ON sessions (expires_at);
