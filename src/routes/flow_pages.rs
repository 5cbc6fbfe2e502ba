//! The two steps shared by `/sign-up` and `/sign-in`: the identifier form and the code form.
//! `sign_up.rs` and `sign_in.rs` bind these to their URLs with their [`FlowKind`]. A refused
//! post re-renders its step in place with a typed [`FlowMessage`]; a page that cannot be shown
//! is a `PageError`.

mod messages;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

pub use messages::{FlowMessage, FlowNotice};

use super::context::with_retry_after;
use super::flow_input::{
    hand_over_session, sign_in_identifier, sign_up_identifiers, SignUpInputError,
};
use super::pages::{FactorChoice, Field, IdentifierPage, Link, VerifyPage};
use super::paths::{self, with_query};
use super::{Ctx, PageError};
use crate::auth::{
    AttemptError, AttemptTarget, Attempted, FlowKind, FlowView, ResendError, StartError,
};
use crate::domain::{
    FlowId, Identifier, IdentifierId, IdentifierKind, OtpCode, RedirectTarget, VerificationId,
};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StartQuery {
    redirect_url: Option<String>,
    email_address: Option<String>,
    phone_number: Option<String>,
    identifier: Option<String>,
    flow: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct StartForm {
    pub csrf_token: String,
    /// The sign-in field when it accepts both kinds.
    identifier: String,
    email_address: String,
    phone_number: String,
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

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CodePageQuery {
    sent: Option<String>,
    verified: Option<String>,
}

/// Validates a `redirect_url`; anything unsafe is dropped (the flow falls back to `/user`) and logged.
fn redirect_target(ctx: &Ctx, raw: Option<&str>) -> Option<RedirectTarget> {
    let raw = raw.filter(|s| !s.is_empty())?;
    let s = &ctx.state.settings;
    let target = RedirectTarget::parse(raw, &s.public_url, &s.allowed_redirect_origins);
    if target.is_none() {
        let shown: String = raw.chars().take(200).collect();
        tracing::warn!(event = "redirect_refused", redirect_url = ?shown, "ignored a redirect_url that is neither a local path nor an allowed origin");
    }
    target
}

/// Where a completed flow (or a signed-in visitor) goes.
fn landing(redirect: Option<&RedirectTarget>) -> String {
    redirect
        .map(|r| r.as_str().to_string())
        .unwrap_or_else(|| paths::USER.to_string())
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

/// What the person typed into the identifier form (kept on every re-render).
#[derive(Debug, Default, Clone)]
struct Typed {
    identifier: String,
    email: String,
    phone: String,
}

impl Typed {
    fn clipped(mut self) -> Self {
        for v in [&mut self.identifier, &mut self.email, &mut self.phone] {
            *v = v.chars().take(320).collect();
        }
        self
    }
}

/// Which form field an error belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldName {
    Identifier,
    Email,
    Phone,
}

impl FieldName {
    fn of(kind: IdentifierKind) -> Self {
        match kind {
            IdentifierKind::Email => Self::Email,
            IdentifierKind::Phone => Self::Phone,
        }
    }
}

fn other(kind: FlowKind) -> FlowKind {
    match kind {
        FlowKind::SignUp => FlowKind::SignIn,
        FlowKind::SignIn => FlowKind::SignUp,
    }
}

fn field(name: FieldName, label: String, value: &str, required: bool, invalid: bool) -> Field {
    let (html_name, input_type, inputmode, autocomplete) = match name {
        FieldName::Identifier => ("identifier", "text", "text", "username"),
        FieldName::Email => ("email_address", "email", "email", "email"),
        FieldName::Phone => ("phone_number", "tel", "tel", "tel"),
    };
    Field {
        name: html_name,
        label,
        input_type,
        inputmode,
        autocomplete,
        value: value.to_string(),
        required,
        invalid,
    }
}

/// Sign-in's one field (as the instance's settings ask for it) and what was typed for it.
fn sign_in_field(ctx: &Ctx, typed: &Typed) -> (FieldName, &'static str, String) {
    let accepts = ctx.state.settings.identifiers.sign_in();
    let (name, label, value) = match (accepts.email, accepts.phone) {
        (true, true) => (
            FieldName::Identifier,
            "Email address or phone number",
            first_non_empty(&[&typed.identifier, &typed.email, &typed.phone]),
        ),
        (false, true) => (
            FieldName::Phone,
            "Phone number",
            first_non_empty(&[&typed.phone, &typed.identifier]),
        ),
        _ => (
            FieldName::Email,
            "Email address",
            first_non_empty(&[&typed.email, &typed.identifier]),
        ),
    };
    (name, label, value.to_string())
}

/// The fields of the identifier step, as the instance's settings ask for them.
fn fields(ctx: &Ctx, kind: FlowKind, typed: &Typed, invalid: Option<FieldName>) -> Vec<Field> {
    let rules = &ctx.state.settings.identifiers;
    match kind {
        FlowKind::SignIn => {
            let (name, label, value) = sign_in_field(ctx, typed);
            vec![field(name, label.into(), &value, true, invalid.is_some())]
        }
        FlowKind::SignUp => {
            let both = rules.email.enabled && rules.phone.enabled;
            let label = |base: &str, required: bool| {
                if both && !required {
                    format!("{base} (optional)")
                } else {
                    base.to_string()
                }
            };
            // With no identifier required, either one will do: neither is marked optional.
            let none_required = !rules.email.required && !rules.phone.required;
            [
                (
                    FieldName::Email,
                    "Email address",
                    &rules.email,
                    &rules.phone,
                    &typed.email,
                ),
                (
                    FieldName::Phone,
                    "Phone number",
                    &rules.phone,
                    &rules.email,
                    &typed.phone,
                ),
            ]
            .into_iter()
            .filter(|(_, _, own, _, _)| own.enabled)
            .map(|(name, base, own, other, value)| {
                // The only identifier on offer is required whatever the settings say.
                let required = own.required || !other.enabled;
                let label = label(base, required || none_required);
                field(name, label, value, required, invalid == Some(name))
            })
            .collect()
        }
    }
}

fn first_non_empty<'a>(values: &[&'a String]) -> &'a str {
    values
        .iter()
        .find(|v| !v.is_empty())
        .map(|v| v.as_str())
        .unwrap_or_default()
}

