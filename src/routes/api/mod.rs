//! The custom-flow JSON API under `/v1/client` (docs/api.md): Clerk-shaped SignUp / SignIn
//! objects over the same `auth::` state machine as the hosted pages. This module holds what
//! every endpoint shares: the client (cookies or a native bearer token), the CORS decision (an
//! exact origin allowlist), the unsafe-request checks, JSON bodies and the answer to a code.
//! Cookies, tokens and CORS headers are written on every answer, errors included, by
//! `routes::finish`.

mod backend;
mod client;
mod errors;
mod me;
mod me_identifiers;
mod objects;
mod openapi;
mod sign_ins;
mod sign_ups;

use std::future::{ready, Ready};

use actix_web::http::{header, Method, StatusCode};
use actix_web::{dev::Payload, web, FromRequest, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

pub use errors::{ApiError, Refusal};

use super::finish::{pending, Cors};
use super::flow_input::{from_allowed_site, hand_over_session, plausible_token};
use super::paths::api as paths;
use super::Ctx;
use crate::auth::{AttemptTarget, Attempted, Client, CurrentUser, FlowError, FlowKind, FlowView};
use crate::crypto::random_token;
use crate::domain::{FlowId, OtpCode};

/// `pattern` with its `{kind}` segment limited to the two collections of identifiers.
pub(super) fn identifiers_pattern(pattern: &str) -> String {
    pattern.replace("{kind}", "{kind:(email_addresses|phone_numbers)}")
}

/// The API's routes (mounted at the root by `routes::configure`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(paths::OPENAPI, web::get().to(openapi::document))
        .route(paths::CLIENT, web::get().to(client::show))
        .route(paths::CLIENT_SESSION, web::delete().to(client::end_session))
        .route(
            paths::CLIENT_SESSION_TOKENS,
            web::post().to(client::issue_token),
        )
        .route(paths::ME, web::get().to(me::show))
        .route(paths::ME, web::patch().to(me::update))
        .route(paths::ME, web::delete().to(me::delete))
        .route(paths::ME_SESSIONS, web::get().to(me::sessions))
        .route(paths::ME_SESSION_REVOKE, web::post().to(me::revoke_session))
        .route(
            paths::ME_REVERIFICATION,
            web::post().to(me::start_reverification),
        )
        .route(
            paths::ME_REVERIFICATION_ATTEMPT,
            web::post().to(me::attempt_reverification),
        )
        .route(
            &identifiers_pattern(paths::ME_IDENTIFIERS),
            web::post().to(me_identifiers::create),
        )
        .route(
            &identifiers_pattern(paths::ME_IDENTIFIER),
            web::delete().to(me_identifiers::delete),
        )
        .route(
            &identifiers_pattern(paths::ME_IDENTIFIER_PREPARE),
            web::post().to(me_identifiers::prepare),
        )
        .route(
            &identifiers_pattern(paths::ME_IDENTIFIER_ATTEMPT),
            web::post().to(me_identifiers::attempt),
        )
        .route(paths::SESSIONS_VERIFY, web::post().to(backend::verify))
        .route(paths::USER, web::get().to(backend::user))
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
    /// `Authorization: Bearer <client token>` (minted, and handed back, on first contact with
    /// `?_is_native=1`).
    Native(String),
    /// `Authorization: Bearer sk_…`: the operator's server on the backend API (checked by
    /// the handler against `api.secret_keys`; the client API refuses it).
    Backend(String),
}

/// The per-request context of an API handler.
pub struct ApiCtx {
    pub ctx: Ctx,
    identity: Identity,
    bad_authorization: bool,
    /// The request's `Origin` if CORS answers it (decided once, in the extractor).
    allowed_origin: Option<String>,
}

/// Records the API's CORS decision for `finish`: the request's `Origin` is answered with CORS
/// headers when it is this instance's or one in `cors_allowed_origins`. Returns that origin.
pub(super) fn decide_cors(ctx: &Ctx) -> Option<String> {
    let settings = &ctx.state.settings;
    let allowed_origin = ctx
        .req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| {
            settings.public_origin.matches_header(o)
                || settings
                    .http
                    .cors_allowed_origins
                    .iter()
                    .any(|a| a.matches_header(o))
        })
        .map(str::to_string);
    pending(&ctx.req, |p| {
        p.cors = Some(Cors {
            allowed_origin: allowed_origin.clone(),
        })
    });
    allowed_origin
}

