//! The durable outbox: messages are written in the same transaction as the code they carry and
//! delivered by a worker that claims rows with a lease, so a crash never loses or doubles one.

use time::OffsetDateTime;

use super::limits::{check, lock_all, Guard};
use super::stmt::{Row, Stmt};
use super::tx::{Backend, Tx, Unit};
use super::Store;
use crate::domain::{MessageId, OutboxChannel, Stored, VerificationId};

/// A message to queue (inside the unit of work that creates its code).
#[derive(Clone)]
pub struct NewMessage {
    pub id: MessageId,
    pub channel: OutboxChannel,
    pub recipient_masked: String,
    pub verification_id: Option<VerificationId>,
    /// Sealed with the outbox key; holds the code until delivery.
    pub payload: Vec<u8>,
    pub now: OffsetDateTime,
    /// The message is dropped rather than delivered after this time (the code's expiry).
    pub not_after: OffsetDateTime,
    /// Stored already claimed by this process's worker, which gets it in memory once the
    /// transaction commits (no claim transaction, no wait for a poll). If the process dies
    /// first, the lease runs out and any worker claims it from the table.
    pub claim: Option<Claim>,
    /// A decoy's message: stored as [`MessageStatus::Withheld`], with no payload and no claim.
    pub withheld: bool,
}

impl std::fmt::Debug for NewMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewMessage")
            .field("id", &self.id)
            .field("channel", &self.channel)
            .field("recipient_masked", &self.recipient_masked)
            .finish_non_exhaustive()
    }
}

/// A lease on a message for one worker.
#[derive(Debug, Clone)]
pub struct Claim {
    pub worker: String,
    pub until: OffsetDateTime,
}

impl NewMessage {
    /// The message as its worker receives it, if it is stored claimed.
    pub fn handed_over(&self) -> Option<ClaimedMessage> {
        let claim = self.claim.as_ref()?;
        Some(ClaimedMessage {
            id: self.id.clone(),
            channel: self.channel,
            recipient_masked: self.recipient_masked.clone(),
            payload: Some(self.payload.clone()),
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
    pub channel: OutboxChannel,
    pub recipient_masked: String,
    pub payload: Option<Vec<u8>>,
    pub attempts: i64,
    pub not_after: OffsetDateTime,
    /// The lease: past it, another worker may claim the message again.
    pub claimed_until: OffsetDateTime,
}

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageStatus {
    /// Waiting for (another) delivery try.
    Pending,
    /// Claimed by a worker.
    Sending,
    Sent,
    Failed,
    /// Its code expired before it could be delivered.
    Expired,
    /// A newer code replaced it before delivery.
    Superseded,
    /// Never to be delivered: a decoy's SMS, stored so that a decoy writes what a real send
    /// writes (the same statements, so the same time on a networked database).
    Withheld,
}

impl Stored for MessageStatus {
    const WHAT: &'static str = "message status";
    const ALL: &'static [Self] = &[
        Self::Pending,
        Self::Sending,
        Self::Sent,
        Self::Failed,
        Self::Expired,
        Self::Superseded,
        Self::Withheld,
    ];
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Superseded => "superseded",
            Self::Withheld => "withheld",
        }
    }
}

/// Why a message is given up for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    Failed,
    /// The code died first.
    Expired,
}

/// A row as listed on the development outbox page.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub id: MessageId,
    pub channel: OutboxChannel,
    pub recipient_masked: String,
    pub payload: Option<Vec<u8>>,
    pub status: MessageStatus,
    pub attempts: i64,
    pub created_at: OffsetDateTime,
    pub last_error: Option<String>,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        <Self as Stored>::as_str(self)
    }
}

