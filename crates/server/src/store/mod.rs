//! Persistence seam: users, rooms, members, the room timelines and read state.
//!
//! [`Store`] is the only way the rest of the server touches durable state. Two implementations
//! hold to the same contract (checked by one conformance suite, `conformance.rs`): the embedded
//! SQLite store in [`sqlite`] and, later, PostgreSQL.
//!
//! Every committed timeline event also takes a position in a store-wide event log, written in
//! the same transaction (see [`log`]): the relay that publishes to the bus and every later
//! worker read it by cursor, so a crash between a commit and its fanout loses nothing.

pub mod log;
pub mod postgres;
pub mod sqlite;

#[cfg(test)]
pub(crate) mod conformance;

use async_trait::async_trait;
use switchboard_protocol::rest::UserSettings;
use switchboard_protocol::{AuditEntry, Invite, Message, Role, Room, RoomKind, TimelineEvent, User};
use tokio::sync::watch;

pub use log::LoggedEvent;

/// Why a store call failed. Callers map these once to client-facing codes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The thing does not exist, or the caller may not know that it does.
    #[error("not found")]
    NotFound,
    /// The room is public but the caller has not joined it.
    #[error("not a member of this room")]
    NotMember,
    /// The caller is a member but lacks the role for this.
    #[error("not allowed")]
    Forbidden,
    /// Not allowed, for a reason the caller may be told.
    #[error("{0}")]
    Denied(&'static str),
    /// One of the two users has blocked the other.
    #[error("blocked")]
    Blocked,
    /// A sanction of the room stands against the user: `banned` (no joining or being added),
    /// `muted` (no sending) or `slow_mode` (not yet another message), until `until_ms` (ms since
    /// the epoch), or for good (`None`).
    #[error("{kind}")]
    Sanctioned {
        /// `banned` or `muted`: the client-facing code.
        kind: &'static str,
        /// When it ends.
        until_ms: Option<i64>,
    },
    /// The target's settings refuse being added to rooms.
    #[error("not accepting adds")]
    NotAccepting,
    /// A username is already registered.
    #[error("username already taken")]
    UsernameTaken,
    /// The author already used this `client_msg_id` in another room.
    #[error("client_msg_id already used in another room")]
    IdempotencyConflict,
    /// The request contradicts the room's state (e.g. a third member in a dm).
    #[error("{0}")]
    Conflict(&'static str),
    /// The request is malformed in a way only the store can see.
    #[error("{0}")]
    Invalid(&'static str),
    /// The backend failed in a way that passes (unreachable, busy, a serialization or deadlock
    /// failure past its retries, disk full); nothing was committed and a retry may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend refused in a way a retry will not mend (a schema or data error, a bug):
    /// nothing was committed, and the operator needs to look.
    #[error("store failed: {0}")]
    Fatal(String),
    /// The store is shutting down.
    #[error("store closed")]
    Closed,
}

impl StoreError {
    /// Whether the same call may succeed later: the backend's passing failures, and a store
    /// that is shutting down (another node takes the retry).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Closed)
    }
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// A user with the password hash that login needs; never leaves the server.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The account.
    pub user: User,
    /// Argon2id PHC string; `None` for accounts that only log in with external tokens.
    pub password_hash: Option<String>,
}

/// Result of [`Store::ensure_external_user`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalUser {
    /// The account.
    pub user: User,
    /// When the user last ended all sessions (ms since the epoch), if ever.
    pub sessions_ended_at: Option<i64>,
}

/// Arguments of [`Store::create_room`].
#[derive(Debug, Clone)]
pub struct NewRoom {
    /// The creator, who becomes the owner.
    pub creator: String,
    /// Display name (validated by the caller).
    pub name: String,
    /// Visibility.
    pub kind: RoomKind,
    /// Other initial members; a dm has exactly one.
    pub members: Vec<String>,
}

/// A ban or a mute of one user in one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanctionKind {
    /// Removed, and kept out: no joining, no being added, until it ends.
    Ban,
    /// Stays a member and reads, but sends nothing until it ends.
    Mute,
    /// Stays a member and sends, but only they are shown what they send (live, on resume and
    /// in history), until it ends. Nobody is told, the author included.
    Shadow,
}

