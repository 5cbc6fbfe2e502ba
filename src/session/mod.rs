//! The one cookie builder. Every cookie Latchkey sets or removes is built here.
//!
//! With an https public URL, cookies are `Secure` and carry the `__Host-` prefix (so no sibling
//! subdomain can plant or overwrite them); in plain-http development they are neither.

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};

/// Names and flags of Latchkey's cookies.
#[derive(Debug, Clone)]
pub struct Cookies {
    secure: bool,
}

/// The session cookie: the random token whose hash identifies the session.
const SESSION: &str = "latchkey_session";
/// The browser cookie: a random value that CSRF tokens and flows are bound to (the pre-session).
const BROWSER: &str = "latchkey_browser";
/// The device cookie: set at every sign-in, it makes this browser one of the account's trusted
/// browsers, which keep a share of the send and lockout budgets of their own.
const DEVICE: &str = "latchkey_device";

const BROWSER_MAX_AGE_DAYS: i64 = 30;

impl Cookies {
    pub fn new(secure: bool) -> Self {
        Self { secure }
    }

    fn name(&self, base: &str) -> String {
        if self.secure {
            format!("__Host-{base}")
        } else {
            base.to_string()
        }
    }

    pub fn session_name(&self) -> String {
        self.name(SESSION)
    }

    pub fn browser_name(&self) -> String {
        self.name(BROWSER)
    }

    pub fn device_name(&self) -> String {
        self.name(DEVICE)
    }

    fn build(&self, name: String, value: String, max_age: CookieDuration) -> Cookie<'static> {
        Cookie::build(name, value)
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .max_age(max_age)
            .finish()
    }

    pub fn session(&self, token: &str, ttl: std::time::Duration) -> Cookie<'static> {
        self.build(
            self.session_name(),
            token.to_string(),
            CookieDuration::seconds(ttl.as_secs() as i64),
        )
    }

    pub fn session_removal(&self) -> Cookie<'static> {
        self.build(self.session_name(), String::new(), CookieDuration::ZERO)
    }

    pub fn browser(&self, value: &str) -> Cookie<'static> {
        self.build(
            self.browser_name(),
            value.to_string(),
            CookieDuration::days(BROWSER_MAX_AGE_DAYS),
        )
    }

    /// The device cookie, kept for `days` (`lockout.device_ttl_days`; the server checks the
    /// age itself too).
    pub fn device(&self, value: &str, days: u32) -> Cookie<'static> {
        self.build(
            self.device_name(),
            value.to_string(),
            CookieDuration::days(i64::from(days)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_cookies_use_the_host_prefix_and_every_flag() {
        let c = Cookies::new(true).session("tok", std::time::Duration::from_secs(60));
        let s = c.to_string();
        assert!(s.starts_with("__Host-latchkey_session=tok"), "{s}");
        for part in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/", "Max-Age=60"] {
            assert!(s.contains(part), "{s} lacks {part}");
        }
        assert!(!s.contains("Domain"), "{s}");
    }

    #[test]
    fn the_device_cookie_is_host_only_http_only_secure_lax_and_long_lived() {
        let s = Cookies::new(true).device("dev", 365).to_string();
        assert!(s.starts_with("__Host-latchkey_device=dev"), "{s}");
        for part in [
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
            "Path=/",
            "Max-Age=31536000",
        ] {
            assert!(s.contains(part), "{s} lacks {part}");
        }
        assert!(!s.contains("Domain"), "{s}");
    }

    #[test]
    fn development_cookies_are_not_secure_and_unprefixed() {
        let s = Cookies::new(false)
            .session("tok", std::time::Duration::from_secs(60))
            .to_string();
        assert!(
            s.starts_with("latchkey_session=tok") && !s.contains("Secure"),
            "{s}"
        );
    }

    #[test]
    fn the_removal_cookie_expires_the_session_cookie() {
        let s = Cookies::new(true).session_removal().to_string();
        assert!(
            s.starts_with("__Host-latchkey_session=;") && s.contains("Max-Age=0"),
            "{s}"
        );
    }
}
