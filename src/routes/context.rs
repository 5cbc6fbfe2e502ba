//! The per-request context every page handler takes: state, request id, browser cookie, and the
//! helpers that turn outcomes into responses (pages, redirects, CSRF checks, error pages). What
//! the answer hands to the client (cookies) is recorded for `finish`, which writes it on every
//! answer.

use std::future::{ready, Ready};

use actix_web::http::{header, StatusCode};
use actix_web::{
    dev::Payload, web, FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError,
};
use askama::Template;

use super::errors::{PageError, Unexpected};
use super::finish::{pending, SessionCookie};
use super::flow_input::{from_allowed_site, plausible_token};
use super::pages::{ErrorPage, ErrorText, Link, PageCtx};
use super::{paths, AppState};
use crate::auth::{Client, CurrentUser, FlowKind};
use crate::crypto::random_token;

pub struct Ctx {
    pub req: HttpRequest,
    pub state: web::Data<AppState>,
    pub request_id: String,
    browser: Option<String>,
    /// The device cookie (a trusted browser's), if the request had one of a plausible size.
    device: Option<String>,
    user_agent: Option<String>,
    ip: Option<String>,
    /// The signed-in session acting on a flow on /user (see [`Ctx::for_user`]).
    session: Option<crate::domain::SessionId>,
}

/// The client's address: the socket peer, or, when the peer is one of `trusted` (a reverse
/// proxy of the operator's), the nearest address in `X-Forwarded-For` (or `Forwarded: for=`)
/// that is not a trusted proxy. Walking from the right means a client can prepend what it
/// likes but never choose the address the rate limits see. An unreadable hop falls back to the
/// peer.
pub fn client_ip(
    req: &HttpRequest,
    trusted: &[ipnet::IpNet],
    use_forwarded: bool,
) -> Option<std::net::IpAddr> {
    // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d; compare them as IPv4.
    let peer = req.peer_addr()?.ip().to_canonical();
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let headers = req.headers();
    // Only the header the operator's proxy sets: a client could send the other one itself.
    let hops: Vec<String> = if !use_forwarded {
        headers
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    } else {
        headers
            .get_all("forwarded")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| v.trim().trim_matches('"').to_string())
                })
            })
            .collect()
    };
    for hop in hops.iter().rev() {
        let Some(addr) = parse_hop(hop).map(|a| a.to_canonical()) else {
            return Some(peer);
        };
        if !is_trusted(&addr) {
            return Some(addr);
        }
    }
    Some(peer)
}

/// `203.0.113.7`, `203.0.113.7:4711`, `2001:db8::1`, `[2001:db8::1]:4711`.
fn parse_hop(hop: &str) -> Option<std::net::IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Ok(sock) = hop.parse::<std::net::SocketAddr>() {
        return Some(sock.ip());
    }
    hop.strip_prefix('[')?.split(']').next()?.parse().ok()
}

/// The request id `TracingLogger` gave this request (empty if none).
pub(super) fn request_id(req: &HttpRequest) -> String {
    req.extensions()
        .get::<tracing_actix_web::RequestId>()
        .map(|id| id.to_string())
        .unwrap_or_default()
}

impl FromRequest for Ctx {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req
            .app_data::<web::Data<AppState>>()
            .cloned()
            .expect("AppState is registered at startup");
        let browser = req
            .cookie(&state.cookies.browser_name())
            .map(|c| c.value().to_string())
            .filter(|v| plausible_token(v));
        // Checked against an account (an HMAC) only where it matters; here only bounded.
        let device = req
            .cookie(&state.cookies.device_name())
            .map(|c| c.value().to_string())
            .filter(|v| v.len() <= 128);
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect());
        let ip = client_ip(
            req,
            &state.settings.http.trusted_proxies,
            state.settings.http.trusted_proxy_forwarded,
        )
        .map(|a| a.to_string());
        ready(Ok(Ctx {
            req: req.clone(),
            state,
            request_id: request_id(req),
            browser,
            device,
            user_agent,
            ip,
            session: None,
        }))
    }
}

