//! What a refused request is answered ([`NotAdmitted`], written by `finish`), and how its
//! connection is closed when its body was not read.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::web::Bytes;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};

use crate::routes::api::{decide_cors, Refusal};
use crate::routes::context::with_retry_after;
use crate::routes::pages::ErrorText;
use crate::routes::Ctx;

/// Why a request did not reach its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAdmitted {
    /// `max_in_flight_requests` are being worked on: 503, `Retry-After: 1`.
    #[error("over max_in_flight_requests")]
    Busy,
    /// Its client IP has `max_in_flight_per_ip` requests open: 429, `Retry-After: 1`.
    #[error("over max_in_flight_per_ip")]
    ClientBusy,
    /// The body did not arrive within `request_body_timeout_ms`: 408, connection closed.
    #[error("request body too slow")]
    BodyTimeout,
    /// The body could not be read (broken chunking, or the client went away): 400, connection
    /// closed.
    #[error("request body unreadable")]
    BodyUnreadable,
}

impl NotAdmitted {
    /// What the client is told to wait, in seconds, where waiting helps.
    const RETRY_AFTER_SECS: u64 = 1;

    fn retry_after(self) -> Option<u64> {
        matches!(self, Self::Busy | Self::ClientBusy).then_some(Self::RETRY_AFTER_SECS)
    }

    /// The API's answer, with its stable code.
    fn refusal(self) -> Refusal {
        match self {
            Self::Busy => Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "Temporarily unavailable.",
                "The server is busy. Nothing was lost; try again after Retry-After.",
            ),
            Self::ClientBusy => Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "Too many requests at once.",
                "This client has too many requests open at once. Nothing was lost; try again after Retry-After.",
            ),
            Self::BodyTimeout => Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "The request body arrived too slowly.",
                "The whole body must arrive within a few seconds of the headers. Send the request again.",
            ),
            Self::BodyUnreadable => Refusal::malformed("The request body could not be read."),
        }
    }

    fn page_text(self) -> ErrorText {
        match self {
            Self::Busy => ErrorText::Busy,
            Self::ClientBusy => ErrorText::TooManyAtOnce,
            Self::BodyTimeout => ErrorText::TooSlow,
            Self::BodyUnreadable => ErrorText::Unreadable,
        }
    }

    /// The answer `finish` writes: the API's JSON under `/v1/`, the error page elsewhere.
    pub(in crate::routes) fn answer(self, req: &HttpRequest) -> HttpResponse {
        let status = self.status_code();
        let api = req.path().starts_with("/v1/");
        let mut resp = match Ctx::extract(req).into_inner() {
            Ok(ctx) if api => {
                // A script of an allowed origin must be able to read the refusal and its
                // Retry-After, like every API answer.
                decide_cors(&ctx);
                self.refusal().response()
            }
            Ok(ctx) => ctx.error_page_of(status, self.page_text(), None),
            Err(_) => HttpResponse::new(status),
        };
        if let Some(secs) = self.retry_after() {
            resp = with_retry_after(resp, secs);
        }
        // The rest of the body may still be on its way (or the stream is broken): the
        // connection cannot carry another request.
        if let Some(UnreadBody(unread)) = req.extensions_mut().remove::<UnreadBody>() {
            resp.head_mut().set_connection_type(ConnectionType::Close);
            resp = resp
                .map_body(|_, body| HoldingUnread {
                    body,
                    _unread: unread,
                })
                .map_into_boxed_body();
        }
        resp
    }
}

/// The part of a refused request's body that was never read, kept with the request until its
/// answer is written.
pub(super) struct UnreadBody(Payload);

impl UnreadBody {
    /// Keeps `payload` with `req` if the request has a body.
    pub(super) fn keep(req: &mut ServiceRequest, payload: Payload) {
        if !matches!(payload, Payload::None) {
            req.extensions_mut().insert(Self(payload));
        }
    }
}

/// An answer's body that holds the request's unread body until the answer is sent. actix closes
/// the connection after an answer whose request body is still open; once that body is dropped it
/// would instead drain a chunked body to reuse the connection, and a chunked body trickled for
/// ever would hold the connection for ever.
struct HoldingUnread {
    body: BoxBody,
    _unread: Payload,
}

impl MessageBody for HoldingUnread {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

impl ResponseError for NotAdmitted {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Self::ClientBusy => StatusCode::TOO_MANY_REQUESTS,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::BodyUnreadable => StatusCode::BAD_REQUEST,
        }
    }

    /// The status alone: `finish` writes the answer ([`NotAdmitted::answer`]).
    fn error_response(&self) -> HttpResponse {
        HttpResponse::new(self.status_code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_status_and_only_waiting_helps_the_busy_ones() {
        let cases = [
            (NotAdmitted::Busy, 503, Some(1)),
            (NotAdmitted::ClientBusy, 429, Some(1)),
            (NotAdmitted::BodyTimeout, 408, None),
            (NotAdmitted::BodyUnreadable, 400, None),
        ];
        for (n, status, retry) in cases {
            assert_eq!(n.status_code().as_u16(), status, "{n:?}");
            assert_eq!(n.refusal().status.as_u16(), status, "{n:?}");
            assert_eq!(n.retry_after(), retry, "{n:?}");
        }
        assert_eq!(
            NotAdmitted::BodyTimeout.refusal().item.code,
            "request_timeout"
        );
    }
}
