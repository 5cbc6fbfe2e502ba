//! The changes a person makes on `/user`: adding an email address or phone number (with its
//! code step), making one primary, removing one, signing out devices, deleting the account;
//! and the reverification that those which could take the account from its owner ask for
//! first. Every form is a plain POST with the session's CSRF token (the code steps: the flow's),
//! answered by a redirect (303) or, when refused, the profile page again with the reason and
//! the value as typed (422).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::flow_input::identifier_of_kind;
use super::flow_pages::{self, CodeForm, CodePageQuery, FactorForm, TokenForm};
use super::pages::{AddForm, AddProblem, ProfileNotice, ProfileProblem};
use super::user::{back_to_profile, profile, signed_out, Shown};
use super::{paths, Ctx, PageError};
use crate::auth::{CurrentUser, FlowKind, PendingAction, ProfileError, ResendError, StartError};
use crate::domain::{IdentifierId, IdentifierKind, SessionId};

pub fn configure(cfg: &mut web::ServiceConfig) {
    let post_only = |path: &'static str, post: actix_web::Route| {
        web::resource(path)
            .route(web::get().to(back_to_profile))
            .route(post)
    };
    cfg.service(post_only(
        paths::USER_ADD_IDENTIFIER,
        web::post().to(add_identifier),
    ))
    .service(post_only(
        paths::USER_MAKE_PRIMARY,
        web::post().to(make_primary),
    ))
    .service(post_only(
        paths::USER_REMOVE_IDENTIFIER,
        web::post().to(remove_identifier),
    ))
    .service(post_only(
        paths::USER_REVOKE_SESSION,
        web::post().to(revoke_session),
    ))
    .service(post_only(
        paths::USER_REVOKE_OTHERS,
        web::post().to(revoke_others),
    ))
    .service(post_only(
        paths::USER_DELETE,
        web::post().to(delete_account),
    ))
    .service(
        web::resource(paths::USER_VERIFY)
            .route(web::get().to(add_code_page))
            .route(web::post().to(add_attempt)),
    )
    .service(
        web::resource(paths::USER_RESEND)
            .route(web::get().to(add_code_page))
            .route(web::post().to(add_resend)),
    )
    .service(
        web::resource(paths::USER_REVERIFY)
            .route(web::get().to(reverify_code_page))
            .route(web::post().to(reverify_attempt)),
    )
    .service(
        web::resource(paths::USER_REVERIFY_RESEND)
            .route(web::get().to(reverify_code_page))
            .route(web::post().to(reverify_resend)),
    )
    .service(
        web::resource(paths::USER_REVERIFY_FACTOR)
            .route(web::get().to(reverify_code_page))
            .route(web::post().to(reverify_factor)),
    );
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct AddInput {
    csrf_token: String,
    kind: String,
    value: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct IdentifierInput {
    csrf_token: String,
    identifier_id: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct SessionInput {
    csrf_token: String,
    session_id: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct DeleteInput {
    csrf_token: String,
    /// `ask`: the first press, which shows the confirmation.
    step: String,
    /// `yes`: the confirmation box was ticked.
    confirm: String,
}

/// The signed-in person, or the way to the sign-in page.
async fn signed_in(ctx: &Ctx) -> Result<Result<CurrentUser, HttpResponse>, PageError> {
    match ctx.current_user().await? {
        Some(user) => Ok(Ok(user)),
        None => signed_out(ctx).map(Err),
    }
}

/// `user` with the session CSRF token of the form checked.
macro_rules! signed_in_form {
    ($ctx:expr, $token:expr) => {
        match signed_in(&$ctx).await? {
            Ok(user) => {
                $ctx.check_session_form(&user, $token)?;
                user
            }
            Err(response) => return Ok(response),
        }
    };
}

/// The profile again, refused with `problem`.
async fn refused(
    ctx: &Ctx,
    user: &CurrentUser,
    problem: ProfileProblem,
    confirming_deletion: bool,
) -> Result<HttpResponse, PageError> {
    let status = match problem {
        ProfileProblem::Limited { .. } => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let shown = Shown {
        problem: Some(problem),
        confirming_deletion,
        ..Shown::default()
    };
    profile(ctx, user, None, shown, status).await
}

fn done(ctx: &Ctx, notice: ProfileNotice) -> Result<HttpResponse, PageError> {
    ctx.redirect(&paths::with_query(
        paths::USER,
        &[("done", notice.as_str())],
    ))
}

/// POST `/user/identifiers`: sends a code to the identifier to add; it joins the account once
/// the code is verified on its code step.
pub async fn add_identifier(
    ctx: Ctx,
    form: web::Form<AddInput>,
) -> Result<HttpResponse, PageError> {
    let user = signed_in_form!(ctx, &form.csrf_token);
    let ctx = ctx.for_user(&user);
    let Some(kind) = IdentifierKind::parse(&form.kind) else {
        return ctx.redirect(paths::USER);
    };
    let refuse = |error: AddProblem| AddForm {
        kind,
        value: form.value.chars().take(400).collect(),
        error: Some(error),
    };
    let identifier = match identifier_of_kind(&ctx, kind, &form.value) {
        None => return ctx.redirect(paths::USER),
        Some(Ok(identifier)) => identifier,
        Some(Err(e)) => return refused_add(&ctx, &user, refuse(AddProblem::Invalid(e))).await,
    };
    let started = ctx
        .state
        .auth
        .start_for_account(
            FlowKind::AddIdentifier,
            &user,
            &identifier,
            true,
            None,
            &ctx.client(),
        )
        .await;
    let problem = match started {
        Ok(flow) => return ctx.redirect(&paths::verify(FlowKind::AddIdentifier, &flow)),
        Err(StartError::IdentifierTaken(_)) => AddProblem::Taken,
        Err(StartError::AlreadyYours) => AddProblem::AlreadyYours,
        Err(StartError::Limited { retry_after_secs }) => AddProblem::Limited { retry_after_secs },
        Err(StartError::IdentifierNotFound) => {
            return Err(anyhow::anyhow!("adding an identifier looks no account up").into())
        }
        Err(StartError::Internal(e)) => return Err(e.context("adding an identifier").into()),
    };
    refused_add(&ctx, &user, refuse(problem)).await
}

async fn refused_add(
    ctx: &Ctx,
    user: &CurrentUser,
    form: AddForm,
) -> Result<HttpResponse, PageError> {
    let status = match form.error {
        Some(AddProblem::Limited { .. }) => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let shown = Shown {
        add: Some(form),
        ..Shown::default()
    };
    profile(ctx, user, None, shown, status).await
}

pub async fn make_primary(
    ctx: Ctx,
    form: web::Form<IdentifierInput>,
) -> Result<HttpResponse, PageError> {
    let user = signed_in_form!(ctx, &form.csrf_token);
    match IdentifierId::parse(&form.identifier_id) {
        Some(id) => act(&ctx.for_user(&user), &user, PendingAction::MakePrimary(id)).await,
        None => refused(&ctx, &user, ProfileProblem::Gone, false).await,
    }
}

pub async fn remove_identifier(
    ctx: Ctx,
    form: web::Form<IdentifierInput>,
) -> Result<HttpResponse, PageError> {
    let user = signed_in_form!(ctx, &form.csrf_token);
    match IdentifierId::parse(&form.identifier_id) {
        Some(id) => {
            act(
                &ctx.for_user(&user),
                &user,
                PendingAction::RemoveIdentifier(id),
            )
            .await
        }
        None => refused(&ctx, &user, ProfileProblem::Gone, false).await,
    }
}

pub async fn revoke_session(
    ctx: Ctx,
    form: web::Form<SessionInput>,
) -> Result<HttpResponse, PageError> {
    let user = signed_in_form!(ctx, &form.csrf_token);
    match SessionId::parse(&form.session_id) {
        Some(id) => {
            act(
                &ctx.for_user(&user),
                &user,
                PendingAction::RevokeSession(id),
            )
            .await
        }
        None => refused(&ctx, &user, ProfileProblem::Gone, false).await,
    }
}

pub async fn revoke_others(
    ctx: Ctx,
    form: web::Form<TokenForm>,
) -> Result<HttpResponse, PageError> {
    let user = signed_in_form!(ctx, &form.csrf_token);
    act(
        &ctx.for_user(&user),
        &user,
        PendingAction::RevokeOtherSessions,
    )
    .await
}

/// POST `/user/delete`: the first press asks to confirm; the confirmed one deletes (after a
/// reverification if the session's code is old).
pub async fn delete_account(
    ctx: Ctx,
    form: web::Form<DeleteInput>,
) -> Result<HttpResponse, PageError> {
    let user = signed_in_form!(ctx, &form.csrf_token);
    if !ctx.state.settings.auth.allow_account_deletion {
        return refused(&ctx, &user, ProfileProblem::DeletionDisabled, false).await;
    }
    if form.step == "ask" {
        let shown = Shown {
            confirming_deletion: true,
            ..Shown::default()
        };
        return profile(&ctx, &user, None, shown, StatusCode::OK).await;
    }
    if form.confirm != "yes" {
        return refused(&ctx, &user, ProfileProblem::NotConfirmed, true).await;
    }
    act(&ctx.for_user(&user), &user, PendingAction::DeleteAccount).await
}

/// Does `action` for `user`; when the session's code is too old, starts a reverification that
/// does it once its code is verified.
async fn act(
    ctx: &Ctx,
    user: &CurrentUser,
    action: PendingAction,
) -> Result<HttpResponse, PageError> {
    let problem = match ctx.state.auth.perform(user, &action, &ctx.client()).await {
        Ok(()) => {
            let notice = match action {
                PendingAction::DeleteAccount => {
                    ctx.remove_session_cookie();
                    return ctx.redirect(ctx.state.settings.after.sign_out.as_str());
                }
                // This device: an ordinary sign-out.
                PendingAction::RevokeSession(id) if id == user.session_id => {
                    ctx.remove_session_cookie();
                    return signed_out(ctx);
                }
                PendingAction::RevokeSession(_) => ProfileNotice::SignedOutDevice,
                PendingAction::RevokeOtherSessions => ProfileNotice::SignedOutOthers,
                PendingAction::RemoveIdentifier(_) => ProfileNotice::Removed,
                PendingAction::MakePrimary(_) => ProfileNotice::PrimaryChanged,
            };
            return done(ctx, notice);
        }
        Err(ProfileError::ReverificationRequired) => return reverify(ctx, user, action).await,
        Err(ProfileError::NotFound) => ProfileProblem::Gone,
        Err(ProfileError::NotVerified) => ProfileProblem::NotVerified,
        Err(ProfileError::LastSignInIdentifier) => ProfileProblem::LastSignInIdentifier,
        Err(ProfileError::RequiredKind(kind)) => ProfileProblem::RequiredKind(kind),
        Err(ProfileError::DeletionDisabled) => ProfileProblem::DeletionDisabled,
        Err(ProfileError::Internal(e)) => return Err(e.context("changing an account").into()),
    };
    refused(ctx, user, problem, false).await
}

/// Sends a fresh code to the account's primary identifier (email first) for `action`, and
/// shows its code step.
async fn reverify(
    ctx: &Ctx,
    user: &CurrentUser,
    action: PendingAction,
) -> Result<HttpResponse, PageError> {
    let started = ctx
        .state
        .auth
        .start_reverification(user, None, Some(&action), &ctx.client())
        .await;
    match started {
        Ok((flow, _)) => ctx.redirect(&paths::verify(FlowKind::Reverify, &flow)),
        Err(StartError::Limited { retry_after_secs }) => {
            refused(
                ctx,
                user,
                ProfileProblem::Limited { retry_after_secs },
                false,
            )
            .await
        }
        Err(StartError::Internal(e)) => Err(e.context("starting a reverification").into()),
        Err(e) => Err(anyhow::anyhow!("starting a reverification: {e}").into()),
    }
}

/// After a flow on /user completed: an added identifier shows on the profile; a
/// reverification does the action that asked for it (the session's code is fresh now).
pub async fn after_account_flow(
    ctx: &Ctx,
    kind: FlowKind,
    then: Option<PendingAction>,
) -> Result<HttpResponse, PageError> {
    match (kind, then) {
        (FlowKind::AddIdentifier, _) => done(ctx, ProfileNotice::Added),
        (_, Some(action)) => match ctx.current_user().await? {
            Some(user) => act(ctx, &user, action).await,
            None => signed_out(ctx),
        },
        (_, None) => ctx.redirect(paths::USER),
    }
}

/// The code steps of the flows on /user: the sign-in and sign-up code step's handlers, for the
/// signed-in session (a flow on /user is its session's alone).
macro_rules! code_step {
    ($name:ident, $kind:expr, $handler:path, $input:ty) => {
        pub async fn $name(
            ctx: Ctx,
            flow: web::Path<String>,
            input: $input,
        ) -> Result<HttpResponse, PageError> {
            match signed_in(&ctx).await? {
                Ok(user) => $handler(ctx.for_user(&user), $kind, flow, input).await,
                Err(response) => Ok(response),
            }
        }
    };
}

code_step!(
    add_code_page,
    FlowKind::AddIdentifier,
    flow_pages::code_page,
    web::Query<CodePageQuery>
);
code_step!(
    add_attempt,
    FlowKind::AddIdentifier,
    flow_pages::attempt,
    web::Form<CodeForm>
);
code_step!(
    add_resend,
    FlowKind::AddIdentifier,
    flow_pages::resend,
    web::Form<TokenForm>
);
code_step!(
    reverify_code_page,
    FlowKind::Reverify,
    flow_pages::code_page,
    web::Query<CodePageQuery>
);
code_step!(
    reverify_attempt,
    FlowKind::Reverify,
    flow_pages::attempt,
    web::Form<CodeForm>
);
code_step!(
    reverify_resend,
    FlowKind::Reverify,
    flow_pages::resend,
    web::Form<TokenForm>
);

/// POST of a reverification's "Use another method": a new reverification to the identifier
/// chosen, for the same action.
pub async fn reverify_factor(
    ctx: Ctx,
    flow: web::Path<String>,
    form: web::Form<FactorForm>,
) -> Result<HttpResponse, PageError> {
    let kind = FlowKind::Reverify;
    let user = match signed_in(&ctx).await? {
        Ok(user) => user,
        Err(response) => return Ok(response),
    };
    let ctx = ctx.for_user(&user);
    let flow = crate::domain::FlowId::parse(&flow).ok_or(PageError::FlowNotFound(kind))?;
    ctx.check_form(flow.as_str(), &form.csrf_token)?;
    let identifier =
        IdentifierId::parse(form.identifier_id()).ok_or(PageError::FlowNotFound(kind))?;
    match ctx
        .state
        .auth
        .reverify_elsewhere(&flow, &user, &identifier, &ctx.client())
        .await
    {
        Ok(new) => ctx.redirect(&paths::verify(kind, &new)),
        Err(ResendError::Flow(e)) => Err(PageError::flow(kind, e)),
        Err(ResendError::Limited { retry_after_secs }) => {
            refused(
                &ctx,
                &user,
                ProfileProblem::Limited { retry_after_secs },
                false,
            )
            .await
        }
        Err(_) => ctx.redirect(&paths::verify(kind, &flow)),
    }
}
