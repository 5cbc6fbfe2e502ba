//! The OpenID Connect provider's records: grants (one client authorized by one session), their
//! authorization codes and refresh tokens (keyed hashes only), and consents. Every grant lives
//! only as long as its session: a read joins the live session, and ending a session deletes
//! its grants in the same transaction.

use time::OffsetDateTime;

use super::accounts::{identifier_from_row, StoredIdentifier};
use super::stmt::{Row, Stmt};
use super::tx::{Tx, Unit};
use super::Store;
use crate::domain::{GrantId, SessionId, UserId};

/// A grant to store with its first authorization code.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub id: GrantId,
    pub client_id: String,
    pub user_id: UserId,
    pub session_id: SessionId,
    /// Space-separated granted scopes.
    pub scope: String,
    pub nonce: Option<String>,
    pub auth_time: OffsetDateTime,
    /// Space-separated `amr` values.
    pub amr: String,
    pub created_at: OffsetDateTime,
    /// The session's expiry: a grant never outlives it.
    pub expires_at: OffsetDateTime,
}

/// An authorization code to store (its hash).
#[derive(Clone)]
pub struct NewCode {
    pub hash: String,
    pub redirect_uri: String,
    /// The PKCE S256 challenge, if the request had one.
    pub code_challenge: Option<String>,
    pub expires_at: OffsetDateTime,
}

/// A refresh token to store (its hash).
#[derive(Clone)]
pub struct NewRefreshToken {
    pub hash: String,
    pub expires_at: OffsetDateTime,
}

/// A consent to remember (`require_consent` clients).
#[derive(Debug, Clone)]
pub struct NewConsent {
    pub scope: String,
}

/// A stored code, as the token endpoint checks it.
#[derive(Debug, Clone)]
pub struct CodeRecord {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: Option<String>,
    pub expires_at: OffsetDateTime,
}

/// A live grant with its user's identifiers (emails first, primary first).
#[derive(Debug, Clone)]
pub struct GrantRecord {
    pub id: GrantId,
    pub client_id: String,
    pub user_id: UserId,
    pub session_id: SessionId,
    pub scope: String,
    pub nonce: Option<String>,
    pub auth_time: OffsetDateTime,
    pub amr: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// The session's "last active" (for an inactivity timeout).
    pub session_last_active_at: OffsetDateTime,
    pub identifiers: Vec<StoredIdentifier>,
}

impl GrantRecord {
    /// Whether the grant includes `offline_access` (refresh tokens).
    pub fn offline_access(&self) -> bool {
        self.scope.split(' ').any(|s| s == "offline_access")
    }
}

/// A refresh token that may still be used, with its grant.
#[derive(Debug, Clone)]
pub struct RefreshTokenState {
    pub grant: GrantRecord,
    pub expires_at: OffsetDateTime,
}

/// What presenting a code or a refresh token came to.
#[derive(Debug)]
pub enum Redeemed<E> {
    /// Accepted: the grant, live (a new refresh token stored if one was asked for).
    Granted(Box<GrantRecord>),
    /// Refused by the caller's check (a code is used up all the same).
    Refused(E),
    /// Used before: the grant and everything it issued are revoked.
    Replayed,
    /// Unknown or expired.
    Unknown,
    /// The session it was issued in has ended.
    SessionEnded,
}

/// The live grant `$1` at `$2`, one row per identifier of its user (LEFT JOIN: at least one).
const GRANT: &str = "SELECT g.id AS g_id, g.client_id, g.user_id AS g_user_id, g.session_id, \
     g.scope, g.nonce, g.auth_time, g.amr, u.first_name, u.last_name, s.last_active_at AS s_last_active_at, \
     i.id, i.user_id, i.kind, i.value, i.canonical, i.is_primary, i.verified_at \
     FROM oauth_grants g JOIN sessions s ON s.id = g.session_id JOIN users u ON u.id = g.user_id \
     LEFT JOIN identifiers i ON i.user_id = g.user_id \
     WHERE g.id = $1 AND s.expires_at > $2 \
     ORDER BY i.kind, i.is_primary DESC, i.created_at";

