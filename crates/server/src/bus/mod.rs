//! Fanout seam: carries a room's events to every node that holds members of the room.
//!
//! The bus moves already-encoded frames; it never decides who sees what (the hub does) and never
//! holds the truth (the store does). It is best-effort by contract: a node that misses an event
//! notices the `seq` gap at its next event and fills it from the store, so nothing acked is lost
//! even when the bus drops something.

pub mod local;
pub mod nats;

#[cfg(test)]
pub(crate) mod conformance;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use switchboard_protocol::MemberChange;

/// What a node subscribes to: a room's events, or the membership changes of a user it holds
/// sessions for (so a user added to a room this node has no subscribers in still hears of it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// Every event of a room.
    Room(String),
    /// Member events about one user, in any room, and what concerns only them (invites).
    User(String),
    /// What every node must hear (sign-outs now; bans later), whatever sessions it holds.
    Control,
}

/// One event on the bus: an encoded server frame plus what receivers need to route it without
/// parsing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusEvent {
    /// Where it is published.
    pub topic: Topic,
    /// Room id of the frame.
    pub room: String,
    /// Timeline `seq`; 0 for ephemeral events (typing, read markers), which are never replayed.
    pub seq: u64,
    /// For member events: whose membership changed and how, so receivers can update their
    /// room subscriptions in timeline order.
    pub member: Option<(String, MemberChange)>,
    /// Session that caused an ephemeral event, which it is not echoed back to.
    pub origin: Option<String>,
    /// The frame as sent to clients (UTF-8 JSON), encoded once by the publisher.
    pub payload: Bytes,
    /// When it was published, in microseconds since the Unix epoch (0 if unknown): the start
    /// of the fanout latency measured when a session writes the frame.
    pub published_us: u64,
    /// An instruction for the receiving nodes instead of (or beside) a frame for clients.
    pub control: Option<Control>,
}

/// What a node must do on hearing an event, beyond handing a frame to sessions. Carried on the
/// control topic, which every node subscribes to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Control {
    /// Close the user's gateway sessions that belong to this signed-in session, or all of the
    /// user's sessions when `session` is `None` (signed out; 4003).
    EndSessions {
        /// Whose.
        user: String,
        /// Which signed-in session; `None` for all of them.
        session: Option<String>,
    },
    /// The payload is a `presence` frame about `user` at `version`: receivers give each local
    /// session each version once (however many rooms it shares with the user) and drop older
    /// versions. On a room topic it goes to the room's members, on the user's topic to the
    /// user's own sessions.
    Presence {
        /// Whose presence.
        user: String,
        /// The change's version.
        version: u64,
    },
    /// A member of this large room changed presence: nodes holding its members count who is
    /// online again (at most every few seconds) and push the count if it moved.
    Recount,
    /// The timeline event is a shadow-banned author's: only `user`'s sessions are shown it;
    /// every other session of the room goes past its `seq` in silence.
    OnlyTo {
        /// The one user shown it.
        user: String,
    },
}

/// Now, in microseconds since the Unix epoch (the unit of [`BusEvent::published_us`]).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Why a bus call failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus is unreachable or refused the call; callers retry or rely on gap filling.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

/// The node's inbound handler, called for every event on a subscribed room. It must not block:
/// the hub only enqueues.
pub type BusHandler = Arc<dyn Fn(BusEvent) + Send + Sync>;

/// Topic fanout between nodes.
///
/// Contract (checked by the conformance suite for every implementation):
/// - An event published on topic T reaches the handler of every node subscribed to T at the
///   time of publishing (including the publisher's own node), at most once per node.
/// - Events from one publisher on one topic arrive in publish order.
/// - After `unsubscribe(T)` returns, the node's handler gets no more events for T; after
///   `subscribe(T)` returns, it gets every later one. Both take many topics at once, so a
///   networked bus can pay one round trip for all of them.
/// - Delivery is best-effort: receivers tolerate loss by filling `seq` gaps from the store.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Installs the node's handler. Called once, before any subscription.
    fn set_handler(&self, handler: BusHandler);
    /// Sends an event to every node subscribed to its topic.
    async fn publish(&self, event: BusEvent) -> Result<(), BusError>;
    /// Starts receiving these topics' events on this node (a topic already subscribed stays so).
    /// When it returns, every event any node publishes to them afterwards reaches the handler:
    /// a session subscribes and then reads the store, and an event in between would be a gap.
    async fn subscribe(&self, topics: &[Topic]) -> Result<(), BusError>;
    /// Stops receiving these topics' events on this node.
    async fn unsubscribe(&self, topics: &[Topic]) -> Result<(), BusError>;
    /// Checks the bus answers, for `/readyz`.
    async fn ping(&self) -> Result<(), BusError>;
}
