//! Reports: filed by members, read and resolved by moderators as the policy allows.

use deadpool_postgres::GenericClient;
use switchboard_protocol::{Report, RoomKind};
use tokio_postgres::Row;

use super::Pg;
use super::audit;
use super::queries::{Written, acting_role_if_any, lock_room, require_member, role, row, rows};
use crate::moderation::policy::{self, Action};
use crate::store::{MAX_OPEN_REPORTS, ReportTarget, StoreError, now_ms, rfc3339_ms};

const COLUMNS: &str = "id, room_id, reporter, user_id, message_id, reason, status, created_at, resolved_by, resolution, resolved_at";

fn report_of(r: &Row) -> Pg<Report> {
    Ok(Report {
        id: u64::try_from(r.try_get::<_, i64>(0)?).unwrap_or(0),
        room: r.try_get(1)?,
        reporter: r.try_get(2)?,
        user_id: r.try_get(3)?,
        message_id: r.try_get(4)?,
        reason: r.try_get(5)?,
        status: r.try_get(6)?,
        created_at: rfc3339_ms(r.try_get(7)?),
        resolved_by: r.try_get(8)?,
        resolution: r.try_get(9)?,
        resolved_at: r.try_get::<_, Option<i64>>(10)?.map(rfc3339_ms),
    })
}

async fn by_id(c: &impl GenericClient, room: &str, id: i64) -> Pg<Option<Report>> {
    let sql = format!("SELECT {COLUMNS} FROM reports WHERE id = $1 AND room_id = $2");
    row(c, &sql, &[&id, &room]).await?.as_ref().map(report_of).transpose()
}

pub(super) async fn file(
    c: &impl GenericClient,
    room: &str,
    reporter: &str,
    target: &ReportTarget,
    reason: &str,
) -> Written<(Report, bool)> {
    // The room's lock orders a member's reports, so the cap and the dedup hold on every node.
    let Some(kind) = lock_room(c, room).await? else { return Err(StoreError::NotFound.into()) };
    require_member(c, room, reporter).await?;
    if kind == RoomKind::Dm {
        return Err(StoreError::Denied("nobody moderates a dm: block instead").into());
    }
    let (user, message) = match target {
        ReportTarget::Message(id) => {
            let found = row(
                c,
                "SELECT author FROM messages WHERE id = $1 AND room_id = $2 AND NOT deleted
                   AND (NOT shadow OR author = $3)",
                &[id, &room, &reporter],
            )
            .await?;
            let author: String = found.ok_or(StoreError::NotFound)?.try_get(0)?;
            (author, Some(id.as_str()))
        }
        ReportTarget::User(user) => {
            role(c, room, user).await?.ok_or(StoreError::NotFound)?;
            (user.clone(), None)
        }
    };
    if user == reporter {
        return Err(StoreError::Denied("you cannot report yourself").into());
    }
    let same = row(
        c,
        "SELECT id FROM reports WHERE room_id = $1 AND reporter = $2 AND status = 'open'
           AND user_id = $3 AND message_id IS NOT DISTINCT FROM $4",
        &[&room, &reporter, &user, &message],
    )
    .await?;
    if let Some(same) = same {
        let report = by_id(c, room, same.try_get(0)?).await?.ok_or(StoreError::NotFound)?;
        return Ok(((report, false), Vec::new()));
    }
    let open: i64 = row(
        c,
        "SELECT COUNT(*) FROM reports WHERE room_id = $1 AND reporter = $2 AND status = 'open'",
        &[&room, &reporter],
    )
    .await?
    .map(|r| r.try_get(0))
    .transpose()?
    .unwrap_or(0);
    if open >= MAX_OPEN_REPORTS {
        return Err(StoreError::Denied("too many of your reports are still open in this room").into());
    }
    let inserted = row(
        c,
        "INSERT INTO reports (room_id, reporter, user_id, message_id, reason, created_at)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        &[&room, &reporter, &user, &message, &reason, &now_ms()],
    )
    .await?
    .ok_or_else(|| StoreError::Fatal("no id for a report".into()))?;
    let report = by_id(c, room, inserted.try_get(0)?).await?.ok_or(StoreError::NotFound)?;
    Ok(((report, true), Vec::new()))
}

/// Refuses an actor who may not handle the room's reports.
async fn require_handler(c: &impl GenericClient, room: &str, actor: &str) -> Pg<()> {
    let actor_role = acting_role_if_any(c, room, actor).await?.ok_or(StoreError::NotFound)?;
    if policy::may(Action::HandleReports, Some(actor_role), None) {
        Ok(())
    } else {
        Err(StoreError::Forbidden.into())
    }
}

pub(super) async fn list(
    c: &impl GenericClient,
    room: &str,
    actor: &str,
    open: bool,
    before: Option<u64>,
    limit: u32,
) -> Pg<Vec<Report>> {
    require_handler(c, room, actor).await?;
    let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
    let sql = format!(
        "SELECT {COLUMNS} FROM reports WHERE room_id = $1 AND status = $2 AND id < $3 ORDER BY id DESC LIMIT $4"
    );
    let status = if open { "open" } else { "resolved" };
    rows(c, &sql, &[&room, &status, &before, &i64::from(limit)]).await?.iter().map(report_of).collect()
}

pub(super) async fn one(c: &impl GenericClient, room: &str, actor: &str, id: u64) -> Pg<Report> {
    require_handler(c, room, actor).await?;
    let id = i64::try_from(id).map_err(|_| StoreError::NotFound)?;
    Ok(by_id(c, room, id).await?.ok_or(StoreError::NotFound)?)
}

pub(super) async fn resolve(
    c: &impl GenericClient,
    room: &str,
    actor: &str,
    id: u64,
    resolution: &str,
    reason: Option<&str>,
) -> Written<Report> {
    require_handler(c, room, actor).await?;
    let id = i64::try_from(id).map_err(|_| StoreError::NotFound)?;
    let found = row(
        c,
        &format!("SELECT {COLUMNS} FROM reports WHERE id = $1 AND room_id = $2 FOR UPDATE"),
        &[&id, &room],
    )
    .await?;
    let report = found.as_ref().map(report_of).transpose()?.ok_or(StoreError::NotFound)?;
    if report.status != "open" {
        return Err(StoreError::Denied("this report is already resolved").into());
    }
    super::queries::exec(
        c,
        "UPDATE reports SET status = 'resolved', resolved_by = $2, resolution = $3, resolved_at = $4 WHERE id = $1",
        &[&id, &actor, &resolution, &now_ms()],
    )
    .await?;
    let detail = format!("report {id}: {resolution}");
    audit::record(c, room, actor, "resolve_report", Some(&report.user_id), Some(&detail), reason).await?;
    Ok((by_id(c, room, id).await?.ok_or(StoreError::NotFound)?, Vec::new()))
}

pub(super) async fn moderator_ids(c: &impl GenericClient, room: &str) -> Pg<Vec<String>> {
    rows(
        c,
        "SELECT user_id FROM members WHERE room_id = $1 AND role IN ('owner', 'admin', 'moderator') LIMIT 1000",
        &[&room],
    )
    .await?
    .iter()
    .map(|r| Ok(r.try_get(0)?))
    .collect()
}
