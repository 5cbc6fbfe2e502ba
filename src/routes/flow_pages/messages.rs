//! What the identifier and code steps tell the person, as types. The words live in the
//! templates (`partials/alert.html`, `pages/verify.html`), one arm per variant, so they can be
//! translated without touching Rust; the types say which status and `Retry-After` go with them.

use actix_web::http::StatusCode;

use crate::domain::{CodeError, IdentifierError, IdentifierKind, NameError};
use crate::routes::pages::NameField;

/// Why a step was re-rendered in place instead of moving on.
#[derive(Debug)]
pub enum FlowMessage {
    /// A field that does not parse; the domain error says why.
    Invalid(IdentifierError),
    /// Sign-up with nothing entered: the kind to enter, or `either` one.
    Missing {
        kind: IdentifierKind,
        either: bool,
    },
    /// Sign-in: no account has this identifier; `sign_up_url` starts a sign-up with it.
    NoAccount {
        kind: IdentifierKind,
        sign_up_url: String,
    },
    /// Sign-up: an account has this identifier already; `sign_in_url` signs in with it.
    Taken {
        kind: IdentifierKind,
        sign_in_url: String,
    },
    /// A rate limit refused the request (never saying which one).
    Limited {
        retry_after_secs: u64,
    },
    /// The code field does not hold a code.
    CodeFormat(CodeError),
    /// Sign-up: a name field does not parse.
    Name(NameError),
    /// Sign-up: a required name field is empty.
    NameMissing(NameField),
    Incorrect {
        remaining: u32,
    },
    TriesExhausted,
    CodeExpired,
    /// Someone created an account with the identifier while this sign-up ran.
    TakenMeanwhile,
    /// Too many wrong codes for this identifier, across codes and flows.
    Locked {
        retry_after_secs: u64,
    },
    /// So many wrong codes that sign-in stays blocked until a success from a trusted browser or
    /// an operator's reset (no `Retry-After`: waiting does not help).
    Blocked,
    /// "Resend code" within the cooldown.
    Cooldown {
        wait_secs: u64,
    },
}

impl FlowMessage {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Limited { .. } | Self::Locked { .. } | Self::Blocked | Self::Cooldown { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::TakenMeanwhile => StatusCode::CONFLICT,
            Self::Invalid(_)
            | Self::Missing { .. }
            | Self::NoAccount { .. }
            | Self::Taken { .. }
            | Self::CodeFormat(_)
            | Self::Name(_)
            | Self::NameMissing(_)
            | Self::Incorrect { .. }
            | Self::TriesExhausted
            | Self::CodeExpired => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// Seconds to wait before trying again, for the `Retry-After` header.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Limited { retry_after_secs } | Self::Locked { retry_after_secs } => {
                Some(*retry_after_secs)
            }
            Self::Cooldown { wait_secs } => Some(*wait_secs),
            _ => None,
        }
    }
}

/// Good news on the code page.
#[derive(Debug, Clone, Copy)]
pub enum FlowNotice {
    /// A sign-up step was verified; the next identifier (of this kind) got its code.
    Verified(IdentifierKind),
    /// A new code went out.
    Sent,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_messages_are_429_with_their_retry_after() {
        for (message, secs) in [
            (
                FlowMessage::Limited {
                    retry_after_secs: 7,
                },
                7,
            ),
            (
                FlowMessage::Locked {
                    retry_after_secs: 3600,
                },
                3600,
            ),
            (FlowMessage::Cooldown { wait_secs: 30 }, 30),
        ] {
            assert_eq!(message.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(message.retry_after(), Some(secs));
        }
    }

    #[test]
    fn a_refused_input_is_422_and_an_identifier_taken_meanwhile_is_409() {
        assert_eq!(
            FlowMessage::Incorrect { remaining: 2 }.status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            FlowMessage::Invalid(IdentifierError::Empty).status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(FlowMessage::TakenMeanwhile.status(), StatusCode::CONFLICT);
        assert_eq!(FlowMessage::CodeExpired.retry_after(), None);
    }
}
