//! Deleting what is no longer needed, in small batches so no statement holds the write lock for
//! long. Safe to run on several instances at once: every delete is idempotent.

use time::OffsetDateTime;

use super::stmt::Stmt;
use super::tx::Unit;
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
    /// OpenID Connect grants whose session expired, and their codes and refresh tokens.
    pub grants: u64,
    /// Entries of the session revocation log older than a day.
    pub revocations: u64,
}

const BATCH: i64 = 1000;

/// How long finished records are kept before deletion (for support and the dev outbox page).
pub const KEEP_FINISHED: time::Duration = time::Duration::DAY;

const FLOWS: &str = "DELETE FROM flows WHERE id IN (SELECT id FROM flows WHERE \
     (status = 'pending' AND expires_at < $1) OR (status = 'complete' AND completed_at < $1) LIMIT $2)";
const SESSIONS: &str =
    "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE expires_at < $1 LIMIT $2)";
const MESSAGES: &str = "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE \
     status IN ('sent', 'failed', 'expired', 'superseded', 'withheld') AND created_at < $1 LIMIT $2)";
/// How long a failure count is kept after its last failure. A count is *consecutive* failures
/// (NIST SP 800-63B-4 §3.2.2): neither a lock running out nor a quiet day resets it, or an
/// attacker could pace their guesses below the stop. After a year without a failure it is
/// forgotten, so the table does not keep every mistyped identifier forever; that makes the stop
/// a bound per key per year.
pub const KEEP_FAILURE_COUNTS: time::Duration = time::Duration::days(365);

const LOCKOUTS: &str = "DELETE FROM identifier_lockouts WHERE identifier IN (SELECT identifier FROM identifier_lockouts WHERE \
     updated_at < $1 AND (locked_until IS NULL OR locked_until < $1) LIMIT $2)";
// Rate-limit events outlive no window (the longest is a day); audit events their retention.
// Both tables grow in insertion order, so each batch looks at the oldest rows by id only (no
// index on `at` to maintain on every insert) and stops at the first batch with a row to keep.
const RATE_EVENTS: &str = "DELETE FROM rate_events WHERE id IN (SELECT id FROM \
     (SELECT id, at FROM rate_events ORDER BY id LIMIT $2) AS oldest WHERE at < $1)";
const AUDIT_EVENTS: &str = "DELETE FROM audit_events WHERE id IN (SELECT id FROM \
     (SELECT id, at FROM audit_events ORDER BY id LIMIT $2) AS oldest WHERE at < $1)";

// A grant ends with its session; codes and refresh tokens with their grant, or a day after they
// expired (a code replayed within that day still revokes its grant).
const GRANTS: &str =
    "DELETE FROM oauth_grants WHERE id IN (SELECT id FROM oauth_grants WHERE expires_at < $1 LIMIT $2)";
const CODES: &str =
    "DELETE FROM oauth_codes WHERE code_hash IN (SELECT code_hash FROM oauth_codes WHERE \
     expires_at < $1 OR grant_id NOT IN (SELECT id FROM oauth_grants) LIMIT $2)";
const REFRESH_TOKENS: &str = "DELETE FROM oauth_refresh_tokens WHERE token_hash IN (SELECT token_hash FROM oauth_refresh_tokens WHERE \
     expires_at < $1 OR grant_id NOT IN (SELECT id FROM oauth_grants) LIMIT $2)";

const REVOCATIONS: &str = "DELETE FROM session_revocations WHERE revoked_at IN \
     (SELECT revoked_at FROM session_revocations WHERE revoked_at < $1 LIMIT $2)";

impl Store {
    /// Runs one delete batch after another (each its own unit of work) until one deletes less
    /// than a full batch.
    async fn delete_in_batches(
        &self,
        sql: &'static str,
        cutoff: OffsetDateTime,
    ) -> anyhow::Result<u64> {
        let mut total = 0;
        loop {
            let stmt = Stmt::new(sql, vec![cutoff.into(), BATCH.into()]);
            let n = self
                .write(move |tx| Box::pin(async move { Ok(Unit::Commit(tx.execute(stmt).await?)) }))
                .await?;
            total += n;
            if n < BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Deletes flows (with their verifications) expired or finished more than a day ago (until
    /// then a stale link still gets the "expired" page), expired sessions, outbox messages
    /// finished more than a day ago, and failure counts without a failure for a year
    /// ([`KEEP_FAILURE_COUNTS`]). Audit events are kept for `audit_retention`.
    pub async fn purge(
        &self,
        now: OffsetDateTime,
        audit_retention: time::Duration,
    ) -> anyhow::Result<Purged> {
        let day_ago = now - KEEP_FINISHED;
        Ok(Purged {
            flows: self.delete_in_batches(FLOWS, day_ago).await?,
            sessions: self.delete_in_batches(SESSIONS, now).await?,
            messages: self.delete_in_batches(MESSAGES, day_ago).await?,
            lockouts: self
                .delete_in_batches(LOCKOUTS, now - KEEP_FAILURE_COUNTS)
                .await?,
            rate_events: self.delete_in_batches(RATE_EVENTS, day_ago).await?,
            audit_events: self
                .delete_in_batches(AUDIT_EVENTS, now - audit_retention)
                .await?,
            grants: self.delete_in_batches(GRANTS, now).await?
                + self.delete_in_batches(CODES, day_ago).await?
                + self.delete_in_batches(REFRESH_TOKENS, day_ago).await?,
            revocations: self.delete_in_batches(REVOCATIONS, day_ago).await?,
        })
    }
}
