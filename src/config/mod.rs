//! Configuration: defaults → TOML file → `LATCHKEY_*` environment variables.
//!
//! Every key has a default so a development instance needs no file. Values are parsed into typed
//! settings once, at start; a bad value stops the process with a message naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize};
use url::Url;

mod identifiers;
mod limits;
mod lockout;
mod oidc;
mod secret_files;
mod sms;
mod smtp;

use crate::domain::{AllowedOrigin, Origin, PhonePolicy, RedirectTarget, TestMode};
pub use identifiers::{
    IdentifierConfig, IdentifierRules, IdentifiersConfig, NameConfig, PhoneConfig, StrategiesConfig,
};
pub use limits::LimitsConfig;
pub use lockout::LockoutConfig;
pub use oidc::{OidcClient, OidcClientConfig, OidcConfig, OidcSettings, SCOPES};
pub use sms::{SmsConfig, SmsProvider, TwilioConfig, TwilioSender, WebhookConfig};
pub use smtp::{SmtpCredentials, SmtpSecurity, SmtpSettings};

/// The raw, serde-shaped configuration. See [`Settings`] for the validated form. No `Debug`:
/// it holds the secret and credentials.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub listen: String,
    pub public_url: String,
    pub database_url: String,
    /// The password for `database_url`'s user, read from a file (PostgreSQL only).
    pub database_password_file: Option<PathBuf>,
    /// `smtp://host:25` (a relay on this machine), `smtp://user@host:587?tls=required`
    /// (STARTTLS), `smtps://user@host:465`. Outside dev mode, other hosts need TLS.
    pub smtp_url: Option<String>,
    /// The password for `smtp_url`'s user, read from a file (a mounted secret).
    pub smtp_password_file: Option<PathBuf>,
    /// PEM file of the CA certificate(s) that sign the SMTP server's certificate (a private CA).
    /// Set, only these are trusted for SMTP; unset, the public web PKI roots.
    pub smtp_ca_file: Option<PathBuf>,
    /// SMTP connections open at once, at the most (1–256).
    pub smtp_max_connections: usize,
    /// Seconds an idle SMTP connection is kept for the next message (0–300; 0: a new
    /// connection for every message).
    pub smtp_idle_timeout_secs: u64,
    pub mail_from: String,
    pub product_name: String,
    pub dev_mode: Option<bool>,
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// Origins a `redirect_url` may lead to besides Latchkey's own: exact
    /// (`https://app.example.com`) or every subdomain of a domain (`https://*.example.com`).
    #[serde(deserialize_with = "string_or_list")]
    pub allowed_redirect_origins: Vec<String>,
    /// Where a sign-in without a `redirect_url` lands (a local path or an allowed URL).
    pub after_sign_in_url: String,
    /// Where a sign-up without a `redirect_url` lands.
    pub after_sign_up_url: String,
    /// Where a sign-out without a `redirect_url` lands.
    pub after_sign_out_url: String,
    /// Origins (besides Latchkey's own) whose pages may call the JSON API with credentials
    /// (exact-origin CORS). Unset: none (an explicit opt-in; a redirect target is not trusted
    /// to read people's accounts).
    #[serde(
        deserialize_with = "opt_string_or_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub cors_allowed_origins: Option<Vec<String>>,
    /// Reverse proxies (IPs or CIDRs) whose `X-Forwarded-For` / `Forwarded` headers name the
    /// client. From any other peer those headers are ignored.
    #[serde(deserialize_with = "string_or_list")]
    pub trusted_proxies: Vec<String>,
    pub log_format: String,
    pub max_body_bytes: usize,
    /// HTTP worker threads; 0 means one per CPU core.
    pub http_workers: usize,
    /// Requests this process works on at once; beyond that a request is answered 503 with
    /// `Retry-After` at once instead of waiting (load shedding). 0 turns the limit off. A
    /// request counts once its body has arrived, so slow clients cannot fill it.
    pub max_in_flight_requests: usize,
    /// Requests one client IP (IPv6: per /64) may have open in this process at once, from its
    /// head to its answer, body reading included; beyond that 429 with `Retry-After`. 0 turns
    /// the limit off.
    pub max_in_flight_per_ip: usize,
    /// Milliseconds a client has to send a request's head (line and headers); then 408 and the
    /// connection is closed.
    pub request_head_timeout_ms: u64,
    /// Milliseconds a client has, once the head is read, to send the whole body; then 408 and
    /// the connection is closed.
    pub request_body_timeout_ms: u64,
    /// Milliseconds a finished connection waits for the client to close its side before it is
    /// dropped.
    pub client_disconnect_timeout_ms: u64,
    /// How often expired flows, sessions and old outbox rows are deleted, in milliseconds.
    pub janitor_interval_ms: u64,
    /// Days the audit log keeps security events.
    pub audit_retention_days: u64,
    /// How often each instance reads the signing keys again, in seconds (1–3600): a key
    /// rotation (`latchkey keys rotate`) reaches every instance within this.
    pub signing_keys_reload_secs: u64,
    /// Which header a trusted proxy names the client in: "x-forwarded-for" or "forwarded".
    pub trusted_proxy_header: String,
    pub database_max_connections: u32,
    /// Seconds a request waits for a database connection before it is answered with 503.
    pub database_acquire_timeout_secs: u64,
    /// SQLite `synchronous`: "full" (default; committed data survives power loss) or "normal"
    /// (survives process crashes; the last transactions may roll back on power loss).
    pub database_sqlite_synchronous: String,
    pub codes: CodeConfig,
    pub flows: FlowConfig,
    pub sessions: SessionConfig,
    pub lockout: LockoutConfig,
    pub limits: LimitsConfig,
    pub outbox: OutboxConfig,
    /// Which identifiers accounts have and which are used to sign in (Clerk's "Contact information").
    pub identifiers: IdentifiersConfig,
    /// Which one-time-code strategies are on (Clerk's "Authentication factors").
    pub strategies: StrategiesConfig,
    pub phone: PhoneConfig,
    pub sms: SmsConfig,
    /// The backend API's secret keys.
    pub api: ApiConfig,
    /// The OpenID Connect provider: lifetimes and `[[oidc.clients]]`.
    pub oidc: OidcConfig,
    /// "strict" (default): whether an identifier has an account never shows (sign-in with an
    /// unknown one and sign-up with a taken one get the ordinary code page; the owner is
    /// notified by email). "off": friendlier messages that say so.
    pub enumeration_protection: String,
    /// Test identifiers (`+latchkey_test` emails, +1 XXX 555-0100…0199) get no message and accept
    /// the fixed code 424242. Default: on in dev mode only. Outside dev mode it also needs
    /// `test_mode_outside_dev_mode = true` and `test_email_domains`.
    pub test_mode: Option<bool>,
    /// The second opt-in for test mode on an instance that is not in dev mode (a staging
    /// instance): without it, `test_mode = true` outside dev mode stops the start.
    pub test_mode_outside_dev_mode: bool,
    /// Domains whose `+latchkey_test` addresses are test identifiers. Required for test mode
    /// outside dev mode when email is on (so nobody can use `ceo+latchkey_test@bigcorp.com`);
    /// in dev mode, unset means any domain.
    #[serde(deserialize_with = "string_or_list")]
    pub test_email_domains: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodeConfig {
    /// Digits in a one-time code (6–10).
    pub length: usize,
    /// Lifetime of a code in seconds (at most 600, NIST 800-63B §3.1.3.2).
    pub ttl_secs: u64,
    /// Wrong tries that kill a code.
    pub max_attempts: u32,
    /// Seconds between two sends for one flow.
    pub resend_cooldown_secs: u64,
    /// Put the code in the email's subject ("042137 is your Acme code"): handy in a
    /// notification, but subjects reach lock screens, mail logs and message lists. Default off.
    pub in_email_subject: bool,
}

