//! Presence seam: who is online, away or offline, across all of a user's connections and every
//! node.
//!
//! [`Presence`] keeps one entry per connection (`<node>/<session>`) with an expiry that the
//! owning node renews; the user's status is derived from those entries. Two implementations
//! hold to the same contract (one conformance suite, `conformance.rs`): the in-process
//! [`local::LocalPresence`] (the embedded default) and [`redis::RedisPresence`] for clusters.
//! Who hears of a change (rooms, throttling, large rooms) is decided above the seam, in
//! [`node`].

pub mod local;
pub mod node;
pub mod redis;

#[cfg(test)]
pub(crate) mod conformance;

use async_trait::async_trait;
use switchboard_protocol::{ChosenStatus, Presence as WirePresence, Status};

/// One user's presence as the backend holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// User id.
    pub user: String,
    /// Derived from all of the user's connections.
    pub status: Status,
    /// When the last connection went (ms since the epoch), once the user has been offline.
    pub last_seen_ms: Option<i64>,
    /// The custom status text; it belongs to the user and outlives their connections.
    pub text: Option<String>,
    /// Grows with every change of this user's state (at least the backend's clock in ms, so it
    /// keeps growing after the backend loses its data): receivers drop anything older than what
    /// they have.
    pub version: u64,
}

impl State {
    /// A user the backend knows nothing of.
    pub fn unknown(user: &str) -> State {
        State { user: user.to_owned(), status: Status::Offline, last_seen_ms: None, text: None, version: 0 }
    }

    /// As clients see it: `last_seen` only for offline users.
    pub fn to_wire(&self) -> WirePresence {
        WirePresence {
            user: self.user.clone(),
            status: self.status,
            last_seen: match (self.status, self.last_seen_ms) {
                (Status::Offline, Some(ms)) => Some(crate::store::rfc3339_ms(ms)),
                _ => None,
            },
            text: self.text.clone(),
        }
    }
}

/// What one [`Presence::sweep`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Lapsed connections removed (when it reaches the limit, more may be waiting).
    pub removed: usize,
    /// The state changes that made.
    pub changes: Vec<State>,
}

/// What a status call does to the user's custom text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    /// Leave it as it is.
    Keep,
    /// Replace it (already sanitised by the caller).
    Set(String),
    /// Remove it.
    Clear,
}

/// Why a presence call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PresenceError {
    /// The backend is unreachable or refused; presence is best effort, so callers log this and
    /// carry on (the next renewal registers what was lost).
    #[error("presence unavailable: {0}")]
    Unavailable(String),
}

/// Shorthand for presence results.
pub type PresenceResult<T> = Result<T, PresenceError>;

/// Per-connection presence entries and the status derived from them.
///
/// Guarantees every implementation keeps (the conformance suite checks each):
/// - **Derivation.** A user is `online` while any of their connections is online, `away` while
///   they have connections and every one is away, and `offline` (with `last_seen`) once none is
///   left. The custom text belongs to the user and outlives their connections.
/// - **Expiry.** A connection lives until `ttl_ms` after it was registered or last renewed; a
///   node that stops renewing (it crashed) loses its connections at the next [`Presence::sweep`]
///   by any node, so its users go offline by themselves. Nothing depends on a clean shutdown.
/// - **Debounce.** A closed connection still counts for `grace_ms`: a reconnect within it (a
///   phone flapping) changes nothing, and nothing is announced.
/// - **Each change is reported once.** Every call that changes a user's derived state (or text)
///   returns the new [`State`] with a higher `version`, and exactly one call returns it, however
///   many nodes call at once; a call that changes nothing returns `None`. Versions only grow,
///   also across a backend that lost its data (they are at least its clock in ms).
/// - **What a watcher may miss.** Changes travel on the bus, best effort; a watcher that missed
///   one sees the current state at its next `ready` or REST read, and the next change supersedes
///   it (receivers keep only the highest version).
/// - **Recovery.** [`Presence::renew`] reports the connections the backend no longer knows (it
///   restarted empty, or swept them while the node was cut off), and the node registers them
///   again, so every open connection is back within one renewal.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Registers (or re-registers) a connection with its status, expiring after `ttl_ms`: a
    /// status call that leaves the text as it is.
    async fn connect(
        &self,
        user: &str,
        conn: &str,
        status: ChosenStatus,
        ttl_ms: u64,
    ) -> PresenceResult<Option<State>> {
        self.set_status(user, conn, status, Text::Keep, ttl_ms).await
    }
    /// Sets a connection's status and the user's text; a connection the backend lost is
    /// registered again.
    async fn set_status(
        &self,
        user: &str,
        conn: &str,
        status: ChosenStatus,
        text: Text,
        ttl_ms: u64,
    ) -> PresenceResult<Option<State>>;
    /// The connection closed: it still counts for `grace_ms`, then the next sweep removes it.
    async fn disconnect(&self, user: &str, conn: &str, grace_ms: u64) -> PresenceResult<()>;
    /// Pushes the expiry of these live `(user, conn)` connections to `ttl_ms` from now; returns
    /// the indexes of those the backend no longer knows.
    async fn renew(&self, conns: &[(String, String)], ttl_ms: u64) -> PresenceResult<Vec<usize>>;
    /// Removes up to `limit` connections whose expiry has passed, on behalf of every node, and
    /// returns how many went and the state changes that made.
    async fn sweep(&self, limit: usize) -> PresenceResult<Swept>;
    /// The current state of each user, in the order given (offline, version 0, when unknown).
    async fn get(&self, users: &[String]) -> PresenceResult<Vec<State>>;
    /// Checks the backend answers, for `/readyz`.
    async fn ping(&self) -> PresenceResult<()>;
}
