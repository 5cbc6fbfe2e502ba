//! Several Latchkey processes sharing one database, as behind a load balancer: the real binary,
//! started twice, on SQLite (one file) and on PostgreSQL.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{
    browser, current_backend, eventually, fresh_postgres_database, location, until, Backend, Page,
    TestSmtp, GUARD,
};

/// The backend API key every instance takes.
const SECRET_KEY: &str = "sk_instances_0123456789abcdef0123456789";

/// One `latchkey` process.
struct Instance {
    child: Child,
    address: String,
}

impl Instance {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// SIGKILL: no graceful shutdown, no chance to finish anything.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A shared database, an SMTP server, and the public URL every instance answers to.
struct Cluster {
    database_url: String,
    smtp: TestSmtp,
    public_url: String,
    log_dir: tempfile::TempDir,
    /// A configuration file every instance reads (`LATCHKEY_CONFIG`), if any.
    config: Option<std::path::PathBuf>,
}

impl Cluster {
    async fn new() -> Self {
        Self::with_smtp(TestSmtp::start()).await
    }

    async fn with_smtp(smtp: TestSmtp) -> Self {
        let log_dir = tempfile::tempdir().unwrap();
        let database_url = match current_backend() {
            Backend::Sqlite => format!("sqlite://{}", log_dir.path().join("shared.db").display()),
            Backend::Postgres => fresh_postgres_database().await,
        };
        Self {
            database_url,
            smtp,
            public_url: format!("http://127.0.0.1:{}", free_port()),
            log_dir,
            config: None,
        }
    }

    /// Every instance also reads `toml` as its configuration file.
    fn with_config(mut self, toml: &str) -> Self {
        let path = self.log_dir.path().join("latchkey.toml");
        std::fs::write(&path, toml).unwrap();
        self.config = Some(path);
        self
    }

