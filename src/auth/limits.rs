//! Which rate limits apply to what (the buckets), and turning a refusal into a coarse wait.
//! The counting itself is in the database (`store::limits`), inside the unit of work it guards.

use std::net::IpAddr;

use time::{Duration, OffsetDateTime};

use super::{Auth, Client};
use crate::domain::Identifier;
use crate::store::{Guard, Limited};

const SECOND: Duration = Duration::SECOND;
const MINUTE: Duration = Duration::MINUTE;
const HOUR: Duration = Duration::HOUR;
const DAY: Duration = Duration::DAY;

fn guard(out: &mut Vec<Guard>, bucket: String, windows: &[(Duration, u32)]) {
    out.extend(Guard::new(bucket, windows));
}

/// The rate-limit key of a client address: IPv6 addresses count per /64 (one subscriber).
pub fn ip_key(ip: Option<&str>) -> Option<String> {
    // No address (never on TCP): one shared bucket, so the limits fail closed, not open.
    let Some(ip) = ip else {
        return Some("unknown".into());
    };
    match ip.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => Some(v4.to_string()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Some(v4.to_string()),
            None => {
                let s = v6.segments();
                Some(format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]))
            }
        },
    }
}

/// The prefix an SMS pumping alarm watches: "+" and the first five digits.
fn sms_prefix(e164: &str) -> String {
    e164.chars().take(6).collect()
}

impl Auth {
    /// Starting a flow: per client IP.
    pub(super) fn creation_guards(&self, client: &Client<'_>) -> Vec<Guard> {
        let l = &self.policy.limits;
        let mut out = Vec::new();
        if let Some(ip) = ip_key(client.ip) {
            let windows = [(10 * SECOND, l.ip_flows_per_10_seconds)];
            guard(&mut out, format!("ipflow:{ip}"), &windows);
        }
        out
    }

    /// Submitting a code: per client IP.
    pub(super) fn attempt_guards(&self, client: &Client<'_>) -> Vec<Guard> {
        let l = &self.policy.limits;
        let mut out = Vec::new();
        if let Some(ip) = ip_key(client.ip) {
            let windows = [(10 * SECOND, l.ip_attempts_per_10_seconds)];
            guard(&mut out, format!("ipcode:{ip}"), &windows);
        }
        out
    }

    /// Sending a message to `to`: per identifier (canonical form; one bucket, three windows),
    /// per client IP, and the instance's SMS budget (test numbers in test mode excluded).
    pub(super) fn send_guards(&self, to: &Identifier, client: &Client<'_>) -> Vec<Guard> {
        let l = &self.policy.limits;
        let mut out = Vec::new();
        let windows = [
            (Duration::seconds(l.send_interval_secs as i64), 1),
            (10 * MINUTE, l.sends_per_10_minutes),
            (DAY, l.sends_per_day),
        ];
        let key = format!("send:{}:{}", to.kind().as_str(), to.canonical());
        guard(&mut out, key, &windows);
        if let Some(ip) = ip_key(client.ip) {
            guard(
                &mut out,
                format!("ipsend:{ip}"),
                &[(HOUR, l.ip_sends_per_hour)],
            );
        }
        let test = self.policy.test_mode.covers(to);
        if matches!(to, Identifier::Phone(_)) && !test {
            guard(&mut out, "sms:all".into(), &[(HOUR, l.sms_per_hour)]);
        }
        out
    }

    /// A refusal as a coarse wait in seconds (10 s steps under a minute, whole minutes above),
    /// so the answer hints at no bucket. Logs the SMS budget running out.
    pub(super) async fn retry_after(&self, limited: &Limited, now: OffsetDateTime) -> u64 {
        if limited.bucket == "sms:all" {
            tracing::error!(event = "sms_budget_exhausted", "the hourly SMS budget (`limits.sms_per_hour`) is used up: SMS codes fail closed until it refills; email keeps working");
        }
        let bucket = limited.bucket.split(':').next().unwrap_or_default();
        tracing::warn!(
            event = "rate_limited",
            bucket,
            "request refused by a rate limit"
        );
        let reopens = self.store.limit_reopens_at(limited, now).await.unwrap_or(
            now + limited
                .windows
                .iter()
                .map(|(w, _)| *w)
                .max()
                .unwrap_or(Duration::ZERO),
        );
        coarse_wait(reopens - now)
    }

    /// After an SMS was queued: counts it for the prefix alarm, off the request's path (so a
    /// real SMS and a decoy's answer take the same time).
    pub(super) fn watch_sms(&self, to: &Identifier, now: OffsetDateTime) {
        let Identifier::Phone(phone) = to else {
            return;
        };
        let threshold = self.policy.limits.sms_prefix_alarm_per_hour;
        if threshold == 0 || self.policy.test_mode.covers(to) {
            return;
        }
        let prefix = sms_prefix(phone.e164());
        let store = self.store.clone();
        tokio::spawn(async move {
            watch_prefix(store, prefix, now, threshold).await;
        });
    }
}

async fn watch_prefix(
    store: crate::store::Store,
    prefix: String,
    now: OffsetDateTime,
    threshold: u32,
) {
    match store
        .count_event(&format!("smsprefix:{prefix}"), now, HOUR)
        .await
    {
        Ok(n) if n > threshold as i64 => {
            tracing::warn!(event = "sms_prefix_alarm", prefix = %prefix, sent_last_hour = n, "many SMS to one number prefix: possible SMS pumping (see `limits.sms_prefix_alarm_per_hour`, `phone.allowed_countries`)");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not count an SMS for the prefix alarm"),
    }
}

/// A wait in whole seconds, at least one, made coarse (10 s steps up to a minute, whole minutes
/// above) so the answer hints at no bucket or window.
pub(crate) fn coarse_wait(wait: Duration) -> u64 {
    let ms = wait.whole_milliseconds().max(1000) as u64;
    let secs = ms.div_ceil(1000);
    if secs <= 60 {
        secs.div_ceil(10) * 10
    } else {
        secs.div_ceil(60) * 60
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_coarse_and_never_zero() {
        assert_eq!(coarse_wait(Duration::ZERO), 10);
        assert_eq!(coarse_wait(-Duration::SECOND), 10);
        assert_eq!(coarse_wait(Duration::milliseconds(10_001)), 20);
        assert_eq!(coarse_wait(Duration::seconds(60)), 60);
        assert_eq!(coarse_wait(Duration::seconds(61)), 120);
        assert_eq!(coarse_wait(Duration::HOUR), 3600);
    }

    #[test]
    fn ipv6_addresses_share_their_64_bit_prefix() {
        assert_eq!(
            ip_key(Some("2001:db8:1:2:aaaa::1")),
            ip_key(Some("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            ip_key(Some("2001:db8:1:2::1")),
            ip_key(Some("2001:db8:1:3::1"))
        );
        assert_eq!(
            ip_key(Some("::ffff:203.0.113.7")).as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(ip_key(Some("203.0.113.7")).as_deref(), Some("203.0.113.7"));
        assert_eq!(ip_key(Some("not an ip")), None);
        assert_eq!(
            ip_key(None).as_deref(),
            Some("unknown"),
            "no address fails closed"
        );
    }
}
