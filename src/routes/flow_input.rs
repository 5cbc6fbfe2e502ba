//! What the two faces of a flow (the pages and `/v1`) share on the way in and out: reading the
//! identifiers the instance's settings ask for, the fetch-metadata / `Origin` check of unsafe
//! requests, the shape of our random tokens, and handing a completed flow's session to the
//! client. Each exists here once; the faces only choose their words and status codes.

use actix_web::http::header;
use actix_web::HttpRequest;

use super::Ctx;
use crate::auth::{Client, CurrentUser, SignedIn};
use crate::config::{IdentifierRules, NameConfig};
use crate::domain::{
    Accepts, Identifier, IdentifierError, IdentifierKind, NameError, Names, Origin, PersonName,
    PhonePolicy,
};
use crate::routes::pages::NameField;

/// Whether `v` has the shape of a token we issue (32 random bytes, base64url without padding):
/// anything else is ignored before it reaches a keyed hash or the database.
pub fn plausible_token(v: &str) -> bool {
    v.len() == 43
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether an unsafe request was sent by a page allowed to send it, as the browser tells it.
/// `own` is this instance's origin; `others` the origins allowed to call across sites (the API's
/// `cors_allowed_origins`; none for the hosted forms).
///
/// | header              | accepted                                                        |
/// |---------------------|-----------------------------------------------------------------|
/// | `Origin`            | absent, `own`, one of `others`, or `null` vouched by the browser |
/// | `Sec-Fetch-Site`    | absent, `same-origin`, `none`, or any value with an `Origin` of `others` |
///
/// `Origin: null` (sent by browsers whose referrer policy hides the origin) is accepted only
/// with `Sec-Fetch-Site: same-origin`, a header no page can forge. An `Origin` that is not
/// text is refused.
pub fn from_allowed_site(req: &HttpRequest, own: &Origin, others: &[Origin]) -> bool {
    let headers = req.headers();
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let origin = match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        None => None,
        Some(Ok(origin)) => Some(origin),
        Some(Err(_)) => return false,
    };
    let listed_other = origin.is_some_and(|o| others.iter().any(|a| a.matches_header(o)));
    if let Some(origin) = origin {
        let vouched_null = origin == "null" && site == Some("same-origin");
        if !(vouched_null || listed_other || own.matches_header(origin)) {
            return false;
        }
    }
    match site {
        None | Some("same-origin" | "none") => true,
        Some(_) => listed_other,
    }
}

/// The one field of sign-in: an identifier of a kind sign-in accepts.
pub fn sign_in_identifier(ctx: &Ctx, input: &str) -> Result<Identifier, IdentifierError> {
    let settings = &ctx.state.settings;
    Identifier::parse_field(
        input,
        settings.identifiers.sign_in(),
        &settings.phone_policy,
    )
}

/// An identifier of one kind (adding one on /user or through `/v1/me`), if the instance uses
/// that kind; `None` for a kind it does not.
pub fn identifier_of_kind(
    ctx: &Ctx,
    kind: IdentifierKind,
    input: &str,
) -> Option<Result<Identifier, IdentifierError>> {
    let settings = &ctx.state.settings;
    settings
        .identifiers
        .sign_up()
        .allows(kind)
        .then(|| Identifier::parse_field(input, Accepts::only(kind), &settings.phone_policy))
}

/// Sign-up's identifiers under this instance's settings (see [`parse_sign_up`]).
pub fn sign_up_identifiers(
    ctx: &Ctx,
    email: Option<&str>,
    phone: Option<&str>,
) -> Result<Vec<Identifier>, SignUpInputError> {
    let settings = &ctx.state.settings;
    parse_sign_up(&settings.identifiers, &settings.phone_policy, email, phone)
}

/// Why a sign-up's name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameInputError {
    /// The instance does not ask for a name (only the API can send one).
    NotEnabled,
    Invalid(NameField, NameError),
    /// `identifiers.name.required`, and this part is empty.
    Missing(NameField),
}

/// Sign-up's name under the instance's settings: each part parsed (`None` and `""`: not
/// given); both needed when required; refused when the instance asks for no name.
pub fn sign_up_names(
    rules: &NameConfig,
    first: Option<&str>,
    last: Option<&str>,
) -> Result<Names, NameInputError> {
    if !rules.enabled {
        return match (first, last) {
            (None, None) => Ok(Names::default()),
            _ => Err(NameInputError::NotEnabled),
        };
    }
    let part = |field, value: Option<&str>| {
        let parsed = PersonName::parse(value.unwrap_or_default())
            .map_err(|e| NameInputError::Invalid(field, e))?;
        match parsed {
            None if rules.required => Err(NameInputError::Missing(field)),
            parsed => Ok(parsed),
        }
    };
    Ok(Names {
        first: part(NameField::First, first)?,
        last: part(NameField::Last, last)?,
    })
}

