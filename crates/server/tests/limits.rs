//! The send and join limits over real sockets: the room's rate, duplicate text, join floods and
//! a user's rate across two nodes sharing Redis. Each refuses with its own code and a
//! `retry_after_ms`, and lets the next allowed message through.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{TestServer, external_token, gateway_send, now_secs};
use switchboard_client::Client;
use switchboard_client::protocol::RoomKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_room_refuses_with_room_rate_limited_whoever_sends() {
    let server = TestServer::with(|c| {
        c.room_sends_per_sec = 2;
        c.room_sends_burst = 3;
    })
    .await;
    let (a, _) = server.user("alice").await;
    let (b, bob) = server.user("bob").await;
    let room = a.create_room("r", RoomKind::Private, &[bob.id.as_str()]).await.unwrap().id;
    let other = a.create_room("quiet", RoomKind::Private, &[]).await.unwrap().id;
    for i in 0..3 {
        a.post_message(&room, &format!("a{i}"), &format!("message {i}")).await.unwrap();
    }
    // Bob has sent nothing, but the room has had its burst.
    let mut s = server.session(&b, BTreeMap::new()).await;
    let (code, wait) = gateway_send(&mut s, &room, "b1", "me too").await.unwrap_err();
    assert_eq!(code, "room_rate_limited");
    let wait = wait.expect("says when");
    assert!((1..=500).contains(&wait), "{wait}");
    let rest = b.post_message(&room, "b2", "me too").await.unwrap_err();
    assert_eq!((rest.status(), rest.code()), (Some(429), Some("room_rate_limited")));
    // Another room is not held up, and after the wait the room takes the next message.
    a.post_message(&other, "q1", "elsewhere").await.unwrap();
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    gateway_send(&mut s, &room, "b3", "now then").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_text_again_and_again_is_refused_across_rooms() {
    let server = TestServer::with(|c| {
        c.duplicate_max = 2;
        c.duplicate_window_secs = 60;
    })
    .await;
    let (a, _) = server.user("alice").await;
    let mut rooms = Vec::new();
    for i in 0..3 {
        rooms.push(a.create_room(&format!("r{i}"), RoomKind::Private, &[]).await.unwrap().id);
    }
    let first = a.post_message(&rooms[0], "1", "Buy cheap pills").await.unwrap();
    a.post_message(&rooms[1], "2", "buy  CHEAP pills ").await.unwrap();
    let err = a.post_message(&rooms[2], "3", "buy cheap pills").await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(429), Some("duplicate")));
    // Other text passes, and so do short replies however often they come.
    a.post_message(&rooms[2], "4", "something else").await.unwrap();
    for i in 0..5 {
        a.post_message(&rooms[0], &format!("ok{i}"), "ok").await.unwrap();
    }
    // A retry of a stored message is answered with it, though its text is spent.
    let retry = a.post_message(&rooms[0], "1", "Buy cheap pills").await.unwrap();
    assert_eq!(retry.id, first.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raid_on_a_public_room_is_slowed_and_one_account_cannot_spend_the_budget() {
    // A burst of ten joins (a quarter of the minute's forty).
    let server = TestServer::with(|c| c.room_joins_per_min = 40).await;
    let (owner, _) = server.user("owner").await;
    // Accounts made first, so the joins come faster than the budget refills (one per 1.5 s).
    let mut raiders = Vec::new();
    for i in 0..12 {
        raiders.push(server.user(&format!("raider{i}")).await.0);
    }
    let room = owner.create_room("lobby", RoomKind::Public, &[]).await.unwrap().id;
    // One account leaving and joining: its own budget of three joins runs out first.
    let (churner, churner_user) = server.user("churner").await;
    for _ in 0..2 {
        churner.join(&room).await.unwrap();
        churner.remove_member(&room, &churner_user.id).await.unwrap();
    }
    churner.join(&room).await.unwrap();
    churner.remove_member(&room, &churner_user.id).await.unwrap();
    let err = churner.join(&room).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(429), Some("rate_limited")));
    // Many accounts at once: what is left of the room's burst passes (the churner's refused
    // join spent none of it), then the room refuses.
    let mut joined = 0;
    let mut refused = None;
    for raider in &raiders {
        match raider.join(&room).await {
            Ok(_) => joined += 1,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert_eq!(joined, 7);
    let err = refused.expect("a raid is slowed down");
    assert_eq!((err.status(), err.code()), (Some(429), Some("join_rate_limited")));
    // Joining again while a member costs nothing.
    owner.join(&room).await.unwrap();
}

fn redis_quotas(c: &mut switchboard::config::Config, prefix: &str) {
    c.jwt_external_hs256_secret = Some(SECRET.into());
    c.limits = Some(common::redis_url());
    c.presence_prefix = prefix.to_owned();
    c.user_sends_per_sec = 1;
    c.user_sends_burst = 3;
}

const SECRET: &str = "limits-test-secret-limits-test-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: scripts/test runs it"]
async fn a_users_rate_holds_across_nodes_sharing_redis() {
    let prefix = format!("{}:{}", common::redis_prefix(), uuid::Uuid::now_v7().simple());
    let one = TestServer::with(|c| redis_quotas(c, &prefix)).await;
    let two = TestServer::with(|c| redis_quotas(c, &prefix)).await;
    let token = external_token(SECRET, "alice", now_secs() + 600, None);
    let (a1, a2) =
        (Client::new(one.base.clone()).with_token(&token), Client::new(two.base.clone()).with_token(&token));
    let r1 = a1.create_room("r", RoomKind::Private, &[]).await.unwrap().id;
    let r2 = a2.create_room("r", RoomKind::Private, &[]).await.unwrap().id;
    a1.post_message(&r1, "1", "first").await.unwrap();
    a2.post_message(&r2, "2", "second").await.unwrap();
    a1.post_message(&r1, "3", "third").await.unwrap();
    // Each node alone has let through less than the burst; together they have used it.
    let err = a2.post_message(&r2, "4", "fourth").await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(429), Some("rate_limited")));
    let mut s = two.session(&a2, BTreeMap::new()).await;
    let (code, wait) = gateway_send(&mut s, &r2, "5", "fifth").await.unwrap_err();
    assert_eq!(code, "rate_limited");
    tokio::time::sleep(Duration::from_millis(wait.expect("says when") + 50)).await;
    gateway_send(&mut s, &r2, "6", "sixth").await.unwrap();
}
