//! The SMTP part of the delivery section: `smtp_url` and its companions, parsed into
//! [`SmtpSettings`] once at start, with the rules that keep codes and credentials off the wire
//! in clear:
//!
//! - Outside dev mode, mail to a host other than this machine goes over TLS: `smtps://`, or
//!   `smtp://…?tls=required` (STARTTLS, and no message without it). Plain `smtp://` and
//!   `tls=opportunistic` are refused there: anyone on the path reads the codes, and
//!   opportunistic STARTTLS is removed by deleting one line of the server's EHLO answer.
//! - Credentials are only ever sent over TLS, in every mode: a user and password (or
//!   `smtp_password_file`) need `smtps://` or `tls=required`.
//!
//! The client (`delivery/smtp_client/`) keeps the same promises on the wire.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use url::{Host, Url};

use super::secret_files::read_secret_file;
use super::RawConfig;

/// How a connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtp://`: no TLS (a relay on this machine, or dev mode).
    Plain,
    /// `smtp://…?tls=opportunistic`: STARTTLS when the server offers it (loopback or dev mode).
    StartTlsOpportunistic,
    /// `smtp://…?tls=required`: STARTTLS, and nothing is sent to a server that does not offer it.
    StartTlsRequired,
    /// `smtps://`: TLS from the first byte.
    ImplicitTls,
}

impl SmtpSecurity {
    /// Whether every connection is encrypted before anything but EHLO is sent.
    pub fn always_encrypted(self) -> bool {
        matches!(self, Self::StartTlsRequired | Self::ImplicitTls)
    }
}

/// The user and password for SMTP AUTH. `Debug` shows the user only.
#[derive(Clone)]
pub struct SmtpCredentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for SmtpCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpCredentials")
            .field("user", &self.user)
            .field("password", &"(redacted)")
            .finish()
    }
}

