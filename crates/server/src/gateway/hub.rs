//! The node's local fanout: which sessions are in which rooms, and delivery of bus events to
//! their queues.
//!
//! Each event arrives encoded once; the hub hands the same bytes (reference-counted) to every
//! local session in the room with a non-blocking push. A session whose queue is full is
//! closed as a slow consumer instead of slowing the room. Member events are applied in timeline
//! order: a joining user's sessions are subscribed before the event is delivered, a leaving
//! user's sessions receive the event and are then unsubscribed. Member events arrive both on the
//! room's topic and on the user's (so a node learns that its user joined a room it had no
//! subscribers in); sessions drop the copy they already have by `seq`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use switchboard_protocol::codes::close;
use switchboard_protocol::{MemberChange, ServerFrame};
use tungstenite::Utf8Bytes;

use super::outbox::{Outbox, Pushed};

use crate::bus::{Bus, BusError, BusEvent, Control, Topic};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// An encoded frame shared by every session that receives it.
#[derive(Debug)]
pub struct Frame {
    /// Room id.
    pub room: String,
    /// Timeline `seq`, or 0 for ephemeral frames.
    pub seq: u64,
    /// For member events: whose membership changed and how.
    pub member: Option<(String, MemberChange)>,
    /// The JSON text, encoded once.
    pub text: Utf8Bytes,
    /// When it was published (µs since the epoch), for the fanout latency metric.
    pub published_us: u64,
    /// For frames that carry a state (a user's presence, a member's read marker in a room, a
    /// room's online count): what it is the state of. Under pressure a newer one replaces the
    /// older one still queued, so a slow reader gets the latest state once instead of losing it.
    pub state_of: Option<Box<str>>,
    /// For a shadow-banned author's timeline event: the one user shown it.
    pub only_to: Option<Box<str>>,
}

/// What a state-carrying ephemeral frame is the state of (see [`Frame::state_of`]).
fn state_key(control: Option<&Control>, payload: &[u8]) -> Option<Box<str>> {
    if let Some(Control::Presence { user, .. }) = control {
        return Some(format!("presence\0{user}").into());
    }
    if payload.starts_with(br#"{"op":"read""#) {
        // The room from the frame: on a user's topic (their own devices) the event has none.
        #[derive(serde::Deserialize)]
        struct Read {
            room: String,
            user: String,
        }
        let read: Read = serde_json::from_slice(payload).ok()?;
        return Some(format!("read\0{}\0{}", read.room, read.user).into());
    }
    None
}

/// Who hears of a moved read marker: it goes where someone shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAudience {
    /// A small room: the room (the reader's other devices in it too).
    Room,
    /// A dm: the other person too, unless either blocked the other.
    DmUnlessBlocked,
    /// A room above the presence limit: only the reader's own other devices.
    OwnDevices,
}

impl ReadAudience {
    /// The audience in a room of `kind`, `big` when above the presence limit.
    pub fn of(kind: switchboard_protocol::RoomKind, big: bool) -> Self {
        match kind {
            switchboard_protocol::RoomKind::Dm => ReadAudience::DmUnlessBlocked,
            _ if big => ReadAudience::OwnDevices,
            _ => ReadAudience::Room,
        }
    }

    /// Whether the room hears it (else only the reader's own devices); a block in a dm is looked
    /// up only for dms, and a store that cannot say counts as blocked (markers are best effort).
    pub async fn reaches_room(self, store: &dyn Store, room: &str, reader: &str) -> bool {
        match self {
            ReadAudience::Room => true,
            ReadAudience::OwnDevices => false,
            ReadAudience::DmUnlessBlocked => !store.dm_blocked(room, reader).await.unwrap_or(true),
        }
    }
}

/// What the hub puts on a session's queue.
#[derive(Debug)]
pub enum Outbound {
    /// A frame to write (after the session's own `seq` checks for timeline events).
    Event(Arc<Frame>),
    /// A frame for the user alone (an invite): written as it is.
    Direct(Arc<Frame>),
    /// The store has the room up to `upto`, past what this node heard on the bus: the session
    /// fills the hole from the store (the last events of a quiet room lost on the bus).
    Check {
        /// Room id.
        room: String,
        /// The room's `last_seq` in the store.
        upto: u64,
    },
    /// The user joined a room at `seq` (its member event follows on the queue).
    Joined {
        /// Room id.
        room: String,
        /// The member event's `seq`.
        seq: u64,
    },
}

impl Outbound {
    /// What a state-carrying frame is the state of (see [`Frame::state_of`]).
    pub fn state_of(&self) -> Option<&str> {
        match self {
            Outbound::Event(f) | Outbound::Direct(f) => f.state_of.as_deref(),
            _ => None,
        }
    }

    /// Nothing a resume would replay (typing, read markers, invites): under pressure these are
    /// dropped rather than counted toward the slow-consumer cut.
    pub fn is_ephemeral(&self) -> bool {
        match self {
            Outbound::Event(f) => f.seq == 0,
            Outbound::Direct(_) => true,
            Outbound::Check { .. } | Outbound::Joined { .. } => false,
        }
    }
}

