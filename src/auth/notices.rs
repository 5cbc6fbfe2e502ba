//! Telling an account's owner that one of their identifiers is being throttled: it reached its
//! daily send cap, or wrong codes locked sign-in. By email only (SMS costs money, and a phone
//! number's owner is told at the account's email address if it has one), at most once per
//! `limits.owner_notice_interval_secs` per account (a rate-limit bucket `notice:<user id>`),
//! through the outbox. The work runs off the request's path, after the answer is decided: a real
//! account's answer and a decoy's take the same time, and nobody but the owner sees a notice.

use time::{Duration, OffsetDateTime};

use super::Auth;
use crate::crypto::Keys;
use crate::delivery::{unix_ms, CodeMessage, OutboxSignal, Purpose};
use crate::domain::{Identifier, MessageId, OutboxChannel, UserId};
use crate::store::{Guard, Limited, NewMessage, Store};

/// A notice is dropped rather than delivered after this long.
const NOTICE_LIFETIME: Duration = Duration::DAY;

/// Why the owner is told.
#[derive(Debug, Clone)]
enum Cause {
    /// Wrong codes locked a key of this account (about the identifier the codes were for).
    Locked(UserId),
    /// The send bucket `bucket` of this identifier refused a send: the owner is told if its
    /// daily window is full (not for the gap between two sends).
    SendCap { bucket: String, per_day: u32 },
}

/// What a notice task needs, cloned off `Auth` so it can outlive the request.
struct Notifier {
    store: Store,
    keys: std::sync::Arc<Keys>,
    outbox: OutboxSignal,
    interval: Duration,
    sign_in_link: String,
}

impl Auth {
    /// After a wrong code locked a key of `account` (through `about`).
    pub(super) fn notice_locked(&self, account: &UserId, about: &Identifier, now: OffsetDateTime) {
        self.spawn_notice(Cause::Locked(account.clone()), about, now);
    }

    /// After a send to `to` was refused: if its identifier's bucket refused it and that bucket
    /// has used up its day, the account that owns `to` (if any) is told.
    pub(super) fn notice_send_cap(&self, to: &Identifier, limited: &Limited, now: OffsetDateTime) {
        let per_day = self.policy.limits.sends_per_day;
        let own_bucket = [false, true]
            .iter()
            .any(|trusted| super::limits::send_bucket(to, *trusted) == limited.bucket);
        if own_bucket && per_day > 0 {
            let bucket = limited.bucket.clone();
            self.spawn_notice(Cause::SendCap { bucket, per_day }, to, now);
        }
    }

    fn spawn_notice(&self, cause: Cause, about: &Identifier, now: OffsetDateTime) {
        let interval = self.policy.limits.owner_notice_interval_secs;
        if interval == 0 || self.policy.test_mode.covers(about) {
            return;
        }
        let notifier = Notifier {
            // Background work, counted apart from the requests' units.
            store: self.store.counted_apart(),
            keys: self.keys.clone(),
            outbox: self.outbox.clone(),
            interval: Duration::seconds(interval as i64),
            sign_in_link: self.policy.links.sign_in.clone(),
        };
        let about = about.clone();
        tokio::spawn(async move {
            if let Err(e) = notifier.notify(cause, &about, now).await {
                tracing::warn!(error = %e, "could not queue an owner notice");
            }
        });
    }
}

impl Notifier {
    async fn notify(
        self,
        cause: Cause,
        about: &Identifier,
        now: OffsetDateTime,
    ) -> anyhow::Result<()> {
        let (account, purpose) = match cause {
            Cause::Locked(account) => (account, Purpose::SignInLocked),
            Cause::SendCap { bucket, per_day } => {
                if self
                    .store
                    .events_since(&bucket, now - Duration::DAY)
                    .await?
                    < i64::from(per_day)
                {
                    return Ok(());
                }
                // No account (a decoy's identifier): nobody to tell.
                let Some(owner) = self.store.find_owner(about).await? else {
                    return Ok(());
                };
                (owner.user_id, Purpose::SendsThrottled)
            }
        };
        let identifiers = self.store.user_identifiers(&account).await?;
        let is_email = |i: &Identifier| matches!(i, Identifier::Email(_));
        // The address the codes went to if it is an email address of the account; otherwise
        // the account's (primary first) email address.
        let Some(to) = identifiers
            .iter()
            .find(|s| s.verified && is_email(about) && s.identifier.same_as(about))
            .or_else(|| {
                identifiers
                    .iter()
                    .find(|s| s.verified && is_email(&s.identifier))
            })
            .map(|s| s.identifier.clone())
        else {
            return Ok(());
        };
        let Identifier::Email(email) = &to else {
            return Ok(());
        };
        let content = CodeMessage {
            to: email
                .mailbox_address()
                .map(|a| a.to_string())
                .unwrap_or_else(|| email.display().to_string()),
            code: String::new(),
            purpose,
            expires_at: unix_ms(now + NOTICE_LIFETIME),
            ttl_minutes: 0,
            link: Some(self.sign_in_link.clone()),
        };
        let message = NewMessage {
            id: MessageId::generate(),
            channel: OutboxChannel::Email,
            recipient_masked: to.masked(),
            verification_id: None,
            payload: content.seal(&self.keys),
            now,
            not_after: now + NOTICE_LIFETIME,
            claim: Some(self.outbox.claim(now)),
            withheld: false,
        };
        let Some(guard) = Guard::new(format!("notice:{account}"), &[(self.interval, 1)]) else {
            return Ok(());
        };
        if self.store.queue_notice(message.clone(), guard).await? {
            self.outbox.hand_over(&message);
            tracing::info!(event = "owner_notice_queued", reason = ?purpose, identifier = %to.masked(), "told the owner their identifier is throttled");
        }
        Ok(())
    }
}
