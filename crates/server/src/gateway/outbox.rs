//! A session's bounded outbound queue.
//!
//! The hub pushes to it without waiting (a full queue kicks the session: slow consumers are
//! cut, never the room), and the session drains it in batches. It reserves nothing up front and
//! gives back what it grew once drained: most connections are idle most of the time, and a channel that reserves its first block of
//! slots up front cost about 1.5 KiB per connection (measured with DHAT), a third of the target
//! for a whole idle connection. Kicks and the drain signal travel through the same wake-up as
//! a frame, so an idle session waits on one future.
//!
//! Ephemeral frames (typing, read markers, invites: nothing a resume would replay) never cost a
//! client its connection: they may fill at most half the queue, past which new ones are
//! dropped (or, for frames that carry a state, replace the older copy of the same state still
//! queued, so the reader gets the latest once), and they do not count toward the cut, which
//! only timeline events (what the client must not miss) trigger. So the queue holds at most `capacity` timeline events plus
//! `capacity / 2` ephemeral ones.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use super::hub::Outbound;

/// Capacity kept after the queue drains; anything larger is given back.
const KEEP_CAPACITY: usize = 4;

/// What a push did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// The queue was full: nothing was queued.
    Full,
    /// The session has ended: nothing was queued.
    Closed,
    /// An ephemeral frame found its share of the queue full: dropped, and that is all.
    Dropped,
    /// An ephemeral frame found its share full and replaced an older copy of the same state.
    Replaced,
}

/// What the session takes next.
#[derive(Debug)]
pub enum Next {
    /// A queued item.
    Item(Outbound),
    /// The session was asked to close with this code.
    Kicked(u16),
    /// The node is draining: stop reading, finish what is in flight, then close.
    Drain,
    /// Time for the session's heartbeat (see [`super::heartbeat`]).
    Beat,
}

#[derive(Debug, Default)]
struct Slots {
    items: VecDeque<Outbound>,
    /// How many of `items` are ephemeral.
    ephemeral: u32,
    closed: bool,
}

/// One producer side shared by the hub's threads, one consumer (the session).
#[derive(Debug)]
pub struct Outbox {
    slots: Mutex<Slots>,
    /// The one consumer's waker: a session polls its queue in place, with no future held
    /// between wake-ups.
    wake: AtomicWaker,
    code: AtomicU16,
    drain: AtomicBool,
    beat: AtomicBool,
    /// Narrow, like `Slots::ephemeral`: every connection holds one.
    capacity: u32,
}

impl Outbox {
    /// An empty queue that holds at most `capacity` items (at least one).
    pub fn new(capacity: usize) -> Self {
        Outbox {
            slots: Mutex::default(),
            wake: AtomicWaker::new(),
            code: AtomicU16::new(0),
            drain: AtomicBool::new(false),
            beat: AtomicBool::new(false),
            capacity: u32::try_from(capacity.max(1)).unwrap_or(u32::MAX),
        }
    }

    /// Queues `item` unless the queue is full or closed.
    pub fn push(&self, item: Outbound) -> Pushed {
        {
            let Ok(mut s) = self.slots.lock() else { return Pushed::Closed };
            if s.closed {
                return Pushed::Closed;
            }
            if item.is_ephemeral() {
                if s.ephemeral >= (self.capacity / 2).max(1) {
                    // Only under pressure, so the scan is paid only when the queue is full.
                    let key = item.state_of();
                    let older = key.and_then(|k| s.items.iter().rposition(|o| o.state_of() == Some(k)));
                    return match older {
                        Some(i) => {
                            s.items[i] = item;
                            Pushed::Replaced
                        }
                        None => Pushed::Dropped,
                    };
                }
                s.ephemeral += 1;
            } else if s.items.len() - s.ephemeral as usize >= self.capacity as usize {
                return Pushed::Full;
            }
            s.items.push_back(item);
        }
        self.wake.wake();
        Pushed::Queued
    }

