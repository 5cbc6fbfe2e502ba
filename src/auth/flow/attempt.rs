//! Checking a code, in three parts: a pure plan from the flow as read ([`plan`]), the store's
//! unit of work ([`crate::store::Store::attempt_code`]), and a pure classification of its
//! outcome ([`classify`]). The clock is read once.

use time::OffsetDateTime;

use super::view::{missing, secs_until};
use super::{
    code_binding, verification_identifier, AttemptError, AttemptTarget, Attempted, FlowError,
    FlowKind, SignedIn,
};
use crate::auth::{Auth, Client, Policy};
use crate::crypto::random_token;
use crate::domain::{
    AuditKind, AuditOutcome, CodeStatus, FlowId, FlowStatus, Identifier, IdentifierId,
    IdentifierKind, OtpCode, RedirectTarget, SessionId, UserId,
};
use crate::store::{
    lockout_keys, AttemptOutcome, CodeAttempt, Completion, CountedKey, FlowRecord, Limited, Lock,
    NewIdentifier, NewSession, NextCode, VerificationRecord,
};

/// Whose failures a wrong code counts against, and so what it locks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Counted {
    /// A sign-up's identifier: `email:…` / `phone:…`.
    Identifier(Identifier),
    /// A sign-in's account, whichever identifier got the code: `user:<id>`.
    Account(UserId),
    /// Strict enumeration protection: sign-in failures per identifier typed, in a namespace of
    /// their own (`signin:…`), so a decoy (no account) locks exactly like a real sign-in, and
    /// locking one identifier says nothing about which others share its account.
    SignInIdentifier(Identifier),
    /// Strict enumeration protection: the account's count too (`user:<id>`), so its
    /// identifiers share one budget, but silently: while it is locked, a try is taken and
    /// answered as a wrong code, as a decoy's would be (see `store::CountedKey::silent`).
    SilentAccount(UserId),
    /// A trusted browser of the account (its device cookie): a count of its own
    /// (`device:user:<id>`), apart from everyone else's.
    Devices(UserId),
}

impl Counted {
    pub(super) fn key(&self) -> String {
        match self {
            Counted::Identifier(i) => lockout_keys::sign_up(i.kind(), i.canonical()),
            Counted::Account(user) | Counted::SilentAccount(user) => lockout_keys::account(user),
            Counted::SignInIdentifier(i) => lockout_keys::sign_in(i.kind(), i.canonical()),
            Counted::Devices(user) => lockout_keys::devices(user),
        }
    }

    fn silent(&self) -> bool {
        matches!(self, Counted::SilentAccount(_))
    }
}

/// What a code submission will do, decided from the flow as read.
#[derive(Debug)]
pub(super) struct Plan<'r> {
    /// The verification the code is for.
    pub v: &'r VerificationRecord,
    pub identifier: Identifier,
    /// The hosted pages: a correct code for a sign-up step sends the next step's code at once.
    pub auto_next: bool,
    /// A correct code completes the flow (the user and a session are created or signed in).
    pub completes: bool,
    /// The next sign-up step, whose code a correct code sends.
    pub next: Option<&'r VerificationRecord>,
    /// Never empty.
    pub counted: Vec<Counted>,
    /// The other keys a success resets (NIST SP 800-63B-4 §3.2.2: a successful authentication
    /// disregards earlier failures): a success in a trusted browser lifts everyone's locks on
    /// the account, and any success resets the trusted browsers' count.
    pub reset: Vec<Counted>,
    /// The account a completion signs in; `None` = a new one (sign-up, or a decoy's).
    pub user: Option<UserId>,
}

