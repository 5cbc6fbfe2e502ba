//! `latchkey-bench`: a bounded, loopback-only load generator for complete sign-in (or sign-up)
//! flows. It seeds users through Latchkey's own store code, starts the `latchkey` binary with its
//! SMTP pointed at the benchmark's own SMTP receiver, runs virtual users that each loop over
//! whole flows (page, identifier, code by real SMTP, code, /user), and prints one JSON line and a
//! table. See BENCHMARKS.md.

mod http;
mod smtp;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use latchkey::domain::EmailAddress;
use latchkey::store::{DatabaseOptions, Store};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    SignIn,
    SignUp,
}

/// Benchmark complete one-time-code flows against a local Latchkey.
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
    #[arg(long, value_enum, default_value = "sign-in")]
    mode: Mode,
    /// SQLite file to use (seeded if it has fewer users). Default: target/bench/users-<N>.db
    #[arg(long)]
    database: Option<PathBuf>,
    /// SQLite `synchronous` level for the server: full (survives power loss) or normal.
    #[arg(long, default_value = "full")]
    synchronous: String,
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
}

/// Timings of one complete flow, in microseconds.
#[derive(Default, Clone)]
struct FlowTimes {
    page: u64,
    identifier: u64,
    delivery: u64,
    code: u64,
    user: u64,
    total: u64,
}

