//! OpenID Connect Back-Channel Logout 1.0: when a session ends, every client it signed into
//! that registered a `backchannel_logout_uri` gets a logout token, through the outbox (queued
//! in the transaction that ends the session, so a client that is down gets it when it is
//! back). The token is signed at delivery, so its `iat` is fresh however late that is.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::OidcSettings;
use crate::crypto::{random_token, Keys};
use crate::tokens::{Alg, Keyring};

/// What an outbox row of a back-channel logout holds (sealed like every payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogoutMessage {
    pub client_id: String,
    /// The user id.
    pub sub: String,
    /// The session id.
    pub sid: String,
}

impl LogoutMessage {
    pub fn seal(&self, keys: &Keys) -> Vec<u8> {
        keys.seal(&serde_json::to_vec(self).expect("serializable"))
    }

    pub fn open(keys: &Keys, sealed: &[u8]) -> Option<Self> {
        serde_json::from_slice(&keys.open(sealed)?).ok()
    }
}

/// The event a logout token carries (Back-Channel Logout §2.4).
pub const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Why a delivery failed.
#[derive(Debug)]
pub enum LogoutError {
    /// Worth another try (the client is down, answered 5xx).
    Temporary(String),
    /// The client refused the token (400) or is no longer registered.
    Permanent(String),
}

/// Signs and posts logout tokens to the clients' back-channel endpoints.
pub struct LogoutSender {
    endpoints: HashMap<String, (url::Url, Alg)>,
    signing: Arc<Keyring>,
    issuer: String,
    http: reqwest::Client,
}

impl LogoutSender {
    pub fn new(
        oidc: &OidcSettings,
        signing: Arc<Keyring>,
        issuer: String,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let endpoints = oidc
            .clients
            .iter()
            .filter_map(|c| {
                c.backchannel_logout_uri
                    .clone()
                    .map(|u| (c.id.clone(), (u, c.alg)))
            })
            .collect();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            endpoints,
            signing,
            issuer,
            http,
        })
    }

    /// The logout token for `msg` issued at `now_unix` (Back-Channel Logout §2.4): `iss`,
    /// `aud`, `iat`, `exp`, `jti`, `sub`, `sid`, `events`; never a `nonce`.
    pub fn token(&self, msg: &LogoutMessage, alg: Alg, now_unix: i64) -> Option<String> {
        let claims = json!({
            "iss": self.issuer,
            "aud": msg.client_id,
            "iat": now_unix,
            "exp": now_unix + 120,
            "jti": random_token(16),
            "sub": msg.sub,
            "sid": msg.sid,
            "events": { LOGOUT_EVENT: {} },
        });
        self.signing.get().sign_as(alg, "logout+jwt", &claims)
    }

    /// One delivery try: `POST logout_token=…` to the client's endpoint.
    pub async fn send(&self, msg: &LogoutMessage) -> Result<(), LogoutError> {
        let Some((uri, alg)) = self.endpoints.get(&msg.client_id) else {
            return Err(LogoutError::Permanent(format!(
                "client {} has no backchannel_logout_uri (any more)",
                msg.client_id
            )));
        };
        // Checked by the client against its own wall clock: dated by the wall clock.
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let token = self
            .token(msg, *alg, now)
            .ok_or_else(|| LogoutError::Permanent(format!("no {alg} signing key")))?;
        let resp = self
            .http
            .post(uri.clone())
            .form(&[("logout_token", token.as_str())])
            .send()
            .await
            .map_err(|e| LogoutError::Temporary(format!("{e}")))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else if status == reqwest::StatusCode::BAD_REQUEST {
            Err(LogoutError::Permanent(format!(
                "the client answered {status}"
            )))
        } else {
            Err(LogoutError::Temporary(format!(
                "the client answered {status}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::{KeySet, SigningKey, Verified};
    use serde_json::Value;

    #[test]
    fn a_logout_token_has_the_claims_the_spec_requires_and_no_nonce() {
        let keys = KeySet::new(vec![SigningKey::generate(Alg::EdDSA).unwrap().0]).unwrap();
        let sender = LogoutSender {
            endpoints: HashMap::new(),
            signing: Arc::new(Keyring::new(keys)),
            issuer: "https://id.example.com".into(),
            http: reqwest::Client::new(),
        };
        let msg = LogoutMessage {
            client_id: "web".into(),
            sub: "usr_1".into(),
            sid: "ses_1".into(),
        };
        let token = sender.token(&msg, Alg::EdDSA, 1_000).unwrap();
        let v: Verified<Value> = sender
            .signing
            .get()
            .verify_as(&token, &[Alg::EdDSA])
            .unwrap();
        assert_eq!(v.typ.as_deref(), Some("logout+jwt"));
        let c = v.claims;
        assert_eq!(
            (
                c["iss"].as_str(),
                c["aud"].as_str(),
                c["sub"].as_str(),
                c["sid"].as_str()
            ),
            (
                Some("https://id.example.com"),
                Some("web"),
                Some("usr_1"),
                Some("ses_1")
            )
        );
        assert_eq!(c["iat"], 1_000);
        assert!(c["events"][LOGOUT_EVENT].is_object());
        assert!(c.get("nonce").is_none());
        assert!(c["jti"].as_str().is_some_and(|j| j.len() > 16));
    }

    #[test]
    fn a_sealed_message_opens_only_with_its_keys() {
        let msg = LogoutMessage {
            client_id: "web".into(),
            sub: "usr_1".into(),
            sid: "ses_1".into(),
        };
        let sealed = msg.seal(&Keys::derive("one-secret-of-at-least-32-characters!!"));
        assert_eq!(
            LogoutMessage::open(
                &Keys::derive("one-secret-of-at-least-32-characters!!"),
                &sealed
            ),
            Some(msg)
        );
        assert_eq!(
            LogoutMessage::open(
                &Keys::derive("another-secret-of-at-least-32-chars!!"),
                &sealed
            ),
            None
        );
    }
}
