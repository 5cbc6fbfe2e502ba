//! Flows (sign-up and sign-in attempts) and their verifications (the current code per
//! identifier), and the three units of work on them: create a flow, replace a code, attempt a
//! code. Each is written once, for both databases.

use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use super::audit::AuditEvent;
use super::limits::{checks, locks, refusal, Guard, Limited};
use super::lockout::{self, after_failure, is_locked, CountedKey, Lock, LockState};
use super::outbox::{insert_message, supersede_messages, NewMessage};
use super::sessions::{insert_session, NewSession};
use super::stmt::{Row, Stmt};
use super::tx::{Done, Failed, Tx, Unit};
use super::Store;
use crate::domain::{
    Channel, CodeStatus, FlowId, FlowKind, FlowStatus, Identifier, IdentifierId, IdentifierKind,
    Names, PersonName, SessionId, UserId, VerificationId,
};

/// A flow to create.
#[derive(Debug, Clone)]
pub struct NewFlow {
    pub id: FlowId,
    pub kind: FlowKind,
    /// The identifier that started the flow (the first one for a sign-up), as typed.
    pub identifier: Identifier,
    pub user_id: Option<UserId>,
    pub redirect_url: Option<String>,
    pub browser_binding: Option<String>,
    /// Flows on /user: the session that started it (only it may continue the flow).
    pub for_session: Option<SessionId>,
    /// A reverification's action to do once the code is verified (opaque here).
    pub pending_action: Option<String>,
    /// Sign-up: the name given, for the account.
    pub names: Names,
    pub now: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// A verification to create with its flow.
#[derive(Debug, Clone)]
pub struct NewVerification {
    pub id: VerificationId,
    pub channel: Channel,
    pub destination: String,
    pub canonical: String,
    pub identifier_id: Option<IdentifierId>,
    /// `None` for a verification whose code is sent later (status `Waiting`).
    pub code_hash: Option<String>,
    pub position: i64,
    pub max_attempts: i64,
    pub sent_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// Enumeration protection: a code that can never match.
    pub decoy: bool,
}

/// A flow as stored, with its verifications in order.
#[derive(Debug, Clone)]
pub struct FlowRecord {
    pub id: FlowId,
    pub kind: FlowKind,
    pub status: FlowStatus,
    /// The identifier that started the flow, as typed (normalised).
    pub identifier_kind: IdentifierKind,
    pub identifier_value: String,
    pub identifier_canonical: String,
    pub user_id: Option<UserId>,
    pub redirect_url: Option<String>,
    pub browser_binding: Option<String>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// The session a completed flow created.
    pub session_id: Option<SessionId>,
    /// Flows on /user: the session that started it.
    pub for_session: Option<SessionId>,
    /// A reverification's action to do once the code is verified.
    pub pending_action: Option<String>,
    /// Sign-up: the name given, for the account.
    pub names: Names,
    /// Never empty; ordered by position.
    pub verifications: Vec<VerificationRecord>,
}

impl FlowRecord {
    /// The verification the person is working on: the first one not verified yet (the last one
    /// once all are).
    pub fn current(&self) -> &VerificationRecord {
        self.verifications
            .iter()
            .find(|v| v.status != CodeStatus::Verified)
            .or(self.verifications.last())
            .expect("a flow has at least one verification")
    }

    /// The verification whose code is sent once the current one is verified.
    pub fn next_waiting(&self) -> Option<&VerificationRecord> {
        let current = self.current();
        self.verifications
            .iter()
            .find(|v| v.status == CodeStatus::Waiting && v.position > current.position)
    }

