//! The SQL behind each store call on PostgreSQL, as functions over a connection or an open
//! transaction. Writes that touch a room's timeline lock the room's row first (`FOR UPDATE`), so
//! the checks after it see every commit before theirs, and the `seq` they take cannot be taken
//! by another node; log positions are taken last, just before the commit.

use deadpool_postgres::GenericClient;
use switchboard_protocol::frames::{DeleteEvent, EditEvent, MemberEvent};
use switchboard_protocol::rest::UserSettings;
use switchboard_protocol::{
    AddPolicy, Invite, MemberChange, Message, Role, Room, RoomKind, TimelineEvent, User,
};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::audit;
use super::sanctions;
use super::{Fail, Pg};
use crate::moderation::policy::{self, Action};
use crate::store::{
    AddOutcome, CreatedRoom, Credentials, ExternalUser, HistoryPage, LoggedEvent, NewRoom, NewSession,
    SanctionKind, StoreError, now_ms, rfc3339_ms,
};

/// Pending invites one user may hold; past it, older ones must be answered first.
const MAX_PENDING_INVITES: i64 = 200;

/// What a write returns: its value and the timeline events it committed.
pub(super) type Written<T> = Pg<(T, Vec<TimelineEvent>)>;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(super) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub(super) fn seq_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(super) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Runs a cached statement.
pub(super) async fn rows(c: &impl GenericClient, sql: &str, params: Params<'_>) -> Pg<Vec<Row>> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query(&st, params).await?)
}

pub(super) async fn row(c: &impl GenericClient, sql: &str, params: Params<'_>) -> Pg<Option<Row>> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&st, params).await?)
}

pub(super) async fn exec(c: &impl GenericClient, sql: &str, params: Params<'_>) -> Pg<u64> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.execute(&st, params).await?)
}

fn is_unique_violation(f: &Fail) -> bool {
    matches!(f, Fail::Pg(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION))
}

// ---- users ----

fn user_of(r: &Row) -> Pg<User> {
    Ok(User { id: r.try_get(0)?, username: r.try_get(1)? })
}

pub(super) async fn user(c: &impl GenericClient, id: &str) -> Pg<Option<User>> {
    row(c, "SELECT id, username FROM users WHERE id = $1", &[&id]).await?.as_ref().map(user_of).transpose()
}

pub(super) async fn credentials(c: &impl GenericClient, username: &str) -> Pg<Option<Credentials>> {
    let found =
        row(c, "SELECT id, username, password_hash FROM users WHERE username = $1", &[&username]).await?;
    found.map(|r| Ok(Credentials { user: user_of(&r)?, password_hash: r.try_get(2)? })).transpose()
}

/// Inserts a user; `None` when the id exists already (another node created it first).
async fn insert_user(
    c: &impl GenericClient,
    id: &str,
    username: &str,
    hash: Option<&str>,
    external: bool,
) -> Pg<Option<User>> {
    let res = row(
        c,
        "INSERT INTO users (id, username, password_hash, external, created_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO NOTHING RETURNING id",
        &[&id, &username, &hash, &external, &now_ms()],
    )
    .await;
    match res {
        Ok(Some(_)) => Ok(Some(User { id: id.to_owned(), username: username.to_owned() })),
        Ok(None) => Ok(None),
        Err(f) if is_unique_violation(&f) => Err(StoreError::UsernameTaken.into()),
        Err(f) => Err(f),
    }
}

pub(super) async fn create_user(c: &impl GenericClient, username: &str, hash: &str) -> Written<User> {
    let user = insert_user(c, &new_id(), username, Some(hash), false).await?;
    Ok((user.ok_or(StoreError::Conflict("user id collision"))?, Vec::new()))
}

pub(super) async fn external_user(c: &impl GenericClient, id: &str) -> Pg<Option<ExternalUser>> {
    let found =
        row(c, "SELECT id, username, external, sessions_ended_at FROM users WHERE id = $1", &[&id]).await?;
    match found {
        Some(r) if r.try_get::<_, bool>(2)? => {
            Ok(Some(ExternalUser { user: user_of(&r)?, sessions_ended_at: r.try_get(3)? }))
        }
        Some(_) => Err(StoreError::Conflict("this id belongs to a local account").into()),
        None => Ok(None),
    }
}

