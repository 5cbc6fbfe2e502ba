//! The changes a signed-in person makes to their own account: primary identifier, removing an
//! identifier, signing out devices, deleting the account. Those that could take the account
//! from its owner need a code verified by this session within `sessions.reverification_secs`
//! (Clerk's reverification; the pages and the API start one with a `Reverify` flow). The rules
//! are pure functions with unit tests; the store applies them inside its unit, under the
//! account's lock.

use time::OffsetDateTime;

use super::{session_rules, Auth, Client, CurrentUser, FlowKind, StartError};
use crate::domain::{
    Accepts, AuditKind, AuditOutcome, FlowId, Identifier, IdentifierId, IdentifierKind, SessionId,
    UserId,
};
use crate::store::{NewMessage, Removal, StoredIdentifier};

/// An action that needs a recent code, kept with the reverification it started so that it is
/// done once the code is verified. Stored as text in the flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingAction {
    RevokeSession(SessionId),
    RevokeOtherSessions,
    RemoveIdentifier(IdentifierId),
    MakePrimary(IdentifierId),
    DeleteAccount,
}

impl PendingAction {
    pub fn to_stored(&self) -> String {
        match self {
            PendingAction::RevokeSession(id) => format!("revoke_session:{id}"),
            PendingAction::RevokeOtherSessions => "revoke_other_sessions".into(),
            PendingAction::RemoveIdentifier(id) => format!("remove_identifier:{id}"),
            PendingAction::MakePrimary(id) => format!("make_primary:{id}"),
            PendingAction::DeleteAccount => "delete_account".into(),
        }
    }

