//! The signing keys: Ed25519 key pairs, the JWT they sign and the JWKS they publish.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::rules::{Claims, TokenError};

/// One Ed25519 key pair and its key id (the RFC 7638 thumbprint of its public JWK).
pub struct SigningKey {
    kid: String,
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, redacted)", self.kid)
    }
}

impl SigningKey {
    /// A new key pair, with its PKCS#8 form (to be sealed and stored).
    pub fn generate() -> anyhow::Result<(Self, Vec<u8>)> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| anyhow::anyhow!("generating an Ed25519 key failed"))?;
        let key = Self::from_pkcs8(pkcs8.as_ref())?;
        Ok((key, pkcs8.as_ref().to_vec()))
    }

    /// The key pair of a stored PKCS#8 document.
    pub fn from_pkcs8(pkcs8: &[u8]) -> anyhow::Result<Self> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|_| anyhow::anyhow!("a stored signing key is not an Ed25519 PKCS#8 key"))?;
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        // RFC 7638: the required members, in lexicographic order, without white space.
        let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        Ok(Self { kid, pair })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (RFC 8037).
    pub fn public_jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref()),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }
}

/// The keys in force, newest first: the newest signs, all of them verify.
#[derive(Debug)]
pub struct KeySet {
    keys: Vec<SigningKey>,
}

impl KeySet {
    /// A key set from keys newest first; at least one.
    pub fn new(keys: Vec<SigningKey>) -> anyhow::Result<Self> {
        anyhow::ensure!(!keys.is_empty(), "no signing key");
        Ok(Self { keys })
    }

    /// `{"keys": [...]}`, as served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Value {
        json!({ "keys": self.keys.iter().map(SigningKey::public_jwk).collect::<Vec<_>>() })
    }

    /// A compact JWS of `claims`, signed with the newest key.
    pub fn sign(&self, claims: &Claims) -> String {
        let key = &self.keys[0];
        let header = json!({ "alg": "EdDSA", "typ": "JWT", "kid": key.kid });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default())
        );
        let signature = key.pair.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }

    /// The claims of a token signed by one of these keys. Checks the form, that the algorithm is
    /// exactly `EdDSA` (never `none`, never an HMAC keyed with a public key), the key id and the
    /// signature; not the times or the issuer (see [`super::check_claims`]).
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::Malformed);
        let header: Value =
            serde_json::from_slice(&decode(header)?).map_err(|_| TokenError::Malformed)?;
        if header.get("alg").and_then(Value::as_str) != Some("EdDSA") {
            return Err(TokenError::Algorithm);
        }
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .ok_or(TokenError::UnknownKey)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(TokenError::UnknownKey)?;
        let signing_input_len = token.len() - sig.len() - 1;
        UnparsedPublicKey::new(&signature::ED25519, key.pair.public_key().as_ref())
            .verify(&token.as_bytes()[..signing_input_len], &decode(sig)?)
            .map_err(|_| TokenError::Signature)?;
        serde_json::from_slice(&decode(payload)?).map_err(|_| TokenError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn set() -> KeySet {
        KeySet::new(vec![SigningKey::generate().unwrap().0]).unwrap()
    }

    fn claims() -> Claims {
        Claims::new(
            "https://accounts.example.com",
            "usr_1",
            "ses_1",
            "https://app.example.com",
            datetime!(2026-12-02 12:00 UTC),
        )
    }

    #[test]
    fn a_signed_token_verifies_and_keeps_its_claims() {
        let keys = set();
        let token = keys.sign(&claims());
        assert_eq!(keys.verify(&token), Ok(claims()));
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["kid"], keys.keys[0].kid());
    }

    #[test]
    fn another_keys_token_a_tampered_one_and_garbage_are_refused() {
        let keys = set();
        let token = keys.sign(&claims());
        assert_eq!(set().verify(&token), Err(TokenError::UnknownKey));
        let (head, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let mut forged = claims();
        forged.sub = "usr_2".into();
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            keys.verify(&format!("{head}.{payload}.{sig}")),
            Err(TokenError::Signature)
        );
        for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!", &format!("{token}x")] {
            assert!(keys.verify(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn alg_none_and_hmac_headers_are_refused_before_any_key_is_used() {
        let keys = set();
        let token = keys.sign(&claims());
        let (_, rest) = token.split_once('.').unwrap();
        for alg in ["none", "HS256", "RS256", "EdDSA "] {
            let header = URL_SAFE_NO_PAD
                .encode(json!({"alg": alg, "typ": "JWT", "kid": keys.keys[0].kid()}).to_string());
            assert_eq!(
                keys.verify(&format!("{header}.{rest}")),
                Err(TokenError::Algorithm),
                "{alg}"
            );
        }
    }

    #[test]
    fn the_key_id_is_the_rfc_7638_thumbprint() {
        // RFC 8037 appendix A.3: the thumbprint of its example Ed25519 public key.
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        assert_eq!(
            URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }
}
