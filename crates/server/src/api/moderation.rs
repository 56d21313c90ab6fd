//! Moderation over REST: members' roles and the room's audit log. Who may do what is
//! `moderation::policy`'s table, checked by the store in the transaction of the change.

use axum::Json;
use axum::extract::State;
use switchboard_protocol::codes::error as code;
use switchboard_protocol::rest::{AuditList, AuditQuery, ErrorBody, Member, SetRole};

use super::extract::{ApiJson, ApiPath, ApiQuery, AuthUser};
use crate::app::AppState;
use crate::error::ApiError;
use crate::validate;

/// Longest reason given for a moderation action.
const MAX_REASON: usize = 500;

/// Gives a member another role: admins and the owner give roles below their own to members
/// below them; nobody is made owner. Audited with its reason.
#[utoipa::path(put, path = "/v1/rooms/{id}/members/{user_id}/role", tag = "moderation", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), ("user_id" = String, Path, description = "The member")),
    request_body = SetRole,
    responses((status = 200, body = Member), (status = 400, body = ErrorBody),
        (status = 403, description = "forbidden: the policy does not let the caller", body = ErrorBody),
        (status = 404, description = "no such room or member", body = ErrorBody)))]
pub async fn set_role(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath((room, target)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<SetRole>,
) -> Result<Json<Member>, ApiError> {
    validate::id(&room, "room")?;
    validate::id(&target, "user")?;
    let reason = match body.reason.as_deref().map(|r| validate::status_text(r, MAX_REASON)) {
        None => None,
        Some(Ok(r)) => r,
        Some(Err(_)) => {
            return Err(ApiError::bad_request(
                code::INVALID_REQUEST,
                format!("reason must be at most {MAX_REASON} characters, without control or bidi characters"),
            ));
        }
    };
    state.store.set_role(&room, &user.id, &target, body.role, reason.as_deref()).await?;
    let member = state.store.user(&target).await?.ok_or_else(ApiError::not_found)?;
    Ok(Json(Member { user: member, role: body.role, read_seq: None }))
}

/// The room's audit log, newest first: every role change, removal by a moderator and deletion of
/// another's message, with who, when and why. For moderators and up.
#[utoipa::path(get, path = "/v1/rooms/{id}/audit", tag = "moderation", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), AuditQuery),
    responses((status = 200, body = AuditList), (status = 400, body = ErrorBody),
        (status = 403, description = "forbidden: not a moderator", body = ErrorBody),
        (status = 404, description = "no such room, or not a member", body = ErrorBody)))]
pub async fn audit(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditList>, ApiError> {
    validate::id(&room, "room")?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request(code::INVALID_REQUEST, "limit must be 1-200"));
    }
    Ok(Json(AuditList { entries: state.store.audit_log(&room, &user.id, q.before, limit).await? }))
}
