//! Keys derived from the server secret, and the keyed hashes built with them.
//!
//! Codes and session tokens are stored only as HMAC-SHA256 values under keys derived from the
//! server secret, so a copy of the database alone reveals neither. Outbox payloads (which must
//! carry the code until it is delivered) are sealed with ChaCha20-Poly1305.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Purpose-separated keys, each HMAC-SHA256(secret, label).
pub struct Keys {
    code: [u8; 32],
    token: [u8; 32],
    csrf: [u8; 32],
    binding: [u8; 32],
    outbox: [u8; 32],
    signing: [u8; 32],
    api_key: [u8; 32],
    device: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(redacted)")
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("hmac takes any key length");
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            m.update(&[0x1f]);
        }
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

impl Keys {
    pub fn derive(secret: &str) -> Self {
        let k = |label: &str| mac(secret.as_bytes(), &[b"latchkey/v1", label.as_bytes()]);
        Self {
            code: k("code"),
            token: k("session-token"),
            csrf: k("csrf"),
            binding: k("browser-binding"),
            outbox: k("outbox-seal"),
            signing: k("signing-key-seal"),
            api_key: k("api-secret-key"),
            device: k("device-trust"),
        }
    }

    /// The stored form of a code: bound to the verification it was issued for, so a code is only
    /// ever valid where it was sent.
    pub fn code_hash(&self, verification_id: &str, code: &str) -> String {
        hex::encode(mac(
            &self.code,
            &[verification_id.as_bytes(), code.as_bytes()],
        ))
    }

    /// Constant-time comparison of a presented code against the stored hash.
    pub fn code_matches(&self, verification_id: &str, code: &str, stored: &str) -> bool {
        let expected = self.code_hash(verification_id, code);
        expected.as_bytes().ct_eq(stored.as_bytes()).into()
    }

    /// The stored form of an OpenID Connect authorization code or refresh token (`kind`
    /// separates them from each other and from session tokens).
    pub fn oauth_hash(&self, kind: &str, token: &str) -> String {
        hex::encode(mac(
            &self.token,
            &[b"oauth", kind.as_bytes(), token.as_bytes()],
        ))
    }

    /// The stored form of a session token.
    pub fn token_hash(&self, token: &str) -> String {
        hex::encode(mac(&self.token, &[token.as_bytes()]))
    }

    /// A CSRF token for a form bound to `binding` (the browser cookie and the flow or session).
    /// The bound value is masked with fresh random bytes every time (`mask ‖ value ⊕ mask`), so
    /// no two pages carry the same bytes: a compressed page that also reflects input cannot leak
    /// the token byte by byte through its size (BREACH).
    pub fn csrf_token(&self, binding: &[&str]) -> String {
        let value = self.csrf_value(binding);
        let mut mask = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut mask);
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&mask);
        out.extend(value.iter().zip(mask.iter()).map(|(v, m)| v ^ m));
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Whether `presented` is a (masked) CSRF token for `binding`; compared in constant time.
    pub fn csrf_valid(&self, binding: &[&str], presented: &str) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(presented) else {
            return false;
        };
        if raw.len() != 64 {
            return false;
        }
        let (mask, masked) = raw.split_at(32);
        let value: Vec<u8> = masked.iter().zip(mask).map(|(v, m)| v ^ m).collect();
        self.csrf_value(binding).ct_eq(value.as_slice()).into()
    }

    fn csrf_value(&self, binding: &[&str]) -> [u8; 32] {
        let parts: Vec<&[u8]> = binding.iter().map(|s| s.as_bytes()).collect();
        mac(&self.csrf, &parts)
    }

    /// The stored form of the browser cookie a flow is bound to.
    pub fn browser_binding(&self, browser_cookie: &str) -> String {
        hex::encode(mac(&self.binding, &[browser_cookie.as_bytes()]))
    }

    /// A device cookie for `account`: a random id (128 bits) and the issue time (Unix seconds),
    /// with an HMAC binding both to the account, `<id>.<issued>.<mac>`. Nothing is stored: only
    /// the server's key can make one, and it verifies for this account only (the cookie does
    /// not name the account).
    pub fn device_token(&self, account: &str, issued_unix: i64) -> String {
        let id = random_token(16);
        let issued = issued_unix.to_string();
        let mac = mac(
            &self.device,
            &[account.as_bytes(), id.as_bytes(), issued.as_bytes()],
        );
        format!("{id}.{issued}.{}", URL_SAFE_NO_PAD.encode(mac))
    }

    /// The issue time (Unix seconds) of a device cookie made by [`device_token`](Self::device_token)
    /// for `account` under this secret; `None` for anything else.
    pub fn device_issued(&self, account: &str, token: &str) -> Option<i64> {
        let mut parts = token.split('.');
        let (id, issued, presented) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || id.len() != 22 || presented.len() != 43 {
            return None;
        }
        let issued_unix: i64 = issued.parse().ok()?;
        let expected = URL_SAFE_NO_PAD.encode(mac(
            &self.device,
            &[account.as_bytes(), id.as_bytes(), issued.as_bytes()],
        ));
        bool::from(expected.as_bytes().ct_eq(presented.as_bytes())).then_some(issued_unix)
    }

    /// 128 bits that look random but are fixed for `parts` under this secret (ids of decoys,
    /// which must be stable across requests yet indistinguishable from real ones).
    pub fn derived_bytes(&self, parts: &[&str]) -> [u8; 16] {
        let bytes: Vec<&[u8]> = std::iter::once(b"derived-id".as_slice())
            .chain(parts.iter().map(|p| p.as_bytes()))
            .collect();
        let full = mac(&self.binding, &bytes);
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// Seals a payload: 12-byte random nonce followed by the ciphertext.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        seal_with(&self.outbox, plaintext)
    }

    /// Opens a sealed payload; `None` if it was tampered with or sealed under another secret.
    pub fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        open_with(&self.outbox, sealed)
    }

    /// Seals a private signing key for the database (its own key: an outbox payload can never
    /// be opened as a key, nor the other way round).
    pub fn seal_signing_key(&self, pkcs8: &[u8]) -> Vec<u8> {
        seal_with(&self.signing, pkcs8)
    }

    pub fn open_signing_key(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        open_with(&self.signing, sealed)
    }

    /// The form a backend secret key (`sk_…`) is compared in: its keyed hash, so that the
    /// comparison takes the same time whatever the key and a key is never kept in clear.
    pub fn api_key_hash(&self, key: &str) -> [u8; 32] {
        mac(&self.api_key, &[key.as_bytes()])
    }
}

