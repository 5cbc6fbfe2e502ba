//! The `lockout` section: how consecutive wrong codes lock an identifier or an account, and the
//! share of that budget kept for the owner's trusted browsers.

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// Consecutive wrong codes, counted in the database per key (an identifier, an account, the
/// account's trusted browsers) across codes, flows, IPs and instances. A new code never resets
/// a count; a successful sign-in to the account (or sign-up with the identifier) does, and so
/// does an operator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutConfig {
    /// Consecutive wrong codes that lock a key for a while.
    pub max_failures: u32,
    /// How long the first lock lasts. Each further lock of the same key (without a success in
    /// between) lasts twice as long as the one before, up to `max_cooldown_secs`.
    pub cooldown_secs: u64,
    pub max_cooldown_secs: u64,
    /// Consecutive wrong codes after which a key stays locked (a lock running out does not
    /// reset the count) until a successful sign-in to the account (from a trusted browser, whose
    /// share is apart) or an operator's reset.
    pub stop_after_failures: u32,
    /// Consecutive wrong codes kept for the account's trusted browsers (those holding the device
    /// cookie of an earlier sign-in to the account): counted apart from everyone else's, so an
    /// attacker who locks the account cannot lock its owner out of their usual browser. They
    /// also get their own send budget per identifier. 0 turns trusted browsers off.
    pub device_failures: u32,
    /// Days a trusted browser's device cookie lasts (browsers cap cookies at 400 days).
    pub device_ttl_days: u32,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        Self {
            max_failures: 10,
            cooldown_secs: 3600,
            max_cooldown_secs: 24 * 3600,
            stop_after_failures: 80,
            device_failures: 20,
            device_ttl_days: 365,
        }
    }
}

/// NIST SP 800-63B-4 §3.2.2: at most 100 consecutive failed attempts on one account.
const CONSECUTIVE_CAP: u64 = 100;

impl LockoutConfig {
    /// Checks the section; an error names the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.max_failures == 0 || u64::from(self.max_failures) > CONSECUTIVE_CAP {
            bail!("`lockout.max_failures`: must be between 1 and 100 (NIST SP 800-63B §3.2.2)");
        }
        if self.cooldown_secs == 0 {
            bail!("`lockout.cooldown_secs`: must be positive");
        }
        if self.max_cooldown_secs < self.cooldown_secs {
            bail!(
                "`lockout.max_cooldown_secs`: must be at least `lockout.cooldown_secs` ({})",
                self.cooldown_secs
            );
        }
        // ASVS 4.0.3 2.2.1: never more than 100 failed tries per hour for one key, however the
        // two settings combine (the first lock is the shortest).
        let per_hour = self.max_failures as u64 * 3600u64.div_ceil(self.cooldown_secs);
        if per_hour > CONSECUTIVE_CAP {
            bail!(
                "`lockout.max_failures` and `lockout.cooldown_secs`: together they allow {per_hour} failed codes per hour for one account; at most 100 are allowed (raise the cooldown or lower the failures)"
            );
        }
        if self.stop_after_failures < self.max_failures {
            bail!("`lockout.stop_after_failures`: must be at least `lockout.max_failures`");
        }
        let per_account = u64::from(self.stop_after_failures) + u64::from(self.device_failures);
        if per_account > CONSECUTIVE_CAP {
            bail!(
                "`lockout.stop_after_failures` and `lockout.device_failures`: together they allow {per_account} consecutive failed codes for one account; at most 100 are allowed (NIST SP 800-63B §3.2.2)"
            );
        }
        if !(1..=400).contains(&self.device_ttl_days) {
            bail!("`lockout.device_ttl_days`: must be between 1 and 400 (browsers keep no cookie longer)");
        }
        Ok(())
    }

    /// Whether trusted browsers get a share of their own.
    pub fn trusted_devices(&self) -> bool {
        self.device_failures > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(set: impl FnOnce(&mut LockoutConfig)) -> String {
        let mut c = LockoutConfig::default();
        set(&mut c);
        c.validate().expect_err("refused").to_string()
    }

    #[test]
    fn the_defaults_are_valid_and_keep_an_account_at_100_consecutive_failures() {
        let c = LockoutConfig::default();
        c.validate().unwrap();
        assert_eq!(c.stop_after_failures + c.device_failures, 100);
    }

    #[test]
    fn more_than_100_consecutive_failures_per_account_are_refused_naming_both_keys() {
        let err = refusal(|c| c.device_failures = 21);
        assert!(
            err.contains("lockout.stop_after_failures")
                && err.contains("lockout.device_failures")
                && err.contains("101"),
            "{err}"
        );
        let without_devices = LockoutConfig {
            stop_after_failures: 100,
            device_failures: 0,
            ..LockoutConfig::default()
        };
        without_devices.validate().unwrap();
    }

    #[test]
    fn a_stop_below_one_lock_and_a_cap_below_the_first_cooldown_are_refused() {
        assert!(refusal(|c| c.stop_after_failures = 9).contains("lockout.stop_after_failures"));
        assert!(refusal(|c| c.max_cooldown_secs = 60).contains("lockout.max_cooldown_secs"));
        assert!(refusal(|c| c.device_ttl_days = 401).contains("lockout.device_ttl_days"));
        assert!(refusal(|c| c.max_failures = 0).contains("lockout.max_failures"));
    }
}