/// Each candidate name is tried in a savepoint: a taken name must not abort the transaction.
pub(super) async fn ensure_external_user(
    tx: &mut deadpool_postgres::Transaction<'_>,
    id: &str,
    candidates: &[String],
) -> Written<ExternalUser> {
    if let Some(u) = external_user(tx, id).await? {
        return Ok((u, Vec::new()));
    }
    for name in candidates {
        let sp = tx.savepoint("candidate").await?;
        match insert_user(&sp, id, name, None, true).await {
            Ok(Some(user)) => {
                sp.commit().await?;
                return Ok((ExternalUser { user, sessions_ended_at: None }, Vec::new()));
            }
            Ok(None) => {
                // The same id was created on another node a moment ago: that is the user.
                sp.rollback().await?;
                let u = external_user(tx, id).await?.ok_or(StoreError::NotFound)?;
                return Ok((u, Vec::new()));
            }
            Err(Fail::Store(StoreError::UsernameTaken)) => sp.rollback().await?,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::UsernameTaken.into())
}

// ---- rooms and members ----

/// Unread is kept by the writes: messages after the marker (`msg_count - read_ord`), less the
/// deleted ones after it, found through a partial index of deleted messages and capped.
const ROOM_COLUMNS: &str = "r.id, r.name, r.kind, r.last_seq, mb.role, mb.read_seq,
    CASE WHEN mb.user_id IS NULL THEN NULL ELSE
      GREATEST(0, r.msg_count - mb.read_ord - (SELECT COUNT(*) FROM (SELECT 1 FROM messages d
         WHERE d.room_id = r.id AND d.deleted AND d.seq > mb.read_seq LIMIT 1000) x)) END, r.member_count";

fn room_of(r: &Row) -> Pg<Room> {
    let kind: String = r.try_get(2)?;
    let role: Option<String> = r.try_get(4)?;
    Ok(Room {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        kind: RoomKind::parse(&kind).unwrap_or(RoomKind::Private),
        last_seq: seq_of(r.try_get(3)?),
        role: role.as_deref().and_then(Role::parse),
        read_seq: r.try_get::<_, Option<i64>>(5)?.map(seq_of),
        unread: r.try_get::<_, Option<i64>>(6)?.map(seq_of),
        members: Some(seq_of(r.try_get(7)?)),
        online: None,
    })
}

pub(super) async fn rooms_for(c: &impl GenericClient, user: &str) -> Pg<Vec<Room>> {
    let sql = format!(
        "SELECT {ROOM_COLUMNS} FROM members mb JOIN rooms r ON r.id = mb.room_id
         WHERE mb.user_id = $1 ORDER BY r.id"
    );
    rows(c, &sql, &[&user]).await?.iter().map(room_of).collect()
}

pub(super) async fn public_rooms(c: &impl GenericClient, user: &str, limit: u32) -> Pg<Vec<Room>> {
    let sql = format!(
        "SELECT {ROOM_COLUMNS} FROM rooms r
         LEFT JOIN members mb ON mb.room_id = r.id AND mb.user_id = $1
         WHERE r.kind = 'public' ORDER BY r.name, r.id LIMIT $2"
    );
    rows(c, &sql, &[&user, &i64::from(limit)]).await?.iter().map(room_of).collect()
}

pub(super) async fn room_for(c: &impl GenericClient, room: &str, user: &str) -> Pg<Room> {
    let sql = format!(
        "SELECT {ROOM_COLUMNS} FROM rooms r
         LEFT JOIN members mb ON mb.room_id = r.id AND mb.user_id = $2 WHERE r.id = $1"
    );
    match row(c, &sql, &[&room, &user]).await?.as_ref().map(room_of).transpose()? {
        Some(r) if r.role.is_some() || r.kind == RoomKind::Public => Ok(r),
        _ => Err(StoreError::NotFound.into()),
    }
}

pub(super) async fn role(c: &impl GenericClient, room: &str, user: &str) -> Pg<Option<Role>> {
    let found =
        row(c, "SELECT role FROM members WHERE room_id = $1 AND user_id = $2", &[&room, &user]).await?;
    Ok(found.map(|r| r.try_get::<_, String>(0)).transpose()?.as_deref().and_then(Role::parse))
}

pub(super) async fn room_kind(c: &impl GenericClient, room: &str) -> Pg<Option<RoomKind>> {
    let found = row(c, "SELECT kind FROM rooms WHERE id = $1", &[&room]).await?;
    Ok(found.map(|r| r.try_get::<_, String>(0)).transpose()?.as_deref().and_then(RoomKind::parse))
}

/// Locks the room's row until the transaction ends: every timeline write takes it first, so
/// its checks see the latest membership and its `seq` is its own. `None` when no such room.
pub(super) async fn lock_room(c: &impl GenericClient, room: &str) -> Pg<Option<RoomKind>> {
    let found = row(c, "SELECT kind FROM rooms WHERE id = $1 FOR UPDATE", &[&room]).await?;
    Ok(found.map(|r| r.try_get::<_, String>(0)).transpose()?.as_deref().and_then(RoomKind::parse))
}

/// The caller's role, or the error that hides a private room from a non-member.
pub(super) async fn require_member(c: &impl GenericClient, room: &str, user: &str) -> Pg<Role> {
    if let Some(role) = role(c, room, user).await? {
        return Ok(role);
    }
    match room_kind(c, room).await? {
        Some(RoomKind::Public) => Err(StoreError::NotMember.into()),
        _ => Err(StoreError::NotFound.into()),
    }
}

/// The role a moderation action counts for the actor: a server-wide admin acts with an owner's
/// rights in any room that exists, member or not; anyone else with their role (or the error
/// that hides a private room from a non-member).
pub(super) async fn acting_role(c: &impl GenericClient, room: &str, actor: &str) -> Pg<Role> {
    match acting_role_if_any(c, room, actor).await? {
        Some(role) => Ok(role),
        None => require_member(c, room, actor).await,
    }
}

/// [`acting_role`], with `None` for someone with no standing in the room.
pub(super) async fn acting_role_if_any(c: &impl GenericClient, room: &str, actor: &str) -> Pg<Option<Role>> {
    let admin = row(c, "SELECT 1 FROM server_admins WHERE user_id = $1", &[&actor]).await?;
    if admin.is_some() && room_kind(c, room).await?.is_some() {
        return Ok(Some(Role::Owner));
    }
    role(c, room, actor).await
}

pub(super) async fn set_server_admins(c: &impl GenericClient, admins: &[String]) -> Written<()> {
    exec(c, "DELETE FROM server_admins", &[]).await?;
    exec(c, "INSERT INTO server_admins (user_id) SELECT DISTINCT UNNEST($1::text[])", &[&admins]).await?;
    Ok(((), Vec::new()))
}

pub(super) async fn members(c: &impl GenericClient, room: &str) -> Pg<Vec<crate::store::RoomMember>> {
    let found = rows(
        c,
        "SELECT u.id, u.username, mb.role, mb.read_seq FROM members mb JOIN users u ON u.id = mb.user_id
         WHERE mb.room_id = $1 ORDER BY u.username",
        &[&room],
    )
    .await?;
    found
        .iter()
        .map(|r| {
            let role: String = r.try_get(2)?;
            Ok(crate::store::RoomMember {
                user: user_of(r)?,
                role: Role::parse(&role).unwrap_or(Role::Member),
                read_seq: seq_of(r.try_get(3)?),
            })
        })
        .collect()
}

/// Takes the room's next `seq` (the room is locked already).
async fn next_seq(c: &impl GenericClient, room: &str) -> Pg<u64> {
    let found =
        row(c, "UPDATE rooms SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq", &[&room]).await?;
    Ok(seq_of(found.ok_or(StoreError::NotFound)?.try_get(0)?))
}

pub(super) async fn member_event(
    c: &impl GenericClient,
    room: &str,
    user: &str,
    change: MemberChange,
) -> Pg<TimelineEvent> {
    let seq = next_seq(c, room).await?;
    exec(
        c,
        "INSERT INTO events (room_id, seq, kind, user_id, change, ts) VALUES ($1, $2, 'member', $3, $4, $5)",
        &[&room, &to_i64(seq), &user, &change.as_str(), &now_ms()],
    )
    .await?;
    Ok(TimelineEvent::Member(MemberEvent { room: room.to_owned(), seq, user: user.to_owned(), change }))
}

async fn insert_member(c: &impl GenericClient, room: &str, user: &str, role: Role) -> Pg<TimelineEvent> {
    exec(
        c,
        "INSERT INTO members (room_id, user_id, role, read_seq) VALUES ($1, $2, $3, 0)",
        &[&room, &user, &role.as_str()],
    )
    .await?;
    let ev = member_event(c, room, user, MemberChange::Joined).await?;
    // A new member has read everything up to and including their own arrival.
    exec(
        c,
        "UPDATE members SET read_seq = $3, read_ord = (SELECT msg_count FROM rooms WHERE id = $1)
         WHERE room_id = $1 AND user_id = $2",
        &[&room, &user, &to_i64(ev.seq())],
    )
    .await?;
    exec(c, "DELETE FROM invites WHERE room_id = $1 AND user_id = $2", &[&room, &user]).await?;
    Ok(ev)
}

pub(super) fn dm_key(a: &str, b: &str) -> String {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    serde_json::json!([x, y]).to_string()
}

/// The other person of a dm, from its key.
pub(super) fn dm_peer(key: &str, me: &str) -> Option<String> {
    serde_json::from_str::<Vec<String>>(key).ok().and_then(|pair| pair.into_iter().find(|u| u != me))
}

pub(super) async fn blocked_either(c: &impl GenericClient, a: &str, b: &str) -> Pg<bool> {
    Ok(row(
        c,
        "SELECT 1 FROM blocks WHERE (user_id = $1 AND blocked = $2) OR (user_id = $2 AND blocked = $1)",
        &[&a, &b],
    )
    .await?
    .is_some())
}

async fn has_blocked(c: &impl GenericClient, user: &str, target: &str) -> Pg<bool> {
    Ok(row(c, "SELECT 1 FROM blocks WHERE user_id = $1 AND blocked = $2", &[&user, &target]).await?.is_some())
}

async fn add_policy(c: &impl GenericClient, user: &str) -> Pg<Option<AddPolicy>> {
    let found = row(c, "SELECT add_policy FROM users WHERE id = $1", &[&user]).await?;
    Ok(found
        .map(|r| r.try_get::<_, String>(0))
        .transpose()?
        .map(|p| AddPolicy::parse(&p).unwrap_or_default()))
}

async fn removed_by_moderator(c: &impl GenericClient, room: &str, user: &str) -> Pg<bool> {
    Ok(row(c, "SELECT 1 FROM removals WHERE room_id = $1 AND user_id = $2", &[&room, &user]).await?.is_some())
}

/// What adding `target` will do; checks only, so that a refusal writes nothing.
enum AddPlan {
    Member,
    Add,
    Invite,
}

async fn plan_add(
    c: &impl GenericClient,
    room: &str,
    kind: RoomKind,
    actor: &str,
    actor_role: Role,
    target: &str,
) -> Pg<AddPlan> {
    if kind == RoomKind::Dm {
        return Err(StoreError::Conflict("a dm cannot take more members").into());
    }
    if kind == RoomKind::Private && !policy::may(Action::AddToPrivateRoom, Some(actor_role), None) {
        return Err(StoreError::Denied("only moderators may add people to a private room").into());
    }
    let Some(policy) = add_policy(c, target).await? else {
        return Err(StoreError::NotFound.into());
    };
    if role(c, room, target).await?.is_some() {
        return Ok(AddPlan::Member);
    }
    if has_blocked(c, target, actor).await? {
        return Err(StoreError::Blocked.into());
    }
    // A ban holds against everyone's adds until it is lifted or ends.
    sanctions::check(c, room, target, SanctionKind::Ban).await?;
    if removed_by_moderator(c, room, target).await?
        && !policy::may(Action::AddToPrivateRoom, Some(actor_role), None)
    {
        return Err(
            StoreError::Denied("a moderator removed this user; only a moderator may add them again").into()
        );
    }
    match policy {
        AddPolicy::Nobody => Err(StoreError::NotAccepting.into()),
        AddPolicy::Anyone => Ok(AddPlan::Add),
        AddPolicy::Invite => {
            check_invite_room(c, target).await?;
            Ok(AddPlan::Invite)
        }
    }
}

async fn check_invite_room(c: &impl GenericClient, target: &str) -> Pg<()> {
    let pending: i64 = row(c, "SELECT COUNT(*) FROM invites WHERE user_id = $1", &[&target])
        .await?
        .map(|r| r.try_get(0))
        .transpose()?
        .unwrap_or(0);
    if pending >= MAX_PENDING_INVITES {
        return Err(StoreError::Conflict("this user has too many pending invites").into());
    }
    Ok(())
}

async fn carry_out_add(
    c: &impl GenericClient,
    room: &str,
    actor: &str,
    target: &str,
    plan: AddPlan,
) -> Written<AddOutcome> {
    match plan {
        AddPlan::Member => Ok((AddOutcome::AlreadyMember, Vec::new())),
        AddPlan::Add => {
            exec(c, "DELETE FROM removals WHERE room_id = $1 AND user_id = $2", &[&room, &target]).await?;
            let ev = insert_member(c, room, target, Role::Member).await?;
            Ok((AddOutcome::Added(ev.clone()), vec![ev]))
        }
        AddPlan::Invite => {
            let fresh = exec(
                c,
                "INSERT INTO invites (room_id, user_id, inviter, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (room_id, user_id) DO NOTHING",
                &[&room, &target, &actor, &now_ms()],
            )
            .await?
                > 0;
            let invite = invite(c, room, target).await?.ok_or(StoreError::NotFound)?;
            Ok((AddOutcome::Invited { invite, fresh }, Vec::new()))
        }
    }
}

const INVITE_SELECT: &str = "SELECT r.id, r.name, r.kind, r.last_seq, u.id, u.username, i.created_at
    FROM invites i JOIN rooms r ON r.id = i.room_id JOIN users u ON u.id = i.inviter";

fn invite_of(r: &Row) -> Pg<Invite> {
    let kind: String = r.try_get(2)?;
    Ok(Invite {
        room: Room {
            id: r.try_get(0)?,
            name: r.try_get(1)?,
            kind: RoomKind::parse(&kind).unwrap_or(RoomKind::Private),
            last_seq: seq_of(r.try_get(3)?),
            role: None,
            read_seq: None,
            unread: None,
            members: None,
            online: None,
        },
        inviter: User { id: r.try_get(4)?, username: r.try_get(5)? },
        created_at: rfc3339_ms(r.try_get(6)?),
    })
}

async fn invite(c: &impl GenericClient, room: &str, user: &str) -> Pg<Option<Invite>> {
    let sql = format!("{INVITE_SELECT} WHERE i.room_id = $1 AND i.user_id = $2");
    row(c, &sql, &[&room, &user]).await?.as_ref().map(invite_of).transpose()
}

pub(super) async fn invites(c: &impl GenericClient, user: &str) -> Pg<Vec<Invite>> {
    let sql = format!("{INVITE_SELECT} WHERE i.user_id = $1 ORDER BY i.created_at DESC, r.id DESC LIMIT $2");
    rows(c, &sql, &[&user, &MAX_PENDING_INVITES]).await?.iter().map(invite_of).collect()
}

pub(super) async fn decline_invite(c: &impl GenericClient, room: &str, user: &str) -> Written<()> {
    exec(c, "DELETE FROM invites WHERE room_id = $1 AND user_id = $2", &[&room, &user]).await?;
    Ok(((), Vec::new()))
}

pub(super) async fn withdraw_invite(
    c: &impl GenericClient,
    room: &str,
    actor: &str,
    target: &str,
) -> Written<()> {
    let role = acting_role(c, room, actor).await?;
    let inviter: Option<String> =
        row(c, "SELECT inviter FROM invites WHERE room_id = $1 AND user_id = $2", &[&room, &target])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
    match inviter {
        None => Ok(((), Vec::new())),
        Some(by) if by == actor || policy::may(Action::WithdrawOthersInvite, Some(role), None) => {
            exec(c, "DELETE FROM invites WHERE room_id = $1 AND user_id = $2", &[&room, &target]).await?;
            Ok(((), Vec::new()))
        }
        Some(_) => Err(StoreError::Forbidden.into()),
    }
}

/// Makes sure both people of an existing dm are in it again (the pair may have left).
async fn rejoin_dm(c: &impl GenericClient, id: &str, creator: &str, other: &str) -> Written<CreatedRoom> {
    lock_room(c, id).await?;
    let mut events = Vec::new();
    for who in [creator, other] {
        if role(c, id, who).await?.is_none() {
            events.push(insert_member(c, id, who, Role::Member).await?);
        }
    }
    let room = room_for(c, id, creator).await?;
    Ok((CreatedRoom { room, created: false, invited: Vec::new() }, events))
}

pub(super) async fn create_room(c: &impl GenericClient, new: NewRoom) -> Written<CreatedRoom> {
    let mut others: Vec<&str> = Vec::new();
    for m in &new.members {
        if m != &new.creator && !others.contains(&m.as_str()) {
            others.push(m);
        }
    }
    for m in &others {
        if user(c, m).await?.is_none() {
            return Err(StoreError::NotFound.into());
        }
    }
    let key = match new.kind {
        RoomKind::Dm => {
            let [other] = others.as_slice() else {
                return Err(StoreError::Invalid("a dm has exactly one other member").into());
            };
            if blocked_either(c, &new.creator, other).await? {
                return Err(StoreError::Blocked.into());
            }
            let key = dm_key(&new.creator, other);
            if let Some(r) = row(c, "SELECT id FROM rooms WHERE dm_key = $1", &[&key]).await? {
                let id: String = r.try_get(0)?;
                return rejoin_dm(c, &id, &new.creator, other).await;
            }
            Some(key)
        }
        _ => None,
    };
    let mut plans = Vec::new();
    if new.kind != RoomKind::Dm {
        for m in &others {
            if has_blocked(c, m, &new.creator).await? {
                return Err(StoreError::Blocked.into());
            }
            let plan = match add_policy(c, m).await?.unwrap_or_default() {
                AddPolicy::Nobody => return Err(StoreError::NotAccepting.into()),
                AddPolicy::Anyone => AddPlan::Add,
                AddPolicy::Invite => {
                    check_invite_room(c, m).await?;
                    AddPlan::Invite
                }
            };
            plans.push((*m, plan));
        }
    }
    let id = new_id();
    // Two nodes creating the same dm at once: the second insert waits for the first to commit,
    // then finds the key taken and returns that dm instead.
    let inserted = row(
        c,
        "INSERT INTO rooms (id, name, kind, created_by, last_seq, dm_key, created_at)
         VALUES ($1, $2, $3, $4, 0, $5, $6) ON CONFLICT (dm_key) DO NOTHING RETURNING id",
        &[&id, &new.name, &new.kind.as_str(), &new.creator, &key, &now_ms()],
    )
    .await?;
    if inserted.is_none() {
        let (Some(key), [other]) = (&key, others.as_slice()) else {
            return Err(StoreError::Conflict("room id collision").into());
        };
        let existing =
            row(c, "SELECT id FROM rooms WHERE dm_key = $1", &[key]).await?.ok_or(StoreError::NotFound)?;
        let existing: String = existing.try_get(0)?;
        return rejoin_dm(c, &existing, &new.creator, other).await;
    }
    lock_room(c, &id).await?;
    let creator_role = if new.kind == RoomKind::Dm { Role::Member } else { Role::Owner };
    let mut events = vec![insert_member(c, &id, &new.creator, creator_role).await?];
    if new.kind == RoomKind::Dm {
        for m in &others {
            events.push(insert_member(c, &id, m, Role::Member).await?);
        }
    }
    let mut invited = Vec::new();
    for (m, plan) in plans {
        let (outcome, evs) = carry_out_add(c, &id, &new.creator, m, plan).await?;
        events.extend(evs);
        if let AddOutcome::Invited { invite, .. } = outcome {
            invited.push((m.to_owned(), invite));
        }
    }
    let room = room_for(c, &id, &new.creator).await?;
    Ok((CreatedRoom { room, created: true, invited }, events))
}

pub(super) async fn join(c: &impl GenericClient, room: &str, user: &str) -> Written<Option<TimelineEvent>> {
    let Some(kind) = lock_room(c, room).await? else {
        return Err(StoreError::NotFound.into());
    };
    if role(c, room, user).await?.is_some() {
        return Ok((None, Vec::new()));
    }
    let inviter: Option<String> =
        row(c, "SELECT inviter FROM invites WHERE room_id = $1 AND user_id = $2", &[&room, &user])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
    if let (Some(inviter), RoomKind::Private) = (&inviter, kind)
        && !policy::may(Action::AddToPrivateRoom, role(c, room, inviter).await?, None)
    {
        return Err(StoreError::Denied("this invite is no longer valid").into());
    }
    sanctions::check(c, room, user, SanctionKind::Ban).await?;
    match kind {
        RoomKind::Public | RoomKind::Private if inviter.is_some() => {}
        RoomKind::Public => {
            if removed_by_moderator(c, room, user).await? {
                return Err(StoreError::Denied("a moderator removed you from this room").into());
            }
        }
        _ => return Err(StoreError::NotFound.into()),
    }
    exec(c, "DELETE FROM removals WHERE room_id = $1 AND user_id = $2", &[&room, &user]).await?;
    let ev = insert_member(c, room, user, Role::Member).await?;
    Ok((Some(ev.clone()), vec![ev]))
}

pub(super) async fn add_member(
    c: &impl GenericClient,
    room: &str,
    actor: &str,
    target: &str,
) -> Written<AddOutcome> {
    let Some(kind) = lock_room(c, room).await? else {
        return Err(StoreError::NotFound.into());
    };
    let actor_role = acting_role(c, room, actor).await?;
    let plan = plan_add(c, room, kind, actor, actor_role, target).await?;
    carry_out_add(c, room, actor, target, plan).await
}

pub(super) async fn remove_member(
    c: &impl GenericClient,
    room: &str,
    actor: &str,
    target: &str,
) -> Written<TimelineEvent> {
    let Some(kind) = lock_room(c, room).await? else {
        return Err(StoreError::NotFound.into());
    };
    let actor_role = acting_role(c, room, actor).await?;
    let target_role = role(c, room, target).await?;
    let change = if actor == target {
        MemberChange::Left
    } else if kind != RoomKind::Dm && policy::may(Action::RemoveMember, Some(actor_role), target_role) {
        MemberChange::Removed
    } else {
        return Err(StoreError::Forbidden.into());
    };
    if target_role.is_none() {
        return Err(StoreError::NotFound.into());
    }
    exec(c, "DELETE FROM members WHERE room_id = $1 AND user_id = $2", &[&room, &target]).await?;
    if change == MemberChange::Removed {
        exec(
            c,
            "INSERT INTO removals (room_id, user_id, by_user, at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (room_id, user_id) DO UPDATE SET by_user = excluded.by_user, at = excluded.at",
            &[&room, &target, &actor, &now_ms()],
        )
        .await?;
        exec(c, "DELETE FROM invites WHERE room_id = $1 AND user_id = $2", &[&room, &target]).await?;
    }
    let ev = member_event(c, room, target, change).await?;
    if change == MemberChange::Removed {
        audit::record(c, room, actor, "remove_member", Some(target), None, None).await?;
    }
    Ok((ev.clone(), vec![ev]))
}

// ---- settings, blocks, sessions ----

pub(super) async fn settings(c: &impl GenericClient, user: &str) -> Pg<UserSettings> {
    Ok(UserSettings { add_policy: add_policy(c, user).await?.ok_or(StoreError::NotFound)? })
}

pub(super) async fn set_settings(c: &impl GenericClient, user: &str, s: UserSettings) -> Written<()> {
    let n =
        exec(c, "UPDATE users SET add_policy = $2 WHERE id = $1", &[&user, &s.add_policy.as_str()]).await?;
    if n == 0 {
        return Err(StoreError::NotFound.into());
    }
    Ok(((), Vec::new()))
}

pub(super) async fn block(c: &impl GenericClient, user_id: &str, target: &str) -> Written<()> {
    if user_id == target {
        return Err(StoreError::Invalid("you cannot block yourself").into());
    }
    if user(c, target).await?.is_none() {
        return Err(StoreError::NotFound.into());
    }
    exec(
        c,
        "INSERT INTO blocks (user_id, blocked, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        &[&user_id, &target, &now_ms()],
    )
    .await?;
    exec(c, "DELETE FROM invites WHERE user_id = $1 AND inviter = $2", &[&user_id, &target]).await?;
    Ok(((), Vec::new()))
}

pub(super) async fn unblock(c: &impl GenericClient, user: &str, target: &str) -> Written<()> {
    exec(c, "DELETE FROM blocks WHERE user_id = $1 AND blocked = $2", &[&user, &target]).await?;
    Ok(((), Vec::new()))
}

pub(super) async fn blocks(c: &impl GenericClient, user: &str) -> Pg<Vec<User>> {
    rows(
        c,
        "SELECT u.id, u.username FROM blocks b JOIN users u ON u.id = b.blocked
         WHERE b.user_id = $1 ORDER BY u.username LIMIT 10000",
        &[&user],
    )
    .await?
    .iter()
    .map(user_of)
    .collect()
}

/// The author's role and, for a dm, the other person.
pub(super) async fn sender_standing(
    c: &impl GenericClient,
    room: &str,
    author: &str,
) -> Pg<(Role, Option<String>)> {
    let found = row(
        c,
        "SELECT mb.role, r.kind, r.dm_key FROM members mb JOIN rooms r ON r.id = mb.room_id
         WHERE mb.room_id = $1 AND mb.user_id = $2",
        &[&room, &author],
    )
    .await?;
    let Some(r) = found else {
        return Err(require_member(c, room, author).await.err().unwrap_or(StoreError::NotFound.into()));
    };
    let (role, kind, key): (String, String, Option<String>) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
    let role = Role::parse(&role).unwrap_or(Role::Member);
    let other = match (RoomKind::parse(&kind), key) {
        (Some(RoomKind::Dm), Some(key)) => dm_peer(&key, author),
        _ => None,
    };
    Ok((role, other))
}

pub(super) async fn dm_blocked(c: &impl GenericClient, room: &str, user: &str) -> Pg<bool> {
    match sender_standing(c, room, user).await {
        Ok((_, Some(peer))) => blocked_either(c, user, &peer).await,
        Ok((_, None)) => Ok(false),
        Err(Fail::Store(StoreError::NotFound | StoreError::NotMember)) => Ok(false),
        Err(e) => Err(e),
    }
}

pub(super) async fn create_session(
    c: &impl GenericClient,
    user: &str,
    expires_at: i64,
    keep: u32,
) -> Written<NewSession> {
    let now = now_ms();
    exec(
        c,
        "DELETE FROM sessions WHERE user_id = $1 AND (expires_at < $2 OR ended_at IS NOT NULL)",
        &[&user, &now],
    )
    .await?;
    let id = new_id();
    exec(
        c,
        "INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        &[&id, &user, &now, &expires_at],
    )
    .await?;
    let ended = rows(
        c,
        "DELETE FROM sessions WHERE user_id = $1 AND id NOT IN
           (SELECT id FROM sessions WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2)
         RETURNING id",
        &[&user, &i64::from(keep.max(1))],
    )
    .await?
    .iter()
    .map(|r| r.try_get::<_, String>(0).map_err(Fail::from))
    .collect::<Pg<Vec<_>>>()?;
    Ok((NewSession { id, ended }, Vec::new()))
}

pub(super) async fn session_user(c: &impl GenericClient, session: &str) -> Pg<Option<User>> {
    row(
        c,
        "SELECT u.id, u.username FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.id = $1 AND s.ended_at IS NULL AND s.expires_at > $2",
        &[&session, &now_ms()],
    )
    .await?
    .as_ref()
    .map(user_of)
    .transpose()
}

pub(super) async fn end_session(c: &impl GenericClient, user: &str, session: &str) -> Written<()> {
    exec(c, "DELETE FROM sessions WHERE id = $1 AND user_id = $2", &[&session, &user]).await?;
    Ok(((), Vec::new()))
}

pub(super) async fn end_all_sessions(c: &impl GenericClient, user: &str) -> Written<()> {
    exec(c, "DELETE FROM sessions WHERE user_id = $1", &[&user]).await?;
    exec(c, "UPDATE users SET sessions_ended_at = $2 WHERE id = $1", &[&user, &now_ms()]).await?;
    Ok(((), Vec::new()))
}

pub(super) async fn sessions_ended_at(c: &impl GenericClient, user: &str) -> Pg<Option<i64>> {
    Ok(row(c, "SELECT sessions_ended_at FROM users WHERE id = $1", &[&user])
        .await?
        .map(|r| r.try_get::<_, Option<i64>>(0))
        .transpose()?
        .flatten())
}

// ---- messages and the timeline ----

pub(super) const MESSAGE_COLUMNS: &str =
    "id, room_id, seq, author, body, ts, client_msg_id, edited_at, deleted, shadow";

pub(super) fn message_of(r: &Row) -> Pg<Message> {
    let deleted: bool = r.try_get(8)?;
    let author: String = r.try_get(3)?;
    let shadow: bool = r.try_get(9)?;
    Ok(Message {
        id: r.try_get(0)?,
        room: r.try_get(1)?,
        seq: seq_of(r.try_get(2)?),
        only_to: shadow.then(|| author.clone()),
        author,
        body: r.try_get(4)?,
        ts: rfc3339_ms(r.try_get(5)?),
        client_msg_id: r.try_get(6)?,
        edited_at: r.try_get::<_, Option<i64>>(7)?.map(rfc3339_ms),
        deleted: deleted.then_some(true),
    })
}

async fn message(c: &impl GenericClient, room: &str, id: &str) -> Pg<Option<Message>> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1 AND room_id = $2");
    row(c, &sql, &[&id, &room]).await?.as_ref().map(message_of).transpose()
}

