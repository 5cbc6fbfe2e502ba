//! `/dev/outbox`: the messages a development instance would have sent. 404 outside dev mode.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use super::pages::{not_found, DevOutboxPage, OutboxRow};
use super::Ctx;
use crate::delivery::CodeMessage;
use crate::store::from_ms;

const TIME_FORMAT: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");

pub async fn outbox(ctx: Ctx) -> HttpResponse {
    if !ctx.state.settings.dev_mode {
        return not_found(ctx).await;
    }
    let entries = match ctx.state.store.recent_messages(50).await {
        Ok(e) => e,
        Err(e) => return ctx.internal(e.context("listing the outbox")),
    };
    let keys = ctx.state.auth.keys();
    let rows = entries
        .into_iter()
        .map(|e| {
            let content = e
                .payload
                .as_deref()
                .and_then(|p| CodeMessage::open(keys, p));
            OutboxRow {
                created: from_ms(e.created_at)
                    .format(TIME_FORMAT)
                    .unwrap_or_default(),
                to: content
                    .as_ref()
                    .map(|c| c.to.clone())
                    .unwrap_or(e.recipient_masked),
                code: content
                    .as_ref()
                    .map(|c| c.code.clone())
                    .unwrap_or_else(|| "(erased)".into()),
                subject: content
                    .as_ref()
                    .map(|c| format!("{} is your verification code", c.code))
                    .unwrap_or_default(),
                status: e.status,
                attempts: e.attempts,
                last_error: e.last_error.unwrap_or_default(),
            }
        })
        .collect();
    ctx.render(
        StatusCode::OK,
        &DevOutboxPage {
            page: ctx.page_ctx("Development outbox"),
            rows,
        },
    )
}