/// Why sign-up's identifiers were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignUpInputError {
    /// A value of a kind this instance does not use (only the API can send one).
    NotEnabled(IdentifierKind),
    /// The value of this kind does not parse.
    Invalid(IdentifierKind, IdentifierError),
    /// Nothing was given, or not a required kind. `either`: both kinds are on offer and neither
    /// is required, so either one will do.
    Missing { kind: IdentifierKind, either: bool },
}

/// Sign-up's identifiers, email first: each given value parsed as its kind, then every required
/// kind present. `None` is "not given"; the pages pass a blank optional field as `None` and a
/// blank required one as `Some("")` (so it gets the kind's own "enter your …" error).
fn parse_sign_up(
    rules: &IdentifierRules,
    policy: &PhonePolicy,
    email: Option<&str>,
    phone: Option<&str>,
) -> Result<Vec<Identifier>, SignUpInputError> {
    let kinds = [
        (IdentifierKind::Email, &rules.email, email),
        (IdentifierKind::Phone, &rules.phone, phone),
    ];
    let mut identifiers = Vec::new();
    for (kind, rule, value) in kinds {
        let Some(value) = value else { continue };
        if !rule.enabled {
            return Err(SignUpInputError::NotEnabled(kind));
        }
        let identifier = Identifier::parse_field(value, Accepts::only(kind), policy)
            .map_err(|e| SignUpInputError::Invalid(kind, e))?;
        identifiers.push(identifier);
    }
    if identifiers.is_empty() {
        let kind = if rules.email.enabled {
            IdentifierKind::Email
        } else {
            IdentifierKind::Phone
        };
        let either = rules.email.enabled
            && rules.phone.enabled
            && !rules.email.required
            && !rules.phone.required;
        return Err(SignUpInputError::Missing { kind, either });
    }
    // Every required identifier up front: there is no later step to add one.
    for (kind, rule, value) in kinds {
        if rule.required && value.is_none() {
            return Err(SignUpInputError::Missing {
                kind,
                either: false,
            });
        }
    }
    Ok(identifiers)
}