pub(super) fn insert_message(m: &NewMessage) -> Stmt {
    let (status, attempts) = match (&m.claim, m.withheld) {
        (_, true) => (MessageStatus::Withheld, 0i64),
        (Some(_), false) => (MessageStatus::Sending, 1),
        (None, false) => (MessageStatus::Pending, 0),
    };
    Stmt::new(
        "INSERT INTO outbox (id, channel, recipient_masked, verification_id, payload, status, attempts, created_at, \
         next_attempt_at, not_after, claimed_by, claimed_until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11)",
        vec![
            m.id.as_str().into(),
            m.channel.into(),
            m.recipient_masked.as_str().into(),
            m.verification_id.as_ref().map(|v| v.as_str()).into(),
            m.payload.as_slice().into(),
            status.into(),
            attempts.into(),
            m.now.into(),
            m.not_after.into(),
            m.claim.as_ref().map(|c| c.worker.as_str()).into(),
            m.claim.as_ref().map(|c| c.until).into(),
        ],
    )
}

/// Cancels any undelivered message with a verification's previous code.
pub(super) fn supersede_messages(ver_id: &VerificationId) -> Stmt {
    Stmt::new(
        "UPDATE outbox SET status = 'superseded', payload = NULL WHERE verification_id = $1 AND status IN ('pending', 'sending')",
        vec![ver_id.as_str().into()],
    )
}

const CLAIM_SQLITE: &str = "UPDATE outbox SET status = 'sending', claimed_by = $1, claimed_until = $2, attempts = attempts + 1 \
     WHERE id IN (SELECT id FROM outbox WHERE (status = 'pending' AND next_attempt_at <= $3) \
                  OR (status = 'sending' AND claimed_until < $3) ORDER BY next_attempt_at LIMIT $4) \
     RETURNING id, channel, recipient_masked, payload, attempts, not_after";

/// PostgreSQL: workers of several instances skip each other's locked rows instead of waiting.
const CLAIM_POSTGRES: &str = "UPDATE outbox SET status = 'sending', claimed_by = $1, claimed_until = $2, attempts = attempts + 1 \
     WHERE id IN (SELECT id FROM outbox WHERE (status = 'pending' AND next_attempt_at <= $3) \
                  OR (status = 'sending' AND claimed_until < $3) ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
     RETURNING id, channel, recipient_masked, payload, attempts, not_after";

fn claimed_from_row(r: &Row, claimed_until: OffsetDateTime) -> anyhow::Result<ClaimedMessage> {
    Ok(ClaimedMessage {
        id: MessageId::from_trusted(r.text("id")?),
        channel: r.word("channel")?,
        recipient_masked: r.text("recipient_masked")?,
        payload: r.opt_blob("payload")?,
        attempts: r.int("attempts")?,
        not_after: r.time("not_after")?,
        claimed_until,
    })
}

fn entry_from_row(r: &Row) -> anyhow::Result<OutboxEntry> {
    Ok(OutboxEntry {
        id: MessageId::from_trusted(r.text("id")?),
        channel: r.word("channel")?,
        recipient_masked: r.text("recipient_masked")?,
        payload: r.opt_blob("payload")?,
        status: r.word("status")?,
        attempts: r.int("attempts")?,
        created_at: r.time("created_at")?,
        last_error: r.opt_text("last_error")?,
    })
}

/// Runs independent statements as one unit of work (one batch).
async fn commit_all(tx: &mut dyn Tx, stmts: Vec<Stmt>) -> anyhow::Result<Unit<u64>> {
    let done = tx.run(stmts).await?;
    Ok(Unit::Commit(done.iter().map(|d| d.changed).sum()))
}

impl Store {
    /// Queues a message that belongs to no code (an owner notice) if `guard` has room (e.g. one
    /// per account per day); returns whether it was queued. A full bucket writes nothing.
    pub async fn queue_notice(&self, message: NewMessage, guard: Guard) -> anyhow::Result<bool> {
        self.write(move |tx| {
            Box::pin(async move {
                let guards = [guard];
                lock_all(tx, &[&guards], &[]).await?;
                if check(tx, &guards, message.now).await?.is_some() {
                    return Ok(Unit::Discard(false));
                }
                tx.execute(insert_message(&message)).await?;
                Ok(Unit::Commit(true))
            })
        })
        .await
    }

