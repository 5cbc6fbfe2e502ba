//! Structured API errors: `{"errors": [{code, message, long_message, meta}]}` with a stable code.
//! Handlers return [`ApiError`] with `?`: an expected [`Refusal`], or an unexpected failure that
//! `routes::finish` answers with the request id (the same classification as the pages').

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{AttemptError, FlowError, ResendError, StartError};
use crate::routes::errors::Unexpected;

/// One error of an API response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorItem {
    /// Stable, snake_case: match on this.
    pub code: &'static str,
    /// A short sentence for people.
    pub message: String,
    /// A longer explanation.
    pub long_message: String,
    pub meta: ErrorMeta,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ErrorMeta {
    /// The request field the error is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param_name: Option<String>,
    /// `form_code_incorrect`: tries left on this code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts_remaining: Option<u32>,
    /// `internal_error`: the id of the log line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorsBody {
    pub errors: Vec<ErrorItem>,
}

/// What an API handler answers instead of its object.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// An expected outcome with its stable code.
    #[error("{}", .0.item.code)]
    Refused(Box<Refusal>),
    /// Anything unexpected: 500 naming the request id, or 503 with `Retry-After` when the
    /// database cannot be reached. Logged once, with the request id, by `routes::finish`.
    #[error("unexpected failure")]
    Internal(anyhow::Error),
}

impl ApiError {
    /// The JSON answer; an unexpected failure is logged here with `request_id` and named by it.
    pub(in crate::routes) fn answer(&self, request_id: &str) -> HttpResponse {
        match self {
            Self::Refused(r) => r.response(),
            Self::Internal(e) => match Unexpected::logged(e, request_id) {
                Unexpected::Unavailable => Refusal::unavailable().response(),
                Unexpected::Failed => Refusal::internal(request_id).response(),
            },
        }
    }

    /// A flow that could not start; `param` is the field the identifier came in.
    pub fn from_start(e: StartError, param: &str) -> Self {
        match e {
            StartError::IdentifierNotFound => Refusal::unprocessable(
                "form_identifier_not_found",
                "No account has this identifier.",
                "Sign up first, or check the email address or phone number.",
            )
            .param(param)
            .into(),
            StartError::IdentifierTaken(kind) => Refusal::unprocessable(
                "form_identifier_exists",
                "An account with this identifier already exists.",
                "Sign in instead.",
            )
            .param(super::objects::field_name(kind))
            .into(),
            StartError::AlreadyYours => Refusal::unprocessable(
                "form_identifier_exists",
                "This is already one of your identifiers.",
                "The account already has this email address or phone number.",
            )
            .param(param)
            .into(),
            StartError::Limited { retry_after_secs } => limited(retry_after_secs).into(),
            StartError::Internal(e) => Self::Internal(e),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Refused(r) => r.status,
            Self::Internal(e) => Unexpected::of(e).status(),
        }
    }

    /// A refusal's whole answer; an unexpected failure's status alone (`routes::finish` writes
    /// it with the request id).
    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Refused(r) => r.response(),
            Self::Internal(_) => HttpResponse::new(self.status_code()),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        Self::Refused(Box::new(r))
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::Internal(e)
    }
}

/// An expected refusal: its status, stable code and words.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    pub item: ErrorItem,
    pub retry_after: Option<u64>,
    /// The methods a known endpoint takes (`Allow`, with 405).
    pub allow: Option<String>,
}

impl Refusal {
    pub fn new(status: StatusCode, code: &'static str, message: &str, long_message: &str) -> Self {
        Self {
            status,
            item: ErrorItem {
                code,
                message: message.to_string(),
                long_message: long_message.to_string(),
                meta: ErrorMeta::default(),
            },
            retry_after: None,
            allow: None,
        }
    }

