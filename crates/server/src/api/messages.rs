//! Messages over REST: post (idempotent), history, edit, delete, read markers.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use switchboard_protocol::rest::{
    EditMessage, ErrorBody, HistoryQuery, MarkRead, MessageList, PostMessage, ReadState,
};
use switchboard_protocol::{Message, TimelineEvent};

use super::extract::{ApiJson, ApiPath, ApiQuery, AuthUser};
use crate::app::AppState;
use crate::error::ApiError;
use crate::gateway::hub::ReadAudience;
use crate::store::{HistoryPage, NewMessage};
use crate::validate;

/// Default and largest history page.
const PAGE_DEFAULT: u32 = 50;
const PAGE_MAX: u32 = 200;

/// Posts a message; a repeated `client_msg_id` returns the first message with 200.
#[utoipa::path(post, path = "/v1/rooms/{id}/messages", tag = "messages", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")), request_body = PostMessage,
    responses(
        (status = 201, body = Message), (status = 200, description = "Idempotent repeat", body = Message),
        (status = 400, description = "empty_body, body_too_long, invalid_request", body = ErrorBody),
        (status = 403, description = "not_member", body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "idempotency_conflict", body = ErrorBody),
        (status = 429, description = "rate_limited: the user's sends across all connections (with Retry-After)", body = ErrorBody),
    ))]
pub async fn post(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
    ApiJson(body): ApiJson<PostMessage>,
) -> Result<(StatusCode, Json<Message>), ApiError> {
    let msg = NewMessage { room, author: user.id, client_msg_id: body.client_msg_id, body: body.body };
    let appended = crate::send::send(&state, msg).await?;
    let status = if appended.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(appended.message)))
}

/// A page of history in `seq` order: after `after_seq` when given, else the latest before
/// `before_seq` (or the end).
#[utoipa::path(get, path = "/v1/rooms/{id}/messages", tag = "messages", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), HistoryQuery),
    responses((status = 200, body = MessageList), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<MessageList>, ApiError> {
    validate::id(&room, "room")?;
    let limit = q.limit.unwrap_or(PAGE_DEFAULT);
    if !(1..=PAGE_MAX).contains(&limit) {
        return Err(ApiError::bad_request(
            switchboard_protocol::codes::error::INVALID_REQUEST,
            format!("limit must be 1-{PAGE_MAX}"),
        ));
    }
    state.store.room_for(&room, &user.id).await?;
    let page = HistoryPage { before_seq: q.before_seq, after_seq: q.after_seq, limit };
    Ok(Json(MessageList { messages: state.store.history(&room, &user.id, page).await? }))
}

/// Edits a message (author only); returns the `edit` timeline event.
#[utoipa::path(patch, path = "/v1/rooms/{id}/messages/{msg_id}", tag = "messages", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), ("msg_id" = String, Path, description = "Message id")),
    request_body = EditMessage,
    responses((status = 200, body = TimelineEvent), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn edit(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath((room, id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<EditMessage>,
) -> Result<Json<TimelineEvent>, ApiError> {
    validate::id(&room, "room")?;
    validate::id(&id, "message")?;
    validate::body(&body.body, state.cfg.max_body_chars)?;
    state.limits.write(&user.id)?;
    // An edit says something new: it is screened as a new message is.
    let mut passed = state.screen.message(&room, &user.id, body.body).await?;
    passed.flagged.extend(state.screen.classify(&room, &user.id, &passed.body).await?);
    let edited = state.store.edit(&room, &user.id, &id, &passed.body).await?;
    state.screen.flagged(&room, &user.id, &id, &passed.flagged);
    Ok(Json(edited))
}

/// Deletes a message (author, or the room's owner or moderators; in a dm only the author);
/// returns the `delete` event.
#[utoipa::path(delete, path = "/v1/rooms/{id}/messages/{msg_id}", tag = "messages", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), ("msg_id" = String, Path, description = "Message id")),
    responses((status = 200, body = TimelineEvent), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath((room, id)): ApiPath<(String, String)>,
) -> Result<Json<TimelineEvent>, ApiError> {
    validate::id(&room, "room")?;
    validate::id(&id, "message")?;
    state.limits.write(&user.id)?;
    Ok(Json(state.store.delete(&room, &user.id, &id).await?))
}

/// Moves the caller's read marker and tells the room's connected members.
#[utoipa::path(post, path = "/v1/rooms/{id}/read", tag = "messages", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")), request_body = MarkRead,
    responses((status = 200, body = ReadState), (status = 404, body = ErrorBody)))]
pub async fn read(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
    ApiJson(body): ApiJson<MarkRead>,
) -> Result<Json<ReadState>, ApiError> {
    validate::id(&room, "room")?;
    let read_seq = state.store.mark_read(&room, &user.id, body.seq).await?;
    let audience = match state.store.room_for(&room, &user.id).await {
        Ok(r) => ReadAudience::of(r.kind, r.members.unwrap_or(0) > state.cfg.presence_room_limit),
        Err(_) => ReadAudience::OwnDevices,
    };
    let to_room = audience.reaches_room(state.store.as_ref(), &room, &user.id).await;
    state.hub.publish_read(&room, &user.id, read_seq, None, to_room).await;
    Ok(Json(ReadState { read_seq }))
}
