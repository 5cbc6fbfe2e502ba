//! A person's first or last name: any script, trimmed, NFC, one line without control or
//! invisible formatting characters, at most [`MAX_CHARS`] characters. Empty means "not given".

use unicode_normalization::UnicodeNormalization;

/// The longest name part kept, in characters.
pub const MAX_CHARS: usize = 100;

/// A person's name as given: either part may be missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub first: Option<PersonName>,
    pub last: Option<PersonName>,
}

/// One part of a name (first or last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName(String);

/// Why a name part is refused (the page and the API say which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("This is too long: at most 100 characters.")]
    TooLong,
    #[error("Use letters, spaces and punctuation only, on one line.")]
    Control,
}

impl PersonName {
    /// A name part as typed; `Ok(None)` when it is empty (after trimming).
    pub fn parse(input: &str) -> Result<Option<Self>, NameError> {
        let normalized: String = input.trim().nfc().collect();
        if normalized.is_empty() {
            return Ok(None);
        }
        // Control characters (line breaks, NUL, …) and the invisible format characters that
        // can reorder or hide text (bidi overrides, zero-width, BOM).
        let invisible = |c: char| {
            c.is_control()
                || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
        };
        if normalized.chars().any(invisible) {
            return Err(NameError::Control);
        }
        if normalized.chars().count() > MAX_CHARS {
            return Err(NameError::TooLong);
        }
        Ok(Some(Self(normalized)))
    }

    /// A name read back from the store.
    pub fn from_trusted(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PersonName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_any_script_are_trimmed_and_normalized() {
        for (typed, kept) in [
            ("  Ada ", "Ada"),
            ("José", "José"),
            ("Jose\u{301}", "José"),
            ("山田", "山田"),
            ("محمد", "محمد"),
            ("O'Brien-Smith", "O'Brien-Smith"),
            ("Jean Paul", "Jean Paul"),
        ] {
            assert_eq!(
                PersonName::parse(typed).unwrap().unwrap().as_str(),
                kept,
                "{typed:?}"
            );
        }
        assert_eq!(PersonName::parse("   "), Ok(None));
        assert_eq!(PersonName::parse(""), Ok(None));
    }

    #[test]
    fn control_and_invisible_characters_and_long_names_are_refused() {
        for bad in [
            "A\nB",
            "A\u{0}",
            "A\tB",
            "\u{202E}evil",
            "zero\u{200B}width",
            "A\r\nBcc: x",
        ] {
            assert_eq!(PersonName::parse(bad), Err(NameError::Control), "{bad:?}");
        }
        assert_eq!(
            PersonName::parse(&"a".repeat(100))
                .unwrap()
                .unwrap()
                .as_str()
                .len(),
            100
        );
        assert_eq!(PersonName::parse(&"a".repeat(101)), Err(NameError::TooLong));
        assert_eq!(
            PersonName::parse(&"é".repeat(100)).map(|n| n.is_some()),
            Ok(true),
            "characters, not bytes"
        );
    }
}
