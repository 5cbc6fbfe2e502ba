//! The authorization request (OpenID Connect Core §3.1.2.1) and what to do with it: pure
//! functions of the parameters, the registered clients, the session and `now`.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::config::{OidcClient, OidcSettings, SCOPES};

/// The parameters of `/oauth/authorize` as sent (query or form). A parameter sent twice is
/// refused (RFC 6749 §3.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Parameters from `application/x-www-form-urlencoded` text; `Err` names a repeated one.
    pub fn parse(encoded: &str) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for (k, v) in url::form_urlencoded::parse(encoded.as_bytes()) {
            if map.insert(k.to_string(), v.to_string()).is_some() {
                return Err(k.to_string());
            }
        }
        Ok(Self(map))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The parameters, form-encoded (sorted by name).
    pub fn encode(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.0.iter())
            .finish()
    }

    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn without(&self, keys: &[&str]) -> Self {
        let mut map = self.0.clone();
        for k in keys {
            map.remove(*k);
        }
        Self(map)
    }
}

/// An authorization request that names a registered client and one of its redirect URIs:
/// from here on, errors go back to that URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    pub client_id: String,
    pub redirect_uri: String,
    /// Granted scopes (known and allowed), in the order of [`SCOPES`]; `openid` included.
    pub scopes: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: Option<String>,
    pub prompt: Prompt,
    /// Seconds since the person last authenticated, at the most.
    pub max_age: Option<u64>,
    /// An identifier to prefill on the sign-in page.
    pub login_hint: Option<String>,
    /// The parameters as sent, to come back with after signing in.
    pub params: Params,
}

impl AuthRequest {
    pub fn scope(&self) -> String {
        self.scopes.join(" ")
    }

    pub fn has_scope(&self, s: &str) -> bool {
        self.scopes.iter().any(|x| x == s)
    }
}

/// `prompt` (space-separated; `none` alone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prompt {
    pub none: bool,
    pub login: bool,
    pub consent: bool,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// No such client, or a redirect URI it did not register (exact match): shown to the
    /// person, never redirected (RFC 6749 §4.1.2.1).
    Fatal(&'static str),
    /// Sent back to the client's redirect URI.
    Redirect(ErrorRedirect),
}

/// An error answered at the client's redirect URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorRedirect {
    pub redirect_uri: String,
    pub state: Option<String>,
    /// The RFC 6749 / OpenID Connect error code.
    pub error: &'static str,
    pub description: &'static str,
}

