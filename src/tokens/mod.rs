//! Session tokens: short-lived JWTs (Clerk's session tokens) that another app verifies against
//! the key set at `/.well-known/jwks.json`, or hands to `POST /v1/sessions/verify`.
//!
//! Keys are Ed25519 (`EdDSA`, RFC 8037), generated on the first start and kept in the database
//! with the private part sealed under a key derived from the server secret, so every instance
//! signs with the same key and publishes the same set. A token is worth nothing without a live
//! session: the verify endpoint also checks that the session it names still exists.

mod keyring;
mod keys;
mod rules;
mod verified;

pub use keyring::Keyring;
pub use keys::{Alg, KeySet, SigningKey, Verified};
pub use rules::{check_claims, Claims, TokenError, SESSION_TOKEN_TTL};
pub use verified::VerifiedTokens;
