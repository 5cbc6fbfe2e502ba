//! `GET /v1/openapi.json`: the API described from the handler and object types.

use actix_web::HttpResponse;
use utoipa::OpenApi;

use super::errors::{ErrorItem, ErrorMeta, ErrorsBody};
use super::objects::*;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Latchkey custom-flow API",
        description = "Sign-up and sign-in with one-time codes (Clerk-shaped SignUp / SignIn objects). See docs/api.md."
    ),
    paths(
        super::sign_ups::create,
        super::sign_ups::show,
        super::sign_ups::prepare,
        super::sign_ups::attempt,
        super::sign_ins::create,
        super::sign_ins::show,
        super::sign_ins::prepare,
        super::sign_ins::attempt,
        super::client::show,
        super::client::end_session,
        super::client::issue_token,
        super::backend::verify,
        super::backend::user,
        super::me::show,
        super::me::update,
        super::me::sessions,
        super::me::revoke_session,
        super::me::delete,
        super::me::start_reverification,
        super::me::attempt_reverification,
        super::me_identifiers::create,
        super::me_identifiers::prepare,
        super::me_identifiers::attempt,
        super::me_identifiers::delete,
    ),
    components(schemas(
        SignUp,
        SignUpVerifications,
        Verification,
        SignIn,
        FirstFactor,
        ClientObject,
        Session,
        User,
        UpdateUser,
        MeSession,
        SessionActivity,
        super::me::Revoked,
        super::me::Deleted,
        super::me::StartReverification,
        super::me::AttemptReverification,
        super::me::Reverification,
        super::objects::IdentifierObject,
        super::me_identifiers::CreateIdentifier,
        super::me_identifiers::IdentifierCode,
        super::me_identifiers::DeletedIdentifier,
        EmailAddressObject,
        PhoneNumberObject,
        IdentifierVerification,
        CreateSignUp,
        PrepareVerification,
        AttemptCode,
        CreateSignIn,
        PrepareFirstFactor,
        Strategy,
        SessionToken,
        VerifiedToken,
        VerifyToken,
        ErrorsBody,
        ErrorItem,
        ErrorMeta
    ))
)]
pub struct ApiDoc;

/// The methods the API takes at `path` (from this document, which a test keeps equal to the
/// routes), with `OPTIONS` (CORS preflight); empty for a path that is no endpoint.
pub fn methods_of(path: &str) -> Vec<&'static str> {
    use std::sync::OnceLock;
    static ENDPOINTS: OnceLock<Vec<(actix_web::dev::ResourceDef, Vec<&'static str>)>> =
        OnceLock::new();
    let endpoints = ENDPOINTS.get_or_init(|| {
        let doc = ApiDoc::openapi();
        let mut out: Vec<_> = doc
            .paths
            .paths
            .iter()
            .map(|(pattern, item)| {
                let methods = [
                    ("GET", item.get.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("DELETE", item.delete.is_some()),
                ]
                .into_iter()
                .filter_map(|(m, on)| on.then_some(m))
                .collect();
                // The same patterns the URL map mounts (`{kind}` limited as there).
                let mounted = super::identifiers_pattern(pattern);
                (actix_web::dev::ResourceDef::new(mounted.as_str()), methods)
            })
            .collect();
        out.push((
            actix_web::dev::ResourceDef::new(crate::routes::paths::api::OPENAPI),
            vec!["GET"],
        ));
        out
    });
    let mut methods: Vec<&'static str> = endpoints
        .iter()
        .filter(|(def, _)| def.is_match(path))
        .flat_map(|(_, m)| m.iter().copied())
        .collect();
    if !methods.is_empty() {
        methods.push("OPTIONS");
    }
    methods
}

pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(ApiDoc::openapi().to_pretty_json().unwrap_or_default())
}
