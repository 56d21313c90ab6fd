//! WebSocket frames: text frames holding one JSON object each, tagged by `"op"`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::{MemberChange, Message, Room, User};

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Must be the first frame, within the hello timeout.
    Hello {
        /// A Switchboard token or one from the operator's backend.
        token: String,
        /// Last `seq` seen per room id; those rooms are replayed from there.
        #[serde(default)]
        since: Option<BTreeMap<String, u64>>,
    },
    /// Post a message; answered by `ack` after a durable commit, or by `error`.
    Send {
        /// Room id.
        room: String,
        /// Client-chosen idempotency key: a retry returns the first message.
        client_msg_id: String,
        /// Text.
        body: String,
    },
    /// The user is typing in a room (ephemeral, best effort).
    Typing {
        /// Room id.
        room: String,
    },
    /// Move the user's read marker forward.
    Read {
        /// Room id.
        room: String,
        /// Last `seq` read.
        seq: u64,
    },
    /// Application-level heartbeat, answered by `pong`.
    Ping,
    /// Sets this connection's status, and optionally the user's custom status text (an empty
    /// text clears it; leaving it out keeps it).
    Status {
        /// `online` or `away`.
        status: crate::model::ChosenStatus,
        /// Custom status text, bounded and sanitised by the server.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
}

/// A change on a room's timeline: the events that take a `seq` and that resume replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TimelineEvent {
    /// A new message (in its current state when replayed).
    Message(Message),
    /// A message's body changed.
    Edit(EditEvent),
    /// A message was deleted.
    Delete(DeleteEvent),
    /// Someone joined, left or was removed.
    Member(MemberEvent),
}

impl TimelineEvent {
    /// The room whose timeline holds this event.
    pub fn room(&self) -> &str {
        match self {
            TimelineEvent::Message(m) => &m.room,
            TimelineEvent::Edit(e) => &e.room,
            TimelineEvent::Delete(d) => &d.room,
            TimelineEvent::Member(m) => &m.room,
        }
    }

    /// The event's position in its room's timeline.
    pub fn seq(&self) -> u64 {
        match self {
            TimelineEvent::Message(m) => m.seq,
            TimelineEvent::Edit(e) => e.seq,
            TimelineEvent::Delete(d) => d.seq,
            TimelineEvent::Member(m) => m.seq,
        }
    }

    /// The one user shown this event, when it concerns a shadow-banned author's message.
    pub fn only_to(&self) -> Option<&str> {
        match self {
            TimelineEvent::Message(m) => m.only_to.as_deref(),
            TimelineEvent::Edit(e) => e.only_to.as_deref(),
            TimelineEvent::Delete(d) => d.only_to.as_deref(),
            TimelineEvent::Member(_) => None,
        }
    }
}

/// Body of an `edit` timeline event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EditEvent {
    /// Room id.
    pub room: String,
    /// This event's own `seq` (not the message's).
    pub seq: u64,
    /// The edited message's id.
    pub id: String,
    /// New text; empty if the message was deleted since.
    pub body: String,
    /// RFC 3339 UTC.
    pub edited_at: String,
    /// Set by the server for the event of a shadow-banned author's message: only this user
    /// (the author) is shown it. Never on the wire.
    #[serde(skip)]
    #[schema(ignore)]
    pub only_to: Option<String>,
}

/// Body of a `delete` timeline event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeleteEvent {
    /// Room id.
    pub room: String,
    /// This event's own `seq`.
    pub seq: u64,
    /// The deleted message's id.
    pub id: String,
    /// Set by the server for the event of a shadow-banned author's message: only this user
    /// (the author) is shown it. Never on the wire.
    #[serde(skip)]
    #[schema(ignore)]
    pub only_to: Option<String>,
}

/// Body of a `member` timeline event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberEvent {
    /// Room id.
    pub room: String,
    /// This event's own `seq`.
    pub seq: u64,
    /// The user whose membership changed.
    pub user: String,
    /// What happened.
    pub change: MemberChange,
}

