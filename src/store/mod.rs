//! Every SQL statement lives here. The rest of the program calls units of work (each one
//! transaction) and never learns which database runs, nor how values are encoded in it.
//!
//! Backend choice is made once, in [`Store::connect`], from the URL: `sqlite://…` or
//! `postgres://…`. Each unit of work is an `async` function over [`tx::Tx`], written once and
//! run by both databases ([`Store::write`], [`Store::read`]): on SQLite by the writer thread
//! (group commit) or a reader thread, on PostgreSQL in a transaction on a pooled tokio-postgres
//! connection (each batch of statements pipelined in one round trip). Statements are written in
//! the SQL both accept; the one that must differ is picked by [`Backend`].

mod accounts;
mod audit;
mod flows;
mod janitor;
mod limits;
mod lockout;
mod oauth;
mod outbox;
mod postgres;
mod profile;
mod secrets;
mod sessions;
mod signing_keys;
mod sqlite;
mod stmt;
mod tx;

use std::time::Duration;

use anyhow::Context;
use futures_util::future::BoxFuture;

pub use accounts::{StoredIdentifier, StoredUser};
pub use audit::{AuditEntry, AuditEvent};
pub use flows::{
    AttemptOutcome, CodeAttempt, Completion, FactorSwitch, FlowRecord, NewFlow, NewIdentifier,
    NewVerification, NextCode, ReplaceCode, VerificationRecord,
};
pub use janitor::Purged;
pub use limits::{Guard, Limited};
pub use lockout::{keys as lockout_keys, CountedKey, Lock, LockRules};
pub use oauth::{
    CodeRecord, GrantRecord, NewCode, NewConsent, NewGrant, NewRefreshToken, Redeemed,
    RefreshTokenState,
};
pub use outbox::{Claim, ClaimedMessage, GiveUp, NewMessage, OutboxEntry};
pub use profile::Removal;
pub use sessions::{Device, NewSession, SessionUser};
pub use signing_keys::StoredSigningKey;
pub use tx::{is_unavailable_error, Backend, DbError, DbErrorKind};

use tx::{Tx, Unit};

#[derive(Clone)]
enum Db {
    Sqlite {
        writer: std::sync::Arc<sqlite::SqliteWriter>,
        readers: std::sync::Arc<sqlite::SqliteReaders>,
    },
    Postgres {
        pool: postgres::Pool,
        acquire_timeout: Duration,
    },
}

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Db,
    units: std::sync::Arc<UnitCounts>,
}

/// How many units of work and statements this store has run: an observable of how much work
/// a request did (tests check that a decoy does the same work as the real thing).
#[derive(Debug, Default)]
struct UnitCounts {
    reads: std::sync::atomic::AtomicU64,
    writes: std::sync::atomic::AtomicU64,
    statements: std::sync::atomic::AtomicU64,
}

/// Units of work run so far, by kind, and the statements they ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitsRun {
    pub reads: u64,
    pub writes: u64,
    pub statements: u64,
}

/// A unit's transaction that counts the statements run through it.
struct Counted<'a> {
    inner: &'a mut dyn Tx,
    counts: &'a UnitCounts,
}

impl Tx for Counted<'_> {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    fn run(&mut self, stmts: Vec<stmt::Stmt>) -> BoxFuture<'_, Result<Vec<tx::Done>, tx::Failed>> {
        self.counts
            .statements
            .fetch_add(stmts.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.inner.run(stmts)
    }
}

/// How to reach the database.
#[derive(Clone)]
pub struct DatabaseOptions {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// SQLite only: `FULL` keeps every committed transaction across power loss as well as
    /// process crashes; `NORMAL` (in WAL mode) keeps them across process crashes only.
    pub sqlite_synchronous_full: bool,
}

impl DatabaseOptions {
    /// Defaults for a SQLite file (used by tools such as the benchmark's seeding).
    pub fn sqlite_file(path: &std::path::Path) -> Self {
        Self {
            url: format!("sqlite://{}", path.display()),
            max_connections: 4,
            acquire_timeout: Duration::from_secs(10),
            sqlite_synchronous_full: true,
        }
    }
}