pub(super) async fn edit(
    c: &impl GenericClient,
    room: &str,
    actor: &str,
    id: &str,
    body: &str,
) -> Written<TimelineEvent> {
    if lock_room(c, room).await?.is_none() {
        return Err(StoreError::NotFound.into());
    }
    let (_, peer) = sender_standing(c, room, actor).await?;
    if let Some(peer) = peer
        && blocked_either(c, actor, &peer).await?
    {
        return Err(StoreError::Blocked.into());
    }
    // An edit says something new to the room: a mute holds against it as against a send.
    sanctions::check(c, room, actor, SanctionKind::Mute).await?;
    let msg = message(c, room, id).await?.filter(|m| m.deleted.is_none()).ok_or(StoreError::NotFound)?;
    if msg.author != actor {
        return Err(StoreError::Forbidden.into());
    }
    let seq = next_seq(c, room).await?;
    let ts = now_ms();
    exec(c, "UPDATE messages SET body = $2, edited_at = $3 WHERE id = $1", &[&id, &body, &ts]).await?;
    exec(
        c,
        "INSERT INTO events (room_id, seq, kind, message_id, body, ts) VALUES ($1, $2, 'edit', $3, $4, $5)",
        &[&room, &to_i64(seq), &id, &body, &ts],
    )
    .await?;
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

pub(super) async fn delete(
    c: &impl GenericClient,
    room: &str,
    actor: &str,
    id: &str,
) -> Written<TimelineEvent> {
    if lock_room(c, room).await?.is_none() {
        return Err(StoreError::NotFound.into());
    }
    let role = acting_role(c, room, actor).await?;
    let msg = message(c, room, id).await?.filter(|m| m.deleted.is_none()).ok_or(StoreError::NotFound)?;
    let others = msg.author != actor;
    if others
        && !policy::may(Action::DeleteOthersMessage, Some(role), self::role(c, room, &msg.author).await?)
    {
        return Err(StoreError::Forbidden.into());
    }
    if others {
        audit::record(c, room, actor, "delete_message", Some(&msg.author), Some(id), None).await?;
    }
    let ev = erase(c, room, msg).await?;
    Ok((ev.clone(), vec![ev]))
}

/// Most messages one purge deletes (a moderator repeats it for more).
pub(super) const PURGE_MAX: i64 = 1_000;

pub(super) async fn purge(
    c: &impl GenericClient,
    room: &str,
    actor: &str,
    target: &str,
    since_ms: i64,
) -> Written<u32> {
    let Some(kind) = lock_room(c, room).await? else { return Err(StoreError::NotFound.into()) };
    let role = acting_role(c, room, actor).await?;
    if kind == RoomKind::Dm {
        return Err(StoreError::Denied("nobody moderates a dm: block instead").into());
    }
    if actor == target
        || !policy::may(Action::DeleteOthersMessage, Some(role), self::role(c, room, target).await?)
    {
        return Err(StoreError::Forbidden.into());
    }
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages
          WHERE room_id = $1 AND author = $2 AND ts >= $3 AND NOT deleted ORDER BY seq LIMIT $4"
    );
    let found = rows(c, &sql, &[&room, &target, &since_ms, &PURGE_MAX]).await?;
    let mut events = Vec::with_capacity(found.len());
    for r in &found {
        events.push(erase(c, room, message_of(r)?).await?);
    }
    let n = u32::try_from(events.len()).unwrap_or(u32::MAX);
    let detail = format!("{n} messages since {}", rfc3339_ms(since_ms));
    audit::record(c, room, actor, "purge", Some(target), Some(&detail), None).await?;
    Ok((n, events))
}

