//! SMS delivery: the providers' HTTP APIs (Twilio, a signed webhook) and the development log.

mod text;
mod webhook;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::message::Purpose;

use crate::config::{SmsProvider, TwilioSender};
pub use text::{gsm7_septets, sms_text, SMS_SEGMENT_SEPTETS};
pub use webhook::{verify_webhook_signature, webhook_signature, SIGNATURE_HEADER};

/// One SMS to send.
pub struct OutgoingSms<'a> {
    /// The outbox message id: the same on every retry, so a receiver can drop duplicates.
    pub id: &'a str,
    /// E.164.
    pub to: &'a str,
    /// The full text (see [`sms_text`]).
    pub body: &'a str,
    pub code: &'a str,
    pub purpose: Purpose,
    /// Unix milliseconds.
    pub expires_at_ms: i64,
}

/// Why a send failed. Neither variant's text holds the auth token, the message body or the code.
#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    /// Network trouble, a timeout, 5xx or 429: worth retrying.
    #[error("{0}")]
    Temporary(String),
    /// Any other refusal (an invalid number, bad credentials): retrying cannot help.
    #[error("{0}")]
    Permanent(String),
}

/// Sends SMS through the configured provider.
pub struct SmsSender {
    provider: SmsProvider,
    client: reqwest::Client,
    timeout: Duration,
}

impl SmsSender {
    /// `timeout` bounds one whole request (capped at 10 s); connecting gets at most 5 s of it.
    pub fn new(provider: SmsProvider, timeout: Duration) -> anyhow::Result<Self> {
        let timeout = timeout.min(Duration::from_secs(10));
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("latchkey/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            provider,
            client,
            timeout,
        })
    }

    /// Development mode: nothing is sent and the worker logs the code.
    pub fn is_log(&self) -> bool {
        matches!(self.provider, SmsProvider::Log)
    }

    pub fn provider_name(&self) -> &'static str {
        self.provider.name()
    }

    /// Sends one message; `now_unix` (seconds) dates the webhook signature.
    pub async fn send(&self, sms: &OutgoingSms<'_>, now_unix: i64) -> Result<(), SmsError> {
        match &self.provider {
            SmsProvider::Log => Ok(()),
            SmsProvider::Twilio {
                base_url,
                account_sid,
                auth_token,
                sender,
            } => {
                let url = format!(
                    "{}/2010-04-01/Accounts/{account_sid}/Messages.json",
                    base_url.as_str().trim_end_matches('/')
                );
                let (sender_field, sender_value) = match sender {
                    TwilioSender::From(from) => ("From", from.as_str()),
                    TwilioSender::MessagingService(sid) => ("MessagingServiceSid", sid.as_str()),
                };
                let form = [
                    ("To", sms.to),
                    (sender_field, sender_value),
                    ("Body", sms.body),
                ];
                let request = self
                    .client
                    .post(url)
                    .basic_auth(account_sid, Some(auth_token))
                    .form(&form);
                let response = self.execute(request, "Twilio").await?;
                let status = response.status();
                if status.is_success() {
                    return Ok(());
                }
                let body = response.bytes().await.unwrap_or_default();
                let detail = match serde_json::from_slice::<TwilioError>(&body) {
                    Ok(TwilioError {
                        code: Some(code),
                        message: Some(message),
                    }) => {
                        let message = scrub(&message, &[sms.to, sms.code, sms.body, auth_token]);
                        format!("{message} (Twilio error {code}, HTTP {})", status.as_u16())
                    }
                    _ => format!("HTTP {}", status.as_u16()),
                };
                Err(classify(
                    status,
                    if matches!(status.as_u16(), 401 | 403) {
                        format!("Twilio refused the credentials: {detail}; check `sms.twilio.account_sid` and `sms.twilio.auth_token`")
                    } else if is_temporary(status) {
                        format!("Twilio could not take the message now: {detail}")
                    } else {
                        format!("Twilio refused the message: {detail}")
                    },
                ))
            }
            SmsProvider::Webhook { url, secret } => {
                let body = serde_json::to_vec(&WebhookBody {
                    id: sms.id,
                    to: sms.to,
                    body: sms.body,
                    code: sms.code,
                    purpose: sms.purpose,
                    expires_at: rfc3339(sms.expires_at_ms),
                })
                .expect("serializable");
                let request = self
                    .client
                    .post(url.clone())
                    .header(SIGNATURE_HEADER, webhook_signature(secret, &body, now_unix))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body);
                let status = self.execute(request, "the SMS webhook").await?.status();
                if status.is_success() {
                    return Ok(());
                }
                let hint = if status.as_u16() == 401 {
                    " (check that `sms.webhook.secret` matches the receiver's, and both clocks)"
                } else {
                    ""
                };
                Err(classify(
                    status,
                    format!("the SMS webhook answered HTTP {}{hint}", status.as_u16()),
                ))
            }
        }
    }

    async fn execute(
        &self,
        request: reqwest::RequestBuilder,
        who: &str,
    ) -> Result<reqwest::Response, SmsError> {
        request.send().await.map_err(|e| {
            if e.is_timeout() {
                SmsError::Temporary(format!(
                    "{who} did not answer within {} ms",
                    self.timeout.as_millis()
                ))
            } else {
                SmsError::Temporary(format!(
                    "could not reach {who}: {}",
                    chain(&e.without_url())
                ))
            }
        })
    }
}

/// 5xx, 429 and 408 are the provider's trouble and pass; anything else will not change on retry.
fn is_temporary(status: reqwest::StatusCode) -> bool {
    status.is_server_error() || matches!(status.as_u16(), 408 | 429)
}

fn classify(status: reqwest::StatusCode, text: String) -> SmsError {
    if is_temporary(status) {
        SmsError::Temporary(text)
    } else {
        SmsError::Permanent(text)
    }
}

#[derive(Deserialize)]
struct TwilioError {
    code: Option<i64>,
    message: Option<String>,
}

#[derive(Serialize)]
struct WebhookBody<'a> {
    id: &'a str,
    to: &'a str,
    body: &'a str,
    code: &'a str,
    purpose: Purpose,
    expires_at: String,
}

fn rfc3339(unix_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A provider's text with anything private replaced, and bounded in length (it is stored and logged).
fn scrub(text: &str, private: &[&str]) -> String {
    let mut text = text.to_string();
    for p in private.iter().filter(|p| !p.is_empty()) {
        text = text.replace(p, "[redacted]");
    }
    if text.chars().count() > 300 {
        text = text.chars().take(300).collect::<String>() + "…";
    }
    text
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_text_is_scrubbed_of_the_number_and_code() {
        let text = scrub(
            "The 'To' number +15005550001 is not valid (code 123456)",
            &["+15005550001", "123456"],
        );
        assert_eq!(
            text,
            "The 'To' number [redacted] is not valid (code [redacted])"
        );
    }

    #[test]
    fn expiry_is_formatted_as_rfc3339() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn an_https_provider_gets_a_tls_client() {
        let provider = SmsProvider::Webhook {
            url: "https://sms.example/send".parse().unwrap(),
            secret: "s".repeat(32),
        };
        assert!(SmsSender::new(provider, Duration::from_secs(5)).is_ok());
    }
}