fn seal_with(key: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(key.into());
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let mut out = nonce.to_vec();
    out.extend(
        cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .expect("chacha20poly1305 encryption cannot fail for in-memory buffers"),
    );
    out
}

fn open_with(key: &[u8; 32], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < 12 {
        return None;
    }
    let cipher = ChaCha20Poly1305::new(key.into());
    let (nonce, ct) = sealed.split_at(12);
    cipher.decrypt(Nonce::from_slice(nonce), ct).ok()
}

/// `n` bytes from the operating system's CSPRNG, base64url without padding.
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_hash_is_bound_to_the_verification() {
        let k = Keys::derive("0123456789abcdef0123456789abcdef");
        let h = k.code_hash("ver_a", "123456");
        assert!(k.code_matches("ver_a", "123456", &h));
        assert!(!k.code_matches("ver_b", "123456", &h));
        assert!(!k.code_matches("ver_a", "123457", &h));
        assert!(!h.contains("123456"));
    }

    #[test]
    fn keys_depend_on_the_secret() {
        let a = Keys::derive("0123456789abcdef0123456789abcdef");
        let b = Keys::derive("0123456789abcdef0123456789abcdeX");
        assert_ne!(a.token_hash("t"), b.token_hash("t"));
    }

    #[test]
    fn sealed_payloads_round_trip_and_reject_tampering() {
        let k = Keys::derive("0123456789abcdef0123456789abcdef");
        let mut sealed = k.seal(b"123456");
        assert_eq!(k.open(&sealed).unwrap(), b"123456");
        assert!(!sealed.windows(6).any(|w| w == b"123456"));
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(k.open(&sealed).is_none());
    }

    #[test]
    fn a_device_token_verifies_only_for_its_account_and_secret_and_unaltered() {
        let k = Keys::derive("0123456789abcdef0123456789abcdef");
        let t = k.device_token("usr_a", 1_700_000_000);
        assert_eq!(k.device_issued("usr_a", &t), Some(1_700_000_000));
        assert!(!t.contains("usr_a"), "the cookie does not name the account");
        assert_eq!(k.device_issued("usr_b", &t), None, "another account");
        let other = Keys::derive("0123456789abcdef0123456789abcdeX");
        assert_eq!(other.device_issued("usr_a", &t), None, "another secret");
        let (id, rest) = t.split_once('.').unwrap();
        let (_, mac) = rest.split_once('.').unwrap();
        let later = format!("{id}.1800000000.{mac}");
        assert_eq!(
            k.device_issued("usr_a", &later),
            None,
            "a changed issue time"
        );
        assert_ne!(
            t,
            k.device_token("usr_a", 1_700_000_000),
            "a new id each time"
        );
        for bad in ["", "a.b.c", &format!("{t}.x"), &t[1..]] {
            assert_eq!(k.device_issued("usr_a", bad), None, "{bad:?}");
        }
    }

    #[test]
    fn random_tokens_are_long_and_distinct() {
        let a = random_token(32);
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token(32));
    }

    #[test]
    fn csrf_tokens_are_masked_afresh_each_time_and_bound_to_their_binding() {
        let k = Keys::derive("0123456789abcdef0123456789abcdef");
        let a = k.csrf_token(&["browser", "b1", "sign_in"]);
        let b = k.csrf_token(&["browser", "b1", "sign_in"]);
        assert_ne!(a, b, "no two pages carry the same token bytes");
        assert!(k.csrf_valid(&["browser", "b1", "sign_in"], &a));
        assert!(k.csrf_valid(&["browser", "b1", "sign_in"], &b));
        assert!(!k.csrf_valid(&["browser", "b2", "sign_in"], &a));
        assert!(!k.csrf_valid(&["browser", "b1", "sign_up"], &a));
        let other = Keys::derive("0123456789abcdef0123456789abcdeX");
        assert!(!other.csrf_valid(&["browser", "b1", "sign_in"], &a));
        // The unmasked value alone, a truncated token and garbage are refused.
        let unmasked = URL_SAFE_NO_PAD.encode(k.csrf_value(&["browser", "b1", "sign_in"]));
        assert!(!k.csrf_valid(&["browser", "b1", "sign_in"], &unmasked));
        assert!(!k.csrf_valid(&["browser", "b1", "sign_in"], &a[..a.len() - 2]));
        assert!(!k.csrf_valid(&["browser", "b1", "sign_in"], "not base64!"));
        assert!(!k.csrf_valid(&["browser", "b1", "sign_in"], ""));
    }
}
