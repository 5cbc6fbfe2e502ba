//! `/v1/client`: the client (its session and user) and signing out.

use actix_web::web::{self, Json};

use super::errors::{ApiError, ErrorsBody, Refusal};
use super::objects::ClientObject;
use super::ApiCtx;

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