    /// The identifier that started the flow, as typed.
    pub fn typed_identifier(&self) -> Identifier {
        Identifier::from_trusted(
            self.identifier_kind,
            self.identifier_value.clone(),
            self.identifier_canonical.clone(),
        )
    }
}

/// One verification of a flow, as stored.
#[derive(Debug, Clone)]
pub struct VerificationRecord {
    pub id: VerificationId,
    pub channel: Channel,
    pub destination: String,
    /// The comparison key of the identifier (rows from before it was kept: `None`).
    pub canonical: Option<String>,
    pub identifier_id: Option<IdentifierId>,
    pub position: i64,
    pub attempts: i64,
    pub max_attempts: i64,
    pub sent_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub status: CodeStatus,
    pub decoy: bool,
}

/// An identifier a completed sign-up creates.
#[derive(Debug, Clone)]
pub struct NewIdentifier {
    pub id: IdentifierId,
    pub kind: IdentifierKind,
    pub value: String,
    pub canonical: String,
    pub is_primary: bool,
}

/// Moves a sign-in flow's code to another of the account's identifiers.
#[derive(Debug, Clone)]
pub struct FactorSwitch {
    pub channel: Channel,
    pub destination: String,
    pub canonical: String,
    pub identifier_id: IdentifierId,
}

/// The next sign-up step's code, sent in the unit that verifies the current one.
#[derive(Debug, Clone)]
pub struct NextCode {
    pub ver_id: VerificationId,
    pub code_hash: String,
    pub expires_at: OffsetDateTime,
}

/// What a correct code leads to.
#[derive(Debug, Clone)]
pub enum Completion {
    /// The last identifier of a sign-up: the user, all identifiers and a session are created.
    SignUp {
        user_id: UserId,
        names: Names,
        identifiers: Vec<NewIdentifier>,
        session: NewSession,
    },
    SignIn {
        user_id: UserId,
        session: NewSession,
    },
    /// An identifier added to the account on /user.
    IdentifierAdded {
        user_id: UserId,
        identifier: NewIdentifier,
    },
    /// The session verified a fresh code (reverification).
    Reverified {
        user_id: UserId,
        session_id: SessionId,
    },
    /// A sign-up with more identifiers to verify: the verification is done, and the next one's
    /// code is sent if given.
    Next {
        next: Option<NextCode>,
        flow_expires_at: OffsetDateTime,
        message: Option<NewMessage>,
    },
}

/// A code submission: everything the unit of work needs, decided before it runs.
#[derive(Debug, Clone)]
pub struct CodeAttempt {
    pub flow_id: FlowId,
    pub ver_id: VerificationId,
    /// The keyed hash of the submitted code (computed before the unit: the unit only compares).
    pub submitted_hash: String,
    /// The keys whose consecutive failures a wrong code counts (an identifier, an account, the
    /// account's trusted browsers), each with its rules; never empty.
    pub counted: Vec<CountedKey>,
    /// Further keys a success resets (not counted on by a wrong code).
    pub reset: Vec<String>,
    pub now: OffsetDateTime,
    pub flow_expires_at: OffsetDateTime,
    /// Rate limits on code submissions (per client IP), checked before anything else.
    pub guards: Vec<Guard>,
    /// Rate limits of what a correct code sends (the next sign-up step's code), checked only
    /// once the code is consumed: a full bucket rolls the whole submission back.
    pub success_guards: Vec<Guard>,
    /// Written with a wrong code; `audit_locked` too when that failure locks a key.
    pub audit_wrong: AuditEvent,
    pub audit_locked: AuditEvent,
    /// Written with the completion.
    pub audit_success: Vec<AuditEvent>,
    pub completion: Completion,
}

/// The outcome of [`Store::attempt_code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A counted key that shows its lock is locked; no try was used.
    Locked(Lock),
    /// No try could be taken: the code is expired, used up, verified or replaced, or the flow
    /// is complete. The verification and flow as they are now, to tell which.
    Unavailable {
        flow: FlowStatus,
        code: CodeStatus,
        code_expires_at: OffsetDateTime,
    },
    /// A wrong code (or a try while a silent key is locked, whatever the code); the try was
    /// counted. `locked` is set when this failure locked a key that shows its lock;
    /// `newly_locked` when it locked any key (a silent one too).
    Wrong {
        remaining: u32,
        locked: Option<Lock>,
        newly_locked: bool,
    },
    /// The code was consumed and the completion applied.
    Completed,
    /// Another request consumed the code first; nothing was written.
    LostRace,
    /// Sign-up only: the identifier was registered by someone else meanwhile; nothing was written.
    IdentifierTaken,
    /// A rate limit refused the try before it was counted; nothing was written.
    Limited(Limited),
    /// The flow no longer exists (deleted by the janitor since it was read).
    Gone,
}

