//! `/user` (the profile page) and `/sign-out`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use serde::Deserialize;

use super::flow_pages::redirect_target;
use super::pages::{ActivityRow, ProfileIdentifier, UserPage};
use super::{paths, Ctx, PageError};
use crate::domain::{AuditKind, IdentifierKind, RedirectTarget};

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
        AuditKind::BackendKeyRefused => "A server call with a wrong key was refused",
        AuditKind::SignUpWithTakenIdentifier => {
            "Someone tried to create an account with your email address or phone number"
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UserQuery {
    redirect_url: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct SignOutForm {
    pub csrf_token: String,
    redirect_url: String,
}

pub async fn page(ctx: Ctx, query: web::Query<UserQuery>) -> Result<HttpResponse, PageError> {
    let redirect = redirect_target(&ctx, query.redirect_url.as_deref());
    let redirect_url = redirect.as_ref().map(|r| r.as_str()).unwrap_or_default();
    let Some(user) = ctx.current_user().await? else {
        // Back here after signing in, with the same way back.
        let here = paths::with_query(paths::USER, &[("redirect_url", redirect_url)]);
        let sign_in = paths::with_query(paths::SIGN_IN, &[("redirect_url", &here)]);
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
        redirect_url: redirect_url.to_string(),
        back_label: redirect.as_ref().map(back_label).unwrap_or_default(),
    };
    ctx.render(StatusCode::OK, &page)
}

/// "Continue to app.example.com" for a target on another origin; "Continue" for a path here.
fn back_label(target: &RedirectTarget) -> String {
    match url::Url::parse(target.as_str()) {
        Ok(u) => match u.host_str() {
            Some(host) => format!("Continue to {host}"),
            None => "Continue".into(),
        },
        Err(_) => "Continue".into(),
    }
}

/// Signing out is a POST; a GET only goes back to the profile.
pub async fn sign_out_get(ctx: Ctx) -> Result<HttpResponse, PageError> {
    ctx.redirect(paths::USER)
}

/// Ends the session; lands on the form's `redirect_url`, else `after_sign_out_url`.
pub async fn sign_out(ctx: Ctx, form: web::Form<SignOutForm>) -> Result<HttpResponse, PageError> {
    if let Some(user) = ctx.current_user().await? {
        ctx.check_session_form(&user, &form.csrf_token)?;
        ctx.state
            .auth
            .sign_out(&user, &ctx.client())
            .await
            .map_err(|e| e.context("signing out"))?;
    }
    ctx.remove_session_cookie();
    let target = redirect_target(&ctx, Some(&form.redirect_url));
    ctx.redirect(
        target
            .as_ref()
            .unwrap_or(&ctx.state.settings.after.sign_out)
            .as_str(),
    )
}
