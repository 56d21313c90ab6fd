//! Who hears a user's presence, and whose presence a user may see: the reads behind presence
//! fanout, `ready` and the presence endpoints.

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::StoreResult;

/// A room counts as shared for presence unless it is a dm one of whose two people has not taken
/// part yet (neither sent nor read a message there: `read_ord` is 0): opening a dm with a
/// stranger must not be a way to watch their presence. (`r` is the room.)
const ENGAGED: &str = "(r.kind <> 'dm' OR NOT EXISTS (SELECT 1 FROM members z
    WHERE z.room_id = r.id AND z.read_ord = 0))";

/// Whether either of two users blocked the other (`?1` and the column named in the query).
const NOT_BLOCKED: &str = "NOT EXISTS (SELECT 1 FROM blocks b
    WHERE (b.user_id = ?1 AND b.blocked = o.user_id) OR (b.user_id = o.user_id AND b.blocked = ?1))";

pub(super) fn presence_rooms(c: &Connection, user: &str) -> StoreResult<Vec<(String, u64)>> {
    let sql = format!(
        "SELECT r.id, r.member_count FROM members mb JOIN rooms r ON r.id = mb.room_id
         WHERE mb.user_id = ?1 AND {ENGAGED} AND (r.kind <> 'dm' OR NOT EXISTS (SELECT 1 FROM members o
           WHERE o.room_id = r.id AND o.user_id <> ?1 AND NOT {NOT_BLOCKED}))"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map([user], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    rows.map(|r| r.map(|(id, n)| (id, u64::try_from(n).unwrap_or(0))).map_err(Into::into)).collect()
}

pub(super) fn contacts(c: &Connection, user: &str, room_limit: u64, limit: u32) -> StoreResult<Vec<String>> {
    let sql = format!(
        "SELECT DISTINCT o.user_id FROM members mb JOIN rooms r ON r.id = mb.room_id
         JOIN members o ON o.room_id = mb.room_id AND o.user_id <> ?1
         WHERE mb.user_id = ?1 AND r.member_count <= ?2 AND {ENGAGED} AND {NOT_BLOCKED} LIMIT ?3"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let limit_rooms = i64::try_from(room_limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![user, limit_rooms, limit], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn visible_users(c: &Connection, viewer: &str, users: &[String]) -> StoreResult<Vec<String>> {
    let sql = format!(
        "SELECT 1 FROM members o WHERE o.user_id = ?2
           AND o.room_id IN (SELECT r.id FROM members mb JOIN rooms r ON r.id = mb.room_id
             WHERE mb.user_id = ?1 AND {ENGAGED})
           AND {NOT_BLOCKED} LIMIT 1"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let mut out = Vec::new();
    for u in users {
        if stmt.query_row([viewer, u.as_str()], |_| Ok(())).optional()?.is_some() {
            out.push(u.clone());
        }
    }
    Ok(out)
}

pub(super) fn member_ids(c: &Connection, room: &str) -> StoreResult<Vec<String>> {
    let mut stmt = c.prepare_cached("SELECT user_id FROM members WHERE room_id = ?1")?;
    let rows = stmt.query_map([room], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
