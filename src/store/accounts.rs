use sqlx::Row;
use time::OffsetDateTime;

use super::{from_ms, retry_read, Store};
use crate::domain::{EmailAddress, IdentifierId, UserId};

/// What the `/user` page shows.
#[derive(Debug, Clone)]
pub struct UserProfile {
    pub user_id: UserId,
    pub email: Option<EmailAddress>,
    pub created_at: OffsetDateTime,
}

impl Store {
    /// The account owning an email address, with the address exactly as stored for that account.
    pub async fn find_email_owner(
        &self,
        email: &EmailAddress,
    ) -> anyhow::Result<Option<(UserId, IdentifierId, EmailAddress)>> {
        let row = retry_read(|| {
            sqlx::query("SELECT id, user_id, value, canonical FROM identifiers WHERE kind = 'email' AND canonical = $1")
                .bind(email.canonical())
                .fetch_optional(&self.reader)
        })
        .await?;
        Ok(row.map(|r| {
            (
                UserId::from_trusted(r.get("user_id")),
                IdentifierId::from_trusted(r.get("id")),
                EmailAddress::from_trusted(r.get("value"), r.get("canonical")),
            )
        }))
    }

    pub async fn user_profile(&self, user_id: &UserId) -> anyhow::Result<Option<UserProfile>> {
        let row = retry_read(|| {
            sqlx::query(
                "SELECT u.id, u.created_at, i.value, i.canonical FROM users u \
                 LEFT JOIN identifiers i ON i.user_id = u.id AND i.kind = 'email' AND i.is_primary = 1 \
                 WHERE u.id = $1",
            )
            .bind(user_id.as_str())
            .fetch_optional(&self.reader)
        })
        .await?;
        Ok(row.map(|r| {
            let value: Option<String> = r.get("value");
            let canonical: Option<String> = r.get("canonical");
            UserProfile {
                user_id: UserId::from_trusted(r.get("id")),
                email: value
                    .zip(canonical)
                    .map(|(v, c)| EmailAddress::from_trusted(v, c)),
                created_at: from_ms(r.get("created_at")),
            }
        }))
    }
}
