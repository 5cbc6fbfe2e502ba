//! Probes for load balancers: `/healthz` (the process answers) and `/readyz` (the database
//! answers and its migrations are applied).

use actix_web::{web, HttpResponse};

use super::AppState;

/// Says so when test mode is on outside dev mode, so a monitor can catch it.
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let s = &state.settings;
    let body = if s.auth.test_mode.is_on() && !s.dev_mode {
        "ok (TEST MODE IS ON: test identifiers accept the code 424242)"
    } else {
        "ok"
    };
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(body)
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let ready = tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ready())
        .await
        .unwrap_or(false);
    if ready {
        HttpResponse::Ok().json(serde_json::json!({"status": "ready", "database": "ok"}))
    } else {
        HttpResponse::ServiceUnavailable().json(
            serde_json::json!({"status": "unavailable", "database": "unreachable or not migrated"}),
        )
    }
}
