//! A real HTTP server on loopback that speaks enough of Twilio's Messages API (or Latchkey's
//! signed SMS webhook) to receive the codes the server sends, and can be told to fail.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine;
use latchkey::config::{SmsProvider, TwilioSender};
use latchkey::delivery::{verify_webhook_signature, SIGNATURE_HEADER};
use serde_json::{json, Value};

use crate::helpers::{TestApp, GUARD};

/// How far the webhook receiver lets a signature's timestamp stray from its clock.
pub const WEBHOOK_TOLERANCE_SECS: i64 = 300;

/// One SMS as received.
#[derive(Debug, Clone)]
pub struct ReceivedSms {
    pub to: String,
    /// Twilio mode: the `From` field, if sent.
    pub from: Option<String>,
    /// Twilio mode: the `MessagingServiceSid` field, if sent.
    pub messaging_service_sid: Option<String>,
    pub body: String,
    /// Webhook mode: the whole JSON document.
    pub json: Option<Value>,
    /// Webhook mode: the `Latchkey-Signature` header.
    pub signature: Option<String>,
}

impl ReceivedSms {
    /// The 6-digit code at the start of the first line ("123456 is your … code.").
    pub fn code(&self) -> String {
        let first = self.body.lines().next().unwrap_or_default();
        let code: String = first.chars().take_while(|c| c.is_ascii_digit()).collect();
        assert_eq!(code.len(), 6, "no code at the start of {first:?}");
        code
    }
}

enum Mode {
    Twilio {
        account_sid: String,
        auth_token: String,
    },
    Webhook {
        secret: String,
    },
}

#[derive(Default)]
struct State {
    messages: Vec<ReceivedSms>,
    requests: usize,
    rejected: usize,
    failure: Option<u16>,
}

struct Shared {
    mode: Mode,
    state: Mutex<State>,
}

struct Running {
    port: u16,
    shared: Arc<Shared>,
    handle: ServerHandle,
}

impl Drop for Running {
    fn drop(&mut self) {
        // The stop command is sent at once; its completion future is not needed.
        drop(self.handle.stop(false));
    }
}

/// A loopback SMS provider. Clones share the server, which stops when the last one is dropped.
#[derive(Clone)]
pub struct TestSms(Arc<Running>);

pub const TEST_ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const TEST_AUTH_TOKEN: &str = "test-auth-token-9f8e7d6c5b4a";

impl TestSms {
    /// A Twilio-like server expecting [`TEST_ACCOUNT_SID`] and [`TEST_AUTH_TOKEN`].
    pub fn start() -> Self {
        Self::launch(Mode::Twilio {
            account_sid: TEST_ACCOUNT_SID.into(),
            auth_token: TEST_AUTH_TOKEN.into(),
        })
    }

    /// A webhook receiver at `POST /sms` that checks `Latchkey-Signature` under `secret`.
    pub fn start_webhook(secret: &str) -> Self {
        Self::launch(Mode::Webhook {
            secret: secret.into(),
        })
    }