/// The hub's handle on one connection.
#[derive(Debug)]
pub struct SessionHandle {
    /// Session id (also the `origin` of its ephemeral events). Ids here are boxed strings, not
    /// `String`s: every connection holds one handle, and a `String`'s capacity is 8 bytes each.
    pub id: Box<str>,
    /// Authenticated user id.
    pub user: Box<str>,
    /// The signed-in session its token belongs to, so that signing out closes it.
    pub token_session: Option<Box<str>>,
    /// Frames on their way to the socket.
    pub outbox: Outbox,
    /// Whether the connection is away (the client said so, or it has been idle): what the
    /// node registers again when the presence backend lost it.
    pub away: std::sync::atomic::AtomicBool,
    /// Unique on this node for its whole life (never reused, unlike an address): what the hub
    /// remembers a session by when it hands out presence.
    pub serial: u64,
    /// Counts slow-consumer closes when the overflow happens, not when the close gets out.
    metrics: Arc<Metrics>,
}

impl SessionHandle {
    /// A handle with an empty queue of at most `queue` items.
    pub fn new(
        id: String,
        user: String,
        token_session: Option<String>,
        queue: usize,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(SessionHandle {
            id: id.into(),
            user: user.into(),
            token_session: token_session.map(String::into_boxed_str),
            outbox: Outbox::new(queue),
            away: Default::default(),
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            metrics,
        })
    }

    fn push(&self, out: Outbound) {
        match self.outbox.push(out) {
            Pushed::Full if self.kick(close::SLOW_CONSUMER) => {
                self.metrics.slow_consumer_closes.inc();
            }
            Pushed::Dropped | Pushed::Replaced => {
                self.metrics.ephemeral_dropped.inc();
            }
            _ => {}
        }
    }

    /// Asks the session to close with `code`; the first code asked for wins, and only that
    /// call returns true.
    pub fn kick(&self, code: u16) -> bool {
        self.outbox.kick(code)
    }
}

/// The local sessions of one room, and what the node has heard of it.
#[derive(Default)]
struct RoomSubs {
    sessions: Vec<Arc<SessionHandle>>,
    /// Highest timeline `seq` delivered here: the position check compares it with the store.
    seen: AtomicU64,
    /// Per user, the `seq` of the last membership change applied, so that a stale change
    /// arriving late (the bus does not order across publishers) cannot undo a newer one.
    changes: HashMap<String, u64>,
}

#[derive(Default)]
struct Members {
    /// Keyed by the room id shared (interned) with every session's position in the room, so a
    /// session's room list costs a pointer per room, not a copy of each id.
    rooms: HashMap<Arc<str>, RoomSubs>,
    users: HashMap<String, Vec<Arc<SessionHandle>>>,
}

impl Members {
    /// The room's entry, created empty if needed, and its shared id.
    fn room_entry(&mut self, room: &str) -> (Arc<str>, &mut RoomSubs) {
        let key = match self.rooms.get_key_value(room) {
            Some((k, _)) => k.clone(),
            None => Arc::from(room),
        };
        let subs = self.rooms.entry(key.clone()).or_default();
        (key, subs)
    }
}

/// Session serials, never reused.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// The last presence version of one user handed out on this node, and to which sessions (by
/// serial), so a session sharing many rooms with the user gets each change once.
struct PresenceSeen {
    version: u64,
    given: std::collections::HashSet<u64>,
    at: std::time::Instant,
}

/// How long the hub remembers which sessions got a user's latest presence: well past any bus
/// delay, after which a late copy is taken for new.
const PRESENCE_MEMORY: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether the bus is subscribed to one topic; locked while that topic's subscription changes,
/// so changes to one topic happen one at a time while other topics' go on.
type TopicCell = Arc<tokio::sync::Mutex<bool>>;

/// Why a session could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum AddSessionError {
    /// The user holds as many sessions on this node as allowed.
    #[error("too many sessions for this user")]
    TooMany,
    /// The bus could not subscribe the user's topic.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Local fanout and room subscriptions of one node.
pub struct Hub {
    members: RwLock<Members>,
    bus: Arc<dyn Bus>,
    /// Sessions one user may hold on this node (0 = no cap).
    max_per_user: u32,
    /// Sign-outs this node has heard of: a session that registers after checking its token
    /// compares this with what it read before the check, and asks the store again only when a
    /// sign-out may have slipped between the two.
    signouts: std::sync::atomic::AtomicU64,
    /// One cell per topic being subscribed or subscribed. A change to a topic holds its cell
    /// across the bus round trip, so concurrent joins and leaves of one room cannot leave the
    /// node unsubscribed from a room it holds sessions for; no lock covers the whole node, so a
    /// user with 500 rooms does not stall anyone else's `hello`.
    topics: Mutex<HashMap<Topic, TopicCell>>,
    /// Per user, the latest presence version delivered here (see [`PresenceSeen`]).
    presence_seen: Mutex<HashMap<String, PresenceSeen>>,
    /// Large rooms held here whose online count may have moved since it was last counted.
    recounts: Mutex<std::collections::HashSet<String>>,
}

