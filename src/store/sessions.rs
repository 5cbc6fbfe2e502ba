//! Sessions, found by the keyed hash of their token (or of a native client's token).

use time::OffsetDateTime;

use super::accounts::{identifier_from_row, StoredIdentifier};
use super::outbox::{insert_message, NewMessage};
use super::stmt::{Row, Stmt};
use super::tx::Unit;
use super::Store;
use crate::domain::{PersonName, SessionId, UserId};

/// A session to create (its token is never stored, only its hash).
#[derive(Clone)]
pub struct NewSession {
    pub id: SessionId,
    pub user_id: UserId,
    pub token_hash: String,
    pub now: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// Native clients: the binding of the client token that holds the session.
    pub client_binding: Option<String>,
    /// How the person authenticated (OpenID Connect `amr` values after "otp": "email", "sms").
    pub amr: Vec<&'static str>,
    /// The browser and system of the user agent, if it names them.
    pub browser: Option<String>,
    pub os: Option<String>,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// The unexpired sessions of `user`, most recently active first, at most `limit`.
fn devices_of(user: &UserId, now: OffsetDateTime, limit: i64) -> Stmt {
    Stmt::new(
        "SELECT id, created_at, last_active_at, expires_at, ip, browser, os FROM sessions \
         WHERE user_id = $1 AND expires_at > $2 ORDER BY last_active_at DESC, created_at DESC LIMIT $3",
        vec![user.as_str().into(), now.into(), limit.into()],
    )
}

fn device_from_row(r: &Row) -> anyhow::Result<Device> {
    Ok(Device {
        session_id: SessionId::from_trusted(r.text("id")?),
        created_at: r.time("created_at")?,
        last_active_at: r.time("last_active_at")?,
        expires_at: r.time("expires_at")?,
        browser: r.opt_text("browser")?,
        os: r.opt_text("os")?,
        ip: r.opt_text("ip")?,
    })
}

/// One session of a person, as the profile lists it.
#[derive(Debug, Clone)]
pub struct Device {
    pub session_id: SessionId,
    /// As parsed at sign-in.
    pub browser: Option<String>,
    pub os: Option<String>,
    pub created_at: OffsetDateTime,
    pub last_active_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub ip: Option<String>,
}

/// A live session, its user and the user's identifiers.
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub session_id: SessionId,
    pub user_id: UserId,
    pub expires_at: OffsetDateTime,
    pub created_at: OffsetDateTime,
    pub user_created_at: OffsetDateTime,
    /// Written at most once a minute (auth/session_rules.rs).
    pub last_active_at: OffsetDateTime,
    /// When this session last verified a code (its sign-in, or a reverification).
    pub verified_at: OffsetDateTime,
    pub first_name: Option<PersonName>,
    pub last_name: Option<PersonName>,
    /// How the person authenticated: `amr` values besides "otp" ("email", "sms").
    pub amr: Vec<String>,
    /// Emails first, primary first (as [`Store::user_identifiers`]).
    pub identifiers: Vec<StoredIdentifier>,
}

pub(super) fn insert_session(s: &NewSession) -> Stmt {
    Stmt::new(
        "INSERT INTO sessions (id, user_id, token_hash, created_at, last_active_at, verified_at, expires_at, user_agent, ip, client_binding, amr, browser, os) \
         VALUES ($1, $2, $3, $4, $4, $4, $5, $6, $7, $8, $9, $10, $11)",
        vec![
            s.id.as_str().into(),
            s.user_id.as_str().into(),
            s.token_hash.as_str().into(),
            s.now.into(),
            s.expires_at.into(),
            s.user_agent.as_deref().into(),
            s.ip.as_deref().into(),
            s.client_binding.as_deref().into(),
            s.amr.join(" ").into(),
            s.browser.as_deref().into(),
            s.os.as_deref().into(),
        ],
    )
}

/// A session with its user, one row per identifier of the user (at least one row: the join is a
/// LEFT JOIN), for the sessions `$where` selects (`$1` the key, `$2` now), ordered by `$order`.
macro_rules! session_query {
    ($where:literal, $order:literal) => {
        concat!(
            "SELECT s.id AS s_id, s.user_id AS s_user_id, s.expires_at, s.created_at AS s_created_at, s.last_active_at, s.amr, COALESCE(s.verified_at, s.created_at) AS s_verified_at, \
             u.created_at AS user_created_at, u.first_name, u.last_name, i.id, i.user_id, i.kind, i.value, i.canonical, i.is_primary, i.verified_at \
             FROM sessions s JOIN users u ON u.id = s.user_id \
             LEFT JOIN identifiers i ON i.user_id = u.id WHERE ",
            $where,
            " AND s.expires_at > $2 ORDER BY ",
            $order
        )
    };
}

