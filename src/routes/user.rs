//! `/user` (the profile page) and `/sign-out`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use serde::Deserialize;

use super::flow_pages::redirect_target;
use super::pages::{
    ActivityRow, AddForm, DeviceRow, NameField, NameForm, ProfileActions, ProfileIdentifier,
    ProfileNotice, ProfileProblem, UserPage,
};
use super::{paths, Ctx, PageError};
use crate::domain::{AuditKind, IdentifierKind, PersonName, RedirectTarget};

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
        AuditKind::NameChanged => "Name changed",
        AuditKind::Reverified => "Confirmed it was you with a fresh code",
        AuditKind::IdentifierRemoved => "Email address or phone number removed",
        AuditKind::PrimaryIdentifierChanged => "Primary email address or phone number changed",
        AuditKind::SessionRevoked => "A device was signed out",
        AuditKind::AccountDeleted => "Account deleted",
        AuditKind::AddWithTakenIdentifier => {
            "Someone tried to add your email address or phone number to another account"
        }
        AuditKind::SignUpWithTakenIdentifier => {
            "Someone tried to create an account with your email address or phone number"
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UserQuery {
    redirect_url: Option<String>,
    /// What the change before the redirect did (`ProfileNotice`).
    done: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct SignOutForm {
    pub csrf_token: String,
    redirect_url: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct NameFormInput {
    pub csrf_token: String,
    first_name: String,
    last_name: String,
    redirect_url: String,
}

/// Signed out: to the sign-in, and back here (with the same way back) afterwards.
fn sign_in_first(ctx: &Ctx, redirect_url: &str) -> Result<HttpResponse, PageError> {
    let here = paths::with_query(paths::USER, &[("redirect_url", redirect_url)]);
    let sign_in = paths::with_query(paths::SIGN_IN, &[("redirect_url", &here)]);
    ctx.redirect(&sign_in)
}

pub async fn page(ctx: Ctx, query: web::Query<UserQuery>) -> Result<HttpResponse, PageError> {
    let redirect = redirect_target(&ctx, query.redirect_url.as_deref());
    let redirect_url = redirect.as_ref().map(|r| r.as_str()).unwrap_or_default();
    let Some(user) = ctx.current_user().await? else {
        return sign_in_first(&ctx, redirect_url);
    };
    let shown = Shown {
        notice: query.done.as_deref().and_then(ProfileNotice::parse),
        ..Shown::default()
    };
    profile(&ctx, &user, redirect.as_ref(), shown, StatusCode::OK).await
}

/// What the profile page shows besides the account: a form as typed when it was refused, and
/// what the last change did or why it was refused.
#[derive(Default)]
pub(crate) struct Shown {
    /// `None`: the name as stored.
    pub name: Option<NameForm>,
    /// A refused "add" form (in place of the empty one of its kind).
    pub add: Option<AddForm>,
    pub notice: Option<ProfileNotice>,
    pub problem: Option<ProfileProblem>,
    pub confirming_deletion: bool,
}

/// Signed out: to the sign-in, and back to the profile afterwards.
pub(crate) fn signed_out(ctx: &Ctx) -> Result<HttpResponse, PageError> {
    sign_in_first(ctx, "")
}

/// `POST /user/name`: saves the name; a refused value is shown as typed, with its error (422).
pub async fn update_name(
    ctx: Ctx,
    form: web::Form<NameFormInput>,
) -> Result<HttpResponse, PageError> {
    let redirect = redirect_target(&ctx, Some(&form.redirect_url));
    let redirect_url = redirect.as_ref().map(|r| r.as_str()).unwrap_or_default();
    let Some(user) = ctx.current_user().await? else {
        return sign_in_first(&ctx, redirect_url);
    };
    ctx.check_session_form(&user, &form.csrf_token)?;
    let parsed = PersonName::parse(&form.first_name)
        .map_err(|e| (NameField::First, e))
        .and_then(|first| {
            PersonName::parse(&form.last_name)
                .map(|last| (first, last))
                .map_err(|e| (NameField::Last, e))
        });
    match parsed {
        Ok((first, last)) => {
            ctx.state
                .auth
                .set_names(&user, first, last, &ctx.client())
                .await
                .map_err(|e| e.context("saving a name"))?;
            ctx.redirect(&paths::with_query(
                paths::USER,
                &[
                    ("redirect_url", redirect_url),
                    ("done", ProfileNotice::NameSaved.as_str()),
                ],
            ))
        }
        Err(error) => {
            let clip = |s: &str| s.chars().take(400).collect::<String>();
            let name = NameForm {
                first_name: clip(&form.first_name),
                last_name: clip(&form.last_name),
                error: Some(error),
            };
            let shown = Shown {
                name: Some(name),
                ..Shown::default()
            };
            profile(
                &ctx,
                &user,
                redirect.as_ref(),
                shown,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    }
}

/// The profile page of `user`, with `shown`.
pub(crate) async fn profile(
    ctx: &Ctx,
    user: &crate::auth::CurrentUser,
    redirect: Option<&RedirectTarget>,
    shown: Shown,
    status: StatusCode,
) -> Result<HttpResponse, PageError> {
    let name = shown.name.unwrap_or_else(|| NameForm {
        first_name: user
            .first_name
            .as_ref()
            .map(|n| n.to_string())
            .unwrap_or_default(),
        last_name: user
            .last_name
            .as_ref()
            .map(|n| n.to_string())
            .unwrap_or_default(),
        error: None,
    });
    let rules = &ctx.state.settings.identifiers;
    let mut refused_add = shown.add;
    let add_forms = [
        (IdentifierKind::Email, rules.email.enabled),
        (IdentifierKind::Phone, rules.phone.enabled),
    ]
    .into_iter()
    .filter(|(_, enabled)| *enabled)
    .map(|(kind, _)| match refused_add.take_if(|f| f.kind == kind) {
        Some(form) => form,
        None => AddForm::empty(kind),
    })
    .collect();
    let redirect_url = redirect.map(|r| r.as_str()).unwrap_or_default();
    let of_kind = |kind: IdentifierKind| {
        user.identifiers
            .iter()
            .filter(|s| s.identifier.kind() == kind)
            .map(|s| ProfileIdentifier {
                id: s.id.to_string(),
                value: s.identifier.display().to_string(),
                primary: s.is_primary,
                verified: s.verified,
            })
            .collect::<Vec<_>>()
    };
    let (devices, events) = ctx
        .state
        .auth
        .profile(user, DEVICES_SHOWN)
        .await
        .map_err(|e| e.context("reading the account's devices and security events"))?;
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
    let devices = devices
        .iter()
        .map(|d| DeviceRow {
            what: device_name(d.browser.as_deref(), d.os.as_deref()),
            ip: d.ip.clone().unwrap_or_default(),
            signed_in: d.created_at.format(ACTIVITY_FORMAT).unwrap_or_default(),
            last_active: d.last_active_at.format(ACTIVITY_FORMAT).unwrap_or_default(),
            current: d.session_id == user.session_id,
            session_id: d.session_id.to_string(),
        })
        .collect();
    let page = UserPage {
        page: ctx.page_ctx("Your account"),
        devices,
        name,
        name_action: paths::USER_NAME,
        activity,
        emails: of_kind(IdentifierKind::Email),
        phones: of_kind(IdentifierKind::Phone),
        joined: user.joined_at.format(JOINED_FORMAT).unwrap_or_default(),
        sign_out_action: paths::SIGN_OUT,
        csrf_token: ctx.session_csrf_token(user),
        redirect_url: redirect_url.to_string(),
        back_label: redirect.map(back_label).unwrap_or_default(),
        add_forms,
        actions: ProfileActions::default(),
        notice: shown.notice,
        problem: shown.problem,
        deletion_allowed: ctx.state.settings.auth.allow_account_deletion,
        confirming_deletion: shown.confirming_deletion,
    };
    ctx.render(status, &page)
}

/// "Firefox on Linux", from what sign-in parsed of the user agent; "Unknown browser" without.
pub(crate) fn device_name(browser: Option<&str>, os: Option<&str>) -> String {
    match (browser, os) {
        (Some(b), Some(o)) => format!("{b} on {o}"),
        (Some(b), None) => b.to_string(),
        (None, _) => "Unknown browser".into(),
    }
}

/// The profile lists this many devices at most, most recently active first.
const DEVICES_SHOWN: i64 = 10;

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

/// A GET of a form action (signing out, saving the name): back to the profile; only the POST acts.
pub async fn back_to_profile(ctx: Ctx) -> Result<HttpResponse, PageError> {
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

#[cfg(test)]
mod tests {
    use super::device_name;
    use crate::auth::device_of;

    fn named(user_agent: &str) -> String {
        let parsed = device_of(user_agent);
        device_name(
            parsed.as_ref().map(|d| d.0.as_str()),
            parsed.as_ref().and_then(|d| d.1.as_deref()),
        )
    }

    #[test]
    fn devices_are_named_by_browser_and_system() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        assert_eq!(named(firefox), "Firefox on Linux");
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
        assert_eq!(named(iphone), "Safari on iPhone");
        assert_eq!(named("curl/8.0"), "HTTP Library");
        assert_eq!(named(""), "Unknown browser");
        assert_eq!(device_name(None, None), "Unknown browser");
    }
}
