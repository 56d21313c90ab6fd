//! The SQL behind each store call, as plain functions over a connection: writes run inside the
//! writer's transaction, reads on a pooled read-only connection.

use rusqlite::{Connection, OptionalExtension, Row, params};
use switchboard_protocol::frames::{DeleteEvent, EditEvent, MemberEvent};
use switchboard_protocol::{MemberChange, Message, Role, Room, RoomKind, TimelineEvent, User};

use crate::store::{
    Appended, CreatedRoom, Credentials, HistoryPage, NewMessage, NewRoom, StoreError, StoreResult, now_ms,
    rfc3339_ms,
};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

type Written<T> = StoreResult<(T, Vec<TimelineEvent>)>;

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation)
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn seq_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

// ---- users ----

pub(super) fn user(c: &Connection, id: &str) -> StoreResult<Option<User>> {
    Ok(c.prepare_cached("SELECT id, username FROM users WHERE id = ?1")?
        .query_row([id], |r| Ok(User { id: r.get(0)?, username: r.get(1)? }))
        .optional()?)
}

pub(super) fn credentials(c: &Connection, username: &str) -> StoreResult<Option<Credentials>> {
    Ok(c.prepare_cached("SELECT id, username, password_hash FROM users WHERE username = ?1")?
        .query_row([username], |r| {
            Ok(Credentials { user: User { id: r.get(0)?, username: r.get(1)? }, password_hash: r.get(2)? })
        })
        .optional()?)
}

