-- The browser and system of a session's user agent, parsed once at sign-in (the profile lists
-- devices without parsing every user agent on every view).
ALTER TABLE sessions ADD COLUMN browser TEXT;
ALTER TABLE sessions ADD COLUMN os TEXT;
