//! Email addresses, reachable only through [`EmailAddress::parse`].

use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// A syntactically valid, normalized email address.
///
/// Guarantees, once built:
/// - no control characters (so no CR/LF header injection), no bidi controls, no zero-width
///   characters; Unicode is NFC;
/// - at most 254 characters in its ASCII (punycode) form, local part at most 64 bytes;
/// - a dot-atom local part (no quoted strings, no comments) and a domain with at least two
///   labels that converts to ASCII under IDNA (UTS 46).
///
/// Two forms are kept: [`display`](Self::display) is what the person typed (trimmed, NFC, domain
/// lowercased) and [`canonical`](Self::canonical) is the comparison key: the local part
/// lowercased and the domain in punycode. Two addresses with the same canonical form belong to one
/// account. Local parts are compared case-insensitively (as every large mail provider treats them);
/// dots and `+tags` are kept, since not every provider ignores them.
#[derive(Clone, PartialEq, Eq)]
pub struct EmailAddress {
    display: String,
    canonical: String,
}

/// Why an email address was refused. The `Display` text is shown to the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("Enter your email address.")]
    Empty,
    #[error("Email addresses can be at most 254 characters long.")]
    TooLong,
    #[error("This email address contains characters that are not allowed.")]
    ForbiddenCharacter,
    #[error("Enter an email address like name@example.com.")]
    Malformed,
}

/// Characters that render invisibly or reorder text: refused anywhere in an address.
fn is_invisible_or_bidi(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' // zero-width space/joiners, LRM, RLM
        | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
        | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
        | '\u{2066}'..='\u{2069}' // bidi isolates
        | '\u{061C}' | '\u{FEFF}' | '\u{00AD}' | '\u{180E}')
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii() && c.is_alphanumeric())
}

impl EmailAddress {
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        // Only visible white space is trimmed: a CR, LF or other control character anywhere is refused.
        let trimmed = input.trim_matches(|c: char| c.is_whitespace() && !c.is_control());
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        if trimmed
            .chars()
            .any(|c| c.is_control() || is_invisible_or_bidi(c))
        {
            return Err(EmailError::ForbiddenCharacter);
        }
        if trimmed.chars().count() > 254 {
            return Err(EmailError::TooLong);
        }
        let nfc: String = trimmed.nfc().collect();
        let (local, domain) = nfc.rsplit_once('@').ok_or(EmailError::Malformed)?;
        if local.is_empty() || domain.is_empty() || local.contains('@') {
            return Err(EmailError::Malformed);
        }
        if local.len() > 64 {
            return Err(EmailError::TooLong);
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(EmailError::Malformed);
        }
        if !local.chars().all(|c| c == '.' || is_atext(c)) {
            return Err(EmailError::Malformed);
        }
        if domain.chars().any(|c| c.is_whitespace()) {
            return Err(EmailError::Malformed);
        }
        let domain_lower = domain.to_lowercase();
        let ascii_domain =
            idna::domain_to_ascii_strict(&domain_lower).map_err(|_| EmailError::Malformed)?;
        let labels: Vec<&str> = ascii_domain.split('.').collect();
        if labels.len() < 2
            || labels.iter().any(|l| {
                l.is_empty()
                    || l.len() > 63
                    || l.starts_with('-')
                    || l.ends_with('-')
                    || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
            || labels
                .last()
                .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(EmailError::Malformed);
        }
        let canonical_local: String = local.to_lowercase().nfc().collect();
        let canonical = format!("{canonical_local}@{ascii_domain}");
        if canonical.len() > 254 {
            return Err(EmailError::TooLong);
        }
        // The address must also be one the mailer accepts, so delivery can never fail on syntax.
        if lettre::Address::new(local, &ascii_domain).is_err() {
            return Err(EmailError::Malformed);
        }
        Ok(Self {
            display: format!("{local}@{domain_lower}"),
            canonical,
        })
    }

    /// Rebuilds an address read back from the store; the store only holds parsed addresses.
    pub fn from_trusted(display: String, canonical: String) -> Self {
        Self { display, canonical }
    }

    /// The address as typed (trimmed, NFC, domain lowercased): what the person sees.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The comparison key: one per account.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The address in the form mail is sent to (ASCII domain).
    pub fn mailbox_address(&self) -> Option<lettre::Address> {
        let (local, _) = self.display.rsplit_once('@')?;
        let (_, domain) = self.canonical.rsplit_once('@')?;
        lettre::Address::new(local, domain).ok()
    }

    /// A masked form for logs: first character of the local part and the domain.
    pub fn masked(&self) -> String {
        let (local, domain) = self.canonical.rsplit_once('@').unwrap_or(("", ""));
        let first: String = local.chars().take(1).collect();
        format!("{first}***@{domain}")
    }

    /// A masked form for pages: first character of the local part, "•••", then the domain as
    /// shown, e.g. "j•••@example.com". Reveals no more than [`masked`](Self::masked).
    pub fn safe_identifier(&self) -> String {
        let (local, domain) = self.display.rsplit_once('@').unwrap_or(("", ""));
        let first: String = local.chars().take(1).collect();
        format!("{first}•••@{domain}")
    }

