//! Gives freed memory back to the system after many sessions close.
//!
//! glibc's allocator keeps what a burst of sessions freed (a user in 2,000 rooms opening 1,000
//! sessions left 565 MB resident after they all closed, free but never returned). Once the
//! node has lost a good share of its sessions, it asks the allocator to return free pages
//! (`malloc_trim`), off the async threads. Other allocators (and other C libraries) return
//! memory by themselves, so elsewhere this does nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::gateway::hub::Hub;

/// How often the session count is looked at.
const EVERY: Duration = Duration::from_secs(10);
/// Sessions that must have closed since the last look (and at least a quarter of them).
const MIN_CLOSED: usize = 200;

/// Watches the hub until `stop`.
pub async fn run(hub: Arc<Hub>, stop: CancellationToken) {
    let mut high = hub.session_count();
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = hub.session_count();
        if now >= high {
            high = now;
            continue;
        }
        let closed = high - now;
        if closed >= MIN_CLOSED && closed * 4 >= high {
            let _ = tokio::task::spawn_blocking(give_back).await;
            high = now;
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn give_back() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers.
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(released, "returned free memory to the system");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn give_back() {}
