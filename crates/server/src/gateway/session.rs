//! One authenticated connection: `hello`, resume, then one `select!` loop over the socket, the
//! hub queue, in-flight store calls, heartbeats and shutdown.
//!
//! Resume without gap or duplicate: the session subscribes to its rooms first (live events start
//! queueing), then replays from the store, then drains the queue. It tracks the last `seq` written
//! per room, drops anything at or below it, and fills any hole above it from the store before
//! writing the event that revealed it, so the client sees each room's timeline exactly once and
//! in order, whatever the timing between replay, live delivery and the bus.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesOrdered, StreamExt};
use switchboard_protocol::codes::{close, error as code};
use switchboard_protocol::{ChosenStatus, ClientFrame, RoomKind, ServerFrame};
use tracing::Instrument;

use super::conn::{Conn, Inbound, WriteFailed};
use super::hub::{AddSessionError, Hub, Outbound, ReadAudience, SessionHandle};
use super::outbox::Next;
use crate::app::AppState;
use crate::auth::{AuthError, Verified};
use crate::error::ApiError;
use crate::metrics::{Held, Metrics, SessionState};
use crate::presence::node::PresenceNode;
use crate::store::{Appended, Committing, NewMessage, SanctionKind};
use crate::validate;

mod timeline;

use timeline::{Position, own_change};

/// Store calls one connection may have in flight; past this the socket is not read.
const MAX_IN_FLIGHT: usize = 256;
/// Queued frames written per flush.
const WRITE_BATCH: usize = 64;
/// Publish times kept room for between batches (a one-frame batch's worth).
const KEEP_WRITTEN: usize = 4;
/// Timeline events fetched per store read when replaying or filling a gap.
const FETCH_PAGE: u32 = 500;

/// What a session's loop waits on besides the drain deadline: store calls in flight, its hub
/// queue (which also brings the heartbeat) and its socket.
const SOURCES: u8 = 3;

type Pending = BoxFuture<'static, Option<ServerFrame>>;

/// Serves one WebSocket until it closes; `guards` (the drain's count, the address's slot) are
/// held as long as the connection.
///
/// Memory per idle connection is the sum of what this future and its boxes hold while the
/// session waits, and a future is as large as its largest state. So the socket is turned into
/// a boxed [`Conn`] before the future starts (an argument stays in every state), and every
/// one-off phase (opening, resume, closing, leaving) is boxed, so that its state is freed when
/// it finishes instead of sizing the connection for its whole life.
pub(crate) fn run(
    socket: super::socket::Socket,
    state: AppState,
    guards: impl Send + 'static,
) -> impl Future<Output = ()> + Send {
    let conn = Box::new(Conn::new(socket, &state.cfg, state.metrics.clone()));
    connection(conn, state, guards)
}

async fn connection(conn: Box<Conn>, state: AppState, _guards: impl Send) {
    let _connection = Held::up(state.metrics.connections.clone());
    let Some(Opened { session, since, registered, span, active: _active }) =
        Box::pin(open(conn, &state)).await
    else {
        return;
    };
    let last_presence = if span.is_disabled() {
        // Entering a disabled span on every poll still cost 1.5% of the workers' CPU.
        Box::pin(session.run(since)).await
    } else {
        Box::pin(session.run(since).instrument(span)).await
    };
    Box::pin(registered.leave(last_presence)).await;
}

/// A session past `hello` and registered, ready to resume and serve.
struct Opened {
    session: Box<Session>,
    since: BTreeMap<String, u64>,
    registered: Registered,
    span: tracing::Span,
    active: Held,
}

