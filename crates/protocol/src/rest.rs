//! REST request and response bodies.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::model::{AddPolicy, Invite, Message, Room, RoomKind, User};

/// `POST /v1/users` and `POST /v1/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Credentials {
    /// 1–32 chars of `[a-z0-9_.-]` after NFKC and lowercasing.
    pub username: String,
    /// 8–256 characters.
    pub password: String,
}

/// `POST /v1/users`: credentials, plus an invite token where sign-ups are invite-only.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Registration {
    /// 1–32 chars of `[a-z0-9_.-]` after NFKC and lowercasing.
    pub username: String,
    /// 8–256 characters.
    pub password: String,
    /// An invite token (from `switchboard invite` or the operator's backend), when the server's
    /// `registration` is `invite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite: Option<String>,
}

/// `GET` and `PUT /v1/me/settings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct UserSettings {
    /// Who may put you into rooms.
    pub add_policy: AddPolicy,
}

/// `GET /v1/me/blocks`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BlockList {
    /// Users you have blocked.
    pub users: Vec<User>,
}

/// `GET /v1/invites`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InviteList {
    /// Invitations waiting for you, newest first.
    pub invites: Vec<Invite>,
}

/// `202` answer of `POST /v1/rooms/{id}/members` when the user was invited, not added.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Invited {
    /// The invitation now waiting for them.
    pub invite: Invite,
}

/// A user with a fresh token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuthResponse {
    /// The account.
    pub user: User,
    /// A JWT for `Authorization: Bearer` and the WebSocket `hello`.
    pub token: String,
}

/// `POST /v1/rooms`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateRoom {
    /// Display name (1–100 chars; may be empty for a `dm`).
    #[serde(default)]
    pub name: String,
    /// Visibility.
    pub kind: RoomKind,
    /// Other initial members' user ids; a `dm` needs exactly one.
    #[serde(default)]
    pub members: Vec<String>,
}

/// `GET /v1/rooms`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RoomList {
    /// The caller's rooms.
    pub rooms: Vec<Room>,
}

/// `POST /v1/rooms/{id}/members`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AddMember {
    /// The user to add.
    pub user_id: String,
}

/// A member of a room.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Member {
    /// The user.
    pub user: User,
    /// Their role.
    pub role: crate::model::Role,
    /// Their read marker, where read markers are shown (dms and small rooms; extension): what
    /// a client needs to show "Seen" after a reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_seq: Option<u64>,
}

/// `GET /v1/rooms/{id}/members`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberList {
    /// Current members.
    pub members: Vec<Member>,
}

/// `POST /v1/rooms/{id}/messages`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PostMessage {
    /// Idempotency key: a repeat returns the first message with `200`.
    pub client_msg_id: String,
    /// Text.
    pub body: String,
}

/// `PATCH /v1/rooms/{id}/messages/{msg_id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EditMessage {
    /// New text.
    pub body: String,
}

/// Query of `GET /v1/rooms/{id}/messages`: `after_seq` pages forward, otherwise the newest
/// page before `before_seq` (or the end) is returned; always in `seq` order.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, IntoParams)]
pub struct HistoryQuery {
    /// Only messages with `seq` below this.
    pub before_seq: Option<u64>,
    /// Only messages with `seq` above this.
    pub after_seq: Option<u64>,
    /// Page size, default 50, max 200.
    pub limit: Option<u32>,
}

/// Query of `GET /v1/users/lookup`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, IntoParams)]
pub struct UserLookup {
    /// The username, exactly (it is normalised as at registration).
    pub username: String,
}

/// Query of `GET /v1/rooms/public`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, IntoParams)]
pub struct PublicRoomsQuery {
    /// How many rooms, default 100, max 500.
    pub limit: Option<u32>,
}

/// A page of history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageList {
    /// Messages in `seq` order.
    pub messages: Vec<Message>,
}

/// `{"error":{"code","message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of an error body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable `snake_case` code.
    pub code: String,
    /// Human text.
    pub message: String,
    /// For `rate_limited` and `unavailable`: how long to wait before retrying, in ms (the
    /// `Retry-After` header says the same in whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// `POST /v1/rooms/{id}/read`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MarkRead {
    /// Last `seq` read.
    pub seq: u64,
}

/// The caller's read marker after a move.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReadState {
    /// Last `seq` read (never moves back, never past `last_seq`).
    pub read_seq: u64,
}

/// `GET /v1/presence?users=…`: the presence of the asked-for users the caller may see; the
/// others are left out, exactly as unknown users are.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PresenceList {
    /// One entry per visible user, in the order asked.
    pub presence: Vec<crate::model::Presence>,
}

/// `PUT /v1/rooms/{id}/members/{user_id}/role`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SetRole {
    /// `admin`, `moderator` or `member` (nobody is made owner).
    pub role: crate::model::Role,
    /// Why, for the audit log (at most 500 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /v1/rooms/{id}/audit?before=&limit=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    /// Entries older than this id (the last page's smallest).
    pub before: Option<u64>,
    /// Page size, default 50, at most 200.
    pub limit: Option<u32>,
    /// Only this action (`ban`, `auto_block`, `resolve_report`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Only entries about this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Only entries by this user; empty for the server's automatic ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// A page of a room's audit log, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    /// The entries.
    pub entries: Vec<crate::model::AuditEntry>,
}

