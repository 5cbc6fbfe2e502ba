//! The two steps shared by `/sign-up` and `/sign-in`: the identifier form and the code form.
//! `sign_up.rs` and `sign_in.rs` bind these to their URLs with their [`FlowKind`].

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::context::with_retry_after;
use super::pages::{IdentifierPage, Link, VerifyPage};
use super::{paths, Ctx};
use crate::auth::{AttemptError, FlowError, FlowKind, FlowView, ResendError, StartError};
use crate::domain::{EmailAddress, FlowId, OtpCode, RedirectTarget};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StartQuery {
    redirect_url: Option<String>,
    email_address: Option<String>,
    flow: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct StartForm {
    pub csrf_token: String,
    email_address: String,
    redirect_url: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct CodeForm {
    pub csrf_token: String,
    code: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct TokenForm {
    pub csrf_token: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CodePageQuery {
    sent: Option<String>,
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

fn with_query(base: &str, params: &[(&str, &str)]) -> String {
    let params: Vec<_> = params.iter().filter(|(_, v)| !v.is_empty()).collect();
    if params.is_empty() {
        return base.to_string();
    }
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    format!("{base}?{}", s.finish())
}

fn other(kind: FlowKind) -> FlowKind {
    match kind {
        FlowKind::SignUp => FlowKind::SignIn,
        FlowKind::SignIn => FlowKind::SignUp,
    }
}

fn identifier_page(
    ctx: &Ctx,
    kind: FlowKind,
    email: &str,
    redirect: Option<&RedirectTarget>,
    error: Option<(String, Option<Link>)>,
) -> IdentifierPage {
    let redirect_url = redirect.map(|r| r.as_str()).unwrap_or_default();
    let (title, heading, lead, switch_text, switch_label) = match kind {
        FlowKind::SignUp => (
            "Sign up",
            "Create your account".to_string(),
            format!(
                "to continue to {}. We will email you a code; no password needed.",
                ctx.state.settings.product_name
            ),
            "Already have an account?",
            "Sign in",
        ),
        FlowKind::SignIn => (
            "Sign in",
            "Sign in".to_string(),
            format!("to continue to {}", ctx.state.settings.product_name),
            "No account?",
            "Sign up",
        ),
    };
    let (error, error_link) = match error {
        Some((m, l)) => (Some(m), l),
        None => (None, None),
    };
    IdentifierPage {
        page: ctx.page_ctx(title),
        heading,
        lead,
        action: paths::start(kind).to_string(),
        csrf_token: ctx.csrf_token(kind.as_str()),
        email: email.to_string(),
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
    let mut email = query.email_address.clone().unwrap_or_default();
    // "Edit" from the code page: prefill from the flow (only this browser's own flows).
    if let Some(flow) = query.flow.as_deref().and_then(FlowId::parse) {
        if let Ok(view) = ctx.state.auth.flow(&flow, kind, &ctx.client()).await {
            email = view.identifier;
            redirect = redirect.or(view.redirect);
        }
    }
    let email: String = email.chars().take(320).collect();
    ctx.render(
        StatusCode::OK,
        &identifier_page(&ctx, kind, &email, redirect.as_ref(), None),
    )
}

/// POST of the identifier step: start the flow and send the code.
pub async fn start(ctx: Ctx, kind: FlowKind, form: web::Form<StartForm>) -> HttpResponse {
    if let Err(resp) = ctx.check_form(kind.as_str(), &form.csrf_token) {
        return resp;
    }
    let redirect = redirect_target(&ctx, Some(&form.redirect_url));
    let typed = &form.email_address;
    let invalid = |message: String, link: Option<Link>| {
        ctx.render(
            StatusCode::UNPROCESSABLE_ENTITY,
            &identifier_page(&ctx, kind, typed, redirect.as_ref(), Some((message, link))),
        )
    };
    let email = match EmailAddress::parse(typed) {
        Ok(e) => e,
        Err(e) => return invalid(e.to_string(), None),
    };
    let redirect_str = redirect.as_ref().map(|r| r.as_str()).unwrap_or_default();
    match ctx
        .state
        .auth
        .start(kind, &email, redirect.as_ref(), &ctx.client())
        .await
    {
        Ok(flow) => ctx.redirect(&paths::verify(kind, &flow), vec![]),
        Err(StartError::IdentifierNotFound) => invalid(
            "We couldn't find an account with that email address.".into(),
            Some(Link::new(
                "Create an account with this address",
                with_query(
                    paths::SIGN_UP,
                    &[
                        ("email_address", email.display()),
                        ("redirect_url", redirect_str),
                    ],
                ),
            )),
        ),
        Err(StartError::IdentifierTaken) => invalid(
            "An account with this email address already exists.".into(),
            Some(Link::new(
                "Sign in instead",
                with_query(
                    paths::SIGN_IN,
                    &[
                        ("email_address", email.display()),
                        ("redirect_url", redirect_str),
                    ],
                ),
            )),
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
    let start_over_label = match view.kind {
        FlowKind::SignUp => "Start over",
        FlowKind::SignIn => "Use another email address",
    };
    VerifyPage {
        page: ctx.page_ctx("Check your email"),
        destination: view.verification.destination.clone(),
        edit_url: paths::edit(view.kind, &view.id),
        action: paths::verify(view.kind, &view.id),
        resend_action: paths::resend(view.kind, &view.id),
        csrf_token: ctx.csrf_token(view.id.as_str()),
        code: code.chars().take(32).collect(),
        code_length: ctx.state.settings.code_length,
        error,
        error_link,
        notice,
        resend_wait_secs: view.resend_wait_secs(),
        code_dead: view.verification.dead,
        start_over: Link::new(start_over_label, paths::edit(view.kind, &view.id)),
    }
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
            let notice = query
                .sent
                .is_some()
                .then(|| "We sent you a new code. Earlier codes no longer work.".to_string());
            ctx.render(StatusCode::OK, &verify_page(&ctx, &view, "", None, notice))
        }
        Err(e) => flow_error(&ctx, kind, e),
    }
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
    match ctx.state.auth.attempt(&flow, kind, &code, &ctx.client()).await {
        Ok(signed_in) => {
            // A browser holds one session: an earlier one is ended, never reused.
            if let Some(prev) = previous_session {
                if let Err(e) = ctx.state.auth.sign_out(&prev.session_id).await {
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
                    "An account with this email address was created meanwhile.".into(),
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
                        "Too many incorrect codes for this email address. For your security, try again in about {minutes} minute{}.",
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
    match ctx.state.auth.resend(&flow, kind, &ctx.client()).await {
        Ok(view) => ctx.redirect(&format!("{}?sent=1", paths::verify(kind, &view.id)), vec![]),
        Err(ResendError::Cooldown { wait_secs, view }) => {
            let page = verify_page(
                &ctx,
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
        Err(ResendError::Flow(e)) => flow_error(&ctx, kind, e),
    }
}
