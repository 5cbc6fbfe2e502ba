//! Every SQL statement lives here. The rest of the program calls units of work (each one
//! transaction) and never learns which database runs.
//!
//! Backend choice is made once, in [`Store::connect`], from the URL: `sqlite://…` or
//! `postgres://…`. Statements are written in the SQL both accept (`$N` parameters, `RETURNING`,
//! BIGINT millisecond timestamps); the few that must differ are picked by [`Backend`].
//!
//! SQLite runs in WAL mode with one writer connection (so write transactions queue in the pool
//! instead of failing with SQLITE_BUSY) and a pool of readers.

mod accounts;
mod audit;
mod flows;
mod janitor;
mod limits;
mod outbox;
mod secrets;
mod sessions;
mod sqlite_readers;
mod sqlite_writer;
mod stmt;

use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};
use time::OffsetDateTime;

pub use accounts::StoredIdentifier;
pub use audit::{AuditEntry, AuditEvent};
pub use flows::{
    AttemptOutcome, CodeAttempt, Completion, FactorSwitch, FlowRecord, NewFlow, NewIdentifier,
    NewVerification, VerificationRecord,
};
pub use janitor::Purged;
pub use limits::{Guard, Limited};
pub use outbox::{Claim, ClaimedMessage, NewMessage, OutboxEntry};
pub use sessions::{NewSession, SessionUser};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    reader: AnyPool,
    /// sqlx write pool: PostgreSQL's writes, SQLite's migrations and rare writes.
    writer: AnyPool,
    /// SQLite's hot-path writes run here, as whole units of work with group commit.
    sqlite_writer: Option<std::sync::Arc<sqlite_writer::SqliteWriter>>,
    /// SQLite's hot-path reads run on these threads.
    sqlite_readers: Option<std::sync::Arc<sqlite_readers::SqliteReaders>>,
    backend: Backend,
}

/// Milliseconds since the Unix epoch: the one time format in the database.
pub(crate) fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub(crate) fn from_ms(v: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(v as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Whether an error means the database cannot be reached right now (as opposed to a bug or a
/// constraint): the request gets a 503 with `Retry-After`, and a read may be retried.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        // PostgreSQL: connection exceptions (08…), shutdown (57P0x), database gone (3D000);
        // SQLite: SQLITE_BUSY (5), SQLITE_LOCKED (6), SQLITE_CANTOPEN (14).
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c.starts_with("08")
                || c.starts_with("57P0")
                || c == "3D000"
                // A deadlock or serialization failure: the transaction can simply be retried.
                || c == "40P01"
                || c == "40001"
                || c == "5"
                || c == "6"
                || c == "14"
        }),
        _ => false,
    }
}

/// Whether anything in an error's chain is [`is_unavailable`].
pub fn is_unavailable_error(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .is_some_and(is_unavailable)
            // A full SQLite queue, or a file locked by another process beyond the busy timeout.
            || cause.is::<sqlite_writer::Overloaded>()
    })
}

/// Runs a read, retrying once after a short pause if the connection failed. Only reads go
/// through here: retrying them can never apply a change twice.
pub(crate) async fn retry_read<T, F, Fut>(mut read: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    match read().await {
        Err(e) if is_unavailable(&e) => {
            tracing::warn!(error = %e, "database read failed; retrying once");
            tokio::time::sleep(Duration::from_millis(50)).await;
            read().await
        }
        other => other,
    }
}

/// Whether an error is a unique-constraint violation (an identifier already taken).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.is_unique_violation()
                || db
                    .code()
                    .is_some_and(|c| c == "2067" || c == "1555" || c == "23505")
        }
        _ => false,
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

const SQLITE_PRAGMAS_FULL: &str =
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;";
const SQLITE_PRAGMAS_NORMAL: &str =
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;";

fn sqlite_pragmas_full(
    conn: &mut sqlx::AnyConnection,
    _meta: sqlx::pool::PoolConnectionMetadata,
) -> futures_util::future::BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        conn.execute(SQLITE_PRAGMAS_FULL).await?;
        Ok(())
    })
}

fn sqlite_pragmas_normal(
    conn: &mut sqlx::AnyConnection,
    _meta: sqlx::pool::PoolConnectionMetadata,
) -> futures_util::future::BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        conn.execute(SQLITE_PRAGMAS_NORMAL).await?;
        Ok(())
    })
}