/// `POST /v1/rooms/{id}/bans` and `POST /v1/rooms/{id}/mutes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Impose {
    /// Who.
    pub user_id: String,
    /// Why, for the audit log (at most 500 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long, in seconds (1 to 10 years); for good when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
}

/// A standing ban or mute.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SanctionEntry {
    /// Who.
    pub user_id: String,
    /// The moderator who imposed it.
    pub by: String,
    /// Why, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When, RFC 3339 UTC.
    pub at: String,
    /// When it ends, RFC 3339 UTC; absent when it is for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// `GET /v1/rooms/{id}/bans`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BanList {
    /// Standing bans, newest first.
    pub bans: Vec<SanctionEntry>,
    /// Where the next page starts (`?before=`), when there may be one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `GET /v1/rooms/{id}/mutes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MuteList {
    /// Standing mutes, newest first.
    pub mutes: Vec<SanctionEntry>,
    /// Where the next page starts (`?before=`), when there may be one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `POST /v1/rooms/{id}/purge`: delete a member's recent messages.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Purge {
    /// Whose messages.
    pub user_id: String,
    /// Sent within this many hours (1 to 720).
    pub hours: u32,
}

/// Answer to `POST /v1/rooms/{id}/purge`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Purged {
    /// Messages deleted (at most 1,000 per call: repeat for more).
    pub deleted: u32,
}

/// `POST /v1/rooms/{id}/reports`: a member reports a message or another member.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct NewReport {
    /// The message (its author is the one reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The member, when no message is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Why (1 to 500 characters).
    pub reason: String,
}

/// `GET /v1/rooms/{id}/reports?status=&before=&limit=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, IntoParams)]
pub struct ReportQuery {
    /// `open` (default) or `resolved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Only reports with a smaller id (the last page's smallest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// Page size, 1 to 200 (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// A page of reports, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReportList {
    /// The reports.
    pub reports: Vec<crate::model::Report>,
}

/// `POST /v1/rooms/{id}/reports/{report_id}/resolve`: what the moderator does about it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResolveReport {
    /// `dismiss`, `delete_message` (a reported message), `kick`, `mute`, `ban` or `shadow_ban`
    /// (the reported member).
    pub action: String,
    /// For `mute`, `ban` and `shadow_ban`: how long, in seconds (left out: for good).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
    /// Why, for the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /v1/rooms/{id}/bans`, `/mutes`, `/shadow-bans`: a page of the standing sanctions.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
pub struct SanctionQuery {
    /// The `next` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// Page size, 1 to 1,000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `GET /v1/rooms/{id}/shadow-bans`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ShadowBanList {
    /// Standing shadow bans, newest first.
    pub shadow_bans: Vec<SanctionEntry>,
    /// Where the next page starts (`?before=`), when there may be one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `PATCH /v1/rooms/{id}`: the room's settings that moderators change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RoomSettings {
    /// Seconds between one member's messages (0 to 21,600; 0 turns it off). Moderators and up
    /// are exempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_mode_secs: Option<u32>,
    /// The room's own filters, replacing the ones it had (the server-wide ones apply too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Filters>,
}

/// What a filter does with a message it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FilterAction {
    /// The rule is not applied.
    Off,
    /// The message is refused (`filtered`), with an audit entry.
    Block,
    /// The matched text is replaced by `*` and the message goes through.
    Mask,
    /// The message goes through, with an audit entry for moderators.
    Flag,
}

/// Content rules of a room (`PATCH /v1/rooms/{id}`, `GET /v1/rooms/{id}/filters`) or of the
/// whole server (the `[filters]` table of the configuration). Sizes are bounded: at most 5,000
/// words of at most 100 characters, 100 patterns of at most 500 characters, and 1,000 domains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Filters {
    /// The built-in profanity filter (it sees through spacing, repeated letters and
    /// look-alike characters); `off` by default.
    pub profanity: FilterAction,
    /// Words or phrases matched whole, ignoring case and accents.
    pub words: Vec<String>,
    /// What a listed word does (`block` by default).
    pub words_action: FilterAction,
    /// Regular expressions (Rust `regex` syntax, which runs in linear time: no backreferences
    /// or look-around), matched against the text as sent.
    pub patterns: Vec<String>,
    /// What a matching pattern does (`block` by default).
    pub patterns_action: FilterAction,
    /// Links to these domains (and their subdomains) are refused.
    pub deny_domains: Vec<String>,
    /// When not empty, links to any other domain are refused.
    pub allow_domains: Vec<String>,
    /// Invite links to other chat communities (Discord, Telegram, WhatsApp, Slack, …) are
    /// refused.
    pub block_invites: bool,
}

impl Default for Filters {
    fn default() -> Self {
        Filters {
            profanity: FilterAction::Off,
            words: Vec::new(),
            words_action: FilterAction::Block,
            patterns: Vec::new(),
            patterns_action: FilterAction::Block,
            deny_domains: Vec::new(),
            allow_domains: Vec::new(),
            block_invites: false,
        }
    }
}

impl Filters {
    /// Whether no rule is on (nothing to check).
    pub fn is_empty(&self) -> bool {
        (self.profanity == FilterAction::Off)
            && (self.words.is_empty() || self.words_action == FilterAction::Off)
            && (self.patterns.is_empty() || self.patterns_action == FilterAction::Off)
            && self.deny_domains.is_empty()
            && self.allow_domains.is_empty()
            && !self.block_invites
    }
}
