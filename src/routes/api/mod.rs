//! The custom-flow JSON API under `/v1/client` (docs/api.md): Clerk-shaped SignUp / SignIn
//! objects over the same `auth::` state machine as the hosted pages. This module holds what
//! every endpoint shares: the client (cookies or a native bearer token), CORS with an exact
//! origin allowlist, the unsafe-request checks, JSON bodies and structured errors.

mod client;
mod errors;
mod objects;
mod openapi;
mod sign_ins;
mod sign_ups;

use std::future::Future;
use std::pin::Pin;

use actix_web::http::{header, Method, StatusCode};
use actix_web::{dev::Payload, web, FromRequest, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use errors::ApiError;

use super::paths::api as paths;
use super::Ctx;
use crate::auth::{AttemptTarget, Attempted, Client, CurrentUser, FlowKind, SignedIn};
use crate::crypto::random_token;
use crate::domain::{FlowId, OtpCode};

/// The API's routes (mounted at the root by `routes::configure`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(paths::OPENAPI, web::get().to(openapi::document))
        .route(paths::CLIENT, web::get().to(client::show))
        .route(paths::CLIENT_SESSION, web::delete().to(client::end_session))
        .route(paths::SIGN_UPS, web::post().to(sign_ups::create))
        .route(paths::SIGN_UP, web::get().to(sign_ups::show))
        .route(paths::SIGN_UP_PREPARE, web::post().to(sign_ups::prepare))
        .route(paths::SIGN_UP_ATTEMPT, web::post().to(sign_ups::attempt))
        .route(paths::SIGN_INS, web::post().to(sign_ins::create))
        .route(paths::SIGN_IN, web::get().to(sign_ins::show))
        .route(paths::SIGN_IN_PREPARE, web::post().to(sign_ins::prepare))
        .route(paths::SIGN_IN_ATTEMPT, web::post().to(sign_ins::attempt))
        .route(paths::ANY, web::method(Method::OPTIONS).to(preflight))
        .route(paths::ANY, web::route().to(unknown));
}

/// How the caller is identified.
enum Identity {
    /// Cookies, like the hosted pages: the browser cookie (minted if the request had none).
    Browser(String),
    /// `Authorization: Bearer <client token>`; `minted` when this request was the first contact.
    Native { token: String, minted: bool },
}

/// The per-request context of an API handler.
pub struct ApiCtx {
    pub ctx: Ctx,
    identity: Identity,
    /// The request's `Origin`, if it is one the API answers with CORS headers.
    allowed_origin: Option<String>,
    origin_refused: bool,
    bad_authorization: bool,
}

fn plausible_token(v: &str) -> bool {
    v.len() == 43
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl FromRequest for ApiCtx {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let ctx = Ctx::from_request(req, payload);
        let req = req.clone();
        Box::pin(async move {
            let ctx = ctx.await?;
            let headers = req.headers();
            let mut bad_authorization = false;
            let identity = match headers.get(header::AUTHORIZATION) {
                Some(value) => match value
                    .to_str()
                    .ok()
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::trim)
                    .filter(|t| plausible_token(t))
                {
                    Some(token) => Identity::Native {
                        token: token.to_string(),
                        minted: false,
                    },
                    None => {
                        bad_authorization = true;
                        Identity::Browser(ctx.browser())
                    }
                },
                None if req.query_string().split('&').any(|p| p == "_is_native=1") => {
                    Identity::Native {
                        token: random_token(32),
                        minted: true,
                    }
                }
                None => Identity::Browser(ctx.browser()),
            };
            let settings = &ctx.state.settings;
            let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
            let allowed = origin.filter(|o| {
                settings.public_origin.matches_header(o)
                    || settings
                        .cors_allowed_origins
                        .iter()
                        .any(|a| a.matches_header(o))
            });
            let origin_refused = origin.is_some() && allowed.is_none();
            Ok(ApiCtx {
                allowed_origin: allowed.map(str::to_string),
                origin_refused,
                bad_authorization,
                identity,
                ctx,
            })
        })
    }
}

