//! `latchkey-bench`: a bounded, loopback-only load generator for complete sign-in (or sign-up)
//! flows. It seeds users through Latchkey's own store code (SQLite or PostgreSQL), measures a
//! calibration of the machine, starts one or more `latchkey` processes on the one database with
//! their SMTP pointed at the benchmark's own SMTP receiver, runs virtual users that each loop
//! over whole flows (page, identifier, code by real SMTP, code, /user) the way a browser does,
//! and prints one JSON line and a table. See BENCHMARKS.md.
//!
//! Modes (`--mode`, several comma-separated run one after another on the same servers, each
//! with its own warm-up, so they are compared on one machine in one run): `sign-in`,
//! `sign-up`, `oidc` (an app's complete OpenID Connect login: authorize → hosted sign-in by
//! code → back to authorize → token exchange → userinfo) and `verify` (an app's backend
//! checking a session token with `POST /v1/sessions/verify`).

mod calibrate;
mod http;
mod seed;
mod server;
mod smtp;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Parser, ValueEnum};

use seed::{user_email, Database};
use server::{cpu_seconds, peak_rss_mb, postgres_cpu_seconds, Server, ServerConfig};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    SignIn,
    SignUp,
    /// A complete OpenID Connect login with the benchmark's client.
    Oidc,
    /// `POST /v1/sessions/verify` of a session token (each virtual user signs in once first).
    Verify,
}

/// The benchmark's OpenID Connect client (written to the configuration file the servers read).
const OIDC_CLIENT: &str = "bench";
const OIDC_SECRET: &str = "latchkey-bench-oidc-secret-0123456789abcdef";
const OIDC_CALLBACK: &str = "http://127.0.0.1/callback";
/// RFC 7636 appendix B: a PKCE verifier and its S256 challenge.
const PKCE_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const PKCE_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
/// The backend API key `verify` calls with.
pub const SECRET_KEY: &str = "sk_bench_0123456789abcdef0123456789abcdef";

/// The servers' configuration file: the benchmark's client, signing with `alg`.
fn config_toml(alg: &str) -> String {
    format!(
        "[[oidc.clients]]\nid = \"{OIDC_CLIENT}\"\nsecret = \"{OIDC_SECRET}\"\nredirect_uris = [\"{OIDC_CALLBACK}\"]\nid_token_signed_response_alg = \"{alg}\"\n"
    )
}

/// The value of query parameter `name` in `url` (a path with a query, or a full URL).
fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Benchmark complete one-time-code flows against local Latchkey processes.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Users seeded before the run (sign-in picks among them).
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Virtual users, each running one flow after another.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// What each virtual user repeats; several, comma-separated, run one after another.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sign-in")]
    mode: Vec<Mode>,
    /// SQLite file to use (seeded if it has fewer users). Default: target/bench/users-<N>.db
    #[arg(long, conflicts_with = "database_url")]
    database: Option<PathBuf>,
    /// A PostgreSQL database instead of SQLite, e.g.
    /// postgres://postgres@127.0.0.1:5432/latchkey_bench: created if missing (from the server's
    /// `postgres` database), seeded if it has fewer users. A sqlite:// URL names a file.
    #[arg(long)]
    database_url: Option<String>,
    /// Start from an empty database: delete the SQLite file, or drop the PostgreSQL database.
    #[arg(long)]
    fresh: bool,
    /// `latchkey` processes sharing the one database, each on its own port; the virtual users
    /// are spread over them round-robin.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// SQLite `synchronous` level for the server: full (survives power loss) or normal.
    #[arg(long, default_value = "full")]
    synchronous: String,
    /// The server's `database_max_connections` (per instance). Default: the server's own.
    #[arg(long)]
    database_max_connections: Option<u32>,
    /// The latchkey binary to start. Default: next to this one.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// The server's `max_in_flight_requests` (beyond it, requests get 503 + Retry-After).
    /// Default: the server's own default.
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Threads of the load generator itself (it shares the machine with the server).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// The `Accept-Encoding` every request sends; "" sends none (uncompressed pages, for an
    /// A/B of compression). The server produces gzip only.
    #[arg(long, default_value = http::BROWSER_ACCEPT_ENCODING)]
    accept_encoding: String,
    /// How the benchmark's OpenID Connect client has its ID and access tokens signed: EdDSA
    /// (the default here), ES256, or RS256 (every client library's default; an RSA signature
    /// costs about 0.5 ms of CPU, two per login: see BENCHMARKS.md).
    #[arg(long, default_value = "EdDSA")]
    oidc_alg: String,
    /// Seconds each calibration measurement runs (0 skips the calibration).
    #[arg(long, default_value_t = 1.0)]
    calibration_secs: f64,
}

