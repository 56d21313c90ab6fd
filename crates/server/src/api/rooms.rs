//! Rooms and membership.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use switchboard_protocol::codes::error as code;
use switchboard_protocol::rest::{
    AddMember, CreateRoom, ErrorBody, Invited, Member, MemberList, PublicRoomsQuery, RoomList,
};
use switchboard_protocol::{Room, RoomKind, ServerFrame};

use super::extract::{ApiJson, ApiPath, ApiQuery, AuthUser};
use crate::app::AppState;
use crate::error::ApiError;
use crate::store::{AddOutcome, NewRoom};
use crate::validate;

/// Creates a room (the caller becomes owner; `members` are added or invited, as each one's
/// `add_policy` says), or returns the existing dm with that user (200). A dm has no owner.
#[utoipa::path(post, path = "/v1/rooms", tag = "rooms", security(("bearer" = [])), request_body = CreateRoom,
    responses(
        (status = 201, body = Room), (status = 200, description = "The existing dm", body = Room),
        (status = 400, body = ErrorBody), (status = 404, description = "A member does not exist", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<CreateRoom>,
) -> Result<(StatusCode, Json<Room>), ApiError> {
    let name = validate::room_name(&body.name, body.kind == RoomKind::Dm)?;
    if body.members.len() > 1000 {
        return Err(ApiError::bad_request(
            switchboard_protocol::codes::error::INVALID_REQUEST,
            "at most 1000 initial members",
        ));
    }
    for m in &body.members {
        validate::id(m, "member")?;
    }
    state.limits.write(&user.id)?;
    let created = state
        .store
        .create_room(NewRoom { creator: user.id, name, kind: body.kind, members: body.members })
        .await?;
    for (to, invite) in created.invited {
        state.hub.publish_to_user(&to, &ServerFrame::Invite { invite }).await;
    }
    let status = if created.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(created.room)))
}

/// The caller's rooms, with unread counts.
#[utoipa::path(get, path = "/v1/rooms", tag = "rooms", security(("bearer" = [])),
    responses((status = 200, body = RoomList), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Json<RoomList>, ApiError> {
    let mut rooms = state.store.rooms_for(&user.id).await?;
    for r in rooms.iter_mut() {
        with_online(&state, r).await;
    }
    Ok(Json(RoomList { rooms }))
}

/// A large room's online count, for its members (counting costs a read of its member list, so
/// a passer-by of a public room cannot make the node do it at will).
async fn with_online(state: &AppState, room: &mut Room) {
    if let Some(p) = &state.presence
        && room.role.is_some()
        && room.members.unwrap_or(0) > state.cfg.presence_room_limit
    {
        room.online = p.online_count(&room.id).await;
    }
}

/// Public rooms by name, so people can find rooms to join; the caller's own carry their role
/// and read state.
#[utoipa::path(get, path = "/v1/rooms/public", tag = "rooms", security(("bearer" = [])),
    params(PublicRoomsQuery),
    responses((status = 200, body = RoomList), (status = 400, body = ErrorBody)))]
pub async fn public(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiQuery(q): ApiQuery<PublicRoomsQuery>,
) -> Result<Json<RoomList>, ApiError> {
    const MAX: u32 = 500;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX).contains(&limit) {
        return Err(ApiError::bad_request(code::INVALID_REQUEST, format!("limit must be 1-{MAX}")));
    }
    Ok(Json(RoomList { rooms: state.store.public_rooms(&user.id, limit).await? }))
}

/// One room: any public room, or one the caller is a member of.
#[utoipa::path(get, path = "/v1/rooms/{id}", tag = "rooms", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")),
    responses((status = 200, body = Room), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Room>, ApiError> {
    validate::id(&id, "room")?;
    let mut room = state.store.room_for(&id, &user.id).await?;
    with_online(&state, &mut room).await;
    Ok(Json(room))
}

/// Joins a public room, or accepts an invite to any room (a no-op for a member).
#[utoipa::path(post, path = "/v1/rooms/{id}/join", tag = "rooms", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")),
    responses((status = 200, body = Room), (status = 403, description = "Removed by a moderator", body = ErrorBody),
        (status = 404, description = "No such public room or invite", body = ErrorBody)))]
