//! Publishes committed timeline events on the bus, in log order, each encoded once.
//!
//! The relay is a consumer of the store's event log ([`crate::consumer`]): one node at a time
//! holds its lease and publishes, from the durable cursor on, so a crash between a commit and
//! its publish delays the fanout (until the lease moves, or the node restarts) but never loses
//! it. Per room, log order is `seq` order.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use switchboard_protocol::TimelineEvent;

use crate::bus::{Bus, BusEvent, Control, Topic};
use crate::consumer::Consumer;
use crate::metrics::{Backend, Metrics};
use crate::store::LoggedEvent;

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
        control: ev.only_to().map(|user| Control::OnlyTo { user: user.to_owned() }),
    })
}

/// Publishes log events on the bus: the room's topic, and for member events the user's too,
/// so every node holding that user's sessions hears of the change even without subscribers in
/// the room. A bus failure fails the batch, which is handed over again (receivers drop what
/// they already have by `seq`), so a bus outage delays fanout instead of losing it.
pub struct Relay {
    /// Where events go.
    pub bus: Arc<dyn Bus>,
    /// Counts bus failures.
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl Consumer for Relay {
    async fn handle(&mut self, events: &[LoggedEvent]) -> Result<(), String> {
        for logged in events {
            let ev = &logged.event;
            let event = match encode(ev) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, pos = logged.pos, "cannot encode a committed event; skipped");
                    continue;
                }
            };
            let to_user = event
                .member
                .as_ref()
                .map(|(user, _)| BusEvent { topic: Topic::User(user.clone()), ..event.clone() });
            for event in std::iter::once(event).chain(to_user) {
                if let Err(e) = self.bus.publish(event).await {
                    self.metrics.backend_error(Backend::Bus);
                    return Err(format!("publishing {} seq {}: {e}", ev.room(), ev.seq()));
                }
            }
        }
        Ok(())
    }
}