/// Frames the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Answer to a valid `hello`.
    Ready {
        /// This connection's id, for support and logs.
        session_id: String,
        /// The authenticated user.
        user: User,
        /// How often the server pings; send something at least this often.
        heartbeat_ms: u64,
        /// The user's rooms with `last_seq`, `read_seq` and `unread`.
        rooms: Vec<Room>,
        /// The presence of the user and of the people in the user's small rooms (extension;
        /// absent when presence is off).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        presence: Vec<crate::model::Presence>,
    },
    /// A `send` was durably stored.
    Ack {
        /// The key from the `send`.
        client_msg_id: String,
        /// Message id.
        id: String,
        /// Message `seq`.
        seq: u64,
        /// Commit time.
        ts: String,
    },
    /// A refused frame or request; the connection stays open unless a close follows.
    Error {
        /// Stable code from [`crate::codes::error`].
        code: String,
        /// Human text.
        message: String,
        /// Set when the error answers a `send`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<String>,
        /// Set when the error concerns one room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        /// For `rate_limited` and `unavailable`: wait this long (ms) before retrying.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// Answer to `ping`.
    Pong,
    /// Someone is typing (ephemeral).
    Typing {
        /// Room id.
        room: String,
        /// Who is typing.
        user: String,
    },
    /// A member's read marker moved.
    Read {
        /// Room id.
        room: String,
        /// Whose marker.
        user: String,
        /// Last `seq` read.
        seq: u64,
    },
    /// The user's own membership changed: a room appeared in or left their list.
    Room {
        /// The room (its state at the change).
        room: Room,
        /// Joined, left or removed.
        change: MemberChange,
        /// The `seq` of the member event that made the change: a client resuming later passes
        /// at least `seq - 1` for this room (extension).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// Events `after_seq < seq <= until_seq` will not be replayed: page them over REST.
    Gap {
        /// Room id.
        room: String,
        /// The client's resume point.
        after_seq: u64,
        /// Last `seq` not replayed.
        until_seq: u64,
    },
    /// A user's presence changed (someone sharing a small room with the user, or the user's
    /// own other devices).
    Presence(crate::model::Presence),
    /// How many members of a large room are online or away now (extension): sent instead of
    /// per-member `presence` frames, at most every few seconds, when the count moves.
    Online {
        /// Room id.
        room: String,
        /// Members online or away.
        count: u64,
    },
    /// You were invited into a room: accept with `POST /v1/rooms/{id}/join`, or decline with
    /// `DELETE /v1/invites/{room id}` (extension).
    Invite {
        /// The invitation.
        invite: crate::model::Invite,
    },
    /// A report in a room you moderate was filed or resolved (extension): the moderators'
    /// queue, live.
    Report {
        /// The report as it stands now.
        report: crate::model::Report,
    },
    /// Timeline: a new message.
    Message(Message),
    /// Timeline: a message was edited.
    Edit(EditEvent),
    /// Timeline: a message was deleted.
    Delete(DeleteEvent),
    /// Timeline: a membership changed.
    Member(MemberEvent),
}

impl From<TimelineEvent> for ServerFrame {
    fn from(e: TimelineEvent) -> Self {
        match e {
            TimelineEvent::Message(m) => ServerFrame::Message(m),
            TimelineEvent::Edit(e) => ServerFrame::Edit(e),
            TimelineEvent::Delete(d) => ServerFrame::Delete(d),
            TimelineEvent::Member(m) => ServerFrame::Member(m),
        }
    }
}

impl ServerFrame {
    /// The timeline position `(room, seq)` when this frame is a timeline event.
    pub fn timeline_pos(&self) -> Option<(&str, u64)> {
        match self {
            ServerFrame::Message(m) => Some((&m.room, m.seq)),
            ServerFrame::Edit(e) => Some((&e.room, e.seq)),
            ServerFrame::Delete(d) => Some((&d.room, d.seq)),
            ServerFrame::Member(m) => Some((&m.room, m.seq)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_round_trip_with_op_tag() {
        let f: ClientFrame =
            serde_json::from_str(r#"{"op":"send","room":"r","client_msg_id":"c","body":"hi"}"#).unwrap();
        assert_eq!(f, ClientFrame::Send { room: "r".into(), client_msg_id: "c".into(), body: "hi".into() });
        let hello: ClientFrame =
            serde_json::from_str(r#"{"op":"hello","token":"t","since":{"r":3}}"#).unwrap();
        match hello {
            ClientFrame::Hello { since: Some(s), .. } => assert_eq!(s.get("r"), Some(&3)),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(serde_json::from_str::<ClientFrame>(r#"{"op":"ping"}"#).unwrap(), ClientFrame::Ping);
    }

    #[test]
    fn timeline_events_serialise_as_server_frames() {
        let ev = TimelineEvent::Member(MemberEvent {
            room: "r".into(),
            seq: 4,
            user: "u".into(),
            change: MemberChange::Joined,
        });
        let text = serde_json::to_string(&ev).unwrap();
        assert_eq!(text, r#"{"op":"member","room":"r","seq":4,"user":"u","change":"joined"}"#);
        let back: ServerFrame = serde_json::from_str(&text).unwrap();
        assert_eq!(back.timeline_pos(), Some(("r", 4)));
    }

    #[test]
    fn bad_frames_are_rejected() {
        for bad in [
            r#"{"op":"send","room":"r"}"#,
            r#"{"op":"nope"}"#,
            r#"[1,2]"#,
            r#"{"op":"read","room":"r","seq":-1}"#,
            r#"{"op":"read","room":"r","seq":1e400}"#,
            r#"{"op":"send","room":"r","room":"s","client_msg_id":"c","body":"b"}"#,
        ] {
            assert!(serde_json::from_str::<ClientFrame>(bad).is_err(), "{bad}");
        }
    }
}
