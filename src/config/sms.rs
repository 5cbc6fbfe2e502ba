//! The `sms` configuration table and its validated form.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use url::Url;

/// Raw `sms` table (serde). No `Debug`: it holds the provider credentials.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    /// "log" (development only), "twilio" or "webhook".
    pub provider: String,
    pub twilio: TwilioConfig,
    pub webhook: WebhookConfig,
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            provider: "log".into(),
            twilio: TwilioConfig::default(),
            webhook: WebhookConfig::default(),
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TwilioConfig {
    /// Where the Twilio REST API lives; only changed for tests or a regional edge.
    pub base_url: String,
    pub account_sid: Option<String>,
    pub auth_token: Option<String>,
    pub auth_token_file: Option<PathBuf>,
    /// A sending number (E.164) or alphanumeric sender id. Exactly one of `from` and
    /// `messaging_service_sid`.
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
}

impl Default for TwilioConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.twilio.com".into(),
            account_sid: None,
            auth_token: None,
            auth_token_file: None,
            from: None,
            messaging_service_sid: None,
        }
    }
}

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    pub url: Option<String>,
    /// Signs each request (`Latchkey-Signature`); at least 32 characters.
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
}

/// A validated provider. `Debug` redacts the auth token and the webhook secret.
#[derive(Clone)]
pub enum SmsProvider {
    /// Development only: nothing is sent; the worker logs the code.
    Log,
    Twilio {
        base_url: Url,
        account_sid: String,
        auth_token: String,
        sender: TwilioSender,
    },
    Webhook {
        url: Url,
        secret: String,
    },
}

/// Who Twilio sends as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwilioSender {
    /// A number (E.164) or alphanumeric sender id: the `From` field.
    From(String),
    /// A Messaging Service that picks the number: the `MessagingServiceSid` field.
    MessagingService(String),
}

impl std::fmt::Debug for SmsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SmsProvider::Log => f.write_str("Log"),
            SmsProvider::Twilio {
                base_url,
                account_sid,
                sender,
                ..
            } => f
                .debug_struct("Twilio")
                .field("base_url", &base_url.as_str())
                .field("account_sid", account_sid)
                .field("auth_token", &"(set, redacted)")
                .field("sender", sender)
                .finish(),
            SmsProvider::Webhook { url, .. } => f
                .debug_struct("Webhook")
                .field("url", &redacted_url(url))
                .field("secret", &"(set, redacted)")
                .finish(),
        }
    }
}

/// A URL for logs: any user info and query (which may carry a token) removed.
fn redacted_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if u.query().is_some() {
        u.set_query(Some("(redacted)"));
    }
    u.to_string()
}

impl SmsProvider {
    pub fn name(&self) -> &'static str {
        match self {
            SmsProvider::Log => "log",
            SmsProvider::Twilio { .. } => "twilio",
            SmsProvider::Webhook { .. } => "webhook",
        }
    }
}

const LOG_IN_PRODUCTION: &str =
    "`sms.provider`: \"log\" only logs codes and is for development; set \"twilio\" or \"webhook\"";

impl SmsConfig {
    /// Checks the table for the chosen provider; errors name the key to fix.
    pub fn validate(&self, dev_mode: bool) -> anyhow::Result<SmsProvider> {
        match self.provider.as_str() {
            "log" if dev_mode => Ok(SmsProvider::Log),
            "log" => bail!(LOG_IN_PRODUCTION),
            "twilio" => self.twilio.validate(dev_mode),
            "webhook" => self.webhook.validate(dev_mode),
            other => bail!(
                "`sms.provider`: must be \"twilio\", \"webhook\" or \"log\" (development), got {other:?}"
            ),
        }
    }
}