/// `hello`, then the session's place in the hub and in presence. `None` when the connection
/// ended or was closed on the way (the reason already sent).
async fn open(mut conn: Box<Conn>, state: &AppState) -> Option<Opened> {
    let handshake = Held::up(state.metrics.sessions_in(SessionState::Handshake));
    let (verified, since, signouts) = Box::pin(hello(&mut conn, state)).await?;
    drop(handshake);
    let active = Held::up(state.metrics.sessions_in(SessionState::Active));
    let session_id = uuid::Uuid::now_v7().to_string();
    // A span costs a few hundred bytes for the connection's whole life, so it exists only with
    // debug logging on; warnings and errors name the session themselves.
    let span = tracing::debug_span!("session", session = %session_id, user = %verified.user.id);
    let handle = SessionHandle::new(
        session_id,
        verified.user.id.clone(),
        verified.session.clone(),
        state.cfg.send_queue,
        state.metrics.clone(),
    );
    let registered = Registered(Some((state.hub.clone(), handle.clone(), state.presence.clone())));
    if let Err(e) = state.hub.add_session(&handle).await {
        handle.outbox.close();
        let (code, reason) = match e {
            AddSessionError::TooMany => {
                state.metrics.throttle("sessions_per_user");
                (close::TOO_MANY_SESSIONS, "too many sessions for this user")
            }
            AddSessionError::Bus(_) => (close::INTERNAL, "backend unavailable"),
        };
        conn.close(code, reason).await;
        registered.leave(None).await;
        return None;
    }
    // Registered before this check, so a drain is heard either here or from the hub; and a
    // sign-out that landed between `hello` and registering is caught here, not a heartbeat
    // later.
    if state.shutdown.is_cancelled() {
        handle.outbox.drain();
    }
    if state.hub.signouts() != signouts && !matches!(verified.still_valid(&state.store).await, Ok(true)) {
        handle.outbox.close();
        conn.close(close::BAD_TOKEN, "session ended").await;
        registered.leave(None).await;
        return None;
    }
    if let Some(p) = &state.presence {
        p.connected(&handle.user, &handle.id, false).await;
    }
    let session = Box::new(Session {
        state: state.clone(),
        conn,
        handle,
        token: verified,
        rooms: HashMap::new(),
        pending: InFlight::default(),
        written: Vec::new(),
        last_active: std::time::Instant::now(),
        idle: false,
        chose_away: false,
        presence_want: None,
        presence_task: None,
    });
    Some(Opened { session, since: since.unwrap_or_default(), registered, span, active })
}

/// A session's place in the hub. `leave` takes it out; if the session's task ends any other
/// way (a panic, the runtime shutting down), dropping this still closes its queue and takes it
/// out, so the hub never keeps delivering to a session that is gone.
struct Registered(Option<Place>);

/// Where a session is registered: the hub, its handle there, and presence.
type Place = (Arc<Hub>, Arc<SessionHandle>, Option<Arc<PresenceNode>>);

impl Registered {
    /// Takes the session out; its presence goes after `last_presence`, the session's last status
    /// change, has landed (a change landing after the disconnect would register it again).
    async fn leave(mut self, last_presence: Option<tokio::task::JoinHandle<()>>) {
        if let Some((hub, handle, presence)) = self.0.take() {
            handle.outbox.close();
            Box::pin(hub.remove_session(&handle)).await;
            if let Some(p) = presence {
                if let Some(mut last) = last_presence {
                    // A backend that hangs must not keep the connection registered: give up on
                    // the last change rather than let it land after the disconnect.
                    if tokio::time::timeout(Duration::from_secs(5), &mut last).await.is_err() {
                        last.abort();
                    }
                }
                Box::pin(p.disconnected(&handle.user, &handle.id)).await;
            }
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some((hub, handle, presence)) = self.0.take() {
            handle.outbox.close();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    hub.remove_session(&handle).await;
                    if let Some(p) = presence {
                        p.disconnected(&handle.user, &handle.id).await;
                    }
                });
            }
        }
    }
}

/// Waits for a valid `hello`; closes with 4001 or 4003 otherwise.
async fn hello(conn: &mut Conn, state: &AppState) -> Option<(Verified, Option<BTreeMap<String, u64>>, u64)> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(state.cfg.hello_timeout_ms);
    loop {
        let inbound = tokio::select! {
            _ = state.shutdown.cancelled() => {
                conn.close(close::GOING_AWAY, "server draining").await;
                return None;
            }
            r = tokio::time::timeout_at(deadline, conn.next()) => match r {
                Ok(i) => i,
                Err(_) => {
                    conn.close(close::NO_HELLO, "no hello in time").await;
                    return None;
                }
            },
        };
        let reply = match inbound {
            Inbound::Frame(ClientFrame::Hello { token, since }) => {
                let signouts = state.hub.signouts();
                return match state.auth.verify(&token, &state.store).await {
                    Ok(user) => Some((user, since, signouts)),
                    Err(AuthError::Unavailable(e)) => {
                        let _ = conn.send(&ApiError::from(e).to_frame(None, None)).await;
                        conn.close(close::INTERNAL, "backend unavailable").await;
                        None
                    }
                    Err(_) => {
                        conn.close(close::BAD_TOKEN, "invalid or expired token").await;
                        None
                    }
                };
            }
            Inbound::Frame(_) => {
                ApiError::bad_request(code::NOT_AUTHENTICATED, "send hello first").to_frame(None, None)
            }
            Inbound::Reply(frame) => *frame,
            Inbound::Close(c, reason) => {
                conn.close(c, reason).await;
                return None;
            }
            Inbound::Ended => return None,
            Inbound::Nothing => continue,
        };
        if conn.send(&reply).await.is_err() {
            return None;
        }
    }
}

