//! Consecutive wrong codes per key (table `identifier_lockouts`): the rules as pure functions,
//! and the statements the code-attempt unit (`flows::attempt_code`) reads and writes them with.
//!
//! A key is an identifier, an account or an account's trusted browsers (see [`keys`]). Per key:
//! - `max_failures` consecutive wrong codes lock it for a cooldown; each further lock (without
//!   a success in between) lasts twice as long as the one before, up to `max_cooldown`;
//! - `stop_after` consecutive wrong codes lock it for good: a lock running out does not reset
//!   the count, only a success on the account or an operator's reset does (deleting the key's
//!   row; SECURITY.md gives the statement). NIST SP 800-63B-4 §3.2.2: at most 100 consecutive
//!   failures on an account.
//!
//! The count is read and written inside the unit of work that takes the try, under the key's
//! advisory lock on PostgreSQL (`lockout:<key>`, taken sorted with the unit's other locks), and
//! on SQLite's one writer thread, so parallel tries never evaluate more than the rules allow.

use time::{Duration, OffsetDateTime};

use super::stmt::{Row, Stmt};
use crate::domain::{IdentifierKind, UserId};

/// The spelling of every key, in one place (an operator resets a key by deleting its row).
pub mod keys {
    use super::{IdentifierKind, UserId};

    /// Sign-up failures of an identifier: `email:<canonical>` / `phone:<E.164>`.
    pub fn sign_up(kind: IdentifierKind, canonical: &str) -> String {
        format!("{}:{canonical}", kind.as_str())
    }

    /// Strict enumeration protection: sign-in failures of the identifier typed, in a namespace
    /// of its own, the same for an account's identifier and a decoy.
    pub fn sign_in(kind: IdentifierKind, canonical: &str) -> String {
        format!("signin:{}:{canonical}", kind.as_str())
    }

    /// Sign-in failures of an account, whichever of its identifiers got the code.
    pub fn account(user: &UserId) -> String {
        format!("user:{user}")
    }

    /// Sign-in failures from the account's trusted browsers (the device cookie).
    pub fn devices(user: &UserId) -> String {
        format!("device:user:{user}")
    }
}

/// The rules of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockRules {
    /// Consecutive failures that lock the key for a cooldown.
    pub max_failures: i64,
    /// The first lock's length; each further one doubles it, up to `max_cooldown`.
    pub cooldown: Duration,
    pub max_cooldown: Duration,
    /// Consecutive failures that lock the key until a success or an operator's reset.
    pub stop_after: i64,
}

/// A key whose failures a code attempt counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountedKey {
    pub key: String,
    /// A silent key's lock never shows in an answer: while it holds, a try is still taken, but
    /// the code is not compared and the answer is a wrong code's (strict mode's account key: an
    /// identifier answering "locked" at its first try would show that it shares an account with
    /// one locked before, which a decoy never does).
    pub silent: bool,
    pub rules: LockRules,
}

/// The stored count of a key (all zero when there is no row).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockState {
    /// Failures since the last lock ran out (or since the count began).
    pub failures: i64,
    /// Locks so far; the next one lasts [`cooldown_after`] of one more.
    pub locks: i64,
    /// Failures since the last success or reset; never reset by a lock running out.
    pub consecutive: i64,
    /// The end of the current or last lock.
    pub locked_until: Option<OffsetDateTime>,
}

/// A lock in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// Until this time.
    Until(OffsetDateTime),
    /// Until a success on the account or an operator's reset.
    Stopped,
}

impl Lock {
    /// The longer of two locks.
    pub fn longer(self, other: Lock) -> Lock {
        match (self, other) {
            (Lock::Stopped, _) | (_, Lock::Stopped) => Lock::Stopped,
            (Lock::Until(a), Lock::Until(b)) => Lock::Until(a.max(b)),
        }
    }
}

/// How long the `locks`-th lock of a key lasts (the first is `cooldown`): doubled each time,
/// capped at `max_cooldown`.
pub fn cooldown_after(locks: i64, rules: &LockRules) -> Duration {
    let doublings = (locks - 1).clamp(0, 62) as u32;
    let ms = rules
        .cooldown
        .whole_milliseconds()
        .saturating_mul(1i128 << doublings)
        .min(rules.max_cooldown.whole_milliseconds());
    Duration::milliseconds(ms.clamp(0, i64::MAX as i128) as i64)
}

/// The lock a key is under at `now`, if any.
pub fn is_locked(state: &LockState, rules: &LockRules, now: OffsetDateTime) -> Option<Lock> {
    if state.consecutive >= rules.stop_after {
        return Some(Lock::Stopped);
    }
    state
        .locked_until
        .filter(|until| *until > now)
        .map(Lock::Until)
}

/// The count after one more wrong code on a key that is not locked, and the lock this failure
/// starts, if it starts one. A lock that ran out starts a new run towards the next lock, but
/// the consecutive count goes on.
pub fn after_failure(
    state: &LockState,
    rules: &LockRules,
    now: OffsetDateTime,
) -> (LockState, Option<Lock>) {
    let failures = if state.locked_until.is_some() {
        1
    } else {
        state.failures + 1
    };
    let mut next = LockState {
        failures,
        locks: state.locks,
        consecutive: state.consecutive + 1,
        locked_until: None,
    };
    if next.consecutive >= rules.stop_after {
        return (next, Some(Lock::Stopped));
    }
    if failures >= rules.max_failures {
        next.locks += 1;
        let until = now + cooldown_after(next.locks, rules);
        next.locked_until = Some(until);
        return (next, Some(Lock::Until(until)));
    }
    (next, None)
}

