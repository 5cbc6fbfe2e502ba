-- The name typed on sign-up (`identifiers.name.enabled`), kept with the flow until its account
-- is created.
ALTER TABLE flows ADD COLUMN first_name TEXT;
ALTER TABLE flows ADD COLUMN last_name TEXT;