impl ApiCtx {
    /// The caller as the state machine sees it.
    pub fn client(&self) -> Client<'_> {
        let mut client = self.ctx.client();
        match &self.identity {
            Identity::Native { token, .. } => {
                client.browser = Some(token);
                client.native = true;
            }
            Identity::Browser(browser) => client.browser = Some(browser),
        }
        client
    }

    /// Refuses what no endpoint accepts: a malformed bearer token, an unsafe request from an
    /// origin outside the allowlist (or one a browser says is cross-site) and, for requests with
    /// a body, anything but JSON.
    pub fn check(&self, with_body: bool) -> Result<(), ApiError> {
        if self.bad_authorization {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authorization_invalid",
                "The Authorization header is not a client token.",
                "Send `Authorization: Bearer <client token>` as returned by the first response to `?_is_native=1`, or no Authorization header at all.",
            ));
        }
        let method = self.ctx.req.method();
        let unsafe_method = !matches!(*method, Method::GET | Method::HEAD);
        if unsafe_method {
            let site = self
                .ctx
                .req
                .headers()
                .get("sec-fetch-site")
                .and_then(|v| v.to_str().ok());
            let cross_site = matches!(site, Some("cross-site"));
            if self.origin_refused || (cross_site && self.allowed_origin.is_none()) {
                tracing::warn!(event = "api_origin_refused", path = %self.ctx.req.path(), ip = self.client().ip.unwrap_or("-"), "API request from an origin that is not allowed");
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "origin_not_allowed",
                    "This origin may not call the API.",
                    "Requests with credentials are accepted only from Latchkey's own origin and the origins in `cors_allowed_origins`.",
                ));
            }
            if with_body {
                let json = self
                    .ctx
                    .req
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(';').next())
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
                if !json {
                    return Err(ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "unsupported_media_type",
                        "Send a JSON body.",
                        "Unsafe requests to the API need `Content-Type: application/json`.",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The signed-in user of this client, if any.
    pub async fn current_user(&self) -> Result<Option<CurrentUser>, ApiError> {
        let auth = &self.ctx.state.auth;
        let found = match &self.identity {
            Identity::Native { token, .. } => auth.current_client_user(token).await,
            Identity::Browser(_) => match self.ctx.session_token() {
                Some(token) => auth.current_user(&token).await,
                None => Ok(None),
            },
        };
        found.map_err(|e| self.internal(e))
    }

    /// A JSON answer with the client's cookies or token and the CORS headers.
    pub fn respond(&self, status: StatusCode, body: &impl Serialize) -> HttpResponse {
        let mut resp = HttpResponse::build(status);
        self.decorate(&mut resp);
        resp.json(body)
    }

    /// Like [`respond`](Self::respond) for a flow that just completed: the session cookie (and a
    /// fresh browser cookie), or the native client's new token. A session the client held
    /// before (`previous`) is ended: a client holds one session, never an earlier one reused.
    pub async fn respond_signed_in(
        &self,
        status: StatusCode,
        body: &impl Serialize,
        signed_in: &SignedIn,
        previous: Option<CurrentUser>,
    ) -> HttpResponse {
        if let Some(prev) = previous.filter(|p| p.session_id != signed_in.session_id) {
            if let Err(e) = self.ctx.state.auth.sign_out(&prev, &self.client()).await {
                tracing::warn!(error = %e, "could not end the previous session");
            }
        }
        let mut resp = HttpResponse::build(status);
        self.decorate(&mut resp);
        match &signed_in.client_token {
            Some(token) => {
                resp.insert_header((header::AUTHORIZATION, format!("Bearer {token}")));
            }
            None => {
                let state = &self.ctx.state;
                resp.cookie(
                    state
                        .cookies
                        .session(&signed_in.token, state.settings.session_ttl),
                );
                resp.cookie(state.cookies.browser(&random_token(32)));
            }
        }
        resp.json(body)
    }

    /// `attempt_verification` / `attempt_first_factor`: the code checked against the
    /// verification of the strategy; returns the outcome and the session the client held before.
    pub async fn attempt_code(
        &self,
        id: &FlowId,
        kind: FlowKind,
        body: &objects::AttemptCode,
    ) -> Result<(Attempted, Option<CurrentUser>), ApiError> {
        let code = OtpCode::parse(&body.code, self.ctx.state.settings.code_length)
            .map_err(|e| ApiError::format_invalid("code", &e.to_string()))?;
        let target = AttemptTarget::Kind(body.strategy.kind());
        let previous = self.current_user().await?;
        let outcome = self
            .ctx
            .state
            .auth
            .attempt(id, kind, &code, &target, &self.client())
            .await
            .map_err(|e| errors::attempt_error(e).unwrap_or_else(|e| self.internal(e)))?;
        Ok((outcome, previous))
    }

    /// The answer to a correct code: the object, and the new session if the flow completed.
    pub async fn answer_attempt(
        &self,
        (outcome, previous): (Attempted, Option<CurrentUser>),
        object: &impl Serialize,
    ) -> HttpResponse {
        match outcome {
            Attempted::SignedIn(signed_in) => {
                self.respond_signed_in(StatusCode::OK, object, &signed_in, previous)
                    .await
            }
            Attempted::NextVerification => self.respond(StatusCode::OK, object),
        }
    }

    fn decorate(&self, resp: &mut actix_web::HttpResponseBuilder) {
        match &self.identity {
            Identity::Browser(_) => self.ctx.attach_cookies(resp),
            Identity::Native { token, minted } => {
                if *minted {
                    resp.insert_header((header::AUTHORIZATION, format!("Bearer {token}")));
                }
            }
        }
        cors_headers(resp, self.allowed_origin.as_deref());
    }

    pub fn error(&self, e: ApiError) -> HttpResponse {
        let mut resp = HttpResponse::build(e.status);
        self.decorate(&mut resp);
        if let Some(secs) = e.retry_after {
            resp.insert_header((header::RETRY_AFTER, secs.max(1)));
        }
        resp.json(e.body())
    }

    /// An unexpected failure: logged with the request id, answered 500 naming it (or 503 with
    /// `Retry-After` when the database cannot be reached).
    pub fn internal(&self, e: anyhow::Error) -> ApiError {
        let id = &self.ctx.request_id;
        if crate::store::is_unavailable_error(&e) {
            tracing::error!(request_id = %id, error = format!("{e:#}"), "database unavailable");
            return ApiError::unavailable();
        }
        tracing::error!(request_id = %id, error = format!("{e:#}"), "API request failed");
        ApiError::internal(id)
    }

    /// Reads a JSON body of at most `max_body_bytes`; an empty body reads as `{}`.
    pub async fn body<T: DeserializeOwned>(
        &self,
        mut payload: web::Payload,
    ) -> Result<T, ApiError> {
        let limit = self.ctx.state.settings.max_body_bytes;
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|_| ApiError::malformed("The request body could not be read."))?;
            if body.len() + chunk.len() > limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request_body_too_large",
                    "The request body is too large.",
                    &format!("Bodies may be at most {limit} bytes."),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let bytes: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &body
        };
        serde_json::from_slice(bytes).map_err(ApiError::from_json)
    }
}

