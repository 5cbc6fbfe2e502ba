//! `/examples/custom-flow`: a custom sign-up and sign-in built on the JavaScript SDK
//! (`static/latchkey.js`). The page is static HTML; `static/custom-flow.js` does the work, since
//! the CSP allows no inline script.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use super::pages::CustomFlowPage;
use super::{paths, Ctx, PageError};

pub async fn custom_flow(ctx: Ctx) -> Result<HttpResponse, PageError> {
    ctx.render(
        StatusCode::OK,
        &CustomFlowPage {
            page: ctx.page_ctx("Custom flow example"),
            sdk_url: paths::asset("latchkey.js"),
            sign_in_url: paths::SIGN_IN,
        },
    )
}
