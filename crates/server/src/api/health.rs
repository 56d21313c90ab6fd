//! Liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;

use crate::app::AppState;

/// 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Up")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// What `/readyz` says: the node, and each backend.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready`, `draining` or `unavailable`.
    pub status: &'static str,
    /// This node's id (`--node-id`).
    pub node: String,
    /// `ok`, or why the store does not answer.
    pub store: String,
    /// `ok`, or why the bus does not answer.
    pub bus: String,
    /// `ok`, `unavailable` or `off`. It does not gate readiness: presence is best effort, and a
    /// Redis outage must not take every node out of the load balancer.
    pub presence: String,
}

/// 200 when the store and bus answer and the node is not draining; 503 otherwise. The body
/// names the node and says how each backend is, so a load balancer's health check and an
/// operator read the same thing.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness, description = "Ready"), (status = 503, body = Readiness, description = "Not ready")))]
pub async fn readyz(State(state): State<AppState>) -> axum::response::Response {
    let presence = async {
        match &state.presence {
            Some(p) => p.ping().await.map_or_else(|_| "unavailable", |()| "ok"),
            None => "off",
        }
    };
    let (store, bus, presence) = tokio::join!(state.store.ping(), state.bus.ping(), presence);
    let draining = state.shutdown.is_cancelled();
    let status = match (&store, &bus) {
        _ if draining => "draining",
        (Ok(()), Ok(())) => "ready",
        _ => "unavailable",
    };
    if let Err(e) = &store {
        tracing::warn!(error = %e, "store not ready");
    }
    if let Err(e) = &bus {
        tracing::warn!(error = %e, "bus not ready");
    }
    let body = Readiness {
        status,
        node: state.node.to_string(),
        // Only the kind of failure: causes (hosts, errors) stay in the logs.
        store: store.map_or_else(
            |e| if e.is_retryable() { "unavailable".into() } else { "failed".into() },
            |()| "ok".into(),
        ),
        bus: bus.map_or_else(|_| "unavailable".into(), |()| "ok".into()),
        presence: presence.into(),
    };
    let code = if status == "ready" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(body)).into_response()
}
