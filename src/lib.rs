//! Latchkey: a self-hosted accounts server for passwordless sign-up and sign-in with one-time codes.
//!
//! The crate is a library with a thin binary (`src/main.rs`). Tests and the binary both start the
//! server through [`startup::Application::build`].

pub mod auth;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod delivery;
pub mod domain;
pub mod oidc;
pub mod routes;
pub mod session;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tokens;