/// The `[api]` section. No `Debug`: it holds secret keys.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Secret keys (`sk_…`, at least 32 characters) the operator's servers call the backend API
    /// with; a list, so that a new key can be added before the old one is removed.
    #[serde(deserialize_with = "string_or_list")]
    pub secret_keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowConfig {
    /// A sign-up or sign-in attempt expires after this many seconds without activity.
    pub idle_ttl_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Absolute lifetime of a session in seconds.
    pub ttl_secs: u64,
    /// A session unused for this many seconds ends (0: off, the default). "Last active" is
    /// written at most once a minute per session.
    pub inactivity_timeout_secs: u64,
    /// Removing an identifier, changing the primary one, signing out other devices and deleting
    /// the account need a code verified by this session within this many seconds (Clerk's
    /// reverification); older, the page asks for a fresh code first.
    pub reverification_secs: u64,
    /// Whether people may delete their own account on /user and through `DELETE /v1/me`.
    pub allow_account_deletion: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Delivery tries before a message is given up.
    pub max_attempts: u32,
    /// First retry delay in milliseconds; doubles on each try, capped at `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// How often the worker looks for due messages it was not woken for (other instances, retries).
    pub poll_interval_ms: u64,
    /// Timeout for one SMTP delivery, in seconds.
    pub send_timeout_secs: u64,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: "http://localhost:8080".into(),
            database_url: "sqlite://latchkey.db".into(),
            database_password_file: None,
            smtp_url: None,
            smtp_password_file: None,
            smtp_ca_file: None,
            smtp_max_connections: 16,
            smtp_idle_timeout_secs: 30,
            mail_from: "Latchkey <no-reply@localhost>".into(),
            product_name: "Latchkey".into(),
            dev_mode: None,
            secret: None,
            secret_file: None,
            allowed_redirect_origins: Vec::new(),
            after_sign_in_url: "/user".into(),
            after_sign_up_url: "/user".into(),
            after_sign_out_url: "/sign-in".into(),
            cors_allowed_origins: None,
            trusted_proxies: Vec::new(),
            log_format: "pretty".into(),
            max_body_bytes: 16 * 1024,
            http_workers: 0,
            max_in_flight_requests: 1024,
            max_in_flight_per_ip: 32,
            request_head_timeout_ms: 5000,
            request_body_timeout_ms: 5000,
            client_disconnect_timeout_ms: 1000,
            janitor_interval_ms: 300_000,
            audit_retention_days: 90,
            signing_keys_reload_secs: 30,
            trusted_proxy_header: "x-forwarded-for".into(),
            database_max_connections: 8,
            database_acquire_timeout_secs: 5,
            database_sqlite_synchronous: "full".into(),
            codes: CodeConfig::default(),
            flows: FlowConfig::default(),
            sessions: SessionConfig::default(),
            lockout: LockoutConfig::default(),
            limits: LimitsConfig::default(),
            outbox: OutboxConfig::default(),
            identifiers: IdentifiersConfig::default(),
            strategies: StrategiesConfig::default(),
            phone: PhoneConfig::default(),
            sms: SmsConfig::default(),
            api: ApiConfig::default(),
            oidc: OidcConfig::default(),
            test_mode: None,
            test_mode_outside_dev_mode: false,
            test_email_domains: Vec::new(),
            enumeration_protection: "strict".into(),
        }
    }
}

impl Default for CodeConfig {
    fn default() -> Self {
        Self {
            length: 6,
            ttl_secs: 600,
            max_attempts: 3,
            resend_cooldown_secs: 30,
            in_email_subject: false,
        }
    }
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            idle_ttl_secs: 3600,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            ttl_secs: 7 * 24 * 3600,
            inactivity_timeout_secs: 0,
            reverification_secs: 600,
            allow_account_deletion: true,
        }
    }
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            retry_base_ms: 1000,
            retry_max_ms: 60_000,
            poll_interval_ms: 1000,
            send_timeout_secs: 10,
        }
    }
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Either::deserialize(d)? {
        Either::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        Either::Many(v) => v,
    })
}

