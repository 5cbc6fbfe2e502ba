//! `/v1/client/sign_ups`: create, prepare_verification, attempt_verification, read.

use actix_web::web::{self, Json};

use super::errors::{ApiError, ErrorsBody, Refusal};
use super::objects::{field_name, AttemptCode, CreateSignUp, PrepareVerification, SignUp};
use super::ApiCtx;
use crate::auth::{FlowKind, PrepareTarget};
use crate::domain::FlowId;
use crate::routes::flow_input::{
    sign_up_identifiers, sign_up_names, NameInputError, SignUpInputError,
};
use crate::routes::pages::NameField;

const KIND: FlowKind = FlowKind::SignUp;

pub(super) fn flow_id(raw: &str) -> Result<FlowId, ApiError> {
    FlowId::parse(raw).ok_or_else(|| Refusal::not_found().into())
}

/// Re-reads a flow for its answer.
async fn current(api: &ApiCtx, id: &FlowId) -> Result<SignUp, ApiError> {
    let view = api
        .ctx
        .state
        .auth
        .flow_for_api(id, KIND, &api.client())
        .await?;
    Ok(SignUp::from_view(
        &view,
        &api.ctx.state.settings.identifiers,
    ))
}

/// A refused name: its field and why.
fn name_error(e: NameInputError) -> ApiError {
    let param = |field| match field {
        NameField::First => "first_name",
        NameField::Last => "last_name",
    };
    match e {
        NameInputError::NotEnabled => Refusal::value_invalid(
            "first_name",
            "This instance does not ask for a name at sign-up.",
        ),
        NameInputError::Invalid(field, e) => Refusal::format_invalid(param(field), &e.to_string()),
        NameInputError::Missing(field) => Refusal::missing(param(field)),
    }
    .into()
}

fn input_error(e: SignUpInputError) -> ApiError {
    match e {
        SignUpInputError::NotEnabled(kind) => {
            let param = field_name(kind);
            Refusal::unprocessable(
                "form_param_not_allowed",
                "This instance does not use this kind of identifier.",
                &format!("`{param}` is not enabled on this instance."),
            )
            .param(param)
        }
        SignUpInputError::Invalid(kind, e) => {
            Refusal::format_invalid(field_name(kind), &e.to_string())
        }
        SignUpInputError::Missing { kind, .. } => Refusal::missing(field_name(kind)),
    }
    .into()
}

#[utoipa::path(post, path = super::paths::SIGN_UPS, tag = "sign_up",
    request_body = CreateSignUp,
    responses((status = 200, body = SignUp), (status = 422, body = ErrorsBody), (status = 400, body = ErrorsBody)))]
pub async fn create(api: ApiCtx, payload: web::Payload) -> Result<Json<SignUp>, ApiError> {
    api.check(true)?;
    let body: CreateSignUp = api.body(payload).await?;
    let identifiers = sign_up_identifiers(
        &api.ctx,
        body.email_address.as_deref(),
        body.phone_number.as_deref(),
    )
    .map_err(input_error)?;
    let names = sign_up_names(
        &api.ctx.state.settings.identifiers.name,
        body.first_name.as_deref(),
        body.last_name.as_deref(),
    )
    .map_err(name_error)?;
    let id = api
        .ctx
        .state
        .auth
        .create(KIND, &identifiers, &names, None, &api.client())
        .await
        .map_err(|e| ApiError::from_start(e, field_name(identifiers[0].kind())))?;
    Ok(Json(current(&api, &id).await?))
}

#[utoipa::path(get, path = super::paths::SIGN_UP, tag = "sign_up",
    params(("id" = String, Path, description = "The sign-up's id")),
    responses((status = 200, body = SignUp), (status = 404, body = ErrorsBody)))]
pub async fn show(api: ApiCtx, id: web::Path<String>) -> Result<Json<SignUp>, ApiError> {
    api.check(false)?;
    let id = flow_id(&id)?;
    let view = api.readable_flow(&id, KIND).await?;
    Ok(Json(SignUp::from_view(
        &view,
        &api.ctx.state.settings.identifiers,
    )))
}

#[utoipa::path(post, path = super::paths::SIGN_UP_PREPARE, tag = "sign_up",
    params(("id" = String, Path, description = "The sign-up's id")),
    request_body = PrepareVerification,
    responses((status = 200, body = SignUp), (status = 404, body = ErrorsBody), (status = 409, body = ErrorsBody),
        (status = 422, body = ErrorsBody), (status = 429, body = ErrorsBody, description = "Within the resend cooldown; see Retry-After")))]
pub async fn prepare(
    api: ApiCtx,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<Json<SignUp>, ApiError> {
    api.check(true)?;
    let id = flow_id(&id)?;
    let body: PrepareVerification = api.body(payload).await?;
    let target = PrepareTarget::Kind(body.strategy.kind());
    api.ctx
        .state
        .auth
        .prepare(&id, KIND, &target, &api.client())
        .await?;
    Ok(Json(current(&api, &id).await?))
}

#[utoipa::path(post, path = super::paths::SIGN_UP_ATTEMPT, tag = "sign_up",
    params(("id" = String, Path, description = "The sign-up's id")),
    request_body = AttemptCode,
    responses((status = 200, body = SignUp), (status = 404, body = ErrorsBody), (status = 409, body = ErrorsBody),
        (status = 422, body = ErrorsBody), (status = 429, body = ErrorsBody)))]
pub async fn attempt(
    api: ApiCtx,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<Json<SignUp>, ApiError> {
    api.check(true)?;
    let id = flow_id(&id)?;
    let body: AttemptCode = api.body(payload).await?;
    let attempted = api.attempt_code(&id, KIND, &body).await?;
    let object = current(&api, &id).await?;
    api.settle_attempt(attempted).await;
    Ok(Json(object))
}
