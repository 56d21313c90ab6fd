//! Bans and mutes: imposed and lifted by moderators as the policy allows, with audit entries,
//! and checked by the writes they guard (a send for a mute, a join or an add for a ban) in those
//! writes' own transactions.

use deadpool_postgres::GenericClient;
use switchboard_protocol::{MemberChange, RoomKind, TimelineEvent};

use super::Pg;
use super::audit;
use super::queries::{
    Written, acting_role, acting_role_if_any, exec, lock_room, member_event, role, row, rows,
};
use crate::moderation::policy::{self, Action};
use crate::store::{Sanction, SanctionKind, StoreError, now_ms};

/// Refuses with the sanction of `kind` that stands against `user` in `room`, if one does.
pub(super) async fn check(c: &impl GenericClient, room: &str, user: &str, kind: SanctionKind) -> Pg<()> {
    match standing(c, room, user, kind).await? {
        Some(until) => Err(StoreError::Sanctioned { kind: kind.as_str(), until_ms: until }.into()),
        None => Ok(()),
    }
}

/// The end of the sanction of `kind` standing against `user` in `room` (`Some(None)`: for
/// good), if one stands.
pub(super) async fn standing(
    c: &impl GenericClient,
    room: &str,
    user: &str,
    kind: SanctionKind,
) -> Pg<Option<Option<i64>>> {
    let found = row(
        c,
        "SELECT until FROM sanctions WHERE room_id = $1 AND user_id = $2 AND kind = $3",
        &[&room, &user, &kind.as_str()],
    )
    .await?;
    let Some(r) = found else { return Ok(None) };
    Ok(SanctionKind::standing(r.try_get(0)?))
}

pub(super) async fn impose(
    c: &impl GenericClient,
    room: &str,
    actor: &str,
    target: &str,
    kind: SanctionKind,
    until: Option<i64>,
    reason: Option<&str>,
) -> Written<Option<TimelineEvent>> {
    let Some(room_kind) = lock_room(c, room).await? else { return Err(StoreError::NotFound.into()) };
    let actor_role = acting_role(c, room, actor).await?;
    if room_kind == RoomKind::Dm {
        return Err(StoreError::Denied("nobody moderates a dm: block instead").into());
    }
    let target_role = role(c, room, target).await?;
    if actor == target || !policy::may(kind.action(), Some(actor_role), target_role) {
        return Err(StoreError::Forbidden.into());
    }
    // A standing sanction is replaced only by someone of its imposer's rank or above.
    let actor_rank = policy::rank(Some(actor_role));
    if imposed_by_rank(c, room, target, kind).await?.is_some_and(|r| actor_rank < r) {
        return Err(StoreError::Forbidden.into());
    }
    exec(
        c,
        "INSERT INTO sanctions (room_id, user_id, kind, until, reason, by_user, by_rank, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (room_id, user_id, kind) DO UPDATE SET until = excluded.until,
           reason = excluded.reason, by_user = excluded.by_user, by_rank = excluded.by_rank, at = excluded.at",
        &[&room, &target, &kind.as_str(), &until, &reason, &actor, &i32::from(actor_rank), &now_ms()],
    )
    .await?;
    let detail = until.map(|u| format!("until {}", crate::store::rfc3339_ms(u)));
    let name = kind.audit_actions().0;
    audit::record(c, room, actor, name, Some(target), detail.as_deref(), reason).await?;
    if kind != SanctionKind::Ban {
        return Ok((None, Vec::new()));
    }
    // Banned: out of the room now, no invite left standing, and back only when it ends.
    exec(c, "DELETE FROM invites WHERE room_id = $1 AND user_id = $2", &[&room, &target]).await?;
    if target_role.is_none() {
        return Ok((None, Vec::new()));
    }
    exec(c, "DELETE FROM members WHERE room_id = $1 AND user_id = $2", &[&room, &target]).await?;
    let ev = member_event(c, room, target, MemberChange::Removed).await?;
    Ok((Some(ev.clone()), vec![ev]))
}

/// The rank of whoever imposed the sanction of `kind` on `user`, if one is recorded.
async fn imposed_by_rank(
    c: &impl GenericClient,
    room: &str,
    user: &str,
    kind: SanctionKind,
) -> Pg<Option<u8>> {
    let found = row(
        c,
        "SELECT by_rank FROM sanctions WHERE room_id = $1 AND user_id = $2 AND kind = $3",
        &[&room, &user, &kind.as_str()],
    )
    .await?;
    Ok(match found {
        Some(r) => Some(u8::try_from(r.try_get::<_, i32>(0)?).unwrap_or(u8::MAX)),
        None => None,
    })
}

