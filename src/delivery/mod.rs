//! Delivery of messages: the durable outbox, its worker and the transports (SMTP, SMS providers, dev log).
//!
//! The auth state machine queues a [`CodeMessage`] in the same transaction as the code; the
//! worker renders it from templates and sends it, retrying with backoff, never after the code
//! has expired.

mod logout;
mod mail;
mod message;
mod sms;
mod smtp_client;
mod worker;

pub use logout::{LogoutMessage, LogoutSender, LOGOUT_EVENT};
pub use mail::{DevTransport, Mailer, SmtpMailer};
pub use message::{unix_ms, CodeMessage, Purpose, RenderedEmail};
pub use sms::{
    gsm7_septets, sms_text, verify_webhook_signature, webhook_signature, OutgoingSms, SmsError,
    SmsSender, SIGNATURE_HEADER, SMS_SEGMENT_SEPTETS,
};
pub use worker::{HandedMessages, OutboxSignal, OutboxWorker};
