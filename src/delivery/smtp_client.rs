//! SMTP client for `smtp://` URLs (plain or STARTTLS): lettre's protocol code over our own TCP
//! sockets with `TCP_NODELAY`, kept in a small pool.
//!
//! Why not lettre's pooled transport: it leaves Nagle's algorithm on, and lettre writes the
//! message body and the final `.` in two writes, so every message waited for the server's delayed
//! ACK (≈ 40 ms on Linux) before the `.` left. With `TCP_NODELAY` a message is on the wire at once.
//! `smtps://` (implicit TLS) still uses lettre's transport.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::{SMTP_PORT, SUBMISSION_PORT};
use tokio::net::TcpStream;

use super::mail::explain_smtp_error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartTls {
    Off,
    Required,
    Opportunistic,
}

/// At most this many idle connections are kept.
const MAX_IDLE: usize = 16;

pub struct SmtpClient {
    host: String,
    port: u16,
    starttls: StartTls,
    credentials: Option<Credentials>,
    hello: ClientId,
    timeout: Duration,
    idle: Mutex<Vec<AsyncSmtpConnection>>,
}

impl SmtpClient {
    /// Builds a client for an `smtp://` URL; `None` for other schemes.
    pub fn from_url(url: &str, timeout: Duration) -> anyhow::Result<Option<Self>> {
        let parsed = url::Url::parse(url).context("`smtp_url`: not a URL")?;
        if parsed.scheme() != "smtp" {
            return Ok(None);
        }
        let tls = parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.to_string());
        let starttls = match tls.as_deref() {
            None => StartTls::Off,
            Some("required") => StartTls::Required,
            Some("opportunistic") => StartTls::Opportunistic,
            Some(other) => {
                anyhow::bail!("`smtp_url`: tls must be required or opportunistic, got {other:?}")
            }
        };
        let host = parsed
            .host_str()
            .context("`smtp_url`: no host")?
            .to_string();
        let port = parsed.port().unwrap_or(if starttls == StartTls::Off {
            SMTP_PORT
        } else {
            SUBMISSION_PORT
        });
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
        };
        let credentials = match parsed.password() {
            Some(password) => Some(Credentials::new(
                decode(parsed.username()).context("`smtp_url`: user name is not UTF-8")?,
                decode(password).context("`smtp_url`: password is not UTF-8")?,
            )),
            None => None,
        };
        let hello = if parsed.path().len() > 1 {
            ClientId::Domain(parsed.path().trim_matches('/').to_string())
        } else {
            ClientId::default()
        };
        Ok(Some(Self {
            host,
            port,
            starttls,
            credentials,
            hello,
            timeout,
            idle: Mutex::new(Vec::new()),
        }))
    }

    async fn connect(&self) -> anyhow::Result<AsyncSmtpConnection> {
        let unreachable = |e: std::io::Error| {
            anyhow::anyhow!(
                "could not connect to the SMTP server at {}:{}; check smtp_url and that it is running ({})",
                self.host,
                self.port,
                e.kind()
            )
        };
        let stream = tokio::time::timeout(
            self.timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connection timed out"))
        .and_then(|r| r)
        .map_err(unreachable)?;
        stream.set_nodelay(true).map_err(unreachable)?;
        let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
            .await
            .map_err(explain_smtp_error)?;
        let wants_tls = match self.starttls {
            StartTls::Off => false,
            StartTls::Required => true,
            StartTls::Opportunistic => conn.can_starttls(),
        };
        if wants_tls {
            let params = TlsParameters::new(self.host.clone()).map_err(explain_smtp_error)?;
            conn.starttls(params, &self.hello)
                .await
                .map_err(explain_smtp_error)?;
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(explain_smtp_error)?;
        }
        Ok(conn)
    }

    /// Sends one message. A pooled connection that turns out to be dead is replaced once.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> anyhow::Result<()> {
        let pooled = self.idle.lock().expect("pool lock").pop();
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect().await?,
        };
        let result = match conn.send(envelope, message).await {
            Err(_) if reused => {
                conn.abort().await;
                conn = self.connect().await?;
                conn.send(envelope, message).await
            }
            other => other,
        };
        match result {
            Ok(_) if !conn.has_broken() => {
                let mut idle = self.idle.lock().expect("pool lock");
                if idle.len() < MAX_IDLE {
                    idle.push(conn);
                }
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => {
                conn.abort().await;
                Err(explain_smtp_error(e))
            }
        }
    }
}