    /// The inverse of [`to_stored`](Self::to_stored); `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let (what, arg) = s.split_once(':').unwrap_or((s, ""));
        match (what, arg) {
            ("revoke_session", id) => SessionId::parse(id).map(PendingAction::RevokeSession),
            ("revoke_other_sessions", "") => Some(PendingAction::RevokeOtherSessions),
            ("remove_identifier", id) => {
                IdentifierId::parse(id).map(PendingAction::RemoveIdentifier)
            }
            ("make_primary", id) => IdentifierId::parse(id).map(PendingAction::MakePrimary),
            ("delete_account", "") => Some(PendingAction::DeleteAccount),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The session's last verified code is too old for this action.
    #[error("this session must verify a fresh code first")]
    ReverificationRequired,
    /// No such identifier or session of this account.
    #[error("not found")]
    NotFound,
    /// Only verified identifiers can be primary.
    #[error("the identifier is not verified")]
    NotVerified,
    /// Removing it would leave no verified identifier to sign in with.
    #[error("the last identifier you can sign in with cannot be removed")]
    LastSignInIdentifier,
    /// Removing it would leave none of a kind every account must have.
    #[error("an account must keep one {}", .0.as_str())]
    RequiredKind(IdentifierKind),
    /// The operator turned account deletion off.
    #[error("account deletion is turned off")]
    DeletionDisabled,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Whether identifier `id` may be removed from an account with `identifiers` (as read under
/// the account's lock): never the last verified identifier of a kind people sign in with
/// (`sign_in`), never the last of a kind every account must have (`required`). A primary one
/// hands its mark to the oldest other identifier of its kind.
pub fn removal(
    identifiers: &[StoredIdentifier],
    id: &IdentifierId,
    sign_in: Accepts,
    required: Accepts,
) -> Result<Removal, ProfileError> {
    let target = identifiers
        .iter()
        .find(|s| &s.id == id)
        .ok_or(ProfileError::NotFound)?;
    let kind = target.identifier.kind();
    let others: Vec<&StoredIdentifier> = identifiers.iter().filter(|s| &s.id != id).collect();
    if required.allows(kind) && !others.iter().any(|s| s.identifier.kind() == kind) {
        return Err(ProfileError::RequiredKind(kind));
    }
    if !others
        .iter()
        .any(|s| s.verified && sign_in.allows(s.identifier.kind()))
    {
        return Err(ProfileError::LastSignInIdentifier);
    }
    let new_primary = target
        .is_primary
        .then(|| {
            others
                .iter()
                .find(|s| s.identifier.kind() == kind && s.verified)
                .map(|s| s.id.clone())
        })
        .flatten();
    Ok(Removal { new_primary })
}

/// Whether identifier `id` may become primary: one of the account's, verified.
pub fn primary_change(
    identifiers: &[StoredIdentifier],
    id: &IdentifierId,
) -> Result<(), ProfileError> {
    match identifiers.iter().find(|s| &s.id == id) {
        None => Err(ProfileError::NotFound),
        Some(s) if !s.verified => Err(ProfileError::NotVerified),
        Some(_) => Ok(()),
    }
}

impl Auth {
    /// Refuses an action that needs a recent code when the session's is too old.
    pub fn require_recent_code(&self, user: &CurrentUser) -> Result<(), ProfileError> {
        let window = super::duration(self.policy.reverification);
        if session_rules::recently_verified(user.verified_at, window, self.now()) {
            Ok(())
        } else {
            Err(ProfileError::ReverificationRequired)
        }
    }

    /// Does `action` (see the functions it names); refused with `ReverificationRequired` when
    /// it needs a fresher code than the session's.
    pub async fn perform(
        &self,
        user: &CurrentUser,
        action: &PendingAction,
        client: &Client<'_>,
    ) -> Result<(), ProfileError> {
        match action {
            PendingAction::RevokeSession(id) => self.revoke_session(user, id, client).await,
            PendingAction::RevokeOtherSessions => {
                self.revoke_other_sessions(user, client).await.map(|_| ())
            }
            PendingAction::RemoveIdentifier(id) => self.remove_identifier(user, id, client).await,
            PendingAction::MakePrimary(id) => self.make_primary(user, id, client).await,
            PendingAction::DeleteAccount => self.delete_account(user, client).await,
        }
    }

    /// Sends a fresh code for the changes that need one, to identifier `to` of the account
    /// (verified, of a kind people sign in with) or by default to the primary email address
    /// (else the primary phone number, else any such identifier); `then` is done once it is
    /// verified (the pages). Answers the flow and where its code went. `IdentifierNotFound`: `to` is not such an identifier.
    pub async fn start_reverification(
        &self,
        user: &CurrentUser,
        to: Option<&IdentifierId>,
        then: Option<&PendingAction>,
        client: &Client<'_>,
    ) -> Result<(FlowId, Identifier), StartError> {
        let usable = || {
            user.identifiers
                .iter()
                .filter(|s| s.verified && self.factor_allowed(&s.identifier))
        };
        let chosen = match to {
            Some(id) => usable().find(|s| &s.id == id),
            None => usable().find(|s| s.is_primary).or_else(|| usable().next()),
        }
        .ok_or(StartError::IdentifierNotFound)?;
        let flow = self
            .start_for_account(
                FlowKind::Reverify,
                user,
                &chosen.identifier,
                true,
                then,
                client,
            )
            .await?;
        Ok((flow, chosen.identifier.clone()))
    }

    /// The flow of this session adding the identifier that will have id `id` (the API's
    /// pending email addresses and phone numbers).
    pub async fn pending_addition(
        &self,
        user: &CurrentUser,
        id: &IdentifierId,
    ) -> anyhow::Result<Option<FlowId>> {
        self.store.find_addition(id, &user.session_id).await
    }

    /// The start of a change to identifier `id` of the account: a recent code, the identifier
    /// as the session read it, and the change's audit event.
    fn identifier_change<'u>(
        &self,
        user: &'u CurrentUser,
        id: &IdentifierId,
        what: AuditKind,
        client: &Client<'_>,
    ) -> Result<(&'u StoredIdentifier, crate::store::AuditEvent), ProfileError> {
        self.require_recent_code(user)?;
        let stored = user
            .identifiers
            .iter()
            .find(|s| &s.id == id)
            .ok_or(ProfileError::NotFound)?;
        let event = self.audit_event(
            what,
            AuditOutcome::Success,
            Some(&user.user_id),
            Some(&stored.identifier),
            None,
            client,
        );
        Ok((stored, event))
    }

    /// Makes identifier `id` the primary one of its kind.
    pub async fn make_primary(
        &self,
        user: &CurrentUser,
        id: &IdentifierId,
        client: &Client<'_>,
    ) -> Result<(), ProfileError> {
        let (stored, event) =
            self.identifier_change(user, id, AuditKind::PrimaryIdentifierChanged, client)?;
        let target = id.clone();
        self.store
            .set_primary(
                &user.user_id,
                id,
                stored.identifier.kind(),
                move |ids| primary_change(ids, &target),
                event,
                self.now(),
            )
            .await??;
        tracing::info!(event = "primary_identifier_changed", user_id = %user.user_id, identifier = %stored.identifier.masked());
        Ok(())
    }

    /// Removes identifier `id` from the account (see [`removal`]).
    pub async fn remove_identifier(
        &self,
        user: &CurrentUser,
        id: &IdentifierId,
        client: &Client<'_>,
    ) -> Result<(), ProfileError> {
        let (stored, event) =
            self.identifier_change(user, id, AuditKind::IdentifierRemoved, client)?;
        let (target, sign_in, required) =
            (id.clone(), self.policy.factor_kinds, self.policy.required);
        self.store
            .remove_identifier(
                &user.user_id,
                id,
                move |ids| removal(ids, &target, sign_in, required),
                event,
                self.now(),
            )
            .await??;
        tracing::info!(event = "identifier_removed", user_id = %user.user_id, identifier = %stored.identifier.masked());
        Ok(())
    }

    /// Signs out session `id` of the account (another device). The session itself signs out
    /// with [`sign_out`](Self::sign_out), which needs no recent code.
    pub async fn revoke_session(
        &self,
        user: &CurrentUser,
        id: &SessionId,
        client: &Client<'_>,
    ) -> Result<(), ProfileError> {
        if id == &user.session_id {
            self.sign_out(user, client).await?;
            return Ok(());
        }
        self.require_recent_code(user)?;
        let now = self.now();
        let sessions = self
            .store
            .user_sessions(&user.user_id, now, i64::MAX)
            .await?;
        if !sessions.iter().any(|d| &d.session_id == id) {
            return Err(ProfileError::NotFound);
        }
        self.end_sessions(user, vec![id.clone()], client, now)
            .await?;
        Ok(())
    }

    /// Signs out every other session of the account.
    pub async fn revoke_other_sessions(
        &self,
        user: &CurrentUser,
        client: &Client<'_>,
    ) -> Result<usize, ProfileError> {
        self.require_recent_code(user)?;
        let now = self.now();
        let others: Vec<SessionId> = self
            .store
            .user_sessions(&user.user_id, now, i64::MAX)
            .await?
            .into_iter()
            .map(|d| d.session_id)
            .filter(|id| id != &user.session_id)
            .collect();
        let n = others.len();
        if n > 0 {
            self.end_sessions(user, others, client, now).await?;
        }
        Ok(n)
    }

    async fn end_sessions(
        &self,
        user: &CurrentUser,
        ids: Vec<SessionId>,
        client: &Client<'_>,
        now: OffsetDateTime,
    ) -> anyhow::Result<()> {
        let audit = ids
            .iter()
            .map(|_| {
                self.audit_event(
                    AuditKind::SessionRevoked,
                    AuditOutcome::Success,
                    Some(&user.user_id),
                    None,
                    None,
                    client,
                )
            })
            .collect();
        let sessions = ids
            .iter()
            .map(|id| (id.clone(), self.logouts(&user.user_id, id, now)))
            .collect();
        let queued = self.store.end_sessions(sessions, audit, now).await?;
        self.sessions.forget(ids.iter());
        for message in &queued {
            self.outbox.hand_over(message);
        }
        tracing::info!(event = "sessions_revoked", user_id = %user.user_id, count = ids.len());
        Ok(())
    }

    /// Deletes the account at once (see `Store::delete_account`); only the audit events stay.
    /// The same identifiers can sign up afresh.
    pub async fn delete_account(
        &self,
        user: &CurrentUser,
        client: &Client<'_>,
    ) -> Result<(), ProfileError> {
        if !self.policy.allow_account_deletion {
            return Err(ProfileError::DeletionDisabled);
        }
        self.require_recent_code(user)?;
        let now = self.now();
        let sessions = self
            .store
            .user_sessions(&user.user_id, now, i64::MAX)
            .await?;
        let logouts = sessions
            .iter()
            .map(|d| {
                (
                    d.session_id.clone(),
                    self.logouts(&user.user_id, &d.session_id, now),
                )
            })
            .collect();
        let event = self.audit_event(
            AuditKind::AccountDeleted,
            AuditOutcome::Success,
            Some(&user.user_id),
            None,
            None,
            client,
        );
        let Some((ended, queued)) = self
            .store
            .delete_account(&user.user_id, logouts, event, now)
            .await?
        else {
            return Err(ProfileError::NotFound);
        };
        self.sessions.forget(ended.iter());
        for message in &queued {
            self.outbox.hand_over(message);
        }
        tracing::info!(event = "account_deleted", user_id = %user.user_id, sessions = ended.len());
        Ok(())
    }
}

/// The back-channel logout messages of session `sid` of `sub`, one per client that takes them
/// (the store queues those of the clients the session signed into).
impl Auth {
    pub(crate) fn logouts(
        &self,
        sub: &UserId,
        sid: &SessionId,
        now: OffsetDateTime,
    ) -> Vec<(String, NewMessage)> {
        self.policy
            .logout_clients
            .iter()
            .map(|c| {
                let payload = crate::delivery::LogoutMessage {
                    client_id: c.clone(),
                    sub: sub.to_string(),
                    sid: sid.to_string(),
                }
                .seal(&self.keys);
                let message = NewMessage {
                    id: crate::domain::MessageId::generate(),
                    channel: crate::domain::OutboxChannel::BackchannelLogout,
                    recipient_masked: c.clone(),
                    verification_id: None,
                    payload,
                    now,
                    not_after: now + super::LOGOUT_DELIVERY_WINDOW,
                    claim: Some(self.outbox.claim(now)),
                    withheld: false,
                };
                (c.clone(), message)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EmailAddress, Identifier, PhoneNumber};

    fn email(id: &str, value: &str, primary: bool, verified: bool) -> StoredIdentifier {
        StoredIdentifier {
            id: IdentifierId::from_trusted(id.to_string()),
            user_id: UserId::from_trusted("user_1".into()),
            identifier: Identifier::Email(EmailAddress::parse(value).unwrap()),
            is_primary: primary,
            verified,
        }
    }

    fn phone(id: &str, value: &str, primary: bool) -> StoredIdentifier {
        StoredIdentifier {
            id: IdentifierId::from_trusted(id.to_string()),
            user_id: UserId::from_trusted("user_1".into()),
            identifier: Identifier::Phone(PhoneNumber::from_trusted(value.to_string())),
            is_primary: primary,
            verified: true,
        }
    }

    fn id(s: &str) -> IdentifierId {
        IdentifierId::from_trusted(s.to_string())
    }

    const EMAIL_ONLY: Accepts = Accepts {
        email: true,
        phone: false,
    };
    const BOTH: Accepts = Accepts {
        email: true,
        phone: true,
    };
    const NONE: Accepts = Accepts {
        email: false,
        phone: false,
    };

    #[test]
    fn the_last_identifier_one_can_sign_in_with_stays() {
        let one = [email("a", "a@example.com", true, true)];
        assert!(matches!(
            removal(&one, &id("a"), EMAIL_ONLY, NONE),
            Err(ProfileError::LastSignInIdentifier)
        ));
        // A phone number does not sign in when only emails do.
        let with_phone = [
            email("a", "a@example.com", true, true),
            phone("p", "+14155550100", true),
        ];
        assert!(matches!(
            removal(&with_phone, &id("a"), EMAIL_ONLY, NONE),
            Err(ProfileError::LastSignInIdentifier)
        ));
        assert_eq!(
            removal(&with_phone, &id("a"), BOTH, NONE).unwrap(),
            Removal { new_primary: None }
        );
        // An unverified second address is no way to sign in.
        let unverified = [
            email("a", "a@example.com", true, true),
            email("b", "b@example.com", false, false),
        ];
        assert!(matches!(
            removal(&unverified, &id("a"), EMAIL_ONLY, NONE),
            Err(ProfileError::LastSignInIdentifier)
        ));
    }

    #[test]
    fn a_required_kind_keeps_one_identifier() {
        let both = [
            email("a", "a@example.com", true, true),
            phone("p", "+14155550100", true),
        ];
        let phone_required = Accepts {
            email: false,
            phone: true,
        };
        assert!(matches!(
            removal(&both, &id("p"), BOTH, phone_required),
            Err(ProfileError::RequiredKind(IdentifierKind::Phone))
        ));
        assert!(removal(&both, &id("a"), BOTH, phone_required).is_ok());
    }

    #[test]
    fn removing_the_primary_hands_the_mark_to_another_verified_one_of_its_kind() {
        let three = [
            email("a", "a@example.com", true, true),
            email("b", "b@example.com", false, false),
            email("c", "c@example.com", false, true),
        ];
        assert_eq!(
            removal(&three, &id("a"), EMAIL_ONLY, EMAIL_ONLY).unwrap(),
            Removal {
                new_primary: Some(id("c"))
            }
        );
        assert_eq!(
            removal(&three, &id("c"), EMAIL_ONLY, EMAIL_ONLY).unwrap(),
            Removal { new_primary: None }
        );
        assert!(matches!(
            removal(&three, &id("zzz"), EMAIL_ONLY, NONE),
            Err(ProfileError::NotFound)
        ));
    }

    #[test]
    fn only_a_verified_identifier_of_the_account_becomes_primary() {
        let ids = [
            email("a", "a@example.com", true, true),
            email("b", "b@example.com", false, false),
        ];
        assert!(primary_change(&ids, &id("a")).is_ok());
        assert!(matches!(
            primary_change(&ids, &id("b")),
            Err(ProfileError::NotVerified)
        ));
        assert!(matches!(
            primary_change(&ids, &id("x")),
            Err(ProfileError::NotFound)
        ));
    }

    #[test]
    fn pending_actions_round_trip_and_nothing_else_parses() {
        let s = SessionId::generate();
        let i = IdentifierId::generate();
        for a in [
            PendingAction::RevokeSession(s),
            PendingAction::RevokeOtherSessions,
            PendingAction::RemoveIdentifier(i.clone()),
            PendingAction::MakePrimary(i),
            PendingAction::DeleteAccount,
        ] {
            assert_eq!(PendingAction::parse(&a.to_stored()), Some(a));
        }
        for bad in [
            "",
            "delete_account:x",
            "revoke_session:",
            "remove_identifier:nope",
            "drop",
        ] {
            assert_eq!(PendingAction::parse(bad), None, "{bad}");
        }
    }
}
