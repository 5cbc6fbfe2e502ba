//! The SMTP client: our own connections (`TCP_NODELAY`, TLS through rustls), lettre's commands
//! and reply parser, a bounded pool. What it guarantees, whatever the server or the path does:
//!
//! - **Credentials only over TLS.** AUTH is sent only on a connection that is encrypted (TLS from
//!   the start, or after STARTTLS) and whose certificate verified; otherwise the send stops
//!   before AUTH. (Start-up already refuses credentials without `smtps://` or `tls=required`.)
//! - **No downgrade.** With `tls=required`, a server that does not offer STARTTLS (or a man in
//!   the middle who deleted it from the EHLO answer) gets nothing after EHLO: no AUTH, no
//!   message. The message stays queued and is retried.
//! - **No plaintext across the upgrade.** Anything the server sent after its STARTTLS reply and
//!   before the handshake (a response injection, the CVE-2011-0411 class) is refused: the
//!   connection is dropped instead of reading those bytes as if they had come over TLS.
//! - **No silent resend.** Once the message's body has been written, a failure (the final reply
//!   lost, the connection dropped, a timeout) is reported as "may have been delivered" and is
//!   never retried on another connection within the same try; the outbox decides (a retry
//!   after its backoff, so at most a duplicate, never a loop). Only a pooled connection that
//!   breaks before the server could take anything is replaced at once.
//! - **Idle connections are checked.** A pooled connection is reused only if it has been idle
//!   less than `smtp_idle_timeout_secs` and nothing is waiting on it: an idle SMTP server says
//!   nothing unless it is leaving (EOF, a `421`, a TLS close), so anything to read means dead.
//! - **Bounded.** At most `smtp_max_connections` connections are open at once.
//!
//! Why our own connections rather than lettre's pooled transport (ARCHITECTURE.md has the
//! numbers): lettre leaves Nagle's algorithm on and writes a message's body and its final `.`
//! in two writes, so every message waited for the server's delayed ACK (≈ 40 ms on Linux);
//! lettre's STARTTLS keeps what it had buffered before the upgrade; it sends AUTH to any server
//! that advertises it, encrypted or not; and it does not pipeline. Where the server offers
//! PIPELINING (RFC 2920, every common MTA does), a message here is two round trips instead of
//! four: MAIL, RCPT and DATA in one write, then the body with its final `.` in one write.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

use crate::config::{SmtpSecurity, SmtpSettings};

mod connection;

use connection::{Connection, Stream};

/// Why a send failed, in words an operator can act on. Server reply texts are never kept (they
/// can quote the recipient); only their codes.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error(
        "could not connect to the SMTP server at {0}; check smtp_url and that it is running ({1})"
    )]
    Connect(String, io::ErrorKind),
    #[error("the connection to the SMTP server broke ({0})")]
    Broken(io::ErrorKind),
    #[error("the SMTP server closed the connection")]
    Closed,
    #[error("TLS with the SMTP server failed ({0}); check smtps:// vs ?tls=required, the host name and smtp_ca_file")]
    Tls(String),
    #[error("the SMTP server does not offer STARTTLS: nothing was sent (tls=required; a man in the middle can remove STARTTLS, so it is never skipped)")]
    NoStartTls,
    #[error("the SMTP server sent data after its STARTTLS reply, before TLS began: refused, nothing was sent (a response injection)")]
    InjectedBeforeTls,
    #[error("the SMTP server offers no authentication Latchkey supports (PLAIN or LOGIN) over TLS; check the server and smtp_url")]
    NoAuthMechanism,
    #[error("refusing to send credentials over an unencrypted connection")]
    AuthNeedsTls,
    #[error("{} (SMTP {code})", refusal_hint(*.permanent))]
    Refused { code: String, permanent: bool },
    #[error("the SMTP server's answer is not SMTP ({0})")]
    Protocol(String),
    #[error("the SMTP server took the message but its final answer never came ({0}); it may have been delivered")]
    Unconfirmed(Box<SmtpError>),
}

fn refusal_hint(permanent: bool) -> &'static str {
    if permanent {
        "the SMTP server refused permanently (check mail_from is allowed to send, and the credentials)"
    } else {
        "the SMTP server deferred the message"
    }
}

impl SmtpError {
    /// The connection itself failed (rather than the server answering no).
    fn is_broken_connection(&self) -> bool {
        matches!(self, Self::Broken(_) | Self::Closed)
    }
}

