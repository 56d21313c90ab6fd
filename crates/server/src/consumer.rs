//! Log consumers: workers that read the store's event log by cursor (the relay that publishes
//! to the bus now; the search indexer, notifier and webhooks later).
//!
//! Each consumer runs on every node, but only the holder of its lease reads: one reader per
//! cluster, and when its node dies another takes over once the lease runs out. The reader
//! starts from the consumer's durable cursor and saves it as it goes (at most every
//! `save_every`), so after a crash it repeats at most that much: delivery is at-least-once, and
//! consumers dedupe by the event's position or its room and `seq`. A fresh commit wakes the
//! reader through [`Store::log_watch`] (no poll on the fast path); a poll every `poll` catches
//! wake-ups it cannot get (another node's commits on a backend that does not announce them).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::{LoggedEvent, Store};

/// What a consumer does with the events it reads.
#[async_trait]
pub trait Consumer: Send {
    /// Handles a batch, in log order. An error leaves the cursor before the batch, which is
    /// handed over again after a backoff, so a handler must be idempotent.
    async fn handle(&mut self, events: &[LoggedEvent]) -> Result<(), String>;
}

/// How a consumer reads.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The consumer's name: its cursor and lease.
    pub name: &'static str,
    /// This node, as the lease holder.
    pub holder: String,
    /// How long the lease lasts unrenewed: how soon another node takes over after a crash.
    pub lease_ttl: Duration,
    /// Events per read.
    pub batch: u32,
    /// Most time between cursor saves while events flow.
    pub save_every: Duration,
    /// Longest wait without a wake-up before reading again.
    pub poll: Duration,
    /// Whether this consumer also prunes the log of what every consumer has finished with.
    pub prune: bool,
}

/// How often the pruning consumer trims the log once it has caught up. While a trim finds
/// entries to delete it trims again at its next turn: each trim is one small slice (a long
/// delete would hold every send queued behind it on the writer), and the slices must keep up
/// with any send rate.
const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// Longest wait after a failed read or a failed batch.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Reads the log for `consumer` until `stop` is cancelled; saves the cursor before returning.
pub async fn run(
    store: Arc<dyn Store>,
    cfg: ConsumerConfig,
    mut consumer: impl Consumer,
    stop: CancellationToken,
) {
    let mut wake = store.log_watch();
    let mut reader = Reader {
        store: store.clone(),
        cfg: cfg.clone(),
        cursor: None,
        saved: None,
        last_save: Instant::now(),
    };
    let renew_every = cfg.lease_ttl / 3;
    let mut renew_at = Instant::now();
    let mut held = false;
    let mut backoff = Duration::from_millis(50);
    let mut prune_at = Instant::now() + PRUNE_EVERY;
    loop {
        if stop.is_cancelled() {
            break;
        }
        if Instant::now() >= renew_at {
            let now_held = matches!(store.lease(cfg.name, &cfg.holder, ms(cfg.lease_ttl)).await, Ok(true));
            if now_held && !held {
                tracing::info!(consumer = cfg.name, holder = %cfg.holder, "log consumer: lease taken");
                // Whoever held it before may have moved the cursor on.
                reader.cursor = None;
            } else if held && !now_held {
                tracing::warn!(consumer = cfg.name, "log consumer: lease lost");
            }
            held = now_held;
            renew_at = Instant::now() + renew_every;
        }
        if !held {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(renew_at) => {}
            }
            continue;
        }
        if cfg.prune && Instant::now() >= prune_at {
            let started = Instant::now();
            let pruned = match store.prune_log().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "pruning the event log failed");
                    0
                }
            };
            if pruned > 0 {
                let ms = started.elapsed().as_millis() as u64;
                tracing::debug!(entries = pruned, ms, "event log pruned");
            }
            // A slice that found entries may have left more: the next one goes at the next turn.
            prune_at = if pruned > 0 { Instant::now() } else { Instant::now() + PRUNE_EVERY };
        }
        // Seen before the read: a commit after this point wakes the wait below, and one before
        // it is in what the read returns.
        wake.borrow_and_update();
        let events = match reader.next().await {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(consumer = cfg.name, error = %e, "log consumer: read failed");
                backoff = pause(&stop, backoff).await;
                continue;
            }
        };
        if let Some(last) = events.last().map(|e| e.pos) {
            if let Err(e) = consumer.handle(&events).await {
                tracing::warn!(consumer = cfg.name, error = %e, "log consumer: batch failed; retrying");
                backoff = pause(&stop, backoff).await;
                continue;
            }
            reader.cursor = Some(last);
            backoff = Duration::from_millis(50);
            // A full batch may have more behind it. After a short one the consumer waits for the
            // next commit or the poll, as after an empty one: what it left out is still
            // committing, or another writer's (which only the poll finds anyway). Reading on to
            // an empty batch cost a read after every commit.
            if events.len() >= usize::try_from(cfg.batch).unwrap_or(usize::MAX) {
                reader.save_when_due().await;
                continue;
            }
        }
        // Caught up. The cursor is saved once `save_every` has passed since the last save, now
        // or when the log stays quiet that long: saving at every catch-up was a write of its
        // own after nearly every commit (half the commits at 5,000 sends/s).
        reader.save_when_due().await;
        let mut wait_until = renew_at.min(Instant::now() + cfg.poll);
        if reader.unsaved() {
            wait_until = wait_until.min(reader.last_save + cfg.save_every);
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = wake.changed() => {}
            _ = tokio::time::sleep_until(wait_until) => {}
        }
    }
    if held {
        reader.save().await;
    }
}

