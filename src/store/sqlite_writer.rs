//! The SQLite writer: one thread owning the one write connection, running whole units of work
//! (each a closure) with group commit.
//!
//! Why: through sqlx every statement is a round trip to the connection's thread, so a unit of
//! work of seven statements cost seven thread wake-ups, and each transaction its own fsync. Here
//! a unit of work is one hand-over, and all units waiting when the thread is free run in one
//! transaction, each inside its own savepoint (a failed or discarded unit rolls back alone),
//! with one COMMIT (one fsync) for all. Every caller is answered only after that COMMIT, so
//! nothing reported as committed can be lost.

use std::path::Path;
use std::sync::mpsc;

use anyhow::Context;
use tokio::sync::oneshot;

/// What a unit of work wants done with its changes.
pub enum Unit<R> {
    /// Keep the changes (committed with the group).
    Commit(R),
    /// Roll back this unit's changes, but still return `R` (an expected refusal).
    Discard(R),
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
type Job = Box<dyn FnOnce(Option<&rusqlite::Connection>) -> Reply + Send>;

/// The write queue is full: more work is waiting than the writer can take.
#[derive(Debug, thiserror::Error)]
#[error("the SQLite writer is overloaded")]
pub struct Overloaded;

/// Units of work run together in one transaction at the most.
const GROUP: usize = 64;

/// Units of work that may wait for the writer (about a second of full load); beyond that,
/// requests are refused at once with 503.
const QUEUE: usize = 4096;

pub struct SqliteWriter {
    jobs: mpsc::SyncSender<Job>,
}

impl SqliteWriter {
    /// Opens the write connection (WAL, foreign keys, busy timeout) and starts its thread.
    pub fn open(path: &Path, synchronous_full: bool) -> anyhow::Result<Self> {
        let conn = rusqlite::Connection::open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(if synchronous_full {
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
        } else {
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;"
        })?;
        // Savepoint journals and the claim's temporary b-tree stay in memory: with the default
        // (a file) the writer created, wrote and unlinked a temporary file hundreds of times a
        // second. The writer's page cache holds the hot index pages (16 MiB at most).
        conn.execute_batch("PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16384;")?;
        conn.set_prepared_statement_cache_capacity(64);
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, queue))
            .context("starting the SQLite writer thread")?;
        Ok(Self { jobs })
    }

    /// Runs `work` in the writer's next transaction group and returns its result once committed.
    pub async fn run<R, F>(&self, work: F) -> anyhow::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> anyhow::Result<Unit<R>> + Send + 'static,
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
                Ok(()) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn)))
                    .unwrap_or_else(|_| {
                        Err(anyhow::anyhow!(
                            "a unit of work panicked; it was rolled back"
                        ))
                    }),
                Err(e) => Err(e.into()),
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
                (Ok(_), Err(e)) => Err(e.into()),
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

fn run(conn: rusqlite::Connection, queue: mpsc::Receiver<Job>) {
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
        let replies: Vec<Reply> = group.into_iter().map(|job| job(Some(&conn))).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> (tempfile::TempDir, SqliteWriter) {
        let dir = tempfile::tempdir().unwrap();
        let w = SqliteWriter::open(&dir.path().join("w.db"), true).unwrap();
        (dir, w)
    }

    async fn count(w: &SqliteWriter) -> i64 {
        w.run(|c| {
            Ok(Unit::Commit(c.query_row(
                "SELECT COUNT(*) FROM t",
                [],
                |r| r.get(0),
            )?))
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_discarded_or_failed_unit_rolls_back_alone() {
        let (_dir, w) = writer();
        w.run(|c| {
            Ok(Unit::Commit(
                c.execute_batch("CREATE TABLE t (v INTEGER UNIQUE)")?,
            ))
        })
        .await
        .unwrap();
        let keep = w.run(|c| Ok(Unit::Commit(c.execute("INSERT INTO t VALUES (1)", [])?)));
        let discard = w.run(|c| {
            c.execute("INSERT INTO t VALUES (2)", [])?;
            Ok(Unit::Discard("refused"))
        });
        let fail = w.run(|c| {
            c.execute("INSERT INTO t VALUES (3)", [])?;
            c.execute("INSERT INTO t VALUES (1)", [])?; // unique violation
            Ok(Unit::Commit(()))
        });
        let (keep, discard, fail) = tokio::join!(keep, discard, fail);
        assert_eq!(keep.unwrap(), 1);
        assert_eq!(discard.unwrap(), "refused");
        assert!(fail.is_err());
        assert_eq!(count(&w).await, 1, "only the kept unit's row remains");
    }

    #[tokio::test]
    async fn a_panicking_unit_does_not_stop_the_writer() {
        let (_dir, w) = writer();
        w.run(|c| Ok(Unit::Commit(c.execute_batch("CREATE TABLE t (v INTEGER)")?)))
            .await
            .unwrap();
        let panicked = w
            .run(|c| -> anyhow::Result<Unit<()>> {
                c.execute("INSERT INTO t VALUES (1)", [])?;
                panic!("bug in a unit of work")
            })
            .await;
        assert!(panicked.is_err());
        w.run(|c| Ok(Unit::Commit(c.execute("INSERT INTO t VALUES (2)", [])?)))
            .await
            .unwrap();
        assert_eq!(count(&w).await, 1);
    }

    #[tokio::test]
    async fn committed_units_are_on_disk_for_a_new_connection() {
        let (dir, w) = writer();
        w.run(|c| {
            Ok(Unit::Commit(c.execute_batch(
                "CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (7);",
            )?))
        })
        .await
        .unwrap();
        let other = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
        let v: i64 = other
            .query_row("SELECT v FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 7);
    }
}
