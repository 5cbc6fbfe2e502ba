//! The benchmark's database: a SQLite file or a PostgreSQL database, created if missing (or
//! afresh with `--fresh`) and seeded with `user<i>@bench.example` accounts.
//!
//! Seeding goes through Latchkey's own store code, and only through `Store::connect` (which also
//! applies the migrations) and `Store::import_verified_emails`, both called in [`seed`] alone.
//! Everything else here (creating, dropping, counting) is plain SQL of the benchmark's own.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use latchkey::domain::EmailAddress;
use latchkey::store::{DatabaseOptions, Store};
use sqlx::Connection;

/// Where the server keeps its data during the run.
#[derive(Clone, Debug)]
pub enum Database {
    Sqlite(PathBuf),
    /// A `postgres://` URL naming the database.
    Postgres(String),
}

impl Database {
    /// The server's `LATCHKEY_DATABASE_URL`.
    pub fn url(&self) -> String {
        match self {
            Database::Sqlite(path) => format!("sqlite://{}", path.display()),
            Database::Postgres(url) => url.clone(),
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Database::Sqlite(_) => "sqlite",
            Database::Postgres(_) => "postgres",
        }
    }

    /// The PostgreSQL database's name.
    pub fn postgres_name(&self) -> Option<String> {
        match self {
            Database::Postgres(url) => split_postgres_url(url).ok().map(|(name, _)| name),
            Database::Sqlite(_) => None,
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Database::Postgres(_))
    }

    /// For the report: the file, or the URL without a password.
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite(path) => path.display().to_string(),
            Database::Postgres(url) => match url::Url::parse(url) {
                Ok(mut u) => {
                    if u.password().is_some() {
                        let _ = u.set_password(Some("redacted"));
                    }
                    u.to_string()
                }
                Err(_) => "(unparsable URL)".into(),
            },
        }
    }
}

pub fn user_email(i: usize) -> String {
    format!("user{i}@bench.example")
}

/// Creates the database if it does not exist; with `fresh`, drops it first.
pub async fn prepare(database: &Database, fresh: bool) -> anyhow::Result<()> {
    match database {
        Database::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            if fresh {
                remove_sqlite_files(path)?;
            }
            Ok(())
        }
        Database::Postgres(url) => prepare_postgres(url, fresh).await,
    }
}

/// Removes a SQLite file with its WAL and shared-memory files.
pub fn remove_sqlite_files(path: &Path) -> anyhow::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::remove_file(&name) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {name:?}"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The database named in `url`, and a URL to the same server's `postgres` database, from which
/// it can be created or dropped.
fn split_postgres_url(url: &str) -> anyhow::Result<(String, String)> {
    let mut admin = url::Url::parse(url).context("--database-url: not a URL")?;
    let name = admin.path().trim_start_matches('/').to_string();
    if name.is_empty() || name.contains('/') {
        bail!("--database-url: name the benchmark's database, e.g. postgres://postgres@127.0.0.1:5432/latchkey_bench");
    }
    if name == "postgres" || name.starts_with("template") {
        bail!("--database-url: {name:?} is not a database the benchmark may fill (or drop with --fresh)");
    }
    admin.set_path("/postgres");
    Ok((name, admin.to_string()))
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn prepare_postgres(url: &str, fresh: bool) -> anyhow::Result<()> {
    let (name, admin_url) = split_postgres_url(url)?;
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .with_context(|| format!("connecting to {admin_url}"))?;
    if fresh {
        // Any connection left over from an earlier run is ended (PostgreSQL 13+).
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_identifier(&name)
        ))
        .execute(&mut admin)
        .await
        .with_context(|| format!("dropping database {name}"))?;
    }
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut admin)
        .await?;
    if exists.is_none() {
        sqlx::query(&format!("CREATE DATABASE {}", quote_identifier(&name)))
            .execute(&mut admin)
            .await
            .with_context(|| format!("creating database {name}"))?;
    }
    admin.close().await?;
    Ok(())
}

/// Applies the migrations and adds accounts until there are at least `users`.
pub async fn seed(database: &Database, users: usize) -> anyhow::Result<()> {
    let options = match database {
        Database::Sqlite(path) => DatabaseOptions::sqlite_file(path),
        // The same small pool, another URL.
        Database::Postgres(url) => DatabaseOptions {
            url: url.clone(),
            ..DatabaseOptions::sqlite_file(Path::new(""))
        },
    };
    let store = Store::connect(&options).await?;
    let have = store.count_users().await? as usize;
    if have < users {
        eprintln!(
            "seeding {} users into {} (have {have})…",
            users - have,
            database.describe()
        );
        let started = Instant::now();
        let now = time::OffsetDateTime::now_utc();
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
    drop(store);
    Ok(())
}
