//! HTTP face of Latchkey: the URL map, the per-request context and page helpers.
//!
//! Handlers parse input at the edge (domain types), call `auth::`, and answer a page, a redirect
//! or JSON; what goes wrong is a typed error (`PageError`, `ApiError`) they return with `?`.
//! [`finish`] writes every answer's request-bound parts: error pages and JSON errors naming the
//! request id, cookies, a native client's token and CORS headers.

mod api;
mod assets;
mod context;
mod dev;
mod errors;
mod examples;
mod finish;
mod flow_input;
mod flow_pages;
mod health;
mod home;
mod oauth;
mod overload;
mod pages;
mod sign_in;
mod sign_up;
pub(crate) mod user;
mod user_actions;
mod well_known;

use std::sync::Arc;

use actix_web::web;

pub use context::Ctx;
pub use errors::PageError;
pub use finish::{finish, unmark_identity};
pub use overload::{Admission, NotAdmitted};
pub use pages::not_found;

use crate::auth::Auth;
use crate::config::Settings;
use crate::session::Cookies;
use crate::store::Store;

/// Shared state of the web layer.
pub struct AppState {
    pub auth: Arc<Auth>,
    /// The keys that sign session tokens, ID tokens and access tokens.
    pub signing: Arc<crate::tokens::Keyring>,
    /// The OpenID Connect provider.
    pub oidc: Arc<crate::oidc::Provider>,
    /// Session tokens whose signature was checked here (the verify endpoint).
    pub verified_tokens: crate::tokens::VerifiedTokens,
    /// Keyed hashes of the backend API's secret keys.
    pub backend_keys: Vec<[u8; 32]>,
    pub store: Store,
    pub settings: Settings,
    pub cookies: Cookies,
}

/// Every URL, spelled once: the patterns the URL map mounts and the builders that fill them in
/// for links and redirects. Templates receive URLs built from these.
pub mod paths {
    use crate::auth::FlowKind;
    use crate::domain::FlowId;

    pub const HOME: &str = "/";
    pub const SIGN_UP: &str = "/sign-up";
    pub const SIGN_UP_VERIFY: &str = "/sign-up/verify/{flow}";
    pub const SIGN_UP_RESEND: &str = "/sign-up/resend/{flow}";
    pub const SIGN_IN: &str = "/sign-in";
    pub const SIGN_IN_VERIFY: &str = "/sign-in/verify/{flow}";
    pub const SIGN_IN_RESEND: &str = "/sign-in/resend/{flow}";
    /// "Use another method" on a sign-in code page.
    pub const SIGN_IN_FACTOR: &str = "/sign-in/factor/{flow}";
    pub const USER: &str = "/user";
    /// The profile's name form.
    pub const USER_NAME: &str = "/user/name";
    /// The code step of adding an identifier on /user.
    pub const USER_VERIFY: &str = "/user/verify/{flow}";
    pub const USER_RESEND: &str = "/user/resend/{flow}";
    /// The code step of a reverification (a fresh code before a sensitive change).
    pub const USER_REVERIFY: &str = "/user/reverify/{flow}";
    pub const USER_REVERIFY_RESEND: &str = "/user/reverify-resend/{flow}";
    /// "Use another method" of a reverification: a new one to another identifier.
    pub const USER_REVERIFY_FACTOR: &str = "/user/reverify-factor/{flow}";
    pub const USER_ADD_IDENTIFIER: &str = "/user/identifiers";
    pub const USER_MAKE_PRIMARY: &str = "/user/identifiers/primary";
    pub const USER_REMOVE_IDENTIFIER: &str = "/user/identifiers/remove";
    pub const USER_REVOKE_SESSION: &str = "/user/sessions/revoke";
    pub const USER_REVOKE_OTHERS: &str = "/user/sessions/revoke-others";
    pub const USER_DELETE: &str = "/user/delete";
    pub const SIGN_OUT: &str = "/sign-out";
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const DEV_OUTBOX: &str = "/dev/outbox";
    pub const DEV_SETTINGS: &str = "/dev/settings";
    pub const EXAMPLES_CUSTOM_FLOW: &str = "/examples/custom-flow";
    pub const STATIC_ASSET: &str = "/static/{name}";
    /// The signing key set (RFC 7517).
    pub const JWKS: &str = crate::oidc::endpoints::JWKS;
    /// The OpenID Connect provider (docs/oidc.md).
    pub const DISCOVERY: &str = crate::oidc::endpoints::DISCOVERY;
    pub const AUTHORIZE: &str = crate::oidc::endpoints::AUTHORIZE;
    pub const CONSENT: &str = crate::oidc::endpoints::CONSENT;
    pub const TOKEN: &str = crate::oidc::endpoints::TOKEN;
    pub const USERINFO: &str = crate::oidc::endpoints::USERINFO;
    pub const REVOKE: &str = crate::oidc::endpoints::REVOKE;
    pub const INTROSPECT: &str = crate::oidc::endpoints::INTROSPECT;
    pub const END_SESSION: &str = crate::oidc::endpoints::END_SESSION;