/// A new code for a verification (resend, API prepare, or a switch to another identifier).
#[derive(Debug, Clone)]
pub struct ReplaceCode {
    pub flow_id: FlowId,
    pub ver_id: VerificationId,
    pub code_hash: String,
    pub now: OffsetDateTime,
    pub code_expires_at: OffsetDateTime,
    /// The previous send must be at least this old.
    pub cooldown: time::Duration,
    pub flow_expires_at: OffsetDateTime,
    /// With a switch, the code goes to another identifier of the account from now on.
    pub switch: Option<FactorSwitch>,
    pub message: Option<NewMessage>,
    pub guards: Vec<Guard>,
    pub audit: AuditEvent,
}

const LOAD_FLOW: &str = "SELECT f.id, f.kind, f.status, f.identifier_kind, f.identifier_value, f.identifier_canonical, f.user_id, \
     f.redirect_url, f.browser_binding, f.created_at, f.expires_at, f.session_id, f.for_session_id, f.pending_action, f.first_name, f.last_name, v.id AS v_id, v.channel, v.destination, v.canonical AS v_canonical, \
     v.identifier_id, v.position, v.attempts, v.max_attempts, v.sent_at, v.expires_at AS v_expires_at, v.status AS v_status, v.decoy \
     FROM flows f JOIN verifications v ON v.flow_id = f.id WHERE f.id = $1 ORDER BY v.position";

fn verification_from_row(r: &Row) -> anyhow::Result<VerificationRecord> {
    Ok(VerificationRecord {
        id: VerificationId::from_trusted(r.text("v_id")?),
        channel: r.word("channel")?,
        destination: r.text("destination")?,
        canonical: r.opt_text("v_canonical")?,
        identifier_id: r.opt_text("identifier_id")?.map(IdentifierId::from_trusted),
        position: r.int("position")?,
        attempts: r.int("attempts")?,
        max_attempts: r.int("max_attempts")?,
        sent_at: r.time("sent_at")?,
        expires_at: r.time("v_expires_at")?,
        status: r.word("v_status")?,
        decoy: r.flag("decoy")?,
    })
}

/// The rows of [`LOAD_FLOW`] (the flow with one verification each) as one record.
fn flow_from_rows(rows: &[Row]) -> anyhow::Result<Option<FlowRecord>> {
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    Ok(Some(FlowRecord {
        id: FlowId::from_trusted(r.text("id")?),
        kind: r.word("kind")?,
        status: r.word("status")?,
        identifier_kind: r.word("identifier_kind")?,
        identifier_value: r.text("identifier_value")?,
        identifier_canonical: r.text("identifier_canonical")?,
        user_id: r.opt_text("user_id")?.map(UserId::from_trusted),
        redirect_url: r.opt_text("redirect_url")?,
        browser_binding: r.opt_text("browser_binding")?,
        created_at: r.time("created_at")?,
        expires_at: r.time("expires_at")?,
        session_id: r.opt_text("session_id")?.map(SessionId::from_trusted),
        for_session: r.opt_text("for_session_id")?.map(SessionId::from_trusted),
        pending_action: r.opt_text("pending_action")?,
        names: Names {
            first: r.opt_text("first_name")?.map(PersonName::from_trusted),
            last: r.opt_text("last_name")?.map(PersonName::from_trusted),
        },
        verifications: rows
            .iter()
            .map(verification_from_row)
            .collect::<anyhow::Result<_>>()?,
    }))
}

fn insert_flow(flow: &NewFlow) -> Stmt {
    Stmt::new(
        "INSERT INTO flows (id, kind, status, identifier_kind, identifier_value, identifier_canonical, user_id, \
         redirect_url, browser_binding, created_at, last_active_at, expires_at, for_session_id, pending_action, first_name, last_name) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13, $14, $15)",
        vec![
            flow.id.as_str().into(),
            flow.kind.into(),
            FlowStatus::Pending.into(),
            flow.identifier.kind().into(),
            flow.identifier.display().into(),
            flow.identifier.canonical().into(),
            flow.user_id.as_ref().map(|u| u.as_str()).into(),
            flow.redirect_url.as_deref().into(),
            flow.browser_binding.as_deref().into(),
            flow.now.into(),
            flow.expires_at.into(),
            flow.for_session.as_ref().map(|s| s.as_str()).into(),
            flow.pending_action.as_deref().into(),
            flow.names.first.as_ref().map(PersonName::as_str).into(),
            flow.names.last.as_ref().map(PersonName::as_str).into(),
        ],
    )
}

