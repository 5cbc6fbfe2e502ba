//! Starting, reading, resending and completing flows.

use time::OffsetDateTime;

use super::{Auth, Client};
use crate::delivery::{CodeMessage, Purpose};
use crate::domain::{
    EmailAddress, FlowId, IdentifierId, MessageId, OtpCode, RedirectTarget, SessionId, UserId,
    VerificationId,
};
use crate::store::{
    from_ms, ms, AttemptOutcome, CodeAttempt, Completion, FlowRecord, NewFlow, NewMessage,
    NewSession, NewVerification,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowKind {
    SignUp,
    SignIn,
}

impl FlowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowKind::SignUp => "sign_up",
            FlowKind::SignIn => "sign_in",
        }
    }

    fn purpose(self) -> Purpose {
        match self {
            FlowKind::SignUp => Purpose::SignUp,
            FlowKind::SignIn => Purpose::SignIn,
        }
    }
}

/// The code side of a flow, as the code page shows it.
#[derive(Debug, Clone)]
pub struct VerificationState {
    /// Where the code went (the stored address for sign-in).
    pub destination: String,
    pub attempts_used: u32,
    pub max_attempts: u32,
    pub expires_at: OffsetDateTime,
    pub resend_available_at: OffsetDateTime,
    /// Tries used up: only a new code helps.
    pub dead: bool,
    pub expired: bool,
}

impl VerificationState {
    pub fn remaining(&self) -> u32 {
        self.max_attempts.saturating_sub(self.attempts_used)
    }
}

/// A flow as the pages see it.
#[derive(Debug, Clone)]
pub struct FlowView {
    pub id: FlowId,
    pub kind: FlowKind,
    /// The identifier as typed (shown with an "Edit" link).
    pub identifier: String,
    pub redirect: Option<RedirectTarget>,
    pub complete: bool,
    pub verification: VerificationState,
    pub now: OffsetDateTime,
}

impl FlowView {
    /// Whole seconds until "Resend code" opens (0 when open).
    pub fn resend_wait_secs(&self) -> u64 {
        let d = self.verification.resend_available_at - self.now;
        if d.is_positive() {
            (d.whole_milliseconds() as u64).div_ceil(1000)
        } else {
            0
        }
    }
}

/// A completed flow: the new session's token goes into the cookie.
pub struct SignedIn {
    pub token: String,
    pub session_id: SessionId,
    pub user_id: UserId,
    pub redirect: Option<RedirectTarget>,
}

impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn")
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no account has this identifier")]
    IdentifierNotFound,
    #[error("an account already has this identifier")]
    IdentifierTaken,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// Unknown id, another kind of flow, or a flow bound to another browser.
    #[error("flow not found")]
    NotFound,
    #[error("flow expired")]
    Expired,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum ResendError {
    #[error(transparent)]
    Flow(#[from] FlowError),
    #[error("resend available in {wait_secs} s")]
    Cooldown { wait_secs: u64, view: Box<FlowView> },
    #[error("flow already complete")]
    Completed,
}

#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error(transparent)]
    Flow(#[from] FlowError),
    #[error("incorrect code, {remaining} tries left")]
    Incorrect { remaining: u32 },
    #[error("too many incorrect tries")]
    TriesExhausted,
    #[error("code expired")]
    CodeExpired,
    #[error("code already used")]
    AlreadyUsed,
    #[error("identifier registered meanwhile")]
    IdentifierTaken,
    /// Too many consecutive wrong codes for this identifier, across codes and flows.
    #[error("identifier locked for {retry_after_secs} s")]
    Locked { retry_after_secs: u64 },
}

impl From<anyhow::Error> for AttemptError {
    fn from(e: anyhow::Error) -> Self {
        AttemptError::Flow(FlowError::Internal(e))
    }
}

impl From<anyhow::Error> for ResendError {
    fn from(e: anyhow::Error) -> Self {
        ResendError::Flow(FlowError::Internal(e))
    }
}

fn masked(record: &FlowRecord) -> String {
    EmailAddress::from_trusted(
        record.identifier_value.clone(),
        record.identifier_canonical.clone(),
    )
    .masked()
}

impl Auth {
    /// Starts a flow for `email`: checks the account (exists for sign-in, free for sign-up),
    /// stores the flow with a fresh code and queues the message, in one transaction.
    pub async fn start(
        &self,
        kind: FlowKind,
        email: &EmailAddress,
        redirect: Option<&RedirectTarget>,
        client: &Client<'_>,
    ) -> Result<FlowId, StartError> {
        let now = self.now();
        let owner = self.store.find_email_owner(email).await?;
        let (user_id, identifier_id, destination) = match (kind, owner) {
            (FlowKind::SignUp, Some(_)) => {
                tracing::info!(event = "sign_up_refused", identifier = %email.masked(), reason = "identifier_taken");
                return Err(StartError::IdentifierTaken);
            }
            (FlowKind::SignUp, None) => (None, None, email.clone()),
            (FlowKind::SignIn, None) => {
                tracing::info!(event = "sign_in_refused", identifier = %email.masked(), reason = "identifier_not_found");
                return Err(StartError::IdentifierNotFound);
            }
            // The code goes to the address stored for the account, never to the variant typed.
            (FlowKind::SignIn, Some((user, identifier, stored))) => {
                (Some(user), Some(identifier), stored)
            }
        };
        let flow_id = FlowId::generate();
        let ver_id = VerificationId::generate();
        let code = OtpCode::generate(self.policy.code_length);
        let code_hash = self.keys.code_hash(ver_id.as_str(), code.expose());
        let code_expires = now + self.policy.code_ttl;
        let binding = client.browser.map(|b| self.keys.browser_binding(b));
        let (msg_id, sealed) = self.seal_code(kind, &destination, &code, code_expires);
        self.store
            .create_flow(
                &NewFlow {
                    id: &flow_id,
                    kind: kind.as_str(),
                    identifier_kind: "email",
                    identifier: email,
                    user_id: user_id.as_ref(),
                    redirect_url: redirect.map(|r| r.as_str()),
                    browser_binding: binding.as_deref(),
                    now: ms(now),
                    expires_at: ms(now + self.policy.flow_idle_ttl),
                },
                &NewVerification {
                    id: &ver_id,
                    channel: "email",
                    destination: destination.display(),
                    identifier_id: identifier_id.as_ref(),
                    code_hash: &code_hash,
                    max_attempts: self.policy.max_attempts as i64,
                    sent_at: ms(now),
                    expires_at: ms(code_expires),
                },
                &NewMessage {
                    id: &msg_id,
                    channel: "email",
                    recipient_masked: &destination.masked(),
                    verification_id: Some(&ver_id),
                    payload: &sealed,
                    now: ms(now),
                    not_after: ms(code_expires),
                },
            )
            .await?;
        self.outbox.wake();
        tracing::info!(event = "code_sent", flow = kind.as_str(), flow_id = %flow_id, identifier = %email.masked(), ip = client.ip.unwrap_or("-"));
        Ok(flow_id)
    }

    fn seal_code(
        &self,
        kind: FlowKind,
        to: &EmailAddress,
        code: &OtpCode,
        expires: OffsetDateTime,
    ) -> (MessageId, Vec<u8>) {
        let message = CodeMessage {
            // Mail goes to the ASCII (punycode) form of the domain, which every SMTP server accepts.
            to: to
                .mailbox_address()
                .map(|a| a.to_string())
                .unwrap_or_else(|| to.display().to_string()),
            code: code.expose().to_string(),
            purpose: kind.purpose(),
            expires_at: ms(expires),
            ttl_minutes: self.policy.code_ttl.as_secs().div_ceil(60),
        };
        (MessageId::generate(), message.seal(&self.keys))
    }

    async fn load_record(
        &self,
        id: &FlowId,
        kind: FlowKind,
        client: &Client<'_>,
    ) -> Result<FlowRecord, FlowError> {
        let record = self.store.load_flow(id).await?.ok_or(FlowError::NotFound)?;
        if record.kind != kind.as_str() {
            return Err(FlowError::NotFound);
        }
        if let Some(bound) = &record.browser_binding {
            let presented = client.browser.map(|b| self.keys.browser_binding(b));
            if presented.as_deref() != Some(bound.as_str()) {
                return Err(FlowError::NotFound);
            }
        }
        if record.status == "pending" && record.expires_at <= ms(self.now()) {
            return Err(FlowError::Expired);
        }
        Ok(record)
    }

    fn view(&self, record: &FlowRecord, kind: FlowKind) -> FlowView {
        let now = self.now();
        let v = &record.verification;
        let sent_at = from_ms(v.sent_at);
        FlowView {
            id: record.id.clone(),
            kind,
            identifier: record.identifier_value.clone(),
            redirect: record
                .redirect_url
                .clone()
                .map(RedirectTarget::from_trusted),
            complete: record.status == "complete",
            verification: VerificationState {
                destination: v.destination.clone(),
                attempts_used: v.attempts.clamp(0, u32::MAX as i64) as u32,
                max_attempts: v.max_attempts.clamp(0, u32::MAX as i64) as u32,
                expires_at: from_ms(v.expires_at),
                resend_available_at: sent_at + self.policy.resend_cooldown,
                dead: v.status == "failed" || v.attempts >= v.max_attempts,
                expired: v.status == "pending" && v.expires_at <= ms(now),
            },
            now,
        }
    }

    /// Reads a flow for its code page.
    pub async fn flow(
        &self,
        id: &FlowId,
        kind: FlowKind,
        client: &Client<'_>,
    ) -> Result<FlowView, FlowError> {
        let record = self.load_record(id, kind, client).await?;
        Ok(self.view(&record, kind))
    }

    /// Sends a new code, which replaces (and so invalidates) the previous one, once the resend
    /// cooldown since the last send has passed.
    pub async fn resend(
        &self,
        id: &FlowId,
        kind: FlowKind,
        client: &Client<'_>,
    ) -> Result<FlowView, ResendError> {
        let record = self.load_record(id, kind, client).await?;
        let view = self.view(&record, kind);
        if view.complete {
            return Err(ResendError::Completed);
        }
        let wait_secs = view.resend_wait_secs();
        if wait_secs > 0 {
            return Err(ResendError::Cooldown {
                wait_secs,
                view: Box::new(view),
            });
        }
        let now = self.now();
        let v = &record.verification;
        let destination =
            EmailAddress::from_trusted(v.destination.clone(), record.identifier_canonical.clone());
        let code = OtpCode::generate(self.policy.code_length);
        let code_hash = self.keys.code_hash(v.id.as_str(), code.expose());
        let code_expires = now + self.policy.code_ttl;
        let (msg_id, sealed) = self.seal_code(kind, &destination, &code, code_expires);
        let replaced = self
            .store
            .replace_code(
                &record.id,
                &v.id,
                &code_hash,
                ms(now),
                ms(code_expires),
                self.policy.resend_cooldown.as_millis() as i64,
                ms(now + self.policy.flow_idle_ttl),
                &NewMessage {
                    id: &msg_id,
                    channel: "email",
                    recipient_masked: &destination.masked(),
                    verification_id: Some(&v.id),
                    payload: &sealed,
                    now: ms(now),
                    not_after: ms(code_expires),
                },
            )
            .await?;
        if !replaced {
            // Another tab resent (or completed the flow) in the meantime: show the current state.
            let record = self.load_record(id, kind, client).await?;
            let view = self.view(&record, kind);
            if view.complete {
                return Err(ResendError::Completed);
            }
            return Err(ResendError::Cooldown {
                wait_secs: view.resend_wait_secs().max(1),
                view: Box::new(view),
            });
        }
        self.outbox.wake();
        tracing::info!(event = "code_resent", flow = kind.as_str(), flow_id = %record.id, identifier = %masked(&record), ip = client.ip.unwrap_or("-"));
        let record = self.load_record(id, kind, client).await?;
        Ok(self.view(&record, kind))
    }

    /// Checks a code. A try is counted before the comparison; the right code completes the
    /// flow (creating the user on sign-up) and a new session, all in one transaction.
    pub async fn attempt(
        &self,
        id: &FlowId,
        kind: FlowKind,
        code: &OtpCode,
        client: &Client<'_>,
    ) -> Result<SignedIn, AttemptError> {
        let record = self.load_record(id, kind, client).await?;
        if record.status == "complete" {
            return Err(AttemptError::AlreadyUsed);
        }
        let now = self.now();
        let v = &record.verification;
        let lock_key = format!("email:{}", record.identifier_canonical);
        let (token, token_hash) = self.new_session_token();
        let session_id = SessionId::generate();
        let (user_id, identifier_id) = match kind {
            FlowKind::SignUp => (UserId::generate(), Some(IdentifierId::generate())),
            FlowKind::SignIn => (record.user_id.clone().ok_or(FlowError::NotFound)?, None),
        };
        let email = EmailAddress::from_trusted(
            record.identifier_value.clone(),
            record.identifier_canonical.clone(),
        );
        let session = self.new_session(&session_id, &user_id, &token_hash, now, client);
        let completion = match &identifier_id {
            Some(identifier_id) => Completion::SignUp {
                user_id: &user_id,
                identifier_id,
                email: &email,
                session: &session,
            },
            None => Completion::SignIn {
                user_id: &user_id,
                session: &session,
            },
        };
        let attempt = CodeAttempt {
            flow_id: record.id.to_string(),
            ver_id: v.id.to_string(),
            lock_key,
            now: ms(now),
            flow_expires_at: ms(now + self.policy.flow_idle_ttl),
            max_failures: self.policy.lockout_max_failures as i64,
            cooldown_ms: self.policy.lockout_cooldown.as_millis() as i64,
        };
        let (keys, ver_id, typed) = (self.keys.clone(), v.id.to_string(), code.clone());
        let matches = move |stored: &str| keys.code_matches(&ver_id, typed.expose(), stored);
        let outcome = self
            .store
            .attempt_code(attempt, matches, completion)
            .await?;
        let locked = |until: i64| AttemptError::Locked {
            retry_after_secs: ((until - ms(now)).max(1000) as u64).div_ceil(1000),
        };
        let log = |event: &str, reason: &str| {
            tracing::info!(event, reason, flow = kind.as_str(), flow_id = %record.id, identifier = %masked(&record), ip = client.ip.unwrap_or("-"));
        };
        match outcome {
            AttemptOutcome::Completed => {
                tracing::info!(event = "code_verified", flow = kind.as_str(), flow_id = %record.id, identifier = %masked(&record), user_id = %user_id, session_id = %session_id, ip = client.ip.unwrap_or("-"));
                Ok(SignedIn {
                    token,
                    session_id,
                    user_id,
                    redirect: record.redirect_url.map(RedirectTarget::from_trusted),
                })
            }
            AttemptOutcome::Locked { until } => {
                log("code_refused", "identifier_locked");
                Err(locked(until))
            }
            AttemptOutcome::Wrong {
                remaining,
                locked_until,
            } => {
                log("code_incorrect", &format!("{remaining} tries left"));
                if let Some(until) = locked_until {
                    tracing::warn!(event = "identifier_locked", identifier = %masked(&record), "too many consecutive wrong codes; identifier locked");
                    return Err(locked(until));
                }
                Err(match remaining {
                    0 => AttemptError::TriesExhausted,
                    remaining => AttemptError::Incorrect { remaining },
                })
            }
            AttemptOutcome::Unavailable => {
                let current = self
                    .store
                    .load_flow(&record.id)
                    .await?
                    .ok_or(FlowError::NotFound)?;
                let cv = &current.verification;
                let err = if cv.status == "verified" || current.status == "complete" {
                    AttemptError::AlreadyUsed
                } else if cv.status == "pending" && cv.expires_at <= ms(now) {
                    AttemptError::CodeExpired
                } else {
                    AttemptError::TriesExhausted
                };
                log("code_refused", &err.to_string());
                Err(err)
            }
            AttemptOutcome::LostRace => {
                log("code_refused", "already used");
                Err(AttemptError::AlreadyUsed)
            }
            AttemptOutcome::IdentifierTaken => {
                log("code_refused", "identifier registered meanwhile");
                Err(AttemptError::IdentifierTaken)
            }
        }
    }

    fn new_session<'a>(
        &self,
        id: &'a SessionId,
        user_id: &'a UserId,
        token_hash: &'a str,
        now: OffsetDateTime,
        client: &Client<'a>,
    ) -> NewSession<'a> {
        NewSession {
            id,
            user_id,
            token_hash,
            now: ms(now),
            expires_at: ms(now + self.policy.session_ttl),
            user_agent: client.user_agent,
            ip: client.ip,
        }
    }
}
