//! The backend API, for the operator's servers: authenticated with a secret key
//! (`Authorization: Bearer sk_…`, one of `api.secret_keys`), never with cookies.

use actix_web::http::StatusCode;
use actix_web::web::{self, Json};
use subtle::ConstantTimeEq;

use super::errors::{ApiError, ErrorsBody, Refusal};
use super::objects::{User, VerifiedToken, VerifyToken};
use super::ApiCtx;
use crate::domain::{AuditKind, AuditOutcome, SessionId, UserId};
use crate::tokens::check_claims;

/// Refuses a call without one of the configured secret keys (401, written to the audit log).
/// Keys are compared as keyed hashes, in constant time, against every configured key.
async fn authorize(api: &ApiCtx) -> Result<(), ApiError> {
    let state = &api.ctx.state;
    let presented = api.secret_key().map(|k| state.auth.keys().api_key_hash(k));
    let known = presented.is_some_and(|p| {
        state
            .backend_keys
            .iter()
            .fold(false, |found, k| found | bool::from(k.ct_eq(&p)))
    });
    if known {
        return Ok(());
    }
    let client = api.client();
    tracing::warn!(event = "backend_key_refused", path = %api.ctx.req.path(), ip = client.ip.unwrap_or("-"), "backend API call without a valid secret key");
    let event = state.auth.audit_event(
        AuditKind::BackendKeyRefused,
        AuditOutcome::Refused,
        None,
        None,
        None,
        &client,
    );
    state.auth.record_event(&event).await;
    Err(Refusal::new(
        StatusCode::UNAUTHORIZED,
        "secret_key_invalid",
        "A valid secret key is required.",
        "Send `Authorization: Bearer sk_…` with one of the instance's `api.secret_keys`.",
    )
    .into())
}

#[utoipa::path(post, path = super::paths::SESSIONS_VERIFY, tag = "backend",
    request_body = VerifyToken,
    responses((status = 200, body = VerifiedToken), (status = 401, body = ErrorsBody)))]
/// Whether a session token is valid now and its session still live (RFC 7662's answer shape):
/// the signature (EdDSA, a key of the JWKS; checked once per token and process), the issuer,
/// `nbf ≤ now < exp`, then the session (from the cache of live sessions); anything else is
/// `{"active": false}` and nothing more.
pub async fn verify(api: ApiCtx, payload: web::Payload) -> Result<Json<VerifiedToken>, ApiError> {
    authorize(&api).await?;
    let body: VerifyToken = api.body(payload).await?;
    let state = &api.ctx.state;
    let inactive = VerifiedToken {
        active: false,
        sub: None,
        sid: None,
        azp: None,
        iss: None,
        iat: None,
        exp: None,
    };
    let now = state.auth.now();
    let claims = match state.verified_tokens.get(&body.token) {
        Some(claims) => claims,
        None => {
            let Ok(claims) = state.signing.get().verify(&body.token) else {
                return Ok(Json(inactive));
            };
            state
                .verified_tokens
                .insert(&body.token, &claims, now.unix_timestamp());
            claims
        }
    };
    let iss = state.settings.public_origin.to_string();
    if check_claims(&claims, &iss, now).is_err() {
        return Ok(Json(inactive));
    }
    let Some(sid) = SessionId::parse(&claims.sid) else {
        return Ok(Json(inactive));
    };
    let live = state
        .auth
        .session_owner(&sid)
        .await?
        .is_some_and(|owner| owner.as_str() == claims.sub);
    if !live {
        return Ok(Json(inactive));
    }
    Ok(Json(VerifiedToken {
        active: true,
        sub: Some(claims.sub),
        sid: Some(claims.sid),
        azp: Some(claims.azp),
        iss: Some(claims.iss),
        iat: Some(claims.iat),
        exp: Some(claims.exp),
    }))
}

#[utoipa::path(get, path = super::paths::USER, tag = "backend",
    params(("id" = String, Path, description = "The user's id (`sub` of a session token)")),
    responses((status = 200, body = User), (status = 401, body = ErrorsBody), (status = 404, body = ErrorsBody)))]
/// A user by id, for the operator's servers: the same User object the client API shows.
pub async fn user(api: ApiCtx, id: web::Path<String>) -> Result<Json<User>, ApiError> {
    authorize(&api).await?;
    let id = UserId::parse(&id).ok_or_else(Refusal::not_found)?;
    let found = api
        .ctx
        .state
        .auth
        .user(&id)
        .await?
        .ok_or_else(Refusal::not_found)?;
    Ok(Json(User::new(
        &id,
        &found.identifiers,
        found.created_at,
        found.first_name.as_ref(),
        found.last_name.as_ref(),
    )))
}
