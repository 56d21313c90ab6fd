//! The `Bus` contract as tests. Every implementation instantiates [`bus_conformance!`] with a
//! factory returning `(guard, node)` where `node()` attaches a new node to one shared bus.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use switchboard_protocol::MemberChange;

use super::{Bus, BusEvent, Control, Topic};

/// Generates one `#[tokio::test]` per contract check for a bus factory.
#[macro_export]
macro_rules! bus_conformance {
    ($factory:path $(, #[$attr:meta])*) => {
        $crate::bus_conformance!(@tests $factory, [$(#[$attr])*],
            delivers_only_subscribed_rooms_to_every_node,
            preserves_publish_order_per_room,
            unsubscribe_stops_delivery,
            user_topics_are_separate_from_room_topics,
            events_arrive_intact,
            many_topics_subscribe_at_once_and_control_reaches_every_node,
            a_subscription_is_in_place_when_subscribe_returns
        );
    };
    (@tests $factory:path, $attrs:tt, $($name:ident),+) => {
        $( $crate::bus_conformance!(@one $factory, $attrs, $name); )+
    };
    (@one $factory:path, [$($attr:tt)*], $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $($attr)*
        async fn $name() {
            let (_guard, node) = $factory().await;
            $crate::bus::conformance::$name(&node).await;
        }
    };
}

type Seen = Arc<Mutex<Vec<BusEvent>>>;

fn recorder(bus: &Arc<dyn Bus>) -> Seen {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    bus.set_handler(Arc::new(move |ev| {
        if let Ok(mut v) = sink.lock() {
            v.push(ev);
        }
    }));
    seen
}

fn room(id: &str) -> Topic {
    Topic::Room(id.to_owned())
}

fn event(room: &str, seq: u64) -> BusEvent {
    BusEvent {
        topic: Topic::Room(room.to_owned()),
        room: room.to_owned(),
        seq,
        member: None,
        origin: None,
        payload: Bytes::from(format!("{{\"op\":\"x\",\"seq\":{seq}}}")),
        published_us: 42,
        control: None,
    }
}

/// Waits until `seen` holds `n` events (networked buses deliver asynchronously).
async fn wait_for(seen: &Seen, n: usize) -> Vec<BusEvent> {
    for _ in 0..200 {
        let got = seen.lock().map(|v| v.clone()).unwrap_or_default();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen.lock().map(|v| v.clone()).unwrap_or_default()
}

/// Gives a networked bus time to deliver anything it should not.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

pub(crate) async fn delivers_only_subscribed_rooms_to_every_node(node: &impl Fn() -> Arc<dyn Bus>) {
    let (a, b, c) = (node(), node(), node());
    let (seen_a, seen_b, seen_c) = (recorder(&a), recorder(&b), recorder(&c));
    a.subscribe(&[room("r1")]).await.unwrap();
    b.subscribe(&[room("r1")]).await.unwrap();
    c.subscribe(&[room("r2")]).await.unwrap();
    a.publish(event("r1", 1)).await.unwrap();
    assert_eq!(wait_for(&seen_a, 1).await.len(), 1, "the publisher's own node receives");
    assert_eq!(wait_for(&seen_b, 1).await.len(), 1, "another subscribed node receives");
    settle().await;
    assert!(seen_c.lock().unwrap().is_empty(), "an unsubscribed node receives nothing");
    assert_eq!(seen_a.lock().unwrap().len(), 1, "at most once per node");
}

pub(crate) async fn preserves_publish_order_per_room(node: &impl Fn() -> Arc<dyn Bus>) {
    let (a, b) = (node(), node());
    let seen = recorder(&b);
    a.set_handler(Arc::new(|_| {}));
    b.subscribe(&[room("room")]).await.unwrap();
    for seq in 1..=500 {
        a.publish(event("room", seq)).await.unwrap();
    }
    let got = wait_for(&seen, 500).await;
    let seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=500).collect::<Vec<_>>());
}

pub(crate) async fn unsubscribe_stops_delivery(node: &impl Fn() -> Arc<dyn Bus>) {
    let a = node();
    let seen = recorder(&a);
    a.subscribe(&[room("r")]).await.unwrap();
    a.publish(event("r", 1)).await.unwrap();
    wait_for(&seen, 1).await;
    a.unsubscribe(&[room("r")]).await.unwrap();
    a.publish(event("r", 2)).await.unwrap();
    settle().await;
    let seqs: Vec<u64> = seen.lock().unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1]);
    a.subscribe(&[room("r")]).await.unwrap();
    a.publish(event("r", 3)).await.unwrap();
    assert_eq!(wait_for(&seen, 2).await.last().map(|e| e.seq), Some(3));
}

