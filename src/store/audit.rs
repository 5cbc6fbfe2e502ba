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

/// The insert of one to three events in one statement (`$1` is the time; eight values per row).
macro_rules! insert_events {
    ($($row:literal),+) => {
        concat!(
            "INSERT INTO audit_events (at, user_id, event, outcome, identifier, flow_id, ip, user_agent) VALUES ",
            $($row),+
        )
    };
}
const INSERT_EVENTS: [&str; 3] = [
    insert_events!("($1, $2, $3, $4, $5, $6, $7, $8)"),
    insert_events!(
        "($1, $2, $3, $4, $5, $6, $7, $8), ",
        "($1, $9, $10, $11, $12, $13, $14, $15)"
    ),
    insert_events!(
        "($1, $2, $3, $4, $5, $6, $7, $8), ",
        "($1, $9, $10, $11, $12, $13, $14, $15), ",
        "($1, $16, $17, $18, $19, $20, $21, $22)"
    ),
];

impl AuditEvent {
    /// The inserts of `events`, as few statements as possible (one for up to three events), so
    /// that a unit writing one event and a unit writing two (a sign-up with a free address and
    /// one with a taken address, which also tells the owner) send the database as many
    /// statements.
    pub(crate) fn statements(events: &[AuditEvent], now: OffsetDateTime) -> Vec<Stmt> {
        events
            .chunks(INSERT_EVENTS.len())
            .map(|chunk| {
                let mut params = vec![now.into()];
                for e in chunk {
                    params.extend(e.values());
                }
                Stmt::new(INSERT_EVENTS[chunk.len() - 1], params)
            })
            .collect()
    }

    fn values(&self) -> Vec<super::stmt::Value> {
        vec![
            self.user_id.as_ref().map(|u| u.as_str()).into(),
            self.event.into(),
            self.outcome.into(),
            self.identifier.as_deref().into(),
            self.flow_id.as_ref().map(|f| f.as_str()).into(),
            self.ip.as_deref().into(),
            self.user_agent.as_deref().into(),
        ]
    }

    /// The insert, to run inside the unit of work the event belongs to.
    pub(crate) fn statement(&self, now: OffsetDateTime) -> Stmt {
        let mut params = vec![now.into()];
        params.extend(self.values());
        Stmt::new(INSERT_EVENTS[0], params)
    }
}

pub(super) fn entry_from_row(r: &Row) -> anyhow::Result<AuditEntry> {
    Ok(AuditEntry {
        at: r.time("at")?,
        event: r.word("event")?,
        outcome: r.word("outcome")?,
        identifier: r.opt_text("identifier")?,
        ip: r.opt_text("ip")?,
        user_agent: r.opt_text("user_agent")?,
    })
}

/// The newest `limit` events of `user`.
pub(super) fn for_user(user: &UserId, limit: i64) -> Stmt {
    Stmt::new(
        "SELECT at, event, outcome, identifier, ip, user_agent FROM audit_events \
         WHERE user_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
        vec![user.as_str().into(), limit.into()],
    )
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn event() -> AuditEvent {
        AuditEvent {
            event: AuditKind::CodeSent,
            outcome: AuditOutcome::Success,
            user_id: None,
            identifier: Some("j***@example.com".into()),
            flow_id: None,
            ip: None,
            user_agent: None,
        }
    }

    #[test]
    fn up_to_three_events_go_in_one_statement_with_their_values_in_order() {
        let now = datetime!(2026-12-02 12:00 UTC);
        for n in 1..=3 {
            let stmts = AuditEvent::statements(&vec![event(); n], now);
            assert_eq!(stmts.len(), 1, "{n} events");
            assert_eq!(stmts[0].params.len(), 1 + 7 * n);
            assert_eq!(stmts[0].sql.matches("($1,").count(), n);
            assert!(stmts[0].sql.contains(&format!("${})", 1 + 7 * n)));
        }
        let stmts = AuditEvent::statements(&vec![event(); 4], now);
        assert_eq!(
            stmts.iter().map(|s| s.params.len()).collect::<Vec<_>>(),
            [22, 8]
        );
        assert!(AuditEvent::statements(&[], now).is_empty());
    }
}
