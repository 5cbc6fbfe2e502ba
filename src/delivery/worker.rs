//! The outbox worker: claims due messages, renders and delivers them, retries with backoff.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::mail::Mailer;
use super::message::CodeMessage;
use super::sms::{OutgoingSms, SmsError, SmsSender};
use crate::clock::SharedClock;
use crate::config::OutboxConfig;
use crate::crypto::Keys;
use crate::domain::{MessageId, PhoneNumber};
use crate::store::{ms, ClaimedMessage, Store};

/// Wakes the worker at once when a message is queued, so delivery does not wait for a poll.
#[derive(Clone, Default)]
pub struct OutboxSignal(Arc<Notify>);

impl OutboxSignal {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

const BATCH: i64 = 32;

pub struct OutboxWorker {
    pub store: Store,
    pub keys: Arc<Keys>,
    pub clock: SharedClock,
    pub mailer: Arc<Mailer>,
    pub sms: Arc<SmsSender>,
    pub config: OutboxConfig,
    pub product_name: String,
    /// The public host SMS codes are bound to (the last line of the text).
    pub public_host: String,
    /// The countries SMS may go to, checked again before every send.
    pub phone_policy: crate::domain::PhonePolicy,
    pub signal: OutboxSignal,
    /// Identifies this process's claims, so a graceful stop can hand them back.
    pub worker_id: String,
}

impl OutboxWorker {
    /// Runs until `shutdown` turns true, then returns unfinished claims to the queue.
    pub fn spawn(self, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let poll = Duration::from_millis(self.config.poll_interval_ms);
            loop {
                if *shutdown.borrow() {
                    break;
                }
                let processed = match self.run_once().await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!(error = %e, "outbox worker could not read the queue; retrying");
                        0
                    }
                };
                if processed as i64 == BATCH {
                    continue;
                }
                tokio::select! {
                    _ = self.signal.0.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                    _ = shutdown.changed() => {}
                }
            }
            match self.store.release_claims(&self.worker_id).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    released = n,
                    "outbox worker returned unfinished messages to the queue"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "outbox worker could not release its claims; their lease will expire")
                }
            }
        })
    }

    /// Claims and delivers the due messages; returns how many were claimed.
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        let now = self.clock.now();
        // A claim outlives the longest possible send by a margin; after that, a worker that died
        // mid-send is presumed dead and another instance takes the message.
        let lease_ms = (self.config.send_timeout_secs as i64 + 5) * 1000;
        let claimed = self
            .store
            .claim_messages(&self.worker_id, ms(now), ms(now) + lease_ms, BATCH)
            .await?;
        let n = claimed.len();
        let (dev, real): (Vec<Delivered>, Vec<Delivered>) =
            futures_util::future::join_all(claimed.into_iter().map(|m| self.deliver(m)))
                .await
                .into_iter()
                .flatten()
                .partition(|d| d.dev);
        let now = ms(self.clock.now());
        // Dev deliveries keep their payload for the /dev/outbox page; real ones are erased.
        for (delivered, keep_payload) in [(real, false), (dev, true)] {
            let ids: Vec<MessageId> = delivered.into_iter().map(|d| d.id).collect();
            if let Err(e) = self.store.mark_messages_sent(&ids, now, keep_payload).await {
                tracing::error!(error = %e, "could not record deliveries; their leases will expire and they may be sent again");
            }
        }
        Ok(n)
    }

    /// One delivery try. Returns a delivered message, which the caller records for the whole
    /// batch at once; failures are recorded here.
    async fn deliver(&self, msg: ClaimedMessage) -> Option<Delivered> {
        let result = self.try_deliver(&msg).await;
        let now = ms(self.clock.now());
        let outcome = match result {
            Ok(dev) => {
                tracing::info!(message_id = %msg.id, channel = %msg.channel, to = %msg.recipient_masked, attempt = msg.attempts, "message delivered");
                return Some(Delivered { id: msg.id, dev });
            }
            Err(Failure::Expired) => {
                tracing::warn!(message_id = %msg.id, to = %msg.recipient_masked, "message dropped: its code expired before it could be delivered");
                self.store
                    .abandon_message(&msg.id, "expired", "code expired before delivery")
                    .await
            }
            Err(Failure::Unreadable) => {
                tracing::error!(message_id = %msg.id, "message dropped: payload cannot be opened (was the server secret changed?)");
                self.store
                    .abandon_message(&msg.id, "failed", "payload cannot be opened")
                    .await
            }
            Err(Failure::Rejected(e)) => {
                tracing::error!(message_id = %msg.id, channel = %msg.channel, to = %msg.recipient_masked, attempt = msg.attempts, error = %e, "message given up: the provider refused it permanently");
                self.store.abandon_message(&msg.id, "failed", &e).await
            }
            Err(Failure::Send(e)) if msg.attempts >= self.config.max_attempts as i64 => {
                tracing::error!(message_id = %msg.id, to = %msg.recipient_masked, attempt = msg.attempts, error = %e, "message given up after the last try");
                self.store.abandon_message(&msg.id, "failed", &e).await
            }
            Err(Failure::Send(e)) => {
                let backoff = self
                    .config
                    .retry_base_ms
                    .saturating_mul(1u64 << (msg.attempts.clamp(1, 20) - 1))
                    .min(self.config.retry_max_ms);
                tracing::warn!(message_id = %msg.id, to = %msg.recipient_masked, attempt = msg.attempts, retry_in_ms = backoff, error = %e, "message delivery failed; will retry");
                self.store
                    .retry_message(&msg.id, now + backoff as i64, &e)
                    .await
            }
        };
        if let Err(e) = outcome {
            tracing::error!(message_id = %msg.id, error = %e, "could not record the delivery outcome; the lease will expire and it will be retried");
        }
        None
    }

    /// One try; `Ok(true)` when it was a development delivery (only logged).
    async fn try_deliver(&self, msg: &ClaimedMessage) -> Result<bool, Failure> {
        if ms(self.clock.now()) >= msg.not_after {
            return Err(Failure::Expired);
        }
        let sealed = msg.payload.as_deref().ok_or(Failure::Unreadable)?;
        let content = CodeMessage::open(&self.keys, sealed).ok_or(Failure::Unreadable)?;
        let timeout = Duration::from_secs(self.config.send_timeout_secs);
        let dev = match msg.channel.as_str() {
            "email" => {
                let email = content
                    .render_email(&self.product_name)
                    .map_err(|e| Failure::Send(format!("rendering failed: {e}")))?;
                match tokio::time::timeout(timeout, self.mailer.send(&content.to, &email)).await {
                    Ok(Ok(())) => self.mailer.is_dev(),
                    Ok(Err(e)) => return Err(Failure::Send(format!("{e:#}"))),
                    Err(_) => return Err(no_answer(timeout)),
                }
            }
            "sms" => {
                // The last line of defence: whatever queued it, SMS only goes to allowed countries.
                let allowed = PhoneNumber::parse(&content.to, &self.phone_policy)
                    .is_ok_and(|n| n.e164() == content.to);
                if !allowed {
                    return Err(Failure::Rejected(
                        "the number's country is not in `phone.allowed_countries`".into(),
                    ));
                }
                let body = content.render_sms(&self.product_name, &self.public_host);
                let sms = OutgoingSms {
                    id: msg.id.as_str(),
                    to: &content.to,
                    body: &body,
                    code: &content.code,
                    purpose: content.purpose,
                    expires_at_ms: content.expires_at,
                };
                // The signature is checked by another system against its own wall clock, so it
                // is dated by the wall clock, not the injected one.
                let now_unix = time::OffsetDateTime::now_utc().unix_timestamp();
                match tokio::time::timeout(timeout, self.sms.send(&sms, now_unix)).await {
                    Ok(Ok(())) => self.sms.is_log(),
                    Ok(Err(SmsError::Temporary(e))) => return Err(Failure::Send(e)),
                    Ok(Err(SmsError::Permanent(e))) => return Err(Failure::Rejected(e)),
                    Err(_) => return Err(no_answer(timeout)),
                }
            }
            other => {
                return Err(Failure::Rejected(format!(
                    "unknown delivery channel {other:?}"
                )))
            }
        };
        if dev {
            tracing::info!(target: "latchkey::dev_outbox", channel = %msg.channel, to = %msg.recipient_masked, code = %content.code, "dev mode: verification code");
        }
        Ok(dev)
    }
}

fn no_answer(timeout: Duration) -> Failure {
    Failure::Send(format!("no answer within {} s", timeout.as_secs()))
}

struct Delivered {
    id: MessageId,
    /// Only logged (development): the payload stays for the outbox page.
    dev: bool,
}

enum Failure {
    Expired,
    Unreadable,
    /// Worth another try (with backoff).
    Send(String),
    /// Refused for good (an invalid number, bad credentials): given up at once.
    Rejected(String),
}
