//! Sliding-window rate limits in the database (table `rate_events`), so they hold across
//! restarts and across instances. A [`Guard`] runs inside the unit of work it protects: it
//! records the event only if every window of the bucket has room, and a full bucket aborts the
//! whole unit. Refused requests write nothing, so a bucket never holds more events per window
//! than its limit, and each check reads at most `limit` index entries per window.

use time::OffsetDateTime;

use super::stmt::{Stmt, P};
use super::tx::Unit;
use super::tx::{Backend, Tx};
use super::Store;

/// "At most `limit` events of `bucket` within `window_ms`", for each of up to three windows
/// (e.g. one send per 30 s, 5 per 10 minutes and 20 per day), checked and recorded at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub bucket: String,
    /// (window, limit); one to three of them.
    pub windows: Vec<(time::Duration, i64)>,
}

/// A unit of work refused by a full bucket: nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub bucket: String,
    pub windows: Vec<(time::Duration, i64)>,
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
    pub fn new(bucket: String, windows: &[(time::Duration, u32)]) -> Option<Self> {
        let windows: Vec<(time::Duration, i64)> = windows
            .iter()
            .filter(|(w, l)| w.is_positive() && *l > 0)
            .map(|(w, l)| (*w, i64::from(*l)))
            .take(3)
            .collect();
        (!windows.is_empty()).then_some(Self { bucket, windows })
    }

    fn statement(&self, now: OffsetDateTime) -> Stmt {
        let sql = match self.windows.len() {
            1 => GUARD_1,
            2 => GUARD_2,
            _ => GUARD_3,
        };
        let mut params: Vec<P> = vec![self.bucket.clone().into(), now.into()];
        for (window, limit) in &self.windows {
            params.push((now - *window).into());
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
}

/// PostgreSQL: transactions checking one bucket are serialized by an advisory lock, so two of
/// them cannot both see room for the last event; `also` names further locks of the unit (an
/// identifier's failure count). Every lock a unit may need is taken sorted, at its start (before
/// any row lock), so two units can never wait for each other. SQLite's one writer needs none.
pub(super) async fn lock_all(
    tx: &mut dyn Tx,
    guards: &[&[Guard]],
    also: &[&str],
) -> anyhow::Result<()> {
    if tx.backend() != Backend::Postgres {
        return Ok(());
    }
    let mut buckets: Vec<&str> = guards
        .iter()
        .flat_map(|g| g.iter().map(|g| g.bucket.as_str()))
        .chain(also.iter().copied())
        .collect();
    buckets.sort_unstable();
    buckets.dedup();
    for bucket in buckets {
        tx.execute(Stmt::new(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 7411))",
            vec![bucket.into()],
        ))
        .await?;
    }
    Ok(())
}

/// Records one event per guard; `Some(refusal)` means a bucket was full and the unit must be
/// discarded (rolled back).
pub(super) async fn check(
    tx: &mut dyn Tx,
    guards: &[Guard],
    now: OffsetDateTime,
) -> anyhow::Result<Option<Limited>> {
    for guard in guards {
        if tx.execute(guard.statement(now)).await? != 1 {
            return Ok(Some(guard.refusal()));
        }
    }
    Ok(None)
}

impl Store {
    /// When the refused bucket has room again: for every full window, when its oldest event
    /// leaves it; the latest of those.
    pub async fn limit_reopens_at(
        &self,
        limited: &Limited,
        now: OffsetDateTime,
    ) -> anyhow::Result<OffsetDateTime> {
        let limited = limited.clone();
        self.read(move |tx| {
            let limited = limited.clone();
            Box::pin(async move {
                let mut reopens = now;
                for (window, limit) in &limited.windows {
                    let row = tx
                        .fetch_one(Stmt::new(
                            "SELECT COUNT(*) AS n, MIN(at) AS oldest FROM rate_events WHERE bucket = $1 AND at > $2",
                            vec![limited.bucket.clone().into(), (now - *window).into()],
                        ))
                        .await?;
                    if row.int("n")? >= *limit {
                        if let Some(oldest) = row.opt_time("oldest")? {
                            reopens = reopens.max(oldest + *window);
                        }
                    }
                }
                Ok(reopens)
            })
        })
        .await
    }

    /// How many events `bucket` holds after `since`.
    pub async fn events_since(&self, bucket: &str, since: OffsetDateTime) -> anyhow::Result<i64> {
        let stmt = Stmt::new(
            "SELECT COUNT(*) AS n FROM rate_events WHERE bucket = $1 AND at > $2",
            vec![bucket.into(), since.into()],
        );
        self.read(move |tx| {
            let stmt = stmt.clone();
            Box::pin(async move { tx.fetch_one(stmt).await?.int("n") })
        })
        .await
    }

    /// Records an event that is only watched, never refused (the SMS velocity alarm), and
    /// returns how many the bucket now has within the window.
    pub async fn count_event(
        &self,
        bucket: &str,
        now: OffsetDateTime,
        window: time::Duration,
    ) -> anyhow::Result<i64> {
        let bucket = bucket.to_string();
        self.write(move |tx| {
            Box::pin(async move {
                tx.execute(Stmt::new(
                    "INSERT INTO rate_events (bucket, at) VALUES ($1, $2)",
                    vec![bucket.clone().into(), now.into()],
                ))
                .await?;
                let row = tx
                    .fetch_one(Stmt::new(
                        "SELECT COUNT(*) AS n FROM rate_events WHERE bucket = $1 AND at > $2",
                        vec![bucket.into(), (now - window).into()],
                    ))
                    .await?;
                Ok(Unit::Commit(row.int("n")?))
            })
        })
        .await
    }
}
