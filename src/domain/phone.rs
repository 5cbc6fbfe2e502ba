//! Phone numbers, reachable only through [`PhoneNumber::parse`], and the policy that decides
//! which countries they may belong to.

use std::fmt;

use phonenumber::country;
use phonenumber::metadata::DATABASE;
use phonenumber::{Mode, Type};

/// More digits than this (country code, any "00"/"011" prefix and "(0)" included) is refused
/// before the metadata is consulted; E.164 numbers have at most 15.
const MAX_DIGITS: usize = 17;

/// Longer input is refused outright, whatever it is made of, so parsing stays cheap.
const MAX_CHARS: usize = 64;

/// How many trailing digits masked forms may show.
const VISIBLE_DIGITS: usize = 3;

/// Which countries phone numbers may belong to (SMS is only ever sent to these).
#[derive(Debug, Clone)]
pub enum AllowedCountries {
    Any,
    /// A number is allowed when its region is in `regions` or its calling code is in
    /// `calling_codes`. Never both empty.
    Only {
        /// ISO 3166 alpha-2 codes, uppercase, each known to the metadata.
        regions: Vec<String>,
        /// Calling codes known to the metadata ("+1" covers every NANP country).
        calling_codes: Vec<u16>,
    },
}

/// How typed numbers are read and which of them are accepted; built once from configuration.
#[derive(Debug, Clone)]
pub struct PhonePolicy {
    default_region: Option<(country::Id, String)>,
    allowed: AllowedCountries,
    /// Test mode: the test range (+1 XXX 555-0100…0199) skips the validity and type checks.
    test_numbers: bool,
}

impl Default for PhonePolicy {
    /// No default region (every number needs its country code) and any country allowed.
    fn default() -> Self {
        Self {
            default_region: None,
            allowed: AllowedCountries::Any,
            test_numbers: false,
        }
    }
}

fn parse_region(value: &str) -> Result<(country::Id, String), String> {
    let upper = value.trim().to_ascii_uppercase();
    match upper.parse::<country::Id>() {
        Ok(id) if DATABASE.by_id(upper.as_str()).is_some() => Ok((id, upper)),
        _ => Err(format!("unknown country code {:?}", value.trim())),
    }
}

fn parse_calling_code(value: &str) -> Result<u16, String> {
    let digits = value.trim().trim_start_matches('+');
    let code = (1..=3)
        .contains(&digits.len())
        .then(|| digits.parse::<u16>().ok())
        .flatten()
        .filter(|code| DATABASE.by_code(code).is_some());
    code.ok_or_else(|| format!("unknown calling code {:?}", value.trim()))
}

impl PhonePolicy {
    /// `default_region`: ISO code ("US", case-insensitive) used for numbers typed without "+".
    /// `allowed`: None = any country; Some(list) entries are ISO codes ("US", "gb") or calling
    /// codes ("+44" or "44"). Duplicates are dropped; an empty list is refused (leave the setting
    /// out to allow any country).
    ///
    /// Errors are plain sentences naming the bad value, e.g. `unknown country code "XX"`.
    pub fn new(default_region: Option<&str>, allowed: Option<&[String]>) -> Result<Self, String> {
        let default_region = default_region.map(parse_region).transpose()?;
        let allowed = match allowed {
            None => AllowedCountries::Any,
            Some([]) => {
                return Err(
                    "the list of allowed countries is empty; leave it out to allow any country"
                        .to_owned(),
                )
            }
            Some(entries) => {
                let mut regions = Vec::new();
                let mut calling_codes = Vec::new();
                for entry in entries {
                    let entry = entry.trim();
                    if entry.is_empty() {
                        return Err("the list of allowed countries has an empty entry".to_owned());
                    }
                    if entry.starts_with('+') || entry.chars().all(|c| c.is_ascii_digit()) {
                        let code = parse_calling_code(entry)?;
                        if !calling_codes.contains(&code) {
                            calling_codes.push(code);
                        }
                    } else {
                        let (_, region) = parse_region(entry)?;
                        if !regions.contains(&region) {
                            regions.push(region);
                        }
                    }
                }
                AllowedCountries::Only {
                    regions,
                    calling_codes,
                }
            }
        };
        Ok(Self {
            default_region,
            allowed,
            test_numbers: false,
        })
    }

