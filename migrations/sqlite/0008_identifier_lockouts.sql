-- Consecutive wrong codes per identifier, across flows and codes: a resend or a new flow never
-- resets them; a success does. Reaching the limit locks the identifier until `locked_until`.
CREATE TABLE identifier_lockouts (
    identifier TEXT PRIMARY KEY NOT NULL,
    failures BIGINT NOT NULL,
    locked_until BIGINT,
    updated_at BIGINT NOT NULL
);
