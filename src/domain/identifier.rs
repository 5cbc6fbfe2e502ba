//! What a person signs in with: an email address or a phone number.

use super::email::{EmailAddress, EmailError};
use super::phone::{looks_like_phone, PhoneError, PhoneNumber, PhonePolicy};

/// The kind of an [`Identifier`], as stored in the `kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentifierKind {
    Email,
    Phone,
}

impl IdentifierKind {
    /// The stored spelling: "email" or "phone".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
        }
    }

    /// The inverse of [`as_str`](Self::as_str); `None` for any other text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "email" => Some(Self::Email),
            "phone" => Some(Self::Phone),
            _ => None,
        }
    }
}

/// A parsed email address or phone number; every guarantee of the inner type holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identifier {
    Email(EmailAddress),
    Phone(PhoneNumber),
}

/// Which kinds a form field accepts.
#[derive(Debug, Clone, Copy)]
pub struct Accepts {
    pub email: bool,
    pub phone: bool,
}

impl Accepts {
    /// Only identifiers of `kind`.
    pub fn only(kind: IdentifierKind) -> Self {
        Self {
            email: kind == IdentifierKind::Email,
            phone: kind == IdentifierKind::Phone,
        }
    }

    /// Whether identifiers of `kind` are accepted.
    pub fn allows(self, kind: IdentifierKind) -> bool {
        match kind {
            IdentifierKind::Email => self.email,
            IdentifierKind::Phone => self.phone,
        }
    }
}

