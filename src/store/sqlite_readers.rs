//! SQLite reads on a few threads that each own a read connection (rusqlite): one hand-over per
//! read, instead of sqlx's round trips. WAL lets them read while the writer thread writes.

use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use anyhow::Context;
use tokio::sync::oneshot;

type ReadJob = Box<dyn FnOnce(&rusqlite::Connection) + Send>;

pub struct SqliteReaders {
    jobs: mpsc::SyncSender<ReadJob>,
}

/// Reads that may wait for a reader; beyond that the request is refused at once (503).
const QUEUE: usize = 4096;

impl SqliteReaders {
    pub fn open(path: &Path, threads: usize) -> anyhow::Result<Self> {
        let (jobs, queue) = mpsc::sync_channel::<ReadJob>(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let conn = rusqlite::Connection::open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
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
                        Ok(job) => job(&conn),
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
        F: FnOnce(&rusqlite::Connection) -> anyhow::Result<R> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<anyhow::Result<R>>();
        let job: ReadJob = Box::new(move |conn| {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(conn)))
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a read panicked")));
            let _ = reply.send(result);
        });
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => anyhow::Error::new(super::sqlite_writer::Overloaded),
            mpsc::TrySendError::Disconnected(_) => {
                anyhow::anyhow!("the SQLite reader threads have stopped")
            }
        })?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("a SQLite reader dropped a read"))?
    }
}
