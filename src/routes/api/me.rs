//! `/v1/me`: the signed-in person's own account (Clerk's `user` resource).

use actix_web::http::StatusCode;
use actix_web::web::{self, Json};

use super::errors::{ApiError, ErrorsBody, Refusal};
use super::objects::{MeSession, UpdateUser, User};
use super::ApiCtx;
use crate::auth::CurrentUser;
use crate::domain::PersonName;

/// The signed-in person, or 401 `signed_out`.
async fn signed_in(api: &ApiCtx) -> Result<CurrentUser, ApiError> {
    api.current_user().await?.ok_or_else(|| {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "signed_out",
            "You are signed out.",
            "This needs a signed-in session: the session cookie, or a native client token that holds one.",
        )
        .into()
    })
}

fn user_object(u: &CurrentUser) -> User {
    User::new(
        &u.user_id,
        &u.identifiers,
        u.joined_at,
        u.first_name.as_ref(),
        u.last_name.as_ref(),
    )
}

#[utoipa::path(get, path = super::paths::ME, tag = "user",
    responses((status = 200, body = User), (status = 401, body = ErrorsBody)))]
/// The signed-in person's account.
pub async fn show(api: ApiCtx) -> Result<Json<User>, ApiError> {
    api.check(false)?;
    Ok(Json(user_object(&signed_in(&api).await?)))
}

#[utoipa::path(patch, path = super::paths::ME, tag = "user",
    request_body = UpdateUser,
    responses((status = 200, body = User), (status = 401, body = ErrorsBody), (status = 422, body = ErrorsBody)))]
/// Changes the signed-in person's name: a field left out stays as it is, `""` clears it.
pub async fn update(api: ApiCtx, payload: web::Payload) -> Result<Json<User>, ApiError> {
    api.check(true)?;
    let body: UpdateUser = api.body(payload).await?;
    let user = signed_in(&api).await?;
    let part = |param: &str,
                given: Option<&str>,
                current: &Option<PersonName>|
     -> Result<Option<PersonName>, ApiError> {
        match given {
            None => Ok(current.clone()),
            Some(v) => PersonName::parse(v)
                .map_err(|e| Refusal::format_invalid(param, &e.to_string()).into()),
        }
    };
    let first = part("first_name", body.first_name.as_deref(), &user.first_name)?;
    let last = part("last_name", body.last_name.as_deref(), &user.last_name)?;
    let auth = &api.ctx.state.auth;
    auth.set_names(&user, first.clone(), last.clone(), &api.client())
        .await?;
    let mut updated = user;
    updated.first_name = first;
    updated.last_name = last;
    Ok(Json(user_object(&updated)))
}

/// Sessions listed at most (most recently active first).
const SESSIONS_LISTED: i64 = 100;

#[utoipa::path(get, path = super::paths::ME_SESSIONS, tag = "user",
    responses((status = 200, body = [MeSession]), (status = 401, body = ErrorsBody)))]
/// The signed-in person's sessions in use (their devices), newest first.
pub async fn sessions(api: ApiCtx) -> Result<Json<Vec<MeSession>>, ApiError> {
    api.check(false)?;
    let user = signed_in(&api).await?;
    let devices = api.ctx.state.auth.devices(&user, SESSIONS_LISTED).await?;
    Ok(Json(
        devices
            .iter()
            .map(|d| {
                MeSession::new(
                    d,
                    d.session_id == user.session_id,
                    crate::routes::user::device_name(d.browser.as_deref(), d.os.as_deref()),
                )
            })
            .collect(),
    ))
}