/// Why the hub asked a session to close, for the close frame.
fn kick_reason(code: u16) -> &'static str {
    match code {
        close::SLOW_CONSUMER => "slow consumer: resume with since",
        close::GOING_AWAY => "server draining",
        close::BAD_TOKEN => "session ended",
        _ => "closed by the server",
    }
}

/// What woke a session's loop.
enum Woke {
    DrainDeadline,
    /// A store call in flight finished. Boxed: a frame is five times the size of the other
    /// variants, and what wakes the loop is held in every idle connection's state.
    Done(Option<Box<ServerFrame>>),
    Out(Next),
    In(Inbound),
}

enum Stop {
    Close(u16, &'static str),
    Gone,
}

impl From<WriteFailed> for Stop {
    fn from(_: WriteFailed) -> Self {
        Stop::Gone
    }
}

/// Store calls in flight, answered in the order they were made. Created on first use and
/// dropped once empty: an idle connection holds none (an empty `FuturesOrdered` still holds
/// two allocations), and boxed, so that what it holds inline (56 bytes) is not part of every
/// idle session either.
#[derive(Default)]
struct InFlight(Option<Box<FuturesOrdered<Pending>>>);

impl InFlight {
    fn push_back(&mut self, call: Pending) {
        self.0.get_or_insert_with(Box::default).push_back(call);
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |calls| calls.len())
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next answer in order if it has come; `Ready(None)` when nothing is in flight.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Option<ServerFrame>>> {
        let Some(calls) = self.0.as_mut() else { return Poll::Ready(None) };
        let done = std::task::ready!(calls.poll_next_unpin(cx));
        if calls.is_empty() {
            self.0 = None;
        }
        Poll::Ready(done)
    }
}

struct Session {
    state: AppState,
    conn: Box<Conn>,
    handle: Arc<SessionHandle>,
    /// The token it was opened with, and so the user: its session is re-checked at every
    /// heartbeat, and its expiry closes the connection.
    token: Verified,
    /// Keyed by the hub's shared room ids (a pointer each, not a copy).
    rooms: HashMap<Arc<str>, Position>,
    pending: InFlight,
    /// Publish times of the live frames in the batch being written, for the fanout metric.
    written: Vec<u64>,
    /// When the client last did something (any frame but a ping): idle past the presence
    /// setting, the connection is away.
    last_active: std::time::Instant,
    /// Away because idle.
    idle: bool,
    /// Away because the client said so.
    chose_away: bool,
    /// The status this connection wants presence to have, and whether a task is telling it:
    /// one task per session at most, taking the latest wanted state each time, so changes land
    /// in order, a burst of them costs one call per round trip, and none is lost when the
    /// connection closes right after it. Made on the first change.
    presence_want: Option<Arc<std::sync::Mutex<Wanted>>>,
    /// That task, which the disconnect waits for.
    presence_task: Option<tokio::task::JoinHandle<()>>,
}

/// What a session wants presence to have (see `Session::presence_want`).
#[derive(Default)]
struct Wanted {
    next: Option<(bool, crate::presence::Text)>,
    running: bool,
}

impl Session {
    /// Resumes, then serves until the connection ends; returns the session's last presence
    /// change still landing, if any.
    async fn run(mut self: Box<Self>, since: BTreeMap<String, u64>) -> Option<tokio::task::JoinHandle<()>> {
        tracing::debug!("session ready");
        match Box::pin(self.start(since)).await {
            // Not boxed: its state is small, and it lasts as long as this one.
            Ok(()) => self.serve().await,
            Err(Stop::Close(c, reason)) => {
                self.handle.outbox.close();
                Box::pin(self.conn.close(c, reason)).await;
            }
            Err(Stop::Gone) => {}
        }
        tracing::debug!("session ended");
        self.presence_task.take()
    }

