-- Escalating locks and a stop: `locks` counts the locks of a key since its last success (each
-- lasts twice the one before); `consecutive` counts its failures since the last success, and a
-- lock running out does not reset it (a key stops at `lockout.stop_after_failures`). Counts
-- from before this change carry over as consecutive failures.
ALTER TABLE identifier_lockouts ADD COLUMN locks BIGINT NOT NULL DEFAULT 0;
ALTER TABLE identifier_lockouts ADD COLUMN consecutive BIGINT NOT NULL DEFAULT 0;
UPDATE identifier_lockouts SET consecutive = failures, locks = CASE WHEN locked_until IS NULL THEN 0 ELSE 1 END;