impl std::fmt::Debug for DatabaseOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut url = url::Url::parse(&self.url).map(|mut u| {
            if u.password().is_some() {
                let _ = u.set_password(Some("redacted"));
            }
            u.to_string()
        });
        let url = url.as_mut().map(|u| u.as_str()).unwrap_or("(unparsable)");
        f.debug_struct("DatabaseOptions")
            .field("url", &url)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("sqlite_synchronous_full", &self.sqlite_synchronous_full)
            .finish()
    }
}

fn sqlite_migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!("./migrations/sqlite")
}

fn postgres_migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!("./migrations/postgres")
}

impl Store {
    /// Connects, creating a SQLite file if needed, and applies pending migrations.
    pub async fn connect(options: &DatabaseOptions) -> anyhow::Result<Self> {
        let url = options.url.as_str();
        if url.starts_with("sqlite:") {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:")
                .split('?')
                .next()
                .unwrap_or_default()
                .to_string();
            let path = std::path::Path::new(&path);
            migrate_sqlite(path).await?;
            let writer = sqlite::SqliteWriter::open(path, options.sqlite_synchronous_full)?;
            let readers = sqlite::SqliteReaders::open(
                path,
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )?;
            Ok(Store {
                db: Db::Sqlite {
                    writer: writer.into(),
                    readers: readers.into(),
                },
                units: Default::default(),
            })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = postgres::pool(options)?;
            // One connection of the pool's own at start: a URL it cannot use (its TLS
            // included) fails here, not at the first request.
            postgres::PgTx::read(&pool, options.acquire_timeout)
                .await
                .context("connecting to PostgreSQL")?;
            migrate_postgres(options).await?;
            Ok(Store {
                db: Db::Postgres {
                    pool,
                    acquire_timeout: options.acquire_timeout,
                },
                units: Default::default(),
            })
        } else {
            anyhow::bail!("`database_url`: must start with sqlite:// or postgres://");
        }
    }

    /// The same database with counts of its own: background work (the outbox worker, the
    /// janitor) runs on such a handle, so the counts of the requests' handle show only what
    /// requests did.
    pub fn counted_apart(&self) -> Store {
        Store {
            db: self.db.clone(),
            units: Default::default(),
        }
    }