/// The most natural name for what the sign-in/sign-up form asks for, in a sentence.
fn asked_for(ctx: &Ctx, kind: FlowKind) -> &'static str {
    let rules = &ctx.state.settings.identifiers;
    let accepts = match kind {
        FlowKind::SignIn => rules.sign_in(),
        FlowKind::SignUp => rules.sign_up(),
    };
    match (accepts.email, accepts.phone) {
        (true, true) => "email address or phone number",
        (false, true) => "phone number",
        _ => "email address",
    }
}

fn identifier_page(
    ctx: &Ctx,
    kind: FlowKind,
    typed: &Typed,
    redirect: Option<&RedirectTarget>,
    error: Option<(FlowMessage, Option<FieldName>)>,
) -> IdentifierPage {
    let redirect_url = redirect.map(|r| r.as_str()).unwrap_or_default();
    let product = &ctx.state.settings.product_name;
    let (title, heading, lead, switch_text, switch_label) = match kind {
        FlowKind::SignUp => (
            "Sign up",
            "Create your account".to_string(),
            format!(
                "to continue to {product}. We will send you a code to verify your {}; no password needed.",
                asked_for(ctx, kind)
            ),
            "Already have an account?",
            "Sign in",
        ),
        FlowKind::SignIn => (
            "Sign in",
            "Sign in".to_string(),
            format!("to continue to {product}"),
            "No account?",
            "Sign up",
        ),
    };
    let (error, invalid) = match error {
        Some((message, field)) => (Some(message), field),
        None => (None, None),
    };
    IdentifierPage {
        page: ctx.page_ctx(title),
        heading,
        lead,
        action: paths::start(kind).to_string(),
        csrf_token: ctx.csrf_token(kind.as_str()),
        fields: fields(ctx, kind, typed, invalid),
        redirect_url: redirect_url.to_string(),
        error,
        switch_text: switch_text.to_string(),
        switch_link: Link::new(
            switch_label,
            with_query(paths::start(other(kind)), &[("redirect_url", redirect_url)]),
        ),
    }
}

