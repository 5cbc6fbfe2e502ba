//! The per-request context every page handler takes: state, request id, browser cookie, and the
//! helpers that turn outcomes into responses (pages, redirects, CSRF refusals, error pages).

use std::cell::RefCell;
use std::future::{ready, Ready};

use actix_web::cookie::Cookie;
use actix_web::http::{header, StatusCode};
use actix_web::{dev::Payload, web, FromRequest, HttpMessage, HttpRequest, HttpResponse};
use askama::Template;

use super::pages::{ErrorPage, Link, PageCtx};
use super::AppState;
use crate::auth::{Client, CurrentUser};
use crate::crypto::random_token;

pub struct Ctx {
    pub req: HttpRequest,
    pub state: web::Data<AppState>,
    pub request_id: String,
    browser: Option<String>,
    minted_browser: RefCell<Option<String>>,
    user_agent: Option<String>,
    ip: Option<String>,
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

fn plausible_token(v: &str) -> bool {
    v.len() == 43
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl FromRequest for Ctx {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req
            .app_data::<web::Data<AppState>>()
            .cloned()
            .expect("AppState is registered at startup");
        let request_id = req
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .map(|id| id.to_string())
            .unwrap_or_default();
        let browser = req
            .cookie(&state.cookies.browser_name())
            .map(|c| c.value().to_string())
            .filter(|v| plausible_token(v));
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect());
        let ip = client_ip(
            req,
            &state.settings.trusted_proxies,
            state.settings.trusted_proxy_forwarded,
        )
        .map(|a| a.to_string());
        ready(Ok(Ctx {
            req: req.clone(),
            state,
            request_id,
            browser,
            minted_browser: RefCell::new(None),
            user_agent,
            ip,
        }))
    }
}

impl Ctx {
    /// The browser cookie value, minting one (set on the response) if the request had none.
    pub fn browser(&self) -> String {
        if let Some(b) = &self.browser {
            return b.clone();
        }
        self.minted_browser
            .borrow_mut()
            .get_or_insert_with(|| random_token(32))
            .clone()
    }