/// Deletes a message as its room's next event: the text goes, its edits' text too.
async fn erase(c: &impl GenericClient, room: &str, msg: Message) -> Pg<TimelineEvent> {
    let id = msg.id.as_str();
    let seq = next_seq(c, room).await?;
    let ts = now_ms();
    exec(c, "UPDATE messages SET body = '', deleted = true WHERE id = $1", &[&id]).await?;
    exec(
        c,
        "UPDATE events SET body = NULL WHERE room_id = $1 AND message_id = $2 AND kind = 'edit'",
        &[&room, &id],
    )
    .await?;
    exec(
        c,
        "INSERT INTO events (room_id, seq, kind, message_id, ts) VALUES ($1, $2, 'delete', $3, $4)",
        &[&room, &to_i64(seq), &id, &ts],
    )
    .await?;
    Ok(TimelineEvent::Delete(DeleteEvent {
        room: room.to_owned(),
        seq,
        id: id.to_owned(),
        only_to: msg.only_to,
    }))
}

pub(super) async fn history(
    c: &impl GenericClient,
    room: &str,
    viewer: &str,
    page: HistoryPage,
) -> Pg<Vec<Message>> {
    let limit = i64::from(page.limit);
    let before = page.before_seq.map_or(i64::MAX, to_i64);
    if let Some(after) = page.after_seq {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = $1 AND seq > $2 AND seq < $3
               AND (NOT shadow OR author = $5)
             ORDER BY seq ASC LIMIT $4"
        );
        return rows(c, &sql, &[&room, &to_i64(after), &before, &limit, &viewer])
            .await?
            .iter()
            .map(message_of)
            .collect();
    }
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = $1 AND seq < $2 AND (NOT shadow OR author = $4)
         ORDER BY seq DESC LIMIT $3"
    );
    let mut out: Vec<Message> =
        rows(c, &sql, &[&room, &before, &limit, &viewer]).await?.iter().map(message_of).collect::<Pg<_>>()?;
    out.reverse();
    Ok(out)
}

