//! The SQL behind each store call, as plain functions over a connection: writes run inside the
//! writer's transaction, reads on a pooled read-only connection.

use rusqlite::{Connection, OptionalExtension, Row, params};
use switchboard_protocol::frames::{DeleteEvent, EditEvent, MemberEvent};
use switchboard_protocol::rest::UserSettings;
use switchboard_protocol::{
    AddPolicy, Invite, MemberChange, Message, Role, Room, RoomKind, TimelineEvent, User,
};

use super::audit;
use super::sanctions;
use crate::moderation::policy::{self, Action};
use crate::store::{
    AddOutcome, Appended, CreatedRoom, Credentials, ExternalUser, HistoryPage, LoggedEvent, NewMessage,
    NewRoom, NewSession, SanctionKind, StoreError, StoreResult, now_ms, rfc3339_ms,
};

/// Pending invites one user may hold; past it, older ones must be answered first.
const MAX_PENDING_INVITES: i64 = 200;

impl From<rusqlite::Error> for StoreError {
    /// What passes (a busy or locked database, I/O trouble, a full disk) may be retried;
    /// anything else (a constraint or schema the code did not expect, bad data) will fail again.
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            Some(
                C::DatabaseBusy
                | C::DatabaseLocked
                | C::SystemIoFailure
                | C::DiskFull
                | C::CannotOpen
                | C::OutOfMemory
                | C::FileLockingProtocolFailed,
            ) => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Fatal(e.to_string()),
        }
    }
}

pub(super) type Written<T> = StoreResult<(T, Vec<TimelineEvent>)>;

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
pub(super) fn external_user(c: &Connection, id: &str) -> StoreResult<Option<ExternalUser>> {
    let found = c
        .prepare_cached("SELECT id, username, external, sessions_ended_at FROM users WHERE id = ?1")?
        .query_row([id], |r| {
            let user = User { id: r.get(0)?, username: r.get(1)? };
            Ok((ExternalUser { user, sessions_ended_at: r.get(3)? }, r.get::<_, bool>(2)?))
        })
        .optional()?;
    match found {
        Some((u, true)) => Ok(Some(u)),
        Some((_, false)) => Err(StoreError::Conflict("this id belongs to a local account")),
        None => Ok(None),
    }
}

pub(super) fn ensure_external_user(c: &Connection, id: &str, candidates: &[String]) -> Written<ExternalUser> {
    if let Some(u) = external_user(c, id)? {
        return Ok((u, Vec::new()));
    }
    for name in candidates {
        match insert_user(c, id, name, None, true) {
            Ok(user) => return Ok((ExternalUser { user, sessions_ended_at: None }, Vec::new())),
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
        members: Some(seq_of(r.get(7)?)),
        online: None,
    })
}

/// Unread is kept by the writes: messages after the marker (`msg_count - read_ord`), less the
/// deleted ones after it, found through a partial index of deleted messages and capped.
const ROOM_COLUMNS: &str = "r.id, r.name, r.kind, r.last_seq, mb.role, mb.read_seq,
    CASE WHEN mb.user_id IS NULL THEN NULL ELSE
      MAX(0, r.msg_count - mb.read_ord - (SELECT COUNT(*) FROM (SELECT 1 FROM messages d
         WHERE d.room_id = r.id AND d.deleted = 1 AND d.seq > mb.read_seq LIMIT 1000))) END, r.member_count";

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

pub(super) fn room_kind(c: &Connection, room: &str) -> StoreResult<Option<RoomKind>> {
    let kind: Option<String> = c
        .prepare_cached("SELECT kind FROM rooms WHERE id = ?1")?
        .query_row([room], |r| r.get(0))
        .optional()?;
    Ok(kind.as_deref().and_then(RoomKind::parse))
}

/// The caller's role, or the error that hides a private room from a non-member.
pub(super) fn require_member(c: &Connection, room: &str, user: &str) -> StoreResult<Role> {
    if let Some(role) = role(c, room, user)? {
        return Ok(role);
    }
    match room_kind(c, room)? {
        Some(RoomKind::Public) => Err(StoreError::NotMember),
        _ => Err(StoreError::NotFound),
    }
}

/// The role a moderation action counts for the actor: a server-wide admin acts with an owner's
/// rights in any room that exists, member or not; anyone else with their role (or the error
/// that hides a private room from a non-member).
pub(super) fn acting_role(c: &Connection, room: &str, actor: &str) -> StoreResult<Role> {
    match acting_role_if_any(c, room, actor)? {
        Some(role) => Ok(role),
        None => require_member(c, room, actor),
    }
}

/// [`acting_role`], with `None` for someone with no standing in the room.
pub(super) fn acting_role_if_any(c: &Connection, room: &str, actor: &str) -> StoreResult<Option<Role>> {
    let admin: Option<i64> = c
        .prepare_cached("SELECT 1 FROM server_admins WHERE user_id = ?1")?
        .query_row([actor], |r| r.get(0))
        .optional()?;
    if admin.is_some() && room_kind(c, room)?.is_some() {
        return Ok(Some(Role::Owner));
    }
    role(c, room, actor)
}

pub(super) fn set_server_admins(c: &Connection, admins: &[String]) -> Written<()> {
    c.prepare_cached("DELETE FROM server_admins")?.execute([])?;
    for a in admins {
        c.prepare_cached("INSERT OR IGNORE INTO server_admins (user_id) VALUES (?1)")?.execute([a])?;
    }
    Ok(((), Vec::new()))
}