/// The session a cookie's token hashes to.
const FIND_SESSION: &str = session_query!(
    "s.token_hash = $1",
    "i.kind, i.is_primary DESC, i.created_at"
);

/// The newest session a native client's token holds.
const FIND_CLIENT_SESSION: &str = session_query!(
    "s.client_binding = $1",
    "s.created_at DESC, i.kind, i.is_primary DESC, i.created_at"
);

fn session_from_row(r: &Row) -> anyhow::Result<SessionUser> {
    Ok(SessionUser {
        session_id: SessionId::from_trusted(r.text("s_id")?),
        user_id: UserId::from_trusted(r.text("s_user_id")?),
        expires_at: r.time("expires_at")?,
        created_at: r.time("s_created_at")?,
        user_created_at: r.time("user_created_at")?,
        last_active_at: r.time("last_active_at")?,
        verified_at: r.time("s_verified_at")?,
        first_name: r.opt_text("first_name")?.map(PersonName::from_trusted),
        last_name: r.opt_text("last_name")?.map(PersonName::from_trusted),
        amr: r
            .opt_text("amr")?
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect(),
        identifiers: match r.opt_text("id")? {
            Some(_) => vec![identifier_from_row(r)?],
            None => Vec::new(),
        },
    })
}

impl Store {
    /// The unexpired session whose token hashes to `token_hash`, with its user (one query).
    pub async fn find_session(
        &self,
        token_hash: &str,
        now: OffsetDateTime,
    ) -> anyhow::Result<Option<SessionUser>> {
        self.session_by(FIND_SESSION, token_hash, now).await
    }

    /// The owner and expiry of the unexpired session `id` (a session token names it): one
    /// indexed row, no join, since verifying a token needs only whether the session lives and
    /// whose it is.
    pub async fn session_owner(
        &self,
        id: &SessionId,
        now: OffsetDateTime,
    ) -> anyhow::Result<Option<(UserId, OffsetDateTime, OffsetDateTime)>> {
        let id = id.clone();
        self.read(move |tx| {
            let stmt = Stmt::new(
                "SELECT user_id, expires_at, last_active_at FROM sessions WHERE id = $1 AND expires_at > $2",
                vec![id.as_str().into(), now.into()],
            );
            Box::pin(async move {
                tx.fetch_optional(stmt)
                    .await?
                    .map(|r| {
                        Ok((
                            UserId::from_trusted(r.text("user_id")?),
                            r.time("expires_at")?,
                            r.time("last_active_at")?,
                        ))
                    })
                    .transpose()
            })
        })
        .await
    }

    /// Writes a session's "last active" (at most once a minute: the caller decides).
    pub async fn touch_session(&self, id: &SessionId, now: OffsetDateTime) -> anyhow::Result<()> {
        let stmt = Stmt::new(
            "UPDATE sessions SET last_active_at = $2 WHERE id = $1 AND last_active_at < $2",
            vec![id.as_str().into(), now.into()],
        );
        self.write(move |tx| {
            Box::pin(async move {
                tx.execute(stmt).await?;
                Ok(Unit::Commit(()))
            })
        })
        .await
    }

    /// A person's unexpired sessions, most recently active first, at most `limit` (the
    /// profile's devices).
    pub async fn user_sessions(
        &self,
        user: &UserId,
        now: OffsetDateTime,
        limit: i64,
    ) -> anyhow::Result<Vec<Device>> {
        let user = user.clone();
        self.read(move |tx| {
            let stmt = devices_of(&user, now, limit);
            Box::pin(async move {
                tx.fetch_all(stmt)
                    .await?
                    .iter()
                    .map(device_from_row)
                    .collect()
            })
        })
        .await
    }

    /// What the profile page shows besides the signed-in user, in one read: the person's
    /// devices (as [`Store::user_sessions`]) and newest security events.
    pub async fn profile(
        &self,
        user: &UserId,
        now: OffsetDateTime,
        devices: i64,
        events: i64,
    ) -> anyhow::Result<(Vec<Device>, Vec<super::AuditEntry>)> {
        let user = user.clone();
        self.read(move |tx| {
            let stmts = vec![
                devices_of(&user, now, devices),
                super::audit::for_user(&user, events),
            ];
            Box::pin(async move {
                let done = tx.run(stmts).await?;
                let devices = done[0]
                    .rows
                    .iter()
                    .map(device_from_row)
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let events = done[1]
                    .rows
                    .iter()
                    .map(super::audit::entry_from_row)
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok((devices, events))
            })
        })
        .await
    }

