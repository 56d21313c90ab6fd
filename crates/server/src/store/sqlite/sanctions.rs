//! Bans and mutes: imposed and lifted by moderators as the policy allows, with audit entries,
//! and checked by the writes they guard (a send for a mute, a join or an add for a ban) in
//! those writes' own transactions.

use rusqlite::{Connection, OptionalExtension, params};
use switchboard_protocol::{MemberChange, Role, RoomKind};

use super::audit;
use super::queries::{Written, acting_role, acting_role_if_any, member_event, role, room_kind};
use crate::moderation::policy::{self, Action};
use crate::store::{Sanction, SanctionKind, StoreError, StoreResult, now_ms};

/// Refuses with the sanction of `kind` that stands against `user` in `room`, if one does.
pub(super) fn check(c: &Connection, room: &str, user: &str, kind: SanctionKind) -> StoreResult<()> {
    match standing(c, room, user, kind)? {
        Some(until) => Err(StoreError::Sanctioned { kind: kind.as_str(), until_ms: until }),
        None => Ok(()),
    }
}

/// The end of the sanction of `kind` standing against `user` in `room` (`Some(None)`: for
/// good), if one stands.
pub(super) fn standing(
    c: &Connection,
    room: &str,
    user: &str,
    kind: SanctionKind,
) -> StoreResult<Option<Option<i64>>> {
    let found: Option<Option<i64>> = c
        .prepare_cached("SELECT until FROM sanctions WHERE room_id = ?1 AND user_id = ?2 AND kind = ?3")?
        .query_row([room, user, kind.as_str()], |r| r.get(0))
        .optional()?;
    Ok(found.and_then(SanctionKind::standing))
}

pub(super) fn impose(
    c: &Connection,
    room: &str,
    actor: &str,
    target: &str,
    kind: SanctionKind,
    until: Option<i64>,
    reason: Option<&str>,
) -> Written<Option<switchboard_protocol::TimelineEvent>> {
    let actor_role = acting_role(c, room, actor)?;
    if room_kind(c, room)?.ok_or(StoreError::NotFound)? == RoomKind::Dm {
        return Err(StoreError::Denied("nobody moderates a dm: block instead"));
    }
    let target_role = role(c, room, target)?;
    if actor == target || !policy::may(kind.action(), Some(actor_role), target_role) {
        return Err(StoreError::Forbidden);
    }
    // A standing sanction is replaced only by someone of its imposer's rank or above.
    if imposed_by_rank(c, room, target, kind)?.is_some_and(|r| policy::rank(Some(actor_role)) < r) {
        return Err(StoreError::Forbidden);
    }
    c.prepare_cached(
        "INSERT INTO sanctions (room_id, user_id, kind, until, reason, by_user, by_rank, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (room_id, user_id, kind) DO UPDATE SET until = excluded.until,
           reason = excluded.reason, by_user = excluded.by_user, by_rank = excluded.by_rank, at = excluded.at",
    )?
    .execute(params![
        room,
        target,
        kind.as_str(),
        until,
        reason,
        actor,
        policy::rank(Some(actor_role)),
        now_ms()
    ])?;
    let detail = until.map(|u| format!("until {}", crate::store::rfc3339_ms(u)));
    let name = kind.audit_actions().0;
    audit::record(c, room, actor, name, Some(target), detail.as_deref(), reason)?;
    if kind != SanctionKind::Ban {
        return Ok((None, Vec::new()));
    }
    // Banned: out of the room now, no invite left standing, and back only when it ends.
    c.prepare_cached("DELETE FROM invites WHERE room_id = ?1 AND user_id = ?2")?.execute([room, target])?;
    if target_role.is_none() {
        return Ok((None, Vec::new()));
    }
    c.prepare_cached("DELETE FROM members WHERE room_id = ?1 AND user_id = ?2")?.execute([room, target])?;
    let ev = member_event(c, room, target, MemberChange::Removed)?;
    Ok((Some(ev.clone()), vec![ev]))
}

/// The rank of whoever imposed the sanction of `kind` on `user`, if one is recorded.
fn imposed_by_rank(c: &Connection, room: &str, user: &str, kind: SanctionKind) -> StoreResult<Option<u8>> {
    let found: Option<i64> = c
        .prepare_cached("SELECT by_rank FROM sanctions WHERE room_id = ?1 AND user_id = ?2 AND kind = ?3")?
        .query_row([room, user, kind.as_str()], |r| r.get(0))
        .optional()?;
    Ok(found.map(|r| u8::try_from(r).unwrap_or(u8::MAX)))
}

pub(super) fn lift(c: &Connection, room: &str, actor: &str, target: &str, kind: SanctionKind) -> Written<()> {
    let actor_role = acting_role(c, room, actor)?;
    if !policy::may(kind.action(), Some(actor_role), role(c, room, target)?)
        || imposed_by_rank(c, room, target, kind)?.is_some_and(|r| policy::rank(Some(actor_role)) < r)
    {
        return Err(StoreError::Forbidden);
    }
    let n = c
        .prepare_cached("DELETE FROM sanctions WHERE room_id = ?1 AND user_id = ?2 AND kind = ?3")?
        .execute([room, target, kind.as_str()])?;
    if n > 0 {
        let name = kind.audit_actions().1;
        audit::record(c, room, actor, name, Some(target), None, None)?;
    }
    Ok(((), Vec::new()))
}

