//! The two steps shared by `/sign-up` and `/sign-in`: the identifier form and the code form.
//! `sign_up.rs` and `sign_in.rs` bind these to their URLs with their [`FlowKind`].

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::context::with_retry_after;
use super::pages::{FactorChoice, Field, IdentifierPage, Link, VerifyPage};
use super::paths::{self, with_query};
use super::Ctx;
use crate::auth::{
    AttemptError, AttemptTarget, Attempted, FlowError, FlowKind, FlowView, ResendError, StartError,
};
use crate::domain::{
    Accepts, FlowId, Identifier, IdentifierId, IdentifierKind, OtpCode, RedirectTarget,
    VerificationId,
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

/// The fields of the identifier step, as the instance's settings ask for them.
fn fields(ctx: &Ctx, kind: FlowKind, typed: &Typed, invalid: Option<FieldName>) -> Vec<Field> {
    let rules = &ctx.state.settings.identifiers;
    match kind {
        FlowKind::SignIn => {
            let accepts = rules.sign_in();
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
            vec![field(name, label.into(), value, true, invalid.is_some())]
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
    error: Option<(String, Option<Link>, Option<FieldName>)>,
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
    let (error, error_link, invalid) = match error {
        Some((m, l, f)) => (Some(m), l, f),
        None => (None, None, None),
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
        error_link,
        switch_text: switch_text.to_string(),
        switch_link: Link::new(
            switch_label,
            with_query(paths::start(other(kind)), &[("redirect_url", redirect_url)]),
        ),
    }
}

/// Where a completed flow (or a signed-in visitor) goes.
fn landing(redirect: Option<&RedirectTarget>) -> String {
    redirect
        .map(|r| r.as_str().to_string())
        .unwrap_or_else(|| paths::USER.to_string())
}

/// GET of the identifier step.
pub async fn start_page(ctx: Ctx, kind: FlowKind, query: web::Query<StartQuery>) -> HttpResponse {
    let mut redirect = redirect_target(&ctx, query.redirect_url.as_deref());
    match ctx.current_user().await {
        Ok(Some(_)) => return ctx.redirect(&landing(redirect.as_ref()), vec![]),
        Ok(None) => {}
        Err(resp) => return resp,
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

type FieldError = (String, Option<FieldName>);

/// Parses the identifier step's fields, as the settings ask for them.
fn parse_identifiers(
    ctx: &Ctx,
    kind: FlowKind,
    typed: &Typed,
) -> Result<Vec<Identifier>, FieldError> {
    let settings = &ctx.state.settings;
    let rules = &settings.identifiers;
    let policy = &settings.phone_policy;
    let only = |email: bool| Accepts {
        email,
        phone: !email,
    };
    match kind {
        FlowKind::SignIn => {
            let accepts = rules.sign_in();
            let (input, name) = match (accepts.email, accepts.phone) {
                (true, true) => (
                    first_non_empty(&[&typed.identifier, &typed.email, &typed.phone]),
                    FieldName::Identifier,
                ),
                (false, true) => (
                    first_non_empty(&[&typed.phone, &typed.identifier]),
                    FieldName::Phone,
                ),
                _ => (
                    first_non_empty(&[&typed.email, &typed.identifier]),
                    FieldName::Email,
                ),
            };
            Identifier::parse_field(input, accepts, policy)
                .map(|i| vec![i])
                .map_err(|e| (e.to_string(), Some(name)))
        }
        FlowKind::SignUp => {
            let mut out = Vec::new();
            let none_required = !rules.email.required && !rules.phone.required;
            for (enabled, required, value, is_email, name) in [
                (
                    rules.email.enabled,
                    rules.email.required,
                    &typed.email,
                    true,
                    FieldName::Email,
                ),
                (
                    rules.phone.enabled,
                    rules.phone.required,
                    &typed.phone,
                    false,
                    FieldName::Phone,
                ),
            ] {
                if !enabled {
                    continue;
                }
                let blank = value.trim().is_empty();
                if blank && !required {
                    continue;
                }
                let identifier = Identifier::parse_field(value, only(is_email), policy)
                    .map_err(|e| (e.to_string(), Some(name)))?;
                out.push(identifier);
            }
            if out.is_empty() {
                let message = if none_required && rules.email.enabled && rules.phone.enabled {
                    "Enter an email address or a phone number."
                } else if rules.email.enabled {
                    "Enter your email address."
                } else {
                    "Enter your phone number."
                };
                let name = if rules.email.enabled {
                    FieldName::Email
                } else {
                    FieldName::Phone
                };
                return Err((message.into(), Some(name)));
            }
            Ok(out)
        }
    }
}

fn kind_words(kind: IdentifierKind) -> (&'static str, &'static str, &'static str) {
    match kind {
        IdentifierKind::Email => ("email address", "address", "email_address"),
        IdentifierKind::Phone => ("phone number", "number", "phone_number"),
    }
}

/// POST of the identifier step: start the flow and send the code.
pub async fn start(ctx: Ctx, kind: FlowKind, form: web::Form<StartForm>) -> HttpResponse {
    if let Err(resp) = ctx.check_form(kind.as_str(), &form.csrf_token) {
        return resp;
    }
    let redirect = redirect_target(&ctx, Some(&form.redirect_url));
    let typed = Typed {
        identifier: form.identifier.clone(),
        email: form.email_address.clone(),
        phone: form.phone_number.clone(),
    }
    .clipped();
    let invalid = |message: String, link: Option<Link>, name: Option<FieldName>| {
        ctx.render(
            StatusCode::UNPROCESSABLE_ENTITY,
            &identifier_page(
                &ctx,
                kind,
                &typed,
                redirect.as_ref(),
                Some((message, link, name)),
            ),
        )
    };
    let identifiers = match parse_identifiers(&ctx, kind, &typed) {
        Ok(i) => i,
        Err((message, name)) => return invalid(message, None, name),
    };
    let redirect_str = redirect.as_ref().map(|r| r.as_str()).unwrap_or_default();
    match ctx
        .state
        .auth
        .start(kind, &identifiers, redirect.as_ref(), &ctx.client())
        .await
    {
        Ok(flow) => ctx.redirect(&paths::verify(kind, &flow), vec![]),
        Err(StartError::IdentifierNotFound) => {
            let identifier = &identifiers[0];
            let (what, short, param) = kind_words(identifier.kind());
            invalid(
                format!("We couldn't find an account with that {what}."),
                Some(Link::new(
                    &format!("Create an account with this {short}"),
                    with_query(
                        paths::SIGN_UP,
                        &[
                            (param, identifier.display()),
                            ("redirect_url", redirect_str),
                        ],
                    ),
                )),
                Some(FieldName::Identifier),
            )
        }
        Err(StartError::IdentifierTaken(taken)) => {
            let (what, _, param) = kind_words(taken);
            let value = identifiers
                .iter()
                .find(|i| i.kind() == taken)
                .map(|i| i.display().to_string())
                .unwrap_or_default();
            let name = match taken {
                IdentifierKind::Email => FieldName::Email,
                IdentifierKind::Phone => FieldName::Phone,
            };
            invalid(
                format!("An account with this {what} already exists."),
                Some(Link::new(
                    "Sign in instead",
                    with_query(
                        paths::SIGN_IN,
                        &[(param, &value), ("redirect_url", redirect_str)],
                    ),
                )),
                Some(name),
            )
        }
        Err(StartError::Limited { retry_after_secs }) => with_retry_after(
            ctx.render(
                StatusCode::TOO_MANY_REQUESTS,
                &identifier_page(
                    &ctx,
                    kind,
                    &typed,
                    redirect.as_ref(),
                    Some((wait_message(retry_after_secs), None, None)),
                ),
            ),
            retry_after_secs,
        ),
        Err(StartError::Internal(e)) => ctx.internal(e.context("starting a flow")),
    }
}

fn verify_page(
    ctx: &Ctx,
    view: &FlowView,
    code: &str,
    error: Option<(String, Option<Link>)>,
    notice: Option<String>,
) -> VerifyPage {
    let (error, error_link) = match error {
        Some((m, l)) => (Some(m), l),
        None => (None, None),
    };
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
        error_link,
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

fn flow_error(ctx: &Ctx, kind: FlowKind, e: FlowError) -> HttpResponse {
    let start = Some(Link::new("Start again", paths::start(kind)));
    match e {
        FlowError::NotFound => ctx.error_page(
            StatusCode::NOT_FOUND,
            "This link is not valid",
            "We could not find this sign-up or sign-in attempt. It may have been started in another browser. Start again to get a new code.",
            start,
        ),
        FlowError::Expired => ctx.error_page(
            StatusCode::NOT_FOUND,
            "This attempt has expired",
            "For your security, unfinished attempts expire after a period of inactivity. Start again to get a new code.",
            start,
        ),
        FlowError::Internal(e) => ctx.internal(e.context("loading a flow")),
    }
}

fn parse_flow(ctx: &Ctx, kind: FlowKind, raw: &str) -> Result<FlowId, HttpResponse> {
    FlowId::parse(raw).ok_or_else(|| flow_error(ctx, kind, FlowError::NotFound))
}

/// The start of every POST on a flow: a well-formed flow id and a valid CSRF token for it.
fn checked_flow_post(
    ctx: &Ctx,
    kind: FlowKind,
    raw: &str,
    csrf_token: &str,
) -> Result<FlowId, HttpResponse> {
    let flow = parse_flow(ctx, kind, raw)?;
    ctx.check_form(flow.as_str(), csrf_token)?;
    Ok(flow)
}

/// Re-reads the flow and re-renders its code page with `status` and a message.
async fn rerender(
    ctx: &Ctx,
    kind: FlowKind,
    flow: &FlowId,
    status: StatusCode,
    code: &str,
    error: (String, Option<Link>),
) -> HttpResponse {
    match ctx.state.auth.flow(flow, kind, &ctx.client()).await {
        Ok(view) => ctx.render(status, &verify_page(ctx, &view, code, Some(error), None)),
        Err(e) => flow_error(ctx, kind, e),
    }
}

/// GET of the code step (also where a GET on the POST-only resend URL lands).
pub async fn code_page(
    ctx: Ctx,
    kind: FlowKind,
    flow: web::Path<String>,
    query: web::Query<CodePageQuery>,
) -> HttpResponse {
    let flow = match parse_flow(&ctx, kind, &flow) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    match ctx.state.auth.flow(&flow, kind, &ctx.client()).await {
        Ok(view) if view.complete => ctx.redirect(&landing(view.redirect.as_ref()), vec![]),
        Ok(view) => {
            let notice = if query.verified.is_some() {
                Some(match view.verification.kind {
                    IdentifierKind::Email => {
                        "Verified. Now enter the code we sent to your email address.".to_string()
                    }
                    IdentifierKind::Phone => {
                        "Verified. Now enter the code we sent to your phone.".to_string()
                    }
                })
            } else {
                query
                    .sent
                    .is_some()
                    .then(|| "We sent you a new code. Earlier codes no longer work.".to_string())
            };
            ctx.render(StatusCode::OK, &verify_page(&ctx, &view, "", None, notice))
        }
        Err(e) => flow_error(&ctx, kind, e),
    }
}

/// What a rate-limited person reads: when to try again, in words, never which limit it was.
fn wait_message(secs: u64) -> String {
    let when = if secs < 60 {
        format!("{secs} seconds")
    } else {
        let minutes = secs.div_ceil(60);
        if minutes == 1 {
            "a minute".to_string()
        } else {
            format!("{minutes} minutes")
        }
    };
    format!("Too many requests. For your security, please wait {when} and try again.")
}

fn tries_left(n: u32) -> String {
    if n == 1 {
        "Incorrect code. You have 1 try left.".into()
    } else {
        format!("Incorrect code. You have {n} tries left.")
    }
}

/// POST of the code step.
pub async fn attempt(
    ctx: Ctx,
    kind: FlowKind,
    flow: web::Path<String>,
    form: web::Form<CodeForm>,
) -> HttpResponse {
    let flow = match checked_flow_post(&ctx, kind, &flow, &form.csrf_token) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let code = match OtpCode::parse(&form.code, ctx.state.settings.code_length) {
        Ok(c) => c,
        Err(e) => {
            return rerender(
                &ctx,
                kind,
                &flow,
                unprocessable,
                &form.code,
                (e.to_string(), None),
            )
            .await
        }
    };
    let previous_session = ctx.current_user().await.ok().flatten();
    let step = VerificationId::parse(&form.verification);
    match ctx
        .state
        .auth
        .attempt(&flow, kind, &code, &AttemptTarget::Page(step), &ctx.client())
        .await
    {
        Err(AttemptError::Limited { retry_after_secs }) => {
            let resp = rerender(
                &ctx,
                kind,
                &flow,
                StatusCode::TOO_MANY_REQUESTS,
                &form.code,
                (wait_message(retry_after_secs), None),
            )
            .await;
            with_retry_after(resp, retry_after_secs)
        }
        Err(AttemptError::StepDone | AttemptError::NotPrepared) => {
            ctx.redirect(&paths::verify(kind, &flow), vec![])
        }
        Ok(Attempted::NextVerification) => {
            ctx.redirect(&format!("{}?verified=1", paths::verify(kind, &flow)), vec![])
        }
        Ok(Attempted::SignedIn(signed_in)) => {
            // A browser holds one session: an earlier one is ended, never reused.
            if let Some(prev) = previous_session {
                if let Err(e) = ctx.state.auth.sign_out(&prev, &ctx.client()).await {
                    tracing::warn!(error = %e, "could not end the previous session");
                }
            }
            let cookie = ctx.state.cookies.session(&signed_in.token, ctx.state.settings.session_ttl);
            // The pre-session cookie is replaced too, so nothing planted before sign-in survives it.
            let browser = ctx.state.cookies.browser(&crate::crypto::random_token(32));
            ctx.redirect(&landing(signed_in.redirect.as_ref()), vec![cookie, browser])
        }
        Err(AttemptError::Incorrect { remaining }) => {
            rerender(&ctx, kind, &flow, unprocessable, &form.code, (tries_left(remaining), None)).await
        }
        Err(AttemptError::TriesExhausted) => {
            rerender(
                &ctx,
                kind,
                &flow,
                unprocessable,
                &form.code,
                ("Too many incorrect tries: this code no longer works. Request a new code below.".into(), None),
            )
            .await
        }
        Err(AttemptError::CodeExpired) => {
            rerender(&ctx, kind, &flow, unprocessable, &form.code, ("This code has expired. Request a new code below.".into(), None)).await
        }
        Err(AttemptError::AlreadyUsed) => match ctx.current_user().await {
            Ok(Some(_)) => ctx.redirect(paths::USER, vec![]),
            _ => ctx.error_page(
                StatusCode::CONFLICT,
                "This code was already used",
                "This code has already been used to finish signing in. If that was not you in another tab, start again.",
                Some(Link::new("Start again", paths::start(kind))),
            ),
        },
        Err(AttemptError::IdentifierTaken) => {
            rerender(
                &ctx,
                kind,
                &flow,
                StatusCode::CONFLICT,
                "",
                (
                    "An account with this email address or phone number was created meanwhile.".into(),
                    Some(Link::new("Sign in instead", paths::SIGN_IN)),
                ),
            )
            .await
        }
        Err(AttemptError::Locked { retry_after_secs }) => {
            let minutes = retry_after_secs.div_ceil(60);
            let resp = rerender(
                &ctx,
                kind,
                &flow,
                StatusCode::TOO_MANY_REQUESTS,
                &form.code,
                (
                    format!(
                        "Too many incorrect codes. For your security, try again in about {minutes} minute{}.",
                        if minutes == 1 { "" } else { "s" }
                    ),
                    None,
                ),
            )
            .await;
            with_retry_after(resp, retry_after_secs)
        }
        Err(AttemptError::Flow(e)) => flow_error(&ctx, kind, e),
    }
}

/// POST of "Resend code".
pub async fn resend(
    ctx: Ctx,
    kind: FlowKind,
    flow: web::Path<String>,
    form: web::Form<TokenForm>,
) -> HttpResponse {
    let flow = match checked_flow_post(&ctx, kind, &flow, &form.csrf_token) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let sent = ctx.state.auth.resend(&flow, kind, &ctx.client()).await;
    after_send(&ctx, kind, &flow, sent).await
}

/// POST of "Use another method" (sign-in): the code goes to another identifier of the account.
pub async fn switch_factor(
    ctx: Ctx,
    flow: web::Path<String>,
    form: web::Form<FactorForm>,
) -> HttpResponse {
    let kind = FlowKind::SignIn;
    let flow = match checked_flow_post(&ctx, kind, &flow, &form.csrf_token) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let Some(identifier) = IdentifierId::parse(&form.identifier_id) else {
        return flow_error(&ctx, kind, FlowError::NotFound);
    };
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
) -> HttpResponse {
    match sent {
        Ok(view) => ctx.redirect(&format!("{}?sent=1", paths::verify(kind, &view.id)), vec![]),
        Err(ResendError::Cooldown { wait_secs, view }) => {
            let page = verify_page(
                ctx,
                &view,
                "",
                Some((
                    format!("You can request a new code in {wait_secs} seconds."),
                    None,
                )),
                None,
            );
            with_retry_after(ctx.render(StatusCode::TOO_MANY_REQUESTS, &page), wait_secs)
        }
        Err(ResendError::Completed) => ctx.redirect(paths::USER, vec![]),
        Err(ResendError::Limited { retry_after_secs }) => {
            let resp = rerender(
                ctx,
                kind,
                flow,
                StatusCode::TOO_MANY_REQUESTS,
                "",
                (wait_message(retry_after_secs), None),
            )
            .await;
            with_retry_after(resp, retry_after_secs)
        }
        Err(ResendError::AlreadyVerified) => ctx.redirect(&paths::verify(kind, flow), vec![]),
        Err(ResendError::UnknownTarget) => flow_error(ctx, kind, FlowError::NotFound),
        Err(ResendError::Flow(e)) => flow_error(ctx, kind, e),
    }
}
