//! The OpenID Connect provider: the authorization code flow (with PKCE), refresh-token
//! rotation, userinfo, revocation, introspection and RP-initiated logout. It knows no HTTP:
//! `routes/oauth` parses requests and writes answers; the decisions are pure functions
//! (`request.rs`, `rules.rs`); every record is in the database (`store/oauth.rs`), so any
//! instance continues what another began.

mod request;
mod rules;

use std::sync::Arc;

use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

pub use request::{
    decide, parse, resume_params, AuthRequest, Decision, ErrorRedirect, Params, Prompt,
    RequestError, SessionFacts,
};
pub use rules::{AccessClaims, IdClaims, UserClaims, ACCESS_TOKEN_TYP};

use crate::auth::{duration, CurrentUser};
use crate::clock::SharedClock;
use crate::config::{OidcClient, OidcSettings, SCOPES};
use crate::crypto::{random_token, Keys};
use crate::domain::{GrantId, SessionId};
use crate::store::{GrantRecord, NewCode, NewConsent, NewGrant, NewRefreshToken, Redeemed, Store};
use crate::tokens::{Alg, Keyring};

/// Where the provider's endpoints are, relative to the issuer (routes mount the same).
pub mod endpoints {
    pub const AUTHORIZE: &str = "/oauth/authorize";
    pub const CONSENT: &str = "/oauth/consent";
    pub const TOKEN: &str = "/oauth/token";
    pub const USERINFO: &str = "/oauth/userinfo";
    pub const REVOKE: &str = "/oauth/revoke";
    pub const INTROSPECT: &str = "/oauth/introspect";
    pub const END_SESSION: &str = "/oauth/end_session";
    pub const DISCOVERY: &str = "/.well-known/openid-configuration";
    pub const JWKS: &str = "/.well-known/jwks.json";
}

/// A refused token, revocation or introspection request: RFC 6749 §5.2's error codes.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("invalid_request: {0}")]
    InvalidRequest(&'static str),
    /// Client authentication failed (401).
    #[error("invalid_client: {0}")]
    InvalidClient(&'static str),
    #[error("invalid_grant: {0}")]
    InvalidGrant(&'static str),
    #[error("unauthorized_client: {0}")]
    UnauthorizedClient(&'static str),
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    #[error("invalid_scope: {0}")]
    InvalidScope(&'static str),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl OAuthError {
    /// The `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidClient(_) => "invalid_client",
            Self::InvalidGrant(_) => "invalid_grant",
            Self::UnauthorizedClient(_) => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope(_) => "invalid_scope",
            Self::Internal(_) => "server_error",
        }
    }

    pub fn description(&self) -> &'static str {
        match self {
            Self::InvalidRequest(d)
            | Self::InvalidClient(d)
            | Self::InvalidGrant(d)
            | Self::UnauthorizedClient(d)
            | Self::InvalidScope(d) => d,
            Self::UnsupportedGrantType => "grant_type must be authorization_code or refresh_token",
            Self::Internal(_) => "the server could not complete the request",
        }
    }
}

/// A successful token response (RFC 6749 §5.1, OpenID Connect Core §3.1.3.3).
#[derive(Debug, serde::Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub id_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
}

/// A token request's grant.
#[derive(Debug)]
pub enum Grant<'a> {
    AuthorizationCode {
        code: &'a str,
        redirect_uri: Option<&'a str>,
        code_verifier: Option<&'a str>,
    },
    RefreshToken {
        refresh_token: &'a str,
        scope: Option<&'a str>,
    },
}