    /// Claims up to `limit` due messages for `worker` until `lease_until`. Rows whose lease ran out
    /// (a worker that died mid-send) are claimed again.
    pub async fn claim_messages(
        &self,
        worker: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: i64,
    ) -> anyhow::Result<Vec<ClaimedMessage>> {
        let worker = worker.to_string();
        self.write(move |tx| {
            let sql = match tx.backend() {
                Backend::Sqlite => CLAIM_SQLITE,
                Backend::Postgres => CLAIM_POSTGRES,
            };
            let stmt = Stmt::new(
                sql,
                vec![worker.into(), lease_until.into(), now.into(), limit.into()],
            );
            Box::pin(async move {
                let rows = tx.fetch_all(stmt).await?;
                let claimed = rows
                    .iter()
                    .map(|r| claimed_from_row(r, lease_until))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok(Unit::Commit(claimed))
            })
        })
        .await
    }

    /// Records deliveries, in one unit of work. Payloads (and with them the codes) are erased
    /// unless `keep_payload` (development mode, for the outbox page).
    pub async fn mark_messages_sent(
        &self,
        ids: &[MessageId],
        now: OffsetDateTime,
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
        let stmts: Vec<Stmt> = ids
            .iter()
            .map(|id| Stmt::new(sql, vec![now.into(), id.as_str().into()]))
            .collect();
        self.write(move |tx| Box::pin(commit_all(tx, stmts)))
            .await?;
        Ok(())
    }

    /// Puts a message back in the queue after a failed try.
    pub async fn retry_message(
        &self,
        id: &MessageId,
        next_attempt_at: OffsetDateTime,
        error: &str,
    ) -> anyhow::Result<()> {
        let stmt = Stmt::new(
            "UPDATE outbox SET status = 'pending', next_attempt_at = $1, claimed_by = NULL, claimed_until = NULL, last_error = $2 \
             WHERE id = $3 AND status = 'sending'",
            vec![next_attempt_at.into(), error.into(), id.as_str().into()],
        );
        self.write(move |tx| Box::pin(commit_all(tx, vec![stmt])))
            .await?;
        Ok(())
    }

    /// Gives a message up for good and erases its payload.
    pub async fn abandon_message(
        &self,
        id: &MessageId,
        why: GiveUp,
        error: &str,
    ) -> anyhow::Result<()> {
        let status = match why {
            GiveUp::Failed => MessageStatus::Failed,
            GiveUp::Expired => MessageStatus::Expired,
        };
        let stmt = Stmt::new(
            "UPDATE outbox SET status = $1, payload = NULL, claimed_by = NULL, claimed_until = NULL, last_error = $2 WHERE id = $3",
            vec![status.into(), error.into(), id.as_str().into()],
        );
        self.write(move |tx| Box::pin(commit_all(tx, vec![stmt])))
            .await?;
        Ok(())
    }

    /// Returns this worker's claimed messages to the queue (graceful shutdown).
    pub async fn release_claims(&self, worker: &str) -> anyhow::Result<u64> {
        let stmt = Stmt::new(
            "UPDATE outbox SET status = 'pending', claimed_by = NULL, claimed_until = NULL, attempts = attempts - 1 \
             WHERE claimed_by = $1 AND status = 'sending'",
            vec![worker.into()],
        );
        self.write(move |tx| Box::pin(commit_all(tx, vec![stmt])))
            .await
    }

    /// The most recent messages, newest first (development outbox page).
    pub async fn recent_messages(&self, limit: i64) -> anyhow::Result<Vec<OutboxEntry>> {
        self.read(move |tx| {
            let stmt = Stmt::new(
                "SELECT id, channel, recipient_masked, payload, status, attempts, created_at, last_error FROM outbox \
                 ORDER BY created_at DESC, id DESC LIMIT $1",
                vec![limit.into()],
            );
            Box::pin(async move { tx.fetch_all(stmt).await?.iter().map(entry_from_row).collect() })
        })
        .await
    }
}
