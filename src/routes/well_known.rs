//! `/.well-known/jwks.json`: the public keys that verify session tokens (RFC 7517).

use actix_web::{web, HttpResponse};

use super::AppState;

pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(state.signing.get().jwks().to_string())
}