impl FromRequest for ApiCtx {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let ctx = match Ctx::from_request(req, payload).into_inner() {
            Ok(ctx) => ctx,
            Err(e) => return ready(Err(e)),
        };
        let allowed_origin = decide_cors(&ctx);
        let mut bad_authorization = false;
        let bearer = req.headers().get(header::AUTHORIZATION).map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
        });
        let identity = match bearer {
            Some(Some(key)) if key.starts_with("sk_") => Identity::Backend(key.to_string()),
            Some(value) => match value.filter(|t| plausible_token(t)) {
                Some(token) => Identity::Native(token.to_string()),
                None => {
                    bad_authorization = true;
                    Identity::Browser(ctx.browser())
                }
            },
            None if req.query_string().split('&').any(|p| p == "_is_native=1") => {
                let token = random_token(32);
                ctx.hand_client_token(&token);
                Identity::Native(token)
            }
            None => Identity::Browser(ctx.browser()),
        };
        ready(Ok(ApiCtx {
            ctx,
            identity,
            bad_authorization,
            allowed_origin,
        }))
    }
}

impl ApiCtx {
    /// The caller as the state machine sees it.
    pub fn client(&self) -> Client<'_> {
        let mut client = self.ctx.client();
        match &self.identity {
            Identity::Native(token) => {
                client.browser = Some(token);
                client.native = true;
            }
            Identity::Browser(browser) => client.browser = Some(browser),
            Identity::Backend(_) => {}
        }
        client
    }

    /// The secret key of a backend API call (`Authorization: Bearer sk_…`).
    pub fn secret_key(&self) -> Option<&str> {
        match &self.identity {
            Identity::Backend(key) => Some(key),
            _ => None,
        }
    }

    /// The request's `Origin` when it is Latchkey's own or an allowed CORS origin.
    pub fn allowed_origin(&self) -> Option<&str> {
        self.allowed_origin.as_deref()
    }

    /// Whether this client uses cookies (a browser) rather than a bearer token.
    pub fn is_browser(&self) -> bool {
        matches!(self.identity, Identity::Browser(_))
    }

    /// Refuses what no endpoint accepts: a malformed bearer token, an unsafe request from an
    /// origin outside the allowlist (or one a browser says is cross-site) and, for requests with
    /// a body, anything but JSON.
    pub fn check(&self, with_body: bool) -> Result<(), ApiError> {
        if self.bad_authorization || self.secret_key().is_some() {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "authorization_invalid",
                "The Authorization header is not a client token.",
                "Send `Authorization: Bearer <client token>` as returned by the first response to `?_is_native=1`, or no Authorization header at all.",
            )
            .into());
        }
        let req = &self.ctx.req;
        if matches!(*req.method(), Method::GET | Method::HEAD) {
            return Ok(());
        }
        let settings = &self.ctx.state.settings;
        if !from_allowed_site(
            req,
            &settings.public_origin,
            &settings.http.cors_allowed_origins,
        ) {
            tracing::warn!(event = "api_origin_refused", path = %req.path(), ip = self.client().ip.unwrap_or("-"), "API request from an origin that is not allowed");
            return Err(origin_not_allowed().into());
        }
        if with_body {
            let json = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
            if !json {
                return Err(Refusal::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "Send a JSON body.",
                    "Unsafe requests to the API need `Content-Type: application/json`.",
                )
                .into());
            }
        }
        Ok(())
    }

    /// The signed-in user of this client, if any.
    /// A sign-in or sign-up as its client sees it. A finished one stays readable by the client
    /// that holds the session it created (its cookie or token changed at the sign-in), with
    /// `status: "complete"` and `created_session_id`, so a client that lost the answer learns
    /// the outcome; no token is handed out by the read.
    pub async fn readable_flow(&self, id: &FlowId, kind: FlowKind) -> Result<FlowView, ApiError> {
        let auth = &self.ctx.state.auth;
        match auth.flow_for_api(id, kind, &self.client()).await {
            Err(FlowError::NotFound) => match self.current_user().await? {
                Some(user) => Ok(auth
                    .finished_flow_for_session(id, kind, &user.session_id)
                    .await?),
                None => Err(FlowError::NotFound.into()),
            },
            other => Ok(other?),
        }
    }

    pub async fn current_user(&self) -> Result<Option<CurrentUser>, ApiError> {
        let auth = &self.ctx.state.auth;
        let found = match &self.identity {
            Identity::Native(token) => auth.current_client_user(token).await?,
            Identity::Browser(_) => match self.ctx.session_token() {
                Some(token) => auth.current_user(&token).await?,
                None => None,
            },
            // A server holds no session of its own.
            Identity::Backend(_) => None,
        };
        Ok(found)
    }

    /// `attempt_verification` / `attempt_first_factor`: the code checked against the
    /// verification of the strategy; returns the outcome and the session the client held before.
    pub async fn attempt_code(
        &self,
        id: &FlowId,
        kind: FlowKind,
        body: &objects::AttemptCode,
    ) -> Result<(Attempted, Option<CurrentUser>), ApiError> {
        let code = OtpCode::parse(&body.code, self.ctx.state.settings.auth.code_length)
            .map_err(|e| Refusal::format_invalid("code", &e.to_string()))?;
        let target = AttemptTarget::Kind(body.strategy.kind());
        let previous = self.current_user().await?;
        let outcome = self
            .ctx
            .state
            .auth
            .attempt(id, kind, &code, &target, &self.client())
            .await?;
        Ok((outcome, previous))
    }

    /// After a correct code: a completed flow's session goes to the client (see
    /// [`hand_over_session`]); a verified sign-up step needs nothing more.
    pub async fn settle_attempt(&self, (outcome, previous): (Attempted, Option<CurrentUser>)) {
        if let Attempted::SignedIn(signed_in) = outcome {
            hand_over_session(&self.ctx, &self.client(), &signed_in, previous).await;
        }
    }

    /// Reads a JSON body of at most `max_body_bytes`; an empty body reads as `{}`.
    pub async fn body<T: DeserializeOwned>(
        &self,
        mut payload: web::Payload,
    ) -> Result<T, ApiError> {
        let limit = self.ctx.state.settings.http.max_body_bytes;
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|_| Refusal::malformed("The request body could not be read."))?;
            if body.len() + chunk.len() > limit {
                return Err(Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request_body_too_large",
                    "The request body is too large.",
                    &format!("Bodies may be at most {limit} bytes."),
                )
                .into());
            }
            body.extend_from_slice(&chunk);
        }
        let bytes: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &body
        };
        serde_json::from_slice(bytes).map_err(|e| Refusal::from_json(e).into())
    }
}