    /// The custom-flow JSON API (docs/api.md).
    pub mod api {
        pub const OPENAPI: &str = "/v1/openapi.json";
        pub const CLIENT: &str = "/v1/client";
        pub const CLIENT_SESSION: &str = "/v1/client/sessions/{id}";
        pub const SIGN_UPS: &str = "/v1/client/sign_ups";
        pub const SIGN_UP: &str = "/v1/client/sign_ups/{id}";
        pub const SIGN_UP_PREPARE: &str = "/v1/client/sign_ups/{id}/prepare_verification";
        pub const SIGN_UP_ATTEMPT: &str = "/v1/client/sign_ups/{id}/attempt_verification";
        pub const SIGN_INS: &str = "/v1/client/sign_ins";
        pub const SIGN_IN: &str = "/v1/client/sign_ins/{id}";
        pub const SIGN_IN_PREPARE: &str = "/v1/client/sign_ins/{id}/prepare_first_factor";
        pub const SIGN_IN_ATTEMPT: &str = "/v1/client/sign_ins/{id}/attempt_first_factor";
        pub const CLIENT_SESSION_TOKENS: &str = "/v1/client/sessions/{id}/tokens";
        /// The signed-in person's own account.
        pub const ME: &str = "/v1/me";
        pub const ME_SESSIONS: &str = "/v1/me/sessions";
        pub const ME_SESSION_REVOKE: &str = "/v1/me/sessions/{id}/revoke";
        /// A fresh code for the changes that need one (Clerk's reverification).
        pub const ME_REVERIFICATION: &str = "/v1/me/reverification";
        pub const ME_REVERIFICATION_ATTEMPT: &str = "/v1/me/reverification/{id}/attempt";
        /// The person's email addresses or phone numbers (`{kind}`: `email_addresses` or
        /// `phone_numbers`; the URL map lets no other through).
        pub const ME_IDENTIFIERS: &str = "/v1/me/{kind}";
        pub const ME_IDENTIFIER: &str = "/v1/me/{kind}/{id}";
        pub const ME_IDENTIFIER_PREPARE: &str = "/v1/me/{kind}/{id}/prepare_verification";
        pub const ME_IDENTIFIER_ATTEMPT: &str = "/v1/me/{kind}/{id}/attempt_verification";
        /// The backend API (a secret key, from the operator's servers).
        pub const SESSIONS_VERIFY: &str = "/v1/sessions/verify";
        pub const USER: &str = "/v1/users/{id}";
        /// Everything else under `/v1` (preflights, and the structured 404).
        pub const ANY: &str = "/v1/{tail:.*}";
    }

    /// `pattern` with its one `{…}` segment replaced by `value`.
    fn fill(pattern: &str, value: &str) -> String {
        match (pattern.find('{'), pattern.find('}')) {
            (Some(open), Some(close)) => {
                format!("{}{value}{}", &pattern[..open], &pattern[close + 1..])
            }
            _ => pattern.to_string(),
        }
    }

