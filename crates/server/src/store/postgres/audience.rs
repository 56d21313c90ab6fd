//! Who hears a user's presence, and whose presence a user may see: the reads behind presence
//! fanout, `ready` and the presence endpoints.

use deadpool_postgres::GenericClient;

use super::Pg;
use super::queries::rows;

/// A room counts as shared for presence unless it is a dm one of whose two people has not taken
/// part yet (neither sent nor read a message there: `read_ord` is 0): opening a dm with a
/// stranger must not be a way to watch their presence. (`r` is the room.)
const ENGAGED: &str = "(r.kind <> 'dm' OR NOT EXISTS (SELECT 1 FROM members z
    WHERE z.room_id = r.id AND z.read_ord = 0))";

/// Whether either of two users blocked the other (`$1` and `o.user_id`).
const NOT_BLOCKED: &str = "NOT EXISTS (SELECT 1 FROM blocks b
    WHERE (b.user_id = $1 AND b.blocked = o.user_id) OR (b.user_id = o.user_id AND b.blocked = $1))";

pub(super) async fn presence_rooms(c: &impl GenericClient, user: &str) -> Pg<Vec<(String, u64)>> {
    let sql = format!(
        "SELECT r.id, r.member_count FROM members mb JOIN rooms r ON r.id = mb.room_id
         WHERE mb.user_id = $1 AND {ENGAGED} AND (r.kind <> 'dm' OR NOT EXISTS (SELECT 1 FROM members o
           WHERE o.room_id = r.id AND o.user_id <> $1 AND NOT {NOT_BLOCKED}))"
    );
    rows(c, &sql, &[&user])
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, u64::try_from(r.try_get::<_, i64>(1)?).unwrap_or(0))))
        .collect()
}

pub(super) async fn contacts(
    c: &impl GenericClient,
    user: &str,
    room_limit: u64,
    limit: u32,
) -> Pg<Vec<String>> {
    let sql = format!(
        "SELECT DISTINCT o.user_id FROM members mb JOIN rooms r ON r.id = mb.room_id
         JOIN members o ON o.room_id = mb.room_id AND o.user_id <> $1
         WHERE mb.user_id = $1 AND r.member_count <= $2 AND {ENGAGED} AND {NOT_BLOCKED} LIMIT $3"
    );
    let room_limit = i64::try_from(room_limit).unwrap_or(i64::MAX);
    rows(c, &sql, &[&user, &room_limit, &i64::from(limit)]).await?.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

pub(super) async fn visible_users(c: &impl GenericClient, viewer: &str, users: &[String]) -> Pg<Vec<String>> {
    let sql = format!(
        "SELECT DISTINCT o.user_id FROM members mb JOIN rooms r ON r.id = mb.room_id
         JOIN members o ON o.room_id = mb.room_id
         WHERE mb.user_id = $1 AND o.user_id = ANY($2) AND {ENGAGED} AND {NOT_BLOCKED}"
    );
    let found: Vec<String> =
        rows(c, &sql, &[&viewer, &users]).await?.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
    // In the order asked for.
    Ok(users.iter().filter(|u| found.contains(u)).cloned().collect())
}

pub(super) async fn member_ids(c: &impl GenericClient, room: &str) -> Pg<Vec<String>> {
    rows(c, "SELECT user_id FROM members WHERE room_id = $1", &[&room])
        .await?
        .iter()
        .map(|r| Ok(r.try_get(0)?))
        .collect()
}
