//! Mail transports: SMTP (messages built by lettre, sent by our client), and the development
//! transport that only logs.

use anyhow::Context;
use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::Message;

use super::message::RenderedEmail;
use super::smtp_client::SmtpClient;
use crate::config::SmtpSettings;

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

/// SMTP as configured by `smtp_url` and its companions (see [`SmtpClient`]).
pub struct SmtpMailer {
    client: SmtpClient,
    from: Mailbox,
}

impl SmtpMailer {
    pub fn new(settings: SmtpSettings, from: Mailbox) -> anyhow::Result<Self> {
        Ok(Self {
            client: SmtpClient::new(settings)?,
            from,
        })
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
        self.client
            .send(message.envelope(), &message.formatted())
            .await?;
        Ok(())
    }
}

/// Development transport: nothing leaves the machine. The worker logs the code (dev mode only)
/// and the `/dev/outbox` page lists the messages. Never built outside dev mode.
pub struct DevTransport;
