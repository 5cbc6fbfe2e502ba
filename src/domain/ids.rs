//! Opaque identifiers: a type prefix and 128 random bits, base32 (lowercase, no padding).

use rand::RngCore;

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const BODY_LEN: usize = 26; // ceil(128 / 5)

fn random_body() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    body_of(bytes)
}

fn body_of(bytes: [u8; 16]) -> String {
    let mut n = u128::from_be_bytes(bytes);
    let mut out = [0u8; BODY_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n & 31) as usize];
        n >>= 5;
    }
    String::from_utf8(out.to_vec()).expect("ascii")
}

macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn generate() -> Self {
                Self(format!("{}_{}", $prefix, random_body()))
            }

            /// An id of the same shape from given bits (a keyed hash, for decoys).
            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(format!("{}_{}", $prefix, body_of(bytes)))
            }

            /// Accepts only ids of this type's exact shape, so untrusted input can be used as a key.
            pub fn parse(s: &str) -> Option<Self> {
                let body = s.strip_prefix($prefix)?.strip_prefix('_')?;
                (body.len() == BODY_LEN && body.bytes().all(|b| ALPHABET.contains(&b))).then(|| Self(s.to_string()))
            }

            /// Rebuilds an id read back from the store.
            pub fn from_trusted(s: String) -> Self {
                Self(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

opaque_id!(
    /// A sign-up or sign-in attempt.
    FlowId, "flw"
);
opaque_id!(
    /// One code sent to one identifier within a flow.
    VerificationId, "ver"
);
opaque_id!(
    /// A person's account.
    UserId, "usr"
);
opaque_id!(
    /// An email address or phone number belonging to an account.
    IdentifierId, "idn"
);
opaque_id!(
    /// A signed-in session (the cookie holds a separate secret token, never this id).
    SessionId, "ses"
);
opaque_id!(
    /// A message waiting in the outbox.
    MessageId, "msg"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        let id = FlowId::generate();
        assert_eq!(FlowId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(id.as_str().len(), 4 + BODY_LEN);
    }

    #[test]
    fn ids_of_another_type_or_shape_are_refused() {
        let id = FlowId::generate();
        assert_eq!(UserId::parse(id.as_str()), None);
        assert_eq!(FlowId::parse("flw_short"), None);
        assert_eq!(FlowId::parse(&format!("{}'", &id.as_str()[..29])), None);
        assert_eq!(FlowId::parse(&id.as_str().to_uppercase()), None);
    }
}
