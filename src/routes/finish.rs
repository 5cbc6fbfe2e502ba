//! The one place every answer is finished, whatever produced it (a page, a redirect, JSON, an
//! extractor's refusal, a typed error): registered once around the whole app in `startup.rs`.
//!
//! - A typed error ([`PageError`], [`ApiError`], and [`NotAdmitted`] from admission: load
//!   shedding, the per-client cap, slow bodies) becomes its page or JSON body here, because
//!   only here is the request known: its id (shown, and logged with an unexpected failure) and
//!   the instance's settings. The finished answer no longer carries the error, so the request
//!   logger does not log it a second time.
//! - What the request asked to hand to the client ([`Pending`]: the browser cookie, the session
//!   cookie or its removal, the device cookie, a native client's token, the API's CORS headers)
//!   is added to every answer, errors included.
//!
//! Security headers come from `DefaultHeaders`, outside this.

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse};

use super::api::ApiError;
use super::{AppState, Ctx, NotAdmitted, PageError};

/// What a request hands to its client, on whatever answer it gets. Filled by [`Ctx`] and the
/// API's context; written by [`finish`].
#[derive(Default)]
pub(super) struct Pending {
    /// The browser cookie to set: minted for a request that had none, or the fresh one of a
    /// sign-in. One value: a later one replaces an earlier.
    pub browser: Option<String>,
    pub session: Option<SessionCookie>,
    /// The device cookie of a sign-in (a trusted browser of the account from now on).
    pub device: Option<String>,
    /// `Authorization: Bearer …` for a native client: its first token, or a sign-in's new one.
    pub client_token: Option<String>,
    /// Set on API requests: `Vary: Origin`, and the CORS headers when the origin is allowed.
    pub cors: Option<Cors>,
}

pub(super) enum SessionCookie {
    /// A new session's token.
    Issue(String),
    /// The removal cookie (signed out).
    Remove,
}

/// The API's CORS decision for this request.
pub(super) struct Cors {
    /// The request's `Origin`, when it is one the API answers with CORS headers (never a wildcard).
    pub allowed_origin: Option<String>,
}

/// Runs `f` on this request's [`Pending`].
pub(super) fn pending<R>(req: &HttpRequest, f: impl FnOnce(&mut Pending) -> R) -> R {
    f(req.extensions_mut().get_or_insert_with(Pending::default))
}

/// The middleware (`actix_web::middleware::from_fn(routes::finish)`).
pub async fn finish(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let res = next.call(req).await?;
    let mut res = match written_error(&res) {
        Some(answer) => res.into_response(answer),
        None => res,
    };
    hand_over(&mut res);
    leave_small_bodies_uncompressed(&mut res);
    Ok(res)
}

/// Bodies below this many bytes are sent as they are: gzip would save a few bytes at most
/// (its own header and trailer are 18) for more CPU than the rest of a small JSON answer.
const COMPRESS_FROM_BYTES: u64 = 1024;

/// Marks a small body `Content-Encoding: identity`, which the compression middleware (outside
/// this one) leaves alone; [`unmark_identity`] (outside that) takes the mark off again.
fn leave_small_bodies_uncompressed(res: &mut ServiceResponse) {
    use actix_web::body::{BodySize, MessageBody};
    let small = match res.response().body().size() {
        BodySize::Sized(n) => n < COMPRESS_FROM_BYTES,
        BodySize::None => true,
        BodySize::Stream => false,
    };
    let headers = res.response_mut().headers_mut();
    if small && !headers.contains_key(actix_web::http::header::CONTENT_ENCODING) {
        headers.insert(
            actix_web::http::header::CONTENT_ENCODING,
            actix_web::http::header::HeaderValue::from_static("identity"),
        );
    }
}

/// The page or JSON body of a typed error, if the answer is one.
fn written_error(res: &ServiceResponse) -> Option<HttpResponse> {
    let error = res.response().error()?;
    if let Some(refused) = error.as_error::<NotAdmitted>() {
        return Some(refused.answer(res.request()));
    }
    if let Some(e) = error.as_error::<PageError>() {
        let ctx = Ctx::extract(res.request()).into_inner().ok()?;
        return Some(ctx.error_response(e));
    }
    let e = error.as_error::<ApiError>()?;
    Some(e.answer(&super::context::request_id(res.request())))
}

fn hand_over(res: &mut ServiceResponse) {
    let Some(pending) = res.request().extensions_mut().remove::<Pending>() else {
        return;
    };
    let Some(state) = res.request().app_data::<web::Data<AppState>>().cloned() else {
        return;
    };
    let resp = res.response_mut();
    let cookies = &state.cookies;
    let session = pending.session.map(|s| match s {
        SessionCookie::Issue(token) => cookies.session(&token, state.settings.auth.session_ttl),
        SessionCookie::Remove => cookies.session_removal(),
    });
    let browser = pending.browser.map(|value| cookies.browser(&value));
    let device = pending
        .device
        .map(|value| cookies.device(&value, state.settings.auth.lockout.device_ttl_days));
    for cookie in session.iter().chain(browser.iter()).chain(device.iter()) {
        if let Err(e) = resp.add_cookie(cookie) {
            tracing::error!(error = %e, "could not set a cookie");
        }
    }
    let headers = resp.headers_mut();
    if let Some(token) = pending.client_token {
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
            headers.insert(header::AUTHORIZATION, value);
        }
    }
    if let Some(cors) = pending.cors {
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = cors
            .allowed_origin
            .and_then(|o| HeaderValue::from_str(&o).ok())
        {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("Authorization, Retry-After"),
            );
        }
    }
}

/// Outside the compression middleware: removes the `Content-Encoding: identity` mark that kept
/// a small body from being compressed (the header is for that middleware, not for clients).
pub async fn unmark_identity(
    req: ServiceRequest,
    next: Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let mut res = next.call(req).await?;
    let headers = res.response_mut().headers_mut();
    if headers
        .get(actix_web::http::header::CONTENT_ENCODING)
        .is_some_and(|v| v == "identity")
    {
        headers.remove(actix_web::http::header::CONTENT_ENCODING);
    }
    Ok(res)
}
