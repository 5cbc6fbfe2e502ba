//! `/dev/outbox`: the messages a development instance would have sent. 404 outside dev mode.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use super::pages::{DevOutboxPage, DevSettingsPage, OutboxRow};
use super::{Ctx, PageError};
use crate::delivery::CodeMessage;
use crate::domain::Channel;

const TIME_FORMAT: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");

pub async fn outbox(ctx: Ctx) -> Result<HttpResponse, PageError> {
    if !ctx.state.settings.dev_mode {
        return Err(PageError::NotFound);
    }
    let entries = ctx
        .state
        .store
        .recent_messages(50)
        .await
        .map_err(|e| e.context("listing the outbox"))?;
    let keys = ctx.state.auth.keys();
    let product = &ctx.state.settings.product_name;
    let host = ctx.state.settings.public_url.host_str().unwrap_or_default();
    let rows = entries
        .into_iter()
        .map(|e| {
            let content = e
                .payload
                .as_deref()
                .and_then(|p| CodeMessage::open(keys, p));
            OutboxRow {
                created: e.created_at.format(TIME_FORMAT).unwrap_or_default(),
                to: content
                    .as_ref()
                    .map(|c| c.to.clone())
                    .unwrap_or(e.recipient_masked),
                code: content
                    .as_ref()
                    .map(|c| {
                        if c.purpose.is_notice() {
                            "(notice, no code)".to_string()
                        } else {
                            c.code.clone()
                        }
                    })
                    .unwrap_or_else(|| "(erased)".into()),
                subject: content
                    .as_ref()
                    .map(|c| match e.channel {
                        Channel::Sms => format!("SMS: {}", c.render_sms(product, host)),
                        Channel::Email => format!("{} is your verification code", c.code),
                    })
                    .unwrap_or_default(),
                status: e.status.as_str().to_string(),
                attempts: e.attempts,
                last_error: e.last_error.unwrap_or_default(),
            }
        })
        .collect();
    ctx.render(
        StatusCode::OK,
        &DevOutboxPage {
            page: ctx.page_ctx("Development outbox"),
            rows,
        },
    )
}

/// `/dev/settings`: the identifier, strategy and delivery settings in force, read-only.
pub async fn settings(ctx: Ctx) -> Result<HttpResponse, PageError> {
    if !ctx.state.settings.dev_mode {
        return Err(PageError::NotFound);
    }
    let s = &ctx.state.settings;
    let on = |b: bool| if b { "on" } else { "off" }.to_string();
    let mut rows = Vec::new();
    for (name, r) in [
        ("email", &s.identifiers.email),
        ("phone", &s.identifiers.phone),
    ] {
        rows.push((format!("identifiers.{name}.enabled"), on(r.enabled)));
        rows.push((format!("identifiers.{name}.required"), on(r.required)));
        rows.push((
            format!("identifiers.{name}.used_for_sign_in"),
            on(r.used_for_sign_in),
        ));
    }
    rows.push(("strategies.email_code".into(), on(s.strategies.email_code)));
    rows.push(("strategies.phone_code".into(), on(s.strategies.phone_code)));
    rows.push((
        "phone.default_region".into(),
        s.phone_policy
            .default_region()
            .unwrap_or("none (numbers need +country code)")
            .to_string(),
    ));
    rows.push((
        "phone.allowed_countries".into(),
        s.phone_policy.describe_allowed(),
    ));
    rows.push(("sms.provider".into(), s.delivery.sms.name().to_string()));
    rows.push((
        "smtp_url".into(),
        if s.delivery.smtp.is_some() {
            "set"
        } else {
            "unset (codes are logged and listed on /dev/outbox)"
        }
        .into(),
    ));
    rows.push((
        "test_mode".into(),
        if s.auth.test_mode {
            "on: +latchkey_test addresses and +1 XXX 555-0100…0199 numbers get no message and accept 424242".into()
        } else {
            "off".into()
        },
    ));
    rows.push(("codes.length".into(), s.auth.code_length.to_string()));
    rows.push((
        "codes.ttl_secs".into(),
        s.auth.code_ttl.as_secs().to_string(),
    ));
    rows.push((
        "codes.max_attempts".into(),
        s.auth.code_max_attempts.to_string(),
    ));
    rows.push((
        "codes.resend_cooldown_secs".into(),
        s.auth.resend_cooldown.as_secs().to_string(),
    ));
    for w in &s.warnings {
        rows.push(("warning".into(), w.clone()));
    }
    ctx.render(
        StatusCode::OK,
        &DevSettingsPage {
            page: ctx.page_ctx("Instance settings"),
            rows,
        },
    )
}
