//! SMTP client for `smtp://` URLs (plain or STARTTLS): lettre's protocol code over our own TCP
//! sockets with `TCP_NODELAY`, kept in a small pool.
//!
//! Why not lettre's pooled transport: it leaves Nagle's algorithm on, and lettre writes the
//! message body and the final `.` in two writes, so every message waited for the server's delayed
//! ACK (≈ 40 ms on Linux) before the `.` left. With `TCP_NODELAY` a message is on the wire at once.
//! `smtps://` (implicit TLS) still uses lettre's transport.
//!
//! Where the server offers PIPELINING (RFC 2920, which every common MTA does), a message is
//! two round trips instead of four: MAIL, RCPT and DATA in one write, then the body with its
//! final `.` in one write. lettre does not record the PIPELINING keyword, so the connection
//! asks EHLO once more itself (before AUTH) and reads it from the answer.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
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
    idle: Mutex<Vec<Connection>>,
}

/// A connection and whether its server accepts pipelined commands.
struct Connection {
    conn: AsyncSmtpConnection,
    pipelining: bool,
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

    async fn connect(&self) -> anyhow::Result<Connection> {
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
        let hello = conn
            .command(Ehlo::new(self.hello.clone()))
            .await
            .map_err(explain_smtp_error)?;
        let pipelining = hello
            .message()
            .any(|line| line.split_whitespace().next() == Some("PIPELINING"));
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(explain_smtp_error)?;
        }
        Ok(Connection { conn, pipelining })
    }

    /// Sends one message. A pooled connection that turns out to be dead is replaced once.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> anyhow::Result<()> {
        let pooled = self.idle.lock().expect("pool lock").pop();
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect().await?,
        };
        let result = match transaction(&mut conn, envelope, message).await {
            Err(_) if reused => {
                conn.conn.abort().await;
                conn = self.connect().await?;
                transaction(&mut conn, envelope, message).await
            }
            other => other,
        };
        match result {
            Ok(()) if !conn.conn.has_broken() => {
                let mut idle = self.idle.lock().expect("pool lock");
                if idle.len() < MAX_IDLE {
                    idle.push(conn);
                }
                Ok(())
            }
            Ok(()) => Ok(()),
            Err(e) => {
                conn.conn.abort().await;
                Err(explain_smtp_error(e))
            }
        }
    }
}

/// One mail transaction: pipelined where the server allows it, else lettre's step by step.
async fn transaction(
    c: &mut Connection,
    envelope: &Envelope,
    message: &[u8],
) -> Result<(), lettre::transport::smtp::Error> {
    let pipelined = match (c.pipelining, envelope.from()) {
        (true, Some(from)) => {
            mail_parameters(&c.conn, from, envelope, message).map(|parameters| (from, parameters))
        }
        _ => None,
    };
    let body = pipelined
        .as_ref()
        .and_then(|_| String::from_utf8(stuffed(message)).ok());
    let (Some((from, parameters)), Some(body)) = (pipelined, body) else {
        return c.conn.send(envelope, message).await.map(|_| ());
    };
    let conn = &mut c.conn;
    let mut commands = Mail::new(Some(from.clone()), parameters).to_string();
    for to in envelope.to() {
        commands.push_str(&Rcpt::new(to.clone(), vec![]).to_string());
    }
    commands.push_str(&Data.to_string());
    // Every reply is read (MAIL, each RCPT, DATA) before the first refusal is reported; the
    // caller then drops the connection, so nothing is left out of step.
    let mut outcome = conn.command(commands).await.map(|_| ());
    for _ in 0..envelope.to().len() + 1 {
        let reply = conn.read_response().await.map(|_| ());
        if outcome.is_ok() {
            outcome = reply;
        }
    }
    outcome?;
    conn.command(body).await.map(|_| ())
}

