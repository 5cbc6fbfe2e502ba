-- Native apps (the JSON API with a bearer client token, no cookies): the session belongs to the
-- client whose token hashes to this value. NULL for browser sessions (found by their cookie).
ALTER TABLE sessions ADD COLUMN client_binding TEXT;
CREATE INDEX sessions_client_binding ON sessions (client_binding);
