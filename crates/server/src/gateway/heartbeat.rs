//! One timer for the heartbeats of every session on the node, instead of one per connection.
//!
//! A tokio `Sleep` is 112 bytes in an allocation of its own, held by every idle connection for
//! its whole life: at the 2 KiB an idle connection may cost, a twentieth of it. The node instead
//! ticks [`PHASES`] times per heartbeat interval and at each tick tells the sessions of one
//! phase (chosen by their serial) that their heartbeat is due, through the queue they already
//! wait on. Each session still beats once per interval, and a node's beats spread over the
//! interval instead of bunching.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::hub::Hub;

/// Ticks per heartbeat interval; a session's first beat comes within one interval of joining.
pub const PHASES: u32 = 8;

/// Beats the hub's sessions every `interval` until `stop`.
pub async fn run(hub: Arc<Hub>, interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval((interval / PHASES).max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut phase = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        hub.beat(phase, PHASES);
        phase = (phase + 1) % PHASES;
    }
}
