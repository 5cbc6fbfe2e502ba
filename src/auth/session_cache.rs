//! Which sessions are live, cached per process for the session-token verify endpoint: a
//! verify is then a signature check and a map lookup, no database read. A sign-out drops its
//! session here at once; other instances drop it when they read the revocation log
//! (`session_revocations`, polled every [`REVOCATION_POLL`]), so within a second. An entry is
//! also never trusted past its session's expiry or [`MAX_AGE`] after it was read.

use std::collections::HashMap;
use std::sync::Mutex;

use time::OffsetDateTime;

use crate::domain::{SessionId, UserId};

/// How often each instance reads the revocation log.
pub const REVOCATION_POLL: std::time::Duration = std::time::Duration::from_millis(500);
/// How far back each read of the revocation log looks (several polls: a revocation committed
/// late, or a poll that failed, is still seen).
pub const REVOCATION_WINDOW: time::Duration = time::Duration::seconds(10);
/// An entry is read again from the database after this long, whatever the log said.
pub const MAX_AGE: time::Duration = time::Duration::seconds(60);
/// Entries kept at most; a full cache starts over (each session is read once more).
const CAPACITY: usize = 100_000;

#[derive(Debug, Clone)]
struct Entry {
    owner: UserId,
    expires_at: OffsetDateTime,
    read_at: OffsetDateTime,
}

/// Whether a cached entry may answer at `now`: before its session's expiry and within
/// [`MAX_AGE`] of being read.
fn usable(expires_at: OffsetDateTime, read_at: OffsetDateTime, now: OffsetDateTime) -> bool {
    now < expires_at && now >= read_at && now - read_at < MAX_AGE
}

/// The live sessions this process has seen.
#[derive(Debug, Default)]
pub struct SessionCache {
    entries: Mutex<HashMap<SessionId, Entry>>,
}

impl SessionCache {
    /// The owner of `id` if the cache may answer for it at `now`.
    pub fn owner(&self, id: &SessionId, now: OffsetDateTime) -> Option<UserId> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(id)
            .filter(|e| usable(e.expires_at, e.read_at, now))
            .map(|e| e.owner.clone())
    }

    /// Remembers a live session read from the database at `now`.
    pub fn remember(
        &self,
        id: SessionId,
        owner: UserId,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(
            id,
            Entry {
                owner,
                expires_at,
                read_at: now,
            },
        );
    }

    /// Forgets ended sessions.
    pub fn forget<'a>(&self, ids: impl IntoIterator<Item = &'a SessionId>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            entries.remove(id);
        }
    }
}

/// Reads the revocation log (sessions any instance ended lately) and drops them from `cache`;
/// run every [`REVOCATION_POLL`].
pub async fn forget_revoked(
    cache: &SessionCache,
    store: &crate::store::Store,
    now: OffsetDateTime,
) -> anyhow::Result<()> {
    let ended = store.revoked_since(now - REVOCATION_WINDOW).await?;
    cache.forget(ended.iter());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-02 12:00 UTC);

    #[test]
    fn an_entry_answers_until_its_session_expires_or_it_is_a_minute_old() {
        let later = |s: i64| NOW + time::Duration::seconds(s);
        assert!(usable(later(3600), NOW, NOW));
        assert!(usable(later(3600), NOW, later(59)));
        assert!(
            !usable(later(3600), NOW, later(60)),
            "read again after a minute"
        );
        assert!(
            !usable(later(30), NOW, later(30)),
            "never past the session's expiry"
        );
        assert!(
            !usable(later(3600), NOW, later(-1)),
            "a clock that went back reads again"
        );
    }

    #[test]
    fn a_forgotten_session_is_read_again() {
        let cache = SessionCache::default();
        let (sid, owner) = (SessionId::generate(), UserId::generate());
        assert_eq!(cache.owner(&sid, NOW), None);
        cache.remember(
            sid.clone(),
            owner.clone(),
            NOW + time::Duration::hours(1),
            NOW,
        );
        assert_eq!(cache.owner(&sid, NOW), Some(owner));
        cache.forget([&sid]);
        assert_eq!(cache.owner(&sid, NOW), None);
    }
}