impl Args {
    fn database(&self) -> anyhow::Result<Database> {
        if let Some(url) = &self.database_url {
            if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                return Ok(Database::Postgres(url.clone()));
            }
            if let Some(path) = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
            {
                return Ok(Database::Sqlite(PathBuf::from(path)));
            }
            bail!("--database-url must start with postgres:// (or sqlite://)");
        }
        Ok(Database::Sqlite(self.database.clone().unwrap_or_else(
            || PathBuf::from(format!("target/bench/users-{}.db", self.users)),
        )))
    }
}

/// Timings of one complete flow, in microseconds, and what it received.
#[derive(Default, Clone)]
struct FlowTimes {
    page: u64,
    identifier: u64,
    delivery: u64,
    code: u64,
    user: u64,
    total: u64,
    traffic: http::Traffic,
}

#[derive(Default)]
struct Results {
    flows: Vec<FlowTimes>,
    errors: BTreeMap<String, u64>,
    /// Errors of flows that started during the warm-up or ended after the deadline: not part
    /// of the result, but shown, so a run that measured little says why.
    uncounted_errors: BTreeMap<String, u64>,
}

/// The browser state of one virtual user: its own cookies, kept by hand so each flow starts
/// signed out while the connection is reused.
struct Browser {
    client: http::Client,
    browser_cookie: Option<String>,
    /// Set when the server asked to come back later (`Retry-After`); the user waits that long.
    retry_after: Option<u64>,
    /// The session cookie of the last completed sign-in (`verify` signs in once first).
    session: Option<String>,
}

fn csrf_token(html: &str) -> Option<String> {
    let start = html.find("name=\"csrf_token\" value=\"")? + "name=\"csrf_token\" value=\"".len();
    let end = html[start..].find('"')?;
    Some(html[start..start + end].to_string())
}

type Step<T> = Result<T, String>;

/// An unexpected answer, by step. A 429 or 503 with `Retry-After` (the server refusing work
/// beyond its capacity) is counted apart from other 5xx.
fn status_error(step: &str, r: &http::Response) -> String {
    match (r.status, r.retry_after) {
        (429 | 503, Some(_)) => format!("{step}:http_{}_retry_after", r.status),
        (s, _) if s >= 500 => format!("{step}:http_5xx"),
        (s, _) => format!("{step}:http_{s}"),
    }
}

impl Browser {
    fn remember(&mut self, r: &http::Response) {
        if matches!(r.status, 429 | 503) {
            self.retry_after = r.retry_after;
        }
        if let Some(b) = r.cookie("latchkey_browser") {
            self.browser_cookie = Some(b.to_string());
        }
    }

