//! The `limits` section.

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// Rate limits, counted in the database (so they hold across restarts and instances). 0 turns
/// one off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Per identifier, across flows and codes: seconds between two sends.
    pub send_interval_secs: u64,
    pub sends_per_10_minutes: u32,
    pub sends_per_day: u32,
    /// Per client IP (IPv6: per `ipv6_prefix_len` prefix, and `ipv6_wide_factor` times as many
    /// per `ipv6_wide_prefix_len` prefix).
    pub ip_flows_per_10_seconds: u32,
    pub ip_attempts_per_10_seconds: u32,
    pub ip_sends_per_hour: u32,
    /// The prefix an IPv6 client counts by (one subscriber's network): 32–128.
    pub ipv6_prefix_len: u8,
    /// A wider prefix (one customer's allocation: providers hand out /56 and /48) whose per-IP
    /// limits are `ipv6_wide_factor` times the above, so a customer cannot multiply them by
    /// hopping between their networks. 32–127, shorter than `ipv6_prefix_len`.
    pub ipv6_wide_prefix_len: u8,
    /// 0 turns the wider buckets off.
    pub ipv6_wide_factor: u32,
    /// All SMS of the instance per hour (test numbers excluded); beyond it SMS fails closed.
    pub sms_per_hour: u32,
    /// SMS per hour to one number prefix before a pumping alarm is logged.
    pub sms_prefix_alarm_per_hour: u32,
    /// At most one email per account in this many seconds telling the owner that one of their
    /// identifiers reached its daily send cap or was locked after wrong codes.
    pub owner_notice_interval_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            send_interval_secs: 30,
            sends_per_10_minutes: 5,
            sends_per_day: 20,
            ip_flows_per_10_seconds: 5,
            ip_attempts_per_10_seconds: 3,
            ip_sends_per_hour: 20,
            ipv6_prefix_len: 64,
            ipv6_wide_prefix_len: 48,
            ipv6_wide_factor: 8,
            sms_per_hour: 30,
            sms_prefix_alarm_per_hour: 10,
            owner_notice_interval_secs: 24 * 3600,
        }
    }
}

impl LimitsConfig {
    /// Every limit off, and no owner notices (load tests on loopback; the test suite's default).
    pub fn off() -> Self {
        Self {
            send_interval_secs: 0,
            sends_per_10_minutes: 0,
            sends_per_day: 0,
            ip_flows_per_10_seconds: 0,
            ip_attempts_per_10_seconds: 0,
            ip_sends_per_hour: 0,
            sms_per_hour: 0,
            sms_prefix_alarm_per_hour: 0,
            owner_notice_interval_secs: 0,
            ..Self::default()
        }
    }

    /// Checks the section; an error names the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(32..=128).contains(&self.ipv6_prefix_len) {
            bail!(
                "`limits.ipv6_prefix_len`: must be between 32 and 128, got {}",
                self.ipv6_prefix_len
            );
        }
        if self.ipv6_wide_factor > 0
            && !(32..self.ipv6_prefix_len).contains(&self.ipv6_wide_prefix_len)
        {
            bail!(
                "`limits.ipv6_wide_prefix_len`: must be at least 32 and shorter than `limits.ipv6_prefix_len` ({}), got {} (or set `limits.ipv6_wide_factor` to 0)",
                self.ipv6_prefix_len,
                self.ipv6_wide_prefix_len
            );
        }
        if self.ipv6_wide_factor > 1000 {
            bail!("`limits.ipv6_wide_factor`: must be at most 1000");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_prefix_lengths_are_checked_naming_the_key() {
        LimitsConfig::default().validate().unwrap();
        let with = |narrow: u8, wide: u8, factor: u32| LimitsConfig {
            ipv6_prefix_len: narrow,
            ipv6_wide_prefix_len: wide,
            ipv6_wide_factor: factor,
            ..LimitsConfig::default()
        };
        let err = |c: LimitsConfig| c.validate().unwrap_err().to_string();
        assert!(err(with(129, 48, 8)).contains("`limits.ipv6_prefix_len`"));
        assert!(err(with(31, 24, 8)).contains("`limits.ipv6_prefix_len`"));
        assert!(err(with(64, 64, 8)).contains("`limits.ipv6_wide_prefix_len`"));
        assert!(err(with(64, 16, 8)).contains("`limits.ipv6_wide_prefix_len`"));
        assert!(err(with(64, 48, 1001)).contains("`limits.ipv6_wide_factor`"));
        with(56, 48, 4).validate().unwrap();
        with(128, 32, 2).validate().unwrap();
        // Without the wider buckets their prefix is not looked at.
        with(64, 64, 0).validate().unwrap();
    }
}