/// Why a field's input was refused. The `Display` text is shown to the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    #[error(transparent)]
    Email(#[from] EmailError),
    #[error(transparent)]
    Phone(#[from] PhoneError),
    #[error("That looks like a phone number. Enter your email address.")]
    PhoneInEmailField,
    #[error("That looks like an email address. Enter your phone number.")]
    EmailInPhoneField,
    #[error("Enter your email address or phone number.")]
    Empty,
    #[error("Enter an email address or a phone number.")]
    Neither,
}

impl Identifier {
    /// The same identifier, whatever spelling each was typed in (kind and comparison key).
    pub fn same_as(&self, other: &Identifier) -> bool {
        self.kind() == other.kind() && self.canonical() == other.canonical()
    }

    /// Reads one field that accepts `accepts`. Input containing "@" is an email address; input
    /// made only of digits, spaces and + ( ) - . (at least one digit) is a phone number.
    /// Anything else gets the most helpful error for that field: with only email accepted it
    /// goes to [`EmailAddress::parse`] and its error; with only phone accepted it gets
    /// [`PhoneError::Letters`]; with both, text that is mostly digits (say "+1 201 555 O123")
    /// gets the phone error and other text [`IdentifierError::Neither`]. A field accepting
    /// neither kind refuses everything.
    pub fn parse_field(
        input: &str,
        accepts: Accepts,
        policy: &PhonePolicy,
    ) -> Result<Self, IdentifierError> {
        let email = || Ok(Self::Email(EmailAddress::parse(input)?));
        let phone = || Ok(Self::Phone(PhoneNumber::parse(input, policy)?));
        let blank = input
            .trim_matches(|c: char| c.is_whitespace() && !c.is_control())
            .is_empty();
        match (accepts.email, accepts.phone) {
            (false, false) if blank => Err(IdentifierError::Empty),
            (false, false) => Err(IdentifierError::Neither),
            (true, false) if looks_like_phone(input) => Err(IdentifierError::PhoneInEmailField),
            (true, false) => email(),
            (false, true) if input.contains('@') => Err(IdentifierError::EmailInPhoneField),
            (false, true) => phone(),
            (true, true) if blank => Err(IdentifierError::Empty),
            (true, true) if input.contains('@') => email(),
            (true, true) if looks_like_phone(input) || mostly_digits(input) => phone(),
            (true, true) => Err(IdentifierError::Neither),
        }
    }

    /// Rebuilds an identifier from stored columns (kind, value, canonical); never fails for
    /// stored data. For phone numbers `canonical` (E.164) is the source and `value` is unused.
    pub fn from_trusted(kind: IdentifierKind, value: String, canonical: String) -> Self {
        match kind {
            IdentifierKind::Email => Self::Email(EmailAddress::from_trusted(value, canonical)),
            IdentifierKind::Phone => Self::Phone(PhoneNumber::from_trusted(canonical)),
        }
    }

    pub fn kind(&self) -> IdentifierKind {
        match self {
            Self::Email(_) => IdentifierKind::Email,
            Self::Phone(_) => IdentifierKind::Phone,
        }
    }

    /// The comparison key: the email's canonical form or the phone's E.164.
    pub fn canonical(&self) -> &str {
        match self {
            Self::Email(e) => e.canonical(),
            Self::Phone(p) => p.e164(),
        }
    }

    /// What the person sees: the email as typed or the phone in international format.
    pub fn display(&self) -> &str {
        match self {
            Self::Email(e) => e.display(),
            Self::Phone(p) => p.display(),
        }
    }

    /// A masked form for pages, e.g. "j•••@example.com" or "+1 ••• ••• •123".
    pub fn safe_identifier(&self) -> String {
        match self {
            Self::Email(e) => e.safe_identifier(),
            Self::Phone(p) => p.safe_identifier(),
        }
    }

    /// A masked form for logs, e.g. "j***@example.com" or "+1*******123".
    pub fn masked(&self) -> String {
        match self {
            Self::Email(e) => e.masked(),
            Self::Phone(p) => p.masked(),
        }
    }
}

/// More ASCII digits than letters: text meant as a phone number with a typo in it.
fn mostly_digits(input: &str) -> bool {
    let digits = input.chars().filter(char::is_ascii_digit).count();
    let letters = input.chars().filter(|c| c.is_alphabetic()).count();
    digits > letters
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{proptest, ProptestConfig};

    const EMAIL: Accepts = Accepts {
        email: true,
        phone: false,
    };
    const PHONE: Accepts = Accepts {
        email: false,
        phone: true,
    };
    const BOTH: Accepts = Accepts {
        email: true,
        phone: true,
    };

    fn us() -> PhonePolicy {
        PhonePolicy::new(Some("US"), None).unwrap()
    }

    fn field(input: &str, accepts: Accepts) -> Result<Identifier, IdentifierError> {
        Identifier::parse_field(input, accepts, &us())
    }

    #[test]
    fn kinds_round_trip_through_their_stored_spelling() {
        for kind in [IdentifierKind::Email, IdentifierKind::Phone] {
            assert_eq!(IdentifierKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(IdentifierKind::parse("Email"), None);
    }

    #[test]
    fn a_field_taking_both_reads_an_email_address() {
        let id = field(" Jane@Example.com ", BOTH).unwrap();
        assert_eq!(id.kind(), IdentifierKind::Email);
        assert_eq!(id.canonical(), "jane@example.com");
        assert_eq!(id.safe_identifier(), "J•••@example.com");
        assert_eq!(id.masked(), "j***@example.com");
    }

    #[test]
    fn a_field_taking_both_reads_a_phone_number() {
        let id = field("(201) 555-0123", BOTH).unwrap();
        assert_eq!(id.kind(), IdentifierKind::Phone);
        assert_eq!(id.canonical(), "+12015550123");
        assert_eq!(id.display(), "+1 201-555-0123");
        assert_eq!(id.safe_identifier(), "+1 ••• ••• •123");
        assert_eq!(id.masked(), "+1*******123");
    }

    #[test]
    fn a_field_taking_both_explains_empty_and_unrecognised_input() {
        assert_eq!(field("  ", BOTH), Err(IdentifierError::Empty));
        assert_eq!(field("hello", BOTH), Err(IdentifierError::Neither));
        assert_eq!(
            field("jane@", BOTH),
            Err(IdentifierError::Email(EmailError::Malformed))
        );
        assert_eq!(
            field("+1 201 555 O123", BOTH),
            Err(IdentifierError::Phone(PhoneError::Letters))
        );
        assert_eq!(
            field("+1 201 555", BOTH),
            Err(IdentifierError::Phone(PhoneError::Invalid))
        );
    }

    #[test]
    fn an_email_field_refuses_a_phone_number() {
        assert_eq!(
            field("201 555 0123", EMAIL),
            Err(IdentifierError::PhoneInEmailField)
        );
        assert_eq!(
            field("hello", EMAIL),
            Err(IdentifierError::Email(EmailError::Malformed))
        );
        assert_eq!(
            field("", EMAIL),
            Err(IdentifierError::Email(EmailError::Empty))
        );
        assert!(matches!(
            field("jane@example.com", EMAIL),
            Ok(Identifier::Email(_))
        ));
    }

    #[test]
    fn a_phone_field_refuses_an_email_address() {
        assert_eq!(
            field("jane@example.com", PHONE),
            Err(IdentifierError::EmailInPhoneField)
        );
        assert_eq!(
            field("hello", PHONE),
            Err(IdentifierError::Phone(PhoneError::Letters))
        );
        assert_eq!(
            field("", PHONE),
            Err(IdentifierError::Phone(PhoneError::Empty))
        );
        assert!(matches!(
            field("201.555.0123", PHONE),
            Ok(Identifier::Phone(_))
        ));
    }

    #[test]
    fn a_field_taking_neither_refuses_everything() {
        let none = Accepts {
            email: false,
            phone: false,
        };
        assert_eq!(field("", none), Err(IdentifierError::Empty));
        assert_eq!(
            field("jane@example.com", none),
            Err(IdentifierError::Neither)
        );
    }

    #[test]
    fn error_texts_are_the_inner_errors_texts() {
        assert_eq!(
            IdentifierError::Phone(PhoneError::NotMobile).to_string(),
            PhoneError::NotMobile.to_string()
        );
        assert_eq!(
            IdentifierError::Email(EmailError::Empty).to_string(),
            "Enter your email address."
        );
    }

    #[test]
    fn test_identifiers_are_recognised_for_both_kinds() {
        let on = crate::domain::TestMode::On {
            email_domains: None,
        };
        let is_test = |s: &str| on.covers(&field(s, BOTH).unwrap());
        assert!(is_test("jane+latchkey_test@example.com"));
        assert!(is_test("+1 201 555 0100"));
        assert!(!is_test("jane@example.com"));
        assert!(!is_test("+1 201 555 0200"));
    }

    #[test]
    fn stored_identifiers_rebuild_to_the_same_value() {
        for input in ["Jane@Example.com", "+44 7400 123456"] {
            let id = field(input, BOTH).unwrap();
            let again = Identifier::from_trusted(
                id.kind(),
                id.display().to_owned(),
                id.canonical().to_owned(),
            );
            assert_eq!(again, id);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, max_shrink_iters: 256, ..ProptestConfig::default() })]

        #[test]
        fn parse_field_never_panics(input in "\\PC{0,40}|[0-9a-z@. +()\\-]{0,30}") {
            for accepts in [EMAIL, PHONE, BOTH] {
                if let Ok(id) = Identifier::parse_field(&input, accepts, &us()) {
                    let again = Identifier::parse_field(id.canonical(), accepts, &us());
                    proptest::prop_assert_eq!(again.map(|a| a.kind()), Ok(id.kind()));
                }
            }
        }
    }
}
