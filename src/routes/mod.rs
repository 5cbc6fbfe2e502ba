//! HTTP face of Latchkey: the URL map, the per-request context and page helpers.
//!
//! Handlers parse input at the edge (domain types), call `auth::`, and render a page or redirect.

// Early exits carry the finished response (`Result<_, HttpResponse>`); boxing it buys nothing here.
#![allow(clippy::result_large_err)]

mod api;
mod assets;
mod context;
mod dev;
mod examples;
mod flow_pages;
mod health;
mod home;
mod overload;
mod pages;
mod sign_in;
mod sign_up;
mod user;

use std::sync::Arc;

use actix_web::web;

pub use context::Ctx;
pub use pages::not_found;

use crate::auth::Auth;
use crate::config::Settings;
use crate::session::Cookies;
use crate::store::Store;

/// Shared state of the web layer.
pub struct AppState {
    pub auth: Arc<Auth>,
    pub store: Store,
    pub settings: Settings,
    pub cookies: Cookies,
}

/// Every URL, spelled once. Templates receive URLs built from these.
pub use overload::InFlight;

pub mod paths {
    use crate::auth::FlowKind;
    use crate::domain::FlowId;

    pub const HOME: &str = "/";
    pub const SIGN_UP: &str = "/sign-up";
    pub const SIGN_IN: &str = "/sign-in";
    pub const USER: &str = "/user";
    pub const SIGN_OUT: &str = "/sign-out";
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const DEV_OUTBOX: &str = "/dev/outbox";
    pub const DEV_SETTINGS: &str = "/dev/settings";
    pub const EXAMPLES_CUSTOM_FLOW: &str = "/examples/custom-flow";
    pub const STATIC: &str = "/static";

    pub fn start(kind: FlowKind) -> &'static str {
        match kind {
            FlowKind::SignUp => SIGN_UP,
            FlowKind::SignIn => SIGN_IN,
        }
    }

    pub fn verify(kind: FlowKind, id: &FlowId) -> String {
        format!("{}/verify/{}", start(kind), id)
    }

    pub fn resend(kind: FlowKind, id: &FlowId) -> String {
        format!("{}/resend/{}", start(kind), id)
    }

    /// "Use another method" on a sign-in code page.
    pub fn factor(id: &FlowId) -> String {
        format!("{SIGN_IN}/factor/{id}")
    }

    /// The identifier step, prefilled from an existing flow ("Edit").
    pub fn edit(kind: FlowKind, id: &FlowId) -> String {
        format!("{}?flow={}", start(kind), id)
    }

    pub fn asset(name: &str) -> String {
        format!("{STATIC}/{name}")
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
            web::resource("/sign-up/verify/{flow}")
                .route(web::get().to(sign_up::code_page))
                .route(web::post().to(sign_up::attempt)),
        )
        .service(
            web::resource("/sign-up/resend/{flow}")
                .route(web::get().to(sign_up::code_page))
                .route(web::post().to(sign_up::resend)),
        )
        .service(
            web::resource(paths::SIGN_IN)
                .route(web::get().to(sign_in::start_page))
                .route(web::post().to(sign_in::start)),
        )
        .service(
            web::resource("/sign-in/verify/{flow}")
                .route(web::get().to(sign_in::code_page))
                .route(web::post().to(sign_in::attempt)),
        )
        .service(
            web::resource("/sign-in/resend/{flow}")
                .route(web::get().to(sign_in::code_page))
                .route(web::post().to(sign_in::resend)),
        )
        .service(
            web::resource("/sign-in/factor/{flow}")
                .route(web::get().to(sign_in::code_page))
                .route(web::post().to(sign_in::switch_factor)),
        )
        .route(paths::USER, web::get().to(user::page))
        .service(
            web::resource(paths::SIGN_OUT)
                .route(web::get().to(user::sign_out_get))
                .route(web::post().to(user::sign_out)),
        )
        .route(paths::HEALTHZ, web::get().to(health::healthz))
        .route(paths::READYZ, web::get().to(health::readyz))
        .route(paths::DEV_OUTBOX, web::get().to(dev::outbox))
        .route(paths::DEV_SETTINGS, web::get().to(dev::settings))
        .route(
            paths::EXAMPLES_CUSTOM_FLOW,
            web::get().to(examples::custom_flow),
        )
        .route("/static/{name}", web::get().to(assets::serve))
        .configure(api::configure);
}
