//! Test harness: the real application on port 0 with a fresh SQLite file, a real SMTP server on
//! loopback, a manual clock, and a browser-like client (cookie store, no auto-redirect, forms
//! parsed from the HTML with their hidden fields).

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use latchkey::clock::{Clock, ManualClock};
use latchkey::config::{RawConfig, Settings};
use latchkey::startup::Application;
use reqwest::{Response, StatusCode};
use scraper::{Html, Selector};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------------
// Waiting

/// How long a test waits for something that must happen before it calls it a hang. A guard only:
/// tests wait for the condition itself, never for an amount of time, so a slow or busy machine
/// makes them slower, not red.
pub const GUARD: Duration = Duration::from_secs(60);

/// Polls `check` (every 20 ms of real time) until it returns `Some`, and returns that; panics
/// naming `what` if [`GUARD`] passes first.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + GUARD;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        if Instant::now() > deadline {
            panic!("{what}: still not the case after {GUARD:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like [`eventually`] for a yes/no condition.
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(what, || {
        let done = check();
        async move { done.await.then_some(()) }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// SMTP

/// One message as received over SMTP.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub to: Vec<String>,
    pub data: String,
}

impl ReceivedMail {
    pub fn subject(&self) -> String {
        self.data
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or_default()
            .to_string()
    }

    /// The code, read from the first line of the text part ("123456 is your Acme verification
    /// code."); the subject does not carry it by default.
    pub fn code(&self) -> String {
        let code = self.code_of_length(6);
        assert!(
            !self.subject().contains(&code),
            "the code stays out of the subject by default: {:?}",
            self.subject()
        );
        code
    }

    /// The code of `len` digits at the start of a body line.
    pub fn code_of_length(&self, len: usize) -> String {
        self.data
            .lines()
            .find_map(|l| {
                let digits: String = l.chars().take_while(|c| c.is_ascii_digit()).collect();
                (digits.len() == len && l[len..].starts_with(" is your ")).then_some(digits)
            })
            .unwrap_or_else(|| panic!("no {len}-digit code in the mail: {}", self.data))
    }
}

#[derive(Clone, Default)]
struct Collector {
    messages: Arc<Mutex<Vec<ReceivedMail>>>,
    current_to: Vec<String>,
    current: Vec<u8>,
    /// The user and password AUTH PLAIN accepts (mailin offers AUTH only over TLS).
    credentials: Option<(String, String)>,
    /// The users that authenticated.
    authenticated: Arc<Mutex<Vec<String>>>,
}

impl mailin_embedded::Handler for Collector {
    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        to: &[String],
    ) -> mailin_embedded::Response {
        self.current_to = to.to_vec();
        self.current.clear();
        mailin_embedded::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.extend_from_slice(buf);
        Ok(())
    }

    fn auth_plain(
        &mut self,
        _authorization_id: &str,
        user: &str,
        password: &str,
    ) -> mailin_embedded::Response {
        if self.credentials.as_ref() == Some(&(user.to_string(), password.to_string())) {
            self.authenticated.lock().unwrap().push(user.to_string());
            mailin_embedded::response::AUTH_OK
        } else {
            mailin_embedded::response::INVALID_CREDENTIALS
        }
    }

    fn data_end(&mut self) -> mailin_embedded::Response {
        let mail = ReceivedMail {
            to: std::mem::take(&mut self.current_to),
            data: String::from_utf8_lossy(&std::mem::take(&mut self.current)).into_owned(),
        };
        self.messages.lock().unwrap().push(mail);
        mailin_embedded::response::OK
    }
}

/// A real SMTP server (mailin-embedded) on a loopback port.
#[derive(Clone)]
pub struct TestSmtp {
    pub port: u16,
    messages: Arc<Mutex<Vec<ReceivedMail>>>,
    authenticated: Arc<Mutex<Vec<String>>>,
}

impl TestSmtp {
    /// Starts listening at once.
    pub fn start() -> Self {
        let smtp = Self::reserve();
        smtp.listen();
        smtp
    }

    /// Picks a free port but does not listen yet: the server is "down" until [`listen`](Self::listen).
    pub fn reserve() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self {
            port,
            messages: Arc::default(),
            authenticated: Arc::default(),
        }
    }

    pub fn listen(&self) {
        self.serve(None, None);
    }

    /// Starts a server that offers STARTTLS with the certificate `ca` signed for 127.0.0.1, and
    /// takes mail only after AUTH PLAIN with `user` and `password` (offered only over TLS).
    pub fn start_with_tls(ca: &crate::smtp_server::TestCa, user: &str, password: &str) -> Self {
        let smtp = Self::reserve();
        let (cert_path, key_path) = ca.leaf_files();
        smtp.serve(
            Some(mailin_embedded::SslConfig::SelfSigned {
                cert_path: cert_path.display().to_string(),
                key_path: key_path.display().to_string(),
            }),
            Some((user.to_string(), password.to_string())),
        );
        smtp
    }

    fn serve(
        &self,
        tls: Option<mailin_embedded::SslConfig>,
        credentials: Option<(String, String)>,
    ) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("SMTP port still free");
        let mut server = mailin_embedded::Server::new(Collector {
            messages: self.messages.clone(),
            authenticated: self.authenticated.clone(),
            credentials: credentials.clone(),
            ..Collector::default()
        });
        server
            .with_name("smtp.test")
            // Enough for the outbox worker's parallel sends (it pools its connections); each
            // test's server keeps its threads until the test binary exits, so not more.
            .with_num_threads(40)
            .with_tcp_listener(listener);
        if let Some(tls) = tls {
            // mailin builds its TLS settings with the process's default crypto provider.
            let _ = rustls::crypto::ring::default_provider().install_default();
            server.with_ssl(tls).expect("TLS settings");
        }
        if credentials.is_some() {
            server.with_auth(mailin_embedded::AuthMechanism::Plain);
        }
        std::thread::spawn(move || {
            let _ = server.serve();
        });
    }

    /// The users that authenticated, one entry per AUTH.
    pub fn authenticated(&self) -> Vec<String> {
        self.authenticated.lock().unwrap().clone()
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn all(&self) -> Vec<ReceivedMail> {
        self.messages.lock().unwrap().clone()
    }

    pub fn messages_to(&self, address: &str) -> Vec<ReceivedMail> {
        self.all()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(address)))
            .collect()
    }

    /// Waits until `n` messages to `address` have arrived (within [`GUARD`]); returns the n-th.
    pub async fn wait_for(&self, address: &str, n: usize) -> ReceivedMail {
        let deadline = Instant::now() + GUARD;
        loop {
            let msgs = self.messages_to(address);
            if msgs.len() >= n {
                return msgs[n - 1].clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "message {n} to {address} never arrived within {GUARD:?}; received: {:?}",
                    self.all().iter().map(|m| &m.to).collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Like [`wait_for`](Self::wait_for), for a message whose delivery is retried: retries are
    /// scheduled on `app`'s manual clock, so each poll moves the clock to the next retry that is
    /// not due yet ([`TestApp::make_retries_due`]), and no further.
    pub async fn wait_for_retried(&self, app: &TestApp, address: &str, n: usize) -> ReceivedMail {
        eventually(&format!("message {n} to {address} arrives"), || async {
            let msgs = self.messages_to(address);
            if msgs.len() >= n {
                return Some(msgs[n - 1].clone());
            }
            app.make_retries_due().await;
            None
        })
        .await
    }

    /// Asserts that nothing more than `n` messages reach `address` within a short grace period.
    pub async fn assert_count_stays(&self, address: &str, n: usize) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            self.messages_to(address).len(),
            n,
            "unexpected message count to {address}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Backends

/// The database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

tokio::task_local! {
    /// Set by [`backend_tests!`] around each test body.
    pub static BACKEND: Backend;
}

pub fn current_backend() -> Backend {
    BACKEND.try_with(|b| *b).unwrap_or(Backend::Sqlite)
}

/// The PostgreSQL server for tests, from `LATCHKEY_TEST_POSTGRES_URL` (e.g.
/// `postgres://postgres@127.0.0.1:5432/test`).
pub fn postgres_url() -> Option<String> {
    std::env::var("LATCHKEY_TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Runs a PostgreSQL variant: it was asked for (`--ignored`), so a missing server is a failure,
/// never a silent pass.
pub async fn on_postgres(body: impl Future<Output = ()>) {
    assert!(
        postgres_url().is_some(),
        "this PostgreSQL variant was run, but LATCHKEY_TEST_POSTGRES_URL is not set \
         (e.g. LATCHKEY_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test)"
    );
    BACKEND.scope(Backend::Postgres, body).await
}

/// Defines each test twice, with the backend in scope for `spawn_app`: `name::sqlite` and
/// `name::postgres`. The PostgreSQL variant is `#[ignore]`d, so a plain `cargo test` lists it as
/// ignored rather than passing it untried; `cargo test --test api -- --ignored ::postgres` runs
/// them all (and fails without `LATCHKEY_TEST_POSTGRES_URL`).
#[macro_export]
macro_rules! backend_tests {
    ($(async fn $name:ident() $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[tokio::test]
                async fn sqlite() {
                    $crate::helpers::BACKEND
                        .scope($crate::helpers::Backend::Sqlite, async $body)
                        .await
                }

                #[tokio::test]
                #[ignore = "PostgreSQL: set LATCHKEY_TEST_POSTGRES_URL and run with --ignored"]
                async fn postgres() {
                    $crate::helpers::on_postgres(async $body).await
                }
            }
        )*
    };
}

/// Defines tests that exist for PostgreSQL only, named `name::postgres` and ignored like the
/// PostgreSQL variants of [`backend_tests!`], so the same `--ignored ::postgres` runs them.
#[macro_export]
macro_rules! postgres_tests {
    ($(async fn $name:ident() $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[tokio::test]
                #[ignore = "PostgreSQL: set LATCHKEY_TEST_POSTGRES_URL and run with --ignored"]
                async fn postgres() {
                    $crate::helpers::on_postgres(async $body).await
                }
            }
        )*
    };
}

static SWEEP: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// Creates an empty PostgreSQL database for one test and returns its URL. Databases left by
/// earlier runs (names carry their creation time) are dropped once they are two hours old.
pub async fn fresh_postgres_database() -> String {
    use sqlx::Executor;
    let admin_url = postgres_url().expect("LATCHKEY_TEST_POSTGRES_URL");
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&admin_url)
        .await
        .unwrap_or_else(|e| {
            panic!("LATCHKEY_TEST_POSTGRES_URL={admin_url} is set but unreachable: {e}")
        });
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    SWEEP
        .get_or_init(|| async {
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT datname::text FROM pg_database WHERE datname LIKE 'lkt\\_%'",
            )
            .fetch_all(&admin)
            .await
            .unwrap_or_default();
            for name in names {
                let created: i64 = name
                    .split('_')
                    .nth(1)
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(now);
                if now - created > 7200 {
                    let _ = admin
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                }
            }
        })
        .await;
    let name = format!(
        "lkt_{now}_{}",
        latchkey::crypto::random_token(9)
            .to_ascii_lowercase()
            .replace(['-', '_'], "x")
    );
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create test database");
    admin.close().await;
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

// ---------------------------------------------------------------------------------------------
// Application

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub smtp: TestSmtp,
    pub clock: ManualClock,
    pub db_path: PathBuf,
    pub backend: Backend,
    pub raw: RawConfig,
    /// The server's admission counts: requests in flight (load shedding), bodies being received.
    pub admission: latchkey::routes::Admission,
    /// The server's store (to read how many units of work requests ran).
    pub store: latchkey::store::Store,
    handle: ServerHandle,
    task: JoinHandle<std::io::Result<()>>,
    /// Stops the server when the test drops its app, so finished tests release their threads.
    _stop: StopOnDrop,
    _dir: Arc<tempfile::TempDir>,
}

struct StopOnDrop(ServerHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        // The command is sent at once; waiting for the stop is not needed.
        drop(self.0.stop(false));
    }
}

pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The configuration tests start from: dev mode off, real SMTP, fast outbox polling, and a fresh
/// database of the current backend.
pub async fn test_config(smtp: &TestSmtp, dir: &tempfile::TempDir) -> RawConfig {
    let database_url = match current_backend() {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("latchkey.db").display()),
        Backend::Postgres => fresh_postgres_database().await,
    };
    let mut raw = RawConfig {
        database_url,
        smtp_url: Some(smtp.url()),
        mail_from: "Latchkey Test <no-reply@latchkey.test>".into(),
        product_name: "Acme".into(),
        dev_mode: Some(false),
        secret: Some("latchkey-integration-test-secret-0123456789".into()),
        allowed_redirect_origins: vec!["https://app.example.com".into()],
        cors_allowed_origins: Some(vec!["https://app.example.com".into()]),
        ..RawConfig::default()
    };
    // Most tests start many flows from 127.0.0.1 at one instant of the manual clock; the rate
    // limits have their own tests (tests/api/limits.rs), which turn them on.
    raw.limits = latchkey::config::LimitsConfig::off();
    // The friendly "no account" / "already registered" answers are what most tests check;
    // strict enumeration protection (the default) has its own tests (tests/api/enumeration.rs).
    raw.enumeration_protection = "off".into();
    // Some tests send 100 requests at once from 127.0.0.1; the per-client cap on open requests
    // has its own tests (tests/api/overload.rs), which turn it on.
    raw.max_in_flight_per_ip = 0;
    raw.outbox.poll_interval_ms = 50;
    raw.outbox.retry_base_ms = 100;
    raw.outbox.retry_max_ms = 1000;
    raw
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(customise: impl FnOnce(&mut RawConfig)) -> TestApp {
    spawn_app_on(TestSmtp::start(), customise).await
}