    /// Test mode: numbers of the test range are accepted without the metadata's validity and
    /// type checks (they need not exist). Off, they are ordinary numbers.
    pub fn with_test_numbers(mut self, on: bool) -> Self {
        self.test_numbers = on;
        self
    }

    /// Whether SMS may go to `number` (its country is allowed).
    pub fn allows_number(&self, number: &PhoneNumber) -> bool {
        PhoneNumber::parse(number.e164(), self).is_ok()
    }

    /// Whether numbers from every country are accepted.
    pub fn allows_any(&self) -> bool {
        matches!(self.allowed, AllowedCountries::Any)
    }

    /// The countries numbers may belong to.
    pub fn allowed(&self) -> &AllowedCountries {
        &self.allowed
    }

    /// Human summary for a settings page, e.g. "US, CA, +44" or "any country".
    pub fn describe_allowed(&self) -> String {
        match &self.allowed {
            AllowedCountries::Any => "any country".to_owned(),
            AllowedCountries::Only {
                regions,
                calling_codes,
            } => regions
                .iter()
                .cloned()
                .chain(calling_codes.iter().map(|code| format!("+{code}")))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// The ISO code (uppercase) numbers typed without "+" are read in, if any.
    pub fn default_region(&self) -> Option<&str> {
        self.default_region.as_ref().map(|(_, iso)| iso.as_str())
    }

    fn allows(&self, calling_code: u16, region: Option<&str>) -> bool {
        match &self.allowed {
            AllowedCountries::Any => true,
            AllowedCountries::Only {
                regions,
                calling_codes,
            } => {
                calling_codes.contains(&calling_code)
                    || region.is_some_and(|r| regions.iter().any(|allowed| allowed == r))
            }
        }
    }
}

/// A valid phone number, stored in E.164.
///
/// Guarantees, once built by [`parse`](Self::parse):
/// - valid for its country per libphonenumber's metadata (or a test number, see
///   [`is_test_number`](Self::is_test_number)), with no extension;
/// - of a type that can receive text messages (mobile, fixed-line-or-mobile, personal; VoIP
///   numbers are refused: they are the usual tool of SMS pumping and throw-away accounts);
/// - from a country the [`PhonePolicy`] allows.
///
/// [`e164`](Self::e164) is the comparison key: one per account. [`display`](Self::display) is
/// the international format shown to the person. `Debug` prints only [`masked`](Self::masked).
#[derive(Clone, PartialEq, Eq)]
pub struct PhoneNumber {
    e164: String,
    display: String,
    /// `None` only for a trusted value the metadata could not read.
    calling_code: Option<u16>,
    region: Option<String>,
}

/// Why a phone number was refused. The `Display` text is shown to the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("Enter your phone number.")]
    Empty,
    #[error("Phone numbers can only contain digits, spaces and + ( ) - .")]
    Letters,
    #[error("This number has too many digits.")]
    TooLong,
    #[error("Enter the number with its country code, like +1 201 555 0123.")]
    NeedsCountryCode,
    #[error("This is not a valid phone number. Check the digits and the country code.")]
    Invalid,
    #[error("Phone numbers from this country can't be used here.")]
    CountryNotAllowed,
    #[error("Enter a mobile number that can receive text messages.")]
    NotMobile,
}

/// The character a typed one stands for, if phone numbers may contain it: ASCII digits,
/// `+ ( ) - .`, visible white space (as a space) and Unicode dashes (as "-").
fn phone_char(c: char) -> Option<char> {
    match c {
        '0'..='9' | '+' | '(' | ')' | '-' | '.' => Some(c),
        '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FF0D}' => Some('-'),
        c if c.is_whitespace() && !c.is_control() => Some(' '),
        _ => None,
    }
}

fn trim_visible(input: &str) -> &str {
    input.trim_matches(|c: char| c.is_whitespace() && !c.is_control())
}

/// Whether `input` is made only of characters a typed phone number may contain, with at least
/// one digit: how a field that takes either kind tells a phone number from other text.
pub(crate) fn looks_like_phone(input: &str) -> bool {
    let input = trim_visible(input);
    input.chars().all(|c| phone_char(c).is_some()) && input.chars().any(|c| c.is_ascii_digit())
}

/// Types a text message can reach, as far as the metadata can tell.
fn receives_sms(kind: Type) -> bool {
    matches!(
        kind,
        Type::Mobile | Type::FixedLineOrMobile | Type::PersonalNumber
    )
}

fn is_test_e164(e164: &str) -> bool {
    let b = e164.as_bytes();
    b.len() == 12
        && e164.starts_with("+1")
        && b[2..].iter().all(u8::is_ascii_digit)
        && &e164[5..10] == "55501"
}

impl PhoneNumber {
    /// Accepts any common format ("+1 (201) 555-0123", "201.555.0123" with default region US,
    /// "0044 20 …", "+44 (0)20 …"); refuses letters, control characters, too many digits,
    /// invalid numbers, countries not allowed by `policy`, and types that cannot receive SMS
    /// per the metadata (fixed line, toll-free, premium rate, shared cost, pager, UAN, …).
    ///
    /// A leading "00" is read as the international prefix when the default region does not
    /// make it a valid number already. Test numbers (see
    /// [`is_test_number`](Self::is_test_number)) skip the validity and type checks, so any area
    /// code works, but not the country check.
    pub fn parse(input: &str, policy: &PhonePolicy) -> Result<Self, PhoneError> {
        let trimmed = trim_visible(input);
        if trimmed.is_empty() {
            return Err(PhoneError::Empty);
        }
        let typed = trimmed
            .chars()
            .map(phone_char)
            .collect::<Option<String>>()
            .ok_or(PhoneError::Letters)?;
        let digits = typed.chars().filter(char::is_ascii_digit).count();
        if digits > MAX_DIGITS || typed.chars().count() > MAX_CHARS {
            return Err(PhoneError::TooLong);
        }
        if digits == 0 || typed[1..].contains('+') {
            return Err(PhoneError::Invalid);
        }

        let region = policy.default_region.as_ref().map(|(id, _)| *id);
        let after_idd = typed.strip_prefix("00").map(|rest| format!("+{rest}"));
        let number = match (typed.starts_with('+'), region, after_idd) {
            (true, _, _) => read(&typed, None)?,
            (false, Some(region), Some(international)) => read(&typed, Some(region))
                .ok()
                .filter(Read::usable)
                .map_or_else(|| read(&international, None), Ok)?,
            (false, Some(region), None) => read(&typed, Some(region))?,
            (false, None, Some(international)) => read(&international, None)?,
            (false, None, None) => return Err(PhoneError::NeedsCountryCode),
        };

        let test = policy.test_numbers && is_test_e164(&number.e164);
        if !test && !number.valid {
            return Err(PhoneError::Invalid);
        }
        if !policy.allows(number.calling_code, number.region.as_deref()) {
            return Err(PhoneError::CountryNotAllowed);
        }
        if !test && !receives_sms(number.kind) {
            return Err(PhoneError::NotMobile);
        }
        Ok(number.into_phone())
    }

