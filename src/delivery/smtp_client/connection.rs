//! One SMTP connection: the socket (plain or TLS), replies read line by line, EHLO, STARTTLS,
//! AUTH, and the idle check. Formatting and parsing are lettre's; the bytes are ours.

use std::fmt::Display;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::FutureExt;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::commands::{Auth, Ehlo, Quit, Starttls};
use lettre::transport::smtp::extension::{ClientId, Extension, ServerInfo};
use lettre::transport::smtp::response::{Response, Severity};
use rustls::pki_types::ServerName;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::SmtpError;

/// A reply line longer than this is refused (RFC 5321 allows 512 octets).
const MAX_REPLY_LINE: u64 = 4096;
/// A reply (all its lines) longer than this is refused.
const MAX_REPLY: usize = 64 * 1024;
/// Rounds of an AUTH challenge at the most.
const MAX_AUTH_CHALLENGES: usize = 10;

/// Plain TCP, or TLS over it.
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// One SMTP connection after its greeting.
pub(super) struct Connection {
    io: BufReader<Stream>,
    encrypted: bool,
    /// What the last EHLO answer offered.
    info: Option<ServerInfo>,
    pub(super) pipelining: bool,
    pub(super) idle_since: Instant,
}

impl Connection {
    pub(super) fn new(stream: Stream) -> Self {
        Self {
            encrypted: matches!(stream, Stream::Tls(_)),
            io: BufReader::new(stream),
            info: None,
            pipelining: false,
            idle_since: Instant::now(),
        }
    }

    pub(super) fn offers(&self, extension: Extension) -> bool {
        self.info
            .as_ref()
            .is_some_and(|i| i.supports_feature(extension))
    }

    pub(super) async fn write(&mut self, bytes: &[u8]) -> Result<(), SmtpError> {
        let stream = self.io.get_mut();
        stream.write_all(bytes).await?;
        stream.flush().await?;
        Ok(())
    }

    /// Reads one reply, all its lines, whatever its code.
    pub(super) async fn reply(&mut self) -> Result<Response, SmtpError> {
        let mut text = String::new();
        loop {
            let start = text.len();
            let n = (&mut self.io)
                .take(MAX_REPLY_LINE)
                .read_line(&mut text)
                .await
                .map_err(|e| match e.kind() {
                    io::ErrorKind::InvalidData => SmtpError::Protocol("not UTF-8".into()),
                    _ => e.into(),
                })?;
            let line = &text[start..];
            if n == 0 {
                return Err(SmtpError::Closed);
            }
            if !line.ends_with('\n') || text.len() > MAX_REPLY {
                return Err(SmtpError::Protocol("reply too long".into()));
            }
            // "250-…" continues the reply, "250 …" (or a bare "250") ends it.
            if line.as_bytes().get(3) != Some(&b'-') {
                return text
                    .parse::<Response>()
                    .map_err(|_| SmtpError::Protocol("malformed reply".into()));
            }
        }
    }

    /// Reads one reply; a negative one is an error, and `421` (the server is closing the
    /// connection, RFC 5321 §3.8) counts as the connection closing.
    pub(super) async fn expect_reply(&mut self) -> Result<Response, SmtpError> {
        let response = self.reply().await?;
        if response.has_code(421) {
            return Err(SmtpError::Closed);
        }
        let code = response.code();
        match code.severity {
            Severity::PositiveCompletion | Severity::PositiveIntermediate => Ok(response),
            Severity::TransientNegativeCompletion => Err(SmtpError::Refused {
                code: code.to_string(),
                permanent: false,
            }),
            Severity::PermanentNegativeCompletion => Err(SmtpError::Refused {
                code: code.to_string(),
                permanent: true,
            }),
        }
    }

    pub(super) async fn command(&mut self, command: impl Display) -> Result<Response, SmtpError> {
        self.write(command.to_string().as_bytes()).await?;
        self.expect_reply().await
    }

    /// EHLO, remembering what the server offers. lettre does not record PIPELINING, so it is
    /// read from the answer here.
    pub(super) async fn ehlo(&mut self, hello: &ClientId) -> Result<(), SmtpError> {
        let response = self.command(Ehlo::new(hello.clone())).await?;
        self.pipelining = response
            .message()
            .any(|line| line.split_whitespace().next() == Some("PIPELINING"));
        self.info = Some(
            ServerInfo::from_response(&response)
                .map_err(|_| SmtpError::Protocol("malformed EHLO answer".into()))?,
        );
        Ok(())
    }

    /// STARTTLS: the handshake starts only if the server sent nothing after its `220`, and all
    /// that was learnt before it is forgotten (the caller sends EHLO again, RFC 3207 §4.2).
    pub(super) async fn starttls(
        mut self,
        connector: &TlsConnector,
        name: ServerName<'static>,
    ) -> Result<Connection, SmtpError> {
        self.command(Starttls).await?;
        // The reply was read line by line, so anything still buffered came after it.
        if !self.io.buffer().is_empty() {
            return Err(SmtpError::InjectedBeforeTls);
        }
        let Stream::Plain(tcp) = self.io.into_inner() else {
            return Err(SmtpError::Protocol(
                "STARTTLS on an encrypted connection".into(),
            ));
        };
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| SmtpError::Tls(e.to_string()))?;
        Ok(Connection::new(Stream::Tls(Box::new(tls))))
    }

    pub(super) async fn auth(&mut self, credentials: &Credentials) -> Result<(), SmtpError> {
        if !self.encrypted {
            return Err(SmtpError::AuthNeedsTls);
        }
        let mechanism = self
            .info
            .as_ref()
            .and_then(|i| i.get_auth_mechanism(&[Mechanism::Plain, Mechanism::Login]))
            .ok_or(SmtpError::NoAuthMechanism)?;
        let malformed = |_| SmtpError::Protocol("unexpected AUTH challenge".into());
        let mut response = self
            .command(Auth::new(mechanism, credentials.clone(), None).map_err(malformed)?)
            .await?;
        for _ in 0..MAX_AUTH_CHALLENGES {
            if !response.has_code(334) {
                return Ok(());
            }
            let answer = Auth::new_from_response(mechanism, credentials.clone(), &response)
                .map_err(malformed)?;
            response = self.command(answer).await?;
        }
        Err(SmtpError::Protocol("too many AUTH challenges".into()))
    }

    /// Whether an idle connection can carry a message: nothing may be waiting to be read. An
    /// idle server only speaks when it is going away (EOF, a `421` notice, a TLS close), and a
    /// read that would wait means it is still there.
    pub(super) fn is_quiet(&mut self) -> bool {
        self.io.buffer().is_empty() && self.io.fill_buf().now_or_never().is_none()
    }

    /// Says goodbye without waiting for the answer; the connection closes when dropped.
    pub(super) async fn quit(mut self) {
        let _ = self
            .io
            .get_mut()
            .write_all(Quit.to_string().as_bytes())
            .await;
    }
}
