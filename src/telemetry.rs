//! Logging: one line per event, with the request id of the root span of each request.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber. Filter from `LATCHKEY_LOG` or `RUST_LOG` (default `info`).
pub fn init(json: bool) {
    let filter = std::env::var("LATCHKEY_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info,sqlx=warn".to_string());
    // tokio-postgres logs every bound parameter at DEBUG (addresses, keyed hashes of codes and
    // tokens): its level stays at INFO whatever the filter asks.
    let filter = EnvFilter::new(filter).add_directive(
        "tokio_postgres=info"
            .parse()
            .expect("a valid logging directive"),
    );
    let builder = fmt().with_env_filter(filter).with_target(false);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("logging was already initialised: {e}");
    }
}

/// The root span of every request: method, route *pattern* (never the query, which may carry an
/// email address, nor flow ids), request id and status.
pub struct RequestSpan;

impl tracing_actix_web::RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &actix_web::dev::ServiceRequest) -> tracing::Span {
        use actix_web::HttpMessage;
        let request_id = request
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .map(|r| r.to_string())
            .unwrap_or_default();
        let route = request
            .match_pattern()
            .unwrap_or_else(|| "(unmatched)".to_string());
        tracing::info_span!(
            "request",
            method = %request.method(),
            route = %route,
            request_id = %request_id,
            status = tracing::field::Empty,
        )
    }

    fn on_request_end<B: actix_web::body::MessageBody>(
        span: tracing::Span,
        outcome: &Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>,
    ) {
        let status = match outcome {
            Ok(response) => response.status().as_u16(),
            Err(error) => error.as_response_error().status_code().as_u16(),
        };
        span.record("status", status);
    }
}