    pub fn start(kind: FlowKind) -> &'static str {
        match kind {
            FlowKind::SignUp => SIGN_UP,
            FlowKind::SignIn => SIGN_IN,
            FlowKind::AddIdentifier | FlowKind::Reverify => USER,
        }
    }

    pub fn verify(kind: FlowKind, id: &FlowId) -> String {
        let pattern = match kind {
            FlowKind::SignUp => SIGN_UP_VERIFY,
            FlowKind::SignIn => SIGN_IN_VERIFY,
            FlowKind::AddIdentifier => USER_VERIFY,
            FlowKind::Reverify => USER_REVERIFY,
        };
        fill(pattern, id.as_str())
    }

    pub fn resend(kind: FlowKind, id: &FlowId) -> String {
        let pattern = match kind {
            FlowKind::SignUp => SIGN_UP_RESEND,
            FlowKind::SignIn => SIGN_IN_RESEND,
            FlowKind::AddIdentifier => USER_RESEND,
            FlowKind::Reverify => USER_REVERIFY_RESEND,
        };
        fill(pattern, id.as_str())
    }

    /// "Use another method" on a sign-in (or reverification) code page.
    pub fn factor(kind: FlowKind, id: &FlowId) -> String {
        match kind {
            FlowKind::Reverify => fill(USER_REVERIFY_FACTOR, id.as_str()),
            _ => fill(SIGN_IN_FACTOR, id.as_str()),
        }
    }

    /// The identifier step, prefilled from an existing flow ("Edit").
    pub fn edit(kind: FlowKind, id: &FlowId) -> String {
        match kind {
            FlowKind::AddIdentifier | FlowKind::Reverify => USER.to_string(),
            FlowKind::SignUp | FlowKind::SignIn => format!("{}?flow={}", start(kind), id),
        }
    }

    pub fn asset(name: &str) -> String {
        fill(STATIC_ASSET, name)
    }

    /// `base` with a query of the non-empty `params` (form-urlencoded).
    pub fn with_query(base: &str, params: &[(&str, &str)]) -> String {
        let params: Vec<_> = params.iter().filter(|(_, v)| !v.is_empty()).collect();
        if params.is_empty() {
            return base.to_string();
        }
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in params {
            s.append_pair(k, v);
        }
        format!("{base}?{}", s.finish())
    }

    #[cfg(test)]
    mod tests {
        use actix_web::dev::ResourceDef;

        use super::*;

        #[test]
        fn every_built_url_matches_the_pattern_the_url_map_mounts() {
            let id = FlowId::generate();
            let built = [
                (SIGN_UP_VERIFY, verify(FlowKind::SignUp, &id)),
                (SIGN_IN_VERIFY, verify(FlowKind::SignIn, &id)),
                (SIGN_UP_RESEND, resend(FlowKind::SignUp, &id)),
                (SIGN_IN_RESEND, resend(FlowKind::SignIn, &id)),
                (USER_VERIFY, verify(FlowKind::AddIdentifier, &id)),
                (USER_RESEND, resend(FlowKind::AddIdentifier, &id)),
                (SIGN_IN_FACTOR, factor(FlowKind::SignIn, &id)),
                (USER_REVERIFY_FACTOR, factor(FlowKind::Reverify, &id)),
                (USER_REVERIFY, verify(FlowKind::Reverify, &id)),
                (USER_REVERIFY_RESEND, resend(FlowKind::Reverify, &id)),
                (STATIC_ASSET, asset("style.css")),
            ];
            for (pattern, url) in built {
                let def = ResourceDef::new(pattern);
                assert!(def.is_match(&url), "{url} does not match {pattern}");
                assert!(
                    url.ends_with(id.as_str()) || url.ends_with("style.css"),
                    "{url}"
                );
            }
            assert_eq!(
                verify(FlowKind::SignIn, &id),
                format!("/sign-in/verify/{id}")
            );
            assert_eq!(asset("flow.js"), "/static/flow.js");
            assert_eq!(
                with_query(SIGN_IN, &[("redirect_url", USER), ("empty", "")]),
                "/sign-in?redirect_url=%2Fuser"
            );
        }
    }
}

