//! Session tokens whose signature this process has checked: an app's backend verifies the same
//! token on every request its front end makes during the token's minute, and checking an
//! Ed25519 signature costs more than everything else a verify does. The cache is keyed by the
//! whole token (its exact bytes), so only a token that was verified here can hit it; its
//! claims are still checked against `now` on every use, and its session's liveness too.

use std::collections::HashMap;
use std::sync::Mutex;

use super::rules::Claims;

/// Tokens kept at most; a full cache starts over.
const CAPACITY: usize = 20_000;

#[derive(Debug, Default)]
pub struct VerifiedTokens {
    entries: Mutex<HashMap<String, Claims>>,
}

impl VerifiedTokens {
    /// The claims of `token` if its signature was checked here before.
    pub fn get(&self, token: &str) -> Option<Claims> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    /// Remembers a token whose signature checked out; entries past their `exp` (at `now_unix`)
    /// go when the cache is full.
    pub fn insert(&self, token: &str, claims: &Claims, now_unix: i64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.retain(|_, c| c.exp > now_unix);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(token.to_string(), claims.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn only_the_exact_token_hits_and_a_full_cache_drops_expired_tokens_first() {
        let now = datetime!(2026-12-02 12:00 UTC);
        let claims = Claims::new(
            "https://id.example.com",
            "usr_1",
            "ses_1",
            "https://app.example.com",
            now,
        );
        let cache = VerifiedTokens::default();
        cache.insert("a.b.c", &claims, now.unix_timestamp());
        assert_eq!(cache.get("a.b.c"), Some(claims.clone()));
        assert_eq!(cache.get("a.b.c "), None);
        assert_eq!(cache.get("a.b.d"), None);
        for i in 0..CAPACITY {
            cache.insert(&format!("t{i}"), &claims, now.unix_timestamp());
        }
        // Full: the next insert at a time when all have expired empties it first.
        cache.insert("fresh", &claims, claims.exp);
        assert_eq!(cache.get("t1"), None);
        assert!(cache.get("fresh").is_some());
    }
}