    /// Rebuilds a number read back from the database (already validated E.164). Never fails:
    /// if the metadata cannot parse it, display falls back to the E.164 string.
    pub fn from_trusted(e164: String) -> Self {
        match read(&e164, None) {
            Ok(number) if number.e164 == e164 => number.into_phone(),
            _ => Self {
                display: e164.clone(),
                e164,
                calling_code: None,
                region: None,
            },
        }
    }

    /// The canonical form and comparison key, e.g. "+12015550123".
    pub fn e164(&self) -> &str {
        &self.e164
    }

    /// The international format shown to the person, e.g. "+1 201-555-0123".
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The ISO 3166 region (uppercase) the number belongs to, when the metadata knows it
    /// (numbers such as +800 belong to no region).
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The country calling code, e.g. 1 or 44; `None` only for a trusted value the metadata
    /// could not read.
    pub fn calling_code(&self) -> Option<u16> {
        self.calling_code
    }

    /// The "+" and calling code, and the rest of the display form after them.
    fn split_code(&self) -> (&str, &str) {
        let prefix_len = self
            .calling_code
            .map_or(1, |code| 1 + code.to_string().len());
        self.display.split_at(prefix_len.min(self.display.len()))
    }

    /// How many of the trailing national digits masked forms may show: 3, or fewer for very
    /// short numbers so that at least half stay hidden.
    fn visible_digits(national_digits: usize) -> usize {
        VISIBLE_DIGITS.min(national_digits / 2)
    }

