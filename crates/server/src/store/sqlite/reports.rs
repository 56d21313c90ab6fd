//! Reports: filed by members, read and resolved by moderators as the policy allows.

use rusqlite::{Connection, OptionalExtension, Row, params};
use switchboard_protocol::{Report, RoomKind};

use super::audit;
use super::queries::{Written, acting_role_if_any, require_member, role, room_kind};
use crate::moderation::policy::{self, Action};
use crate::store::{MAX_OPEN_REPORTS, ReportTarget, StoreError, StoreResult, now_ms, rfc3339_ms};

const COLUMNS: &str = "id, room_id, reporter, user_id, message_id, reason, status, created_at, resolved_by, resolution, resolved_at";

fn report_row(r: &Row<'_>) -> rusqlite::Result<Report> {
    Ok(Report {
        id: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
        room: r.get(1)?,
        reporter: r.get(2)?,
        user_id: r.get(3)?,
        message_id: r.get(4)?,
        reason: r.get(5)?,
        status: r.get(6)?,
        created_at: rfc3339_ms(r.get(7)?),
        resolved_by: r.get(8)?,
        resolution: r.get(9)?,
        resolved_at: r.get::<_, Option<i64>>(10)?.map(rfc3339_ms),
    })
}

fn by_id(c: &Connection, room: &str, id: i64) -> StoreResult<Option<Report>> {
    let sql = format!("SELECT {COLUMNS} FROM reports WHERE id = ?1 AND room_id = ?2");
    Ok(c.prepare_cached(&sql)?.query_row(params![id, room], report_row).optional()?)
}

pub(super) fn file(
    c: &Connection,
    room: &str,
    reporter: &str,
    target: &ReportTarget,
    reason: &str,
) -> Written<(Report, bool)> {
    require_member(c, room, reporter)?;
    if room_kind(c, room)?.ok_or(StoreError::NotFound)? == RoomKind::Dm {
        return Err(StoreError::Denied("nobody moderates a dm: block instead"));
    }
    let (user, message) = match target {
        ReportTarget::Message(id) => {
            // Only a message the reporter can see: not deleted, and not a shadow-banned
            // author's (which nobody else is shown).
            let author: Option<String> = c
                .prepare_cached(
                    "SELECT author FROM messages WHERE id = ?1 AND room_id = ?2 AND deleted = 0
                       AND (shadow = 0 OR author = ?3)",
                )?
                .query_row([id, room, reporter], |r| r.get(0))
                .optional()?;
            (author.ok_or(StoreError::NotFound)?, Some(id.as_str()))
        }
        ReportTarget::User(user) => {
            role(c, room, user)?.ok_or(StoreError::NotFound)?;
            (user.clone(), None)
        }
    };
    if user == reporter {
        return Err(StoreError::Denied("you cannot report yourself"));
    }
    let same: Option<i64> = c
        .prepare_cached(
            "SELECT id FROM reports WHERE room_id = ?1 AND reporter = ?2 AND status = 'open'
               AND user_id = ?3 AND message_id IS ?4",
        )?
        .query_row(params![room, reporter, user, message], |r| r.get(0))
        .optional()?;
    if let Some(id) = same {
        return Ok(((by_id(c, room, id)?.ok_or(StoreError::NotFound)?, false), Vec::new()));
    }
    let open: i64 = c
        .prepare_cached(
            "SELECT COUNT(*) FROM reports WHERE room_id = ?1 AND reporter = ?2 AND status = 'open'",
        )?
        .query_row([room, reporter], |r| r.get(0))?;
    if open >= MAX_OPEN_REPORTS {
        return Err(StoreError::Denied("too many of your reports are still open in this room"));
    }
    let id: i64 = c
        .prepare_cached(
            "INSERT INTO reports (room_id, reporter, user_id, message_id, reason, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        )?
        .query_row(params![room, reporter, user, message, reason, now_ms()], |r| r.get(0))?;
    Ok(((by_id(c, room, id)?.ok_or(StoreError::NotFound)?, true), Vec::new()))
}

/// Refuses an actor who may not handle the room's reports.
fn require_handler(c: &Connection, room: &str, actor: &str) -> StoreResult<()> {
    let actor_role = acting_role_if_any(c, room, actor)?.ok_or(StoreError::NotFound)?;
    if policy::may(Action::HandleReports, Some(actor_role), None) {
        Ok(())
    } else {
        Err(StoreError::Forbidden)
    }
}

pub(super) fn list(
    c: &Connection,
    room: &str,
    actor: &str,
    open: bool,
    before: Option<u64>,
    limit: u32,
) -> StoreResult<Vec<Report>> {
    require_handler(c, room, actor)?;
    let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
    let sql = format!(
        "SELECT {COLUMNS} FROM reports WHERE room_id = ?1 AND status = ?2 AND id < ?3 ORDER BY id DESC LIMIT ?4"
    );
    let status = if open { "open" } else { "resolved" };
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![room, status, before, limit], report_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn one(c: &Connection, room: &str, actor: &str, id: u64) -> StoreResult<Report> {
    require_handler(c, room, actor)?;
    by_id(c, room, i64::try_from(id).map_err(|_| StoreError::NotFound)?)?.ok_or(StoreError::NotFound)
}

pub(super) fn resolve(
    c: &Connection,
    room: &str,
    actor: &str,
    id: u64,
    resolution: &str,
    reason: Option<&str>,
) -> Written<Report> {
    require_handler(c, room, actor)?;
    let id = i64::try_from(id).map_err(|_| StoreError::NotFound)?;
    let report = by_id(c, room, id)?.ok_or(StoreError::NotFound)?;
    if report.status != "open" {
        return Err(StoreError::Denied("this report is already resolved"));
    }
    c.prepare_cached(
        "UPDATE reports SET status = 'resolved', resolved_by = ?2, resolution = ?3, resolved_at = ?4 WHERE id = ?1",
    )?
    .execute(params![id, actor, resolution, now_ms()])?;
    let detail = format!("report {id}: {resolution}");
    audit::record(c, room, actor, "resolve_report", Some(&report.user_id), Some(&detail), reason)?;
    Ok((by_id(c, room, id)?.ok_or(StoreError::NotFound)?, Vec::new()))
}

pub(super) fn moderator_ids(c: &Connection, room: &str) -> StoreResult<Vec<String>> {
    let mut stmt = c.prepare_cached(
        "SELECT user_id FROM members WHERE room_id = ?1 AND role IN ('owner', 'admin', 'moderator') LIMIT 1000",
    )?;
    let rows = stmt.query_map([room], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
