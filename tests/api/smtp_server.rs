//! TLS for the SMTP tests: a test CA (rcgen) whose certificate for 127.0.0.1 the servers present,
//! and [`ScriptedSmtp`], an SMTP server on loopback that speaks TLS (implicit or STARTTLS) and
//! AUTH, and can misbehave the ways a man in the middle or a flaky server does. It records
//! every command with whether it came over TLS, so a test can say exactly what reached it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::Engine;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::helpers::{until, TestApp};

/// A CA made for one test, and a certificate it signed for `127.0.0.1` and `localhost`.
pub struct TestCa {
    pub ca_pem: String,
    leaf_der: CertificateDer<'static>,
    leaf_pem: String,
    leaf_key_der: Vec<u8>,
    leaf_key_pem: String,
    dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "Latchkey test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        Self {
            ca_pem: ca_cert.pem(),
            leaf_der: leaf.der().clone(),
            leaf_pem: leaf.pem(),
            leaf_key_der: leaf_key.serialize_der(),
            leaf_key_pem: leaf_key.serialize_pem(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The CA certificate as a file, for `smtp_ca_file`.
    pub fn ca_file(&self) -> PathBuf {
        self.write("ca.pem", &self.ca_pem)
    }

    /// The server's certificate and key as PEM files (mailin-embedded reads files).
    pub fn leaf_files(&self) -> (PathBuf, PathBuf) {
        (
            self.write("server.pem", &self.leaf_pem),
            self.write("server.key", &self.leaf_key_pem),
        )
    }

    /// A file holding `text` (for `smtp_password_file`).
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn acceptor(&self) -> TlsAcceptor {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![self.leaf_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key_der.clone())),
        )
        .unwrap();
        TlsAcceptor::from(Arc::new(config))
    }
}

/// How a [`ScriptedSmtp`] behaves. The default is a plain server offering PIPELINING.
#[derive(Clone, Default)]
pub struct Script {
    /// TLS from the first byte (`smtps://`).
    pub implicit_tls: bool,
    /// STARTTLS in the EHLO answer of a plain connection.
    pub offer_starttls: bool,
    /// AUTH PLAIN is offered (over TLS) and required before MAIL, with these credentials.
    pub credentials: Option<(String, String)>,
    /// AUTH is offered on a plain connection too, as a man in the middle would.
    pub offer_auth_in_clear: bool,
    /// The STARTTLS reply and an injected line go out in one write.
    pub inject_after_starttls: bool,
    pub pipelining: bool,
    /// The n-th message (from 1) is read to its final `.`, then the connection is closed
    /// without an answer.
    pub lose_final_reply_of: Option<usize>,
    /// After each message's answer the server says `421` and closes the connection.
    pub leave_after_each_message: bool,
}

/// What a [`ScriptedSmtp`] received.
#[derive(Default, Debug)]
pub struct Received {
    /// Each command's verb (`EHLO`, `AUTH`, `MAIL`…) and whether it came over TLS.
    pub commands: Vec<(String, bool)>,
    /// The credentials of every AUTH (`user:password`) and whether it came over TLS.
    pub auth: Vec<(String, bool)>,
    /// Message bodies, after undoing the transparency.
    pub messages: Vec<String>,
    pub connections: usize,
    /// Connections the server is done with (it closed them, or the client went away).
    pub ended: usize,
}

impl Received {
    pub fn verbs(&self) -> Vec<&str> {
        self.commands.iter().map(|(v, _)| v.as_str()).collect()
    }
}

#[derive(Clone)]
pub struct ScriptedSmtp {
    pub port: u16,
    received: Arc<Mutex<Received>>,
}

impl ScriptedSmtp {
    pub async fn start(ca: &TestCa, script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Received::default()));
        let (shared, acceptor, script) = (received.clone(), ca.acceptor(), Arc::new(script));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                shared.lock().unwrap().connections += 1;
                let session = Session {
                    received: shared.clone(),
                    script: script.clone(),
                    acceptor: acceptor.clone(),
                };
                let received = shared.clone();
                tokio::spawn(async move {
                    session.run(tcp).await;
                    received.lock().unwrap().ended += 1;
                });
            }
        });
        Self { port, received }
    }

    pub fn received(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received.lock().unwrap()
    }

    /// Waits until `n` messages have arrived.
    pub async fn wait_for_messages(&self, n: usize) {
        until(
            &format!("{n} messages reach the scripted SMTP server"),
            || async { self.received().messages.len() >= n },
        )
        .await;
    }
}

struct Session {
    received: Arc<Mutex<Received>>,
    script: Arc<Script>,
    acceptor: TlsAcceptor,
}

/// What a part of a session ended with.
enum Next {
    StartTls,
    Close,
}