    /// For pages ("Send a code to +1 ••• ••• •123"): the country code kept, at most the last 3
    /// digits kept, every other digit replaced by "•", separators shown as single spaces.
    pub fn safe_identifier(&self) -> String {
        let (prefix, rest) = self.split_code();
        let total = rest.chars().filter(char::is_ascii_digit).count();
        let hidden = total - Self::visible_digits(total);
        let mut out = String::from(prefix);
        let mut seen = 0;
        for c in rest.chars() {
            if c.is_ascii_digit() {
                if seen == 0 && !out.ends_with(' ') {
                    out.push(' ');
                }
                out.push(if seen < hidden { '•' } else { c });
                seen += 1;
            } else if !out.ends_with(' ') {
                out.push(' ');
            }
        }
        out.trim_end().to_owned()
    }

    /// For logs: the country code and at most the last 3 digits, e.g. "+1*******123".
    pub fn masked(&self) -> String {
        let (prefix, rest) = self.split_code();
        let digits: Vec<char> = rest.chars().filter(char::is_ascii_digit).collect();
        let hidden = digits.len() - Self::visible_digits(digits.len());
        let stars = "*".repeat(hidden);
        let tail: String = digits[hidden..].iter().collect();
        format!("{prefix}{stars}{tail}")
    }

    /// Test mode numbers: +1 XXX 555-0100 … +1 XXX 555-0199 (NANP, any area code; Clerk's
    /// convention). These are reserved for fiction and never reach a real phone.
    pub fn is_test_number(&self) -> bool {
        is_test_e164(&self.e164)
    }
}

/// What the metadata says about one reading of the typed text.
struct Read {
    e164: String,
    display: String,
    calling_code: u16,
    region: Option<String>,
    valid: bool,
    kind: Type,
}

impl Read {
    fn usable(&self) -> bool {
        self.valid || is_test_e164(&self.e164)
    }

