//! Starting, reading, resending and completing flows.

use time::OffsetDateTime;

use super::{Auth, Client};
use crate::crypto::random_token;
use crate::delivery::{CodeMessage, Purpose};
use crate::domain::{
    FlowId, Identifier, IdentifierId, IdentifierKind, MessageId, OtpCode, PhoneNumber,
    RedirectTarget, SessionId, UserId, VerificationId,
};
use crate::store::{
    from_ms, ms, AttemptOutcome, AuditEvent, CodeAttempt, Completion, FactorSwitch, FlowRecord,
    NewFlow, NewIdentifier, NewMessage, NewSession, NewVerification, VerificationRecord,
};

/// The fixed code test identifiers accept in test mode (Clerk's convention), repeated to the
/// configured length.
pub const TEST_CODE: &str = "424242";

/// The stored "hash" of a decoy's code: not hex, so no HMAC ever equals it.
const DECOY_HASH: &str = "decoy";

/// The delivery channel of an identifier kind (also the verification's `channel`).
pub fn channel(kind: IdentifierKind) -> &'static str {
    match kind {
        IdentifierKind::Email => "email",
        IdentifierKind::Phone => "sms",
    }
}

fn kind_of_channel(channel: &str) -> IdentifierKind {
    match channel {
        "sms" => IdentifierKind::Phone,
        _ => IdentifierKind::Email,
    }
}

/// Where a code went, as the page may show it: in full if the person typed it (sign-up, or the
/// identifier that started a sign-in), masked if it is another identifier of the account that
/// "Use another method" chose (a stranger who knows one identifier must not learn the others).
fn shown_destination(record: &FlowRecord, v: &VerificationRecord) -> String {
    let identifier = verification_identifier(record, v);
    if record.kind == "sign_up" {
        return identifier.display().to_string();
    }
    let typed = identifier.kind().as_str() == record.identifier_kind
        && identifier.canonical() == record.identifier_canonical;
    if typed {
        // As typed (normalised), not as stored: the two may differ in case, and showing the
        // stored spelling would tell an unknown identifier from a known one.
        typed_identifier(record).display().to_string()
    } else {
        identifier.safe_identifier()
    }
}

/// The identifier that started the flow, as typed.
fn typed_identifier(record: &FlowRecord) -> Identifier {
    let kind = IdentifierKind::parse(&record.identifier_kind).unwrap_or(IdentifierKind::Email);
    Identifier::from_trusted(
        kind,
        record.identifier_value.clone(),
        record.identifier_canonical.clone(),
    )
}

/// What a code's HMAC is bound to: its verification and the identifier it was sent to, so a
/// code is only ever valid for the identifier that received it.
fn code_binding(ver_id: &VerificationId, to: &Identifier) -> String {
    format!("{ver_id}|{}:{}", to.kind().as_str(), to.canonical())
}

fn shown_value(record: &FlowRecord, v: &VerificationRecord) -> String {
    let identifier = verification_identifier(record, v);
    match (
        &identifier,
        shown_destination(record, v) == identifier.display(),
    ) {
        (Identifier::Phone(p), true) => p.e164().to_string(),
        (Identifier::Email(e), true) => e.display().to_string(),
        (_, false) => identifier.safe_identifier(),
    }
}

/// The identifier a verification is for, as stored.
fn verification_identifier(record: &FlowRecord, v: &VerificationRecord) -> Identifier {
    let kind = kind_of_channel(&v.channel);
    let canonical = v.canonical.clone().unwrap_or_else(|| match kind {
        IdentifierKind::Email => record.identifier_canonical.clone(),
        IdentifierKind::Phone => v.destination.clone(),
    });
    match kind {
        IdentifierKind::Phone => Identifier::Phone(PhoneNumber::from_trusted(canonical)),
        IdentifierKind::Email => Identifier::from_trusted(kind, v.destination.clone(), canonical),
    }
}

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
}

