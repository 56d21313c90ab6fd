//! Several nodes sharing PostgreSQL and NATS, in one process (each a full server on its own
//! port): cross-node delivery and order, idempotency across nodes, removals that reach other
//! nodes, and the relay moving to another node when its node stops. The kill -9 cases with real
//! processes are in `process.rs`.
//!
//! They need the real engines: `#[ignore]`d in a plain `cargo test`; scripts/test runs them with
//! `SWITCHBOARD_TEST_POSTGRES`, `SWITCHBOARD_TEST_NATS` and `SWITCHBOARD_TEST_REDIS` set.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{TestServer, expect_frame, expect_none};
use switchboard_client::protocol::{MemberChange, RoomKind, ServerFrame, Status};
use switchboard_client::{Client, Session, SessionConfig};

const NEEDS: &str = "needs PostgreSQL, NATS and Redis: scripts/test runs it";

/// `n` nodes on one fresh schema and one fresh subject prefix.
struct Cluster {
    nodes: Vec<TestServer>,
    _schema: common::PgSchema,
}

impl Cluster {
    async fn start(n: usize) -> Cluster {
        let schema = common::PgSchema::create().await;
        let prefix = format!("{}-{}", common::nats_prefix(), uuid_simple());
        let secret = "cluster-test-secret-0123456789abcdef0123456789".to_owned();
        let presence_prefix = common::redis_prefix();
        let mut nodes = Vec::new();
        for i in 0..n {
            let (url, prefix, secret) = (schema.url.clone(), prefix.clone(), secret.clone());
            let presence_prefix = presence_prefix.clone();
            nodes.push(
                TestServer::with(move |c| {
                    c.store = Some(url);
                    c.bus = common::nats_url();
                    c.nats_prefix = prefix;
                    c.jwt_secret = Some(secret);
                    c.node_id = Some(format!("node-{i}"));
                    c.lease_ttl_ms = 600;
                    c.position_check_ms = 300;
                    c.pg_pool_size = 6;
                    c.presence = common::redis_url();
                    c.presence_prefix = presence_prefix;
                    c.presence_grace_ms = 300;
                    c.presence_interval_ms = 50;
                })
                .await,
            );
        }
        Cluster { nodes, _schema: schema }
    }

    /// A client of `node` for a user registered through node 0 (tokens work on every node).
    async fn user(&self, node: usize, name: &str) -> (Client, String) {
        let (c, u) = self.nodes[0].user(name).await;
        (self.nodes[node].client().with_token(c.token().unwrap()), u.id)
    }

    async fn session(&self, node: usize, c: &Client) -> Session {
        self.nodes[node].session(c, BTreeMap::new()).await
    }
}

fn uuid_simple() -> String {
    format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}

