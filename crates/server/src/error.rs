//! The one client-facing error: a stable code, an HTTP status and a human message. REST handlers
//! return it as `{"error":{"code","message"}}`; the gateway sends it as an `error` frame. Internal
//! detail goes to the logs, never to clients.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use switchboard_protocol::ServerFrame;
use switchboard_protocol::codes::error as code;
use switchboard_protocol::rest::{ErrorBody, ErrorDetail};

use crate::store::StoreError;

/// A refusal to show a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status for REST.
    pub status: StatusCode,
    /// Stable code from `switchboard_protocol::codes::error`.
    pub code: &'static str,
    /// Human text, safe to show.
    pub message: String,
    /// When the client may retry (throttles and overload): `Retry-After` on REST,
    /// `retry_after_ms` in bodies and frames.
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after: None }
    }

    /// The same error, telling the client when to retry.
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// `429 rate_limited`, retry after `wait`.
    pub fn rate_limited(wait: std::time::Duration, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, code::RATE_LIMITED, message).retry_after(wait)
    }

    fn retry_after_ms(&self) -> Option<u64> {
        self.retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1))
    }

    /// 400 with a specific code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 422: well-formed, but refused for what it says (filters, mentions).
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, code::UNAUTHORIZED, message)
    }

    /// 404.
    pub fn not_found() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code::NOT_FOUND, "not found")
    }

    /// 500, logging the cause.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code::INTERNAL, "internal error")
    }

    /// The same error as a WebSocket `error` frame.
    pub fn to_frame(&self, client_msg_id: Option<String>, room: Option<String>) -> ServerFrame {
        ServerFrame::Error {
            code: self.code.to_owned(),
            message: self.message.clone(),
            client_msg_id,
            room,
            retry_after_ms: self.retry_after_ms(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found(),
            StoreError::NotMember => {
                ApiError::new(StatusCode::FORBIDDEN, code::NOT_MEMBER, "join the room first")
            }
            StoreError::Forbidden => ApiError::new(StatusCode::FORBIDDEN, code::FORBIDDEN, "not allowed"),
            StoreError::Denied(m) => ApiError::new(StatusCode::FORBIDDEN, code::FORBIDDEN, m),
            StoreError::Sanctioned { kind, until_ms } => {
                let (status, code, message) = match kind {
                    "muted" => (StatusCode::FORBIDDEN, code::MUTED, "you are muted in this room"),
                    "slow_mode" => (
                        StatusCode::TOO_MANY_REQUESTS,
                        code::SLOW_MODE,
                        "slow mode: wait before sending again in this room",
                    ),
                    _ => (StatusCode::FORBIDDEN, code::BANNED, "banned from this room"),
                };
                let e = ApiError::new(status, code, message);
                match until_ms {
                    Some(until) => {
                        let left = u64::try_from(until - crate::store::now_ms()).unwrap_or(0);
                        e.retry_after(std::time::Duration::from_millis(left.max(1)))
                    }
                    None => e,
                }
            }
            StoreError::Blocked => {
                ApiError::new(StatusCode::FORBIDDEN, code::BLOCKED, "one of you has blocked the other")
            }
            StoreError::NotAccepting => ApiError::new(
                StatusCode::FORBIDDEN,
                code::NOT_ACCEPTING,
                "this user does not accept being added to rooms",
            ),
            StoreError::UsernameTaken => {
                ApiError::new(StatusCode::CONFLICT, code::USERNAME_TAKEN, "username already taken")
            }
            StoreError::IdempotencyConflict => ApiError::new(
                StatusCode::CONFLICT,
                code::IDEMPOTENCY_CONFLICT,
                "client_msg_id already used in another room",
            ),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, code::CONFLICT, m),
            StoreError::Invalid(m) => ApiError::bad_request(code::INVALID_REQUEST, m),
            StoreError::Unavailable(cause) => {
                tracing::error!(error = %cause, "store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    code::UNAVAILABLE,
                    "storage unavailable; retry (nothing was saved)",
                )
            }
            StoreError::Fatal(cause) => {
                tracing::error!(error = %cause, "store failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    code::INTERNAL,
                    "storage failed (nothing was saved); the operator has been told",
                )
            }
            StoreError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                code::DRAINING,
                "server is shutting down; retry",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after_ms = self.retry_after_ms();
        let body = ErrorBody {
            error: ErrorDetail { code: self.code.to_owned(), message: self.message, retry_after_ms },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(ms) = retry_after_ms {
            // Whole seconds, rounded up: a client that waits this long is let through.
            let secs = ms.div_ceil(1000).max(1);
            if let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        response
    }
}
