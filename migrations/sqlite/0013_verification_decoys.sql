-- Enumeration protection: a verification for an identifier that may not be used (sign-in with
-- no account, sign-up with a taken one) looks and behaves like any other, but its code can
-- never match and its message, if any, is a notice to the identifier's owner.
ALTER TABLE verifications ADD COLUMN decoy BIGINT NOT NULL DEFAULT 0;
