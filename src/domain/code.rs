//! One-time codes.

use std::fmt;

use rand::Rng;

/// A one-time code: a string of ASCII digits of the configured length.
///
/// Built either by [`OtpCode::generate`] (CSPRNG, uniform over all codes, leading zeros kept) or
/// by [`OtpCode::parse`] from what a person typed. Its `Debug` output is redacted so a code can
/// never reach a log through a `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct OtpCode(String);

/// Why a typed code was refused before it was compared. Shown to the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("Enter the code we sent you.")]
    Empty,
    #[error("The code is {0} digits.")]
    WrongShape(usize),
}

impl OtpCode {
    /// Draws a code from the operating system's CSPRNG.
    pub fn generate(len: usize) -> Self {
        let mut rng = rand::rngs::OsRng;
        Self(
            (0..len)
                .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
                .collect(),
        )
    }

    /// Parses typed input. Spaces, dashes and dots (as in a pasted "123 456" or "123-456") are
    /// removed; full-width digits are not accepted.
    pub fn parse(input: &str, len: usize) -> Result<Self, CodeError> {
        let digits: String = input
            .chars()
            .filter(|c| !(c.is_whitespace() || matches!(c, '-' | '.' | '\u{2010}'..='\u{2015}')))
            .collect();
        if digits.is_empty() {
            return Err(CodeError::Empty);
        }
        if digits.len() != len || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CodeError::WrongShape(len));
        }
        Ok(Self(digits))
    }

    /// The digits. Call only to hash the code or to put it into the message that delivers it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for OtpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpCode(******)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_have_the_configured_length_and_only_digits() {
        for len in [6, 8] {
            let c = OtpCode::generate(len);
            assert_eq!(c.expose().len(), len);
            assert!(c.expose().bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn generated_codes_cover_every_digit_in_every_position() {
        let codes: Vec<OtpCode> = (0..2000).map(|_| OtpCode::generate(6)).collect();
        for pos in 0..6 {
            for d in b'0'..=b'9' {
                assert!(
                    codes.iter().any(|c| c.expose().as_bytes()[pos] == d),
                    "digit {} never at {pos}",
                    d as char
                );
            }
        }
        let distinct: std::collections::HashSet<_> = codes.iter().map(|c| c.0.clone()).collect();
        assert!(
            distinct.len() > 1980,
            "too many repeats: {}",
            distinct.len()
        );
    }

    #[test]
    fn pasted_codes_with_spaces_and_dashes_are_accepted() {
        assert_eq!(OtpCode::parse(" 123 456 ", 6).unwrap().expose(), "123456");
        assert_eq!(OtpCode::parse("123-456", 6).unwrap().expose(), "123456");
    }

    #[test]
    fn wrong_shapes_are_refused() {
        assert_eq!(OtpCode::parse("", 6), Err(CodeError::Empty));
        assert_eq!(OtpCode::parse("12345", 6), Err(CodeError::WrongShape(6)));
        assert_eq!(OtpCode::parse("1234567", 6), Err(CodeError::WrongShape(6)));
        assert_eq!(OtpCode::parse("12a456", 6), Err(CodeError::WrongShape(6)));
        assert_eq!(
            OtpCode::parse("１２３４５６", 6),
            Err(CodeError::WrongShape(6))
        );
    }

    #[test]
    fn debug_output_hides_the_digits() {
        assert_eq!(
            format!("{:?}", OtpCode::parse("123456", 6).unwrap()),
            "OtpCode(******)"
        );
    }
}
