//! Logging: one line per event, with the request id of the root span of each request.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber. Filter from `LATCHKEY_LOG` or `RUST_LOG` (default `info`).
pub fn init(json: bool) {
    let filter = std::env::var("LATCHKEY_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info,sqlx=warn".to_string());
    let builder = fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_target(false);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("logging was already initialised: {e}");
    }
}