/// Hands a completed flow's session to the client, whichever face completed it. The session the
/// client held before is ended: a client holds one session, never an earlier one reused. A
/// browser gets the session cookie and a fresh browser cookie, so nothing planted before sign-in
/// survives it, and a device cookie that makes it a trusted browser of the account; a native
/// client gets its new client token (the old one is dead).
pub async fn hand_over_session(
    ctx: &Ctx,
    client: &Client<'_>,
    signed_in: &SignedIn,
    previous: Option<CurrentUser>,
) {
    if let Some(previous) = previous.filter(|p| p.session_id != signed_in.session_id) {
        if let Err(e) = ctx.state.auth.sign_out(&previous, client).await {
            tracing::warn!(error = %e, "could not end the previous session");
        }
    }
    match &signed_in.client_token {
        Some(token) => ctx.hand_client_token(token),
        None => {
            ctx.issue_session_cookie(&signed_in.token);
            ctx.replace_browser_cookie();
            if let Some(device) = &signed_in.device_token {
                ctx.issue_device_cookie(device);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;
    use crate::config::IdentifierConfig;

    fn origin(s: &str) -> Origin {
        Origin::parse(s).unwrap()
    }

    /// `from_allowed_site` for a request with these headers, on `https://id.example.com` with
    /// `https://app.example.com` allowed across sites when `cross` is set.
    fn allowed(origin_header: Option<&str>, site: Option<&str>, cross: bool) -> bool {
        let mut req = TestRequest::post();
        if let Some(o) = origin_header {
            req = req.insert_header(("origin", o));
        }
        if let Some(s) = site {
            req = req.insert_header(("sec-fetch-site", s));
        }
        let others = if cross {
            vec![origin("https://app.example.com")]
        } else {
            vec![]
        };
        from_allowed_site(
            &req.to_http_request(),
            &origin("https://id.example.com"),
            &others,
        )
    }

    #[test]
    fn the_forms_accept_only_their_own_origin() {
        let own = Some("https://id.example.com");
        assert!(allowed(None, None, false), "an old browser sends neither");
        assert!(allowed(own, None, false));
        assert!(allowed(own, Some("same-origin"), false));
        assert!(allowed(None, Some("none"), false), "typed or bookmarked");
        assert!(!allowed(Some("https://evil.example"), None, false));
        assert!(!allowed(own, Some("same-site"), false));
        assert!(!allowed(None, Some("cross-site"), false));
        assert!(!allowed(
            Some("https://app.example.com"),
            Some("cross-site"),
            false
        ));
    }

    #[test]
    fn a_null_origin_passes_only_when_the_browser_vouches_same_origin() {
        assert!(allowed(Some("null"), Some("same-origin"), false));
        assert!(!allowed(Some("null"), None, false));
        assert!(!allowed(Some("null"), Some("same-site"), true));
    }

    #[test]
    fn the_api_also_accepts_its_allowlisted_origins_across_sites() {
        let app = Some("https://app.example.com");
        assert!(allowed(app, Some("cross-site"), true));
        assert!(allowed(app, Some("same-site"), true));
        assert!(allowed(app, None, true));
        assert!(
            !allowed(None, Some("cross-site"), true),
            "no Origin to check"
        );
        assert!(!allowed(
            Some("https://evil.example"),
            Some("cross-site"),
            true
        ));
        assert!(
            !allowed(Some("http://app.example.com"), None, true),
            "exact origin only"
        );
    }

    #[test]
    fn an_origin_that_is_not_text_is_refused() {
        let req = TestRequest::post()
            .insert_header((
                "origin",
                actix_web::http::header::HeaderValue::from_bytes(b"https://\xff.example").unwrap(),
            ))
            .to_http_request();
        assert!(!from_allowed_site(
            &req,
            &origin("https://id.example.com"),
            &[]
        ));
    }

    #[test]
    fn only_tokens_of_our_shape_are_plausible() {
        assert!(plausible_token(&"a".repeat(43)));
        assert!(plausible_token(
            "AZaz09-_AZaz09-_AZaz09-_AZaz09-_AZaz09-_abc"
        ));
        assert!(!plausible_token(&"a".repeat(42)));
        assert!(!plausible_token(&"a".repeat(44)));
        assert!(!plausible_token(&format!("{}=", "a".repeat(42))));
    }

    fn rules(email: (bool, bool), phone: (bool, bool)) -> IdentifierRules {
        let kind = |(enabled, required)| IdentifierConfig {
            enabled,
            required,
            used_for_sign_in: enabled,
        };
        IdentifierRules {
            email: kind(email),
            phone: kind(phone),
            name: NameConfig::default(),
        }
    }

    fn sign_up(
        rules: &IdentifierRules,
        email: Option<&str>,
        phone: Option<&str>,
    ) -> Result<Vec<IdentifierKind>, SignUpInputError> {
        let policy = PhonePolicy::new(Some("US"), None).unwrap();
        parse_sign_up(rules, &policy, email, phone)
            .map(|ids| ids.iter().map(Identifier::kind).collect())
    }

    #[test]
    fn sign_up_reads_each_given_identifier_email_first() {
        let both = rules((true, false), (true, false));
        assert_eq!(
            sign_up(&both, Some("a@example.com"), Some("+1 201 555 0123")),
            Ok(vec![IdentifierKind::Email, IdentifierKind::Phone])
        );
        assert_eq!(
            sign_up(&both, None, Some("+1 201 555 0123")),
            Ok(vec![IdentifierKind::Phone])
        );
    }

    #[test]
    fn sign_up_with_nothing_asks_for_either_only_when_both_are_optional() {
        let optional = rules((true, false), (true, false));
        assert_eq!(
            sign_up(&optional, None, None),
            Err(SignUpInputError::Missing {
                kind: IdentifierKind::Email,
                either: true
            })
        );
        let phone_only = rules((false, false), (true, false));
        assert_eq!(
            sign_up(&phone_only, None, None),
            Err(SignUpInputError::Missing {
                kind: IdentifierKind::Phone,
                either: false
            })
        );
    }

    #[test]
    fn sign_up_needs_every_required_identifier() {
        let phone_required = rules((true, false), (true, true));
        assert_eq!(
            sign_up(&phone_required, Some("a@example.com"), None),
            Err(SignUpInputError::Missing {
                kind: IdentifierKind::Phone,
                either: false
            })
        );
    }

    #[test]
    fn sign_up_refuses_a_kind_that_is_off_and_names_the_field_that_does_not_parse() {
        let email_only = rules((true, true), (false, false));
        assert_eq!(
            sign_up(&email_only, Some("a@example.com"), Some("+1 201 555 0123")),
            Err(SignUpInputError::NotEnabled(IdentifierKind::Phone))
        );
        assert!(matches!(
            sign_up(&email_only, Some("not an address"), None),
            Err(SignUpInputError::Invalid(IdentifierKind::Email, _))
        ));
    }

    #[test]
    fn sign_up_names_follow_the_settings() {
        let off = NameConfig::default();
        let optional = NameConfig {
            enabled: true,
            required: false,
        };
        let required = NameConfig {
            enabled: true,
            required: true,
        };
        assert_eq!(sign_up_names(&off, None, None), Ok(Names::default()));
        assert_eq!(
            sign_up_names(&off, Some("Ada"), None),
            Err(NameInputError::NotEnabled)
        );
        assert_eq!(
            sign_up_names(&optional, Some(" "), None),
            Ok(Names::default())
        );
        let ada = sign_up_names(&required, Some(" Ada "), Some("Lovelace")).unwrap();
        assert_eq!(ada.first.unwrap().as_str(), "Ada");
        assert_eq!(
            sign_up_names(&required, Some("Ada"), Some("")),
            Err(NameInputError::Missing(NameField::Last))
        );
        assert_eq!(
            sign_up_names(&optional, Some("A\nB"), None),
            Err(NameInputError::Invalid(
                NameField::First,
                NameError::Control
            ))
        );
    }
}
