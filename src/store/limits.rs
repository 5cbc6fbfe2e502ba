//! Sliding-window rate limits in the database (table `rate_events`), so they hold across
//! restarts and across instances. A [`Guard`] runs inside the unit of work it protects: it
//! records the event only if every window of the bucket has room, and a full bucket aborts the
//! whole unit. Refused requests write nothing, so a bucket never holds more events per window
//! than its limit, and each check reads at most `limit` index entries per window.

use super::stmt::{Stmt, P};
use super::Store;

/// "At most `limit` events of `bucket` within `window_ms`", for each of up to three windows
/// (e.g. one send per 30 s, 5 per 10 minutes and 20 per day), checked and recorded at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub bucket: String,
    /// (window in ms, limit); one to three of them.
    pub windows: Vec<(i64, i64)>,
}

/// A unit of work refused by a full bucket: nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub bucket: String,
    pub windows: Vec<(i64, i64)>,
}

/// The count of one window, reading at most `limit` rows.
macro_rules! room {
    ($since:literal, $limit:literal) => {
        concat!(
            "(SELECT COUNT(*) FROM (SELECT 1 FROM rate_events WHERE bucket = $1 AND at > ",
            $since,
            " LIMIT ",
            $limit,
            ") AS w) < ",
            $limit
        )
    };
}

const GUARD_1: &str = concat!(
    "INSERT INTO rate_events (bucket, at) SELECT $1, $2 WHERE ",
    room!("$3", "$4")
);
const GUARD_2: &str = concat!(
    "INSERT INTO rate_events (bucket, at) SELECT $1, $2 WHERE ",
    room!("$3", "$4"),
    " AND ",
    room!("$5", "$6")
);
const GUARD_3: &str = concat!(
    "INSERT INTO rate_events (bucket, at) SELECT $1, $2 WHERE ",
    room!("$3", "$4"),
    " AND ",
    room!("$5", "$6"),
    " AND ",
    room!("$7", "$8")
);

impl Guard {
    /// A guard of the windows that are on (limit and window positive); `None` if none is.
    pub fn new(bucket: String, windows: &[(i64, u32)]) -> Option<Self> {
        let windows: Vec<(i64, i64)> = windows
            .iter()
            .filter(|(w, l)| *w > 0 && *l > 0)
            .map(|(w, l)| (*w, *l as i64))
            .take(3)
            .collect();
        (!windows.is_empty()).then_some(Self { bucket, windows })
    }

    pub(super) fn statement(&self, now: i64) -> Stmt {
        let sql = match self.windows.len() {
            1 => GUARD_1,
            2 => GUARD_2,
            _ => GUARD_3,
        };
        let mut params: Vec<P> = vec![self.bucket.clone().into(), now.into()];
        for (window, limit) in &self.windows {
            params.push((now - window).into());
            params.push((*limit).into());
        }
        Stmt::new(sql, params)
    }

    pub fn refusal(&self) -> Limited {
        Limited {
            bucket: self.bucket.clone(),
            windows: self.windows.clone(),
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

/// PostgreSQL: takes the advisory locks of every bucket a transaction may check, sorted, at its
/// start (before any row lock), so two transactions can never wait for each other.
pub(super) async fn lock_all(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: super::Backend,
    guards: &[&[Guard]],
) -> anyhow::Result<()> {
    if backend != super::Backend::Postgres {
        return Ok(());
    }
    let mut buckets: Vec<&Guard> = guards.iter().flat_map(|g| g.iter()).collect();
    buckets.sort_by(|a, b| a.bucket.cmp(&b.bucket));
    buckets.dedup_by(|a, b| a.bucket == b.bucket);
    for guard in buckets {
        guard.lock_statement().query().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Runs `guards` in a sqlx transaction (PostgreSQL, or SQLite's rare writes) whose advisory
/// locks [`lock_all`] took; `Some(refusal)` means a bucket was full and the caller must roll
/// back.
pub(super) async fn check_sqlx(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    guards: &[Guard],
    now: i64,
) -> anyhow::Result<Option<Limited>> {
    for guard in guards {
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
    /// When the refused bucket has room again (Unix ms): for every full window, when its oldest
    /// event leaves it; the latest of those.
    pub async fn limit_reopens_at(&self, limited: &Limited, now: i64) -> anyhow::Result<i64> {
        let mut reopens = now;
        for (window, limit) in &limited.windows {
            let (count, oldest): (i64, Option<i64>) = sqlx::query_as(
                "SELECT COUNT(*), MIN(at) FROM rate_events WHERE bucket = $1 AND at > $2",
            )
            .bind(&limited.bucket)
            .bind(now - window)
            .fetch_one(&self.reader)
            .await?;
            if count >= *limit {
                if let Some(oldest) = oldest {
                    reopens = reopens.max(oldest + window);
                }
            }
        }
        Ok(reopens)
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
