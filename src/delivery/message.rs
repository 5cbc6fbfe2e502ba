use askama::Template;
use serde::{Deserialize, Serialize};

use crate::crypto::Keys;

/// Why a code is sent; chooses the wording of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    SignUp,
    SignIn,
    /// Enumeration protection: someone tried to sign in with an address no account has.
    UnknownAccount,
    /// Enumeration protection: someone tried to sign up with an address an account has.
    AccountExists,
    /// The owner's identifier reached its daily send cap (sent to the account's address).
    SendsThrottled,
    /// Wrong codes locked sign-in to the owner's account (sent to the account's address).
    SignInLocked,
    /// A signed-in person adds this address or number to their account.
    AddIdentifier,
    /// A signed-in person confirms it is them before a sensitive change.
    Reverify,
    /// Enumeration protection: someone tried to add an address an account has to another
    /// account.
    IdentifierClaimed,
}

impl Purpose {
    /// A notice carries no code.
    pub fn is_notice(self) -> bool {
        matches!(
            self,
            Purpose::UnknownAccount
                | Purpose::AccountExists
                | Purpose::SendsThrottled
                | Purpose::SignInLocked
                | Purpose::IdentifierClaimed
        )
    }
}

/// Closes a notice about an attempt nobody else can continue.
const NOTHING_CHANGED: &str =
    "If this was not you, you can ignore this message: nothing has changed.";
/// Closes a throttling notice.
const THROTTLED: &str = "If this was not you, someone else is asking for codes or guessing them. Your account stays safe as long as only you can read your messages and texts; you need not do anything.";

/// A time as the messages carry it: Unix milliseconds.
pub fn unix_ms(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The content of a code message, sealed into the outbox row.
#[derive(Clone, Serialize, Deserialize)]
pub struct CodeMessage {
    /// The destination address as stored (never a variant the person typed).
    pub to: String,
    pub code: String,
    pub purpose: Purpose,
    /// Unix milliseconds.
    pub expires_at: i64,
    pub ttl_minutes: u64,
    /// Notices: where the person should go instead (sign-up or sign-in page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl std::fmt::Debug for CodeMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeMessage")
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
    }
}

impl CodeMessage {
    pub fn seal(&self, keys: &Keys) -> Vec<u8> {
        keys.seal(&serde_json::to_vec(self).expect("serializable"))
    }

    pub fn open(keys: &Keys, sealed: &[u8]) -> Option<Self> {
        serde_json::from_slice(&keys.open(sealed)?).ok()
    }

    /// The SMS text (for an SMS message `to` holds the E.164 number); `host` is the public host
    /// the code is bound to.
    pub fn render_sms(&self, product_name: &str, host: &str) -> String {
        super::sms::sms_text(&self.code, product_name, host)
    }

    /// The email; `code_in_subject` puts the code in the subject line too (the
    /// `codes.in_email_subject` setting).
    pub fn render_email(
        &self,
        product_name: &str,
        code_in_subject: bool,
    ) -> anyhow::Result<RenderedEmail> {
        let link = self.link.as_deref().unwrap_or_default();
        let notice = match self.purpose {
            Purpose::UnknownAccount => Some((
                format!("Sign-in attempt on {product_name}"),
                format!("Someone, hopefully you, tried to sign in to {product_name} with this email address, but there is no {product_name} account for it."),
                "If it was you, create an account instead:",
                NOTHING_CHANGED,
            )),
            Purpose::AccountExists => Some((
                format!("Sign-up attempt on {product_name}"),
                format!("Someone, hopefully you, tried to create a {product_name} account with this email address, but it already has an account."),
                "If it was you, sign in instead:",
                NOTHING_CHANGED,
            )),
            Purpose::SendsThrottled => Some((
                format!("Too many sign-in codes requested on {product_name}"),
                format!("Many sign-in codes were requested for your {product_name} account today, so for your security no more are sent to this address or number for up to a day, except to browsers you have signed in with before."),
                "If it was you, sign in from a browser you have used before, or try again tomorrow:",
                THROTTLED,
            )),
            Purpose::SignInLocked => Some((
                format!("Sign-in to {product_name} paused after incorrect codes"),
                format!("Several incorrect codes were entered to sign in to your {product_name} account, so for your security sign-in is paused for a while, except from browsers you have signed in with before."),
                "If it was you, sign in from a browser you have used before, or try again later:",
                THROTTLED,
            )),
            Purpose::IdentifierClaimed => Some((
                format!("Your email address on {product_name}"),
                format!("Someone tried to add this email address to another {product_name} account, but it already belongs to yours. It stays with your account."),
                "You can check your account here:",
                NOTHING_CHANGED,
            )),
            Purpose::SignUp | Purpose::SignIn | Purpose::AddIdentifier | Purpose::Reverify => None,
        };
        if let Some((subject, lead, advice, closing)) = notice {
            let ctx = NoticeEmailText {
                product_name,
                subject: &subject,
                lead: &lead,
                advice,
                link,
                closing,
            };
            return Ok(RenderedEmail {
                text: ctx.render()?,
                html: NoticeEmailHtml { inner: &ctx }.render()?,
                subject,
            });
        }
        let action = match self.purpose {
            Purpose::SignUp => "finish signing up",
            Purpose::AddIdentifier => "add this address to your account",
            Purpose::Reverify => "confirm it is you",
            _ => "sign in",
        };
        let ctx = CodeEmailText {
            product_name,
            code: &self.code,
            action,
            ttl_minutes: self.ttl_minutes,
        };
        Ok(RenderedEmail {
            subject: if code_in_subject {
                format!("{} is your {product_name} verification code", self.code)
            } else {
                format!("Your {product_name} verification code")
            },
            text: ctx.render()?,
            html: CodeEmailHtml { inner: &ctx }.render()?,
        })
    }
}

