//! The key set in force, replaced as a whole when the stored keys change (a rotation): every
//! instance reads the stored keys every `signing_keys_reload_secs`.

use std::sync::{Arc, RwLock};

use super::KeySet;

#[derive(Debug)]
pub struct Keyring(RwLock<Arc<KeySet>>);

impl Keyring {
    pub fn new(keys: KeySet) -> Self {
        Self(RwLock::new(Arc::new(keys)))
    }

    /// The key set now (a reload does not change a set already taken).
    pub fn get(&self) -> Arc<KeySet> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `keys` in force; answers whether the key ids or signers changed.
    pub fn replace(&self, keys: KeySet) -> bool {
        let mut current = self.0.write().unwrap_or_else(|e| e.into_inner());
        let changed = current.kids() != keys.kids()
            || crate::tokens::Alg::ALL
                .into_iter()
                .any(|a| current.signer(a).map(|k| k.kid()) != keys.signer(a).map(|k| k.kid()));
        *current = Arc::new(keys);
        changed
    }
}