fn grant_from_rows(rows: &[Row]) -> anyhow::Result<Option<GrantRecord>> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut identifiers = Vec::new();
    for r in rows {
        if r.opt_text("id")?.is_some() {
            identifiers.push(identifier_from_row(r)?);
        }
    }
    Ok(Some(GrantRecord {
        id: GrantId::from_trusted(first.text("g_id")?),
        client_id: first.text("client_id")?,
        user_id: UserId::from_trusted(first.text("g_user_id")?),
        session_id: SessionId::from_trusted(first.text("session_id")?),
        scope: first.text("scope")?,
        nonce: first.opt_text("nonce")?,
        auth_time: first.time("auth_time")?,
        amr: first.text("amr")?,
        first_name: first.opt_text("first_name")?,
        last_name: first.opt_text("last_name")?,
        session_last_active_at: first.time("s_last_active_at")?,
        identifiers,
    }))
}

async fn live_grant(
    tx: &mut dyn Tx,
    id: &str,
    now: OffsetDateTime,
) -> anyhow::Result<Option<GrantRecord>> {
    let rows = tx
        .fetch_all(Stmt::new(GRANT, vec![id.into(), now.into()]))
        .await?;
    grant_from_rows(&rows)
}

/// Deletes grant `$1` with its codes and refresh tokens.
fn revoke_grant_stmts(grant: &str) -> Vec<Stmt> {
    vec![
        Stmt::new(
            "DELETE FROM oauth_refresh_tokens WHERE grant_id = $1",
            vec![grant.into()],
        ),
        Stmt::new(
            "DELETE FROM oauth_codes WHERE grant_id = $1",
            vec![grant.into()],
        ),
        Stmt::new("DELETE FROM oauth_grants WHERE id = $1", vec![grant.into()]),
    ]
}

/// Deletes the grants of session `$1`, their codes and refresh tokens; the last statement
/// returns the grants' client ids.
pub(super) fn end_session_grants(session: &str) -> Vec<Stmt> {
    vec![
        Stmt::new(
            "DELETE FROM oauth_refresh_tokens WHERE grant_id IN (SELECT id FROM oauth_grants WHERE session_id = $1)",
            vec![session.into()],
        ),
        Stmt::new(
            "DELETE FROM oauth_codes WHERE grant_id IN (SELECT id FROM oauth_grants WHERE session_id = $1)",
            vec![session.into()],
        ),
        Stmt::new(
            "DELETE FROM oauth_grants WHERE session_id = $1 RETURNING client_id",
            vec![session.into()],
        ),
    ]
}

/// A code or refresh token that could not be used up (`earlier` selects its `grant_id` and
/// `used_at` by hash): used before, it revokes its grant (a replay); otherwise it is unknown or
/// expired.
async fn unusable<E>(
    tx: &mut dyn Tx,
    earlier: &'static str,
    hash: &str,
) -> anyhow::Result<Redeemed<E>> {
    let found = tx
        .fetch_optional(Stmt::new(earlier, vec![hash.into()]))
        .await?;
    Ok(match found {
        Some(r) if r.opt_time("used_at")?.is_some() => {
            tx.run(revoke_grant_stmts(&r.text("grant_id")?)).await?;
            Redeemed::Replayed
        }
        _ => Redeemed::Unknown,
    })
}

fn insert_refresh(grant: &str, token: &NewRefreshToken, now: OffsetDateTime) -> Stmt {
    Stmt::new(
        "INSERT INTO oauth_refresh_tokens (token_hash, grant_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        vec![
            token.hash.as_str().into(),
            grant.into(),
            now.into(),
            token.expires_at.into(),
        ],
    )
}

