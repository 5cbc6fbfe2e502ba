//! The audit log: security events with masked identifiers (never a code or a token).

use time::OffsetDateTime;

use super::stmt::{Row, Stmt};
use super::tx::Unit;
use super::Store;
use crate::domain::{AuditKind, AuditOutcome, FlowId, UserId};

/// One security event.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub event: AuditKind,
    pub outcome: AuditOutcome,
    pub user_id: Option<UserId>,
    /// Masked (`j***@example.com`, `+1*******123`).
    pub identifier: Option<String>,
    pub flow_id: Option<FlowId>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// An event as listed on the profile page.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub at: OffsetDateTime,
    pub event: AuditKind,
    pub outcome: AuditOutcome,
    pub identifier: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl AuditEvent {
    /// The insert, to run inside the unit of work the event belongs to.
    pub(crate) fn statement(&self, now: OffsetDateTime) -> Stmt {
        Stmt::new(
            "INSERT INTO audit_events (at, user_id, event, outcome, identifier, flow_id, ip, user_agent) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            vec![
                now.into(),
                self.user_id.as_ref().map(|u| u.as_str()).into(),
                self.event.into(),
                self.outcome.into(),
                self.identifier.as_deref().into(),
                self.flow_id.as_ref().map(|f| f.as_str()).into(),
                self.ip.as_deref().into(),
                self.user_agent.as_deref().into(),
            ],
        )
    }
}

fn entry_from_row(r: &Row) -> anyhow::Result<AuditEntry> {
    Ok(AuditEntry {
        at: r.time("at")?,
        event: r.word("event")?,
        outcome: r.word("outcome")?,
        identifier: r.opt_text("identifier")?,
        ip: r.opt_text("ip")?,
        user_agent: r.opt_text("user_agent")?,
    })
}

impl Store {
    /// Records an event on its own (one that has no other writes, such as a sign-out).
    pub async fn record_audit(
        &self,
        event: &AuditEvent,
        now: OffsetDateTime,
    ) -> anyhow::Result<()> {
        let stmt = event.statement(now);
        self.write(move |tx| {
            Box::pin(async move {
                tx.execute(stmt).await?;
                Ok(Unit::Commit(()))
            })
        })
        .await
    }

    /// A person's newest events.
    pub async fn audit_for_user(
        &self,
        user: &UserId,
        limit: i64,
    ) -> anyhow::Result<Vec<AuditEntry>> {
        let user = user.clone();
        self.read(move |tx| {
            let stmt = Stmt::new(
                "SELECT at, event, outcome, identifier, ip, user_agent FROM audit_events \
                 WHERE user_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
                vec![user.as_str().into(), limit.into()],
            );
            Box::pin(async move {
                tx.fetch_all(stmt)
                    .await?
                    .iter()
                    .map(entry_from_row)
                    .collect()
            })
        })
        .await
    }
}