/// Plans a code submission, without I/O. `trusted`: the client is a trusted browser of the
/// flow's account. `stand_in`: the account a decoy counts on in its place (a keyed hash of its
/// identifier), so a decoy reads, writes and locks exactly the keys a real account does.
pub(super) fn plan<'r>(
    record: &'r FlowRecord,
    kind: FlowKind,
    target: &AttemptTarget,
    policy: &Policy,
    trusted: bool,
    stand_in: &UserId,
) -> Result<Plan<'r>, AttemptError> {
    if record.status == FlowStatus::Complete {
        return Err(AttemptError::AlreadyUsed);
    }
    let v = match target {
        AttemptTarget::Page(step) => {
            let v = record.current();
            if step.as_ref().is_some_and(|s| s != &v.id) {
                return Err(AttemptError::StepDone);
            }
            v
        }
        AttemptTarget::Kind(wanted) => {
            let v = record
                .verifications
                .iter()
                .find(|v| v.channel.kind() == *wanted)
                .ok_or(AttemptError::NotPrepared)?;
            match v.status {
                CodeStatus::Waiting => return Err(AttemptError::NotPrepared),
                CodeStatus::Verified => return Err(AttemptError::AlreadyUsed),
                CodeStatus::Pending | CodeStatus::Failed => v,
            }
        }
    };
    let auto_next = matches!(target, AttemptTarget::Page(_));
    let identifier = verification_identifier(record, v);
    let account = || {
        record
            .user_id
            .clone()
            .ok_or(AttemptError::from(FlowError::NotFound))
    };
    let (counted, reset, user) = match kind {
        FlowKind::SignUp => (vec![Counted::Identifier(identifier.clone())], vec![], None),
        // A new identifier counts like a sign-up's: on itself, whoever tries it.
        FlowKind::AddIdentifier => (
            vec![Counted::Identifier(identifier.clone())],
            vec![],
            Some(account()?),
        ),
        // A reverification counts on the account, as a sign-in does: a stolen session cannot
        // guess its way past it any faster than a sign-in could.
        FlowKind::Reverify => {
            let user = account()?;
            (vec![Counted::Account(user.clone())], vec![], Some(user))
        }
        FlowKind::SignIn => {
            let user = match (&record.user_id, v.decoy) {
                (Some(user), _) => Some(user.clone()),
                (None, true) => None,
                (None, false) => return Err(FlowError::NotFound.into()),
            };
            // Everyone's keys, and the account's trusted browsers' key.
            let (everyone, devices) = match (&user, policy.enumeration_strict) {
                (user, true) => {
                    let account = user.as_ref().unwrap_or(stand_in);
                    (
                        vec![
                            Counted::SignInIdentifier(identifier.clone()),
                            Counted::SilentAccount(account.clone()),
                        ],
                        Some(Counted::Devices(account.clone())),
                    )
                }
                (Some(user), false) => (
                    vec![Counted::Account(user.clone())],
                    Some(Counted::Devices(user.clone())),
                ),
                // A decoy exists only in strict mode.
                (None, false) => return Err(FlowError::NotFound.into()),
            };
            // A trusted browser counts on its share alone; a success from anywhere resets both.
            let (counted, reset) = match devices {
                Some(devices) if trusted && user.is_some() => (vec![devices], everyone),
                Some(devices) => (everyone, vec![devices]),
                None => (everyone, vec![]),
            };
            (counted, reset, user)
        }
    };
    // A sign-up completes with its last unverified identifier, if nothing required is missing.
    let others_unverified = record
        .verifications
        .iter()
        .any(|x| x.id != v.id && x.status != CodeStatus::Verified);
    let lacking = kind == FlowKind::SignUp && !missing(record, policy).is_empty();
    let completes = !others_unverified && !lacking;
    let next = match kind {
        FlowKind::SignUp if auto_next && !completes => record.next_waiting(),
        _ => None,
    };
    Ok(Plan {
        v,
        identifier,
        auto_next,
        completes,
        next,
        counted,
        reset,
        user,
    })
}