    /// Subscribes, sends `ready`, replays what the client missed.
    async fn start(&mut self, since: BTreeMap<String, u64>) -> Result<(), Stop> {
        let store = self.state.store.clone();
        let unavailable = || Stop::Close(close::INTERNAL, "backend unavailable");
        // Subscribe before reading positions, so nothing committed from here on is missed.
        let first = store.rooms_for(&self.token.user.id).await.map_err(|_| unavailable())?;
        let ids: Vec<String> = first.iter().map(|r| r.id.clone()).collect();
        let mut keys: HashSet<Arc<str>> = self
            .state
            .hub
            .subscribe(&self.handle, &ids)
            .await
            .map_err(|_| unavailable())?
            .into_iter()
            .collect();
        let rooms = store.rooms_for(&self.token.user.id).await.map_err(|_| unavailable())?;
        let late: Vec<String> =
            rooms.iter().filter(|r| !keys.contains(r.id.as_str())).map(|r| r.id.clone()).collect();
        if !late.is_empty() {
            keys.extend(self.state.hub.subscribe(&self.handle, &late).await.map_err(|_| unavailable())?);
        }
        let big_above = self.state.cfg.presence_room_limit;
        let mut listed = rooms.clone();
        let mut presence = Vec::new();
        if let Some(p) = self.state.presence.clone() {
            for r in listed.iter_mut().filter(|r| r.members.unwrap_or(0) > big_above) {
                r.online = p.online_count(&r.id).await;
            }
            presence = p.for_ready(&self.token.user.id).await;
        }
        let ready = ServerFrame::Ready {
            session_id: self.handle.id.to_string(),
            user: self.token.user.clone(),
            heartbeat_ms: self.state.cfg.heartbeat_ms,
            rooms: listed,
            presence,
        };
        self.conn.feed_frame(&ready).await?;
        if !since.is_empty() {
            self.state.metrics.resumes.inc();
        }
        let limit = u64::from(self.state.cfg.replay_limit);
        for room in rooms {
            let last = room.last_seq;
            let mut from = since.get(&room.id).map_or(last, |s| (*s).min(last));
            if last - from > limit {
                let until = last - limit;
                self.state.metrics.gaps.inc();
                self.conn
                    .feed_frame(&ServerFrame::Gap {
                        room: room.id.clone(),
                        after_seq: from,
                        until_seq: until,
                    })
                    .await?;
                from = until;
            }
            let key = keys.get(room.id.as_str()).cloned().unwrap_or_else(|| Arc::from(room.id.as_str()));
            self.state.hub.note_position(&room.id, last);
            let big = room.members.unwrap_or(0) > big_above;
            self.rooms.insert(key, Position { seq: from, member: true, kind: room.kind, big });
            if last > from {
                self.fill(&room.id, last).await?;
            }
        }
        self.conn.flush().await?;
        Ok(())
    }

    /// The main loop.
    async fn serve(&mut self) {
        // Made (and boxed) only when the node drains: a `Sleep` is about 100 bytes.
        let mut deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
        // Which source is looked at first, turn by turn: a busy room must not starve the
        // client's own frames or the ticker.
        let mut turn = 0u8;
        // What this future holds while the connection idles is these few locals: every source
        // is polled in place (not through a `select!` of futures), and what a wake-up does runs
        // in a boxed step that is freed when it is done.
        let stop = loop {
            let draining = deadline.is_some();
            if draining && self.pending.is_empty() {
                break Stop::Close(close::GOING_AWAY, "server draining");
            }
            // Modulo the number of sources, not by wrapping: 256 is not a multiple of three, and
            // a wrap would skip a source for one turn (a frame already queued then waits for
            // the next wake-up).
            turn = (turn + 1) % SOURCES;
            let reading = !draining && self.pending.len() < MAX_IN_FLIGHT;
            let woke = std::future::poll_fn(|cx| self.poll_woke(cx, deadline.as_mut(), turn, reading)).await;
            if let Err(stop) = Box::pin(self.on_woke(woke, &mut deadline, reading)).await {
                break stop;
            }
        };
        if let Stop::Close(code, reason) = stop {
            // Nothing more will be written: stop queueing room traffic during the close.
            self.handle.outbox.close();
            Box::pin(self.conn.close(code, reason)).await;
        }
    }

