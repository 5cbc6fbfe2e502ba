//! The durable outbox: messages are written in the same transaction as the code they carry and
//! delivered by a worker that claims rows with a lease, so a crash never loses or doubles one.

use sqlx::Row;

use super::sqlite_writer::Unit;
use super::stmt::Stmt;
use super::{Backend, Store};
use crate::domain::{MessageId, VerificationId};

pub struct NewMessage<'a> {
    pub id: &'a MessageId,
    pub channel: &'static str,
    pub recipient_masked: &'a str,
    pub verification_id: Option<&'a VerificationId>,
    /// Sealed with the outbox key; holds the code until delivery.
    pub payload: &'a [u8],
    pub now: i64,
    /// The message is dropped rather than delivered after this time (the code's expiry).
    pub not_after: i64,
    /// Stored already claimed by this process's worker, which gets it in memory once the
    /// transaction commits (no claim transaction, no wait for a poll). If the process dies
    /// first, the lease runs out and any worker claims it from the table.
    pub claim: Option<Claim<'a>>,
}

/// A lease on a message for one worker.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub worker: &'a str,
    pub until: i64,
}

impl NewMessage<'_> {
    /// The message as its worker receives it, if it is stored claimed.
    pub fn handed_over(&self) -> Option<ClaimedMessage> {
        let claim = self.claim?;
        Some(ClaimedMessage {
            id: self.id.clone(),
            channel: self.channel.to_string(),
            recipient_masked: self.recipient_masked.to_string(),
            payload: Some(self.payload.to_vec()),
            attempts: 1,
            not_after: self.not_after,
            claimed_until: claim.until,
        })
    }
}

/// A message claimed by a worker for one delivery try.
#[derive(Debug, Clone)]
pub struct ClaimedMessage {
    pub id: MessageId,
    pub channel: String,
    pub recipient_masked: String,
    pub payload: Option<Vec<u8>>,
    pub attempts: i64,
    pub not_after: i64,
    /// The lease: past it, another worker may claim the message again.
    pub claimed_until: i64,
}

/// A row as listed on the development outbox page.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub id: MessageId,
    pub channel: String,
    pub recipient_masked: String,
    pub payload: Option<Vec<u8>>,
    pub status: String,
    pub attempts: i64,
    pub created_at: i64,
    pub last_error: Option<String>,
}

pub(super) fn insert_message(m: &NewMessage<'_>) -> Stmt {
    let (status, attempts) = match m.claim {
        Some(_) => ("sending", 1i64),
        None => ("pending", 0),
    };
    Stmt::new(
        "INSERT INTO outbox (id, channel, recipient_masked, verification_id, payload, status, attempts, created_at, \
         next_attempt_at, not_after, claimed_by, claimed_until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11)",
        vec![
            m.id.as_str().into(),
            m.channel.into(),
            m.recipient_masked.into(),
            m.verification_id.map(|v| v.as_str()).into(),
            m.payload.into(),
            status.into(),
            attempts.into(),
            m.now.into(),
            m.not_after.into(),
            m.claim.map(|c| c.worker).into(),
            m.claim.map(|c| c.until).into(),
        ],
    )
}

const CLAIM_SQLITE: &str = "UPDATE outbox SET status = 'sending', claimed_by = $1, claimed_until = $2, attempts = attempts + 1 \
     WHERE id IN (SELECT id FROM outbox WHERE (status = 'pending' AND next_attempt_at <= $3) \
                  OR (status = 'sending' AND claimed_until < $3) ORDER BY next_attempt_at LIMIT $4) \
     RETURNING id, channel, recipient_masked, payload, attempts, not_after";

const CLAIM_POSTGRES: &str = "UPDATE outbox SET status = 'sending', claimed_by = $1, claimed_until = $2, attempts = attempts + 1 \
     WHERE id IN (SELECT id FROM outbox WHERE (status = 'pending' AND next_attempt_at <= $3) \
                  OR (status = 'sending' AND claimed_until < $3) ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
     RETURNING id, channel, recipient_masked, payload, attempts, not_after";