impl Store {
    /// Connects, creating a SQLite file if needed, and applies pending migrations.
    pub async fn connect(options: &DatabaseOptions) -> anyhow::Result<Self> {
        let (url, max_connections, acquire_timeout) = (
            options.url.as_str(),
            options.max_connections,
            options.acquire_timeout,
        );
        sqlx::any::install_default_drivers();
        let store = if url.starts_with("sqlite:") {
            let url = if url.contains('?') {
                url.to_string()
            } else {
                format!("{url}?mode=rwc")
            };
            let opts: AnyConnectOptions =
                url.parse().context("`database_url`: not a SQLite URL")?;
            let pragmas = if options.sqlite_synchronous_full {
                sqlite_pragmas_full
            } else {
                sqlite_pragmas_normal
            };
            let writer = AnyPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(acquire_timeout)
                .after_connect(pragmas)
                .connect_with(opts.clone())
                .await
                .context("opening the SQLite database")?;
            let reader = AnyPoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(acquire_timeout)
                .after_connect(pragmas)
                .connect_lazy_with(opts);
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:")
                .split('?')
                .next()
                .unwrap_or_default()
                .to_string();
            Store {
                reader,
                writer,
                sqlite_writer: Some(std::sync::Arc::new(sqlite_writer::SqliteWriter::open(
                    std::path::Path::new(&path),
                    options.sqlite_synchronous_full,
                )?)),
                sqlite_readers: Some(std::sync::Arc::new(sqlite_readers::SqliteReaders::open(
                    std::path::Path::new(&path),
                    std::thread::available_parallelism().map_or(2, |n| n.get()),
                )?)),
                backend: Backend::Sqlite,
            }
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts: AnyConnectOptions = url
                .parse()
                .context("`database_url`: not a PostgreSQL URL")?;
            let pool = AnyPoolOptions::new()
                .max_connections(max_connections.max(2))
                .acquire_timeout(acquire_timeout)
                .connect_with(opts)
                .await
                .context("connecting to PostgreSQL")?;
            Store {
                reader: pool.clone(),
                writer: pool,
                sqlite_writer: None,
                sqlite_readers: None,
                backend: Backend::Postgres,
            }
        } else {
            anyhow::bail!("`database_url`: must start with sqlite:// or postgres://");
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        // PostgreSQL: the migrator holds an advisory lock, so instances starting together queue.
        // SQLite has no such lock; each migration is one transaction, so a process that loses the
        // race fails cleanly and, on the next pass, finds the migration applied.
        let mut pass = 1;
        loop {
            match migrator.run(&self.writer).await {
                Ok(()) => return Ok(()),
                Err(e) if self.backend == Backend::Sqlite && pass < 5 => {
                    tracing::debug!(error = %e, pass, "another process is migrating this SQLite file; trying again");
                    tokio::time::sleep(Duration::from_millis(100 * pass)).await;
                    pass += 1;
                }
                Err(e) => return Err(anyhow::Error::new(e).context("applying database migrations")),
            }
        }
    }

    /// Runs a read that returns at most one row: on a SQLite reader thread, or through sqlx
    /// (retried once on a dropped connection). One mapping function serves both row types.
    pub(crate) async fn read_optional<T: Send + 'static>(
        &self,
        stmt: stmt::Stmt,
        from_sqlite: fn(&rusqlite::Row<'_>) -> T,
        from_any: fn(&sqlx::any::AnyRow) -> T,
    ) -> anyhow::Result<Option<T>> {
        if let Some(readers) = &self.sqlite_readers {
            return readers
                .run(move |conn| {
                    use rusqlite::OptionalExtension;
                    Ok(conn
                        .prepare_cached(stmt.sql)?
                        .query_row(rusqlite::params_from_iter(stmt.params.iter()), |r| {
                            Ok(from_sqlite(r))
                        })
                        .optional()?)
                })
                .await;
        }
        let row = retry_read(|| stmt.query().fetch_optional(&self.reader)).await?;
        Ok(row.as_ref().map(from_any))
    }

    /// Like [`read_optional`](Self::read_optional), for reads that return any number of rows.
    pub(crate) async fn read_all<T: Send + 'static>(
        &self,
        stmt: stmt::Stmt,
        from_sqlite: fn(&rusqlite::Row<'_>) -> T,
        from_any: fn(&sqlx::any::AnyRow) -> T,
    ) -> anyhow::Result<Vec<T>> {
        if let Some(readers) = &self.sqlite_readers {
            return readers
                .run(move |conn| {
                    let mut st = conn.prepare_cached(stmt.sql)?;
                    let rows = st
                        .query_map(rusqlite::params_from_iter(stmt.params.iter()), |r| {
                            Ok(from_sqlite(r))
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(rows)
                })
                .await;
        }
        let rows = retry_read(|| stmt.query().fetch_all(&self.reader)).await?;
        Ok(rows.iter().map(from_any).collect())
    }

    /// Like [`write_all`](Self::write_all), behind rate-limit guards: a full bucket writes
    /// nothing and is returned.
    pub(crate) async fn write_guarded(
        &self,
        guards: Vec<limits::Guard>,
        now: i64,
        stmts: Vec<stmt::Stmt>,
    ) -> anyhow::Result<Option<limits::Limited>> {
        if let Some(writer) = &self.sqlite_writer {
            return writer
                .run(move |conn| {
                    if let Some(limited) = limits::check_sqlite(conn, &guards, now)? {
                        return Ok(sqlite_writer::Unit::Discard(Some(limited)));
                    }
                    for s in &stmts {
                        s.execute(conn)?;
                    }
                    Ok(sqlite_writer::Unit::Commit(None))
                })
                .await;
        }
        let mut tx = self.writer.begin().await?;
        limits::lock_all(&mut tx, self.backend, &[&guards]).await?;
        if let Some(limited) = limits::check_sqlx(&mut tx, &guards, now).await? {
            return Ok(Some(limited));
        }
        for s in &stmts {
            s.query().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(None)
    }

    /// Runs statements as one transaction (on the SQLite writer thread when there is one).
    pub(crate) async fn write_all(&self, stmts: Vec<stmt::Stmt>) -> anyhow::Result<()> {
        if let Some(writer) = &self.sqlite_writer {
            return writer
                .run(move |conn| {
                    for s in &stmts {
                        s.execute(conn)?;
                    }
                    Ok(sqlite_writer::Unit::Commit(()))
                })
                .await;
        }
        let mut tx = self.writer.begin().await?;
        for s in &stmts {
            s.query().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Readiness: the database answers and every migration this build knows is applied.
    pub async fn ready(&self) -> bool {
        let expected = match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").migrations.len(),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").migrations.len(),
        } as i64;
        let applied: Result<i64, _> =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(&self.reader)
                .await;
        matches!(applied, Ok(n) if n >= expected)
    }

    /// Closes all connections (used at shutdown and by tests that restart the server).
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}
