//! The `limits` section.

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
    /// Per client IP (IPv6: per /64).
    pub ip_flows_per_10_seconds: u32,
    pub ip_attempts_per_10_seconds: u32,
    pub ip_sends_per_hour: u32,
    /// All SMS of the instance per hour (test numbers excluded); beyond it SMS fails closed.
    pub sms_per_hour: u32,
    /// SMS per hour to one number prefix before a pumping alarm is logged.
    pub sms_prefix_alarm_per_hour: u32,
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
            sms_per_hour: 30,
            sms_prefix_alarm_per_hour: 10,
        }
    }
}

impl LimitsConfig {
    /// Every limit off (load tests on loopback; the test suite's default).
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
        }
    }
}