pub(crate) async fn events_arrive_intact(node: &impl Fn() -> Arc<dyn Bus>) {
    let (a, b) = (node(), node());
    a.set_handler(Arc::new(|_| {}));
    let seen = recorder(&b);
    b.subscribe(&[room("room-é")]).await.unwrap();
    let sent = BusEvent {
        topic: room("room-é"),
        room: "room-é".into(),
        seq: 7,
        member: Some(("user-1".into(), MemberChange::Removed)),
        origin: Some("session-9".into()),
        payload: Bytes::from_static("{\"op\":\"member\",\"body\":\"✓ ünïcode\"}".as_bytes()),
        published_us: 7,
        control: None,
    };
    a.publish(sent.clone()).await.unwrap();
    let got = wait_for(&seen, 1).await;
    assert_eq!(got, vec![sent]);
    a.ping().await.unwrap();
}

pub(crate) async fn user_topics_are_separate_from_room_topics(node: &impl Fn() -> Arc<dyn Bus>) {
    let (a, b) = (node(), node());
    a.set_handler(Arc::new(|_| {}));
    let seen = recorder(&b);
    b.subscribe(&[Topic::User("u1".into())]).await.unwrap();
    let mut ev = event("r", 3);
    a.publish(ev.clone()).await.unwrap();
    ev.topic = Topic::User("u1".into());
    a.publish(ev.clone()).await.unwrap();
    ev.topic = Topic::User("u2".into());
    a.publish(ev).await.unwrap();
    settle().await;
    let got = wait_for(&seen, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topic, Topic::User("u1".into()));
}

pub(crate) async fn many_topics_subscribe_at_once_and_control_reaches_every_node(
    node: &impl Fn() -> Arc<dyn Bus>,
) {
    let (a, b, c) = (node(), node(), node());
    a.set_handler(Arc::new(|_| {}));
    let (seen_b, seen_c) = (recorder(&b), recorder(&c));
    let rooms: Vec<Topic> = (0..50).map(|i| room(&format!("many-{i}"))).collect();
    let mut topics = rooms.clone();
    topics.push(Topic::Control);
    b.subscribe(&topics).await.unwrap();
    c.subscribe(&[Topic::Control]).await.unwrap();
    for (i, t) in rooms.iter().enumerate() {
        let mut ev = event(&format!("many-{i}"), i as u64 + 1);
        ev.topic = t.clone();
        a.publish(ev).await.unwrap();
    }
    let control = BusEvent {
        topic: Topic::Control,
        room: String::new(),
        seq: 0,
        member: None,
        origin: None,
        payload: Bytes::new(),
        published_us: 1,
        control: Some(Control::EndSessions { user: "u.1 >".into(), session: Some("s".into()) }),
    };
    a.publish(control.clone()).await.unwrap();
    let got_b = wait_for(&seen_b, 51).await;
    assert_eq!(got_b.len(), 51, "every topic of the batch was subscribed");
    assert!(got_b.contains(&control), "order across topics is not promised, delivery is");
    assert_eq!(wait_for(&seen_c, 1).await, vec![control], "control reaches a node with no rooms");
    b.unsubscribe(&rooms).await.unwrap();
    a.publish(event("many-0", 99)).await.unwrap();
    settle().await;
    assert_eq!(seen_b.lock().unwrap().len(), 51, "a batch unsubscribe stops them all");
}

/// A node subscribes and then reads what it missed from the store: an event published by
/// another node after `subscribe` returned must arrive, or it falls between the read and the
/// subscription. A large batch gives a bus that returns before the server has every SUB in
/// place the time to show it.
pub(crate) async fn a_subscription_is_in_place_when_subscribe_returns(node: &impl Fn() -> Arc<dyn Bus>) {
    let (a, b) = (node(), node());
    a.set_handler(Arc::new(|_| {}));
    let seen = recorder(&b);
    for round in 0..5u64 {
        let topics: Vec<Topic> = (0..2_000).map(|i| room(&format!("late-{round}-{i}"))).collect();
        b.subscribe(&topics).await.unwrap();
        let last = format!("late-{round}-1999");
        a.publish(event(&last, round + 1)).await.unwrap();
        let got = wait_for(&seen, round as usize + 1).await;
        assert_eq!(
            got.len(),
            round as usize + 1,
            "round {round}: the event published right after subscribe arrived"
        );
        assert_eq!(got.last().map(|e| e.room.as_str()), Some(last.as_str()));
    }
}
