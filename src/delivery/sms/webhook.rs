//! `Latchkey-Signature`: how a webhook receiver knows a request came from this server, unaltered
//! and recently (Stripe's scheme: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "Latchkey-Signature";

fn mac(secret: &str, t: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The header value signing `body` at `t` (unix seconds).
pub fn webhook_signature(secret: &str, body: &[u8], t: i64) -> String {
    format!(
        "t={t},v1={}",
        hex::encode(mac(secret, t, body).finalize().into_bytes())
    )
}

/// True iff `header` carries a `v1` signature of `body` under `secret` and its timestamp is within
/// `tolerance_secs` of `now_unix` (so a captured request cannot be replayed later). The
/// comparison is constant-time; several `v1` entries (a secret being rotated) are allowed.
pub fn verify_webhook_signature(
    secret: &str,
    header: &str,
    body: &[u8],
    now_unix: i64,
    tolerance_secs: i64,
) -> bool {
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) if t.is_none() => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if now_unix.abs_diff(t) > tolerance_secs.max(0) as u64 {
        return false;
    }
    signatures
        .iter()
        .any(|s| mac(secret, t, body).verify_slice(s).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const BODY: &[u8] = br#"{"to":"+15005550006","code":"123456"}"#;

    #[test]
    fn a_signature_verifies_against_its_body() {
        let header = webhook_signature(SECRET, BODY, 1_700_000_000);
        assert!(header.starts_with("t=1700000000,v1="), "{header}");
        assert!(verify_webhook_signature(
            SECRET,
            &header,
            BODY,
            1_700_000_010,
            300
        ));
    }

    #[test]
    fn a_tampered_body_is_rejected() {
        let header = webhook_signature(SECRET, BODY, 1_700_000_000);
        let tampered = br#"{"to":"+15005550007","code":"123456"}"#;
        assert!(!verify_webhook_signature(
            SECRET,
            &header,
            tampered,
            1_700_000_000,
            300
        ));
    }

    #[test]
    fn another_secret_is_rejected() {
        let header = webhook_signature(SECRET, BODY, 1_700_000_000);
        assert!(!verify_webhook_signature(
            &SECRET.replace('0', "1"),
            &header,
            BODY,
            1_700_000_000,
            300
        ));
    }

    #[test]
    fn a_replay_outside_the_tolerance_is_rejected() {
        let header = webhook_signature(SECRET, BODY, 1_700_000_000);
        assert!(!verify_webhook_signature(
            SECRET,
            &header,
            BODY,
            1_700_000_301,
            300
        ));
        assert!(!verify_webhook_signature(
            SECRET,
            &header,
            BODY,
            1_699_999_699,
            300
        ));
    }

    #[test]
    fn a_changed_timestamp_is_rejected() {
        let header =
            webhook_signature(SECRET, BODY, 1_700_000_000).replace("t=1700000000", "t=1700000100");
        assert!(!verify_webhook_signature(
            SECRET,
            &header,
            BODY,
            1_700_000_100,
            300
        ));
    }

    #[test]
    fn malformed_headers_are_rejected() {
        for header in [
            "",
            "t=1700000000",
            "v1=00",
            "t=x,v1=00",
            "t=1700000000,v1=zz",
        ] {
            assert!(
                !verify_webhook_signature(SECRET, header, BODY, 1_700_000_000, 300),
                "{header}"
            );
        }
    }
}
