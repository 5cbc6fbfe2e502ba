//! `/`: to the profile when signed in, to sign-in otherwise.

use actix_web::HttpResponse;

use super::{paths, Ctx, PageError};

pub async fn index(ctx: Ctx) -> Result<HttpResponse, PageError> {
    match ctx.current_user().await? {
        Some(_) => ctx.redirect(paths::USER),
        None => ctx.redirect(paths::SIGN_IN),
    }
}
