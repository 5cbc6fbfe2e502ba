//! Deleting what is no longer needed, in small batches so no statement holds the write lock for
//! long. Safe to run on several instances at once: every delete is idempotent.

use super::Store;

/// Rows deleted by one [`Store::purge`] pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub flows: u64,
    pub sessions: u64,
    pub messages: u64,
    pub lockouts: u64,
    pub rate_events: u64,
    pub audit_events: u64,
}

const BATCH: i64 = 1000;

/// How long finished records are kept before deletion (for support and the dev outbox page).
pub const KEEP_FINISHED_MS: i64 = 24 * 3600 * 1000;

impl Store {
    /// Deletes rows older than `cutoff` from a table whose ids follow insertion order, oldest
    /// first, in batches that each read only `BATCH` rows.
    async fn delete_oldest(&self, table: &str, cutoff: i64) -> anyhow::Result<u64> {
        let sql = format!(
            "DELETE FROM {table} WHERE id IN (SELECT id FROM \
             (SELECT id, at FROM {table} ORDER BY id LIMIT $2) AS oldest WHERE at < $1)"
        );
        self.delete_in_batches(&sql, cutoff).await
    }

    async fn delete_in_batches(&self, sql: &str, cutoff: i64) -> anyhow::Result<u64> {
        let mut total = 0;
        loop {
            let n = sqlx::query(sql)
                .bind(cutoff)
                .bind(BATCH)
                .execute(&self.writer)
                .await?
                .rows_affected();
            total += n;
            if n < BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Deletes flows (with their verifications) expired or finished more than a day ago (until
    /// then a stale link still gets the "expired" page), expired sessions, outbox messages finished more than a day ago, and failure counts with
    /// no activity for a day whose lock (if any) has ended.
    /// Audit events are kept for `audit_retention_ms`.
    pub async fn purge(&self, now: i64, audit_retention_ms: i64) -> anyhow::Result<Purged> {
        let day_ago = now - KEEP_FINISHED_MS;
        let flows = self
            .delete_in_batches(
                "DELETE FROM flows WHERE id IN (SELECT id FROM flows WHERE \
                 (status = 'pending' AND expires_at < $1) OR (status = 'complete' AND completed_at < $1) LIMIT $2)",
                day_ago,
            )
            .await?;
        let sessions = self
            .delete_in_batches(
                "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE expires_at < $1 LIMIT $2)",
                now,
            )
            .await?;
        let messages = self
            .delete_in_batches(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE \
                 status IN ('sent', 'failed', 'expired', 'superseded') AND created_at < $1 LIMIT $2)",
                day_ago,
            )
            .await?;
        let lockouts = self
            .delete_in_batches(
                "DELETE FROM identifier_lockouts WHERE identifier IN (SELECT identifier FROM identifier_lockouts WHERE \
                 updated_at < $1 AND (locked_until IS NULL OR locked_until < $1) LIMIT $2)",
                day_ago,
            )
            .await?;
        // Rate-limit events outlive no window (the longest is a day); audit events their
        // retention. Both tables grow in insertion order, so each batch looks at the oldest rows
        // by id only (no index on `at` to maintain on every insert) and stops at the first
        // batch with a row still to keep.
        let rate_events = self.delete_oldest("rate_events", day_ago).await?;
        let audit_events = self
            .delete_oldest("audit_events", now - audit_retention_ms)
            .await?;
        Ok(Purged {
            flows,
            sessions,
            messages,
            lockouts,
            rate_events,
            audit_events,
        })
    }
}
