//! Flows (sign-up and sign-in attempts) and their verifications (the current code per identifier).

use sqlx::Row;

use super::audit::AuditEvent;
use super::limits::{check_sqlite, check_sqlx, lock_all, Guard, Limited};
use super::outbox::{insert_message, NewMessage};
use super::sessions::{insert_session, NewSession};
use super::sqlite_writer::Unit;
use super::stmt::{is_unique_violation_sqlite, Columns, Stmt};
use super::{is_unique_violation, Store};
use crate::domain::{FlowId, Identifier, IdentifierId, SessionId, UserId, VerificationId};

pub struct NewFlow<'a> {
    pub id: &'a FlowId,
    pub kind: &'static str,
    /// The identifier that started the flow (the first one for a sign-up).
    pub identifier: &'a Identifier,
    pub user_id: Option<&'a UserId>,
    pub redirect_url: Option<&'a str>,
    pub browser_binding: Option<&'a str>,
    pub now: i64,
    pub expires_at: i64,
}

pub struct NewVerification<'a> {
    pub id: &'a VerificationId,
    /// "email" or "sms".
    pub channel: &'static str,
    pub destination: &'a str,
    pub canonical: &'a str,
    pub identifier_id: Option<&'a IdentifierId>,
    /// `None` for a verification whose code is sent later (status 'waiting').
    pub code_hash: Option<&'a str>,
    pub position: i64,
    pub max_attempts: i64,
    pub sent_at: i64,
    pub expires_at: i64,
    /// Enumeration protection: a code that can never match.
    pub decoy: bool,
}

/// A flow as stored, with its verifications in order.
#[derive(Debug, Clone)]
pub struct FlowRecord {
    pub id: FlowId,
    pub kind: String,
    pub status: String,
    pub identifier_kind: String,
    pub identifier_value: String,
    pub identifier_canonical: String,
    pub user_id: Option<UserId>,
    pub redirect_url: Option<String>,
    pub browser_binding: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    /// The session a completed flow created.
    pub session_id: Option<SessionId>,
    /// Never empty; ordered by position.
    pub verifications: Vec<VerificationRecord>,
}

impl FlowRecord {
    /// The verification the person is working on: the first one not verified yet (the last one
    /// once all are).
    pub fn current(&self) -> &VerificationRecord {
        self.verifications
            .iter()
            .find(|v| v.status != "verified")
            .or(self.verifications.last())
            .expect("a flow has at least one verification")
    }

    /// The verification whose code is sent once the current one is verified.
    pub fn next_waiting(&self) -> Option<&VerificationRecord> {
        let current = self.current();
        self.verifications
            .iter()
            .find(|v| v.status == "waiting" && v.position > current.position)
    }
}

#[derive(Debug, Clone)]
pub struct VerificationRecord {
    pub id: VerificationId,
    /// "email" or "sms".
    pub channel: String,
    pub destination: String,
    /// The comparison key of the identifier (rows from before it was kept: `None`).
    pub canonical: Option<String>,
    pub identifier_id: Option<IdentifierId>,
    pub position: i64,
    pub attempts: i64,
    pub max_attempts: i64,
    pub sent_at: i64,
    pub expires_at: i64,
    pub status: String,
    pub decoy: bool,
}

/// An identifier a completed sign-up creates.
pub struct NewIdentifier<'a> {
    pub id: IdentifierId,
    pub kind: &'static str,
    pub value: &'a str,
    pub canonical: &'a str,
    pub is_primary: bool,
}

/// Moves a sign-in flow's code to another of the account's identifiers.
pub struct FactorSwitch<'a> {
    pub channel: &'static str,
    pub destination: &'a str,
    pub canonical: &'a str,
    pub identifier_id: &'a IdentifierId,
}