    fn into_phone(self) -> PhoneNumber {
        PhoneNumber {
            e164: self.e164,
            display: self.display,
            calling_code: Some(self.calling_code),
            region: self.region,
        }
    }
}

fn read(text: &str, region: Option<country::Id>) -> Result<Read, PhoneError> {
    let number = phonenumber::parse(region, text).map_err(|_| PhoneError::Invalid)?;
    if number.extension().is_some() {
        return Err(PhoneError::Invalid);
    }
    Ok(Read {
        e164: number.format().mode(Mode::E164).to_string(),
        display: number.format().mode(Mode::International).to_string(),
        calling_code: number.code().value(),
        region: number.country().id().map(|id| id.as_ref().to_owned()),
        valid: phonenumber::is_valid(&number),
        kind: number.number_type(&DATABASE),
    })
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{
        prop_assert, prop_assert_eq, prop_oneof, proptest, Just, ProptestConfig, Strategy,
    };

    fn policy(default_region: Option<&str>, allowed: Option<&[&str]>) -> PhonePolicy {
        let allowed: Option<Vec<String>> =
            allowed.map(|list| list.iter().map(|s| s.to_string()).collect());
        PhonePolicy::new(default_region, allowed.as_deref()).unwrap()
    }

    fn any() -> PhonePolicy {
        PhonePolicy::default()
    }

    fn ok(input: &str, policy: &PhonePolicy) -> PhoneNumber {
        PhoneNumber::parse(input, policy)
            .unwrap_or_else(|e| panic!("{input:?} should parse: {e:?}"))
    }

    fn digits_after_code(n: &PhoneNumber, shown: &str) -> usize {
        let code = n.calling_code().map_or(0, |c| c.to_string().len());
        shown[1 + code..]
            .chars()
            .filter(char::is_ascii_digit)
            .count()
    }

    #[test]
    fn one_number_typed_in_many_formats_has_one_e164() {
        let us = policy(Some("us"), None);
        for input in [
            "+1 (201) 555-0123",
            "201-555-0123",
            "(201) 555-0123",
            "201.555.0123",
            "+1.201.555.0123",
            "  +1 201 555 0123 ",
            "+12015550123",
            "1 201 555 0123",
            "011 1 201 555 0123",
            "+1\u{a0}201\u{2011}555\u{2011}0123",
        ] {
            assert_eq!(ok(input, &us).e164(), "+12015550123", "{input:?}");
        }
    }

    #[test]
    fn a_uk_mobile_parses_with_its_country_code_or_the_default_region() {
        let gb = policy(Some("GB"), None);
        assert_eq!(ok("+44 7400 123456", &any()).e164(), "+447400123456");
        assert_eq!(ok("07400 123456", &gb).e164(), "+447400123456");
        assert_eq!(ok("+44 (0)7400 123456", &any()).e164(), "+447400123456");
        assert_eq!(ok("+44 7400 123456", &any()).region(), Some("GB"));
    }

    #[test]
    fn a_leading_00_is_read_as_the_international_prefix() {
        for policy in [any(), policy(Some("US"), None), policy(Some("GB"), None)] {
            assert_eq!(ok("0044 7400 123456", &policy).e164(), "+447400123456");
        }
    }

    #[test]
    fn empty_input_is_refused() {
        for input in ["", "   ", "\u{a0}"] {
            assert_eq!(PhoneNumber::parse(input, &any()), Err(PhoneError::Empty));
        }
    }

    #[test]
    fn letters_and_control_characters_are_refused() {
        for input in [
            "+1 201 555 CALL",
            "+1 201 555 0123 ext 4",
            "tel:+12015550123",
            "+1 201 555 0123\n",
            "+1 201\t555 0123",
            "+1 201 555 0123#",
            "+1 201 555\u{200b}0123",
            "+1 ２０１ 555 0123",
        ] {
            assert_eq!(
                PhoneNumber::parse(input, &any()),
                Err(PhoneError::Letters),
                "{input:?}"
            );
        }
    }

    #[test]
    fn too_many_digits_are_refused() {
        let input = format!("+1 {}", "2".repeat(17));
        assert_eq!(PhoneNumber::parse(&input, &any()), Err(PhoneError::TooLong));
        let spaced = format!("+1{}201 555 0123", " ".repeat(60));
        assert_eq!(
            PhoneNumber::parse(&spaced, &any()),
            Err(PhoneError::TooLong)
        );
    }

    #[test]
    fn a_number_without_country_code_needs_a_default_region() {
        assert_eq!(
            PhoneNumber::parse("201 555 0123", &any()),
            Err(PhoneError::NeedsCountryCode)
        );
    }

    #[test]
    fn invalid_numbers_are_refused() {
        let us = policy(Some("US"), None);
        for input in [
            "+1 201 555 012",
            "+1 101 234 5678",
            "+999 1234 5678",
            "+44 7400",
            "123",
            "+",
            "()-.",
            "+1 201 555 +0123",
        ] {
            assert_eq!(
                PhoneNumber::parse(input, &us),
                Err(PhoneError::Invalid),
                "{input:?}"
            );
        }
    }

    #[test]
    fn countries_outside_the_allowed_list_are_refused() {
        let by_iso = policy(None, Some(&["us", "CA"]));
        let by_code = policy(None, Some(&["+1"]));
        for p in [&by_iso, &by_code] {
            assert_eq!(
                PhoneNumber::parse("+44 7400 123456", p),
                Err(PhoneError::CountryNotAllowed)
            );
            assert_eq!(ok("+1 201 555 0123", p).e164(), "+12015550123");
        }
        let uk_by_code = policy(None, Some(&["44"]));
        assert_eq!(
            PhoneNumber::parse("+1 201 555 0123", &uk_by_code),
            Err(PhoneError::CountryNotAllowed)
        );
        assert_eq!(ok("+44 7400 123456", &uk_by_code).region(), Some("GB"));
    }

    #[test]
    fn a_region_list_tells_nanp_countries_apart() {
        let us_only = policy(None, Some(&["US"]));
        assert_eq!(ok("+1 416 555 0123", &any()).region(), Some("CA"));
        assert_eq!(
            PhoneNumber::parse("+1 416 555 0123", &us_only),
            Err(PhoneError::CountryNotAllowed)
        );
    }

    #[test]
    fn numbers_that_cannot_receive_texts_are_refused() {
        for input in ["+44 20 7946 0000", "+1 800 275 2273", "+44 909 879 0000"] {
            assert_eq!(
                PhoneNumber::parse(input, &any()),
                Err(PhoneError::NotMobile),
                "{input:?}"
            );
        }
    }

    #[test]
    fn test_numbers_are_the_555_0100_to_0199_range_of_any_nanp_area_code() {
        for (input, test) in [
            ("+1 201 555 0100", true),
            ("+1 201 555 0199", true),
            ("+1 415 555 0142", true),
            ("+1 201 555 0200", false),
            ("+1 201 555 0099", false),
            ("+44 7400 555010", false),
        ] {
            assert_eq!(ok(input, &any()).is_test_number(), test, "{input:?}");
        }
    }

    #[test]
    fn test_numbers_parse_even_in_unassigned_area_codes_in_test_mode_only() {
        let test_mode = any().with_test_numbers(true);
        assert!(ok("+1 555 555 0100", &test_mode).is_test_number());
        assert_eq!(
            PhoneNumber::parse("+1 555 555 0100", &any()),
            Err(PhoneError::Invalid),
            "outside test mode the test range is checked like any number"
        );
        assert_eq!(
            PhoneNumber::parse(
                "+1 555 555 0100",
                &policy(None, Some(&["GB"])).with_test_numbers(true)
            ),
            Err(PhoneError::CountryNotAllowed)
        );
    }

    #[test]
    fn display_is_the_international_format() {
        assert_eq!(
            ok("2015550123", &policy(Some("US"), None)).display(),
            "+1 201-555-0123"
        );
        assert_eq!(ok("+447400123456", &any()).display(), "+44 7400 123456");
    }

    #[test]
    fn the_safe_identifier_keeps_the_country_code_and_last_three_digits() {
        let us = ok("+1 201 555 0123", &any());
        assert_eq!(us.safe_identifier(), "+1 ••• ••• •123");
        let uk = ok("+44 7400 123456", &any());
        assert_eq!(uk.safe_identifier(), "+44 •••• •••456");
        for n in [us, uk] {
            assert_eq!(digits_after_code(&n, &n.safe_identifier()), 3);
            assert_eq!(digits_after_code(&n, &n.masked()), 3);
        }
    }

    #[test]
    fn logs_and_debug_see_only_the_masked_form() {
        let n = ok("+1 201 555 0123", &any());
        assert_eq!(n.masked(), "+1*******123");
        assert_eq!(format!("{n:?}"), "PhoneNumber(+1*******123)");
    }

    #[test]
    fn a_stored_number_rebuilds_to_the_same_value() {
        let n = ok("+44 7400 123456", &any());
        assert_eq!(PhoneNumber::from_trusted(n.e164().to_owned()), n);
    }

    #[test]
    fn a_stored_number_the_metadata_cannot_read_still_rebuilds() {
        let n = PhoneNumber::from_trusted("+999123456789".to_owned());
        assert_eq!(n.e164(), "+999123456789");
        assert_eq!(n.display(), "+999123456789");
        assert_eq!(n.region(), None);
        assert_eq!(n.masked(), "+*********789");
        assert_eq!(n.safe_identifier(), "+ •••••••••789");
    }

    #[test]
    fn the_policy_reads_iso_and_calling_codes() {
        let p = policy(Some("gb"), Some(&["us", "CA", "+44", "44", " 33 "]));
        assert_eq!(p.default_region(), Some("GB"));
        assert!(!p.allows_any());
        assert_eq!(p.describe_allowed(), "US, CA, +44, +33");
        assert!(any().allows_any());
        assert_eq!(any().describe_allowed(), "any country");
    }

    #[test]
    fn the_policy_names_the_bad_value() {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            PhonePolicy::new(Some("XX"), None).unwrap_err(),
            "unknown country code \"XX\""
        );
        assert_eq!(
            PhonePolicy::new(None, Some(&list(&["US", "zz"]))).unwrap_err(),
            "unknown country code \"zz\""
        );
        assert_eq!(
            PhonePolicy::new(None, Some(&list(&["+999"]))).unwrap_err(),
            "unknown calling code \"+999\""
        );
        assert_eq!(
            PhonePolicy::new(None, Some(&list(&["+1234"]))).unwrap_err(),
            "unknown calling code \"+1234\""
        );
        assert!(PhonePolicy::new(None, Some(&[])).is_err());
        assert!(PhonePolicy::new(None, Some(&list(&["US", " "]))).is_err());
    }