/// Reads timeline frames of `room` until `seq` `upto`, returning the seqs seen.
async fn read_until(s: &mut Session, room: &str, upto: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    while seen.last().copied().unwrap_or(0) < upto {
        let f = expect_frame(s, |f| f.timeline_pos().is_some_and(|(r, _)| r == room)).await;
        seen.push(f.timeline_pos().unwrap().1);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL, NATS and Redis: scripts/test runs it"]
async fn members_on_three_nodes_see_every_message_once_in_seq_order() {
    let _ = NEEDS;
    let cluster = Cluster::start(3).await;
    let (alice, _) = cluster.user(0, "alice").await;
    let (bob, bob_id) = cluster.user(1, "bob").await;
    let (carol, carol_id) = cluster.user(2, "carol").await;
    let room = alice.create_room("all", RoomKind::Private, &[&bob_id, &carol_id]).await.unwrap();
    let mut readers = vec![
        cluster.session(0, &alice).await,
        cluster.session(1, &bob).await,
        cluster.session(2, &carol).await,
    ];
    // Senders on every node at once.
    let mut pumps = Vec::new();
    for (node, who) in [(0, alice.clone()), (1, bob.clone()), (2, carol.clone())] {
        let s = cluster.session(node, &who).await;
        let room = room.id.clone();
        pumps.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..40 {
                acked.push(s.send(&room, &format!("n{node}-{i}")).await.expect("acked").seq);
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for p in pumps {
        acked.extend(p.await.unwrap());
    }
    acked.sort_unstable();
    let first = room.last_seq + 1;
    let last = room.last_seq + 120;
    assert_eq!(acked, (first..=last).collect::<Vec<_>>(), "a gap-free timeline across nodes");
    for r in &mut readers {
        let seen = read_until(r, &room.id, last).await;
        assert_eq!(seen, (first..=last).collect::<Vec<_>>(), "every message once, in seq order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL, NATS and Redis: scripts/test runs it"]
async fn one_client_msg_id_sent_to_two_nodes_at_once_is_one_message() {
    let cluster = Cluster::start(2).await;
    let (alice0, _) = cluster.user(0, "alice").await;
    let alice1 = cluster.nodes[1].client().with_token(alice0.token().unwrap());
    let room = alice0.create_room("r", RoomKind::Private, &[]).await.unwrap();
    let (s0, s1) = (cluster.session(0, &alice0).await, cluster.session(1, &alice1).await);
    for i in 0..20 {
        let key = format!("same-{i}");
        let (a, b) =
            tokio::join!(s0.send_with_id(&room.id, &key, "hi"), s1.send_with_id(&room.id, &key, "hi"));
        let (a, b) = (a.expect("ack from node 0"), b.expect("ack from node 1"));
        assert_eq!((a.id.as_str(), a.seq), (b.id.as_str(), b.seq), "both acks name one message");
        // And over REST on both nodes at once.
        let key = format!("rest-{i}");
        let (a, b) = tokio::join!(
            alice0.post_message(&room.id, &key, "hi"),
            alice1.post_message(&room.id, &key, "hi")
        );
        assert_eq!(a.unwrap().id, b.unwrap().id);
    }
    let history = alice0
        .history(
            &room.id,
            &switchboard_client::protocol::rest::HistoryQuery { limit: Some(100), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(history.len(), 40, "forty keys, forty messages");
    assert!(history.windows(2).all(|w| w[1].seq == w[0].seq + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL, NATS and Redis: scripts/test runs it"]
async fn a_member_removed_on_one_node_stops_receiving_on_another_at_once() {
    let cluster = Cluster::start(2).await;
    let (alice, _) = cluster.user(0, "alice").await;
    let (bob, bob_id) = cluster.user(1, "bob").await;
    let room = alice.create_room("r", RoomKind::Private, &[&bob_id]).await.unwrap();
    let mut bob_live = cluster.session(1, &bob).await;
    alice.post_message(&room.id, "k0", "before").await.unwrap();
    expect_frame(&mut bob_live, |f| matches!(f, ServerFrame::Message(m) if m.body == "before")).await;
    let removed_at = std::time::Instant::now();
    alice.remove_member(&room.id, &bob_id).await.unwrap();
    expect_frame(
        &mut bob_live,
        |f| matches!(f, ServerFrame::Room { change: MemberChange::Removed, room: r, .. } if r.id == room.id),
    )
    .await;
    assert!(removed_at.elapsed() < Duration::from_secs(1), "the removal reached node 1 within a second");
    alice.post_message(&room.id, "k1", "after").await.unwrap();
    expect_none(&mut bob_live, 500, |f| matches!(f, ServerFrame::Message(_))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL, NATS and Redis: scripts/test runs it"]
async fn the_relay_moves_to_another_node_when_its_node_stops() {
    let mut cluster = Cluster::start(2).await;
    let (alice, _) = cluster.user(1, "alice").await;
    let (bob, bob_id) = cluster.user(1, "bob").await;
    let room = alice.create_room("r", RoomKind::Private, &[&bob_id]).await.unwrap();
    let mut bob_live = cluster.session(1, &bob).await;
    alice.post_message(&room.id, "k0", "first").await.unwrap();
    expect_frame(&mut bob_live, |f| matches!(f, ServerFrame::Message(m) if m.body == "first")).await;
    // Stop both nodes in turn except the one bob is on: whichever held the relay, node 1 ends
    // up holding it and goes on publishing from the saved cursor.
    let node0 = cluster.nodes.remove(0);
    node0.stop().await;
    for i in 0..5 {
        alice.post_message(&room.id, &format!("k{}", i + 1), &format!("after {i}")).await.unwrap();
    }
    for i in 0..5 {
        let want = format!("after {i}");
        expect_frame(&mut bob_live, |f| matches!(f, ServerFrame::Message(m) if m.body == want)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL, NATS and Redis: scripts/test runs it"]
async fn a_sign_out_on_one_node_closes_sessions_on_another() {
    let cluster = Cluster::start(2).await;
    let (alice, _) = cluster.user(0, "alice").await;
    let cfg = SessionConfig {
        url: cluster.nodes[1].ws_url(),
        token: alice.token().unwrap().to_owned(),
        since: BTreeMap::new(),
        reconnect: false,
    };
    let mut far = Session::connect(cfg).await.unwrap();
    alice.logout_everywhere().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match tokio::time::timeout_at(deadline, far.next_event()).await {
            Ok(None) => break,
            Ok(Some(switchboard_client::SessionEvent::Disconnected { code })) => {
                assert_eq!(code, Some(4003));
                break;
            }
            Ok(Some(_)) => continue,
            Err(_) => panic!("the session on the other node stayed open"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL, NATS and Redis: scripts/test runs it"]
async fn two_devices_on_two_nodes_are_one_presence_for_a_watcher_on_a_third() {
    let cluster = Cluster::start(3).await;
    let (a0, alice) = cluster.user(0, "alice").await;
    let a1 = cluster.nodes[1].client().with_token(a0.token().unwrap());
    let (w, watcher) = cluster.user(2, "watcher").await;
    let (s, _) = cluster.user(2, "stranger").await;
    a0.create_room("r", RoomKind::Private, &[watcher.as_str()]).await.unwrap();
    let mut watching = cluster.session(2, &w).await;
    let is = |st: Status| {
        let alice = alice.clone();
        move |f: &ServerFrame| matches!(f, ServerFrame::Presence(p) if p.user == alice && p.status == st)
    };
    let phone = cluster.session(0, &a0).await;
    expect_frame(&mut watching, is(Status::Online)).await;
    let laptop = cluster.session(1, &a1).await;
    phone.close();
    expect_none(&mut watching, 1200, |f| matches!(f, ServerFrame::Presence(p) if p.user == alice)).await;
    assert_eq!(w.presence(&alice).await.unwrap().status, Status::Online, "still online through node 1");
    laptop.close();
    let off = expect_frame(&mut watching, is(Status::Offline)).await;
    assert!(matches!(off, ServerFrame::Presence(p) if p.last_seen.is_some()));
    // Another node, the same rule: a stranger learns nothing.
    assert_eq!(s.presence(&alice).await.unwrap_err().status(), Some(404));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL, NATS and Redis: scripts/test runs it"]
async fn a_ban_on_one_node_cuts_the_users_socket_on_another_within_a_second() {
    let cluster = Cluster::start(2).await;
    let (owner, _) = cluster.user(0, "owner").await;
    let (member, member_id) = cluster.user(1, "member").await;
    let room = owner.create_room("r", RoomKind::Public, &[member_id.as_str()]).await.unwrap().id;
    let mut s = cluster.session(1, &member).await;
    let started = std::time::Instant::now();
    owner.sanction(&room, "bans", &member_id, Some(3600), None).await.unwrap();
    expect_frame(
        &mut s,
        |f| matches!(f, ServerFrame::Room { room: r, change: MemberChange::Removed, .. } if r.id == room),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(1), "cut within a second across nodes");
    owner.post_message(&room, "after", "not for the banned").await.unwrap();
    expect_none(&mut s, 500, |f| f.timeline_pos().is_some_and(|(r, _)| r == room)).await;
    assert_eq!(member.join(&room).await.unwrap_err().code(), Some("banned"));
}