    pub fn client(&self) -> Client<'_> {
        Client {
            browser: self.browser.as_deref(),
            user_agent: self.user_agent.as_deref(),
            ip: self.ip.as_deref(),
            native: false,
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

    /// Fetch-metadata and Origin check for unsafe methods: a cross-site request is refused
    /// before any token is looked at. `Origin: null` (sent by browsers whose referrer policy hides
    /// the origin) is accepted only when the browser also vouches `Sec-Fetch-Site: same-origin`,
    /// a header no page can forge.
    pub(super) fn same_origin_request(&self) -> bool {
        let headers = self.req.headers();
        let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        if let Some(site) = site {
            if !matches!(site, "same-origin" | "none") {
                return false;
            }
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let Ok(origin) = origin.to_str() else {
                return false;
            };
            let vouched_null = origin == "null" && site == Some("same-origin");
            if !vouched_null && !self.state.settings.public_origin.matches_header(origin) {
                return false;
            }
        }
        true
    }

    /// Checks a form post bound to this browser and `scope`; on failure, the 403 response.
    pub fn check_form(&self, scope: &str, token: &str) -> Result<(), HttpResponse> {
        let valid = self.same_origin_request()
            && self.browser.as_deref().is_some_and(|b| {
                self.state
                    .auth
                    .keys()
                    .csrf_valid(&["browser", b, scope], token)
            });
        if valid {
            Ok(())
        } else {
            Err(self.csrf_refusal())
        }
    }

    /// Checks a form post of a signed-in session.
    pub fn check_session_form(&self, user: &CurrentUser, token: &str) -> Result<(), HttpResponse> {
        let valid = self.same_origin_request()
            && self
                .state
                .auth
                .keys()
                .csrf_valid(&["session", user.session_id.as_str()], token);
        if valid {
            Ok(())
        } else {
            Err(self.csrf_refusal())
        }
    }

    fn csrf_refusal(&self) -> HttpResponse {
        tracing::warn!(event = "csrf_refused", path = %self.req.path(), ip = self.ip.as_deref().unwrap_or("-"), "form post without a valid CSRF token or from another site");
        self.error_page(
            StatusCode::FORBIDDEN,
            "This form has expired",
            "For your security, this request was refused: it did not come from a page of this site, or your browser blocked the cookie it needs. Go back, reload the page and try again.",
            Some(Link::new("Start again", super::paths::SIGN_IN)),
        )
    }

    /// The session cookie's token, if any.
    pub fn session_token(&self) -> Option<String> {
        self.req
            .cookie(&self.state.cookies.session_name())
            .map(|c| c.value().to_string())
    }

    /// The signed-in user, if the session cookie names a live session.
    pub async fn current_user(&self) -> Result<Option<CurrentUser>, HttpResponse> {
        let Some(token) = self.session_token() else {
            return Ok(None);
        };
        self.state
            .auth
            .current_user(&token)
            .await
            .map_err(|e| self.internal(e))
    }

    /// Renders a page with `status`, adding the browser cookie if one was minted.
    pub fn render(&self, status: StatusCode, page: &impl Template) -> HttpResponse {
        match page.render() {
            Ok(body) => {
                let mut resp = HttpResponse::build(status);
                resp.content_type("text/html; charset=utf-8");
                self.attach_cookies(&mut resp);
                resp.body(body)
            }
            Err(e) => self.internal(anyhow::anyhow!("rendering a page: {e}")),
        }
    }

    pub(super) fn attach_cookies(&self, resp: &mut actix_web::HttpResponseBuilder) {
        if let Some(b) = self.minted_browser.borrow().as_deref() {
            resp.cookie(self.state.cookies.browser(b));
        }
    }

    /// 303 See Other to `location`, with optional cookies.
    pub fn redirect(&self, location: &str, cookies: Vec<Cookie<'static>>) -> HttpResponse {
        let mut resp = HttpResponse::SeeOther();
        resp.insert_header((header::LOCATION, location));
        self.attach_cookies(&mut resp);
        for c in cookies {
            resp.cookie(c);
        }
        resp.finish()
    }

    pub fn error_page(
        &self,
        status: StatusCode,
        title: &str,
        message: &str,
        link: Option<Link>,
    ) -> HttpResponse {
        let page = ErrorPage {
            page: self.page_ctx(title),
            status: status.as_u16(),
            message: message.to_string(),
            link,
        };
        match page.render() {
            Ok(body) => HttpResponse::build(status)
                .content_type("text/html; charset=utf-8")
                .body(body),
            Err(_) => HttpResponse::build(status)
                .content_type("text/plain; charset=utf-8")
                .body(format!(
                    "{title}\n\n{message}\n\nRequest id: {}",
                    self.request_id
                )),
        }
    }

    /// Logs an unexpected failure with its request id and shows a 500 page naming the id, or a
    /// 503 with `Retry-After` when the database cannot be reached (never a hang).
    pub fn internal(&self, e: anyhow::Error) -> HttpResponse {
        if crate::store::is_unavailable_error(&e) {
            tracing::error!(request_id = %self.request_id, error = format!("{e:#}"), "database unavailable");
            let resp = self.error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "We cannot reach our database right now. Nothing you entered was lost: try again in a few seconds.",
                None,
            );
            return with_retry_after(resp, 5);
        }
        tracing::error!(request_id = %self.request_id, error = format!("{e:#}"), "request failed");
        self.error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "We could not complete your request. Nothing you entered was lost: go back and try again in a moment. If it keeps happening, give the request id below to the site's operator.",
            None,
        )
    }
}

/// Adds `Retry-After: <secs>` (whole seconds, RFC 6585 §4) to a response.
pub fn with_retry_after(mut resp: HttpResponse, secs: u64) -> HttpResponse {
    resp.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(secs.max(1)));
    resp
}
