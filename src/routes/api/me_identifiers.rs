//! `/v1/me/email_addresses` and `/v1/me/phone_numbers`: the signed-in person adds an email
//! address or phone number (create, prepare_verification, attempt_verification, as Clerk's
//! `user.createEmailAddress` → `emailAddress.prepareVerification` → `attemptVerification`) and
//! removes one. An identifier joins the account only once its code is verified; until then it
//! is addressed by the id it will have. The same `auth` functions as the `/user` page.

use actix_web::web::{self, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::errors::{ApiError, ErrorsBody, Refusal};
use super::me::{profile_error, session_client, signed_in};
use super::objects::{field_name, IdentifierObject};
use super::ApiCtx;
use crate::auth::{AttemptTarget, Attempted, CurrentUser, FlowKind, PrepareTarget};
use crate::domain::{FlowId, IdentifierId, IdentifierKind, OtpCode};
use crate::routes::flow_input::identifier_of_kind;

/// The kind a path's collection names: `email_addresses` or `phone_numbers` (the URL map's
/// pattern lets no other through).
fn kind_of(collection: &str) -> IdentifierKind {
    match collection {
        "phone_numbers" => IdentifierKind::Phone,
        _ => IdentifierKind::Email,
    }
}

/// `POST /v1/me/{kind}`: `{"email_address": …}` or `{"phone_number": …}`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIdentifier {
    #[serde(default)]
    pub email_address: Option<String>,
    #[serde(default)]
    pub phone_number: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentifierCode {
    pub code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedIdentifier {
    pub id: String,
    /// `email_address` or `phone_number`.
    pub object: &'static str,
    pub deleted: bool,
}

/// The pending addition `raw` names, of this session: 404 otherwise.
async fn pending(api: &ApiCtx, user: &CurrentUser, raw: &str) -> Result<FlowId, ApiError> {
    let id = IdentifierId::parse(raw).ok_or_else(Refusal::not_found)?;
    let found = api.ctx.state.auth.pending_addition(user, &id).await?;
    Ok(found.ok_or_else(Refusal::not_found)?)
}

/// The object of a pending addition, as its flow shows it.
async fn pending_object(
    api: &ApiCtx,
    user: &CurrentUser,
    flow: &FlowId,
) -> Result<IdentifierObject, ApiError> {
    let view = api
        .ctx
        .state
        .auth
        .flow(flow, FlowKind::AddIdentifier, &session_client(api, user))
        .await?;
    let v = &view.verification;
    let id = v
        .identifier_id
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("an addition has its identifier's id"))?;
    Ok(IdentifierObject::new(id, v.kind, &v.value, "unverified"))
}

#[utoipa::path(post, path = super::paths::ME_IDENTIFIERS, tag = "user",
    params(("kind" = String, Path, description = "`email_addresses` or `phone_numbers`")),
    request_body = CreateIdentifier,
    responses((status = 200, body = IdentifierObject), (status = 401, body = ErrorsBody), (status = 422, body = ErrorsBody), (status = 429, body = ErrorsBody)))]
/// Adds an email address or phone number, unverified: nothing is sent until
/// `prepare_verification`, and it joins the account only once its code is verified. An
/// identifier of another account answers like any other in strict enumeration protection (its
/// code never works; its owner is told), 422 `form_identifier_exists` otherwise.
pub async fn create(
    api: ApiCtx,
    collection: web::Path<String>,
    payload: web::Payload,
) -> Result<Json<IdentifierObject>, ApiError> {
    api.check(true)?;
    let kind = kind_of(&collection);
    let body: CreateIdentifier = api.body(payload).await?;
    let user = signed_in(&api).await?;
    let param = field_name(kind);
    let value = match kind {
        IdentifierKind::Email => body.email_address,
        IdentifierKind::Phone => body.phone_number,
    }
    .ok_or_else(|| Refusal::missing(param))?;
    let identifier = match identifier_of_kind(&api.ctx, kind, &value) {
        None => {
            return Err(Refusal::value_invalid(
                param,
                "This instance does not use this kind of identifier.",
            )
            .into())
        }
        Some(Err(e)) => return Err(Refusal::format_invalid(param, &e.to_string()).into()),
        Some(Ok(identifier)) => identifier,
    };
    let flow = api
        .ctx
        .state
        .auth
        .start_for_account(
            FlowKind::AddIdentifier,
            &user,
            &identifier,
            false,
            None,
            &session_client(&api, &user),
        )
        .await
        .map_err(|e| ApiError::from_start(e, param))?;
    Ok(Json(pending_object(&api, &user, &flow).await?))
}

