//! Admission: what a request passes before its handler runs, so that neither slow clients nor
//! the many requests of one client can take the capacity every client shares. In order:
//!
//! 1. The probes (`/healthz`, `/readyz`) pass straight through, never counted or refused: a
//!    busy process is alive and ready, and must not be restarted or taken out of its load
//!    balancer for being busy. Neither reads a body; `/readyz`'s database read has its own
//!    timeout.
//! 2. Per client IP, at most `max_in_flight_per_ip` requests at once, from the moment the head
//!    is read until the answer, body reading included; beyond that `429` with `Retry-After`. The
//!    address is the one the rate limits see ([`client_ip`]: the socket peer, or the rightmost
//!    untrusted hop behind `trusted_proxies`, so a client cannot choose it; IPv6 per /64). One
//!    address holding slow requests therefore holds at most that many.
//! 3. The body is read here, whole, within `request_body_timeout_ms` of the head: a body that
//!    takes longer gets `408` and its connection is closed. At most `max_body_bytes` and one
//!    chunk more are read; the handlers' extractors refuse a larger body with their 413. The
//!    handler reads the buffered copy, so no handler ever waits on a client.
//! 4. Only then does the request take one of the `max_in_flight_requests` places; beyond them
//!    it is answered `503` with `Retry-After` at once (load shedding), so a server beyond its
//!    capacity says so instead of letting every request wait until clients time out. Slow
//!    clients never hold a place.
//!
//! The head has `request_head_timeout_ms` (actix's `client_request_timeout`, in `startup.rs`).
//!
//! These counts live in this process's memory, unlike the rate limits (which are in the
//! database, shared by instances and kept across restarts): they count this process's own live
//! requests, which end with it; there is nothing to share or to keep.
//!
//! A refusal is a typed error, [`NotAdmitted`], that `finish` writes like every other one: the
//! error page naming the request id, or the API's JSON with a stable code.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use futures_util::{Stream, StreamExt};

