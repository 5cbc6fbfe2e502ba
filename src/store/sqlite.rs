//! SQLite: one writer thread owning the one write connection, and a few reader threads, all
//! with rusqlite. Every unit of work that writes runs on the writer thread; nothing else
//! writes to the file (sqlx's SQLite driver only applies migrations, before the threads start).
//!
//! Why a thread: through an async driver every statement is a round trip to the connection's
//! thread, and each transaction its own fsync. Here a unit of work is one hand-over, and all
//! units waiting when the thread is free run in one transaction, each inside its own savepoint
//! (a failed or discarded unit rolls back alone), with one COMMIT (one fsync) for all. Every
//! caller is answered only after that COMMIT, so nothing reported as committed can be lost.
//!
//! A unit is the same `async` code PostgreSQL runs ([`super::tx`]); rusqlite never waits, so
//! the thread completes it with a single poll.

use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use anyhow::Context;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::oneshot;

use super::stmt::{Row, Stmt, Value};
use super::tx::{Backend, DbError, Tx, Unit};

/// The write or read queue is full: more work is waiting than the threads can take.
#[derive(Debug, thiserror::Error)]
#[error("the SQLite database is overloaded")]
pub struct Overloaded;

/// A unit of work's view of a rusqlite connection.
struct SqliteTx<'c> {
    conn: &'c mut rusqlite::Connection,
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Value::Null | Value::NullInt => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

/// Binds `$1`, `$2`, … by name. SQLite numbers `$N` parameters in the order they first appear
/// in the text (they are names to it, not positions), so a statement that uses `$7` before
/// `$4` must not be bound positionally.
fn bind(st: &mut rusqlite::CachedStatement<'_>, params: &[Value]) -> Result<(), DbError> {
    const NAMES: [&str; 32] = [
        "$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11", "$12", "$13", "$14",
        "$15", "$16", "$17", "$18", "$19", "$20", "$21", "$22", "$23", "$24", "$25", "$26", "$27",
        "$28", "$29", "$30", "$31", "$32",
    ];
    if params.len() != st.parameter_count() || params.len() > NAMES.len() {
        return Err(DbError {
            kind: super::tx::DbErrorKind::Other,
            message: format!(
                "{} parameters given for a statement with {}",
                params.len(),
                st.parameter_count()
            ),
        });
    }
    for (name, value) in NAMES.iter().zip(params) {
        let index = st.parameter_index(name)?.ok_or_else(|| DbError {
            kind: super::tx::DbErrorKind::Other,
            message: format!("parameter {name} is not in the statement"),
        })?;
        st.raw_bind_parameter(index, value)?;
    }
    Ok(())
}

fn execute(conn: &rusqlite::Connection, stmt: &Stmt) -> Result<u64, DbError> {
    let mut st = conn.prepare_cached(stmt.sql)?;
    bind(&mut st, &stmt.params)?;
    Ok(st.raw_execute()? as u64)
}

fn fetch_all(conn: &rusqlite::Connection, stmt: &Stmt) -> Result<Vec<Row>, DbError> {
    let mut st = conn.prepare_cached(stmt.sql)?;
    let names: Arc<[String]> = st
        .column_names()
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>()
        .into();
    let width = names.len();
    bind(&mut st, &stmt.params)?;
    let mut rows = st.raw_query();
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            use rusqlite::types::ValueRef;
            values.push(match r.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Int(v),
                ValueRef::Real(v) => Value::Int(v as i64),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::Blob(b.to_vec()),
            });
        }
        out.push(Row::new(names.clone(), values));
    }
    Ok(out)
}

impl Tx for SqliteTx<'_> {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn execute(&mut self, stmt: Stmt) -> BoxFuture<'_, Result<u64, DbError>> {
        Box::pin(std::future::ready(execute(self.conn, &stmt)))
    }

    fn fetch_all(&mut self, stmt: Stmt) -> BoxFuture<'_, Result<Vec<Row>, DbError>> {
        Box::pin(std::future::ready(fetch_all(self.conn, &stmt)))
    }
}

