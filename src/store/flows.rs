//! Flows (sign-up and sign-in attempts) and their verifications (the current code per identifier).

use sqlx::any::AnyRow;
use sqlx::Row;

use super::outbox::{insert_message, NewMessage};
use super::sessions::{insert_session, NewSession};
use super::{is_unique_violation, retry_read, Store};
use crate::domain::{EmailAddress, FlowId, IdentifierId, UserId, VerificationId};

pub struct NewFlow<'a> {
    pub id: &'a FlowId,
    pub kind: &'static str,
    pub identifier_kind: &'static str,
    pub identifier: &'a EmailAddress,
    pub user_id: Option<&'a UserId>,
    pub redirect_url: Option<&'a str>,
    pub browser_binding: Option<&'a str>,
    pub now: i64,
    pub expires_at: i64,
}

pub struct NewVerification<'a> {
    pub id: &'a VerificationId,
    pub channel: &'static str,
    pub destination: &'a str,
    pub identifier_id: Option<&'a IdentifierId>,
    pub code_hash: &'a str,
    pub max_attempts: i64,
    pub sent_at: i64,
    pub expires_at: i64,
}

/// A flow as stored, with its verification.
#[derive(Debug, Clone)]
pub struct FlowRecord {
    pub id: FlowId,
    pub kind: String,
    pub status: String,
    pub identifier_value: String,
    pub identifier_canonical: String,
    pub user_id: Option<UserId>,
    pub redirect_url: Option<String>,
    pub browser_binding: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub verification: VerificationRecord,
}

#[derive(Debug, Clone)]
pub struct VerificationRecord {
    pub id: VerificationId,
    pub channel: String,
    pub destination: String,
    pub identifier_id: Option<IdentifierId>,
    pub attempts: i64,
    pub max_attempts: i64,
    pub sent_at: i64,
    pub expires_at: i64,
    pub status: String,
}

/// The outcome of [`Store::take_attempt`].
#[derive(Debug, Clone)]
pub enum AttemptSlot {
    /// A try was reserved (the counter is already incremented); compare against `code_hash`.
    Open {
        attempts: i64,
        max_attempts: i64,
        code_hash: String,
    },
    /// The identifier is locked out until this time (Unix ms); no try was used.
    Locked { until: i64 },
    /// The code is expired, used up, verified or replaced.
    Unavailable,
}

/// How a completion transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompleteOutcome {
    Completed,
    /// Another request consumed the code (or a resend replaced it) first; nothing was written.
    LostRace,
    /// Sign-up only: the identifier was registered by someone else meanwhile; nothing was written.
    IdentifierTaken,
}

const LOAD_FLOW: &str = "SELECT f.id, f.kind, f.status, f.identifier_value, f.identifier_canonical, f.user_id, \
     f.redirect_url, f.browser_binding, f.created_at, f.expires_at, v.id AS v_id, v.channel, v.destination, \
     v.identifier_id, v.attempts, v.max_attempts, v.sent_at, v.expires_at AS v_expires_at, v.status AS v_status \
     FROM flows f JOIN verifications v ON v.flow_id = f.id WHERE f.id = $1";

fn flow_from_row(r: &AnyRow) -> FlowRecord {
    FlowRecord {
        id: FlowId::from_trusted(r.get("id")),
        kind: r.get("kind"),
        status: r.get("status"),
        identifier_value: r.get("identifier_value"),
        identifier_canonical: r.get("identifier_canonical"),
        user_id: r
            .get::<Option<String>, _>("user_id")
            .map(UserId::from_trusted),
        redirect_url: r.get("redirect_url"),
        browser_binding: r.get("browser_binding"),
        created_at: r.get("created_at"),
        expires_at: r.get("expires_at"),
        verification: VerificationRecord {
            id: VerificationId::from_trusted(r.get("v_id")),
            channel: r.get("channel"),
            destination: r.get("destination"),
            identifier_id: r
                .get::<Option<String>, _>("identifier_id")
                .map(IdentifierId::from_trusted),
            attempts: r.get("attempts"),
            max_attempts: r.get("max_attempts"),
            sent_at: r.get("sent_at"),
            expires_at: r.get("v_expires_at"),
            status: r.get("v_status"),
        },
    }
}

