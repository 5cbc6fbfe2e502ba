//! The OpenID Connect provider's endpoints (docs/oidc.md): discovery, `/oauth/authorize` (the
//! hosted sign-in when there is no session; a consent form where the client asks for one),
//! `/oauth/token`, `/oauth/userinfo`, `/oauth/revoke`, `/oauth/introspect` and
//! `/oauth/end_session`. The work is `oidc::Provider`'s; these parse and answer.

mod browser;
mod endpoints;

pub use browser::{authorize_get, authorize_post, consent, end_session_get, end_session_post};
pub use endpoints::{discovery, introspect, preflight, revoke, token, userinfo};