    /// What woke the loop, looking at the sources in the order `turn` says.
    fn poll_woke(
        &mut self,
        cx: &mut Context<'_>,
        deadline: Option<&mut Pin<Box<tokio::time::Sleep>>>,
        turn: u8,
        reading: bool,
    ) -> Poll<Woke> {
        if let Some(d) = deadline
            && d.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Woke::DrainDeadline);
        }
        for i in 0..SOURCES {
            let woke = match (turn + i) % SOURCES {
                0 => match self.pending.poll_next(cx) {
                    Poll::Ready(Some(done)) => Some(Woke::Done(done.map(Box::new))),
                    _ => None,
                },
                1 => match self.handle.outbox.poll_recv(cx) {
                    Poll::Ready(next) => Some(Woke::Out(next)),
                    Poll::Pending => None,
                },
                2 if reading => match self.conn.poll_next(cx) {
                    Poll::Ready(inbound) => Some(Woke::In(inbound)),
                    Poll::Pending => None,
                },
                _ => None,
            };
            if let Some(w) = woke {
                return Poll::Ready(w);
            }
        }
        Poll::Pending
    }

    /// Acts on what woke the loop.
    async fn on_woke(
        &mut self,
        woke: Woke,
        deadline: &mut Option<Pin<Box<tokio::time::Sleep>>>,
        reading: bool,
    ) -> Result<(), Stop> {
        match woke {
            Woke::DrainDeadline => Err(Stop::Close(close::GOING_AWAY, "server draining")),
            Woke::Done(done) => self.finish(done.map(|d| *d)).await,
            Woke::Out(next) => match next {
                Next::Item(o) => self.write_queued(o).await,
                Next::Kicked(code) => Err(Stop::Close(code, kick_reason(code))),
                // Heard once or twice (the hub, and the session's own check when it registered
                // during the drain): the first one sets the deadline.
                Next::Drain if deadline.is_some() => Ok(()),
                Next::Drain => {
                    let ms = self.state.cfg.drain_timeout_ms;
                    *deadline = Some(Box::pin(tokio::time::sleep(Duration::from_millis(ms))));
                    Ok(())
                }
                // The node's timer, not one per connection (see `heartbeat`).
                Next::Beat => self.heartbeat(reading).await,
            },
            Woke::In(inbound) => self.on_inbound(inbound).await,
        }
    }

    /// Pings the client; closes it if it has been silent for 2.5 intervals while we were
    /// reading (when reading is paused, its silence proves nothing).
    async fn heartbeat(&mut self, reading: bool) -> Result<(), Stop> {
        let hb = Duration::from_millis(self.state.cfg.heartbeat_ms);
        if reading && self.conn.last_recv.elapsed() > hb * 5 / 2 {
            return Err(Stop::Close(close::HEARTBEAT_TIMEOUT, "no heartbeat from client"));
        }
        self.check_token(hb).await?;
        let away_after = Duration::from_millis(self.state.cfg.presence_away_after_ms);
        if !self.idle && self.last_active.elapsed() >= away_after {
            self.idle = true;
            self.presence_changed(crate::presence::Text::Keep);
        }
        Ok(self.conn.ping().await?)
    }

    /// Whether the connection is away: the client said so, or it has been idle.
    fn away(&self) -> bool {
        self.chose_away || self.idle
    }

    /// Tells presence this connection's status (and the user's text), without waiting for it:
    /// the session's presence task (started if none runs) takes the latest wanted state.
    fn presence_changed(&mut self, text: crate::presence::Text) {
        use crate::presence::Text;
        let away = self.away();
        self.handle.away.store(away, std::sync::atomic::Ordering::Relaxed);
        let Some(p) = self.state.presence.clone() else { return };
        let want = self.presence_want.get_or_insert_with(Default::default).clone();
        let Ok(mut w) = want.lock() else { return };
        // A text not yet told is kept unless this change brings another.
        let text = match (w.next.take(), text) {
            (Some((_, held)), Text::Keep) => held,
            (_, text) => text,
        };
        w.next = Some((away, text));
        if w.running {
            return;
        }
        w.running = true;
        drop(w);
        let (user, session, want) = (self.token.user.id.clone(), self.handle.id.clone(), want.clone());
        self.presence_task = Some(tokio::spawn(async move {
            loop {
                let next = match want.lock() {
                    Ok(mut w) => match w.next.take() {
                        Some(n) => n,
                        None => {
                            w.running = false;
                            return;
                        }
                    },
                    Err(_) => return,
                };
                p.set(&user, &session, next.0, next.1).await;
            }
        }));
    }

    /// The client did something: an idle connection is back.
    fn active(&mut self) {
        self.last_active = std::time::Instant::now();
        if self.idle {
            self.idle = false;
            if !self.chose_away {
                self.presence_changed(crate::presence::Text::Keep);
            }
        }
    }

    /// Closes the session (4003) before REST would refuse its token: at the last heartbeat
    /// before the token expires, or once its signed-in session has ended (the bus normally says
    /// so at once; this is the backstop when it did not).
    async fn check_token(&mut self, hb: Duration) -> Result<(), Stop> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(u64::MAX);
        if now.saturating_add(hb.as_secs().max(1)) >= self.token.valid_until {
            return Err(Stop::Close(close::BAD_TOKEN, "token expired"));
        }
        match self.token.still_valid(&self.state.store).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Stop::Close(close::BAD_TOKEN, "session ended")),
            // A store that cannot answer proves nothing; the next beat asks again.
            Err(e) => {
                tracing::debug!(error = %e, "cannot re-check a session");
                Ok(())
            }
        }
    }

    async fn finish(&mut self, done: Option<ServerFrame>) -> Result<(), Stop> {
        if let Some(frame) = done {
            self.conn.send(&frame).await?;
        }
        Ok(())
    }

    /// Writes one queued item and whatever else is already queued, then flushes once.
    async fn write_queued(&mut self, first: Outbound) -> Result<(), Stop> {
        let handle = self.handle.clone();
        self.state.metrics.queue_depth.observe(handle.outbox.len() as f64 + 1.0);
        self.apply(first).await?;
        for _ in 1..WRITE_BATCH {
            match handle.outbox.try_recv() {
                Some(o) => self.apply(o).await?,
                None => break,
            }
        }
        self.conn.flush().await?;
        let now = crate::bus::now_us();
        for published in self.written.drain(..) {
            self.state.metrics.fanout_seconds.observe(now.saturating_sub(published) as f64 / 1e6);
        }
        // A burst's worth (up to a batch of 64) is given back rather than kept while idle.
        if self.written.capacity() > KEEP_WRITTEN {
            self.written = Vec::new();
        }
        Ok(())
    }

    async fn apply(&mut self, out: Outbound) -> Result<(), Stop> {
        match out {
            Outbound::Event(frame) if frame.seq == 0 => {
                if self.rooms.get(frame.room.as_str()).is_some_and(|p| p.member) {
                    self.conn.feed(frame.text.clone()).await?;
                }
            }
            Outbound::Event(frame) => {
                let Some(pos) = self.rooms.get(frame.room.as_str()).map(|p| p.seq) else {
                    return Ok(());
                };
                if frame.seq <= pos {
                    return Ok(());
                }
                if frame.seq > pos + 1 {
                    self.fill(&frame.room, frame.seq - 1).await?;
                }
                if frame.published_us > 0 {
                    self.written.push(frame.published_us);
                }
                let own =
                    own_change(frame.member.as_ref().map(|(u, c)| (u.as_str(), *c)), &self.token.user.id);
                let shown = frame.only_to.as_deref().is_none_or(|u| u == self.token.user.id);
                self.step(&frame.room, frame.seq, own, shown.then(|| frame.text.clone())).await?;
            }
            Outbound::Direct(frame) => self.conn.feed(frame.text.clone()).await?,
            Outbound::Check { room, upto } => {
                if self.rooms.get(room.as_str()).is_some_and(|p| p.member && p.seq < upto) {
                    self.fill(&room, upto).await?;
                }
            }
            Outbound::Joined { room, seq } => {
                // Each join arrives twice (room and user topics): a marker the session has
                // already gone past must not subscribe it again after a later leave.
                if self.rooms.get(room.as_str()).is_some_and(|p| p.member || p.seq >= seq) {
                    return Ok(());
                }
                // Make sure this node receives the room before reading where it stands, then
                // catch up from the store: events committed with the join may already have
                // been published, and a quiet room would otherwise hold them back.
                let key = match self.state.hub.subscribe(&self.handle, std::slice::from_ref(&room)).await {
                    Ok(mut keys) => keys.pop(),
                    Err(e) => {
                        tracing::warn!(error = %e, room, session = %self.handle.id, "subscribing a joined room failed");
                        None
                    }
                };
                let key = key.unwrap_or_else(|| Arc::from(room.as_str()));
                let info = self.state.store.room_for(&room, &self.token.user.id).await.ok();
                let upto = info.as_ref().map_or(seq, |r| r.last_seq.max(seq));
                let kind = info.as_ref().map_or(RoomKind::Private, |r| r.kind);
                let big =
                    info.as_ref().and_then(|r| r.members).unwrap_or(0) > self.state.cfg.presence_room_limit;
                if big {
                    // This node counts the room from now on (it may not have held it before).
                    self.state.hub.want_recount(&room);
                }
                let joined_count = match (&self.state.presence, big) {
                    (Some(p), true) => p.online_count(&room).await,
                    _ => None,
                };
                self.state.hub.note_position(&room, upto);
                let p = self.rooms.entry(key).or_insert(Position { seq: 0, member: false, kind, big });
                // What happened while the user was out is not theirs to see.
                p.seq = p.seq.max(seq.saturating_sub(1));
                p.kind = kind;
                p.big = big;
                self.fill(&room, upto).await?;
                // A large room's count now, not only when it next moves.
                if let Some(count) = joined_count {
                    self.conn.feed_frame(&ServerFrame::Online { room: room.clone(), count }).await?;
                }
            }
        }
        Ok(())
    }

    async fn on_inbound(&mut self, inbound: Inbound) -> Result<(), Stop> {
        match inbound {
            Inbound::Frame(f) => self.on_frame(f).await,
            Inbound::Reply(frame) => Ok(self.conn.send(&frame).await?),
            Inbound::Close(c, reason) => Err(Stop::Close(c, reason)),
            Inbound::Ended => Err(Stop::Gone),
            Inbound::Nothing => Ok(()),
        }
    }

    fn member_of(&self, room: &str) -> Result<(), ApiError> {
        if self.rooms.get(room).is_some_and(|p| p.member) { Ok(()) } else { Err(ApiError::not_found()) }
    }

    async fn on_frame(&mut self, frame: ClientFrame) -> Result<(), Stop> {
        if !matches!(frame, ClientFrame::Ping) {
            self.active();
        }
        let reply = match frame {
            ClientFrame::Hello { .. } => Some(
                ApiError::bad_request(code::ALREADY_AUTHENTICATED, "hello was already accepted")
                    .to_frame(None, None),
            ),
            ClientFrame::Ping => Some(ServerFrame::Pong),
            ClientFrame::Status { status, text } => self.on_status(status, text),
            ClientFrame::Send { room, client_msg_id, body } => {
                // Take the place in the commit order now, in frame order, so that this
                // connection's pipelined sends keep their order; only the wait for the commit
                // is left in flight.
                let msg = NewMessage { room, author: self.token.user.id.clone(), client_msg_id, body };
                let (cmid, room) = (msg.client_msg_id.clone(), msg.room.clone());
                match crate::send::queue(&self.state, msg).await {
                    Ok(commit) => {
                        let metrics = self.state.metrics.clone();
                        self.pending.push_back(ack_on_commit(commit, cmid, room, metrics));
                        None
                    }
                    Err(e) => Some(e.to_frame(Some(cmid), Some(room))),
                }
            }
            ClientFrame::Typing { room } => match self.member_of(&room) {
                Err(e) => Some(e.to_frame(None, Some(room))),
                // Throttled per user and room across devices: the extra ones are dropped.
                Ok(()) if !self.state.limits.typing(&self.token.user.id, &room) => None,
                Ok(()) => {
                    let frame = ServerFrame::Typing { room: room.clone(), user: self.token.user.id.clone() };
                    let in_dm = self.rooms.get(room.as_str()).is_some_and(|p| p.kind == RoomKind::Dm);
                    self.pending.push_back(publish_unless_blocked(
                        &self.state,
                        room,
                        frame,
                        self.handle.id.to_string(),
                        self.token.user.id.clone(),
                        in_dm,
                    ));
                    None
                }
            },
            ClientFrame::Read { room, seq } => match self.member_of(&room) {
                Err(e) => Some(e.to_frame(None, Some(room))),
                Ok(()) => {
                    let audience = self
                        .rooms
                        .get(room.as_str())
                        .map_or(ReadAudience::Room, |p| ReadAudience::of(p.kind, p.big));
                    self.pending.push_back(mark_read(
                        &self.state,
                        room,
                        self.token.user.id.clone(),
                        seq,
                        self.handle.id.to_string(),
                        audience,
                    ));
                    None
                }
            },
        };
        if let Some(frame) = reply {
            self.conn.send(&frame).await?;
        }
        Ok(())
    }
}