/// The whole URL map.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(paths::HOME, web::get().to(home::index))
        .service(
            web::resource(paths::SIGN_UP)
                .route(web::get().to(sign_up::start_page))
                .route(web::post().to(sign_up::start)),
        )
        .service(
            web::resource(paths::SIGN_UP_VERIFY)
                .route(web::get().to(sign_up::code_page))
                .route(web::post().to(sign_up::attempt)),
        )
        .service(
            web::resource(paths::SIGN_UP_RESEND)
                .route(web::get().to(sign_up::code_page))
                .route(web::post().to(sign_up::resend)),
        )
        .service(
            web::resource(paths::SIGN_IN)
                .route(web::get().to(sign_in::start_page))
                .route(web::post().to(sign_in::start)),
        )
        .service(
            web::resource(paths::SIGN_IN_VERIFY)
                .route(web::get().to(sign_in::code_page))
                .route(web::post().to(sign_in::attempt)),
        )
        .service(
            web::resource(paths::SIGN_IN_RESEND)
                .route(web::get().to(sign_in::code_page))
                .route(web::post().to(sign_in::resend)),
        )
        .service(
            web::resource(paths::SIGN_IN_FACTOR)
                .route(web::get().to(sign_in::code_page))
                .route(web::post().to(sign_in::switch_factor)),
        )
        .route(paths::USER, web::get().to(user::page))
        .service(
            web::resource(paths::USER_NAME)
                .route(web::get().to(user::back_to_profile))
                .route(web::post().to(user::update_name)),
        )
        .configure(user_actions::configure)
        .service(
            web::resource(paths::SIGN_OUT)
                .route(web::get().to(user::back_to_profile))
                .route(web::post().to(user::sign_out)),
        )
        .route(paths::JWKS, web::get().to(well_known::jwks))
        .route(paths::DISCOVERY, web::get().to(oauth::discovery))
        .service(
            web::resource(paths::AUTHORIZE)
                .route(web::get().to(oauth::authorize_get))
                .route(web::post().to(oauth::authorize_post)),
        )
        .route(paths::CONSENT, web::post().to(oauth::consent))
        .service(
            web::resource(paths::TOKEN)
                .route(web::post().to(oauth::token))
                .route(web::method(actix_web::http::Method::OPTIONS).to(oauth::preflight)),
        )
        .service(
            web::resource(paths::USERINFO)
                .route(web::get().to(oauth::userinfo))
                .route(web::post().to(oauth::userinfo))
                .route(web::method(actix_web::http::Method::OPTIONS).to(oauth::preflight)),
        )
        .service(
            web::resource(paths::REVOKE)
                .route(web::post().to(oauth::revoke))
                .route(web::method(actix_web::http::Method::OPTIONS).to(oauth::preflight)),
        )
        .route(paths::INTROSPECT, web::post().to(oauth::introspect))
        .service(
            web::resource(paths::END_SESSION)
                .route(web::get().to(oauth::end_session_get))
                .route(web::post().to(oauth::end_session_post)),
        )
        .route(paths::HEALTHZ, web::get().to(health::healthz))
        .route(paths::READYZ, web::get().to(health::readyz))
        .route(paths::DEV_OUTBOX, web::get().to(dev::outbox))
        .route(paths::DEV_SETTINGS, web::get().to(dev::settings))
        .route(
            paths::EXAMPLES_CUSTOM_FLOW,
            web::get().to(examples::custom_flow),
        )
        .route(paths::STATIC_ASSET, web::get().to(assets::serve))
        .configure(api::configure);
}
