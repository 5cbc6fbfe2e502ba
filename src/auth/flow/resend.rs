//! A new code for a verification: "Resend code", the API's prepare calls, and "Use another
//! method" (the sign-in code goes to another identifier of the account).

use time::OffsetDateTime;

use super::view::secs_until;
use super::{
    verification_identifier, FlowError, FlowKind, FlowView, PrepareTarget, ResendError,
    VerificationStatus,
};
use crate::auth::{Auth, Client};
use crate::domain::{
    AuditKind, AuditOutcome, Channel, CodeStatus, FlowId, FlowStatus, Identifier, IdentifierId,
};
use crate::store::{FactorSwitch, FlowRecord, ReplaceCode, VerificationRecord};

impl Auth {
    /// Sends a new code, which replaces (and so invalidates) the previous one, once the resend
    /// cooldown since the last send has passed.
    pub async fn resend(
        &self,
        id: &FlowId,
        kind: FlowKind,
        client: &Client<'_>,
    ) -> Result<FlowView, ResendError> {
        let now = self.now();
        let record = self.load_record(id, kind, client, now).await?;
        let view = self.view(&record, kind, now);
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
        let v = record.current();
        self.replace_code(kind, &record, v, None, client, AuditKind::CodeResent, now)
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
        let now = self.now();
        let record = self.load_record(id, FlowKind::SignIn, client, now).await?;
        self.send_to_factor(&record, identifier_id, client, now)
            .await
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
        let now = self.now();
        let record = self.load_record(id, kind, client, now).await?;
        if record.status == FlowStatus::Complete {
            return Err(ResendError::Completed);
        }
        match (kind, target) {
            (FlowKind::SignUp | FlowKind::AddIdentifier, PrepareTarget::Kind(wanted)) => {
                let v = record
                    .verifications
                    .iter()
                    .find(|v| v.channel.kind() == *wanted)
                    .ok_or(ResendError::UnknownTarget)?;
                if v.status == CodeStatus::Verified {
                    return Err(ResendError::AlreadyVerified);
                }
                self.replace_code(kind, &record, v, None, client, AuditKind::CodeSent, now)
                    .await
            }
            (FlowKind::SignIn, PrepareTarget::Identifier(identifier_id)) => {
                let v = record.current();
                if self.factor_id(&record, v).as_ref() == Some(identifier_id) {
                    return self
                        .replace_code(kind, &record, v, None, client, AuditKind::CodeSent, now)
                        .await;
                }
                self.send_to_factor(&record, identifier_id, client, now)
                    .await
            }
            _ => Err(ResendError::UnknownTarget),
        }
    }

    async fn send_to_factor(
        &self,
        record: &FlowRecord,
        identifier_id: &IdentifierId,
        client: &Client<'_>,
        now: OffsetDateTime,
    ) -> Result<FlowView, ResendError> {
        // Strict enumeration protection offers no other identifier (it would show that the
        // account exists and has more): refused before any lookup, so a real account and a
        // decoy do the same work and get the same answer.
        if self.policy.enumeration_strict {
            return Err(ResendError::UnknownTarget);
        }
        if record.status == FlowStatus::Complete {
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
            channel: Channel::of(chosen.identifier.kind()),
            destination: chosen.identifier.display().to_string(),
            canonical: chosen.identifier.canonical().to_string(),
            identifier_id: chosen.id.clone(),
        };
        self.replace_code(
            FlowKind::SignIn,
            record,
            record.current(),
            Some((&chosen.identifier, switch)),
            client,
            AuditKind::CodeSent,
            now,
        )
        .await
    }