/// What a correct code leads to.
pub enum Completion<'a> {
    /// The last identifier of a sign-up: the user, all identifiers and a session are created.
    SignUp {
        user_id: &'a UserId,
        identifiers: &'a [NewIdentifier<'a>],
        session: &'a NewSession<'a>,
    },
    SignIn {
        user_id: &'a UserId,
        session: &'a NewSession<'a>,
    },
    /// A sign-up with more identifiers to verify: the verification is done, and the next one's
    /// code (verification id, code hash, expiry) is sent if given.
    Next {
        next: Option<(&'a VerificationId, &'a str, i64)>,
        flow_expires_at: i64,
        message: Option<&'a NewMessage<'a>>,
    },
}

/// The outcome of [`Store::attempt_code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The identifier is locked out until this time (Unix ms); no try was used.
    Locked { until: i64 },
    /// The code is expired, used up, verified or replaced; no try was used.
    Unavailable,
    /// A wrong code; the try was counted. `locked_until` is set when this failure locked the identifier.
    Wrong {
        remaining: u32,
        locked_until: Option<i64>,
    },
    /// The code was consumed and the completion applied.
    Completed,
    /// Another request consumed the code first; nothing was written.
    LostRace,
    /// Sign-up only: the identifier was registered by someone else meanwhile; nothing was written.
    IdentifierTaken,
    /// A rate limit refused the try before it was counted; nothing was written.
    Limited(Limited),
}

const LOAD_FLOW: &str = "SELECT f.id, f.kind, f.status, f.identifier_kind, f.identifier_value, f.identifier_canonical, f.user_id, \
     f.redirect_url, f.browser_binding, f.created_at, f.expires_at, f.session_id, v.id AS v_id, v.channel, v.destination, v.canonical AS v_canonical, \
     v.identifier_id, v.position, v.attempts, v.max_attempts, v.sent_at, v.expires_at AS v_expires_at, v.status AS v_status, v.decoy \
     FROM flows f JOIN verifications v ON v.flow_id = f.id WHERE f.id = $1 ORDER BY v.position";

/// One row of [`LOAD_FLOW`]: the flow with one of its verifications.
fn flow_from_row(r: &impl Columns) -> FlowRecord {
    FlowRecord {
        id: FlowId::from_trusted(r.text("id")),
        kind: r.text("kind"),
        status: r.text("status"),
        identifier_kind: r.text("identifier_kind"),
        identifier_value: r.text("identifier_value"),
        identifier_canonical: r.text("identifier_canonical"),
        user_id: r.opt_text("user_id").map(UserId::from_trusted),
        redirect_url: r.opt_text("redirect_url"),
        browser_binding: r.opt_text("browser_binding"),
        created_at: r.int("created_at"),
        expires_at: r.int("expires_at"),
        session_id: r.opt_text("session_id").map(SessionId::from_trusted),
        verifications: vec![VerificationRecord {
            id: VerificationId::from_trusted(r.text("v_id")),
            channel: r.text("channel"),
            destination: r.text("destination"),
            canonical: r.opt_text("v_canonical"),
            identifier_id: r.opt_text("identifier_id").map(IdentifierId::from_trusted),
            position: r.int("position"),
            attempts: r.int("attempts"),
            max_attempts: r.int("max_attempts"),
            sent_at: r.int("sent_at"),
            expires_at: r.int("v_expires_at"),
            status: r.text("v_status"),
            decoy: r.int("decoy") != 0,
        }],
    }
}

fn merge_rows(rows: Vec<FlowRecord>) -> Option<FlowRecord> {
    let mut rows = rows.into_iter();
    let mut record = rows.next()?;
    for row in rows {
        record.verifications.extend(row.verifications);
    }
    Some(record)
}