/// One timeline event from the columns `timeline` selects, starting at `at`: seq, kind,
/// message id, member user, member change, edit body, event ts, author, message body,
/// message ts, client_msg_id, edited_at, deleted, and for messages and the edits and deletes
/// of messages: whether the message is a shadow-banned author's, and its author.
fn timeline_of(r: &Row, at: usize, kind: &str, room: String) -> Pg<TimelineEvent> {
    let seq = seq_of(r.try_get(at)?);
    let message_id: Option<String> = r.try_get(at + 2)?;
    let shadow: Option<bool> = r.try_get(at + 13)?;
    let only_to = if shadow == Some(true) { r.try_get::<_, Option<String>>(at + 14)? } else { None };
    Ok(match kind {
        "message" => TimelineEvent::Message(Message {
            id: message_id.unwrap_or_default(),
            room,
            seq,
            author: r.try_get::<_, Option<String>>(at + 7)?.unwrap_or_default(),
            body: r.try_get::<_, Option<String>>(at + 8)?.unwrap_or_default(),
            ts: rfc3339_ms(r.try_get::<_, Option<i64>>(at + 9)?.unwrap_or_default()),
            client_msg_id: r.try_get::<_, Option<String>>(at + 10)?.unwrap_or_default(),
            edited_at: r.try_get::<_, Option<i64>>(at + 11)?.map(rfc3339_ms),
            deleted: r.try_get::<_, Option<bool>>(at + 12)?.filter(|d| *d),
            only_to,
        }),
        "edit" => TimelineEvent::Edit(EditEvent {
            room,
            seq,
            id: message_id.unwrap_or_default(),
            body: r.try_get::<_, Option<String>>(at + 5)?.unwrap_or_default(),
            edited_at: rfc3339_ms(r.try_get::<_, Option<i64>>(at + 6)?.unwrap_or_default()),
            only_to,
        }),
        "delete" => {
            TimelineEvent::Delete(DeleteEvent { room, seq, id: message_id.unwrap_or_default(), only_to })
        }
        _ => {
            let change: Option<String> = r.try_get(at + 4)?;
            TimelineEvent::Member(MemberEvent {
                room,
                seq,
                user: r.try_get::<_, Option<String>>(at + 3)?.unwrap_or_default(),
                change: change.as_deref().and_then(MemberChange::parse).unwrap_or(MemberChange::Joined),
            })
        }
    })
}

