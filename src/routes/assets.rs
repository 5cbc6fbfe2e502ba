//! Static assets, embedded in the binary so a deployment is one file.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use super::PageError;

const ASSETS: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../static/style.css"),
    ),
    (
        "flow.js",
        "text/javascript; charset=utf-8",
        include_str!("../../static/flow.js"),
    ),
    (
        "latchkey.js",
        "text/javascript; charset=utf-8",
        include_str!("../../static/latchkey.js"),
    ),
    (
        "custom-flow.js",
        "text/javascript; charset=utf-8",
        include_str!("../../static/custom-flow.js"),
    ),
];

pub async fn serve(name: web::Path<String>) -> Result<HttpResponse, PageError> {
    match ASSETS.iter().find(|(n, _, _)| *n == name.as_str()) {
        Some((_, content_type, body)) => Ok(HttpResponse::Ok()
            .content_type(*content_type)
            .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
            .body(*body)),
        None => Err(PageError::NotFound),
    }
}