/// Starts the app against `smtp`, which may not be listening yet.
pub async fn spawn_app_on(smtp: TestSmtp, customise: impl FnOnce(&mut RawConfig)) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut raw = test_config(&smtp, &dir).await;
    customise(&mut raw);
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    launch(raw, smtp, clock, dir, browser()).await
}

async fn launch(
    mut raw: RawConfig,
    smtp: TestSmtp,
    clock: ManualClock,
    dir: Arc<tempfile::TempDir>,
    client: reqwest::Client,
) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let address = format!("http://127.0.0.1:{port}");
    raw.listen = format!("127.0.0.1:{port}");
    // The app answers at its own address, unless a test set an https public URL: that one is kept
    // (the listener stays plain http, as behind a TLS-terminating proxy).
    if !raw.public_url.starts_with("https://") {
        raw.public_url = address.clone();
    }
    let settings = Settings::from_raw(raw.clone(), true).expect("valid test settings");
    let app = Application::build_with_listener(settings, listener, Arc::new(clock.clone()))
        .await
        .expect("app builds");
    let handle = app.handle();
    let admission = app.admission();
    let store = app.store();
    let task = tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        client,
        smtp,
        clock,
        db_path: dir.path().join("latchkey.db"),
        backend: current_backend(),
        raw,
        admission,
        store,
        _stop: StopOnDrop(handle.clone()),
        handle,
        task,
        _dir: dir,
    }
}