#[derive(Default)]
struct Results {
    flows: Vec<FlowTimes>,
    errors: BTreeMap<String, u64>,
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the ')'; USER_HZ is 100.
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn user_email(i: usize) -> String {
    format!("user{i}@bench.example")
}

async fn seed(path: &Path, users: usize) -> anyhow::Result<()> {
    let store = Store::connect(&DatabaseOptions::sqlite_file(path)).await?;
    let have = store.count_users().await? as usize;
    if have < users {
        eprintln!(
            "seeding {} users into {} (have {have})…",
            users - have,
            path.display()
        );
        let started = Instant::now();
        let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let mut i = have;
        while i < users {
            let end = (i + 5_000).min(users);
            let batch: Vec<EmailAddress> = (i..end)
                .map(|k| EmailAddress::parse(&user_email(k)).expect("valid"))
                .collect();
            store.import_verified_emails(&batch, now).await?;
            i = end;
        }
        eprintln!("seeded in {:.1} s", started.elapsed().as_secs_f64());
    }
    store.close().await;
    Ok(())
}

async fn start_server(
    bin: &Path,
    database: &Path,
    smtp_port: u16,
    synchronous: &str,
    max_in_flight: Option<usize>,
) -> anyhow::Result<(Server, Duration)> {
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let mut command = Command::new(bin);
    if let Some(n) = max_in_flight {
        command.env("LATCHKEY_MAX_IN_FLIGHT_REQUESTS", n.to_string());
    }
    let child = command
        .env("LATCHKEY_LISTEN", format!("127.0.0.1:{port}"))
        .env("LATCHKEY_PUBLIC_URL", &base)
        .env(
            "LATCHKEY_DATABASE_URL",
            format!("sqlite://{}", database.display()),
        )
        .env("LATCHKEY_DATABASE_SQLITE_SYNCHRONOUS", synchronous)
        .env("LATCHKEY_SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}"))
        .env("LATCHKEY_DEV_MODE", "false")
        // One loopback client runs every flow, so the per-IP limits are off (they would refuse
        // it by design); the per-address limits stay on (their statements are part of the
        // measured cost) with ceilings no run reaches.
        .env("LATCHKEY_LIMITS__SEND_INTERVAL_SECS", "1")
        .env("LATCHKEY_LIMITS__SENDS_PER_10_MINUTES", "1000")
        .env("LATCHKEY_LIMITS__SENDS_PER_DAY", "10000")
        .env("LATCHKEY_LIMITS__IP_FLOWS_PER_10_SECONDS", "0")
        .env("LATCHKEY_LIMITS__IP_ATTEMPTS_PER_10_SECONDS", "0")
        .env("LATCHKEY_LIMITS__IP_SENDS_PER_HOUR", "0")
        .env("LATCHKEY_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let server = Server { child, base };
    let mut client = http::Client::new(&server.base, Duration::from_secs(2));
    let deadline = started + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = client.get("/sign-in", &[]).await {
            if r.status == 200 {
                return Ok((server, started.elapsed()));
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    bail!("the server did not answer /sign-in within 20 s")
}

/// The browser state of one virtual user: its own cookies, kept by hand so each flow starts
/// signed out while the connection is reused.
struct Browser {
    client: http::Client,
    browser_cookie: Option<String>,
    /// Set when the server asked to come back later (`Retry-After`); the user waits that long.
    retry_after: Option<u64>,
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

    /// One complete flow for `email`.
    async fn flow(&mut self, mode: Mode, email: &str, smtp: &smtp::Receiver) -> Step<FlowTimes> {
        let start_path = match mode {
            Mode::SignIn => "/sign-in",
            Mode::SignUp => "/sign-up",
        };
        let t0 = Instant::now();
        let r = self.get(start_path, None).await?;
        if r.status != 200 {
            return Err(status_error("page", &r));
        }
        let token = csrf_token(r.text()).ok_or("page:no_csrf_token")?;
        let t1 = Instant::now();

        let delivered = smtp.expect(email);
        let r = self
            .post(
                start_path,
                &[
                    ("csrf_token", &token),
                    ("email_address", email),
                    ("redirect_url", ""),
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
        let t2 = Instant::now();

        let delivery = tokio::time::timeout(Duration::from_secs(10), delivered)
            .await
            .map_err(|_| {
                smtp.forget(email);
                "delivery:timeout".to_string()
            })?
            .map_err(|_| "delivery:dropped".to_string())?;
        let t3 = Instant::now();

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
        let t4 = Instant::now();

        let r = self.get("/user", Some(&session)).await?;
        if r.status != 200 {
            return Err(status_error("user", &r));
        }
        if !r.text().contains(email) {
            return Err("user:wrong_user".into());
        }
        let t5 = Instant::now();
        let us = |d: Duration| d.as_micros() as u64;
        Ok(FlowTimes {
            page: us(t1 - t0),
            identifier: us(t2 - t1),
            delivery: us(delivery.at.saturating_duration_since(t1)),
            code: us(t4 - t3),
            user: us(t5 - t4),
            total: us(t5 - t0),
        })
    }
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

async fn run(args: Args) -> anyhow::Result<()> {
    if !matches!(args.synchronous.as_str(), "full" | "normal") {
        bail!("--synchronous must be full or normal");
    }
    let database = args
        .database
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("target/bench/users-{}.db", args.users)));
    if let Some(dir) = database.parent() {
        std::fs::create_dir_all(dir)?;
    }
    seed(&database, args.users).await?;

    let smtp = smtp::Receiver::default();
    let smtp_port = smtp.start().await?;
    let bin = match &args.server_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("latchkey"),
    };
    let (server, cold_start) = start_server(
        &bin,
        &database,
        smtp_port,
        &args.synchronous,
        args.max_in_flight,
    )
    .await?;
    let pid = server.child.id();

    let results = Arc::new(Mutex::new(Results::default()));
    let run_start = Instant::now();
    let measure_from = run_start + Duration::from_secs(args.warmup);
    let deadline = measure_from + Duration::from_secs(args.duration);
    let run_id = time::OffsetDateTime::now_utc().unix_timestamp();

    let cpu_at_start = Arc::new(Mutex::new(None));
    {
        let cpu_at_start = cpu_at_start.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            *cpu_at_start.lock().unwrap() =
                Some((cpu_seconds(pid), cpu_seconds(std::process::id())));
        });
    }

    let mut tasks = Vec::new();
    for vu in 0..args.concurrency {
        let results = results.clone();
        let smtp = smtp.clone();
        let base = server.base.clone();
        let (mode, users, concurrency) = (args.mode, args.users, args.concurrency);
        tasks.push(tokio::spawn(async move {
            let mut browser = Browser {
                client: http::Client::new(&base, Duration::from_secs(10)),
                browser_cookie: None,
                retry_after: None,
            };
            // Each virtual user walks its own slice of the users, so no two run one address at once.
            let mut k = 0usize;
            while Instant::now() < deadline {
                let email = match mode {
                    Mode::SignIn => user_email((vu + k * concurrency) % users.max(1)),
                    Mode::SignUp => format!("new{run_id}-{vu}-{k}@bench.example"),
                };
                k += 1;
                let started = Instant::now();
                let outcome = browser.flow(mode, &email, &smtp).await;
                let finished = Instant::now();
                if let Some(secs) = browser.retry_after.take() {
                    // As a well-behaved client: wait as asked (bounded by the run's end).
                    let until = (finished + Duration::from_secs(secs)).min(deadline);
                    tokio::time::sleep_until(until.into()).await;
                }
                if started < measure_from || finished > deadline {
                    continue;
                }
                let mut r = results.lock().unwrap();
                match outcome {
                    Ok(t) => r.flows.push(t),
                    Err(e) => *r.errors.entry(e).or_default() += 1,
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let (cpu_end, own_cpu_end) = (cpu_seconds(pid), cpu_seconds(std::process::id()));
    let (cpu_start, own_cpu_start) = cpu_at_start.lock().unwrap().unwrap_or((0.0, 0.0));
    let cpu = cpu_end - cpu_start;
    let own_cpu = own_cpu_end - own_cpu_start;
    let rss = peak_rss_mb(pid);
    drop(server);

    let r = results.lock().unwrap();
    let secs = args.duration as f64;
    let flows = r.flows.len();
    let errors: u64 = r.errors.values().sum();
    let total = summary(r.flows.iter().map(|f| f.total));
    let step = |f: fn(&FlowTimes) -> u64| summary(r.flows.iter().map(f));
    let (page, ident, deliv, code, user) = (
        step(|f| f.page),
        step(|f| f.identifier),
        step(|f| f.delivery),
        step(|f| f.code),
        step(|f| f.user),
    );
    let per_flow_ms = |cpu: f64| {
        if flows > 0 {
            cpu * 1000.0 / flows as f64
        } else {
            0.0
        }
    };
    let cpu_per_flow_ms = per_flow_ms(cpu);
    let own_cpu_per_flow_ms = per_flow_ms(own_cpu);
    let json = serde_json::json!({
        "mode": format!("{:?}", args.mode),
        "users": args.users,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "synchronous": args.synchronous,
        "flows": flows,
        "flows_per_s": flows as f64 / secs,
        "errors": errors,
        "errors_by_kind": r.errors,
        "flow_ms": {"p50": total.0, "p90": total.1, "p99": total.2, "max": total.3},
        "steps_ms": {
            "page": {"p50": page.0, "p99": page.2},
            "identifier_submit": {"p50": ident.0, "p99": ident.2},
            "code_delivery": {"p50": deliv.0, "p99": deliv.2},
            "code_submit": {"p50": code.0, "p99": code.2},
            "user": {"p50": user.0, "p99": user.2},
        },
        "server_cpu_s": cpu,
        "server_cpu_ms_per_flow": cpu_per_flow_ms,
        "server_peak_rss_mb": rss,
        "load_generator_cpu_s": own_cpu,
        "load_generator_cpu_ms_per_flow": own_cpu_per_flow_ms,
        "cold_start_ms": cold_start.as_secs_f64() * 1000.0,
    });
    println!("{json}");
    eprintln!();
    eprintln!(
        "{:<28} {:?} / {} / {}",
        "mode / users / concurrency", args.mode, args.users, args.concurrency
    );
    eprintln!(
        "{:<28} {:.0} flows/s ({flows} flows in {secs} s), {errors} errors",
        "throughput",
        flows as f64 / secs
    );
    for (k, v) in r.errors.iter() {
        eprintln!("{:<28} {v}", format!("  error {k}"));
    }
    eprintln!(
        "{:<28} {:>8} {:>8} {:>8} {:>8}",
        "latency (ms)", "p50", "p90", "p99", "max"
    );
    for (name, s) in [
        ("flow", total),
        ("  page", page),
        ("  identifier submit", ident),
        ("  code delivery", deliv),
        ("  code submit", code),
        ("  /user", user),
    ] {
        eprintln!(
            "{:<28} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            name, s.0, s.1, s.2, s.3
        );
    }
    eprintln!(
        "{:<28} {:.2} s ({:.3} ms per flow)",
        "server CPU", cpu, cpu_per_flow_ms
    );
    eprintln!(
        "{:<28} {:.2} s ({:.3} ms per flow)",
        "load generator CPU", own_cpu, own_cpu_per_flow_ms
    );
    eprintln!("{:<28} {:.1} MB", "server peak RSS", rss);
    eprintln!(
        "{:<28} {:.0} ms",
        "cold start",
        cold_start.as_secs_f64() * 1000.0
    );
    Ok(())
}