fn insert_verification(flow_id: &FlowId, ver: &NewVerification<'_>) -> Stmt {
    Stmt::new(
        "INSERT INTO verifications (id, flow_id, channel, destination, canonical, identifier_id, code_hash, attempts, \
         max_attempts, sent_at, expires_at, status, position, decoy) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, $11, $12, $13)",
        vec![
            ver.id.as_str().into(),
            flow_id.as_str().into(),
            ver.channel.into(),
            ver.destination.into(),
            ver.canonical.into(),
            ver.identifier_id.map(|i| i.as_str()).into(),
            ver.code_hash.into(),
            ver.max_attempts.into(),
            ver.sent_at.into(),
            ver.expires_at.into(),
            if ver.code_hash.is_some() { "pending" } else { "waiting" }.into(),
            ver.position.into(),
            i64::from(ver.decoy).into(),
        ],
    )
}

impl Store {
    /// Creates a flow, its verifications (the first with its code, the others waiting) and the
    /// message carrying the first code (none for a test identifier), atomically.
    /// `guards` are checked first: a full bucket writes nothing and is returned.
    pub async fn create_flow(
        &self,
        flow: &NewFlow<'_>,
        vers: &[NewVerification<'_>],
        msg: Option<&NewMessage<'_>>,
        guards: Vec<Guard>,
        audit: &[AuditEvent],
    ) -> anyhow::Result<Option<Limited>> {
        let mut stmts = vec![Stmt::new(
            "INSERT INTO flows (id, kind, status, identifier_kind, identifier_value, identifier_canonical, user_id, \
             redirect_url, browser_binding, created_at, last_active_at, expires_at) \
             VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $8, $9, $9, $10)",
            vec![
                flow.id.as_str().into(),
                flow.kind.into(),
                flow.identifier.kind().as_str().into(),
                flow.identifier.display().into(),
                flow.identifier.canonical().into(),
                flow.user_id.map(|u| u.as_str()).into(),
                flow.redirect_url.into(),
                flow.browser_binding.into(),
                flow.now.into(),
                flow.expires_at.into(),
            ],
        )];
        stmts.extend(vers.iter().map(|v| insert_verification(flow.id, v)));
        stmts.extend(msg.map(insert_message));
        stmts.extend(audit.iter().map(|a| a.statement(flow.now)));
        self.write_guarded(guards, flow.now, stmts).await
    }

    pub async fn load_flow(&self, id: &FlowId) -> anyhow::Result<Option<FlowRecord>> {
        let rows = self
            .read_all(
                Stmt::new(LOAD_FLOW, vec![id.as_str().into()]),
                |r| flow_from_row(r),
                flow_from_row,
            )
            .await?;
        Ok(merge_rows(rows))
    }

    /// Gives a verification a new code (a first code for one still waiting; otherwise the old
    /// code dies and the tries reset), cancels any undelivered message with the old code, queues
    /// the new message (if any) and extends the flow; with `switch`, the code goes to another
    /// identifier of the account from now on. Returns false, writing nothing, if the previous
    /// send is younger than `cooldown_ms` or the verification is verified.
    #[allow(clippy::too_many_arguments)]
    pub async fn replace_code(
        &self,
        flow_id: &FlowId,
        ver_id: &VerificationId,
        code_hash: &str,
        now: i64,
        code_expires_at: i64,
        cooldown_ms: i64,
        flow_expires_at: i64,
        switch: Option<&FactorSwitch<'_>>,
        msg: Option<&NewMessage<'_>>,
        guards: &[Guard],
        audit: &AuditEvent,
    ) -> anyhow::Result<Result<bool, Limited>> {
        let mut tx = self.writer.begin().await?;
        lock_all(&mut tx, self.backend, &[guards]).await?;
        let updated = match switch {
            None => sqlx::query(
                "UPDATE verifications SET code_hash = $1, attempts = 0, status = 'pending', sent_at = $2, expires_at = $3 \
                 WHERE id = $4 AND flow_id = $5 AND (status = 'waiting' OR (status IN ('pending', 'failed') AND sent_at <= $6))",
            )
            .bind(code_hash)
            .bind(now)
            .bind(code_expires_at)
            .bind(ver_id.as_str())
            .bind(flow_id.as_str())
            .bind(now - cooldown_ms),
            Some(sw) => sqlx::query(
                "UPDATE verifications SET code_hash = $1, attempts = 0, status = 'pending', sent_at = $2, expires_at = $3, \
                 channel = $7, destination = $8, canonical = $9, identifier_id = $10 \
                 WHERE id = $4 AND flow_id = $5 AND (status = 'waiting' OR (status IN ('pending', 'failed') AND sent_at <= $6))",
            )
            .bind(code_hash)
            .bind(now)
            .bind(code_expires_at)
            .bind(ver_id.as_str())
            .bind(flow_id.as_str())
            .bind(now - cooldown_ms)
            .bind(sw.channel)
            .bind(sw.destination)
            .bind(sw.canonical)
            .bind(sw.identifier_id.as_str()),
        }
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            return Ok(Ok(false));
        }
        // Limits are checked after the cooldown, so a resend refused by the cooldown uses no
        // budget; a full bucket rolls the new code back.
        if let Some(limited) = check_sqlx(&mut tx, guards, now).await? {
            return Ok(Err(limited));
        }
        sqlx::query("UPDATE outbox SET status = 'superseded', payload = NULL WHERE verification_id = $1 AND status IN ('pending', 'sending')")
            .bind(ver_id.as_str())
            .execute(&mut *tx)
            .await?;
        if let Some(msg) = msg {
            insert_message(msg).query().execute(&mut *tx).await?;
        }
        touch_flow(&mut tx, flow_id, now, flow_expires_at).await?;
        audit.statement(now).query().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Ok(true))
    }

    /// Checks a code in one transaction, the whole unit of work of a code submission:
    /// - refuses without using a try while the identifier is locked out;
    /// - reserves a try by incrementing the counter *before* comparing, so parallel guesses can
    ///   never evaluate more than `max_attempts` (the row is locked for the comparison);
    /// - on a wrong code, counts a failure for the identifier (locking it once `max_failures`
    ///   consecutive failures are reached; a lock that ran out starts a new count) and kills the
    ///   code when its tries are used up;
    /// - on the right code, consumes it (exactly one request can), clears the identifier's
    ///   failures and applies `completion`: the user (sign-up) and the session are created and
    ///   the flow completed, together or not at all.
    pub async fn attempt_code(
        &self,
        attempt: CodeAttempt,
        matches: impl FnOnce(&str) -> bool + Send + 'static,
        completion: Completion<'_>,
    ) -> anyhow::Result<AttemptOutcome> {
        let mut on_success = completion.statements(&attempt.flow_id, attempt.now);
        on_success.extend(
            attempt
                .audit_success
                .iter()
                .map(|a| (a.statement(attempt.now), false)),
        );
        if let Some(writer) = &self.sqlite_writer {
            return writer
                .run(move |conn| {
                    if let Some(limited) = check_sqlite(conn, &attempt.guards, attempt.now)? {
                        return Ok(Unit::Discard(AttemptOutcome::Limited(limited)));
                    }
                    attempt_code_sqlite(conn, &attempt, matches, &on_success)
                })
                .await;
        }
        let a = &attempt;
        let mut tx = self.writer.begin().await?;
        lock_all(&mut tx, self.backend, &[&a.guards, &a.success_guards]).await?;
        if let Some(limited) = check_sqlx(&mut tx, &a.guards, a.now).await? {
            return Ok(AttemptOutcome::Limited(limited));
        }
        let locked_until: Option<Option<i64>> = sqlx::query_scalar(SELECT_LOCK)
            .bind(&a.lock_key)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(Some(until)) = locked_until {
            if until > a.now {
                return Ok(AttemptOutcome::Locked { until });
            }
        }
        let row = sqlx::query(TAKE_TRY)
            .bind(&a.ver_id)
            .bind(&a.flow_id)
            .bind(a.now)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(AttemptOutcome::Unavailable);
        };
        let (attempts, max_attempts): (i64, i64) = (row.get("attempts"), row.get("max_attempts"));
        let Some(code_hash) = row.get::<Option<String>, _>("code_hash") else {
            return Ok(AttemptOutcome::Unavailable);
        };
        if !matches(&code_hash) {
            let remaining = (max_attempts - attempts).max(0);
            for stmt in a.wrong_code_statements(remaining == 0) {
                stmt.query().execute(&mut *tx).await?;
            }
            let row = Stmt::new(
                RECORD_FAILURE,
                vec![a.lock_key.clone().into(), a.now.into()],
            )
            .query()
            .fetch_one(&mut *tx)
            .await?;
            let failures: i64 = row.get("failures");
            let mut locked_until: Option<i64> = row.get("locked_until");
            if locked_until.is_none() && failures >= a.max_failures {
                let until = a.now + a.cooldown_ms;
                for stmt in a.lock_statements(until) {
                    stmt.query().execute(&mut *tx).await?;
                }
                locked_until = Some(until);
            }
            tx.commit().await?;
            return Ok(AttemptOutcome::Wrong {
                remaining: remaining as u32,
                locked_until: locked_until.filter(|u| *u > a.now),
            });
        }
        let consumed = Stmt::new(CONSUME, vec![a.ver_id.clone().into(), code_hash.into()])
            .query()
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if consumed != 1 {
            return Ok(AttemptOutcome::LostRace);
        }
        if let Some(limited) = check_sqlx(&mut tx, &a.success_guards, a.now).await? {
            return Ok(AttemptOutcome::Limited(limited));
        }
        if locked_until.is_some() {
            Stmt::new(CLEAR_FAILURES, vec![a.lock_key.clone().into()])
                .query()
                .execute(&mut *tx)
                .await?;
        }
        for (stmt, taken_on_conflict) in &on_success {
            match stmt.query().execute(&mut *tx).await {
                Ok(_) => {}
                Err(e) if *taken_on_conflict && is_unique_violation(&e) => {
                    return Ok(AttemptOutcome::IdentifierTaken)
                }
                Err(e) => return Err(e.into()),
            }
        }
        tx.commit().await?;
        Ok(AttemptOutcome::Completed)
    }
}