pub(super) fn list(
    c: &Connection,
    room: &str,
    actor: &str,
    kind: SanctionKind,
    before: Option<(i64, String)>,
    limit: u32,
) -> StoreResult<Vec<Sanction>> {
    let actor_role = acting_role_if_any(c, room, actor)?;
    if actor_role.is_none() {
        return Err(StoreError::NotFound);
    }
    if !policy::may(kind.action(), actor_role, None) {
        return Err(StoreError::Forbidden);
    }
    let mut stmt = c.prepare_cached(
        "SELECT user_id, by_user, reason, at, until FROM sanctions
         WHERE room_id = ?1 AND kind = ?2 AND (until IS NULL OR until > ?3)
           AND (at < ?4 OR (at = ?4 AND user_id < ?5))
         ORDER BY at DESC, user_id DESC LIMIT ?6",
    )?;
    let (at, user) = before.unwrap_or((i64::MAX, String::new()));
    let rows = stmt.query_map(params![room, kind.as_str(), now_ms(), at, user, limit], |r| {
        Ok(Sanction {
            user: r.get(0)?,
            by: r.get(1)?,
            reason: r.get(2)?,
            at_ms: r.get(3)?,
            until_ms: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether the room's slow mode (`secs`, 0 when off) applies to this send (its time is then
/// recorded), refusing it while the author's last send (`last`) is too recent.
pub(super) fn slow_mode_holds(secs: i64, last: Option<i64>, role: Role) -> StoreResult<bool> {
    if secs <= 0 {
        return Ok(false);
    }
    let next = last.unwrap_or(0) + secs * 1000;
    if !policy::may(Action::BypassSlowMode, Some(role), None) && now_ms() < next {
        return Err(StoreError::Sanctioned { kind: "slow_mode", until_ms: Some(next) });
    }
    Ok(true)
}

/// Records when the author last sent in a slow-mode room (inside the send's transaction).
pub(super) fn record_send(c: &Connection, room: &str, author: &str, at: i64) -> StoreResult<()> {
    c.prepare_cached(
        "INSERT INTO last_sends (room_id, user_id, at) VALUES (?1, ?2, ?3)
         ON CONFLICT (room_id, user_id) DO UPDATE SET at = excluded.at",
    )?
    .execute(params![room, author, at])?;
    Ok(())
}

/// Refuses an actor who may not change the room's settings, and a dm (`in_dm` says why).
fn require_configurer(c: &Connection, room: &str, actor: &str, in_dm: &'static str) -> StoreResult<()> {
    let actor_role = acting_role(c, room, actor)?;
    if room_kind(c, room)?.ok_or(StoreError::NotFound)? == RoomKind::Dm {
        return Err(StoreError::Denied(in_dm));
    }
    if !policy::may(Action::ConfigureRoom, Some(actor_role), None) {
        return Err(StoreError::Forbidden);
    }
    Ok(())
}

pub(super) fn set_slow_mode(c: &Connection, room: &str, actor: &str, secs: u32) -> Written<()> {
    require_configurer(c, room, actor, "a dm has no slow mode")?;
    let now: i64 = c
        .prepare_cached("SELECT slow_mode_secs FROM rooms WHERE id = ?1")?
        .query_row([room], |r| r.get(0))?;
    if now == i64::from(secs) {
        return Ok(((), Vec::new()));
    }
    c.prepare_cached("UPDATE rooms SET slow_mode_secs = ?2 WHERE id = ?1")?.execute(params![room, secs])?;
    audit::record(c, room, actor, "slow_mode", None, Some(&format!("{secs}s")), None)?;
    Ok(((), Vec::new()))
}

/// Replaces the room's filters as the policy allows the actor, with an audit entry when they
/// changed; returns whether they did.
pub(super) fn set_filters(c: &Connection, room: &str, actor: &str, rules: Option<&str>) -> Written<bool> {
    require_configurer(c, room, actor, "a dm has no filters: block instead")?;
    if filters(c, room)?.as_deref() == rules {
        return Ok((false, Vec::new()));
    }
    c.prepare_cached("UPDATE rooms SET filters = ?2 WHERE id = ?1")?.execute(params![room, rules])?;
    audit::record(c, room, actor, "filters", None, None, None)?;
    Ok((true, Vec::new()))
}

/// The room's filters as stored (JSON), for the node's cache.
pub(super) fn filters(c: &Connection, room: &str) -> StoreResult<Option<String>> {
    Ok(c.prepare_cached("SELECT filters FROM rooms WHERE id = ?1")?
        .query_row([room], |r| r.get::<_, Option<String>>(0))
        .optional()?
        .flatten())
}
