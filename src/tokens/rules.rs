//! What makes a session token's claims acceptable: pure functions of the claims and `now`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// How long a session token is valid (Clerk: 60 s): short enough that a token of a session
/// that ended stops working soon even where nobody asks the verify endpoint.
pub const SESSION_TOKEN_TTL: time::Duration = time::Duration::seconds(60);

/// The claims of a session token. Nothing else: an ID token or an access token (which carry
/// `aud` and more) signed with the same key is never taken for a session token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The instance's public URL.
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// The session id.
    pub sid: String,
    /// The origin the token was issued to (the page that asked for it).
    pub azp: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
}

impl Claims {
    /// A session token's claims, issued at `now`.
    pub fn new(iss: &str, sub: &str, sid: &str, azp: &str, now: OffsetDateTime) -> Self {
        let iat = now.unix_timestamp();
        Self {
            iss: iss.to_string(),
            sub: sub.to_string(),
            sid: sid.to_string(),
            azp: azp.to_string(),
            iat,
            nbf: iat,
            exp: (now + SESSION_TOKEN_TTL).unix_timestamp(),
        }
    }
}

/// Why a token is refused (nobody but logs sees which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a JWT")]
    Malformed,
    #[error("an algorithm other than EdDSA")]
    Algorithm,
    #[error("an unknown key id")]
    UnknownKey,
    #[error("a bad signature")]
    Signature,
    #[error("another issuer")]
    Issuer,
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYetValid,
}

/// Whether `claims` are acceptable at `now` for issuer `iss`: `nbf ≤ now < exp` (no leeway: the
/// issuer's clock is ours), and issued by this instance.
pub fn check_claims(claims: &Claims, iss: &str, now: OffsetDateTime) -> Result<(), TokenError> {
    let now = now.unix_timestamp();
    if claims.iss != iss {
        return Err(TokenError::Issuer);
    }
    if now < claims.nbf {
        return Err(TokenError::NotYetValid);
    }
    if now >= claims.exp {
        return Err(TokenError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-02 12:00 UTC);
    const ISS: &str = "https://accounts.example.com";

    fn claims() -> Claims {
        Claims::new(ISS, "usr_1", "ses_1", "https://app.example.com", NOW)
    }

    #[test]
    fn a_token_lives_sixty_seconds_from_its_issue() {
        let c = claims();
        assert_eq!(c.exp - c.iat, 60);
        assert_eq!(check_claims(&c, ISS, NOW), Ok(()));
        assert_eq!(
            check_claims(&c, ISS, NOW + time::Duration::seconds(59)),
            Ok(())
        );
        assert_eq!(
            check_claims(&c, ISS, NOW + time::Duration::seconds(60)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn a_token_is_not_valid_before_its_issue_or_from_another_issuer() {
        let c = claims();
        assert_eq!(
            check_claims(&c, ISS, NOW - time::Duration::seconds(1)),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(
            check_claims(&c, "https://evil.test", NOW),
            Err(TokenError::Issuer)
        );
    }
}