impl FlowView {
    /// Whole seconds until "Resend code" opens (0 when open, and when no code was sent yet).
    pub fn resend_wait_secs(&self) -> u64 {
        if self.verification.status == VerificationStatus::NotSent {
            return 0;
        }
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
    /// Native clients: their new client token, which holds the session (the old one is dead).
    pub client_token: Option<String>,
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
    #[error("flow expired")]
    Expired,
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

/// Whether a correct code finishes the flow or one of its steps.
enum CompletionKind {
    Done,
    Next,
}

/// A code and its sealed message for one identifier; test identifiers in test mode get the
/// fixed code and no message.
struct PreparedCode {
    code_hash: String,
    message: Option<(MessageId, Vec<u8>)>,
}

impl Auth {
    /// Starts a flow. Sign-in takes one identifier, which must belong to an account (the code
    /// goes to the identifier as stored); sign-up takes every identifier the person gave (email
    /// first), none of which may belong to an account: the first one's code is sent now, the
    /// others' after it is verified. One transaction stores the flow, its verifications and the
    /// message.
    pub async fn start(
        &self,
        kind: FlowKind,
        identifiers: &[Identifier],
        redirect: Option<&RedirectTarget>,
        client: &Client<'_>,
    ) -> Result<FlowId, StartError> {
        self.open(kind, identifiers, redirect, client, true).await
    }

    /// Like [`start`](Self::start), but sends nothing: every code waits for
    /// [`prepare`](Self::prepare) (the API's `create`).
    pub async fn create(
        &self,
        kind: FlowKind,
        identifiers: &[Identifier],
        redirect: Option<&RedirectTarget>,
        client: &Client<'_>,
    ) -> Result<FlowId, StartError> {
        self.open(kind, identifiers, redirect, client, false).await
    }

    async fn open(
        &self,
        kind: FlowKind,
        identifiers: &[Identifier],
        redirect: Option<&RedirectTarget>,
        client: &Client<'_>,
        send_first: bool,
    ) -> Result<FlowId, StartError> {
        let first = identifiers
            .first()
            .ok_or_else(|| anyhow::anyhow!("a flow needs an identifier"))?;
        let now = self.now();
        let code_expires = now + self.policy.code_ttl;
        let flow_id = FlowId::generate();
        // (where the code goes, the account's identifier, decoy)
        let mut targets: Vec<(Identifier, Option<IdentifierId>, bool)> = Vec::new();
        let mut user_id = None;
        // Sign-up: accounts that already own an identifier given (they see the attempt on /user).
        let mut owners: Vec<(UserId, Identifier)> = Vec::new();
        let strict = self.policy.enumeration_strict;
        match kind {
            FlowKind::SignIn => match self.store.find_owner(first).await? {
                Some(stored) if stored.verified => {
                    // The code goes to the identifier stored for the account, never to the
                    // variant typed.
                    user_id = Some(stored.user_id);
                    targets.push((stored.identifier, Some(stored.id), false));
                }
                _ if strict => {
                    tracing::info!(event = "sign_in_decoy", identifier = %first.masked(), reason = "identifier_not_found");
                    targets.push((first.clone(), None, true));
                }
                _ => {
                    tracing::info!(event = "sign_in_refused", identifier = %first.masked(), reason = "identifier_not_found");
                    return Err(StartError::IdentifierNotFound);
                }
            },
            FlowKind::SignUp => {
                for identifier in identifiers {
                    let owner = self.store.find_owner(identifier).await?;
                    let taken = owner.is_some();
                    if let Some(owner) = owner {
                        owners.push((owner.user_id, identifier.clone()));
                    }
                    if taken && !strict {
                        tracing::info!(event = "sign_up_refused", identifier = %identifier.masked(), reason = "identifier_taken");
                        return Err(StartError::IdentifierTaken(identifier.kind()));
                    }
                    if taken {
                        tracing::info!(event = "sign_up_decoy", identifier = %identifier.masked(), reason = "identifier_taken");
                    }
                    targets.push((identifier.clone(), None, taken));
                }
            }
        }
        let ver_ids: Vec<VerificationId> =
            targets.iter().map(|_| VerificationId::generate()).collect();
        let (destination, _, first_decoy) = &targets[0];
        let prepared = self
            .prepare_send(kind, &ver_ids[0], destination, *first_decoy, code_expires)
            .await?;
        let vers: Vec<NewVerification<'_>> = targets
            .iter()
            .zip(&ver_ids)
            .enumerate()
            .map(
                |(i, ((identifier, identifier_id, decoy), ver_id))| NewVerification {
                    decoy: *decoy,
                    id: ver_id,
                    channel: channel(identifier.kind()),
                    destination: identifier.display(),
                    canonical: identifier.canonical(),
                    identifier_id: identifier_id.as_ref(),
                    code_hash: (i == 0 && send_first).then_some(prepared.code_hash.as_str()),
                    position: i as i64,
                    max_attempts: self.policy.max_attempts as i64,
                    sent_at: ms(now),
                    expires_at: ms(code_expires),
                },
            )
            .collect();
        let recipient_masked = destination.masked();
        let message = prepared
            .message
            .as_ref()
            .filter(|_| send_first)
            .map(|(id, sealed)| NewMessage {
                id,
                channel: channel(destination.kind()),
                recipient_masked: &recipient_masked,
                verification_id: Some(&ver_ids[0]),
                payload: sealed,
                now: ms(now),
                not_after: ms(code_expires),
                claim: Some(self.outbox.claim(ms(now))),
            });
        let binding = client.browser.map(|b| self.keys.browser_binding(b));
        let mut guards = self.creation_guards(client);
        if send_first {
            guards.extend(self.send_guards(destination, client));
        }
        let mut audit = vec![self.audit_event(
            if send_first {
                "code_sent"
            } else {
                "flow_created"
            },
            "success",
            user_id.as_ref(),
            Some(destination),
            Some(&flow_id),
            client,
        )];
        for (owner, identifier) in &owners {
            audit.push(self.audit_event(
                "sign_up_with_taken_identifier",
                "refused",
                Some(owner),
                Some(identifier),
                Some(&flow_id),
                client,
            ));
        }
        let refused = self
            .store
            .create_flow(
                &NewFlow {
                    id: &flow_id,
                    kind: kind.as_str(),
                    identifier: first,
                    user_id: user_id.as_ref(),
                    redirect_url: redirect.map(|r| r.as_str()),
                    browser_binding: binding.as_deref(),
                    now: ms(now),
                    expires_at: ms(now + self.policy.flow_idle_ttl),
                },
                &vers,
                message.as_ref(),
                guards,
                &audit,
            )
            .await?;
        if let Some(limited) = refused {
            let retry_after_secs = self.retry_after(&limited).await;
            return Err(StartError::Limited { retry_after_secs });
        }
        if let Some(message) = &message {
            self.outbox.hand_over(message);
            self.watch_sms(destination);
        }
        if send_first {
            tracing::info!(event = "code_sent", flow = kind.as_str(), flow_id = %flow_id, identifier = %destination.masked(), channel = channel(destination.kind()), test = message.is_none(), ip = client.ip.unwrap_or("-"));
        } else {
            tracing::info!(event = "flow_created", flow = kind.as_str(), flow_id = %flow_id, identifier = %destination.masked(), ip = client.ip.unwrap_or("-"));
        }
        Ok(flow_id)
    }

    /// Like [`prepare_code`](Self::prepare_code), and for a decoy: a hash no code matches and,
    /// for an email address, a notice instead of a code (to the owner's stored address for a
    /// sign-up; phone numbers get nothing, SMS costs money).
    async fn prepare_send(
        &self,
        kind: FlowKind,
        ver_id: &VerificationId,
        to: &Identifier,
        decoy: bool,
        expires: OffsetDateTime,
    ) -> anyhow::Result<PreparedCode> {
        // A sign-up looks the identifier's owner up whether or not it is a decoy, so the two
        // do the same work.
        let owner = match kind {
            FlowKind::SignUp => self.store.find_owner(to).await?,
            FlowKind::SignIn => None,
        };
        if !decoy {
            return Ok(self.prepare_code(kind, ver_id, to, expires));
        }
        let mut prepared = PreparedCode {
            code_hash: DECOY_HASH.to_string(),
            message: None,
        };
        let Identifier::Email(typed) = to else {
            return Ok(prepared);
        };
        if self.policy.test_mode && to.is_test() {
            return Ok(prepared);
        }
        let (recipient, purpose, link) = match kind {
            FlowKind::SignIn => (typed.clone(), Purpose::UnknownAccount, "/sign-up"),
            FlowKind::SignUp => {
                let stored = match owner {
                    Some(s) => match s.identifier {
                        Identifier::Email(e) => e,
                        Identifier::Phone(_) => typed.clone(),
                    },
                    None => typed.clone(),
                };
                (stored, Purpose::AccountExists, "/sign-in")
            }
        };
        let message = CodeMessage {
            to: recipient
                .mailbox_address()
                .map(|a| a.to_string())
                .unwrap_or_else(|| recipient.display().to_string()),
            code: String::new(),
            purpose,
            expires_at: ms(expires),
            ttl_minutes: self.policy.code_ttl.as_secs().div_ceil(60),
            link: Some(format!(
                "{}{link}",
                self.policy.public_url.trim_end_matches('/')
            )),
        };
        prepared.message = Some((MessageId::generate(), message.seal(&self.keys)));
        Ok(prepared)
    }

    /// Draws a code for `to` (bound to verification `ver_id`) and seals its message.
    fn prepare_code(
        &self,
        kind: FlowKind,
        ver_id: &VerificationId,
        to: &Identifier,
        expires: OffsetDateTime,
    ) -> PreparedCode {
        let len = self.policy.code_length;
        if self.policy.test_mode && to.is_test() {
            let fixed: String = TEST_CODE.chars().cycle().take(len).collect();
            let code =
                OtpCode::parse(&fixed, len).expect("the test code has the configured length");
            return PreparedCode {
                code_hash: self
                    .keys
                    .code_hash(&code_binding(ver_id, to), code.expose()),
                message: None,
            };
        }
        let code = OtpCode::generate(len);
        let message = CodeMessage {
            to: match to {
                // Mail goes to the ASCII (punycode) form of the domain, which every SMTP server accepts.
                Identifier::Email(email) => email
                    .mailbox_address()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| email.display().to_string()),
                Identifier::Phone(phone) => phone.e164().to_string(),
            },
            code: code.expose().to_string(),
            purpose: kind.purpose(),
            expires_at: ms(expires),
            ttl_minutes: self.policy.code_ttl.as_secs().div_ceil(60),
            link: None,
        };
        PreparedCode {
            code_hash: self
                .keys
                .code_hash(&code_binding(ver_id, to), code.expose()),
            message: Some((MessageId::generate(), message.seal(&self.keys))),
        }
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

    fn state(
        &self,
        record: &FlowRecord,
        v: &VerificationRecord,
        index: usize,
    ) -> VerificationState {
        let now = ms(self.now());
        let status = match v.status.as_str() {
            "waiting" => VerificationStatus::NotSent,
            "verified" => VerificationStatus::Verified,
            "failed" => VerificationStatus::Failed,
            _ if v.attempts >= v.max_attempts => VerificationStatus::Failed,
            _ if v.expires_at <= now => VerificationStatus::Expired,
            _ => VerificationStatus::Pending,
        };
        VerificationState {
            id: v.id.clone(),
            kind: kind_of_channel(&v.channel),
            status,
            identifier_id: self.factor_id(record, v),
            destination: shown_destination(record, v),
            value: shown_value(record, v),
            step: index + 1,
            steps: record.verifications.len(),
            attempts_used: v.attempts.clamp(0, u32::MAX as i64) as u32,
            max_attempts: v.max_attempts.clamp(0, u32::MAX as i64) as u32,
            expires_at: from_ms(v.expires_at),
            resend_available_at: from_ms(v.sent_at) + self.policy.resend_cooldown,
            dead: status == VerificationStatus::Failed,
            expired: status == VerificationStatus::Expired,
        }
    }

    fn view(&self, record: &FlowRecord, kind: FlowKind) -> FlowView {
        let now = self.now();
        let current = record.current();
        let verifications: Vec<VerificationState> = record
            .verifications
            .iter()
            .enumerate()
            .map(|(i, v)| self.state(record, v, i))
            .collect();
        let verification = verifications
            .iter()
            .find(|x| x.id == current.id)
            .cloned()
            .expect("the current verification is one of the flow's");
        let missing = match kind {
            FlowKind::SignUp => self.missing(record),
            FlowKind::SignIn => Vec::new(),
        };
        let identifiers = match kind {
            FlowKind::SignUp => record
                .verifications
                .iter()
                .map(|x| (kind_of_channel(&x.channel), x.destination.clone()))
                .collect(),
            // Only what the person typed: never an identifier a switch revealed.
            FlowKind::SignIn => vec![(
                IdentifierKind::parse(&record.identifier_kind).unwrap_or(IdentifierKind::Email),
                record.identifier_value.clone(),
            )],
        };
        FlowView {
            id: record.id.clone(),
            kind,
            identifiers,
            redirect: record
                .redirect_url
                .clone()
                .map(RedirectTarget::from_trusted),
            complete: record.status == "complete",
            abandoned: record.status == "pending" && record.expires_at <= ms(now),
            verification,
            verifications,
            missing,
            other_factors: Vec::new(),
            factors: Vec::new(),
            user_id: record.user_id.clone(),
            session_id: record.session_id.clone(),
            created_at: from_ms(record.created_at),
            now,
        }
    }

    /// The id a sign-in verification's identifier goes by: the account's, or for a decoy a
    /// stable id of the same shape derived from the flow.
    fn factor_id(&self, record: &FlowRecord, v: &VerificationRecord) -> Option<IdentifierId> {
        if record.kind == "sign_in" && self.policy.enumeration_strict {
            // Strict: an id scoped to the flow and the identifier, for known and unknown
            // identifiers alike (an account's real id, the same in every flow, would show that
            // the account exists).
            let to = verification_identifier(record, v);
            let bytes = self.keys.derived_bytes(&[
                "factor",
                record.id.as_str(),
                to.kind().as_str(),
                to.canonical(),
            ]);
            return Some(IdentifierId::from_bytes(bytes));
        }
        v.identifier_id.clone()
    }

    /// Required identifier kinds a sign-up has none of.
    fn missing(&self, record: &FlowRecord) -> Vec<IdentifierKind> {
        let required = self.policy.required;
        let has = |kind| {
            record
                .verifications
                .iter()
                .any(|v| kind_of_channel(&v.channel) == kind)
        };
        [
            (required.email, IdentifierKind::Email),
            (required.phone, IdentifierKind::Phone),
        ]
        .into_iter()
        .filter(|(needed, kind)| *needed && !has(*kind))
        .map(|(_, kind)| kind)
        .collect()
    }

    /// The account's identifiers a sign-in code may be sent to: verified, of a kind used for
    /// sign-in, phone numbers only in allowed countries.
    async fn factors(&self, record: &FlowRecord) -> anyhow::Result<Vec<Factor>> {
        let Some(user) = &record.user_id else {
            return Ok(Vec::new());
        };
        let factors = self
            .store
            .user_identifiers(user)
            .await?
            .into_iter()
            .filter(|s| s.verified && self.factor_allowed(&s.identifier))
            .map(|s| Factor {
                identifier_id: s.id,
                kind: s.identifier.kind(),
                safe_identifier: s.identifier.safe_identifier(),
            })
            .collect();
        Ok(factors)
    }

    fn factor_allowed(&self, identifier: &Identifier) -> bool {
        match identifier {
            Identifier::Email(_) => self.policy.factor_kinds.email,
            Identifier::Phone(phone) => {
                self.policy.factor_kinds.phone
                    && PhoneNumber::parse(phone.e164(), &self.policy.phone_policy).is_ok()
            }
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
        self.full_view(&record, kind, false).await
    }

    /// A flow for the API: like [`flow`](Self::flow), but an expired flow is shown (as
    /// abandoned) rather than refused, and a sign-in always lists the account's factors.
    pub async fn flow_for_api(
        &self,
        id: &FlowId,
        kind: FlowKind,
        client: &Client<'_>,
    ) -> Result<FlowView, FlowError> {
        let record = match self.load_record(id, kind, client).await {
            Err(FlowError::Expired) => {
                let record = self.store.load_flow(id).await?.ok_or(FlowError::NotFound)?;
                return Ok(self.view(&record, kind));
            }
            other => other?,
        };
        self.full_view(&record, kind, true).await
    }

    /// The view with the account's factors (sign-in): one more read, skipped where the
    /// instance has only one kind of identifier and so nothing to choose from.
    async fn full_view(
        &self,
        record: &FlowRecord,
        kind: FlowKind,
        always: bool,
    ) -> Result<FlowView, FlowError> {
        let mut view = self.view(record, kind);
        if kind == FlowKind::SignIn && !view.complete && self.policy.enumeration_strict {
            // Only the identifier typed: listing the account's others would tell a known
            // identifier from an unknown one.
            let typed = typed_identifier(record);
            view.factors = view
                .verification
                .identifier_id
                .clone()
                .filter(|_| view.verification.destination == typed.display())
                .map(|identifier_id| Factor {
                    identifier_id,
                    kind: typed.kind(),
                    safe_identifier: typed.safe_identifier(),
                })
                .into_iter()
                .collect();
            return Ok(view);
        }
        if kind == FlowKind::SignIn && !view.complete && (always || self.policy.factor_kinds.phone)
        {
            view.factors = self.factors(record).await?;
            view.other_factors = view
                .factors
                .iter()
                .filter(|f| Some(&f.identifier_id) != view.verification.identifier_id.as_ref())
                .cloned()
                .collect();
        }
        Ok(view)
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
        self.replace_code(kind, &record, record.current(), None, client, "code_resent")
            .await
    }

    /// "Use another method": sends the sign-in code to another identifier of the account
    /// instead (the previous code dies). Only the account's own verified identifiers qualify.
    pub async fn switch_factor(
        &self,
        id: &FlowId,
        identifier_id: &IdentifierId,
        client: &Client<'_>,
    ) -> Result<FlowView, ResendError> {
        let record = self.load_record(id, FlowKind::SignIn, client).await?;
        self.send_to_factor(&record, identifier_id, client).await
    }

    /// Sends (or resends) a code for one verification: the API's `prepare_verification`
    /// (sign-up, by kind) and `prepare_first_factor` (sign-in, by identifier). A first send
    /// goes out at once; a resend, or a sign-in switch to another identifier of the account,
    /// waits for the resend cooldown.
    pub async fn prepare(
        &self,
        id: &FlowId,
        kind: FlowKind,
        target: &PrepareTarget,
        client: &Client<'_>,
    ) -> Result<FlowView, ResendError> {
        let record = self.load_record(id, kind, client).await?;
        if record.status == "complete" {
            return Err(ResendError::Completed);
        }
        match (kind, target) {
            (FlowKind::SignUp, PrepareTarget::Kind(wanted)) => {
                let v = record
                    .verifications
                    .iter()
                    .find(|v| kind_of_channel(&v.channel) == *wanted)
                    .ok_or(ResendError::UnknownTarget)?;
                if v.status == "verified" {
                    return Err(ResendError::AlreadyVerified);
                }
                self.replace_code(kind, &record, v, None, client, "code_sent")
                    .await
            }
            (FlowKind::SignIn, PrepareTarget::Identifier(identifier_id)) => {
                let v = record.current();
                if self.factor_id(&record, v).as_ref() == Some(identifier_id) {
                    return self
                        .replace_code(kind, &record, v, None, client, "code_sent")
                        .await;
                }
                self.send_to_factor(&record, identifier_id, client).await
            }
            _ => Err(ResendError::UnknownTarget),
        }
    }

    async fn send_to_factor(
        &self,
        record: &FlowRecord,
        identifier_id: &IdentifierId,
        client: &Client<'_>,
    ) -> Result<FlowView, ResendError> {
        let kind = FlowKind::SignIn;
        if record.status == "complete" {
            return Err(ResendError::Completed);
        }
        let user = record.user_id.clone().ok_or(FlowError::NotFound)?;
        let chosen = self
            .store
            .user_identifiers(&user)
            .await?
            .into_iter()
            .find(|s| &s.id == identifier_id && s.verified && self.factor_allowed(&s.identifier))
            .ok_or(ResendError::UnknownTarget)?;
        let switch = FactorSwitch {
            channel: channel(chosen.identifier.kind()),
            destination: chosen.identifier.display(),
            canonical: chosen.identifier.canonical(),
            identifier_id: &chosen.id,
        };
        let to = &chosen.identifier;
        self.replace_code(
            kind,
            record,
            record.current(),
            Some((to, &switch)),
            client,
            "code_sent",
        )
        .await
    }

    /// Gives verification `v` a new code: to its own identifier, or with `switch` to another
    /// identifier of the account.
    async fn replace_code(
        &self,
        kind: FlowKind,
        record: &FlowRecord,
        v: &VerificationRecord,
        switch: Option<(&Identifier, &FactorSwitch<'_>)>,
        client: &Client<'_>,
        event: &'static str,
    ) -> Result<FlowView, ResendError> {
        let id = &record.id;
        let own;
        let destination = match switch {
            Some((to, _)) => to,
            None => {
                own = verification_identifier(record, v);
                &own
            }
        };
        let switch = switch.map(|(_, sw)| sw);
        let now = self.now();
        let code_expires = now + self.policy.code_ttl;
        let prepared = self
            .prepare_send(kind, &v.id, destination, v.decoy, code_expires)
            .await?;
        let recipient_masked = destination.masked();
        let message = prepared
            .message
            .as_ref()
            .map(|(msg_id, sealed)| NewMessage {
                id: msg_id,
                channel: channel(destination.kind()),
                recipient_masked: &recipient_masked,
                verification_id: Some(&v.id),
                payload: sealed,
                now: ms(now),
                not_after: ms(code_expires),
                claim: Some(self.outbox.claim(ms(now))),
            });
        // A switch to another identifier waits for the cooldown too: otherwise alternating
        // between two identifiers would send a message per request.
        let cooldown_ms = self.policy.resend_cooldown.as_millis() as i64;
        let replaced = self
            .store
            .replace_code(
                &record.id,
                &v.id,
                &prepared.code_hash,
                ms(now),
                ms(code_expires),
                cooldown_ms,
                ms(now + self.policy.flow_idle_ttl),
                switch,
                message.as_ref(),
                &self.send_guards(destination, client),
                &self.audit_event(
                    event,
                    "success",
                    record.user_id.as_ref(),
                    Some(destination),
                    Some(&record.id),
                    client,
                ),
            )
            .await?;
        let replaced = match replaced {
            Ok(replaced) => replaced,
            Err(limited) => {
                let retry_after_secs = self.retry_after(&limited).await;
                return Err(ResendError::Limited { retry_after_secs });
            }
        };
        if !replaced {
            // Another tab resent (or completed the flow) in the meantime: show the current state.
            let record = self.load_record(id, kind, client).await?;
            let view = self.view(&record, kind);
            if view.complete {
                return Err(ResendError::Completed);
            }
            let same = view.verifications.iter().find(|x| x.id == v.id);
            if same.is_some_and(|x| x.status == VerificationStatus::Verified) {
                return Err(ResendError::AlreadyVerified);
            }
            let wait = same
                .map(|x| x.resend_available_at - self.now())
                .filter(|d| d.is_positive())
                .map_or(1, |d| (d.whole_milliseconds() as u64).div_ceil(1000));
            return Err(ResendError::Cooldown {
                wait_secs: wait.max(1),
                view: Box::new(view),
            });
        }
        if let Some(message) = &message {
            self.outbox.hand_over(message);
            self.watch_sms(destination);
        }
        tracing::info!(event, flow = kind.as_str(), flow_id = %record.id, identifier = %recipient_masked, channel = channel(destination.kind()), ip = client.ip.unwrap_or("-"));
        self.flow(id, kind, client).await.map_err(Into::into)
    }

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
        let record = self.load_record(id, kind, client).await?;
        if record.status == "complete" {
            return Err(AttemptError::AlreadyUsed);
        }
        let now = self.now();
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
                    .find(|v| kind_of_channel(&v.channel) == *wanted)
                    .ok_or(AttemptError::NotPrepared)?;
                match v.status.as_str() {
                    "waiting" => return Err(AttemptError::NotPrepared),
                    "verified" => return Err(AttemptError::AlreadyUsed),
                    _ => v,
                }
            }
        };
        let auto_next = matches!(target, AttemptTarget::Page(_));
        let identifier = verification_identifier(&record, v);
        let (token, token_hash) = self.new_session_token();
        let session_id = SessionId::generate();
        let (user_id, lock_key) = match kind {
            FlowKind::SignUp => (
                UserId::generate(),
                format!("{}:{}", identifier.kind().as_str(), identifier.canonical()),
            ),
            // Sign-in failures count against the account, whichever identifier got the code.
            // Strict enumeration protection counts them per identifier instead, in a namespace of
            // their own: a decoy (no account) then locks exactly like a real sign-in, and locking
            // one identifier says nothing about which others share its account.
            FlowKind::SignIn => {
                let user = match (record.user_id.clone(), v.decoy) {
                    (Some(user), _) => user,
                    (None, true) => UserId::generate(),
                    (None, false) => return Err(FlowError::NotFound.into()),
                };
                let key = if self.policy.enumeration_strict {
                    format!(
                        "signin:{}:{}",
                        identifier.kind().as_str(),
                        identifier.canonical()
                    )
                } else {
                    format!("user:{user}")
                };
                (user, key)
            }
        };
        // A native client gets a new token at sign-in, so a planted one never holds a session.
        let client_token = client.native.then(|| random_token(32));
        let client_binding = client_token
            .as_deref()
            .map(|t| self.keys.browser_binding(t));
        let mut session = self.new_session(&session_id, &user_id, &token_hash, now, client);
        session.client_binding = client_binding.as_deref();
        // A sign-up completes with its last unverified identifier, if nothing required is missing.
        let others_unverified = record
            .verifications
            .iter()
            .any(|x| x.id != v.id && x.status != "verified");
        let missing = kind == FlowKind::SignUp && !self.missing(&record).is_empty();
        let completes = !others_unverified && !missing;
        let next = match (kind, record.next_waiting()) {
            (FlowKind::SignUp, Some(w)) if auto_next && !completes => {
                let to = verification_identifier(&record, w);
                let expires = now + self.policy.code_ttl;
                let prepared = self
                    .prepare_send(kind, &w.id, &to, w.decoy, expires)
                    .await?;
                Some((w, to.masked(), to.kind(), prepared, expires))
            }
            _ => None,
        };
        let next_message = next
            .as_ref()
            .and_then(|(w, masked, to_kind, prepared, expires)| {
                prepared
                    .message
                    .as_ref()
                    .map(|(msg_id, sealed)| NewMessage {
                        id: msg_id,
                        channel: channel(*to_kind),
                        recipient_masked: masked,
                        verification_id: Some(&w.id),
                        payload: sealed,
                        now: ms(now),
                        not_after: ms(*expires),
                        claim: Some(self.outbox.claim(ms(now))),
                    })
            });
        let mut new_identifiers = Vec::new();
        if kind == FlowKind::SignUp && completes {
            let mut primary_seen = Vec::new();
            for x in &record.verifications {
                let kind = kind_of_channel(&x.channel);
                let is_primary = !primary_seen.contains(&kind);
                primary_seen.push(kind);
                new_identifiers.push((verification_identifier(&record, x), is_primary));
            }
        }
        let identifier_rows: Vec<NewIdentifier<'_>> = new_identifiers
            .iter()
            .map(|(identifier, is_primary)| NewIdentifier {
                id: IdentifierId::generate(),
                kind: identifier.kind().as_str(),
                value: identifier.display(),
                canonical: identifier.canonical(),
                is_primary: *is_primary,
            })
            .collect();
        let completion_kind = if completes {
            CompletionKind::Done
        } else {
            CompletionKind::Next
        };
        let completion = match (&next, kind) {
            (Some((w, _, _, prepared, expires)), _) => Completion::Next {
                next: Some((&w.id, &prepared.code_hash, ms(*expires))),
                flow_expires_at: ms(now + self.policy.flow_idle_ttl),
                message: next_message.as_ref(),
            },
            (None, FlowKind::SignUp) if !completes => Completion::Next {
                next: None,
                flow_expires_at: ms(now + self.policy.flow_idle_ttl),
                message: None,
            },
            (None, FlowKind::SignUp) => Completion::SignUp {
                user_id: &user_id,
                identifiers: &identifier_rows,
                session: &session,
            },
            (None, FlowKind::SignIn) => Completion::SignIn {
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
            audit_wrong: self.audit_event(
                "code_incorrect",
                "failure",
                record.user_id.as_ref(),
                Some(&identifier),
                Some(&record.id),
                client,
            ),
            audit_locked: self.audit_event(
                "identifier_locked",
                "refused",
                record.user_id.as_ref(),
                Some(&identifier),
                Some(&record.id),
                client,
            ),
            audit_success: match (&completion_kind, kind) {
                (CompletionKind::Next, _) => vec![self.audit_event(
                    "identifier_verified",
                    "success",
                    None,
                    Some(&identifier),
                    Some(&record.id),
                    client,
                )],
                (CompletionKind::Done, FlowKind::SignIn) => vec![self.audit_event(
                    "sign_in",
                    "success",
                    Some(&user_id),
                    Some(&identifier),
                    Some(&record.id),
                    client,
                )],
                (CompletionKind::Done, FlowKind::SignUp) => std::iter::once(self.audit_event(
                    "sign_up",
                    "success",
                    Some(&user_id),
                    Some(&identifier),
                    Some(&record.id),
                    client,
                ))
                .chain(new_identifiers.iter().map(|(i, _)| {
                    self.audit_event(
                        "identifier_added",
                        "success",
                        Some(&user_id),
                        Some(i),
                        Some(&record.id),
                        client,
                    )
                }))
                .collect(),
            },
            guards: self.attempt_guards(client),
            // The next step's code is a send like any other, counted only if this code is right.
            success_guards: match &next {
                Some((w, ..)) => self.send_guards(&verification_identifier(&record, w), client),
                None => Vec::new(),
            },
        };
        let (keys, binding, typed) = (
            self.keys.clone(),
            code_binding(&v.id, &identifier),
            code.clone(),
        );
        let matches = move |stored: &str| keys.code_matches(&binding, typed.expose(), stored);
        let outcome = self
            .store
            .attempt_code(attempt, matches, completion)
            .await?;
        let locked = |until: i64| AttemptError::Locked {
            retry_after_secs: ((until - ms(now)).max(1000) as u64).div_ceil(1000),
        };
        let log = |event: &str, reason: &str| {
            tracing::info!(event, reason, flow = kind.as_str(), flow_id = %record.id, identifier = %identifier.masked(), ip = client.ip.unwrap_or("-"));
        };
        match outcome {
            AttemptOutcome::Completed if !completes => {
                if let Some(message) = &next_message {
                    self.outbox.hand_over(message);
                    if let Some((w, ..)) = &next {
                        self.watch_sms(&verification_identifier(&record, w));
                    }
                }
                tracing::info!(event = "identifier_verified", flow = kind.as_str(), flow_id = %record.id, identifier = %identifier.masked(), next = %next.as_ref().map(|n| n.1.as_str()).unwrap_or("-"), ip = client.ip.unwrap_or("-"));
                Ok(Attempted::NextVerification)
            }
            AttemptOutcome::Completed => {
                tracing::info!(event = "code_verified", flow = kind.as_str(), flow_id = %record.id, identifier = %identifier.masked(), user_id = %user_id, session_id = %session_id, ip = client.ip.unwrap_or("-"));
                Ok(Attempted::SignedIn(SignedIn {
                    token,
                    client_token,
                    session_id,
                    user_id,
                    redirect: record
                        .redirect_url
                        .clone()
                        .map(RedirectTarget::from_trusted),
                }))
            }
            AttemptOutcome::Limited(limited) => {
                log("code_refused", "rate_limited");
                let retry_after_secs = self.retry_after(&limited).await;
                Err(AttemptError::Limited { retry_after_secs })
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
                    tracing::warn!(event = "identifier_locked", identifier = %identifier.masked(), "too many consecutive wrong codes; locked");
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
                let cv = current
                    .verifications
                    .iter()
                    .find(|x| x.id == v.id)
                    .ok_or(FlowError::NotFound)?;
                let moved_on = current.status == "pending" && current.current().id != v.id;
                let err = if moved_on && auto_next {
                    // A parallel submit of the same step won: the flow is at the next step.
                    AttemptError::StepDone
                } else if cv.status == "verified" || current.status == "complete" {
                    AttemptError::AlreadyUsed
                } else if cv.status == "pending" && cv.expires_at <= ms(now) {
                    AttemptError::CodeExpired
                } else {
                    AttemptError::TriesExhausted
                };
                log("code_refused", &err.to_string());
                Err(err)
            }
            AttemptOutcome::LostRace if auto_next && kind == FlowKind::SignUp && !completes => {
                log("code_refused", "step already verified");
                Err(AttemptError::StepDone)
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

    /// A security event of this client.
    pub(super) fn audit_event(
        &self,
        event: &'static str,
        outcome: &'static str,
        user: Option<&UserId>,
        identifier: Option<&Identifier>,
        flow: Option<&FlowId>,
        client: &Client<'_>,
    ) -> AuditEvent {
        AuditEvent {
            event,
            outcome,
            user_id: user.map(|u| u.to_string()),
            identifier: identifier.map(|i| i.masked()),
            flow_id: flow.map(|f| f.to_string()),
            ip: client.ip.map(str::to_string),
            user_agent: client.user_agent.map(str::to_string),
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
            client_binding: None,
        }
    }
}