pub(super) async fn timeline(
    c: &impl GenericClient,
    room: &str,
    after: u64,
    limit: u32,
) -> Pg<Vec<TimelineEvent>> {
    let found = rows(
        c,
        "SELECT e.seq, e.kind, e.message_id, e.user_id, e.change, e.body, e.ts,
                NULL::text, NULL::text, NULL::bigint, NULL::text, NULL::bigint, NULL::boolean, m.shadow, m.author
           FROM events e LEFT JOIN messages m ON m.id = e.message_id
          WHERE e.room_id = $1 AND e.seq > $2
         UNION ALL
         SELECT seq, 'message', id, NULL, NULL, NULL, NULL, author, body, ts, client_msg_id, edited_at, deleted,
                shadow, author
           FROM messages WHERE room_id = $1 AND seq > $2
         ORDER BY 1 ASC LIMIT $3",
        &[&room, &to_i64(after), &i64::from(limit)],
    )
    .await?;
    found
        .iter()
        .map(|r| {
            let kind: String = r.try_get(1)?;
            timeline_of(r, 0, &kind, room.to_owned())
        })
        .collect()
}

pub(super) async fn last_seqs(c: &impl GenericClient, rooms: &[String]) -> Pg<Vec<(String, u64)>> {
    rows(c, "SELECT id, last_seq FROM rooms WHERE id = ANY($1)", &[&rooms])
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, seq_of(r.try_get(1)?))))
        .collect()
}

