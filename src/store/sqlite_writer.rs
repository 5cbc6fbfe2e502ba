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

type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;
/// Given the connection, runs the unit; given `None` (the group could not start), runs nothing.
type Job = Box<dyn FnOnce(Option<&rusqlite::Connection>) -> Reply + Send>;

/// Units of work run together in one transaction at the most.
const GROUP: usize = 64;

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
        conn.set_prepared_statement_cache_capacity(64);
        let (jobs, queue) = mpsc::sync_channel::<Job>(4096);
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
                return Box::new(move |committed: Result<(), String>| {
                    let e = committed.err().unwrap_or_default();
                    let _ = reply.send(Err(anyhow::anyhow!(
                        "SQLite could not start a transaction: {e}"
                    )));
                });
            };
            let outcome = match conn.execute_batch("SAVEPOINT unit") {
                Ok(()) => work(conn),
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
            Box::new(move |committed: Result<(), String>| {
                let result = match committed {
                    Ok(()) => value,
                    Err(e) => Err(anyhow::anyhow!("SQLite commit failed: {e}")),
                };
                let _ = reply.send(result);
            })
        });
        self.jobs
            .send(job)
            .map_err(|_| anyhow::anyhow!("the SQLite writer thread has stopped"))?;
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
            let message = e.to_string();
            for job in group {
                job(None)(Err(message.clone()));
            }
            continue;
        }
        let replies: Vec<Reply> = group.into_iter().map(|job| job(Some(&conn))).collect();
        let committed = conn.execute_batch("COMMIT").map_err(|e| e.to_string());
        if committed.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for reply in replies {
            reply(committed.clone());
        }
    }
}