const SELECT_LOCK: &str = "SELECT locked_until FROM identifier_lockouts WHERE identifier = $1";
const TAKE_TRY: &str = "UPDATE verifications SET attempts = attempts + 1 \
     WHERE id = $1 AND flow_id = $2 AND status = 'pending' AND attempts < max_attempts AND expires_at > $3 \
     RETURNING attempts, max_attempts, code_hash";
const RECORD_FAILURE: &str = "INSERT INTO identifier_lockouts (identifier, failures, locked_until, updated_at) VALUES ($1, 1, NULL, $2) \
     ON CONFLICT (identifier) DO UPDATE SET \
       failures = CASE WHEN identifier_lockouts.locked_until <= $2 THEN 1 ELSE identifier_lockouts.failures + 1 END, \
       locked_until = CASE WHEN identifier_lockouts.locked_until <= $2 THEN NULL ELSE identifier_lockouts.locked_until END, \
       updated_at = $2 \
     RETURNING failures, locked_until";
/// Single use: this conditional update succeeds for exactly one request.
const CONSUME: &str = "UPDATE verifications SET status = 'verified', code_hash = NULL \
     WHERE id = $1 AND status = 'pending' AND code_hash = $2";
const CLEAR_FAILURES: &str = "DELETE FROM identifier_lockouts WHERE identifier = $1";