fn insert_user(
    c: &Connection,
    id: &str,
    username: &str,
    hash: Option<&str>,
    external: bool,
) -> StoreResult<User> {
    let res = c
        .prepare_cached(
            "INSERT INTO users (id, username, password_hash, external, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![id, username, hash, external, now_ms()]);
    match res {
        Ok(_) => Ok(User { id: id.to_owned(), username: username.to_owned() }),
        Err(e) if is_unique_violation(&e) => Err(StoreError::UsernameTaken),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn create_user(c: &Connection, username: &str, hash: &str) -> Written<User> {
    Ok((insert_user(c, &new_id(), username, Some(hash), false)?, Vec::new()))
}

/// The external user with this id; a local account with the same id is a conflict, so that a
/// token from the operator's backend can never speak for a Switchboard account.
pub(super) fn external_user(c: &Connection, id: &str) -> StoreResult<Option<User>> {
    let found = c
        .prepare_cached("SELECT id, username, external FROM users WHERE id = ?1")?
        .query_row([id], |r| Ok((User { id: r.get(0)?, username: r.get(1)? }, r.get::<_, bool>(2)?)))
        .optional()?;
    match found {
        Some((u, true)) => Ok(Some(u)),
        Some((_, false)) => Err(StoreError::Conflict("this id belongs to a local account")),
        None => Ok(None),
    }
}

pub(super) fn ensure_external_user(c: &Connection, id: &str, candidates: &[String]) -> Written<User> {
    if let Some(u) = external_user(c, id)? {
        return Ok((u, Vec::new()));
    }
    for name in candidates {
        match insert_user(c, id, name, None, true) {
            Ok(u) => return Ok((u, Vec::new())),
            Err(StoreError::UsernameTaken) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::UsernameTaken)
}

// ---- rooms and members ----

fn room_row(r: &Row<'_>) -> rusqlite::Result<Room> {
    let kind: String = r.get(2)?;
    let role: Option<String> = r.get(4)?;
    Ok(Room {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: RoomKind::parse(&kind).unwrap_or(RoomKind::Private),
        last_seq: seq_of(r.get(3)?),
        role: role.as_deref().and_then(Role::parse),
        read_seq: r.get::<_, Option<i64>>(5)?.map(seq_of),
        unread: r.get::<_, Option<i64>>(6)?.map(seq_of),
    })
}

const ROOM_COLUMNS: &str = "r.id, r.name, r.kind, r.last_seq, mb.role, mb.read_seq,
    CASE WHEN mb.user_id IS NULL THEN NULL ELSE
      (SELECT COUNT(*) FROM messages m WHERE m.room_id = r.id AND m.seq > mb.read_seq
         AND m.author != mb.user_id AND m.deleted = 0) END";

pub(super) fn rooms_for(c: &Connection, user: &str) -> StoreResult<Vec<Room>> {
    let sql = format!(
        "SELECT {ROOM_COLUMNS} FROM members mb JOIN rooms r ON r.id = mb.room_id
         WHERE mb.user_id = ?1 ORDER BY r.id"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map([user], room_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn public_rooms(c: &Connection, user: &str, limit: u32) -> StoreResult<Vec<Room>> {
    let sql = format!(
        "SELECT {ROOM_COLUMNS} FROM rooms r
         LEFT JOIN members mb ON mb.room_id = r.id AND mb.user_id = ?1
         WHERE r.kind = 'public' ORDER BY r.name, r.id LIMIT ?2"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![user, limit], room_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn room_for(c: &Connection, room: &str, user: &str) -> StoreResult<Room> {
    let sql = format!(
        "SELECT {ROOM_COLUMNS} FROM rooms r
         LEFT JOIN members mb ON mb.room_id = r.id AND mb.user_id = ?2 WHERE r.id = ?1"
    );
    let found = c.prepare_cached(&sql)?.query_row([room, user], room_row).optional()?;
    match found {
        Some(r) if r.role.is_some() || r.kind == RoomKind::Public => Ok(r),
        _ => Err(StoreError::NotFound),
    }
}

pub(super) fn role(c: &Connection, room: &str, user: &str) -> StoreResult<Option<Role>> {
    let role: Option<String> = c
        .prepare_cached("SELECT role FROM members WHERE room_id = ?1 AND user_id = ?2")?
        .query_row([room, user], |r| r.get(0))
        .optional()?;
    Ok(role.as_deref().and_then(Role::parse))
}

fn room_kind(c: &Connection, room: &str) -> StoreResult<Option<RoomKind>> {
    let kind: Option<String> = c
        .prepare_cached("SELECT kind FROM rooms WHERE id = ?1")?
        .query_row([room], |r| r.get(0))
        .optional()?;
    Ok(kind.as_deref().and_then(RoomKind::parse))
}

/// The caller's role, or the error that hides a private room from a non-member.
fn require_member(c: &Connection, room: &str, user: &str) -> StoreResult<Role> {
    if let Some(role) = role(c, room, user)? {
        return Ok(role);
    }
    match room_kind(c, room)? {
        Some(RoomKind::Public) => Err(StoreError::NotMember),
        _ => Err(StoreError::NotFound),
    }
}

pub(super) fn members(c: &Connection, room: &str) -> StoreResult<Vec<(User, Role)>> {
    let mut stmt = c.prepare_cached(
        "SELECT u.id, u.username, mb.role FROM members mb JOIN users u ON u.id = mb.user_id
         WHERE mb.room_id = ?1 ORDER BY u.username",
    )?;
    let rows = stmt.query_map([room], |r| {
        let role: String = r.get(2)?;
        Ok((User { id: r.get(0)?, username: r.get(1)? }, Role::parse(&role).unwrap_or(Role::Member)))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Takes the room's next `seq`; only ever called inside the writer's transaction.
fn next_seq(c: &Connection, room: &str) -> StoreResult<u64> {
    let seq: Option<i64> = c
        .prepare_cached("UPDATE rooms SET last_seq = last_seq + 1 WHERE id = ?1 RETURNING last_seq")?
        .query_row([room], |r| r.get(0))
        .optional()?;
    seq.map(seq_of).ok_or(StoreError::NotFound)
}

fn member_event(c: &Connection, room: &str, user: &str, change: MemberChange) -> StoreResult<TimelineEvent> {
    let seq = next_seq(c, room)?;
    c.prepare_cached(
        "INSERT INTO events (room_id, seq, kind, user_id, change, ts) VALUES (?1, ?2, 'member', ?3, ?4, ?5)",
    )?
    .execute(params![room, to_i64(seq), user, change.as_str(), now_ms()])?;
    Ok(TimelineEvent::Member(MemberEvent { room: room.to_owned(), seq, user: user.to_owned(), change }))
}

fn insert_member(c: &Connection, room: &str, user: &str, role: Role) -> StoreResult<TimelineEvent> {
    c.prepare_cached("INSERT INTO members (room_id, user_id, role, read_seq) VALUES (?1, ?2, ?3, 0)")?
        .execute(params![room, user, role.as_str()])?;
    let ev = member_event(c, room, user, MemberChange::Joined)?;
    // A new member has read everything up to and including their own arrival.
    c.prepare_cached("UPDATE members SET read_seq = ?3 WHERE room_id = ?1 AND user_id = ?2")?
        .execute(params![room, user, to_i64(ev.seq())])?;
    Ok(ev)
}

fn dm_key(a: &str, b: &str) -> String {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    serde_json::json!([x, y]).to_string()
}

pub(super) fn create_room(c: &Connection, new: NewRoom) -> Written<CreatedRoom> {
    let mut others: Vec<&str> = Vec::new();
    for m in &new.members {
        if m != &new.creator && !others.contains(&m.as_str()) {
            others.push(m);
        }
    }
    for m in &others {
        if user(c, m)?.is_none() {
            return Err(StoreError::NotFound);
        }
    }
    let key = match new.kind {
        RoomKind::Dm => {
            let [other] = others.as_slice() else {
                return Err(StoreError::Invalid("a dm has exactly one other member"));
            };
            let key = dm_key(&new.creator, other);
            let existing: Option<String> = c
                .prepare_cached("SELECT id FROM rooms WHERE dm_key = ?1")?
                .query_row([&key], |r| r.get(0))
                .optional()?;
            if let Some(id) = existing {
                // The pair may have left; the dm is theirs again when asked for.
                let mut events = Vec::new();
                for who in [new.creator.as_str(), other] {
                    if role(c, &id, who)?.is_none() {
                        events.push(insert_member(c, &id, who, Role::Member)?);
                    }
                }
                let room = room_for(c, &id, &new.creator)?;
                return Ok((CreatedRoom { room, created: false }, events));
            }
            Some(key)
        }
        _ => None,
    };
    let id = new_id();
    c.prepare_cached(
        "INSERT INTO rooms (id, name, kind, created_by, last_seq, dm_key, created_at)
         VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)",
    )?
    .execute(params![id, new.name, new.kind.as_str(), new.creator, key, now_ms()])?;
    let mut events = vec![insert_member(c, &id, &new.creator, Role::Owner)?];
    for m in others {
        events.push(insert_member(c, &id, m, Role::Member)?);
    }
    let room = room_for(c, &id, &new.creator)?;
    Ok((CreatedRoom { room, created: true }, events))
}

pub(super) fn join(c: &Connection, room: &str, user: &str) -> Written<Option<TimelineEvent>> {
    if role(c, room, user)?.is_some() {
        return Ok((None, Vec::new()));
    }
    if room_kind(c, room)? != Some(RoomKind::Public) {
        return Err(StoreError::NotFound);
    }
    let ev = insert_member(c, room, user, Role::Member)?;
    Ok((Some(ev.clone()), vec![ev]))
}

pub(super) fn add_member(
    c: &Connection,
    room: &str,
    actor: &str,
    target: &str,
) -> Written<Option<TimelineEvent>> {
    require_member(c, room, actor)?;
    if room_kind(c, room)? == Some(RoomKind::Dm) {
        return Err(StoreError::Conflict("a dm cannot take more members"));
    }
    if user(c, target)?.is_none() {
        return Err(StoreError::NotFound);
    }
    if role(c, room, target)?.is_some() {
        return Ok((None, Vec::new()));
    }
    let ev = insert_member(c, room, target, Role::Member)?;
    Ok((Some(ev.clone()), vec![ev]))
}

pub(super) fn remove_member(c: &Connection, room: &str, actor: &str, target: &str) -> Written<TimelineEvent> {
    let actor_role = require_member(c, room, actor)?;
    let change = if actor == target {
        MemberChange::Left
    } else if actor_role.can_moderate() {
        MemberChange::Removed
    } else {
        return Err(StoreError::Forbidden);
    };
    let n = c
        .prepare_cached("DELETE FROM members WHERE room_id = ?1 AND user_id = ?2")?
        .execute([room, target])?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    let ev = member_event(c, room, target, change)?;
    Ok((ev.clone(), vec![ev]))
}

// ---- messages and the timeline ----

const MESSAGE_COLUMNS: &str = "id, room_id, seq, author, body, ts, client_msg_id, edited_at, deleted";

fn message_row(r: &Row<'_>) -> rusqlite::Result<Message> {
    let deleted: bool = r.get(8)?;
    Ok(Message {
        id: r.get(0)?,
        room: r.get(1)?,
        seq: seq_of(r.get(2)?),
        author: r.get(3)?,
        body: r.get(4)?,
        ts: rfc3339_ms(r.get(5)?),
        client_msg_id: r.get(6)?,
        edited_at: r.get::<_, Option<i64>>(7)?.map(rfc3339_ms),
        deleted: deleted.then_some(true),
    })
}

fn message(c: &Connection, room: &str, id: &str) -> StoreResult<Option<Message>> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1 AND room_id = ?2");
    Ok(c.prepare_cached(&sql)?.query_row([id, room], message_row).optional()?)
}

pub(super) fn append(c: &Connection, m: NewMessage) -> Written<Appended> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE author = ?1 AND client_msg_id = ?2");
    let existing =
        c.prepare_cached(&sql)?.query_row([&m.author, &m.client_msg_id], message_row).optional()?;
    if let Some(first) = existing {
        if first.room != m.room {
            return Err(StoreError::IdempotencyConflict);
        }
        return Ok((Appended { message: first, created: false }, Vec::new()));
    }
    require_member(c, &m.room, &m.author)?;
    let seq = next_seq(c, &m.room)?;
    let id = new_id();
    let ts = now_ms();
    c.prepare_cached(
        "INSERT INTO messages (id, room_id, seq, author, client_msg_id, body, ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![id, m.room, to_i64(seq), m.author, m.client_msg_id, m.body, ts])?;
    let message = Message {
        id,
        room: m.room,
        seq,
        author: m.author,
        body: m.body,
        ts: rfc3339_ms(ts),
        client_msg_id: m.client_msg_id,
        edited_at: None,
        deleted: None,
    };
    let ev = TimelineEvent::Message(message.clone());
    Ok((Appended { message, created: true }, vec![ev]))
}

pub(super) fn edit(c: &Connection, room: &str, actor: &str, id: &str, body: &str) -> Written<TimelineEvent> {
    require_member(c, room, actor)?;
    let msg = message(c, room, id)?.filter(|m| m.deleted.is_none()).ok_or(StoreError::NotFound)?;
    if msg.author != actor {
        return Err(StoreError::Forbidden);
    }
    let seq = next_seq(c, room)?;
    let ts = now_ms();
    c.prepare_cached("UPDATE messages SET body = ?2, edited_at = ?3 WHERE id = ?1")?
        .execute(params![id, body, ts])?;
    c.prepare_cached(
        "INSERT INTO events (room_id, seq, kind, message_id, body, ts) VALUES (?1, ?2, 'edit', ?3, ?4, ?5)",
    )?
    .execute(params![room, to_i64(seq), id, body, ts])?;
    let ev = TimelineEvent::Edit(EditEvent {
        room: room.to_owned(),
        seq,
        id: id.to_owned(),
        body: body.to_owned(),
        edited_at: rfc3339_ms(ts),
    });
    Ok((ev.clone(), vec![ev]))
}

pub(super) fn delete(c: &Connection, room: &str, actor: &str, id: &str) -> Written<TimelineEvent> {
    let role = require_member(c, room, actor)?;
    let msg = message(c, room, id)?.filter(|m| m.deleted.is_none()).ok_or(StoreError::NotFound)?;
    if msg.author != actor && !role.can_moderate() {
        return Err(StoreError::Forbidden);
    }
    let seq = next_seq(c, room)?;
    let ts = now_ms();
    c.prepare_cached("UPDATE messages SET body = '', deleted = 1 WHERE id = ?1")?.execute([id])?;
    // Erase the text of earlier edits too: a deleted message leaves no words behind.
    c.prepare_cached(
        "UPDATE events SET body = NULL WHERE room_id = ?1 AND message_id = ?2 AND kind = 'edit'",
    )?
    .execute([room, id])?;
    c.prepare_cached(
        "INSERT INTO events (room_id, seq, kind, message_id, ts) VALUES (?1, ?2, 'delete', ?3, ?4)",
    )?
    .execute(params![room, to_i64(seq), id, ts])?;
    let ev = TimelineEvent::Delete(DeleteEvent { room: room.to_owned(), seq, id: id.to_owned() });
    Ok((ev.clone(), vec![ev]))
}

pub(super) fn history(c: &Connection, room: &str, page: HistoryPage) -> StoreResult<Vec<Message>> {
    let limit = i64::from(page.limit);
    let before = page.before_seq.map_or(i64::MAX, to_i64);
    if let Some(after) = page.after_seq {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = ?1 AND seq > ?2 AND seq < ?3
             ORDER BY seq ASC LIMIT ?4"
        );
        let mut stmt = c.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![room, to_i64(after), before, limit], message_row)?;
        return Ok(rows.collect::<Result<_, _>>()?);
    }
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = ?1 AND seq < ?2
         ORDER BY seq DESC LIMIT ?3"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![room, before, limit], message_row)?;
    let mut out: Vec<Message> = rows.collect::<Result<_, _>>()?;
    out.reverse();
    Ok(out)
}

pub(super) fn timeline(
    c: &Connection,
    room: &str,
    after: u64,
    limit: u32,
) -> StoreResult<Vec<TimelineEvent>> {
    // Messages live in `messages` (in their current state), every other event in `events`.
    let mut stmt = c.prepare_cached(
        "SELECT seq, kind, message_id, user_id, change, body, ts, NULL, NULL, NULL, NULL, NULL, NULL
           FROM events WHERE room_id = ?1 AND seq > ?2
         UNION ALL
         SELECT seq, 'message', id, NULL, NULL, NULL, NULL, author, body, ts, client_msg_id, edited_at, deleted
           FROM messages WHERE room_id = ?1 AND seq > ?2
         ORDER BY 1 ASC LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![room, to_i64(after), i64::from(limit)], |r| {
        let seq = seq_of(r.get(0)?);
        let kind: String = r.get(1)?;
        let message_id: Option<String> = r.get(2)?;
        let room = room.to_owned();
        Ok(match kind.as_str() {
            "message" => {
                let deleted: Option<bool> = r.get(12)?;
                TimelineEvent::Message(Message {
                    id: message_id.unwrap_or_default(),
                    room,
                    seq,
                    author: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
                    body: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
                    ts: rfc3339_ms(r.get::<_, Option<i64>>(9)?.unwrap_or_default()),
                    client_msg_id: r.get::<_, Option<String>>(10)?.unwrap_or_default(),
                    edited_at: r.get::<_, Option<i64>>(11)?.map(rfc3339_ms),
                    deleted: deleted.filter(|d| *d),
                })
            }
            "edit" => TimelineEvent::Edit(EditEvent {
                room,
                seq,
                id: message_id.unwrap_or_default(),
                body: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                edited_at: rfc3339_ms(r.get(6)?),
            }),
            "delete" => TimelineEvent::Delete(DeleteEvent { room, seq, id: message_id.unwrap_or_default() }),
            _ => {
                let change: Option<String> = r.get(4)?;
                TimelineEvent::Member(MemberEvent {
                    room,
                    seq,
                    user: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                    change: change.as_deref().and_then(MemberChange::parse).unwrap_or(MemberChange::Joined),
                })
            }
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn mark_read(c: &Connection, room: &str, user: &str, seq: u64) -> Written<u64> {
    let read: Option<i64> = c
        .prepare_cached(
            "UPDATE members SET read_seq = MAX(read_seq, MIN(?3, (SELECT last_seq FROM rooms WHERE id = ?1)))
             WHERE room_id = ?1 AND user_id = ?2 RETURNING read_seq",
        )?
        .query_row(params![room, user, to_i64(seq)], |r| r.get(0))
        .optional()?;
    match read {
        Some(v) => Ok((seq_of(v), Vec::new())),
        None => Err(require_member(c, room, user).err().unwrap_or(StoreError::NotFound)),
    }
}
