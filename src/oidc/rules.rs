//! The token endpoint's decisions and the tokens' claims: pure functions of what was stored,
//! what was presented and `now`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::domain::Identifier;
use crate::store::{CodeRecord, GrantRecord};

/// The claims of an ID token (OpenID Connect Core §2, §5.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub azp: String,
    pub exp: i64,
    pub iat: i64,
    pub auth_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub sid: String,
    pub amr: Vec<String>,
    #[serde(flatten)]
    pub user: UserClaims,
}

/// The claims about the person the granted scopes release (`email`, `phone`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserClaims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number_verified: Option<bool>,
    /// `profile`: the full name, and its parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
}

/// The claims of an access token (a JWT, `typ: at+jwt`, RFC 9068). `gid` names the grant,
/// so that revoking it (or ending the session) ends the token at once where Latchkey checks
/// it (userinfo, introspection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub scope: String,
    pub sid: String,
    pub gid: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// The `typ` header of access tokens (RFC 9068 §2.1): an ID token or a session token is never
/// taken for one.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The claims `scope` releases about the account: from its primary identifiers, and its name.
pub fn user_claims(grant: &GrantRecord) -> UserClaims {
    let scopes: Vec<&str> = grant.scope.split(' ').collect();
    let mut claims = UserClaims::default();
    if scopes.contains(&"profile") {
        claims.given_name = grant.first_name.clone();
        claims.family_name = grant.last_name.clone();
        let full: Vec<&str> = [grant.first_name.as_deref(), grant.last_name.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        claims.name = (!full.is_empty()).then(|| full.join(" "));
    }
    for s in &grant.identifiers {
        if !s.is_primary {
            continue;
        }
        match &s.identifier {
            Identifier::Email(e) if scopes.contains(&"email") => {
                claims.email = Some(e.display().to_string());
                claims.email_verified = Some(s.verified);
            }
            Identifier::Phone(p) if scopes.contains(&"phone") => {
                claims.phone_number = Some(p.e164().to_string());
                claims.phone_number_verified = Some(s.verified);
            }
            _ => {}
        }
    }
    claims
}

/// `amr` (RFC 8176): "otp", then how the code came ("email", "sms").
pub fn amr(stored: &str) -> Vec<String> {
    std::iter::once("otp")
        .chain(stored.split_whitespace())
        .map(String::from)
        .collect()
}

/// Whether `verifier` is a PKCE code verifier (RFC 7636 §4.1) whose S256 hash is `challenge`;
/// compared in constant time.
pub fn pkce_verifies(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    let hashed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    well_formed && bool::from(hashed.as_bytes().ct_eq(challenge.as_bytes()))
}

/// Whether a stored code is honoured for this token request: the same client, not expired,
/// the same redirect URI, and the PKCE verifier of its challenge (RFC 6749 §4.1.3, RFC 7636
/// §4.6). The answer's text is the `error_description` of `invalid_grant`.
pub fn check_code(
    code: &CodeRecord,
    client_id: &str,
    redirect_uri: Option<&str>,
    verifier: Option<&str>,
    now: OffsetDateTime,
) -> Result<(), &'static str> {
    if code.client_id != client_id {
        return Err("the code was issued to another client");
    }
    if now >= code.expires_at {
        return Err("the code has expired");
    }
    if redirect_uri != Some(code.redirect_uri.as_str()) {
        return Err("redirect_uri is not the one the code was issued for");
    }
    match (&code.code_challenge, verifier) {
        (Some(challenge), Some(v)) if pkce_verifies(v, challenge) => Ok(()),
        (Some(_), Some(_)) => Err("the code_verifier does not match the code_challenge"),
        (Some(_), None) => Err("code_verifier is required: the authorization used PKCE"),
        (None, Some(_)) => Err("code_verifier without a code_challenge in the authorization"),
        (None, None) => Ok(()),
    }
}

/// The scope a refresh asks for: all of the grant's (none asked), or some of them; never more
/// (RFC 6749 §6).
pub fn narrowed_scope(granted: &str, asked: Option<&str>) -> Result<String, ()> {
    let Some(asked) = asked else {
        return Ok(granted.to_string());
    };
    let granted: Vec<&str> = granted.split(' ').collect();
    let asked: Vec<&str> = asked.split(' ').filter(|s| !s.is_empty()).collect();
    if asked.is_empty() || asked.iter().any(|s| !granted.contains(s)) {
        return Err(());
    }
    Ok(granted
        .into_iter()
        .filter(|s| asked.contains(s))
        .collect::<Vec<_>>()
        .join(" "))
}

