//! The audit log and role changes: every moderation action leaves an entry, in the transaction
//! of the action itself, so the log cannot miss or invent one.

use rusqlite::{Connection, params};
use switchboard_protocol::{AuditEntry, Role, RoomKind};

use super::queries::{Written, acting_role, acting_role_if_any, role, room_kind};
use crate::moderation::policy::{self, Action};
use crate::store::{AuditFilter, StoreError, StoreResult, now_ms, rfc3339_ms};

/// Appends an entry (only ever inside the writer's transaction).
pub(super) fn record(
    c: &Connection,
    room: &str,
    actor: &str,
    action: &str,
    target: Option<&str>,
    detail: Option<&str>,
    reason: Option<&str>,
) -> StoreResult<AuditEntry> {
    let ts = now_ms();
    let id: i64 = c
        .prepare_cached(
            "INSERT INTO audit_log (room_id, actor, action, target, reason, detail, ts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
        )?
        .query_row(params![room, actor, action, target, reason, detail, ts], |r| r.get(0))?;
    Ok(AuditEntry {
        id: u64::try_from(id).unwrap_or(0),
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: target.map(str::to_owned),
        reason: reason.map(str::to_owned),
        detail: detail.map(str::to_owned),
        ts: rfc3339_ms(ts),
    })
}

pub(super) fn set_role(
    c: &Connection,
    room: &str,
    actor: &str,
    target: &str,
    new: Role,
    reason: Option<&str>,
) -> Written<Option<AuditEntry>> {
    let actor_role = acting_role(c, room, actor)?;
    if room_kind(c, room)?.ok_or(StoreError::NotFound)? == RoomKind::Dm {
        return Err(StoreError::Denied("a dm has no roles"));
    }
    let Some(now) = role(c, room, target)? else { return Err(StoreError::NotFound) };
    if !policy::may_set_role(Some(actor_role), Some(now), new) {
        return Err(StoreError::Forbidden);
    }
    if now == new {
        return Ok((None, Vec::new()));
    }
    c.prepare_cached("UPDATE members SET role = ?3 WHERE room_id = ?1 AND user_id = ?2")?.execute([
        room,
        target,
        new.as_str(),
    ])?;
    let detail = format!("{}->{}", now.as_str(), new.as_str());
    let entry = record(c, room, actor, "set_role", Some(target), Some(&detail), reason)?;
    Ok((Some(entry), Vec::new()))
}

pub(super) fn entries(
    c: &Connection,
    room: &str,
    actor: &str,
    filter: &AuditFilter,
    before: Option<u64>,
    limit: u32,
) -> StoreResult<Vec<AuditEntry>> {
    let actor_role: Option<Role> = acting_role_if_any(c, room, actor)?;
    if actor_role.is_none() {
        return Err(StoreError::NotFound);
    }
    if !policy::may(Action::ReadAudit, actor_role, None) {
        return Err(StoreError::Forbidden);
    }
    let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
    let mut stmt = c.prepare_cached(
        "SELECT id, actor, action, target, reason, detail, ts FROM audit_log
         WHERE room_id = ?1 AND id < ?2 AND (?4 IS NULL OR action = ?4) AND (?5 IS NULL OR target = ?5)
           AND (?6 IS NULL OR actor = ?6)
         ORDER BY id DESC LIMIT ?3",
    )?;
    let rows =
        stmt.query_map(params![room, before, limit, filter.action, filter.target, filter.by], |r| {
            Ok(AuditEntry {
                id: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                actor: r.get(1)?,
                action: r.get(2)?,
                target: r.get(3)?,
                reason: r.get(4)?,
                detail: r.get(5)?,
                ts: rfc3339_ms(r.get(6)?),
            })
        })?;
    let out: Vec<AuditEntry> = rows.collect::<Result<_, _>>()?;
    Ok(out)
}