    async fn get(&mut self, path: &str, session: Option<&str>) -> Step<http::Response> {
        let mut cookies: Vec<(&str, &str)> = Vec::with_capacity(2);
        if let Some(b) = &self.browser_cookie {
            cookies.push(("latchkey_browser", b));
        }
        if let Some(s) = session {
            cookies.push(("latchkey_session", s));
        }
        let r = self
            .client
            .get(path, &cookies)
            .await
            .map_err(|e| e.kind())?;
        self.remember(&r);
        Ok(r)
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Step<http::Response> {
        let browser = self.browser_cookie.clone();
        let cookies: Vec<(&str, &str)> = browser
            .as_deref()
            .map(|b| ("latchkey_browser", b))
            .into_iter()
            .collect();
        let r = self
            .client
            .post_form(path, &cookies, form)
            .await
            .map_err(|e| e.kind())?;
        self.remember(&r);
        Ok(r)
    }

    /// One complete OpenID Connect login for `email`: the steps are timed as a flow's, with
    /// `page` = authorize and the sign-in page, `code` = the code submit and the return to
    /// authorize (to the client's callback with a code), `user` = the token exchange and
    /// userinfo.
    async fn oidc_flow(&mut self, email: &str, smtp: &smtp::Receiver) -> Step<FlowTimes> {
        let callback: String =
            url::form_urlencoded::byte_serialize(OIDC_CALLBACK.as_bytes()).collect();
        let authorize = format!(
            "/oauth/authorize?client_id={OIDC_CLIENT}&redirect_uri={callback}&response_type=code&scope=openid+email&state=s&nonce=n&code_challenge={PKCE_CHALLENGE}&code_challenge_method=S256"
        );
        let t0 = Instant::now();
        let traffic_before = self.client.traffic;
        let r = self.get(&authorize, None).await?;
        if r.status != 303 {
            return Err(status_error("authorize", &r));
        }
        let sign_in = r.location.ok_or("authorize:no_location")?;
        let back = query_param(&sign_in, "redirect_url").ok_or("authorize:no_redirect_url")?;
        let r = self.get(&sign_in, None).await?;
        if r.status != 200 {
            return Err(status_error("page", &r));
        }
        let token = csrf_token(r.text()).ok_or("page:no_csrf_token")?;
        let t1 = Instant::now();
        let coded = self
            .identifier_then_code("/sign-in", &token, email, &back, smtp)
            .await?;
        let (t2, t3, session) = (coded.code_page, coded.code_sent, coded.session);
        let resume = coded.location.ok_or("code:no_location")?;
        let r = self.get(&resume, Some(&session)).await?;
        if r.status != 303 {
            return Err(status_error("authorize_again", &r));
        }
        let to_client = r.location.ok_or("authorize_again:no_location")?;
        let code = query_param(&to_client, "code").ok_or("authorize_again:no_code")?;
        let t4 = Instant::now();
        let form = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", OIDC_CALLBACK),
                ("code_verifier", PKCE_VERIFIER),
                ("client_id", OIDC_CLIENT),
                ("client_secret", OIDC_SECRET),
            ])
            .finish();
        let r = self
            .client
            .request(
                "POST",
                "/oauth/token",
                &[],
                &[],
                Some(("application/x-www-form-urlencoded", form.as_bytes())),
            )
            .await
            .map_err(|e| e.kind())?;
        if r.status != 200 {
            return Err(status_error("token", &r));
        }
        let tokens: serde_json::Value =
            serde_json::from_slice(&r.body).map_err(|_| "token:not_json".to_string())?;
        let access = tokens["access_token"]
            .as_str()
            .ok_or("token:no_access_token")?;
        let bearer = format!("Bearer {access}");
        let r = self
            .client
            .request(
                "GET",
                "/oauth/userinfo",
                &[],
                &[("Authorization", &bearer)],
                None,
            )
            .await
            .map_err(|e| e.kind())?;
        if r.status != 200 {
            return Err(status_error("userinfo", &r));
        }
        if !r.text().contains(email) {
            return Err("userinfo:wrong_user".into());
        }
        let t5 = Instant::now();
        let us = |d: Duration| d.as_micros() as u64;
        Ok(FlowTimes {
            page: us(t1 - t0),
            identifier: us(t2 - t1),
            delivery: us(coded.delivered_at.saturating_duration_since(t1)),
            code: us(t4 - t3),
            user: us(t5 - t4),
            total: us(t5 - t0),
            traffic: self.client.traffic - traffic_before,
        })
    }

    /// A session token of this user's session (signed in by the last flow).
    async fn session_token(&mut self) -> Step<String> {
        let session = self.session.clone().ok_or("token:not_signed_in")?;
        let cookies = [("latchkey_session", session.as_str())];
        let r = self
            .client
            .request("GET", "/v1/client", &cookies, &[], None)
            .await
            .map_err(|e| e.kind())?;
        let client: serde_json::Value =
            serde_json::from_slice(&r.body).map_err(|_| "client:not_json".to_string())?;
        let sid = client["sessions"][0]["id"]
            .as_str()
            .ok_or("client:no_session")?;
        let origin = self.client.origin().to_string();
        let r = self
            .client
            .request(
                "POST",
                &format!("/v1/client/sessions/{sid}/tokens"),
                &cookies,
                &[("Origin", &origin)],
                Some(("application/json", b"{}")),
            )
            .await
            .map_err(|e| e.kind())?;
        if r.status != 200 {
            return Err(status_error("token", &r));
        }
        let body: serde_json::Value =
            serde_json::from_slice(&r.body).map_err(|_| "token:not_json".to_string())?;
        Ok(body["jwt"].as_str().ok_or("token:no_jwt")?.to_string())
    }

    /// One `POST /v1/sessions/verify` of `jwt`, as an app's backend sends it.
    async fn verify(&mut self, jwt: &str) -> Step<FlowTimes> {
        let t0 = Instant::now();
        let traffic_before = self.client.traffic;
        let body = serde_json::json!({ "token": jwt }).to_string();
        let bearer = format!("Bearer {SECRET_KEY}");
        let r = self
            .client
            .request(
                "POST",
                "/v1/sessions/verify",
                &[],
                &[("Authorization", &bearer)],
                Some(("application/json", body.as_bytes())),
            )
            .await
            .map_err(|e| e.kind())?;
        if r.status != 200 {
            return Err(status_error("verify", &r));
        }
        if !r.text().contains("\"active\":true") {
            return Err("verify:inactive".into());
        }
        let total = t0.elapsed().as_micros() as u64;
        Ok(FlowTimes {
            total,
            traffic: self.client.traffic - traffic_before,
            ..FlowTimes::default()
        })
    }

    /// One complete flow for `email`.
    async fn flow(&mut self, mode: Mode, email: &str, smtp: &smtp::Receiver) -> Step<FlowTimes> {
        let start_path = match mode {
            Mode::SignUp => "/sign-up",
            Mode::Oidc => return self.oidc_flow(email, smtp).await,
            Mode::SignIn | Mode::Verify => "/sign-in",
        };
        let t0 = Instant::now();
        let traffic_before = self.client.traffic;
        let r = self.get(start_path, None).await?;
        if r.status != 200 {
            return Err(status_error("page", &r));
        }
        let token = csrf_token(r.text()).ok_or("page:no_csrf_token")?;
        let t1 = Instant::now();

        let coded = self
            .identifier_then_code(start_path, &token, email, "", smtp)
            .await?;
        let (t2, t3, session) = (coded.code_page, coded.code_sent, coded.session);
        let delivered_at = coded.delivered_at;
        let t4 = Instant::now();

        let r = self.get("/user", Some(&session)).await?;
        if r.status != 200 {
            return Err(status_error("user", &r));
        }
        if !r.text().contains(email) {
            return Err("user:wrong_user".into());
        }
        self.session = Some(session);
        let t5 = Instant::now();
        let us = |d: Duration| d.as_micros() as u64;
        Ok(FlowTimes {
            page: us(t1 - t0),
            identifier: us(t2 - t1),
            delivery: us(delivered_at.saturating_duration_since(t1)),
            code: us(t4 - t3),
            user: us(t5 - t4),
            total: us(t5 - t0),
            traffic: self.client.traffic - traffic_before,
        })
    }

    /// The steps every flow shares after its page: the identifier posted to `path` (with the
    /// page's `token` and `redirect_url`), the code page, the code by SMTP, the code posted.
    async fn identifier_then_code(
        &mut self,
        path: &str,
        token: &str,
        email: &str,
        redirect_url: &str,
        smtp: &smtp::Receiver,
    ) -> Step<Coded> {
        let delivered = smtp.expect(email);
        let r = self
            .post(
                path,
                &[
                    ("csrf_token", token),
                    ("email_address", email),
                    ("redirect_url", redirect_url),
                ],
            )
            .await?;
        if r.status != 303 {
            smtp.forget(email);
            return Err(status_error("identifier", &r));
        }
        let verify = r.location.ok_or("identifier:no_location")?;
        let r = self.get(&verify, None).await?;
        if r.status != 200 {
            return Err(status_error("code_page", &r));
        }
        let token = csrf_token(r.text()).ok_or("code_page:no_csrf_token")?;
        let code_page = Instant::now();
        let delivery = tokio::time::timeout(Duration::from_secs(10), delivered)
            .await
            .map_err(|_| {
                smtp.forget(email);
                "delivery:timeout".to_string()
            })?
            .map_err(|_| "delivery:dropped".to_string())?;
        let code_sent = Instant::now();
        let r = self
            .post(&verify, &[("csrf_token", &token), ("code", &delivery.code)])
            .await?;
        if r.status != 303 {
            return Err(status_error("code", &r));
        }
        let session = r
            .cookie("latchkey_session")
            .ok_or("code:no_session_cookie")?
            .to_string();
        Ok(Coded {
            code_page,
            delivered_at: delivery.at,
            code_sent,
            session,
            location: r.location,
        })
    }
}

