//! Publishes committed timeline events on the bus, in commit order, each encoded once.
//!
//! The store emits every committed event on its commit stream (its outbox); this task is the
//! only publisher, so per-room order on the bus is commit order.

use std::sync::Arc;

use bytes::Bytes;
use switchboard_protocol::TimelineEvent;

use crate::bus::{Bus, BusEvent};
use crate::store::CommitStream;

/// Encodes a timeline event as the frame clients receive, plus its routing metadata.
pub fn encode(ev: &TimelineEvent) -> Result<BusEvent, serde_json::Error> {
    let member = match ev {
        TimelineEvent::Member(m) => Some((m.user.clone(), m.change)),
        _ => None,
    };
    Ok(BusEvent {
        room: ev.room().to_owned(),
        seq: ev.seq(),
        member,
        origin: None,
        payload: Bytes::from(serde_json::to_vec(ev)?),
    })
}

/// Runs until the store closes its commit stream.
pub async fn run(mut commits: CommitStream, bus: Arc<dyn Bus>) {
    while let Some(ev) = commits.recv().await {
        let event = match encode(&ev) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a committed event");
                continue;
            }
        };
        if let Err(e) = bus.publish(event).await {
            // Receivers fill the gap from the store at their next event of this room.
            tracing::warn!(error = %e, room = %ev.room(), seq = ev.seq(), "publish failed");
        }
    }
}
