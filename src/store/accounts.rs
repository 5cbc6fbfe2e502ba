use super::stmt::{Columns, Stmt};
use super::Store;
use crate::domain::{EmailAddress, IdentifierId, UserId};

const FIND_EMAIL_OWNER: &str =
    "SELECT id, user_id, value, canonical FROM identifiers WHERE kind = 'email' AND canonical = $1";

fn owner_from_row(r: &impl Columns) -> (UserId, IdentifierId, EmailAddress) {
    (
        UserId::from_trusted(r.text("user_id")),
        IdentifierId::from_trusted(r.text("id")),
        EmailAddress::from_trusted(r.text("value"), r.text("canonical")),
    )
}

impl Store {
    /// The account owning an email address, with the address exactly as stored for that account.
    pub async fn find_email_owner(
        &self,
        email: &EmailAddress,
    ) -> anyhow::Result<Option<(UserId, IdentifierId, EmailAddress)>> {
        self.read_optional(
            Stmt::new(FIND_EMAIL_OWNER, vec![email.canonical().into()]),
            |r| owner_from_row(r),
            owner_from_row,
        )
        .await
    }
}

impl Store {
    /// Creates one account per address, each with that address verified and primary, in one
    /// transaction; addresses that already belong to an account are skipped. Returns how many
    /// accounts were created. Used to import existing users (and by the benchmark to seed).
    pub async fn import_verified_emails(
        &self,
        emails: &[EmailAddress],
        now: i64,
    ) -> anyhow::Result<u64> {
        let mut tx = self.writer.begin().await?;
        let mut created = 0;
        for email in emails {
            let user_id = UserId::generate();
            let taken: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM identifiers WHERE kind = 'email' AND canonical = $1",
            )
            .bind(email.canonical())
            .fetch_optional(&mut *tx)
            .await?;
            if taken.is_some() {
                continue;
            }
            sqlx::query("INSERT INTO users (id, created_at) VALUES ($1, $2)")
                .bind(user_id.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO identifiers (id, user_id, kind, value, canonical, is_primary, verified_at, created_at) \
                 VALUES ($1, $2, 'email', $3, $4, 1, $5, $5)",
            )
            .bind(IdentifierId::generate().as_str())
            .bind(user_id.as_str())
            .bind(email.display())
            .bind(email.canonical())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            created += 1;
        }
        tx.commit().await?;
        Ok(created)
    }

    /// Number of accounts.
    pub async fn count_users(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.reader)
            .await?)
    }
}