impl Session {
    /// `{"op":"status"}`: sets this connection online or away, and the user's text if given.
    fn on_status(&mut self, status: ChosenStatus, text: Option<String>) -> Option<ServerFrame> {
        if self.state.presence.is_none() {
            return Some(
                ApiError::bad_request(code::INVALID_REQUEST, "presence is off on this server")
                    .to_frame(None, None),
            );
        }
        let text = match text.map(|t| validate::status_text(&t, self.state.cfg.max_status_chars)) {
            None => crate::presence::Text::Keep,
            Some(Ok(Some(t))) => crate::presence::Text::Set(t),
            Some(Ok(None)) => crate::presence::Text::Clear,
            Some(Err(e)) => return Some(e.to_frame(None, None)),
        };
        self.chose_away = status == ChosenStatus::Away;
        self.presence_changed(text);
        None
    }
}

/// Answers `ack` only after the durable commit.
fn ack_on_commit(
    commit: Committing<Appended>,
    client_msg_id: String,
    room: String,
    metrics: Arc<Metrics>,
) -> Pending {
    let queued = std::time::Instant::now();
    Box::pin(async move {
        let result = commit.await.map_err(ApiError::from);
        metrics.send_result(queued, &result);
        Some(match result {
            Ok(a) => {
                ServerFrame::Ack { client_msg_id, id: a.message.id, seq: a.message.seq, ts: a.message.ts }
            }
            Err(e) => e.to_frame(Some(client_msg_id), Some(room)),
        })
    })
}