pub async fn join(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Room>, ApiError> {
    validate::id(&id, "room")?;
    state.limits.write(&user.id)?;
    // Only a join that makes a member counts against the room's join budget (which the store
    // then checks is a public room's).
    if state.store.role(&id, &user.id).await?.is_none() {
        state.quotas.join(&id, &user.id).await?;
    }
    state.store.join(&id, &user.id).await?;
    Ok(Json(state.store.room_for(&id, &user.id).await?))
}

/// Current members of a room the caller can see.
#[utoipa::path(get, path = "/v1/rooms/{id}/members", tag = "rooms", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")),
    responses((status = 200, body = MemberList), (status = 404, body = ErrorBody)))]
pub async fn members(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<MemberList>, ApiError> {
    validate::id(&id, "room")?;
    let room = state.store.room_for(&id, &user.id).await?;
    // Read markers only where they are shown live (to members; never across a blocked dm).
    let shown = room.role.is_some()
        && match room.kind {
            RoomKind::Dm => !state.store.dm_blocked(&id, &user.id).await.unwrap_or(true),
            _ => room.members.unwrap_or(0) <= state.cfg.presence_room_limit,
        };
    let members = state
        .store
        .members(&id)
        .await?
        .into_iter()
        .map(|m| Member { user: m.user, role: m.role, read_seq: shown.then_some(m.read_seq) })
        .collect();
    Ok(Json(MemberList { members }))
}

/// Adds a user to a room, or invites them, as their `add_policy` says. In a private room only
/// moderators and up may; in a public room any member may.
#[utoipa::path(post, path = "/v1/rooms/{id}/members", tag = "rooms", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")), request_body = AddMember,
    responses(
        (status = 204, description = "Added (or already a member)"),
        (status = 202, description = "Invited: they join when they accept", body = Invited),
        (status = 403, description = "forbidden (role, or removed by a moderator), blocked, not_accepting", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "A dm, or too many pending invites", body = ErrorBody),
    ))]
pub async fn add_member(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<AddMember>,
) -> Result<Response, ApiError> {
    validate::id(&id, "room")?;
    validate::id(&body.user_id, "user_id")?;
    state.limits.write(&user.id)?;
    match state.store.add_member(&id, &user.id, &body.user_id).await? {
        AddOutcome::Invited { invite, fresh } => {
            // Told once: asking again must not become a way to flood someone's sessions.
            if fresh {
                let frame = ServerFrame::Invite { invite: invite.clone() };
                state.hub.publish_to_user(&body.user_id, &frame).await;
            }
            Ok((StatusCode::ACCEPTED, Json(Invited { invite })).into_response())
        }
        AddOutcome::Added(_) | AddOutcome::AlreadyMember => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// Withdraws a pending invite (its sender, or a moderator of the room).
#[utoipa::path(delete, path = "/v1/rooms/{id}/invites/{user_id}", tag = "rooms", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), ("user_id" = String, Path, description = "Invited user")),
    responses(
        (status = 204, description = "Withdrawn (or there was none)"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn withdraw_invite(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath((id, target)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    validate::id(&id, "room")?;
    validate::id(&target, "user_id")?;
    state.store.withdraw_invite(&id, &user.id, &target).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a member: yourself (leave), or another if you own or moderate the room (never in a
/// dm). Someone a moderator removed comes back only when a moderator adds them again.
#[utoipa::path(delete, path = "/v1/rooms/{id}/members/{user_id}", tag = "rooms", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), ("user_id" = String, Path, description = "Member to remove")),
    responses(
        (status = 204, description = "Removed"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn remove_member(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath((id, target)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    validate::id(&id, "room")?;
    validate::id(&target, "user_id")?;
    state.store.remove_member(&id, &user.id, &target).await?;
    Ok(StatusCode::NO_CONTENT)
}
