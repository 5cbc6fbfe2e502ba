//! Test mode: which identifiers get no message and accept the fixed test code.

use super::Identifier;

/// Which identifiers are test identifiers. Off in production unless the operator opted in
/// twice (see `config`); outside dev mode, test email addresses are limited to the operator's
/// own test domains, so that nobody can sign up as `ceo+latchkey_test@bigcorp.com`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TestMode {
    /// No identifier is a test identifier.
    #[default]
    Off,
    /// `+latchkey_test` addresses (on any domain, or only on the listed canonical domains) and
    /// the reserved phone numbers +1 XXX 555-0100…0199 are test identifiers.
    On { email_domains: Option<Vec<String>> },
}

impl TestMode {
    pub fn is_on(&self) -> bool {
        matches!(self, Self::On { .. })
    }

    /// Whether `to` gets no message and accepts the fixed code.
    pub fn covers(&self, to: &Identifier) -> bool {
        match (self, to) {
            (Self::Off, _) => false,
            (Self::On { .. }, Identifier::Phone(p)) => p.is_test_number(),
            (Self::On { email_domains }, Identifier::Email(e)) => {
                e.is_test_address()
                    && match email_domains {
                        None => true,
                        Some(domains) => {
                            let domain = e.canonical().rsplit_once('@').map_or("", |(_, d)| d);
                            domains.iter().any(|d| d == domain)
                        }
                    }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Accepts, PhonePolicy};

    fn id(s: &str) -> Identifier {
        let policy = PhonePolicy::new(Some("US"), None)
            .unwrap()
            .with_test_numbers(true);
        let both = Accepts {
            email: true,
            phone: true,
        };
        Identifier::parse_field(s, both, &policy).unwrap()
    }

    #[test]
    fn off_covers_nothing() {
        assert!(!TestMode::Off.covers(&id("jane+latchkey_test@example.com")));
        assert!(!TestMode::Off.covers(&id("+1 201 555 0100")));
    }

    #[test]
    fn on_without_domains_covers_test_tags_on_any_domain_and_test_numbers() {
        let mode = TestMode::On {
            email_domains: None,
        };
        assert!(mode.covers(&id("jane+latchkey_test@bigcorp.com")));
        assert!(mode.covers(&id("+1 201 555 0100")));
        assert!(!mode.covers(&id("jane@bigcorp.com")));
        assert!(!mode.covers(&id("+1 201 555 0200")));
    }

    #[test]
    fn on_with_domains_covers_test_tags_on_those_domains_only() {
        let mode = TestMode::On {
            email_domains: Some(vec![
                "staging.acme.test".into(),
                "xn--bcher-kva.test".into(),
            ]),
        };
        assert!(mode.covers(&id("qa+latchkey_test@staging.acme.test")));
        assert!(mode.covers(&id("QA+latchkey_test@Staging.Acme.Test")));
        assert!(mode.covers(&id("qa+latchkey_test@bücher.test")));
        assert!(!mode.covers(&id("ceo+latchkey_test@bigcorp.com")));
        assert!(!mode.covers(&id("qa+latchkey_test@evil.staging.acme.test")));
        assert!(!mode.covers(&id("qa@staging.acme.test")));
        assert!(mode.covers(&id("+1 201 555 0100")));
    }
}