impl Hub {
    /// Creates the hub and registers it as the bus's handler.
    pub fn new(bus: Arc<dyn Bus>, max_per_user: u32) -> Arc<Self> {
        let hub = Arc::new(Hub {
            members: RwLock::default(),
            bus: bus.clone(),
            max_per_user,
            signouts: Default::default(),
            topics: Default::default(),
            presence_seen: Default::default(),
            recounts: Default::default(),
        });
        let weak: Weak<Hub> = Arc::downgrade(&hub);
        bus.set_handler(Arc::new(move |ev| {
            if let Some(hub) = weak.upgrade() {
                hub.deliver(ev);
            }
        }));
        hub
    }

    /// Routes one bus event to the local sessions it concerns.
    pub fn deliver(self: &Arc<Self>, ev: BusEvent) {
        match &ev.control {
            Some(Control::EndSessions { user, session }) => {
                return self.end_local_sessions(user, session.as_deref());
            }
            Some(Control::Recount) => return self.want_recount(&ev.room),
            _ => {}
        }
        let state_of = if ev.seq == 0 { state_key(ev.control.as_ref(), &ev.payload) } else { None };
        let Ok(text) = Utf8Bytes::try_from(ev.payload) else {
            tracing::error!(room = %ev.room, "bus event is not UTF-8; dropped");
            return;
        };
        let frame = Arc::new(Frame {
            room: ev.room,
            seq: ev.seq,
            member: ev.member,
            text,
            published_us: ev.published_us,
            state_of,
            only_to: match &ev.control {
                Some(Control::OnlyTo { user }) => Some(user.as_str().into()),
                _ => None,
            },
        });
        let on_room_topic = matches!(ev.topic, Topic::Room(_));
        if let Some(Control::Presence { user, version }) = &ev.control {
            return self.deliver_presence(&frame, user, *version, on_room_topic, ev.origin.as_deref());
        }
        if let (Topic::User(user), 0, None) = (&ev.topic, frame.seq, &frame.member) {
            return self.deliver_direct(&frame, user, ev.origin.as_deref());
        }
        match &frame.member {
            Some((user, MemberChange::Joined)) => {
                self.on_joined(&frame, user);
                self.deliver_member(&frame, user, on_room_topic);
            }
            Some((user, _)) => {
                self.deliver_member(&frame, user, on_room_topic);
                self.on_left(&frame, user);
            }
            None => self.fan_out(&frame, ev.origin.as_deref()),
        }
    }

    /// A member event goes to the whole room from the room topic, and to the user's own
    /// sessions from the user topic.
    fn deliver_member(&self, frame: &Arc<Frame>, user: &str, on_room_topic: bool) {
        if on_room_topic {
            return self.fan_out(frame, None);
        }
        let Ok(members) = self.members.read() else {
            return;
        };
        for s in members.users.get(user).into_iter().flatten() {
            s.push(Outbound::Event(frame.clone()));
        }
    }

    fn deliver_direct(&self, frame: &Arc<Frame>, user: &str, origin: Option<&str>) {
        let Ok(members) = self.members.read() else {
            return;
        };
        for s in members.users.get(user).into_iter().flatten() {
            if origin != Some(&*s.id) {
                s.push(Outbound::Direct(frame.clone()));
            }
        }
    }

    /// A presence change: to the room's members (not the user's own sessions, which hear it on
    /// their user topic), or to the user's other sessions; each session gets each version once,
    /// and an older version than one already handed out is dropped.
    fn deliver_presence(
        &self,
        frame: &Arc<Frame>,
        user: &str,
        version: u64,
        on_room: bool,
        origin: Option<&str>,
    ) {
        let Ok(members) = self.members.read() else { return };
        let targets: Vec<&Arc<SessionHandle>> = if on_room {
            let Some(room) = members.rooms.get(frame.room.as_str()) else { return };
            room.sessions.iter().filter(|s| *s.user != *user).collect()
        } else {
            let Some(own) = members.users.get(user) else { return };
            own.iter().filter(|s| origin != Some(&*s.id)).collect()
        };
        let Ok(mut seen) = self.presence_seen.lock() else { return };
        let now = std::time::Instant::now();
        let entry = seen.entry(user.to_owned()).or_insert_with(|| PresenceSeen {
            version,
            given: Default::default(),
            at: now,
        });
        if version < entry.version {
            return;
        }
        if version > entry.version {
            *entry = PresenceSeen { version, given: Default::default(), at: now };
        }
        for s in targets {
            if entry.given.insert(s.serial) {
                s.metrics.presence_frames.inc();
                s.push(if on_room {
                    Outbound::Event(frame.clone())
                } else {
                    Outbound::Direct(frame.clone())
                });
            }
        }
    }

