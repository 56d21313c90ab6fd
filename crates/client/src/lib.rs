//! # Switchboard client SDK
//!
//! - [`Client`]: the REST API (accounts, rooms, history, posting).
//! - [`Session`]: a WebSocket session that says `hello`, tracks the last `seq` seen per room,
//!   reconnects and resumes with `since` after a drop, and resends unacknowledged sends with
//!   their original `client_msg_id` so that a retry never makes a second message.
//!
//! Used by the server's integration tests and the load generator; small enough to read as a
//! reference for clients in other languages.

mod rest;
mod session;

pub use rest::Client;
pub use session::{Ack, Session, SessionConfig, SessionEvent};
pub use switchboard_protocol as protocol;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused the request with a coded error.
    #[error("{status}: {code}: {message}")]
    Api {
        /// HTTP status, or 0 for a WebSocket `error` frame.
        status: u16,
        /// Stable error code.
        code: String,
        /// Human text.
        message: String,
        /// When a throttle or overload says to retry (ms).
        retry_after_ms: Option<u64>,
    },
    /// HTTP transport failure.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// WebSocket transport failure.
    #[error("websocket: {0}")]
    WebSocket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    /// The server closed the session with this code and will not be reconnected to.
    #[error("closed by server: {0} {1}")]
    Closed(u16, String),
    /// A frame or body did not decode.
    #[error("decode: {0}")]
    Decode(#[from] serde_json::Error),
    /// The session ended before an answer arrived.
    #[error("session ended")]
    Ended,
}

impl ClientError {
    /// The server's error code, if this is a coded refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status of a REST refusal (0 for a WebSocket `error` frame).
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How long the server asked to wait before retrying, if it did.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            ClientError::Api { retry_after_ms, .. } => *retry_after_ms,
            _ => None,
        }
    }
}