impl From<io::Error> for SmtpError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => Self::Closed,
            kind => Self::Broken(kind),
        }
    }
}

pub struct SmtpClient {
    settings: SmtpSettings,
    hello: ClientId,
    /// Built once; present when the settings use TLS.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    credentials: Option<Credentials>,
    /// One permit per connection: at most `smtp_max_connections` sends, so connections, at once.
    slots: Semaphore,
    /// Idle connections, the most recently used last.
    idle: Mutex<Vec<Connection>>,
}

impl SmtpClient {
    pub fn new(settings: SmtpSettings) -> anyhow::Result<Self> {
        let tls = match settings.security {
            SmtpSecurity::Plain => None,
            _ => Some((
                TlsConnector::from(Arc::new(tls_config(&settings.ca_certificates)?)),
                ServerName::try_from(settings.host.clone()).map_err(|_| {
                    anyhow::anyhow!(
                        "`smtp_url`: {:?} is not a host name TLS can check",
                        settings.host
                    )
                })?,
            )),
        };
        Ok(Self {
            hello: match &settings.hello_name {
                Some(name) => ClientId::Domain(name.clone()),
                None => ClientId::default(),
            },
            credentials: settings
                .credentials
                .as_ref()
                .map(|c| Credentials::new(c.user.clone(), c.password.clone())),
            slots: Semaphore::new(settings.max_connections),
            idle: Mutex::new(Vec::new()),
            tls,
            settings,
        })
    }

    /// Sends one message. `Err(SmtpError::Unconfirmed)`: the body went out but no final answer
    /// came back, so it may have been delivered.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<(), SmtpError> {
        let _slot = self.slots.acquire().await.expect("never closed");
        let pooled = self.checkout();
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect().await?,
        };
        let mut outcome = transaction(&mut conn, envelope, message).await;
        if reused {
            if let Err(Failed::NotTaken(e)) = &outcome {
                // It broke between the idle check and the first write; the server took nothing,
                // so a new connection carries the message.
                if e.is_broken_connection() {
                    conn = self.connect().await?;
                    outcome = transaction(&mut conn, envelope, message).await;
                }
            }
        }
        match outcome {
            Ok(()) => {
                self.checkin(conn);
                Ok(())
            }
            Err(Failed::NotTaken(e)) => {
                conn.quit().await;
                Err(e)
            }
            Err(Failed::Unconfirmed(e)) => Err(SmtpError::Unconfirmed(Box::new(e))),
        }
    }

    /// An idle connection that may carry a message, if there is one; the others are closed.
    fn checkout(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().expect("pool lock");
        let timeout = self.settings.idle_timeout;
        idle.retain(|c| c.idle_since.elapsed() < timeout);
        while let Some(mut conn) = idle.pop() {
            if conn.is_quiet() {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, mut conn: Connection) {
        if self.settings.idle_timeout.is_zero() {
            return;
        }
        conn.idle_since = Instant::now();
        self.idle.lock().expect("pool lock").push(conn);
    }

    async fn connect(&self) -> Result<Connection, SmtpError> {
        let address = format!("{}:{}", self.settings.host, self.settings.port);
        let tcp = TcpStream::connect((self.settings.host.as_str(), self.settings.port))
            .await
            .map_err(|e| SmtpError::Connect(address.clone(), e.kind()))?;
        tcp.set_nodelay(true)
            .map_err(|e| SmtpError::Connect(address, e.kind()))?;
        let mut conn = match (&self.tls, self.settings.security) {
            (Some((connector, name)), SmtpSecurity::ImplicitTls) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| SmtpError::Tls(e.to_string()))?;
                Connection::new(Stream::Tls(Box::new(tls)))
            }
            _ => Connection::new(Stream::Plain(tcp)),
        };
        conn.expect_reply().await?;
        conn.ehlo(&self.hello).await?;
        let starttls = match self.settings.security {
            SmtpSecurity::StartTlsRequired if !conn.offers(Extension::StartTls) => {
                return Err(SmtpError::NoStartTls)
            }
            SmtpSecurity::StartTlsRequired => true,
            SmtpSecurity::StartTlsOpportunistic => conn.offers(Extension::StartTls),
            SmtpSecurity::Plain | SmtpSecurity::ImplicitTls => false,
        };
        if starttls {
            let (connector, name) = self.tls.as_ref().expect("TLS settings build a connector");
            conn = conn.starttls(connector, name.clone()).await?;
            conn.ehlo(&self.hello).await?;
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(credentials).await?;
        }
        Ok(conn)
    }
}

