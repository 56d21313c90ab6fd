//! Moderation over REST: members' roles and the room's audit log. Who may do what is
//! `moderation::policy`'s table, checked by the store in the transaction of the change.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use switchboard_protocol::codes::error as code;
use switchboard_protocol::rest::{
    AuditList, AuditQuery, BanList, ErrorBody, Filters, Impose, Member, MuteList, Purge, Purged,
    RoomSettings, SanctionEntry, SanctionQuery, SetRole, ShadowBanList,
};

use super::extract::{ApiJson, ApiPath, ApiQuery, AuthUser};
use crate::app::AppState;
use crate::error::ApiError;
use crate::moderation::policy::{self, Action};
use crate::store::{AuditFilter, SanctionKind, StoreError, rfc3339_ms};
use crate::validate;

/// Longest reason given for a moderation action.
const MAX_REASON: usize = 500;
/// Longest ban or mute with an end (ten years); longer is for good.
const MAX_DURATION_SECS: u64 = 10 * 365 * 24 * 3600;

/// A reason as given: bounded and clean, or a `400`.
pub(super) fn reason(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    match raw.map(|r| validate::status_text(r, MAX_REASON)) {
        None => Ok(None),
        Some(Ok(r)) => Ok(r),
        Some(Err(_)) => Err(ApiError::bad_request(
            code::INVALID_REQUEST,
            format!("reason must be at most {MAX_REASON} characters, without control or bidi characters"),
        )),
    }
}

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
    let reason = reason(body.reason.as_deref())?;
    state.limits.write(&user.id)?;
    state.store.set_role(&room, &user.id, &target, body.role, reason.as_deref()).await?;
    let member = state.store.user(&target).await?.ok_or_else(ApiError::not_found)?;
    Ok(Json(Member { user: member, role: body.role, read_seq: None }))
}

/// The room's audit log, newest first: every moderation action and every automatic block or
/// flag, with who, when and why; filtered by `action`, `target` and `by` (empty: the server).
/// For moderators and up.
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
    let field = |v: Option<String>, what: &str| -> Result<Option<String>, ApiError> {
        match v {
            Some(v) if v.chars().count() > 128 || v.chars().any(char::is_control) => {
                Err(ApiError::bad_request(code::INVALID_REQUEST, format!("{what} is not valid")))
            }
            v => Ok(v),
        }
    };
    let filter = AuditFilter {
        action: field(q.action, "action")?,
        target: field(q.target, "target")?,
        by: field(q.by, "by")?,
    };
    Ok(Json(AuditList {
        entries: state.store.audit_search(&room, &user.id, &filter, q.before, limit).await?,
    }))
}

/// When a sanction of `duration_secs` imposed now ends (`None`: for good), or a `400`.
pub(super) fn until(duration_secs: Option<u64>) -> Result<Option<i64>, ApiError> {
    match duration_secs {
        None => Ok(None),
        Some(s) if (1..=MAX_DURATION_SECS).contains(&s) => {
            Ok(Some(crate::store::now_ms() + i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX / 2)))
        }
        Some(_) => Err(ApiError::bad_request(
            code::INVALID_REQUEST,
            format!("duration_secs must be 1-{MAX_DURATION_SECS}, or left out for good"),
        )),
    }
}

/// Imposes a ban or mute from a request body.
async fn impose(
    state: &AppState,
    room: &str,
    actor: &str,
    body: Impose,
    kind: SanctionKind,
) -> Result<StatusCode, ApiError> {
    validate::id(room, "room")?;
    validate::id(&body.user_id, "user")?;
    let reason = reason(body.reason.as_deref())?;
    let until = until(body.duration_secs)?;
    if state.store.user(&body.user_id).await?.is_none() {
        return Err(ApiError::not_found());
    }
    state.limits.write(actor)?;
    state.store.sanction(room, actor, &body.user_id, kind, until, reason.as_deref()).await?;
    Ok(StatusCode::CREATED)
}