/// Where [`Browser::identifier_then_code`] left a flow.
struct Coded {
    /// When the code page had loaded.
    code_page: Instant,
    /// When the message was complete at the SMTP receiver.
    delivered_at: Instant,
    /// When the code was about to be posted.
    code_sent: Instant,
    session: String,
    /// Where the code's answer redirects.
    location: Option<String>,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64 / 1000.0
}

fn summary(values: impl Iterator<Item = u64>) -> (f64, f64, f64, f64) {
    let mut v: Vec<u64> = values.collect();
    v.sort_unstable();
    (
        percentile(&v, 50.0),
        percentile(&v, 90.0),
        percentile(&v, 99.0),
        percentile(&v, 100.0),
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = if args.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.client_threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(run(args))
}

/// CPU seconds so far: the server instances, the load generator, PostgreSQL (if used).
#[derive(Clone, Copy, Default)]
struct Cpu {
    servers: f64,
    own: f64,
    database: f64,
}

impl Cpu {
    /// `postgres`: the PostgreSQL database's name, if the run uses one.
    fn now(pids: &[u32], postgres: Option<&str>) -> Cpu {
        Cpu {
            servers: pids.iter().map(|&p| cpu_seconds(p)).sum(),
            own: cpu_seconds(std::process::id()),
            database: postgres.map_or(0.0, postgres_cpu_seconds),
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if !matches!(args.synchronous.as_str(), "full" | "normal") {
        bail!("--synchronous must be full or normal");
    }
    if args.instances == 0 {
        bail!("--instances must be at least 1");
    }
    let database = args.database()?;
    seed::prepare(&database, args.fresh).await?;
    seed::seed(&database, args.users).await?;

    let calibration = if args.calibration_secs > 0.0 {
        eprintln!("calibrating the machine…");
        let postgres_url = match &database {
            Database::Postgres(url) => Some(url.as_str()),
            Database::Sqlite(_) => None,
        };
        Some(
            calibrate::measure(
                std::path::Path::new("target/bench"),
                postgres_url,
                Duration::from_secs_f64(args.calibration_secs),
            )
            .await?,
        )
    } else {
        None
    };

    let smtp = smtp::Receiver::default();
    let smtp_port = smtp.start().await?;
    let bin = match &args.server_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("latchkey"),
    };
    std::fs::create_dir_all("target/bench")?;
    let config_file = std::path::PathBuf::from("target/bench/latchkey-bench.toml");
    std::fs::write(&config_file, config_toml(&args.oidc_alg))?;
    let config = ServerConfig {
        config_file: &config_file,
        bin: &bin,
        database: &database,
        smtp_port,
        synchronous: &args.synchronous,
        max_in_flight: args.max_in_flight,
        database_max_connections: args.database_max_connections,
    };
    // One after another, so each cold start is measured alone (the first one also migrates a
    // fresh database).
    let mut servers: Vec<Server> = Vec::with_capacity(args.instances);
    let mut cold_starts = Vec::with_capacity(args.instances);
    for _ in 0..args.instances {
        let (server, cold_start) = server::start(&config).await?;
        servers.push(server);
        cold_starts.push(cold_start.as_secs_f64() * 1000.0);
    }
    let pids: Vec<u32> = servers.iter().map(Server::pid).collect();
    let postgres = database.postgres_name();
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();

    let mut throughput: Vec<(Mode, f64)> = Vec::new();
    for &mode in &args.mode {
        let (results, cpu) = phase(&args, mode, &bases, &smtp, &pids, postgres.as_deref()).await?;
        let rss: Vec<f64> = pids.iter().map(|&p| peak_rss_mb(p)).collect();
        let report = Report {
            args: &args,
            mode,
            database: &database,
            calibration: calibration.as_ref(),
            results: &results,
            cpu,
            rss,
            cold_starts: cold_starts.clone(),
        };
        println!("{}", report.json());
        report.table();
        throughput.push((mode, report.flows_per_s()));
    }
    drop(servers);
    // Each mode beside the sign-in flows of the same run.
    if let Some(&(_, sign_in)) = throughput.iter().find(|(m, _)| *m == Mode::SignIn) {
        for (mode, per_s) in &throughput {
            if *mode != Mode::SignIn && sign_in > 0.0 {
                eprintln!(
                    "{:<28} {:.2} × the sign-in flows/s ({per_s:.0} / {sign_in:.0})",
                    format!("{mode:?} / sign-in"),
                    per_s / sign_in
                );
            }
        }
    }
    Ok(())
}

/// Runs `mode` for the warm-up and the measured seconds; answers what was measured and the CPU
/// the measured seconds took.
async fn phase(
    args: &Args,
    mode: Mode,
    bases: &[String],
    smtp: &smtp::Receiver,
    pids: &[u32],
    postgres: Option<&str>,
) -> anyhow::Result<(Results, Cpu)> {
    let results = Arc::new(Mutex::new(Results::default()));
    let run_start = Instant::now();
    let measure_from = run_start + Duration::from_secs(args.warmup);
    let deadline = measure_from + Duration::from_secs(args.duration);
    let run_id = time::OffsetDateTime::now_utc().unix_timestamp();

    let cpu_at_start = Arc::new(Mutex::new(None));
    {
        let (cpu_at_start, pids, postgres) = (
            cpu_at_start.clone(),
            pids.to_vec(),
            postgres.map(String::from),
        );
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            *cpu_at_start.lock().unwrap() = Some(Cpu::now(&pids, postgres.as_deref()));
        });
    }

    let mut tasks = Vec::new();
    for vu in 0..args.concurrency {
        let results = results.clone();
        let smtp = smtp.clone();
        // Round-robin over the instances.
        let base = bases[vu % bases.len()].clone();
        let (users, concurrency) = (args.users, args.concurrency);
        let accept_encoding = args.accept_encoding.clone();
        tasks.push(tokio::spawn(async move {
            let mut browser = Browser {
                client: http::Client::new(&base, Duration::from_secs(10))
                    .with_accept_encoding(&accept_encoding),
                browser_cookie: None,
                retry_after: None,
                session: None,
            };
            // `verify`: one sign-in first, then a session token, renewed before its 60 s end.
            let mut jwt: Option<(String, Instant)> = None;
            // Each virtual user walks its own slice of the users, so no two run one address at once.
            let mut k = 0usize;
            while Instant::now() < deadline {
                let email = match mode {
                    Mode::SignUp => format!("new{run_id}-{vu}-{k}@bench.example"),
                    _ => user_email((vu + k * concurrency) % users.max(1)),
                };
                k += 1;
                let started = Instant::now();
                let outcome = match mode {
                    Mode::Verify => {
                        let fresh = jwt
                            .as_ref()
                            .is_some_and(|(_, at)| at.elapsed() < Duration::from_secs(45));
                        if !fresh {
                            let minted = match browser.flow(Mode::SignIn, &email, &smtp).await {
                                Ok(_) => browser.session_token().await,
                                Err(e) => Err(e),
                            };
                            match minted {
                                Ok(t) => jwt = Some((t, Instant::now())),
                                Err(e) => {
                                    let mut r = results.lock().unwrap();
                                    *r.uncounted_errors.entry(format!("setup:{e}")).or_default() +=
                                        1;
                                    continue;
                                }
                            }
                            // The sign-in is setup, not a verify: not counted.
                            continue;
                        }
                        let token = jwt.as_ref().map(|(t, _)| t.clone()).unwrap_or_default();
                        browser.verify(&token).await
                    }
                    _ => browser.flow(mode, &email, &smtp).await,
                };
                let finished = Instant::now();
                if let Some(secs) = browser.retry_after.take() {
                    // As a well-behaved client: wait as asked (bounded by the run's end).
                    let until = (finished + Duration::from_secs(secs)).min(deadline);
                    tokio::time::sleep_until(until.into()).await;
                }
                let counted = started >= measure_from && finished <= deadline;
                let mut r = results.lock().unwrap();
                match outcome {
                    Ok(t) if counted => r.flows.push(t),
                    Ok(_) => {}
                    Err(e) if counted => *r.errors.entry(e).or_default() += 1,
                    Err(e) => *r.uncounted_errors.entry(e).or_default() += 1,
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let cpu_end = Cpu::now(pids, postgres);
    let cpu_start = cpu_at_start.lock().unwrap().unwrap_or_default();
    let results = std::mem::take(&mut *results.lock().unwrap());
    Ok((
        results,
        Cpu {
            servers: cpu_end.servers - cpu_start.servers,
            own: cpu_end.own - cpu_start.own,
            database: cpu_end.database - cpu_start.database,
        },
    ))
}

struct Report<'a> {
    args: &'a Args,
    mode: Mode,
    database: &'a Database,
    calibration: Option<&'a calibrate::Calibration>,
    results: &'a Results,
    /// Over the measured seconds.
    cpu: Cpu,
    /// Peak RSS of each instance, in MB.
    rss: Vec<f64>,
    /// Each instance's cold start, in ms.
    cold_starts: Vec<f64>,
}

type Summary = (f64, f64, f64, f64);

impl Report<'_> {
    fn flows(&self) -> usize {
        self.results.flows.len()
    }

    fn flows_per_s(&self) -> f64 {
        self.flows() as f64 / self.args.duration as f64
    }

    fn errors(&self) -> u64 {
        self.results.errors.values().sum()
    }

    fn per_flow(&self, total: f64) -> f64 {
        if self.flows() > 0 {
            total / self.flows() as f64
        } else {
            0.0
        }
    }

    fn step(&self, f: fn(&FlowTimes) -> u64) -> Summary {
        summary(self.results.flows.iter().map(f))
    }

    /// flow, page, identifier submit, code delivery, code submit, /user.
    fn latencies(&self) -> [(&'static str, &'static str, Summary); 6] {
        [
            ("flow", "flow", self.step(|f| f.total)),
            ("page", "  page", self.step(|f| f.page)),
            (
                "identifier_submit",
                "  identifier submit",
                self.step(|f| f.identifier),
            ),
            (
                "code_delivery",
                "  code delivery",
                self.step(|f| f.delivery),
            ),
            ("code_submit", "  code submit", self.step(|f| f.code)),
            ("user", "  /user", self.step(|f| f.user)),
        ]
    }

    /// Bytes received per flow: on the wire (headers and compressed bodies), bodies decoded,
    /// and how many responses came compressed.
    fn traffic_per_flow(&self) -> (f64, f64, f64) {
        let sum = |f: fn(&http::Traffic) -> u64| {
            self.per_flow(
                self.results
                    .flows
                    .iter()
                    .map(|t| f(&t.traffic) as f64)
                    .sum(),
            )
        };
        (sum(|t| t.wire), sum(|t| t.decoded), sum(|t| t.compressed))
    }

    fn json(&self) -> serde_json::Value {
        let args = self.args;
        let [flow, page, ident, deliv, code, user] = self.latencies().map(|(_, _, s)| s);
        let (wire, decoded, compressed) = self.traffic_per_flow();
        let postgres = self.database.is_postgres();
        serde_json::json!({
            "mode": format!("{:?}", self.mode),
            "database": self.database.backend(),
            "instances": args.instances,
            "oidc_alg": (self.mode == Mode::Oidc).then_some(&args.oidc_alg),
            "users": args.users,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "synchronous": if postgres { None } else { Some(&args.synchronous) },
            "accept_encoding": args.accept_encoding,
            "calibration": self.calibration.map(|c| c.json()),
            "flows": self.flows(),
            "flows_per_s": self.flows_per_s(),
            "errors": self.errors(),
            "errors_by_kind": self.results.errors,
            "uncounted_errors_by_kind": self.results.uncounted_errors,
            "flow_ms": {"p50": flow.0, "p90": flow.1, "p99": flow.2, "max": flow.3},
            "steps_ms": {
                "page": {"p50": page.0, "p99": page.2},
                "identifier_submit": {"p50": ident.0, "p99": ident.2},
                "code_delivery": {"p50": deliv.0, "p99": deliv.2},
                "code_submit": {"p50": code.0, "p99": code.2},
                "user": {"p50": user.0, "p99": user.2},
            },
            "response_bytes_per_flow": {
                "wire": wire.round(),
                "decoded": decoded.round(),
                "compressed_responses": compressed,
            },
            "server_cpu_s": self.cpu.servers,
            "server_cpu_ms_per_flow": self.per_flow(self.cpu.servers * 1000.0),
            "database_cpu_s": postgres.then_some(self.cpu.database),
            "database_cpu_ms_per_flow": postgres.then(|| self.per_flow(self.cpu.database * 1000.0)),
            "server_peak_rss_mb": self.rss.iter().sum::<f64>(),
            "server_peak_rss_mb_by_instance": self.rss,
            "load_generator_cpu_s": self.cpu.own,
            "load_generator_cpu_ms_per_flow": self.per_flow(self.cpu.own * 1000.0),
            "cold_start_ms": self.cold_starts.first().copied().unwrap_or(0.0),
            "cold_start_ms_by_instance": self.cold_starts,
        })
    }

    fn table(&self) {
        let args = self.args;
        let secs = args.duration;
        let (flows, errors) = (self.flows(), self.errors());
        eprintln!();
        if let Some(c) = self.calibration {
            eprintln!(
                "{:<28} SQLite {:.0} commits/s FULL, {:.0} NORMAL; HMAC-SHA256 {:.0}/s",
                "calibration",
                c.sqlite_commits_per_s_full,
                c.sqlite_commits_per_s_normal,
                c.hmac_sha256_per_s
            );
            if let Some(p) = &c.postgres {
                eprintln!(
                    "{:<28} PostgreSQL {} {:.0} commits/s (synchronous_commit = {})",
                    "", p.version, p.commits_per_s, p.synchronous_commit
                );
            }
        }
        let sync = if self.database.is_postgres() {
            String::new()
        } else {
            format!(", synchronous={}", args.synchronous)
        };
        eprintln!(
            "{:<28} {} × {} ({}{sync})",
            "database / instances",
            self.database.backend(),
            args.instances,
            self.database.describe()
        );
        eprintln!(
            "{:<28} {:?} / {} / {}",
            "mode / users / concurrency", self.mode, args.users, args.concurrency
        );
        if self.mode == Mode::Oidc {
            eprintln!("{:<28} {}", "tokens signed with", args.oidc_alg);
        }
        eprintln!(
            "{:<28} {:.0} flows/s ({flows} flows in {secs} s), {errors} errors",
            "throughput",
            self.flows_per_s()
        );
        for (k, v) in self.results.errors.iter() {
            eprintln!("{:<28} {v}", format!("  error {k}"));
        }
        for (k, v) in self.results.uncounted_errors.iter() {
            eprintln!(
                "{:<28} {v} (warm-up or past the deadline: not counted)",
                format!("  error {k}")
            );
        }
        eprintln!(
            "{:<28} {:>8} {:>8} {:>8} {:>8}",
            "latency (ms)", "p50", "p90", "p99", "max"
        );
        for (_, name, s) in self.latencies() {
            eprintln!(
                "{:<28} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                name, s.0, s.1, s.2, s.3
            );
        }
        let (wire, decoded, compressed) = self.traffic_per_flow();
        eprintln!(
            "{:<28} {:.0} B on the wire, {:.0} B decoded ({:.1} compressed responses; Accept-Encoding: {:?})",
            "received per flow", wire, decoded, compressed, args.accept_encoding
        );
        let cpu_line = |name: &str, cpu: f64| {
            eprintln!(
                "{:<28} {:.2} s ({:.3} ms per flow)",
                name,
                cpu,
                self.per_flow(cpu * 1000.0)
            );
        };
        cpu_line("server CPU", self.cpu.servers);
        if self.database.is_postgres() {
            cpu_line("PostgreSQL CPU", self.cpu.database);
        }
        cpu_line("load generator CPU", self.cpu.own);
        let by_instance = |values: &[f64], unit: &str| {
            values
                .iter()
                .map(|v| format!("{v:.0} {unit}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        eprintln!(
            "{:<28} {:.1} MB ({})",
            "server peak RSS",
            self.rss.iter().sum::<f64>(),
            by_instance(&self.rss, "MB")
        );
        eprintln!(
            "{:<28} {}",
            "cold start",
            by_instance(&self.cold_starts, "ms")
        );
    }
}
