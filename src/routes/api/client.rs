//! `/v1/client`: the client (its session and user) and signing out.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use super::errors::{ApiError, ErrorsBody};
use super::objects::ClientObject;
use super::sign_ups::answer;
use super::ApiCtx;

#[utoipa::path(get, path = super::paths::CLIENT, tag = "client",
    responses((status = 200, body = ClientObject)))]
pub async fn show(api: ApiCtx) -> HttpResponse {
    answer!(
        api,
        async {
            api.check(false)?;
            let user = api.current_user().await?;
            Ok(api.respond(StatusCode::OK, &ClientObject::new(user.as_ref())))
        }
        .await
    )
}

#[utoipa::path(delete, path = super::paths::CLIENT_SESSION, tag = "client",
    params(("id" = String, Path, description = "The session's id")),
    responses((status = 200, body = ClientObject, description = "Signed out"), (status = 404, body = ErrorsBody)))]
pub async fn end_session(api: ApiCtx, id: web::Path<String>) -> HttpResponse {
    answer!(
        api,
        async {
            api.check(false)?;
            let user = api.current_user().await?;
            let Some(user) = user.filter(|u| u.session_id.as_str() == id.as_str()) else {
                return Err(ApiError::not_found());
            };
            api.ctx
                .state
                .auth
                .sign_out(&user, &api.client())
                .await
                .map_err(|e| api.internal(e))?;
            let mut resp = api.respond(StatusCode::OK, &ClientObject::new(None));
            if api.is_browser() {
                let removal = api.ctx.state.cookies.session_removal();
                let _ = resp.add_cookie(&removal);
            }
            Ok(resp)
        }
        .await
    )
}