fn insert_verification(flow_id: &FlowId, ver: &NewVerification) -> Stmt {
    Stmt::new(
        "INSERT INTO verifications (id, flow_id, channel, destination, canonical, identifier_id, code_hash, attempts, \
         max_attempts, sent_at, expires_at, status, position, decoy) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, $11, $12, $13)",
        vec![
            ver.id.as_str().into(),
            flow_id.as_str().into(),
            ver.channel.into(),
            ver.destination.as_str().into(),
            ver.canonical.as_str().into(),
            ver.identifier_id.as_ref().map(|i| i.as_str()).into(),
            ver.code_hash.as_deref().into(),
            ver.max_attempts.into(),
            ver.sent_at.into(),
            ver.expires_at.into(),
            if ver.code_hash.is_some() {
                CodeStatus::Pending
            } else {
                CodeStatus::Waiting
            }
            .into(),
            ver.position.into(),
            ver.decoy.into(),
        ],
    )
}

/// Keeps a pending flow alive.
fn touch_flow(flow_id: &FlowId, now: OffsetDateTime, expires_at: OffsetDateTime) -> Stmt {
    Stmt::new(
        "UPDATE flows SET last_active_at = $1, expires_at = $2 WHERE id = $3 AND status = 'pending'",
        vec![now.into(), expires_at.into(), flow_id.as_str().into()],
    )
}

const REPLACE_CODE: &str = "UPDATE verifications SET code_hash = $1, attempts = 0, status = 'pending', sent_at = $2, expires_at = $3 \
     WHERE id = $4 AND flow_id = $5 AND (status = 'waiting' OR (status IN ('pending', 'failed') AND sent_at <= $6))";
const SWITCH_CODE: &str = "UPDATE verifications SET code_hash = $1, attempts = 0, status = 'pending', sent_at = $2, expires_at = $3, \
     channel = $7, destination = $8, canonical = $9, identifier_id = $10 \
     WHERE id = $4 AND flow_id = $5 AND (status = 'waiting' OR (status IN ('pending', 'failed') AND sent_at <= $6))";

/// Reserves a try before the comparison, so parallel guesses can never evaluate more than
/// `max_attempts` (the row stays locked until the unit ends).
const TAKE_TRY: &str = "UPDATE verifications SET attempts = attempts + 1 \
     WHERE id = $1 AND flow_id = $2 AND status = 'pending' AND attempts < max_attempts AND expires_at > $3 \
     RETURNING attempts, max_attempts, code_hash";
const CODE_STATE: &str =
    "SELECT v.status AS v_status, v.expires_at AS v_expires_at, f.status AS f_status \
     FROM verifications v JOIN flows f ON f.id = v.flow_id WHERE v.id = $1 AND f.id = $2";
/// Single use: this conditional update succeeds for exactly one request.
const CONSUME: &str = "UPDATE verifications SET status = 'verified', code_hash = NULL \
     WHERE id = $1 AND status = 'pending' AND code_hash = $2";
const KILL_CODE: &str =
    "UPDATE verifications SET status = 'failed', code_hash = NULL WHERE id = $1";

/// Whether a stored code hash equals the submitted one, in constant time. A decoy's stored
/// value is not a hash and never equals one.
fn same_hash(stored: &str, submitted: &str) -> bool {
    stored.as_bytes().ct_eq(submitted.as_bytes()).into()
}