    /// The units of work this store (and its clones) ran so far.
    pub fn units_run(&self) -> UnitsRun {
        use std::sync::atomic::Ordering::Relaxed;
        UnitsRun {
            reads: self.units.reads.load(Relaxed),
            writes: self.units.writes.load(Relaxed),
            statements: self.units.statements.load(Relaxed),
        }
    }

    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Sqlite { .. } => Backend::Sqlite,
            Db::Postgres { .. } => Backend::Postgres,
        }
    }

    /// Runs a unit of work as one transaction: on SQLite in the writer thread's next group, on
    /// PostgreSQL in its own transaction. [`Unit::Discard`] rolls the unit's changes back.
    pub(crate) async fn write<R, F>(&self, unit: F) -> anyhow::Result<R>
    where
        R: Send + 'static,
        F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, anyhow::Result<Unit<R>>>
            + Send
            + 'static,
    {
        self.units
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match &self.db {
            Db::Sqlite { writer, .. } => {
                let counts = self.units.clone();
                writer
                    .run(move |tx| {
                        Box::pin(async move {
                            unit(&mut Counted {
                                inner: tx,
                                counts: &counts,
                            })
                            .await
                        })
                    })
                    .await
            }
            Db::Postgres {
                pool,
                acquire_timeout,
            } => {
                let mut tx = postgres::PgTx::write(pool, *acquire_timeout).await?;
                let outcome = unit(&mut Counted {
                    inner: &mut tx,
                    counts: &self.units,
                })
                .await;
                match outcome {
                    Ok(Unit::Commit(r)) => {
                        tx.commit().await?;
                        Ok(r)
                    }
                    Ok(Unit::Discard(r)) => {
                        tx.rollback().await?;
                        Ok(r)
                    }
                    Err(e) => {
                        // The unit's error is the one to report; a connection whose ROLLBACK
                        // failed is closed rather than reused.
                        let _ = tx.rollback().await;
                        Err(e)
                    }
                }
            }
        }
    }

    /// Runs a read: on a SQLite reader thread, or on a pooled PostgreSQL connection (retried
    /// once if the connection failed; retrying a read can never apply a change twice).
    pub(crate) async fn read<R, F>(&self, read: F) -> anyhow::Result<R>
    where
        R: Send + 'static,
        F: for<'t> Fn(&'t mut dyn Tx) -> BoxFuture<'t, anyhow::Result<R>> + Send + Sync + 'static,
    {
        self.units
            .reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match &self.db {
            Db::Sqlite { readers, .. } => {
                let counts = self.units.clone();
                readers
                    .run(move |tx| {
                        Box::pin(async move {
                            read(&mut Counted {
                                inner: tx,
                                counts: &counts,
                            })
                            .await
                        })
                    })
                    .await
            }
            Db::Postgres {
                pool,
                acquire_timeout,
            } => {
                let once = || async {
                    let mut conn = postgres::PgTx::read(pool, *acquire_timeout).await?;
                    read(&mut Counted {
                        inner: &mut conn,
                        counts: &self.units,
                    })
                    .await
                };
                match once().await {
                    Err(e) if is_unavailable_error(&e) => {
                        tracing::warn!(error = %e, "database read failed; retrying once");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        once().await
                    }
                    other => other,
                }
            }
        }
    }

    /// Readiness: the database answers and every migration this build knows is applied.
    pub async fn ready(&self) -> bool {
        let expected = match self.backend() {
            Backend::Sqlite => sqlite_migrator().migrations.len(),
            Backend::Postgres => postgres_migrator().migrations.len(),
        } as i64;
        let applied = self
            .read(|tx| {
                Box::pin(async move {
                    let row = tx
                        .fetch_one(stmt::Stmt::new(
                            "SELECT COUNT(*) AS n FROM _sqlx_migrations WHERE success = TRUE",
                            vec![],
                        ))
                        .await?;
                    row.int("n")
                })
            })
            .await;
        matches!(applied, Ok(n) if n >= expected)
    }

    /// Closes all connections (used at shutdown and by tests that restart the server). SQLite's
    /// threads end with the last handle.
    pub async fn close(&self) {
        if let Db::Postgres { pool, .. } = &self.db {
            pool.close();
        }
    }
}

/// Applies pending migrations to a PostgreSQL database through sqlx's migrator, on a connection
/// of its own. The migrator holds an advisory lock, so instances starting together queue.
async fn migrate_postgres(options: &DatabaseOptions) -> anyhow::Result<()> {
    use sqlx::Connection;
    let connect_options: sqlx::postgres::PgConnectOptions = options
        .url
        .parse()
        .context("`database_url`: not a PostgreSQL URL")?;
    let mut conn = tokio::time::timeout(
        options.acquire_timeout,
        sqlx::PgConnection::connect_with(&connect_options),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer within {:?}", options.acquire_timeout))
    .and_then(|c| c.map_err(anyhow::Error::from))
    .context("connecting to PostgreSQL to apply the migrations")?;
    let applied = postgres_migrator().run(&mut conn).await;
    let _ = conn.close().await;
    applied.context("applying database migrations")
}

/// Applies pending migrations to a SQLite file (creating it), through sqlx's migrator on a
/// connection of its own, before the writer and reader threads open the file.
async fn migrate_sqlite(path: &std::path::Path) -> anyhow::Result<()> {
    use sqlx::ConnectOptions;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    // SQLite has no migration lock; each migration is one transaction, so a process that loses
    // the race with another starting on the same file fails cleanly and, on the next pass,
    // finds the migration applied.
    let mut pass = 1;
    loop {
        let result = async {
            let mut conn = options.connect().await?;
            let applied = sqlite_migrator().run(&mut conn).await;
            let _ = sqlx::Connection::close(conn).await;
            applied.map_err(sqlx::Error::from)
        }
        .await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) if pass < 5 => {
                tracing::debug!(error = %e, pass, "another process is migrating this SQLite file; trying again");
                tokio::time::sleep(Duration::from_millis(100 * pass)).await;
                pass += 1;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "opening and migrating the SQLite database {}",
                    path.display()
                )))
            }
        }
    }
}