/// A parsed HTML page and its status.
pub struct Page {
    pub status: StatusCode,
    pub html: String,
}

impl Page {
    pub fn doc(&self) -> Html {
        Html::parse_document(&self.html)
    }

    pub fn text(&self) -> String {
        self.doc()
            .root_element()
            .text()
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn contains(&self, s: &str) -> bool {
        self.text().contains(s)
    }

    /// The fields (name, value) of the form posting to `action`: hidden, text and email inputs.
    pub fn form(&self, action: &str) -> Form {
        let doc = self.doc();
        let sel = Selector::parse(&format!("form[action=\"{action}\"]")).unwrap();
        let form = doc
            .select(&sel)
            .next()
            .unwrap_or_else(|| panic!("no form posting to {action} in:\n{}", self.html));
        let input = Selector::parse("input[name]").unwrap();
        let fields = form
            .select(&input)
            .map(|i| {
                (
                    i.value().attr("name").unwrap().to_string(),
                    i.value().attr("value").unwrap_or_default().to_string(),
                )
            })
            .collect();
        Form {
            action: action.to_string(),
            fields,
        }
    }

    /// Like [`form`](Self::form), for the form posting to `action` that has the hidden field
    /// `name` = `value` (several forms may post to one action).
    pub fn form_with_field(&self, action: &str, name: &str, value: &str) -> Form {
        let doc = self.doc();
        let sel = Selector::parse(&format!("form[action=\"{action}\"]")).unwrap();
        let input = Selector::parse("input[name]").unwrap();
        let fields = doc
            .select(&sel)
            .map(|form| {
                form.select(&input)
                    .map(|i| {
                        (
                            i.value().attr("name").unwrap().to_string(),
                            i.value().attr("value").unwrap_or_default().to_string(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .find(|fields| fields.iter().any(|(n, v)| n == name && v == value))
            .unwrap_or_else(|| {
                panic!(
                    "no form posting to {action} with {name}={value} in:\n{}",
                    self.html
                )
            });
        Form {
            action: action.to_string(),
            fields,
        }
    }

    /// The `action` of the first form whose action contains `part`.
    pub fn form_action(&self, part: &str) -> String {
        let doc = self.doc();
        let sel = Selector::parse("form[action]").unwrap();
        doc.select(&sel)
            .filter_map(|f| f.value().attr("action"))
            .find(|a| a.contains(part))
            .unwrap_or_else(|| panic!("no form action containing {part} in:\n{}", self.html))
            .to_string()
    }

    pub fn input_value(&self, name: &str) -> Option<String> {
        let sel = Selector::parse(&format!("input[name=\"{name}\"]")).unwrap();
        self.doc()
            .select(&sel)
            .next()
            .map(|i| i.value().attr("value").unwrap_or_default().to_string())
    }

    pub fn links(&self) -> Vec<(String, String)> {
        let sel = Selector::parse("a[href]").unwrap();
        self.doc()
            .select(&sel)
            .map(|a| {
                (
                    a.text().collect::<String>().trim().to_string(),
                    a.value().attr("href").unwrap().to_string(),
                )
            })
            .collect()
    }

    pub fn link(&self, label: &str) -> String {
        self.links()
            .into_iter()
            .find(|(l, _)| l == label)
            .unwrap_or_else(|| panic!("no link {label:?} in:\n{}", self.html))
            .1
    }
}

pub struct Form {
    pub action: String,
    pub fields: Vec<(String, String)>,
}

impl Form {
    pub fn set(mut self, name: &str, value: &str) -> Self {
        match self.fields.iter_mut().find(|(n, _)| n == name) {
            Some(f) => f.1 = value.to_string(),
            None => self.fields.push((name.to_string(), value.to_string())),
        }
        self
    }

    pub fn without(mut self, name: &str) -> Self {
        self.fields.retain(|(n, _)| n != name);
        self
    }
}

/// The whole `Set-Cookie` header that sets cookie `name`.
pub fn set_cookie(resp: &Response, name: &str) -> String {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie set"))
}

/// `name=value` of cookie `name` as set by `resp`.
pub fn cookie_pair(resp: &Response, name: &str) -> String {
    set_cookie(resp, name)
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

pub fn location(resp: &Response) -> String {
    resp.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location header on {}", resp.status()))
        .to_str()
        .unwrap()
        .to_string()
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{}", self.address, path)
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.get_with(&self.client, path).await
    }

    pub async fn get_with(&self, client: &reqwest::Client, path: &str) -> Response {
        client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn page(&self, path: &str) -> Page {
        self.page_with(&self.client, path).await
    }

    pub async fn page_with(&self, client: &reqwest::Client, path: &str) -> Page {
        let resp = self.get_with(client, path).await;
        Page {
            status: resp.status(),
            html: resp.text().await.unwrap(),
        }
    }

    /// Posts a form as a browser does (same-origin `Origin` header).
    pub async fn submit(&self, form: &Form) -> Response {
        self.submit_with(&self.client, form).await
    }

    pub async fn submit_with(&self, client: &reqwest::Client, form: &Form) -> Response {
        client
            .post(self.url(&form.action))
            .header("Origin", &self.address)
            .form(&form.fields)
            .send()
            .await
            .expect("POST")
    }

    /// Posts a form with extra request headers (e.g. `X-Forwarded-For` from a proxy).
    pub async fn submit_with_headers(
        &self,
        client: &reqwest::Client,
        form: &Form,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut req = client
            .post(self.url(&form.action))
            .header("Origin", &self.address)
            .form(&form.fields);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("POST")
    }

    pub async fn into_page(resp: Response) -> Page {
        Page {
            status: resp.status(),
            html: resp.text().await.unwrap(),
        }
    }

    /// Opens `start` (`/sign-up` or `/sign-in`, optionally with a query) and submits an email
    /// address; returns the response to the submit.
    pub async fn submit_identifier(&self, start: &str, email: &str) -> Response {
        self.submit_identifier_with(&self.client, start, email)
            .await
    }

    pub async fn submit_identifier_with(
        &self,
        client: &reqwest::Client,
        start: &str,
        email: &str,
    ) -> Response {
        let page = self.page_with(client, start).await;
        assert_eq!(page.status, StatusCode::OK, "{start}: {}", page.html);
        let action = start.split('?').next().unwrap();
        let form = page.form(action).set("email_address", email);
        self.submit_with(client, &form).await
    }

    /// Opens `start` and submits its form with `fields` set (e.g. `phone_number`, `identifier`).
    pub async fn submit_fields(&self, start: &str, fields: &[(&str, &str)]) -> Response {
        self.submit_fields_with(&self.client, start, fields).await
    }

    pub async fn submit_fields_with(
        &self,
        client: &reqwest::Client,
        start: &str,
        fields: &[(&str, &str)],
    ) -> Response {
        let page = self.page_with(client, start).await;
        assert_eq!(page.status, StatusCode::OK, "{start}: {}", page.html);
        let action = start.split('?').next().unwrap();
        let mut form = page.form(action);
        for (name, value) in fields {
            form = form.set(name, value);
        }
        self.submit_with(client, &form).await
    }

    /// Submits `fields` on `start` and returns the code page's URL.
    pub async fn start_flow_with_fields(&self, start: &str, fields: &[(&str, &str)]) -> String {
        let resp = self.submit_fields(start, fields).await;
        assert_eq!(
            resp.status(),
            StatusCode::SEE_OTHER,
            "{}",
            resp.text().await.unwrap()
        );
        location(&resp)
    }

    /// Submits the identifier and returns the code page's URL.
    pub async fn start_flow(&self, start: &str, email: &str) -> String {
        let resp = self.submit_identifier(start, email).await;
        assert_eq!(
            resp.status(),
            StatusCode::SEE_OTHER,
            "{}",
            resp.text().await.unwrap()
        );
        location(&resp)
    }

    /// Enters `code` on the code page at `verify_url`.
    pub async fn enter_code(&self, verify_url: &str, code: &str) -> Response {
        self.enter_code_with(&self.client, verify_url, code).await
    }

    pub async fn enter_code_with(
        &self,
        client: &reqwest::Client,
        verify_url: &str,
        code: &str,
    ) -> Response {
        let page = self.page_with(client, verify_url).await;
        assert_eq!(page.status, StatusCode::OK, "{verify_url}: {}", page.html);
        let form = page.form(verify_url).set("code", code);
        self.submit_with(client, &form).await
    }

    /// Presses "Resend code" on the code page at `verify_url`.
    pub async fn resend(&self, verify_url: &str) -> Response {
        let page = self.page(verify_url).await;
        let action = page.form_action("/resend/");
        let form = page.form(&action);
        self.submit(&form).await
    }

    /// Completes a sign-up for `email` and returns the response to the code submit.
    pub async fn sign_up(&self, email: &str) -> Response {
        let before = self.smtp.messages_to(email).len();
        let verify = self.start_flow("/sign-up", email).await;
        let code = self.smtp.wait_for(email, before + 1).await.code();
        self.enter_code(&verify, &code).await
    }

    /// Signs up `email` with a throw-away browser, so this app's client stays signed out.
    pub async fn create_account(&self, email: &str) {
        let other = browser();
        let before = self.smtp.messages_to(email).len();
        let resp = self.submit_identifier_with(&other, "/sign-up", email).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let verify = location(&resp);
        let code = self.smtp.wait_for(email, before + 1).await.code();
        let resp = self.enter_code_with(&other, &verify, &code).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    }

    /// Completes a sign-in for an existing `email` in `client`.
    pub async fn sign_in_with(&self, client: &reqwest::Client, email: &str) -> Response {
        let before = self.smtp.messages_to(email).len();
        let resp = self.submit_identifier_with(client, "/sign-in", email).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let verify = location(&resp);
        let code = self.smtp.wait_for(email, before + 1).await.code();
        self.enter_code_with(client, &verify, &code).await
    }

    /// Completes a sign-in for an existing `email`.
    pub async fn sign_in(&self, email: &str) -> Response {
        let before = self.smtp.messages_to(email).len();
        let verify = self.start_flow("/sign-in", email).await;
        let code = self.smtp.wait_for(email, before + 1).await.code();
        self.enter_code(&verify, &code).await
    }

    /// Direct access to the app's database (grey-box checks), whichever the backend.
    pub async fn db(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&self.raw.database_url)
            .await
            .unwrap()
    }

    /// PostgreSQL only: drops this test's database under the running server (an outage).
    pub async fn drop_postgres_database(&self) {
        use sqlx::Executor;
        let name = url::Url::parse(&self.raw.database_url)
            .unwrap()
            .path()
            .trim_start_matches('/')
            .to_string();
        let admin = sqlx::AnyPool::connect(&postgres_url().expect("LATCHKEY_TEST_POSTGRES_URL"))
            .await
            .unwrap();
        admin
            .execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
            .await
            .unwrap();
        admin.close().await;
    }

    /// Moves the manual clock to the earliest queued retry that is not due yet, if there is one,
    /// so the outbox worker's next poll takes it; time moves no further than that (a code does
    /// not expire because the machine is slow).
    pub async fn make_retries_due(&self) {
        let db = self.db().await;
        let next: Option<i64> =
            sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending'")
                .fetch_one(&db)
                .await
                .unwrap();
        db.close().await;
        let now = (self.clock.now().unix_timestamp_nanos() / 1_000_000) as i64;
        if let Some(due) = next.filter(|&due| due > now) {
            self.clock
                .advance(Duration::from_millis((due - now) as u64));
        }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let db = self.db().await;
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&db).await.unwrap();
        db.close().await;
        n
    }

    /// Stops the server gracefully and waits for its worker to stop.
    pub async fn stop(
        self,
    ) -> (
        RawConfig,
        TestSmtp,
        ManualClock,
        Arc<tempfile::TempDir>,
        reqwest::Client,
    ) {
        self.handle.stop(true).await;
        self.task.await.unwrap().unwrap();
        (self.raw, self.smtp, self.clock, self._dir, self.client)
    }

    /// Stops the server and starts a new process-equivalent on the same database, SMTP server,
    /// clock and browser.
    pub async fn restart(self) -> TestApp {
        self.restart_with(|_| {}).await
    }

    /// Like [`restart`](Self::restart), with the configuration changed by `customise`.
    pub async fn restart_with(self, customise: impl FnOnce(&mut RawConfig)) -> TestApp {
        let (mut raw, smtp, clock, dir, client) = self.stop().await;
        customise(&mut raw);
        launch(raw, smtp, clock, dir, client).await
    }
}
