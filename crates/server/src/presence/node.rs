//! This node's side of presence: registering its connections, renewing them, sweeping what
//! lapsed anywhere, and telling the right people, few enough times.
//!
//! Who hears a change of user U:
//! - the members of U's rooms of at most `room_limit` members (not across a blocked dm), as a
//!   `presence` frame on each room's topic; receiving hubs give each session each version once;
//! - U's own other sessions, on U's topic;
//! - in larger rooms, nobody per change: the change marks the room for a recount, and each node
//!   holding members counts who is online at most every `count_ms`, pushing an `online` frame
//!   only when the count moved.
//!
//! At most one change per user per `interval_ms` leaves a node (the latest wins), so a client
//! toggling its status cannot flood its contacts; flapping connections are already absorbed by
//! the backend's grace period.

use std::collections::HashMap;

use futures_util::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_protocol::{ChosenStatus, Presence as WirePresence, ServerFrame, Status};
use tokio_util::sync::CancellationToken;

use super::{Presence, PresenceError, State, Text};
use crate::bus::{Bus, BusEvent, Control, Topic};
use crate::gateway::hub::Hub;
use crate::metrics::{Backend, Metrics};
use crate::store::Store;

/// Settings of presence (from the configuration).
#[derive(Debug, Clone)]
pub struct PresenceConfig {
    /// A connection's life without renewal: how soon a crashed node's users go offline.
    pub ttl_ms: u64,
    /// How long a closed connection still counts (the flap debounce).
    pub grace_ms: u64,
    /// Idle time (no frames but pings) after which a connection is away.
    pub away_after_ms: u64,
    /// Rooms with more members get an online count instead of per-member presence.
    pub room_limit: u64,
    /// At most one announced change per user per this long.
    pub interval_ms: u64,
    /// At most one count per large room per this long.
    pub count_ms: u64,
    /// Whether anyone may read anyone's presence over REST.
    pub public: bool,
}

/// How long calls on a connection's path are skipped after a backend failure.
const BACKOFF_MS: i64 = 1000;

/// How many people's presence `ready` carries.
const READY_CONTACTS: u32 = 1000;
/// Lapsed connections removed per sweep call; a sweep goes on while it finds this many.
const SWEEP_BATCH: usize = 1000;
/// Connections renewed per call to the backend (a Redis pipeline each).
const RENEW_BATCH: usize = 1000;
/// Changes announced at once, and bus events of one change published at once: a crashed node's
/// thousands of users, or a user in thousands of rooms, go out in parallel but bounded.
const ANNOUNCE_CONCURRENCY: usize = 32;

#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    /// The latest held change, and the session that made it (`None` once held changes from
    /// several sessions were merged: then every session hears it).
    pending: Option<(State, Option<String>)>,
}

/// What [`PresenceNode::claim`] decided.
enum Claim {
    /// This caller counts the room.
    Counting,
    /// Someone else is counting it, or the last count will do: that count.
    Taken(Option<u64>),
}

#[derive(Clone, Copy)]
struct Count {
    value: Option<u64>,
    at: Instant,
    /// The count last pushed to this node's sessions.
    pushed: Option<u64>,
    /// A count of this room is running: others take the last value instead of counting too.
    counting: bool,
}

/// Presence as this node runs it.
pub struct PresenceNode {
    backend: Arc<dyn Presence>,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    node: Arc<str>,
    /// The settings.
    pub cfg: PresenceConfig,
    throttle: Mutex<HashMap<String, Throttle>>,
    counts: Mutex<HashMap<String, Count>>,
    /// Until when (ms since the epoch) the backend counts as down (see `healthy`).
    down_until: std::sync::atomic::AtomicI64,
}

impl PresenceNode {
    /// Presence for this node over `backend`.
    pub fn new(
        backend: Arc<dyn Presence>,
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        node: Arc<str>,
        cfg: PresenceConfig,
    ) -> Arc<Self> {
        Arc::new(PresenceNode {
            backend,
            store,
            bus,
            hub,
            metrics,
            node,
            cfg,
            throttle: Mutex::default(),
            counts: Mutex::default(),
            down_until: Default::default(),
        })
    }

    fn conn(&self, session: &str) -> String {
        format!("{}/{session}", self.node)
    }

    fn call(&self, reason: &'static str) {
        self.metrics.presence_calls.get_or_create(&crate::metrics::ReasonLabel { reason }).inc();
    }

    fn failed(&self, e: &PresenceError) {
        self.metrics.backend_error(Backend::Presence);
        tracing::debug!(error = %e, "presence call failed");
        let until = crate::store::now_ms() + BACKOFF_MS;
        self.down_until.store(until, std::sync::atomic::Ordering::Relaxed);
    }

