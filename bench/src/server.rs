//! The `latchkey` processes under test, and what `/proc` says about them.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::http;
use crate::seed::Database;

/// How every instance is started.
pub struct ServerConfig<'a> {
    pub bin: &'a Path,
    pub database: &'a Database,
    pub smtp_port: u16,
    pub synchronous: &'a str,
    pub max_in_flight: Option<usize>,
    pub database_max_connections: Option<u32>,
    /// The configuration file every instance reads: the benchmark's OpenID Connect client.
    pub config_file: &'a Path,
}

/// One running instance; killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
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

/// Starts one instance on a free port and waits for its first `200` on `/sign-in`; returns it
/// with its cold start (process start → that answer).
pub async fn start(config: &ServerConfig<'_>) -> anyhow::Result<(Server, Duration)> {
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let mut command = Command::new(config.bin);
    if let Some(n) = config.max_in_flight {
        command.env("LATCHKEY_MAX_IN_FLIGHT_REQUESTS", n.to_string());
    }
    if let Some(n) = config.database_max_connections {
        command.env("LATCHKEY_DATABASE_MAX_CONNECTIONS", n.to_string());
    }
    let child = command
        .env("LATCHKEY_CONFIG", config.config_file)
        .env("LATCHKEY_API__SECRET_KEYS", crate::SECRET_KEY)
        .env("LATCHKEY_LISTEN", format!("127.0.0.1:{port}"))
        .env("LATCHKEY_PUBLIC_URL", &base)
        .env("LATCHKEY_DATABASE_URL", config.database.url())
        .env("LATCHKEY_DATABASE_SQLITE_SYNCHRONOUS", config.synchronous)
        .env(
            "LATCHKEY_SMTP_URL",
            format!("smtp://127.0.0.1:{}", config.smtp_port),
        )
        .env("LATCHKEY_DEV_MODE", "false")
        .env("LATCHKEY_SECRET", "latchkey-bench-secret-0123456789abcdef")
        // One loopback client runs every flow, so the per-IP limits are off (they would refuse
        // it by design); the per-address limits stay on (their statement is part of the
        // measured cost) with ceilings no run reaches. Except the interval between two sends
        // to one address: its shortest setting (1 s) allows one code per address per second,
        // which a run with fewer users than flows per second reaches (`--users 1000` at
        // 2,000 flows/s: each address every 0.5 s); the refusal's coarse Retry-After (10 s)
        // then idles every virtual user. It is off; the 10-minute and daily windows still run
        // in the same statement.
        .env("LATCHKEY_LIMITS__SEND_INTERVAL_SECS", "0")
        .env("LATCHKEY_LIMITS__SENDS_PER_10_MINUTES", "1000")
        .env("LATCHKEY_LIMITS__SENDS_PER_DAY", "10000")
        .env("LATCHKEY_LIMITS__IP_FLOWS_PER_10_SECONDS", "0")
        .env("LATCHKEY_LIMITS__IP_ATTEMPTS_PER_10_SECONDS", "0")
        .env("LATCHKEY_LIMITS__IP_SENDS_PER_HOUR", "0")
        // So is the cap on one client's open requests (a run may have more virtual users).
        .env("LATCHKEY_MAX_IN_FLIGHT_PER_IP", "0")
        .env("LATCHKEY_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", config.bin.display()))?;
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
    bail!(
        "the server at {} did not answer /sign-in within 20 s",
        server.base
    )
}

/// CPU seconds (user + system) the process has used so far; 0 if it is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
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

/// CPU seconds used so far by PostgreSQL for the database `database`: its backends, plus the
/// postmaster and the shared background processes (checkpointer, WAL writer, …). Backends and
/// autovacuum workers of other databases (a test suite running beside) are left out, by their
/// process titles. A backend that exits during the run takes its share with it.
pub fn postgres_cpu_seconds(database: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == "postgres")
        })
        .filter(|pid| {
            let title = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            serves(
                &String::from_utf8_lossy(&title).replace('\0', " "),
                database,
            )
        })
        .map(cpu_seconds)
        .sum()
}

/// Whether a PostgreSQL process (by its title, e.g. `postgres: 15/main: postgres latchkey_bench
/// 127.0.0.1(40312) idle`) works for `database` or for every database.
fn serves(title: &str, database: &str) -> bool {
    let tokens: Vec<&str> = title.split_whitespace().collect();
    if tokens.contains(&database) {
        return true;
    }
    let client_backend = tokens
        .iter()
        .any(|t| *t == "[local]" || (t.contains('(') && t.ends_with(')')));
    !client_backend && !title.contains("autovacuum worker") && !title.contains("parallel worker")
}

pub fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