pub(super) fn members(c: &Connection, room: &str) -> StoreResult<Vec<crate::store::RoomMember>> {
    let mut stmt = c.prepare_cached(
        "SELECT u.id, u.username, mb.role, mb.read_seq FROM members mb JOIN users u ON u.id = mb.user_id
         WHERE mb.room_id = ?1 ORDER BY u.username",
    )?;
    let rows = stmt.query_map([room], |r| {
        let role: String = r.get(2)?;
        Ok(crate::store::RoomMember {
            user: User { id: r.get(0)?, username: r.get(1)? },
            role: Role::parse(&role).unwrap_or(Role::Member),
            read_seq: seq_of(r.get(3)?),
        })
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

pub(super) fn member_event(
    c: &Connection,
    room: &str,
    user: &str,
    change: MemberChange,
) -> StoreResult<TimelineEvent> {
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
    c.prepare_cached(
        "UPDATE members SET read_seq = ?3, read_ord = (SELECT msg_count FROM rooms WHERE id = ?1)
         WHERE room_id = ?1 AND user_id = ?2",
    )?
    .execute(params![room, user, to_i64(ev.seq())])?;
    c.prepare_cached("DELETE FROM invites WHERE room_id = ?1 AND user_id = ?2")?.execute([room, user])?;
    Ok(ev)
}

fn dm_key(a: &str, b: &str) -> String {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    serde_json::json!([x, y]).to_string()
}

/// Whether either user has blocked the other.
fn blocked_either(c: &Connection, a: &str, b: &str) -> StoreResult<bool> {
    Ok(c.prepare_cached(
        "SELECT 1 FROM blocks WHERE (user_id = ?1 AND blocked = ?2) OR (user_id = ?2 AND blocked = ?1)",
    )?
    .query_row([a, b], |_| Ok(()))
    .optional()?
    .is_some())
}

fn has_blocked(c: &Connection, user: &str, target: &str) -> StoreResult<bool> {
    Ok(c.prepare_cached("SELECT 1 FROM blocks WHERE user_id = ?1 AND blocked = ?2")?
        .query_row([user, target], |_| Ok(()))
        .optional()?
        .is_some())
}

fn add_policy(c: &Connection, user: &str) -> StoreResult<Option<AddPolicy>> {
    let p: Option<String> = c
        .prepare_cached("SELECT add_policy FROM users WHERE id = ?1")?
        .query_row([user], |r| r.get(0))
        .optional()?;
    Ok(p.map(|p| AddPolicy::parse(&p).unwrap_or_default()))
}

fn removed_by_moderator(c: &Connection, room: &str, user: &str) -> StoreResult<bool> {
    Ok(c.prepare_cached("SELECT 1 FROM removals WHERE room_id = ?1 AND user_id = ?2")?
        .query_row([room, user], |_| Ok(()))
        .optional()?
        .is_some())
}

/// What adding `target` to `room` by `actor` (whose role there is `actor_role`) will do; checks
/// only, so that a refusal writes nothing.
enum AddPlan {
    Member,
    Add,
    Invite,
}

fn plan_add(
    c: &Connection,
    room: &str,
    kind: RoomKind,
    actor: &str,
    actor_role: Role,
    target: &str,
) -> StoreResult<AddPlan> {
    if kind == RoomKind::Dm {
        return Err(StoreError::Conflict("a dm cannot take more members"));
    }
    if kind == RoomKind::Private && !policy::may(Action::AddToPrivateRoom, Some(actor_role), None) {
        return Err(StoreError::Denied("only moderators may add people to a private room"));
    }
    let Some(policy) = add_policy(c, target)? else {
        return Err(StoreError::NotFound);
    };
    if role(c, room, target)?.is_some() {
        return Ok(AddPlan::Member);
    }
    if has_blocked(c, target, actor)? {
        return Err(StoreError::Blocked);
    }
    // A ban holds against everyone's adds until it is lifted or ends.
    sanctions::check(c, room, target, SanctionKind::Ban)?;
    if removed_by_moderator(c, room, target)?
        && !policy::may(Action::AddToPrivateRoom, Some(actor_role), None)
    {
        return Err(StoreError::Denied("a moderator removed this user; only a moderator may add them again"));
    }
    match policy {
        AddPolicy::Nobody => Err(StoreError::NotAccepting),
        AddPolicy::Anyone => Ok(AddPlan::Add),
        AddPolicy::Invite => {
            check_invite_room(c, target)?;
            Ok(AddPlan::Invite)
        }
    }
}

/// Refuses another invite for a user who already holds the most pending ones.
fn check_invite_room(c: &Connection, target: &str) -> StoreResult<()> {
    let pending: i64 = c
        .prepare_cached("SELECT COUNT(*) FROM invites WHERE user_id = ?1")?
        .query_row([target], |r| r.get(0))?;
    if pending >= MAX_PENDING_INVITES {
        return Err(StoreError::Conflict("this user has too many pending invites"));
    }
    Ok(())
}

fn carry_out_add(
    c: &Connection,
    room: &str,
    actor: &str,
    target: &str,
    plan: AddPlan,
) -> Written<AddOutcome> {
    match plan {
        AddPlan::Member => Ok((AddOutcome::AlreadyMember, Vec::new())),
        AddPlan::Add => {
            c.prepare_cached("DELETE FROM removals WHERE room_id = ?1 AND user_id = ?2")?
                .execute([room, target])?;
            let ev = insert_member(c, room, target, Role::Member)?;
            Ok((AddOutcome::Added(ev.clone()), vec![ev]))
        }
        AddPlan::Invite => {
            // An invite from a moderator also lifts the removal, once it is accepted.
            let fresh = c
                .prepare_cached(
                    "INSERT INTO invites (room_id, user_id, inviter, created_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (room_id, user_id) DO NOTHING",
                )?
                .execute(params![room, target, actor, now_ms()])?
                > 0;
            let invite = invite(c, room, target)?.ok_or(StoreError::NotFound)?;
            Ok((AddOutcome::Invited { invite, fresh }, Vec::new()))
        }
    }
}

fn invite(c: &Connection, room: &str, user: &str) -> StoreResult<Option<Invite>> {
    let sql = format!("{INVITE_SELECT} WHERE i.room_id = ?1 AND i.user_id = ?2");
    Ok(c.prepare_cached(&sql)?.query_row([room, user], invite_row).optional()?)
}

const INVITE_SELECT: &str = "SELECT r.id, r.name, r.kind, r.last_seq, u.id, u.username, i.created_at
    FROM invites i JOIN rooms r ON r.id = i.room_id JOIN users u ON u.id = i.inviter";

fn invite_row(r: &Row<'_>) -> rusqlite::Result<Invite> {
    let kind: String = r.get(2)?;
    Ok(Invite {
        room: Room {
            id: r.get(0)?,
            name: r.get(1)?,
            kind: RoomKind::parse(&kind).unwrap_or(RoomKind::Private),
            last_seq: seq_of(r.get(3)?),
            role: None,
            read_seq: None,
            unread: None,
            members: None,
            online: None,
        },
        inviter: User { id: r.get(4)?, username: r.get(5)? },
        created_at: rfc3339_ms(r.get(6)?),
    })
}

pub(super) fn invites(c: &Connection, user: &str) -> StoreResult<Vec<Invite>> {
    let sql = format!("{INVITE_SELECT} WHERE i.user_id = ?1 ORDER BY i.created_at DESC, r.id DESC LIMIT ?2");
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![user, MAX_PENDING_INVITES], invite_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn decline_invite(c: &Connection, room: &str, user: &str) -> Written<()> {
    c.prepare_cached("DELETE FROM invites WHERE room_id = ?1 AND user_id = ?2")?.execute([room, user])?;
    Ok(((), Vec::new()))
}

pub(super) fn withdraw_invite(c: &Connection, room: &str, actor: &str, target: &str) -> Written<()> {
    let role = acting_role(c, room, actor)?;
    let inviter: Option<String> = c
        .prepare_cached("SELECT inviter FROM invites WHERE room_id = ?1 AND user_id = ?2")?
        .query_row([room, target], |r| r.get(0))
        .optional()?;
    match inviter {
        None => Ok(((), Vec::new())),
        Some(by) if by == actor || policy::may(Action::WithdrawOthersInvite, Some(role), None) => {
            c.prepare_cached("DELETE FROM invites WHERE room_id = ?1 AND user_id = ?2")?
                .execute([room, target])?;
            Ok(((), Vec::new()))
        }
        Some(_) => Err(StoreError::Forbidden),
    }
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
            if blocked_either(c, &new.creator, other)? {
                return Err(StoreError::Blocked);
            }
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
                return Ok((CreatedRoom { room, created: false, invited: Vec::new() }, events));
            }
            Some(key)
        }
        _ => None,
    };
    let id = new_id();
    // Everyone else is added as they would be later: by their own add policy (checked before
    // anything is written, so a refusal leaves no room behind).
    let mut plans = Vec::new();
    if new.kind != RoomKind::Dm {
        for m in &others {
            if has_blocked(c, m, &new.creator)? {
                return Err(StoreError::Blocked);
            }
            let plan = match add_policy(c, m)?.unwrap_or_default() {
                AddPolicy::Nobody => return Err(StoreError::NotAccepting),
                AddPolicy::Anyone => AddPlan::Add,
                AddPolicy::Invite => {
                    check_invite_room(c, m)?;
                    AddPlan::Invite
                }
            };
            plans.push((*m, plan));
        }
    }
    c.prepare_cached(
        "INSERT INTO rooms (id, name, kind, created_by, last_seq, dm_key, created_at)
         VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)",
    )?
    .execute(params![id, new.name, new.kind.as_str(), new.creator, key, now_ms()])?;
    // A dm has no owner: neither person can remove the other or delete their messages.
    let creator_role = if new.kind == RoomKind::Dm { Role::Member } else { Role::Owner };
    let mut events = vec![insert_member(c, &id, &new.creator, creator_role)?];
    if new.kind == RoomKind::Dm {
        for m in others {
            events.push(insert_member(c, &id, m, Role::Member)?);
        }
    }
    let mut invited = Vec::new();
    for (m, plan) in plans {
        let (outcome, evs) = carry_out_add(c, &id, &new.creator, m, plan)?;
        events.extend(evs);
        if let AddOutcome::Invited { invite, .. } = outcome {
            invited.push((m.to_owned(), invite));
        }
    }
    let room = room_for(c, &id, &new.creator)?;
    Ok((CreatedRoom { room, created: true, invited }, events))
}