    /// Gives verification `v` a new code: to its own identifier, or with `switch` to another
    /// identifier of the account.
    #[allow(clippy::too_many_arguments)]
    async fn replace_code(
        &self,
        kind: FlowKind,
        record: &FlowRecord,
        v: &VerificationRecord,
        switch: Option<(&Identifier, FactorSwitch)>,
        client: &Client<'_>,
        event: AuditKind,
        now: OffsetDateTime,
    ) -> Result<FlowView, ResendError> {
        let id = &record.id;
        let (destination, switch) = match switch {
            Some((to, sw)) => (to.clone(), Some(sw)),
            None => (verification_identifier(record, v), None),
        };
        let code_expires = now + self.policy.code_ttl;
        let prepared = self
            .prepare_send(kind, &v.id, &destination, v.decoy, code_expires)
            .await?;
        // A trusted browser of the account signing in sends from its own bucket.
        let trusted = kind == FlowKind::SignIn
            && record
                .user_id
                .as_ref()
                .is_some_and(|user| self.trusted_by(client, user, now));
        let message = prepared
            .message
            .map(|m| self.new_message(m, &destination, &v.id, now, code_expires));
        // A switch to another identifier waits for the cooldown too: otherwise alternating
        // between two identifiers would send a message per request.
        let replaced = self
            .store
            .replace_code(ReplaceCode {
                flow_id: record.id.clone(),
                ver_id: v.id.clone(),
                code_hash: prepared.code_hash,
                now,
                code_expires_at: code_expires,
                cooldown: crate::auth::duration(self.policy.resend_cooldown),
                flow_expires_at: now + self.policy.flow_idle_ttl,
                switch,
                message: message.clone(),
                guards: self.send_guards(&destination, client, trusted),
                audit: self.audit_event(
                    event,
                    AuditOutcome::Success,
                    record.user_id.as_ref(),
                    Some(&destination),
                    Some(&record.id),
                    client,
                ),
            })
            .await?;
        let replaced = match replaced {
            Ok(replaced) => replaced,
            Err(limited) => {
                self.notice_send_cap(&destination, &limited, now);
                let retry_after_secs = self.retry_after(&limited, now).await;
                return Err(ResendError::Limited { retry_after_secs });
            }
        };
        if !replaced {
            // Another tab resent (or completed the flow) in the meantime: show the current state.
            let record = self.load_record(id, kind, client, now).await?;
            let view = self.view(&record, kind, now);
            if view.complete {
                return Err(ResendError::Completed);
            }
            let same = view.verifications.iter().find(|x| x.id == v.id);
            if same.is_some_and(|x| x.status == VerificationStatus::Verified) {
                return Err(ResendError::AlreadyVerified);
            }
            let wait = same.map_or(1, |x| secs_until(x.resend_available_at, now));
            return Err(ResendError::Cooldown {
                wait_secs: wait.max(1),
                view: Box::new(view),
            });
        }
        if let Some(message) = &message {
            self.dispatch(message, &destination, now);
        }
        tracing::info!(event = %event, flow = kind.as_str(), flow_id = %record.id, identifier = %destination.masked(), channel = %Channel::of(destination.kind()), ip = client.ip.unwrap_or("-"));
        self.flow_at(id, kind, client, now)
            .await
            .map_err(Into::into)
    }
}

impl Auth {
    /// A reverification's "Use another method": a new reverification to another verified
    /// identifier of the account, for the same pending action (the earlier one is left to
    /// expire: its code still works until then, as it went to the account's own identifier).
    pub async fn reverify_elsewhere(
        &self,
        id: &FlowId,
        user: &crate::auth::CurrentUser,
        identifier_id: &IdentifierId,
        client: &Client<'_>,
    ) -> Result<FlowId, ResendError> {
        let now = self.now();
        let record = self
            .load_record(id, FlowKind::Reverify, client, now)
            .await?;
        if record.status == FlowStatus::Complete {
            return Err(ResendError::Completed);
        }
        let then = record
            .pending_action
            .as_deref()
            .and_then(crate::auth::PendingAction::parse);
        match self
            .start_reverification(user, Some(identifier_id), then.as_ref(), client)
            .await
        {
            Ok((flow, _)) => Ok(flow),
            Err(super::StartError::IdentifierNotFound) => Err(ResendError::UnknownTarget),
            Err(super::StartError::Limited { retry_after_secs }) => {
                Err(ResendError::Limited { retry_after_secs })
            }
            Err(e) => Err(anyhow::Error::new(e)
                .context("starting a reverification")
                .into()),
        }
    }
}
