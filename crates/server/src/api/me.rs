//! The caller's own settings and blocks: who may put them into rooms, and whom they shut out.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use switchboard_protocol::rest::{BlockList, ErrorBody, InviteList, UserSettings};

use super::extract::{ApiJson, ApiPath, AuthUser};
use crate::app::AppState;
use crate::error::ApiError;
use crate::validate;

/// The caller's settings.
#[utoipa::path(get, path = "/v1/me/settings", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = UserSettings), (status = 401, body = ErrorBody)))]
pub async fn settings(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Json<UserSettings>, ApiError> {
    Ok(Json(state.store.settings(&user.id).await?))
}

/// Replaces the caller's settings. `add_policy`: `invite` (being added sends you an invite;
/// the default), `anyone` (people who may add members add you at once), `nobody`.
#[utoipa::path(put, path = "/v1/me/settings", tag = "accounts", security(("bearer" = [])),
    request_body = UserSettings,
    responses((status = 200, body = UserSettings), (status = 400, body = ErrorBody)))]
pub async fn set_settings(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<UserSettings>,
) -> Result<Json<UserSettings>, ApiError> {
    state.store.set_settings(&user.id, body).await?;
    Ok(Json(body))
}

/// Users the caller has blocked.
#[utoipa::path(get, path = "/v1/me/blocks", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = BlockList), (status = 401, body = ErrorBody)))]
pub async fn blocks(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Json<BlockList>, ApiError> {
    Ok(Json(BlockList { users: state.store.blocks(&user.id).await? }))
}

/// Blocks a user: no dms between you (sends in an existing dm are refused with `blocked`),
/// and they can no longer add or invite you; their pending invites to you are dropped.
#[utoipa::path(put, path = "/v1/me/blocks/{user_id}", tag = "accounts", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "User to block")),
    responses((status = 204, description = "Blocked"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn block(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(target): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    validate::id(&target, "user_id")?;
    state.store.block(&user.id, &target).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lifts a block.
#[utoipa::path(delete, path = "/v1/me/blocks/{user_id}", tag = "accounts", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "User to unblock")),
    responses((status = 204, description = "Unblocked")))]
pub async fn unblock(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(target): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    validate::id(&target, "user_id")?;
    state.store.unblock(&user.id, &target).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Invitations waiting for the caller: accept one with `POST /v1/rooms/{id}/join`.
#[utoipa::path(get, path = "/v1/invites", tag = "rooms", security(("bearer" = [])),
    responses((status = 200, body = InviteList), (status = 401, body = ErrorBody)))]
pub async fn invites(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Json<InviteList>, ApiError> {
    Ok(Json(InviteList { invites: state.store.invites(&user.id).await? }))
}

/// Declines an invitation.
#[utoipa::path(delete, path = "/v1/invites/{room_id}", tag = "rooms", security(("bearer" = [])),
    params(("room_id" = String, Path, description = "Room of the invite")),
    responses((status = 204, description = "Declined (or there was none)")))]
pub async fn decline(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    validate::id(&room, "room")?;
    state.store.decline_invite(&room, &user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
