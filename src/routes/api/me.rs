//! `/v1/me`: the signed-in person's own account (Clerk's `user` resource).

use actix_web::http::StatusCode;
use actix_web::web::{self, Json};

use super::errors::{ApiError, ErrorsBody, Refusal};
use super::objects::{MeSession, UpdateUser, User};
use super::ApiCtx;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{AttemptTarget, Attempted, CurrentUser, FlowKind, ProfileError, StartError};
use crate::domain::{
    FlowId, Identifier, IdentifierId, IdentifierKind, OtpCode, PersonName, SessionId,
};

/// The signed-in person, or 401 `signed_out`.
pub(super) async fn signed_in(api: &ApiCtx) -> Result<CurrentUser, ApiError> {
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
    // New primaries: identifiers of the account of their kind; checked, with the session's
    // code, before anything changes.
    let primaries = [
        (
            IdentifierKind::Email,
            "primary_email_address_id",
            &body.primary_email_address_id,
        ),
        (
            IdentifierKind::Phone,
            "primary_phone_number_id",
            &body.primary_phone_number_id,
        ),
    ]
    .into_iter()
    .filter_map(|(kind, param, given)| given.as_deref().map(|raw| (kind, param, raw)))
    .map(|(kind, param, raw)| {
        IdentifierId::parse(raw)
            .filter(|id| {
                user.identifiers
                    .iter()
                    .any(|s| &s.id == id && s.identifier.kind() == kind)
            })
            .ok_or_else(|| {
                ApiError::from(Refusal::value_invalid(
                    param,
                    "Not an identifier of this account of this kind.",
                ))
            })
    })
    .collect::<Result<Vec<IdentifierId>, ApiError>>()?;
    let auth = &api.ctx.state.auth;
    if !primaries.is_empty() {
        auth.require_recent_code(&user).map_err(profile_error)?;
    }
    auth.set_names(&user, first.clone(), last.clone(), &api.client())
        .await?;
    for id in &primaries {
        auth.make_primary(&user, id, &api.client())
            .await
            .map_err(profile_error)?;
    }
    let mut updated = match primaries.is_empty() {
        true => user,
        // The primary marks as they are now.
        false => signed_in(&api).await?,
    };
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

/// A refusal of a profile change.
pub(super) fn profile_error(e: ProfileError) -> ApiError {
    match e {
        ProfileError::ReverificationRequired => Refusal::new(
            StatusCode::FORBIDDEN,
            "session_reverification_required",
            "Confirm it is you first.",
            "This change needs a code verified by this session within the last minutes: POST /v1/me/reverification, then attempt it, then repeat this request.",
        )
        .into(),
        ProfileError::NotFound => Refusal::not_found().into(),
        ProfileError::NotVerified => Refusal::unprocessable(
            "identifier_not_verified",
            "Only a verified identifier can be primary.",
            "Verify the identifier first.",
        )
        .into(),
        ProfileError::LastSignInIdentifier => Refusal::unprocessable(
            "last_sign_in_identifier",
            "This is the last identifier you can sign in with.",
            "Add another email address or phone number before removing this one.",
        )
        .into(),
        ProfileError::RequiredKind(kind) => Refusal::unprocessable(
            "identifier_required",
            "The account must keep an identifier of this kind.",
            "Add another one of this kind before removing this one.",
        )
        .param(super::objects::field_name(kind))
        .into(),
        ProfileError::DeletionDisabled => Refusal::new(
            StatusCode::FORBIDDEN,
            "account_deletion_disabled",
            "Accounts cannot be deleted here.",
            "The operator turned account deletion off (sessions.allow_account_deletion).",
        )
        .into(),
        ProfileError::Internal(e) => ApiError::Internal(e),
    }
}

#[utoipa::path(post, path = super::paths::ME_SESSION_REVOKE, tag = "user",
    params(("id" = String, Path, description = "A session id from GET /v1/me/sessions")),
    responses((status = 200, body = Revoked), (status = 401, body = ErrorsBody), (status = 403, body = ErrorsBody), (status = 404, body = ErrorsBody)))]
/// Signs out one of the person's sessions (another device; this one signs out as a sign-out
/// does). Another device's needs a recent code (`session_reverification_required`).
pub async fn revoke_session(api: ApiCtx, id: web::Path<String>) -> Result<Json<Revoked>, ApiError> {
    api.check(false)?;
    let user = signed_in(&api).await?;
    let id = SessionId::parse(&id).ok_or_else(Refusal::not_found)?;
    api.ctx
        .state
        .auth
        .revoke_session(&user, &id, &api.client())
        .await
        .map_err(profile_error)?;
    Ok(Json(Revoked {
        id: id.to_string(),
        object: "session",
        status: "revoked",
    }))
}

#[utoipa::path(delete, path = super::paths::ME, tag = "user",
    responses((status = 200, body = Deleted), (status = 401, body = ErrorsBody), (status = 403, body = ErrorsBody)))]
