-- Keys that sign session tokens (Ed25519). The private key is sealed under a key derived from
-- the server secret; the public JWK is what /.well-known/jwks.json serves. The newest key that is
-- not retired signs; every key not retired verifies.
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    alg TEXT NOT NULL,
    private_sealed BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER
);
