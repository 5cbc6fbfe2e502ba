//! Error conventions.
//!
//! Expected outcomes of the state machine are enum variants (`auth::AttemptError`,
//! `auth::StartError`, …) that the pages match to render an inline message. Unexpected failures
//! are `anyhow::Error` with context; `routes::Ctx::internal` logs them with the request id and
//! shows a 500 page that names the id. There is deliberately no catch-all error type.

/// Re-exported so modules name one error type for unexpected failures.
pub type Unexpected = anyhow::Error;