/// GET of the identifier step.
pub async fn start_page(
    ctx: Ctx,
    kind: FlowKind,
    query: web::Query<StartQuery>,
) -> Result<HttpResponse, PageError> {
    let mut redirect = redirect_target(&ctx, query.redirect_url.as_deref());
    if ctx.current_user().await?.is_some() {
        return ctx.redirect(&landing(redirect.as_ref()));
    }
    let mut typed = Typed {
        identifier: query.identifier.clone().unwrap_or_default(),
        email: query.email_address.clone().unwrap_or_default(),
        phone: query.phone_number.clone().unwrap_or_default(),
    };
    // "Edit" from the code page: prefill from the flow (only this browser's own flows).
    if let Some(flow) = query.flow.as_deref().and_then(FlowId::parse) {
        if let Ok(view) = ctx.state.auth.flow(&flow, kind, &ctx.client()).await {
            for (k, value) in &view.identifiers {
                match k {
                    IdentifierKind::Email => typed.email = value.clone(),
                    IdentifierKind::Phone => typed.phone = value.clone(),
                }
            }
            if let Some((_, first)) = view.identifiers.first() {
                typed.identifier = first.clone();
            }
            redirect = redirect.or(view.redirect);
        }
    }
    ctx.render(
        StatusCode::OK,
        &identifier_page(&ctx, kind, &typed.clipped(), redirect.as_ref(), None),
    )
}

type Refusal = (FlowMessage, Option<FieldName>);

/// Parses the identifier step's fields, as the settings ask for them.
fn parse_identifiers(ctx: &Ctx, kind: FlowKind, typed: &Typed) -> Result<Vec<Identifier>, Refusal> {
    match kind {
        FlowKind::SignIn => {
            let (name, _, input) = sign_in_field(ctx, typed);
            sign_in_identifier(ctx, &input)
                .map(|i| vec![i])
                .map_err(|e| (FlowMessage::Invalid(e), Some(name)))
        }
        FlowKind::SignUp => {
            let rules = &ctx.state.settings.identifiers;
            // A blank optional field is not given; a blank required one gets its kind's error.
            let given = |value: &str, enabled: bool, required: bool| {
                let skip = !enabled || (value.trim().is_empty() && !required);
                (!skip).then(|| value.to_string())
            };
            let email = given(&typed.email, rules.email.enabled, rules.email.required);
            let phone = given(&typed.phone, rules.phone.enabled, rules.phone.required);
            sign_up_identifiers(ctx, email.as_deref(), phone.as_deref()).map_err(|e| match e {
                SignUpInputError::Invalid(kind, e) => {
                    (FlowMessage::Invalid(e), Some(FieldName::of(kind)))
                }
                SignUpInputError::Missing { kind, either } => (
                    FlowMessage::Missing { kind, either },
                    Some(FieldName::of(kind)),
                ),
                // Disabled fields are not read above.
                SignUpInputError::NotEnabled(kind) => (
                    FlowMessage::Missing {
                        kind,
                        either: false,
                    },
                    Some(FieldName::of(kind)),
                ),
            })
        }
    }
}

/// The query parameter that prefills an identifier of `kind` on the other step.
fn param(kind: IdentifierKind) -> &'static str {
    match kind {
        IdentifierKind::Email => "email_address",
        IdentifierKind::Phone => "phone_number",
    }
}