/// A message ready for a mail transport.
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Template)]
#[template(path = "email/code.txt")]
struct CodeEmailText<'a> {
    product_name: &'a str,
    code: &'a str,
    action: &'a str,
    ttl_minutes: u64,
}

#[derive(Template)]
#[template(path = "email/notice.txt")]
struct NoticeEmailText<'a> {
    product_name: &'a str,
    subject: &'a str,
    lead: &'a str,
    advice: &'a str,
    link: &'a str,
    closing: &'a str,
}

#[derive(Template)]
#[template(path = "email/notice.html")]
struct NoticeEmailHtml<'a> {
    inner: &'a NoticeEmailText<'a>,
}

#[derive(Template)]
#[template(path = "email/code.html")]
struct CodeEmailHtml<'a> {
    inner: &'a CodeEmailText<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sms_carries_the_code_bound_to_the_host() {
        let m = CodeMessage {
            to: "+15005550006".into(),
            code: "042137".into(),
            purpose: Purpose::SignUp,
            expires_at: 0,
            ttl_minutes: 10,
            link: None,
        };
        assert_eq!(
            m.render_sms("Acme", "accounts.example.com"),
            "042137 is your Acme verification code.\n\n@accounts.example.com #042137"
        );
    }

    #[test]
    fn a_throttling_notice_carries_no_code_and_points_to_a_trusted_browser() {
        for purpose in [Purpose::SendsThrottled, Purpose::SignInLocked] {
            let m = CodeMessage {
                to: "a@example.com".into(),
                code: String::new(),
                purpose,
                expires_at: 0,
                ttl_minutes: 0,
                link: Some("https://accounts.example.com/sign-in".into()),
            };
            assert!(purpose.is_notice());
            let r = m.render_email("Acme", true).unwrap();
            assert!(!r.subject.contains("verification code"), "{}", r.subject);
            for body in [&r.text, &r.html] {
                assert!(
                    body.contains("browser you have used before")
                        && body.contains("https://accounts.example.com/sign-in")
                        && !body.contains("nothing has changed"),
                    "{body}"
                );
            }
        }
    }

    #[test]
    fn the_code_is_in_both_bodies_and_in_the_subject_only_when_asked_for() {
        let m = CodeMessage {
            to: "a@example.com".into(),
            code: "042137".into(),
            purpose: Purpose::SignIn,
            expires_at: 0,
            ttl_minutes: 10,
            link: None,
        };
        let r = m.render_email("Acme <Accounts>", true).unwrap();
        assert_eq!(
            r.subject,
            "042137 is your Acme <Accounts> verification code"
        );
        assert!(
            r.text.contains("042137")
                && r.text.contains("10 minutes")
                && r.text.contains("Acme <Accounts>")
        );
        assert!(
            r.html.contains("042137") && r.html.contains("Acme &#60;Accounts&#62;"),
            "{}",
            r.html
        );
    }

    #[test]
    fn by_default_the_subject_names_the_product_but_not_the_code() {
        let m = CodeMessage {
            to: "a@example.com".into(),
            code: "042137".into(),
            purpose: Purpose::SignIn,
            expires_at: 0,
            ttl_minutes: 10,
            link: None,
        };
        let r = m.render_email("Acme", false).unwrap();
        assert_eq!(r.subject, "Your Acme verification code");
        assert!(r.text.contains("042137") && r.html.contains("042137"));
    }
}
