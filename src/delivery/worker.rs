//! The outbox worker: claims due messages, renders and delivers them, retries with backoff.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::logout::{LogoutError, LogoutMessage, LogoutSender};
use super::mail::Mailer;
use super::message::CodeMessage;
use super::sms::{OutgoingSms, SmsError, SmsSender};
use crate::clock::SharedClock;
use crate::config::OutboxConfig;
use crate::crypto::Keys;
use crate::domain::{Channel, MessageId, OutboxChannel, PhoneNumber};
use crate::store::{Claim, ClaimedMessage, GiveUp, NewMessage, Store};

/// The request side of the outbox: hands messages stored claimed by this process to its worker
/// once their transaction has committed, or wakes the worker to look at the table.
#[derive(Clone)]
pub struct OutboxSignal(Arc<SignalInner>);

struct SignalInner {
    notify: Notify,
    handed: mpsc::UnboundedSender<ClaimedMessage>,
    worker_id: String,
    lease: time::Duration,
}

/// What the worker receives from [`OutboxSignal::hand_over`].
pub struct HandedMessages(mpsc::UnboundedReceiver<ClaimedMessage>);

impl OutboxSignal {
    /// A signal for the worker `worker_id`, whose claims last `lease`.
    pub fn new(worker_id: String, lease: time::Duration) -> (Self, HandedMessages) {
        let (handed, receiver) = mpsc::unbounded_channel();
        (
            Self(Arc::new(SignalInner {
                notify: Notify::new(),
                handed,
                worker_id,
                lease,
            })),
            HandedMessages(receiver),
        )
    }

    /// The claim a new message is stored with at `now`: this process's worker, one lease.
    pub fn claim(&self, now: time::OffsetDateTime) -> Claim {
        Claim {
            worker: self.0.worker_id.clone(),
            until: now + self.0.lease,
        }
    }

    /// Call after the message's transaction committed: a claimed message goes to the worker in
    /// memory; any other makes the worker look at the table.
    pub fn hand_over(&self, message: &NewMessage) {
        match message.handed_over() {
            // A stopped worker cannot take it: the claim's lease runs out and the table has it.
            Some(m) => {
                let _ = self.0.handed.send(m);
            }
            None => self.wake(),
        }
    }

    /// Makes the worker claim due messages from the table now.
    pub fn wake(&self) {
        self.0.notify.notify_one();
    }
}

/// Messages claimed from the table at once, at the most.
const BATCH: i64 = 32;

/// Deliveries in flight at once, at the most (each holds an SMTP connection or an HTTP request).
const IN_FLIGHT: usize = 64;

pub struct OutboxWorker {
    pub store: Store,
    pub keys: Arc<Keys>,
    pub clock: SharedClock,
    pub mailer: Arc<Mailer>,
    pub sms: Arc<SmsSender>,
    /// Back-channel logout tokens to OpenID Connect clients.
    pub logout: Arc<LogoutSender>,
    pub config: OutboxConfig,
    pub product_name: String,
    /// Whether email subjects carry the code (`codes.in_email_subject`).
    pub code_in_subject: bool,
    /// The public host SMS codes are bound to (the last line of the text).
    pub public_host: String,
    /// The countries SMS may go to, checked again before every send.
    pub phone_policy: crate::domain::PhonePolicy,
    pub signal: OutboxSignal,
    /// Identifies this process's claims, so a graceful stop can hand them back.
    pub worker_id: String,
}

impl OutboxWorker {
    /// How long a claim lasts: the longest possible send and a margin. After that, a worker that
    /// died mid-send is presumed dead and another instance takes the message.
    pub fn lease(config: &OutboxConfig) -> time::Duration {
        time::Duration::seconds(config.send_timeout_secs as i64 + 5)
    }