    fn phone_like() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9 +()\\-.]{0,24}",
            "\\+[1-9][0-9 ]{6,16}",
            "0[0-9 ]{6,14}",
            "\\+1 [2-9][0-9]{2} [0-9]{3} [0-9]{4}",
            "\\+44 7[0-9]{3} [0-9]{6}",
            proptest::prelude::any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, max_shrink_iters: 256, ..ProptestConfig::default() })]

        #[test]
        fn parsing_never_panics_and_accepted_numbers_reparse_to_themselves(
            input in phone_like(),
            region in prop_oneof![Just(None), Just(Some("US")), Just(Some("GB")), Just(Some("DE"))],
        ) {
            let policy = PhonePolicy::new(region, None).unwrap();
            if let Ok(n) = PhoneNumber::parse(&input, &policy) {
                let again = PhoneNumber::parse(n.e164(), &policy).unwrap();
                prop_assert_eq!(again.e164(), n.e164());
                prop_assert_eq!(PhoneNumber::from_trusted(n.e164().to_owned()), n);
            }
        }

        #[test]
        fn masked_forms_show_at_most_three_digits_after_the_country_code(input in phone_like()) {
            if let Ok(n) = PhoneNumber::parse(&input, &PhonePolicy::default()) {
                prop_assert!(digits_after_code(&n, &n.safe_identifier()) <= 3);
                prop_assert!(digits_after_code(&n, &n.masked()) <= 3);
                let prefix = format!("+{}", n.calling_code().unwrap());
                prop_assert!(n.safe_identifier().starts_with(&prefix));
            }
        }
    }

    #[test]
    fn voip_numbers_are_refused() {
        // UK 056 numbers are VoIP in the metadata: the usual tool of SMS pumping.
        assert_eq!(
            PhoneNumber::parse("+44 56 1234 5678", &any()),
            Err(PhoneError::NotMobile)
        );
    }
}
