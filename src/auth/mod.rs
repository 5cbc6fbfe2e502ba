//! The sign-up / sign-in state machine. The hosted pages and the JSON API call these
//! functions; they take `now` from the injected clock and know nothing about HTTP.
//!
//! A flow is: identifier → code sent → code attempted (≤ `max_attempts` tries per code,
//! resend after a cooldown replaces the code) → complete (user and/or session created in the
//! same transaction that consumes the code). All state is in the database, referenced by the
//! flow id, so refresh, back, a second tab or a restart never corrupt it.

mod devices;
mod flow;
mod limits;
mod notices;
mod profile;
mod session_cache;
mod session_rules;

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

pub use flow::{
    AttemptError, AttemptTarget, Attempted, Factor, FlowError, FlowKind, FlowView, PrepareTarget,
    ResendError, SignedIn, StartError, VerificationState, VerificationStatus, TEST_CODE,
};
pub use limits::ip_buckets;
pub use profile::{PendingAction, ProfileError};
pub use session_cache::{forget_revoked, SessionCache, REVOCATION_POLL, REVOCATION_WINDOW};

use crate::clock::SharedClock;
use crate::config::{LimitsConfig, LockoutConfig, Settings};
use crate::crypto::Keys;
use crate::delivery::OutboxSignal;
use crate::domain::{
    Accepts, AuditKind, AuditOutcome, EmailAddress, Identifier, PersonName, PhonePolicy, SessionId,
    TestMode, UserId,
};
use crate::store::{Store, StoredIdentifier, StoredUser};

/// Numbers that govern flows, codes and sessions (all from configuration).
#[derive(Debug, Clone)]
pub struct Policy {
    pub code_length: usize,
    pub code_ttl: Duration,
    pub max_attempts: u32,
    pub resend_cooldown: Duration,
    pub flow_idle_ttl: Duration,
    pub session_ttl: Duration,
    /// A session unused this long ends (`None`: never).
    pub session_inactivity_timeout: Option<Duration>,
    /// How recent a session's last code must be for actions that need one.
    pub reverification: Duration,
    pub allow_account_deletion: bool,
    /// Consecutive wrong codes: locks, their escalation, the stop, trusted browsers' share.
    pub lockout: LockoutConfig,
    /// Test identifiers get no message and accept [`TEST_CODE`].
    pub test_mode: TestMode,
    /// Kinds of identifiers a sign-in code may be sent to.
    pub factor_kinds: Accepts,
    /// Kinds of identifiers a sign-up must have.
    pub required: Accepts,
    pub limits: LimitsConfig,
    /// Enumeration protection "strict": sign-in with an unknown identifier and sign-up with a
    /// taken one look exactly like the real thing (decoy verifications).
    pub enumeration_strict: bool,
    /// The hosted pages notices link to.
    pub links: Links,
    pub phone_policy: PhonePolicy,
    /// OpenID Connect clients with a `backchannel_logout_uri`: told when a session that signed
    /// into them ends.
    pub logout_clients: Vec<String>,
}

/// Full URLs of the hosted pages a notice sends people to (auth knows no routes).
#[derive(Debug, Clone)]
pub struct Links {
    /// For a person who tried to sign in without an account.
    pub sign_up: String,
    /// For a person who tried to sign up with an identifier that has an account.
    pub sign_in: String,
}

impl Policy {
    /// The state machine's share of the validated settings.
    pub fn from_settings(settings: &Settings, links: Links) -> Self {
        let auth = &settings.auth;
        Policy {
            code_length: auth.code_length,
            code_ttl: auth.code_ttl,
            max_attempts: auth.code_max_attempts,
            resend_cooldown: auth.resend_cooldown,
            flow_idle_ttl: auth.flow_idle_ttl,
            session_ttl: auth.session_ttl,
            session_inactivity_timeout: auth.session_inactivity_timeout,
            reverification: auth.reverification,
            allow_account_deletion: auth.allow_account_deletion,
            lockout: auth.lockout.clone(),
            test_mode: auth.test_mode.clone(),
            factor_kinds: settings.identifiers.sign_in(),
            required: settings.identifiers.sign_up_required(),
            limits: auth.limits.clone(),
            enumeration_strict: auth.enumeration_strict,
            links,
            phone_policy: settings.phone_policy.clone(),
            logout_clients: settings
                .oidc
                .clients
                .iter()
                .filter(|c| c.backchannel_logout_uri.is_some())
                .map(|c| c.id.clone())
                .collect(),
        }
    }
}

/// Who is making a request, as far as the state machine cares.
#[derive(Debug, Clone, Default)]
pub struct Client<'a> {
    /// The browser's pre-session cookie; a flow started with one can only be continued with it.
    pub browser: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub ip: Option<&'a str>,
    /// A native app (the API with a bearer client token instead of cookies): `browser` is its
    /// client token, which also holds the session; a completed flow issues a new one.
    pub native: bool,
    /// The browser's device cookie, as presented (checked against an account when it matters).
    pub device: Option<&'a str>,
    /// The signed-in session taking part (flows on /user belong to the session that started
    /// them; only it may continue them).
    pub session: Option<&'a SessionId>,
}

