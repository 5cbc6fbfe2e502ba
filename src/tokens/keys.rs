//! The signing keys: Ed25519, RSA and P-256 key pairs, the JWTs they sign and the JWKS they
//! publish. Every key is bound to exactly one algorithm: a token is verified with the algorithm
//! of the key its `kid` names, and only if its header says that algorithm and the caller
//! accepts it, so no token can choose how it is checked (`none`, an HMAC keyed with a public
//! key, RS256 against an EC key).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, UnparsedPublicKey};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::rules::{Claims, TokenError};

/// The JWS algorithms Latchkey signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// Ed25519 (RFC 8037): session tokens, and OIDC clients that choose it.
    EdDSA,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys: what every OIDC client must accept.
    RS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
}

impl Alg {
    pub const ALL: [Alg; 3] = [Alg::RS256, Alg::EdDSA, Alg::ES256];

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::EdDSA => "EdDSA",
            Alg::RS256 => "RS256",
            Alg::ES256 => "ES256",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl std::fmt::Display for Alg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

enum Pair {
    Ed(Ed25519KeyPair),
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// One key pair, its algorithm, its key id (the RFC 7638 thumbprint of its public JWK) and
/// its public JWK.
pub struct SigningKey {
    kid: String,
    alg: Alg,
    pair: Pair,
    jwk: Value,
    /// When it starts signing (a rotated-in key is published first); `None`: at once.
    active_from: Option<time::OffsetDateTime>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({} {}, redacted)", self.alg, self.kid)
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// RFC 7638: the SHA-256 of the required members, in lexicographic order, without white space.
fn thumbprint(canonical: &str) -> String {
    b64(&Sha256::digest(canonical.as_bytes()))
}

impl SigningKey {
    /// A new key pair for `alg`, with its PKCS#8 form (to be sealed and stored). An RSA key
    /// takes a moment (2048 bits); it is made once per instance.
    pub fn generate(alg: Alg) -> anyhow::Result<(Self, Vec<u8>)> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = match alg {
            Alg::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| anyhow::anyhow!("generating an Ed25519 key failed"))?
                .as_ref()
                .to_vec(),
            Alg::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| anyhow::anyhow!("generating a P-256 key failed"))?
                    .as_ref()
                    .to_vec()
            }
            Alg::RS256 => {
                use rsa::pkcs8::EncodePrivateKey;
                let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)?;
                key.to_pkcs8_der()?.as_bytes().to_vec()
            }
        };
        let key = Self::from_pkcs8(alg, &pkcs8)?;
        Ok((key, pkcs8))
    }

    /// The key pair of a stored PKCS#8 document for `alg`.
    pub fn from_pkcs8(alg: Alg, pkcs8: &[u8]) -> anyhow::Result<Self> {
        let bad = || anyhow::anyhow!("a stored {alg} signing key is not a PKCS#8 key of that kind");
        let (pair, canonical, mut jwk) = match alg {
            Alg::EdDSA => {
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| bad())?;
                let x = b64(pair.public_key().as_ref());
                let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
                let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x});
                (Pair::Ed(pair), canonical, jwk)
            }
            Alg::ES256 => {
                let rng = ring::rand::SystemRandom::new();
                let pair = EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    pkcs8,
                    &rng,
                )
                .map_err(|_| bad())?;
                // An uncompressed point: 0x04 ‖ x ‖ y.
                let point = pair.public_key().as_ref();
                anyhow::ensure!(point.len() == 65 && point[0] == 4, bad());
                let (x, y) = (b64(&point[1..33]), b64(&point[33..]));
                let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
                let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y});
                (Pair::Ec(pair), canonical, jwk)
            }
            Alg::RS256 => {
                let pair = RsaKeyPair::from_pkcs8(pkcs8).map_err(|_| bad())?;
                let public: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
                let n = b64(&public.n);
                let e = b64(&public.e);
                let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
                let jwk = json!({"kty": "RSA", "n": n, "e": e});
                (Pair::Rsa(pair), canonical, jwk)
            }
        };
        let kid = thumbprint(&canonical);
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(alg.as_str());
        jwk["use"] = json!("sig");
        Ok(Self {
            kid,
            alg,
            pair,
            jwk,
            active_from: None,
        })
    }

    /// The key, signing only from `at` on (it is published before).
    pub fn active_from(mut self, at: time::OffsetDateTime) -> Self {
        self.active_from = Some(at);
        self
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The public key as a JWK (RFC 7517; OKP keys RFC 8037).
    pub fn public_jwk(&self) -> &Value {
        &self.jwk
    }

    fn sign_bytes(&self, input: &[u8]) -> Vec<u8> {
        match &self.pair {
            Pair::Ed(pair) => pair.sign(input).as_ref().to_vec(),
            Pair::Ec(pair) => pair
                .sign(&ring::rand::SystemRandom::new(), input)
                .map(|s| s.as_ref().to_vec())
                .unwrap_or_default(),
            Pair::Rsa(pair) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                let rng = ring::rand::SystemRandom::new();
                match pair.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut sig) {
                    Ok(()) => sig,
                    Err(_) => Vec::new(),
                }
            }
        }
    }

    fn verify_bytes(&self, input: &[u8], sig: &[u8]) -> bool {
        let public = |alg: &'static dyn signature::VerificationAlgorithm, key: &[u8]| {
            UnparsedPublicKey::new(alg, key.to_vec())
                .verify(input, sig)
                .is_ok()
        };
        match &self.pair {
            Pair::Ed(pair) => public(&signature::ED25519, pair.public_key().as_ref()),
            Pair::Ec(pair) => public(
                &signature::ECDSA_P256_SHA256_FIXED,
                pair.public_key().as_ref(),
            ),
            Pair::Rsa(pair) => public(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                pair.public_key().as_ref(),
            ),
        }
    }
}

