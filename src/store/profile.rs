//! The account changes a person makes on /user and through `/v1/me`: the primary identifier,
//! removing an identifier, deleting the account. Each takes the account's lock (PostgreSQL;
//! SQLite's one writer runs units one at a time) and reads what it decides on inside the unit,
//! so two changes at once cannot both pass a rule that only one may (removing the last two
//! sign-in identifiers in parallel). The rules themselves are the caller's (`auth/profile.rs`).

use time::OffsetDateTime;

use super::accounts::{identifier_from_row, StoredIdentifier, USER_IDENTIFIERS};
use super::audit::AuditEvent;
use super::limits::locks;
use super::lockout::keys as lockout_keys;
use super::outbox::{insert_message, NewMessage};
use super::sessions::logouts_due;
use super::stmt::Stmt;
use super::tx::{Tx, Unit};
use super::Store;
use crate::domain::{IdentifierId, IdentifierKind, SessionId, UserId};

/// What removing an identifier does, as the caller's rule decides it from the account's
/// identifiers as they are inside the unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The identifier of the same kind that becomes primary (the removed one was primary).
    pub new_primary: Option<IdentifierId>,
}

/// An account's lock and its identifiers, read inside a unit.
async fn locked_identifiers(
    tx: &mut dyn Tx,
    user: &UserId,
) -> anyhow::Result<Vec<StoredIdentifier>> {
    let name = format!("account:{user}");
    let mut stmts = locks(tx.backend(), &[], &[&name]);
    stmts.push(Stmt::new(USER_IDENTIFIERS, vec![user.as_str().into()]));
    let done = tx.run(stmts).await?;
    done.last()
        .map(|d| d.rows.iter().map(identifier_from_row).collect())
        .unwrap_or_else(|| Ok(Vec::new()))
}