pub(super) fn opt_string_or_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    Ok(Some(string_or_list(d)?))
}

/// Environment variables with the `LATCHKEY_` prefix that are not configuration keys
/// (besides `LATCHKEY_TEST_*`, which belong to the test suite).
const NON_CONFIG_ENV: &[&str] = &["CONFIG", "LOG"];

impl RawConfig {
    /// Loads defaults, then the TOML file (if any), then `LATCHKEY_*` variables.
    /// Nested keys use a double underscore: `LATCHKEY_CODES__TTL_SECS=300`.
    pub fn load(file: Option<&Path>) -> anyhow::Result<(Self, bool)> {
        let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
        if let Some(path) = file {
            if !path.exists() {
                bail!("config file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(
            Env::prefixed("LATCHKEY_")
                .ignore(NON_CONFIG_ENV)
                .filter(|k| !k.as_str().to_ascii_uppercase().starts_with("TEST_"))
                .split("__")
                .map(|k| k.as_str().to_ascii_lowercase().into()),
        );
        let raw: RawConfig = figment.extract().map_err(|e| {
            let mut msg = String::from("invalid configuration");
            for err in e {
                msg.push_str(&format!("\n  - {err}"));
            }
            anyhow::anyhow!(msg)
        })?;
        Ok((raw, file.is_some()))
    }
}

/// The validated `codes`, `flows`, `sessions`, `lockout` and `limits` sections, with test mode
/// and enumeration protection: everything the state machine is configured by.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub code_length: usize,
    pub code_ttl: Duration,
    pub code_max_attempts: u32,
    pub resend_cooldown: Duration,
    pub flow_idle_ttl: Duration,
    pub session_ttl: Duration,
    /// A session unused this long ends; `None`: no inactivity timeout.
    pub session_inactivity_timeout: Option<Duration>,
    /// How recent a session's last verified code must be for the actions that need one.
    pub reverification: Duration,
    pub allow_account_deletion: bool,
    /// Consecutive wrong codes: locks, their escalation, the stop, trusted browsers' share.
    pub lockout: LockoutConfig,
    pub limits: LimitsConfig,
    /// Which identifiers get no message and accept the fixed test code.
    pub test_mode: TestMode,
    /// Whether an email's subject carries the code.
    pub code_in_email_subject: bool,
    /// Enumeration protection "strict" (decoys).
    pub enumeration_strict: bool,
}

/// Validated settings, built once at start. `Debug` redacts the secret and credentials.
#[derive(Clone)]
pub struct Settings {
    pub public_url: Url,
    pub public_origin: Origin,
    pub product_name: String,
    pub dev_mode: bool,
    /// The server secret if the operator gave one; otherwise one is generated and kept in the database.
    pub secret: Option<String>,
    pub log_json: bool,
    pub allowed_redirect_origins: Vec<AllowedOrigin>,
    /// Where people land without a `redirect_url`.
    pub after: AfterUrls,
    pub database: crate::store::DatabaseOptions,
    pub janitor_interval: Duration,
    pub audit_retention: Duration,
    /// How often each instance reads the signing keys again.
    pub signing_keys_reload: Duration,
    /// The HTTP server: listening, bodies, workers, load shedding, proxies, CORS.
    pub http: HttpSettings,
    /// Codes, flows, sessions, lockouts, rate limits: the state machine's section.
    pub auth: AuthSettings,
    /// Mail, SMS and the outbox worker.
    pub delivery: DeliverySettings,
    /// The identifier rules in force (phone already off if it could not be used).
    pub identifiers: IdentifierRules,
    pub strategies: StrategiesConfig,
    pub phone_policy: PhonePolicy,
    /// The backend API's secret keys (`api.secret_keys`).
    pub api_secret_keys: Vec<String>,
    /// The OpenID Connect provider and its clients.
    pub oidc: OidcSettings,
    /// Things the operator should know, logged as warnings at every start.
    pub warnings: Vec<String>,
}

/// Where people land after a sign-in, a sign-up or a sign-out that named no `redirect_url`.
#[derive(Debug, Clone)]
pub struct AfterUrls {
    pub sign_in: RedirectTarget,
    pub sign_up: RedirectTarget,
    pub sign_out: RedirectTarget,
}

/// The validated HTTP settings.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub http_workers: usize,
    pub max_in_flight_requests: usize,
    /// Concurrent requests per client IP (IPv6 per /64), body reading included; 0: no limit.
    pub max_in_flight_per_ip: usize,
    /// Time to send a request's head (actix's `client_request_timeout`).
    pub request_head_timeout: Duration,
    /// Time to send a request's whole body, from the moment its head is read.
    pub request_body_timeout: Duration,
    /// Time a closing connection waits for the client (actix's `client_disconnect_timeout`).
    pub client_disconnect_timeout: Duration,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Read only this header from trusted proxies (`true`: `Forwarded`, else `X-Forwarded-For`).
    pub trusted_proxy_forwarded: bool,
    pub cors_allowed_origins: Vec<Origin>,
}

