-- When this session last verified a code (its sign-in, or a reverification on /user): actions
-- that could take the account from its owner (removing an identifier, changing the primary one,
-- signing out other devices, deleting the account) need one within `sessions.reverification_secs`.
-- NULL on sessions from before: their creation counts.
ALTER TABLE sessions ADD COLUMN verified_at BIGINT;
-- Flows started on /user (adding an identifier, reverifying) belong to the session that started
-- them; NULL for sign-up and sign-in.
ALTER TABLE flows ADD COLUMN for_session_id TEXT;
-- An identifier being added is addressed by the id it will have once verified (the API's
-- email_addresses/{id}); sign-in verifications name the account's identifier.
CREATE INDEX verifications_identifier ON verifications (identifier_id);
-- A reverification started by an action on /user (sign out other devices, remove an identifier,
-- ...): the action, done once the code is verified, so the person need not ask again.
ALTER TABLE flows ADD COLUMN pending_action TEXT;