impl Store {
    /// Stores a grant and its authorization code (and the consent given, if any), one unit.
    pub async fn issue_code(
        &self,
        grant: NewGrant,
        code: NewCode,
        consent: Option<NewConsent>,
    ) -> anyhow::Result<()> {
        self.write(move |tx| {
            let g = &grant;
            let mut stmts = vec![
                Stmt::new(
                    "INSERT INTO oauth_grants (id, client_id, user_id, session_id, scope, nonce, auth_time, amr, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    vec![
                        g.id.as_str().into(),
                        g.client_id.as_str().into(),
                        g.user_id.as_str().into(),
                        g.session_id.as_str().into(),
                        g.scope.as_str().into(),
                        g.nonce.as_deref().into(),
                        g.auth_time.into(),
                        g.amr.as_str().into(),
                        g.created_at.into(),
                        g.expires_at.into(),
                    ],
                ),
                Stmt::new(
                    "INSERT INTO oauth_codes (code_hash, grant_id, client_id, redirect_uri, code_challenge, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    vec![
                        code.hash.as_str().into(),
                        g.id.as_str().into(),
                        g.client_id.as_str().into(),
                        code.redirect_uri.as_str().into(),
                        code.code_challenge.as_deref().into(),
                        code.expires_at.into(),
                    ],
                ),
            ];
            if let Some(consent) = &consent {
                stmts.push(Stmt::new(
                    "INSERT INTO oauth_consents (user_id, client_id, scope, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (user_id, client_id) DO UPDATE SET scope = excluded.scope, created_at = excluded.created_at",
                    vec![
                        g.user_id.as_str().into(),
                        g.client_id.as_str().into(),
                        consent.scope.as_str().into(),
                        g.created_at.into(),
                    ],
                ));
            }
            Box::pin(async move {
                tx.run(stmts).await?;
                Ok(Unit::Commit(()))
            })
        })
        .await
    }

    /// Uses up an authorization code: once. `check` (pure: client, redirect URI, PKCE,
    /// expiry) decides whether it is honoured; a code presented again revokes its grant and
    /// everything issued from it (RFC 6749 §4.1.2). `refresh` is stored as the grant's first
    /// refresh token if the grant has `offline_access`.
    pub async fn redeem_code<E, C>(
        &self,
        code_hash: String,
        now: OffsetDateTime,
        check: C,
        refresh: Option<NewRefreshToken>,
    ) -> anyhow::Result<Redeemed<E>>
    where
        E: Send + 'static,
        C: FnOnce(&CodeRecord) -> Result<(), E> + Send + 'static,
    {
        self.write(move |tx| {
            Box::pin(async move {
                let used = tx
                    .fetch_optional(Stmt::new(
                        "UPDATE oauth_codes SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL \
                         RETURNING grant_id, client_id, redirect_uri, code_challenge, expires_at",
                        vec![code_hash.as_str().into(), now.into()],
                    ))
                    .await?;
                let Some(row) = used else {
                    let earlier = "SELECT grant_id, used_at FROM oauth_codes WHERE code_hash = $1";
                    return Ok(Unit::Commit(unusable(tx, earlier, &code_hash).await?));
                };
                let grant_id = row.text("grant_id")?;
                let record = CodeRecord {
                    client_id: row.text("client_id")?,
                    redirect_uri: row.text("redirect_uri")?,
                    code_challenge: row.opt_text("code_challenge")?,
                    expires_at: row.time("expires_at")?,
                };
                if let Err(e) = check(&record) {
                    return Ok(Unit::Commit(Redeemed::Refused(e)));
                }
                let Some(grant) = live_grant(tx, &grant_id, now).await? else {
                    return Ok(Unit::Commit(Redeemed::SessionEnded));
                };
                if let Some(token) = refresh.as_ref().filter(|_| grant.offline_access()) {
                    tx.execute(insert_refresh(&grant_id, token, now)).await?;
                }
                Ok(Unit::Commit(Redeemed::Granted(Box::new(grant))))
            })
        })
        .await
    }

    /// Rotates a refresh token: the presented one is used up and `next` replaces it. A token
    /// presented a second time revokes its whole grant, every token of the family included
    /// (RFC 9700 §4.14.2). `check` (the client, the scope asked for) refusing leaves the token
    /// as it was.
    pub async fn rotate_refresh_token<E, C>(
        &self,
        token_hash: String,
        next: NewRefreshToken,
        now: OffsetDateTime,
        check: C,
    ) -> anyhow::Result<Redeemed<E>>
    where
        E: Send + 'static,
        C: FnOnce(&GrantRecord) -> Result<(), E> + Send + 'static,
    {
        self.write(move |tx| {
            Box::pin(async move {
                let used = tx
                    .fetch_optional(Stmt::new(
                        "UPDATE oauth_refresh_tokens SET used_at = $2 \
                         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING grant_id",
                        vec![token_hash.as_str().into(), now.into()],
                    ))
                    .await?;
                let Some(row) = used else {
                    let earlier =
                        "SELECT grant_id, used_at FROM oauth_refresh_tokens WHERE token_hash = $1";
                    return Ok(Unit::Commit(unusable(tx, earlier, &token_hash).await?));
                };
                let grant_id = row.text("grant_id")?;
                let Some(grant) = live_grant(tx, &grant_id, now).await? else {
                    return Ok(Unit::Commit(Redeemed::SessionEnded));
                };
                if let Err(e) = check(&grant) {
                    return Ok(Unit::Discard(Redeemed::Refused(e)));
                }
                tx.execute(insert_refresh(&grant_id, &next, now)).await?;
                Ok(Unit::Commit(Redeemed::Granted(Box::new(grant))))
            })
        })
        .await
    }

    /// The grant an access token names, if it and its session are live.
    pub async fn live_grant(
        &self,
        id: &GrantId,
        now: OffsetDateTime,
    ) -> anyhow::Result<Option<GrantRecord>> {
        let id = id.clone();
        self.read(move |tx| {
            let id = id.clone();
            Box::pin(async move { live_grant(tx, id.as_str(), now).await })
        })
        .await
    }

    /// The grant a refresh token belongs to, if it is `client`'s (RFC 7009: a client revokes
    /// only its own tokens).
    pub async fn refresh_token_grant(
        &self,
        token_hash: &str,
        client: &str,
    ) -> anyhow::Result<Option<GrantId>> {
        let (token_hash, client) = (token_hash.to_string(), client.to_string());
        self.read(move |tx| {
            let stmt = Stmt::new(
                "SELECT g.id FROM oauth_refresh_tokens t JOIN oauth_grants g ON g.id = t.grant_id \
                 WHERE t.token_hash = $1 AND g.client_id = $2",
                vec![token_hash.as_str().into(), client.as_str().into()],
            );
            Box::pin(async move {
                tx.fetch_optional(stmt)
                    .await?
                    .map(|r| r.text("id").map(GrantId::from_trusted))
                    .transpose()
            })
        })
        .await
    }

    /// A refresh token of `client` that is neither used nor expired, with its live grant.
    pub async fn refresh_token_state(
        &self,
        token_hash: &str,
        client: &str,
        now: OffsetDateTime,
    ) -> anyhow::Result<Option<RefreshTokenState>> {
        let (token_hash, client) = (token_hash.to_string(), client.to_string());
        self.read(move |tx| {
            let (token_hash, client) = (token_hash.clone(), client.clone());
            Box::pin(async move {
                let Some(row) = tx
                    .fetch_optional(Stmt::new(
                        "SELECT grant_id, expires_at FROM oauth_refresh_tokens \
                         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
                        vec![token_hash.as_str().into(), now.into()],
                    ))
                    .await?
                else {
                    return Ok(None);
                };
                let grant = live_grant(tx, &row.text("grant_id")?, now).await?;
                Ok(grant
                    .filter(|g| g.client_id == client)
                    .map(|grant| RefreshTokenState {
                        grant,
                        expires_at: row.time("expires_at").unwrap_or(now),
                    }))
            })
        })
        .await
    }

    /// Revokes grant `id` of `client` with everything it issued.
    pub async fn revoke_grant(&self, id: &GrantId, client: &str) -> anyhow::Result<bool> {
        let (id, client) = (id.to_string(), client.to_string());
        self.write(move |tx| {
            Box::pin(async move {
                let owned = tx
                    .fetch_optional(Stmt::new(
                        "SELECT id FROM oauth_grants WHERE id = $1 AND client_id = $2",
                        vec![id.as_str().into(), client.as_str().into()],
                    ))
                    .await?;
                if owned.is_none() {
                    return Ok(Unit::Commit(false));
                }
                tx.run(revoke_grant_stmts(&id)).await?;
                Ok(Unit::Commit(true))
            })
        })
        .await
    }

    /// The scopes a person consented to for a client, if they ever did.
    pub async fn consent(&self, user: &UserId, client: &str) -> anyhow::Result<Option<String>> {
        let (user, client) = (user.to_string(), client.to_string());
        self.read(move |tx| {
            let stmt = Stmt::new(
                "SELECT scope FROM oauth_consents WHERE user_id = $1 AND client_id = $2",
                vec![user.as_str().into(), client.as_str().into()],
            );
            Box::pin(async move {
                tx.fetch_optional(stmt)
                    .await?
                    .map(|r| r.text("scope"))
                    .transpose()
            })
        })
        .await
    }
}