/// POST of the identifier step: start the flow and send the code.
pub async fn start(
    ctx: Ctx,
    kind: FlowKind,
    form: web::Form<StartForm>,
) -> Result<HttpResponse, PageError> {
    ctx.check_form(kind.as_str(), &form.csrf_token)?;
    let redirect = redirect_target(&ctx, Some(&form.redirect_url));
    let typed = Typed {
        identifier: form.identifier.clone(),
        email: form.email_address.clone(),
        phone: form.phone_number.clone(),
    }
    .clipped();
    let refuse = |(message, field): Refusal| {
        refused(&ctx, message, |message| {
            identifier_page(
                &ctx,
                kind,
                &typed,
                redirect.as_ref(),
                Some((message, field)),
            )
        })
    };
    let identifiers = match parse_identifiers(&ctx, kind, &typed) {
        Ok(i) => i,
        Err(refusal) => return refuse(refusal),
    };
    let redirect_url = redirect.as_ref().map(|r| r.as_str()).unwrap_or_default();
    let started = ctx
        .state
        .auth
        .start(kind, &identifiers, redirect.as_ref(), &ctx.client())
        .await;
    refuse(match started {
        Ok(flow) => return ctx.redirect(&paths::verify(kind, &flow)),
        Err(StartError::IdentifierNotFound) => {
            let identifier = &identifiers[0];
            let sign_up_url = with_query(
                paths::SIGN_UP,
                &[
                    (param(identifier.kind()), identifier.display()),
                    ("redirect_url", redirect_url),
                ],
            );
            let message = FlowMessage::NoAccount {
                kind: identifier.kind(),
                sign_up_url,
            };
            (message, Some(FieldName::Identifier))
        }
        Err(StartError::IdentifierTaken(taken)) => {
            let value = identifiers
                .iter()
                .find(|i| i.kind() == taken)
                .map(|i| i.display().to_string())
                .unwrap_or_default();
            let sign_in_url = with_query(
                paths::SIGN_IN,
                &[(param(taken), &value), ("redirect_url", redirect_url)],
            );
            let message = FlowMessage::Taken {
                kind: taken,
                sign_in_url,
            };
            (message, Some(FieldName::of(taken)))
        }
        Err(StartError::Limited { retry_after_secs }) => {
            (FlowMessage::Limited { retry_after_secs }, None)
        }
        Err(StartError::Internal(e)) => return Err(e.context("starting a flow").into()),
    })
}

fn verify_page(
    ctx: &Ctx,
    view: &FlowView,
    code: &str,
    error: Option<FlowMessage>,
    notice: Option<FlowNotice>,
) -> VerifyPage {
    let v = &view.verification;
    let (heading, what) = match v.kind {
        IdentifierKind::Email => ("Check your email", "email address"),
        IdentifierKind::Phone => ("Check your phone", "phone number"),
    };
    let start_over_label = match view.kind {
        FlowKind::SignUp => "Start over".to_string(),
        FlowKind::SignIn => format!("Use another {what}"),
    };
    let step = (v.steps > 1).then(|| format!("Step {} of {}: verify your {what}", v.step, v.steps));
    VerifyPage {
        page: ctx.page_ctx(heading),
        heading: heading.to_string(),
        step,
        destination: v.destination.clone(),
        by_sms: v.kind == IdentifierKind::Phone,
        edit_url: paths::edit(view.kind, &view.id),
        action: paths::verify(view.kind, &view.id),
        resend_action: paths::resend(view.kind, &view.id),
        factor_action: paths::factor(&view.id),
        csrf_token: ctx.csrf_token(view.id.as_str()),
        verification_id: v.id.to_string(),
        code: code.chars().take(32).collect(),
        code_length: ctx.state.settings.code_length,
        error,
        notice,
        resend_wait_secs: view.resend_wait_secs(),
        code_dead: v.dead,
        other_factors: view
            .other_factors
            .iter()
            .map(|f| FactorChoice {
                identifier_id: f.identifier_id.to_string(),
                label: format!("Send a code to {}", f.safe_identifier),
            })
            .collect(),
        start_over: Link::new(&start_over_label, paths::edit(view.kind, &view.id)),
        other_method: other_method(ctx, view),
    }
}

