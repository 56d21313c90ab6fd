//! Liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use switchboard_protocol::codes::error as code;

use crate::app::AppState;
use crate::error::ApiError;

/// 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Up")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// 200 when the store and bus answer and the node is not draining; 503 otherwise.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready"), (status = 503, body = switchboard_protocol::rest::ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> axum::response::Response {
    if state.shutdown.is_cancelled() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code::DRAINING, "draining").into_response();
    }
    if let Err(e) = state.store.ping().await {
        return ApiError::from(e).into_response();
    }
    if let Err(e) = state.bus.ping().await {
        tracing::warn!(error = %e, "bus not ready");
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE, "bus unavailable")
            .into_response();
    }
    "ready".into_response()
}
