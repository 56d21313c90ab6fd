//! Accounts: register and look up.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use switchboard_protocol::User;
use switchboard_protocol::codes::error as code;
use switchboard_protocol::rest::{AuthResponse, ErrorBody, Registration, UserLookup};

use super::extract::{ApiJson, ApiPath, ApiQuery, AuthUser, ClientIp};
use crate::app::AppState;
use crate::auth;
use crate::error::ApiError;
use crate::validate;

/// Registers an account and returns a token.
#[utoipa::path(post, path = "/v1/users", tag = "accounts", request_body = Registration,
    responses(
        (status = 201, body = AuthResponse),
        (status = 400, description = "invalid_username, invalid_password, invalid_json", body = ErrorBody),
        (status = 403, description = "registration_closed, invalid_invite", body = ErrorBody),
        (status = 409, description = "username_taken", body = ErrorBody),
        (status = 429, description = "rate_limited (with Retry-After)", body = ErrorBody),
        (status = 503, description = "unavailable: too many at once (with Retry-After)", body = ErrorBody),
    ))]
pub async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<Registration>,
) -> Result<(StatusCode, Json<AuthResponse>), ApiError> {
    let username = validate::username(&body.username)?;
    validate::password(&body.password)?;
    match state.cfg.registration.as_str() {
        "open" => {}
        "invite" => {
            let ok = body.invite.as_deref().is_some_and(|t| state.auth.invite_allows(t, &username));
            if !ok {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    code::INVALID_INVITE,
                    "sign-up needs a valid invite",
                ));
            }
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                code::REGISTRATION_CLOSED,
                "sign-up is closed on this server",
            ));
        }
    }
    if let Err(e) = state.limits.signup(ip) {
        state.metrics.throttle("signup");
        return Err(e);
    }
    let password = body.password;
    let hash = super::sessions::on_hash_pool(&state, move || auth::hash_password(&password)).await??;
    let user = state.store.create_user(&username, &hash).await?;
    let token = super::sessions::start(&state, &user).await?;
    tracing::info!(user = %user.id, "account registered");
    Ok((StatusCode::CREATED, Json(AuthResponse { user, token })))
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
