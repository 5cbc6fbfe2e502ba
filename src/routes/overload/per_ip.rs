//! The per-client cap on open requests: a count per client key, in this process's memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Open requests per client key, in this process. A key is present only while it has open
/// requests, so the map holds the live clients and nothing more.
pub(super) struct PerIp {
    /// 0: no limit (nothing is counted).
    pub(super) limit: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// One open request of a client; dropping it frees the place.
pub(super) struct ClientPlace {
    per_ip: Arc<PerIp>,
    key: String,
}

impl PerIp {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            limit,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The map is consistent after any panic (each change is one statement), so a poisoned lock
    /// is used as it is.
    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for `key` if it has fewer than `limit` open requests; the key back otherwise.
    pub(super) fn take(self: &Arc<Self>, key: String) -> Result<ClientPlace, String> {
        let mut open = self.open();
        let n = open.get(&key).copied().unwrap_or(0);
        if n >= self.limit {
            return Err(key);
        }
        open.insert(key.clone(), n + 1);
        Ok(ClientPlace {
            per_ip: self.clone(),
            key,
        })
    }

    #[cfg(test)]
    fn open_for(&self, key: &str) -> Option<usize> {
        self.open().get(key).copied()
    }
}

impl Drop for ClientPlace {
    fn drop(&mut self) {
        let mut open = self.per_ip.open();
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_at_most_its_limit_of_places_and_a_freed_place_is_free_at_once() {
        let per_ip = Arc::new(PerIp::new(2));
        let a1 = per_ip.take("203.0.113.7".into()).unwrap();
        let _a2 = per_ip.take("203.0.113.7".into()).unwrap();
        assert!(
            per_ip.take("203.0.113.7".into()).is_err(),
            "a third is refused"
        );
        assert!(
            per_ip.take("198.51.100.9".into()).is_ok(),
            "another client is not"
        );
        drop(a1);
        assert!(per_ip.take("203.0.113.7".into()).is_ok());
    }

    #[test]
    fn a_client_without_open_requests_leaves_nothing_in_the_map() {
        let per_ip = Arc::new(PerIp::new(2));
        let place = per_ip.take("203.0.113.7".into()).unwrap();
        assert_eq!(per_ip.open_for("203.0.113.7"), Some(1));
        drop(place);
        assert_eq!(per_ip.open_for("203.0.113.7"), None);
    }
}
