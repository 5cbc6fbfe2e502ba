//! Mail transports: SMTP through lettre, and the development transport that only logs.

use std::time::Duration;

use anyhow::Context;
use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::message::RenderedEmail;
use super::smtp_client::SmtpClient;

/// Where rendered mail goes.
pub enum Mailer {
    Smtp(Box<SmtpMailer>),
    Dev(DevTransport),
}

impl Mailer {
    pub async fn send(&self, to: &str, mail: &RenderedEmail) -> anyhow::Result<()> {
        match self {
            Mailer::Smtp(m) => m.send(to, mail).await,
            Mailer::Dev(_) => Ok(()),
        }
    }

    pub fn is_dev(&self) -> bool {
        matches!(self, Mailer::Dev(_))
    }
}

/// SMTP configured by one URL: `smtp://host:25`, `smtp://user:pass@host:587?tls=required`
/// (STARTTLS), `smtps://user:pass@host:465` (implicit TLS).
pub struct SmtpMailer {
    transport: Transport,
    from: Mailbox,
}

enum Transport {
    /// `smtp://`: our pooled no-delay client (see `smtp_client.rs`).
    NoDelay(SmtpClient),
    /// `smtps://`: lettre's pooled transport.
    Lettre(AsyncSmtpTransport<Tokio1Executor>),
}

impl SmtpMailer {
    pub fn new(url: &str, from: Mailbox, timeout: Duration) -> anyhow::Result<Self> {
        let transport = match SmtpClient::from_url(url, timeout)? {
            Some(client) => Transport::NoDelay(client),
            None => Transport::Lettre(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .context("`smtp_url`: lettre could not use it (expected smtp:// or smtps://, optional user:password@, ?tls=required for STARTTLS)")?
                    .timeout(Some(timeout))
                    .build(),
            ),
        };
        Ok(Self { transport, from })
    }

    async fn send(&self, to: &str, mail: &RenderedEmail) -> anyhow::Result<()> {
        let to: Mailbox = to.parse().context("recipient address")?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&mail.subject)
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(mail.text.clone()),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(mail.html.clone()),
                    ),
            )
            .context("building the message")?;
        match &self.transport {
            Transport::NoDelay(client) => {
                client.send(message.envelope(), &message.formatted()).await
            }
            Transport::Lettre(transport) => {
                transport.send(message).await.map_err(explain_smtp_error)?;
                Ok(())
            }
        }
    }
}

/// Rewrites transport errors into advice an operator can act on (the recipient is never included).
pub(super) fn explain_smtp_error(e: lettre::transport::smtp::Error) -> anyhow::Error {
    let hint = if e.is_permanent() {
        "the SMTP server refused the message permanently (check mail_from is allowed to send, and credentials)"
    } else if e.is_transient() {
        "the SMTP server deferred the message; it will be retried"
    } else if e.is_timeout() {
        "the SMTP server did not answer in time; check smtp_url host and port"
    } else if e.is_tls() {
        "TLS with the SMTP server failed; check smtps:// vs ?tls=required and the server certificate"
    } else {
        "could not talk to the SMTP server; check smtp_url host, port and that it is running"
    };
    // The server's reply text can quote the recipient, so only its status code is kept.
    match e.status() {
        Some(code) => anyhow::anyhow!("{hint} (SMTP {code})"),
        None => anyhow::anyhow!("{hint}"),
    }
}

/// Development transport: nothing leaves the machine. The worker logs the code (dev mode only)
/// and the `/dev/outbox` page lists the messages. Never built outside dev mode.
pub struct DevTransport;