/// The consumer's place in the log.
struct Reader {
    store: Arc<dyn Store>,
    cfg: ConsumerConfig,
    /// Last position handled; `None` until read from the store (after taking the lease).
    cursor: Option<u64>,
    /// Last position saved.
    saved: Option<u64>,
    /// When the last save was made (or tried).
    last_save: Instant,
}

impl Reader {
    async fn next(&mut self) -> Result<Vec<LoggedEvent>, crate::store::StoreError> {
        let after = match self.cursor {
            Some(c) => c,
            None => {
                let c = match self.store.cursor(self.cfg.name).await? {
                    Some(c) => c,
                    // A consumer new to this log starts at its end, not at its history.
                    None => self.store.log_head().await?,
                };
                self.cursor = Some(c);
                self.saved = Some(c);
                c
            }
        };
        self.store.events_after(after, self.cfg.batch).await
    }

    /// Whether positions were handled since the last save.
    fn unsaved(&self) -> bool {
        self.cursor.is_some() && self.cursor != self.saved
    }

    /// Saves once `save_every` has passed since the last save.
    async fn save_when_due(&mut self) {
        if self.last_save.elapsed() >= self.cfg.save_every {
            self.save().await;
        }
    }

    async fn save(&mut self) {
        self.last_save = Instant::now();
        let Some(pos) = self.cursor.filter(|_| self.unsaved()) else {
            return;
        };
        match self.store.save_cursor(self.cfg.name, pos).await {
            Ok(()) => self.saved = Some(pos),
            Err(e) => tracing::warn!(consumer = self.cfg.name, error = %e, "saving the log cursor failed"),
        }
    }
}

