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

mod per_ip;
mod refusal;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web::{Bytes, BytesMut};
use actix_web::HttpMessage;
use futures_util::{Stream, StreamExt};

use per_ip::{ClientPlace, PerIp};
pub use refusal::NotAdmitted;
use refusal::UnreadBody;

use super::context::client_ip;
use super::paths;
use crate::config::HttpSettings;

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
        // The rate limits' narrow key: IPv6 addresses count per /64 (one subscriber).
        let key = crate::auth::ip_buckets(ip.as_deref(), &crate::config::LimitsConfig::default())
            .into_iter()
            .next()
            .map_or_else(|| "unknown".to_string(), |(key, _)| key);
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

#[cfg(test)]
mod tests {
    use futures_util::stream;

    use super::*;

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
}