pub(super) fn join(c: &Connection, room: &str, user: &str) -> Written<Option<TimelineEvent>> {
    if role(c, room, user)?.is_some() {
        return Ok((None, Vec::new()));
    }
    let inviter: Option<String> = c
        .prepare_cached("SELECT inviter FROM invites WHERE room_id = ?1 AND user_id = ?2")?
        .query_row([room, user], |r| r.get(0))
        .optional()?;
    let kind = room_kind(c, room)?;
    if let (Some(inviter), Some(RoomKind::Private)) = (&inviter, kind) {
        // An invite stands only while its inviter may still add people to the room.
        if !policy::may(Action::AddToPrivateRoom, role(c, room, inviter)?, None) {
            return Err(StoreError::Denied("this invite is no longer valid"));
        }
    }
    sanctions::check(c, room, user, SanctionKind::Ban)?;
    let invited = inviter.is_some();
    match kind {
        Some(RoomKind::Public) | Some(RoomKind::Private) if invited => {}
        Some(RoomKind::Public) => {
            if removed_by_moderator(c, room, user)? {
                return Err(StoreError::Denied("a moderator removed you from this room"));
            }
        }
        _ => return Err(StoreError::NotFound),
    }
    c.prepare_cached("DELETE FROM removals WHERE room_id = ?1 AND user_id = ?2")?.execute([room, user])?;
    let ev = insert_member(c, room, user, Role::Member)?;
    Ok((Some(ev.clone()), vec![ev]))
}

