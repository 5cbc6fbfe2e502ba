//! `/v1/client`: the client (its session and user) and signing out.

use actix_web::web::{self, Json};

use super::errors::{ApiError, ErrorsBody, Refusal};
use super::objects::{ClientObject, SessionToken};
use super::ApiCtx;
use crate::tokens::Claims;

#[utoipa::path(get, path = super::paths::CLIENT, tag = "client",
    responses((status = 200, body = ClientObject)))]
pub async fn show(api: ApiCtx) -> Result<Json<ClientObject>, ApiError> {
    api.check(false)?;
    let user = api.current_user().await?;
    Ok(Json(ClientObject::new(user.as_ref())))
}

#[utoipa::path(delete, path = super::paths::CLIENT_SESSION, tag = "client",
    params(("id" = String, Path, description = "The session's id")),
    responses((status = 200, body = ClientObject, description = "Signed out"), (status = 404, body = ErrorsBody)))]
pub async fn end_session(
    api: ApiCtx,
    id: web::Path<String>,
) -> Result<Json<ClientObject>, ApiError> {
    api.check(false)?;
    let user = api.current_user().await?;
    let Some(user) = user.filter(|u| u.session_id.as_str() == id.as_str()) else {
        return Err(Refusal::not_found().into());
    };
    api.ctx.state.auth.sign_out(&user, &api.client()).await?;
    if api.is_browser() {
        api.ctx.remove_session_cookie();
    }
    Ok(Json(ClientObject::new(None)))
}

#[utoipa::path(post, path = super::paths::CLIENT_SESSION_TOKENS, tag = "client",
    params(("id" = String, Path, description = "The session's id")),
    responses((status = 200, body = SessionToken, description = "A session token valid for 60 seconds"), (status = 404, body = ErrorsBody)))]
/// A session token (a JWT valid 60 s) for the client's live session `id`, for the app's own
/// backend to verify against `/.well-known/jwks.json` or with `POST /v1/sessions/verify`.
/// `azp` is the calling page's origin (Latchkey's own or an allowed CORS origin).
pub async fn issue_token(
    api: ApiCtx,
    id: web::Path<String>,
) -> Result<Json<SessionToken>, ApiError> {
    api.check(true)?;
    let user = api.current_user().await?;
    let Some(user) = user.filter(|u| u.session_id.as_str() == id.as_str()) else {
        return Err(Refusal::not_found().into());
    };
    let state = &api.ctx.state;
    let public = state.settings.public_origin.to_string();
    let azp = api.allowed_origin().unwrap_or(&public).to_string();
    let claims = Claims::new(
        &public,
        user.user_id.as_str(),
        user.session_id.as_str(),
        &azp,
        state.auth.now(),
    );
    Ok(Json(SessionToken {
        object: "token",
        jwt: state.signing.get().sign(&claims),
    }))
}
