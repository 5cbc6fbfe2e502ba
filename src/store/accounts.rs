use super::stmt::{Columns, Stmt};
use super::Store;
use crate::domain::{EmailAddress, Identifier, IdentifierId, IdentifierKind, UserId};

const FIND_OWNER: &str =
    "SELECT id, user_id, kind, value, canonical, is_primary, verified_at FROM identifiers \
     WHERE kind = $1 AND canonical = $2";

const USER_IDENTIFIERS: &str =
    "SELECT id, user_id, kind, value, canonical, is_primary, verified_at FROM identifiers \
     WHERE user_id = $1 ORDER BY kind, is_primary DESC, created_at";

/// An identifier of an account, as stored.
#[derive(Debug, Clone)]
pub struct StoredIdentifier {
    pub id: IdentifierId,
    pub user_id: UserId,
    pub identifier: Identifier,
    pub is_primary: bool,
    pub verified: bool,
}

pub(super) fn identifier_from_row(r: &impl Columns) -> StoredIdentifier {
    let kind = IdentifierKind::parse(&r.text("kind")).unwrap_or(IdentifierKind::Email);
    StoredIdentifier {
        id: IdentifierId::from_trusted(r.text("id")),
        user_id: UserId::from_trusted(r.text("user_id")),
        identifier: Identifier::from_trusted(kind, r.text("value"), r.text("canonical")),
        is_primary: r.int("is_primary") != 0,
        verified: r.opt_int("verified_at").is_some(),
    }
}

impl Store {
    /// The account owning an identifier, with the identifier exactly as stored for that account.
    pub async fn find_owner(
        &self,
        identifier: &Identifier,
    ) -> anyhow::Result<Option<StoredIdentifier>> {
        self.read_optional(
            Stmt::new(
                FIND_OWNER,
                vec![
                    identifier.kind().as_str().into(),
                    identifier.canonical().into(),
                ],
            ),
            |r| identifier_from_row(r),
            identifier_from_row,
        )
        .await
    }

    /// Every identifier of an account: emails first, primary first.
    pub async fn user_identifiers(&self, user: &UserId) -> anyhow::Result<Vec<StoredIdentifier>> {
        self.read_all(
            Stmt::new(USER_IDENTIFIERS, vec![user.as_str().into()]),
            |r| identifier_from_row(r),
            identifier_from_row,
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