/// The MAIL parameters lettre would use, or `None` when the server lacks what the message
/// needs (lettre's own send then refuses with its message).
fn mail_parameters(
    conn: &AsyncSmtpConnection,
    from: &lettre::Address,
    envelope: &Envelope,
    message: &[u8],
) -> Option<Vec<MailParameter>> {
    let supports = |e| conn.server_info().supports_feature(e);
    let mut parameters = Vec::new();
    let non_ascii_address = std::iter::once(from)
        .chain(envelope.to())
        .any(|a: &lettre::Address| !AsRef::<str>::as_ref(a).is_ascii());
    if non_ascii_address {
        supports(Extension::SmtpUtfEight).then_some(())?;
        parameters.push(MailParameter::SmtpUtfEight);
    }
    if !message.is_ascii() {
        supports(Extension::EightBitMime).then_some(())?;
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    Some(parameters)
}

/// The message with SMTP's transparency (a line starting with `.` gets another, RFC 5321
/// 4.5.2) and the final `CRLF . CRLF`, as lettre writes it.
fn stuffed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut line_start = true;
    for &b in message {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n' && out.len() >= 2 && out[out.len() - 2] == b'\r';
    }
    out.extend_from_slice(b"\r\n.\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    /// What the loopback SMTP server saw.
    #[derive(Default)]
    struct Seen {
        /// Whether RCPT and DATA were already waiting when MAIL was read (pipelined).
        pipelined: Vec<bool>,
        /// Message bodies after undoing the transparency.
        messages: Vec<String>,
        connections: usize,
    }

    /// A real SMTP server on loopback that offers PIPELINING and refuses recipients whose
    /// address contains "refuse".
    async fn server() -> (u16, Arc<std::sync::Mutex<Seen>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
        let shared = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.lock().unwrap().connections += 1;
                let seen = shared.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    write.write_all(b"220 test ESMTP\r\n").await.unwrap();
                    let (mut line, mut accepted) = (String::new(), 0);
                    loop {
                        line.clear();
                        if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let reply: &[u8] = if line.starts_with("EHLO") {
                            b"250-test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
                        } else if line.starts_with("MAIL") {
                            accepted = 0;
                            let waiting = String::from_utf8_lossy(read.buffer()).to_string();
                            seen.lock()
                                .unwrap()
                                .pipelined
                                .push(waiting.contains("RCPT") && waiting.contains("DATA"));
                            b"250 ok\r\n"
                        } else if line.starts_with("RCPT") && line.contains("refuse") {
                            b"550 no such user\r\n"
                        } else if line.starts_with("RCPT") {
                            accepted += 1;
                            b"250 ok\r\n"
                        } else if line.starts_with("DATA") && accepted == 0 {
                            b"554 no valid recipients\r\n"
                        } else if line.starts_with("DATA") {
                            write.write_all(b"354 go ahead\r\n").await.unwrap();
                            let mut body = String::new();
                            loop {
                                line.clear();
                                read.read_line(&mut line).await.unwrap();
                                if line == ".\r\n" {
                                    break;
                                }
                                body.push_str(line.strip_prefix('.').unwrap_or(&line));
                            }
                            seen.lock().unwrap().messages.push(body);
                            b"250 queued\r\n"
                        } else if line.starts_with("QUIT") {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        } else {
                            b"250 ok\r\n"
                        };
                        if write.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (port, seen)
    }

    fn envelope(to: &str) -> Envelope {
        Envelope::new(
            Some("codes@example.com".parse().unwrap()),
            vec![to.parse().unwrap()],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_server_offering_pipelining_gets_mail_rcpt_and_data_at_once_and_the_body_intact() {
        let (port, seen) = server().await;
        let client =
            SmtpClient::from_url(&format!("smtp://127.0.0.1:{port}"), Duration::from_secs(5))
                .unwrap()
                .unwrap();
        let message = b"Subject: 123456\r\n\r\n.a line with a leading dot\r\n..two\r\nend\r\n";
        for _ in 0..3 {
            client
                .send(&envelope("someone@example.com"), message)
                .await
                .unwrap();
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.pipelined, vec![true, true, true]);
        assert_eq!(
            seen.connections, 1,
            "the connection is kept for the next message"
        );
        let expected = format!("{}\r\n", String::from_utf8_lossy(message));
        assert!(
            seen.messages.iter().all(|m| *m == expected),
            "{:?}",
            seen.messages
        );
    }

    #[tokio::test]
    async fn a_refused_recipient_in_a_pipelined_transaction_is_an_error_and_the_next_message_still_goes(
    ) {
        let (port, seen) = server().await;
        let client =
            SmtpClient::from_url(&format!("smtp://127.0.0.1:{port}"), Duration::from_secs(5))
                .unwrap()
                .unwrap();
        let refused = client
            .send(&envelope("refuse@example.com"), b"Subject: 1\r\n\r\nx\r\n")
            .await;
        assert!(refused.is_err());
        client
            .send(&envelope("ok@example.com"), b"Subject: 2\r\n\r\ny\r\n")
            .await
            .unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.messages,
            vec!["Subject: 2\r\n\r\ny\r\n\r\n".to_string()]
        );
        assert_eq!(
            seen.connections, 2,
            "the connection of the refused message was dropped"
        );
    }

    #[test]
    fn lines_starting_with_a_dot_are_doubled_and_the_message_is_terminated() {
        assert_eq!(
            stuffed(b".first\r\nmiddle.\r\n.\r\n..two\r\nlast"),
            b"..first\r\nmiddle.\r\n..\r\n...two\r\nlast\r\n.\r\n".to_vec()
        );
        // A bare LF does not start a line (as in lettre's codec).
        assert_eq!(stuffed(b"a\n.b"), b"a\n.b\r\n.\r\n".to_vec());
    }
}
