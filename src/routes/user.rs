//! `/user` (the profile page) and `/sign-out`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use super::flow_pages::TokenForm;
use super::pages::{ActivityRow, ProfileIdentifier, UserPage};
use super::{paths, Ctx, PageError};
use crate::domain::{AuditKind, IdentifierKind};

const JOINED_FORMAT: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[day padding:none] [month repr:long] [year]");

const ACTIVITY_FORMAT: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");

/// What an audit event means, for the person it is about.
fn describe(event: AuditKind) -> &'static str {
    match event {
        AuditKind::CodeSent => "Code sent",
        AuditKind::CodeResent => "New code sent",
        AuditKind::FlowCreated => "Sign-in started",
        AuditKind::CodeIncorrect => "Incorrect code entered",
        AuditKind::IdentifierLocked => "Sign-in locked after too many incorrect codes",
        AuditKind::IdentifierVerified => "Email address or phone number verified",
        AuditKind::SignIn => "Signed in",
        AuditKind::SignUp => "Account created",
        AuditKind::IdentifierAdded => "Email address or phone number added",
        AuditKind::SignOut => "Signed out",
        AuditKind::SignUpWithTakenIdentifier => {
            "Someone tried to create an account with your email address or phone number"
        }
    }
}

pub async fn page(ctx: Ctx) -> Result<HttpResponse, PageError> {
    let Some(user) = ctx.current_user().await? else {
        let sign_in = paths::with_query(paths::SIGN_IN, &[("redirect_url", paths::USER)]);
        return ctx.redirect(&sign_in);
    };
    let of_kind = |kind: IdentifierKind| {
        user.identifiers
            .iter()
            .filter(|s| s.identifier.kind() == kind)
            .map(|s| ProfileIdentifier {
                value: s.identifier.display().to_string(),
                primary: s.is_primary,
                verified: s.verified,
            })
            .collect::<Vec<_>>()
    };
    let events = ctx
        .state
        .auth
        .audit_for(&user.user_id)
        .await
        .map_err(|e| e.context("reading the account's security events"))?;
    let activity = events
        .iter()
        .map(|e| ActivityRow {
            when: e.at.format(ACTIVITY_FORMAT).unwrap_or_default(),
            what: describe(e.event).to_string(),
            detail: [e.identifier.as_deref(), e.ip.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" · "),
        })
        .collect();
    let page = UserPage {
        page: ctx.page_ctx("Your account"),
        activity,
        emails: of_kind(IdentifierKind::Email),
        phones: of_kind(IdentifierKind::Phone),
        joined: user.joined_at.format(JOINED_FORMAT).unwrap_or_default(),
        sign_out_action: paths::SIGN_OUT,
        csrf_token: ctx.session_csrf_token(&user),
    };
    ctx.render(StatusCode::OK, &page)
}

/// Signing out is a POST; a GET only goes back to the profile.
pub async fn sign_out_get(ctx: Ctx) -> Result<HttpResponse, PageError> {
    ctx.redirect(paths::USER)
}

pub async fn sign_out(ctx: Ctx, form: web::Form<TokenForm>) -> Result<HttpResponse, PageError> {
    if let Some(user) = ctx.current_user().await? {
        ctx.check_session_form(&user, &form.csrf_token)?;
        ctx.state
            .auth
            .sign_out(&user, &ctx.client())
            .await
            .map_err(|e| e.context("signing out"))?;
    }
    ctx.remove_session_cookie();
    ctx.redirect(paths::SIGN_IN)
}