    /// Records that a large room's online count may have moved (a member came or went, or a
    /// session just joined it), if this node holds it.
    pub fn want_recount(&self, room: &str) {
        let held =
            self.members.read().is_ok_and(|m| m.rooms.get(room).is_some_and(|r| !r.sessions.is_empty()));
        if held && let Ok(mut r) = self.recounts.lock() {
            r.insert(room.to_owned());
        }
    }

    /// Takes the large rooms to count again (see [`Hub::want_recount`]).
    pub fn take_recounts(&self) -> Vec<String> {
        self.recounts.lock().map(|mut r| r.drain().collect()).unwrap_or_default()
    }

    /// Forgets who got presence versions long ago.
    pub fn prune_presence(&self) {
        if let Ok(mut seen) = self.presence_seen.lock() {
            seen.retain(|_, s| s.at.elapsed() < PRESENCE_MEMORY);
        }
    }

    /// Queues an ephemeral frame for the local sessions of one room (the online count).
    pub fn push_to_room(&self, room: &str, frame: &ServerFrame) {
        let Ok(text) = serde_json::to_string(frame) else { return };
        let frame = Arc::new(Frame {
            room: room.to_owned(),
            seq: 0,
            member: None,
            text: Utf8Bytes::from(text),
            published_us: crate::bus::now_us(),
            state_of: Some(format!("online\0{room}").into()),
            only_to: None,
        });
        let Ok(members) = self.members.read() else { return };
        for s in members.rooms.get(room).into_iter().flat_map(|r| &r.sessions) {
            s.metrics.presence_frames.inc();
            s.push(Outbound::Event(frame.clone()));
        }
    }

    /// Tells the sessions whose serial falls in `phase` of `phases` that their heartbeat is
    /// due (see [`super::heartbeat`]).
    pub fn beat(&self, phase: u32, phases: u32) {
        let Ok(m) = self.members.read() else { return };
        let phases = u64::from(phases.max(1));
        for s in m.users.values().flatten().filter(|s| s.serial % phases == u64::from(phase)) {
            s.outbox.beat();
        }
    }

    /// Every session on this node: what the node renews in the presence backend. Handles, not
    /// copies of their ids, so that a renewal of every connection costs a pointer per
    /// connection until it builds each batch's names.
    pub fn local_sessions(&self) -> Vec<Arc<SessionHandle>> {
        let Ok(m) = self.members.read() else { return Vec::new() };
        m.users.values().flatten().cloned().collect()
    }

    /// Whether a session with this id is still on this node.
    pub fn has_session(&self, user: &str, id: &str) -> bool {
        self.members.read().is_ok_and(|m| m.users.get(user).is_some_and(|v| v.iter().any(|s| *s.id == *id)))
    }

    fn end_local_sessions(&self, user: &str, which: Option<&str>) {
        self.signouts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let Ok(members) = self.members.read() else {
            return;
        };
        for s in members.users.get(user).into_iter().flatten() {
            if which.is_none() || s.token_session.as_deref() == which {
                s.kick(close::BAD_TOKEN);
            }
        }
    }

    fn fan_out(&self, frame: &Arc<Frame>, except: Option<&str>) {
        let Ok(members) = self.members.read() else {
            return;
        };
        if let Some(room) = members.rooms.get(frame.room.as_str()) {
            if frame.seq > 0 {
                room.seen.fetch_max(frame.seq, Ordering::Relaxed);
            }
            for s in &room.sessions {
                if except != Some(&*s.id) {
                    s.push(Outbound::Event(frame.clone()));
                }
            }
        }
    }

    /// Records a membership change of `user` at `seq`; false when a newer one was applied
    /// already (the change is stale and must not move subscriptions).
    fn newer_change(room: &mut RoomSubs, user: &str, seq: u64) -> bool {
        match room.changes.get_mut(user) {
            Some(last) if *last >= seq => false,
            Some(last) => {
                *last = seq;
                true
            }
            None => {
                room.changes.insert(user.to_owned(), seq);
                true
            }
        }
    }

    fn on_joined(self: &Arc<Self>, frame: &Frame, user: &str) {
        {
            let Ok(mut m) = self.members.write() else {
                return;
            };
            let Some(sessions) = m.users.get(user).cloned() else {
                return;
            };
            let (_, room) = m.room_entry(&frame.room);
            if !Self::newer_change(room, user, frame.seq) {
                return;
            }
            for s in sessions {
                if !room.sessions.iter().any(|r| Arc::ptr_eq(r, &s)) {
                    room.sessions.push(s.clone());
                }
                // Always: a session still listed from before a leave needs the marker too.
                s.push(Outbound::Joined { room: frame.room.clone(), seq: frame.seq });
            }
        }
        self.spawn_reconcile(Topic::Room(frame.room.clone()));
    }