    /// Whether this is a test address: one of the `+`-separated tags of the local part is
    /// exactly `latchkey_test`, compared on the canonical (lowercased) form, e.g.
    /// "jane+latchkey_test@example.com" or "jane+latchkey_test+2@example.com".
    pub fn is_test_address(&self) -> bool {
        let (local, _) = self.canonical.rsplit_once('@').unwrap_or(("", ""));
        local.split('+').skip(1).any(|tag| tag == "latchkey_test")
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> EmailAddress {
        EmailAddress::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e:?}"))
    }

    #[test]
    fn plain_addresses_parse_and_trim() {
        let e = ok("  jane.doe+tag@Example.COM ");
        assert_eq!(e.display(), "jane.doe+tag@example.com");
        assert_eq!(e.canonical(), "jane.doe+tag@example.com");
    }

    #[test]
    fn case_differences_share_a_canonical_form() {
        assert_eq!(
            ok("User@EXAMPLE.com").canonical(),
            ok("user@example.com").canonical()
        );
    }

    #[test]
    fn idn_domains_are_compared_in_punycode_and_shown_in_unicode() {
        let e = ok("anna@Bücher.example");
        assert_eq!(e.display(), "anna@bücher.example");
        assert_eq!(e.canonical(), "anna@xn--bcher-kva.example");
    }

    #[test]
    fn a_cyrillic_lookalike_is_a_different_address() {
        assert_ne!(
            ok("user@exаmple.com").canonical(),
            ok("user@example.com").canonical()
        );
    }

    #[test]
    fn a_dotless_i_is_not_folded_into_i() {
        assert_ne!(
            ok("mıke@example.org").canonical(),
            ok("mike@example.org").canonical()
        );
    }

    #[test]
    fn nfd_and_nfc_forms_are_one_address() {
        assert_eq!(
            ok("jose\u{301}@example.com").canonical(),
            ok("josé@example.com").canonical()
        );
    }

    #[test]
    fn empty_input_is_refused() {
        assert_eq!(EmailAddress::parse("   "), Err(EmailError::Empty));
    }

    #[test]
    fn header_injection_is_refused() {
        for s in [
            "a@x.test\r\nBcc: e@evil.test",
            "a@x.test\nBcc:e@evil.test",
            "a\0@x.test",
            "a@x.test\r",
        ] {
            assert_eq!(
                EmailAddress::parse(s),
                Err(EmailError::ForbiddenCharacter),
                "{s:?}"
            );
        }
    }

    #[test]
    fn bidi_and_zero_width_characters_are_refused() {
        for s in [
            "ab\u{202E}c@example.com",
            "a\u{200D}b@example.com",
            "ab@exa\u{200B}mple.com",
        ] {
            assert_eq!(
                EmailAddress::parse(s),
                Err(EmailError::ForbiddenCharacter),
                "{s:?}"
            );
        }
    }

    #[test]
    fn overlong_addresses_are_refused() {
        let s = format!("{}@example.com", "a".repeat(243));
        assert_eq!(s.len(), 255);
        assert_eq!(EmailAddress::parse(&s), Err(EmailError::TooLong));
        let local = format!("{}@example.com", "a".repeat(65));
        assert_eq!(EmailAddress::parse(&local), Err(EmailError::TooLong));
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for s in [
            "plainaddress",
            "@example.com",
            "jane@",
            "jane@example",
            "jane@@example.com",
            "jane..doe@example.com",
            ".jane@example.com",
            "jane.@example.com",
            "jane doe@example.com",
            "\"jane\"@example.com",
            "jane@-example.com",
            "jane@example..com",
            "jane@example.123",
            "<jane@example.com>",
            "Jane <jane@example.com>",
            "jane@exa_mple.com",
        ] {
            assert_eq!(EmailAddress::parse(s), Err(EmailError::Malformed), "{s:?}");
        }
    }

    #[test]
    fn the_mailbox_address_uses_the_ascii_domain() {
        let e = ok("anna@bücher.example");
        assert_eq!(
            e.mailbox_address().unwrap().to_string(),
            "anna@xn--bcher-kva.example"
        );
    }

    #[test]
    fn the_safe_identifier_shows_the_first_character_and_the_domain() {
        assert_eq!(
            ok("Jane.Doe@Example.com").safe_identifier(),
            "J•••@example.com"
        );
    }

    #[test]
    fn a_latchkey_test_subaddress_marks_a_test_address() {
        assert!(ok("jane+latchkey_test@example.com").is_test_address());
        assert!(ok("Jane+LATCHKEY_TEST@example.com").is_test_address());
        assert!(!ok("jane@example.com").is_test_address());
        assert!(!ok("latchkey_test@example.com").is_test_address());
        assert!(ok("jane+latchkey_test+2@example.com").is_test_address());
        assert!(!ok("jane+latchkey_testing@example.com").is_test_address());
    }

    #[test]
    fn debug_output_is_masked() {
        let e = ok("jane.doe@example.com");
        assert_eq!(format!("{e:?}"), "EmailAddress(j***@example.com)");
    }
}