use super::api::{decide_cors, Refusal};
use super::context::{client_ip, with_retry_after};
use super::pages::ErrorText;
use super::{paths, Ctx};
use crate::config::HttpSettings;

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
    pub(super) fn answer(self, req: &HttpRequest) -> HttpResponse {
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
struct UnreadBody(Payload);

impl UnreadBody {
    /// Keeps `payload` with `req` if the request has a body.
    fn keep(req: &mut ServiceRequest, payload: Payload) {
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

/// The admission middleware and its counts, shared by every HTTP worker of the process.
#[derive(Clone)]
pub struct Admission {
    in_flight: Arc<AtomicUsize>,
    receiving: Arc<AtomicUsize>,
    per_ip: Arc<PerIp>,
    rules: Arc<Rules>,
}

struct Rules {
    /// 0: no limit.
    max_in_flight: usize,
    max_body: usize,
    body_timeout: Duration,
    trusted_proxies: Vec<ipnet::IpNet>,
    use_forwarded: bool,
}

/// Decrements its counter when dropped, however the request ends (answered, refused, or its
/// future dropped because the client went away).
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(counter: &Arc<AtomicUsize>) -> (Self, usize) {
        let before = counter.fetch_add(1, Ordering::AcqRel);
        (Self(counter.clone()), before)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(http: &HttpSettings) -> Self {
        Self {
            in_flight: Arc::new(AtomicUsize::new(0)),
            receiving: Arc::new(AtomicUsize::new(0)),
            per_ip: Arc::new(PerIp::new(http.max_in_flight_per_ip)),
            rules: Arc::new(Rules {
                max_in_flight: http.max_in_flight_requests,
                max_body: http.max_body_bytes,
                body_timeout: http.request_body_timeout,
                trusted_proxies: http.trusted_proxies.clone(),
                use_forwarded: http.trusted_proxy_forwarded,
            }),
        }
    }

    /// Requests whose handlers are running (the places of `max_in_flight_requests`; a shed one
    /// counts for the instant it takes to refuse it). Read only; tests wait on it instead of on
    /// time.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Requests whose bodies are being received (they hold no place yet). Read only, for tests.
    pub fn receiving(&self) -> usize {
        self.receiving.load(Ordering::Acquire)
    }

    /// The middleware (`actix_web::middleware::from_fn`).
    pub async fn admit(
        self,
        mut req: ServiceRequest,
        next: Next<BoxBody>,
    ) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
        if matches!(req.path(), paths::HEALTHZ | paths::READYZ) {
            return next.call(req).await;
        }
        let _client_place = match self.client_place(&req) {
            Ok(place) => place,
            Err(refused) => return Ok(self.refuse(req, refused)),
        };
        if let Err(refused) = self.receive_body(&mut req).await {
            return Ok(self.refuse(req, refused));
        }
        let (_place, before) = Counted::new(&self.in_flight);
        if self.rules.max_in_flight != 0 && before >= self.rules.max_in_flight {
            return Ok(self.refuse(req, NotAdmitted::Busy));
        }
        next.call(req).await
    }

    /// A place among its client IP's requests; `None` when the limit is off.
    fn client_place(&self, req: &ServiceRequest) -> Result<Option<ClientPlace>, NotAdmitted> {
        if self.per_ip.limit == 0 {
            return Ok(None);
        }
        let ip = client_ip(
            req.request(),
            &self.rules.trusted_proxies,
            self.rules.use_forwarded,
        )
        .map(|ip| ip.to_string());
        // The rate limits' key: IPv6 addresses count per /64 (one subscriber).
        let key = crate::auth::ip_key(ip.as_deref()).unwrap_or_else(|| "unknown".into());
        match self.per_ip.take(key) {
            Ok(place) => Ok(Some(place)),
            Err(key) => {
                tracing::debug!(client = %key, "client over max_in_flight_per_ip");
                Err(NotAdmitted::ClientBusy)
            }
        }
    }

    /// Reads the whole body within the timeout and hands the handler the buffered copy.
    async fn receive_body(&self, req: &mut ServiceRequest) -> Result<(), NotAdmitted> {
        let mut payload = req.take_payload();
        if matches!(payload, Payload::None) {
            return Ok(());
        }
        let (_receiving, _) = Counted::new(&self.receiving);
        let read = tokio::time::timeout(
            self.rules.body_timeout,
            read_body(&mut payload, self.rules.max_body),
        )
        .await;
        let refused = match read {
            Ok(Ok(body)) => {
                req.set_payload(Payload::from(body));
                return Ok(());
            }
            Ok(Err(_)) => NotAdmitted::BodyUnreadable,
            Err(_) => NotAdmitted::BodyTimeout,
        };
        UnreadBody::keep(req, payload);
        Err(refused)
    }

    /// The refusal, for `finish` to write. A body not read yet is kept until the answer is
    /// sent, so the connection is closed after it rather than read on (see `HoldingUnread`).
    fn refuse(&self, mut req: ServiceRequest, refused: NotAdmitted) -> ServiceResponse<BoxBody> {
        log_refusal(req.path(), refused, &self.rules);
        if refused == NotAdmitted::ClientBusy {
            let payload = req.take_payload();
            UnreadBody::keep(&mut req, payload);
        }
        req.error_response(refused)
    }
}

/// Reads `body` to its end, or until it holds more than `limit` bytes: a body that large is
/// refused by the handler's extractor (413), so nothing past one chunk beyond the limit is
/// read or kept.
async fn read_body<S, E>(body: &mut S, limit: usize) -> Result<Bytes, E>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut buffer = BytesMut::new();
    while let Some(chunk) = body.next().await {
        buffer.extend_from_slice(&chunk?);
        if buffer.len() > limit {
            break;
        }
    }
    Ok(buffer.freeze())
}

/// One warning a second at the most (an overloaded or attacked server must not also flood its
/// log); the rest at debug level.
fn log_refusal(path: &str, refused: NotAdmitted, rules: &Rules) {
    static LAST_WARNED_SECS: AtomicU64 = AtomicU64::new(0);
    if refused == NotAdmitted::BodyUnreadable {
        // Mostly clients that went away mid-body: nothing an operator can act on.
        tracing::debug!(path, "request body unreadable: answered 400");
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST_WARNED_SECS.swap(now, Ordering::Relaxed) == now {
        tracing::debug!(path, reason = %refused, "request not admitted");
        return;
    }
    match refused {
        NotAdmitted::Busy => tracing::warn!(
            path,
            limit = rules.max_in_flight,
            "overloaded: requests beyond max_in_flight_requests are answered 503"
        ),
        NotAdmitted::ClientBusy => tracing::warn!(
            path,
            "one client has max_in_flight_per_ip requests open: more are answered 429"
        ),
        NotAdmitted::BodyTimeout => tracing::warn!(
            path,
            timeout_ms = rules.body_timeout.as_millis() as u64,
            "a request body did not arrive within request_body_timeout_ms: answered 408"
        ),
        NotAdmitted::BodyUnreadable => {}
    }
}

/// Open requests per client key, in this process. A key is present only while it has open
/// requests, so the map holds the live clients and nothing more.
struct PerIp {
    /// 0: no limit (nothing is counted).
    limit: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// One open request of a client; dropping it frees the place.
struct ClientPlace {
    per_ip: Arc<PerIp>,
    key: String,
}

impl PerIp {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The map is consistent after any panic (each change is one statement), so a poisoned lock
    /// is used as it is.
    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for `key` if it has fewer than `limit` open requests; the key back otherwise.
    fn take(self: &Arc<Self>, key: String) -> Result<ClientPlace, String> {
        let mut open = self.open();
        let n = open.get(&key).copied().unwrap_or(0);
        if n >= self.limit {
            return Err(key);
        }
        open.insert(key.clone(), n + 1);
        Ok(ClientPlace {
            per_ip: self.clone(),
            key,
        })
    }

    #[cfg(test)]
    fn open_for(&self, key: &str) -> Option<usize> {
        self.open().get(key).copied()
    }
}

impl Drop for ClientPlace {
    fn drop(&mut self) {
        let mut open = self.per_ip.open();
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::stream;

    use super::*;

    #[test]
    fn a_client_gets_at_most_its_limit_of_places_and_a_freed_place_is_free_at_once() {
        let per_ip = Arc::new(PerIp::new(2));
        let a1 = per_ip.take("203.0.113.7".into()).unwrap();
        let _a2 = per_ip.take("203.0.113.7".into()).unwrap();
        assert!(
            per_ip.take("203.0.113.7".into()).is_err(),
            "a third is refused"
        );
        assert!(
            per_ip.take("198.51.100.9".into()).is_ok(),
            "another client is not"
        );
        drop(a1);
        assert!(per_ip.take("203.0.113.7".into()).is_ok());
    }

    #[test]
    fn a_client_without_open_requests_leaves_nothing_in_the_map() {
        let per_ip = Arc::new(PerIp::new(2));
        let place = per_ip.take("203.0.113.7".into()).unwrap();
        assert_eq!(per_ip.open_for("203.0.113.7"), Some(1));
        drop(place);
        assert_eq!(per_ip.open_for("203.0.113.7"), None);
    }

    fn chunks(parts: &[&'static str]) -> impl Stream<Item = Result<Bytes, ()>> + Unpin {
        stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p.as_bytes())))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn a_body_is_read_whole_up_to_the_limit() {
        let body = read_body(&mut chunks(&["email_", "address=", "a@b.c"]), 100).await;
        assert_eq!(body.unwrap(), Bytes::from_static(b"email_address=a@b.c"));
    }

    #[tokio::test]
    async fn reading_stops_one_chunk_past_the_limit() {
        let mut body = chunks(&["0123456789", "0123456789", "never read"]);
        let read = read_body(&mut body, 12).await.unwrap();
        assert_eq!(read.len(), 20, "over the limit: the extractor answers 413");
        assert!(body.next().await.is_some(), "the rest was left unread");
    }

    #[tokio::test]
    async fn a_broken_body_is_an_error_not_a_shorter_body() {
        let mut body = stream::iter(vec![Ok(Bytes::from_static(b"email_address=")), Err(())]);
        assert_eq!(read_body(&mut body, 100).await, Err(()));
    }

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
