//! The WebSocket gateway at `GET /v1/ws`: the upgrade (origin check, frame limits, buffers sized
//! for chat) and the per-connection session.

mod conn;
mod handshake;
pub mod heartbeat;
pub mod hub;
pub mod outbox;
pub mod relay;
mod session;
mod socket;

use axum::Extension;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use switchboard_protocol::codes::error as code;

use crate::app::AppState;
use crate::error::ApiError;
use crate::listener::ConnSlot;

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
        (status = 426, description = "A WebSocket version other than 13, or a connection that cannot be upgraded", body = switchboard_protocol::rest::ErrorBody),
        (status = 503, description = "Draining", body = switchboard_protocol::rest::ErrorBody),
    )
)]
pub async fn upgrade(
    State(state): State<AppState>,
    slot: Option<Extension<ConnSlot>>,
    mut req: Request,
) -> Response {
    if state.shutdown.is_cancelled() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code::DRAINING, "server draining")
            .into_response();
    }
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !origin_allowed(&state.cfg.allowed_origins, origin) {
        return ApiError::new(StatusCode::FORBIDDEN, code::FORBIDDEN, "origin not allowed").into_response();
    }
    let accept = match handshake::accept_key(req.method(), req.headers()) {
        Ok(accept) => accept,
        Err(e) => {
            let mut res = e.into_response();
            // RFC 6455 §4.4: the version this server speaks.
            res.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            return res;
        }
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<OnUpgrade>() else {
        return ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            code::INVALID_REQUEST,
            "expected a WebSocket upgrade: this connection cannot be upgraded",
        )
        .into_response();
    };
    let max = state.cfg.max_frame_bytes;
    // Counted by the drain from this moment (not from when the upgrade completes), so an
    // upgrade that finishes while the node drains is still waited for.
    let counted = state.sessions.token();
    tokio::spawn(async move {
        match on_upgrade.await {
            // The session gets a task of its own, sized for it alone: this one (which held the
            // connection while it was upgraded) ends here instead of living as long as the
            // session. The session's future is the task (an async block around it would hold
            // it twice: once captured, once awaited). The connection's place under its
            // address's cap lasts as long as the session.
            Ok(upgraded) => match socket::Socket::upgraded(upgraded, max) {
                Some(socket) => {
                    tokio::spawn(session::run(socket, state, (counted, slot)));
                }
                None => tracing::error!("an upgraded connection that this node's listener did not make"),
            },
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    handshake::switching(accept)
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