impl SanctionKind {
    /// The name in storage and as the refusal code.
    pub fn as_str(self) -> &'static str {
        match self {
            SanctionKind::Ban => "banned",
            SanctionKind::Mute => "muted",
            SanctionKind::Shadow => "shadow_banned",
        }
    }

    /// What the policy calls imposing or lifting it.
    pub fn action(self) -> crate::moderation::policy::Action {
        match self {
            SanctionKind::Ban => crate::moderation::policy::Action::Ban,
            SanctionKind::Mute => crate::moderation::policy::Action::Mute,
            SanctionKind::Shadow => crate::moderation::policy::Action::Ban,
        }
    }

    /// The audit log's names for imposing and for lifting it.
    pub fn audit_actions(self) -> (&'static str, &'static str) {
        match self {
            SanctionKind::Ban => ("ban", "unban"),
            SanctionKind::Mute => ("mute", "unmute"),
            SanctionKind::Shadow => ("shadow_ban", "unshadow_ban"),
        }
    }

    /// The end of a sanction that stands now, given its stored end (`Some(None)`: for good);
    /// `None` when it has ended.
    pub fn standing(until_ms: Option<i64>) -> Option<Option<i64>> {
        until_ms.is_none_or(|u| u > now_ms()).then_some(until_ms)
    }
}

/// Which audit entries to list (each field set narrows the list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this action (`ban`, `auto_block`, …).
    pub action: Option<String>,
    /// Only entries about this user.
    pub target: Option<String>,
    /// Only entries by this user (`""`: the server's automatic ones).
    pub by: Option<String>,
}

/// What a report names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportTarget {
    /// A message of the room (its author is the one reported).
    Message(String),
    /// A member of the room.
    User(String),
}

/// Most open reports one member may have in one room.
pub const MAX_OPEN_REPORTS: i64 = 50;

/// A standing sanction, as moderators list them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sanction {
    /// Who.
    pub user: String,
    /// Which moderator.
    pub by: String,
    /// Why, as given.
    pub reason: Option<String>,
    /// When it was imposed (ms since the epoch).
    pub at_ms: i64,
    /// When it ends, if it does.
    pub until_ms: Option<i64>,
}

/// A member as [`Store::members`] lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMember {
    /// Who.
    pub user: User,
    /// Their role.
    pub role: Role,
    /// Their read marker, for "Seen" where read markers are shown.
    pub read_seq: u64,
}

/// Result of [`Store::create_room`]: `created` is false when an existing dm was returned.
#[derive(Debug, Clone)]
pub struct CreatedRoom {
    /// The room as its creator sees it.
    pub room: Room,
    /// False when the dm for this pair already existed.
    pub created: bool,
    /// Initial members who were invited rather than added (by their `add_policy`), with their
    /// invites.
    pub invited: Vec<(String, Invite)>,
}

/// Arguments of [`Store::append`].
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Room id.
    pub room: String,
    /// Author's user id.
    pub author: String,
    /// Idempotency key, unique per author.
    pub client_msg_id: String,
    /// Text (validated by the caller).
    pub body: String,
}

/// What [`Store::add_member`] did, by the target's `add_policy`.
#[derive(Debug, Clone)]
pub enum AddOutcome {
    /// The user is a member now (their member event).
    Added(TimelineEvent),
    /// The user was a member already: nothing changed.
    AlreadyMember,
    /// The user was invited: they join when they accept. `fresh` is false when the same invite
    /// was already pending (nothing changed, and nobody needs telling again).
    Invited {
        /// The invite.
        invite: Invite,
        /// Whether this call created it.
        fresh: bool,
    },
}

/// Result of [`Store::create_session`].
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The new session's id, which its tokens carry.
    pub id: String,
    /// Older sessions of the user that this one pushed past the cap, now ended.
    pub ended: Vec<String>,
}

/// Result of [`Store::append`]: `created` is false when the key had been used before.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The message (the first one, on a retry).
    pub message: Message,
    /// False on an idempotent retry.
    pub created: bool,
}

/// Which page of history to read: forward after `after_seq`, else backward from `before_seq`
/// (or the end); results are always in ascending `seq`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HistoryPage {
    /// Exclusive upper bound.
    pub before_seq: Option<u64>,
    /// Exclusive lower bound; when set, the page starts right after it.
    pub after_seq: Option<u64>,
    /// Page size (the caller clamps it).
    pub limit: u32,
}

/// A write that holds its place in the commit order; resolves once it is durable (or refused).
pub type Committing<T> = futures_util::future::BoxFuture<'static, StoreResult<T>>;

