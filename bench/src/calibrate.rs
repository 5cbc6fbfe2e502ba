//! A calibration of the machine, measured in the same run before the load and printed beside
//! every result: absolute figures do not travel between machines (or between hours on one VM),
//! so each result carries what this machine did on fixed workloads at the time.
//!
//! - SQLite commits per second, WAL mode, one small insert per transaction, at
//!   `synchronous = FULL` (an fsync per commit) and `NORMAL` (none until a checkpoint): the
//!   disk's flush latency and the cost of a commit.
//! - HMAC-SHA256 of a 64-byte message per second on one thread: the CPU's speed.
//! - On PostgreSQL runs, the server's commits per second the same way (one client, a small
//!   table in the benchmark's database, dropped afterwards), with its `synchronous_commit`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::Connection;

use crate::seed::remove_sqlite_files;

#[derive(Clone, Debug, Default)]
pub struct Calibration {
    pub sqlite_commits_per_s_full: f64,
    pub sqlite_commits_per_s_normal: f64,
    pub hmac_sha256_per_s: f64,
    pub postgres: Option<PostgresCalibration>,
}

#[derive(Clone, Debug)]
pub struct PostgresCalibration {
    pub commits_per_s: f64,
    pub synchronous_commit: String,
    pub version: String,
}

impl Calibration {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "sqlite_commits_per_s_full": self.sqlite_commits_per_s_full.round(),
            "sqlite_commits_per_s_normal": self.sqlite_commits_per_s_normal.round(),
            "hmac_sha256_64b_per_s": self.hmac_sha256_per_s.round(),
            "postgres_commits_per_s": self.postgres.as_ref().map(|p| p.commits_per_s.round()),
            "postgres_synchronous_commit": self.postgres.as_ref().map(|p| p.synchronous_commit.clone()),
            "postgres_version": self.postgres.as_ref().map(|p| p.version.clone()),
        })
    }
}

/// Runs every measurement for about `each` (SQLite in a scratch file in `dir`).
pub async fn measure(
    dir: &Path,
    postgres_url: Option<&str>,
    each: Duration,
) -> anyhow::Result<Calibration> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join(format!("calibration-{}.db", std::process::id()));
    let (full, normal, hmac) = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<(f64, f64, f64)> {
            let full = sqlite_commits(&file, "FULL", each);
            let normal = sqlite_commits(&file, "NORMAL", each);
            let _ = remove_sqlite_files(&file);
            Ok((full?, normal?, hmac_per_second(each)))
        })
        .await??
    };
    let postgres = match postgres_url {
        Some(url) => Some(
            postgres_commits(url, each)
                .await
                .context("calibrating PostgreSQL")?,
        ),
        None => None,
    };
    Ok(Calibration {
        sqlite_commits_per_s_full: full,
        sqlite_commits_per_s_normal: normal,
        hmac_sha256_per_s: hmac,
        postgres,
    })
}

/// One-row transactions (autocommit inserts) into a fresh WAL file for about `each`.
fn sqlite_commits(file: &Path, synchronous: &str, each: Duration) -> anyhow::Result<f64> {
    remove_sqlite_files(file)?;
    let conn = rusqlite::Connection::open(file)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.execute_batch(
        "CREATE TABLE calibration (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, payload BLOB NOT NULL)",
    )?;
    let payload = [7u8; 64];
    let mut insert = conn.prepare("INSERT INTO calibration (at, payload) VALUES (?1, ?2)")?;
    let started = Instant::now();
    let mut commits = 0u64;
    loop {
        insert.execute(rusqlite::params![commits as i64, &payload[..]])?;
        commits += 1;
        let elapsed = started.elapsed();
        if elapsed >= each {
            return Ok(commits as f64 / elapsed.as_secs_f64());
        }
    }
}

/// HMAC-SHA256 over a 64-byte message with a 32-byte key, one thread, for about `each`.
fn hmac_per_second(each: Duration) -> f64 {
    let key = [0x5cu8; 32];
    let mut message = [0x36u8; 64];
    let started = Instant::now();
    let mut done = 0u64;
    loop {
        for _ in 0..1_000 {
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
            mac.update(std::hint::black_box(&message));
            let tag = mac.finalize().into_bytes();
            // Chain the results so no iteration can be skipped.
            message[0] ^= tag[0];
        }
        done += 1_000;
        let elapsed = started.elapsed();
        if elapsed >= each {
            std::hint::black_box(&message);
            return done as f64 / elapsed.as_secs_f64();
        }
    }
}

/// One-row transactions into a scratch table of the benchmark's database for about `each`.
async fn postgres_commits(url: &str, each: Duration) -> anyhow::Result<PostgresCalibration> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let synchronous_commit: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut conn)
        .await?;
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await?;
    // A logged table: a temporary or unlogged one would commit without a WAL flush.
    sqlx::query("DROP TABLE IF EXISTS latchkey_bench_calibration")
        .execute(&mut conn)
        .await?;
    sqlx::query(
        "CREATE TABLE latchkey_bench_calibration (id BIGSERIAL PRIMARY KEY, at BIGINT NOT NULL, payload BYTEA NOT NULL)",
    )
    .execute(&mut conn)
    .await?;
    let payload = vec![7u8; 64];
    let started = Instant::now();
    let mut commits = 0u64;
    let elapsed = loop {
        sqlx::query("INSERT INTO latchkey_bench_calibration (at, payload) VALUES ($1, $2)")
            .bind(commits as i64)
            .bind(&payload)
            .execute(&mut conn)
            .await?;
        commits += 1;
        let elapsed = started.elapsed();
        if elapsed >= each {
            break elapsed;
        }
    };
    sqlx::query("DROP TABLE latchkey_bench_calibration")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(PostgresCalibration {
        commits_per_s: commits as f64 / elapsed.as_secs_f64(),
        synchronous_commit,
        version,
    })
}