    /// Runs until `shutdown` turns true, then waits for the deliveries in flight and returns
    /// unfinished claims to the queue.
    pub fn spawn(
        self,
        handed: HandedMessages,
        mut shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let mut handed = handed.0;
        tokio::spawn(async move {
            let this = Arc::new(self);
            let poll = Duration::from_millis(this.config.poll_interval_ms);
            let slots = Arc::new(Semaphore::new(IN_FLIGHT));
            // Deliveries are recorded by one task, in batches: whatever finished while the last
            // batch was being written goes in the next statement group.
            let (delivered, recorder) = mpsc::unbounded_channel::<Delivered>();
            let recorder = tokio::spawn(record_deliveries(this.clone(), recorder));
            let start = |m: ClaimedMessage, slot: OwnedSemaphorePermit| {
                let (this, delivered) = (this.clone(), delivered.clone());
                tokio::spawn(async move {
                    if let Some(d) = this.deliver(m).await {
                        let _ = delivered.send(d);
                    }
                    drop(slot);
                });
            };
            let mut look_at_table = true;
            // A fixed deadline, not a sleep restarted every turn: a steady stream of handed
            // messages must not keep the table's retries and expired leases from being polled.
            let mut next_poll = tokio::time::Instant::now() + poll;
            loop {
                if *shutdown.borrow() {
                    break;
                }
                if look_at_table {
                    look_at_table = false;
                    next_poll = tokio::time::Instant::now() + poll;
                    match this.claim_due().await {
                        Ok(claimed) => {
                            // A full batch: there may be more due right away.
                            look_at_table = claimed.len() as i64 == BATCH;
                            for m in claimed {
                                let Ok(slot) = slots.clone().acquire_owned().await else {
                                    break;
                                };
                                start(m, slot);
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "outbox worker could not read the queue; retrying")
                        }
                    }
                    continue;
                }
                tokio::select! {
                    Some(m) = handed.recv() => {
                        let Ok(slot) = slots.clone().acquire_owned().await else { break };
                        if this.clock.now() < m.claimed_until {
                            start(m, slot);
                        }
                        // Otherwise it waited beyond its lease (an overloaded process): the table
                        // has it, and whoever claims it there sends it once.
                    }
                    _ = this.signal.0.notify.notified() => look_at_table = true,
                    _ = tokio::time::sleep_until(next_poll) => look_at_table = true,
                    _ = shutdown.changed() => {}
                }
            }
            // Let the deliveries in flight finish (each is bounded by the send timeout) and
            // record them before handing the rest back.
            let _ = slots.acquire_many(IN_FLIGHT as u32).await;
            drop(delivered);
            let _ = recorder.await;
            match this.store.release_claims(&this.worker_id).await {
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

    /// Claims due messages from the table (new ones another process queued unclaimed, retries,
    /// and those whose lease ran out).
    async fn claim_due(&self) -> anyhow::Result<Vec<ClaimedMessage>> {
        let now = self.clock.now();
        self.store
            .claim_messages(&self.worker_id, now, now + Self::lease(&self.config), BATCH)
            .await
    }

    /// Claims the due messages and delivers them; returns how many were claimed. (The running
    /// worker does the same through [`spawn`](Self::spawn), with deliveries in parallel.)
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        let claimed = self.claim_due().await?;
        let n = claimed.len();
        let delivered: Vec<Delivered> =
            futures_util::future::join_all(claimed.into_iter().map(|m| self.deliver(m)))
                .await
                .into_iter()
                .flatten()
                .collect();
        self.record(delivered).await;
        Ok(n)
    }

    /// Records deliveries in at most two statements groups (dev ones keep their payload for the
    /// /dev/outbox page; real ones are erased).
    async fn record(&self, delivered: Vec<Delivered>) {
        let now = self.clock.now();
        let (dev, real): (Vec<Delivered>, Vec<Delivered>) =
            delivered.into_iter().partition(|d| d.dev);
        for (delivered, keep_payload) in [(real, false), (dev, true)] {
            let ids: Vec<MessageId> = delivered.into_iter().map(|d| d.id).collect();
            if let Err(e) = self.store.mark_messages_sent(&ids, now, keep_payload).await {
                tracing::error!(error = %e, "could not record deliveries; their leases will expire and they may be sent again");
            }
        }
    }

    /// One delivery try. Returns a delivered message, which the caller records for the whole
    /// batch at once; failures are recorded here.
    async fn deliver(&self, msg: ClaimedMessage) -> Option<Delivered> {
        let result = self.try_deliver(&msg).await;
        let now = self.clock.now();
        let outcome = match result {
            Ok(dev) => {
                tracing::info!(message_id = %msg.id, channel = %msg.channel, to = %msg.recipient_masked, attempt = msg.attempts, "message delivered");
                return Some(Delivered { id: msg.id, dev });
            }
            Err(Failure::Expired) => {
                tracing::warn!(message_id = %msg.id, to = %msg.recipient_masked, "message dropped: its code expired before it could be delivered");
                self.store
                    .abandon_message(&msg.id, GiveUp::Expired, "code expired before delivery")
                    .await
            }
            Err(Failure::Unreadable) => {
                tracing::error!(message_id = %msg.id, "message dropped: payload cannot be opened (was the server secret changed?)");
                self.store
                    .abandon_message(&msg.id, GiveUp::Failed, "payload cannot be opened")
                    .await
            }
            Err(Failure::Rejected(e)) => {
                tracing::error!(message_id = %msg.id, channel = %msg.channel, to = %msg.recipient_masked, attempt = msg.attempts, error = %e, "message given up: the provider refused it permanently");
                self.store
                    .abandon_message(&msg.id, GiveUp::Failed, &e)
                    .await
            }
            // A logout is retried until its `not_after` (a day): a client may be down longer
            // than a code's few tries last.
            Err(Failure::Send(e))
                if msg.attempts >= self.config.max_attempts as i64
                    && msg.channel != OutboxChannel::BackchannelLogout =>
            {
                tracing::error!(message_id = %msg.id, to = %msg.recipient_masked, attempt = msg.attempts, error = %e, "message given up after the last try");
                self.store
                    .abandon_message(&msg.id, GiveUp::Failed, &e)
                    .await
            }
            Err(Failure::Send(e)) => {
                let backoff = self
                    .config
                    .retry_base_ms
                    .saturating_mul(1u64 << (msg.attempts.clamp(1, 20) - 1))
                    .min(self.config.retry_max_ms);
                tracing::warn!(message_id = %msg.id, to = %msg.recipient_masked, attempt = msg.attempts, retry_in_ms = backoff, error = %e, "message delivery failed; will retry");
                self.store
                    .retry_message(&msg.id, now + Duration::from_millis(backoff), &e)
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
        if self.clock.now() >= msg.not_after {
            return Err(Failure::Expired);
        }
        let sealed = msg.payload.as_deref().ok_or(Failure::Unreadable)?;
        let channel = match msg.channel {
            OutboxChannel::Email => Channel::Email,
            OutboxChannel::Sms => Channel::Sms,
            OutboxChannel::BackchannelLogout => return self.send_logout(sealed).await,
        };
        let content = CodeMessage::open(&self.keys, sealed).ok_or(Failure::Unreadable)?;
        let timeout = Duration::from_secs(self.config.send_timeout_secs);
        let dev = match channel {
            Channel::Email => {
                let email = content
                    .render_email(&self.product_name, self.code_in_subject)
                    .map_err(|e| Failure::Send(format!("rendering failed: {e}")))?;
                // A send whose final answer was lost (or timed out) may have been delivered; it
                // is retried after the backoff all the same: a duplicate of the same code is a
                // far smaller harm than a lost one, and the backoff keeps it from looping.
                match tokio::time::timeout(timeout, self.mailer.send(&content.to, &email)).await {
                    Ok(Ok(())) => self.mailer.is_dev(),
                    Ok(Err(e)) => return Err(Failure::Send(format!("{e:#}"))),
                    Err(_) => return Err(no_answer(timeout)),
                }
            }
            Channel::Sms => {
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
        };
        if dev {
            tracing::info!(target: "latchkey::dev_outbox", channel = %msg.channel, to = %msg.recipient_masked, code = %content.code, "dev mode: verification code");
        }
        Ok(dev)
    }
}

impl OutboxWorker {
    /// A back-channel logout token to its client.
    async fn send_logout(&self, sealed: &[u8]) -> Result<bool, Failure> {
        let logout = LogoutMessage::open(&self.keys, sealed).ok_or(Failure::Unreadable)?;
        match self.logout.send(&logout).await {
            Ok(()) => Ok(false),
            Err(LogoutError::Temporary(e)) => Err(Failure::Send(e)),
            Err(LogoutError::Permanent(e)) => Err(Failure::Rejected(e)),
        }
    }
}

fn no_answer(timeout: Duration) -> Failure {
    Failure::Send(format!("no answer within {} s", timeout.as_secs()))
}

/// Records deliveries as they finish, all that are waiting in one go, until every sender is gone.
async fn record_deliveries(
    worker: Arc<OutboxWorker>,
    mut finished: mpsc::UnboundedReceiver<Delivered>,
) {
    while let Some(first) = finished.recv().await {
        let mut batch = vec![first];
        while let Ok(d) = finished.try_recv() {
            batch.push(d);
        }
        worker.record(batch).await;
    }
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
