//! Opaque identifiers: a type prefix and 128 bits, base32 (lowercase, no padding).
//!
//! Generated ids are time-ordered like a ULID: the first 48 bits are the wall clock's
//! milliseconds, the other 80 are random. Ids are never secrets (flows are bound to the browser,
//! sessions are found by a separate token), and ordered ids make every insert land on the last
//! page of the primary key's index instead of a random one: a group commit then writes a few
//! pages instead of one per row and index (see BENCHMARKS.md).

use rand::RngCore;

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const BODY_LEN: usize = 26; // ceil(128 / 5)

/// Random bits below the timestamp.
const RANDOM_BITS: u32 = 80;

fn generated_body() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut random = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut random);
    body_of(ordered_bits(millis, u128::from_be_bytes(random)))
}

/// The 128 bits of a generated id: 48 bits of milliseconds, then 80 of `random`.
fn ordered_bits(millis: u128, random: u128) -> [u8; 16] {
    let random = random & ((1u128 << RANDOM_BITS) - 1);
    let time = (millis & ((1u128 << (128 - RANDOM_BITS)) - 1)) << RANDOM_BITS;
    (time | random).to_be_bytes()
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
                Self(format!("{}_{}", $prefix, generated_body()))
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
    /// One authorization of an OpenID Connect client by one session (its codes and refresh
    /// tokens hang off it).
    GrantId, "grt"
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
    fn ids_sort_by_creation_time_whatever_their_random_bits() {
        let t = 1_764_547_200_000u128; // 2025-12-01
        let early = body_of(ordered_bits(t, u128::MAX));
        let later = body_of(ordered_bits(t + 1, 0));
        assert!(early < later, "{early} < {later}");
        // Random bits above the 80 kept never reach the timestamp.
        assert_eq!(
            body_of(ordered_bits(t, u128::MAX))[..10],
            body_of(ordered_bits(t, 0))[..10]
        );
    }

    #[test]
    fn ids_made_in_the_same_millisecond_still_differ_in_80_random_bits() {
        let ids: Vec<FlowId> = (0..256).map(|_| FlowId::generate()).collect();
        let tails: std::collections::HashSet<&str> = ids
            .iter()
            .map(|i| &i.as_str()[4 + BODY_LEN - 16..])
            .collect();
        assert_eq!(
            tails.len(),
            ids.len(),
            "the last 16 characters (80 bits) are random"
        );
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
