//! Which rate limits apply to what (the buckets), and turning a refusal into a coarse wait.
//! The counting itself is in the database (`store::limits`), inside the unit of work it guards.

use std::net::{IpAddr, Ipv6Addr};

use time::{Duration, OffsetDateTime};

use super::{Auth, Client};
use crate::config::LimitsConfig;
use crate::domain::Identifier;
use crate::store::{Guard, Limited};

const SECOND: Duration = Duration::SECOND;
const MINUTE: Duration = Duration::MINUTE;
const HOUR: Duration = Duration::HOUR;
const DAY: Duration = Duration::DAY;

fn guard(out: &mut Vec<Guard>, bucket: String, windows: &[(Duration, u32)]) {
    out.extend(Guard::new(bucket, windows));
}

/// One guard per bucket of the client's address, named `<name>:<bucket>`, of `limit` events per
/// `window` times the bucket's factor.
fn ip_guards(
    out: &mut Vec<Guard>,
    client: &Client<'_>,
    l: &LimitsConfig,
    name: &str,
    window: Duration,
    limit: u32,
) {
    for (bucket, factor) in ip_buckets(client.ip, l) {
        guard(
            out,
            format!("{name}:{bucket}"),
            &[(window, limit.saturating_mul(factor))],
        );
    }
}

/// The rate-limit buckets of a client address, each with the factor its limits are multiplied
/// by: an IPv4 address (or an IPv4-mapped IPv6 one) alone, ×1; an IPv6 address by its
/// `ipv6_prefix_len` prefix (one subscriber's network), ×1, and by its `ipv6_wide_prefix_len`
/// prefix (one customer's allocation), ×`ipv6_wide_factor`, so hopping between the 256–65,536
/// /64s of a /56 or /48 multiplies nothing beyond that factor. An address that does not parse
/// has none.
pub fn ip_buckets(ip: Option<&str>, limits: &LimitsConfig) -> Vec<(String, u32)> {
    // No address (never on TCP): one shared bucket, so the limits fail closed, not open.
    let Some(ip) = ip else {
        return vec![("unknown".into(), 1)];
    };
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return Vec::new();
    };
    let v6 = match ip {
        IpAddr::V4(v4) => return vec![(v4.to_string(), 1)],
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => return vec![(v4.to_string(), 1)],
            None => v6,
        },
    };
    let mut out = vec![(ipv6_prefix(v6, limits.ipv6_prefix_len), 1)];
    if limits.ipv6_wide_factor > 0 {
        out.push((
            ipv6_prefix(v6, limits.ipv6_wide_prefix_len),
            limits.ipv6_wide_factor,
        ));
    }
    out
}

/// `addr`'s network of prefix length `len` in CIDR notation (`2001:db8:1::/48`).
fn ipv6_prefix(addr: Ipv6Addr, len: u8) -> String {
    let len = u32::from(len.min(128));
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    format!("{}/{len}", Ipv6Addr::from(u128::from(addr) & mask))
}

/// The send bucket of an identifier: everyone's, or its account's trusted browsers'.
pub(super) fn send_bucket(to: &Identifier, trusted: bool) -> String {
    let share = if trusted { "senddevice" } else { "send" };
    format!("{share}:{}:{}", to.kind().as_str(), to.canonical())
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
        ip_guards(
            &mut out,
            client,
            l,
            "ipflow",
            10 * SECOND,
            l.ip_flows_per_10_seconds,
        );
        out
    }

    /// Submitting a code: per client IP.
    pub(super) fn attempt_guards(&self, client: &Client<'_>) -> Vec<Guard> {
        let l = &self.policy.limits;
        let mut out = Vec::new();
        ip_guards(
            &mut out,
            client,
            l,
            "ipcode",
            10 * SECOND,
            l.ip_attempts_per_10_seconds,
        );
        out
    }

    /// Sending a message to `to`: per identifier (canonical form; one bucket, three windows),
    /// per client IP, and the instance's SMS budget (test numbers in test mode excluded). A
    /// trusted browser of the identifier's account (`trusted`) has a bucket of its own per
    /// identifier, with the same windows: everyone else's sends do not use it up.
    pub(super) fn send_guards(
        &self,
        to: &Identifier,
        client: &Client<'_>,
        trusted: bool,
    ) -> Vec<Guard> {
        let l = &self.policy.limits;
        let mut out = Vec::new();
        let windows = [
            (Duration::seconds(l.send_interval_secs as i64), 1),
            (10 * MINUTE, l.sends_per_10_minutes),
            (DAY, l.sends_per_day),
        ];
        guard(&mut out, send_bucket(to, trusted), &windows);
        ip_guards(&mut out, client, l, "ipsend", HOUR, l.ip_sends_per_hour);
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

    fn keys(ip: &str, l: &LimitsConfig) -> Vec<(String, u32)> {
        ip_buckets(Some(ip), l)
    }

    #[test]
    fn ipv6_addresses_count_per_64_and_eight_times_as_much_per_48() {
        let l = LimitsConfig::default();
        assert_eq!(
            keys("2001:db8:1:2:aaaa::1", &l),
            [
                ("2001:db8:1:2::/64".to_string(), 1),
                ("2001:db8:1::/48".to_string(), 8)
            ]
        );
        assert_eq!(
            keys("2001:db8:1:2:aaaa::1", &l),
            keys("2001:db8:1:2:bbbb::2", &l)
        );
        let (a, b) = (keys("2001:db8:1:2::1", &l), keys("2001:db8:1:ff00::1", &l));
        assert_ne!(a[0], b[0], "another /64 is another subscriber");
        assert_eq!(a[1], b[1], "but the same /48");
        assert_ne!(keys("2001:db8:2::1", &l)[1], a[1]);
    }

    #[test]
    fn the_prefix_lengths_and_the_factor_are_settings() {
        let l = LimitsConfig {
            ipv6_prefix_len: 56,
            ipv6_wide_prefix_len: 40,
            ipv6_wide_factor: 4,
            ..LimitsConfig::default()
        };
        assert_eq!(
            keys("2001:db8:abcd:12ff::1", &l),
            [
                ("2001:db8:abcd:1200::/56".to_string(), 1),
                ("2001:db8:ab00::/40".to_string(), 4)
            ]
        );
        let whole = LimitsConfig {
            ipv6_prefix_len: 128,
            ipv6_wide_factor: 0,
            ..LimitsConfig::default()
        };
        assert_eq!(
            keys("2001:db8::1", &whole),
            [("2001:db8::1/128".to_string(), 1)]
        );
    }

    #[test]
    fn ipv4_and_mapped_addresses_are_one_bucket_and_no_address_fails_closed() {
        let l = LimitsConfig::default();
        assert_eq!(
            keys("::ffff:203.0.113.7", &l),
            [("203.0.113.7".to_string(), 1)]
        );
        assert_eq!(keys("203.0.113.7", &l), [("203.0.113.7".to_string(), 1)]);
        assert!(keys("not an ip", &l).is_empty());
        assert_eq!(
            ip_buckets(None, &l),
            [("unknown".to_string(), 1)],
            "no address fails closed"
        );
    }

    #[test]
    fn a_trusted_browser_sends_from_a_bucket_of_its_own() {
        let to = Identifier::Email(crate::domain::EmailAddress::parse("Jane@Example.com").unwrap());
        assert_eq!(send_bucket(&to, false), "send:email:jane@example.com");
        assert_eq!(send_bucket(&to, true), "senddevice:email:jane@example.com");
    }
}