/// Whether an access token's claims are acceptable at `now` from issuer `iss`.
pub fn access_token_current(claims: &AccessClaims, iss: &str, now: OffsetDateTime) -> bool {
    let now = now.unix_timestamp();
    claims.iss == iss && claims.iat <= now && now < claims.exp && claims.aud == claims.client_id
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-02 12:00 UTC);
    // RFC 7636 appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn code(challenge: Option<&str>) -> CodeRecord {
        CodeRecord {
            client_id: "web".into(),
            redirect_uri: "https://app.example.com/cb".into(),
            code_challenge: challenge.map(String::from),
            expires_at: NOW + time::Duration::seconds(60),
        }
    }

    #[test]
    fn pkce_s256_matches_the_rfc_example_only() {
        assert!(pkce_verifies(VERIFIER, CHALLENGE));
        assert!(!pkce_verifies(&VERIFIER.replace('d', "e"), CHALLENGE));
        assert!(!pkce_verifies("short", CHALLENGE));
        assert!(!pkce_verifies(&format!("{VERIFIER} "), CHALLENGE));
    }

    #[test]
    fn a_code_is_honoured_for_its_client_uri_and_verifier_until_it_expires() {
        let uri = Some("https://app.example.com/cb");
        let c = code(Some(CHALLENGE));
        assert_eq!(check_code(&c, "web", uri, Some(VERIFIER), NOW), Ok(()));
        assert!(check_code(&c, "other", uri, Some(VERIFIER), NOW).is_err());
        assert!(check_code(
            &c,
            "web",
            Some("https://app.example.com/cb/"),
            Some(VERIFIER),
            NOW
        )
        .is_err());
        assert!(check_code(&c, "web", None, Some(VERIFIER), NOW).is_err());
        assert!(check_code(&c, "web", uri, None, NOW).is_err());
        assert!(check_code(&c, "web", uri, Some(&"x".repeat(43)), NOW).is_err());
        assert_eq!(
            check_code(
                &c,
                "web",
                uri,
                Some(VERIFIER),
                NOW + time::Duration::seconds(59)
            ),
            Ok(())
        );
        assert_eq!(
            check_code(
                &c,
                "web",
                uri,
                Some(VERIFIER),
                NOW + time::Duration::seconds(60)
            ),
            Err("the code has expired")
        );
        let plain = code(None);
        assert_eq!(check_code(&plain, "web", uri, None, NOW), Ok(()));
        assert!(check_code(&plain, "web", uri, Some(VERIFIER), NOW).is_err());
    }

    #[test]
    fn a_refresh_may_narrow_the_scope_but_never_widen_it() {
        assert_eq!(
            narrowed_scope("openid email offline_access", None).unwrap(),
            "openid email offline_access"
        );
        assert_eq!(
            narrowed_scope("openid email offline_access", Some("email openid")).unwrap(),
            "openid email"
        );
        assert!(narrowed_scope("openid email", Some("openid phone")).is_err());
        assert!(narrowed_scope("openid email", Some("")).is_err());
    }

    #[test]
    fn amr_starts_with_otp() {
        assert_eq!(amr("email"), vec!["otp", "email"]);
        assert_eq!(amr(""), vec!["otp"]);
    }

    #[test]
    fn an_access_token_is_current_from_its_issue_until_its_expiry() {
        let c = AccessClaims {
            iss: "https://id.example.com".into(),
            sub: "usr_1".into(),
            aud: "web".into(),
            client_id: "web".into(),
            scope: "openid".into(),
            sid: "ses_1".into(),
            gid: "grt_1".into(),
            iat: NOW.unix_timestamp(),
            exp: NOW.unix_timestamp() + 300,
            jti: "j".into(),
        };
        assert!(access_token_current(&c, "https://id.example.com", NOW));
        assert!(access_token_current(
            &c,
            "https://id.example.com",
            NOW + time::Duration::seconds(299)
        ));
        assert!(!access_token_current(
            &c,
            "https://id.example.com",
            NOW + time::Duration::seconds(300)
        ));
        assert!(!access_token_current(
            &c,
            "https://id.example.com",
            NOW - time::Duration::seconds(1)
        ));
        assert!(!access_token_current(&c, "https://evil.test", NOW));
        let mut other = c.clone();
        other.aud = "another".into();
        assert!(!access_token_current(&other, "https://id.example.com", NOW));
    }
}