pub(super) async fn mark_read(c: &impl GenericClient, room: &str, user: &str, seq: u64) -> Written<u64> {
    let found = row(
        c,
        "UPDATE members SET
           read_seq = GREATEST(read_seq, LEAST($3, (SELECT last_seq FROM rooms WHERE id = $1))),
           read_ord = GREATEST(read_ord, COALESCE((SELECT m.ord FROM messages m WHERE m.room_id = $1
               AND m.seq <= LEAST($3, (SELECT last_seq FROM rooms WHERE id = $1))
               ORDER BY m.seq DESC LIMIT 1), 0))
         WHERE room_id = $1 AND user_id = $2 RETURNING read_seq",
        &[&room, &user, &to_i64(seq)],
    )
    .await?;
    match found {
        Some(r) => Ok((seq_of(r.try_get(0)?), Vec::new())),
        None => Err(require_member(c, room, user).await.err().unwrap_or(StoreError::NotFound.into())),
    }
}

// ---- the event log ----

/// Takes positions for `events` from the log's sequence and writes their entries; returns the
/// last position, and tells listening nodes at commit. No lock on the log is held to the commit:
/// readers stop at positions not yet committed instead (see `horizon`).
pub(super) async fn log_events(c: &impl GenericClient, events: &[TimelineEvent]) -> Pg<Option<u64>> {
    if events.is_empty() {
        return Ok(None);
    }
    let rooms: Vec<&str> = events.iter().map(TimelineEvent::room).collect();
    let seqs: Vec<i64> = events.iter().map(|e| to_i64(e.seq())).collect();
    // The transaction must have its id before it takes a position (the reader's horizon rests
    // on it). Its writes have given it one already; the filter makes sure, as a row's filter
    // runs before its columns. Positions are taken in the array's order, so a room's entries
    // follow its `seq`s.
    let last = row(
        c,
        "WITH entries AS (INSERT INTO event_log (pos, room_id, seq)
            SELECT nextval('event_log_pos'), v.room_id, v.seq
              FROM UNNEST($1::text[], $2::bigint[]) AS v(room_id, seq)
             WHERE pg_current_xact_id() IS NOT NULL
            RETURNING pos)
         SELECT m, pg_notify($3, m::text) FROM (SELECT MAX(pos) AS m FROM entries) e",
        &[&rooms, &seqs, &super::LOG_CHANNEL],
    )
    .await?;
    let last: i64 = last.ok_or(StoreError::Fatal("the log insert returned nothing".into()))?.try_get(0)?;
    Ok(Some(seq_of(last)))
}

