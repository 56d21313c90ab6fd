//! Accounts: register, log in, look up.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use switchboard_protocol::User;
use switchboard_protocol::codes::error as code;
use switchboard_protocol::rest::{AuthResponse, Credentials, ErrorBody, UserLookup};

use super::extract::{ApiJson, ApiPath, ApiQuery, AuthUser};
use crate::app::AppState;
use crate::auth;
use crate::error::ApiError;
use crate::validate;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)
}

/// Registers an account and returns a token.
#[utoipa::path(post, path = "/v1/users", tag = "accounts", request_body = Credentials,
    responses(
        (status = 201, body = AuthResponse),
        (status = 400, description = "invalid_username, invalid_password, invalid_json", body = ErrorBody),
        (status = 409, description = "username_taken", body = ErrorBody),
    ))]
pub async fn register(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<AuthResponse>), ApiError> {
    let username = validate::username(&body.username)?;
    validate::password(&body.password)?;
    let hash = blocking(move || auth::hash_password(&body.password)).await??;
    let user = state.store.create_user(&username, &hash).await?;
    let token = state.auth.issue(&user)?;
    tracing::info!(user = %user.id, "account registered");
    Ok((StatusCode::CREATED, Json(AuthResponse { user, token })))
}

/// Logs in with username and password.
#[utoipa::path(post, path = "/v1/sessions", tag = "accounts", request_body = Credentials,
    responses(
        (status = 200, body = AuthResponse),
        (status = 401, description = "invalid_credentials", body = ErrorBody),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Json<AuthResponse>, ApiError> {
    let refused =
        || ApiError::new(StatusCode::UNAUTHORIZED, code::INVALID_CREDENTIALS, "wrong username or password");
    let creds = match validate::username(&body.username) {
        Ok(name) => state.store.credentials(&name).await?,
        Err(_) => None,
    };
    let hash = creds.as_ref().and_then(|c| c.password_hash.clone());
    let ok = blocking(move || auth::verify_password(&body.password, hash.as_deref())).await?;
    match creds {
        Some(c) if ok => Ok(Json(AuthResponse { token: state.auth.issue(&c.user)?, user: c.user })),
        _ => Err(refused()),
    }
}

/// The caller's own account.
#[utoipa::path(get, path = "/v1/users/me", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, body = ErrorBody)))]
pub async fn me(AuthUser(user): AuthUser) -> Json<User> {
    Json(user)
}

/// Looks a user up by username (normalised as at registration), to start a dm or invite them.
/// A query, not a path segment: usernames such as `..` would not survive URL normalisation.
#[utoipa::path(get, path = "/v1/users/lookup", tag = "accounts", security(("bearer" = [])),
    params(UserLookup),
    responses((status = 200, body = User), (status = 404, body = ErrorBody)))]
pub async fn lookup(
    State(state): State<AppState>,
    AuthUser(_): AuthUser,
    ApiQuery(q): ApiQuery<UserLookup>,
) -> Result<Json<User>, ApiError> {
    // A name that could never be registered is simply not there.
    let Ok(name) = validate::username(&q.username) else { return Err(ApiError::not_found()) };
    state.store.credentials(&name).await?.map(|c| Json(c.user)).ok_or_else(ApiError::not_found)
}

/// Another user's public profile (id and username).
#[utoipa::path(get, path = "/v1/users/{id}", tag = "accounts", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = User), (status = 404, body = ErrorBody)))]
pub async fn get_user(
    State(state): State<AppState>,
    AuthUser(_): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<User>, ApiError> {
    validate::id(&id, "user")?;
    state.store.user(&id).await?.map(Json).ok_or_else(ApiError::not_found)
}