    fn launch(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            mode,
            state: Mutex::default(),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let data = web::Data::from(shared.clone());
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(web::PayloadConfig::default().limit(64 * 1024))
                        .default_service(web::to(handle))
                })
                .workers(2)
                .disable_signals()
                .listen(listener)
                .expect("listen")
                .run();
                tx.send(server.handle()).unwrap();
                let _ = server.await;
            })
        });
        let handle = rx.recv_timeout(GUARD).expect("SMS server starts");
        Self(Arc::new(Running {
            port,
            shared,
            handle,
        }))
    }

    pub fn twilio_base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.0.port)
    }

    pub fn webhook_url(&self) -> String {
        format!("http://127.0.0.1:{}/sms", self.0.port)
    }

    pub fn account_sid(&self) -> String {
        match &self.0.shared.mode {
            Mode::Twilio { account_sid, .. } => account_sid.clone(),
            Mode::Webhook { .. } => panic!("a webhook receiver has no account"),
        }
    }

    pub fn auth_token(&self) -> String {
        match &self.0.shared.mode {
            Mode::Twilio { auth_token, .. } => auth_token.clone(),
            Mode::Webhook { .. } => panic!("a webhook receiver has no account"),
        }
    }

    /// A provider pointing here with the right credentials (Twilio: sending from +15005550006).
    pub fn provider(&self) -> SmsProvider {
        match &self.0.shared.mode {
            Mode::Twilio {
                account_sid,
                auth_token,
            } => SmsProvider::Twilio {
                base_url: self.twilio_base_url().parse().unwrap(),
                account_sid: account_sid.clone(),
                auth_token: auth_token.clone(),
                sender: TwilioSender::From("+15005550006".into()),
            },
            Mode::Webhook { secret } => SmsProvider::Webhook {
                url: self.webhook_url().parse().unwrap(),
                secret: secret.clone(),
            },
        }
    }

    /// From now on every request is answered with `status` (e.g. 503 "provider down", or 400
    /// with Twilio's 21211 "Invalid 'To' Phone Number"); `None` returns to normal.
    pub fn set_failure(&self, status: Option<u16>) {
        self.state().failure = status;
    }

    /// Every request received, answered or refused.
    pub fn request_count(&self) -> usize {
        self.state().requests
    }

    /// Requests refused for bad credentials or a bad signature.
    pub fn rejected_count(&self) -> usize {
        self.state().rejected
    }

    pub fn messages(&self) -> Vec<ReceivedSms> {
        self.state().messages.clone()
    }

    pub fn messages_to(&self, e164: &str) -> Vec<ReceivedSms> {
        self.messages()
            .into_iter()
            .filter(|m| m.to == e164)
            .collect()
    }

    /// Waits until `n` messages to `e164` have arrived (within [`GUARD`]); returns the n-th.
    pub async fn wait_for(&self, e164: &str, n: usize) -> ReceivedSms {
        let deadline = std::time::Instant::now() + GUARD;
        loop {
            let msgs = self.messages_to(e164);
            if msgs.len() >= n {
                return msgs[n - 1].clone();
            }
            if std::time::Instant::now() > deadline {
                panic!("{}", self.never_arrived(e164, n));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Like [`wait_for`](Self::wait_for), for a message whose delivery is retried: each poll
    /// moves `app`'s manual clock to the next queued retry ([`TestApp::make_retries_due`]).
    pub async fn wait_for_retried(&self, app: &TestApp, e164: &str, n: usize) -> ReceivedSms {
        let deadline = std::time::Instant::now() + GUARD;
        loop {
            let msgs = self.messages_to(e164);
            if msgs.len() >= n {
                return msgs[n - 1].clone();
            }
            if std::time::Instant::now() > deadline {
                panic!("{}", self.never_arrived(e164, n));
            }
            app.make_retries_due().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asserts that no more than `n` messages reach `e164` within a short grace period.
    pub async fn assert_count_stays(&self, e164: &str, n: usize) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            self.messages_to(e164).len(),
            n,
            "unexpected SMS count to {e164}; received: {:?}",
            self.messages().iter().map(|m| &m.to).collect::<Vec<_>>()
        );
    }

    fn never_arrived(&self, e164: &str, n: usize) -> String {
        let s = self.state();
        format!(
            "SMS {n} to {e164} never arrived; {} requests, {} rejected, received: {:?}",
            s.requests,
            s.rejected,
            s.messages.iter().map(|m| &m.to).collect::<Vec<_>>()
        )
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.shared.state.lock().unwrap()
    }
}

async fn handle(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let failure = {
        let mut state = shared.state.lock().unwrap();
        state.requests += 1;
        state.failure
    };
    match &shared.mode {
        Mode::Twilio {
            account_sid,
            auth_token,
        } => {
            if let Some(status) = failure {
                return twilio_failure(status);
            }
            twilio(&req, &body, &shared, account_sid, auth_token)
        }
        Mode::Webhook { secret } => {
            if let Some(status) = failure {
                return respond(status, json!({ "error": "test failure" }));
            }
            webhook(&req, &body, &shared, secret)
        }
    }
}

fn respond(status: u16, body: Value) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).json(body)
}

