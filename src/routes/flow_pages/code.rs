//! The code step: the code page, a code's submission, "Resend code" and (sign-in) "Use another
//! method".

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use super::{
    landing, refused, with_query, CodeForm, CodePageQuery, FactorForm, FlowMessage, FlowNotice,
    TokenForm,
};
use crate::auth::{AttemptError, AttemptTarget, Attempted, FlowKind, FlowView, ResendError};
use crate::domain::{FlowId, IdentifierId, IdentifierKind, OtpCode, VerificationId};
use crate::routes::flow_input::hand_over_session;
use crate::routes::pages::{FactorChoice, Link, VerifyPage};
use crate::routes::{paths, Ctx, PageError};

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
        FlowKind::AddIdentifier | FlowKind::Reverify => "Cancel".to_string(),
    };
    let step = match view.kind {
        FlowKind::Reverify => Some("Confirm it is you: enter a fresh code to continue".to_string()),
        FlowKind::AddIdentifier => Some(format!("Verify the {what} you are adding")),
        _ => (v.steps > 1).then(|| format!("Step {} of {}: verify your {what}", v.step, v.steps)),
    };
    VerifyPage {
        page: ctx.page_ctx(heading),
        heading: heading.to_string(),
        step,
        destination: v.destination.clone(),
        by_sms: v.kind == IdentifierKind::Phone,
        edit_url: paths::edit(view.kind, &view.id),
        action: paths::verify(view.kind, &view.id),
        resend_action: paths::resend(view.kind, &view.id),
        factor_action: paths::factor(view.kind, &view.id),
        csrf_token: ctx.csrf_token(view.id.as_str()),
        verification_id: v.id.to_string(),
        code: code.chars().take(32).collect(),
        code_length: ctx.state.settings.auth.code_length,
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
    if view.kind != FlowKind::SignIn || !settings.auth.enumeration_strict {
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
        return ctx.redirect(&landing(&ctx, kind, view.redirect.as_ref()));
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
    let code = match OtpCode::parse(&form.code, ctx.state.settings.auth.code_length) {
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
            return ctx.redirect(&landing(&ctx, kind, signed_in.redirect.as_ref()));
        }
        Ok(Attempted::AccountUpdated { then, .. }) => {
            return crate::routes::user_actions::after_account_flow(&ctx, kind, then).await
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
        Err(AttemptError::Blocked) => FlowMessage::Blocked,
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