/// Deletes the signed-in person's account at once (needs a recent code): identifiers,
/// sessions, flows and queued messages; only the audit events stay, for the operator.
pub async fn delete(api: ApiCtx) -> Result<Json<Deleted>, ApiError> {
    api.check(false)?;
    let user = signed_in(&api).await?;
    api.ctx
        .state
        .auth
        .delete_account(&user, &api.client())
        .await
        .map_err(profile_error)?;
    Ok(Json(Deleted {
        id: user.user_id.to_string(),
        object: "user",
        deleted: true,
    }))
}

#[utoipa::path(post, path = super::paths::ME_REVERIFICATION, tag = "user",
    request_body = StartReverification,
    responses((status = 200, body = Reverification), (status = 401, body = ErrorsBody), (status = 422, body = ErrorsBody), (status = 429, body = ErrorsBody)))]
/// Sends a fresh code to one of the person's verified identifiers (`identifier_id`; the
/// primary email address by default), for the changes that need a recent one.
pub async fn start_reverification(
    api: ApiCtx,
    payload: web::Payload,
) -> Result<Json<Reverification>, ApiError> {
    api.check(true)?;
    let body: StartReverification = api.body(payload).await?;
    let user = signed_in(&api).await?;
    let to = match &body.identifier_id {
        Some(raw) => Some(IdentifierId::parse(raw).ok_or_else(not_usable)?),
        None => None,
    };
    let auth = &api.ctx.state.auth;
    let (flow, to) = auth
        .start_reverification(&user, to.as_ref(), None, &session_client(&api, &user))
        .await
        .map_err(|e| match e {
            StartError::IdentifierNotFound => not_usable().into(),
            e => ApiError::from_start(e, "identifier_id"),
        })?;
    Ok(Json(Reverification::new(&flow, "needs_first_factor", &to)))
}

#[utoipa::path(post, path = super::paths::ME_REVERIFICATION_ATTEMPT, tag = "user",
    params(("id" = String, Path, description = "The reverification's id")),
    request_body = AttemptReverification,
    responses((status = 200, body = Reverification), (status = 401, body = ErrorsBody), (status = 422, body = ErrorsBody), (status = 429, body = ErrorsBody)))]
/// Checks a reverification's code; once verified, the changes that need a recent code are
/// allowed to this session for `sessions.reverification_secs`.
pub async fn attempt_reverification(
    api: ApiCtx,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<Json<Reverification>, ApiError> {
    api.check(true)?;
    let body: AttemptReverification = api.body(payload).await?;
    let user = signed_in(&api).await?;
    let flow = FlowId::parse(&id).ok_or_else(Refusal::not_found)?;
    let code = OtpCode::parse(&body.code, api.ctx.state.settings.auth.code_length)
        .map_err(|e| Refusal::format_invalid("code", &e.to_string()))?;
    let attempted = api
        .ctx
        .state
        .auth
        .attempt(
            &flow,
            FlowKind::Reverify,
            &code,
            &AttemptTarget::Page(None),
            &session_client(&api, &user),
        )
        .await?;
    match attempted {
        Attempted::AccountUpdated { identifier, .. } => {
            Ok(Json(Reverification::new(&flow, "complete", &identifier)))
        }
        other => Err(anyhow::anyhow!("a reverification ended as {other:?}").into()),
    }
}

/// The API client acting for `user`'s session (flows on /user are the session's alone).
pub(super) fn session_client<'a>(
    api: &'a ApiCtx,
    user: &'a CurrentUser,
) -> crate::auth::Client<'a> {
    let mut client = api.client();
    client.session = Some(&user.session_id);
    client
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    pub id: String,
    pub object: &'static str,
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub id: String,
    pub object: &'static str,
    pub deleted: bool,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartReverification {
    /// One of the account's verified identifiers; the primary email address by default.
    #[serde(default)]
    pub identifier_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttemptReverification {
    pub code: String,
}

/// A reverification (Clerk's `session.verify`): a fresh code that allows this session the
/// changes needing one for `sessions.reverification_secs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reverification {
    pub id: String,
    /// Always `session_reverification`.
    pub object: &'static str,
    /// `needs_first_factor`, then `complete`.
    pub status: &'static str,
    /// `email_code` or `phone_code`.
    pub strategy: &'static str,
    /// Where the code went, masked.
    pub safe_identifier: String,
}

impl Reverification {
    fn new(id: &FlowId, status: &'static str, to: &Identifier) -> Self {
        Self {
            id: id.to_string(),
            object: "session_reverification",
            status,
            strategy: super::objects::strategy_name(to.kind()),
            safe_identifier: to.safe_identifier(),
        }
    }
}

/// `identifier_id` names no verified identifier of the account one can sign in with.
fn not_usable() -> Refusal {
    Refusal::value_invalid(
        "identifier_id",
        "Not a verified identifier of this account.",
    )
}