/// Publishes an ephemeral frame to the room (not echoed to `origin`).
fn publish(state: &AppState, room: String, frame: ServerFrame, origin: String) -> Pending {
    let hub = state.hub.clone();
    Box::pin(async move {
        hub.publish_ephemeral(&room, &frame, Some(origin)).await;
        None
    })
}

/// Publishes an ephemeral frame, except in a dm where either person blocked the other
/// (`dm_user` is the sender, set for dms only): not even typing passes a block.
fn publish_unless_blocked(
    state: &AppState,
    room: String,
    frame: ServerFrame,
    origin: String,
    user: String,
    in_dm: bool,
) -> Pending {
    let state = state.clone();
    Box::pin(async move {
        // Unknown (store unreachable) counts as blocked: typing is best effort anyway.
        let hidden = if in_dm {
            state.store.dm_blocked(&room, &user).await.unwrap_or(true)
        } else {
            // A shadow-banned user's typing would tell the room that someone writes what
            // nobody sees.
            state.store.sanctioned(&room, &user, SanctionKind::Shadow).await.unwrap_or(true)
        };
        if hidden {
            return None;
        }
        publish(&state, room, frame, origin).await
    })
}

/// Moves the read marker, then tells whoever shows it (see [`ReadAudience`]); a block in a dm
/// is looked up only for dms.
fn mark_read(
    state: &AppState,
    room: String,
    user: String,
    seq: u64,
    origin: String,
    audience: ReadAudience,
) -> Pending {
    let state = state.clone();
    Box::pin(async move {
        match state.store.mark_read(&room, &user, seq).await {
            Ok(seq) => {
                let to_room = audience.reaches_room(state.store.as_ref(), &room, &user).await;
                state.hub.publish_read(&room, &user, seq, Some(origin), to_room).await;
                None
            }
            Err(e) => Some(ApiError::from(e).to_frame(None, Some(room))),
        }
    })
}