/// Log entries after `after` as one snapshot shows them: positions with their events (`None`
/// where the event is missing), and the snapshot's `xmin` and `xmax` (see `horizon`).
pub(super) struct LogRead {
    pub(super) entries: Vec<(u64, Option<LoggedEvent>)>,
    pub(super) xmin: u64,
    pub(super) xmax: u64,
}

pub(super) async fn events_after(c: &impl GenericClient, after: u64, limit: u32) -> Pg<LogRead> {
    // One statement, so the entries and the snapshot's bounds come from the same snapshot.
    let found = rows(
        c,
        "SELECT l.pos, l.room_id, l.seq,
                COALESCE(e.kind, CASE WHEN m.id IS NOT NULL THEN 'message' END),
                COALESCE(e.message_id, m.id), e.user_id, e.change, e.body, e.ts,
                m.author, m.body, m.ts, m.client_msg_id, m.edited_at, m.deleted,
                COALESCE(m.shadow, em.shadow), COALESCE(m.author, em.author),
                pg_snapshot_xmin(pg_current_snapshot())::text, pg_snapshot_xmax(pg_current_snapshot())::text
           FROM event_log l
           LEFT JOIN events e ON e.room_id = l.room_id AND e.seq = l.seq
           LEFT JOIN messages m ON m.room_id = l.room_id AND m.seq = l.seq
           LEFT JOIN messages em ON em.id = e.message_id
          WHERE l.pos > $1 ORDER BY l.pos LIMIT $2",
        &[&to_i64(after), &i64::from(limit)],
    )
    .await?;
    // With nothing read the bounds are never used.
    let (mut xmin, mut xmax) = (0, 0);
    if let Some(r) = found.first() {
        xmin = xid(&r.try_get::<_, String>(17)?)?;
        xmax = xid(&r.try_get::<_, String>(18)?)?;
    }
    let mut entries = Vec::with_capacity(found.len());
    for r in &found {
        let pos = seq_of(r.try_get(0)?);
        let room: String = r.try_get(1)?;
        let event = match r.try_get::<_, Option<String>>(3)? {
            Some(kind) => Some(LoggedEvent { pos, event: timeline_of(r, 2, &kind, room)? }),
            None => None,
        };
        entries.push((pos, event));
    }
    Ok(LogRead { entries, xmin, xmax })
}

fn xid(text: &str) -> Pg<u64> {
    text.parse::<u64>().map_err(|_| Fail::Store(StoreError::Fatal(format!("bad transaction id {text}"))))
}

/// An id above every transaction begun before a read whose snapshot had `xmax`, asked after
/// that read (see `horizon`): `xmax` is one past the last transaction to *finish*, so the ids
/// of the transactions running now count too.
pub(super) async fn begun_below(c: &impl GenericClient, xmax: u64) -> Pg<u64> {
    let r = row(
        c,
        "SELECT array_agg(backend_xid::text) FROM pg_stat_activity WHERE backend_xid IS NOT NULL",
        &[],
    )
    .await?;
    let running: Vec<String> =
        r.map(|r| r.try_get::<_, Option<Vec<String>>>(0)).transpose()?.flatten().unwrap_or_default();
    let mut bound = xmax;
    for id in running {
        // 32-bit ids, within 2^31 of the snapshot's (the server's wraparound guard).
        let short = u32::try_from(xid(&id)?).unwrap_or(u32::MAX);
        let ahead = i64::from(short.wrapping_sub(xmax as u32) as i32);
        bound = bound.max(xmax.saturating_add_signed(ahead).saturating_add(1));
    }
    Ok(bound)
}

/// The last position handed out (committed or not).
pub(super) async fn log_head(c: &impl GenericClient) -> Pg<u64> {
    let r =
        row(c, "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM event_log_pos", &[])
            .await?;
    Ok(r.map(|r| r.try_get::<_, i64>(0)).transpose()?.map_or(0, seq_of))
}

pub(super) async fn cursor(c: &impl GenericClient, consumer: &str) -> Pg<Option<u64>> {
    let r = row(c, "SELECT pos FROM log_cursors WHERE consumer = $1", &[&consumer]).await?;
    Ok(r.map(|r| r.try_get::<_, i64>(0)).transpose()?.map(seq_of))
}

pub(super) async fn save_cursor(c: &impl GenericClient, consumer: &str, pos: u64) -> Written<()> {
    exec(
        c,
        "INSERT INTO log_cursors (consumer, pos, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (consumer) DO UPDATE
           SET pos = GREATEST(log_cursors.pos, excluded.pos), updated_at = excluded.updated_at",
        &[&consumer, &to_i64(pos), &now_ms()],
    )
    .await?;
    Ok(((), Vec::new()))
}

/// Entries are deleted in slices, so one prune never holds locks for long.
const PRUNE_SLICE: i64 = 2_000;

pub(super) async fn prune_log(c: &impl GenericClient) -> Written<u64> {
    let done: Option<i64> =
        row(c, "SELECT MIN(pos) FROM log_cursors", &[]).await?.map(|r| r.try_get(0)).transpose()?.flatten();
    let Some(done) = done else {
        return Ok((0, Vec::new()));
    };
    let n = exec(
        c,
        "DELETE FROM event_log WHERE pos IN (SELECT pos FROM event_log WHERE pos <= $1 ORDER BY pos LIMIT $2)",
        &[&done, &PRUNE_SLICE],
    )
    .await?;
    Ok((n, Vec::new()))
}

pub(super) async fn lease(c: &impl GenericClient, name: &str, holder: &str, ttl_ms: u64) -> Written<bool> {
    let now = now_ms();
    let until = now.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
    let held = row(
        c,
        "INSERT INTO leases (name, holder, until) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
           WHERE leases.holder = excluded.holder OR leases.until < $4
         RETURNING holder",
        &[&name, &holder, &until, &now],
    )
    .await?;
    let held: Option<String> = held.map(|r| r.try_get(0)).transpose()?;
    Ok((held.as_deref() == Some(holder), Vec::new()))
}