/// Trusts the certificates of `smtp_ca_file` if there are any, else the public web PKI roots.
fn tls_config(ca_certificates: &[Vec<u8>]) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if ca_certificates.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for der in ca_certificates {
        roots.add(CertificateDer::from(der.clone())).map_err(|e| {
            anyhow::anyhow!("`smtp_ca_file`: not a CA certificate rustls accepts ({e})")
        })?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// How a mail transaction failed.
enum Failed {
    /// Before the body was written: the server cannot have taken the message.
    NotTaken(SmtpError),
    /// While or after the body was written, without a final answer: it may have been taken.
    Unconfirmed(SmtpError),
}

/// One mail transaction: MAIL, RCPT… and DATA pipelined where the server allows it (else one by
/// one), then the body with its final `.` in one write, and the final answer.
async fn transaction(
    c: &mut Connection,
    envelope: &Envelope,
    message: &[u8],
) -> Result<(), Failed> {
    let parameters = mail_parameters(c, envelope, message).map_err(Failed::NotTaken)?;
    let mail = Mail::new(envelope.from().cloned(), parameters);
    let recipients = envelope.to().iter().map(|to| Rcpt::new(to.clone(), vec![]));
    if c.pipelining {
        let mut commands = mail.to_string();
        for rcpt in recipients {
            commands.push_str(&rcpt.to_string());
        }
        commands.push_str(&Data.to_string());
        c.write(commands.as_bytes())
            .await
            .map_err(Failed::NotTaken)?;
        // Every reply (MAIL, each RCPT, DATA) is read before the first refusal is reported, so
        // the connection stays in step.
        let mut outcome = Ok(());
        for _ in 0..envelope.to().len() + 2 {
            match c.expect_reply().await {
                Ok(_) => {}
                Err(e) if e.is_broken_connection() => return Err(Failed::NotTaken(e)),
                Err(e) => outcome = outcome.and(Err(e)),
            }
        }
        outcome.map_err(Failed::NotTaken)?;
    } else {
        c.command(mail).await.map_err(Failed::NotTaken)?;
        for rcpt in recipients {
            c.command(rcpt).await.map_err(Failed::NotTaken)?;
        }
        c.command(Data).await.map_err(Failed::NotTaken)?;
    }
    c.write(&stuffed(message))
        .await
        .map_err(Failed::Unconfirmed)?;
    match c.expect_reply().await {
        Ok(_) => Ok(()),
        // The server answered: it did not take the message.
        Err(e @ SmtpError::Refused { .. }) => Err(Failed::NotTaken(e)),
        Err(e) => Err(Failed::Unconfirmed(e)),
    }
}

/// The MAIL parameters the message needs; an error when the server lacks them.
fn mail_parameters(
    c: &Connection,
    envelope: &Envelope,
    message: &[u8],
) -> Result<Vec<MailParameter>, SmtpError> {
    let mut parameters = Vec::new();
    let non_ascii_address = envelope
        .from()
        .into_iter()
        .chain(envelope.to())
        .any(|a: &lettre::Address| !AsRef::<str>::as_ref(a).is_ascii());
    if non_ascii_address {
        if !c.offers(Extension::SmtpUtfEight) {
            return Err(SmtpError::Protocol(
                "the server lacks SMTPUTF8, which a non-ASCII address needs".into(),
            ));
        }
        parameters.push(MailParameter::SmtpUtfEight);
    }
    if !message.is_ascii() {
        if !c.offers(Extension::EightBitMime) {
            return Err(SmtpError::Protocol(
                "the server lacks 8BITMIME, which the message needs".into(),
            ));
        }
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    Ok(parameters)
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
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
        /// Connections open at once, at the most.
        most_at_once: usize,
        /// AUTH commands received.
        auth: usize,
        /// Connections the server is done with.
        ended: usize,
    }

    /// A real SMTP server on loopback that offers PIPELINING (and AUTH, to anyone) and refuses
    /// recipients whose address contains "refuse". It answers each message after
    /// `answer_after` (so parallel sends overlap); with `leave`, it then says `421` and closes.
    async fn server(answer_after: Duration, leave: bool) -> (u16, Arc<Mutex<Seen>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let open = Arc::new(AtomicUsize::new(0));
        let shared = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
                {
                    let mut seen = shared.lock().unwrap();
                    seen.connections += 1;
                    seen.most_at_once = seen.most_at_once.max(now_open);
                }
                let (seen, open) = (shared.clone(), open.clone());
                tokio::spawn(async move {
                    serve(stream, &seen, answer_after, leave).await;
                    open.fetch_sub(1, Ordering::SeqCst);
                    seen.lock().unwrap().ended += 1;
                });
            }
        });
        (port, seen)
    }

    async fn serve(stream: TcpStream, seen: &Mutex<Seen>, answer_after: Duration, leave: bool) {
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
                b"250-test\r\n250-PIPELINING\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n"
            } else if line.starts_with("AUTH") {
                seen.lock().unwrap().auth += 1;
                b"235 ok\r\n"
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
                tokio::time::sleep(answer_after).await;
                if leave {
                    let _ = write.write_all(b"250 queued\r\n").await;
                    let _ = write.write_all(b"421 closing\r\n").await;
                    return;
                }
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
    }

    fn client(port: u16, customise: impl FnOnce(&mut SmtpSettings)) -> SmtpClient {
        let mut settings = SmtpSettings {
            host: "127.0.0.1".into(),
            port,
            security: SmtpSecurity::Plain,
            credentials: None,
            hello_name: None,
            ca_certificates: Vec::new(),
            max_connections: 16,
            idle_timeout: Duration::from_secs(30),
        };
        customise(&mut settings);
        SmtpClient::new(settings).unwrap()
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
        let (port, seen) = server(Duration::ZERO, false).await;
        let client = client(port, |_| {});
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
        let (port, seen) = server(Duration::ZERO, false).await;
        let client = client(port, |_| {});
        let refused = client
            .send(&envelope("refuse@example.com"), b"Subject: 1\r\n\r\nx\r\n")
            .await;
        assert!(
            matches!(
                refused,
                Err(SmtpError::Refused {
                    permanent: true,
                    ..
                })
            ),
            "{refused:?}"
        );
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

    #[tokio::test]
    async fn parallel_sends_never_open_more_than_smtp_max_connections() {
        let (port, seen) = server(Duration::from_millis(20), false).await;
        let client = client(port, |s| s.max_connections = 2);
        let sends = (0..10).map(|i| {
            let client = &client;
            async move {
                client
                    .send(
                        &envelope("someone@example.com"),
                        format!("Subject: {i}\r\n\r\nx\r\n").as_bytes(),
                    )
                    .await
            }
        });
        for result in futures_util::future::join_all(sends).await {
            result.unwrap();
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.messages.len(), 10);
        assert_eq!((seen.connections, seen.most_at_once), (2, 2));
    }

    #[tokio::test]
    async fn with_no_idle_time_every_message_gets_its_own_connection() {
        let (port, seen) = server(Duration::ZERO, false).await;
        let client = client(port, |s| s.idle_timeout = Duration::ZERO);
        for _ in 0..3 {
            client
                .send(&envelope("someone@example.com"), b"Subject: 1\r\n\r\nx\r\n")
                .await
                .unwrap();
        }
        assert_eq!(seen.lock().unwrap().connections, 3);
    }

    #[tokio::test]
    async fn a_pooled_connection_the_server_left_is_not_reused() {
        let (port, seen) = server(Duration::ZERO, true).await;
        let client = client(port, |_| {});
        let to = envelope("someone@example.com");
        client.send(&to, b"Subject: 1\r\n\r\nx\r\n").await.unwrap();
        for _ in 0..500 {
            if seen.lock().unwrap().ended == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            client.checkout().is_none(),
            "the connection that got a 421 is dropped"
        );
        client.send(&to, b"Subject: 2\r\n\r\ny\r\n").await.unwrap();
        assert_eq!(seen.lock().unwrap().connections, 2);
    }

    #[tokio::test]
    async fn credentials_are_never_sent_over_a_connection_without_tls() {
        // Start-up refuses such settings; the client refuses them again on the wire, even to a
        // server that offers AUTH in clear.
        let (port, seen) = server(Duration::ZERO, false).await;
        let client = client(port, |s| {
            s.credentials = Some(crate::config::SmtpCredentials {
                user: "latchkey".into(),
                password: "secret".into(),
            })
        });
        let result = client
            .send(&envelope("someone@example.com"), b"Subject: 1\r\n\r\nx\r\n")
            .await;
        assert!(matches!(result, Err(SmtpError::AuthNeedsTls)), "{result:?}");
        let seen = seen.lock().unwrap();
        assert_eq!((seen.auth, seen.messages.len()), (0, 0));
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
