use super::accounts::{identifier_from_row, StoredIdentifier};
use super::stmt::{Columns, Stmt};
use super::Store;
use crate::domain::{SessionId, UserId};

pub struct NewSession<'a> {
    pub id: &'a SessionId,
    pub user_id: &'a UserId,
    pub token_hash: &'a str,
    pub now: i64,
    pub expires_at: i64,
    pub user_agent: Option<&'a str>,
    pub ip: Option<&'a str>,
    /// Native clients: the binding of the client token that holds the session.
    pub client_binding: Option<&'a str>,
}

/// A live session, its user and the user's identifiers.
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub session_id: SessionId,
    pub user_id: UserId,
    pub expires_at: i64,
    pub created_at: i64,
    pub user_created_at: i64,
    /// Emails first, primary first (as [`Store::user_identifiers`]).
    pub identifiers: Vec<StoredIdentifier>,
}

pub(super) fn insert_session(s: &NewSession<'_>) -> Stmt {
    Stmt::new(
        "INSERT INTO sessions (id, user_id, token_hash, created_at, last_active_at, expires_at, user_agent, ip, client_binding) \
         VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8)",
        vec![
            s.id.as_str().into(),
            s.user_id.as_str().into(),
            s.token_hash.into(),
            s.now.into(),
            s.expires_at.into(),
            s.user_agent.into(),
            s.ip.into(),
            s.client_binding.into(),
        ],
    )
}

/// One row per identifier of the user (at least one row: the join is a LEFT JOIN).
const FIND_SESSION: &str =
    "SELECT s.id AS s_id, s.user_id AS s_user_id, s.expires_at, s.created_at AS s_created_at, \
     u.created_at AS user_created_at, i.id, i.user_id, i.kind, i.value, i.canonical, i.is_primary, i.verified_at \
     FROM sessions s JOIN users u ON u.id = s.user_id \
     LEFT JOIN identifiers i ON i.user_id = u.id \
     WHERE s.token_hash = $1 AND s.expires_at > $2 \
     ORDER BY i.kind, i.is_primary DESC, i.created_at";

/// The same, for a native client's session.
const FIND_CLIENT_SESSION: &str =
    "SELECT s.id AS s_id, s.user_id AS s_user_id, s.expires_at, s.created_at AS s_created_at, \
     u.created_at AS user_created_at, i.id, i.user_id, i.kind, i.value, i.canonical, i.is_primary, i.verified_at \
     FROM sessions s JOIN users u ON u.id = s.user_id \
     LEFT JOIN identifiers i ON i.user_id = u.id \
     WHERE s.client_binding = $1 AND s.expires_at > $2 \
     ORDER BY s.created_at DESC, i.kind, i.is_primary DESC, i.created_at";

fn session_from_row(r: &impl Columns) -> SessionUser {
    SessionUser {
        session_id: SessionId::from_trusted(r.text("s_id")),
        user_id: UserId::from_trusted(r.text("s_user_id")),
        expires_at: r.int("expires_at"),
        created_at: r.int("s_created_at"),
        user_created_at: r.int("user_created_at"),
        identifiers: r
            .opt_text("id")
            .map(|_| identifier_from_row(r))
            .into_iter()
            .collect(),
    }
}

impl Store {
    /// The unexpired session whose token hashes to `token_hash`, with its user (one query).
    pub async fn find_session(
        &self,
        token_hash: &str,
        now: i64,
    ) -> anyhow::Result<Option<SessionUser>> {
        self.session_by(FIND_SESSION, token_hash, now).await
    }

    /// The newest unexpired session a native client's token (by its binding) holds.
    pub async fn find_client_session(
        &self,
        client_binding: &str,
        now: i64,
    ) -> anyhow::Result<Option<SessionUser>> {
        self.session_by(FIND_CLIENT_SESSION, client_binding, now)
            .await
    }

    async fn session_by(
        &self,
        sql: &'static str,
        key: &str,
        now: i64,
    ) -> anyhow::Result<Option<SessionUser>> {
        let rows = self
            .read_all(
                Stmt::new(sql, vec![key.into(), now.into()]),
                |r| session_from_row(r),
                session_from_row,
            )
            .await?;
        let mut rows = rows.into_iter();
        let Some(mut session) = rows.next() else {
            return Ok(None);
        };
        for row in rows.filter(|r| r.session_id == session.session_id) {
            session.identifiers.extend(row.identifiers);
        }
        Ok(Some(session))
    }

    pub async fn delete_session(&self, id: &SessionId) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id.as_str())
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