/// Strict enumeration protection lists no factors (that would tell an account with a phone
/// from one without), so "Use another method" is a way back to sign in with the other kind
/// of identifier instead; the same link for every sign-in, known or not.
fn other_method(ctx: &Ctx, view: &FlowView) -> Option<Link> {
    let settings = &ctx.state.settings;
    if view.kind != FlowKind::SignIn || !settings.enumeration_strict {
        return None;
    }
    let accepts = settings.identifiers.sign_in();
    if !(accepts.email && accepts.phone) {
        return None;
    }
    let redirect = view
        .redirect
        .as_ref()
        .map(|r| r.as_str())
        .unwrap_or_default();
    let label = match view.verification.kind {
        IdentifierKind::Email => "Sign in with your phone number instead",
        IdentifierKind::Phone => "Sign in with your email address instead",
    };
    Some(Link::new(
        label,
        with_query(paths::SIGN_IN, &[("redirect_url", redirect)]),
    ))
}

fn parse_flow(kind: FlowKind, raw: &str) -> Result<FlowId, PageError> {
    FlowId::parse(raw).ok_or(PageError::FlowNotFound(kind))
}

/// The start of every POST on a flow: a well-formed flow id and a valid CSRF token for it.
fn checked_flow_post(
    ctx: &Ctx,
    kind: FlowKind,
    raw: &str,
    csrf_token: &str,
) -> Result<FlowId, PageError> {
    let flow = parse_flow(kind, raw)?;
    ctx.check_form(flow.as_str(), csrf_token)?;
    Ok(flow)
}

async fn load(ctx: &Ctx, kind: FlowKind, flow: &FlowId) -> Result<FlowView, PageError> {
    ctx.state
        .auth
        .flow(flow, kind, &ctx.client())
        .await
        .map_err(|e| PageError::flow(kind, e))
}

/// Re-reads the flow and re-renders its code page with `message`.
async fn rerender(
    ctx: &Ctx,
    kind: FlowKind,
    flow: &FlowId,
    code: &str,
    message: FlowMessage,
) -> Result<HttpResponse, PageError> {
    let view = load(ctx, kind, flow).await?;
    refused(ctx, message, |message| {
        verify_page(ctx, &view, code, Some(message), None)
    })
}

/// GET of the code step (also where a GET on the POST-only resend URL lands).
pub async fn code_page(
    ctx: Ctx,
    kind: FlowKind,
    flow: web::Path<String>,
    query: web::Query<CodePageQuery>,
) -> Result<HttpResponse, PageError> {
    let flow = parse_flow(kind, &flow)?;
    let view = load(&ctx, kind, &flow).await?;
    if view.complete {
        return ctx.redirect(&landing(view.redirect.as_ref()));
    }
    let notice = if query.verified.is_some() {
        Some(FlowNotice::Verified(view.verification.kind))
    } else {
        query.sent.is_some().then_some(FlowNotice::Sent)
    };
    ctx.render(StatusCode::OK, &verify_page(&ctx, &view, "", None, notice))
}

