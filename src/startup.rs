//! Builds the application: database, keys, outbox worker and HTTP server. Used by `main` and by
//! the tests (which bind port 0 and inject a manual clock).

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::error::{InternalError, UrlencodedError};
use actix_web::http::StatusCode;
use actix_web::middleware::{Compress, DefaultHeaders};
use actix_web::{web, App, FromRequest, HttpServer};
use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing_actix_web::TracingLogger;

use crate::auth::Links;
use crate::auth::{Auth, Policy};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::crypto::{random_token, Keys};
use crate::delivery::{DevTransport, Mailer, OutboxSignal, OutboxWorker, SmsSender, SmtpMailer};
use crate::routes::{self, AppState, Ctx};
use crate::session::Cookies;
use crate::store::{Store, StoredSigningKey};
use crate::tokens::{Alg, KeySet, Keyring, SigningKey};

pub struct Application {
    port: u16,
    server: Server,
    worker: JoinHandle<()>,
    janitor: JoinHandle<()>,
    /// Reads the session revocation log into the cache of live sessions.
    revocations: JoinHandle<()>,
    /// Reads the signing keys again (rotations).
    key_reloader: JoinHandle<()>,
    stop_worker: watch::Sender<bool>,
    store: Store,
    admission: routes::Admission,
}