fn origin_not_allowed() -> Refusal {
    Refusal::new(
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
        "This origin may not call the API.",
        "Requests with credentials are accepted only from Latchkey's own origin and the origins in `cors_allowed_origins`.",
    )
}

/// Any other path or method under `/v1`: a structured 404, like every API error.
/// A path no route took: 405 with `Allow` for an endpoint of the API with another method, else
/// 404.
async fn unknown(api: ApiCtx) -> Result<HttpResponse, ApiError> {
    let allowed = openapi::methods_of(api.ctx.req.path());
    if allowed.is_empty() {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "resource_not_found",
            "Not found.",
            "There is no such endpoint (see /v1/openapi.json).",
        )
        .into());
    }
    let allow = allowed.join(", ");
    let mut refusal = Refusal::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This request is not supported.",
        &format!(
            "{} is not supported here; this endpoint takes {allow}.",
            api.ctx.req.method()
        ),
    );
    refusal.allow = Some(allow);
    Err(refusal.into())
}

/// CORS preflight: only for allowed origins, and never a wildcard. A preflight carries no
/// credentials, so it gets no cookie either.
async fn preflight(ctx: Ctx) -> Result<HttpResponse, ApiError> {
    if decide_cors(&ctx).is_none() {
        return Err(origin_not_allowed().into());
    }
    Ok(HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, DELETE"))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Content-Type, Authorization",
        ))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
        .finish())
}