pub(super) async fn lift(
    c: &impl GenericClient,
    room: &str,
    actor: &str,
    target: &str,
    kind: SanctionKind,
) -> Written<()> {
    if lock_room(c, room).await?.is_none() {
        return Err(StoreError::NotFound.into());
    }
    let actor_role = acting_role(c, room, actor).await?;
    if !policy::may(kind.action(), Some(actor_role), role(c, room, target).await?)
        || imposed_by_rank(c, room, target, kind).await?.is_some_and(|r| policy::rank(Some(actor_role)) < r)
    {
        return Err(StoreError::Forbidden.into());
    }
    let n = exec(
        c,
        "DELETE FROM sanctions WHERE room_id = $1 AND user_id = $2 AND kind = $3",
        &[&room, &target, &kind.as_str()],
    )
    .await?;
    if n > 0 {
        let name = kind.audit_actions().1;
        audit::record(c, room, actor, name, Some(target), None, None).await?;
    }
    Ok(((), Vec::new()))
}

pub(super) async fn list(
    c: &impl GenericClient,
    room: &str,
    actor: &str,
    kind: SanctionKind,
    before: Option<(i64, String)>,
    limit: u32,
) -> Pg<Vec<Sanction>> {
    let actor_role = acting_role_if_any(c, room, actor).await?;
    if actor_role.is_none() {
        return Err(StoreError::NotFound.into());
    }
    if !policy::may(kind.action(), actor_role, None) {
        return Err(StoreError::Forbidden.into());
    }
    let (at, user) = before.unwrap_or((i64::MAX, String::new()));
    rows(
        c,
        "SELECT user_id, by_user, reason, at, until FROM sanctions
         WHERE room_id = $1 AND kind = $2 AND (until IS NULL OR until > $3)
           AND (at < $4 OR (at = $4 AND user_id < $5))
         ORDER BY at DESC, user_id DESC LIMIT $6",
        &[&room, &kind.as_str(), &now_ms(), &at, &user, &i64::from(limit)],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(Sanction {
            user: r.try_get(0)?,
            by: r.try_get(1)?,
            reason: r.try_get(2)?,
            at_ms: r.try_get(3)?,
            until_ms: r.try_get(4)?,
        })
    })
    .collect()
}

/// Locks the room and refuses an actor who may not change its settings, and a dm (`in_dm`
/// says why).
async fn require_configurer(c: &impl GenericClient, room: &str, actor: &str, in_dm: &'static str) -> Pg<()> {
    let Some(kind) = lock_room(c, room).await? else { return Err(StoreError::NotFound.into()) };
    let actor_role = acting_role(c, room, actor).await?;
    if kind == RoomKind::Dm {
        return Err(StoreError::Denied(in_dm).into());
    }
    if !policy::may(Action::ConfigureRoom, Some(actor_role), None) {
        return Err(StoreError::Forbidden.into());
    }
    Ok(())
}

pub(super) async fn set_slow_mode(c: &impl GenericClient, room: &str, actor: &str, secs: u32) -> Written<()> {
    require_configurer(c, room, actor, "a dm has no slow mode").await?;
    let now = row(c, "SELECT slow_mode_secs FROM rooms WHERE id = $1", &[&room]).await?;
    if now.map(|r| r.try_get::<_, i64>(0)).transpose()? == Some(i64::from(secs)) {
        return Ok(((), Vec::new()));
    }
    exec(c, "UPDATE rooms SET slow_mode_secs = $2 WHERE id = $1", &[&room, &i64::from(secs)]).await?;
    audit::record(c, room, actor, "slow_mode", None, Some(&format!("{secs}s")), None).await?;
    Ok(((), Vec::new()))
}

/// Replaces the room's filters as the policy allows the actor, with an audit entry when they
/// changed; returns whether they did.
pub(super) async fn set_filters(
    c: &impl GenericClient,
    room: &str,
    actor: &str,
    rules: Option<&str>,
) -> Written<bool> {
    require_configurer(c, room, actor, "a dm has no filters: block instead").await?;
    if filters(c, room).await?.as_deref() == rules {
        return Ok((false, Vec::new()));
    }
    exec(c, "UPDATE rooms SET filters = $2 WHERE id = $1", &[&room, &rules]).await?;
    audit::record(c, room, actor, "filters", None, None, None).await?;
    Ok((true, Vec::new()))
}

/// The room's filters as stored (JSON), for the node's cache.
pub(super) async fn filters(c: &impl GenericClient, room: &str) -> Pg<Option<String>> {
    let found = row(c, "SELECT filters FROM rooms WHERE id = $1", &[&room]).await?;
    Ok(found.map(|r| r.try_get::<_, Option<String>>(0)).transpose()?.flatten())
}