impl Application {
    /// Binds `settings.listen` and builds everything.
    pub async fn build(settings: Settings, clock: SharedClock) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.http.listen)
            .with_context(|| format!("`listen`: cannot bind {}", settings.http.listen))?;
        Self::build_with_listener(settings, listener, clock).await
    }

    pub async fn build_with_listener(
        settings: Settings,
        listener: TcpListener,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let store = Store::connect(&settings.database).await?;
        let secret = match &settings.secret {
            Some(s) => s.clone(),
            None => store
                .get_or_create_secret(&random_token(48))
                .await
                .context("reading the server secret")?,
        };
        let keys = Arc::new(Keys::derive(&secret));
        let signing = Arc::new(Keyring::new(
            signing_keys(&store, &keys, &needed_algs(&settings), clock.now()).await?,
        ));
        let mailer = Arc::new(match &settings.delivery.smtp {
            Some(smtp) => Mailer::Smtp(Box::new(SmtpMailer::new(
                smtp.clone(),
                settings.delivery.mail_from.clone(),
            )?)),
            None => Mailer::Dev(DevTransport),
        });
        // SMS timeouts stay within 10 s whatever the mail timeout is.
        let sms = Arc::new(SmsSender::new(
            settings.delivery.sms.clone(),
            std::time::Duration::from_secs(settings.delivery.outbox.send_timeout_secs.min(10)),
        )?);
        let logout = Arc::new(crate::delivery::LogoutSender::new(
            &settings.oidc,
            signing.clone(),
            settings.public_origin.to_string(),
            std::time::Duration::from_secs(settings.delivery.outbox.send_timeout_secs.min(10)),
        )?);
        let worker_id = format!("wrk_{}", random_token(12));
        let (signal, handed) = OutboxSignal::new(
            worker_id.clone(),
            OutboxWorker::lease(&settings.delivery.outbox),
        );
        let (stop_worker, stop_rx) = watch::channel(false);
        let worker = OutboxWorker {
            store: store.counted_apart(),
            keys: keys.clone(),
            clock: clock.clone(),
            mailer,
            sms,
            logout,
            config: settings.delivery.outbox.clone(),
            product_name: settings.product_name.clone(),
            code_in_subject: settings.auth.code_in_email_subject,
            public_host: settings
                .public_url
                .host_str()
                .unwrap_or_default()
                .to_string(),
            phone_policy: settings.phone_policy.clone(),
            signal: signal.clone(),
            worker_id,
        }
        .spawn(handed, stop_rx.clone());
        let janitor = spawn_janitor(
            store.counted_apart(),
            clock.clone(),
            settings.janitor_interval,
            settings.audit_retention,
            stop_rx.clone(),
        );
        let links = Links {
            sign_in: public_page(&settings.public_url, routes::paths::SIGN_IN),
            sign_up: public_page(&settings.public_url, routes::paths::SIGN_UP),
        };
        let policy = Policy::from_settings(&settings, links);
        let auth = Arc::new(Auth::new(
            store.clone(),
            keys,
            clock.clone(),
            policy,
            signal,
        ));
        let key_reloader = spawn_key_reloader(
            signing.clone(),
            store.counted_apart(),
            auth.keys_arc(),
            clock.clone(),
            settings.signing_keys_reload,
            stop_rx.clone(),
        );
        let revocations = spawn_revocation_reader(
            auth.session_cache(),
            store.counted_apart(),
            clock.clone(),
            stop_rx,
        );
        let state = web::Data::new(AppState {
            backend_keys: settings
                .api_secret_keys
                .iter()
                .map(|k| auth.keys().api_key_hash(k))
                .collect(),
            verified_tokens: crate::tokens::VerifiedTokens::default(),
            oidc: Arc::new(crate::oidc::Provider::new(
                settings.oidc.clone(),
                settings.auth.session_inactivity_timeout,
                settings.public_origin.to_string(),
                store.clone(),
                auth.keys_arc(),
                signing.clone(),
                clock.clone(),
            )),
            auth,
            signing,
            store: store.clone(),
            cookies: Cookies::new(settings.secure_cookies()),
            settings: settings.clone(),
        });
        let port = listener.local_addr()?.port();
        let headers = security_headers(&settings);
        let max_body = settings.http.max_body_bytes;
        let admission = routes::Admission::new(&settings.http);
        let admitted = admission.clone();
        let server = HttpServer::new(move || {
            let admission = admission.clone();
            let mut default_headers = DefaultHeaders::new();
            for (k, v) in &headers {
                default_headers = default_headers.add((*k, v.clone()));
            }
            App::new()
                .app_data(state.clone())
                .app_data(
                    web::FormConfig::default()
                        .limit(max_body)
                        .error_handler(form_error),
                )
                .app_data(web::PayloadConfig::default().limit(max_body))
                // Innermost, so that its refusals (503, 429, 408) are written by `finish` and get
                // the security headers, and the request span covers the body's arrival.
                .wrap(actix_web::middleware::from_fn(move |req, next| {
                    admission.clone().admit(req, next)
                }))
                .wrap(actix_web::middleware::from_fn(routes::finish))
                .wrap(default_headers)
                .wrap(Compress::default())
                .wrap(actix_web::middleware::from_fn(routes::unmark_identity))
                .wrap(TracingLogger::<crate::telemetry::RequestSpan>::new())
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
        })
        .workers(if settings.http.http_workers > 0 {
            settings.http.http_workers
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        })
        // Without it, a compressed page (written in two parts) waited ~40 ms for the client's
        // delayed ACK (Nagle's algorithm) before its second part went out (BENCHMARKS.md).
        .tcp_nodelay(true)
        // The head's deadline (408 past it; the body's is the admission's), and how long a
        // closing connection waits for its client.
        .client_request_timeout(settings.http.request_head_timeout)
        .client_disconnect_timeout(settings.http.client_disconnect_timeout)
        .listen(listener)?
        .shutdown_timeout(30)
        .run();
        tracing::info!(port, public_url = %settings.public_url, dev_mode = settings.dev_mode, backend = ?store.backend(), "Latchkey is listening");
        for warning in &settings.warnings {
            tracing::warn!("{warning}");
        }
        if settings.dev_mode {
            tracing::info!(
                "dev mode: codes are not mailed; they are logged here and listed at {}/dev/outbox",
                settings.public_url.as_str().trim_end_matches('/')
            );
        }
        Ok(Self {
            port,
            server,
            worker,
            janitor,
            revocations,
            key_reloader,
            stop_worker,
            store,
            admission: admitted,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The store this server runs on (tests read how many units of work it ran).
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// The server's admission counts: requests in flight (load shedding's count) and bodies
    /// being received.
    pub fn admission(&self) -> routes::Admission {
        self.admission.clone()
    }

    /// Stops the server (gracefully or not) from another task.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped (SIGTERM/SIGINT or the handle), finishing in-flight requests, then
    /// stops the outbox worker (unsent messages stay queued for the next start).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        let _ = self.stop_worker.send(true);
        let _ = self.worker.await;
        let _ = self.janitor.await;
        let _ = self.revocations.await;
        let _ = self.key_reloader.await;
        self.store.close().await;
        result
    }
}

/// Runs `tick` every `interval` until `stop` turns true (a tick in progress finishes first).
fn spawn_every<F, Fut>(
    interval: std::time::Duration,
    mut stop: watch::Receiver<bool>,
    mut tick: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return;
            }
            tick().await;
        }
    })
}