impl Store {
    /// Makes `id` the primary identifier of its kind, if `decide` (given the account's
    /// identifiers) allows it, and writes `audit`. Answers what `decide` answered.
    pub async fn set_primary<E: Send + 'static>(
        &self,
        user: &UserId,
        id: &IdentifierId,
        kind: IdentifierKind,
        decide: impl FnOnce(&[StoredIdentifier]) -> Result<(), E> + Send + 'static,
        audit: AuditEvent,
        now: OffsetDateTime,
    ) -> anyhow::Result<Result<(), E>> {
        let (u, id) = (user.as_str().to_string(), id.as_str().to_string());
        self.change_identifiers(user, decide, audit, now, move |()| {
            vec![Stmt::new(
                "UPDATE identifiers SET is_primary = CASE WHEN id = $2 THEN 1 ELSE 0 END \
                 WHERE user_id = $1 AND kind = $3",
                vec![u.into(), id.into(), kind.into()],
            )]
        })
        .await
    }

    /// Removes identifier `id` of `user` if `decide` (given the account's identifiers) allows
    /// it, making the identifier it names primary in its place, and writes `audit`.
    pub async fn remove_identifier<E: Send + 'static>(
        &self,
        user: &UserId,
        id: &IdentifierId,
        decide: impl FnOnce(&[StoredIdentifier]) -> Result<Removal, E> + Send + 'static,
        audit: AuditEvent,
        now: OffsetDateTime,
    ) -> anyhow::Result<Result<(), E>> {
        let (u, id) = (user.as_str().to_string(), id.as_str().to_string());
        self.change_identifiers(user, decide, audit, now, move |removal: Removal| {
            let mut stmts = vec![Stmt::new(
                "DELETE FROM identifiers WHERE id = $1 AND user_id = $2",
                vec![id.into(), u.as_str().into()],
            )];
            if let Some(next) = &removal.new_primary {
                stmts.push(Stmt::new(
                    "UPDATE identifiers SET is_primary = 1 WHERE id = $1 AND user_id = $2",
                    vec![next.as_str().into(), u.into()],
                ));
            }
            stmts
        })
        .await
    }

    /// The unit of an identifier change: the account's lock, its identifiers read, `decide`
    /// on them, and if it allows, the `writes` of its answer with `audit`.
    async fn change_identifiers<T: Send + 'static, E: Send + 'static>(
        &self,
        user: &UserId,
        decide: impl FnOnce(&[StoredIdentifier]) -> Result<T, E> + Send + 'static,
        audit: AuditEvent,
        now: OffsetDateTime,
        writes: impl FnOnce(T) -> Vec<Stmt> + Send + 'static,
    ) -> anyhow::Result<Result<(), E>> {
        let user = user.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let identifiers = locked_identifiers(tx, &user).await?;
                let decided = match decide(&identifiers) {
                    Ok(d) => d,
                    Err(e) => return Ok(Unit::Discard(Err(e))),
                };
                let mut stmts = writes(decided);
                stmts.push(audit.statement(now));
                tx.run(stmts).await?;
                Ok(Unit::Commit(Ok(())))
            })
        })
        .await
    }

    /// Deletes an account at once: its OpenID Connect grants (queueing the `logouts` (per
    /// session: client id, message) of the clients its sessions had signed into), its
    /// sessions (entered in the revocation log), its flows and their messages, its consents and
    /// lockout counts, its identifiers and the user; `audit` is written and kept (the
    /// operator's retention applies to it as to any event). Answers the sessions ended and the
    /// messages queued, or `None` if there was no such account.
    pub async fn delete_account(
        &self,
        user: &UserId,
        logouts: Vec<(SessionId, Vec<(String, NewMessage)>)>,
        audit: AuditEvent,
        now: OffsetDateTime,
    ) -> anyhow::Result<Option<(Vec<SessionId>, Vec<NewMessage>)>> {
        let user = user.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let name = format!("account:{user}");
                let u = || -> super::stmt::Value { user.as_str().into() };
                let mut stmts = locks(tx.backend(), &[], &[&name]);
                let sessions_at = stmts.len();
                stmts.push(Stmt::new(
                    "SELECT id FROM sessions WHERE user_id = $1",
                    vec![u()],
                ));
                stmts.extend([
                    Stmt::new(
                        "DELETE FROM oauth_refresh_tokens WHERE grant_id IN (SELECT id FROM oauth_grants WHERE user_id = $1)",
                        vec![u()],
                    ),
                    Stmt::new(
                        "DELETE FROM oauth_codes WHERE grant_id IN (SELECT id FROM oauth_grants WHERE user_id = $1)",
                        vec![u()],
                    ),
                ]);
                let grants_at = stmts.len();
                stmts.extend([
                    Stmt::new(
                        "DELETE FROM oauth_grants WHERE user_id = $1 RETURNING client_id, session_id",
                        vec![u()],
                    ),
                    Stmt::new(
                        "INSERT INTO session_revocations (session_id, revoked_at) SELECT id, $2 FROM sessions WHERE user_id = $1",
                        vec![u(), now.into()],
                    ),
                    Stmt::new(
                        "DELETE FROM outbox WHERE verification_id IN \
                         (SELECT v.id FROM verifications v JOIN flows f ON f.id = v.flow_id WHERE f.user_id = $1)",
                        vec![u()],
                    ),
                    Stmt::new("DELETE FROM oauth_consents WHERE user_id = $1", vec![u()]),
                    Stmt::new(
                        "DELETE FROM identifier_lockouts WHERE identifier = $1 OR identifier = $2",
                        vec![
                            lockout_keys::account(&user).into(),
                            lockout_keys::devices(&user).into(),
                        ],
                    ),
                ]);
                let user_at = stmts.len();
                // Identifiers, sessions and flows (with their verifications) go with the user.
                stmts.push(Stmt::new("DELETE FROM users WHERE id = $1", vec![u()]));
                stmts.push(audit.statement(now));
                let done = tx.run(stmts).await?;
                if done[user_at].changed == 0 {
                    return Ok(Unit::Discard(None));
                }
                let ended = done[sessions_at]
                    .rows
                    .iter()
                    .map(|r| r.text("id").map(SessionId::from_trusted))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let mut granted: Vec<(String, String)> = Vec::new();
                for row in &done[grants_at].rows {
                    granted.push((row.text("session_id")?, row.text("client_id")?));
                }
                let queued: Vec<NewMessage> = logouts
                    .into_iter()
                    .flat_map(|(session, messages)| {
                        let clients: Vec<String> = granted
                            .iter()
                            .filter(|(s, _)| s == session.as_str())
                            .map(|(_, c)| c.clone())
                            .collect();
                        logouts_due(&clients, messages)
                    })
                    .collect();
                if !queued.is_empty() {
                    tx.run(queued.iter().map(insert_message).collect()).await?;
                }
                Ok(Unit::Commit(Some((ended, queued))))
            })
        })
        .await
    }
}