/// The signed-in person behind a session cookie.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub session_id: SessionId,
    pub user_id: UserId,
    /// The primary email address, if the account has one.
    pub email: Option<EmailAddress>,
    /// Every identifier of the account: emails first, primary first.
    pub identifiers: Vec<StoredIdentifier>,
    pub joined_at: OffsetDateTime,
    pub session_expires_at: OffsetDateTime,
    pub session_created_at: OffsetDateTime,
    /// When this session last verified a code (its sign-in or a reverification).
    pub verified_at: OffsetDateTime,
    /// How the session was authenticated, besides "otp": "email", "sms".
    pub amr: Vec<String>,
    pub first_name: Option<PersonName>,
    pub last_name: Option<PersonName>,
}

/// The state machine and everything it needs. Cheap to share behind an `Arc`.
pub struct Auth {
    pub(crate) store: Store,
    pub(crate) keys: Arc<Keys>,
    pub(crate) clock: SharedClock,
    pub(crate) policy: Policy,
    pub(crate) outbox: OutboxSignal,
    /// Live sessions this process has read (the session-token verify endpoint).
    pub(crate) sessions: Arc<SessionCache>,
}

impl Auth {
    pub fn new(
        store: Store,
        keys: Arc<Keys>,
        clock: SharedClock,
        policy: Policy,
        outbox: OutboxSignal,
    ) -> Self {
        Self {
            store,
            keys,
            clock,
            policy,
            outbox,
            sessions: Arc::new(SessionCache::default()),
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The keys, to share with the OpenID Connect provider.
    pub fn keys_arc(&self) -> Arc<Keys> {
        self.keys.clone()
    }

    /// The session a cookie token belongs to, if it is live, with its user.
    pub async fn current_user(&self, token: &str) -> anyhow::Result<Option<CurrentUser>> {
        if token.len() != 43 {
            return Ok(None);
        }
        let hash = self.keys.token_hash(token);
        let now = self.now();
        let session = self.store.find_session(&hash, now).await?;
        Ok(self.in_use(session, now).await)
    }

    /// A session found by its token, if it is still in use at `now` (the inactivity timeout);
    /// its "last active" is written when it is a minute old.
    async fn in_use(
        &self,
        session: Option<crate::store::SessionUser>,
        now: OffsetDateTime,
    ) -> Option<CurrentUser> {
        let session = session?;
        let timeout = self.policy.session_inactivity_timeout.map(duration);
        if !session_rules::in_use(session.last_active_at, timeout, now) {
            return None;
        }
        if session_rules::needs_touch(session.last_active_at, now) {
            if let Err(e) = self.store.touch_session(&session.session_id, now).await {
                tracing::warn!(error = %e, "could not record a session's activity");
            }
        }
        Some(Self::signed_in_user(session))
    }

    /// The sessions of the signed-in person that are in use, most recently active first, at
    /// most `limit`.
    pub async fn devices(
        &self,
        user: &CurrentUser,
        limit: i64,
    ) -> anyhow::Result<Vec<crate::store::Device>> {
        let now = self.now();
        let found = self.store.user_sessions(&user.user_id, now, limit).await?;
        Ok(self.in_use_only(found, now))
    }

    /// The devices whose session the inactivity timeout has not ended.
    fn in_use_only(
        &self,
        devices: Vec<crate::store::Device>,
        now: OffsetDateTime,
    ) -> Vec<crate::store::Device> {
        let timeout = self.policy.session_inactivity_timeout.map(duration);
        devices
            .into_iter()
            .filter(|d| session_rules::in_use(d.last_active_at, timeout, now))
            .collect()
    }

    /// An account by id: when it was created, its name and identifiers.
    pub async fn user(&self, id: &UserId) -> anyhow::Result<Option<StoredUser>> {
        self.store.find_user(id).await
    }

    /// Sets the signed-in person's name (`None`: not given), with a `name_changed` event in the
    /// same unit; nothing is written when nothing changes.
    pub async fn set_names(
        &self,
        user: &CurrentUser,
        first: Option<PersonName>,
        last: Option<PersonName>,
        client: &Client<'_>,
    ) -> anyhow::Result<()> {
        if first == user.first_name && last == user.last_name {
            return Ok(());
        }
        let event = self.audit_event(
            AuditKind::NameChanged,
            AuditOutcome::Success,
            Some(&user.user_id),
            None,
            None,
            client,
        );
        self.store
            .update_names(&user.user_id, first, last, event, self.now())
            .await?;
        tracing::info!(event = "name_changed", user_id = %user.user_id, "name changed");
        Ok(())
    }

    /// The owner of the live session `id` (named by a session token): from this process's
    /// cache of live sessions, or read (and remembered) once.
    pub async fn session_owner(&self, id: &SessionId) -> anyhow::Result<Option<UserId>> {
        let now = self.now();
        if let Some(owner) = self.sessions.owner(id, now) {
            return Ok(Some(owner));
        }
        let Some((owner, expires_at, last_active_at)) = self.store.session_owner(id, now).await?
        else {
            return Ok(None);
        };
        let timeout = self.policy.session_inactivity_timeout.map(duration);
        if !session_rules::in_use(last_active_at, timeout, now) {
            return Ok(None);
        }
        self.sessions
            .remember(id.clone(), owner.clone(), expires_at, now);
        Ok(Some(owner))
    }

    /// This process's cache of live sessions (for the revocation log's reader).
    pub fn session_cache(&self) -> Arc<SessionCache> {
        self.sessions.clone()
    }

    /// The session a native client's token holds, if it is live, with its user.
    pub async fn current_client_user(&self, token: &str) -> anyhow::Result<Option<CurrentUser>> {
        if token.len() != 43 {
            return Ok(None);
        }
        let binding = self.keys.browser_binding(token);
        let now = self.now();
        let session = self.store.find_client_session(&binding, now).await?;
        Ok(self.in_use(session, now).await)
    }

    fn signed_in_user(session: crate::store::SessionUser) -> CurrentUser {
        let email = session
            .identifiers
            .iter()
            .find_map(|s| match &s.identifier {
                Identifier::Email(e) if s.is_primary => Some(e.clone()),
                _ => None,
            });
        CurrentUser {
            session_id: session.session_id,
            user_id: session.user_id,
            email,
            identifiers: session.identifiers,
            joined_at: session.user_created_at,
            session_expires_at: session.expires_at,
            session_created_at: session.created_at,
            verified_at: session.verified_at,
            amr: session.amr,
            first_name: session.first_name,
            last_name: session.last_name,
        }
    }

    /// Ends a session: its row is deleted, so the token stops working everywhere at once, with
    /// its OpenID Connect grants (their refresh tokens die with them); in the same transaction
    /// a back-channel logout is queued for every client it signed into that asked for one.
    pub async fn sign_out(&self, user: &CurrentUser, client: &Client<'_>) -> anyhow::Result<()> {
        let now = self.now();
        let logouts = self.logouts(&user.user_id, &user.session_id, now);
        let queued = self
            .store
            .delete_session(&user.session_id, now, logouts)
            .await?;
        self.sessions.forget([&user.session_id]);
        for message in &queued {
            self.outbox.hand_over(message);
        }
        tracing::info!(event = "sign_out", session_id = %user.session_id, "signed out");
        let event = self.audit_event(
            AuditKind::SignOut,
            AuditOutcome::Success,
            Some(&user.user_id),
            None,
            None,
            client,
        );
        self.record_event(&event).await;
        Ok(())
    }

    /// Writes an event that has no unit of work of its own (sign-out); a failure to write it
    /// is logged, never the request's failure. Refusals (rate limits, locked identifiers) are
    /// logged but not written: a flood must not become write load, nor push a person's real
    /// events off their /user page (the lockout itself is written once, when it happens).
    pub(crate) async fn record_event(&self, event: &crate::store::AuditEvent) {
        if let Err(e) = self.store.record_audit(event, self.now()).await {
            tracing::warn!(error = %e, event = %event.event, "could not write an audit event");
        }
    }

    /// The profile page's reads in one: the person's devices in use (most recently active
    /// first, at most `devices`) and newest security events.
    pub async fn profile(
        &self,
        user: &CurrentUser,
        devices: i64,
    ) -> anyhow::Result<(Vec<crate::store::Device>, Vec<crate::store::AuditEntry>)> {
        let now = self.now();
        let (found, events) = self.store.profile(&user.user_id, now, devices, 20).await?;
        Ok((self.in_use_only(found, now), events))
    }
}

/// Whether a session last active at `last_active_at` is still in use at `now` under an
/// inactivity `timeout` (the OpenID Connect grants of a session follow the same rule).
pub fn session_in_use(
    last_active_at: OffsetDateTime,
    timeout: Option<Duration>,
    now: OffsetDateTime,
) -> bool {
    session_rules::in_use(last_active_at, timeout.map(duration), now)
}

/// Whether a use of a session last active at `last_active_at` should write "last active".
pub fn session_needs_touch(last_active_at: OffsetDateTime, now: OffsetDateTime) -> bool {
    session_rules::needs_touch(last_active_at, now)
}

/// The browser and system a user agent names (woothee's data set), parsed once per session at
/// sign-in; `None` when it names neither.
pub fn device_of(user_agent: &str) -> Option<(String, Option<String>)> {
    let r = woothee::parser::Parser::new().parse(user_agent)?;
    let known = |v: &str| (v != "UNKNOWN" && !v.is_empty()).then(|| v.to_string());
    match (known(r.name), known(r.os)) {
        (None, None) => None,
        (browser, os) => Some((browser.unwrap_or_else(|| "A browser".into()), os)),
    }
}

/// How long a back-channel logout is retried for a client that is down.
const LOGOUT_DELIVERY_WINDOW: time::Duration = time::Duration::DAY;

/// A configured duration in the clock's arithmetic (saturating: no setting is that long).
pub(crate) fn duration(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}