/// Lifts a ban or mute (a no-op when none stands).
async fn lift(
    state: &AppState,
    room: &str,
    actor: &str,
    target: &str,
    kind: SanctionKind,
) -> Result<StatusCode, ApiError> {
    validate::id(room, "room")?;
    validate::id(target, "user")?;
    state.limits.write(actor)?;
    state.store.lift_sanction(room, actor, target, kind).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One page of the room's standing sanctions of `kind`, and where the next one starts.
async fn page(
    state: &AppState,
    room: &str,
    actor: &str,
    kind: SanctionKind,
    q: SanctionQuery,
) -> Result<(Vec<SanctionEntry>, Option<String>), ApiError> {
    validate::id(room, "room")?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(code::INVALID_REQUEST, "limit must be 1-1000"));
    }
    let before =
        match q.before.as_deref() {
            None => None,
            Some(cursor) => {
                let parsed = cursor
                    .split_once('.')
                    .and_then(|(at, user)| Some((at.parse::<i64>().ok()?, user.to_owned())));
                Some(parsed.ok_or_else(|| {
                    ApiError::bad_request(code::INVALID_REQUEST, "before is not a page cursor")
                })?)
            }
        };
    let list = state.store.sanctions_page(room, actor, kind, before, limit).await?;
    let next = (list.len() == limit as usize)
        .then(|| list.last().map(|s| format!("{}.{}", s.at_ms, s.user)))
        .flatten();
    Ok((entries(list), next))
}

fn entries(list: Vec<crate::store::Sanction>) -> Vec<SanctionEntry> {
    list.into_iter()
        .map(|s| SanctionEntry {
            user_id: s.user,
            by: s.by,
            reason: s.reason,
            at: rfc3339_ms(s.at_ms),
            until: s.until_ms.map(rfc3339_ms),
        })
        .collect()
}