/// Runs a unit's future to completion with one poll: SQLite statements never wait.
fn complete<R>(future: BoxFuture<'_, anyhow::Result<R>>) -> anyhow::Result<R> {
    future.now_or_never().unwrap_or_else(|| {
        Err(anyhow::anyhow!(
            "a unit of work waited on the SQLite thread (a bug: only statements may be awaited)"
        ))
    })
}

/// Why a group failed as a whole.
#[derive(Debug, Clone)]
enum GroupError {
    /// The file is locked by another process beyond the busy timeout: answered like overload.
    Busy(String),
    Other(String),
}

impl GroupError {
    fn from_sqlite(e: &rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                GroupError::Busy(e.to_string())
            }
            _ => GroupError::Other(e.to_string()),
        }
    }

    fn into_error(self, what: &str) -> anyhow::Error {
        match self {
            GroupError::Busy(e) => anyhow::Error::new(Overloaded).context(format!("{what}: {e}")),
            GroupError::Other(e) => anyhow::anyhow!("{what}: {e}"),
        }
    }
}

type Reply = Box<dyn FnOnce(Result<(), GroupError>) + Send>;
/// Given the connection, runs the unit; given `None` (the group could not start), runs nothing.
type Job = Box<dyn FnOnce(Option<&mut rusqlite::Connection>) -> Reply + Send>;

/// Units of work run together in one transaction at the most.
const GROUP: usize = 64;

/// Units of work (or reads) that may wait (about a second of full load); beyond that, requests
/// are refused at once with 503.
const QUEUE: usize = 4096;

fn open(path: &Path) -> anyhow::Result<rusqlite::Connection> {
    let conn =
        rusqlite::Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

pub(crate) struct SqliteWriter {
    jobs: mpsc::SyncSender<Job>,
}

impl SqliteWriter {
    /// Opens the write connection (WAL, foreign keys, busy timeout) and starts its thread.
    pub fn open(path: &Path, synchronous_full: bool) -> anyhow::Result<Self> {
        let conn = open(path)?;
        conn.execute_batch(if synchronous_full {
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
        } else {
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;"
        })?;
        // Savepoint journals and temporary b-trees stay in memory: with the default (a file)
        // the writer created, wrote and unlinked a temporary file hundreds of times a second.
        // The writer's page cache holds the hot index pages (16 MiB at most).
        conn.execute_batch("PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16384;")?;
        conn.set_prepared_statement_cache_capacity(64);
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run_writer(conn, queue))
            .context("starting the SQLite writer thread")?;
        Ok(Self { jobs })
    }

    /// Runs a unit of work in the writer's next transaction group and returns its result once
    /// committed.
    pub async fn run<R, F>(&self, unit: F) -> anyhow::Result<R>
    where
        R: Send + 'static,
        F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, anyhow::Result<Unit<R>>>
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel::<anyhow::Result<R>>();
        let job: Job = Box::new(move |conn| {
            let Some(conn) = conn else {
                return Box::new(move |committed: Result<(), GroupError>| {
                    let e = committed
                        .err()
                        .unwrap_or(GroupError::Other("no transaction".into()));
                    let _ = reply.send(Err(e.into_error("SQLite could not start a transaction")));
                });
            };
            let outcome = match conn.execute_batch("SAVEPOINT unit") {
                // A panicking unit must not take the writer (and every later write) down with it.
                Ok(()) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let mut tx = SqliteTx { conn: &mut *conn };
                    complete(unit(&mut tx))
                }))
                .unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "a unit of work panicked; it was rolled back"
                    ))
                }),
                Err(e) => Err(DbError::from(e).into()),
            };
            let keep = matches!(outcome, Ok(Unit::Commit(_)));
            let closed = if keep {
                conn.execute_batch("RELEASE unit")
            } else {
                conn.execute_batch("ROLLBACK TO unit; RELEASE unit")
            };
            let value = match (outcome, closed) {
                (Ok(Unit::Commit(r) | Unit::Discard(r)), Ok(())) => Ok(r),
                (Err(e), _) => Err(e),
                (Ok(_), Err(e)) => Err(DbError::from(e).into()),
            };
            Box::new(move |committed: Result<(), GroupError>| {
                let result = match committed {
                    Ok(()) => value,
                    Err(e) => Err(e.into_error("SQLite commit failed")),
                };
                let _ = reply.send(result);
            })
        });
        // Never block the async caller: a full queue means the server is beyond capacity, and the
        // request is answered 503 with Retry-After instead of waiting.
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => anyhow::Error::new(Overloaded),
            mpsc::TrySendError::Disconnected(_) => {
                anyhow::anyhow!("the SQLite writer thread has stopped")
            }
        })?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the SQLite writer thread dropped a unit of work"))?
    }
}