/// Every [`crate::auth::REVOCATION_POLL`], drops the sessions other instances ended from this
/// process's cache of live sessions.
fn spawn_revocation_reader(
    cache: Arc<crate::auth::SessionCache>,
    store: Store,
    clock: SharedClock,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    // A failure is logged once, not twice a second while it lasts.
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    spawn_every(crate::auth::REVOCATION_POLL, stop, move || {
        let (cache, store, clock, failing) =
            (cache.clone(), store.clone(), clock.clone(), failing.clone());
        async move {
            use std::sync::atomic::Ordering::Relaxed;
            match crate::auth::forget_revoked(&cache, &store, clock.now()).await {
                Ok(()) => failing.store(false, Relaxed),
                Err(e) => {
                    if !failing.swap(true, Relaxed) {
                        tracing::warn!(error = %e, "could not read the session revocation log; retrying");
                    }
                }
            }
        }
    })
}

fn spawn_janitor(
    store: Store,
    clock: SharedClock,
    interval: std::time::Duration,
    audit_retention: std::time::Duration,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    spawn_every(interval, stop, move || {
        let (store, clock) = (store.clone(), clock.clone());
        async move {
            match store
                .purge(clock.now(), crate::auth::duration(audit_retention))
                .await
            {
                Ok(p) if p == crate::store::Purged::default() => {}
                Ok(p) => tracing::info!(
                    flows = p.flows,
                    sessions = p.sessions,
                    messages = p.messages,
                    lockouts = p.lockouts,
                    rate_events = p.rate_events,
                    audit_events = p.audit_events,
                    grants = p.grants,
                    revocations = p.revocations,
                    "janitor deleted expired rows"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "janitor could not delete expired rows; will try again")
                }
            }
        }
    })
}

/// The signing keys in force: the stored ones, plus a first key for every algorithm `needed`
/// that has none yet (EdDSA for session tokens; RS256, and ES256 where a client chose it, for
/// OpenID Connect), generated here and stored by the first instance to start (the others read
/// it). Keys are generated outside the transaction: an RSA key takes a moment.
async fn signing_keys(
    store: &Store,
    keys: &Keys,
    needed: &[Alg],
    now: time::OffsetDateTime,
) -> anyhow::Result<KeySet> {
    let mut stored = store
        .signing_keys(now)
        .await
        .context("reading the signing keys")?;
    let missing: Vec<Alg> = needed
        .iter()
        .copied()
        .filter(|a| {
            !stored
                .iter()
                .any(|k| k.alg == a.as_str() && k.retired_at.is_none())
        })
        .collect();
    if !missing.is_empty() {
        let mut generated = Vec::new();
        for alg in missing {
            generated.push(new_stored_key(keys, alg, now)?);
        }
        stored = store
            .add_signing_keys(generated, now)
            .await
            .context("storing the signing keys")?;
    }
    open_key_set(keys, &stored, now)
}

/// A new key of `alg`, sealed for the database, signing from `active_from`.
fn new_stored_key(
    keys: &Keys,
    alg: Alg,
    active_from: time::OffsetDateTime,
) -> anyhow::Result<StoredSigningKey> {
    let (fresh, pkcs8) = SigningKey::generate(alg)?;
    Ok(StoredSigningKey {
        kid: fresh.kid().to_string(),
        alg: alg.as_str().to_string(),
        private_sealed: keys.seal_signing_key(&pkcs8),
        created_at: active_from,
        retired_at: None,
    })
}