/// Waits `backoff` (or until stopped) and returns the next, doubled up to [`MAX_BACKOFF`].
async fn pause(stop: &CancellationToken, backoff: Duration) -> Duration {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(backoff) => {}
    }
    (backoff * 2).min(MAX_BACKOFF)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::bus::local::LocalBus;
    use crate::bus::{Bus, BusEvent, Topic};
    use crate::gateway::relay::Relay;
    use crate::metrics::Metrics;
    use crate::store::NewMessage;

    fn config(holder: &str) -> ConsumerConfig {
        ConsumerConfig {
            name: "relay",
            holder: holder.into(),
            lease_ttl: Duration::from_millis(400),
            batch: 3,
            save_every: Duration::from_secs(3600),
            poll: Duration::from_millis(50),
            prune: false,
        }
    }

    /// A bus that records the `seq` of every room event it carries.
    async fn recording_bus(room: &str) -> (Arc<dyn Bus>, Arc<Mutex<Vec<u64>>>) {
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::standalone());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        bus.set_handler(Arc::new(move |ev: BusEvent| {
            if matches!(ev.topic, Topic::Room(_)) {
                sink.lock().unwrap().push(ev.seq);
            }
        }));
        bus.subscribe(&[Topic::Room(room.to_owned())]).await.unwrap();
        (bus, seen)
    }

    async fn send(store: &Arc<dyn Store>, room: &str, author: &str, key: &str) {
        let msg = NewMessage {
            room: room.into(),
            author: author.into(),
            client_msg_id: key.into(),
            body: key.into(),
        };
        store.append(msg).await.unwrap();
    }

    /// A store in a fresh directory (kept while the guard lives), its one user and their room.
    async fn one_room() -> (tempfile::TempDir, Arc<dyn Store>, String, String) {
        let (dir, store, author, room) = crate::store::sqlite::scratch_room().await;
        (dir, store, author, room.id)
    }

    async fn wait_for(seen: &Arc<Mutex<Vec<u64>>>, n: usize) -> Vec<u64> {
        for _ in 0..200 {
            let now = seen.lock().unwrap().clone();
            if now.len() >= n {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("only {:?} published", seen.lock().unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_made_while_no_relay_ran_are_published_from_the_log_once() {
        let (_dir, store, author, room) = one_room().await;
        // Committed with no relay running: as if the node died between commit and publish.
        for i in 0..4 {
            send(&store, &room, &author, &format!("m{i}")).await;
        }
        let (bus, seen) = recording_bus(&room).await;
        let metrics = Arc::new(Metrics::new());
        let stop = CancellationToken::new();
        let relay = Relay { bus: bus.clone(), metrics: metrics.clone() };
        let task = tokio::spawn(run(store.clone(), config("node-a"), relay, stop.clone()));
        assert_eq!(wait_for(&seen, 5).await, vec![1, 2, 3, 4, 5], "the join and four messages, in order");
        // Live commits wake it at once.
        send(&store, &room, &author, "live").await;
        assert_eq!(wait_for(&seen, 6).await, vec![1, 2, 3, 4, 5, 6]);
        stop.cancel();
        task.await.unwrap();

        // The same node restarted: it goes on from its saved cursor, repeating nothing.
        send(&store, &room, &author, "after restart").await;
        let stop = CancellationToken::new();
        let relay = Relay { bus: bus.clone(), metrics: metrics.clone() };
        let task = tokio::spawn(run(store.clone(), config("node-a"), relay, stop.clone()));
        assert_eq!(wait_for(&seen, 7).await, vec![1, 2, 3, 4, 5, 6, 7]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(seen.lock().unwrap().len(), 7, "nothing published twice");

        // Killed without saving its cursor: another node takes over once the lease runs out and
        // publishes everything from the last saved cursor on (at least once; receivers drop
        // what they have by seq), so nothing is missed.
        task.abort();
        let _ = task.await;
        send(&store, &room, &author, "orphaned").await;
        let stop = CancellationToken::new();
        let relay = Relay { bus: bus.clone(), metrics };
        let task = tokio::spawn(run(store.clone(), config("node-b"), relay, stop.clone()));
        let after = wait_for(&seen, 8).await;
        assert_eq!(after.last(), Some(&8));
        let mut distinct = after.clone();
        distinct.dedup();
        assert_eq!(distinct, (1..=8).collect::<Vec<_>>());
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caught_up_reader_saves_its_cursor_once_the_log_is_quiet() {
        let (_dir, store, author, room) = one_room().await;
        let (bus, seen) = recording_bus(&room).await;
        let stop = CancellationToken::new();
        let relay = Relay { bus, metrics: Arc::new(Metrics::new()) };
        // A poll or a lease renewal this far off never comes in the test: only the save's own
        // deadline can save.
        let cfg = ConsumerConfig {
            save_every: Duration::from_secs(1),
            poll: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(90),
            ..config("node-a")
        };
        let task = tokio::spawn(run(store.clone(), cfg, relay, stop.clone()));
        // Let it take the lease and read its starting cursor (the log's end) first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let start = store.cursor("relay").await.unwrap();
        send(&store, &room, &author, "one").await;
        send(&store, &room, &author, "two").await;
        wait_for(&seen, 2).await;
        let head = store.log_head().await.unwrap();
        assert_eq!(store.cursor("relay").await.unwrap(), start, "not saved at every catch-up");
        // No event comes after these: the save must not wait for one.
        let mut saved = None;
        for _ in 0..150 {
            saved = store.cursor("relay").await.unwrap();
            if saved == Some(head) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(saved, Some(head), "a quiet log still gets its cursor saved within save_every");
        stop.cancel();
        task.await.unwrap();
    }
}