impl TwilioConfig {
    fn validate(&self, dev_mode: bool) -> anyhow::Result<SmsProvider> {
        let base_url = http_url("sms.twilio.base_url", &self.base_url, dev_mode)?;
        let account_sid = required(&self.account_sid, "sms.twilio.account_sid", "twilio")?;
        // It becomes a path segment of every request.
        if !account_sid.chars().all(|c| c.is_ascii_alphanumeric()) {
            bail!("`sms.twilio.account_sid`: must be letters and digits (like AC0123…), got {account_sid:?}");
        }
        let auth_token = secret_value(
            "sms.twilio.auth_token",
            self.auth_token.as_deref(),
            self.auth_token_file.as_deref(),
        )?
        .context("`sms.twilio.auth_token`: required when `sms.provider` is \"twilio\" (or `sms.twilio.auth_token_file`)")?;
        let from = non_empty(&self.from);
        let service = non_empty(&self.messaging_service_sid);
        let sender = match (from, service) {
            (Some(from), None) => TwilioSender::From(from.to_string()),
            (None, Some(sid)) => {
                if !sid.chars().all(|c| c.is_ascii_alphanumeric()) {
                    bail!("`sms.twilio.messaging_service_sid`: must be letters and digits (like MG0123…), got {sid:?}");
                }
                TwilioSender::MessagingService(sid.to_string())
            }
            (Some(_), Some(_)) => bail!(
                "`sms.twilio.from` and `sms.twilio.messaging_service_sid`: give one, not both"
            ),
            (None, None) => bail!(
                "`sms.twilio.from`: required when `sms.provider` is \"twilio\" (or set `sms.twilio.messaging_service_sid`)"
            ),
        };
        Ok(SmsProvider::Twilio {
            base_url,
            account_sid: account_sid.to_string(),
            auth_token,
            sender,
        })
    }
}

impl WebhookConfig {
    fn validate(&self, dev_mode: bool) -> anyhow::Result<SmsProvider> {
        let url = required(&self.url, "sms.webhook.url", "webhook")?;
        let url = http_url("sms.webhook.url", url, dev_mode)?;
        let secret = secret_value(
            "sms.webhook.secret",
            self.secret.as_deref(),
            self.secret_file.as_deref(),
        )?
        .context("`sms.webhook.secret`: required when `sms.provider` is \"webhook\" (or `sms.webhook.secret_file`)")?;
        if secret.chars().count() < 32 {
            bail!("`sms.webhook.secret`: must be at least 32 characters (it signs every request)");
        }
        Ok(SmsProvider::Webhook { url, secret })
    }
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn required<'a>(v: &'a Option<String>, key: &str, provider: &str) -> anyhow::Result<&'a str> {
    non_empty(v).with_context(|| format!("`{key}`: required when `sms.provider` is \"{provider}\""))
}

