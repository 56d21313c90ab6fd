//! Reports over REST: members report a message or a member; the room's moderators see the queue
//! (and each new or resolved report live, as a `report` frame) and resolve a report with an
//! action, taken through the same store calls as the action's own endpoint.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use switchboard_protocol::codes::error as code;
use switchboard_protocol::rest::{ErrorBody, NewReport, ReportList, ReportQuery, ResolveReport};
use switchboard_protocol::{Report, ServerFrame};

use super::extract::{ApiJson, ApiPath, ApiQuery, AuthUser};
use super::moderation::{reason, until};
use crate::app::AppState;
use crate::error::ApiError;
use crate::store::{ReportTarget, SanctionKind, StoreError};
use crate::validate;

/// Tells the room's moderators of a report as it stands now, on every node (best effort: the
/// queue can always be read over REST).
async fn tell_moderators(state: &AppState, report: &Report) {
    let moderators = match state.store.moderator_ids(&report.room).await {
        Ok(ids) => ids,
        Err(e) => {
            return tracing::warn!(error = %e, room = %report.room, "cannot tell moderators of a report");
        }
    };
    let frame = ServerFrame::Report { report: report.clone() };
    for id in moderators {
        state.hub.publish_to_user(&id, &frame).await;
    }
}

/// Reports a message (`message_id`) or a member (`user_id`) to the room's moderators, with a
/// reason. The same open report filed again is answered `200` with it; a new one `201`.
#[utoipa::path(post, path = "/v1/rooms/{id}/reports", tag = "moderation", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")), request_body = NewReport,
    responses((status = 201, body = Report), (status = 200, description = "Already reported", body = Report),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn file(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
    ApiJson(body): ApiJson<NewReport>,
) -> Result<(StatusCode, Json<Report>), ApiError> {
    validate::id(&room, "room")?;
    let target = match (body.message_id, body.user_id) {
        (Some(m), None) => {
            validate::id(&m, "message")?;
            ReportTarget::Message(m)
        }
        (None, Some(u)) => {
            validate::id(&u, "user")?;
            ReportTarget::User(u)
        }
        _ => {
            return Err(ApiError::bad_request(code::INVALID_REQUEST, "name either message_id or user_id"));
        }
    };
    let why = reason(Some(&body.reason))?.filter(|r| !r.is_empty()).ok_or_else(|| {
        ApiError::bad_request(code::INVALID_REQUEST, "a report needs a reason (1-500 characters)")
    })?;
    state.limits.write(&user.id)?;
    let (report, new) = state.store.report(&room, &user.id, target, &why).await?;
    if !new {
        return Ok((StatusCode::OK, Json(report)));
    }
    tell_moderators(&state, &report).await;
    Ok((StatusCode::CREATED, Json(report)))
}

/// The room's reports, newest first: `open` (default) or `resolved`. Moderators and up.
#[utoipa::path(get, path = "/v1/rooms/{id}/reports", tag = "moderation", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), ReportQuery),
    responses((status = 200, body = ReportList), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Json<ReportList>, ApiError> {
    validate::id(&room, "room")?;
    let open = match q.status.as_deref() {
        None | Some("open") => true,
        Some("resolved") => false,
        Some(_) => return Err(ApiError::bad_request(code::INVALID_REQUEST, "status is open or resolved")),
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request(code::INVALID_REQUEST, "limit must be 1-200"));
    }
    Ok(Json(ReportList { reports: state.store.reports(&room, &user.id, open, q.before, limit).await? }))
}

/// Resolves an open report with an action: `dismiss`, `delete_message` (the reported message),
/// `kick`, `mute`, `ban` or `shadow_ban` (the reported member, for `duration_secs` or for good).
/// The action is taken first, with the moderator's own rights (an admin cannot be banned by a
/// moderator: `403`, and the report stays open); then the report is resolved, with an audit
/// entry for each.
#[utoipa::path(post, path = "/v1/rooms/{id}/reports/{report_id}/resolve", tag = "moderation",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), ("report_id" = u64, Path, description = "Report")),
    request_body = ResolveReport,
    responses((status = 200, body = Report), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn resolve(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath((room, id)): ApiPath<(String, u64)>,
    ApiJson(body): ApiJson<ResolveReport>,
) -> Result<Json<Report>, ApiError> {
    validate::id(&room, "room")?;
    let why = reason(body.reason.as_deref())?;
    let until = until(body.duration_secs)?;
    let report = state.store.report_by_id(&room, &user.id, id).await?;
    if report.status != "open" {
        return Err(StoreError::Denied("this report is already resolved").into());
    }
    state.limits.write(&user.id)?;
    let sanction = |kind| state.store.sanction(&room, &user.id, &report.user_id, kind, until, why.as_deref());
    let action: &'static str = match body.action.as_str() {
        "dismiss" => "dismiss",
        "delete_message" => {
            let message = report.message_id.as_deref().ok_or_else(|| {
                ApiError::bad_request(code::INVALID_REQUEST, "this report names no message to delete")
            })?;
            match state.store.delete(&room, &user.id, message).await {
                // Deleted meanwhile (by its author, or another moderator): done all the same.
                Ok(_) | Err(StoreError::NotFound) => "delete_message",
                Err(e) => return Err(e.into()),
            }
        }
        "kick" => match state.store.remove_member(&room, &user.id, &report.user_id).await {
            Ok(_) | Err(StoreError::NotFound) => "kick",
            Err(e) => return Err(e.into()),
        },
        "mute" => sanction(SanctionKind::Mute).await.map(|_| "mute")?,
        "ban" => sanction(SanctionKind::Ban).await.map(|_| "ban")?,
        "shadow_ban" => sanction(SanctionKind::Shadow).await.map(|_| "shadow_ban")?,
        _ => {
            return Err(ApiError::bad_request(
                code::INVALID_REQUEST,
                "action is dismiss, delete_message, kick, mute, ban or shadow_ban",
            ));
        }
    };
    let resolved = state.store.resolve_report(&room, &user.id, id, action, why.as_deref()).await?;
    tell_moderators(&state, &resolved).await;
    Ok(Json(resolved))
}