/// The key set of stored keys at `now`.
fn open_key_set(
    keys: &Keys,
    stored: &[StoredSigningKey],
    now: time::OffsetDateTime,
) -> anyhow::Result<KeySet> {
    let opened = stored
        .iter()
        .map(|k| {
            let alg = Alg::parse(&k.alg)
                .with_context(|| format!("signing key {}: unknown algorithm {:?}", k.kid, k.alg))?;
            let pkcs8 = keys.open_signing_key(&k.private_sealed).with_context(|| {
                format!(
                    "signing key {} cannot be opened: it was sealed under another server secret",
                    k.kid
                )
            })?;
            Ok(SigningKey::from_pkcs8(alg, &pkcs8)?.active_from(k.created_at))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    KeySet::at(opened, Some(now))
}

/// Every `signing_keys_reload_secs`, reads the stored keys again, so a rotation (made by any
/// process) reaches this one: new keys published, activated keys signing, retired ones gone.
fn spawn_key_reloader(
    keyring: Arc<Keyring>,
    store: Store,
    keys: Arc<Keys>,
    clock: SharedClock,
    interval: std::time::Duration,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    spawn_every(interval, stop, move || {
        let (keyring, store, keys, clock) =
            (keyring.clone(), store.clone(), keys.clone(), clock.clone());
        async move {
            let now = clock.now();
            let reloaded = match store.signing_keys(now).await {
                Ok(stored) => open_key_set(&keys, &stored, now),
                Err(e) => Err(e),
            };
            match reloaded {
                Ok(set) => {
                    let kids: Vec<String> = set.kids().iter().map(|k| k.to_string()).collect();
                    if keyring.replace(set) {
                        tracing::info!(keys = ?kids, "signing keys changed");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "could not reload the signing keys; keeping the current ones")
                }
            }
        }
    })
}

/// `latchkey keys rotate`: a new key for every algorithm in force, published at once and
/// signing `activate_in` from now (so that apps that cache the key set see it first); the
/// keys it replaces stay published until every token they signed has expired. Answers the new
/// keys' (algorithm, id).
pub async fn rotate_signing_keys(
    settings: &Settings,
    activate_in: time::Duration,
) -> anyhow::Result<Vec<(String, String)>> {
    let store = Store::connect(&settings.database).await?;
    let secret = match &settings.secret {
        Some(s) => s.clone(),
        None => store
            .get_or_create_secret(&random_token(48))
            .await
            .context("reading the server secret")?,
    };
    let keys = Keys::derive(&secret);
    let now = time::OffsetDateTime::now_utc();
    let in_force = store.signing_keys(now).await?;
    let mut algs: Vec<Alg> = Vec::new();
    for k in in_force.iter().filter(|k| k.retired_at.is_none()) {
        // Refuse to rotate keys this secret cannot open: the new ones would be unusable too.
        keys.open_signing_key(&k.private_sealed).with_context(|| {
            format!(
                "signing key {} cannot be opened with this server secret",
                k.kid
            )
        })?;
        if let Some(alg) = Alg::parse(&k.alg).filter(|a| !algs.contains(a)) {
            algs.push(alg);
        }
    }
    anyhow::ensure!(
        !algs.is_empty(),
        "there are no signing keys yet: start the server once"
    );
    let activate_at = now + activate_in;
    let fresh = algs
        .iter()
        .map(|&alg| new_stored_key(&keys, alg, activate_at))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // The longest a token lives, and a margin for clocks and reloads.
    let longest = [
        settings.oidc.access_token_ttl,
        settings.oidc.id_token_ttl,
        std::time::Duration::from_secs(crate::tokens::SESSION_TOKEN_TTL.whole_seconds() as u64),
    ]
    .into_iter()
    .max()
    .unwrap_or_default();
    let retire_at = activate_at
        + crate::auth::duration(longest)
        + crate::auth::duration(settings.signing_keys_reload)
        + time::Duration::minutes(5);
    store
        .rotate_signing_keys(fresh.clone(), retire_at, now)
        .await?;
    store.close().await;
    Ok(fresh.into_iter().map(|k| (k.alg, k.kid)).collect())
}

fn security_headers(settings: &Settings) -> Vec<(&'static str, String)> {
    let mut form_action = String::from("'self'");
    for origin in &settings.allowed_redirect_origins {
        form_action.push(' ');
        form_action.push_str(&origin.to_string());
    }
    // A form post here may end in a redirect to an OpenID Connect client (a code, a consent's
    // answer, a sign-out's return), which browsers check against form-action too.
    for source in oidc_form_sources(settings) {
        if !form_action.split(' ').any(|s| s == source) {
            form_action.push(' ');
            form_action.push_str(&source);
        }
    }
    let mut headers = vec![
        (
            "content-security-policy",
            format!(
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; \
                 base-uri 'none'; frame-ancestors 'none'; form-action {form_action}"
            ),
        ),
        ("x-frame-options", "DENY".to_string()),
        ("x-content-type-options", "nosniff".to_string()),
        // Same-origin requests keep their Origin (checked on every form post); other sites get at
        // most our origin, never a flow URL.
        ("referrer-policy", "strict-origin-when-cross-origin".to_string()),
        ("cache-control", "no-store".to_string()),
        ("cross-origin-opener-policy", "same-origin".to_string()),
        ("permissions-policy", "interest-cohort=(), camera=(), microphone=(), geolocation=()".to_string()),
    ];
    if settings.secure_cookies() {
        headers.push((
            "strict-transport-security",
            "max-age=31536000; includeSubDomains".to_string(),
        ));
    }
    headers
}

/// Form bodies that cannot be read get a page, not a bare error: 413 when too large, 415 for
/// another content type, 400 otherwise.
fn form_error(err: UrlencodedError, req: &actix_web::HttpRequest) -> actix_web::Error {
    let (status, title, message) = match &err {
        UrlencodedError::Overflow { .. } | UrlencodedError::UnknownLength => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "That was too much data",
            "The form you sent was larger than this server accepts. Go back and try again with a shorter value.",
        ),
        UrlencodedError::ContentType => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported form",
            "This address accepts ordinary HTML form posts only.",
        ),
        _ => (
            StatusCode::BAD_REQUEST,
            "We could not read that form",
            "The form data was malformed. Go back, reload the page and try again.",
        ),
    };
    let response = match Ctx::extract(req).into_inner() {
        Ok(ctx) => ctx.error_page(status, title, message, None),
        Err(_) => actix_web::HttpResponse::build(status).body(message),
    };
    InternalError::from_response(err, response).into()
}

/// The full URL of one of the hosted pages, for links in messages.
fn public_page(public_url: &url::Url, path: &str) -> String {
    format!("{}{path}", public_url.as_str().trim_end_matches('/'))
}

/// EdDSA signs session tokens; the OpenID Connect clients need their algorithms.
fn needed_algs(settings: &Settings) -> Vec<Alg> {
    let mut algs = vec![Alg::EdDSA];
    algs.extend(
        settings
            .oidc
            .algs()
            .into_iter()
            .filter(|a| *a != Alg::EdDSA),
    );
    algs
}

/// The CSP sources of every OpenID Connect client's redirect URIs: the origin of a web URI,
/// the scheme of a native app's private-use one.
fn oidc_form_sources(settings: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    for client in &settings.oidc.clients {
        for uri in client
            .redirect_uris
            .iter()
            .chain(&client.post_logout_redirect_uris)
        {
            let Ok(url) = url::Url::parse(uri) else {
                continue;
            };
            let source = match url.scheme() {
                "http" | "https" => url.origin().ascii_serialization(),
                scheme => format!("{scheme}:"),
            };
            if !out.contains(&source) {
                out.push(source);
            }
        }
    }
    out
}