    /// The JSON answer, with `Retry-After` when the refusal says to wait and `Allow` with 405.
    pub fn response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            resp.insert_header((header::RETRY_AFTER, secs.max(1)));
        }
        if let Some(allow) = &self.allow {
            resp.insert_header((header::ALLOW, allow.as_str()));
        }
        resp.json(self.body())
    }

    pub fn param(mut self, name: &str) -> Self {
        self.item.meta.param_name = Some(name.to_string());
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    pub fn body(&self) -> ErrorsBody {
        ErrorsBody {
            errors: vec![self.item.clone()],
        }
    }

    pub fn unprocessable(code: &'static str, message: &str, long_message: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            message,
            long_message,
        )
    }

    pub fn malformed(long_message: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed_request",
            "The request body is not valid JSON.",
            long_message,
        )
    }

    /// A field that does not parse (an address, a number, a code, an id).
    pub fn format_invalid(param: &str, message: &str) -> Self {
        Self::unprocessable(
            "form_param_format_invalid",
            message,
            &format!("`{param}` is not valid: {message}"),
        )
        .param(param)
    }

    pub fn value_invalid(param: &str, long_message: &str) -> Self {
        Self::unprocessable(
            "form_param_value_invalid",
            "This value is not accepted here.",
            long_message,
        )
        .param(param)
    }

    pub fn missing(param: &str) -> Self {
        Self::unprocessable(
            "form_param_missing",
            "A required field is missing.",
            &format!("`{param}` is required."),
        )
        .param(param)
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "resource_not_found",
            "Not found.",
            "There is no such sign-up, sign-in or session for this client (they are bound to the client that created them).",
        )
    }

    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "Temporarily unavailable.",
            "The database is busy or unreachable. Nothing was lost; try again shortly.",
        )
        .retry_after(Unexpected::RETRY_AFTER_SECS)
    }

    pub fn internal(request_id: &str) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Something went wrong.",
            "The request could not be completed. Give the request id to the operator.",
        );
        e.item.meta.request_id = Some(request_id.to_string());
        e
    }

    pub fn too_many(secs: u64, message: &str) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            message,
            &format!("Try again in {secs} seconds."),
        )
        .retry_after(secs)
    }

    /// Classifies a body that serde could not read.
    pub fn from_json(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        let text = e.to_string();
        let quoted = |prefix: &str| {
            text.split_once(prefix)
                .and_then(|(_, rest)| rest.split('`').next())
                .map(str::to_string)
        };
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                Self::malformed("The body must be a JSON object.")
            }
            Category::Data => {
                if let Some(field) = quoted("unknown field `") {
                    Self::new(
                        StatusCode::BAD_REQUEST,
                        "form_param_unknown",
                        "This request has a field the endpoint does not take.",
                        &format!("`{field}` is not a parameter of this endpoint."),
                    )
                    .param(&field)
                } else if let Some(field) = quoted("missing field `") {
                    Self::missing(&field)
                } else if text.contains("unknown variant") {
                    // The only enum the API takes is a strategy.
                    Self::value_invalid(
                        "strategy",
                        "`strategy` must be \"email_code\" or \"phone_code\".",
                    )
                } else {
                    Self::new(
                        StatusCode::BAD_REQUEST,
                        "malformed_request",
                        "The request body does not have the expected shape.",
                        "Fields must be JSON strings (see /v1/openapi.json).",
                    )
                }
            }
        }
    }
}

impl From<FlowError> for ApiError {
    fn from(e: FlowError) -> Self {
        match e {
            FlowError::NotFound | FlowError::Expired { .. } => Refusal::not_found().into(),
            FlowError::Internal(e) => Self::Internal(e),
        }
    }
}

/// Every rate-limit refusal looks the same: which bucket fired is not said.
fn limited(secs: u64) -> Refusal {
    Refusal::too_many(secs, "Too many requests. Try again later.")
}

impl From<ResendError> for ApiError {
    fn from(e: ResendError) -> Self {
        match e {
            ResendError::Flow(e) => e.into(),
            ResendError::Cooldown { wait_secs, .. } => {
                Refusal::too_many(wait_secs, "A code was sent moments ago. Try again later.").into()
            }
            ResendError::Completed | ResendError::AlreadyVerified => Refusal::new(
                StatusCode::CONFLICT,
                "verification_already_verified",
                "This is already verified.",
                "Nothing to send: this verification (or the whole flow) is complete.",
            )
            .into(),
            ResendError::Limited { retry_after_secs } => limited(retry_after_secs).into(),
            ResendError::UnknownTarget => Refusal::value_invalid(
                "strategy",
                "This flow has nothing to verify with that strategy and identifier.",
            )
            .into(),
        }
    }
}

impl From<AttemptError> for ApiError {
    fn from(e: AttemptError) -> Self {
        let refusal = match e {
            AttemptError::Flow(e) => return e.into(),
            AttemptError::Incorrect { remaining } => {
                let mut e = Refusal::unprocessable(
                    "form_code_incorrect",
                    "Incorrect code.",
                    &format!("The code is wrong; {remaining} tries left on this code."),
                )
                .param("code");
                e.item.meta.attempts_remaining = Some(remaining);
                e
            }
            AttemptError::TriesExhausted => Refusal::unprocessable(
                "verification_failed",
                "Too many incorrect tries.",
                "This code no longer works: prepare a new one.",
            )
            .param("code"),
            AttemptError::CodeExpired => Refusal::unprocessable(
                "verification_expired",
                "This code has expired.",
                "Prepare a new code.",
            )
            .param("code"),
            AttemptError::AlreadyUsed | AttemptError::StepDone => Refusal::new(
                StatusCode::CONFLICT,
                "verification_already_verified",
                "This code was already used.",
                "The verification is complete; read the object for its state.",
            ),
            AttemptError::NotPrepared => Refusal::unprocessable(
                "verification_not_prepared",
                "No code was sent for this strategy.",
                "Call prepare first.",
            )
            .param("strategy"),
            AttemptError::IdentifierTaken => Refusal::unprocessable(
                "form_identifier_exists",
                "An account with this identifier was created meanwhile.",
                "Sign in instead.",
            ),
            AttemptError::Limited { retry_after_secs } => limited(retry_after_secs),
            AttemptError::Locked { retry_after_secs } => Refusal::too_many(
                retry_after_secs,
                "Too many incorrect codes. Try again later.",
            ),
            AttemptError::Blocked => Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "Too many incorrect codes. Sign in from a browser you have used before.",
                "Sign-in with this identifier stays blocked until a sign-in from a trusted browser succeeds or an administrator unblocks it.",
            ),
        };
        refusal.into()
    }
}
