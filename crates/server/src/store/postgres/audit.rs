//! The audit log and role changes: every moderation action leaves an entry, in the transaction
//! of the action itself (which holds the room's row), so the log cannot miss or invent one and a
//! room's entries take ids in commit order.

use deadpool_postgres::GenericClient;
use switchboard_protocol::{AuditEntry, Role, RoomKind};

use super::Pg;
use super::queries::{Written, acting_role, acting_role_if_any, lock_room, role, row, rows, to_i64};
use crate::moderation::policy::{self, Action};
use crate::store::{AuditFilter, StoreError, now_ms, rfc3339_ms};

/// Appends an entry (only inside a transaction that holds the room's row).
pub(super) async fn record(
    c: &impl GenericClient,
    room: &str,
    actor: &str,
    action: &str,
    target: Option<&str>,
    detail: Option<&str>,
    reason: Option<&str>,
) -> Pg<AuditEntry> {
    let ts = now_ms();
    let found = row(
        c,
        "INSERT INTO audit_log (room_id, actor, action, target, reason, detail, ts)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        &[&room, &actor, &action, &target, &reason, &detail, &ts],
    )
    .await?
    .ok_or_else(|| StoreError::Fatal("no id for an audit entry".into()))?;
    let id: i64 = found.try_get(0)?;
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

pub(super) async fn set_role(
    c: &impl GenericClient,
    room: &str,
    actor: &str,
    target: &str,
    new: Role,
    reason: Option<&str>,
) -> Written<Option<AuditEntry>> {
    let Some(kind) = lock_room(c, room).await? else { return Err(StoreError::NotFound.into()) };
    let actor_role = acting_role(c, room, actor).await?;
    if kind == RoomKind::Dm {
        return Err(StoreError::Denied("a dm has no roles").into());
    }
    let Some(now) = role(c, room, target).await? else { return Err(StoreError::NotFound.into()) };
    if !policy::may_set_role(Some(actor_role), Some(now), new) {
        return Err(StoreError::Forbidden.into());
    }
    if now == new {
        return Ok((None, Vec::new()));
    }
    super::queries::exec(
        c,
        "UPDATE members SET role = $3 WHERE room_id = $1 AND user_id = $2",
        &[&room, &target, &new.as_str()],
    )
    .await?;
    let detail = format!("{}->{}", now.as_str(), new.as_str());
    let entry = record(c, room, actor, "set_role", Some(target), Some(&detail), reason).await?;
    Ok((Some(entry), Vec::new()))
}

pub(super) async fn entries(
    c: &impl GenericClient,
    room: &str,
    actor: &str,
    filter: &AuditFilter,
    before: Option<u64>,
    limit: u32,
) -> Pg<Vec<AuditEntry>> {
    let actor_role = acting_role_if_any(c, room, actor).await?;
    if actor_role.is_none() {
        return Err(StoreError::NotFound.into());
    }
    if !policy::may(Action::ReadAudit, actor_role, None) {
        return Err(StoreError::Forbidden.into());
    }
    let before = before.map_or(i64::MAX, to_i64);
    rows(
        c,
        "SELECT id, actor, action, target, reason, detail, ts FROM audit_log
         WHERE room_id = $1 AND id < $2 AND ($4::text IS NULL OR action = $4)
           AND ($5::text IS NULL OR target = $5) AND ($6::text IS NULL OR actor = $6)
         ORDER BY id DESC LIMIT $3",
        &[&room, &before, &i64::from(limit), &filter.action, &filter.target, &filter.by],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(AuditEntry {
            id: u64::try_from(r.try_get::<_, i64>(0)?).unwrap_or(0),
            actor: r.try_get(1)?,
            action: r.try_get(2)?,
            target: r.try_get(3)?,
            reason: r.try_get(4)?,
            detail: r.try_get(5)?,
            ts: rfc3339_ms(r.try_get(6)?),
        })
    })
    .collect()
}