/// The validated SMTP settings. `Debug` shows no password.
#[derive(Clone)]
pub struct SmtpSettings {
    /// A host name or an IP address (without brackets).
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub credentials: Option<SmtpCredentials>,
    /// The name given in EHLO (the URL's path); `None`: this machine's host name.
    pub hello_name: Option<String>,
    /// The CA certificates (DER) of `smtp_ca_file`: when set, the only roots trusted for the SMTP
    /// server's certificate. Empty: the public web PKI roots (webpki-roots).
    pub ca_certificates: Vec<Vec<u8>>,
    /// SMTP connections open at once, at the most (each message in flight holds one).
    pub max_connections: usize,
    /// How long an idle connection is kept for the next message; zero: one connection per message.
    pub idle_timeout: Duration,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("credentials", &self.credentials)
            .field("hello_name", &self.hello_name)
            .field("ca_certificates", &self.ca_certificates.len())
            .field("max_connections", &self.max_connections)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

/// The largest `smtp_max_connections`: beyond it a relay sees a connection flood.
const MAX_CONNECTIONS: usize = 256;
/// The longest `smtp_idle_timeout_secs`: servers close idle connections after 5 minutes
/// (RFC 5321 §4.5.3.2.7), so keeping one longer only defers the failure.
const MAX_IDLE_SECS: u64 = 300;

/// Parses and checks `smtp_url` (already trimmed; `None` when unset) with `smtp_password_file`,
/// `smtp_ca_file`, `smtp_max_connections` and `smtp_idle_timeout_secs`.
pub(super) fn smtp_settings(
    raw: &RawConfig,
    url: Option<&str>,
    dev_mode: bool,
) -> anyhow::Result<Option<SmtpSettings>> {
    if !(1..=MAX_CONNECTIONS).contains(&raw.smtp_max_connections) {
        bail!(
            "`smtp_max_connections`: must be between 1 and {MAX_CONNECTIONS}, got {}",
            raw.smtp_max_connections
        );
    }
    if raw.smtp_idle_timeout_secs > MAX_IDLE_SECS {
        bail!(
            "`smtp_idle_timeout_secs`: must be at most {MAX_IDLE_SECS} (servers close idle connections after 5 minutes), got {}",
            raw.smtp_idle_timeout_secs
        );
    }
    let Some(url) = url else {
        for (key, set) in [
            ("smtp_password_file", raw.smtp_password_file.is_some()),
            ("smtp_ca_file", raw.smtp_ca_file.is_some()),
        ] {
            if set {
                bail!("`{key}`: set, but `smtp_url` is not");
            }
        }
        return Ok(None);
    };
    let parsed = Url::parse(url).context("`smtp_url`: not a URL")?;
    let implicit = match parsed.scheme() {
        "smtp" => false,
        "smtps" => true,
        other => bail!("`smtp_url`: scheme must be smtp:// or smtps://, got {other}://"),
    };
    let mut tls = None;
    for (key, value) in parsed.query_pairs() {
        match key.as_ref() {
            "tls" if tls.is_none() => tls = Some(value.into_owned()),
            other => bail!("`smtp_url`: unknown or repeated parameter {other:?} (only tls=required or tls=opportunistic, for smtp://)"),
        }
    }
    let security = match (implicit, tls.as_deref()) {
        (true, None) => SmtpSecurity::ImplicitTls,
        (true, Some(_)) => {
            bail!("`smtp_url`: smtps:// is TLS from the start; ?tls= is only for smtp://")
        }
        (false, None) => SmtpSecurity::Plain,
        (false, Some("required")) => SmtpSecurity::StartTlsRequired,
        (false, Some("opportunistic")) => SmtpSecurity::StartTlsOpportunistic,
        (false, Some(other)) => {
            bail!("`smtp_url`: tls must be required or opportunistic, got {other:?}")
        }
    };
    // smtp:// is not a "special" scheme to the URL parser, so an IPv4 host arrives as a domain.
    let (host, loopback) = match parsed.host() {
        Some(Host::Domain(d)) if !d.is_empty() => match d.parse::<IpAddr>() {
            Ok(ip) => (ip.to_string(), ip.is_loopback()),
            Err(_) => (d.to_string(), d.eq_ignore_ascii_case("localhost")),
        },
        Some(Host::Ipv4(ip)) => (ip.to_string(), IpAddr::V4(ip).is_loopback()),
        Some(Host::Ipv6(ip)) => (ip.to_string(), IpAddr::V6(ip).is_loopback()),
        _ => bail!("`smtp_url`: no host"),
    };
    if !dev_mode && !loopback && !security.always_encrypted() {
        bail!(
            "`smtp_url`: mail to {host} would leave this machine unencrypted{}; use smtp://…@{host}:587?tls=required (STARTTLS) or smtps://…@{host}:465. Plain smtp:// and tls=opportunistic are only for a relay on this machine (127.0.0.1, ::1, localhost) or in dev mode",
            if security == SmtpSecurity::StartTlsOpportunistic {
                " whenever someone on the path strips STARTTLS (tls=opportunistic)"
            } else {
                ""
            }
        );
    }
    let port = parsed.port().unwrap_or(match security {
        SmtpSecurity::Plain => 25,
        SmtpSecurity::ImplicitTls => 465,
        SmtpSecurity::StartTlsOpportunistic | SmtpSecurity::StartTlsRequired => 587,
    });
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
    };
    let user = decode(parsed.username()).context("`smtp_url`: the user name is not UTF-8")?;
    let password = match (parsed.password(), &raw.smtp_password_file) {
        (Some(_), Some(_)) => {
            bail!("`smtp_url` and `smtp_password_file`: give the password in one of them, not both")
        }
        (Some(p), None) => Some(decode(p).context("`smtp_url`: the password is not UTF-8")?),
        (None, Some(path)) => {
            if user.is_empty() {
                bail!(
                    "`smtp_password_file`: set, but `smtp_url` names no user (smtp://user@host…)"
                );
            }
            Some(read_secret_file("smtp_password_file", path)?)
        }
        (None, None) => None,
    };
    let credentials = match password {
        Some(password) => Some(SmtpCredentials { user, password }),
        None if !user.is_empty() => {
            bail!(
                "`smtp_url`: a user without a password; add :password@ or set `smtp_password_file`"
            )
        }
        None => None,
    };
    if credentials.is_some() && !security.always_encrypted() {
        bail!(
            "`smtp_url`: credentials are only sent over TLS; use ?tls=required (STARTTLS) or smtps://, or remove the user and password"
        );
    }
    let hello_name = Some(parsed.path().trim_matches('/'))
        .filter(|p| !p.is_empty())
        .map(String::from);
    let ca_certificates = match &raw.smtp_ca_file {
        None => Vec::new(),
        Some(path) => {
            if security == SmtpSecurity::Plain {
                bail!("`smtp_ca_file`: set, but `smtp_url` uses no TLS");
            }
            read_ca_file(path)?
        }
    };
    Ok(Some(SmtpSettings {
        host,
        port,
        security,
        credentials,
        hello_name,
        ca_certificates,
        max_connections: raw.smtp_max_connections,
        idle_timeout: Duration::from_secs(raw.smtp_idle_timeout_secs),
    }))
}