fn run_writer(mut conn: rusqlite::Connection, queue: mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let error = GroupError::from_sqlite(&e);
            for job in group {
                job(None)(Err(error.clone()));
            }
            continue;
        }
        let replies: Vec<Reply> = group.into_iter().map(|job| job(Some(&mut conn))).collect();
        let committed = conn
            .execute_batch("COMMIT")
            .map_err(|e| GroupError::from_sqlite(&e));
        if committed.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for reply in replies {
            reply(committed.clone());
        }
    }
}

type ReadJob = Box<dyn FnOnce(&mut rusqlite::Connection) + Send>;

/// Reads on a few threads that each own a read-only connection: one hand-over per read. WAL
/// lets them read while the writer writes.
pub(crate) struct SqliteReaders {
    jobs: mpsc::SyncSender<ReadJob>,
}

impl SqliteReaders {
    pub fn open(path: &Path, threads: usize) -> anyhow::Result<Self> {
        let (jobs, queue) = mpsc::sync_channel::<ReadJob>(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let mut conn = open(path)?;
            conn.execute_batch("PRAGMA query_only = ON; PRAGMA foreign_keys = ON;")?;
            conn.set_prepared_statement_cache_capacity(32);
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("sqlite-reader-{i}"))
                .spawn(move || loop {
                    let job = match queue.lock() {
                        Ok(q) => q.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(&mut conn),
                        Err(_) => return,
                    }
                })
                .context("starting a SQLite reader thread")?;
        }
        Ok(Self { jobs })
    }

    /// Runs a read on the next free reader thread.
    pub async fn run<R, F>(&self, read: F) -> anyhow::Result<R>
    where
        R: Send + 'static,
        F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, anyhow::Result<R>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<anyhow::Result<R>>();
        let job: ReadJob = Box::new(move |conn| {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut tx = SqliteTx { conn };
                complete(read(&mut tx))
            }))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("a read panicked")));
            let _ = reply.send(result);
        });
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => anyhow::Error::new(Overloaded),
            mpsc::TrySendError::Disconnected(_) => {
                anyhow::anyhow!("the SQLite reader threads have stopped")
            }
        })?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("a SQLite reader dropped a read"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> (tempfile::TempDir, SqliteWriter) {
        let dir = tempfile::tempdir().unwrap();
        let w = SqliteWriter::open(&dir.path().join("w.db"), true).unwrap();
        (dir, w)
    }

    fn stmt(sql: &'static str) -> Stmt {
        Stmt::new(sql, vec![])
    }

    async fn count(w: &SqliteWriter) -> i64 {
        w.run(|tx| {
            Box::pin(async move {
                let row = tx.fetch_one(stmt("SELECT COUNT(*) AS n FROM t")).await?;
                Ok(Unit::Commit(row.int("n")?))
            })
        })
        .await
        .unwrap()
    }

    async fn exec(w: &SqliteWriter, sql: &'static str) {
        w.run(move |tx| {
            Box::pin(async move {
                tx.execute(stmt(sql)).await?;
                Ok(Unit::Commit(()))
            })
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_discarded_or_failed_unit_rolls_back_alone() {
        let (_dir, w) = writer();
        exec(&w, "CREATE TABLE t (v INTEGER UNIQUE)").await;
        let keep = w.run(|tx| {
            Box::pin(async move {
                Ok(Unit::Commit(
                    tx.execute(stmt("INSERT INTO t VALUES (1)")).await?,
                ))
            })
        });
        let discard = w.run(|tx| {
            Box::pin(async move {
                tx.execute(stmt("INSERT INTO t VALUES (2)")).await?;
                Ok(Unit::Discard("refused"))
            })
        });
        let fail = w.run(|tx| {
            Box::pin(async move {
                tx.execute(stmt("INSERT INTO t VALUES (3)")).await?;
                let dup = tx.execute(stmt("INSERT INTO t VALUES (1)")).await;
                assert!(dup.as_ref().unwrap_err().is_unique_violation());
                dup?;
                Ok(Unit::Commit(()))
            })
        });
        let (keep, discard, fail) = tokio::join!(keep, discard, fail);
        assert_eq!(keep.unwrap(), 1);
        assert_eq!(discard.unwrap(), "refused");
        assert!(fail.is_err());
        assert_eq!(count(&w).await, 1, "only the kept unit's row remains");
    }

    #[tokio::test]
    async fn numbered_parameters_bind_by_number_whatever_their_order_in_the_text() {
        let (_dir, w) = writer();
        exec(&w, "CREATE TABLE t (v INTEGER, s TEXT)").await;
        let (v, s) = w
            .run(|tx| {
                Box::pin(async move {
                    tx.execute(Stmt::new(
                        "INSERT INTO t (s, v) VALUES ($2, $1)",
                        vec![7i64.into(), "seven".into()],
                    ))
                    .await?;
                    let row = tx
                        .fetch_one(Stmt::new(
                            "SELECT v, s FROM t WHERE s = $2 AND v = $1",
                            vec![7i64.into(), "seven".into()],
                        ))
                        .await?;
                    Ok(Unit::Commit((row.int("v")?, row.text("s")?)))
                })
            })
            .await
            .unwrap();
        assert_eq!((v, s.as_str()), (7, "seven"));
    }

    #[tokio::test]
    async fn a_panicking_unit_does_not_stop_the_writer() {
        let (_dir, w) = writer();
        exec(&w, "CREATE TABLE t (v INTEGER)").await;
        let panicked = w
            .run(|tx| -> BoxFuture<'_, anyhow::Result<Unit<()>>> {
                Box::pin(async move {
                    tx.execute(stmt("INSERT INTO t VALUES (1)")).await?;
                    panic!("bug in a unit of work")
                })
            })
            .await;
        assert!(panicked.is_err());
        exec(&w, "INSERT INTO t VALUES (2)").await;
        assert_eq!(count(&w).await, 1);
    }

    #[tokio::test]
    async fn a_unit_that_waits_on_something_else_is_refused_and_rolled_back() {
        let (_dir, w) = writer();
        exec(&w, "CREATE TABLE t (v INTEGER)").await;
        let waited = w
            .run(|tx| -> BoxFuture<'_, anyhow::Result<Unit<()>>> {
                Box::pin(async move {
                    tx.execute(stmt("INSERT INTO t VALUES (1)")).await?;
                    std::future::pending::<()>().await;
                    Ok(Unit::Commit(()))
                })
            })
            .await;
        assert!(waited.unwrap_err().to_string().contains("waited"));
        assert_eq!(count(&w).await, 0);
    }

    #[tokio::test]
    async fn committed_units_are_on_disk_for_a_reader() {
        let (dir, w) = writer();
        exec(&w, "CREATE TABLE t (v INTEGER, s TEXT)").await;
        exec(&w, "INSERT INTO t VALUES (7, 'seven')").await;
        let readers = SqliteReaders::open(&dir.path().join("w.db"), 1).unwrap();
        let (v, s) = readers
            .run(|tx| {
                Box::pin(async move {
                    let row = tx.fetch_one(stmt("SELECT v, s FROM t")).await?;
                    Ok((row.int("v")?, row.text("s")?))
                })
            })
            .await
            .unwrap();
        assert_eq!((v, s.as_str()), (7, "seven"));
        let write = readers
            .run(|tx| {
                Box::pin(
                    async move { Ok(tx.execute(stmt("INSERT INTO t VALUES (8, 'x')")).await?) },
                )
            })
            .await;
        assert!(write.is_err(), "readers cannot write");
    }
}