impl Completion {
    /// The writes of a successful code, in order; `true` marks the ones whose unique violation
    /// means the identifier was registered meanwhile.
    fn statements(&self, flow_id: &FlowId, now: OffsetDateTime) -> Vec<(Stmt, bool)> {
        let mut stmts = Vec::new();
        let (user_id, session) = match self {
            Completion::Next {
                next,
                flow_expires_at,
                message,
            } => {
                if let Some(next) = next {
                    stmts.push((
                        Stmt::new(
                            "UPDATE verifications SET code_hash = $1, attempts = 0, status = 'pending', sent_at = $2, expires_at = $3 \
                             WHERE id = $4 AND status = 'waiting'",
                            vec![
                                next.code_hash.as_str().into(),
                                now.into(),
                                next.expires_at.into(),
                                next.ver_id.as_str().into(),
                            ],
                        ),
                        false,
                    ));
                }
                stmts.extend(message.iter().map(|m| (insert_message(m), false)));
                stmts.push((touch_flow(flow_id, now, *flow_expires_at), false));
                return stmts;
            }
            Completion::SignIn { user_id, session } => (user_id, session),
            Completion::IdentifierAdded {
                user_id,
                identifier,
            } => {
                // Primary if the account has none of its kind.
                stmts.push((
                    Stmt::new(
                        "INSERT INTO identifiers (id, user_id, kind, value, canonical, is_primary, verified_at, created_at) \
                         SELECT $1, $2, $3, $4, $5, CASE WHEN EXISTS (SELECT 1 FROM identifiers WHERE user_id = $2 AND kind = $3) THEN 0 ELSE 1 END, $6, $6",
                        vec![
                            identifier.id.as_str().into(),
                            user_id.as_str().into(),
                            identifier.kind.into(),
                            identifier.value.as_str().into(),
                            identifier.canonical.as_str().into(),
                            now.into(),
                        ],
                    ),
                    true,
                ));
                stmts.push((complete_flow(flow_id, now), false));
                return stmts;
            }
            Completion::Reverified {
                user_id,
                session_id,
            } => {
                stmts.push((
                    Stmt::new(
                        "UPDATE sessions SET verified_at = $1 WHERE id = $2 AND user_id = $3",
                        vec![
                            now.into(),
                            session_id.as_str().into(),
                            user_id.as_str().into(),
                        ],
                    ),
                    false,
                ));
                stmts.push((complete_flow(flow_id, now), false));
                return stmts;
            }
            Completion::SignUp {
                user_id,
                names,
                identifiers,
                session,
            } => {
                stmts.push((
                    Stmt::new(
                        "INSERT INTO users (id, created_at, first_name, last_name) VALUES ($1, $2, $3, $4)",
                        vec![
                            user_id.as_str().into(),
                            now.into(),
                            names.first.as_ref().map(PersonName::as_str).into(),
                            names.last.as_ref().map(PersonName::as_str).into(),
                        ],
                    ),
                    false,
                ));
                for identifier in identifiers {
                    stmts.push((
                        Stmt::new(
                            "INSERT INTO identifiers (id, user_id, kind, value, canonical, is_primary, verified_at, created_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                            vec![
                                identifier.id.as_str().into(),
                                user_id.as_str().into(),
                                identifier.kind.into(),
                                identifier.value.as_str().into(),
                                identifier.canonical.as_str().into(),
                                identifier.is_primary.into(),
                                now.into(),
                            ],
                        ),
                        true,
                    ));
                }
                (user_id, session)
            }
        };
        stmts.push((insert_session(session), false));
        stmts.push((
            Stmt::new(
                "UPDATE flows SET status = 'complete', completed_at = $1, last_active_at = $1, user_id = $2, session_id = $3 \
                 WHERE id = $4",
                vec![
                    now.into(),
                    user_id.as_str().into(),
                    session.id.as_str().into(),
                    flow_id.as_str().into(),
                ],
            ),
            false,
        ));
        stmts
    }
}

/// Marks a flow that created no session complete.
fn complete_flow(flow_id: &FlowId, now: OffsetDateTime) -> Stmt {
    Stmt::new(
        "UPDATE flows SET status = 'complete', completed_at = $1, last_active_at = $1 WHERE id = $2",
        vec![now.into(), flow_id.as_str().into()],
    )
}

/// What the statements of a batch did, as far as they ran (all of them, or those before its
/// failing statement).
fn ran(result: &Result<Vec<Done>, Failed>) -> &[Done] {
    match result {
        Ok(done) => done,
        Err(failed) => &failed.done,
    }
}

