//! The SMS text: short, GSM-7 only, and origin-bound so browsers and phones can autofill the code.

/// One SMS segment in the GSM-7 alphabet holds 160 septets; beyond that (or with a single
/// character outside GSM-7, which forces UCS-2 and 70 characters) the message is split and billed
/// as several.
pub const SMS_SEGMENT_SEPTETS: usize = 160;

/// The SMS text for `code`:
///
/// ```text
/// 123456 is your Acme verification code.
///
/// @accounts.example.com #123456
/// ```
///
/// The last line is an origin-bound one-time code (WICG "Origin-bound one-time codes delivered via
/// SMS", used by WebOTP and iOS/Android autofill). The format carries a bare host: the origin is
/// always `https://<host>` on the default port, and a `:` is not allowed in it, so any port in
/// `host` is dropped (a server on a non-default port cannot get origin-bound autofill).
///
/// The message stays within one GSM-7 segment: when the product name is not GSM-7 or would make
/// it too long, the first line becomes "123456 is your verification code." instead. The origin
/// line is never shortened; only a host of more than ~110 characters could still overflow.
pub fn sms_text(code: &str, product_name: &str, host: &str) -> String {
    let host = strip_port(host);
    let last = format!("@{host} #{code}");
    let branded = format!("{code} is your {} verification code.", product_name.trim());
    let message = |first: &str| format!("{first}\n\n{last}");
    let candidate = message(&branded);
    let product_ok = product_name.chars().all(|c| !c.is_control() && is_gsm7(c));
    if product_ok && gsm7_septets(&candidate) <= Some(SMS_SEGMENT_SEPTETS) {
        candidate
    } else {
        message(&format!("{code} is your verification code."))
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // An IPv6 literal: "[::1]:8443".
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The GSM 03.38 basic character set.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Characters of the extension table: each takes an escape septet plus its own.
const GSM7_EXTENSION: &str = "^{}\\[~]|€\u{c}";

fn is_gsm7(c: char) -> bool {
    GSM7_BASIC.contains(c) || GSM7_EXTENSION.contains(c)
}

/// Septets `text` takes in GSM-7, or `None` if it needs UCS-2.
pub fn gsm7_septets(text: &str) -> Option<usize> {
    text.chars().try_fold(0, |n, c| {
        if GSM7_BASIC.contains(c) {
            Some(n + 1)
        } else if GSM7_EXTENSION.contains(c) {
            Some(n + 2)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_the_product_and_ends_with_the_origin_bound_line() {
        let text = sms_text("123456", "Acme", "accounts.example.com");
        assert_eq!(
            text,
            "123456 is your Acme verification code.\n\n@accounts.example.com #123456"
        );
    }

    #[test]
    fn a_port_is_left_out_of_the_origin_line() {
        assert!(sms_text("123456", "Acme", "accounts.example.com:8443")
            .ends_with("\n@accounts.example.com #123456"));
        assert!(sms_text("123456", "Acme", "[::1]:8443").ends_with("\n@[::1] #123456"));
    }

    #[test]
    fn a_long_product_name_falls_back_to_the_plain_wording() {
        let text = sms_text("123456", &"A".repeat(200), "accounts.example.com");
        assert_eq!(
            text,
            "123456 is your verification code.\n\n@accounts.example.com #123456"
        );
        assert!(gsm7_septets(&text).unwrap() <= SMS_SEGMENT_SEPTETS);
    }

    #[test]
    fn a_product_name_outside_gsm7_falls_back_to_the_plain_wording() {
        let text = sms_text("123456", "Acme 🔐", "accounts.example.com");
        assert!(
            text.starts_with("123456 is your verification code.\n"),
            "{text}"
        );
        assert!(gsm7_septets(&text).unwrap() <= SMS_SEGMENT_SEPTETS);
    }

    #[test]
    fn a_name_that_just_fits_is_kept() {
        let host = "accounts.example.com";
        let fixed = gsm7_septets(&sms_text("123456", "", host)).unwrap();
        let name = "N".repeat(SMS_SEGMENT_SEPTETS - fixed);
        let text = sms_text("123456", &name, host);
        assert_eq!(gsm7_septets(&text), Some(SMS_SEGMENT_SEPTETS));
        assert!(text.contains(&name));
        let text = sms_text("123456", &format!("{name}N"), host);
        assert!(!text.contains(&name));
    }

    #[test]
    fn extension_characters_count_twice() {
        assert_eq!(gsm7_septets("a€"), Some(3));
        assert_eq!(gsm7_septets("é"), Some(1));
        assert_eq!(gsm7_septets("ç"), None);
    }
}