/// Parses and checks an authorization request against the registered clients.
pub fn parse(params: Params, oidc: &OidcSettings) -> Result<AuthRequest, RequestError> {
    let client = params
        .get("client_id")
        .and_then(|id| oidc.client(id))
        .ok_or(RequestError::Fatal("The application that sent you here is not registered with this account service (unknown client_id)."))?;
    let redirect_uri = params
        .get("redirect_uri")
        .filter(|uri| client.redirect_uris.iter().any(|r| r == uri))
        .ok_or(RequestError::Fatal("The application that sent you here asked to return to an address it has not registered (redirect_uri)."))?
        .to_string();
    let state = params.get("state").map(String::from);
    let refuse = |error: &'static str, description: &'static str| {
        RequestError::Redirect(ErrorRedirect {
            redirect_uri: redirect_uri.clone(),
            state: state.clone(),
            error,
            description,
        })
    };
    if params.get("request").is_some() {
        return Err(refuse(
            "request_not_supported",
            "request objects are not supported",
        ));
    }
    if params.get("request_uri").is_some() {
        return Err(refuse(
            "request_uri_not_supported",
            "request_uri is not supported",
        ));
    }
    if params.get("response_type") != Some("code") {
        return Err(refuse(
            "unsupported_response_type",
            "only the authorization code flow (response_type=code) is supported",
        ));
    }
    if params.get("response_mode").is_some_and(|m| m != "query") {
        return Err(refuse(
            "invalid_request",
            "only response_mode=query is supported",
        ));
    }
    let requested: Vec<&str> = params.get("scope").unwrap_or("").split(' ').collect();
    if !requested.contains(&"openid") {
        return Err(refuse("invalid_scope", "the openid scope is required"));
    }
    // Unknown scopes are ignored (OpenID Connect Core §3.1.2.1); known ones must be allowed.
    if requested
        .iter()
        .any(|s| SCOPES.contains(s) && !client.scopes.iter().any(|a| a == s))
    {
        return Err(refuse(
            "invalid_scope",
            "a scope this client may not ask for was requested",
        ));
    }
    let scopes = SCOPES
        .iter()
        .filter(|s| requested.contains(s))
        .map(|s| s.to_string())
        .collect();
    let code_challenge = match (
        params.get("code_challenge"),
        params.get("code_challenge_method"),
    ) {
        (None, None) => None,
        (Some(c), Some("S256")) if is_challenge(c) => Some(c.to_string()),
        (Some(_), Some("S256")) => {
            return Err(refuse(
                "invalid_request",
                "code_challenge must be 43 base64url characters (S256)",
            ))
        }
        _ => {
            return Err(refuse(
                "invalid_request",
                "PKCE needs code_challenge with code_challenge_method=S256",
            ))
        }
    };
    if client.is_public() && code_challenge.is_none() {
        return Err(refuse(
            "invalid_request",
            "a public client must use PKCE (code_challenge, S256)",
        ));
    }
    let mut prompt = Prompt::default();
    for p in params
        .get("prompt")
        .unwrap_or("")
        .split(' ')
        .filter(|p| !p.is_empty())
    {
        match p {
            "none" => prompt.none = true,
            "login" => prompt.login = true,
            "consent" => prompt.consent = true,
            // One account per browser: there is nothing to select.
            "select_account" => {}
            _ => {
                return Err(refuse(
                    "invalid_request",
                    "prompt must be none, login, consent or select_account",
                ))
            }
        }
    }
    if prompt.none && (prompt.login || prompt.consent) {
        return Err(refuse(
            "invalid_request",
            "prompt=none cannot be combined with other values",
        ));
    }
    let max_age = match params.get("max_age") {
        None => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| refuse("invalid_request", "max_age must be a number of seconds"))?,
        ),
    };
    let nonce = params.get("nonce").map(String::from);
    if nonce.as_ref().is_some_and(|n| n.len() > 512)
        || state.as_ref().is_some_and(|s| s.len() > 2048)
    {
        return Err(refuse("invalid_request", "state or nonce is too long"));
    }
    Ok(AuthRequest {
        client_id: client.id.clone(),
        redirect_uri,
        scopes,
        state: state.clone(),
        nonce,
        code_challenge,
        prompt,
        max_age,
        login_hint: params.get("login_hint").map(String::from),
        params,
    })
}

/// An S256 challenge: the base64url SHA-256 of the verifier, 43 characters.
fn is_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The session an authorization request finds.
#[derive(Debug, Clone, Copy)]
pub struct SessionFacts {
    /// When the person last typed a code (the session's creation).
    pub auth_time: OffsetDateTime,
}

/// What to do with a valid request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Sign in first (`reauth`: even though signed in), then come back.
    SignIn { reauth: bool },
    /// Ask the person to allow the client.
    Consent,
    /// Issue a code (`remember_consent`: the person just allowed it).
    Issue,
    /// Answer an error at the redirect URI (`prompt=none` could not be honoured).
    Refuse(&'static str),
}

/// Whether to sign in, ask for consent or issue a code. `consented` is the scope the person
/// allowed this client before, if any; `consent_given` is true when this very request is the
/// consent form's "Allow".
pub fn decide(
    req: &AuthRequest,
    client: &OidcClient,
    session: Option<SessionFacts>,
    consented: Option<&str>,
    consent_given: bool,
    now: OffsetDateTime,
) -> Decision {
    let Some(session) = session else {
        return if req.prompt.none {
            Decision::Refuse("login_required")
        } else {
            Decision::SignIn { reauth: false }
        };
    };
    let age = (now - session.auth_time).whole_seconds().max(0) as u64;
    // max_age=0 is prompt=login (OpenID Connect Core §3.1.2.1).
    let too_old = req.max_age.is_some_and(|max| max == 0 || age > max);
    if (req.prompt.login || too_old) && !consent_given {
        return if req.prompt.none {
            Decision::Refuse("login_required")
        } else {
            Decision::SignIn { reauth: true }
        };
    }
    if client.require_consent && !consent_given {
        let covered = consented.is_some_and(|given| {
            let given: Vec<&str> = given.split(' ').collect();
            req.scopes.iter().all(|s| given.contains(&s.as_str()))
        });
        if req.prompt.consent || !covered {
            return if req.prompt.none {
                Decision::Refuse("consent_required")
            } else {
                Decision::Consent
            };
        }
    }
    Decision::Issue
}

