//! `/v1/client/sign_ups`: create, prepare_verification, attempt_verification, read.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use super::errors::{resend_error, start_error, ApiError, ErrorsBody};
use super::objects::{AttemptCode, CreateSignUp, PrepareVerification, SignUp};
use super::ApiCtx;
use crate::auth::{FlowKind, PrepareTarget};
use crate::domain::{Accepts, FlowId, Identifier};

const KIND: FlowKind = FlowKind::SignUp;

/// Runs a handler body, turning its error into the structured answer.
macro_rules! answer {
    ($api:expr, $body:expr) => {
        match $body {
            Ok(resp) => resp,
            Err(e) => $api.error(e),
        }
    };
}
pub(super) use answer;

fn sign_up(api: &ApiCtx, view: &crate::auth::FlowView) -> SignUp {
    SignUp::from_view(view, &api.ctx.state.settings.identifiers)
}

pub(super) fn flow_id(raw: &str) -> Result<FlowId, ApiError> {
    FlowId::parse(raw).ok_or_else(ApiError::not_found)
}

/// Re-reads a flow for its answer.
async fn current(api: &ApiCtx, id: &FlowId) -> Result<SignUp, ApiError> {
    let view = api
        .ctx
        .state
        .auth
        .flow_for_api(id, KIND, &api.client())
        .await
        .map_err(|e| settle(api, e.into()))?;
    Ok(sign_up(api, &view))
}

/// Turns an outcome's `Result<ApiError, anyhow::Error>` into the error to answer.
pub(super) fn settle(api: &ApiCtx, e: Result<ApiError, anyhow::Error>) -> ApiError {
    e.unwrap_or_else(|e| api.internal(e))
}

#[utoipa::path(post, path = super::paths::SIGN_UPS, tag = "sign_up",
    request_body = CreateSignUp,
    responses((status = 200, body = SignUp), (status = 422, body = ErrorsBody), (status = 400, body = ErrorsBody)))]
pub async fn create(api: ApiCtx, payload: web::Payload) -> HttpResponse {
    answer!(
        api,
        async {
            api.check(true)?;
            let body: CreateSignUp = api.body(payload).await?;
            let settings = &api.ctx.state.settings;
            let rules = settings.identifiers;
            let mut identifiers = Vec::new();
            for (value, enabled, param, email) in [
                (
                    &body.email_address,
                    rules.email.enabled,
                    "email_address",
                    true,
                ),
                (
                    &body.phone_number,
                    rules.phone.enabled,
                    "phone_number",
                    false,
                ),
            ] {
                let Some(value) = value else { continue };
                if !enabled {
                    return Err(ApiError::unprocessable(
                        "form_param_not_allowed",
                        "This instance does not use this kind of identifier.",
                        &format!("`{param}` is not enabled on this instance."),
                    )
                    .param(param));
                }
                let accepts = Accepts {
                    email,
                    phone: !email,
                };
                let identifier = Identifier::parse_field(value, accepts, &settings.phone_policy)
                    .map_err(|e| ApiError::format_invalid(param, &e.to_string()))?;
                identifiers.push(identifier);
            }
            if identifiers.is_empty() {
                let param = if rules.email.enabled {
                    "email_address"
                } else {
                    "phone_number"
                };
                return Err(ApiError::missing(param));
            }
            // Every required identifier up front: there is no later call to add one.
            for (required, given, param) in [
                (
                    rules.email.required,
                    body.email_address.is_some(),
                    "email_address",
                ),
                (
                    rules.phone.required,
                    body.phone_number.is_some(),
                    "phone_number",
                ),
            ] {
                if required && !given {
                    return Err(ApiError::missing(param));
                }
            }
            let id = api
                .ctx
                .state
                .auth
                .create(KIND, &identifiers, None, &api.client())
                .await
                .map_err(|e| {
                    let param = identifiers[0].kind();
                    settle(&api, start_error(e, super::objects::field_name(param)))
                })?;
            Ok(api.respond(StatusCode::OK, &current(&api, &id).await?))
        }
        .await
    )
}

#[utoipa::path(get, path = super::paths::SIGN_UP, tag = "sign_up",
    params(("id" = String, Path, description = "The sign-up's id")),
    responses((status = 200, body = SignUp), (status = 404, body = ErrorsBody)))]
pub async fn show(api: ApiCtx, id: web::Path<String>) -> HttpResponse {
    answer!(
        api,
        async {
            api.check(false)?;
            let id = flow_id(&id)?;
            Ok(api.respond(StatusCode::OK, &current(&api, &id).await?))
        }
        .await
    )
}

#[utoipa::path(post, path = super::paths::SIGN_UP_PREPARE, tag = "sign_up",
    params(("id" = String, Path, description = "The sign-up's id")),
    request_body = PrepareVerification,
    responses((status = 200, body = SignUp), (status = 404, body = ErrorsBody), (status = 409, body = ErrorsBody),
        (status = 422, body = ErrorsBody), (status = 429, body = ErrorsBody, description = "Within the resend cooldown; see Retry-After")))]
pub async fn prepare(api: ApiCtx, id: web::Path<String>, payload: web::Payload) -> HttpResponse {
    answer!(
        api,
        async {
            api.check(true)?;
            let id = flow_id(&id)?;
            let body: PrepareVerification = api.body(payload).await?;
            api.ctx
                .state
                .auth
                .prepare(
                    &id,
                    KIND,
                    &PrepareTarget::Kind(body.strategy.kind()),
                    &api.client(),
                )
                .await
                .map_err(|e| settle(&api, resend_error(e)))?;
            Ok(api.respond(StatusCode::OK, &current(&api, &id).await?))
        }
        .await
    )
}

#[utoipa::path(post, path = super::paths::SIGN_UP_ATTEMPT, tag = "sign_up",
    params(("id" = String, Path, description = "The sign-up's id")),
    request_body = AttemptCode,
    responses((status = 200, body = SignUp), (status = 404, body = ErrorsBody), (status = 409, body = ErrorsBody),
        (status = 422, body = ErrorsBody), (status = 429, body = ErrorsBody)))]
pub async fn attempt(api: ApiCtx, id: web::Path<String>, payload: web::Payload) -> HttpResponse {
    answer!(
        api,
        async {
            api.check(true)?;
            let id = flow_id(&id)?;
            let body: AttemptCode = api.body(payload).await?;
            let attempted = api.attempt_code(&id, KIND, &body).await?;
            let object = current(&api, &id).await?;
            Ok(api.answer_attempt(attempted, &object).await)
        }
        .await
    )
}