/// Bans a user: removed at once on every node (their connections stop receiving the room), and
/// kept out (no joining, no being added) until the ban ends or is lifted. Moderators and up,
/// outranking the user.
#[utoipa::path(post, path = "/v1/rooms/{id}/bans", tag = "moderation", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")), request_body = Impose,
    responses((status = 201, description = "Banned"), (status = 400, body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn ban(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
    ApiJson(body): ApiJson<Impose>,
) -> Result<StatusCode, ApiError> {
    impose(&state, &room, &user.id, body, SanctionKind::Ban).await
}

/// Mutes a user: they stay and read, and every send is refused with `muted` (and
/// `retry_after_ms` when it ends). Moderators and up, outranking the user.
#[utoipa::path(post, path = "/v1/rooms/{id}/mutes", tag = "moderation", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")), request_body = Impose,
    responses((status = 201, description = "Muted"), (status = 400, body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn mute(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
    ApiJson(body): ApiJson<Impose>,
) -> Result<StatusCode, ApiError> {
    impose(&state, &room, &user.id, body, SanctionKind::Mute).await
}

/// Shadow-bans a user: they stay and send as before, but only they are shown what they send
/// (live, on resume and in history); nobody is told, them included. Moderators and up,
/// outranking the user, as for a ban.
#[utoipa::path(post, path = "/v1/rooms/{id}/shadow-bans", tag = "moderation", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")), request_body = Impose,
    responses((status = 201, description = "Shadow-banned"), (status = 400, body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn shadow_ban(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
    ApiJson(body): ApiJson<Impose>,
) -> Result<StatusCode, ApiError> {
    impose(&state, &room, &user.id, body, SanctionKind::Shadow).await
}

/// Lifts a shadow ban (a no-op when none stands); what was sent under it stays hidden.
#[utoipa::path(delete, path = "/v1/rooms/{id}/shadow-bans/{user_id}", tag = "moderation", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), ("user_id" = String, Path, description = "Who")),
    responses((status = 204, description = "Lifted"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn unshadow_ban(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath((room, target)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    lift(&state, &room, &user.id, &target, SanctionKind::Shadow).await
}

/// The room's standing shadow bans, a page at a time, newest first (moderators).
#[utoipa::path(get, path = "/v1/rooms/{id}/shadow-bans", tag = "moderation", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), SanctionQuery),
    responses((status = 200, body = ShadowBanList), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn shadow_bans(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
    ApiQuery(q): ApiQuery<SanctionQuery>,
) -> Result<Json<ShadowBanList>, ApiError> {
    let (shadow_bans, next) = page(&state, &room, &user.id, SanctionKind::Shadow, q).await?;
    Ok(Json(ShadowBanList { shadow_bans, next }))
}

/// Longest purge window: thirty days.
const MAX_PURGE_HOURS: u32 = 30 * 24;

/// Deletes a member's messages of the last `hours` (at most 1,000 per call, oldest first: repeat
/// for more), each as a `delete` event, with one audit entry. Moderators outranking the user.
#[utoipa::path(post, path = "/v1/rooms/{id}/purge", tag = "moderation", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")), request_body = Purge,
    responses((status = 200, body = Purged), (status = 400, body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn purge(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
    ApiJson(body): ApiJson<Purge>,
) -> Result<Json<Purged>, ApiError> {
    validate::id(&room, "room")?;
    validate::id(&body.user_id, "user")?;
    if !(1..=MAX_PURGE_HOURS).contains(&body.hours) {
        return Err(ApiError::bad_request(
            code::INVALID_REQUEST,
            format!("hours must be 1-{MAX_PURGE_HOURS}"),
        ));
    }
    state.limits.write(&user.id)?;
    let since = crate::store::now_ms() - i64::from(body.hours) * 3_600_000;
    let deleted = state.store.purge(&room, &user.id, &body.user_id, since).await?;
    Ok(Json(Purged { deleted }))
}

/// Lifts a ban (a no-op when none stands).
#[utoipa::path(delete, path = "/v1/rooms/{id}/bans/{user_id}", tag = "moderation", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), ("user_id" = String, Path, description = "Who")),
    responses((status = 204, description = "Lifted"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn unban(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath((room, target)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    lift(&state, &room, &user.id, &target, SanctionKind::Ban).await
}

/// Lifts a mute (a no-op when none stands).
#[utoipa::path(delete, path = "/v1/rooms/{id}/mutes/{user_id}", tag = "moderation", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), ("user_id" = String, Path, description = "Who")),
    responses((status = 204, description = "Lifted"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn unmute(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath((room, target)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    lift(&state, &room, &user.id, &target, SanctionKind::Mute).await
}

/// The room's standing bans, a page at a time, newest first (moderators).
#[utoipa::path(get, path = "/v1/rooms/{id}/bans", tag = "moderation", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), SanctionQuery),
    responses((status = 200, body = BanList), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn bans(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
    ApiQuery(q): ApiQuery<SanctionQuery>,
) -> Result<Json<BanList>, ApiError> {
    let (bans, next) = page(&state, &room, &user.id, SanctionKind::Ban, q).await?;
    Ok(Json(BanList { bans, next }))
}

/// The room's standing mutes, a page at a time, newest first (moderators).
#[utoipa::path(get, path = "/v1/rooms/{id}/mutes", tag = "moderation", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), SanctionQuery),
    responses((status = 200, body = MuteList), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn mutes(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
    ApiQuery(q): ApiQuery<SanctionQuery>,
) -> Result<Json<MuteList>, ApiError> {
    let (mutes, next) = page(&state, &room, &user.id, SanctionKind::Mute, q).await?;
    Ok(Json(MuteList { mutes, next }))
}

/// Longest slow mode: six hours.
const MAX_SLOW_MODE_SECS: u32 = 6 * 3600;

/// Changes the room's settings (slow mode), for moderators and up; audited.
#[utoipa::path(patch, path = "/v1/rooms/{id}", tag = "moderation", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")), request_body = RoomSettings,
    responses((status = 200, body = switchboard_protocol::Room), (status = 400, body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn configure(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
    ApiJson(body): ApiJson<RoomSettings>,
) -> Result<Json<switchboard_protocol::Room>, ApiError> {
    validate::id(&room, "room")?;
    if let Some(secs) = body.slow_mode_secs {
        if secs > MAX_SLOW_MODE_SECS {
            return Err(ApiError::bad_request(
                code::INVALID_REQUEST,
                format!("slow_mode_secs must be 0-{MAX_SLOW_MODE_SECS}"),
            ));
        }
        state.limits.write(&user.id)?;
        state.store.set_slow_mode(&room, &user.id, secs).await?;
    }
    if let Some(filters) = &body.filters {
        let stored = crate::moderation::screen::to_stored(filters)?;
        state.limits.write(&user.id)?;
        if state.store.set_filters(&room, &user.id, stored).await? {
            state.screen.forget(&room);
        }
    }
    Ok(Json(state.store.room_for(&room, &user.id).await?))
}

/// The room's own filters (moderators; the server-wide ones are the operator's).
#[utoipa::path(get, path = "/v1/rooms/{id}/filters", tag = "moderation", security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id")),
    responses((status = 200, body = Filters), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn filters(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
) -> Result<Json<Filters>, ApiError> {
    validate::id(&room, "room")?;
    let role = state.store.acting_role(&room, &user.id).await?.ok_or_else(ApiError::not_found)?;
    if !policy::may(Action::ConfigureRoom, Some(role), None) {
        return Err(StoreError::Forbidden.into());
    }
    let stored = state.store.room_filters(&room).await?;
    let filters = stored.map(|raw| serde_json::from_str(&raw)).transpose().map_err(ApiError::internal)?;
    Ok(Json(filters.unwrap_or_default()))
}
