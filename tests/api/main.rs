//! Integration tests: the real server, a real SQLite file, a real SMTP server on loopback, and a
//! browser-like client. One module per feature.

mod helpers;

mod audit;
mod bad_input;
mod browser;
mod client_api;
mod codes;
mod csrf;
mod delivery;
mod enumeration;
mod hardening;
mod instances;
mod janitor;
mod limits;
mod lockout;
mod oidc;
mod overload;
mod pages;
mod phone;
mod postgres_tls;
mod profile;
mod profile_changes;
mod redirects;
mod session_tokens;
mod sessions;
mod sign_in;
mod sign_up;
mod sms_provider;
mod sms_server;
mod smtp_server;
mod smtp_tls;