impl Store {
    /// Claims up to `limit` due messages for `worker` until `lease_until`. Rows whose lease ran out
    /// (a worker that died mid-send) are claimed again.
    pub async fn claim_messages(
        &self,
        worker: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<ClaimedMessage>> {
        if let Some(writer) = &self.sqlite_writer {
            let worker = worker.to_string();
            return writer
                .run(move |conn| {
                    let mut stmt = conn.prepare_cached(CLAIM_SQLITE)?;
                    let rows =
                        stmt.query_map(rusqlite::params![worker, lease_until, now, limit], |r| {
                            Ok(ClaimedMessage {
                                id: MessageId::from_trusted(r.get(0)?),
                                channel: r.get(1)?,
                                recipient_masked: r.get(2)?,
                                payload: r.get(3)?,
                                attempts: r.get(4)?,
                                not_after: r.get(5)?,
                                claimed_until: lease_until,
                            })
                        })?;
                    Ok(Unit::Commit(rows.collect::<rusqlite::Result<Vec<_>>>()?))
                })
                .await;
        }
        let sql = match self.backend {
            Backend::Sqlite => CLAIM_SQLITE,
            Backend::Postgres => CLAIM_POSTGRES,
        };
        let rows = sqlx::query(sql)
            .bind(worker)
            .bind(lease_until)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.writer)
            .await?;
        Ok(rows
            .iter()
            .map(|r| ClaimedMessage {
                id: MessageId::from_trusted(r.get("id")),
                channel: r.get("channel"),
                recipient_masked: r.get("recipient_masked"),
                payload: r.get("payload"),
                attempts: r.get("attempts"),
                not_after: r.get("not_after"),
                claimed_until: lease_until,
            })
            .collect())
    }

    /// Records deliveries, in one statement. Payloads (and with them the codes) are erased unless
    /// `keep_payload` (development mode, for the outbox page).
    pub async fn mark_messages_sent(
        &self,
        ids: &[MessageId],
        now: i64,
        keep_payload: bool,
    ) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = if keep_payload {
            "UPDATE outbox SET status = 'sent', sent_at = $1, claimed_by = NULL, claimed_until = NULL, last_error = NULL \
             WHERE id = $2"
        } else {
            "UPDATE outbox SET status = 'sent', sent_at = $1, claimed_by = NULL, claimed_until = NULL, last_error = NULL, \
             payload = NULL WHERE id = $2"
        };
        let stmts = ids
            .iter()
            .map(|id| Stmt::new(sql, vec![now.into(), id.as_str().into()]))
            .collect();
        self.write_all(stmts).await
    }

    /// Puts a message back in the queue after a failed try.
    pub async fn retry_message(
        &self,
        id: &MessageId,
        next_attempt_at: i64,
        error: &str,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE outbox SET status = 'pending', next_attempt_at = $1, claimed_by = NULL, claimed_until = NULL, last_error = $2 \
             WHERE id = $3 AND status = 'sending'",
        )
        .bind(next_attempt_at)
        .bind(error)
        .bind(id.as_str())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Gives a message up for good (`failed`, or `expired` when its code died first) and erases its payload.
    pub async fn abandon_message(
        &self,
        id: &MessageId,
        status: &'static str,
        error: &str,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE outbox SET status = $1, payload = NULL, claimed_by = NULL, claimed_until = NULL, last_error = $2 WHERE id = $3",
        )
        .bind(status)
        .bind(error)
        .bind(id.as_str())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Returns this worker's claimed messages to the queue (graceful shutdown).
    pub async fn release_claims(&self, worker: &str) -> anyhow::Result<u64> {
        Ok(sqlx::query(
            "UPDATE outbox SET status = 'pending', claimed_by = NULL, claimed_until = NULL, attempts = attempts - 1 \
             WHERE claimed_by = $1 AND status = 'sending'",
        )
        .bind(worker)
        .execute(&self.writer)
        .await?
        .rows_affected())
    }

    /// The most recent messages, newest first (development outbox page).
    pub async fn recent_messages(&self, limit: i64) -> anyhow::Result<Vec<OutboxEntry>> {
        let rows = sqlx::query(
            "SELECT id, channel, recipient_masked, payload, status, attempts, created_at, last_error FROM outbox \
             ORDER BY created_at DESC, id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .iter()
            .map(|r| OutboxEntry {
                id: MessageId::from_trusted(r.get("id")),
                channel: r.get("channel"),
                recipient_masked: r.get("recipient_masked"),
                payload: r.get("payload"),
                status: r.get("status"),
                attempts: r.get("attempts"),
                created_at: r.get("created_at"),
                last_error: r.get("last_error"),
            })
            .collect())
    }
}
