//! Publishes committed timeline events on the bus, in commit order, each encoded once.
//!
//! The store emits every committed event on its commit stream (its outbox); this task is the
//! only publisher, so per-room order on the bus is commit order. Member events are published
//! on the room's topic and on the user's.

use std::sync::Arc;

use bytes::Bytes;
use switchboard_protocol::TimelineEvent;

use crate::bus::{Bus, BusEvent, Topic};
use crate::metrics::{Backend, Metrics};
use crate::store::CommitStream;

/// Encodes a timeline event as the frame clients receive, plus its routing metadata.
pub fn encode(ev: &TimelineEvent) -> Result<BusEvent, serde_json::Error> {
    let member = match ev {
        TimelineEvent::Member(m) => Some((m.user.clone(), m.change)),
        _ => None,
    };
    Ok(BusEvent {
        topic: Topic::Room(ev.room().to_owned()),
        room: ev.room().to_owned(),
        seq: ev.seq(),
        member,
        origin: None,
        payload: Bytes::from(serde_json::to_vec(ev)?),
        published_us: crate::bus::now_us(),
        control: None,
    })
}

/// Runs until the store closes its commit stream.
pub async fn run(mut commits: CommitStream, bus: Arc<dyn Bus>, metrics: Arc<Metrics>) {
    while let Some(ev) = commits.recv().await {
        let event = match encode(&ev) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a committed event");
                continue;
            }
        };
        // Member events also go to the user's topic, so every node holding that user's
        // sessions hears of the change even without subscribers in the room.
        let to_user = event
            .member
            .as_ref()
            .map(|(user, _)| BusEvent { topic: Topic::User(user.clone()), ..event.clone() });
        for event in std::iter::once(event).chain(to_user) {
            if let Err(e) = bus.publish(event).await {
                metrics.backend_error(Backend::Bus);
                // Receivers fill the gap from the store at their next event of this room.
                tracing::warn!(error = %e, room = %ev.room(), seq = ev.seq(), "publish failed");
            }
        }
    }
}
