//! Sliding-window rate limits in the database (table `rate_events`), so they hold across
//! restarts and across instances. A [`Guard`] runs inside the unit of work it protects: it
//! records the event only if the bucket has room, and a full bucket aborts the whole unit.

use super::stmt::Stmt;
use super::Store;

/// "At most `limit` events of `bucket` within `window_ms`", checked and recorded at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub bucket: String,
    pub limit: i64,
    pub window_ms: i64,
}

/// A unit of work refused by a full bucket: nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub bucket: String,
    pub window_ms: i64,
}

const GUARD: &str = "INSERT INTO rate_events (bucket, at) SELECT $1, $2 \
     WHERE (SELECT COUNT(*) FROM rate_events WHERE bucket = $1 AND at > $3) < $4";

impl Guard {
    pub(super) fn statement(&self, now: i64) -> Stmt {
        Stmt::new(
            GUARD,
            vec![
                self.bucket.clone().into(),
                now.into(),
                (now - self.window_ms).into(),
                self.limit.into(),
            ],
        )
    }

    pub fn refusal(&self) -> Limited {
        Limited {
            bucket: self.bucket.clone(),
            window_ms: self.window_ms,
        }
    }

    /// PostgreSQL: transactions checking one bucket are serialized by an advisory lock, so two
    /// of them cannot both see room for the last event.
    pub(super) fn lock_statement(&self) -> Stmt {
        Stmt::new(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 7411))",
            vec![self.bucket.clone().into()],
        )
    }
}

/// Runs `guards` in a sqlx transaction (PostgreSQL, or SQLite's rare writes); `Some(refusal)`
/// means a bucket was full and the caller must roll back.
pub(super) async fn check_sqlx(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: super::Backend,
    guards: &[Guard],
    now: i64,
) -> anyhow::Result<Option<Limited>> {
    for guard in guards {
        if backend == super::Backend::Postgres {
            guard.lock_statement().query().execute(&mut **tx).await?;
        }
        let inserted = guard
            .statement(now)
            .query()
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if inserted != 1 {
            return Ok(Some(guard.refusal()));
        }
    }
    Ok(None)
}

/// The same on the SQLite writer thread.
pub(super) fn check_sqlite(
    conn: &rusqlite::Connection,
    guards: &[Guard],
    now: i64,
) -> anyhow::Result<Option<Limited>> {
    for guard in guards {
        if guard.statement(now).execute(conn)? != 1 {
            return Ok(Some(guard.refusal()));
        }
    }
    Ok(None)
}

impl Store {
    /// When the refused bucket has room again (Unix ms): when its oldest event in the window
    /// leaves it.
    pub async fn limit_reopens_at(&self, limited: &Limited, now: i64) -> anyhow::Result<i64> {
        let oldest: Option<i64> =
            sqlx::query_scalar("SELECT MIN(at) FROM rate_events WHERE bucket = $1 AND at > $2")
                .bind(&limited.bucket)
                .bind(now - limited.window_ms)
                .fetch_one(&self.reader)
                .await?;
        Ok(oldest.map_or(now, |at| at + limited.window_ms))
    }

    /// Records an event that is only watched, never refused (the SMS velocity alarm), and
    /// returns how many the bucket now has within the window.
    pub async fn count_event(&self, bucket: &str, now: i64, window_ms: i64) -> anyhow::Result<i64> {
        sqlx::query("INSERT INTO rate_events (bucket, at) VALUES ($1, $2)")
            .bind(bucket)
            .bind(now)
            .execute(&self.writer)
            .await?;
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM rate_events WHERE bucket = $1 AND at > $2")
                .bind(bucket)
                .bind(now - window_ms)
                .fetch_one(&self.reader)
                .await?,
        )
    }
}
