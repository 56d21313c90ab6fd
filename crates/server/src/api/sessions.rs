//! Signing in and out: sessions that tokens belong to, ended on request everywhere at once.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use switchboard_protocol::User;
use switchboard_protocol::codes::error as code;
use switchboard_protocol::rest::{AuthResponse, Credentials, ErrorBody};

use super::extract::{ApiJson, AuthSession, ClientIp};
use crate::app::AppState;
use crate::auth;
use crate::error::ApiError;
use crate::validate;

/// Starts a session for `user` and returns its token.
pub(super) async fn start(state: &AppState, user: &User) -> Result<String, ApiError> {
    let ttl_ms = i64::try_from(state.auth.ttl().as_millis()).unwrap_or(i64::MAX);
    let expires = crate::store::now_ms().saturating_add(ttl_ms);
    let session = state.store.create_session(&user.id, expires, state.cfg.max_logins_per_user).await?;
    // Sessions pushed past the cap end like any other: their connections close too.
    for ended in session.ended {
        state.hub.end_sessions(&user.id, Some(ended)).await;
    }
    state.auth.issue(user, &session.id)
}

/// Runs password work on the hashing pool, counting the callers it turns away.
pub(super) async fn on_hash_pool<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    state.hasher.run(f).await.inspect_err(|e| {
        if e.status == StatusCode::SERVICE_UNAVAILABLE {
            state.metrics.throttle("hash_queue");
        }
    })
}

/// Logs in with username and password.
#[utoipa::path(post, path = "/v1/sessions", tag = "accounts", request_body = Credentials,
    responses(
        (status = 200, body = AuthResponse),
        (status = 401, description = "invalid_credentials", body = ErrorBody),
        (status = 429, description = "rate_limited: too many attempts or failures (with Retry-After)", body = ErrorBody),
        (status = 503, description = "unavailable: too many at once (with Retry-After)", body = ErrorBody),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Json<AuthResponse>, ApiError> {
    let refused =
        || ApiError::new(StatusCode::UNAUTHORIZED, code::INVALID_CREDENTIALS, "wrong username or password");
    // Throttled by the name as typed when it could never be registered, so that garbage does
    // not share a bucket with a real account.
    let name = validate::username(&body.username);
    let account = name.clone().unwrap_or_else(|_| body.username.chars().take(64).collect());
    if let Err(e) = state.limits.login(&account, ip) {
        state.metrics.throttle("login");
        return Err(e);
    }
    // A name that could never be registered has no account: refused without a hash (its
    // format says as much to anyone), but still counted against the address.
    let creds = match &name {
        Ok(name) => state.store.credentials(name).await?,
        Err(_) => {
            state.limits.login_result(&account, ip, false);
            return Err(refused());
        }
    };
    let hash = creds.as_ref().and_then(|c| c.password_hash.clone());
    let password = body.password;
    let ok = state.hasher.run(move || auth::verify_password(&password, hash.as_deref())).await.inspect_err(
        |e| {
            if e.status == StatusCode::SERVICE_UNAVAILABLE {
                state.metrics.throttle("hash_queue");
            }
        },
    )?;
    let ok = ok && creds.is_some();
    state.limits.login_result(&account, ip, ok);
    match creds {
        Some(c) if ok => Ok(Json(AuthResponse { token: start(&state, &c.user).await?, user: c.user })),
        _ => Err(refused()),
    }
}

/// Ends the caller's session: its token gets `401` from now on and its gateway connections
/// close (4003). A token without a session (from the operator's backend) ends all of them.
#[utoipa::path(delete, path = "/v1/sessions/current", tag = "accounts", security(("bearer" = [])),
    responses((status = 204, description = "Signed out"), (status = 401, body = ErrorBody)))]
pub async fn end_current(
    State(state): State<AppState>,
    AuthSession(v): AuthSession,
) -> Result<StatusCode, ApiError> {
    match &v.session {
        Some(sid) => state.store.end_session(&v.user.id, sid).await?,
        None => state.store.end_all_sessions(&v.user.id).await?,
    }
    state.hub.end_sessions(&v.user.id, v.session.clone()).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends every session of the caller's account, on every device.
#[utoipa::path(delete, path = "/v1/sessions", tag = "accounts", security(("bearer" = [])),
    responses((status = 204, description = "Signed out everywhere"), (status = 401, body = ErrorBody)))]
pub async fn end_all(
    State(state): State<AppState>,
    AuthSession(v): AuthSession,
) -> Result<StatusCode, ApiError> {
    state.store.end_all_sessions(&v.user.id).await?;
    state.hub.end_sessions(&v.user.id, None).await;
    Ok(StatusCode::NO_CONTENT)
}