/// The unit of work of a code submission (see [`Store::attempt_code`]). Three round trips on
/// PostgreSQL: the locks, rate limits, failure counts and the try together; the wrong code's
/// counts, or the right code's consumption and completion, together; the commit. Statements
/// that ran before a decision could stop them (a try taken while a key shows its lock, a
/// completion after someone else consumed the code) are undone by discarding the unit.
async fn attempt_code(tx: &mut dyn Tx, a: CodeAttempt) -> anyhow::Result<Unit<AttemptOutcome>> {
    use Unit::{Commit, Discard};
    // The keys' failure counts are read, then counted on: on PostgreSQL, parallel tries on one
    // key (on several live codes, from several IPs) wait for each other at these locks, so each
    // sees the failures committed before it and no more than the rules allow are evaluated.
    let names: Vec<String> = a
        .counted
        .iter()
        .map(|k| k.key.as_str())
        .chain(a.reset.iter().map(String::as_str))
        .map(lockout::advisory_name)
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut stmts = locks(tx.backend(), &[&a.guards, &a.success_guards], &names);
    let guards_at = stmts.len();
    stmts.extend(checks(&a.guards, a.now));
    let counts_at = stmts.len();
    stmts.extend(a.counted.iter().map(|k| lockout::select(&k.key)));
    stmts.push(Stmt::new(
        TAKE_TRY,
        vec![
            a.ver_id.as_str().into(),
            a.flow_id.as_str().into(),
            a.now.into(),
        ],
    ));
    let result = tx.run(stmts).await;
    let guard_results = ran(&result).get(guards_at..counts_at).unwrap_or(&[]);
    if let Some(limited) = refusal(&a.guards, guard_results) {
        return Ok(Discard(AttemptOutcome::Limited(limited)));
    }
    let mut done = result?;
    let taken = done.pop().and_then(|d| d.rows.into_iter().next());
    let mut counts: Vec<(&CountedKey, Option<LockState>)> = Vec::new();
    for (key, d) in a.counted.iter().zip(&done[counts_at..]) {
        counts.push((key, lockout::state_of(d.rows.first())?));
    }
    // A key that shows its lock refuses the try; a silent one lets it be taken, uncompared.
    let mut shown: Option<Lock> = None;
    let mut silenced = false;
    for (key, state) in &counts {
        let Some(lock) = is_locked(&state.unwrap_or_default(), &key.rules, a.now) else {
            continue;
        };
        if key.silent {
            silenced = true;
        } else {
            shown = Some(shown.map_or(lock, |l| l.longer(lock)));
        }
    }
    if let Some(lock) = shown {
        return Ok(Discard(AttemptOutcome::Locked(lock)));
    }
    let stored = match &taken {
        Some(r) => r.opt_text("code_hash")?,
        None => None,
    };
    let (Some(r), Some(stored)) = (taken, stored) else {
        let state = tx
            .fetch_optional(Stmt::new(
                CODE_STATE,
                vec![a.ver_id.as_str().into(), a.flow_id.as_str().into()],
            ))
            .await?;
        let Some(state) = state else {
            return Ok(Discard(AttemptOutcome::Gone));
        };
        return Ok(Discard(AttemptOutcome::Unavailable {
            flow: state.word("f_status")?,
            code: state.word("v_status")?,
            code_expires_at: state.time("v_expires_at")?,
        }));
    };
    if silenced || !same_hash(&stored, &a.submitted_hash) {
        let remaining = (r.int("max_attempts")? - r.int("attempts")?).max(0);
        let mut stmts = Vec::new();
        if remaining == 0 {
            stmts.push(Stmt::new(KILL_CODE, vec![a.ver_id.as_str().into()]));
        }
        stmts.push(touch_flow(&a.flow_id, a.now, a.flow_expires_at));
        stmts.push(a.audit_wrong.statement(a.now));
        // Counted on every key that is not locked: a silent key under its lock counts nothing,
        // since the code was not compared. The new counts follow from the ones read (the keys
        // are locked), so they go in the same round trip.
        let mut locked = None;
        let mut newly_locked = false;
        for (key, state) in &counts {
            let state = state.unwrap_or_default();
            if is_locked(&state, &key.rules, a.now).is_some() {
                continue;
            }
            let (next, lock) = after_failure(&state, &key.rules, a.now);
            stmts.push(lockout::write(&key.key, &next, a.now));
            if let Some(lock) = lock {
                newly_locked = true;
                if !key.silent {
                    locked = Some(locked.map_or(lock, |l: Lock| l.longer(lock)));
                }
            }
        }
        if newly_locked {
            stmts.push(a.audit_locked.statement(a.now));
        }
        tx.run(stmts).await?;
        return Ok(Commit(AttemptOutcome::Wrong {
            remaining: remaining as u32,
            locked,
            newly_locked,
        }));
    }
    let mut stmts = vec![Stmt::new(
        CONSUME,
        vec![a.ver_id.as_str().into(), stored.into()],
    )];
    stmts.extend(checks(&a.success_guards, a.now));
    // A success resets the keys it was counted on, and the account's others.
    stmts.extend(
        counts
            .iter()
            .filter(|(_, state)| state.is_some())
            .map(|(key, _)| lockout::clear(&key.key)),
    );
    stmts.extend(a.reset.iter().map(|key| lockout::clear(key)));
    let writes_at = stmts.len();
    let (writes, taken_on_conflict): (Vec<Stmt>, Vec<bool>) = a
        .completion
        .statements(&a.flow_id, a.now)
        .into_iter()
        .chain(a.audit_success.iter().map(|e| (e.statement(a.now), false)))
        .unzip();
    stmts.extend(writes);
    let result = tx.run(stmts).await;
    let done = ran(&result);
    if done.first().is_some_and(|consumed| consumed.changed != 1) {
        return Ok(Discard(AttemptOutcome::LostRace));
    }
    if let Some(limited) = refusal(
        &a.success_guards,
        done.get(1..1 + a.success_guards.len()).unwrap_or(&[]),
    ) {
        return Ok(Discard(AttemptOutcome::Limited(limited)));
    }
    match result {
        Ok(_) => Ok(Commit(AttemptOutcome::Completed)),
        Err(f)
            if f.error.is_unique_violation()
                && f.at >= writes_at
                && taken_on_conflict[f.at - writes_at] =>
        {
            Ok(Discard(AttemptOutcome::IdentifierTaken))
        }
        Err(f) => Err(f.into()),
    }
}

