//! The `[oidc]` section: the OpenID Connect provider's lifetimes and its registered clients
//! (`[[oidc.clients]]`). A bad client stops the start with a message naming the client and key.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use url::Url;

use super::secret_files::read_secret_file;
use crate::tokens::Alg;

/// The scopes Latchkey knows. Others in a request are ignored (OpenID Connect Core §3.1.2.1).
pub const SCOPES: [&str; 5] = ["openid", "email", "phone", "profile", "offline_access"];

/// The raw `[oidc]` section. No `Debug`: clients hold secrets.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    /// Lifetime of an access token in seconds (a JWT; 60–3600).
    pub access_token_ttl_secs: u64,
    /// Lifetime of an ID token in seconds (60–3600).
    pub id_token_ttl_secs: u64,
    /// Lifetime of an authorization code in seconds (1–60).
    pub code_ttl_secs: u64,
    /// Lifetime of a refresh token in seconds, each one (a rotation issues a new one); a
    /// grant never outlives the session it was made in.
    pub refresh_token_ttl_secs: u64,
    pub clients: Vec<OidcClientConfig>,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            access_token_ttl_secs: 300,
            id_token_ttl_secs: 300,
            code_ttl_secs: 60,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            clients: Vec::new(),
        }
    }
}

/// One `[[oidc.clients]]` table, as written.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcClientConfig {
    pub id: String,
    pub name: String,
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Allowed scopes; unset: all of them.
    pub scopes: Option<Vec<String>>,
    pub backchannel_logout_uri: Option<String>,
    pub require_consent: bool,
    /// How ID and access tokens for this client are signed: `RS256` (default), `EdDSA`, `ES256`.
    pub id_token_signed_response_alg: Option<String>,
}

/// A validated client.
#[derive(Clone)]
pub struct OidcClient {
    pub id: String,
    pub name: String,
    /// Confidential clients authenticate with it; public ones (none) must use PKCE.
    pub secret: Option<String>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
    pub backchannel_logout_uri: Option<Url>,
    pub require_consent: bool,
    pub alg: Alg,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field("id", &self.id)
            .field("confidential", &self.secret.is_some())
            .field("redirect_uris", &self.redirect_uris)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl OidcClient {
    pub fn is_public(&self) -> bool {
        self.secret.is_none()
    }
}

/// The validated `[oidc]` section.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub access_token_ttl: Duration,
    pub id_token_ttl: Duration,
    pub code_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub clients: Vec<OidcClient>,
}

impl OidcSettings {
    pub fn client(&self, id: &str) -> Option<&OidcClient> {
        self.clients.iter().find(|c| c.id == id)
    }

    /// The algorithms the clients need keys for (none without clients).
    pub fn algs(&self) -> Vec<Alg> {
        let mut algs = Vec::new();
        if !self.clients.is_empty() {
            // OpenID Connect Core §15.1: every provider supports RS256.
            algs.push(Alg::RS256);
        }
        for c in &self.clients {
            if !algs.contains(&c.alg) {
                algs.push(c.alg);
            }
        }
        algs
    }
}

/// Whether `uri` may receive codes, sign-outs or logout tokens: https; http only to a loopback
/// host (RFC 8252 §7.3) or in dev mode; for a public client also a private-use scheme with a
/// dot (`com.example.app:/callback`, RFC 8252 §7.1). Never a fragment (RFC 6749 §3.1.2).
fn check_uri(
    client: &str,
    key: &str,
    uri: &str,
    public: bool,
    dev_mode: bool,
) -> anyhow::Result<Url> {
    let where_ = || format!("`oidc.clients` {client:?}: `{key}` {uri:?}");
    let url = Url::parse(uri).with_context(|| format!("{}: not an absolute URL", where_()))?;
    if url.fragment().is_some() {
        bail!("{}: must not have a fragment", where_());
    }
    if url.as_str() != uri && url.as_str() != format!("{uri}/") {
        // Redirect URIs are compared exactly as registered; one that parses to something
        // else would never match what a client sends.
        bail!(
            "{}: write it in its normal form, {:?}",
            where_(),
            url.as_str()
        );
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => {}
        "http" if loopback || dev_mode => {}
        "http" => bail!("{}: plain http only to a loopback host (127.0.0.1, [::1], localhost) or in dev mode; use https", where_()),
        scheme if public && scheme.contains('.') && key == "redirect_uris" => {}
        _ => bail!("{}: must be an https URL (or, for a public native app, a private-use scheme like com.example.app:/callback)", where_()),
    }
    if url.username() != "" || url.password().is_some() {
        bail!("{}: must not carry credentials", where_());
    }
    Ok(url)
}