    /// False for a moment after a backend call failed: the calls on a connection's path
    /// (`hello`, status, close) are skipped then instead of each waiting out a timeout, so a
    /// Redis outage costs connections nothing; the renewals keep trying and register every
    /// open connection again once it answers.
    fn healthy(&self) -> bool {
        crate::store::now_ms() >= self.down_until.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A session started.
    pub async fn connected(&self, user: &str, session: &str, away: bool) {
        self.tell("connect", user, session, away, Text::Keep).await;
    }

    /// A session set its status or text (or went idle, or came back).
    pub async fn set(&self, user: &str, session: &str, away: bool, text: Text) {
        self.tell("status", user, session, away, text).await;
    }

    /// Registers or updates one connection and announces what that changed.
    async fn tell(&self, reason: &'static str, user: &str, session: &str, away: bool, text: Text) {
        if !self.healthy() {
            return;
        }
        self.call(reason);
        let status = if away { ChosenStatus::Away } else { ChosenStatus::Online };
        match self.backend.set_status(user, &self.conn(session), status, text, self.cfg.ttl_ms).await {
            Ok(Some(change)) => self.changed(change, Some(session)).await,
            Ok(None) => {}
            Err(e) => self.failed(&e),
        }
    }

    /// A session ended: it lingers for the grace period, then a sweep announces the change.
    pub async fn disconnected(&self, user: &str, session: &str) {
        if !self.healthy() {
            return;
        }
        self.call("disconnect");
        if let Err(e) = self.backend.disconnect(user, &self.conn(session), self.cfg.grace_ms).await {
            self.failed(&e);
        }
    }

    /// Announces a change now, or holds it (the latest wins) when the user's last one left less
    /// than `interval_ms` ago. `origin`, the session that made it, does not hear it back (a
    /// held change is told to all of the user's sessions).
    async fn changed(&self, change: State, origin: Option<&str>) {
        let interval = Duration::from_millis(self.cfg.interval_ms);
        {
            let Ok(mut t) = self.throttle.lock() else { return };
            let entry = t.entry(change.user.clone()).or_default();
            if entry.last.is_some_and(|at| at.elapsed() < interval) {
                let origin = origin.map(str::to_owned);
                match &entry.pending {
                    Some((held, _)) if held.version >= change.version => {}
                    Some((_, held_origin)) => {
                        let merged = if *held_origin == origin { origin } else { None };
                        entry.pending = Some((change, merged));
                    }
                    None => entry.pending = Some((change, origin)),
                }
                return;
            }
            entry.last = Some(Instant::now());
            entry.pending = None;
        }
        self.announce(change, origin).await;
    }

    /// Sends held changes whose interval has passed, and forgets idle throttle entries.
    async fn flush_held(&self) {
        let interval = Duration::from_millis(self.cfg.interval_ms);
        let due: Vec<(State, Option<String>)> = {
            let Ok(mut t) = self.throttle.lock() else { return };
            let mut due = Vec::new();
            t.retain(|_, e| {
                let ready = e.last.is_none_or(|at| at.elapsed() >= interval);
                if ready && let Some(p) = e.pending.take() {
                    e.last = Some(Instant::now());
                    due.push(p);
                    return true;
                }
                e.pending.is_some() || e.last.is_some_and(|at| at.elapsed() < interval)
            });
            due
        };
        for (change, origin) in due {
            self.announce(change, origin.as_deref()).await;
        }
    }

    /// Publishes a change to everyone who should hear it (see the module's doc).
    async fn announce(&self, change: State, origin: Option<&str>) {
        self.metrics.presence_changes.inc();
        let frame = ServerFrame::Presence(change.to_wire());
        let Ok(payload) = serde_json::to_vec(&frame) else { return };
        let payload = bytes::Bytes::from(payload);
        let control = Control::Presence { user: change.user.clone(), version: change.version };
        let event = |topic: Topic, room: &str, control: Control, payload: bytes::Bytes| BusEvent {
            topic,
            room: room.to_owned(),
            seq: 0,
            member: None,
            origin: None,
            payload,
            published_us: crate::bus::now_us(),
            control: Some(control),
        };
        let mut own = event(Topic::User(change.user.clone()), "", control.clone(), payload.clone());
        own.origin = origin.map(str::to_owned);
        let mut events = vec![own];
        match self.store.presence_rooms(&change.user).await {
            Ok(rooms) => {
                for (room, members) in rooms {
                    if members <= self.cfg.room_limit {
                        events.push(event(
                            Topic::Room(room.clone()),
                            &room,
                            control.clone(),
                            payload.clone(),
                        ));
                    } else if change.status != Status::Away {
                        // Away and online both count as present: only arrivals and departures
                        // move a count.
                        events.push(event(
                            Topic::Room(room.clone()),
                            &room,
                            Control::Recount,
                            bytes::Bytes::new(),
                        ));
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, user = %change.user, "cannot list rooms for presence"),
        }
        let failed = futures_util::stream::iter(events)
            .map(|ev| self.bus.publish(ev))
            .buffer_unordered(ANNOUNCE_CONCURRENCY)
            .filter(|r| std::future::ready(r.is_err()))
            .count()
            .await;
        if failed > 0 {
            tracing::debug!(failed, user = %change.user, "presence publishes failed");
        }
    }

    /// What `ready` carries: the presence of the user and of the people in their small rooms.
    pub async fn for_ready(&self, user: &str) -> Vec<WirePresence> {
        if !self.healthy() {
            return Vec::new();
        }
        let mut users: Vec<String> =
            self.store.contacts(user, self.cfg.room_limit, READY_CONTACTS).await.unwrap_or_default();
        users.insert(0, user.to_owned());
        self.call("get");
        match self.backend.get(&users).await {
            Ok(states) => states.iter().map(State::to_wire).collect(),
            Err(e) => {
                self.failed(&e);
                Vec::new()
            }
        }
    }

    /// The presence of users, for REST (the caller decided who may see whom).
    pub async fn get(&self, users: &[String]) -> Result<Vec<WirePresence>, PresenceError> {
        if !self.healthy() {
            return Err(PresenceError::Unavailable("presence backend failed a moment ago".into()));
        }
        self.call("get");
        let states = self.backend.get(users).await.inspect_err(|e| self.failed(e))?;
        Ok(states.iter().map(State::to_wire).collect())
    }

    /// How many members of a room are online or away, counted at most every `count_ms`, and by
    /// one caller at a time (the others take the last count; `None` before the first).
    pub async fn online_count(&self, room: &str) -> Option<u64> {
        let fresh = Duration::from_millis(self.cfg.count_ms);
        match self.claim(room, |c| c.value.is_some() && c.at.elapsed() < fresh) {
            Claim::Counting => self.count(room).await,
            Claim::Taken(last) => last,
        }
    }

    /// Takes the room's count for this caller to make, unless another caller is making it or
    /// `fresh_enough` says the last one will do: then the last count.
    fn claim(&self, room: &str, fresh_enough: impl Fn(&Count) -> bool) -> Claim {
        let Ok(mut counts) = self.counts.lock() else { return Claim::Taken(None) };
        let entry = counts.entry(room.to_owned()).or_insert(Count {
            value: None,
            at: Instant::now(),
            pushed: None,
            counting: false,
        });
        if entry.counting || fresh_enough(entry) {
            return Claim::Taken(entry.value);
        }
        entry.counting = true;
        Claim::Counting
    }

    /// Counts a room's present members (the caller claimed the room); on failure, the last
    /// count.
    async fn count(&self, room: &str) -> Option<u64> {
        let value = match self.store.member_ids(room).await {
            Ok(ids) => {
                self.call("count");
                match self.backend.get(&ids).await {
                    Ok(states) => Some(states.iter().filter(|s| s.status != Status::Offline).count() as u64),
                    Err(e) => {
                        self.failed(&e);
                        None
                    }
                }
            }
            Err(_) => None,
        };
        let mut counts = self.counts.lock().ok()?;
        let entry = counts.get_mut(room)?;
        entry.counting = false;
        if value.is_some() {
            (entry.value, entry.at) = (value, Instant::now());
        }
        entry.value
    }

    /// Counts the large rooms marked since the last pass and pushes counts that moved.
    async fn recount(&self) {
        for room in self.hub.take_recounts() {
            if let Claim::Taken(_) = self.claim(&room, |_| false) {
                // Being counted for a reader right now: count again at the next pass.
                self.hub.want_recount(&room);
                continue;
            }
            let Some(value) = self.count(&room).await else { continue };
            let moved = self
                .counts
                .lock()
                .is_ok_and(|mut c| c.get_mut(&room).is_some_and(|e| e.pushed.replace(value) != Some(value)));
            if moved {
                self.hub.push_to_room(&room, &ServerFrame::Online { room: room.clone(), count: value });
            }
        }
        if let Ok(mut counts) = self.counts.lock() {
            counts.retain(|_, c| c.counting || c.at.elapsed() < Duration::from_secs(300));
        }
    }

    /// Renews this node's connections and registers again those the backend lost, a batch at a
    /// time: the names of every connection at once were several megabytes at 19,000
    /// connections, allocated and freed on every renewal.
    async fn renew(&self) {
        let sessions = self.hub.local_sessions();
        for batch in sessions.chunks(RENEW_BATCH) {
            let conns: Vec<(String, String)> =
                batch.iter().map(|s| (s.user.to_string(), self.conn(&s.id))).collect();
            self.call("renew");
            match self.backend.renew(&conns, self.cfg.ttl_ms).await {
                Ok(lost) => {
                    if !lost.is_empty() {
                        tracing::info!(
                            count = lost.len(),
                            "presence lost connections; registering them again"
                        );
                    }
                    for i in lost {
                        let Some(s) = batch.get(i) else { continue };
                        let away = s.away.load(std::sync::atomic::Ordering::Relaxed);
                        self.connected(&s.user, &s.id, away).await;
                        // Closed meanwhile: let it go again.
                        if !self.hub.has_session(&s.user, &s.id) {
                            self.disconnected(&s.user, &s.id).await;
                        }
                    }
                }
                Err(e) => {
                    self.failed(&e);
                    return;
                }
            }
        }
    }

    /// Removes lapsed connections of every node (as any node may) and announces the changes.
    async fn sweep(&self) {
        loop {
            self.call("sweep");
            match self.backend.sweep(SWEEP_BATCH).await {
                Ok(swept) => {
                    futures_util::stream::iter(swept.changes)
                        .for_each_concurrent(ANNOUNCE_CONCURRENCY, |change| self.changed(change, None))
                        .await;
                    if swept.removed < SWEEP_BATCH {
                        return;
                    }
                }
                Err(e) => return self.failed(&e),
            }
        }
    }

    /// Checks the backend answers, for `/readyz`.
    pub async fn ping(&self) -> Result<(), PresenceError> {
        self.backend.ping().await
    }

    /// Renewals on their own task (so that announcing a crashed node's thousands of changes
    /// never delays them), counts on another, and sweeps and held changes on a third, until
    /// `stop`.
    pub fn start(self: &Arc<Self>, stop: CancellationToken) {
        let renew_every = Duration::from_millis((self.cfg.ttl_ms / 3).max(50));
        let me = self.clone();
        let stop2 = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop2.cancelled() => return,
                    _ = tokio::time::sleep(renew_every) => me.renew().await,
                }
            }
        });
        let me = self.clone();
        let stop3 = stop.clone();
        tokio::spawn(async move {
            let every = Duration::from_millis(me.cfg.count_ms);
            loop {
                tokio::select! {
                    _ = stop3.cancelled() => return,
                    _ = tokio::time::sleep(every) => me.recount().await,
                }
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            let tick = Duration::from_millis(me.cfg.interval_ms.clamp(50, 1000));
            let mut last_sweep = Instant::now();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(tick) => {}
                }
                if last_sweep.elapsed() >= Duration::from_millis(500) {
                    last_sweep = Instant::now();
                    me.sweep().await;
                    me.hub.prune_presence();
                }
                me.flush_held().await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use switchboard_protocol::RoomKind;

    use super::*;
    use crate::bus::local::LocalBus;
    use crate::gateway::hub::{Outbound, SessionHandle};
    use crate::presence::local::LocalPresence;
    use crate::store::NewRoom;
    use crate::store::sqlite::{SqliteOptions, SqliteStore};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_room_never_counted_here_is_counted_and_pushed_when_marked() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&SqliteOptions { path: dir.path().join("t.db"), max_batch: 8 }).unwrap(),
        );
        let mut ids = Vec::new();
        for name in ["a", "b", "c"] {
            let id = store.create_user(name, "h").await.unwrap().id;
            let anyone = switchboard_protocol::rest::UserSettings {
                add_policy: switchboard_protocol::AddPolicy::Anyone,
            };
            store.set_settings(&id, anyone).await.unwrap();
            ids.push(id);
        }
        let new = NewRoom {
            creator: ids[0].clone(),
            name: "r".into(),
            kind: RoomKind::Public,
            members: ids[1..].to_vec(),
        };
        let room = store.create_room(new).await.unwrap().room.id;
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::standalone());
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(bus.clone(), 0);
        let handle = SessionHandle::new("s".into(), ids[0].clone(), None, 16, metrics.clone());
        hub.add_session(&handle).await.unwrap();
        hub.subscribe(&handle, std::slice::from_ref(&room)).await.unwrap();
        let backend = Arc::new(LocalPresence::new());
        for id in &ids[..2] {
            backend.connect(id, &format!("n/{id}"), ChosenStatus::Online, 60_000).await.unwrap();
        }
        let cfg = PresenceConfig {
            ttl_ms: 60_000,
            grace_ms: 0,
            away_after_ms: 60_000,
            room_limit: 1,
            interval_ms: 10,
            count_ms: 100,
            public: false,
        };
        let node = PresenceNode::new(backend, store.clone(), bus, hub.clone(), metrics, Arc::from("n"), cfg);
        // Nobody asked this node for the room's count before: the mark alone must count it.
        hub.want_recount(&room);
        node.recount().await;
        match handle.outbox.try_recv() {
            Some(Outbound::Event(f)) => assert!(f.text.contains("\"count\":2"), "{}", f.text),
            other => panic!("expected the room's count, got {other:?}"),
        }
        store.close().await;
    }
}