/// The unit of work of a new code (see [`Store::replace_code`]): one batch, then the commit.
async fn replace_code(
    tx: &mut dyn Tx,
    r: ReplaceCode,
) -> anyhow::Result<Unit<Result<bool, Limited>>> {
    let mut stmts = locks(tx.backend(), &[&r.guards], &[]);
    let mut params = vec![
        r.code_hash.as_str().into(),
        r.now.into(),
        r.code_expires_at.into(),
        r.ver_id.as_str().into(),
        r.flow_id.as_str().into(),
        (r.now - r.cooldown).into(),
    ];
    let sql = match &r.switch {
        None => REPLACE_CODE,
        Some(sw) => {
            params.extend([
                sw.channel.into(),
                sw.destination.as_str().into(),
                sw.canonical.as_str().into(),
                sw.identifier_id.as_str().into(),
            ]);
            SWITCH_CODE
        }
    };
    let replace_at = stmts.len();
    stmts.push(Stmt::new(sql, params));
    // Limits are checked after the cooldown, so a resend refused by the cooldown uses no
    // budget; a full bucket rolls the new code back.
    stmts.extend(checks(&r.guards, r.now));
    stmts.push(supersede_messages(&r.ver_id));
    if let Some(msg) = &r.message {
        stmts.push(insert_message(msg));
    }
    stmts.push(touch_flow(&r.flow_id, r.now, r.flow_expires_at));
    stmts.push(r.audit.statement(r.now));
    let result = tx.run(stmts).await;
    let done = ran(&result);
    if done.get(replace_at).is_some_and(|d| d.changed != 1) {
        return Ok(Unit::Discard(Ok(false)));
    }
    if let Some(limited) = refusal(&r.guards, done.get(replace_at + 1..).unwrap_or(&[])) {
        return Ok(Unit::Discard(Err(limited)));
    }
    result?;
    Ok(Unit::Commit(Ok(true)))
}