impl Ctx {
    /// This request acts for `user`'s session: flows on /user belong to it (see
    /// [`Client::session`](crate::auth::Client)).
    pub fn for_user(mut self, user: &CurrentUser) -> Self {
        self.session = Some(user.session_id.clone());
        self
    }

    /// The browser cookie value, minting one (set on the answer by `finish`) if the request had
    /// none.
    pub fn browser(&self) -> String {
        if let Some(b) = &self.browser {
            return b.clone();
        }
        pending(&self.req, |p| {
            p.browser.get_or_insert_with(|| random_token(32)).clone()
        })
    }

    /// A fresh browser cookie on the answer (at sign-in), replacing any minted before.
    pub(super) fn replace_browser_cookie(&self) {
        pending(&self.req, |p| p.browser = Some(random_token(32)));
    }

    /// The session cookie of a new session on the answer.
    pub(super) fn issue_session_cookie(&self, token: &str) {
        pending(&self.req, |p| {
            p.session = Some(SessionCookie::Issue(token.to_string()))
        });
    }

    /// A device cookie on the answer (at sign-in): this browser becomes a trusted browser of
    /// the account.
    pub(super) fn issue_device_cookie(&self, token: &str) {
        pending(&self.req, |p| p.device = Some(token.to_string()));
    }

    /// The session cookie's removal on the answer.
    pub(crate) fn remove_session_cookie(&self) {
        pending(&self.req, |p| p.session = Some(SessionCookie::Remove));
    }

    /// A native client's token in the answer's `Authorization` header.
    pub(super) fn hand_client_token(&self, token: &str) {
        pending(&self.req, |p| p.client_token = Some(token.to_string()));
    }