/// Why an access token is refused (RFC 6750 §3.1: `invalid_token` whatever the reason).
#[derive(Debug, thiserror::Error)]
pub enum BearerError {
    #[error("invalid_token")]
    InvalidToken,
    #[error("insufficient_scope")]
    InsufficientScope,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The OpenID Connect provider of one instance.
pub struct Provider {
    pub settings: OidcSettings,
    /// The sessions' inactivity timeout: a grant of an unused session is dead too.
    session_idle_timeout: Option<std::time::Duration>,
    /// The issuer: the instance's public URL without a trailing slash.
    pub issuer: String,
    store: Store,
    keys: Arc<Keys>,
    signing: Arc<Keyring>,
    clock: SharedClock,
}

impl Provider {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: OidcSettings,
        session_idle_timeout: Option<std::time::Duration>,
        issuer: String,
        store: Store,
        keys: Arc<Keys>,
        signing: Arc<Keyring>,
        clock: SharedClock,
    ) -> Self {
        Self {
            settings,
            session_idle_timeout,
            issuer,
            store,
            keys,
            signing,
            clock,
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    pub fn client(&self, id: &str) -> Option<&OidcClient> {
        self.settings.client(id)
    }

    /// The discovery document (OpenID Connect Discovery 1.0 §3).
    pub fn discovery(&self) -> Value {
        let url = |path: &str| format!("{}{path}", self.issuer);
        let algs: Vec<&str> = self
            .signing
            .get()
            .algs()
            .iter()
            .map(|a| a.as_str())
            .collect();
        json!({
            "issuer": self.issuer,
            "authorization_endpoint": url(endpoints::AUTHORIZE),
            "token_endpoint": url(endpoints::TOKEN),
            "userinfo_endpoint": url(endpoints::USERINFO),
            "jwks_uri": url(endpoints::JWKS),
            "revocation_endpoint": url(endpoints::REVOKE),
            "introspection_endpoint": url(endpoints::INTROSPECT),
            "end_session_endpoint": url(endpoints::END_SESSION),
            "scopes_supported": SCOPES,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algs,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "prompt_values_supported": ["none", "login", "consent", "select_account"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "sid", "amr", "azp", "email", "email_verified", "phone_number", "phone_number_verified", "name", "given_name", "family_name"],
            "authorization_response_iss_parameter_supported": true,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
            "claims_parameter_supported": false,
            "frontchannel_logout_supported": false,
            "backchannel_logout_supported": true,
            "backchannel_logout_session_supported": true,
        })
    }

    /// The consent a person gave a client before, if any.
    pub async fn consented(
        &self,
        user: &CurrentUser,
        client: &str,
    ) -> anyhow::Result<Option<String>> {
        self.store.consent(&user.user_id, client).await
    }

    /// Issues an authorization code for `req` to the signed-in `user` and answers the URL to
    /// send the browser to: the redirect URI with `code`, `state` and `iss` (RFC 9207).
    pub async fn issue_code(
        &self,
        req: &AuthRequest,
        user: &CurrentUser,
        remember_consent: bool,
    ) -> anyhow::Result<String> {
        let now = self.now();
        let code = random_token(32);
        let grant = NewGrant {
            id: GrantId::generate(),
            client_id: req.client_id.clone(),
            user_id: user.user_id.clone(),
            session_id: user.session_id.clone(),
            scope: req.scope(),
            nonce: req.nonce.clone(),
            auth_time: user.session_created_at,
            amr: user.amr.join(" "),
            created_at: now,
            expires_at: user.session_expires_at,
        };
        let stored = NewCode {
            hash: self.keys.oauth_hash("code", &code),
            redirect_uri: req.redirect_uri.clone(),
            code_challenge: req.code_challenge.clone(),
            expires_at: now + duration(self.settings.code_ttl),
        };
        let consent = remember_consent.then(|| NewConsent { scope: req.scope() });
        self.store.issue_code(grant, stored, consent).await?;
        tracing::info!(event = "oidc_code_issued", client_id = %req.client_id, session_id = %user.session_id, "authorization code issued");
        Ok(self.redirect_with(
            &req.redirect_uri,
            &[
                ("code", Some(code.as_str())),
                ("state", req.state.as_deref()),
            ],
        ))
    }

    /// An error answered at the client's redirect URI, with `state` and `iss`.
    pub fn error_redirect(&self, e: &ErrorRedirect) -> String {
        self.redirect_with(
            &e.redirect_uri,
            &[
                ("error", Some(e.error)),
                ("error_description", Some(e.description)),
                ("state", e.state.as_deref()),
            ],
        )
    }

    fn redirect_with(&self, uri: &str, params: &[(&str, Option<&str>)]) -> String {
        let Ok(mut url) = url::Url::parse(uri) else {
            return uri.to_string();
        };
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                if let Some(v) = v {
                    q.append_pair(k, v);
                }
            }
            q.append_pair("iss", &self.issuer);
        }
        url.to_string()
    }