    fn on_left(self: &Arc<Self>, frame: &Frame, user: &str) {
        {
            let Ok(mut m) = self.members.write() else {
                return;
            };
            let Some(room) = m.rooms.get_mut(frame.room.as_str()) else {
                return;
            };
            if !Self::newer_change(room, user, frame.seq) {
                return;
            }
            room.sessions.retain(|s| *s.user != *user);
        }
        self.spawn_reconcile(Topic::Room(frame.room.clone()));
    }

    fn spawn_reconcile(self: &Arc<Self>, topic: Topic) {
        let hub = self.clone();
        tokio::spawn(async move {
            if let Err(e) = hub.reconcile(vec![topic]).await {
                tracing::error!(error = %e, "bus subscription update failed");
            }
        });
    }

    /// Registers a connected session so that rooms its user joins later reach it; returns once
    /// the bus delivers the user's member events to this node.
    /// How many sign-outs this node has heard of (see [`Hub::add_session`]).
    pub fn signouts(&self) -> u64 {
        self.signouts.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Refused when the user already holds `max_per_user` sessions here. A sign-out heard after
    /// this returns reaches the session; one heard before shows in [`Hub::signouts`].
    pub async fn add_session(&self, handle: &Arc<SessionHandle>) -> Result<(), AddSessionError> {
        if let Ok(mut m) = self.members.write() {
            let mine = m.users.entry(handle.user.to_string()).or_default();
            if self.max_per_user > 0 && mine.len() >= self.max_per_user as usize {
                return Err(AddSessionError::TooMany);
            }
            mine.push(handle.clone());
        }
        Ok(self.reconcile(vec![Topic::User(handle.user.to_string())]).await?)
    }

    /// Subscribes a session to rooms; returns once the bus delivers them to this node, with
    /// each room's shared id (for the session to key its own state by), in the order given.
    pub async fn subscribe(
        &self,
        handle: &Arc<SessionHandle>,
        rooms: &[String],
    ) -> Result<Vec<Arc<str>>, BusError> {
        let mut keys = Vec::with_capacity(rooms.len());
        {
            let Ok(mut m) = self.members.write() else {
                return Ok(rooms.iter().map(|r| Arc::from(r.as_str())).collect());
            };
            for r in rooms {
                let (key, room) = m.room_entry(r);
                if !room.sessions.iter().any(|s| Arc::ptr_eq(s, handle)) {
                    room.sessions.push(handle.clone());
                }
                keys.push(key);
            }
        }
        let topics: Vec<Topic> = rooms.iter().map(|r| Topic::Room(r.clone())).collect();
        self.reconcile(topics).await?;
        Ok(keys)
    }

    /// Forgets a session that ended.
    pub async fn remove_session(&self, handle: &Arc<SessionHandle>) {
        let mut touched = vec![Topic::User(handle.user.to_string())];
        if let Ok(mut m) = self.members.write() {
            if let Some(v) = m.users.get_mut(&*handle.user) {
                v.retain(|s| s.id != handle.id);
            }
            for (room, subs) in m.rooms.iter_mut() {
                let before = subs.sessions.len();
                subs.sessions.retain(|s| !Arc::ptr_eq(s, handle));
                if subs.sessions.len() != before {
                    touched.push(Topic::Room(room.to_string()));
                }
            }
        }
        if let Err(e) = self.reconcile(touched).await {
            tracing::error!(error = %e, "bus unsubscribe failed");
        }
    }

    /// Whether the node needs `topic` (and, when not, forgets its empty entry).
    fn wanted(&self, topic: &Topic) -> bool {
        let Ok(mut m) = self.members.write() else {
            return true;
        };
        match topic {
            Topic::Control => true,
            Topic::Room(key) => {
                let wanted = m.rooms.get(key.as_str()).is_some_and(|r| !r.sessions.is_empty());
                if !wanted {
                    m.rooms.remove(key.as_str());
                }
                wanted
            }
            Topic::User(key) => {
                let wanted = m.users.get(key).is_some_and(|s| !s.is_empty());
                if !wanted {
                    m.users.remove(key);
                }
                wanted
            }
        }
    }

    /// Brings the bus's subscriptions for `topics` in line with the local sessions, in one bus
    /// call each way. Each topic's cell is held (taken in a fixed order, so two reconciles
    /// cannot wait on each other) across the round trip.
    async fn reconcile(&self, mut topics: Vec<Topic>) -> Result<(), BusError> {
        topics.sort_unstable();
        topics.dedup();
        let cells: Vec<TopicCell> = {
            let Ok(mut map) = self.topics.lock() else {
                return Err(BusError::Unavailable("hub topic lock poisoned".into()));
            };
            topics.iter().map(|t| map.entry(t.clone()).or_default().clone()).collect()
        };
        let mut guards = Vec::with_capacity(cells.len());
        for cell in &cells {
            guards.push(cell.clone().lock_owned().await);
        }
        let (mut to_sub, mut to_unsub) = (Vec::new(), Vec::new());
        for (i, topic) in topics.iter().enumerate() {
            match (self.wanted(topic), *guards[i]) {
                (true, false) => to_sub.push(i),
                (false, true) => to_unsub.push(i),
                _ => {}
            }
        }
        let mut result = Ok(());
        if !to_sub.is_empty() {
            let list: Vec<Topic> = to_sub.iter().map(|i| topics[*i].clone()).collect();
            match self.bus.subscribe(&list).await {
                Ok(()) => to_sub.iter().for_each(|i| *guards[*i] = true),
                Err(e) => result = Err(e),
            }
        }
        if !to_unsub.is_empty() {
            let list: Vec<Topic> = to_unsub.iter().map(|i| topics[*i].clone()).collect();
            match self.bus.unsubscribe(&list).await {
                Ok(()) => to_unsub.iter().for_each(|i| *guards[*i] = false),
                Err(e) => result = result.and(Err(e)),
            }
        }
        let idle: Vec<bool> = guards.iter().map(|g| !**g).collect();
        drop(guards);
        // Forget cells of topics neither subscribed nor being changed by anyone else.
        if let Ok(mut map) = self.topics.lock() {
            for ((topic, cell), idle) in topics.iter().zip(cells).zip(idle) {
                // Ours and the map's: nobody else holds it.
                if idle && Arc::strong_count(&cell) == 2 {
                    map.remove(topic);
                }
            }
        }
        result
    }

    /// Records that a session stands at `seq` in `room` (read from the store at its start or a
    /// join), so the position check compares the store with what the node really has.
    pub fn note_position(&self, room: &str, seq: u64) {
        if let Ok(m) = self.members.read()
            && let Some(r) = m.rooms.get(room)
        {
            r.seen.fetch_max(seq, Ordering::Relaxed);
        }
    }

    /// Compares each room this node holds sessions in with the store (one read per 1,000
    /// rooms) and sends the sessions of any room that moved on without the node hearing of it
    /// (its last events lost on the bus) a [`Outbound::Check`]; returns how many were behind.
    pub async fn check_positions(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let rooms: Vec<(Arc<str>, u64)> = match self.members.read() {
            Ok(m) => m
                .rooms
                .iter()
                .filter(|(_, r)| !r.sessions.is_empty())
                .map(|(k, r)| (k.clone(), r.seen.load(Ordering::Relaxed)))
                .collect(),
            Err(_) => return Ok(0),
        };
        let mut behind = 0;
        for chunk in rooms.chunks(1000) {
            let ids: Vec<String> = chunk.iter().map(|(k, _)| k.to_string()).collect();
            let heads: HashMap<String, u64> = store.last_seqs(&ids).await?.into_iter().collect();
            let Ok(m) = self.members.read() else { return Ok(behind) };
            for (room, seen) in chunk {
                let Some(&head) = heads.get(room.as_ref()) else { continue };
                if head <= *seen {
                    continue;
                }
                if let Some(r) = m.rooms.get(room.as_ref())
                    && r.seen.fetch_max(head, Ordering::Relaxed) < head
                {
                    behind += 1;
                    for s in &r.sessions {
                        s.push(Outbound::Check { room: room.to_string(), upto: head });
                    }
                }
            }
        }
        Ok(behind)
    }

    /// Runs [`Hub::check_positions`] every `every` until `stop`.
    pub async fn run_position_checks(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        every: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.check_positions(store.as_ref()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rooms = n, "position check: rooms behind the store, filled from it"),
                Err(e) => tracing::debug!(error = %e, "position check skipped"),
            }
        }
    }

    /// Subscribes the node to the control topic; called once at start.
    pub async fn start(&self) -> Result<(), BusError> {
        self.reconcile(vec![Topic::Control]).await
    }

    /// Sends an ephemeral frame (typing, read marker) to the room's connected members on every
    /// node, except the session `origin`. Best effort: nothing is stored, so a failure is logged.
    pub async fn publish_ephemeral(&self, room: &str, frame: &ServerFrame, origin: Option<String>) {
        let payload = match serde_json::to_vec(frame) {
            Ok(p) => p,
            Err(e) => return tracing::error!(error = %e, "cannot encode an ephemeral frame"),
        };
        let ev = BusEvent {
            topic: Topic::Room(room.to_owned()),
            room: room.to_owned(),
            seq: 0,
            member: None,
            origin,
            payload: payload.into(),
            published_us: crate::bus::now_us(),
            control: None,
        };
        if let Err(e) = self.bus.publish(ev).await {
            tracing::warn!(error = %e, room, "ephemeral publish failed");
        }
    }

    /// Sends a frame to the user's sessions on every node (invites). Best effort, like any
    /// ephemeral frame: what it announces can also be read over REST.
    pub async fn publish_to_user(&self, user: &str, frame: &ServerFrame) {
        let payload = match serde_json::to_vec(frame) {
            Ok(p) => p,
            Err(e) => return tracing::error!(error = %e, "cannot encode a frame for a user"),
        };
        if let Err(e) = self.bus.publish(user_event(user, payload.into())).await {
            tracing::warn!(error = %e, user, "publish to a user failed");
        }
    }

    /// Tells of a moved read marker where someone shows it: the whole room (the reader's other
    /// devices included) when `to_room` (dms and small rooms, not across a block), else only
    /// the reader's own other devices. Never back to `origin`, the session that moved it.
    pub async fn publish_read(
        &self,
        room: &str,
        user: &str,
        seq: u64,
        origin: Option<String>,
        to_room: bool,
    ) {
        let frame = ServerFrame::Read { room: room.to_owned(), user: user.to_owned(), seq };
        if to_room {
            return self.publish_ephemeral(room, &frame, origin).await;
        }
        let Ok(payload) = serde_json::to_vec(&frame) else { return };
        let mut ev = user_event(user, payload.into());
        ev.origin = origin;
        if let Err(e) = self.bus.publish(ev).await {
            tracing::warn!(error = %e, user, "publishing a read marker failed");
        }
    }

    /// Closes the user's gateway sessions of one signed-in session (or all, with `None`) on
    /// every node. Each session also re-checks its token at every heartbeat, so a lost bus
    /// message delays the close by at most one heartbeat.
    pub async fn end_sessions(&self, user: &str, session: Option<String>) {
        self.end_local_sessions(user, session.as_deref());
        let ev = BusEvent {
            topic: Topic::Control,
            room: String::new(),
            seq: 0,
            member: None,
            origin: None,
            payload: bytes::Bytes::new(),
            published_us: crate::bus::now_us(),
            control: Some(Control::EndSessions { user: user.to_owned(), session }),
        };
        if let Err(e) = self.bus.publish(ev).await {
            tracing::warn!(error = %e, user, "publishing a sign-out failed");
        }
    }

    /// Tells every local session that the node is draining.
    pub fn drain_all(&self) {
        if let Ok(m) = self.members.read() {
            for s in m.users.values().flatten() {
                s.outbox.drain();
            }
        }
    }

    /// Closes every local session with `code` (used when draining).
    pub fn kick_all(&self, code: u16) {
        if let Ok(m) = self.members.read() {
            for s in m.users.values().flatten() {
                s.kick(code);
            }
        }
    }

    /// Number of connected sessions on this node.
    pub fn session_count(&self) -> usize {
        self.members.read().map(|m| m.users.values().map(Vec::len).sum()).unwrap_or(0)
    }
}

