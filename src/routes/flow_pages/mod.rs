//! The two steps shared by `/sign-up` and `/sign-in`: the identifier form ([`identifier`]) and
//! the code form with "Resend code" and "Use another method" ([`code`]). `sign_up.rs` and
//! `sign_in.rs` bind these to their URLs with their `FlowKind`. A refused post re-renders its
//! step in place with a typed [`FlowMessage`]; a page that cannot be shown is a `PageError`.

mod code;
mod identifier;
mod messages;

use actix_web::HttpResponse;
use askama::Template;
use serde::Deserialize;

pub use code::{attempt, code_page, resend, switch_factor};
pub use identifier::{start, start_page};
pub use messages::{FlowMessage, FlowNotice};

use super::context::with_retry_after;
use super::paths::with_query;
use super::{Ctx, PageError};
use crate::auth::FlowKind;
use crate::domain::RedirectTarget;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StartQuery {
    redirect_url: Option<String>,
    email_address: Option<String>,
    phone_number: Option<String>,
    identifier: Option<String>,
    flow: Option<String>,
    /// `login`: sign in again although signed in (an app asked for a fresh sign-in, OpenID
    /// Connect's `prompt=login` or `max_age`); the new session replaces the old one.
    prompt: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct StartForm {
    pub csrf_token: String,
    /// The sign-in field when it accepts both kinds.
    identifier: String,
    email_address: String,
    phone_number: String,
    first_name: String,
    last_name: String,
    redirect_url: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct CodeForm {
    pub csrf_token: String,
    code: String,
    /// The verification the page was shown for (see `AttemptError::StepDone`).
    verification: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct TokenForm {
    pub csrf_token: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct FactorForm {
    pub csrf_token: String,
    identifier_id: String,
}

impl FactorForm {
    pub fn identifier_id(&self) -> &str {
        &self.identifier_id
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CodePageQuery {
    sent: Option<String>,
    verified: Option<String>,
}

/// Validates a `redirect_url`; anything unsafe is dropped (the flow falls back to the
/// `after_*_url`) and logged.
pub(super) fn redirect_target(ctx: &Ctx, raw: Option<&str>) -> Option<RedirectTarget> {
    let raw = raw.filter(|s| !s.is_empty())?;
    let s = &ctx.state.settings;
    let target = RedirectTarget::parse(raw, &s.public_url, &s.allowed_redirect_origins);
    if target.is_none() {
        let shown: String = raw.chars().take(200).collect();
        tracing::warn!(event = "redirect_refused", redirect_url = ?shown, "ignored a redirect_url that is neither a local path nor an allowed origin");
    }
    target
}

/// Where a completed flow of `kind` (or a signed-in visitor) goes: its `redirect_url`, else
/// `after_sign_in_url` / `after_sign_up_url`.
fn landing(ctx: &Ctx, kind: FlowKind, redirect: Option<&RedirectTarget>) -> String {
    let after = &ctx.state.settings.after;
    redirect
        .unwrap_or(match kind {
            FlowKind::SignIn => &after.sign_in,
            FlowKind::SignUp => &after.sign_up,
            FlowKind::AddIdentifier | FlowKind::Reverify => {
                return crate::routes::paths::USER.to_string()
            }
        })
        .as_str()
        .to_string()
}

/// A step re-rendered in place with `message` (`page` builds it): the message's status, and
/// `Retry-After` when it says to wait.
fn refused<P: Template>(
    ctx: &Ctx,
    message: FlowMessage,
    page: impl FnOnce(FlowMessage) -> P,
) -> Result<HttpResponse, PageError> {
    let (status, retry_after) = (message.status(), message.retry_after());
    let resp = ctx.render(status, &page(message))?;
    Ok(match retry_after {
        Some(secs) => with_retry_after(resp, secs),
        None => resp,
    })
}
