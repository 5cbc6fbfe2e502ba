-- A sign-up can verify several identifiers (an email address and a phone number), one code at a
-- time in `position` order; `canonical` is the comparison key of the identifier being verified.
-- Status 'waiting' = its code is sent once the identifiers before it are verified.
ALTER TABLE verifications ADD COLUMN canonical TEXT;
ALTER TABLE verifications ADD COLUMN position BIGINT NOT NULL DEFAULT 0;