#[utoipa::path(post, path = super::paths::ME_IDENTIFIER_PREPARE, tag = "user",
    params(("kind" = String, Path, description = "`email_addresses` or `phone_numbers`"), ("id" = String, Path)),
    responses((status = 200, body = IdentifierObject), (status = 401, body = ErrorsBody), (status = 404, body = ErrorsBody), (status = 429, body = ErrorsBody)))]
/// Sends the code of a pending identifier (again: after the resend cooldown).
pub async fn prepare(
    api: ApiCtx,
    path: web::Path<(String, String)>,
) -> Result<Json<IdentifierObject>, ApiError> {
    api.check(false)?;
    let (collection, raw) = path.into_inner();
    let user = signed_in(&api).await?;
    let flow = pending(&api, &user, &raw).await?;
    api.ctx
        .state
        .auth
        .prepare(
            &flow,
            FlowKind::AddIdentifier,
            &PrepareTarget::Kind(kind_of(&collection)),
            &session_client(&api, &user),
        )
        .await?;
    Ok(Json(pending_object(&api, &user, &flow).await?))
}

#[utoipa::path(post, path = super::paths::ME_IDENTIFIER_ATTEMPT, tag = "user",
    params(("kind" = String, Path, description = "`email_addresses` or `phone_numbers`"), ("id" = String, Path)),
    request_body = IdentifierCode,
    responses((status = 200, body = IdentifierObject), (status = 401, body = ErrorsBody), (status = 404, body = ErrorsBody), (status = 422, body = ErrorsBody), (status = 429, body = ErrorsBody)))]
/// Checks a pending identifier's code; the right one attaches it to the account (primary if
/// the account had none of its kind).
pub async fn attempt(
    api: ApiCtx,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<Json<IdentifierObject>, ApiError> {
    api.check(true)?;
    let (collection, raw) = path.into_inner();
    let body: IdentifierCode = api.body(payload).await?;
    let user = signed_in(&api).await?;
    let flow = pending(&api, &user, &raw).await?;
    let code = OtpCode::parse(&body.code, api.ctx.state.settings.auth.code_length)
        .map_err(|e| Refusal::format_invalid("code", &e.to_string()))?;
    let attempted = api
        .ctx
        .state
        .auth
        .attempt(
            &flow,
            FlowKind::AddIdentifier,
            &code,
            &AttemptTarget::Kind(kind_of(&collection)),
            &session_client(&api, &user),
        )
        .await?;
    match attempted {
        Attempted::AccountUpdated {
            identifier,
            identifier_id: Some(id),
            ..
        } => Ok(Json(IdentifierObject::of(&id, &identifier, "verified"))),
        other => Err(anyhow::anyhow!("an addition ended as {other:?}").into()),
    }
}

#[utoipa::path(delete, path = super::paths::ME_IDENTIFIER, tag = "user",
    params(("kind" = String, Path, description = "`email_addresses` or `phone_numbers`"), ("id" = String, Path)),
    responses((status = 200, body = DeletedIdentifier), (status = 401, body = ErrorsBody), (status = 403, body = ErrorsBody), (status = 404, body = ErrorsBody), (status = 422, body = ErrorsBody)))]
/// Removes an identifier of the account (needs a recent code: 403
/// `session_reverification_required`); never the last one to sign in with (422
/// `last_sign_in_identifier`) or the last of a required kind (422 `identifier_required`).
pub async fn delete(
    api: ApiCtx,
    path: web::Path<(String, String)>,
) -> Result<Json<DeletedIdentifier>, ApiError> {
    api.check(false)?;
    let (collection, raw) = path.into_inner();
    let kind = kind_of(&collection);
    let user = signed_in(&api).await?;
    let id = IdentifierId::parse(&raw)
        .filter(|id| {
            user.identifiers
                .iter()
                .any(|s| &s.id == id && s.identifier.kind() == kind)
        })
        .ok_or_else(Refusal::not_found)?;
    api.ctx
        .state
        .auth
        .remove_identifier(&user, &id, &api.client())
        .await
        .map_err(profile_error)?;
    Ok(Json(DeletedIdentifier {
        id: id.to_string(),
        object: match kind {
            IdentifierKind::Email => "email_address",
            IdentifierKind::Phone => "phone_number",
        },
        deleted: true,
    }))
}
