//! `/dev/outbox`: the messages a development instance would have sent; `/dev/settings`. Both
//! answer 404 outside dev mode, and in dev mode to anyone but a browser on this machine: the
//! peer must be a loopback address that sends no forwarding header and asks for a loopback
//! host, so a reverse proxy in front of an instance that wrongly runs in dev mode does not hand
//! live codes to whoever it forwards.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use super::pages::{DevOutboxPage, DevSettingsPage, OutboxRow};
use super::{Ctx, PageError};
use crate::delivery::CodeMessage;
use crate::domain::{OutboxChannel, TestMode};

const TIME_FORMAT: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");

/// Headers a proxy adds to say whom it forwards for (or for which host).
const FORWARDING_HEADERS: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-forwarded-for",
    "via",
];

/// Whether a request may see the dev pages: dev mode, a loopback peer, no forwarding header and
/// a `Host` that names this machine (`localhost`, `127.0.0.1`, `[::1]`, any port).
fn dev_pages_allowed(
    dev_mode: bool,
    peer: Option<std::net::IpAddr>,
    header_names: &[&str],
    host: Option<&str>,
) -> bool {
    let loopback_peer = peer.is_some_and(|ip| ip.to_canonical().is_loopback());
    let forwarded = header_names
        .iter()
        .any(|h| FORWARDING_HEADERS.iter().any(|f| h.eq_ignore_ascii_case(f)));
    let local_host = host.is_some_and(|h| {
        let name = match h.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => h.rsplit_once(':').map_or(h, |(name, _)| name),
        };
        name.eq_ignore_ascii_case("localhost")
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    dev_mode && loopback_peer && !forwarded && local_host
}

fn check_dev(ctx: &Ctx) -> Result<(), PageError> {
    let names: Vec<&str> = ctx.req.headers().keys().map(|k| k.as_str()).collect();
    let host = ctx
        .req
        .headers()
        .get(actix_web::http::header::HOST)
        .and_then(|h| h.to_str().ok());
    let peer = ctx.req.peer_addr().map(|a| a.ip());
    if dev_pages_allowed(ctx.state.settings.dev_mode, peer, &names, host) {
        Ok(())
    } else {
        Err(PageError::NotFound)
    }
}

pub async fn outbox(ctx: Ctx) -> Result<HttpResponse, PageError> {
    check_dev(&ctx)?;
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
                        OutboxChannel::Sms => format!("SMS: {}", c.render_sms(product, host)),
                        OutboxChannel::BackchannelLogout => String::new(),
                        OutboxChannel::Email => c
                            .render_email(product, ctx.state.settings.auth.code_in_email_subject)
                            .map(|m| m.subject)
                            .unwrap_or_default(),
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
    check_dev(&ctx)?;
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
        match &s.auth.test_mode {
            TestMode::Off => "off".into(),
            TestMode::On { email_domains: None } => "on: +latchkey_test addresses and +1 XXX 555-0100…0199 numbers get no message and accept 424242".into(),
            TestMode::On { email_domains: Some(domains) } => format!("on: +latchkey_test addresses at {} and +1 XXX 555-0100…0199 numbers get no message and accept 424242", domains.join(", ")),
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

#[cfg(test)]
mod tests {
    use super::dev_pages_allowed;
    use std::net::IpAddr;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_local_browser_sees_the_dev_pages_in_dev_mode_only() {
        let headers = ["host", "user-agent", "accept"];
        for host in [
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "LOCALHOST",
        ] {
            assert!(
                dev_pages_allowed(true, ip("127.0.0.1"), &headers, Some(host)),
                "{host}"
            );
        }
        assert!(dev_pages_allowed(
            true,
            ip("::1"),
            &headers,
            Some("localhost")
        ));
        assert!(dev_pages_allowed(
            true,
            ip("::ffff:127.0.0.1"),
            &headers,
            Some("localhost")
        ));
        assert!(!dev_pages_allowed(
            false,
            ip("127.0.0.1"),
            &headers,
            Some("localhost")
        ));
    }

    #[test]
    fn a_remote_peer_never_sees_the_dev_pages() {
        let headers = ["host"];
        assert!(!dev_pages_allowed(
            true,
            ip("192.0.2.7"),
            &headers,
            Some("localhost")
        ));
        assert!(!dev_pages_allowed(
            true,
            ip("2001:db8::1"),
            &headers,
            Some("localhost")
        ));
        assert!(!dev_pages_allowed(true, None, &headers, Some("localhost")));
    }

    #[test]
    fn a_request_through_a_local_proxy_never_sees_the_dev_pages() {
        for header in [
            "X-Forwarded-For",
            "forwarded",
            "x-real-ip",
            "via",
            "x-forwarded-host",
        ] {
            assert!(
                !dev_pages_allowed(true, ip("127.0.0.1"), &["host", header], Some("localhost")),
                "{header}"
            );
        }
        for host in [
            "accounts.example.com",
            "accounts.example.com:8080",
            "localhost.evil.test",
            "[2001:db8::1]:80",
        ] {
            assert!(
                !dev_pages_allowed(true, ip("127.0.0.1"), &["host"], Some(host)),
                "{host}"
            );
        }
        assert!(!dev_pages_allowed(true, ip("127.0.0.1"), &[], None));
    }
}
