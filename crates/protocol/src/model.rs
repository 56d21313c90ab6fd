//! Resources as they appear on the wire.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A user as other users see them. Never carries credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    /// Stable id: a UUIDv7 for local accounts, the token's `sub` for external ones.
    pub id: String,
    /// Normalised login name (NFKC, lowercase, `[a-z0-9_.-]{1,32}`).
    pub username: String,
}

/// Who may find and join a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoomKind {
    /// Anyone may join.
    Public,
    /// Members are added by other members.
    Private,
    /// Exactly two members; asking again for the same pair returns the same room.
    Dm,
}

impl RoomKind {
    /// The name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomKind::Public => "public",
            RoomKind::Private => "private",
            RoomKind::Dm => "dm",
        }
    }

    /// Parses the storage name back; `None` for anything unknown.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "public" => Some(RoomKind::Public),
            "private" => Some(RoomKind::Private),
            "dm" => Some(RoomKind::Dm),
            _ => None,
        }
    }
}

/// Who may put a user into a room, the user's own setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AddPolicy {
    /// Being added sends an invite the user accepts or declines (the default).
    #[default]
    Invite,
    /// Anyone who may add members to a room adds the user at once.
    Anyone,
    /// Nobody may add or invite the user; they join public rooms themselves.
    Nobody,
}

impl AddPolicy {
    /// The name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            AddPolicy::Invite => "invite",
            AddPolicy::Anyone => "anyone",
            AddPolicy::Nobody => "nobody",
        }
    }

    /// Parses the storage name back; `None` for anything unknown.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "invite" => Some(AddPolicy::Invite),
            "anyone" => Some(AddPolicy::Anyone),
            "nobody" => Some(AddPolicy::Nobody),
            _ => None,
        }
    }
}

/// A pending invitation into a room, waiting for the invited user to accept (join) or decline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Invite {
    /// The room, as a non-member sees it.
    pub room: Room,
    /// Who invited.
    pub inviter: User,
    /// When, RFC 3339 UTC.
    pub created_at: String,
}

/// A member's standing in a room; moderation builds on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Created the room; everything an admin may, over admins too.
    Owner,
    /// Moderates, and gives or takes the moderator role (extension).
    Admin,
    /// Removes members and deletes their messages, adds to private rooms, reads the audit log.
    Moderator,
    /// Reads and writes.
    Member,
}

impl Role {
    /// The name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Moderator => "moderator",
            Role::Member => "member",
        }
    }

    /// Parses the storage name back; `None` for anything unknown.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "owner" => Some(Role::Owner),
            "admin" => Some(Role::Admin),
            "moderator" => Some(Role::Moderator),
            "member" => Some(Role::Member),
            _ => None,
        }
    }

    /// Whether this role may moderate others' messages.
    pub fn can_moderate(self) -> bool {
        matches!(self, Role::Owner | Role::Admin | Role::Moderator)
    }
}

/// A room as listed for one of its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Room {
    /// Stable id (UUIDv7).
    pub id: String,
    /// Display name; for a `dm`, empty unless the creator gave one.
    pub name: String,
    /// Visibility.
    pub kind: RoomKind,
    /// The room's latest timeline `seq` (0 when empty): resume and unread counts start here.
    pub last_seq: u64,
    /// The caller's role, when the caller is a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The caller's read marker (last `seq` read), when the caller is a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_seq: Option<u64>,
    /// Messages by others after the caller's read marker, not deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread: Option<u64>,
    /// How many members the room has (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<u64>,
    /// For a room above the server's presence limit, how many members are online or away:
    /// such rooms get this count instead of per-member `presence` frames (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<u64>,
}

/// A message in its current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    /// Global, time-ordered id (UUIDv7).
    pub id: String,
    /// Room id.
    pub room: String,
    /// Position in the room's timeline: gap-free and strictly increasing per room.
    pub seq: u64,
    /// Author's user id.
    pub author: String,
    /// Text; empty when deleted. Always rendered as text, never as markup.
    pub body: String,
    /// Commit time, RFC 3339 UTC.
    pub ts: String,
    /// The author's idempotency key.
    pub client_msg_id: String,
    /// Last edit time, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<String>,
    /// Present and true once deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
    /// Set by the server for the event of a shadow-banned author's message: only this user
    /// (the author) is shown it. Never on the wire.
    #[serde(skip)]
    #[schema(ignore)]
    pub only_to: Option<String>,
}

/// A member's report of a message or of another member, for the room's moderators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Report {
    /// Grows with every report of the server (page with `before`).
    pub id: u64,
    /// Room id.
    pub room: String,
    /// Who reported.
    pub reporter: String,
    /// Who is reported (the message's author, for a message).
    pub user_id: String,
    /// The message reported, if it is a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Why, as the reporter gave it.
    pub reason: String,
    /// `open` or `resolved`.
    pub status: String,
    /// When it was filed, RFC 3339 UTC.
    pub created_at: String,
    /// Which moderator resolved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    /// What was done: `dismiss`, `delete_message`, `mute`, `ban`, `shadow_ban`, `kick`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// When it was resolved, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
}

/// Why a membership changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberChange {
    /// Joined a public room, was added, or created the room.
    Joined,
    /// Left by their own request.
    Left,
    /// Removed by someone else.
    Removed,
}

impl MemberChange {
    /// The name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberChange::Joined => "joined",
            MemberChange::Left => "left",
            MemberChange::Removed => "removed",
        }
    }

    /// Parses the storage name back; `None` for anything unknown.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "joined" => Some(MemberChange::Joined),
            "left" => Some(MemberChange::Left),
            "removed" => Some(MemberChange::Removed),
            _ => None,
        }
    }
}

/// A user's presence across all of their connections and nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// At least one connection is active.
    Online,
    /// Connected, but every connection is away (set by the client, or idle).
    Away,
    /// No connection.
    Offline,
}

impl Status {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Away => "away",
            Status::Offline => "offline",
        }
    }

    /// Parses the wire name back; `None` for anything unknown.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "online" => Some(Status::Online),
            "away" => Some(Status::Away),
            "offline" => Some(Status::Offline),
            _ => None,
        }
    }
}

/// What a client may set its connection to: offline is never chosen, it is the absence of
/// connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChosenStatus {
    /// Active.
    Online,
    /// Away from the keyboard.
    Away,
}

/// One user's presence as others see it: in `presence` frames, in `ready` and over REST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Presence {
    /// User id.
    pub user: String,
    /// Derived from all of the user's connections.
    pub status: Status,
    /// When the user was last connected (RFC 3339 UTC), for `offline` users when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// The user's custom status text, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// One entry of a room's audit log: a moderation action, append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Grows with every entry of the room (page with `before`).
    pub id: u64,
    /// Who acted.
    pub actor: String,
    /// What was done: `set_role`, `remove_member`, `delete_message`, …
    pub action: String,
    /// The member acted on, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Why, as the actor gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What changed, e.g. `member->moderator`, or the deleted message's id (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When, RFC 3339 UTC.
    pub ts: String,
}