/// What the unit of work's outcome means.
#[derive(Debug)]
pub(super) enum Verdict {
    /// The flow is complete: the session was created.
    SignedIn,
    /// A sign-up step was verified; the next one's code went out (if planned).
    NextStep,
    /// A rate limit refused the try (its wait is read from the store).
    Limited(Limited),
    /// A wrong code: the try was counted (and may have locked the identifier).
    Wrong(AttemptError, &'static str),
    /// Refused without a try, with the reason logged.
    Refused(AttemptError, &'static str),
}

/// Classifies the unit's outcome, without I/O.
pub(super) fn classify(
    outcome: AttemptOutcome,
    kind: FlowKind,
    plan_completes: bool,
    auto_next: bool,
    now: OffsetDateTime,
) -> Verdict {
    let locked = |lock| match lock {
        Lock::Until(until) => AttemptError::Locked {
            retry_after_secs: secs_until(until, now).max(1),
        },
        Lock::Stopped => AttemptError::Blocked,
    };
    match outcome {
        AttemptOutcome::Completed if plan_completes => Verdict::SignedIn,
        AttemptOutcome::Completed => Verdict::NextStep,
        AttemptOutcome::Limited(limited) => Verdict::Limited(limited),
        AttemptOutcome::Locked(lock) => Verdict::Refused(locked(lock), "identifier_locked"),
        AttemptOutcome::Wrong {
            locked: Some(lock), ..
        } => Verdict::Wrong(locked(lock), "identifier locked"),
        AttemptOutcome::Wrong { remaining: 0, .. } => {
            Verdict::Wrong(AttemptError::TriesExhausted, "no tries left")
        }
        AttemptOutcome::Wrong { remaining, .. } => {
            Verdict::Wrong(AttemptError::Incorrect { remaining }, "tries left")
        }
        AttemptOutcome::Unavailable {
            flow,
            code,
            code_expires_at,
        } => {
            // The hosted page's step was verified by a parallel submit, and the flow went on to
            // its next step: the person should see that step, not an error.
            let moved_on = flow == FlowStatus::Pending && code == CodeStatus::Verified;
            if moved_on && auto_next {
                Verdict::Refused(AttemptError::StepDone, "step already verified")
            } else if code == CodeStatus::Verified || flow == FlowStatus::Complete {
                Verdict::Refused(AttemptError::AlreadyUsed, "already used")
            } else if code == CodeStatus::Pending && code_expires_at <= now {
                Verdict::Refused(AttemptError::CodeExpired, "code expired")
            } else {
                Verdict::Refused(AttemptError::TriesExhausted, "no tries left")
            }
        }
        AttemptOutcome::LostRace if auto_next && kind == FlowKind::SignUp && !plan_completes => {
            Verdict::Refused(AttemptError::StepDone, "step already verified")
        }
        AttemptOutcome::LostRace => Verdict::Refused(AttemptError::AlreadyUsed, "already used"),
        AttemptOutcome::IdentifierTaken => Verdict::Refused(
            AttemptError::IdentifierTaken,
            "identifier registered meanwhile",
        ),
        AttemptOutcome::Gone => Verdict::Refused(FlowError::NotFound.into(), "flow gone"),
    }
}

/// The identifiers a completed sign-up creates: one per verification, the first of each kind
/// primary.
fn new_identifiers(record: &FlowRecord) -> Vec<(Identifier, bool)> {
    let mut seen = Vec::new();
    record
        .verifications
        .iter()
        .map(|x| {
            let kind = x.channel.kind();
            let is_primary = !seen.contains(&kind);
            seen.push(kind);
            (verification_identifier(record, x), is_primary)
        })
        .collect()
}

/// How a completed flow authenticated, as OpenID Connect `amr` values besides "otp": the
/// channel of the code that signed in, or of every code a sign-up verified.
fn session_amr(
    record: &FlowRecord,
    kind: FlowKind,
    signed_in_with: IdentifierKind,
) -> Vec<&'static str> {
    let amr = |k: IdentifierKind| match k {
        IdentifierKind::Email => "email",
        IdentifierKind::Phone => "sms",
    };
    let mut out = vec![amr(signed_in_with)];
    if kind == FlowKind::SignUp {
        for x in &record.verifications {
            let a = amr(x.channel.kind());
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

impl Auth {
    /// Checks a code. A try is counted before the comparison. The right code completes the
    /// flow (creating the user on sign-up) and a new session, all in one transaction, or, for
    /// a sign-up with another identifier to verify, sends that identifier's code in the same
    /// transaction.
    ///
    /// With [`AttemptTarget::Page`], a code typed for a step that is already verified is
    /// refused without using a try of the current one.
    pub async fn attempt(
        &self,
        id: &FlowId,
        kind: FlowKind,
        code: &OtpCode,
        target: &AttemptTarget,
        client: &Client<'_>,
    ) -> Result<Attempted, AttemptError> {
        let now = self.now();
        let record = self.load_record(id, kind, client, now).await?;
        let trusted = kind == FlowKind::SignIn
            && record
                .user_id
                .as_ref()
                .is_some_and(|user| self.trusted_by(client, user, now));
        let plan = plan(
            &record,
            kind,
            target,
            &self.policy,
            trusted,
            &self.stand_in_account(&record),
        )?;
        let v = plan.v;
        let identifier = &plan.identifier;
        let user_id = plan.user.clone().unwrap_or_else(UserId::generate);
        let (token, token_hash) = self.new_session_token();
        let session_id = SessionId::generate();
        // A native client gets a new token at sign-in, so a planted one never holds a session.
        let client_token = client.native.then(|| random_token(32));
        let device = client.user_agent.and_then(crate::auth::device_of);
        let session = NewSession {
            id: session_id.clone(),
            user_id: user_id.clone(),
            token_hash,
            now,
            expires_at: now + self.policy.session_ttl,
            user_agent: client.user_agent.map(str::to_string),
            ip: client.ip.map(str::to_string),
            client_binding: client_token
                .as_deref()
                .map(|t| self.keys.browser_binding(t)),
            amr: session_amr(&record, kind, identifier.kind()),
            browser: device.as_ref().map(|d| d.0.clone()),
            os: device.as_ref().and_then(|d| d.1.clone()),
        };
        let next = match plan.next {
            Some(w) => {
                let to = verification_identifier(&record, w);
                let expires = now + self.policy.code_ttl;
                let prepared = self
                    .prepare_send(kind, &w.id, &to, w.decoy, expires)
                    .await?;
                let message = prepared
                    .message
                    .map(|m| self.new_message(m, &to, &w.id, now, expires));
                Some((w, to, prepared.code_hash, expires, message))
            }
            None => None,
        };
        let flow_expires_at = now + self.policy.flow_idle_ttl;
        let new_identifiers = match (kind, plan.completes) {
            (FlowKind::SignUp, true) => new_identifiers(&record),
            _ => Vec::new(),
        };
        let completion = match (&next, kind, plan.completes) {
            (Some((w, _, code_hash, expires, message)), _, _) => Completion::Next {
                next: Some(NextCode {
                    ver_id: w.id.clone(),
                    code_hash: code_hash.clone(),
                    expires_at: *expires,
                }),
                flow_expires_at,
                message: message.clone(),
            },
            (None, FlowKind::SignUp, false) => Completion::Next {
                next: None,
                flow_expires_at,
                message: None,
            },
            (None, FlowKind::SignUp, true) => Completion::SignUp {
                user_id: user_id.clone(),
                names: record.names.clone(),
                identifiers: new_identifiers
                    .iter()
                    .map(|(identifier, is_primary)| NewIdentifier {
                        id: IdentifierId::generate(),
                        kind: identifier.kind(),
                        value: identifier.display().to_string(),
                        canonical: identifier.canonical().to_string(),
                        is_primary: *is_primary,
                    })
                    .collect(),
                session,
            },
            (None, FlowKind::SignIn, _) => Completion::SignIn {
                user_id: user_id.clone(),
                session,
            },
            (None, FlowKind::AddIdentifier, _) => Completion::IdentifierAdded {
                user_id: user_id.clone(),
                identifier: NewIdentifier {
                    id: v
                        .identifier_id
                        .clone()
                        .ok_or_else(|| anyhow::anyhow!("an added identifier has its id"))?,
                    kind: identifier.kind(),
                    value: identifier.display().to_string(),
                    canonical: identifier.canonical().to_string(),
                    is_primary: false,
                },
            },
            (None, FlowKind::Reverify, _) => Completion::Reverified {
                user_id: user_id.clone(),
                session_id: record
                    .for_session
                    .clone()
                    .ok_or(AttemptError::from(FlowError::NotFound))?,
            },
        };
        let event = |what, outcome, user: Option<&UserId>, about: &Identifier| {
            self.audit_event(what, outcome, user, Some(about), Some(&record.id), client)
        };
        let audit_success = match (plan.completes, kind) {
            (false, _) => vec![event(
                AuditKind::IdentifierVerified,
                AuditOutcome::Success,
                None,
                identifier,
            )],
            (true, FlowKind::AddIdentifier) => vec![event(
                AuditKind::IdentifierAdded,
                AuditOutcome::Success,
                Some(&user_id),
                identifier,
            )],
            (true, FlowKind::Reverify) => vec![event(
                AuditKind::Reverified,
                AuditOutcome::Success,
                Some(&user_id),
                identifier,
            )],
            (true, FlowKind::SignIn) => vec![event(
                AuditKind::SignIn,
                AuditOutcome::Success,
                Some(&user_id),
                identifier,
            )],
            (true, FlowKind::SignUp) => std::iter::once(event(
                AuditKind::SignUp,
                AuditOutcome::Success,
                Some(&user_id),
                identifier,
            ))
            .chain(new_identifiers.iter().map(|(i, _)| {
                event(
                    AuditKind::IdentifierAdded,
                    AuditOutcome::Success,
                    Some(&user_id),
                    i,
                )
            }))
            .collect(),
        };
        let attempt = CodeAttempt {
            flow_id: record.id.clone(),
            ver_id: v.id.clone(),
            submitted_hash: self
                .keys
                .code_hash(&code_binding(&v.id, identifier), code.expose()),
            counted: plan
                .counted
                .iter()
                .map(|c| CountedKey {
                    key: c.key(),
                    silent: c.silent(),
                    rules: match c {
                        Counted::Devices(_) => self.device_lock_rules(),
                        _ => self.shared_lock_rules(),
                    },
                })
                .collect(),
            reset: plan.reset.iter().map(Counted::key).collect(),
            now,
            flow_expires_at,
            guards: self.attempt_guards(client),
            // The next step's code is a send like any other, counted only if this code is right.
            success_guards: match &next {
                Some((_, to, ..)) => self.send_guards(to, client, false),
                None => Vec::new(),
            },
            audit_wrong: event(
                AuditKind::CodeIncorrect,
                AuditOutcome::Failure,
                record.user_id.as_ref(),
                identifier,
            ),
            audit_locked: event(
                AuditKind::IdentifierLocked,
                AuditOutcome::Refused,
                record.user_id.as_ref(),
                identifier,
            ),
            audit_success,
            completion,
        };
        let outcome = self.store.attempt_code(attempt).await?;
        if let (
            AttemptOutcome::Wrong {
                newly_locked: true, ..
            },
            Some(account),
        ) = (&outcome, &record.user_id)
        {
            self.notice_locked(account, identifier, now);
        }
        let log = |event: &str, reason: &str| {
            tracing::info!(event, reason, flow = kind.as_str(), flow_id = %record.id, identifier = %identifier.masked(), ip = client.ip.unwrap_or("-"));
        };
        match classify(outcome, kind, plan.completes, plan.auto_next, now) {
            Verdict::NextStep => {
                if let Some((_, to, _, _, Some(message))) = &next {
                    self.dispatch(message, to, now);
                }
                tracing::info!(event = "identifier_verified", flow = kind.as_str(), flow_id = %record.id, identifier = %identifier.masked(), next = %next.as_ref().map(|n| n.1.masked()).unwrap_or_else(|| "-".into()), ip = client.ip.unwrap_or("-"));
                Ok(Attempted::NextVerification)
            }
            Verdict::SignedIn if matches!(kind, FlowKind::AddIdentifier | FlowKind::Reverify) => {
                tracing::info!(event = "code_verified", flow = kind.as_str(), flow_id = %record.id, identifier = %identifier.masked(), user_id = %user_id, ip = client.ip.unwrap_or("-"));
                Ok(Attempted::AccountUpdated {
                    identifier: identifier.clone(),
                    identifier_id: (kind == FlowKind::AddIdentifier)
                        .then(|| v.identifier_id.clone())
                        .flatten(),
                    then: record
                        .pending_action
                        .as_deref()
                        .and_then(crate::auth::PendingAction::parse),
                })
            }
            Verdict::SignedIn => {
                tracing::info!(event = "code_verified", flow = kind.as_str(), flow_id = %record.id, identifier = %identifier.masked(), user_id = %user_id, session_id = %session_id, ip = client.ip.unwrap_or("-"));
                Ok(Attempted::SignedIn(SignedIn {
                    token,
                    client_token,
                    device_token: self.new_device_token(client, &user_id, now),
                    session_id,
                    user_id,
                    redirect: record
                        .redirect_url
                        .clone()
                        .map(RedirectTarget::from_trusted),
                }))
            }
            Verdict::Limited(limited) => {
                log("code_refused", "rate_limited");
                let retry_after_secs = self.retry_after(&limited, now).await;
                Err(AttemptError::Limited { retry_after_secs })
            }
            Verdict::Wrong(err, reason) => {
                log("code_incorrect", reason);
                if matches!(err, AttemptError::Locked { .. } | AttemptError::Blocked) {
                    tracing::warn!(event = "identifier_locked", identifier = %identifier.masked(), "too many consecutive wrong codes; locked");
                }
                Err(err)
            }
            Verdict::Refused(err, reason) => {
                log("code_refused", reason);
                Err(err)
            }
        }
    }

    /// The account a decoy sign-in (strict mode) counts its failures on in place of one: a keyed
    /// hash of the identifier, the same in every flow, so a decoy reads, writes and locks as many
    /// keys as a real account, and no account's id.
    fn stand_in_account(&self, record: &FlowRecord) -> UserId {
        let bytes = self.keys.derived_bytes(&[
            "stand-in account",
            record.identifier_kind.as_str(),
            &record.identifier_canonical,
        ]);
        UserId::from_bytes(bytes)
    }

    /// A fresh session token (256 bits from the OS CSPRNG) and the hash that is stored.
    fn new_session_token(&self) -> (String, String) {
        let token = random_token(32);
        let hash = self.keys.token_hash(&token);
        (token, hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Links;
    use crate::config::LimitsConfig;
    use crate::domain::{Accepts, Channel, PhonePolicy, VerificationId};
    use std::time::Duration as StdDuration;
    use time::macros::datetime;
    use time::Duration;

    const NOW: OffsetDateTime = datetime!(2026-12-02 12:00 UTC);

    fn policy(strict: bool, required_phone: bool) -> Policy {
        Policy {
            code_length: 6,
            code_ttl: StdDuration::from_secs(600),
            max_attempts: 3,
            resend_cooldown: StdDuration::from_secs(30),
            flow_idle_ttl: StdDuration::from_secs(1800),
            session_ttl: StdDuration::from_secs(7 * 86400),
            session_inactivity_timeout: None,
            reverification: StdDuration::from_secs(600),
            allow_account_deletion: true,
            lockout: crate::config::LockoutConfig::default(),
            test_mode: crate::domain::TestMode::Off,
            factor_kinds: Accepts {
                email: true,
                phone: true,
            },
            required: Accepts {
                email: true,
                phone: required_phone,
            },
            limits: LimitsConfig::default(),
            enumeration_strict: strict,
            links: Links {
                sign_in: "https://accounts.example.com/sign-in".into(),
                sign_up: "https://accounts.example.com/sign-up".into(),
            },
            phone_policy: PhonePolicy::default(),
            logout_clients: Vec::new(),
        }
    }

    fn ver(
        channel: Channel,
        destination: &str,
        status: CodeStatus,
        decoy: bool,
    ) -> VerificationRecord {
        VerificationRecord {
            id: VerificationId::generate(),
            channel,
            destination: destination.into(),
            canonical: Some(destination.into()),
            identifier_id: None,
            position: 0,
            attempts: 0,
            max_attempts: 3,
            sent_at: NOW,
            expires_at: NOW + Duration::minutes(10),
            status,
            decoy,
        }
    }

    fn record(kind: FlowKind, user: Option<UserId>, vers: Vec<VerificationRecord>) -> FlowRecord {
        let first = &vers[0];
        FlowRecord {
            id: FlowId::generate(),
            kind,
            status: FlowStatus::Pending,
            identifier_kind: first.channel.kind(),
            identifier_value: first.destination.clone(),
            identifier_canonical: first.destination.clone(),
            user_id: user,
            redirect_url: None,
            browser_binding: None,
            created_at: NOW,
            expires_at: NOW + Duration::minutes(30),
            session_id: None,
            for_session: None,
            pending_action: None,
            names: Default::default(),
            verifications: vers
                .into_iter()
                .enumerate()
                .map(|(i, mut v)| {
                    v.position = i as i64;
                    v
                })
                .collect(),
        }
    }

    fn email(status: CodeStatus) -> VerificationRecord {
        ver(Channel::Email, "jane@example.com", status, false)
    }

    fn phone(status: CodeStatus) -> VerificationRecord {
        ver(Channel::Sms, "+14155550123", status, false)
    }

    const PAGE: AttemptTarget = AttemptTarget::Page(None);

    static STAND_IN: std::sync::LazyLock<UserId> =
        std::sync::LazyLock::new(|| UserId::from_bytes([7; 16]));

    fn keys(p: &Plan<'_>) -> Vec<(String, bool)> {
        p.counted.iter().map(|c| (c.key(), c.silent())).collect()
    }

    #[test]
    fn sign_in_failures_count_per_account_or_per_identifier_and_silently_per_account_if_strict() {
        let user = UserId::generate();
        let r = record(
            FlowKind::SignIn,
            Some(user.clone()),
            vec![email(CodeStatus::Pending)],
        );
        let p = plan(
            &r,
            FlowKind::SignIn,
            &PAGE,
            &policy(false, false),
            false,
            &STAND_IN,
        )
        .unwrap();
        assert_eq!(p.counted, vec![Counted::Account(user.clone())]);
        assert_eq!(keys(&p), [(format!("user:{user}"), false)]);
        assert_eq!(p.reset, [Counted::Devices(user.clone())]);
        assert!(p.completes);
        let p = plan(
            &r,
            FlowKind::SignIn,
            &PAGE,
            &policy(true, false),
            false,
            &STAND_IN,
        )
        .unwrap();
        assert_eq!(
            keys(&p),
            [
                ("signin:email:jane@example.com".to_string(), false),
                (format!("user:{user}"), true)
            ],
            "the account's identifiers share one budget, whose lock never shows"
        );
        assert_eq!(p.user, Some(user));
    }

    #[test]
    fn a_trusted_browser_counts_on_its_accounts_device_share_alone() {
        let user = UserId::generate();
        let r = record(
            FlowKind::SignIn,
            Some(user.clone()),
            vec![email(CodeStatus::Pending)],
        );
        for strict in [true, false] {
            let p = plan(
                &r,
                FlowKind::SignIn,
                &PAGE,
                &policy(strict, false),
                true,
                &STAND_IN,
            )
            .unwrap();
            assert_eq!(keys(&p), [(format!("device:user:{user}"), false)]);
            let resets: Vec<String> = p.reset.iter().map(Counted::key).collect();
            let expected = match strict {
                true => vec![
                    "signin:email:jane@example.com".to_string(),
                    format!("user:{user}"),
                ],
                false => vec![format!("user:{user}")],
            };
            assert_eq!(
                resets, expected,
                "its success lifts everyone's locks on the account"
            );
        }
        // A sign-up has no account to trust a browser for.
        let r = record(FlowKind::SignUp, None, vec![email(CodeStatus::Pending)]);
        let p = plan(
            &r,
            FlowKind::SignUp,
            &PAGE,
            &policy(true, false),
            true,
            &STAND_IN,
        )
        .unwrap();
        assert_eq!(keys(&p), [("email:jane@example.com".to_string(), false)]);
    }

    #[test]
    fn a_decoy_sign_in_locks_like_a_real_one_and_signs_in_nobody() {
        let r = record(
            FlowKind::SignIn,
            None,
            vec![ver(
                Channel::Email,
                "nobody@example.com",
                CodeStatus::Pending,
                true,
            )],
        );
        let p = plan(
            &r,
            FlowKind::SignIn,
            &PAGE,
            &policy(true, false),
            true,
            &STAND_IN,
        )
        .unwrap();
        assert_eq!(
            keys(&p),
            [
                ("signin:email:nobody@example.com".to_string(), false),
                (format!("user:{}", *STAND_IN), true)
            ],
            "the keys a real sign-in counts on, the account's a stand-in's"
        );
        assert_eq!(p.reset, [Counted::Devices(STAND_IN.clone())]);
        assert_eq!(p.user, None, "and nobody to sign in");
        // Outside strict mode a sign-in without an account cannot exist.
        let refused = plan(
            &r,
            FlowKind::SignIn,
            &PAGE,
            &policy(false, false),
            false,
            &STAND_IN,
        )
        .unwrap_err();
        assert!(matches!(refused, AttemptError::Flow(FlowError::NotFound)));
    }

    #[test]
    fn a_sign_up_counts_failures_against_the_identifier_and_completes_with_its_last_step() {
        let r = record(
            FlowKind::SignUp,
            None,
            vec![email(CodeStatus::Pending), phone(CodeStatus::Waiting)],
        );
        let p = plan(
            &r,
            FlowKind::SignUp,
            &PAGE,
            &policy(false, true),
            false,
            &STAND_IN,
        )
        .unwrap();
        assert_eq!(keys(&p), [("email:jane@example.com".to_string(), false)]);
        assert!(!p.completes, "the phone number is still to verify");
        assert_eq!(p.next.map(|n| &n.id), Some(&r.verifications[1].id));
        // Through the API the client prepares the next step itself.
        let p = plan(
            &r,
            FlowKind::SignUp,
            &AttemptTarget::Kind(crate::domain::IdentifierKind::Email),
            &policy(false, true),
            false,
            &STAND_IN,
        )
        .unwrap();
        assert!(p.next.is_none() && !p.auto_next);

        let r = record(
            FlowKind::SignUp,
            None,
            vec![email(CodeStatus::Verified), phone(CodeStatus::Pending)],
        );
        let p = plan(
            &r,
            FlowKind::SignUp,
            &PAGE,
            &policy(false, true),
            false,
            &STAND_IN,
        )
        .unwrap();
        assert!(p.completes);
        assert_eq!(keys(&p), [("phone:+14155550123".to_string(), false)]);
    }

    #[test]
    fn a_sign_up_missing_a_required_identifier_never_completes() {
        let r = record(FlowKind::SignUp, None, vec![email(CodeStatus::Pending)]);
        assert!(
            !plan(
                &r,
                FlowKind::SignUp,
                &PAGE,
                &policy(false, true),
                false,
                &STAND_IN
            )
            .unwrap()
            .completes
        );
        assert!(
            plan(
                &r,
                FlowKind::SignUp,
                &PAGE,
                &policy(false, false),
                false,
                &STAND_IN
            )
            .unwrap()
            .completes
        );
    }

    #[test]
    fn a_code_for_a_step_already_done_or_never_sent_is_refused_before_any_try() {
        let r = record(
            FlowKind::SignUp,
            None,
            vec![email(CodeStatus::Verified), phone(CodeStatus::Pending)],
        );
        let earlier = AttemptTarget::Page(Some(r.verifications[0].id.clone()));
        let p = policy(false, true);
        assert!(matches!(
            plan(&r, FlowKind::SignUp, &earlier, &p, false, &STAND_IN),
            Err(AttemptError::StepDone)
        ));
        let by_kind = |k| AttemptTarget::Kind(k);
        use crate::domain::IdentifierKind::{Email, Phone};
        assert!(matches!(
            plan(&r, FlowKind::SignUp, &by_kind(Email), &p, false, &STAND_IN),
            Err(AttemptError::AlreadyUsed)
        ));
        assert!(plan(&r, FlowKind::SignUp, &by_kind(Phone), &p, false, &STAND_IN).is_ok());
        let waiting = record(
            FlowKind::SignUp,
            None,
            vec![email(CodeStatus::Pending), phone(CodeStatus::Waiting)],
        );
        assert!(matches!(
            plan(
                &waiting,
                FlowKind::SignUp,
                &by_kind(Phone),
                &p,
                false,
                &STAND_IN
            ),
            Err(AttemptError::NotPrepared)
        ));
        let mut done = record(
            FlowKind::SignIn,
            Some(UserId::generate()),
            vec![email(CodeStatus::Verified)],
        );
        done.status = FlowStatus::Complete;
        assert!(matches!(
            plan(&done, FlowKind::SignIn, &PAGE, &p, false, &STAND_IN),
            Err(AttemptError::AlreadyUsed)
        ));
    }

    fn refused(v: Verdict) -> AttemptError {
        match v {
            Verdict::Wrong(e, _) | Verdict::Refused(e, _) => e,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn wrong_codes_count_down_then_exhaust_then_lock_then_stop() {
        let wrong = |remaining, locked| AttemptOutcome::Wrong {
            remaining,
            locked,
            newly_locked: locked.is_some(),
        };
        let c = |o| classify(o, FlowKind::SignIn, true, true, NOW);
        assert!(matches!(
            refused(c(wrong(2, None))),
            AttemptError::Incorrect { remaining: 2 }
        ));
        assert!(matches!(
            refused(c(wrong(0, None))),
            AttemptError::TriesExhausted
        ));
        let until = NOW + Duration::HOUR;
        assert!(matches!(
            refused(c(wrong(1, Some(Lock::Until(until))))),
            AttemptError::Locked {
                retry_after_secs: 3600
            }
        ));
        assert!(matches!(
            refused(c(AttemptOutcome::Locked(Lock::Until(
                NOW + Duration::milliseconds(1)
            )))),
            AttemptError::Locked {
                retry_after_secs: 1
            }
        ));
        assert!(matches!(
            refused(c(wrong(1, Some(Lock::Stopped)))),
            AttemptError::Blocked
        ));
        assert!(matches!(
            refused(c(AttemptOutcome::Locked(Lock::Stopped))),
            AttemptError::Blocked
        ));
        // A silent key's new lock shows nothing: a wrong code's answer.
        assert!(matches!(
            refused(c(AttemptOutcome::Wrong {
                remaining: 2,
                locked: None,
                newly_locked: true
            })),
            AttemptError::Incorrect { remaining: 2 }
        ));
    }

    #[test]
    fn an_unavailable_code_is_told_apart_by_what_happened_to_it() {
        let unavailable = |flow, code, expires| AttemptOutcome::Unavailable {
            flow,
            code,
            code_expires_at: expires,
        };
        let later = NOW + Duration::MINUTE;
        let page = |o| refused(classify(o, FlowKind::SignUp, false, true, NOW));
        let api = |o| refused(classify(o, FlowKind::SignUp, false, false, NOW));
        use CodeStatus::*;
        use FlowStatus::{Complete, Pending as Open};
        assert!(matches!(
            page(unavailable(Open, Verified, later)),
            AttemptError::StepDone
        ));
        assert!(matches!(
            api(unavailable(Open, Verified, later)),
            AttemptError::AlreadyUsed
        ));
        assert!(matches!(
            page(unavailable(Complete, Verified, later)),
            AttemptError::AlreadyUsed
        ));
        assert!(matches!(
            page(unavailable(Open, Pending, NOW)),
            AttemptError::CodeExpired
        ));
        assert!(matches!(
            page(unavailable(Open, Pending, later)),
            AttemptError::TriesExhausted
        ));
        assert!(matches!(
            page(unavailable(Open, Failed, later)),
            AttemptError::TriesExhausted
        ));
    }

    #[test]
    fn a_lost_race_is_a_done_step_only_for_a_page_sign_up_step() {
        let c = |kind, completes, auto_next| {
            refused(classify(
                AttemptOutcome::LostRace,
                kind,
                completes,
                auto_next,
                NOW,
            ))
        };
        assert!(matches!(
            c(FlowKind::SignUp, false, true),
            AttemptError::StepDone
        ));
        assert!(matches!(
            c(FlowKind::SignUp, true, true),
            AttemptError::AlreadyUsed
        ));
        assert!(matches!(
            c(FlowKind::SignUp, false, false),
            AttemptError::AlreadyUsed
        ));
        assert!(matches!(
            c(FlowKind::SignIn, true, true),
            AttemptError::AlreadyUsed
        ));
    }

    #[test]
    fn a_completed_unit_signs_in_or_moves_to_the_next_step_as_planned() {
        assert!(matches!(
            classify(AttemptOutcome::Completed, FlowKind::SignUp, true, true, NOW),
            Verdict::SignedIn
        ));
        assert!(matches!(
            classify(
                AttemptOutcome::Completed,
                FlowKind::SignUp,
                false,
                true,
                NOW
            ),
            Verdict::NextStep
        ));
        assert!(matches!(
            refused(classify(
                AttemptOutcome::IdentifierTaken,
                FlowKind::SignUp,
                true,
                true,
                NOW
            )),
            AttemptError::IdentifierTaken
        ));
        assert!(matches!(
            refused(classify(
                AttemptOutcome::Gone,
                FlowKind::SignIn,
                true,
                true,
                NOW
            )),
            AttemptError::Flow(FlowError::NotFound)
        ));
    }

    #[test]
    fn a_completed_sign_up_creates_each_identifier_with_the_first_of_each_kind_primary() {
        let r = record(
            FlowKind::SignUp,
            None,
            vec![email(CodeStatus::Verified), phone(CodeStatus::Pending)],
        );
        let ids = new_identifiers(&r);
        assert_eq!(ids.len(), 2);
        assert!(ids.iter().all(|(_, primary)| *primary));
    }
}
