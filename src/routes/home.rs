//! `/`: to the profile when signed in, to sign-in otherwise.

use actix_web::HttpResponse;

use super::{paths, Ctx};

pub async fn index(ctx: Ctx) -> HttpResponse {
    match ctx.current_user().await {
        Ok(Some(_)) => ctx.redirect(paths::USER, vec![]),
        Ok(None) => ctx.redirect(paths::SIGN_IN, vec![]),
        Err(resp) => resp,
    }
}
