//! Reading a flow: what the code page and the API show of it.

use time::OffsetDateTime;

use super::{
    flow_expired, verification_identifier, Factor, FlowError, FlowKind, FlowView,
    VerificationState, VerificationStatus,
};
use crate::auth::{Auth, Client, Policy};
use crate::domain::{
    CodeStatus, FlowId, FlowStatus, Identifier, IdentifierId, IdentifierKind, PhoneNumber,
    RedirectTarget, SessionId,
};
use crate::store::{FlowRecord, VerificationRecord};

/// Where a code went, as the page may show it: in full if the person typed it (sign-up, or the
/// identifier that started a sign-in), masked if it is another identifier of the account that
/// "Use another method" chose (a stranger who knows one identifier must not learn the others).
fn shown_destination(record: &FlowRecord, v: &VerificationRecord) -> String {
    let identifier = verification_identifier(record, v);
    if record.kind == FlowKind::SignUp {
        return identifier.display().to_string();
    }
    let typed = identifier.kind() == record.identifier_kind
        && identifier.canonical() == record.identifier_canonical;
    if typed {
        // As typed (normalised), not as stored: the two may differ in case, and showing the
        // stored spelling would tell an unknown identifier from a known one.
        record.typed_identifier().display().to_string()
    } else {
        identifier.safe_identifier()
    }
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

/// Where a stored verification stands at `now`, as people see it.
pub(super) fn status_at(v: &VerificationRecord, now: OffsetDateTime) -> VerificationStatus {
    match v.status {
        CodeStatus::Waiting => VerificationStatus::NotSent,
        CodeStatus::Verified => VerificationStatus::Verified,
        CodeStatus::Failed => VerificationStatus::Failed,
        CodeStatus::Pending if v.attempts >= v.max_attempts => VerificationStatus::Failed,
        CodeStatus::Pending if v.expires_at <= now => VerificationStatus::Expired,
        CodeStatus::Pending => VerificationStatus::Pending,
    }
}

/// Whole seconds until `until` (rounded up; 0 once it has passed).
pub(crate) fn secs_until(until: OffsetDateTime, now: OffsetDateTime) -> u64 {
    let d = until - now;
    if d.is_positive() {
        (d.whole_milliseconds() as u64).div_ceil(1000)
    } else {
        0
    }
}

/// Required identifier kinds a sign-up has none of.
pub(super) fn missing(record: &FlowRecord, policy: &Policy) -> Vec<IdentifierKind> {
    let required = policy.required;
    let has = |kind| {
        record
            .verifications
            .iter()
            .any(|v| v.channel.kind() == kind)
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

impl Auth {
    fn state(
        &self,
        record: &FlowRecord,
        v: &VerificationRecord,
        index: usize,
        now: OffsetDateTime,
    ) -> VerificationState {
        let status = status_at(v, now);
        VerificationState {
            id: v.id.clone(),
            kind: v.channel.kind(),
            status,
            identifier_id: self.factor_id(record, v),
            destination: shown_destination(record, v),
            value: shown_value(record, v),
            step: index + 1,
            steps: record.verifications.len(),
            attempts_used: v.attempts.clamp(0, u32::MAX as i64) as u32,
            max_attempts: v.max_attempts.clamp(0, u32::MAX as i64) as u32,
            expires_at: v.expires_at,
            resend_available_at: v.sent_at + self.policy.resend_cooldown,
            dead: status == VerificationStatus::Failed,
            expired: status == VerificationStatus::Expired,
        }
    }

    pub(super) fn view(
        &self,
        record: &FlowRecord,
        kind: FlowKind,
        now: OffsetDateTime,
    ) -> FlowView {
        let current = record.current();
        let verifications: Vec<VerificationState> = record
            .verifications
            .iter()
            .enumerate()
            .map(|(i, v)| self.state(record, v, i, now))
            .collect();
        let verification = verifications
            .iter()
            .find(|x| x.id == current.id)
            .cloned()
            .expect("the current verification is one of the flow's");
        let missing = match kind {
            FlowKind::SignUp => missing(record, &self.policy),
            FlowKind::SignIn | FlowKind::AddIdentifier | FlowKind::Reverify => Vec::new(),
        };
        let identifiers = match kind {
            FlowKind::SignUp => record
                .verifications
                .iter()
                .map(|x| (x.channel.kind(), x.destination.clone()))
                .collect(),
            // Only what the person typed: never an identifier a switch revealed.
            FlowKind::SignIn | FlowKind::AddIdentifier | FlowKind::Reverify => {
                vec![(record.identifier_kind, record.identifier_value.clone())]
            }
        };
        FlowView {
            id: record.id.clone(),
            kind,
            identifiers,
            redirect: record
                .redirect_url
                .clone()
                .map(RedirectTarget::from_trusted),
            complete: record.status == FlowStatus::Complete,
            abandoned: flow_expired(record, now),
            verification,
            verifications,
            missing,
            other_factors: Vec::new(),
            factors: Vec::new(),
            user_id: record.user_id.clone(),
            session_id: record.session_id.clone(),
            created_at: record.created_at,
            now,
        }
    }

    /// The id a sign-in verification's identifier goes by: the account's, or for a decoy a
    /// stable id of the same shape derived from the flow.
    pub(super) fn factor_id(
        &self,
        record: &FlowRecord,
        v: &VerificationRecord,
    ) -> Option<IdentifierId> {
        if record.kind == FlowKind::SignIn && self.policy.enumeration_strict {
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

    pub(crate) fn factor_allowed(&self, identifier: &Identifier) -> bool {
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
        let now = self.now();
        self.flow_at(id, kind, client, now).await
    }

    pub(super) async fn flow_at(
        &self,
        id: &FlowId,
        kind: FlowKind,
        client: &Client<'_>,
        now: OffsetDateTime,
    ) -> Result<FlowView, FlowError> {
        let record = self.load_record(id, kind, client, now).await?;
        self.full_view(&record, kind, false, now).await
    }

    /// A finished flow read back by the client that finished it: its browser cookie or client
    /// token was replaced at the sign-in, so the flow's binding no longer matches, but the
    /// session the flow created does. Anything else is `NotFound`.
    pub async fn finished_flow_for_session(
        &self,
        id: &FlowId,
        kind: FlowKind,
        session: &SessionId,
    ) -> Result<FlowView, FlowError> {
        let now = self.now();
        let record = self.store.load_flow(id).await?.ok_or(FlowError::NotFound)?;
        if record.kind != kind
            || record.status != FlowStatus::Complete
            || record.session_id.as_ref() != Some(session)
        {
            return Err(FlowError::NotFound);
        }
        Ok(self.view(&record, kind, now))
    }

    /// A flow for the API: like [`flow`](Self::flow), but an expired flow is shown (as
    /// abandoned) rather than refused, and a sign-in always lists the account's factors.
    pub async fn flow_for_api(
        &self,
        id: &FlowId,
        kind: FlowKind,
        client: &Client<'_>,
    ) -> Result<FlowView, FlowError> {
        let now = self.now();
        let record = match self.load_record(id, kind, client, now).await {
            Err(FlowError::Expired { .. }) => {
                let record = self.store.load_flow(id).await?.ok_or(FlowError::NotFound)?;
                return Ok(self.view(&record, kind, now));
            }
            other => other?,
        };
        self.full_view(&record, kind, true, now).await
    }

    /// The view with the account's factors (sign-in): one more read, skipped where the
    /// instance has only one kind of identifier and so nothing to choose from.
    async fn full_view(
        &self,
        record: &FlowRecord,
        kind: FlowKind,
        always: bool,
        now: OffsetDateTime,
    ) -> Result<FlowView, FlowError> {
        let mut view = self.view(record, kind, now);
        if kind == FlowKind::SignIn && !view.complete && self.policy.enumeration_strict {
            // Only the identifier typed: listing the account's others would tell a known
            // identifier from an unknown one.
            let typed = record.typed_identifier();
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
        let signs_in = kind == FlowKind::SignIn && (always || self.policy.factor_kinds.phone);
        // A reverification may go to any verified identifier of the account (no enumeration
        // question: the person is signed in).
        if (signs_in || kind == FlowKind::Reverify) && !view.complete {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Channel, VerificationId};
    use time::macros::datetime;
    use time::Duration;

    const NOW: OffsetDateTime = datetime!(2026-12-02 12:00 UTC);

    fn verification(
        status: CodeStatus,
        attempts: i64,
        expires_at: OffsetDateTime,
    ) -> VerificationRecord {
        VerificationRecord {
            id: VerificationId::generate(),
            channel: Channel::Email,
            destination: "jane@example.com".into(),
            canonical: Some("jane@example.com".into()),
            identifier_id: None,
            position: 0,
            attempts,
            max_attempts: 3,
            sent_at: NOW - Duration::MINUTE,
            expires_at,
            status,
            decoy: false,
        }
    }

    #[test]
    fn a_pending_code_is_failed_once_its_tries_are_used_then_expired_past_its_end() {
        let later = NOW + Duration::MINUTE;
        let table = [
            (CodeStatus::Waiting, 0, later, VerificationStatus::NotSent),
            (CodeStatus::Verified, 1, later, VerificationStatus::Verified),
            (CodeStatus::Failed, 3, later, VerificationStatus::Failed),
            (CodeStatus::Pending, 0, later, VerificationStatus::Pending),
            (CodeStatus::Pending, 2, later, VerificationStatus::Pending),
            (CodeStatus::Pending, 3, later, VerificationStatus::Failed),
            (CodeStatus::Pending, 0, NOW, VerificationStatus::Expired),
            (CodeStatus::Pending, 3, NOW, VerificationStatus::Failed),
        ];
        for (stored, attempts, expires, shown) in table {
            assert_eq!(
                status_at(&verification(stored, attempts, expires), NOW),
                shown,
                "{stored:?} with {attempts} tries used, expiring {expires}"
            );
        }
    }

    #[test]
    fn the_resend_wait_rounds_up_to_whole_seconds_and_ends_at_zero() {
        assert_eq!(secs_until(NOW + Duration::milliseconds(29_001), NOW), 30);
        assert_eq!(secs_until(NOW + Duration::seconds(30), NOW), 30);
        assert_eq!(secs_until(NOW, NOW), 0);
        assert_eq!(secs_until(NOW - Duration::SECOND, NOW), 0);
    }
}