/// An event for one user's topic: a frame for their sessions.
fn user_event(user: &str, payload: bytes::Bytes) -> BusEvent {
    BusEvent {
        topic: Topic::User(user.to_owned()),
        room: String::new(),
        seq: 0,
        member: None,
        origin: None,
        payload,
        published_us: crate::bus::now_us(),
        control: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::local::LocalBus;
    use crate::store::NewMessage;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_position_check_finds_a_quiet_room_whose_last_event_the_bus_lost() {
        let (_dir, store, author, room) = crate::store::sqlite::scratch_room().await;
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(Arc::new(LocalBus::standalone()), 0);
        let handle = SessionHandle::new("s1".into(), author.clone(), None, 16, metrics);
        hub.add_session(&handle).await.unwrap();
        hub.subscribe(&handle, std::slice::from_ref(&room.id)).await.unwrap();
        hub.note_position(&room.id, room.last_seq);
        assert_eq!(hub.check_positions(store.as_ref()).await.unwrap(), 0, "nothing missed yet");
        assert!(handle.outbox.try_recv().is_none());
        // Committed, but no relay runs: the bus never carries it, as if NATS lost it.
        let msg =
            NewMessage { room: room.id.clone(), author, client_msg_id: "k".into(), body: "lost".into() };
        let seq = store.append(msg).await.unwrap().message.seq;
        assert_eq!(hub.check_positions(store.as_ref()).await.unwrap(), 1);
        match handle.outbox.try_recv() {
            Some(Outbound::Check { room: r, upto }) => assert_eq!((r, upto), (room.id.clone(), seq)),
            other => panic!("expected a check, got {other:?}"),
        }
        assert_eq!(hub.check_positions(store.as_ref()).await.unwrap(), 0, "told once");
        store.close().await;
    }

    use super::super::outbox::Next;
    use std::task::{Context, Poll};

    #[tokio::test]
    async fn each_session_beats_once_per_round_of_phases_and_after_its_queue() {
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(Arc::new(LocalBus::standalone()), 0);
        let mut handles = Vec::new();
        for i in 0..20 {
            let h = SessionHandle::new(format!("s{i}"), format!("u{}", i % 3), None, 16, metrics.clone());
            hub.add_session(&h).await.unwrap();
            handles.push(h);
        }
        let beats = |h: &SessionHandle| {
            let waker = futures_util::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            let mut n = 0;
            while let Poll::Ready(next) = h.outbox.poll_recv(&mut cx) {
                assert!(matches!(next, Next::Beat), "only beats were queued");
                n += 1;
            }
            n
        };
        for phase in 0..4 {
            hub.beat(phase, 4);
            for h in &handles {
                let due = u32::try_from(h.serial % 4).unwrap() == phase;
                assert_eq!(beats(h), usize::from(due), "session {} in phase {phase}", h.id);
            }
        }
        // A beat waits behind what is queued, and two beats before a look are one.
        let h = &handles[0];
        let phase = u32::try_from(h.serial % 4).unwrap();
        hub.beat(phase, 4);
        hub.beat(phase, 4);
        let frame = Frame {
            room: "r".into(),
            seq: 0,
            member: None,
            text: Utf8Bytes::from_static("{}"),
            published_us: 0,
            state_of: None,
            only_to: None,
        };
        h.push(Outbound::Direct(Arc::new(frame)));
        assert!(matches!(h.outbox.try_recv(), Some(Outbound::Direct(_))));
        assert_eq!(beats(h), 1);
    }

    /// A bus whose subscriptions to one topic take a second (a slow round trip).
    struct SlowBus {
        inner: LocalBus,
        slow: Topic,
    }

    #[async_trait::async_trait]
    impl Bus for SlowBus {
        fn set_handler(&self, handler: crate::bus::BusHandler) {
            self.inner.set_handler(handler)
        }
        async fn publish(&self, event: BusEvent) -> Result<(), BusError> {
            self.inner.publish(event).await
        }
        async fn subscribe(&self, topics: &[Topic]) -> Result<(), BusError> {
            if topics.contains(&self.slow) {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            self.inner.subscribe(topics).await
        }
        async fn unsubscribe(&self, topics: &[Topic]) -> Result<(), BusError> {
            self.inner.unsubscribe(topics).await
        }
        async fn ping(&self) -> Result<(), BusError> {
            Ok(())
        }
    }

    fn handle(id: &str, user: &str) -> Arc<SessionHandle> {
        SessionHandle::new(id.into(), user.into(), None, 16, Arc::new(Metrics::new()))
    }

    #[test]
    fn read_markers_are_one_state_per_room_and_user_whatever_the_topic() {
        let a = br#"{"op":"read","room":"ra","user":"u","seq":3}"#;
        let b = br#"{"op":"read","room":"rb","user":"u","seq":9}"#;
        let (ka, kb) = (state_key(None, a), state_key(None, b));
        assert!(ka.is_some() && ka != kb, "two rooms of one reader are two states");
        assert_eq!(ka, state_key(None, br#"{"op":"read","room":"ra","user":"u","seq":4}"#));
        assert_eq!(state_key(None, br#"{"op":"typing","room":"ra","user":"u"}"#), None);
        let p = Control::Presence { user: "u".into(), version: 1 };
        assert!(state_key(Some(&p), b"{}").is_some_and(|k| k.starts_with("presence")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_subscription_stalls_only_its_own_topic() {
        let bus = SlowBus { inner: LocalBus::standalone(), slow: Topic::Room("slow".into()) };
        let hub = Hub::new(Arc::new(bus), 0);
        let (a, b) = (handle("a", "ua"), handle("b", "ub"));
        hub.add_session(&a).await.unwrap();
        hub.add_session(&b).await.unwrap();
        let slow = {
            let (hub, a) = (hub.clone(), a.clone());
            tokio::spawn(async move { hub.subscribe(&a, &["slow".to_owned(), "shared".to_owned()]).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        hub.subscribe(&b, &["other".to_owned()]).await.unwrap();
        assert!(
            started.elapsed() < std::time::Duration::from_millis(500),
            "another room did not wait for it"
        );
        slow.await.unwrap().unwrap();
    }

    fn member_frame(room: &str, seq: u64, user: &str, change: MemberChange) -> BusEvent {
        BusEvent {
            topic: Topic::Room(room.into()),
            room: room.into(),
            seq,
            member: Some((user.into(), change)),
            origin: None,
            payload: bytes::Bytes::from_static(b"{}"),
            published_us: 0,
            control: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stale_leave_arriving_after_a_newer_join_keeps_the_member_subscribed() {
        let hub = Hub::new(Arc::new(LocalBus::standalone()), 0);
        let s = handle("s", "u");
        hub.add_session(&s).await.unwrap();
        hub.subscribe(&s, &["r".to_owned()]).await.unwrap();
        // The user left at seq 3 and joined again at seq 5; the bus brings the join first.
        hub.deliver(member_frame("r", 5, "u", MemberChange::Joined));
        hub.deliver(member_frame("r", 3, "u", MemberChange::Left));
        let m = hub.members.read().unwrap();
        let room = m.rooms.get("r").expect("room still held");
        assert!(room.sessions.iter().any(|x| Arc::ptr_eq(x, &s)), "the stale leave did not unsubscribe");
        drop(m);
        // A newer leave does.
        hub.deliver(member_frame("r", 7, "u", MemberChange::Left));
        let m = hub.members.read().unwrap();
        assert!(m.rooms.get("r").is_none_or(|r| r.sessions.is_empty()));
    }
}
