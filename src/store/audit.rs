//! The audit log: security events with masked identifiers (never a code or a token).

use super::stmt::{Columns, Stmt};
use super::Store;
use crate::domain::UserId;

/// One security event.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub event: &'static str,
    /// `success`, `failure` or `refused`.
    pub outcome: &'static str,
    pub user_id: Option<String>,
    /// Masked (`j***@example.com`, `+1*******123`).
    pub identifier: Option<String>,
    pub flow_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// An event as listed on the profile page.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub at: i64,
    pub event: String,
    pub outcome: String,
    pub identifier: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl AuditEvent {
    /// The insert, to run inside the unit of work the event belongs to.
    pub(crate) fn statement(&self, now: i64) -> Stmt {
        Stmt::new(
            "INSERT INTO audit_events (at, user_id, event, outcome, identifier, flow_id, ip, user_agent) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            vec![
                now.into(),
                self.user_id.as_deref().into(),
                self.event.into(),
                self.outcome.into(),
                self.identifier.as_deref().into(),
                self.flow_id.as_deref().into(),
                self.ip.as_deref().into(),
                self.user_agent.as_deref().into(),
            ],
        )
    }
}

fn entry_from_row(r: &impl Columns) -> AuditEntry {
    AuditEntry {
        at: r.int("at"),
        event: r.text("event"),
        outcome: r.text("outcome"),
        identifier: r.opt_text("identifier"),
        ip: r.opt_text("ip"),
        user_agent: r.opt_text("user_agent"),
    }
}

impl Store {
    /// Records an event on its own (for refusals, whose unit of work wrote nothing).
    pub async fn record_audit(&self, event: &AuditEvent, now: i64) -> anyhow::Result<()> {
        self.write_all(vec![event.statement(now)]).await
    }

    /// A person's newest events.
    pub async fn audit_for_user(
        &self,
        user: &UserId,
        limit: i64,
    ) -> anyhow::Result<Vec<AuditEntry>> {
        self.read_all(
            Stmt::new(
                "SELECT at, event, outcome, identifier, ip, user_agent FROM audit_events \
                 WHERE user_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
                vec![user.as_str().into(), limit.into()],
            ),
            |r| entry_from_row(r),
            entry_from_row,
        )
        .await
    }
}
