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
        EmailAddressObject,
        PhoneNumberObject,
        IdentifierVerification,
        CreateSignUp,
        PrepareVerification,
        AttemptCode,
        CreateSignIn,
        PrepareFirstFactor,
        Strategy,
        ErrorsBody,
        ErrorItem,
        ErrorMeta
    ))
)]
pub struct ApiDoc;

pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(ApiDoc::openapi().to_pretty_json().unwrap_or_default())
}
