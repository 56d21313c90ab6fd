//! The store-wide event log: every committed timeline event, in commit order, each with a
//! position. Written in the event's own transaction (an outbox), read by cursor by the relay that
//! publishes to the bus and by every later worker, so that nothing committed can miss one of
//! them, whatever crashes between a commit and its fanout.
//!
//! A log entry only names its event (room and `seq`); readers get the event as the timeline
//! holds it, so a deleted message's body is gone from the log as soon as from the room.

use switchboard_protocol::TimelineEvent;

/// A committed timeline event and its place in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    /// Position in the store-wide log: strictly increasing along the log, never reused.
    pub pos: u64,
    /// The event.
    pub event: TimelineEvent,
}