/// The identifiers and numbers of one code submission.
#[derive(Debug, Clone)]
pub struct CodeAttempt {
    pub flow_id: String,
    pub ver_id: String,
    /// The identifier whose consecutive failures are counted (e.g. `email:<canonical>`).
    pub lock_key: String,
    pub now: i64,
    pub flow_expires_at: i64,
    pub max_failures: i64,
    pub cooldown_ms: i64,
    /// Rate limits on code submissions (per client IP), checked before anything else.
    pub guards: Vec<Guard>,
    /// Rate limits of what a correct code sends (the next sign-up step's code), checked only
    /// once the code is consumed: a full bucket rolls the whole submission back.
    pub success_guards: Vec<Guard>,
    /// Written with a wrong code; `audit_locked` too when that failure locks the identifier.
    pub audit_wrong: AuditEvent,
    pub audit_locked: AuditEvent,
    /// Written with the completion.
    pub audit_success: Vec<AuditEvent>,
}

impl CodeAttempt {
    /// After a wrong code: kill the code if its tries are used up, and keep the flow alive.
    fn wrong_code_statements(&self, code_dead: bool) -> Vec<Stmt> {
        let mut stmts = Vec::new();
        if code_dead {
            stmts.push(Stmt::new(
                "UPDATE verifications SET status = 'failed', code_hash = NULL WHERE id = $1",
                vec![self.ver_id.clone().into()],
            ));
        }
        stmts.push(Stmt::new(
            "UPDATE flows SET last_active_at = $1, expires_at = $2 WHERE id = $3 AND status = 'pending'",
            vec![self.now.into(), self.flow_expires_at.into(), self.flow_id.clone().into()],
        ));
        stmts.push(self.audit_wrong.statement(self.now));
        stmts
    }