/// The header of a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<T> {
    pub alg: Alg,
    pub typ: Option<String>,
    pub claims: T,
}

/// The keys in force, newest first: all of them are published and verify; of each algorithm,
/// the newest key that is active signs.
#[derive(Debug)]
pub struct KeySet {
    keys: Vec<SigningKey>,
    /// The index of the key that signs, per algorithm that has one.
    signers: Vec<usize>,
}

impl KeySet {
    /// A key set from keys newest first, every key active; at least one EdDSA key (session
    /// tokens).
    pub fn new(keys: Vec<SigningKey>) -> anyhow::Result<Self> {
        Self::at(keys, None)
    }

    /// A key set as it stands at `now`: of each algorithm, the newest key active by then signs
    /// (or, if none is yet, the oldest: a set never lacks a signer for an algorithm it has).
    pub fn at(keys: Vec<SigningKey>, now: Option<time::OffsetDateTime>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            keys.iter().any(|k| k.alg == Alg::EdDSA),
            "no EdDSA signing key"
        );
        let active = |k: &SigningKey| match (k.active_from, now) {
            (Some(from), Some(now)) => from <= now,
            _ => true,
        };
        let signers = Alg::ALL
            .into_iter()
            .filter_map(|alg| {
                let of_alg = || keys.iter().enumerate().filter(move |(_, k)| k.alg == alg);
                of_alg()
                    .find(|(_, k)| active(k))
                    .or_else(|| of_alg().next_back())
                    .map(|(i, _)| i)
            })
            .collect();
        Ok(Self { keys, signers })
    }

    /// The key ids, newest first (to tell whether a reload changed anything).
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.kid.as_str()).collect()
    }

    /// The key that signs with `alg`, if any.
    pub fn signer(&self, alg: Alg) -> Option<&SigningKey> {
        self.signers
            .iter()
            .map(|&i| &self.keys[i])
            .find(|k| k.alg == alg)
    }

    /// Whether a key of `alg` signs.
    pub fn signs(&self, alg: Alg) -> bool {
        self.keys.iter().any(|k| k.alg == alg)
    }

    /// The algorithms these keys sign with (for the discovery document).
    pub fn algs(&self) -> Vec<Alg> {
        Alg::ALL.into_iter().filter(|a| self.signs(*a)).collect()
    }

    /// `{"keys": [...]}`, as served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Value {
        json!({ "keys": self.keys.iter().map(SigningKey::public_jwk).collect::<Vec<_>>() })
    }

    /// A session token: `claims` signed with the newest EdDSA key.
    pub fn sign(&self, claims: &Claims) -> String {
        self.sign_as(Alg::EdDSA, "JWT", claims)
            .expect("a key set always has an EdDSA key")
    }

    /// A compact JWS of `claims` with header `typ`, signed with the newest key of `alg`; `None`
    /// if there is no such key.
    pub fn sign_as<T: Serialize>(&self, alg: Alg, typ: &str, claims: &T) -> Option<String> {
        let key = self.signer(alg)?;
        let header = json!({ "alg": alg.as_str(), "typ": typ, "kid": key.kid });
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(&serde_json::to_vec(claims).ok()?)
        );
        let signature = key.sign_bytes(signing_input.as_bytes());
        (!signature.is_empty()).then(|| format!("{signing_input}.{}", b64(&signature)))
    }

    /// The claims of a session token signed by one of these keys. Checks the form, that the
    /// algorithm is exactly `EdDSA`, the key id and the signature; not the times or the issuer
    /// (see [`super::check_claims`]).
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_as(token, &[Alg::EdDSA]).map(|v| v.claims)
    }

    /// The claims of a token signed by one of these keys with one of `accepted`: the header's
    /// `alg` must be the algorithm of the key its `kid` names (and one of `accepted`), before
    /// any key is used.
    pub fn verify_as<T: DeserializeOwned>(
        &self,
        token: &str,
        accepted: &[Alg],
    ) -> Result<Verified<T>, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::Malformed);
        let header: Value =
            serde_json::from_slice(&decode(header)?).map_err(|_| TokenError::Malformed)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(Alg::parse)
            .filter(|a| accepted.contains(a))
            .ok_or(TokenError::Algorithm)?;
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .ok_or(TokenError::UnknownKey)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(TokenError::UnknownKey)?;
        if key.alg != alg {
            return Err(TokenError::Algorithm);
        }
        let signing_input_len = token.len() - sig.len() - 1;
        if !key.verify_bytes(&token.as_bytes()[..signing_input_len], &decode(sig)?) {
            return Err(TokenError::Signature);
        }
        let claims =
            serde_json::from_slice(&decode(payload)?).map_err(|_| TokenError::Malformed)?;
        Ok(Verified {
            alg,
            typ: header.get("typ").and_then(Value::as_str).map(String::from),
            claims,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn set() -> KeySet {
        KeySet::new(vec![SigningKey::generate(Alg::EdDSA).unwrap().0]).unwrap()
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
        for alg in ["none", "HS256", "RS256", "ES256", "EdDSA "] {
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

#[cfg(test)]
mod algorithm_tests {
    use super::*;
    use serde_json::Value;

    fn every_alg() -> KeySet {
        KeySet::new(
            Alg::ALL
                .into_iter()
                .map(|a| SigningKey::generate(a).unwrap().0)
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn each_algorithm_signs_and_verifies_with_its_own_key_only() {
        let keys = every_alg();
        let claims = json!({"sub": "usr_1", "aud": "app"});
        for alg in Alg::ALL {
            let token = keys.sign_as(alg, "JWT", &claims).unwrap();
            let v: Verified<Value> = keys.verify_as(&token, &[alg]).unwrap();
            assert_eq!((v.alg, v.claims.clone()), (alg, claims.clone()), "{alg}");
            // Accepting only the other algorithms refuses it before any key is used.
            let others: Vec<Alg> = Alg::ALL.into_iter().filter(|a| *a != alg).collect();
            assert_eq!(
                keys.verify_as::<Value>(&token, &others).unwrap_err(),
                TokenError::Algorithm,
                "{alg}"
            );
        }
    }

    #[test]
    fn a_header_naming_another_algorithm_than_its_keys_is_refused() {
        let keys = every_alg();
        let rsa = keys
            .sign_as(Alg::RS256, "JWT", &json!({"sub": "x"}))
            .unwrap();
        let ec_kid = keys
            .keys
            .iter()
            .find(|k| k.alg == Alg::ES256)
            .unwrap()
            .kid
            .clone();
        let (_, rest) = rsa.split_once('.').unwrap();
        let header = b64(json!({"alg": "RS256", "kid": ec_kid})
            .to_string()
            .as_bytes());
        assert_eq!(
            keys.verify_as::<Value>(&format!("{header}.{rest}"), &Alg::ALL)
                .unwrap_err(),
            TokenError::Algorithm
        );
    }

    #[test]
    fn the_jwks_publishes_each_key_with_its_thumbprint_and_algorithm() {
        let keys = every_alg();
        let jwks = keys.jwks();
        let published = jwks["keys"].as_array().unwrap();
        assert_eq!(published.len(), 3);
        for key in published {
            let canonical = match key["kty"].as_str().unwrap() {
                "RSA" => format!(
                    r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                    key["e"].as_str().unwrap(),
                    key["n"].as_str().unwrap()
                ),
                "EC" => format!(
                    r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                    key["x"].as_str().unwrap(),
                    key["y"].as_str().unwrap()
                ),
                _ => format!(
                    r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                    key["x"].as_str().unwrap()
                ),
            };
            assert_eq!(key["kid"].as_str().unwrap(), thumbprint(&canonical));
            assert!(
                key.get("d").is_none() && key.get("p").is_none(),
                "no private part: {key}"
            );
        }
        assert_eq!(keys.algs(), Alg::ALL.to_vec());
    }

    #[test]
    fn a_rotated_in_key_is_published_at_once_and_signs_from_its_activation() {
        use time::macros::datetime;
        let now = datetime!(2026-12-02 12:00 UTC);
        let (old, old_pkcs8) = SigningKey::generate(Alg::EdDSA).unwrap();
        let (new, new_pkcs8) = SigningKey::generate(Alg::EdDSA).unwrap();
        let (old_kid, new_kid) = (old.kid().to_string(), new.kid().to_string());
        let activation = now + time::Duration::minutes(5);
        let build = |at| {
            KeySet::at(
                vec![
                    SigningKey::from_pkcs8(Alg::EdDSA, &new_pkcs8)
                        .unwrap()
                        .active_from(activation),
                    SigningKey::from_pkcs8(Alg::EdDSA, &old_pkcs8).unwrap(),
                ],
                Some(at),
            )
            .unwrap()
        };
        let before = build(now);
        assert_eq!(
            before.kids(),
            vec![new_kid.as_str(), old_kid.as_str()],
            "both published"
        );
        assert_eq!(before.signer(Alg::EdDSA).unwrap().kid(), old_kid);
        let after = build(activation);
        assert_eq!(after.signer(Alg::EdDSA).unwrap().kid(), new_kid);
        // A token of either key verifies with both sets.
        let token = before.sign(&crate::tokens::Claims::new("i", "s", "sid", "a", now));
        assert!(after.verify(&token).is_ok());
        assert!(before.signer(Alg::RS256).is_none());
    }

    #[test]
    fn a_key_set_without_an_eddsa_key_is_refused() {
        assert!(KeySet::new(vec![SigningKey::generate(Alg::ES256).unwrap().0]).is_err());
    }
}