fn cors_headers(resp: &mut actix_web::HttpResponseBuilder, origin: Option<&str>) {
    resp.insert_header((header::VARY, "Origin"));
    if let Some(origin) = origin {
        resp.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.to_string()))
            .insert_header((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true"))
            .insert_header((
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                "Authorization, Retry-After",
            ));
    }
}

/// Any other path or method under `/v1`: a structured 404, like every API error.
async fn unknown(api: ApiCtx) -> HttpResponse {
    api.error(ApiError::new(
        StatusCode::NOT_FOUND,
        "resource_not_found",
        "Not found.",
        "There is no such endpoint (see /v1/openapi.json).",
    ))
}

/// Whether this client uses cookies (a browser) rather than a bearer token.
impl ApiCtx {
    pub fn is_browser(&self) -> bool {
        matches!(self.identity, Identity::Browser(_))
    }
}

/// CORS preflight: only for allowed origins, and never a wildcard.
async fn preflight(api: ApiCtx) -> HttpResponse {
    if api.allowed_origin.is_none() {
        return api.error(ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "This origin may not call the API.",
            "Requests with credentials are accepted only from Latchkey's own origin and the origins in `cors_allowed_origins`.",
        ));
    }
    let mut resp = HttpResponse::NoContent();
    cors_headers(&mut resp, api.allowed_origin.as_deref());
    resp.insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, DELETE"))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Content-Type, Authorization",
        ))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
        .finish()
}