    /// Locks the identifier (and records the lockout).
    fn lock_statements(&self, until: i64) -> Vec<Stmt> {
        vec![
            Stmt::new(
                "UPDATE identifier_lockouts SET locked_until = $1 WHERE identifier = $2",
                vec![until.into(), self.lock_key.clone().into()],
            ),
            self.audit_locked.statement(self.now),
        ]
    }
}

impl Completion<'_> {
    /// The writes of a successful code, in order; `true` marks the ones whose unique violation
    /// means the identifier was registered meanwhile.
    fn statements(&self, flow_id: &str, now: i64) -> Vec<(Stmt, bool)> {
        let mut stmts = Vec::new();
        let (user_id, session) = match self {
            Completion::Next {
                next,
                flow_expires_at,
                message,
            } => {
                if let Some((ver_id, code_hash, expires_at)) = next {
                    stmts.push((
                        Stmt::new(
                            "UPDATE verifications SET code_hash = $1, attempts = 0, status = 'pending', sent_at = $2, expires_at = $3 \
                             WHERE id = $4 AND status = 'waiting'",
                            vec![
                                (*code_hash).into(),
                                now.into(),
                                (*expires_at).into(),
                                ver_id.as_str().into(),
                            ],
                        ),
                        false,
                    ));
                }
                stmts.extend(message.map(|m| (insert_message(m), false)));
                stmts.push((
                    Stmt::new(
                        "UPDATE flows SET last_active_at = $1, expires_at = $2 WHERE id = $3 AND status = 'pending'",
                        vec![now.into(), (*flow_expires_at).into(), flow_id.into()],
                    ),
                    false,
                ));
                return stmts;
            }
            Completion::SignIn { user_id, session } => (*user_id, *session),
            Completion::SignUp {
                user_id,
                identifiers,
                session,
            } => {
                stmts.push((
                    Stmt::new(
                        "INSERT INTO users (id, created_at) VALUES ($1, $2)",
                        vec![user_id.as_str().into(), now.into()],
                    ),
                    false,
                ));
                for identifier in identifiers.iter() {
                    stmts.push((
                        Stmt::new(
                            "INSERT INTO identifiers (id, user_id, kind, value, canonical, is_primary, verified_at, created_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                            vec![
                                identifier.id.as_str().into(),
                                user_id.as_str().into(),
                                identifier.kind.into(),
                                identifier.value.into(),
                                identifier.canonical.into(),
                                i64::from(identifier.is_primary).into(),
                                now.into(),
                            ],
                        ),
                        true,
                    ));
                }
                (*user_id, *session)
            }
        };
        stmts.push((insert_session(session), false));
        stmts.push((
            Stmt::new(
                "UPDATE flows SET status = 'complete', completed_at = $1, last_active_at = $1, user_id = $2, session_id = $3 \
                 WHERE id = $4",
                vec![now.into(), user_id.as_str().into(), session.id.as_str().into(), flow_id.into()],
            ),
            false,
        ));
        stmts
    }
}

