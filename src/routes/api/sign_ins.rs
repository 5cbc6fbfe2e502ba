//! `/v1/client/sign_ins`: create, prepare_first_factor, attempt_first_factor, read.

use actix_web::web::{self, Json};

use super::errors::{ApiError, ErrorsBody, Refusal};
use super::objects::{AttemptCode, CreateSignIn, PrepareFirstFactor, SignIn, Strategy};
use super::sign_ups::flow_id;
use super::ApiCtx;
use crate::auth::{FlowKind, PrepareTarget};
use crate::domain::{FlowId, IdentifierId, Names};
use crate::routes::flow_input::sign_in_identifier;

const KIND: FlowKind = FlowKind::SignIn;

async fn current(api: &ApiCtx, id: &FlowId) -> Result<SignIn, ApiError> {
    let view = api
        .ctx
        .state
        .auth
        .flow_for_api(id, KIND, &api.client())
        .await?;
    Ok(SignIn::from_view(&view))
}

#[utoipa::path(post, path = super::paths::SIGN_INS, tag = "sign_in",
    request_body = CreateSignIn,
    responses((status = 200, body = SignIn), (status = 422, body = ErrorsBody), (status = 400, body = ErrorsBody)))]
pub async fn create(api: ApiCtx, payload: web::Payload) -> Result<Json<SignIn>, ApiError> {
    api.check(true)?;
    let body: CreateSignIn = api.body(payload).await?;
    let Some(given) = body.identifier.filter(|i| !i.trim().is_empty()) else {
        return Ok(Json(SignIn::needs_identifier(api.ctx.state.auth.now())));
    };
    let identifier = sign_in_identifier(&api.ctx, &given)
        .map_err(|e| Refusal::format_invalid("identifier", &e.to_string()))?;
    let id = api
        .ctx
        .state
        .auth
        .create(
            KIND,
            std::slice::from_ref(&identifier),
            &Names::default(),
            None,
            &api.client(),
        )
        .await
        .map_err(|e| ApiError::from_start(e, "identifier"))?;
    Ok(Json(current(&api, &id).await?))
}

#[utoipa::path(get, path = super::paths::SIGN_IN, tag = "sign_in",
    params(("id" = String, Path, description = "The sign-in's id")),
    responses((status = 200, body = SignIn), (status = 404, body = ErrorsBody)))]
pub async fn show(api: ApiCtx, id: web::Path<String>) -> Result<Json<SignIn>, ApiError> {
    api.check(false)?;
    let id = flow_id(&id)?;
    Ok(Json(SignIn::from_view(
        &api.readable_flow(&id, KIND).await?,
    )))
}

#[utoipa::path(post, path = super::paths::SIGN_IN_PREPARE, tag = "sign_in",
    params(("id" = String, Path, description = "The sign-in's id")),
    request_body = PrepareFirstFactor,
    responses((status = 200, body = SignIn), (status = 404, body = ErrorsBody), (status = 409, body = ErrorsBody),
        (status = 422, body = ErrorsBody), (status = 429, body = ErrorsBody, description = "Within the resend cooldown; see Retry-After")))]
pub async fn prepare(
    api: ApiCtx,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<Json<SignIn>, ApiError> {
    api.check(true)?;
    let id = flow_id(&id)?;
    let body: PrepareFirstFactor = api.body(payload).await?;
    let (param, raw) = match body.strategy {
        Strategy::EmailCode => ("email_address_id", body.email_address_id.as_deref()),
        Strategy::PhoneCode => ("phone_number_id", body.phone_number_id.as_deref()),
    };
    let raw = raw.ok_or_else(|| Refusal::missing(param))?;
    let identifier = IdentifierId::parse(raw)
        .ok_or_else(|| Refusal::format_invalid(param, "This is not an identifier id."))?;
    // The id must be one of the sign-in's factors, of the strategy's kind.
    let offered = api
        .ctx
        .state
        .auth
        .flow_for_api(&id, KIND, &api.client())
        .await?
        .factors
        .iter()
        .any(|f| f.identifier_id == identifier && f.kind == body.strategy.kind());
    if !offered {
        return Err(Refusal::value_invalid(
            param,
            "Use an id from `supported_first_factors` with its strategy.",
        )
        .into());
    }
    let target = PrepareTarget::Identifier(identifier);
    api.ctx
        .state
        .auth
        .prepare(&id, KIND, &target, &api.client())
        .await?;
    Ok(Json(current(&api, &id).await?))
}

#[utoipa::path(post, path = super::paths::SIGN_IN_ATTEMPT, tag = "sign_in",
    params(("id" = String, Path, description = "The sign-in's id")),
    request_body = AttemptCode,
    responses((status = 200, body = SignIn), (status = 404, body = ErrorsBody), (status = 409, body = ErrorsBody),
        (status = 422, body = ErrorsBody), (status = 429, body = ErrorsBody)))]
pub async fn attempt(
    api: ApiCtx,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<Json<SignIn>, ApiError> {
    api.check(true)?;
    let id = flow_id(&id)?;
    let body: AttemptCode = api.body(payload).await?;
    let attempted = api.attempt_code(&id, KIND, &body).await?;
    let object = current(&api, &id).await?;
    api.settle_attempt(attempted).await;
    Ok(Json(object))
}