impl Session {
    async fn run(self, tcp: TcpStream) {
        if self.script.implicit_tls {
            let Ok(tls) = self.acceptor.accept(tcp).await else {
                return;
            };
            let mut io = BufReader::new(tls);
            if send(&mut io, b"220 smtp.test ESMTP\r\n").await {
                self.dialogue(&mut io, true).await;
            }
            return;
        }
        let mut io = BufReader::new(tcp);
        if !send(&mut io, b"220 smtp.test ESMTP\r\n").await {
            return;
        }
        if let Next::StartTls = self.dialogue(&mut io, false).await {
            // Anything the client sent before the handshake stays in `io` and is dropped.
            let Ok(tls) = self.acceptor.accept(io.into_inner()).await else {
                return;
            };
            self.dialogue(&mut BufReader::new(tls), true).await;
        }
    }

    async fn dialogue<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: &mut BufReader<S>,
        tls: bool,
    ) -> Next {
        let script = &*self.script;
        let mut authenticated = false;
        let mut line = String::new();
        loop {
            line.clear();
            if io.read_line(&mut line).await.unwrap_or(0) == 0 {
                return Next::Close;
            }
            let verb = line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            self.received
                .lock()
                .unwrap()
                .commands
                .push((verb.clone(), tls));
            let reply: String = match verb.as_str() {
                "EHLO" => {
                    let mut lines = vec!["smtp.test".to_string(), "8BITMIME".to_string()];
                    if script.pipelining {
                        lines.push("PIPELINING".into());
                    }
                    if script.offer_starttls && !tls {
                        lines.push("STARTTLS".into());
                    }
                    if script.credentials.is_some() && (tls || script.offer_auth_in_clear) {
                        lines.push("AUTH PLAIN".into());
                    }
                    let last = lines.len() - 1;
                    lines
                        .iter()
                        .enumerate()
                        .map(|(i, l)| format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }))
                        .collect()
                }
                "STARTTLS" if script.offer_starttls && !tls => {
                    let mut reply = b"220 ready to start TLS\r\n".to_vec();
                    if script.inject_after_starttls {
                        reply.extend_from_slice(b"250 injected before TLS\r\n");
                    }
                    if !send(io, &reply).await {
                        return Next::Close;
                    }
                    return Next::StartTls;
                }
                "AUTH" => {
                    let given = line
                        .split_whitespace()
                        .nth(2)
                        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                        .map(|raw| {
                            let parts: Vec<String> = raw
                                .split(|&b| b == 0)
                                .map(|p| String::from_utf8_lossy(p).into_owned())
                                .collect();
                            parts[1..].join(":")
                        })
                        .unwrap_or_default();
                    self.received
                        .lock()
                        .unwrap()
                        .auth
                        .push((given.clone(), tls));
                    let expected = script.credentials.as_ref().map(|(u, p)| format!("{u}:{p}"));
                    if expected.as_deref() == Some(given.as_str()) {
                        authenticated = true;
                        "235 2.7.0 authenticated\r\n".into()
                    } else {
                        "535 5.7.8 bad credentials\r\n".into()
                    }
                }
                "MAIL" if script.credentials.is_some() && !authenticated => {
                    "530 5.7.0 authentication required\r\n".into()
                }
                "MAIL" | "RCPT" | "NOOP" | "RSET" => "250 ok\r\n".into(),
                "DATA" => {
                    if !send(io, b"354 go ahead\r\n").await {
                        return Next::Close;
                    }
                    let mut body = String::new();
                    loop {
                        line.clear();
                        if io.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return Next::Close;
                        }
                        if line == ".\r\n" {
                            break;
                        }
                        body.push_str(line.strip_prefix('.').unwrap_or(&line));
                    }
                    let n = {
                        let mut received = self.received.lock().unwrap();
                        received.messages.push(body);
                        received.messages.len()
                    };
                    if script.lose_final_reply_of == Some(n) {
                        return Next::Close;
                    }
                    if script.leave_after_each_message {
                        send(io, b"250 queued\r\n").await;
                        send(io, b"421 4.4.2 smtp.test closing the connection\r\n").await;
                        let _ = io.shutdown().await;
                        return Next::Close;
                    }
                    "250 queued\r\n".into()
                }
                "QUIT" => {
                    send(io, b"221 bye\r\n").await;
                    return Next::Close;
                }
                _ => "502 5.5.2 not implemented\r\n".into(),
            };
            if !send(io, reply.as_bytes()).await {
                return Next::Close;
            }
        }
    }
}

/// Writes and flushes (TLS needs the flush); false when the connection is gone.
async fn send<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8]) -> bool {
    io.write_all(bytes).await.is_ok() && io.flush().await.is_ok()
}

/// Waits until the app has tried to send its first queued message: sent it, or recorded why
/// not.
pub async fn wait_for_a_try(app: &TestApp) {
    until("a delivery try is recorded", || async {
        app.count("SELECT COUNT(*) FROM outbox WHERE status = 'sent' OR last_error IS NOT NULL")
            .await
            > 0
    })
    .await;
}

/// The error the outbox recorded (for the one message that has one).
pub async fn last_error(app: &TestApp) -> String {
    let db = app.db().await;
    let error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM outbox WHERE last_error IS NOT NULL")
            .fetch_optional(&db)
            .await
            .unwrap();
    db.close().await;
    error.unwrap_or_default()
}