/// [`Store::attempt_code`] on the SQLite writer thread: the same statements and decisions.
fn attempt_code_sqlite(
    conn: &rusqlite::Connection,
    a: &CodeAttempt,
    matches: impl FnOnce(&str) -> bool,
    on_success: &[(Stmt, bool)],
) -> anyhow::Result<Unit<AttemptOutcome>> {
    use rusqlite::OptionalExtension;
    let locked_until: Option<Option<i64>> = conn
        .prepare_cached(SELECT_LOCK)?
        .query_row([&a.lock_key], |r| r.get(0))
        .optional()?;
    if let Some(Some(until)) = locked_until {
        if until > a.now {
            return Ok(Unit::Discard(AttemptOutcome::Locked { until }));
        }
    }
    let row: Option<(i64, i64, Option<String>)> = conn
        .prepare_cached(TAKE_TRY)?
        .query_row(rusqlite::params![a.ver_id, a.flow_id, a.now], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((attempts, max_attempts, Some(code_hash))) = row else {
        return Ok(Unit::Discard(AttemptOutcome::Unavailable));
    };
    if !matches(&code_hash) {
        let remaining = (max_attempts - attempts).max(0);
        for stmt in a.wrong_code_statements(remaining == 0) {
            stmt.execute(conn)?;
        }
        let (failures, mut locked_until): (i64, Option<i64>) = conn
            .prepare_cached(RECORD_FAILURE)?
            .query_row(rusqlite::params![a.lock_key, a.now], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        if locked_until.is_none() && failures >= a.max_failures {
            let until = a.now + a.cooldown_ms;
            for stmt in a.lock_statements(until) {
                stmt.execute(conn)?;
            }
            locked_until = Some(until);
        }
        return Ok(Unit::Commit(AttemptOutcome::Wrong {
            remaining: remaining as u32,
            locked_until: locked_until.filter(|u| *u > a.now),
        }));
    }
    if Stmt::new(CONSUME, vec![a.ver_id.clone().into(), code_hash.into()]).execute(conn)? != 1 {
        return Ok(Unit::Discard(AttemptOutcome::LostRace));
    }
    if let Some(limited) = check_sqlite(conn, &a.success_guards, a.now)? {
        return Ok(Unit::Discard(AttemptOutcome::Limited(limited)));
    }
    if locked_until.is_some() {
        Stmt::new(CLEAR_FAILURES, vec![a.lock_key.clone().into()]).execute(conn)?;
    }
    for (stmt, taken_on_conflict) in on_success {
        match stmt.execute(conn) {
            Ok(_) => {}
            Err(e) if *taken_on_conflict && is_unique_violation_sqlite(&e) => {
                return Ok(Unit::Discard(AttemptOutcome::IdentifierTaken))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Unit::Commit(AttemptOutcome::Completed))
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

async fn touch_flow(
    tx: &mut Tx,
    flow_id: &FlowId,
    now: i64,
    expires_at: i64,
) -> anyhow::Result<()> {
    sqlx::query("UPDATE flows SET last_active_at = $1, expires_at = $2 WHERE id = $3 AND status = 'pending'")
        .bind(now)
        .bind(expires_at)
        .bind(flow_id.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