    async fn start(&self, name: &str) -> Instance {
        let port = free_port();
        let log = std::fs::File::create(self.log_dir.path().join(format!("{name}.log"))).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_latchkey"));
        if let Some(config) = &self.config {
            command.env("LATCHKEY_CONFIG", config);
        }
        let child = command
            .env("LATCHKEY_LISTEN", format!("127.0.0.1:{port}"))
            .env("LATCHKEY_PUBLIC_URL", &self.public_url)
            .env("LATCHKEY_DATABASE_URL", &self.database_url)
            .env("LATCHKEY_SMTP_URL", self.smtp.url())
            .env("LATCHKEY_DEV_MODE", "false")
            .env("LATCHKEY_SECRET", "instances-test-secret-0123456789abcdef")
            .env("LATCHKEY_API__SECRET_KEYS", SECRET_KEY)
            .env("LATCHKEY_OUTBOX__POLL_INTERVAL_MS", "50")
            // Many flows from 127.0.0.1 at once: the rate limits have their own tests.
            .env("LATCHKEY_LIMITS__SEND_INTERVAL_SECS", "0")
            .env("LATCHKEY_LIMITS__SENDS_PER_10_MINUTES", "0")
            .env("LATCHKEY_LIMITS__SENDS_PER_DAY", "0")
            .env("LATCHKEY_LIMITS__IP_FLOWS_PER_10_SECONDS", "0")
            .env("LATCHKEY_LIMITS__IP_ATTEMPTS_PER_10_SECONDS", "0")
            .env("LATCHKEY_LIMITS__IP_SENDS_PER_HOUR", "0")
            .env("LATCHKEY_OUTBOX__SEND_TIMEOUT_SECS", "3")
            .env("LATCHKEY_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the latchkey binary");
        let instance = Instance {
            child,
            address: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let deadline = std::time::Instant::now() + GUARD;
        loop {
            if let Ok(r) = client.get(instance.url("/readyz")).send().await {
                if r.status() == StatusCode::OK {
                    return instance;
                }
            }
            if std::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(self.log_dir.path().join(format!("{name}.log")))
                    .unwrap_or_default();
                panic!("instance {name} did not become ready within {GUARD:?}:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::any::install_default_drivers();
        let db = sqlx::AnyPool::connect(&self.database_url).await.unwrap();
        let n = sqlx::query_scalar(sql).fetch_one(&db).await.unwrap();
        db.close().await;
        n
    }

    async fn page(&self, client: &reqwest::Client, url: &str) -> reqwest::Result<Page> {
        let resp = client.get(url).send().await?;
        Ok(Page {
            status: resp.status(),
            html: resp.text().await?,
        })
    }

    /// Posts the form `action` of `page` to the instance at `base`, as a browser on the public origin would.
    async fn post(
        &self,
        client: &reqwest::Client,
        base: &str,
        page: &Page,
        action: &str,
        set: &[(&str, &str)],
    ) -> reqwest::Result<reqwest::Response> {
        let mut form = page.form(action);
        for (k, v) in set {
            form = form.set(k, v);
        }
        client
            .post(format!("{base}{action}"))
            .header("Origin", &self.public_url)
            .form(&form.fields)
            .send()
            .await
    }

    /// Starts a sign-up on the instance at `base` and returns the code page's path.
    async fn start_sign_up(
        &self,
        client: &reqwest::Client,
        base: &str,
        email: &str,
    ) -> reqwest::Result<String> {
        let page = self.page(client, &format!("{base}/sign-up")).await?;
        let resp = self
            .post(client, base, &page, "/sign-up", &[("email_address", email)])
            .await?;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        Ok(location(&resp))
    }

    /// Enters `code` on the code page at `verify`, both on the instance at `base`.
    async fn enter_code(
        &self,
        client: &reqwest::Client,
        base: &str,
        verify: &str,
        code: &str,
    ) -> reqwest::Result<reqwest::Response> {
        let page = self.page(client, &format!("{base}{verify}")).await?;
        assert_eq!(page.status, StatusCode::OK, "{}", page.html);
        self.post(client, base, &page, verify, &[("code", code)])
            .await
    }
}

crate::backend_tests! {
    async fn two_instances_starting_together_on_an_empty_database_both_come_up() {
        let cluster = Cluster::new().await;
        let (a, b) = tokio::join!(cluster.start("a"), cluster.start("b"));
        let client = browser();
        let verify = cluster.start_sign_up(&client, &a.address, "both@example.com").await.unwrap();
        let code = cluster.smtp.wait_for("both@example.com", 1).await.code();
        let resp = cluster.enter_code(&client, &b.address, &verify, &code).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);

        // They agree on one signing key: the same key set, and a session token issued by A
        // verifies on B.
        let jwks = |i: &Instance| reqwest::get(i.url("/.well-known/jwks.json"));
        let (ja, jb): (serde_json::Value, serde_json::Value) = (jwks(&a).await.unwrap().json().await.unwrap(), jwks(&b).await.unwrap().json().await.unwrap());
        assert_eq!(ja, jb);
        assert_eq!(ja["keys"].as_array().map(Vec::len), Some(1), "{ja}");
        let me: serde_json::Value = client.get(a.url("/v1/client")).send().await.unwrap().json().await.unwrap();
        let sid = me["sessions"][0]["id"].as_str().expect("signed in").to_string();
        let token: serde_json::Value = client
            .post(a.url(&format!("/v1/client/sessions/{sid}/tokens")))
            .header("Origin", &cluster.public_url)
            .json(&serde_json::json!({}))
            .send().await.unwrap().json().await.unwrap();
        let verified: serde_json::Value = reqwest::Client::new()
            .post(b.url("/v1/sessions/verify"))
            .bearer_auth(SECRET_KEY)
            .json(&serde_json::json!({"token": token["jwt"]}))
            .send().await.unwrap().json().await.unwrap();
        assert_eq!(verified["active"], true, "{token} {verified}");
        assert_eq!(verified["sid"], sid.as_str());
    }

    async fn a_code_requested_on_one_instance_is_verified_on_another() {
        let cluster = Cluster::new().await;
        let a = cluster.start("a").await;
        let b = cluster.start("b").await;
        let client = browser();

        let verify = cluster.start_sign_up(&client, &a.address, "ab@example.com").await.unwrap();
        let code = cluster.smtp.wait_for("ab@example.com", 1).await.code();
        let resp = cluster.enter_code(&client, &b.address, &verify, &code).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);

        let profile = cluster.page(&client, &a.url("/user")).await.unwrap();
        assert_eq!(profile.status, StatusCode::OK, "the session made on B is valid on A");
        assert!(profile.contains("ab@example.com"));
    }

    async fn tries_on_a_code_are_counted_across_instances() {
        let cluster = Cluster::new().await;
        let a = cluster.start("a").await;
        let b = cluster.start("b").await;
        let client = browser();
        let verify = cluster.start_sign_up(&client, &a.address, "tries@example.com").await.unwrap();
        let code = cluster.smtp.wait_for("tries@example.com", 1).await.code();
        let wrong = if code == "000000" { "111111" } else { "000000" };

        for instance in [&a, &b] {
            let resp = cluster.enter_code(&client, &instance.address, &verify, wrong).await.unwrap();
            assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        }
        let resp = cluster.enter_code(&client, &a.address, &verify, wrong).await.unwrap();
        let page = Page { status: resp.status(), html: resp.text().await.unwrap() };
        assert!(page.contains("Too many incorrect tries"), "third try across A, B, A kills the code: {}", page.html);
        let dead = cluster.page(&client, &b.url(&verify)).await.unwrap();
        assert!(dead.contains("Resend code"));
        assert!(!dead.html.contains(r#"name="code""#), "B shows the code as dead too");
    }

    async fn the_outbox_sends_each_message_once_while_two_workers_run() {
        let cluster = Cluster::new().await;
        let a = cluster.start("a").await;
        let b = cluster.start("b").await;
        let n = 24;
        let starts = (0..n).map(|i| {
            let cluster = &cluster;
            let instance = if i % 2 == 0 { &a } else { &b };
            async move {
                let client = browser();
                cluster.start_sign_up(&client, &instance.address, &format!("once{i}@example.com")).await.unwrap();
            }
        });
        futures_util::future::join_all(starts).await;
        for i in 0..n {
            cluster.smtp.wait_for(&format!("once{i}@example.com"), 1).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(cluster.smtp.all().len(), n, "every message delivered exactly once");
    }

    async fn killing_an_instance_mid_load_loses_no_committed_sign_up_or_session() {
        let cluster = Cluster::new().await;
        let a = Arc::new(Mutex::new(Some(cluster.start("a").await)));
        let b = cluster.start("b").await;
        let a_address = a.lock().unwrap().as_ref().unwrap().address.clone();
        let completed = AtomicUsize::new(0);
        let n = 16;

        let runs = (0..n).map(|i| {
            let (cluster, a, a_address, b, completed) = (&cluster, &a, a_address.as_str(), &b, &completed);
            async move {
                let client = browser();
                let email = format!("load{i}@example.com");
                // Start on A while it is alive, or on B once it is gone.
                let verify = match cluster.start_sign_up(&client, a_address, &email).await {
                    Ok(v) => v,
                    Err(_) => cluster.start_sign_up(&client, &b.address, &email).await.expect("B serves the sign-up"),
                };
                // A message claimed by A when it died is sent by B once A's lease runs out.
                let code = cluster.smtp.wait_for(&email, 1).await.code();
                let outcome = match cluster.enter_code(&client, a_address, &verify, &code).await {
                    Ok(resp) if resp.status() == StatusCode::SEE_OTHER => "signed_in_on_a",
                    _ => {
                        // A died: the flow, stored in the database, continues on B.
                        let page = cluster.page(&client, &b.url(&verify)).await.expect("B answers");
                        if page.status == StatusCode::SEE_OTHER {
                            return (client, email, "completed_by_a");
                        }
                        let resp = cluster.post(&client, &b.address, &page, &verify, &[("code", &code)]).await.expect("B answers");
                        match resp.status() {
                            StatusCode::SEE_OTHER => "signed_in_on_b",
                            // A committed but died before answering: the account exists.
                            StatusCode::CONFLICT => "completed_by_a",
                            other => panic!("unexpected {other} on B for {email}"),
                        }
                    }
                };
                if completed.fetch_add(1, Ordering::SeqCst) == n / 3 {
                    if let Some(mut dying) = a.lock().unwrap().take() {
                        dying.kill();
                    }
                }
                (client, email, outcome)
            }
        });
        let results = futures_util::future::join_all(runs).await;
        assert!(a.lock().unwrap().is_none(), "A was killed during the run");

        for (client, email, outcome) in &results {
            if *outcome == "completed_by_a" {
                continue;
            }
            let profile = cluster.page(client, &b.url("/user")).await.unwrap();
            assert_eq!(profile.status, StatusCode::OK, "{email} ({outcome}) lost its session");
            assert!(profile.contains(email));
        }
        assert_eq!(cluster.count("SELECT COUNT(*) FROM users").await, n as i64, "every sign-up exists exactly once");
    }

    async fn sigterm_stops_gracefully_and_leaves_unsent_mail_for_the_next_start() {
        let cluster = Cluster::with_smtp(TestSmtp::reserve()).await;
        let mut a = cluster.start("a").await;
        let client = browser();
        cluster.start_sign_up(&client, &a.address, "later@example.com").await.unwrap();
        until("the first try failed", || async {
            cluster.count("SELECT COUNT(*) FROM outbox WHERE attempts >= 1").await > 0
        })
        .await;

        let pid = a.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let exit = eventually("latchkey exits after SIGTERM", || {
            let status = a.child.try_wait().unwrap();
            async move { status }
        })
        .await;
        assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");
        assert_eq!(
            cluster.count("SELECT COUNT(*) FROM outbox WHERE status = 'pending' AND payload IS NOT NULL").await,
            1,
            "the unsent message stays queued"
        );

        cluster.smtp.listen();
        let _b = cluster.start("b").await;
        cluster.smtp.wait_for("later@example.com", 1).await;
        cluster.smtp.assert_count_stays("later@example.com", 1).await;
    }
}

const OIDC_CONFIG: &str = r#"
[[oidc.clients]]
id = "web"
secret = "instances-oidc-secret-0123456789abcdef0123"
redirect_uris = ["https://app.example.com/callback"]
"#;

/// Posts a token request to `instance` as the client `web` (client_secret_post).
async fn token_request(
    instance: &Instance,
    form: &[(&str, &str)],
) -> (StatusCode, serde_json::Value) {
    let mut fields: Vec<(&str, &str)> = form.to_vec();
    fields.push(("client_id", "web"));
    fields.push((
        "client_secret",
        "instances-oidc-secret-0123456789abcdef0123",
    ));
    let resp = reqwest::Client::new()
        .post(instance.url("/oauth/token"))
        .form(&fields)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap())
}

async fn userinfo_status(instance: &Instance, token: &str) -> StatusCode {
    reqwest::Client::new()
        .get(instance.url("/oauth/userinfo"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

crate::backend_tests! {
    async fn oidc_codes_tokens_and_refresh_families_are_shared_between_instances() {
        let cluster = Cluster::new().await.with_config(OIDC_CONFIG);
        let (a, b) = tokio::join!(cluster.start("a"), cluster.start("b"));
        let client = browser();
        let verify = cluster.start_sign_up(&client, &a.address, "oidc@example.com").await.unwrap();
        let code = cluster.smtp.wait_for("oidc@example.com", 1).await.code();
        let resp = cluster.enter_code(&client, &a.address, &verify, &code).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);

        // Started together on an empty database, they agree on one key per algorithm.
        let jwks = |i: &Instance| reqwest::get(i.url("/.well-known/jwks.json"));
        let (ja, jb): (serde_json::Value, serde_json::Value) = (jwks(&a).await.unwrap().json().await.unwrap(), jwks(&b).await.unwrap().json().await.unwrap());
        assert_eq!(ja, jb);
        let mut algs: Vec<&str> = ja["keys"].as_array().unwrap().iter().map(|k| k["alg"].as_str().unwrap()).collect();
        algs.sort();
        assert_eq!(algs, vec!["EdDSA", "RS256"]);

        // Authorized on B (the session made on A), exchanged on A, userinfo on B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let resp = client
            .get(b.url("/oauth/authorize?client_id=web&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcallback&response_type=code&scope=openid+offline_access&state=s&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"))
            .send().await.unwrap();
        let to = location(&resp);
        let code = url::Url::parse(&to).unwrap().query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.to_string()).expect("a code");
        let (status, tokens) = token_request(&a, &[
            ("grant_type", "authorization_code"), ("code", &code),
            ("redirect_uri", "https://app.example.com/callback"), ("code_verifier", verifier),
        ]).await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        assert_eq!(userinfo_status(&b, tokens["access_token"].as_str().unwrap()).await, StatusCode::OK);
        // The same code on B: a replay.
        let (status, _) = token_request(&b, &[
            ("grant_type", "authorization_code"), ("code", &code),
            ("redirect_uri", "https://app.example.com/callback"), ("code_verifier", verifier),
        ]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(userinfo_status(&a, tokens["access_token"].as_str().unwrap()).await, StatusCode::UNAUTHORIZED, "the replay revoked the grant on both");

        // A new grant: refreshed on A, the old refresh token reused on B revokes the family.
        let resp = client
            .get(a.url("/oauth/authorize?client_id=web&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcallback&response_type=code&scope=openid+offline_access&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"))
            .send().await.unwrap();
        let to = location(&resp);
        let code = url::Url::parse(&to).unwrap().query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.to_string()).unwrap();
        let (_, tokens) = token_request(&b, &[
            ("grant_type", "authorization_code"), ("code", &code),
            ("redirect_uri", "https://app.example.com/callback"), ("code_verifier", verifier),
        ]).await;
        let first = tokens["refresh_token"].as_str().expect("offline_access").to_string();
        let (status, refreshed) = token_request(&a, &[("grant_type", "refresh_token"), ("refresh_token", &first)]).await;
        assert_eq!(status, StatusCode::OK, "{refreshed}");
        let second = refreshed["refresh_token"].as_str().unwrap().to_string();
        let (status, body) = token_request(&b, &[("grant_type", "refresh_token"), ("refresh_token", &first)]).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
        let (status, _) = token_request(&a, &[("grant_type", "refresh_token"), ("refresh_token", &second)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "the whole family is revoked");
        assert_eq!(userinfo_status(&b, refreshed["access_token"].as_str().unwrap()).await, StatusCode::UNAUTHORIZED);
    }
}

crate::backend_tests! {
    async fn a_sign_out_on_one_instance_ends_the_session_token_on_another_which_had_it_cached() {
        let cluster = Cluster::new().await;
        let (a, b) = tokio::join!(cluster.start("a"), cluster.start("b"));
        let client = browser();
        let verify = cluster.start_sign_up(&client, &a.address, "cached@example.com").await.unwrap();
        let code = cluster.smtp.wait_for("cached@example.com", 1).await.code();
        cluster.enter_code(&client, &a.address, &verify, &code).await.unwrap();
        let me: serde_json::Value = client.get(a.url("/v1/client")).send().await.unwrap().json().await.unwrap();
        let sid = me["sessions"][0]["id"].as_str().expect("signed in").to_string();
        let token: serde_json::Value = client
            .post(a.url(&format!("/v1/client/sessions/{sid}/tokens")))
            .header("Origin", &cluster.public_url)
            .json(&serde_json::json!({}))
            .send().await.unwrap().json().await.unwrap();
        let verify_on = |i: &Instance| {
            reqwest::Client::new()
                .post(i.url("/v1/sessions/verify"))
                .bearer_auth(SECRET_KEY)
                .json(&serde_json::json!({"token": token["jwt"]}))
                .send()
        };
        // B has read the session (and keeps it in its cache of live sessions).
        for _ in 0..3 {
            let v: serde_json::Value = verify_on(&b).await.unwrap().json().await.unwrap();
            assert_eq!(v["active"], true, "{v}");
        }
        // Signed out on A: inactive on A at once, and on B once it has read the revocation log.
        let profile = cluster.page(&client, &a.url("/user")).await.unwrap();
        let resp = cluster.post(&client, &a.address, &profile, "/sign-out", &[]).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let v: serde_json::Value = verify_on(&a).await.unwrap().json().await.unwrap();
        assert_eq!(v, serde_json::json!({"active": false}));
        // B reads the log twice a second; 5 s is far inside the cache's own one-minute bound,
        // so only the log can have ended it (generous for a loaded machine).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let v: serde_json::Value = verify_on(&b).await.unwrap().json().await.unwrap();
            if v["active"] == false {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "B still trusts the ended session: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

crate::postgres_tests! {
    async fn an_unreachable_database_gets_a_503_page_and_readyz_reports_it() {
        let app = crate::helpers::spawn_app_with(|c| c.database_acquire_timeout_secs = 1).await;
        app.sign_up("gone@example.com").await;
        assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);

        app.drop_postgres_database().await;

        let started = std::time::Instant::now();
        let resp = app.get("/user").await;
        let took = started.elapsed();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["retry-after"], "5");
        let csp = resp.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            csp.contains("frame-ancestors 'none'"),
            "error pages carry the security headers: {csp}"
        );
        assert_eq!(resp.headers()["cache-control"], "no-store");
        assert!(resp
            .text()
            .await
            .unwrap()
            .contains("Temporarily unavailable"));
        // 1 s is configured: a generous margin for a busy machine, still far from a hang.
        assert!(took < Duration::from_secs(20), "answered, not hung: {took:?}");
        assert_eq!(
            app.get("/readyz").await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
