-- A person's name (optional, editable on /user and through PATCH /v1/me): NFC, trimmed, one
-- line; NULL when not given.
ALTER TABLE users ADD COLUMN first_name TEXT;
ALTER TABLE users ADD COLUMN last_name TEXT;
