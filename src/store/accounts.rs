//! Accounts (users) and their identifiers.

use time::OffsetDateTime;

use super::stmt::{Row, Stmt};
use super::tx::Unit;
use super::Store;
use crate::domain::{EmailAddress, Identifier, IdentifierId, IdentifierKind, PersonName, UserId};

const FIND_OWNER: &str =
    "SELECT id, user_id, kind, value, canonical, is_primary, verified_at FROM identifiers \
     WHERE kind = $1 AND canonical = $2";

pub(super) const USER_IDENTIFIERS: &str =
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

pub(super) fn identifier_from_row(r: &Row) -> anyhow::Result<StoredIdentifier> {
    let kind: IdentifierKind = r.word("kind")?;
    Ok(StoredIdentifier {
        id: IdentifierId::from_trusted(r.text("id")?),
        user_id: UserId::from_trusted(r.text("user_id")?),
        identifier: Identifier::from_trusted(kind, r.text("value")?, r.text("canonical")?),
        is_primary: r.flag("is_primary")?,
        verified: r.opt_int("verified_at")?.is_some(),
    })
}

/// An account as the backend API and the profile show it.
#[derive(Debug, Clone)]
pub struct StoredUser {
    pub created_at: OffsetDateTime,
    pub first_name: Option<PersonName>,
    pub last_name: Option<PersonName>,
    /// Emails first, primary first.
    pub identifiers: Vec<StoredIdentifier>,
}

impl Store {
    /// Sets a person's name (either part `None`: not given) and writes `event` (the change) in
    /// the same unit. Answers whether the account exists.
    pub async fn update_names(
        &self,
        user: &UserId,
        first: Option<PersonName>,
        last: Option<PersonName>,
        event: super::AuditEvent,
        now: OffsetDateTime,
    ) -> anyhow::Result<bool> {
        let stmts = vec![
            Stmt::new(
                "UPDATE users SET first_name = $2, last_name = $3 WHERE id = $1",
                vec![
                    user.as_str().into(),
                    first.as_ref().map(PersonName::as_str).into(),
                    last.as_ref().map(PersonName::as_str).into(),
                ],
            ),
            event.statement(now),
        ];
        self.write(move |tx| {
            Box::pin(async move {
                let done = tx.run(stmts).await?;
                if done[0].changed == 0 {
                    return Ok(Unit::Discard(false));
                }
                Ok(Unit::Commit(true))
            })
        })
        .await
    }

    /// The account owning an identifier, with the identifier exactly as stored for that account.
    pub async fn find_owner(
        &self,
        identifier: &Identifier,
    ) -> anyhow::Result<Option<StoredIdentifier>> {
        let (kind, canonical) = (identifier.kind(), identifier.canonical().to_string());
        self.read(move |tx| {
            let stmt = Stmt::new(FIND_OWNER, vec![kind.into(), canonical.as_str().into()]);
            Box::pin(async move {
                tx.fetch_optional(stmt)
                    .await?
                    .as_ref()
                    .map(identifier_from_row)
                    .transpose()
            })
        })
        .await
    }

    /// An account: when it was created, its name and identifiers (emails first, primary
    /// first); `None` if there is no such account.
    pub async fn find_user(&self, user: &UserId) -> anyhow::Result<Option<StoredUser>> {
        let user = user.clone();
        self.read(move |tx| {
            let user = user.clone();
            Box::pin(async move {
                let Some(row) = tx
                    .fetch_optional(Stmt::new(
                        "SELECT created_at, first_name, last_name FROM users WHERE id = $1",
                        vec![user.as_str().into()],
                    ))
                    .await?
                else {
                    return Ok(None);
                };
                let identifiers = tx
                    .fetch_all(Stmt::new(USER_IDENTIFIERS, vec![user.as_str().into()]))
                    .await?
                    .iter()
                    .map(identifier_from_row)
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok(Some(StoredUser {
                    created_at: row.time("created_at")?,
                    first_name: row.opt_text("first_name")?.map(PersonName::from_trusted),
                    last_name: row.opt_text("last_name")?.map(PersonName::from_trusted),
                    identifiers,
                }))
            })
        })
        .await
    }

    /// Every identifier of an account: emails first, primary first.
    pub async fn user_identifiers(&self, user: &UserId) -> anyhow::Result<Vec<StoredIdentifier>> {
        let user = user.clone();
        self.read(move |tx| {
            let stmt = Stmt::new(USER_IDENTIFIERS, vec![user.as_str().into()]);
            Box::pin(async move {
                tx.fetch_all(stmt)
                    .await?
                    .iter()
                    .map(identifier_from_row)
                    .collect()
            })
        })
        .await
    }

    /// Creates one account per address, each with that address verified and primary, in one
    /// transaction; addresses that already belong to an account are skipped. Returns how many
    /// accounts were created. Used to import existing users (and by the benchmark to seed).
    pub async fn import_verified_emails(
        &self,
        emails: &[EmailAddress],
        now: OffsetDateTime,
    ) -> anyhow::Result<u64> {
        let emails = emails.to_vec();
        self.write(move |tx| {
            Box::pin(async move {
                let mut created = 0;
                for email in &emails {
                    let user_id = UserId::generate();
                    let inserted = tx
                        .execute(Stmt::new(
                            "INSERT INTO users (id, created_at) SELECT $1, $2 WHERE NOT EXISTS \
                             (SELECT 1 FROM identifiers WHERE kind = 'email' AND canonical = $3)",
                            vec![user_id.as_str().into(), now.into(), email.canonical().into()],
                        ))
                        .await?;
                    if inserted == 0 {
                        continue;
                    }
                    tx.execute(Stmt::new(
                        "INSERT INTO identifiers (id, user_id, kind, value, canonical, is_primary, verified_at, created_at) \
                         VALUES ($1, $2, 'email', $3, $4, 1, $5, $5)",
                        vec![
                            IdentifierId::generate().as_str().into(),
                            user_id.as_str().into(),
                            email.display().into(),
                            email.canonical().into(),
                            now.into(),
                        ],
                    ))
                    .await?;
                    created += 1;
                }
                Ok(Unit::Commit(created))
            })
        })
        .await
    }

    /// Number of accounts.
    pub async fn count_users(&self) -> anyhow::Result<i64> {
        self.read(|tx| {
            Box::pin(async move {
                tx.fetch_one(Stmt::new("SELECT COUNT(*) AS n FROM users", vec![]))
                    .await?
                    .int("n")
            })
        })
        .await
    }
}
