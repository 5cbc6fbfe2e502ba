//! `/sign-up`: the identifier step, the code step and "Resend code".

use actix_web::{web, HttpResponse};

use super::flow_pages::{self, CodeForm, CodePageQuery, StartForm, StartQuery, TokenForm};
use super::{Ctx, PageError};
use crate::auth::FlowKind;

const KIND: FlowKind = FlowKind::SignUp;

pub async fn start_page(
    ctx: Ctx,
    query: web::Query<StartQuery>,
) -> Result<HttpResponse, PageError> {
    flow_pages::start_page(ctx, KIND, query).await
}

pub async fn start(ctx: Ctx, form: web::Form<StartForm>) -> Result<HttpResponse, PageError> {
    flow_pages::start(ctx, KIND, form).await
}

pub async fn code_page(
    ctx: Ctx,
    flow: web::Path<String>,
    query: web::Query<CodePageQuery>,
) -> Result<HttpResponse, PageError> {
    flow_pages::code_page(ctx, KIND, flow, query).await
}

pub async fn attempt(
    ctx: Ctx,
    flow: web::Path<String>,
    form: web::Form<CodeForm>,
) -> Result<HttpResponse, PageError> {
    flow_pages::attempt(ctx, KIND, flow, form).await
}

pub async fn resend(
    ctx: Ctx,
    flow: web::Path<String>,
    form: web::Form<TokenForm>,
) -> Result<HttpResponse, PageError> {
    flow_pages::resend(ctx, KIND, flow, form).await
}