/// The authorization request to come back to after signing in: as sent, except that a
/// re-authentication it asked for (`prompt=login`, `max_age`) is what the sign-in does.
pub fn resume_params(req: &AuthRequest, reauth: bool) -> Params {
    if reauth {
        req.params.without(&["prompt", "max_age"])
    } else {
        req.params.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OidcConfig;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-02 12:00 UTC);

    fn oidc() -> OidcSettings {
        let toml = r#"
            [[clients]]
            id = "web"
            secret = "0123456789abcdef0123456789abcdef"
            redirect_uris = ["https://app.example.com/callback"]
            [[clients]]
            id = "spa"
            redirect_uris = ["https://spa.example.com/cb"]
            scopes = ["openid", "email"]
            require_consent = true
        "#;
        use figment::providers::Format;
        let raw: OidcConfig = figment::Figment::new()
            .merge(figment::providers::Toml::string(toml))
            .extract()
            .unwrap();
        raw.validate(false).unwrap()
    }

    fn params(extra: &str) -> Params {
        Params::parse(&format!(
            "client_id=web&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcallback&response_type=code&scope=openid+email&state=s1{extra}"
        ))
        .unwrap()
    }

    fn error(p: Params) -> RequestError {
        parse(p, &oidc()).unwrap_err()
    }

    fn redirected(p: Params) -> &'static str {
        match error(p) {
            RequestError::Redirect(r) => {
                assert_eq!(r.state.as_deref(), Some("s1"));
                r.error
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_good_request_keeps_known_scopes_in_order() {
        let req = parse(
            Params::parse("client_id=web&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcallback&response_type=code&scope=email+weird+openid&nonce=n").unwrap(),
            &oidc(),
        )
        .unwrap();
        assert_eq!(req.scopes, vec!["openid", "email"]);
        assert_eq!(req.nonce.as_deref(), Some("n"));
        assert_eq!(req.code_challenge, None);
        assert!(Params::parse("a=1&a=2").is_err());
    }

    #[test]
    fn an_unknown_client_or_unregistered_redirect_uri_is_never_redirected_to() {
        for bad in [
            "https://app.example.com/callback/",
            "https://app.example.com:443/callback?x=1",
            "https://APP.example.com/callback",
            "https://app.example.com:8443/callback",
            "http://app.example.com/callback",
            "https://app.example.com/callbacK",
            "https://app.example.com.evil.test/callback",
        ] {
            let p = Params::parse(
                &url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("client_id", "web")
                    .append_pair("redirect_uri", bad)
                    .append_pair("response_type", "code")
                    .append_pair("scope", "openid")
                    .finish(),
            )
            .unwrap();
            assert!(matches!(error(p), RequestError::Fatal(_)), "{bad}");
        }
        let p =
            Params::parse("client_id=nobody&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcallback")
                .unwrap();
        assert!(matches!(error(p), RequestError::Fatal(_)));
    }

    #[test]
    fn other_errors_go_back_to_the_client_with_its_state() {
        assert_eq!(
            redirected(params("").without(&["response_type"])),
            "unsupported_response_type"
        );
        assert_eq!(redirected(params("").without(&["scope"])), "invalid_scope");
        assert_eq!(
            redirected(params("&code_challenge=abc&code_challenge_method=S256")),
            "invalid_request"
        );
        assert_eq!(
            redirected(params(&format!(
                "&code_challenge={}&code_challenge_method=plain",
                "a".repeat(43)
            ))),
            "invalid_request"
        );
        assert_eq!(
            redirected(params(&format!("&code_challenge={}", "a".repeat(43)))),
            "invalid_request"
        );
        assert_eq!(redirected(params("&prompt=none+login")), "invalid_request");
        assert_eq!(redirected(params("&prompt=maybe")), "invalid_request");
        assert_eq!(redirected(params("&max_age=-1")), "invalid_request");
        assert_eq!(redirected(params("&request=eyJ")), "request_not_supported");
        assert_eq!(
            redirected(params("&response_mode=fragment")),
            "invalid_request"
        );
    }

    #[test]
    fn a_public_client_must_use_pkce_and_only_its_scopes() {
        let base = "client_id=spa&redirect_uri=https%3A%2F%2Fspa.example.com%2Fcb&response_type=code&state=s1";
        let p = Params::parse(&format!("{base}&scope=openid")).unwrap();
        assert_eq!(redirected(p), "invalid_request");
        let pkce = format!(
            "&code_challenge={}&code_challenge_method=S256",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let p = Params::parse(&format!("{base}&scope=openid+phone{pkce}")).unwrap();
        assert_eq!(redirected(p), "invalid_scope");
        let p = Params::parse(&format!("{base}&scope=openid+email{pkce}")).unwrap();
        assert!(parse(p, &oidc()).unwrap().code_challenge.is_some());
    }

    fn decision(extra: &str, session: Option<i64>, consented: Option<&str>) -> Decision {
        let req = parse(params(extra), &oidc()).unwrap();
        let client = oidc().client("web").unwrap().clone();
        decide(
            &req,
            &client,
            session.map(|ago| SessionFacts {
                auth_time: NOW - time::Duration::seconds(ago),
            }),
            consented,
            false,
            NOW,
        )
    }

    #[test]
    fn without_a_session_sign_in_or_login_required() {
        assert_eq!(decision("", None, None), Decision::SignIn { reauth: false });
        assert_eq!(
            decision("&prompt=none", None, None),
            Decision::Refuse("login_required")
        );
        assert_eq!(decision("", Some(5), None), Decision::Issue);
    }

    #[test]
    fn prompt_login_and_max_age_ask_for_a_fresh_sign_in() {
        assert_eq!(
            decision("&prompt=login", Some(5), None),
            Decision::SignIn { reauth: true }
        );
        assert_eq!(decision("&max_age=60", Some(60), None), Decision::Issue);
        assert_eq!(
            decision("&max_age=60", Some(61), None),
            Decision::SignIn { reauth: true }
        );
        assert_eq!(
            decision("&max_age=0", Some(0), None),
            Decision::SignIn { reauth: true }
        );
        assert_eq!(
            decision("&max_age=60&prompt=none", Some(61), None),
            Decision::Refuse("login_required")
        );
        // Coming back, the sign-in was the re-authentication: neither is asked again.
        let req = parse(params("&prompt=login&max_age=0"), &oidc()).unwrap();
        let back = resume_params(&req, true);
        assert_eq!(back.get("prompt"), None);
        assert_eq!(back.get("max_age"), None);
        assert_eq!(back.get("state"), Some("s1"));
    }

    #[test]
    fn consent_is_asked_once_per_scope_set_of_a_client_that_wants_it() {
        let base = "client_id=spa&redirect_uri=https%3A%2F%2Fspa.example.com%2Fcb&response_type=code&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256";
        let req = |extra: &str| {
            parse(Params::parse(&format!("{base}{extra}")).unwrap(), &oidc()).unwrap()
        };
        let spa = oidc().client("spa").unwrap().clone();
        let facts = Some(SessionFacts { auth_time: NOW });
        assert_eq!(
            decide(&req("&scope=openid+email"), &spa, facts, None, false, NOW),
            Decision::Consent
        );
        assert_eq!(
            decide(
                &req("&scope=openid+email"),
                &spa,
                facts,
                Some("openid"),
                false,
                NOW
            ),
            Decision::Consent
        );
        assert_eq!(
            decide(
                &req("&scope=openid+email"),
                &spa,
                facts,
                Some("openid email"),
                false,
                NOW
            ),
            Decision::Issue
        );
        assert_eq!(
            decide(
                &req("&scope=openid&prompt=consent"),
                &spa,
                facts,
                Some("openid email"),
                false,
                NOW
            ),
            Decision::Consent
        );
        assert_eq!(
            decide(
                &req("&scope=openid+email&prompt=none"),
                &spa,
                facts,
                None,
                false,
                NOW
            ),
            Decision::Refuse("consent_required")
        );
        assert_eq!(
            decide(&req("&scope=openid+email"), &spa, facts, None, true, NOW),
            Decision::Issue
        );
        // A first-party client (require_consent = false) never asks.
        assert_eq!(decision("&prompt=consent", Some(1), None), Decision::Issue);
    }
}