    /// Asks the session to close with `code`; the first code asked for wins, and only that
    /// call returns true.
    pub fn kick(&self, code: u16) -> bool {
        debug_assert_ne!(code, 0, "0 means not kicked");
        let first = self.code.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire).is_ok();
        self.wake.wake();
        first
    }

    /// Tells the session that the node is draining (it hears it once, before further items).
    pub fn drain(&self) {
        self.drain.store(true, Ordering::Release);
        self.wake.wake();
    }

    /// Tells the session that its heartbeat is due (heard once however often it is told
    /// before it looks).
    pub fn beat(&self) {
        self.beat.store(true, Ordering::Release);
        self.wake.wake();
    }

    /// The close code asked for, if any.
    pub fn kicked(&self) -> Option<u16> {
        match self.code.load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }

    /// Takes a queued item without waiting.
    pub fn try_recv(&self) -> Option<Outbound> {
        let mut s = self.slots.lock().ok()?;
        let item = s.items.pop_front();
        if item.as_ref().is_some_and(Outbound::is_ephemeral) {
            s.ephemeral -= 1;
        }
        if s.items.is_empty() && s.items.capacity() > KEEP_CAPACITY {
            s.items = VecDeque::new();
        }
        item
    }

    /// Waits for the next item or a kick (a kick comes first).
    pub async fn recv(&self) -> Next {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next item or a kick if there is one; otherwise the task is woken when one comes.
    /// Only one task may poll a queue.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Next> {
        if let Some(next) = self.ready() {
            return Poll::Ready(next);
        }
        // Registered before looking again, so a push between the first look and here is seen
        // now, and one after it wakes the task.
        self.wake.register(cx.waker());
        self.ready().map_or(Poll::Pending, Poll::Ready)
    }

    /// What the session takes next without waiting: a kick, then the drain, then an item, then
    /// the heartbeat.
    fn ready(&self) -> Option<Next> {
        if let Some(code) = self.kicked() {
            return Some(Next::Kicked(code));
        }
        if self.drain.swap(false, Ordering::AcqRel) {
            return Some(Next::Drain);
        }
        if let Some(item) = self.try_recv() {
            return Some(Next::Item(item));
        }
        self.beat.swap(false, Ordering::AcqRel).then_some(Next::Beat)
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.slots.lock().map(|s| s.items.len()).unwrap_or(0)
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The session has ended: drop what is queued and refuse what comes.
    pub fn close(&self) {
        if let Ok(mut s) = self.slots.lock() {
            s.closed = true;
            s.items = VecDeque::new();
            s.ephemeral = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(room: &str) -> Outbound {
        Outbound::Joined { room: room.into(), seq: 1 }
    }

    fn room_of(n: Next) -> String {
        match n {
            Next::Item(Outbound::Joined { room, .. }) => room,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn items_come_out_in_order_and_a_full_queue_refuses() {
        let q = Outbox::new(2);
        assert_eq!(q.push(item("a")), Pushed::Queued);
        assert_eq!(q.push(item("b")), Pushed::Queued);
        assert_eq!(q.push(item("c")), Pushed::Full);
        assert_eq!(q.len(), 2);
        assert_eq!(room_of(q.recv().await), "a");
        assert_eq!(room_of(q.recv().await), "b");
        assert!(q.try_recv().is_none() && q.is_empty());
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_a_push_from_another_task() {
        let q = std::sync::Arc::new(Outbox::new(8));
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { room_of(q.recv().await) }
        });
        tokio::task::yield_now().await;
        q.push(item("x"));
        assert_eq!(waiter.await.unwrap(), "x");
    }

    #[tokio::test]
    async fn a_kick_or_drain_wakes_a_waiting_receiver() {
        let q = std::sync::Arc::new(Outbox::new(8));
        for signal in [Outbox::drain as fn(&Outbox), |q: &Outbox| {
            q.kick(4010);
        }] {
            let waiter = tokio::spawn({
                let q = q.clone();
                async move { q.recv().await }
            });
            tokio::task::yield_now().await;
            signal(&q);
            let woke = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await;
            assert!(matches!(woke, Ok(Ok(Next::Drain | Next::Kicked(4010)))));
        }
    }

    #[tokio::test]
    async fn a_kick_wins_over_queued_items_and_only_the_first_code_counts() {
        let q = Outbox::new(8);
        q.push(item("a"));
        assert!(q.kick(4010));
        assert!(!q.kick(1001));
        assert!(matches!(q.recv().await, Next::Kicked(4010)));
    }

    #[tokio::test]
    async fn a_drain_is_heard_once_before_queued_items() {
        let q = Outbox::new(8);
        q.push(item("a"));
        q.drain();
        assert!(matches!(q.recv().await, Next::Drain));
        assert_eq!(room_of(q.recv().await), "a");
    }

    #[tokio::test]
    async fn a_closed_queue_drops_and_refuses() {
        let q = Outbox::new(8);
        q.push(item("a"));
        q.close();
        assert!(q.is_empty());
        assert_eq!(q.push(item("b")), Pushed::Closed);
    }

    fn typing() -> Outbound {
        let text = tungstenite::Utf8Bytes::from_static("{\"op\":\"typing\"}");
        Outbound::Event(std::sync::Arc::new(super::super::hub::Frame {
            room: "r".into(),
            seq: 0,
            member: None,
            text,
            published_us: 0,
            state_of: None,
            only_to: None,
        }))
    }

    fn presence(user: &str, version: u8) -> Outbound {
        let text = tungstenite::Utf8Bytes::from(format!("{{\"op\":\"presence\",\"v\":{version}}}"));
        Outbound::Direct(std::sync::Arc::new(super::super::hub::Frame {
            room: String::new(),
            seq: 0,
            member: None,
            text,
            published_us: 0,
            state_of: Some(format!("presence\0{user}").into()),
            only_to: None,
        }))
    }

    #[tokio::test]
    async fn under_pressure_a_newer_state_replaces_the_older_copy_still_queued() {
        let q = Outbox::new(4);
        assert_eq!(q.push(presence("a", 1)), Pushed::Queued);
        assert_eq!(q.push(typing()), Pushed::Queued);
        assert_eq!(q.push(presence("a", 2)), Pushed::Replaced, "the same state: replaced in place");
        assert_eq!(q.push(presence("b", 1)), Pushed::Dropped, "another state with no older copy");
        assert_eq!(q.push(typing()), Pushed::Dropped);
        let text = |n: Next| match n {
            Next::Item(Outbound::Direct(f) | Outbound::Event(f)) => f.text.to_string(),
            other => panic!("unexpected {other:?}"),
        };
        assert!(text(q.recv().await).contains("\"v\":2"), "the latest state, in the older one's place");
        assert!(text(q.recv().await).contains("typing"));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn ephemeral_frames_take_half_the_queue_at_most_and_never_cause_the_cut() {
        let q = Outbox::new(4);
        assert_eq!(q.push(typing()), Pushed::Queued);
        assert_eq!(q.push(typing()), Pushed::Queued);
        assert_eq!(q.push(typing()), Pushed::Dropped, "their half is full: dropped, no kick");
        // Timeline items still get the whole capacity.
        for r in ["a", "b", "c", "d"] {
            assert_eq!(q.push(item(r)), Pushed::Queued);
        }
        assert_eq!(q.push(item("e")), Pushed::Full, "only timeline items fill the queue");
        assert!(q.kicked().is_none());
        assert!(matches!(q.recv().await, Next::Item(Outbound::Event(_))));
        assert_eq!(q.push(typing()), Pushed::Queued, "a slot of their half came free");
    }

    #[test]
    fn capacity_is_given_back_once_drained() {
        let q = Outbox::new(1000);
        for i in 0..100 {
            q.push(item(&i.to_string()));
        }
        while q.try_recv().is_some() {}
        assert!(q.slots.lock().unwrap().items.capacity() <= KEEP_CAPACITY);
    }
}
