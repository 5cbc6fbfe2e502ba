//! The flow state machine, one module per operation: [`start`] (a new flow and its first
//! code), [`view`] (reading a flow), [`resend`] (a new code: resend, the API's prepare, "use
//! another method") and [`attempt`] (checking a code). Each public operation reads the clock
//! once and passes `now` down; the decisions are pure functions with unit tests, the writes are
//! the store's units of work.

mod attempt;
mod resend;
mod start;
mod view;

use time::OffsetDateTime;

use super::{Auth, Client};
use crate::delivery::Purpose;
use crate::domain::{
    FlowId, FlowStatus, Identifier, IdentifierId, IdentifierKind, MessageId, PhoneNumber,
    RedirectTarget, SessionId, UserId, VerificationId,
};
use crate::store::{AuditEvent, FlowRecord, VerificationRecord};

pub use crate::domain::FlowKind;

/// The fixed code test identifiers accept in test mode (Clerk's convention), repeated to the
/// configured length.
pub const TEST_CODE: &str = "424242";

/// The stored "hash" of a decoy's code: not hex, so no HMAC ever equals it.
const DECOY_HASH: &str = "decoy";

fn purpose(kind: FlowKind) -> Purpose {
    match kind {
        FlowKind::SignUp => Purpose::SignUp,
        FlowKind::SignIn => Purpose::SignIn,
        FlowKind::AddIdentifier => Purpose::AddIdentifier,
        FlowKind::Reverify => Purpose::Reverify,
    }
}

/// What a code's HMAC is bound to: its verification and the identifier it was sent to, so a
/// code is only ever valid for the identifier that received it.
fn code_binding(ver_id: &VerificationId, to: &Identifier) -> String {
    format!("{ver_id}|{}:{}", to.kind().as_str(), to.canonical())
}

/// The identifier a verification is for, as stored.
fn verification_identifier(record: &FlowRecord, v: &VerificationRecord) -> Identifier {
    let kind = v.channel.kind();
    let canonical = v.canonical.clone().unwrap_or_else(|| match kind {
        IdentifierKind::Email => record.identifier_canonical.clone(),
        IdentifierKind::Phone => v.destination.clone(),
    });
    match kind {
        IdentifierKind::Phone => Identifier::Phone(PhoneNumber::from_trusted(canonical)),
        IdentifierKind::Email => Identifier::from_trusted(kind, v.destination.clone(), canonical),
    }
}

/// Whether a pending flow is past its idle expiry.
fn flow_expired(record: &FlowRecord, now: OffsetDateTime) -> bool {
    record.status == FlowStatus::Pending && record.expires_at <= now
}

/// Where a verification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerificationStatus {
    /// No code sent yet (a later sign-up step, or a flow created through the API).
    NotSent,
    /// A live code is out.
    Pending,
    Verified,
    /// Tries used up: only a new code helps.
    Failed,
    Expired,
}

/// The code side of a flow, as the code page shows it.
#[derive(Debug, Clone)]
pub struct VerificationState {
    pub id: VerificationId,
    pub kind: IdentifierKind,
    pub status: VerificationStatus,
    /// Sign-in: the account's identifier the code goes to.
    pub identifier_id: Option<IdentifierId>,
    /// Where the code went (the stored identifier for sign-in), as shown to people.
    pub destination: String,
    /// The identifier's comparison key (E.164 for a phone number), for the API; like
    /// `destination`, masked if the person did not type it.
    pub value: String,
    /// This verification is step `step` of `steps` (a sign-up verifies each identifier in turn).
    pub step: usize,
    pub steps: usize,
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
    /// The identifiers of the flow as typed (to prefill the form after "Edit").
    pub identifiers: Vec<(IdentifierKind, String)>,
    pub redirect: Option<RedirectTarget>,
    pub complete: bool,
    /// Unfinished and past its idle expiry (only the API shows such flows, as "abandoned").
    pub abandoned: bool,
    /// The verification being worked on (see `FlowRecord::current`).
    pub verification: VerificationState,
    /// Every verification of the flow, in order.
    pub verifications: Vec<VerificationState>,
    /// Sign-up: required identifier kinds the flow has none of.
    pub missing: Vec<IdentifierKind>,
    /// Sign-in: the account's other identifiers the code can be sent to instead ("Use another
    /// method"), masked.
    pub other_factors: Vec<Factor>,
    /// Sign-in: every identifier of the account a code can be sent to (the API's
    /// `supported_first_factors`).
    pub factors: Vec<Factor>,
    pub user_id: Option<UserId>,
    pub session_id: Option<SessionId>,
    pub created_at: OffsetDateTime,
    pub now: OffsetDateTime,
}

/// Which verification a code is for.
#[derive(Debug, Clone)]
pub enum AttemptTarget {
    /// The hosted pages: the current step (as the page showed it, if known); a correct code for
    /// a sign-up step sends the next step's code at once.
    Page(Option<VerificationId>),
    /// The API: the verification of this kind; the client prepares every step itself.
    Kind(IdentifierKind),
}

/// Where a code should be sent (the API's prepare calls).
#[derive(Debug, Clone)]
pub enum PrepareTarget {
    /// Sign-up: the identifier of this kind.
    Kind(IdentifierKind),
    /// Sign-in: this identifier of the account.
    Identifier(IdentifierId),
}

/// Another place a sign-in code can go.
#[derive(Debug, Clone)]
pub struct Factor {
    pub identifier_id: IdentifierId,
    pub kind: IdentifierKind,
    pub safe_identifier: String,
}

