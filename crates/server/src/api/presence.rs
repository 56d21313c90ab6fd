//! Presence over REST: one user's, or many at once, for the people the caller shares a room
//! with (anyone's, when the server makes presence public).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use switchboard_protocol::Presence;
use switchboard_protocol::codes::error as code;
use switchboard_protocol::rest::{ErrorBody, PresenceList};
use utoipa::IntoParams;

use super::extract::{ApiPath, ApiQuery, AuthUser};
use crate::app::AppState;
use crate::error::ApiError;
use crate::validate;

/// Most users one batch call may ask for.
const MAX_BATCH: usize = 200;

/// `GET /v1/presence?users=a,b,c`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct PresenceQuery {
    /// Comma-separated user ids, at most 200.
    pub users: String,
}

/// Those of `users` the caller may see: themselves, and whoever shares a room with them (not
/// across a block), or every user who exists when presence is public. Unknown ids are left out
/// either way, exactly as invisible ones.
async fn visible(state: &AppState, caller: &str, users: &[String]) -> Result<Vec<String>, ApiError> {
    if state.cfg.presence_public {
        let mut known = Vec::with_capacity(users.len());
        for id in users {
            if state.store.user(id).await?.is_some() {
                known.push(id.clone());
            }
        }
        return Ok(known);
    }
    let others: Vec<String> = users.iter().filter(|u| *u != caller).cloned().collect();
    let seen = state.store.visible_users(caller, &others).await?;
    Ok(users.iter().filter(|u| *u == caller || seen.contains(u)).cloned().collect())
}

async fn read(state: &AppState, users: &[String]) -> Result<Vec<Presence>, ApiError> {
    let Some(p) = &state.presence else { return Err(ApiError::not_found()) };
    p.get(users).await.map_err(|_| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE, "presence unavailable")
    })
}

/// One user's presence; `404` for users the caller shares no room with, as for unknown ones.
#[utoipa::path(get, path = "/v1/users/{id}/presence", tag = "presence", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = Presence), (status = 404, body = ErrorBody),
        (status = 503, description = "The presence backend is down", body = ErrorBody)))]
pub async fn one(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Presence>, ApiError> {
    validate::id(&id, "user")?;
    let ids = visible(&state, &caller.id, std::slice::from_ref(&id)).await?;
    if ids.is_empty() {
        return Err(ApiError::not_found());
    }
    read(&state, &ids).await?.pop().map(Json).ok_or_else(ApiError::not_found)
}

/// Many users' presence at once (a member list, a contact list).
#[utoipa::path(get, path = "/v1/presence", tag = "presence", security(("bearer" = [])),
    params(PresenceQuery),
    responses((status = 200, body = PresenceList), (status = 400, body = ErrorBody),
        (status = 503, description = "The presence backend is down", body = ErrorBody)))]
pub async fn many(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    ApiQuery(q): ApiQuery<PresenceQuery>,
) -> Result<Json<PresenceList>, ApiError> {
    let mut users: Vec<String> = Vec::new();
    for id in q.users.split(',').filter(|s| !s.is_empty()) {
        if users.len() == MAX_BATCH {
            return Err(ApiError::bad_request(code::INVALID_REQUEST, format!("at most {MAX_BATCH} users")));
        }
        validate::id(id, "user")?;
        if !users.iter().any(|u| u == id) {
            users.push(id.to_owned());
        }
    }
    let ids = visible(&state, &caller.id, &users).await?;
    Ok(Json(PresenceList { presence: read(&state, &ids).await? }))
}