impl OidcConfig {
    pub fn validate(&self, dev_mode: bool) -> anyhow::Result<OidcSettings> {
        let secs = |key: &str, v: u64, min: u64, max: u64| -> anyhow::Result<Duration> {
            if !(min..=max).contains(&v) {
                bail!("`oidc.{key}`: must be between {min} and {max}, got {v}");
            }
            Ok(Duration::from_secs(v))
        };
        let access_token_ttl = secs(
            "access_token_ttl_secs",
            self.access_token_ttl_secs,
            60,
            3600,
        )?;
        let id_token_ttl = secs("id_token_ttl_secs", self.id_token_ttl_secs, 60, 3600)?;
        let code_ttl = secs("code_ttl_secs", self.code_ttl_secs, 1, 60)?;
        let refresh_token_ttl = secs(
            "refresh_token_ttl_secs",
            self.refresh_token_ttl_secs,
            60,
            365 * 24 * 3600,
        )?;
        let mut clients: Vec<OidcClient> = Vec::new();
        for raw in &self.clients {
            let id = raw.id.as_str();
            if id.is_empty()
                || id.len() > 64
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                bail!("`oidc.clients`: `id` {id:?} must be 1–64 letters, digits, '-', '_' or '.'");
            }
            if clients.iter().any(|c| c.id == id) {
                bail!("`oidc.clients` {id:?}: `id` is registered twice");
            }
            let name = if raw.name.trim().is_empty() {
                id.to_string()
            } else {
                raw.name.trim().to_string()
            };
            if name.chars().any(char::is_control) || name.chars().count() > 100 {
                bail!("`oidc.clients` {id:?}: `name` must be one line of at most 100 characters");
            }
            let secret = match (&raw.secret, &raw.secret_file) {
                (Some(_), Some(_)) => {
                    bail!("`oidc.clients` {id:?}: `secret` and `secret_file`: give one, not both")
                }
                (Some(s), None) => Some(s.clone()),
                (None, Some(path)) => Some(read_secret_file(
                    &format!("oidc.clients {id:?} secret_file"),
                    path,
                )?),
                (None, None) => None,
            };
            if let Some(s) = &secret {
                if s.chars().count() < 32 || s.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    bail!("`oidc.clients` {id:?}: `secret` must have at least 32 characters without white space (e.g. `openssl rand -hex 24`)");
                }
            }
            let public = secret.is_none();
            if raw.redirect_uris.is_empty() {
                bail!("`oidc.clients` {id:?}: `redirect_uris` needs at least one URI");
            }
            for uri in &raw.redirect_uris {
                check_uri(id, "redirect_uris", uri, public, dev_mode)?;
            }
            for uri in &raw.post_logout_redirect_uris {
                check_uri(id, "post_logout_redirect_uris", uri, public, dev_mode)?;
            }
            let backchannel_logout_uri = raw
                .backchannel_logout_uri
                .as_deref()
                .map(|u| check_uri(id, "backchannel_logout_uri", u, false, dev_mode))
                .transpose()?;
            let scopes = match &raw.scopes {
                None => SCOPES.iter().map(|s| s.to_string()).collect(),
                Some(list) => {
                    for s in list {
                        if !SCOPES.contains(&s.as_str()) {
                            bail!(
                                "`oidc.clients` {id:?}: `scopes` {s:?} is not one of {}",
                                SCOPES.join(", ")
                            );
                        }
                    }
                    if !list.iter().any(|s| s == "openid") {
                        bail!("`oidc.clients` {id:?}: `scopes` must include \"openid\"");
                    }
                    list.clone()
                }
            };
            let alg = match raw.id_token_signed_response_alg.as_deref() {
                None => Alg::RS256,
                Some(a) => Alg::parse(a).with_context(|| {
                    format!("`oidc.clients` {id:?}: `id_token_signed_response_alg` {a:?} must be RS256, EdDSA or ES256")
                })?,
            };
            clients.push(OidcClient {
                id: id.to_string(),
                name,
                secret,
                redirect_uris: raw.redirect_uris.clone(),
                post_logout_redirect_uris: raw.post_logout_redirect_uris.clone(),
                scopes,
                backchannel_logout_uri,
                require_consent: raw.require_consent,
                alg,
            });
        }
        Ok(OidcSettings {
            access_token_ttl,
            id_token_ttl,
            code_ttl,
            refresh_token_ttl,
            clients,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> OidcClientConfig {
        OidcClientConfig {
            id: "app".into(),
            name: "The App".into(),
            secret: Some("s".repeat(32)),
            redirect_uris: vec!["https://app.example.com/callback".into()],
            ..OidcClientConfig::default()
        }
    }

    fn refusal(c: OidcClientConfig, dev_mode: bool) -> String {
        let config = OidcConfig {
            clients: vec![c],
            ..OidcConfig::default()
        };
        match config.validate(dev_mode) {
            Ok(_) => panic!("accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn a_good_client_gets_every_scope_and_rs256_by_default() {
        let config = OidcConfig {
            clients: vec![client()],
            ..OidcConfig::default()
        };
        let s = config.validate(false).unwrap();
        let c = s.client("app").unwrap();
        assert_eq!(c.scopes.len(), 5);
        assert_eq!(c.alg, Alg::RS256);
        assert!(!c.is_public());
        assert_eq!(s.algs(), vec![Alg::RS256]);
        assert!(OidcConfig::default()
            .validate(false)
            .unwrap()
            .algs()
            .is_empty());
    }

    #[test]
    fn bad_clients_stop_the_start_naming_the_client_and_key() {
        let mut c = client();
        c.redirect_uris.clear();
        assert!(refusal(c, false).contains(r#""app": `redirect_uris` needs"#));
        let mut c = client();
        c.redirect_uris = vec!["http://app.example.com/cb".into()];
        assert!(refusal(c.clone(), false)
            .contains("`redirect_uris` \"http://app.example.com/cb\": plain http"));
        // Dev mode allows plain http anywhere; loopback always.
        assert!(OidcConfig {
            clients: vec![c],
            ..OidcConfig::default()
        }
        .validate(true)
        .is_ok());
        let mut c = client();
        c.redirect_uris = vec![
            "http://127.0.0.1:9000/cb".into(),
            "http://localhost/cb".into(),
        ];
        assert!(OidcConfig {
            clients: vec![c],
            ..OidcConfig::default()
        }
        .validate(false)
        .is_ok());
        let mut c = client();
        c.secret = Some("short".into());
        assert!(refusal(c, false).contains(r#""app": `secret` must have at least 32"#));
        let mut c = client();
        c.redirect_uris = vec!["https://app.example.com/cb#x".into()];
        assert!(refusal(c, false).contains("fragment"));
        let mut c = client();
        c.redirect_uris = vec!["com.example.app:/cb".into()];
        assert!(
            refusal(c.clone(), false).contains("https URL"),
            "a confidential client gets no custom scheme"
        );
        c.secret = None;
        assert!(OidcConfig {
            clients: vec![c],
            ..OidcConfig::default()
        }
        .validate(false)
        .is_ok());
        let mut c = client();
        c.scopes = Some(vec!["email".into()]);
        assert!(refusal(c, false).contains("must include \"openid\""));
        let mut c = client();
        c.scopes = Some(vec!["openid".into(), "admin".into()]);
        assert!(refusal(c, false).contains(r#""admin" is not one of"#));
        let mut c = client();
        c.id_token_signed_response_alg = Some("HS256".into());
        assert!(refusal(c, false).contains("`id_token_signed_response_alg`"));
        let mut c = client();
        c.backchannel_logout_uri = Some("http://rp.example.com/logout".into());
        assert!(refusal(c, false).contains("`backchannel_logout_uri`"));
        let mut c = client();
        c.id = "a b".into();
        assert!(refusal(c, false).contains("`id`"));
        let config = OidcConfig {
            clients: vec![client(), client()],
            ..OidcConfig::default()
        };
        assert!(format!("{:#}", config.validate(false).unwrap_err()).contains("registered twice"));
    }

    #[test]
    fn a_client_that_chose_another_algorithm_needs_its_key_too() {
        let mut c = client();
        c.id_token_signed_response_alg = Some("ES256".into());
        let s = OidcConfig {
            clients: vec![c],
            ..OidcConfig::default()
        }
        .validate(false)
        .unwrap();
        assert_eq!(s.algs(), vec![Alg::RS256, Alg::ES256]);
    }
}