/// An http(s) URL; plain http only to a loopback host or in dev mode (credentials and codes
/// never cross a network in clear).
fn http_url(key: &str, raw: &str, dev_mode: bool) -> anyhow::Result<Url> {
    let url = Url::parse(raw.trim()).with_context(|| format!("`{key}`: {raw:?} is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        bail!("`{key}`: must be an http or https URL with a host, got {raw:?}");
    }
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    if url.scheme() == "http" && !loopback && !dev_mode {
        bail!("`{key}`: must be https (plain http only to a loopback address), got {raw:?}");
    }
    Ok(url)
}

/// A secret given inline or as a file (one, not both); `None` when neither is set.
fn secret_value(
    key: &str,
    inline: Option<&str>,
    file: Option<&Path>,
) -> anyhow::Result<Option<String>> {
    let value = match (inline.filter(|s| !s.is_empty()), file) {
        (Some(_), Some(_)) => bail!("`{key}` and `{key}_file`: give one, not both"),
        (Some(s), None) => s.to_string(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("`{key}_file`: cannot read {}", path.display()))?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        (None, None) => return Ok(None),
    };
    if value.is_empty() {
        bail!("`{key}`: is empty");
    }
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn twilio() -> SmsConfig {
        SmsConfig {
            provider: "twilio".into(),
            twilio: TwilioConfig {
                account_sid: Some("AC0123456789abcdef".into()),
                auth_token: Some("tok-hunter2-secret".into()),
                from: Some("+15005550006".into()),
                ..TwilioConfig::default()
            },
            ..SmsConfig::default()
        }
    }

    fn webhook() -> SmsConfig {
        SmsConfig {
            provider: "webhook".into(),
            webhook: WebhookConfig {
                url: Some("https://sms.internal.example/send?key=qwerty".into()),
                secret: Some("w".repeat(40)),
                secret_file: None,
            },
            ..SmsConfig::default()
        }
    }

    fn error(config: &SmsConfig) -> String {
        config.validate(false).unwrap_err().to_string()
    }

    #[test]
    fn plain_http_reaches_only_loopback_outside_dev_mode() {
        let mut remote = webhook();
        remote.webhook.url = Some("http://sms.internal.example/send".into());
        let err = error(&remote);
        assert!(
            err.contains("`sms.webhook.url`") && err.contains("https"),
            "{err}"
        );
        assert!(
            remote.validate(true).is_ok(),
            "dev mode may use a plain-http relay"
        );
        let mut local = webhook();
        local.webhook.url = Some("http://127.0.0.1:9000/send".into());
        assert!(local.validate(false).is_ok());
        let mut twilio = twilio();
        twilio.twilio.base_url = "http://api.twilio.example".into();
        assert!(error(&twilio).contains("`sms.twilio.base_url`"));
    }

    #[test]
    fn the_log_provider_is_refused_outside_dev_mode() {
        assert_eq!(error(&SmsConfig::default()), LOG_IN_PRODUCTION);
        assert_eq!(SmsConfig::default().validate(true).unwrap().name(), "log");
    }

    #[test]
    fn a_complete_twilio_table_validates() {
        let p = twilio().validate(false).unwrap();
        assert_eq!(p.name(), "twilio");
        match p {
            SmsProvider::Twilio {
                base_url, sender, ..
            } => {
                assert_eq!(base_url.as_str(), "https://api.twilio.com/");
                assert_eq!(sender, TwilioSender::From("+15005550006".into()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_account_sid_names_the_key() {
        let mut c = twilio();
        c.twilio.account_sid = None;
        assert_eq!(
            error(&c),
            "`sms.twilio.account_sid`: required when `sms.provider` is \"twilio\""
        );
    }

    #[test]
    fn a_missing_auth_token_names_the_key() {
        let mut c = twilio();
        c.twilio.auth_token = None;
        assert!(
            error(&c).starts_with("`sms.twilio.auth_token`: required"),
            "{}",
            error(&c)
        );
    }

    #[test]
    fn the_auth_token_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file-token\n").unwrap();
        let mut c = twilio();
        c.twilio.auth_token = None;
        c.twilio.auth_token_file = Some(path.clone());
        match c.validate(false).unwrap() {
            SmsProvider::Twilio { auth_token, .. } => assert_eq!(auth_token, "from-file-token"),
            other => panic!("{other:?}"),
        }
        c.twilio.auth_token = Some("inline".into());
        assert!(error(&c).contains("give one, not both"), "{}", error(&c));
    }

    #[test]
    fn exactly_one_twilio_sender_is_required() {
        let mut c = twilio();
        c.twilio.messaging_service_sid = Some("MG0123".into());
        assert!(error(&c).contains("`sms.twilio.from` and `sms.twilio.messaging_service_sid`"));
        c.twilio.from = None;
        assert!(matches!(
            c.validate(false).unwrap(),
            SmsProvider::Twilio {
                sender: TwilioSender::MessagingService(_),
                ..
            }
        ));
        c.twilio.messaging_service_sid = None;
        assert!(
            error(&c).starts_with("`sms.twilio.from`: required"),
            "{}",
            error(&c)
        );
    }

    #[test]
    fn a_non_http_url_is_refused_naming_the_key() {
        let mut c = twilio();
        c.twilio.base_url = "ftp://api.twilio.com".into();
        assert!(error(&c).starts_with("`sms.twilio.base_url`: must be an http or https URL"));
        let mut c = webhook();
        c.webhook.url = Some("not a url".into());
        assert!(error(&c).starts_with("`sms.webhook.url`:"), "{}", error(&c));
    }

    #[test]
    fn a_short_webhook_secret_is_refused() {
        let mut c = webhook();
        c.webhook.secret = Some("short".into());
        assert_eq!(
            error(&c),
            "`sms.webhook.secret`: must be at least 32 characters (it signs every request)"
        );
        c.webhook.secret = None;
        assert!(error(&c).starts_with("`sms.webhook.secret`: required"));
        let mut c = webhook();
        c.webhook.url = None;
        assert_eq!(
            error(&c),
            "`sms.webhook.url`: required when `sms.provider` is \"webhook\""
        );
    }

    #[test]
    fn an_unknown_provider_is_named() {
        let c = SmsConfig {
            provider: "carrier-pigeon".into(),
            ..SmsConfig::default()
        };
        assert!(error(&c).contains("carrier-pigeon"));
    }

    #[test]
    fn debug_output_redacts_the_token_and_the_secret() {
        let shown = format!(
            "{:?} {:?}",
            twilio().validate(false).unwrap(),
            webhook().validate(false).unwrap()
        );
        for secret in ["hunter2", "wwwwwwww", "qwerty"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("AC0123456789abcdef"), "{shown}");
    }
}