fn twilio_error(status: u16, code: u32, message: &str) -> HttpResponse {
    respond(
        status,
        json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status,
        }),
    )
}

fn twilio_failure(status: u16) -> HttpResponse {
    match status {
        400 => twilio_error(400, 21211, "Invalid 'To' Phone Number"),
        401 => twilio_error(401, 20003, "Authenticate"),
        429 => twilio_error(429, 20429, "Too Many Requests"),
        500..=599 => twilio_error(status, 20503, "Service Unavailable"),
        other => twilio_error(other, 20001, "Test failure"),
    }
}

fn twilio(
    req: &HttpRequest,
    body: &[u8],
    shared: &Shared,
    account_sid: &str,
    auth_token: &str,
) -> HttpResponse {
    let path = format!("/2010-04-01/Accounts/{account_sid}/Messages.json");
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .is_some_and(|creds| creds == format!("{account_sid}:{auth_token}").as_bytes());
    // Twilio checks credentials first, and a path for another account is an auth failure too.
    let other_account = req.path().starts_with("/2010-04-01/Accounts/") && req.path() != path;
    if !authorized || other_account {
        shared.state.lock().unwrap().rejected += 1;
        return twilio_error(401, 20003, "Authenticate");
    }
    if req.method() != actix_web::http::Method::POST || req.path() != path {
        return twilio_error(404, 20404, "The requested resource was not found");
    }
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return twilio_error(400, 20001, "Expected a form-encoded body");
    }
    let field = |name: &str| {
        url::form_urlencoded::parse(body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let (to, from, service, text) = (
        field("To"),
        field("From"),
        field("MessagingServiceSid"),
        field("Body"),
    );
    let Some(to) = to else {
        return twilio_error(400, 21604, "A 'To' phone number is required.");
    };
    let Some(text) = text else {
        return twilio_error(400, 21602, "Message body is required.");
    };
    if from.is_none() && service.is_none() {
        return twilio_error(400, 21603, "A 'From' phone number is required.");
    }
    let mut state = shared.state.lock().unwrap();
    let sid = format!("SM{:032x}", state.messages.len() + 1);
    state.messages.push(ReceivedSms {
        to: to.clone(),
        from: from.clone(),
        messaging_service_sid: service.clone(),
        body: text.clone(),
        json: None,
        signature: None,
    });
    respond(
        201,
        json!({
            "sid": sid,
            "account_sid": account_sid,
            "status": "queued",
            "to": to,
            "from": from,
            "messaging_service_sid": service,
            "body": text,
        }),
    )
}

fn webhook(req: &HttpRequest, body: &[u8], shared: &Shared, secret: &str) -> HttpResponse {
    if req.method() != actix_web::http::Method::POST || req.path() != "/sms" {
        return respond(404, json!({ "error": "not found" }));
    }
    let signature = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if !verify_webhook_signature(secret, &signature, body, now, WEBHOOK_TOLERANCE_SECS) {
        shared.state.lock().unwrap().rejected += 1;
        return respond(401, json!({ "error": "bad signature" }));
    }
    let Ok(doc) = serde_json::from_slice::<Value>(body) else {
        return respond(400, json!({ "error": "not JSON" }));
    };
    let text = |k: &str| doc.get(k).and_then(Value::as_str).map(String::from);
    let (Some(to), Some(text_body)) = (text("to"), text("body")) else {
        return respond(400, json!({ "error": "`to` and `body` are required" }));
    };
    shared.state.lock().unwrap().messages.push(ReceivedSms {
        to,
        from: None,
        messaging_service_sid: None,
        body: text_body,
        json: Some(doc),
        signature: Some(signature),
    });
    respond(200, json!({ "ok": true }))
}