pub(super) fn add_member(c: &Connection, room: &str, actor: &str, target: &str) -> Written<AddOutcome> {
    let actor_role = acting_role(c, room, actor)?;
    let kind = room_kind(c, room)?.ok_or(StoreError::NotFound)?;
    let plan = plan_add(c, room, kind, actor, actor_role, target)?;
    carry_out_add(c, room, actor, target, plan)
}

pub(super) fn remove_member(c: &Connection, room: &str, actor: &str, target: &str) -> Written<TimelineEvent> {
    let actor_role = acting_role(c, room, actor)?;
    let kind = room_kind(c, room)?.ok_or(StoreError::NotFound)?;
    let target_role = role(c, room, target)?;
    let change = if actor == target {
        MemberChange::Left
    } else if kind != RoomKind::Dm && policy::may(Action::RemoveMember, Some(actor_role), target_role) {
        MemberChange::Removed
    } else {
        return Err(StoreError::Forbidden);
    };
    if target_role.is_none() {
        return Err(StoreError::NotFound);
    }
    c.prepare_cached("DELETE FROM members WHERE room_id = ?1 AND user_id = ?2")?.execute([room, target])?;
    if change == MemberChange::Removed {
        c.prepare_cached(
            "INSERT INTO removals (room_id, user_id, by_user, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (room_id, user_id) DO UPDATE SET by_user = excluded.by_user, at = excluded.at",
        )?
        .execute(params![room, target, actor, now_ms()])?;
        // A pending invite from before the removal no longer stands.
        c.prepare_cached("DELETE FROM invites WHERE room_id = ?1 AND user_id = ?2")?
            .execute([room, target])?;
    }
    let ev = member_event(c, room, target, change)?;
    if change == MemberChange::Removed {
        audit::record(c, room, actor, "remove_member", Some(target), None, None)?;
    }
    Ok((ev.clone(), vec![ev]))
}

// ---- settings, blocks, sessions ----

pub(super) fn settings(c: &Connection, user: &str) -> StoreResult<UserSettings> {
    Ok(UserSettings { add_policy: add_policy(c, user)?.ok_or(StoreError::NotFound)? })
}

pub(super) fn set_settings(c: &Connection, user: &str, s: UserSettings) -> Written<()> {
    let n = c
        .prepare_cached("UPDATE users SET add_policy = ?2 WHERE id = ?1")?
        .execute([user, s.add_policy.as_str()])?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(((), Vec::new()))
}

pub(super) fn block(c: &Connection, user_id: &str, target: &str) -> Written<()> {
    if user_id == target {
        return Err(StoreError::Invalid("you cannot block yourself"));
    }
    if user(c, target)?.is_none() {
        return Err(StoreError::NotFound);
    }
    c.prepare_cached(
        "INSERT INTO blocks (user_id, blocked, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
    )?
    .execute(params![user_id, target, now_ms()])?;
    c.prepare_cached("DELETE FROM invites WHERE user_id = ?1 AND inviter = ?2")?
        .execute([user_id, target])?;
    Ok(((), Vec::new()))
}

pub(super) fn unblock(c: &Connection, user: &str, target: &str) -> Written<()> {
    c.prepare_cached("DELETE FROM blocks WHERE user_id = ?1 AND blocked = ?2")?.execute([user, target])?;
    Ok(((), Vec::new()))
}