impl Store {
    /// Creates a flow, its first verification and the message carrying the code, atomically.
    pub async fn create_flow(
        &self,
        flow: &NewFlow<'_>,
        ver: &NewVerification<'_>,
        msg: &NewMessage<'_>,
    ) -> anyhow::Result<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO flows (id, kind, status, identifier_kind, identifier_value, identifier_canonical, user_id, \
             redirect_url, browser_binding, created_at, last_active_at, expires_at) \
             VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $8, $9, $9, $10)",
        )
        .bind(flow.id.as_str())
        .bind(flow.kind)
        .bind(flow.identifier_kind)
        .bind(flow.identifier.display())
        .bind(flow.identifier.canonical())
        .bind(flow.user_id.map(|u| u.as_str()))
        .bind(flow.redirect_url)
        .bind(flow.browser_binding)
        .bind(flow.now)
        .bind(flow.expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO verifications (id, flow_id, channel, destination, identifier_id, code_hash, attempts, \
             max_attempts, sent_at, expires_at, status) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9, 'pending')",
        )
        .bind(ver.id.as_str())
        .bind(flow.id.as_str())
        .bind(ver.channel)
        .bind(ver.destination)
        .bind(ver.identifier_id.map(|i| i.as_str()))
        .bind(ver.code_hash)
        .bind(ver.max_attempts)
        .bind(ver.sent_at)
        .bind(ver.expires_at)
        .execute(&mut *tx)
        .await?;
        insert_message(&mut tx, msg).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn load_flow(&self, id: &FlowId) -> anyhow::Result<Option<FlowRecord>> {
        let row = retry_read(|| {
            sqlx::query(LOAD_FLOW)
                .bind(id.as_str())
                .fetch_optional(&self.reader)
        })
        .await?;
        Ok(row.as_ref().map(flow_from_row))
    }

    /// Replaces the code of a pending verification (the old code dies, tries reset), cancels any
    /// undelivered message with the old code, queues the new message and extends the flow.
    /// Returns false, writing nothing, if the previous send is younger than `cooldown_ms` or the
    /// verification is no longer pending.
    #[allow(clippy::too_many_arguments)]
    pub async fn replace_code(
        &self,
        flow_id: &FlowId,
        ver_id: &VerificationId,
        code_hash: &str,
        now: i64,
        code_expires_at: i64,
        cooldown_ms: i64,
        flow_expires_at: i64,
        msg: &NewMessage<'_>,
    ) -> anyhow::Result<bool> {
        let mut tx = self.writer.begin().await?;
        let updated = sqlx::query(
            "UPDATE verifications SET code_hash = $1, attempts = 0, status = 'pending', sent_at = $2, expires_at = $3 \
             WHERE id = $4 AND flow_id = $5 AND status IN ('pending', 'failed') AND sent_at <= $6",
        )
        .bind(code_hash)
        .bind(now)
        .bind(code_expires_at)
        .bind(ver_id.as_str())
        .bind(flow_id.as_str())
        .bind(now - cooldown_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            return Ok(false);
        }
        sqlx::query("UPDATE outbox SET status = 'superseded', payload = NULL WHERE verification_id = $1 AND status IN ('pending', 'sending')")
            .bind(ver_id.as_str())
            .execute(&mut *tx)
            .await?;
        insert_message(&mut tx, msg).await?;
        touch_flow(&mut tx, flow_id, now, flow_expires_at).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Reserves one try on a live code: increments the counter *before* the code is compared, so
    /// parallel guesses can never evaluate more than `max_attempts`. Also extends the flow.
    /// Refused with [`AttemptSlot::Locked`] while the identifier `lock_key` is locked out, and
    /// with [`AttemptSlot::Unavailable`] if the code is expired, used up, verified or replaced.
    pub async fn take_attempt(
        &self,
        flow_id: &FlowId,
        ver_id: &VerificationId,
        lock_key: &str,
        now: i64,
        flow_expires_at: i64,
    ) -> anyhow::Result<AttemptSlot> {
        let mut tx = self.writer.begin().await?;
        let locked_until: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT locked_until FROM identifier_lockouts WHERE identifier = $1",
        )
        .bind(lock_key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(Some(until)) = locked_until {
            if until > now {
                return Ok(AttemptSlot::Locked { until });
            }
        }
        let row = sqlx::query(
            "UPDATE verifications SET attempts = attempts + 1 \
             WHERE id = $1 AND flow_id = $2 AND status = 'pending' AND attempts < max_attempts AND expires_at > $3 \
             RETURNING attempts, max_attempts, code_hash",
        )
        .bind(ver_id.as_str())
        .bind(flow_id.as_str())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(AttemptSlot::Unavailable);
        };
        touch_flow(&mut tx, flow_id, now, flow_expires_at).await?;
        tx.commit().await?;
        Ok(match row.get::<Option<String>, _>("code_hash") {
            Some(code_hash) => AttemptSlot::Open {
                attempts: row.get("attempts"),
                max_attempts: row.get("max_attempts"),
                code_hash,
            },
            None => AttemptSlot::Unavailable,
        })
    }

    /// Records a wrong code: counts a failure for the identifier `lock_key` (locking it for
    /// `cooldown_ms` once `max_failures` consecutive failures are reached; a lock that has run
    /// out starts a new count) and, when the code's tries are used up, kills the code.
    /// Returns the end of the lock if the identifier is now locked.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_wrong_code(
        &self,
        ver_id: &VerificationId,
        code_dead: bool,
        lock_key: &str,
        now: i64,
        max_failures: i64,
        cooldown_ms: i64,
    ) -> anyhow::Result<Option<i64>> {
        let mut tx = self.writer.begin().await?;
        if code_dead {
            sqlx::query("UPDATE verifications SET status = 'failed', code_hash = NULL WHERE id = $1 AND status = 'pending'")
                .bind(ver_id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query(
            "INSERT INTO identifier_lockouts (identifier, failures, locked_until, updated_at) VALUES ($1, 1, NULL, $2) \
             ON CONFLICT (identifier) DO UPDATE SET \
               failures = CASE WHEN identifier_lockouts.locked_until <= $2 THEN 1 ELSE identifier_lockouts.failures + 1 END, \
               locked_until = CASE WHEN identifier_lockouts.locked_until <= $2 THEN NULL ELSE identifier_lockouts.locked_until END, \
               updated_at = $2 \
             RETURNING failures, locked_until",
        )
        .bind(lock_key)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let failures: i64 = row.get("failures");
        let mut locked_until: Option<i64> = row.get("locked_until");
        if locked_until.is_none() && failures >= max_failures {
            let until = now + cooldown_ms;
            sqlx::query("UPDATE identifier_lockouts SET locked_until = $1 WHERE identifier = $2")
                .bind(until)
                .bind(lock_key)
                .execute(&mut *tx)
                .await?;
            locked_until = Some(until);
        }
        tx.commit().await?;
        Ok(locked_until.filter(|u| *u > now))
    }

    /// Consumes the code and completes a sign-up in one transaction: the user, the verified
    /// email address and the session are created together or not at all.
    #[allow(clippy::too_many_arguments)]
    pub async fn complete_sign_up(
        &self,
        flow_id: &FlowId,
        ver_id: &VerificationId,
        code_hash: &str,
        user_id: &UserId,
        identifier_id: &IdentifierId,
        email: &EmailAddress,
        lock_key: &str,
        session: &NewSession<'_>,
    ) -> anyhow::Result<CompleteOutcome> {
        let now = session.now;
        let mut tx = self.writer.begin().await?;
        if !consume_code(&mut tx, flow_id, ver_id, code_hash, lock_key).await? {
            return Ok(CompleteOutcome::LostRace);
        }
        sqlx::query("INSERT INTO users (id, created_at) VALUES ($1, $2)")
            .bind(user_id.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO identifiers (id, user_id, kind, value, canonical, is_primary, verified_at, created_at) \
             VALUES ($1, $2, 'email', $3, $4, 1, $5, $5)",
        )
        .bind(identifier_id.as_str())
        .bind(user_id.as_str())
        .bind(email.display())
        .bind(email.canonical())
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Ok(CompleteOutcome::IdentifierTaken),
            Err(e) => return Err(e.into()),
        }
        insert_session(&mut tx, session).await?;
        finish_flow(&mut tx, flow_id, user_id, session).await?;
        tx.commit().await?;
        Ok(CompleteOutcome::Completed)
    }

    /// Consumes the code and creates the session of a sign-in in one transaction.
    pub async fn complete_sign_in(
        &self,
        flow_id: &FlowId,
        ver_id: &VerificationId,
        code_hash: &str,
        user_id: &UserId,
        lock_key: &str,
        session: &NewSession<'_>,
    ) -> anyhow::Result<CompleteOutcome> {
        let mut tx = self.writer.begin().await?;
        if !consume_code(&mut tx, flow_id, ver_id, code_hash, lock_key).await? {
            return Ok(CompleteOutcome::LostRace);
        }
        insert_session(&mut tx, session).await?;
        finish_flow(&mut tx, flow_id, user_id, session).await?;
        tx.commit().await?;
        Ok(CompleteOutcome::Completed)
    }
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Single use: the conditional update succeeds for exactly one request. A success also clears
/// the identifier's failure count.
async fn consume_code(
    tx: &mut Tx,
    flow_id: &FlowId,
    ver_id: &VerificationId,
    code_hash: &str,
    lock_key: &str,
) -> anyhow::Result<bool> {
    let n = sqlx::query(
        "UPDATE verifications SET status = 'verified', code_hash = NULL \
         WHERE id = $1 AND flow_id = $2 AND status = 'pending' AND code_hash = $3",
    )
    .bind(ver_id.as_str())
    .bind(flow_id.as_str())
    .bind(code_hash)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if n == 1 {
        sqlx::query("DELETE FROM identifier_lockouts WHERE identifier = $1")
            .bind(lock_key)
            .execute(&mut **tx)
            .await?;
    }
    Ok(n == 1)
}

async fn finish_flow(
    tx: &mut Tx,
    flow_id: &FlowId,
    user_id: &UserId,
    session: &NewSession<'_>,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE flows SET status = 'complete', completed_at = $1, last_active_at = $1, user_id = $2, session_id = $3 \
         WHERE id = $4",
    )
    .bind(session.now)
    .bind(user_id.as_str())
    .bind(session.id.as_str())
    .bind(flow_id.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn touch_flow(
    tx: &mut Tx,
    flow_id: &FlowId,
    now: i64,
    expires_at: i64,
) -> anyhow::Result<()> {
    sqlx::query("UPDATE flows SET last_active_at = $1, expires_at = $2 WHERE id = $3 AND status = 'pending'")
        .bind(now)
        .bind(expires_at)
        .bind(flow_id.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
