//! Trusted browsers. A browser that completes a sign-in (or sign-up) gets a long-lived device
//! cookie bound to the account by an HMAC under the server's key (`Keys::device_token`: nothing
//! to store, nothing to forge, valid across restarts and instances). From then on its sign-ins
//! to that account draw on budgets of their own: a send bucket per identifier and a lockout key
//! per account (`device:user:<id>`), so someone who spends everyone else's budget (20 sends a
//! day, 10 wrong codes an hour) does not lock the owner out of their usual browser.
//!
//! What it costs: the trusted browsers' lockout share (`lockout.device_failures`) is taken out
//! of the 100 consecutive failures an account may see, so everyone else stops at
//! `lockout.stop_after_failures`; a thief of the owner's browser gets that share on top of the
//! shared one, never more than 100 in all. A decoy has no account, so no browser is ever
//! trusted for it, and nobody without the owner's cookie can tell the share exists.

use time::{Duration, OffsetDateTime};

use super::{Auth, Client};
use crate::domain::UserId;
use crate::store::LockRules;

/// Clock skew between instances a device cookie's issue time may show.
const SKEW: Duration = Duration::MINUTE;

/// Whether a device cookie issued at `issued_unix` (seconds) is live at `now`: younger than
/// `ttl_days`, and not issued in the future (beyond the skew between instances' clocks).
fn device_live(issued_unix: i64, now: OffsetDateTime, ttl_days: u32) -> bool {
    let Ok(issued) = OffsetDateTime::from_unix_timestamp(issued_unix) else {
        return false;
    };
    issued <= now + SKEW && now < issued + Duration::days(i64::from(ttl_days))
}

impl Auth {
    /// Whether this client is one of `account`'s trusted browsers: it presents a live device
    /// cookie made for that account (native apps have no cookies and never are).
    pub(super) fn trusted_by(
        &self,
        client: &Client<'_>,
        account: &UserId,
        now: OffsetDateTime,
    ) -> bool {
        let lockout = &self.policy.lockout;
        if client.native || !lockout.trusted_devices() {
            return false;
        }
        client
            .device
            .and_then(|token| self.keys.device_issued(account.as_str(), token))
            .is_some_and(|issued| device_live(issued, now, lockout.device_ttl_days))
    }

    /// A new device cookie for a browser that just signed in to `account`; `None` for a native
    /// app, or with trusted browsers off.
    pub(super) fn new_device_token(
        &self,
        client: &Client<'_>,
        account: &UserId,
        now: OffsetDateTime,
    ) -> Option<String> {
        (!client.native && self.policy.lockout.trusted_devices()).then(|| {
            self.keys
                .device_token(account.as_str(), now.unix_timestamp())
        })
    }

    /// The rules of every key but the trusted browsers'.
    pub(super) fn shared_lock_rules(&self) -> LockRules {
        let l = &self.policy.lockout;
        LockRules {
            max_failures: i64::from(l.max_failures),
            cooldown: Duration::seconds(l.cooldown_secs as i64),
            max_cooldown: Duration::seconds(l.max_cooldown_secs as i64),
            stop_after: i64::from(l.stop_after_failures),
        }
    }

    /// The rules of an account's trusted browsers: the same locks, and their own stop.
    pub(super) fn device_lock_rules(&self) -> LockRules {
        LockRules {
            stop_after: i64::from(self.policy.lockout.device_failures),
            ..self.shared_lock_rules()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-02 12:00 UTC);

    #[test]
    fn a_device_cookie_lives_for_its_days_and_never_comes_from_the_future() {
        let issued = NOW.unix_timestamp();
        assert!(device_live(issued, NOW, 365));
        assert!(device_live(issued, NOW + Duration::days(364), 365));
        assert!(!device_live(issued, NOW + Duration::days(365), 365));
        assert!(device_live(issued + 30, NOW, 365), "within the clock skew");
        assert!(!device_live(issued + 3600, NOW, 365), "issued in an hour");
        assert!(!device_live(i64::MAX, NOW, 365));
    }
}