    /// Sessions ended since `since` (the revocation log).
    pub async fn revoked_since(&self, since: OffsetDateTime) -> anyhow::Result<Vec<SessionId>> {
        self.read(move |tx| {
            let stmt = Stmt::new(
                "SELECT session_id FROM session_revocations WHERE revoked_at >= $1",
                vec![since.into()],
            );
            Box::pin(async move {
                tx.fetch_all(stmt)
                    .await?
                    .iter()
                    .map(|r| r.text("session_id").map(SessionId::from_trusted))
                    .collect()
            })
        })
        .await
    }

    /// The newest unexpired session a native client's token (by its binding) holds.
    pub async fn find_client_session(
        &self,
        client_binding: &str,
        now: OffsetDateTime,
    ) -> anyhow::Result<Option<SessionUser>> {
        self.session_by(FIND_CLIENT_SESSION, client_binding, now)
            .await
    }

    async fn session_by(
        &self,
        sql: &'static str,
        key: &str,
        now: OffsetDateTime,
    ) -> anyhow::Result<Option<SessionUser>> {
        let key = key.to_string();
        let rows = self
            .read(move |tx| {
                let stmt = Stmt::new(sql, vec![key.as_str().into(), now.into()]);
                Box::pin(async move {
                    tx.fetch_all(stmt)
                        .await?
                        .iter()
                        .map(session_from_row)
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
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

    /// Ends a session: deletes it with its OpenID Connect grants (their codes and refresh
    /// tokens die with them), and queues the `logouts` (client id, message) of the clients
    /// the session had signed into, one unit. Answers the messages queued.
    pub async fn delete_session(
        &self,
        id: &SessionId,
        now: OffsetDateTime,
        logouts: Vec<(String, NewMessage)>,
    ) -> anyhow::Result<Vec<NewMessage>> {
        self.end_sessions(vec![(id.clone(), logouts)], Vec::new(), now)
            .await
    }

    /// Ends several sessions as [`delete_session`](Self::delete_session) does one, and writes
    /// `audit`, in one unit.
    pub async fn end_sessions(
        &self,
        sessions: Vec<(SessionId, Vec<(String, NewMessage)>)>,
        audit: Vec<super::AuditEvent>,
        now: OffsetDateTime,
    ) -> anyhow::Result<Vec<NewMessage>> {
        // One batch ends them all; the third statement of each session's five returns the
        // client ids of its grants.
        let stmts: Vec<Stmt> = sessions
            .iter()
            .flat_map(|(id, _)| end_session(id, now))
            .chain(audit.iter().map(|e| e.statement(now)))
            .collect();
        self.write(move |tx| {
            Box::pin(async move {
                let done = tx.run(stmts).await?;
                let mut queued: Vec<NewMessage> = Vec::new();
                for (i, (_, logouts)) in sessions.into_iter().enumerate() {
                    let clients = client_ids(&done[i * END_SESSION_STMTS + 2].rows)?;
                    queued.extend(logouts_due(&clients, logouts));
                }
                if !queued.is_empty() {
                    tx.run(queued.iter().map(insert_message).collect()).await?;
                }
                Ok(Unit::Commit(queued))
            })
        })
        .await
    }
}

/// The statements of [`end_session`].
const END_SESSION_STMTS: usize = 5;

/// Ends session `id`: its grants (the third statement returns their client ids), the session,
/// and its entry in the revocation log, which other instances' caches of live sessions read
/// (auth/session_cache.rs).
fn end_session(id: &SessionId, now: OffsetDateTime) -> Vec<Stmt> {
    let mut stmts = super::oauth::end_session_grants(id.as_str());
    stmts.push(Stmt::new(
        "DELETE FROM sessions WHERE id = $1",
        vec![id.as_str().into()],
    ));
    stmts.push(Stmt::new(
        "INSERT INTO session_revocations (session_id, revoked_at) VALUES ($1, $2)",
        vec![id.as_str().into(), now.into()],
    ));
    debug_assert_eq!(stmts.len(), END_SESSION_STMTS);
    stmts
}

/// The `client_id` of each row.
fn client_ids(rows: &[Row]) -> anyhow::Result<Vec<String>> {
    rows.iter().map(|r| r.text("client_id")).collect()
}

/// The logout messages of the `clients` a session had signed into: a client it never signed
/// into is not told.
pub(super) fn logouts_due(
    clients: &[String],
    logouts: Vec<(String, NewMessage)>,
) -> Vec<NewMessage> {
    logouts
        .into_iter()
        .filter(|(c, _)| clients.contains(c))
        .map(|(_, m)| m)
        .collect()
}
