use sqlx::Row;

use super::{retry_read, Store};
use crate::domain::{SessionId, UserId};

pub struct NewSession<'a> {
    pub id: &'a SessionId,
    pub user_id: &'a UserId,
    pub token_hash: &'a str,
    pub now: i64,
    pub expires_at: i64,
    pub user_agent: Option<&'a str>,
    pub ip: Option<&'a str>,
}

/// A live session and its user.
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub session_id: SessionId,
    pub user_id: UserId,
    pub created_at: i64,
    pub expires_at: i64,
}

pub(super) async fn insert_session(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    s: &NewSession<'_>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO sessions (id, user_id, token_hash, created_at, last_active_at, expires_at, user_agent, ip) \
         VALUES ($1, $2, $3, $4, $4, $5, $6, $7)",
    )
    .bind(s.id.as_str())
    .bind(s.user_id.as_str())
    .bind(s.token_hash)
    .bind(s.now)
    .bind(s.expires_at)
    .bind(s.user_agent)
    .bind(s.ip)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// The unexpired session whose token hashes to `token_hash`.
    pub async fn find_session(
        &self,
        token_hash: &str,
        now: i64,
    ) -> anyhow::Result<Option<SessionUser>> {
        let row = retry_read(|| {
            sqlx::query("SELECT id, user_id, created_at, expires_at FROM sessions WHERE token_hash = $1 AND expires_at > $2")
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&self.reader)
        })
        .await?;
        Ok(row.map(|r| SessionUser {
            session_id: SessionId::from_trusted(r.get("id")),
            user_id: UserId::from_trusted(r.get("user_id")),
            created_at: r.get("created_at"),
            expires_at: r.get("expires_at"),
        }))
    }

    pub async fn delete_session(&self, id: &SessionId) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id.as_str())
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