const SELECT: &str = "SELECT failures, locks, consecutive, locked_until FROM identifier_lockouts WHERE identifier = $1";
const UPSERT: &str = "INSERT INTO identifier_lockouts (identifier, failures, locks, consecutive, locked_until, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (identifier) DO UPDATE SET failures = excluded.failures, locks = excluded.locks, \
       consecutive = excluded.consecutive, locked_until = excluded.locked_until, updated_at = excluded.updated_at";
const CLEAR: &str = "DELETE FROM identifier_lockouts WHERE identifier = $1";

/// The advisory lock name of a key's count (apart from the rate-limit buckets, which share the
/// advisory locks' key space).
pub(super) fn advisory_name(key: &str) -> String {
    format!("lockout:{key}")
}

/// The read of a key's count (see [`state_of`]).
pub(super) fn select(key: &str) -> Stmt {
    Stmt::new(SELECT, vec![key.into()])
}

/// A key's count from the row [`select`] returned, `None` without a row.
pub(super) fn state_of(row: Option<&Row>) -> anyhow::Result<Option<LockState>> {
    let Some(r) = row else {
        return Ok(None);
    };
    Ok(Some(LockState {
        failures: r.int("failures")?,
        locks: r.int("locks")?,
        consecutive: r.int("consecutive")?,
        locked_until: r.opt_time("locked_until")?,
    }))
}

/// The write of a key's new count.
pub(super) fn write(key: &str, state: &LockState, now: OffsetDateTime) -> Stmt {
    Stmt::new(
        UPSERT,
        vec![
            key.into(),
            state.failures.into(),
            state.locks.into(),
            state.consecutive.into(),
            state.locked_until.into(),
            now.into(),
        ],
    )
}

/// The reset of a key's count.
pub(super) fn clear(key: &str) -> Stmt {
    Stmt::new(CLEAR, vec![key.into()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-02 12:00 UTC);

    fn rules() -> LockRules {
        LockRules {
            max_failures: 10,
            cooldown: Duration::HOUR,
            max_cooldown: Duration::DAY,
            stop_after: 80,
        }
    }

    /// `n` failures, each at the first moment the key accepts one; returns the state and when
    /// the last one happened.
    fn fail(n: usize, rules: &LockRules) -> (LockState, OffsetDateTime) {
        let mut state = LockState::default();
        let mut now = NOW;
        for _ in 0..n {
            if let Some(Lock::Until(until)) = is_locked(&state, rules, now) {
                now = until;
            }
            assert_eq!(is_locked(&state, rules, now), None);
            state = after_failure(&state, rules, now).0;
        }
        (state, now)
    }

    #[test]
    fn each_lock_lasts_twice_the_one_before_up_to_the_cap() {
        let r = rules();
        let hours: Vec<i64> = (1..=8)
            .map(|n| cooldown_after(n, &r).whole_hours())
            .collect();
        assert_eq!(hours, [1, 2, 4, 8, 16, 24, 24, 24]);
        assert_eq!(cooldown_after(0, &r), Duration::HOUR);
        assert_eq!(cooldown_after(i64::MAX, &r), Duration::DAY);
    }

    #[test]
    fn the_failure_that_reaches_the_limit_locks_for_the_cooldown() {
        let r = rules();
        let (nine, _) = fail(9, &r);
        assert_eq!(is_locked(&nine, &r, NOW), None);
        let (tenth, lock) = after_failure(&nine, &r, NOW);
        assert_eq!(lock, Some(Lock::Until(NOW + Duration::HOUR)));
        assert_eq!(is_locked(&tenth, &r, NOW), lock);
        assert_eq!(
            is_locked(&tenth, &r, NOW + Duration::HOUR),
            None,
            "a lock holds until its end and not at it"
        );
    }

    #[test]
    fn a_lock_running_out_starts_a_new_run_but_not_a_new_consecutive_count() {
        let r = rules();
        let (state, at) = fail(11, &r);
        assert_eq!((state.failures, state.locks, state.consecutive), (1, 1, 11));
        assert_eq!(at, NOW + Duration::HOUR);
        let (state, _) = fail(20, &r);
        assert_eq!(state.locked_until, Some(NOW + Duration::hours(1 + 2)));
    }

    #[test]
    fn the_failure_that_reaches_the_stop_locks_until_a_reset_whatever_the_time() {
        let r = rules();
        let (state, at) = fail(79, &r);
        assert_eq!(state.locks, 7);
        // Locks after 10, 20, …, 70 failures: 1 + 2 + 4 + 8 + 16 + 24 + 24 hours.
        assert_eq!(at, NOW + Duration::hours(79));
        let after = at + Duration::DAY;
        let (stopped, lock) = after_failure(&state, &r, after);
        assert_eq!(lock, Some(Lock::Stopped));
        assert_eq!(stopped.consecutive, 80);
        assert_eq!(
            is_locked(&stopped, &r, after + Duration::days(3650)),
            Some(Lock::Stopped)
        );
    }

    #[test]
    fn the_longer_lock_wins() {
        let a = Lock::Until(NOW);
        let b = Lock::Until(NOW + Duration::SECOND);
        assert_eq!(a.longer(b), b);
        assert_eq!(b.longer(a), b);
        assert_eq!(a.longer(Lock::Stopped), Lock::Stopped);
    }

    #[test]
    fn keys_are_spelled_apart_per_namespace() {
        let user = UserId::from_trusted("usr_1".into());
        assert_eq!(keys::account(&user), "user:usr_1");
        assert_eq!(keys::devices(&user), "device:user:usr_1");
        assert_eq!(
            keys::sign_in(IdentifierKind::Email, "jane@example.com"),
            "signin:email:jane@example.com"
        );
        assert_eq!(
            keys::sign_up(IdentifierKind::Phone, "+14155550123"),
            "phone:+14155550123"
        );
    }
}
