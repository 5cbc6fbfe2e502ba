//! Sliding-window rate limits in the database (table `rate_events`), so they hold across
//! restarts and across instances. A [`Guard`] runs inside the unit of work it protects: it
//! records the event only if every window of the bucket has room, and a full bucket aborts the
//! whole unit. Refused requests write nothing, so a bucket never holds more events per window
//! than its limit, and each check reads at most `limit` index entries per window.

use time::OffsetDateTime;

use super::stmt::{Stmt, P};
use super::tx::{Backend, Done, Tx, Unit};
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
/// identifier's failure count). These are the statements that take every lock a unit may need,
/// sorted, to be sent at its start (before any row lock), so two units can never wait for each
/// other; a batch runs its statements in order, so the locks hold before the statements that
/// follow them run. SQLite's one writer needs none.
pub(super) fn locks(backend: Backend, guards: &[&[Guard]], also: &[&str]) -> Vec<Stmt> {
    if backend != Backend::Postgres {
        return Vec::new();
    }
    let mut buckets: Vec<&str> = guards
        .iter()
        .flat_map(|g| g.iter().map(|g| g.bucket.as_str()))
        .chain(also.iter().copied())
        .collect();
    buckets.sort_unstable();
    buckets.dedup();
    buckets
        .into_iter()
        .map(|bucket| {
            Stmt::new(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 7411))",
                vec![bucket.into()],
            )
        })
        .collect()
}

/// One event per guard, in order: each statement records its event only if the bucket has
/// room (see [`refusal`]).
pub(super) fn checks(guards: &[Guard], now: OffsetDateTime) -> Vec<Stmt> {
    guards.iter().map(|g| g.statement(now)).collect()
}

/// The first guard whose bucket was full, given what the statements of [`checks`] did (as far
/// as they ran); the unit must then be discarded (rolled back), which also takes back the
/// events the guards before it recorded.
pub(super) fn refusal(guards: &[Guard], done: &[Done]) -> Option<Limited> {
    guards
        .iter()
        .zip(done)
        .find(|(_, d)| d.changed != 1)
        .map(|(g, _)| g.refusal())
}

/// Takes the locks of [`locks`] in one round trip (units whose next statements depend on what
/// the locks protect).
pub(super) async fn lock_all(
    tx: &mut dyn Tx,
    guards: &[&[Guard]],
    also: &[&str],
) -> anyhow::Result<()> {
    let stmts = locks(tx.backend(), guards, also);
    if !stmts.is_empty() {
        tx.run(stmts).await?;
    }
    Ok(())
}

/// Records one event per guard in one round trip; `Some(refusal)` means a bucket was full and
/// the unit must be discarded (rolled back).
pub(super) async fn check(
    tx: &mut dyn Tx,
    guards: &[Guard],
    now: OffsetDateTime,
) -> anyhow::Result<Option<Limited>> {
    if guards.is_empty() {
        return Ok(None);
    }
    let result = tx.run(checks(guards, now)).await;
    let done = match &result {
        Ok(done) => done.as_slice(),
        Err(failed) => failed.done.as_slice(),
    };
    if let Some(limited) = refusal(guards, done) {
        return Ok(Some(limited));
    }
    result?;
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
                let counts = limited
                    .windows
                    .iter()
                    .map(|(window, _)| {
                        Stmt::new(
                            "SELECT COUNT(*) AS n, MIN(at) AS oldest FROM rate_events WHERE bucket = $1 AND at > $2",
                            vec![limited.bucket.clone().into(), (now - *window).into()],
                        )
                    })
                    .collect();
                let done = tx.run(counts).await?;
                let mut reopens = now;
                for ((window, limit), d) in limited.windows.iter().zip(&done) {
                    let row = d
                        .rows
                        .first()
                        .ok_or_else(|| anyhow::anyhow!("no count of rate events"))?;
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
                let done = tx
                    .run(vec![
                        Stmt::new(
                            "INSERT INTO rate_events (bucket, at) VALUES ($1, $2)",
                            vec![bucket.clone().into(), now.into()],
                        ),
                        Stmt::new(
                            "SELECT COUNT(*) AS n FROM rate_events WHERE bucket = $1 AND at > $2",
                            vec![bucket.into(), (now - window).into()],
                        ),
                    ])
                    .await?;
                let n = done
                    .last()
                    .and_then(|d| d.rows.first())
                    .ok_or_else(|| anyhow::anyhow!("no count of rate events"))?
                    .int("n")?;
                Ok(Unit::Commit(n))
            })
        })
        .await
    }
}