/// The validated delivery settings. No `Debug`: the SMS provider holds credentials.
#[derive(Clone)]
pub struct DeliverySettings {
    /// Unset: the development transport (dev mode only).
    pub smtp: Option<SmtpSettings>,
    pub mail_from: lettre::message::Mailbox,
    pub outbox: OutboxConfig,
    pub sms: SmsProvider,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("http", &self.http)
            .field("public_url", &self.public_url.as_str())
            .field("database", &self.database)
            .field("smtp", &self.delivery.smtp)
            .field("dev_mode", &self.dev_mode)
            .field("secret", &self.secret.as_ref().map(|_| "(set, redacted)"))
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Cookies carry `Secure` and the `__Host-` prefix unless the public URL is plain http.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.scheme() == "https"
    }

    /// Loads and validates; `file` comes from `--config` or `LATCHKEY_CONFIG`.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let (raw, had_file) = RawConfig::load(file)?;
        Self::from_raw(raw, had_file)
    }

    pub fn from_raw(raw: RawConfig, had_file: bool) -> anyhow::Result<Self> {
        let listen: SocketAddr = raw.listen.parse().with_context(|| {
            format!(
                "`listen`: {:?} is not an address like 127.0.0.1:8080",
                raw.listen
            )
        })?;
        let public_url = Url::parse(&raw.public_url)
            .with_context(|| format!("`public_url`: {:?} is not a URL", raw.public_url))?;
        if !matches!(public_url.scheme(), "http" | "https") || public_url.host().is_none() {
            bail!(
                "`public_url`: must be an http or https URL with a host, got {:?}",
                raw.public_url
            );
        }
        if public_url.path() != "/" || public_url.query().is_some() {
            bail!("`public_url`: must be an origin without a path (Latchkey serves at the root), got {:?}", raw.public_url);
        }
        let public_origin = Origin::from_url(&public_url).context("`public_url`")?;
        let smtp_url = raw.smtp_url.clone().filter(|s| !s.trim().is_empty());
        // Dev mode (codes logged and listed on /dev/outbox) only switches itself on for a local,
        // plain-http instance that also calls itself local (an instance behind a reverse proxy
        // has a public URL); anywhere else it must be asked for explicitly.
        let local_only = listen.ip().is_loopback()
            && public_url.scheme() == "http"
            && is_loopback_host(&public_url);
        let dev_mode = raw
            .dev_mode
            .unwrap_or(!had_file && smtp_url.is_none() && local_only);
        let smtp = smtp::smtp_settings(&raw, smtp_url.as_deref(), dev_mode)?;
        let database_url =
            secret_files::database_url(&raw.database_url, raw.database_password_file.as_ref())?;
        let mut warnings = Vec::new();
        let test_mode_on = raw.test_mode.unwrap_or(dev_mode);
        let enumeration_strict = match raw.enumeration_protection.as_str() {
            "strict" => true,
            "off" => false,
            other => {
                bail!("`enumeration_protection`: must be \"strict\" or \"off\", got {other:?}")
            }
        };
        let (identifiers, phone_policy, sms) =
            identifiers::identifier_rules(&raw, dev_mode, &mut warnings)?;
        let phone_policy = phone_policy.with_test_numbers(test_mode_on);
        if smtp.is_none() && !dev_mode && identifiers.email.enabled {
            bail!("`smtp_url`: required unless `dev_mode` is on (without it no code can be delivered)");
        }
        let test_mode = test_mode_rules(
            &raw,
            test_mode_on,
            dev_mode,
            identifiers.email.enabled,
            &mut warnings,
        )?;
        let mail_from: lettre::message::Mailbox = raw.mail_from.parse().with_context(|| {
            format!(
                "`mail_from`: {:?} is not a mailbox like \"Acme <no-reply@acme.example>\"",
                raw.mail_from
            )
        })?;
        let secret = match (raw.secret, raw.secret_file) {
            (Some(_), Some(_)) => bail!("`secret` and `secret_file`: give one, not both"),
            (Some(s), None) => Some(s),
            (None, Some(path)) => Some(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("`secret_file`: cannot read {}", path.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            (None, None) => None,
        };
        if let Some(s) = &secret {
            if s.chars().count() < 32 {
                bail!("`secret`: must be at least 32 characters (keys are derived from it)");
            }
        }
        // A secret generated into the database sits beside the code HMACs and sealed messages
        // it protects: a stolen copy of the database could then brute-force live codes and
        // open queued messages. Only a development instance may rely on it.
        if secret.is_none() && !dev_mode {
            bail!("`secret` or `secret_file`: required outside dev mode (at least 32 random characters, kept outside the database, e.g. `openssl rand -base64 48`); without it a copy of the database would hold the key to its own codes and queued messages");
        }
        let allowed_redirect_origins = raw
            .allowed_redirect_origins
            .iter()
            .map(|o| {
                AllowedOrigin::parse(o)
                    .with_context(|| format!("`allowed_redirect_origins`: {o:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let after = |key: &str, raw: &str| {
            RedirectTarget::parse(raw, &public_url, &allowed_redirect_origins).ok_or_else(|| {
                anyhow::anyhow!("`{key}`: {raw:?} is neither a path on this server (starting with one /) nor a URL on `public_url` or an allowed redirect origin")
            })
        };
        let after = AfterUrls {
            sign_in: after("after_sign_in_url", &raw.after_sign_in_url)?,
            sign_up: after("after_sign_up_url", &raw.after_sign_up_url)?,
            sign_out: after("after_sign_out_url", &raw.after_sign_out_url)?,
        };
        let cors_allowed_origins = match &raw.cors_allowed_origins {
            None => Vec::new(),
            Some(list) => list
                .iter()
                .map(|o| Origin::parse(o).with_context(|| format!("`cors_allowed_origins`: {o:?}")))
                .collect::<anyhow::Result<Vec<_>>>()?,
        };
        for origin in &cors_allowed_origins {
            let shown = origin.to_string();
            let local =
                shown.starts_with("http://localhost") || shown.starts_with("http://127.0.0.1");
            if shown.starts_with("http://") && !local && !dev_mode {
                bail!("`cors_allowed_origins`: {shown} is plain http; only https origins may read accounts outside dev mode");
            }
        }
        let trusted_proxies = raw
            .trusted_proxies
            .iter()
            .map(|p| {
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "`trusted_proxies`: {p:?} is not an IP address or CIDR range"
                        )
                    })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let trusted_proxy_forwarded = match raw.trusted_proxy_header.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => false,
            "forwarded" => true,
            other => bail!("`trusted_proxy_header`: must be \"x-forwarded-for\" or \"forwarded\", got {other:?}"),
        };
        let log_json = match raw.log_format.as_str() {
            "pretty" => false,
            "json" => true,
            other => bail!("`log_format`: must be \"pretty\" or \"json\", got {other:?}"),
        };
        let c = &raw.codes;
        if !(6..=10).contains(&c.length) {
            bail!("`codes.length`: must be between 6 and 10, got {}", c.length);
        }
        if c.ttl_secs == 0 || c.ttl_secs > 600 {
            bail!(
                "`codes.ttl_secs`: must be between 1 and 600 (NIST 800-63B), got {}",
                c.ttl_secs
            );
        }
        if c.max_attempts == 0 || c.max_attempts > 10 {
            bail!(
                "`codes.max_attempts`: must be between 1 and 10, got {}",
                c.max_attempts
            );
        }
        if raw.flows.idle_ttl_secs < c.ttl_secs {
            bail!("`flows.idle_ttl_secs`: must be at least `codes.ttl_secs`");
        }
        raw.lockout.validate()?;
        raw.limits.validate()?;
        if raw.sessions.ttl_secs < 60 {
            bail!("`sessions.ttl_secs`: must be at least 60");
        }
        let idle = raw.sessions.inactivity_timeout_secs;
        if idle != 0 && !(300..=raw.sessions.ttl_secs).contains(&idle) {
            bail!("`sessions.inactivity_timeout_secs`: 0 (off) or between 300 and `sessions.ttl_secs`, got {idle}");
        }
        let reverify = raw.sessions.reverification_secs;
        if !(60..=86_400).contains(&reverify) {
            bail!("`sessions.reverification_secs`: between 60 and 86400, got {reverify}");
        }
        if raw.max_body_bytes < 1024 {
            bail!("`max_body_bytes`: must be at least 1024");
        }
        for (key, ms) in [
            ("request_head_timeout_ms", raw.request_head_timeout_ms),
            ("request_body_timeout_ms", raw.request_body_timeout_ms),
        ] {
            if !(100..=300_000).contains(&ms) {
                bail!("`{key}`: must be between 100 and 300000 (5 minutes), got {ms}");
            }
        }
        if raw.client_disconnect_timeout_ms > 60_000 {
            bail!(
                "`client_disconnect_timeout_ms`: must be at most 60000, got {}",
                raw.client_disconnect_timeout_ms
            );
        }
        if raw.database_max_connections == 0 {
            bail!("`database_max_connections`: must be at least 1");
        }
        let sqlite_synchronous_full = match raw.database_sqlite_synchronous.as_str() {
            "full" => true,
            "normal" => false,
            other => bail!(
                "`database_sqlite_synchronous`: must be \"full\" or \"normal\", got {other:?}"
            ),
        };
        if raw.database_acquire_timeout_secs == 0 {
            bail!("`database_acquire_timeout_secs`: must be at least 1");
        }
        if raw.outbox.max_attempts == 0
            || raw.outbox.retry_base_ms == 0
            || raw.outbox.poll_interval_ms == 0
        {
            bail!("`outbox.*`: max_attempts, retry_base_ms and poll_interval_ms must be positive");
        }
        for key in &raw.api.secret_keys {
            if !key.starts_with("sk_")
                || key.chars().count() < 32
                || key.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                bail!("`api.secret_keys`: each key starts with `sk_` and has at least 32 characters without white space (e.g. `sk_` followed by `openssl rand -hex 24`)");
            }
        }
        let oidc = raw.oidc.validate(dev_mode)?;
        if !(1..=3600).contains(&raw.signing_keys_reload_secs) {
            bail!(
                "`signing_keys_reload_secs`: must be between 1 and 3600, got {}",
                raw.signing_keys_reload_secs
            );
        }
        if raw.product_name.trim().is_empty() || raw.product_name.chars().any(char::is_control) {
            bail!("`product_name`: must be a non-empty single line");
        }
        Ok(Self {
            public_url,
            public_origin,
            product_name: raw.product_name,
            dev_mode,
            secret,
            log_json,
            allowed_redirect_origins,
            after,
            database: crate::store::DatabaseOptions {
                url: database_url,
                max_connections: raw.database_max_connections,
                acquire_timeout: Duration::from_secs(raw.database_acquire_timeout_secs),
                sqlite_synchronous_full,
            },
            janitor_interval: Duration::from_millis(raw.janitor_interval_ms.max(10)),
            audit_retention: Duration::from_secs(raw.audit_retention_days.max(1) * 24 * 3600),
            signing_keys_reload: Duration::from_secs(raw.signing_keys_reload_secs),
            http: HttpSettings {
                listen,
                max_body_bytes: raw.max_body_bytes,
                http_workers: raw.http_workers,
                max_in_flight_requests: raw.max_in_flight_requests,
                max_in_flight_per_ip: raw.max_in_flight_per_ip,
                request_head_timeout: Duration::from_millis(raw.request_head_timeout_ms),
                request_body_timeout: Duration::from_millis(raw.request_body_timeout_ms),
                client_disconnect_timeout: Duration::from_millis(raw.client_disconnect_timeout_ms),
                trusted_proxies,
                trusted_proxy_forwarded,
                cors_allowed_origins,
            },
            auth: AuthSettings {
                code_length: c.length,
                code_ttl: Duration::from_secs(c.ttl_secs),
                code_max_attempts: c.max_attempts,
                resend_cooldown: Duration::from_secs(c.resend_cooldown_secs),
                flow_idle_ttl: Duration::from_secs(raw.flows.idle_ttl_secs),
                session_ttl: Duration::from_secs(raw.sessions.ttl_secs),
                session_inactivity_timeout: (raw.sessions.inactivity_timeout_secs > 0)
                    .then(|| Duration::from_secs(raw.sessions.inactivity_timeout_secs)),
                reverification: Duration::from_secs(raw.sessions.reverification_secs),
                allow_account_deletion: raw.sessions.allow_account_deletion,
                lockout: raw.lockout.clone(),
                limits: raw.limits.clone(),
                test_mode,
                code_in_email_subject: c.in_email_subject,
                enumeration_strict,
            },
            delivery: DeliverySettings {
                smtp,
                mail_from,
                outbox: raw.outbox,
                sms,
            },
            identifiers,
            strategies: raw.strategies.clone(),
            phone_policy,
            api_secret_keys: raw.api.secret_keys.clone(),
            oidc,
            warnings,
        })
    }
}

/// Whether the URL's host names this machine (`localhost`, a loopback address).
fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Test mode as configured. Outside dev mode it takes two opt-ins and, where email addresses are
/// used, a list of the operator's own test domains; in dev mode the list is optional.
fn test_mode_rules(
    raw: &RawConfig,
    on: bool,
    dev_mode: bool,
    email_enabled: bool,
    warnings: &mut Vec<String>,
) -> anyhow::Result<TestMode> {
    if !on {
        return Ok(TestMode::Off);
    }
    let domains = raw
        .test_email_domains
        .iter()
        .map(|d| {
            let probe = format!("probe@{}", d.trim());
            crate::domain::EmailAddress::parse(&probe)
                .ok()
                .and_then(|e| e.canonical().rsplit_once('@').map(|(_, d)| d.to_string()))
                .ok_or_else(|| anyhow::anyhow!("`test_email_domains`: {d:?} is not a domain"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if dev_mode {
        return Ok(TestMode::On {
            email_domains: (!domains.is_empty()).then_some(domains),
        });
    }
    if !raw.test_mode_outside_dev_mode {
        bail!("`test_mode`: on outside dev mode, where test identifiers accept the code 424242; if this is a staging instance, also set `test_mode_outside_dev_mode = true` and list your own `test_email_domains`");
    }
    if email_enabled && domains.is_empty() {
        bail!("`test_email_domains`: required for test mode outside dev mode (the domains whose +latchkey_test addresses accept 424242; never a domain other people use)");
    }
    warnings.push(format!("TEST MODE IS ON: +latchkey_test addresses at {} and numbers +1 XXX 555-0100…0199 receive no message and accept the code 424242. Turn `test_mode` off before real people use this instance.", if domains.is_empty() { "no domain".to_string() } else { domains.join(", ") }));
    Ok(TestMode::On {
        email_domains: Some(domains),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_make_a_dev_instance() {
        let s = Settings::from_raw(RawConfig::default(), false).unwrap();
        assert!(s.dev_mode);
        assert!(!s.secure_cookies());
        assert_eq!(s.http.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn dev_mode_never_switches_itself_on_for_a_public_instance() {
        let raw = RawConfig {
            listen: "0.0.0.0:8080".into(),
            ..RawConfig::default()
        };
        assert!(Settings::from_raw(raw, false)
            .unwrap_err()
            .to_string()
            .contains("smtp_url"));
        let raw = RawConfig {
            public_url: "https://accounts.example.com".into(),
            ..RawConfig::default()
        };
        assert!(Settings::from_raw(raw, false).is_err());
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let raw = RawConfig {
            secret: Some("s".repeat(40)),
            smtp_url: Some("smtps://user:hunter2@smtp.example.com".into()),
            database_url: "postgres://app:pgpass@db/latchkey".into(),
            ..RawConfig::default()
        };
        let shown = format!("{:?}", Settings::from_raw(raw, false).unwrap());
        for secret in ["ssssssss", "hunter2", "pgpass"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn a_config_file_without_smtp_is_refused_outside_dev_mode() {
        let err = Settings::from_raw(RawConfig::default(), true).unwrap_err();
        assert!(err.to_string().contains("smtp_url"), "{err}");
    }

    #[test]
    fn a_short_secret_is_refused_naming_the_key() {
        let raw = RawConfig {
            secret: Some("short".into()),
            ..RawConfig::default()
        };
        let err = Settings::from_raw(raw, false).unwrap_err();
        assert!(err.to_string().contains("`secret`"), "{err}");
    }

    #[test]
    fn comma_separated_redirect_origins_are_accepted() {
        let raw: RawConfig = Figment::from(Serialized::defaults(RawConfig::default()))
            .merge((
                "allowed_redirect_origins",
                "https://a.example, https://b.example:8443",
            ))
            .extract()
            .unwrap();
        let s = Settings::from_raw(raw, false).unwrap();
        assert_eq!(s.allowed_redirect_origins.len(), 2);
    }

    #[test]
    fn after_urls_default_to_the_profile_and_sign_in_and_are_validated_like_redirects() {
        let s = Settings::from_raw(production(), true).unwrap();
        assert_eq!(
            (
                s.after.sign_in.as_str(),
                s.after.sign_up.as_str(),
                s.after.sign_out.as_str()
            ),
            ("/user", "/user", "/sign-in")
        );
        let mut raw = production();
        raw.allowed_redirect_origins = vec!["https://*.example.com".into()];
        raw.after_sign_in_url = "https://app.example.com/home".into();
        raw.after_sign_out_url = "https://www.example.com/".into();
        let s = Settings::from_raw(raw, true).unwrap();
        assert_eq!(s.after.sign_in.as_str(), "https://app.example.com/home");
        for (key, bad) in [
            ("after_sign_in_url", "https://evil.test/"),
            ("after_sign_up_url", "//evil.test"),
            ("after_sign_out_url", "javascript:alert(1)"),
        ] {
            let mut raw = production();
            match key {
                "after_sign_in_url" => raw.after_sign_in_url = bad.into(),
                "after_sign_up_url" => raw.after_sign_up_url = bad.into(),
                _ => raw.after_sign_out_url = bad.into(),
            }
            let err = refusal(raw);
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn a_bad_wildcard_origin_is_refused_naming_the_key() {
        let mut raw = production();
        raw.allowed_redirect_origins = vec!["https://*.com".into()];
        assert!(refusal(raw).contains("allowed_redirect_origins"));
    }

    #[test]
    fn secret_keys_must_look_like_secret_keys() {
        for bad in [
            "sk_short",
            "not-sk-0123456789abcdef0123456789abcdef",
            "sk_0123456789 abcdef0123456789abcdef",
        ] {
            let mut raw = production();
            raw.api.secret_keys = vec![bad.into()];
            assert!(refusal(raw).contains("api.secret_keys"), "{bad}");
        }
        let mut raw = production();
        raw.api.secret_keys = vec!["sk_0123456789abcdef0123456789abcdef".into()];
        assert_eq!(
            Settings::from_raw(raw, true).unwrap().api_secret_keys.len(),
            1
        );
    }

    #[test]
    fn an_unknown_key_is_named() {
        let err = Figment::from(Serialized::defaults(RawConfig::default()))
            .merge(("smpt_url", "smtp://x"))
            .extract::<RawConfig>()
            .err()
            .expect("an unknown key is refused");
        assert!(err.to_string().contains("smpt_url"), "{err}");
    }

    fn production() -> RawConfig {
        RawConfig {
            smtp_url: Some("smtp://127.0.0.1:25".into()),
            secret: Some("a-test-secret-of-at-least-32-characters".into()),
            ..RawConfig::default()
        }
    }

    fn refusal(raw: RawConfig) -> String {
        match Settings::from_raw(raw, true) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_default_dev_instance_offers_email_and_phone_with_both_strategies() {
        let s = Settings::from_raw(RawConfig::default(), false).unwrap();
        assert!(s.identifiers.email.enabled && s.identifiers.email.used_for_sign_in);
        assert!(s.identifiers.phone.enabled && s.identifiers.phone.used_for_sign_in);
        assert!(s.strategies.email_code && s.strategies.phone_code);
        assert!(
            s.auth.test_mode.is_on(),
            "test mode is on by default in dev mode"
        );
        assert_eq!(s.delivery.sms.name(), "log");
    }

    #[test]
    fn without_allowed_countries_phone_numbers_are_off_with_a_warning() {
        let s = Settings::from_raw(production(), true).unwrap();
        assert!(!s.identifiers.phone.enabled && !s.identifiers.sign_in().phone);
        assert!(
            !s.auth.test_mode.is_on(),
            "test mode is off outside dev mode"
        );
        assert!(
            s.warnings
                .iter()
                .any(|w| w.contains("phone.allowed_countries")),
            "{:?}",
            s.warnings
        );
    }

    #[test]
    fn phone_used_for_sign_in_without_the_phone_code_strategy_is_refused_naming_both() {
        let mut raw = production();
        raw.strategies.phone_code = false;
        let err = refusal(raw);
        assert!(
            err.contains("identifiers.phone.used_for_sign_in")
                && err.contains("strategies.phone_code"),
            "{err}"
        );
    }

    #[test]
    fn email_without_the_email_code_strategy_is_refused_naming_both() {
        let mut raw = production();
        raw.strategies.email_code = false;
        let err = refusal(raw);
        assert!(
            err.contains("identifiers.email.enabled") && err.contains("strategies.email_code"),
            "{err}"
        );
    }

    #[test]
    fn a_required_identifier_that_is_not_enabled_is_refused() {
        let mut raw = production();
        raw.identifiers.email.enabled = false;
        let err = refusal(raw);
        assert!(err.contains("identifiers.email.required"), "{err}");
    }

    #[test]
    fn required_phone_numbers_need_allowed_countries() {
        let mut raw = production();
        raw.identifiers.phone.required = true;
        let err = refusal(raw);
        assert!(err.contains("phone.allowed_countries"), "{err}");
    }

    #[test]
    fn nobody_able_to_sign_in_is_refused() {
        let mut raw = production();
        raw.identifiers.email.used_for_sign_in = false;
        raw.identifiers.phone.used_for_sign_in = false;
        let err = refusal(raw);
        assert!(err.contains("used_for_sign_in"), "{err}");
    }

    #[test]
    fn the_log_sms_provider_is_refused_outside_dev_mode() {
        let mut raw = production();
        raw.phone.allowed_countries = Some(vec!["US".into()]);
        let err = refusal(raw);
        assert!(err.contains("sms.provider"), "{err}");
    }

    #[test]
    fn an_unknown_allowed_country_is_named() {
        let mut raw = production();
        raw.phone.allowed_countries = Some(vec!["US".into(), "XX".into()]);
        let err = refusal(raw);
        assert!(
            err.contains("phone.allowed_countries") && err.contains("XX"),
            "{err}"
        );
    }

    #[test]
    fn test_mode_outside_dev_mode_needs_a_second_opt_in_and_test_domains() {
        let mut raw = production();
        raw.test_mode = Some(true);
        let err = refusal(raw.clone());
        assert!(err.contains("test_mode_outside_dev_mode"), "{err}");
        raw.test_mode_outside_dev_mode = true;
        let err = refusal(raw.clone());
        assert!(err.contains("test_email_domains"), "{err}");
        raw.test_email_domains = vec!["Staging.Acme.test".into(), "not a domain".into()];
        let err = refusal(raw.clone());
        assert!(err.contains("not a domain"), "{err}");
        raw.test_email_domains = vec!["Staging.Acme.test".into()];
        let s = Settings::from_raw(raw, true).unwrap();
        assert_eq!(
            s.auth.test_mode,
            TestMode::On {
                email_domains: Some(vec!["staging.acme.test".into()])
            }
        );
        assert!(
            s.warnings
                .iter()
                .any(|w| w.contains("TEST MODE") && w.contains("staging.acme.test")),
            "{:?}",
            s.warnings
        );
    }

    #[test]
    fn in_dev_mode_test_mode_covers_any_domain_unless_domains_are_listed() {
        let s = Settings::from_raw(RawConfig::default(), false).unwrap();
        assert_eq!(
            s.auth.test_mode,
            TestMode::On {
                email_domains: None
            }
        );
        let raw = RawConfig {
            test_email_domains: vec!["example.test".into()],
            ..RawConfig::default()
        };
        let s = Settings::from_raw(raw, false).unwrap();
        assert_eq!(
            s.auth.test_mode,
            TestMode::On {
                email_domains: Some(vec!["example.test".into()])
            }
        );
    }

    #[test]
    fn outside_dev_mode_a_secret_kept_outside_the_database_is_required() {
        let mut raw = production();
        raw.secret = None;
        let err = refusal(raw);
        assert!(
            err.contains("`secret` or `secret_file`") && err.contains("outside dev mode"),
            "{err}"
        );
        let s = Settings::from_raw(RawConfig::default(), false).unwrap();
        assert!(
            s.dev_mode && s.secret.is_none(),
            "dev mode may generate one"
        );
    }

    #[test]
    fn dev_mode_does_not_switch_itself_on_for_a_public_url_behind_a_local_proxy() {
        let raw = RawConfig {
            public_url: "http://accounts.example.com".into(),
            ..RawConfig::default()
        };
        let err = Settings::from_raw(raw, false).unwrap_err().to_string();
        assert!(err.contains("smtp_url"), "not dev mode: {err}");
        for local in [
            "http://localhost:8080",
            "http://127.0.0.1:3000",
            "http://[::1]:8080",
        ] {
            let raw = RawConfig {
                public_url: local.into(),
                ..RawConfig::default()
            };
            assert!(Settings::from_raw(raw, false).unwrap().dev_mode, "{local}");
        }
    }

    #[test]
    fn the_code_stays_out_of_email_subjects_unless_asked_for() {
        let s = Settings::from_raw(production(), true).unwrap();
        assert!(!s.auth.code_in_email_subject);
        let mut raw = production();
        raw.codes.in_email_subject = true;
        assert!(
            Settings::from_raw(raw, true)
                .unwrap()
                .auth
                .code_in_email_subject
        );
    }

    #[test]
    fn allowed_countries_may_be_a_comma_separated_string() {
        let raw: RawConfig = Figment::from(Serialized::defaults(RawConfig::default()))
            .merge(("phone.allowed_countries", "US, CA, +44"))
            .extract()
            .unwrap();
        assert_eq!(
            raw.phone.allowed_countries,
            Some(vec!["US".to_string(), "CA".to_string(), "+44".to_string()])
        );
    }

    #[test]
    fn lockout_settings_allowing_more_than_100_failures_an_hour_are_refused() {
        let mut raw = production();
        raw.lockout.max_failures = 10;
        raw.lockout.cooldown_secs = 60;
        let err = refusal(raw);
        assert!(
            err.contains("lockout.max_failures") && err.contains("600"),
            "{err}"
        );
        let mut raw = production();
        raw.lockout.max_failures = 100;
        raw.lockout.cooldown_secs = 3600;
        raw.lockout.stop_after_failures = 100;
        raw.lockout.device_failures = 0;
        assert!(Settings::from_raw(raw, true).is_ok());
    }

    #[test]
    fn the_shipped_defaults_are_the_documented_ones() {
        // The integration suite turns limits and enumeration protection off for most tests, so
        // the defaults people get are pinned here.
        let s = Settings::from_raw(production(), true).unwrap();
        let l = &s.auth.limits;
        assert_eq!(
            (
                l.send_interval_secs,
                l.sends_per_10_minutes,
                l.sends_per_day
            ),
            (30, 5, 20)
        );
        assert_eq!(
            (
                l.ip_flows_per_10_seconds,
                l.ip_attempts_per_10_seconds,
                l.ip_sends_per_hour
            ),
            (5, 3, 20)
        );
        assert_eq!((l.sms_per_hour, l.sms_prefix_alarm_per_hour), (30, 10));
        assert!(s.auth.enumeration_strict);
        let lock = &s.auth.lockout;
        assert_eq!(
            (
                lock.max_failures,
                lock.cooldown_secs,
                lock.max_cooldown_secs
            ),
            (10, 3600, 86400)
        );
        assert_eq!(
            (
                lock.stop_after_failures,
                lock.device_failures,
                lock.device_ttl_days
            ),
            (80, 20, 365)
        );
        assert_eq!(
            (
                l.ipv6_prefix_len,
                l.ipv6_wide_prefix_len,
                l.ipv6_wide_factor,
                l.owner_notice_interval_secs
            ),
            (64, 48, 8, 86400)
        );
        assert_eq!(
            (
                s.auth.code_length,
                s.auth.code_ttl.as_secs(),
                s.auth.code_max_attempts
            ),
            (6, 600, 3)
        );
        assert_eq!(s.auth.resend_cooldown.as_secs(), 30);
        assert!(s.http.cors_allowed_origins.is_empty(), "CORS is opt-in");
        assert!(s.http.trusted_proxies.is_empty() && !s.http.trusted_proxy_forwarded);
        assert_eq!(s.audit_retention.as_secs(), 90 * 24 * 3600);
        assert!(!s.auth.test_mode.is_on());
    }

    #[test]
    fn request_timeouts_default_to_seconds_and_out_of_range_values_are_refused_naming_the_key() {
        let s = Settings::from_raw(production(), true).unwrap();
        assert_eq!(s.http.request_head_timeout, Duration::from_secs(5));
        assert_eq!(s.http.request_body_timeout, Duration::from_secs(5));
        assert_eq!(s.http.client_disconnect_timeout, Duration::from_secs(1));
        assert_eq!(s.http.max_in_flight_per_ip, 32);
        let mut raw = production();
        raw.request_body_timeout_ms = 0;
        assert!(refusal(raw).contains("`request_body_timeout_ms`"));
        let mut raw = production();
        raw.request_head_timeout_ms = 3_600_000;
        assert!(refusal(raw).contains("`request_head_timeout_ms`"));
        let mut raw = production();
        raw.client_disconnect_timeout_ms = 120_000;
        assert!(refusal(raw).contains("`client_disconnect_timeout_ms`"));
    }

    #[test]
    fn a_plain_http_cors_origin_is_refused_outside_dev_mode() {
        let mut raw = production();
        raw.cors_allowed_origins = Some(vec!["http://app.example.com".into()]);
        assert!(refusal(raw).contains("cors_allowed_origins"));
        let mut raw = production();
        raw.cors_allowed_origins = Some(vec!["https://app.example.com".into()]);
        assert!(Settings::from_raw(raw, true).is_ok());
    }
}