/// The certificates of a PEM file; at least one.
fn read_ca_file(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("`smtp_ca_file`: cannot read {}", path.display()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("`smtp_ca_file`: {} is not PEM ({e})", path.display()))?;
    if certificates.is_empty() {
        bail!(
            "`smtp_ca_file`: {} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use std::path::PathBuf;

    /// A configuration file's settings (dev mode off) with `smtp_url` set.
    fn production(url: &str) -> RawConfig {
        RawConfig {
            smtp_url: Some(url.into()),
            secret: Some("a-test-secret-of-at-least-32-characters".into()),
            ..RawConfig::default()
        }
    }

    fn start(raw: RawConfig) -> anyhow::Result<Settings> {
        Settings::from_raw(raw, true)
    }

    fn refusal(raw: RawConfig) -> String {
        match start(raw) {
            Ok(_) => panic!("accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    fn smtp(raw: RawConfig) -> SmtpSettings {
        start(raw).unwrap().delivery.smtp.expect("smtp set")
    }

    fn secret_file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn plain_smtp_to_another_host_is_refused_outside_dev_mode() {
        let err = refusal(production("smtp://smtp.example.com:25"));
        assert!(
            err.contains("`smtp_url`") && err.contains("tls=required") && err.contains("smtps://"),
            "{err}"
        );
    }

    #[test]
    fn opportunistic_starttls_to_another_host_is_refused_outside_dev_mode() {
        let err = refusal(production("smtp://smtp.example.com:587?tls=opportunistic"));
        assert!(
            err.contains("`smtp_url`") && err.contains("strips STARTTLS"),
            "{err}"
        );
    }

    #[test]
    fn required_starttls_and_smtps_to_another_host_are_accepted() {
        let s = smtp(production("smtp://smtp.example.com?tls=required"));
        assert_eq!(
            (s.host.as_str(), s.port, s.security),
            ("smtp.example.com", 587, SmtpSecurity::StartTlsRequired)
        );
        let s = smtp(production("smtps://smtp.example.com"));
        assert_eq!((s.port, s.security), (465, SmtpSecurity::ImplicitTls));
    }

    #[test]
    fn plain_smtp_to_this_machine_is_accepted_outside_dev_mode() {
        for url in [
            "smtp://127.0.0.1:2525",
            "smtp://127.0.0.2",
            "smtp://localhost",
            "smtp://[::1]:25?tls=opportunistic",
        ] {
            let s = smtp(production(url));
            assert!(!s.security.always_encrypted(), "{url}");
        }
        assert_eq!(smtp(production("smtp://[::1]:25")).host, "::1");
    }

    #[test]
    fn dev_mode_may_use_plain_smtp_to_another_host() {
        let mut raw = production("smtp://mailpit.internal:1025");
        raw.dev_mode = Some(true);
        assert_eq!(smtp(raw).security, SmtpSecurity::Plain);
    }

    #[test]
    fn credentials_without_tls_are_refused_even_in_dev_mode_and_on_loopback() {
        for url in [
            "smtp://user:pass@127.0.0.1:25",
            "smtp://user:pass@127.0.0.1:587?tls=opportunistic",
        ] {
            let mut raw = production(url);
            raw.dev_mode = Some(true);
            let err = refusal(raw);
            assert!(
                err.contains("credentials are only sent over TLS"),
                "{url}: {err}"
            );
        }
        let s = smtp(production("smtp://us%40er:p%3Ass@127.0.0.1?tls=required"));
        let c = s.credentials.unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("us@er", "p:ss"));
    }

    #[test]
    fn an_unknown_tls_mode_or_parameter_is_named() {
        assert!(refusal(production("smtp://127.0.0.1?tls=yes")).contains("\"yes\""));
        assert!(refusal(production("smtp://127.0.0.1?starttls=1")).contains("\"starttls\""));
        assert!(refusal(production("smtps://smtp.example.com?tls=required")).contains("smtps://"));
        assert!(refusal(production("http://smtp.example.com")).contains("smtp_url"));
    }

    #[test]
    fn the_smtp_password_file_is_read_without_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = production("smtps://latchkey@smtp.example.com");
        raw.smtp_password_file = Some(secret_file(&dir, "smtp", "app password\n"));
        let c = smtp(raw).credentials.unwrap();
        assert_eq!(
            (c.user.as_str(), c.password.as_str()),
            ("latchkey", "app password")
        );
    }

    #[test]
    fn an_unreadable_or_conflicting_password_file_is_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = production("smtps://latchkey@smtp.example.com");
        raw.smtp_password_file = Some(dir.path().join("missing"));
        let err = refusal(raw);
        assert!(err.contains("`smtp_password_file`: cannot read"), "{err}");

        let mut raw = production("smtps://latchkey:inline@smtp.example.com");
        raw.smtp_password_file = Some(secret_file(&dir, "smtp", "pw"));
        assert!(refusal(raw).contains("not both"));

        let mut raw = production("smtps://smtp.example.com");
        raw.smtp_password_file = Some(secret_file(&dir, "smtp", "pw"));
        assert!(refusal(raw).contains("names no user"));

        let mut raw = production("smtps://latchkey@smtp.example.com");
        raw.smtp_password_file = Some(secret_file(&dir, "empty", "\n"));
        assert!(refusal(raw).contains("is empty"));
    }

    #[test]
    fn the_smtp_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = production("smtps://smtp.example.com");
        raw.smtp_ca_file = Some(dir.path().join("missing.pem"));
        assert!(refusal(raw).contains("`smtp_ca_file`: cannot read"));

        let mut raw = production("smtps://smtp.example.com");
        raw.smtp_ca_file = Some(secret_file(&dir, "ca.pem", "not a certificate\n"));
        assert!(refusal(raw).contains("`smtp_ca_file`"));

        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let mut raw = production("smtps://smtp.example.com");
        raw.smtp_ca_file = Some(secret_file(&dir, "ca.pem", &ca.cert.pem()));
        assert_eq!(smtp(raw).ca_certificates, vec![ca.cert.der().to_vec()]);

        let mut raw = production("smtp://127.0.0.1");
        raw.smtp_ca_file = Some(secret_file(&dir, "ca.pem", &ca.cert.pem()));
        assert!(refusal(raw).contains("uses no TLS"));
    }

    #[test]
    fn connection_limits_are_checked_and_default_to_16_connections_kept_30_seconds() {
        let s = smtp(production("smtp://127.0.0.1"));
        assert_eq!((s.max_connections, s.idle_timeout.as_secs()), (16, 30));
        let mut raw = production("smtp://127.0.0.1");
        raw.smtp_max_connections = 0;
        assert!(refusal(raw).contains("`smtp_max_connections`"));
        let mut raw = production("smtp://127.0.0.1");
        raw.smtp_max_connections = 257;
        assert!(refusal(raw).contains("`smtp_max_connections`"));
        let mut raw = production("smtp://127.0.0.1");
        raw.smtp_idle_timeout_secs = 301;
        assert!(refusal(raw).contains("`smtp_idle_timeout_secs`"));
    }
}
