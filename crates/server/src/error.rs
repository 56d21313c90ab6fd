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
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    /// 400 with a specific code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
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
        ServerFrame::Error { code: self.code.to_owned(), message: self.message.clone(), client_msg_id, room }
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
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_owned(), message: self.message } };
        (self.status, axum::Json(body)).into_response()
    }
}