    pub fn client(&self) -> Client<'_> {
        Client {
            browser: self.browser.as_deref(),
            user_agent: self.user_agent.as_deref(),
            ip: self.ip.as_deref(),
            native: false,
            device: self.device.as_deref(),
            session: self.session.as_ref(),
        }
    }

    pub fn page_ctx(&self, title: &str) -> PageCtx {
        PageCtx {
            product_name: self.state.settings.product_name.clone(),
            title: title.to_string(),
            request_id: self.request_id.clone(),
            dev_mode: self.state.settings.dev_mode,
        }
    }

    /// A CSRF token for a form bound to this browser and `scope` (a flow id, or the start step).
    pub fn csrf_token(&self, scope: &str) -> String {
        self.state
            .auth
            .keys()
            .csrf_token(&["browser", &self.browser(), scope])
    }

    /// A CSRF token for a form of a signed-in session.
    pub fn session_csrf_token(&self, user: &CurrentUser) -> String {
        self.state
            .auth
            .keys()
            .csrf_token(&["session", user.session_id.as_str()])
    }

    /// A form post comes from a page of this site (no other origin may post the hosted forms).
    fn same_origin_request(&self) -> bool {
        from_allowed_site(&self.req, &self.state.settings.public_origin, &[])
    }

    /// Checks a form post bound to this browser and `scope`: a cross-site request is refused
    /// before any token is looked at.
    pub fn check_form(&self, scope: &str, token: &str) -> Result<(), PageError> {
        let valid = self.same_origin_request()
            && self.browser.as_deref().is_some_and(|b| {
                self.state
                    .auth
                    .keys()
                    .csrf_valid(&["browser", b, scope], token)
            });
        self.form_checked(valid)
    }

    /// Checks a form post of a signed-in session.
    pub fn check_session_form(&self, user: &CurrentUser, token: &str) -> Result<(), PageError> {
        let valid = self.same_origin_request()
            && self
                .state
                .auth
                .keys()
                .csrf_valid(&["session", user.session_id.as_str()], token);
        self.form_checked(valid)
    }

    fn form_checked(&self, valid: bool) -> Result<(), PageError> {
        if valid {
            return Ok(());
        }
        tracing::warn!(event = "csrf_refused", path = %self.req.path(), ip = self.ip.as_deref().unwrap_or("-"), "form post without a valid CSRF token or from another site");
        Err(PageError::FormExpired)
    }

    /// The session cookie's token, if any.
    pub fn session_token(&self) -> Option<String> {
        self.req
            .cookie(&self.state.cookies.session_name())
            .map(|c| c.value().to_string())
    }

    /// The signed-in user, if the session cookie names a live session.
    pub async fn current_user(&self) -> Result<Option<CurrentUser>, PageError> {
        let Some(token) = self.session_token() else {
            return Ok(None);
        };
        Ok(self.state.auth.current_user(&token).await?)
    }

    /// Renders a page with `status`.
    pub fn render(
        &self,
        status: StatusCode,
        page: &impl Template,
    ) -> Result<HttpResponse, PageError> {
        let body = page
            .render()
            .map_err(|e| anyhow::anyhow!("rendering a page: {e}"))?;
        Ok(HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .body(body))
    }

    /// 303 See Other to `location`.
    pub fn redirect(&self, location: &str) -> Result<HttpResponse, PageError> {
        Ok(HttpResponse::SeeOther()
            .insert_header((header::LOCATION, location))
            .finish())
    }

    /// The page of a [`PageError`] (written by `finish`); an unexpected failure is logged here
    /// with the request id.
    pub(super) fn error_response(&self, e: &PageError) -> HttpResponse {
        let start_again = |kind: FlowKind| Some(paths::start(kind).to_string());
        let (text, link) = match e {
            PageError::FormExpired => (ErrorText::FormExpired, Some(paths::SIGN_IN.to_string())),
            PageError::FlowNotFound(kind) => (ErrorText::FlowNotFound, start_again(*kind)),
            PageError::FlowExpired(kind, redirect) => (
                ErrorText::FlowExpired,
                Some(paths::with_query(
                    paths::start(*kind),
                    &[(
                        "redirect_url",
                        redirect.as_ref().map(|r| r.as_str()).unwrap_or_default(),
                    )],
                )),
            ),
            PageError::CodeUsed(kind) => (ErrorText::CodeUsed, start_again(*kind)),
            PageError::NotFound => (ErrorText::NotFound, Some(paths::SIGN_IN.to_string())),
            PageError::Internal(e) => {
                let unexpected = Unexpected::logged(e, &self.request_id);
                let page = match unexpected {
                    Unexpected::Unavailable => ErrorText::Unavailable,
                    Unexpected::Failed => ErrorText::Failed,
                };
                let resp = self.error_page_of(unexpected.status(), page, None);
                return match unexpected {
                    Unexpected::Unavailable => with_retry_after(resp, Unexpected::RETRY_AFTER_SECS),
                    Unexpected::Failed => resp,
                };
            }
        };
        self.error_page_of(ResponseError::status_code(e), text, link)
    }

    /// An error page with the caller's own words (the form reader in `startup.rs`).
    pub fn error_page(
        &self,
        status: StatusCode,
        title: &str,
        message: &str,
        link: Option<Link>,
    ) -> HttpResponse {
        let text = ErrorText::Given {
            title: title.to_string(),
            message: message.to_string(),
        };
        let href = link.map(|l| l.href);
        self.error_page_of(status, text, href)
    }

    pub(super) fn error_page_of(
        &self,
        status: StatusCode,
        text: ErrorText,
        link: Option<String>,
    ) -> HttpResponse {
        let page = ErrorPage {
            page: self.page_ctx(""),
            status: status.as_u16(),
            text,
            link,
        };
        match page.render() {
            Ok(body) => HttpResponse::build(status)
                .content_type("text/html; charset=utf-8")
                .body(body),
            Err(e) => {
                tracing::error!(request_id = %self.request_id, error = %e, "rendering the error page");
                HttpResponse::build(status)
                    .content_type("text/plain; charset=utf-8")
                    .body(format!(
                        "Error {}\n\nRequest id: {}",
                        status.as_u16(),
                        self.request_id
                    ))
            }
        }
    }
}

/// Adds `Retry-After: <secs>` (whole seconds, RFC 6585 §4) to a response.
pub fn with_retry_after(mut resp: HttpResponse, secs: u64) -> HttpResponse {
    resp.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(secs.max(1)));
    resp
}