/// Durable state.
///
/// Guarantees every implementation keeps (the conformance suite checks each):
/// - Every write that returns `Ok` is durable (fsynced / synchronously committed) before it
///   returns; a write that returns `Err` committed nothing.
/// - Each room has one timeline: every event (message, edit, delete, member change) takes the
///   room's next `seq`, gap-free and strictly increasing, assigned inside the committing
///   transaction.
/// - `(author, client_msg_id)` is unique: [`Store::append`] retried with the same key returns the
///   first message and writes nothing.
/// - Authorisation facts are checked in the same transaction as the write they guard, so a
///   member removed before a send commits cannot have that send accepted.
/// - Every committed timeline event takes a position in the store-wide event log in its own
///   transaction: positions strictly increase along the log and never repeat, a reader never
///   sees a position before every lower one is readable or known never to be (no event can
///   appear behind a cursor, however commits on several nodes interleave), and per room the
///   log's order is `seq` order. [`Store::log_watch`] moves once a commit's events are
///   readable.
/// - People decide which rooms they are in: only a user's own `join` (of a public room, or of a
///   room they hold an invite to), or an add by someone allowed to add when the user's
///   `add_policy` is `anyone`, makes them a member. A user removed by a moderator comes back
///   only through a moderator. Blocks hold both ways for dms and one way for adds.
/// - A session that has ended, or expired, never resolves to its user again.
/// - Unread counts are kept by the writes: reading them costs the same whatever the backlog.
/// - Who may do what in a room is `moderation::policy`'s table, checked in the transaction of
///   the write it guards, and every moderation action (a role change, a removal, another's
///   message deleted) appends its audit entry in that same transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip to the backend, for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;

    /// Registers a local account. Username must be normalised already.
    async fn create_user(&self, username: &str, password_hash: &str) -> StoreResult<User>;
    /// Returns the user with this external id, creating it with the first free candidate
    /// username on first sight, with when it last signed out everywhere (in the same read, as
    /// every request with an external token needs both). An id that belongs to a local account
    /// is `Conflict`.
    async fn ensure_external_user(&self, id: &str, candidates: &[String]) -> StoreResult<ExternalUser>;
    /// Looks a user up by id.
    async fn user(&self, id: &str) -> StoreResult<Option<User>>;
    /// Looks up login credentials by (normalised) username.
    async fn credentials(&self, username: &str) -> StoreResult<Option<Credentials>>;

    /// Creates a room with the creator as owner and the given members added or invited (as
    /// each one's `add_policy` says; `nobody` or a block refuses the whole creation), or returns
    /// the existing dm between the same pair. A dm has no owner, and is refused when either
    /// person has blocked the other.
    async fn create_room(&self, new: NewRoom) -> StoreResult<CreatedRoom>;
    /// The user's rooms with `last_seq`, `read_seq` and `unread`.
    async fn rooms_for(&self, user: &str) -> StoreResult<Vec<Room>>;
    /// Public rooms by name, as `user` sees them (with role and read state where a member), so
    /// people can find rooms to join.
    async fn public_rooms(&self, user: &str, limit: u32) -> StoreResult<Vec<Room>>;
    /// One room as `user` sees it: members see their role and read state, anyone sees a public
    /// room; anything else is `NotFound`.
    async fn room_for(&self, room: &str, user: &str) -> StoreResult<Room>;
    /// The user's role, or `None` when not a member (or no such room).
    async fn role(&self, room: &str, user: &str) -> StoreResult<Option<Role>>;
    /// Current members with their roles and read markers.
    async fn members(&self, room: &str) -> StoreResult<Vec<RoomMember>>;
    /// Joins a public room, or a room the user holds an invite to (accepting it, while its
    /// inviter may still add people there); `None` when already a member. A user a moderator
    /// removed cannot join again by themselves.
    async fn join(&self, room: &str, user: &str) -> StoreResult<Option<TimelineEvent>>;
    /// A member adds another user: in a private room only moderators and up may, in a public
    /// one any member; the target's `add_policy` decides between adding and inviting, and a
    /// user who blocked the actor, or whom a moderator removed (unless the actor moderates),
    /// cannot be added.
    async fn add_member(&self, room: &str, actor: &str, user: &str) -> StoreResult<AddOutcome>;
    /// The user's pending invites, newest first.
    async fn invites(&self, user: &str) -> StoreResult<Vec<Invite>>;
    /// Declines (drops) the user's invite to a room; a no-op when there is none.
    async fn decline_invite(&self, room: &str, user: &str) -> StoreResult<()>;
    /// Withdraws a pending invite: by whoever sent it, or a moderator of the room; a no-op when
    /// there is none.
    async fn withdraw_invite(&self, room: &str, actor: &str, user: &str) -> StoreResult<()>;

    /// The user's settings.
    async fn settings(&self, user: &str) -> StoreResult<UserSettings>;
    /// Replaces the user's settings.
    async fn set_settings(&self, user: &str, settings: UserSettings) -> StoreResult<()>;
    /// `user` blocks `target`: no dms between them, no adds or invites from `target`, and
    /// `target`'s pending invites to `user` are dropped.
    async fn block(&self, user: &str, target: &str) -> StoreResult<()>;
    /// Lifts a block; a no-op when there is none.
    async fn unblock(&self, user: &str, target: &str) -> StoreResult<()>;
    /// Users `user` has blocked.
    async fn blocks(&self, user: &str) -> StoreResult<Vec<User>>;
    /// Whether `room` is a dm of `user` with someone either of them has blocked: then not even
    /// typing or read markers pass between them.
    async fn dm_blocked(&self, room: &str, user: &str) -> StoreResult<bool>;

    /// Starts a signed-in session expiring at `expires_at_ms`; beyond the user's `keep` newest
    /// sessions, the oldest are ended (and returned, so that their connections can be closed).
    async fn create_session(&self, user: &str, expires_at_ms: i64, keep: u32) -> StoreResult<NewSession>;
    /// The user of a session that has neither ended nor expired.
    async fn session_user(&self, session: &str) -> StoreResult<Option<User>>;
    /// Ends one of the user's sessions.
    async fn end_session(&self, user: &str, session: &str) -> StoreResult<()>;
    /// Ends all of the user's sessions, and refuses from now on tokens without a session id
    /// (external ones) issued before now.
    async fn end_all_sessions(&self, user: &str) -> StoreResult<()>;
    /// When the user last ended all sessions (ms since the epoch), if ever.
    async fn sessions_ended_at(&self, user: &str) -> StoreResult<Option<i64>>;
    /// Removes a member: themselves (left), or another if the actor may moderate (removed).
    async fn remove_member(&self, room: &str, actor: &str, user: &str) -> StoreResult<TimelineEvent>;

    /// Appends a message to its room's timeline, idempotently.
    async fn append(&self, msg: NewMessage) -> StoreResult<Appended> {
        self.queue_append(msg).await?.await
    }
    /// Takes the append's place in the commit order and returns once it has one; the returned
    /// future resolves after the durable commit. Appends queued one after another by a caller
    /// commit in that order, so a connection's pipelined sends keep their order while many of
    /// them share a commit.
    async fn queue_append(&self, msg: NewMessage) -> StoreResult<Committing<Appended>>;
    /// Edits a message (author only; in a dm, not across a block), as a timeline event.
    async fn edit(&self, room: &str, actor: &str, id: &str, body: &str) -> StoreResult<TimelineEvent>;
    /// Deletes a message (author or moderator), as a timeline event; the body is erased.
    async fn delete(&self, room: &str, actor: &str, id: &str) -> StoreResult<TimelineEvent>;
    /// A page of messages in their current state, as `viewer` may see them: a shadow-banned
    /// author's messages only to that author.
    async fn history(&self, room: &str, viewer: &str, page: HistoryPage) -> StoreResult<Vec<Message>>;
    /// Timeline events with `seq > after_seq`, ascending, at most `limit`; messages appear in
    /// their current state. The events of a shadow-banned author's messages carry `only_to`
    /// (the author): callers show them to nobody else.
    async fn timeline(&self, room: &str, after_seq: u64, limit: u32) -> StoreResult<Vec<TimelineEvent>>;
    /// Each room's `last_seq`, for those of `rooms` that exist (one read for many rooms: the
    /// hub's position check asks for every room it holds sessions in).
    async fn last_seqs(&self, rooms: &[String]) -> StoreResult<Vec<(String, u64)>>;
    /// Moves the user's read marker forward (never back, never past `last_seq`); returns it.
    async fn mark_read(&self, room: &str, user: &str, seq: u64) -> StoreResult<u64>;

    /// Log entries after position `after`, ascending, at most `limit`, each event as the
    /// timeline holds it now (a message deleted since shows as deleted). A page shorter than
    /// `limit` may stop before the log's end (at a position still committing, or where another
    /// node's entries begin); only an empty page says nothing readable follows.
    async fn events_after(&self, after: u64, limit: u32) -> StoreResult<Vec<LoggedEvent>>;
    /// The log's last position (0 when empty).
    async fn log_head(&self) -> StoreResult<u64>;
    /// A consumer's saved cursor: the last position it has finished with.
    async fn cursor(&self, consumer: &str) -> StoreResult<Option<u64>>;
    /// Durably records a consumer's cursor; a cursor never moves back.
    async fn save_cursor(&self, consumer: &str, pos: u64) -> StoreResult<()>;
    /// Deletes log entries every consumer with a saved cursor has finished with, at most one
    /// small slice per call (a write that must not hold others back for long); returns how
    /// many went, so the caller knows to call again.
    async fn prune_log(&self) -> StoreResult<u64>;
    /// Takes or renews the lease `name` for `holder` for `ttl_ms`: true when `holder` holds
    /// it now. At most one holder at a time; a holder that stops renewing loses it once the
    /// lease runs out, so a crashed node's work moves to another within `ttl_ms`.
    async fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> StoreResult<bool>;
    /// The highest log position this handle knows is readable, moving as commits land (its
    /// own at once; other nodes' when the backend tells it). Waking on it is only a hint: a
    /// consumer still reads by cursor, and polls in case a wake-up was missed.
    fn log_watch(&self) -> watch::Receiver<u64>;
    /// The user's rooms with their member counts, except dms with someone either of them has
    /// blocked: where a change of the user's presence goes.
    async fn presence_rooms(&self, user: &str) -> StoreResult<Vec<(String, u64)>>;
    /// Up to `limit` people who share a room of at most `room_limit` members with `user`,
    /// except those either of them has blocked: whose presence `ready` carries.
    async fn contacts(&self, user: &str, room_limit: u64, limit: u32) -> StoreResult<Vec<String>>;
    /// Those of `users` (in the order given) who share a room with `viewer` and have no block
    /// between them and `viewer`: the only ones whose presence `viewer` may read.
    async fn visible_users(&self, viewer: &str, users: &[String]) -> StoreResult<Vec<String>>;
    /// The ids of a room's members, for counting who of a large room is online.
    async fn member_ids(&self, room: &str) -> StoreResult<Vec<String>>;

    /// Gives a member another role, if the policy lets the actor (`moderation::policy`), with an
    /// audit entry in the same transaction; `None` when it was their role already.
    async fn set_role(
        &self,
        room: &str,
        actor: &str,
        target: &str,
        role: Role,
        reason: Option<&str>,
    ) -> StoreResult<Option<AuditEntry>>;
    /// The room's audit log, newest first, older than entry `before`, at most `limit` entries:
    /// for members the policy lets read it (`Forbidden` for other members, `NotFound` for
    /// non-members).
    async fn audit_log(
        &self,
        room: &str,
        actor: &str,
        before: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>> {
        self.audit_search(room, actor, &AuditFilter::default(), before, limit).await
    }
    /// [`Store::audit_log`], keeping only the entries that match every field `filter` sets.
    async fn audit_search(
        &self,
        room: &str,
        actor: &str,
        filter: &AuditFilter,
        before: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>>;

    /// Bans or mutes a user in a room, if the policy lets the actor (a moderator outranking them),
    /// until `until_ms` or for good, with an audit entry, in one transaction. A ban removes a
    /// member (the removal event is returned) and keeps them out; a mute refuses their sends
    /// (checked in the transaction of each send). Imposing it again replaces it.
    async fn sanction(
        &self,
        room: &str,
        actor: &str,
        target: &str,
        kind: SanctionKind,
        until_ms: Option<i64>,
        reason: Option<&str>,
    ) -> StoreResult<Option<TimelineEvent>>;
    /// Sets the room's slow mode (seconds between one member's messages, 0 for none; moderators
    /// and up are exempt), as the policy allows the actor, with an audit entry. Each send checks
    /// it in its own transaction against when the author last sent there.
    async fn set_slow_mode(&self, room: &str, actor: &str, secs: u32) -> StoreResult<()>;
    /// Lifts a ban or mute (a no-op when none stands), with an audit entry when one did.
    async fn lift_sanction(
        &self,
        room: &str,
        actor: &str,
        target: &str,
        kind: SanctionKind,
    ) -> StoreResult<()>;
    /// Whether a sanction of `kind` stands against `user` in `room` now (for what the server
    /// decides outside a write: a shadow-banned user's typing indicators are not sent).
    async fn sanctioned(&self, room: &str, user: &str, kind: SanctionKind) -> StoreResult<bool>;
    /// The room's standing sanctions of one kind, for moderators.
    async fn sanctions(&self, room: &str, actor: &str, kind: SanctionKind) -> StoreResult<Vec<Sanction>> {
        self.sanctions_page(room, actor, kind, None, 1000).await
    }
    /// [`Store::sanctions`] a page at a time: newest first (by when imposed, then user id), older
    /// than `before` (the last entry of the previous page: its `at_ms` and user), at most
    /// `limit`.
    async fn sanctions_page(
        &self,
        room: &str,
        actor: &str,
        kind: SanctionKind,
        before: Option<(i64, String)>,
        limit: u32,
    ) -> StoreResult<Vec<Sanction>>;

    /// Replaces the room's own filters (the protocol's `Filters` as JSON, `None` for none) as
    /// the policy allows the actor, with an audit entry when they changed; returns whether they
    /// did. The caller has checked that they compile.
    async fn set_filters(&self, room: &str, actor: &str, filters: Option<String>) -> StoreResult<bool>;
    /// The room's own filters as stored (JSON), for the node's compiled cache; `None` for a
    /// room without any, or no such room.
    async fn room_filters(&self, room: &str) -> StoreResult<Option<String>>;
    /// Appends an audit entry for something the server did by itself (a filter's block or
    /// flag), with an empty actor.
    async fn record_automatic(&self, room: &str, target: &str, action: &str, detail: &str)
    -> StoreResult<()>;

    /// Deletes `target`'s messages in the room sent at or after `since_ms` (at most 1,000 per
    /// call, oldest first), as a moderator outranking them may, each as a `delete` event, with
    /// one audit entry; returns how many.
    async fn purge(&self, room: &str, actor: &str, target: &str, since_ms: i64) -> StoreResult<u32>;
    /// Files a member's report of a message they can see or of another member, open, for the
    /// room's moderators; the same open report filed again is returned as it is (`false`). At
    /// most [`MAX_OPEN_REPORTS`] open reports per member and room (`Denied`).
    async fn report(
        &self,
        room: &str,
        reporter: &str,
        target: ReportTarget,
        reason: &str,
    ) -> StoreResult<(switchboard_protocol::Report, bool)>;
    /// The room's reports, `open` or resolved, newest first, older than `before`, at most
    /// `limit`: for members the policy lets handle them.
    async fn reports(
        &self,
        room: &str,
        actor: &str,
        open: bool,
        before: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<switchboard_protocol::Report>>;
    /// One report of the room, for members the policy lets handle them.
    async fn report_by_id(
        &self,
        room: &str,
        actor: &str,
        id: u64,
    ) -> StoreResult<switchboard_protocol::Report>;
    /// Resolves an open report with what was done (`Denied` once resolved), with an audit entry.
    async fn resolve_report(
        &self,
        room: &str,
        actor: &str,
        id: u64,
        resolution: &str,
        reason: Option<&str>,
    ) -> StoreResult<switchboard_protocol::Report>;
    /// The ids of the room's moderators and up, who hear of its reports.
    async fn moderator_ids(&self, room: &str) -> StoreResult<Vec<String>>;
    /// Replaces the server-wide admins (user ids, from the configuration): they moderate every
    /// room with an owner's rights, without being members. Each node writes the list at start.
    async fn set_server_admins(&self, admins: &[String]) -> StoreResult<()>;
    /// The role a moderation action counts for `user` in the room: a server-wide admin's is
    /// `owner`; `None` for someone with no standing there.
    async fn acting_role(&self, room: &str, user: &str) -> StoreResult<Option<Role>>;
    /// The room of the author's message sent with this key, if one was stored: a retry of a
    /// stored message is answered with it even when a limit would refuse a new one.
    async fn sent_in(&self, author: &str, client_msg_id: &str) -> StoreResult<Option<String>>;

    /// Finishes queued writes and stops; later writes fail with `Closed`.
    async fn close(&self);
}

/// Milliseconds since the Unix epoch, the unit timestamps are stored in.
pub(crate) fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Formats stored milliseconds as RFC 3339 UTC, the wire format of every timestamp.
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}
