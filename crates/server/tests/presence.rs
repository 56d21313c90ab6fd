//! Presence, typing and read receipts over real sockets: devices, strangers, blocks, idle time,
//! large rooms, and floods that must not cost anyone their connection.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{
    Raw, RawEvent, TestServer, expect_frame, expect_none, external_token, now_secs, raw, raw_error_code,
    raw_hello, raw_next,
};
use futures_util::{SinkExt, StreamExt};
use switchboard::config::Config;
use switchboard_client::protocol::{ClientFrame, Presence, RoomKind, ServerFrame, Status};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "presence-test-secret-0123456789abcdef";

/// Settings that make presence quick to observe: a short grace and throttle.
fn quick(c: &mut Config) {
    c.presence_grace_ms = 300;
    c.presence_interval_ms = 50;
    c.presence_count_ms = 200;
    c.jwt_external_hs256_secret = Some(SECRET.into());
    c.max_connections_per_ip = 0;
}

fn presence_of<'a>(f: &'a ServerFrame, user: &str) -> Option<&'a Presence> {
    match f {
        ServerFrame::Presence(p) if p.user == user => Some(p),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_are_one_presence_and_a_watcher_sees_exactly_online_then_offline() {
    let server = TestServer::with(quick).await;
    let (a, alice) = server.user("alice").await;
    let (w, watcher) = server.user("watcher").await;
    let room = a.create_room("r", RoomKind::Private, &[watcher.id.as_str()]).await.unwrap();
    let mut watching = server.session(&w, BTreeMap::new()).await;
    let phone = server.session(&a, BTreeMap::new()).await;
    let got = expect_frame(&mut watching, |f| presence_of(f, &alice.id).is_some()).await;
    assert_eq!(presence_of(&got, &alice.id).unwrap().status, Status::Online);
    let mut laptop = server.session(&a, BTreeMap::new()).await;
    // The laptop's ready already says alice is online (the phone made her so).
    // A status text set on the phone reaches the laptop (her own other device) and the watcher.
    phone
        .send_frame(&ClientFrame::Status {
            status: switchboard_client::protocol::ChosenStatus::Online,
            text: Some("on a train".into()),
        })
        .unwrap();
    let mine = expect_frame(&mut laptop, |f| presence_of(f, &alice.id).is_some()).await;
    assert_eq!(presence_of(&mine, &alice.id).unwrap().text.as_deref(), Some("on a train"));
    let theirs = expect_frame(&mut watching, |f| presence_of(f, &alice.id).is_some()).await;
    assert_eq!(presence_of(&theirs, &alice.id).unwrap().status, Status::Online);
    phone.close();
    // One of two devices closing is no change, past the grace too.
    expect_none(&mut watching, 800, |f| presence_of(f, &alice.id).is_some()).await;
    assert_eq!(w.presence(&alice.id).await.unwrap().status, Status::Online);
    laptop.close();
    let gone = expect_frame(&mut watching, |f| presence_of(f, &alice.id).is_some()).await;
    let gone = presence_of(&gone, &alice.id).unwrap();
    assert_eq!(gone.status, Status::Offline);
    assert!(gone.last_seen.is_some(), "offline comes with last_seen");
    expect_none(&mut watching, 500, |f| presence_of(f, &alice.id).is_some()).await;
    let rest = w.presence(&alice.id).await.unwrap();
    assert_eq!((rest.status, rest.text.as_deref()), (Status::Offline, Some("on a train")));
    // The room's member count is in the listing.
    assert_eq!(w.room(&room.id).await.unwrap().members, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_never_learns_presence_over_the_gateway_or_rest() {
    let server = TestServer::with(quick).await;
    let (a, alice) = server.user("alice").await;
    let (s, stranger) = server.user("stranger").await;
    let (f, friend) = server.user("friend").await;
    a.create_room("ours", RoomKind::Private, &[friend.id.as_str()]).await.unwrap();
    // The stranger is in a public room, and so is nobody else: nothing shared with alice.
    s.create_room("lonely", RoomKind::Public, &[]).await.unwrap();
    let mut watching = server.session(&s, BTreeMap::new()).await;
    let mut friend_on = server.session(&f, BTreeMap::new()).await;
    let alice_on = server.session(&a, BTreeMap::new()).await;
    expect_frame(&mut friend_on, |fr| presence_of(fr, &alice.id).is_some()).await;
    alice_on.close();
    expect_frame(&mut friend_on, |fr| {
        presence_of(fr, &alice.id).is_some_and(|p| p.status == Status::Offline)
    })
    .await;
    expect_none(&mut watching, 300, |fr| presence_of(fr, &alice.id).is_some()).await;
    assert_eq!(s.presence(&alice.id).await.unwrap_err().status(), Some(404));
    assert_eq!(s.presence("no-such-user").await.unwrap_err().status(), Some(404), "the same as unknown");
    assert!(s.presence_of(&[alice.id.as_str(), friend.id.as_str()]).await.unwrap().is_empty());
    let own = s.presence_of(&[stranger.id.as_str(), alice.id.as_str()]).await.unwrap();
    assert_eq!(own.iter().map(|p| p.user.as_str()).collect::<Vec<_>>(), vec![stranger.id.as_str()]);
    // The friend sees both in a batch, in the order asked.
    let both = f.presence_of(&[alice.id.as_str(), friend.id.as_str()]).await.unwrap();
    assert_eq!(both.len(), 2);
    // Nor does the stranger's ready carry alice.
    let mut raw_s = raw(&server).await;
    raw_s
        .send(Message::Text(serde_json::json!({"op":"hello","token": s.token().unwrap()}).to_string().into()))
        .await
        .unwrap();
    match raw_next(&mut raw_s).await {
        RawEvent::Frame(ServerFrame::Ready { presence, .. }) => {
            assert!(presence.iter().all(|p| p.user != alice.id), "{presence:?}");
            assert!(presence.iter().any(|p| p.user == stranger.id), "their own presence");
        }
        other => panic!("expected ready, got {other:?}"),
    }
    // Bad batch input is refused with a code.
    let many: Vec<String> = (0..201).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(s.presence_of(&refs).await.unwrap_err().code(), Some("invalid_request"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dm_shares_presence_once_both_took_part_and_never_across_a_block() {
    let server = TestServer::with(quick).await;
    let (a, alice) = server.user("alice").await;
    let (b, bob) = server.user("bob").await;
    // Bob opens a dm with alice, a stranger: that alone shows him nothing of her.
    let dm = b.create_room("", RoomKind::Dm, &[alice.id.as_str()]).await.unwrap();
    let mut watching = server.session(&b, BTreeMap::new()).await;
    let early = server.session(&a, BTreeMap::new()).await;
    expect_none(&mut watching, 500, |f| presence_of(f, &alice.id).is_some()).await;
    assert_eq!(b.presence(&alice.id).await.unwrap_err().status(), Some(404));
    assert_eq!(a.presence(&bob.id).await.unwrap_err().status(), Some(404));
    early.close();
    // Gone (past the grace and a sweep) before she comes back, so coming back is a change.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // He writes, she reads: both took part, and presence flows.
    let hello = b.post_message(&dm.id, "k1", "hi alice").await.unwrap();
    a.mark_read(&dm.id, hello.seq).await.unwrap();
    let first = server.session(&a, BTreeMap::new()).await;
    expect_frame(&mut watching, |f| presence_of(f, &alice.id).is_some()).await;
    first.close();
    expect_frame(&mut watching, |f| presence_of(f, &alice.id).is_some_and(|p| p.status == Status::Offline))
        .await;
    b.block(&alice.id).await.unwrap();
    let _again = server.session(&a, BTreeMap::new()).await;
    expect_none(&mut watching, 600, |f| presence_of(f, &alice.id).is_some()).await;
    assert_eq!(b.presence(&alice.id).await.unwrap_err().status(), Some(404));
    assert_eq!(a.presence(&bob.id).await.unwrap_err().status(), Some(404), "both ways");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_time_makes_away_activity_brings_online_and_bad_status_input_is_refused() {
    let server = TestServer::with(|c| {
        quick(c);
        c.heartbeat_ms = 200;
        c.presence_away_after_ms = 600;
    })
    .await;
    let (a, alice) = server.user("alice").await;
    let (w, watcher) = server.user("watcher").await;
    let room = a.create_room("r", RoomKind::Private, &[watcher.id.as_str()]).await.unwrap();
    let mut watching = server.session(&w, BTreeMap::new()).await;
    let mut ws = raw(&server).await;
    raw_hello(&mut ws, a.token().unwrap()).await;
    let id = alice.id.clone();
    let status = |s: Status| {
        let id = id.clone();
        move |f: &ServerFrame| presence_of(f, &id).is_some_and(|p| p.status == s)
    };
    expect_frame(&mut watching, status(Status::Online)).await;
    // Pings are no activity: idle, then away.
    let pinger = async {
        for _ in 0..10 {
            ws.send(Message::Text(r#"{"op":"ping"}"#.into())).await.unwrap();
            while !matches!(raw_next(&mut ws).await, RawEvent::Frame(ServerFrame::Pong)) {}
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (_, away) = tokio::join!(pinger, expect_frame(&mut watching, status(Status::Away)));
    assert!(presence_of(&away, &alice.id).unwrap().last_seen.is_none());
    let typing = serde_json::json!({"op": "typing", "room": room.id}).to_string();
    ws.send(Message::Text(typing.clone().into())).await.unwrap();
    expect_frame(&mut watching, status(Status::Online)).await;
    ws.send(Message::Text(r#"{"op":"status","status":"away","text":"lunch"}"#.into())).await.unwrap();
    let chosen = expect_frame(&mut watching, status(Status::Away)).await;
    assert_eq!(presence_of(&chosen, &alice.id).unwrap().text.as_deref(), Some("lunch"));
    for bad in [
        r#"{"op":"status","status":"offline"}"#.to_owned(),
        r#"{"op":"status"}"#.to_owned(),
        r#"{"op":"status","status":"away","text":"a\u202eb"}"#.to_owned(),
        serde_json::json!({"op":"status","status":"away","text":"x".repeat(101)}).to_string(),
        r#"{"op":"status","status":"away","text":7}"#.to_owned(),
    ] {
        assert_eq!(raw_error_code(&mut ws, &bad).await, "invalid_request", "{bad}");
    }
    // Chosen away stays away through activity; online again only when the client says so.
    ws.send(Message::Text(typing.clone().into())).await.unwrap();
    expect_none(&mut watching, 300, status(Status::Online)).await;
    ws.send(Message::Text(r#"{"op":"status","status":"online","text":""}"#.into())).await.unwrap();
    let back = expect_frame(&mut watching, status(Status::Online)).await;
    assert_eq!(presence_of(&back, &alice.id).unwrap().text, None, "an empty text clears it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_markers_go_only_where_they_are_shown_and_large_rooms_get_counts() {
    let server = TestServer::with(|c| {
        quick(c);
        c.presence_room_limit = 2;
    })
    .await;
    let (a, alice) = server.user("alice").await;
    let (b, bob) = server.user("bob").await;
    let (c, carol) = server.user("carol").await;
    let small = a.create_room("small", RoomKind::Private, &[bob.id.as_str()]).await.unwrap();
    let big = a.create_room("big", RoomKind::Private, &[bob.id.as_str(), carol.id.as_str()]).await.unwrap();
    a.post_message(&small.id, "s1", "hi").await.unwrap();
    a.post_message(&big.id, "b1", "hi").await.unwrap();
    let mut bobs = server.session(&b, BTreeMap::new()).await;
    let mut alice_other = server.session(&a, BTreeMap::new()).await;
    let read =
        |room: String| move |f: &ServerFrame| matches!(f, ServerFrame::Read { room: r, .. } if *r == room);
    // In the small room bob sees alice's marker; in the big one only her own devices do.
    b.mark_read(&small.id, 1).await.unwrap();
    expect_frame(&mut alice_other, read(small.id.clone())).await;
    b.mark_read(&big.id, 1).await.unwrap();
    expect_frame(&mut bobs, read(big.id.clone())).await;
    expect_none(&mut alice_other, 400, read(big.id.clone())).await;
    let alice_ws = server.session(&a, BTreeMap::new()).await;
    alice_ws.send_frame(&ClientFrame::Read { room: big.id.clone(), seq: 4 }).unwrap();
    expect_frame(&mut alice_other, read(big.id.clone())).await;
    expect_none(&mut bobs, 400, read(big.id.clone())).await;
    // The big room gets counts, not per-member presence: carol arriving moves it.
    let carol_on = server.session(&c, BTreeMap::new()).await;
    let count =
        expect_frame(&mut bobs, |f| matches!(f, ServerFrame::Online { room, count: 3 } if *room == big.id))
            .await;
    assert!(matches!(count, ServerFrame::Online { .. }));
    let listed = b.rooms().await.unwrap();
    let big_listed = listed.iter().find(|r| r.id == big.id).unwrap();
    assert_eq!((big_listed.members, big_listed.online), (Some(3), Some(3)));
    assert_eq!(listed.iter().find(|r| r.id == small.id).unwrap().online, None, "small rooms have presence");
    assert_eq!(b.room(&big.id).await.unwrap().online, Some(3));
    // Someone added to the large room gets its count at once, not only when it next moves.
    let (d, dave) = server.user("dave").await;
    let mut daves = server.session(&d, BTreeMap::new()).await;
    a.add_member(&big.id, &dave.id).await.unwrap();
    expect_frame(&mut daves, |f| matches!(f, ServerFrame::Online { room, count: 4 } if *room == big.id))
        .await;
    carol_on.close();
    expect_frame(&mut bobs, |f| matches!(f, ServerFrame::Online { room, count: 3 } if *room == big.id)).await;
    // Member lists carry read markers where they are shown, so "Seen" survives a reload.
    let small_members = a.members(&small.id).await.unwrap().members;
    assert!(small_members.iter().all(|m| m.read_seq.is_some()));
    assert!(a.members(&big.id).await.unwrap().members.iter().all(|m| m.read_seq.is_none()));
    // Bob still sees carol through REST (they share the big room), not per change.
    assert_eq!(b.presence(&carol.id).await.unwrap().status, Status::Offline);
    drop((alice, daves));
}

/// `n` members of one public room, each with a token of its own (external users: no password
/// hashing), joined over REST.
async fn big_room(server: &TestServer, n: usize) -> (String, Vec<(String, String)>) {
    let exp = now_secs() + 3600;
    let owner = external_token(SECRET, "owner", exp, None);
    let room = server.client().with_token(&owner).create_room("big", RoomKind::Public, &[]).await.unwrap().id;
    let members: Vec<(String, String)> = (0..n)
        .map(|i| (format!("m{i:05}"), external_token(SECRET, &format!("m{i:05}"), exp, None)))
        .collect();
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut joins = Vec::new();
    for (_, token) in &members {
        let (c, room, sem) = (server.client().with_token(token), room.clone(), sem.clone());
        joins.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            c.join(&room).await.unwrap();
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
    (room, members)
}

/// Connects and says hello on many raw sockets at once.
async fn connect_all(server: &TestServer, tokens: &[(String, String)]) -> Vec<Raw> {
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for (_, token) in tokens {
        let (url, token, sem) = (server.ws_url(), token.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            let mut ws = tokio_tungstenite::connect_async(url).await.expect("ws connects").0;
            raw_hello(&mut ws, &token).await;
            ws
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Reads every socket in the background, counting frames whose text holds all of `needles`,
/// and closes with 4010 (or any close) as failures.
struct Readers {
    counts: Vec<Arc<AtomicU64>>,
    closed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Readers {
    /// `delay` per frame makes a slow reader; frames with `keep` in them are kept, in order.
    fn start(sockets: Vec<Raw>, needles: Vec<String>, delay: Duration, keep: Option<String>) -> Readers {
        let closed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut counts = Vec::new();
        let mut tasks = Vec::new();
        for mut ws in sockets {
            let count = Arc::new(AtomicU64::new(0));
            counts.push(count.clone());
            let (needles, keep, closed, stop) = (needles.clone(), keep.clone(), closed.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut kept = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
                        Err(_) => continue,
                        Ok(Some(Ok(Message::Text(t)))) => {
                            if needles.iter().all(|n| t.contains(n.as_str())) {
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                            if keep.as_ref().is_some_and(|k| t.contains(k.as_str())) {
                                kept.push(t.to_string());
                            }
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                        }
                        Ok(Some(Ok(_))) => {}
                        Ok(Some(Err(_)) | None) => {
                            closed.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
                kept
            }));
        }
        Readers { counts, closed, stop, tasks }
    }

    async fn finish(self) -> (Vec<u64>, u64, Vec<Vec<String>>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut kept = Vec::new();
        for t in self.tasks {
            kept.push(t.await.unwrap());
        }
        (
            self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            self.closed.load(Ordering::Relaxed),
            kept,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_flapping_in_a_room_of_2000_reaches_each_member_a_handful_of_times() {
    let server = TestServer::with(|c| {
        quick(c);
        c.presence_grace_ms = 2_000;
        c.presence_interval_ms = 1_000;
        c.presence_room_limit = 5_000;
    })
    .await;
    let (room, members) = big_room(&server, 2000).await;
    let (flapper, watchers) = members.split_first().unwrap();
    let sockets = connect_all(&server, watchers).await;
    let needles = vec!["\"op\":\"presence\"".to_owned(), format!("\"user\":\"{}\"", flapper.0)];
    let readers = Readers::start(sockets, needles, Duration::ZERO, None);
    // Everyone's arrival has gone out (and been read) before the flapping starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for _ in 0..20 {
        let mut ws = tokio_tungstenite::connect_async(server.ws_url()).await.unwrap().0;
        raw_hello(&mut ws, &flapper.1).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        drop(ws);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (counts, closed, _) = readers.finish().await;
    assert_eq!(closed, 0, "nobody was cut off");
    let most = counts.iter().max().copied().unwrap_or(0);
    let got = counts.iter().filter(|c| **c >= 1).count();
    assert!(most <= 3, "at most a handful of frames per member, got {most}");
    assert_eq!(got, counts.len(), "every member heard the flapper come online");
    drop(room);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_of_2000_over_the_limit_gets_a_few_counts_that_end_right() {
    let server = TestServer::with(|c| {
        quick(c);
        c.presence_room_limit = 100;
        c.presence_count_ms = 1_000;
    })
    .await;
    let (room, members) = big_room(&server, 2000).await;
    let (last, rest) = members.split_last().unwrap();
    let early = connect_all(&server, &rest[..1]).await;
    let needles = vec!["\"op\":\"online\"".to_owned()];
    let watch = Readers::start(
        early,
        vec!["\"op\":\"presence\"".to_owned()],
        Duration::ZERO,
        Some("\"op\":\"online\"".into()),
    );
    let sockets = connect_all(&server, &rest[1..]).await;
    let readers = Readers::start(sockets, needles, Duration::ZERO, None);
    let mut ws = tokio_tungstenite::connect_async(server.ws_url()).await.unwrap().0;
    raw_hello(&mut ws, &last.1).await;
    // However long a loaded machine takes, the count settles at 2,000; then the next count
    // (every second here) pushes it.
    let rest = server.client().with_token(&last.1);
    for _ in 0..300 {
        if rest.room(&room).await.unwrap().online == Some(2000) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (presence_frames, closed, kept) = watch.finish().await;
    let (counts, closed_too, _) = readers.finish().await;
    assert_eq!(closed + closed_too, 0);
    assert_eq!(presence_frames[0], 0, "no per-member presence in a large room");
    let seen = &kept[0];
    assert!(!seen.is_empty() && seen.len() <= 10, "a few counts, got {}", seen.len());
    let final_count: serde_json::Value = serde_json::from_str(seen.last().unwrap()).unwrap();
    assert_eq!(final_count["count"], 2000, "the last count is right: {final_count}");
    assert_eq!(final_count["room"], room.as_str());
    assert!(counts.iter().all(|c| *c <= 10), "each member got a few counts at most");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_typists_flooding_2000_slow_readers_cut_nobody_and_messages_arrive_in_order() {
    let server = TestServer::with(|c| {
        quick(c);
        c.send_queue = 64;
        c.typing_interval_ms = 0;
        c.rate_per_sec = 200;
        c.rate_burst = 200;
    })
    .await;
    let (room, members) = big_room(&server, 2000).await;
    let (typists, readers_tokens) = members.split_at(20);
    let sockets = connect_all(&server, readers_tokens).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let readers = Readers::start(
        sockets,
        vec!["\"op\":\"message\"".into()],
        Duration::from_millis(2),
        Some("\"op\":\"message\"".into()),
    );
    let typing_sockets = connect_all(&server, typists).await;
    let typing = serde_json::json!({"op": "typing", "room": room}).to_string();
    let mut floods = Vec::new();
    for (i, mut ws) in typing_sockets.into_iter().enumerate() {
        let typing = typing.clone();
        let room = room.clone();
        floods.push(tokio::spawn(async move {
            for n in 0..60 {
                ws.send(Message::Text(typing.clone().into())).await.unwrap();
                if i == 0 && n % 2 == 0 {
                    let send = serde_json::json!({"op":"send","room": room,"client_msg_id": format!("k{n}"),"body": format!("msg {n}")});
                    ws.send(Message::Text(send.to_string().into())).await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ws
        }));
    }
    let mut keep = Vec::new();
    for f in floods {
        keep.push(f.await.unwrap());
    }
    // Slow readers catch up (however long a loaded machine makes that take).
    for _ in 0..600 {
        if readers.counts.iter().all(|c| c.load(Ordering::Relaxed) >= 30)
            || readers.closed.load(Ordering::Relaxed) > 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, closed, kept) = readers.finish().await;
    assert_eq!(closed, 0, "nobody was closed because of typing");
    for (i, msgs) in kept.iter().enumerate() {
        let bodies: Vec<u64> = msgs
            .iter()
            .map(|t| serde_json::from_str::<serde_json::Value>(t).unwrap()["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(bodies.len(), 30, "reader {i} got every message");
        assert!(bodies.windows(2).all(|w| w[0] + 1 == w[1]), "reader {i}: in order, gap-free: {bodies:?}");
    }
    drop(keep);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_sent_right_before_closing_is_not_lost() {
    let server = TestServer::with(quick).await;
    let (a, alice) = server.user("alice").await;
    let (w, watcher) = server.user("watcher").await;
    a.create_room("r", RoomKind::Private, &[watcher.id.as_str()]).await.unwrap();
    for i in 0..10 {
        let mut ws = raw(&server).await;
        raw_hello(&mut ws, a.token().unwrap()).await;
        let status = serde_json::json!({"op": "status", "status": "online", "text": format!("text {i}")});
        ws.send(Message::Text(status.to_string().into())).await.unwrap();
        ws.close(None).await.unwrap();
        drop(ws);
        // The text outlives the connection; the presence lands before the disconnect, so the
        // user goes offline after the grace, not a TTL later.
        let mut landed = false;
        for _ in 0..50 {
            let p = w.presence(&alice.id).await.unwrap();
            if p.text.as_deref() == Some(format!("text {i}").as_str()) && p.status == Status::Offline {
                landed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(landed, "round {i}: the text was kept and the user went offline after the grace");
    }
}
