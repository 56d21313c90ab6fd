//! The WebSocket gateway at `GET /v1/ws`: the upgrade (origin check, frame limits, buffers sized
//! for chat) and the per-connection session.

mod conn;
pub mod hub;
pub mod outbox;
pub mod relay;
mod session;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use switchboard_protocol::codes::error as code;

use crate::app::AppState;
use crate::error::ApiError;
use crate::listener::ConnSlot;

/// Read buffer per connection, held for the connection's life: a typical `send` frame (about
/// 200 bytes) fits in one read, and a larger frame grows it. 128 KiB is the default; 4 KiB
/// measured 2.4 KB more RSS per idle connection than 1 KiB, and 1 KiB was still a fifth of an
/// idle connection's heap (DHAT).
const READ_BUFFER: usize = 256;
/// Bytes gathered before a write is forced; batches of frames are flushed explicitly anyway.
const WRITE_BUFFER: usize = 8 * 1024;
/// Unflushed bytes allowed before writes fail (a peer that stopped reading).
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

/// Upgrades to a WebSocket session.
#[utoipa::path(
    get,
    path = "/v1/ws",
    tag = "gateway",
    description = "WebSocket upgrade. Send `hello` within 10 s; see docs/protocol.md for frames and close codes.",
    responses(
        (status = 101, description = "Switching protocols"),
        (status = 400, description = "Not a WebSocket upgrade", body = switchboard_protocol::rest::ErrorBody),
        (status = 403, description = "Origin not allowed", body = switchboard_protocol::rest::ErrorBody),
        (status = 503, description = "Draining", body = switchboard_protocol::rest::ErrorBody),
    )
)]
pub async fn upgrade(
    State(state): State<AppState>,
    slot: Option<Extension<ConnSlot>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if state.shutdown.is_cancelled() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code::DRAINING, "server draining")
            .into_response();
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !origin_allowed(&state.cfg.allowed_origins, origin) {
        return ApiError::new(StatusCode::FORBIDDEN, code::FORBIDDEN, "origin not allowed").into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return ApiError::new(
                e.status(),
                code::INVALID_REQUEST,
                format!("expected a WebSocket upgrade: {e}"),
            )
            .into_response();
        }
    };
    let max = state.cfg.max_frame_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        // The session gets a task of its own, sized for it alone: axum's upgrade task (which
        // held the socket while it was made) ends here instead of living as long as the session.
        //
        // Counted by the drain from this moment (not from when the upgrade completes), so an
        // upgrade that finishes while the node drains is still waited for.
        .on_upgrade({
            let counted = state.sessions.token();
            move |socket| {
                // The session's future is the task (an async block around it would hold it
                // twice: once captured, once awaited). The connection's place under its
                // address's cap lasts as long as the session.
                tokio::spawn(session::run(socket, state, (counted, slot)));
                std::future::ready(())
            }
        })
}

/// An empty allowlist admits any origin (tokens travel in `hello`, not cookies, so a foreign
/// page cannot ride a user's session); a non-empty one admits only its entries, and requests
/// without `Origin` (non-browser clients).
fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    match origin {
        None => true,
        Some(o) => allowed.is_empty() || allowed.iter().any(|a| a.eq_ignore_ascii_case(o)),
    }
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;

    #[test]
    fn origins_are_checked_against_the_allowlist() {
        let list = vec!["https://chat.example".to_owned()];
        assert!(origin_allowed(&list, Some("https://chat.example")));
        assert!(!origin_allowed(&list, Some("https://evil.example")));
        assert!(origin_allowed(&list, None));
        assert!(origin_allowed(&[], Some("https://anything")));
    }
}
