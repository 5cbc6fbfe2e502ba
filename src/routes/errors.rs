//! What goes wrong on a page, as a type. Page handlers return [`PageError`] with `?` (the JSON
//! API has its own `api::ApiError`); both implement `ResponseError` for their status, and
//! [`finish`](super::finish()) writes the answer, since only it knows the request: the error
//! page names the request id, and an unexpected failure is logged with it ([`Unexpected`], the
//! one classification both faces use).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::auth::{FlowError, FlowKind};
use crate::domain::RedirectTarget;

/// A page that cannot be shown, or a post that is refused outright (not re-rendered in place).
/// `templates/pages/error.html` holds the words.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// A form post without a valid CSRF token, or from another site (403).
    #[error("form refused")]
    FormExpired,
    /// No such flow for this browser (404).
    #[error("flow not found")]
    FlowNotFound(FlowKind),
    /// The flow expired while idle (404); "Start again" keeps where it would have led.
    #[error("flow expired")]
    FlowExpired(FlowKind, Option<RedirectTarget>),
    /// The code already finished this flow, and this browser is not the one signed in (409).
    #[error("code already used")]
    CodeUsed(FlowKind),
    /// No page at this address (404).
    #[error("no such page")]
    NotFound,
    /// Anything unexpected: 500 naming the request id, or 503 with `Retry-After` when the
    /// database cannot be reached.
    #[error("unexpected failure")]
    Internal(anyhow::Error),
}

impl PageError {
    /// A flow that cannot be loaded, on the pages of `kind`.
    pub fn flow(kind: FlowKind, e: FlowError) -> Self {
        match e {
            FlowError::NotFound => Self::FlowNotFound(kind),
            FlowError::Expired { redirect } => Self::FlowExpired(kind, redirect),
            FlowError::Internal(e) => Self::Internal(e.context("loading a flow")),
        }
    }
}

impl From<anyhow::Error> for PageError {
    fn from(e: anyhow::Error) -> Self {
        Self::Internal(e)
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::FormExpired => StatusCode::FORBIDDEN,
            Self::FlowNotFound(_) | Self::FlowExpired(..) | Self::NotFound => StatusCode::NOT_FOUND,
            Self::CodeUsed(_) => StatusCode::CONFLICT,
            Self::Internal(e) => Unexpected::of(e).status(),
        }
    }

    /// The status alone: [`finish`](super::finish()) renders the page, with the request's id.
    fn error_response(&self) -> HttpResponse {
        HttpResponse::new(self.status_code())
    }
}

/// An unexpected failure, as both faces answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unexpected {
    /// The database cannot be reached (or is busy past its timeout): 503 with `Retry-After`,
    /// never a hang.
    Unavailable,
    /// Anything else: 500 naming the request id.
    Failed,
}

impl Unexpected {
    /// What a client waiting for the database is told to wait, in seconds.
    pub const RETRY_AFTER_SECS: u64 = 5;

    pub fn of(e: &anyhow::Error) -> Self {
        if crate::store::is_unavailable_error(e) {
            Self::Unavailable
        } else {
            Self::Failed
        }
    }

    /// Classifies `e` and logs it with the request id (the only place an unexpected failure of a
    /// request is logged).
    pub fn logged(e: &anyhow::Error, request_id: &str) -> Self {
        let unexpected = Self::of(e);
        match unexpected {
            Self::Unavailable => {
                tracing::error!(request_id, error = format!("{e:#}"), "database unavailable")
            }
            Self::Failed => tracing::error!(request_id, error = format!("{e:#}"), "request failed"),
        }
        unexpected
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_page_error_has_its_status() {
        let cases = [
            (PageError::FormExpired, 403),
            (PageError::FlowNotFound(FlowKind::SignIn), 404),
            (PageError::FlowExpired(FlowKind::SignUp, None), 404),
            (PageError::CodeUsed(FlowKind::SignIn), 409),
            (PageError::NotFound, 404),
            (PageError::Internal(anyhow::anyhow!("boom")), 500),
        ];
        for (e, status) in cases {
            assert_eq!(e.status_code().as_u16(), status, "{e:?}");
            assert_eq!(e.error_response().status().as_u16(), status, "{e:?}");
        }
    }

    #[test]
    fn a_flow_error_keeps_the_kind_of_flow_for_its_start_again_link() {
        assert!(matches!(
            PageError::flow(FlowKind::SignUp, FlowError::NotFound),
            PageError::FlowNotFound(FlowKind::SignUp)
        ));
        assert!(matches!(
            PageError::flow(FlowKind::SignIn, FlowError::Expired { redirect: None }),
            PageError::FlowExpired(FlowKind::SignIn, None)
        ));
    }
}