    /// The client a token, revocation or introspection request authenticates as:
    /// `client_secret_basic` (`basic`, already decoded) or `client_secret_post`, secrets
    /// compared in constant time; a public client names itself and has no secret to give.
    pub fn authenticate_client(
        &self,
        basic: Option<(String, String)>,
        form: &Params,
    ) -> Result<&OidcClient, OAuthError> {
        let (id, secret) = match (basic, form.get("client_secret")) {
            (Some(_), Some(_)) => {
                return Err(OAuthError::InvalidRequest(
                    "use one client authentication method, not two",
                ))
            }
            (Some((id, secret)), None) => {
                if form.get("client_id").is_some_and(|f| f != id) {
                    return Err(OAuthError::InvalidClient("client authentication failed"));
                }
                (id, Some(secret))
            }
            (None, secret) => (
                form.get("client_id")
                    .ok_or(OAuthError::InvalidClient("client authentication failed"))?
                    .to_string(),
                secret.map(String::from),
            ),
        };
        let client = self
            .client(&id)
            .ok_or(OAuthError::InvalidClient("client authentication failed"))?;
        let authenticated = match (&client.secret, &secret) {
            (Some(expected), Some(given)) => {
                let (a, b) = (
                    self.keys.oauth_hash("client", expected),
                    self.keys.oauth_hash("client", given),
                );
                bool::from(a.as_bytes().ct_eq(b.as_bytes()))
            }
            (None, None) => true,
            _ => false,
        };
        if !authenticated {
            tracing::warn!(event = "oidc_client_refused", client_id = %id, "client authentication failed");
            return Err(OAuthError::InvalidClient("client authentication failed"));
        }
        Ok(client)
    }