/// POST of the code step.
pub async fn attempt(
    ctx: Ctx,
    kind: FlowKind,
    flow: web::Path<String>,
    form: web::Form<CodeForm>,
) -> Result<HttpResponse, PageError> {
    let flow = checked_flow_post(&ctx, kind, &flow, &form.csrf_token)?;
    let code = match OtpCode::parse(&form.code, ctx.state.settings.code_length) {
        Ok(c) => c,
        Err(e) => return rerender(&ctx, kind, &flow, &form.code, FlowMessage::CodeFormat(e)).await,
    };
    let previous_session = ctx.current_user().await.ok().flatten();
    let step = VerificationId::parse(&form.verification);
    let attempted = ctx
        .state
        .auth
        .attempt(
            &flow,
            kind,
            &code,
            &AttemptTarget::Page(step),
            &ctx.client(),
        )
        .await;
    let message = match attempted {
        Ok(Attempted::SignedIn(signed_in)) => {
            hand_over_session(&ctx, &ctx.client(), &signed_in, previous_session).await;
            return ctx.redirect(&landing(signed_in.redirect.as_ref()));
        }
        Ok(Attempted::NextVerification) => {
            return ctx.redirect(&format!("{}?verified=1", paths::verify(kind, &flow)))
        }
        Err(AttemptError::StepDone | AttemptError::NotPrepared) => {
            return ctx.redirect(&paths::verify(kind, &flow))
        }
        Err(AttemptError::AlreadyUsed) => {
            return match ctx.current_user().await {
                Ok(Some(_)) => ctx.redirect(paths::USER),
                _ => Err(PageError::CodeUsed(kind)),
            }
        }
        Err(AttemptError::Flow(e)) => return Err(PageError::flow(kind, e)),
        Err(AttemptError::IdentifierTaken) => {
            return rerender(&ctx, kind, &flow, "", FlowMessage::TakenMeanwhile).await
        }
        Err(AttemptError::Incorrect { remaining }) => FlowMessage::Incorrect { remaining },
        Err(AttemptError::TriesExhausted) => FlowMessage::TriesExhausted,
        Err(AttemptError::CodeExpired) => FlowMessage::CodeExpired,
        Err(AttemptError::Limited { retry_after_secs }) => {
            FlowMessage::Limited { retry_after_secs }
        }
        Err(AttemptError::Locked { retry_after_secs }) => FlowMessage::Locked { retry_after_secs },
    };
    rerender(&ctx, kind, &flow, &form.code, message).await
}

/// POST of "Resend code".
pub async fn resend(
    ctx: Ctx,
    kind: FlowKind,
    flow: web::Path<String>,
    form: web::Form<TokenForm>,
) -> Result<HttpResponse, PageError> {
    let flow = checked_flow_post(&ctx, kind, &flow, &form.csrf_token)?;
    let sent = ctx.state.auth.resend(&flow, kind, &ctx.client()).await;
    after_send(&ctx, kind, &flow, sent).await
}

/// POST of "Use another method" (sign-in): the code goes to another identifier of the account.
pub async fn switch_factor(
    ctx: Ctx,
    flow: web::Path<String>,
    form: web::Form<FactorForm>,
) -> Result<HttpResponse, PageError> {
    let kind = FlowKind::SignIn;
    let flow = checked_flow_post(&ctx, kind, &flow, &form.csrf_token)?;
    let identifier =
        IdentifierId::parse(&form.identifier_id).ok_or(PageError::FlowNotFound(kind))?;
    let sent = ctx
        .state
        .auth
        .switch_factor(&flow, &identifier, &ctx.client())
        .await;
    after_send(&ctx, kind, &flow, sent).await
}

/// The answer to a new code (resend, or "Use another method"): back to the code page, or the
/// page again with the reason it was refused.
async fn after_send(
    ctx: &Ctx,
    kind: FlowKind,
    flow: &FlowId,
    sent: Result<FlowView, ResendError>,
) -> Result<HttpResponse, PageError> {
    match sent {
        Ok(view) => ctx.redirect(&format!("{}?sent=1", paths::verify(kind, &view.id))),
        Err(ResendError::Cooldown { wait_secs, view }) => {
            refused(ctx, FlowMessage::Cooldown { wait_secs }, |message| {
                verify_page(ctx, &view, "", Some(message), None)
            })
        }
        Err(ResendError::Completed) => ctx.redirect(paths::USER),
        Err(ResendError::Limited { retry_after_secs }) => {
            rerender(
                ctx,
                kind,
                flow,
                "",
                FlowMessage::Limited { retry_after_secs },
            )
            .await
        }
        Err(ResendError::AlreadyVerified) => ctx.redirect(&paths::verify(kind, flow)),
        Err(ResendError::UnknownTarget) => Err(PageError::FlowNotFound(kind)),
        Err(ResendError::Flow(e)) => Err(PageError::flow(kind, e)),
    }
}
