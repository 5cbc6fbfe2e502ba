//! Load shedding: past `max_in_flight_requests` requests at once, a request is answered
//! `503 Service Unavailable` with `Retry-After` straight away, so a server beyond its capacity
//! says so instead of letting every request wait until clients time out.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::body::BoxBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;
use futures_util::future::{ready, Either, LocalBoxFuture, Ready};

type Answer = Result<ServiceResponse<BoxBody>, actix_web::Error>;

/// Requests being worked on in this process (shared by every HTTP worker).
#[derive(Clone)]
pub struct InFlight {
    count: Arc<AtomicUsize>,
    limit: usize,
}

/// One admitted request; leaving (or being dropped) frees its place.
struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    /// `limit` 0: no limit.
    pub fn new(limit: usize) -> Self {
        Self {
            count: Arc::new(AtomicUsize::new(0)),
            limit,
        }
    }

    /// Requests in flight now (a shed one counts for the instant it takes to answer it). Read
    /// only; tests wait on it instead of on time.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    fn admit(&self) -> Option<Admitted> {
        let before = self.count.fetch_add(1, Ordering::AcqRel);
        let admitted = Admitted(self.count.clone());
        (self.limit == 0 || before < self.limit).then_some(admitted)
    }

    /// One warning a second at the most (an overloaded server must not also flood its log).
    fn log_shed(&self, path: &str) {
        static LAST_WARNED_SECS: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if LAST_WARNED_SECS.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(
                path,
                limit = self.limit,
                "overloaded: requests beyond max_in_flight_requests are answered 503"
            );
        } else {
            tracing::debug!(path, "overloaded: request shed with 503");
        }
    }

    /// The middleware body, for `App::wrap_fn`.
    pub fn call<S>(
        &self,
        req: ServiceRequest,
        service: &S,
    ) -> Either<LocalBoxFuture<'static, Answer>, Ready<Answer>>
    where
        S: Service<ServiceRequest, Response = ServiceResponse<BoxBody>, Error = actix_web::Error>,
        S::Future: 'static,
    {
        match self.admit() {
            Some(admitted) => {
                let response = service.call(req);
                Either::Left(Box::pin(async move {
                    let r = response.await;
                    drop(admitted);
                    r
                }))
            }
            None => {
                self.log_shed(req.path());
                let api = req.path().starts_with("/v1/");
                Either::Right(ready(Ok(req.into_response(shed_response(api)))))
            }
        }
    }
}

/// The JSON API gets its error shape (the stable code `service_unavailable`), pages a short text.
fn shed_response(api: bool) -> HttpResponse {
    let mut r = HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE);
    r.insert_header((header::RETRY_AFTER, 1))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    if api {
        r.content_type("application/json").body(
            serde_json::json!({"errors": [{
                "code": "service_unavailable",
                "message": "Temporarily unavailable.",
                "long_message": "The server is busy. Nothing was lost; try again after Retry-After.",
                "meta": {},
            }]})
            .to_string(),
        )
    } else {
        r.content_type("text/plain; charset=utf-8")
            .body("The server is busy. Nothing was lost: try again in a second.\n")
    }
}
