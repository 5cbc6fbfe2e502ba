//! Starting a flow, and drawing the code (or a decoy's notice) for one identifier.

use time::OffsetDateTime;

use super::{
    code_binding, purpose, FlowKind, PreparedCode, PreparedMessage, StartError, DECOY_HASH,
    TEST_CODE,
};
use crate::auth::{Auth, Client, CurrentUser, PendingAction};
use crate::delivery::{unix_ms, CodeMessage, Purpose};
use crate::domain::{
    AuditKind, AuditOutcome, Channel, FlowId, Identifier, IdentifierId, MessageId, Names, OtpCode,
    RedirectTarget, UserId, VerificationId,
};
use crate::store::{NewFlow, NewMessage, NewVerification, StoredIdentifier};

/// Who opens a flow.
enum Opener<'a> {
    /// Sign-up or sign-in: a visitor, with a sign-up's name if given.
    Visitor(&'a Names),
    /// A flow on /user: the signed-in account, and a reverification's pending action.
    Account(&'a CurrentUser, Option<&'a PendingAction>),
}

/// Where a new flow's codes go: per identifier, the account's identifier (sign-in) and whether
/// it is a decoy.
struct Target {
    to: Identifier,
    identifier_id: Option<IdentifierId>,
    decoy: bool,
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
        names: &Names,
        redirect: Option<&RedirectTarget>,
        client: &Client<'_>,
    ) -> Result<FlowId, StartError> {
        self.open(
            kind,
            identifiers,
            redirect,
            client,
            true,
            Opener::Visitor(names),
        )
        .await
    }

    /// Like [`start`](Self::start), but sends nothing: every code waits for
    /// [`prepare`](Self::prepare) (the API's `create`).
    pub async fn create(
        &self,
        kind: FlowKind,
        identifiers: &[Identifier],
        names: &Names,
        redirect: Option<&RedirectTarget>,
        client: &Client<'_>,
    ) -> Result<FlowId, StartError> {
        self.open(
            kind,
            identifiers,
            redirect,
            client,
            false,
            Opener::Visitor(names),
        )
        .await
    }

    /// Starts a flow on /user for the signed-in `user`: adding `identifier` to the account, or
    /// (`Reverify`) a fresh code to `identifier`, one of the account's verified identifiers.
    /// The flow belongs to the user's session; `then` (a reverification) is kept with it and
    /// handed back when its code is verified. `send`: the code goes out now (the pages; the
    /// API's create waits for prepare).
    pub async fn start_for_account(
        &self,
        kind: FlowKind,
        user: &CurrentUser,
        identifier: &Identifier,
        send: bool,
        then: Option<&PendingAction>,
        client: &Client<'_>,
    ) -> Result<FlowId, StartError> {
        debug_assert!(matches!(kind, FlowKind::AddIdentifier | FlowKind::Reverify));
        self.open(
            kind,
            std::slice::from_ref(identifier),
            None,
            client,
            send,
            Opener::Account(user, then),
        )
        .await
    }

    async fn open(
        &self,
        kind: FlowKind,
        identifiers: &[Identifier],
        redirect: Option<&RedirectTarget>,
        client: &Client<'_>,
        send_first: bool,
        opener: Opener<'_>,
    ) -> Result<FlowId, StartError> {
        let no_names = Names::default();
        let (account, then, names) = match opener {
            Opener::Visitor(names) => (None, None, names),
            Opener::Account(user, then) => (Some(user), then, &no_names),
        };
        let first = identifiers
            .first()
            .ok_or_else(|| anyhow::anyhow!("a flow needs an identifier"))?;
        let now = self.now();
        let code_expires = now + self.policy.code_ttl;
        let flow_id = FlowId::generate();
        let mut targets: Vec<Target> = Vec::new();
        let mut user_id = None;
        // Sign-up: accounts that already own an identifier given (they see the attempt on /user).
        let mut owners: Vec<(UserId, Identifier)> = Vec::new();
        let strict = self.policy.enumeration_strict;
        let mut first_owner = None;
        match kind {
            FlowKind::SignIn => match self.store.find_owner(first).await? {
                Some(stored) if stored.verified => {
                    // The code goes to the identifier stored for the account, never to the
                    // variant typed.
                    user_id = Some(stored.user_id);
                    targets.push(Target {
                        to: stored.identifier,
                        identifier_id: Some(stored.id),
                        decoy: false,
                    });
                }
                _ if strict => {
                    tracing::info!(event = "sign_in_decoy", identifier = %first.masked(), reason = "identifier_not_found");
                    targets.push(Target {
                        to: first.clone(),
                        identifier_id: None,
                        decoy: true,
                    });
                }
                _ => {
                    tracing::info!(event = "sign_in_refused", identifier = %first.masked(), reason = "identifier_not_found");
                    return Err(StartError::IdentifierNotFound);
                }
            },
            FlowKind::Reverify => {
                let user =
                    account.ok_or_else(|| anyhow::anyhow!("reverification needs a session"))?;
                let stored = user
                    .identifiers
                    .iter()
                    .find(|s| s.verified && s.identifier.same_as(first))
                    .ok_or(StartError::IdentifierNotFound)?;
                user_id = Some(user.user_id.clone());
                targets.push(Target {
                    to: stored.identifier.clone(),
                    identifier_id: Some(stored.id.clone()),
                    decoy: false,
                });
            }
            FlowKind::AddIdentifier => {
                let user = account
                    .ok_or_else(|| anyhow::anyhow!("adding an identifier needs a session"))?;
                if user.identifiers.iter().any(|s| s.identifier.same_as(first)) {
                    return Err(StartError::AlreadyYours);
                }
                let owner = self.store.find_owner(first).await?;
                let taken = owner.is_some();
                if let Some(owner) = &owner {
                    owners.push((owner.user_id.clone(), first.clone()));
                }
                first_owner = owner;
                if taken && !strict {
                    tracing::info!(event = "add_identifier_refused", identifier = %first.masked(), reason = "identifier_taken");
                    return Err(StartError::IdentifierTaken(first.kind()));
                }
                if taken {
                    tracing::info!(event = "add_identifier_decoy", identifier = %first.masked(), reason = "identifier_taken");
                }
                user_id = Some(user.user_id.clone());
                // The id the identifier will have once verified (the API addresses it so).
                targets.push(Target {
                    to: first.clone(),
                    identifier_id: Some(IdentifierId::generate()),
                    decoy: taken,
                });
            }
            FlowKind::SignUp => {
                for (i, identifier) in identifiers.iter().enumerate() {
                    let owner = self.store.find_owner(identifier).await?;
                    let taken = owner.is_some();
                    if let Some(owner) = &owner {
                        owners.push((owner.user_id.clone(), identifier.clone()));
                    }
                    if i == 0 {
                        first_owner = owner;
                    }
                    if taken && !strict {
                        tracing::info!(event = "sign_up_refused", identifier = %identifier.masked(), reason = "identifier_taken");
                        return Err(StartError::IdentifierTaken(identifier.kind()));
                    }
                    if taken {
                        tracing::info!(event = "sign_up_decoy", identifier = %identifier.masked(), reason = "identifier_taken");
                    }
                    targets.push(Target {
                        to: identifier.clone(),
                        identifier_id: None,
                        decoy: taken,
                    });
                }
            }
        }
        let ver_ids: Vec<VerificationId> =
            targets.iter().map(|_| VerificationId::generate()).collect();
        let destination = targets[0].to.clone();
        // The first identifier's owner was looked up above (sign-up); no second read.
        let prepared = self.prepare_send_to(
            kind,
            &ver_ids[0],
            &destination,
            targets[0].decoy,
            first_owner,
            code_expires,
        );
        let vers: Vec<NewVerification> = targets
            .iter()
            .zip(&ver_ids)
            .enumerate()
            .map(|(i, (t, ver_id))| NewVerification {
                decoy: t.decoy,
                id: ver_id.clone(),
                channel: Channel::of(t.to.kind()),
                destination: t.to.display().to_string(),
                canonical: t.to.canonical().to_string(),
                identifier_id: t.identifier_id.clone(),
                code_hash: (i == 0 && send_first).then(|| prepared.code_hash.clone()),
                position: i as i64,
                max_attempts: self.policy.max_attempts as i64,
                sent_at: now,
                expires_at: code_expires,
            })
            .collect();
        let message = prepared
            .message
            .filter(|_| send_first)
            .map(|m| self.new_message(m, &destination, &ver_ids[0], now, code_expires));
        // A trusted browser of the account signing in sends from its own bucket.
        let trusted = user_id
            .as_ref()
            .is_some_and(|user| self.trusted_by(client, user, now));
        let mut guards = self.creation_guards(client);
        if send_first {
            guards.extend(self.send_guards(&destination, client, trusted));
        }
        let mut audit = vec![self.audit_event(
            if send_first {
                AuditKind::CodeSent
            } else {
                AuditKind::FlowCreated
            },
            AuditOutcome::Success,
            user_id.as_ref(),
            Some(&destination),
            Some(&flow_id),
            client,
        )];
        let taken_event = match kind {
            FlowKind::AddIdentifier => AuditKind::AddWithTakenIdentifier,
            _ => AuditKind::SignUpWithTakenIdentifier,
        };
        for (owner, identifier) in &owners {
            audit.push(self.audit_event(
                taken_event,
                AuditOutcome::Refused,
                Some(owner),
                Some(identifier),
                Some(&flow_id),
                client,
            ));
        }
        let flow = NewFlow {
            id: flow_id.clone(),
            kind,
            identifier: first.clone(),
            user_id,
            redirect_url: redirect.map(|r| r.as_str().to_string()),
            browser_binding: client.browser.map(|b| self.keys.browser_binding(b)),
            for_session: account.map(|u| u.session_id.clone()),
            pending_action: then.map(PendingAction::to_stored),
            names: names.clone(),
            now,
            expires_at: now + self.policy.flow_idle_ttl,
        };
        let refused = self
            .store
            .create_flow(flow, vers, message.clone(), guards, audit)
            .await?;
        if let Some(limited) = refused {
            self.notice_send_cap(&destination, &limited, now);
            let retry_after_secs = self.retry_after(&limited, now).await;
            return Err(StartError::Limited { retry_after_secs });
        }
        if let Some(message) = &message {
            self.dispatch(message, &destination, now);
        }
        if send_first {
            tracing::info!(event = "code_sent", flow = kind.as_str(), flow_id = %flow_id, identifier = %destination.masked(), channel = %Channel::of(destination.kind()), test = message.is_none(), ip = client.ip.unwrap_or("-"));
        } else {
            tracing::info!(event = "flow_created", flow = kind.as_str(), flow_id = %flow_id, identifier = %destination.masked(), ip = client.ip.unwrap_or("-"));
        }
        Ok(flow_id)
    }

    /// The outbox row of a code (or notice) for `to`, stored claimed by this process's worker;
    /// a withheld one unclaimed and empty.
    pub(super) fn new_message(
        &self,
        prepared: PreparedMessage,
        to: &Identifier,
        ver_id: &VerificationId,
        now: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> NewMessage {
        NewMessage {
            id: prepared.id,
            channel: Channel::of(to.kind()).into(),
            recipient_masked: to.masked(),
            verification_id: Some(ver_id.clone()),
            payload: prepared.sealed,
            now,
            not_after,
            claim: (!prepared.withheld).then(|| self.outbox.claim(now)),
            withheld: prepared.withheld,
        }
    }

    /// After the message's unit committed: hands it to this process's worker and counts an SMS
    /// for the prefix alarm (off the request's path); a withheld message goes nowhere.
    pub(super) fn dispatch(&self, message: &NewMessage, to: &Identifier, now: OffsetDateTime) {
        if message.withheld {
            return;
        }
        self.outbox.hand_over(message);
        self.watch_sms(to, now);
    }

    /// Like [`prepare_code`](Self::prepare_code), and for a decoy: a hash no code matches and,
    /// for an email address, a notice instead of a code (to the owner's stored address for a
    /// sign-up; phone numbers get nothing, SMS costs money).
    pub(super) async fn prepare_send(
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
            FlowKind::SignUp | FlowKind::AddIdentifier => self.store.find_owner(to).await?,
            FlowKind::SignIn | FlowKind::Reverify => None,
        };
        Ok(self.prepare_send_to(kind, ver_id, to, decoy, owner, expires))
    }

    /// [`prepare_send`](Self::prepare_send) with the sign-up identifier's owner already looked
    /// up (`None` for a sign-in).
    fn prepare_send_to(
        &self,
        kind: FlowKind,
        ver_id: &VerificationId,
        to: &Identifier,
        decoy: bool,
        owner: Option<StoredIdentifier>,
        expires: OffsetDateTime,
    ) -> PreparedCode {
        if !decoy {
            return self.prepare_code(kind, ver_id, to, expires);
        }
        let mut prepared = PreparedCode {
            code_hash: DECOY_HASH.to_string(),
            message: None,
        };
        if self.policy.test_mode.covers(to) {
            return prepared;
        }
        let Identifier::Email(typed) = to else {
            // Phone numbers get no SMS (SMS costs money), but the row a real send would store.
            prepared.message = Some(PreparedMessage {
                id: MessageId::generate(),
                sealed: Vec::new(),
                withheld: true,
            });
            return prepared;
        };
        let (recipient, purpose, link) = match kind {
            FlowKind::SignIn => (
                typed.clone(),
                Purpose::UnknownAccount,
                &self.policy.links.sign_up,
            ),
            FlowKind::SignUp | FlowKind::AddIdentifier | FlowKind::Reverify => {
                let stored = match owner {
                    Some(s) => match s.identifier {
                        Identifier::Email(e) => e,
                        Identifier::Phone(_) => typed.clone(),
                    },
                    None => typed.clone(),
                };
                let purpose = match kind {
                    FlowKind::AddIdentifier => Purpose::IdentifierClaimed,
                    _ => Purpose::AccountExists,
                };
                (stored, purpose, &self.policy.links.sign_in)
            }
        };
        let message = CodeMessage {
            to: recipient
                .mailbox_address()
                .map(|a| a.to_string())
                .unwrap_or_else(|| recipient.display().to_string()),
            code: String::new(),
            purpose,
            expires_at: unix_ms(expires),
            ttl_minutes: self.policy.code_ttl.as_secs().div_ceil(60),
            link: Some(link.clone()),
        };
        prepared.message = Some(PreparedMessage::sealed(message.seal(&self.keys)));
        prepared
    }

    /// Draws a code for `to` (bound to verification `ver_id`) and seals its message.
    pub(super) fn prepare_code(
        &self,
        kind: FlowKind,
        ver_id: &VerificationId,
        to: &Identifier,
        expires: OffsetDateTime,
    ) -> PreparedCode {
        let len = self.policy.code_length;
        if self.policy.test_mode.covers(to) {
            return PreparedCode {
                code_hash: self
                    .keys
                    .code_hash(&code_binding(ver_id, to), test_code(len).expose()),
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
            purpose: purpose(kind),
            expires_at: unix_ms(expires),
            ttl_minutes: self.policy.code_ttl.as_secs().div_ceil(60),
            link: None,
        };
        PreparedCode {
            code_hash: self
                .keys
                .code_hash(&code_binding(ver_id, to), code.expose()),
            message: Some(PreparedMessage::sealed(message.seal(&self.keys))),
        }
    }
}

/// The fixed code of test identifiers, at the configured length.
pub(super) fn test_code(len: usize) -> OtpCode {
    let fixed: String = TEST_CODE.chars().cycle().take(len).collect();
    OtpCode::parse(&fixed, len).expect("the test code has the configured length")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_code_repeats_to_the_configured_length() {
        assert_eq!(test_code(6).expose(), "424242");
        assert_eq!(test_code(8).expose(), "42424242");
        assert_eq!(test_code(4).expose(), "4242");
    }
}