    /// The token endpoint's work once the client is authenticated.
    pub async fn token(
        &self,
        client: &OidcClient,
        grant: Grant<'_>,
    ) -> Result<TokenResponse, OAuthError> {
        let now = self.now();
        let (refresh, refresh_hash) = {
            let t = random_token(32);
            let h = self.keys.oauth_hash("refresh", &t);
            (t, h)
        };
        let next = NewRefreshToken {
            hash: refresh_hash,
            expires_at: now + duration(self.settings.refresh_token_ttl),
        };
        let client_id = client.id.clone();
        let (redeemed, first_issue, asked_scope) = match grant {
            Grant::AuthorizationCode {
                code,
                redirect_uri,
                code_verifier,
            } => {
                let (redirect_uri, verifier) = (
                    redirect_uri.map(String::from),
                    code_verifier.map(String::from),
                );
                let check = move |c: &crate::store::CodeRecord| {
                    rules::check_code(
                        c,
                        &client_id,
                        redirect_uri.as_deref(),
                        verifier.as_deref(),
                        now,
                    )
                    .map_err(OAuthError::InvalidGrant)
                };
                // Stored only if the grant has offline_access (the store checks).
                let r = self
                    .store
                    .redeem_code(self.keys.oauth_hash("code", code), now, check, Some(next))
                    .await?;
                (r, true, None)
            }
            Grant::RefreshToken {
                refresh_token,
                scope,
            } => {
                let asked = scope.map(String::from);
                let scope = asked.clone();
                let check = move |g: &GrantRecord| {
                    if g.client_id != client_id {
                        return Err(OAuthError::InvalidGrant(
                            "the refresh token was issued to another client",
                        ));
                    }
                    rules::narrowed_scope(&g.scope, scope.as_deref())
                        .map(|_| ())
                        .map_err(|()| {
                            OAuthError::InvalidScope(
                                "a refresh can only ask for scopes of the original grant",
                            )
                        })
                };
                let r = self
                    .store
                    .rotate_refresh_token(
                        self.keys.oauth_hash("refresh", refresh_token),
                        next,
                        now,
                        check,
                    )
                    .await?;
                (r, false, asked)
            }
        };
        let grant = match redeemed {
            Redeemed::Granted(g) if self.in_use(&g, now) => *g,
            Redeemed::Refused(e) => return Err(e),
            Redeemed::Replayed => {
                tracing::warn!(event = "oidc_replay", client_id = %client.id, "a used code or refresh token was presented again; its grant is revoked");
                return Err(OAuthError::InvalidGrant("the code or refresh token was already used; everything issued with it is revoked"));
            }
            Redeemed::Unknown => {
                return Err(OAuthError::InvalidGrant(
                    "the code or refresh token is unknown or expired",
                ))
            }
            Redeemed::Granted(_) | Redeemed::SessionEnded => {
                return Err(OAuthError::InvalidGrant(
                    "the session it was issued in has ended",
                ))
            }
        };
        let refresh_token = grant.offline_access().then_some(refresh);
        // An app refreshing its tokens is the session in use (the inactivity timeout).
        if !first_issue && crate::auth::session_needs_touch(grant.session_last_active_at, now) {
            if let Err(e) = self.store.touch_session(&grant.session_id, now).await {
                tracing::warn!(error = %e, "could not record a session's activity");
            }
        }
        // A refresh may ask for fewer scopes than the grant's (checked in the unit above).
        let mut grant = grant;
        if let Ok(narrowed) = rules::narrowed_scope(&grant.scope, asked_scope.as_deref()) {
            grant.scope = narrowed;
        }
        let scope = grant.scope.clone();
        let (access_token, id_token) =
            self.sign_tokens(client, &grant, &scope, first_issue, now)?;
        tracing::info!(event = "oidc_tokens_issued", client_id = %client.id, session_id = %grant.session_id, refresh = refresh_token.is_some(), "tokens issued");
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: self.settings.access_token_ttl.as_secs(),
            id_token,
            refresh_token,
            scope,
        })
    }

    fn sign_tokens(
        &self,
        client: &OidcClient,
        grant: &GrantRecord,
        scope: &str,
        with_nonce: bool,
        now: OffsetDateTime,
    ) -> anyhow::Result<(String, String)> {
        let iat = now.unix_timestamp();
        let access = AccessClaims {
            iss: self.issuer.clone(),
            sub: grant.user_id.to_string(),
            aud: client.id.clone(),
            client_id: client.id.clone(),
            scope: scope.to_string(),
            sid: grant.session_id.to_string(),
            gid: grant.id.to_string(),
            iat,
            exp: iat + self.settings.access_token_ttl.as_secs() as i64,
            jti: random_token(16),
        };
        let id = IdClaims {
            iss: self.issuer.clone(),
            sub: grant.user_id.to_string(),
            aud: client.id.clone(),
            azp: client.id.clone(),
            exp: iat + self.settings.id_token_ttl.as_secs() as i64,
            iat,
            auth_time: grant.auth_time.unix_timestamp(),
            // A refreshed ID token carries no nonce (OpenID Connect Core §12.2).
            nonce: if with_nonce {
                grant.nonce.clone()
            } else {
                None
            },
            sid: grant.session_id.to_string(),
            amr: rules::amr(&grant.amr),
            user: rules::user_claims(grant),
        };
        let keys = self.signing.get();
        let missing = || anyhow::anyhow!("no {} signing key for client {}", client.alg, client.id);
        let access = keys
            .sign_as(client.alg, ACCESS_TOKEN_TYP, &access)
            .ok_or_else(missing)?;
        let id = keys.sign_as(client.alg, "JWT", &id).ok_or_else(missing)?;
        Ok((access, id))
    }

    /// The grant behind a bearer access token, if the token is ours, current, and its grant
    /// and session still live.
    pub async fn bearer(&self, token: &str) -> Result<(AccessClaims, GrantRecord), BearerError> {
        let verified = self
            .signing
            .get()
            .verify_as::<AccessClaims>(token, &Alg::ALL)
            .map_err(|_| BearerError::InvalidToken)?;
        if verified.typ.as_deref() != Some(ACCESS_TOKEN_TYP) {
            return Err(BearerError::InvalidToken);
        }
        let claims = verified.claims;
        let now = self.now();
        if !rules::access_token_current(&claims, &self.issuer, now) {
            return Err(BearerError::InvalidToken);
        }
        let gid = GrantId::parse(&claims.gid).ok_or(BearerError::InvalidToken)?;
        let grant = self
            .store
            .live_grant(&gid, now)
            .await?
            .filter(|g| g.client_id == claims.client_id && g.user_id.as_str() == claims.sub)
            .filter(|g| self.in_use(g, now))
            .ok_or(BearerError::InvalidToken)?;
        Ok((claims, grant))
    }

    /// The userinfo response (OpenID Connect Core §5.3) for a bearer access token.
    pub async fn userinfo(&self, token: &str) -> Result<Value, BearerError> {
        let (claims, grant) = self.bearer(token).await?;
        if !claims.scope.split(' ').any(|s| s == "openid") {
            return Err(BearerError::InsufficientScope);
        }
        let mut grant = grant;
        // The token's scope (a refresh may have narrowed it), not the grant's.
        grant.scope = claims.scope.clone();
        let mut out = json!({ "sub": claims.sub });
        if let Value::Object(extra) =
            serde_json::to_value(rules::user_claims(&grant)).unwrap_or_default()
        {
            if let Value::Object(map) = &mut out {
                map.extend(extra);
            }
        }
        Ok(out)
    }

    /// RFC 7662: what `client` may learn about `token` (one of its own access or refresh
    /// tokens); anything else is `{"active": false}`.
    pub async fn introspect(&self, client: &OidcClient, token: &str) -> anyhow::Result<Value> {
        let inactive = json!({ "active": false });
        match self.bearer(token).await {
            Ok((claims, _)) if claims.client_id == client.id => {
                return Ok(json!({
                    "active": true,
                    "token_type": "access_token",
                    "scope": claims.scope,
                    "client_id": claims.client_id,
                    "sub": claims.sub,
                    "aud": claims.aud,
                    "iss": claims.iss,
                    "iat": claims.iat,
                    "exp": claims.exp,
                    "sid": claims.sid,
                    "jti": claims.jti,
                }))
            }
            Ok(_) | Err(BearerError::InvalidToken | BearerError::InsufficientScope) => {}
            Err(BearerError::Internal(e)) => return Err(e),
        }
        let hash = self.keys.oauth_hash("refresh", token);
        let now = self.now();
        let Some(found) = self
            .store
            .refresh_token_state(&hash, &client.id, now)
            .await?
            .filter(|f| self.in_use(&f.grant, now))
        else {
            return Ok(inactive);
        };
        Ok(json!({
            "active": true,
            "token_type": "refresh_token",
            "scope": found.grant.scope,
            "client_id": found.grant.client_id,
            "sub": found.grant.user_id.to_string(),
            "iss": self.issuer,
            "exp": found.expires_at.unix_timestamp(),
            "sid": found.grant.session_id.to_string(),
        }))
    }

    /// RFC 7009: revokes the grant behind one of `client`'s refresh or access tokens (and so
    /// every token of it). Unknown tokens and other clients' tokens change nothing.
    pub async fn revoke(&self, client: &OidcClient, token: &str) -> anyhow::Result<()> {
        let grant = match self.bearer(token).await {
            Ok((claims, grant)) if claims.client_id == client.id => Some(grant.id),
            Ok(_) | Err(BearerError::InvalidToken | BearerError::InsufficientScope) => {
                self.store
                    .refresh_token_grant(&self.keys.oauth_hash("refresh", token), &client.id)
                    .await?
            }
            Err(BearerError::Internal(e)) => return Err(e),
        };
        if let Some(grant) = grant {
            self.store.revoke_grant(&grant, &client.id).await?;
            tracing::info!(event = "oidc_revoked", client_id = %client.id, grant_id = %grant, "grant revoked");
        }
        Ok(())
    }

    /// Whether the grant's session is still in use (the inactivity timeout).
    fn in_use(&self, grant: &GrantRecord, now: OffsetDateTime) -> bool {
        crate::auth::session_in_use(grant.session_last_active_at, self.session_idle_timeout, now)
    }

    /// The claims of an ID token this instance issued (`id_token_hint`): signature and issuer
    /// checked, expiry not (a hint may be old, OpenID Connect RP-Initiated Logout §2).
    pub fn id_token_hint(&self, token: &str) -> Option<IdClaims> {
        let v = self
            .signing
            .get()
            .verify_as::<IdClaims>(token, &Alg::ALL)
            .ok()?;
        (v.typ.as_deref() != Some(ACCESS_TOKEN_TYP) && v.claims.iss == self.issuer)
            .then_some(v.claims)
    }

    /// Whether `sid` (from an ID token) names this session.
    pub fn same_session(user: &CurrentUser, sid: &str) -> bool {
        SessionId::parse(sid).is_some_and(|s| s == user.session_id)
    }
}