/// What a correct code led to.
#[derive(Debug)]
pub enum Attempted {
    SignedIn(SignedIn),
    /// A sign-up identifier was verified; the next one's code was sent.
    NextVerification,
    /// A flow on /user is complete: the identifier was added, or the session reverified
    /// (with the action that asked for it, if any).
    AccountUpdated {
        /// The identifier whose code was verified (the one added, or the reverification's).
        identifier: Identifier,
        /// The added identifier's id.
        identifier_id: Option<IdentifierId>,
        then: Option<crate::auth::PendingAction>,
    },
}

impl FlowView {
    /// Whole seconds until "Resend code" opens (0 when open, and when no code was sent yet).
    pub fn resend_wait_secs(&self) -> u64 {
        if self.verification.status == VerificationStatus::NotSent {
            return 0;
        }
        view::secs_until(self.verification.resend_available_at, self.now)
    }
}

/// A completed flow: the new session's token goes into the cookie.
pub struct SignedIn {
    pub token: String,
    /// Native clients: their new client token, which holds the session (the old one is dead).
    pub client_token: Option<String>,
    /// Browsers: a new device cookie, which makes this browser one of the account's trusted
    /// browsers (`None` for native clients, or with trusted browsers off).
    pub device_token: Option<String>,
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
    IdentifierTaken(IdentifierKind),
    /// Adding an identifier the account already has.
    #[error("the account already has this identifier")]
    AlreadyYours,
    /// A rate limit refused the request; nothing was stored or sent.
    #[error("too many requests; retry in {retry_after_secs} s")]
    Limited { retry_after_secs: u64 },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// Unknown id, another kind of flow, or a flow bound to another browser.
    #[error("flow not found")]
    NotFound,
    /// Past its idle expiry; where it would have led, so that starting again keeps it.
    #[error("flow expired")]
    Expired { redirect: Option<RedirectTarget> },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum ResendError {
    #[error(transparent)]
    Flow(#[from] FlowError),
    /// The API asked for a code for something the flow does not have (or may not use).
    #[error("no such identifier in this flow")]
    UnknownTarget,
    #[error("already verified")]
    AlreadyVerified,
    /// A rate limit refused the send; nothing was sent.
    #[error("too many requests; retry in {retry_after_secs} s")]
    Limited { retry_after_secs: u64 },
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
    /// The code was typed for an earlier step of the flow (a double submit, or the back
    /// button after that step was verified); no try was used.
    #[error("that step is already done")]
    StepDone,
    /// The API named a verification that has no code out (never prepared) or does not exist.
    #[error("no code was sent for this verification")]
    NotPrepared,
    /// A rate limit refused the try before it was counted.
    #[error("too many requests; retry in {retry_after_secs} s")]
    Limited { retry_after_secs: u64 },
    /// Too many consecutive wrong codes for this identifier, across codes and flows.
    #[error("identifier locked for {retry_after_secs} s")]
    Locked { retry_after_secs: u64 },
    /// So many consecutive wrong codes that the identifier stays locked until a success (from a
    /// trusted browser) or an operator's reset.
    #[error("identifier locked until reset")]
    Blocked,
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

/// A code and its sealed message for one identifier; test identifiers in test mode get the
/// fixed code and no message.
struct PreparedCode {
    code_hash: String,
    message: Option<PreparedMessage>,
}

/// The message that goes with a code: sealed for the worker, or withheld (a decoy's SMS, stored
/// so that a decoy writes what a real send writes, never delivered).
struct PreparedMessage {
    id: MessageId,
    sealed: Vec<u8>,
    withheld: bool,
}

impl PreparedMessage {
    fn sealed(sealed: Vec<u8>) -> Self {
        Self {
            id: MessageId::generate(),
            sealed,
            withheld: false,
        }
    }
}

impl Auth {
    /// Reads a flow of `kind` that this client may continue: `NotFound` for an unknown id,
    /// another kind of flow or another browser's flow; `Expired` past its idle expiry.
    async fn load_record(
        &self,
        id: &FlowId,
        kind: FlowKind,
        client: &Client<'_>,
        now: OffsetDateTime,
    ) -> Result<FlowRecord, FlowError> {
        let record = self.store.load_flow(id).await?.ok_or(FlowError::NotFound)?;
        if record.kind != kind {
            return Err(FlowError::NotFound);
        }
        // A flow on /user is its session's alone.
        if record.for_session.is_some() && record.for_session.as_ref() != client.session {
            return Err(FlowError::NotFound);
        }
        if let Some(bound) = &record.browser_binding {
            let presented = client.browser.map(|b| self.keys.browser_binding(b));
            if presented.as_deref() != Some(bound.as_str()) {
                return Err(FlowError::NotFound);
            }
        }
        if flow_expired(&record, now) {
            return Err(FlowError::Expired {
                redirect: record.redirect_url.map(RedirectTarget::from_trusted),
            });
        }
        Ok(record)
    }

    /// A security event of this client.
    pub(crate) fn audit_event(
        &self,
        event: crate::domain::AuditKind,
        outcome: crate::domain::AuditOutcome,
        user: Option<&UserId>,
        identifier: Option<&Identifier>,
        flow: Option<&FlowId>,
        client: &Client<'_>,
    ) -> AuditEvent {
        AuditEvent {
            event,
            outcome,
            user_id: user.cloned(),
            identifier: identifier.map(|i| i.masked()),
            flow_id: flow.cloned(),
            ip: client.ip.map(str::to_string),
            user_agent: client.user_agent.map(str::to_string),
        }
    }
}
