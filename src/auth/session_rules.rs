//! When a session is still in use, and when its "last active" is written: pure functions.

use time::{Duration, OffsetDateTime};

/// "Last active" is written at most this often per session, so that reads stay reads.
pub const TOUCH_EVERY: Duration = Duration::MINUTE;

/// Whether a session last active at `last_active_at` is still in use at `now`, with an
/// inactivity `timeout` (`None`: no timeout; the absolute expiry is checked by the query).
/// "Last active" is up to [`TOUCH_EVERY`] behind, so a session ends between `timeout` and
/// `timeout` + a minute after its last use.
pub fn in_use(
    last_active_at: OffsetDateTime,
    timeout: Option<Duration>,
    now: OffsetDateTime,
) -> bool {
    timeout.is_none_or(|t| now - last_active_at < t)
}

/// Whether this use of the session should write its "last active".
pub fn needs_touch(last_active_at: OffsetDateTime, now: OffsetDateTime) -> bool {
    now - last_active_at >= TOUCH_EVERY
}

/// Whether a session whose code was last verified at `verified_at` may, at `now`, take an
/// action that needs a recent one (`window`: `sessions.reverification_secs`). A time in the
/// future (a clock step back) does not count as recent.
pub fn recently_verified(
    verified_at: OffsetDateTime,
    window: Duration,
    now: OffsetDateTime,
) -> bool {
    verified_at <= now && now - verified_at < window
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-02 12:00 UTC);

    #[test]
    fn without_a_timeout_a_session_is_in_use_until_it_expires() {
        assert!(in_use(NOW - Duration::days(6), None, NOW));
    }

    #[test]
    fn with_a_timeout_it_ends_that_long_after_its_last_use() {
        let t = Some(Duration::minutes(30));
        assert!(in_use(NOW - Duration::minutes(29), t, NOW));
        assert!(!in_use(NOW - Duration::minutes(30), t, NOW));
    }

    #[test]
    fn last_active_is_written_once_a_minute_at_most() {
        assert!(!needs_touch(NOW, NOW));
        assert!(!needs_touch(NOW - Duration::seconds(59), NOW));
        assert!(needs_touch(NOW - Duration::seconds(60), NOW));
    }

    #[test]
    fn a_code_verified_within_the_window_counts_and_one_at_its_end_does_not() {
        let w = Duration::minutes(10);
        assert!(recently_verified(NOW, w, NOW));
        assert!(recently_verified(NOW - Duration::seconds(599), w, NOW));
        assert!(!recently_verified(NOW - Duration::minutes(10), w, NOW));
        assert!(!recently_verified(NOW - Duration::days(1), w, NOW));
        // A verification "from the future" (the clock stepped back) is not trusted.
        assert!(!recently_verified(NOW + Duration::seconds(1), w, NOW));
    }
}