pub(super) fn blocks(c: &Connection, user: &str) -> StoreResult<Vec<User>> {
    let mut stmt = c.prepare_cached(
        "SELECT u.id, u.username FROM blocks b JOIN users u ON u.id = b.blocked
         WHERE b.user_id = ?1 ORDER BY u.username LIMIT 10000",
    )?;
    let rows = stmt.query_map([user], |r| Ok(User { id: r.get(0)?, username: r.get(1)? }))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn dm_blocked(c: &Connection, room: &str, user: &str) -> StoreResult<bool> {
    match sender_standing(c, room, user) {
        Ok((_, Some(peer))) => blocked_either(c, user, &peer),
        Ok((_, None)) => Ok(false),
        Err(StoreError::NotFound | StoreError::NotMember) => Ok(false),
        Err(e) => Err(e),
    }
}

pub(super) fn create_session(c: &Connection, user: &str, expires_at: i64, keep: u32) -> Written<NewSession> {
    let now = now_ms();
    // Expired and ended sessions are of no further use.
    c.prepare_cached(
        "DELETE FROM sessions WHERE user_id = ?1 AND (expires_at < ?2 OR ended_at IS NOT NULL)",
    )?
    .execute(params![user, now])?;
    let id = new_id();
    c.prepare_cached("INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![id, user, now, expires_at])?;
    // Past the cap, the oldest sessions end (as a browser that signs in again and again would
    // otherwise pile them up); they are named, so that their connections close too.
    let mut stmt = c.prepare_cached(
        "DELETE FROM sessions WHERE user_id = ?1 AND id NOT IN
           (SELECT id FROM sessions WHERE user_id = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2)
         RETURNING id",
    )?;
    let ended = stmt
        .query_map(params![user, i64::from(keep.max(1))], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((NewSession { id, ended }, Vec::new()))
}

pub(super) fn session_user(c: &Connection, session: &str) -> StoreResult<Option<User>> {
    Ok(c.prepare_cached(
        "SELECT u.id, u.username FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.id = ?1 AND s.ended_at IS NULL AND s.expires_at > ?2",
    )?
    .query_row(params![session, now_ms()], |r| Ok(User { id: r.get(0)?, username: r.get(1)? }))
    .optional()?)
}

pub(super) fn end_session(c: &Connection, user: &str, session: &str) -> Written<()> {
    c.prepare_cached("DELETE FROM sessions WHERE id = ?1 AND user_id = ?2")?.execute([session, user])?;
    Ok(((), Vec::new()))
}

pub(super) fn end_all_sessions(c: &Connection, user: &str) -> Written<()> {
    c.prepare_cached("DELETE FROM sessions WHERE user_id = ?1")?.execute([user])?;
    c.prepare_cached("UPDATE users SET sessions_ended_at = ?2 WHERE id = ?1")?
        .execute(params![user, now_ms()])?;
    Ok(((), Vec::new()))
}

pub(super) fn sessions_ended_at(c: &Connection, user: &str) -> StoreResult<Option<i64>> {
    Ok(c.prepare_cached("SELECT sessions_ended_at FROM users WHERE id = ?1")?
        .query_row([user], |r| r.get::<_, Option<i64>>(0))
        .optional()?
        .flatten())
}

// ---- messages and the timeline ----

const MESSAGE_COLUMNS: &str = "id, room_id, seq, author, body, ts, client_msg_id, edited_at, deleted, shadow";

fn message_row(r: &Row<'_>) -> rusqlite::Result<Message> {
    let deleted: bool = r.get(8)?;
    let author: String = r.get(3)?;
    let shadow: bool = r.get(9)?;
    Ok(Message {
        id: r.get(0)?,
        room: r.get(1)?,
        seq: seq_of(r.get(2)?),
        only_to: shadow.then(|| author.clone()),
        author,
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

/// The author's role and, for a dm, the other person: what a send must check before it writes.
fn sender_standing(c: &Connection, room: &str, author: &str) -> StoreResult<(Role, Option<String>)> {
    let found: Option<(String, String, Option<String>)> = c
        .prepare_cached(
            "SELECT mb.role, r.kind, r.dm_key FROM members mb JOIN rooms r ON r.id = mb.room_id
             WHERE mb.room_id = ?1 AND mb.user_id = ?2",
        )?
        .query_row([room, author], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((role, kind, key)) = found else {
        return Err(require_member(c, room, author).err().unwrap_or(StoreError::NotFound));
    };
    let role = Role::parse(&role).unwrap_or(Role::Member);
    Ok((role, dm_peer(&kind, key, author)))
}

/// The other person of a dm (a room of kind `kind` whose pair is `key`), seen from `author`.
fn dm_peer(kind: &str, key: Option<String>, author: &str) -> Option<String> {
    match (RoomKind::parse(kind), key) {
        (Some(RoomKind::Dm), Some(key)) => serde_json::from_str::<Vec<String>>(&key)
            .ok()
            .and_then(|pair| pair.into_iter().find(|u| u != author)),
        _ => None,
    }
}

/// What a send must know of its author in the room, read in one statement (it was four:
/// membership, mute, slow mode and shadow ban, on the writer's path for every message).
struct SendStanding {
    role: Role,
    /// The other person, in a dm.
    dm_peer: Option<String>,
    /// The mute standing against the author (`Some(None)`: for good), if one does.
    mute: Option<Option<i64>>,
    slow_mode_secs: i64,
    /// When the author last sent in the room, if it is in slow mode and they have.
    last_sent: Option<i64>,
    shadowed: bool,
}

fn send_standing(c: &Connection, room: &str, author: &str) -> StoreResult<SendStanding> {
    type Found = (String, String, Option<String>, i64, Option<i64>, bool, Option<i64>, bool, Option<i64>);
    let found: Option<Found> = c
        .prepare_cached(
            "SELECT mb.role, r.kind, r.dm_key, r.slow_mode_secs, l.at,
                    mu.kind IS NOT NULL, mu.until, sh.kind IS NOT NULL, sh.until
               FROM members mb JOIN rooms r ON r.id = mb.room_id
               LEFT JOIN last_sends l ON l.room_id = mb.room_id AND l.user_id = mb.user_id
               LEFT JOIN sanctions mu ON mu.room_id = mb.room_id AND mu.user_id = mb.user_id
                                     AND mu.kind = 'muted'
               LEFT JOIN sanctions sh ON sh.room_id = mb.room_id AND sh.user_id = mb.user_id
                                     AND sh.kind = 'shadow_banned'
              WHERE mb.room_id = ?1 AND mb.user_id = ?2",
        )?
        .query_row([room, author], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
            ))
        })
        .optional()?;
    let Some((role, kind, key, slow_mode_secs, last_sent, muted, mute_until, shadowed, shadow_until)) = found
    else {
        return Err(require_member(c, room, author).err().unwrap_or(StoreError::NotFound));
    };
    Ok(SendStanding {
        role: Role::parse(&role).unwrap_or(Role::Member),
        dm_peer: dm_peer(&kind, key, author),
        mute: if muted { SanctionKind::standing(mute_until) } else { None },
        slow_mode_secs,
        last_sent,
        shadowed: shadowed && SanctionKind::standing(shadow_until).is_some(),
    })
}

pub(super) fn append(c: &Connection, m: NewMessage) -> Written<Appended> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE author = ?1 AND client_msg_id = ?2");
    let existing =
        c.prepare_cached(&sql)?.query_row([&m.author, &m.client_msg_id], message_row).optional()?;
    if let Some(first) = existing {
        if first.room != m.room {
            return Err(StoreError::IdempotencyConflict);
        }
        // A retry answers only to a member: someone removed since cannot read the room
        // through their old keys.
        require_member(c, &m.room, &m.author)?;
        return Ok((Appended { message: first, created: false }, Vec::new()));
    }
    let standing = send_standing(c, &m.room, &m.author)?;
    if let Some(peer) = standing.dm_peer
        && blocked_either(c, &m.author, &peer)?
    {
        return Err(StoreError::Blocked);
    }
    if let Some(until) = standing.mute {
        return Err(StoreError::Sanctioned { kind: SanctionKind::Mute.as_str(), until_ms: until });
    }
    let slow = sanctions::slow_mode_holds(standing.slow_mode_secs, standing.last_sent, standing.role)?;
    // A shadow-banned author's message takes a seq but no place in others' unread counts.
    let shadow = standing.shadowed;
    let (seq, ord): (i64, i64) = c
        .prepare_cached(
            "UPDATE rooms SET last_seq = last_seq + 1, msg_count = msg_count + ?2 WHERE id = ?1
             RETURNING last_seq, msg_count",
        )?
        .query_row(params![&m.room, i64::from(!shadow)], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or(StoreError::NotFound)?;
    let id = new_id();
    let ts = now_ms();
    c.prepare_cached(
        "INSERT INTO messages (id, room_id, seq, author, client_msg_id, body, ts, ord, shadow)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![id, m.room, seq, m.author, m.client_msg_id, m.body, ts, ord, shadow])?;
    // Writing in a room reads it: the author's marker moves to their message, which is also
    // what keeps their own messages out of their unread count.
    c.prepare_cached("UPDATE members SET read_seq = ?3, read_ord = ?4 WHERE room_id = ?1 AND user_id = ?2")?
        .execute(params![m.room, m.author, seq, ord])?;
    if slow {
        sanctions::record_send(c, &m.room, &m.author, ts)?;
    }
    let message = Message {
        id,
        room: m.room,
        seq: seq_of(seq),
        only_to: shadow.then(|| m.author.clone()),
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
    let (_, dm_peer) = sender_standing(c, room, actor)?;
    if let Some(peer) = dm_peer
        && blocked_either(c, actor, &peer)?
    {
        return Err(StoreError::Blocked);
    }
    // An edit says something new to the room: a mute holds against it as against a send.
    sanctions::check(c, room, actor, SanctionKind::Mute)?;
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
        only_to: msg.only_to,
    });
    Ok((ev.clone(), vec![ev]))
}

pub(super) fn delete(c: &Connection, room: &str, actor: &str, id: &str) -> Written<TimelineEvent> {
    let role = acting_role(c, room, actor)?;
    let msg = message(c, room, id)?.filter(|m| m.deleted.is_none()).ok_or(StoreError::NotFound)?;
    let others = msg.author != actor;
    if others && !policy::may(Action::DeleteOthersMessage, Some(role), self::role(c, room, &msg.author)?) {
        return Err(StoreError::Forbidden);
    }
    if others {
        audit::record(c, room, actor, "delete_message", Some(&msg.author), Some(id), None)?;
    }
    let ev = erase(c, room, msg)?;
    Ok((ev.clone(), vec![ev]))
}

/// Most messages one purge deletes (a moderator repeats it for more).
pub(super) const PURGE_MAX: u32 = 1_000;

pub(super) fn purge(c: &Connection, room: &str, actor: &str, target: &str, since_ms: i64) -> Written<u32> {
    let role = acting_role(c, room, actor)?;
    if room_kind(c, room)?.ok_or(StoreError::NotFound)? == RoomKind::Dm {
        return Err(StoreError::Denied("nobody moderates a dm: block instead"));
    }
    if actor == target || !policy::may(Action::DeleteOthersMessage, Some(role), self::role(c, room, target)?)
    {
        return Err(StoreError::Forbidden);
    }
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages
          WHERE room_id = ?1 AND author = ?2 AND ts >= ?3 AND deleted = 0 ORDER BY seq LIMIT ?4"
    );
    let found: Vec<Message> = c
        .prepare_cached(&sql)?
        .query_map(params![room, target, since_ms, PURGE_MAX], message_row)?
        .collect::<Result<_, _>>()?;
    let mut events = Vec::with_capacity(found.len());
    for msg in found {
        events.push(erase(c, room, msg)?);
    }
    let n = u32::try_from(events.len()).unwrap_or(u32::MAX);
    let detail = format!("{n} messages since {}", rfc3339_ms(since_ms));
    audit::record(c, room, actor, "purge", Some(target), Some(&detail), None)?;
    Ok((n, events))
}

/// Deletes a message as its room's next event: the text goes, its edits' text too.
fn erase(c: &Connection, room: &str, msg: Message) -> StoreResult<TimelineEvent> {
    let id = msg.id.as_str();
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
    Ok(TimelineEvent::Delete(DeleteEvent {
        room: room.to_owned(),
        seq,
        id: id.to_owned(),
        only_to: msg.only_to,
    }))
}

pub(super) fn history(
    c: &Connection,
    room: &str,
    viewer: &str,
    page: HistoryPage,
) -> StoreResult<Vec<Message>> {
    let limit = i64::from(page.limit);
    let before = page.before_seq.map_or(i64::MAX, to_i64);
    if let Some(after) = page.after_seq {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = ?1 AND seq > ?2 AND seq < ?3
               AND (shadow = 0 OR author = ?5)
             ORDER BY seq ASC LIMIT ?4"
        );
        let mut stmt = c.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![room, to_i64(after), before, limit, viewer], message_row)?;
        return Ok(rows.collect::<Result<_, _>>()?);
    }
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = ?1 AND seq < ?2
           AND (shadow = 0 OR author = ?4)
         ORDER BY seq DESC LIMIT ?3"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![room, before, limit, viewer], message_row)?;
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
        "SELECT e.seq, e.kind, e.message_id, e.user_id, e.change, e.body, e.ts, NULL, NULL, NULL, NULL, NULL,
                NULL, m.shadow, m.author
           FROM events e LEFT JOIN messages m ON m.id = e.message_id
          WHERE e.room_id = ?1 AND e.seq > ?2
         UNION ALL
         SELECT seq, 'message', id, NULL, NULL, NULL, NULL, author, body, ts, client_msg_id, edited_at, deleted,
                shadow, author
           FROM messages WHERE room_id = ?1 AND seq > ?2
         ORDER BY 1 ASC LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![room, to_i64(after), i64::from(limit)], |r| {
        let kind: String = r.get(1)?;
        timeline_row(r, 0, &kind, room.to_owned())
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One timeline event from the columns `timeline` selects, starting at `at`: seq, kind,
/// message id, member user, member change, edit body, event ts, author, message body,
/// message ts, client_msg_id, edited_at, deleted, and for messages and the edits and deletes
/// of messages: whether the message is a shadow-banned author's, and its author.
fn timeline_row(r: &Row<'_>, at: usize, kind: &str, room: String) -> rusqlite::Result<TimelineEvent> {
    let seq = seq_of(r.get(at)?);
    let message_id: Option<String> = r.get(at + 2)?;
    let shadow: Option<bool> = r.get(at + 13)?;
    let only_to = if shadow == Some(true) { r.get::<_, Option<String>>(at + 14)? } else { None };
    Ok(match kind {
        "message" => {
            let deleted: Option<bool> = r.get(at + 12)?;
            TimelineEvent::Message(Message {
                id: message_id.unwrap_or_default(),
                room,
                seq,
                author: r.get::<_, Option<String>>(at + 7)?.unwrap_or_default(),
                body: r.get::<_, Option<String>>(at + 8)?.unwrap_or_default(),
                ts: rfc3339_ms(r.get::<_, Option<i64>>(at + 9)?.unwrap_or_default()),
                client_msg_id: r.get::<_, Option<String>>(at + 10)?.unwrap_or_default(),
                edited_at: r.get::<_, Option<i64>>(at + 11)?.map(rfc3339_ms),
                deleted: deleted.filter(|d| *d),
                only_to,
            })
        }
        "edit" => TimelineEvent::Edit(EditEvent {
            room,
            seq,
            id: message_id.unwrap_or_default(),
            body: r.get::<_, Option<String>>(at + 5)?.unwrap_or_default(),
            edited_at: rfc3339_ms(r.get::<_, Option<i64>>(at + 6)?.unwrap_or_default()),
            only_to,
        }),
        "delete" => {
            TimelineEvent::Delete(DeleteEvent { room, seq, id: message_id.unwrap_or_default(), only_to })
        }
        _ => {
            let change: Option<String> = r.get(at + 4)?;
            TimelineEvent::Member(MemberEvent {
                room,
                seq,
                user: r.get::<_, Option<String>>(at + 3)?.unwrap_or_default(),
                change: change.as_deref().and_then(MemberChange::parse).unwrap_or(MemberChange::Joined),
            })
        }
    })
}

// ---- the event log ----

pub(super) fn events_after(c: &Connection, after: u64, limit: u32) -> StoreResult<Vec<LoggedEvent>> {
    // Each entry is joined to the timeline row it names: `events` for edits, deletes and member
    // changes, `messages` for messages (in their current state).
    let mut stmt = c.prepare_cached(
        "SELECT l.pos, l.room_id, l.seq,
                COALESCE(e.kind, CASE WHEN m.id IS NOT NULL THEN 'message' END),
                COALESCE(e.message_id, m.id), e.user_id, e.change, e.body, e.ts,
                m.author, m.body, m.ts, m.client_msg_id, m.edited_at, m.deleted,
                COALESCE(m.shadow, em.shadow), COALESCE(m.author, em.author)
           FROM event_log l
           LEFT JOIN events e ON e.room_id = l.room_id AND e.seq = l.seq
           LEFT JOIN messages m ON m.room_id = l.room_id AND m.seq = l.seq
           LEFT JOIN messages em ON em.id = e.message_id
          WHERE l.pos > ?1 ORDER BY l.pos LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![to_i64(after), i64::from(limit)], |r| {
        let pos = seq_of(r.get(0)?);
        let room: String = r.get(1)?;
        let kind: Option<String> = r.get(3)?;
        match kind {
            Some(kind) => Ok(Some(LoggedEvent { pos, event: timeline_row(r, 2, &kind, room)? })),
            None => Ok(None),
        }
    })?;
    let mut out = Vec::new();
    for row in rows {
        match row? {
            Some(ev) => out.push(ev),
            // Cannot happen (entries are written with their events); skipping beats stalling
            // every consumer at this position.
            None => tracing::error!(after, "event log entry without its timeline event; skipped"),
        }
    }
    Ok(out)
}

/// The last position handed out: the log's newest entry or, once pruning emptied the log, the
/// furthest cursor (pruning removes only what every cursor has passed, so nothing handed out
/// lies beyond both).
pub(super) fn log_head(c: &Connection) -> StoreResult<u64> {
    let head: Option<i64> = c
        .prepare_cached(
            "SELECT MAX(p) FROM (SELECT MAX(pos) AS p FROM event_log UNION ALL SELECT MAX(pos) FROM log_cursors)",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(head.map_or(0, seq_of))
}

pub(super) fn cursor(c: &Connection, consumer: &str) -> StoreResult<Option<u64>> {
    let pos: Option<i64> = c
        .prepare_cached("SELECT pos FROM log_cursors WHERE consumer = ?1")?
        .query_row([consumer], |r| r.get(0))
        .optional()?;
    Ok(pos.map(seq_of))
}

pub(super) fn save_cursor(c: &Connection, consumer: &str, pos: u64) -> Written<()> {
    c.prepare_cached(
        "INSERT INTO log_cursors (consumer, pos, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (consumer) DO UPDATE SET pos = MAX(pos, excluded.pos), updated_at = excluded.updated_at",
    )?
    .execute(params![consumer, to_i64(pos), now_ms()])?;
    Ok(((), Vec::new()))
}

/// Entries are deleted in slices, so that one prune never holds the writer for long.
const PRUNE_SLICE: i64 = 2_000;

/// Removes a slice of what every cursor has passed; returns how many entries and the last
/// position removed.
pub(super) fn prune_log(c: &Connection) -> Written<(u64, Option<u64>)> {
    let done: Option<i64> =
        c.prepare_cached("SELECT MIN(pos) FROM log_cursors")?.query_row([], |r| r.get(0))?;
    let Some(done) = done else {
        return Ok(((0, None), Vec::new()));
    };
    let removed = c
        .prepare_cached(
            "DELETE FROM event_log WHERE pos IN (SELECT pos FROM event_log WHERE pos <= ?1 ORDER BY pos LIMIT ?2)
             RETURNING pos",
        )?
        .query_map(params![done, PRUNE_SLICE], |r| r.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let through = removed.iter().max().map(|&p| seq_of(p));
    Ok(((removed.len() as u64, through), Vec::new()))
}

pub(super) fn lease(c: &Connection, name: &str, holder: &str, ttl_ms: u64) -> Written<bool> {
    let now = now_ms();
    let until = now.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
    let held: Option<String> = c
        .prepare_cached(
            "INSERT INTO leases (name, holder, until) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
               WHERE leases.holder = excluded.holder OR leases.until < ?4
             RETURNING holder",
        )?
        .query_row(params![name, holder, until, now], |r| r.get(0))
        .optional()?;
    Ok((held.as_deref() == Some(holder), Vec::new()))
}

pub(super) fn last_seqs(c: &Connection, rooms: &[String]) -> StoreResult<Vec<(String, u64)>> {
    let mut stmt = c.prepare_cached("SELECT id, last_seq FROM rooms WHERE id = ?1")?;
    let mut out = Vec::with_capacity(rooms.len());
    for room in rooms {
        if let Some(seq) = stmt.query_row([room], |r| r.get::<_, i64>(1)).optional()? {
            out.push((room.clone(), seq_of(seq)));
        }
    }
    Ok(out)
}

pub(super) fn mark_read(c: &Connection, room: &str, user: &str, seq: u64) -> Written<u64> {
    let read: Option<i64> = c
        .prepare_cached(
            "UPDATE members SET
               read_seq = MAX(read_seq, MIN(?3, (SELECT last_seq FROM rooms WHERE id = ?1))),
               read_ord = MAX(read_ord, COALESCE((SELECT m.ord FROM messages m WHERE m.room_id = ?1
                   AND m.seq <= MIN(?3, (SELECT last_seq FROM rooms WHERE id = ?1))
                   ORDER BY m.seq DESC LIMIT 1), 0))
             WHERE room_id = ?1 AND user_id = ?2 RETURNING read_seq",
        )?
        .query_row(params![room, user, to_i64(seq)], |r| r.get(0))
        .optional()?;
    match read {
        Some(v) => Ok((seq_of(v), Vec::new())),
        None => Err(require_member(c, room, user).err().unwrap_or(StoreError::NotFound)),
    }
}