impl Store {
    /// Creates a flow, its verifications (the first with its code, the others waiting), the
    /// message carrying the first code (none for a test identifier) and its audit events,
    /// atomically. `guards` are checked first: a full bucket writes nothing and is returned.
    pub async fn create_flow(
        &self,
        flow: NewFlow,
        vers: Vec<NewVerification>,
        msg: Option<NewMessage>,
        guards: Vec<Guard>,
        audit: Vec<AuditEvent>,
    ) -> anyhow::Result<Option<Limited>> {
        self.write(move |tx| {
            Box::pin(async move {
                // One batch: the locks, the guards, and the inserts, which a full bucket undoes.
                let mut stmts = locks(tx.backend(), &[&guards], &[]);
                let guards_at = stmts.len();
                stmts.extend(checks(&guards, flow.now));
                stmts.push(insert_flow(&flow));
                stmts.extend(vers.iter().map(|v| insert_verification(&flow.id, v)));
                stmts.extend(msg.iter().map(insert_message));
                stmts.extend(AuditEvent::statements(&audit, flow.now));
                let result = tx.run(stmts).await;
                if let Some(limited) =
                    refusal(&guards, ran(&result).get(guards_at..).unwrap_or(&[]))
                {
                    return Ok(Unit::Discard(Some(limited)));
                }
                result?;
                Ok(Unit::Commit(None))
            })
        })
        .await
    }

    /// The newest flow of `session` adding the identifier that will have id `identifier` (the
    /// API addresses a pending identifier by that id).
    pub async fn find_addition(
        &self,
        identifier: &IdentifierId,
        session: &SessionId,
    ) -> anyhow::Result<Option<FlowId>> {
        let (identifier, session) = (identifier.clone(), session.clone());
        self.read(move |tx| {
            let stmt = Stmt::new(
                "SELECT f.id FROM verifications v JOIN flows f ON f.id = v.flow_id \
                 WHERE v.identifier_id = $1 AND f.for_session_id = $2 AND f.kind = 'add_identifier' \
                 ORDER BY f.created_at DESC LIMIT 1",
                vec![identifier.as_str().into(), session.as_str().into()],
            );
            Box::pin(async move {
                tx.fetch_optional(stmt)
                    .await?
                    .map(|r| r.text("id").map(FlowId::from_trusted))
                    .transpose()
            })
        })
        .await
    }

    pub async fn load_flow(&self, id: &FlowId) -> anyhow::Result<Option<FlowRecord>> {
        let id = id.clone();
        self.read(move |tx| {
            let stmt = Stmt::new(LOAD_FLOW, vec![id.as_str().into()]);
            Box::pin(async move { flow_from_rows(&tx.fetch_all(stmt).await?) })
        })
        .await
    }

    /// Gives a verification a new code (a first code for one still waiting; otherwise the old
    /// code dies and the tries reset), cancels any undelivered message with the old code, queues
    /// the new message (if any) and extends the flow; with a switch, the code goes to another
    /// identifier of the account from now on. Returns false, writing nothing, if the previous
    /// send is younger than the cooldown or the verification is verified; a full rate-limit
    /// bucket writes nothing and is returned.
    pub async fn replace_code(
        &self,
        replace: ReplaceCode,
    ) -> anyhow::Result<Result<bool, Limited>> {
        self.write(move |tx| Box::pin(replace_code(tx, replace)))
            .await
    }

    /// Checks a code in one transaction, the whole unit of work of a code submission:
    /// - refuses without using a try while a counted key that shows its lock is locked (see
    ///   [`lockout`](super::lockout) for the rules: escalating locks, then a stop);
    /// - reserves a try by incrementing the counter *before* comparing, so parallel guesses can
    ///   never evaluate more than `max_attempts` (the row is locked for the comparison);
    /// - while a silent key is locked, takes the try without comparing: a wrong code's answer;
    /// - on a wrong code, counts a failure on every counted key that is not locked (which may
    ///   lock it) and kills the code when its tries are used up;
    /// - on the right code, consumes it (exactly one request can), clears the failures of the
    ///   counted keys and of `reset`, and applies the completion: the user (sign-up) and the session are created and
    ///   the flow completed, together or not at all.
    pub async fn attempt_code(&self, attempt: CodeAttempt) -> anyhow::Result<AttemptOutcome> {
        self.write(move |tx| Box::pin(attempt_code(tx, attempt)))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_hash_matches_and_a_decoy_never_does() {
        let h = "a".repeat(64);
        assert!(same_hash(&h, &h));
        assert!(!same_hash(&h, &"b".repeat(64)));
        assert!(!same_hash("decoy", &h));
        assert!(!same_hash(&h, ""));
    }
}
