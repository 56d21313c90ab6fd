//! What a stranger or a careless client can make the server do, black-box over real sockets:
//! each test reproduces one finding of the abuse review (issue 8) and fails without its fix.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{RawEvent, TestServer, external_token, now_secs, raw, raw_close_code, raw_hello, raw_next};
use futures_util::SinkExt;
use switchboard_client::protocol::{AddPolicy, RoomKind, ServerFrame};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const PASSWORD: &str = "correct horse battery";

fn addr(server: &TestServer) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// A REST client whose connections come from `ip` (any 127.0.0.0/8 address is loopback).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(ip.parse::<IpAddr>().ok()).build().unwrap()
}

async fn login(http: &reqwest::Client, server: &TestServer, user: &str, password: &str) -> reqwest::Response {
    http.post(format!("{}/v1/sessions", server.base))
        .json(&serde_json::json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap()
}

async fn error_of(resp: reqwest::Response) -> (u16, Option<String>, String, Option<u64>) {
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
    (status, retry, code, body["error"]["retry_after_ms"].as_u64())
}

/// Reads from a raw socket until the server closes it; returns what it sent and how long it
/// took, or `None` if it was still open after `limit`.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> Option<(Vec<u8>, Duration)> {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(tokio::time::Instant::from_std(started + limit), stream.read(&mut buf))
            .await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((got, started.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

// ---- 1. password hashing has a budget ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_is_refused_fast_past_the_hashing_queue_and_others_keep_sending() {
    let server = TestServer::with(|c| {
        c.hash_threads = 1;
        c.hash_queue = 2;
    })
    .await;
    let (alice, _) = server.user("alice").await;
    let room = alice.create_room("r", RoomKind::Private, &[]).await.unwrap();
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut flood = Vec::new();
    for i in 0..40 {
        let (http, base) = (http.clone(), server.base.clone());
        flood.push(tokio::spawn(async move {
            let resp = http
                .post(format!("{base}/v1/sessions"))
                .json(&serde_json::json!({"username": format!("nobody{i}"), "password": "wrong password"}))
                .send()
                .await
                .unwrap();
            error_of(resp).await
        }));
    }
    // While the flood runs, another user's sends are answered.
    for i in 0..10 {
        alice.post_message(&room.id, &format!("during-{i}"), "still here").await.unwrap();
    }
    let mut busy = 0;
    for f in flood {
        let (status, retry, code, _) = f.await.unwrap();
        match status {
            401 => assert_eq!(code, "invalid_credentials"),
            503 => {
                assert_eq!(code, "unavailable");
                assert_eq!(retry.as_deref(), Some("1"), "503 says when to retry");
                busy += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(busy > 0, "past one thread and a queue of two, callers are turned away");
    assert!(started.elapsed() < Duration::from_secs(30), "nobody waits without end");
}

// ---- 2. every connection has deadlines and a cap per address ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_trickling_and_oversized_requests_are_cut() {
    let server = TestServer::with(|c| {
        c.request_head_timeout_ms = 500;
        c.request_body_timeout_ms = 500;
    })
    .await;
    // A socket that sends nothing.
    let mut silent = TcpStream::connect(addr(&server)).await.unwrap();
    let (_, took) = until_closed(&mut silent, Duration::from_secs(5)).await.expect("silent socket closed");
    assert!(took < Duration::from_secs(3), "closed after the head deadline, took {took:?}");
    // A head trickled a line at a time.
    let mut trickle = TcpStream::connect(addr(&server)).await.unwrap();
    trickle.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if trickle.write_all(b"X-Slow: 1\r\n").await.is_err() {
            break;
        }
    }
    assert!(until_closed(&mut trickle, Duration::from_secs(5)).await.is_some(), "trickler closed");
    // A body announced over the limit is refused before it is sent.
    let mut big = TcpStream::connect(addr(&server)).await.unwrap();
    big.write_all(
        b"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 70000\r\n\r\n{",
    )
    .await
    .unwrap();
    let (reply, took) = until_closed(&mut big, Duration::from_secs(5)).await.expect("answered and closed");
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("payload_too_large"), "{text}");
    assert!(took < Duration::from_millis(450), "at once, not after a deadline: {took:?}");
    // A body that stops halfway gets 408 after the body deadline.
    let mut stalled = TcpStream::connect(addr(&server)).await.unwrap();
    stalled
        .write_all(b"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    let (reply, _) = until_closed(&mut stalled, Duration::from_secs(5)).await.expect("stalled body answered");
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    // A kept-alive connection that goes quiet is closed too.
    let mut kept = TcpStream::connect(addr(&server)).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let (reply, _) = until_closed(&mut kept, Duration::from_secs(5)).await.expect("idle keep-alive closed");
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"));
    // And the server is still fine.
    assert!(reqwest::get(format!("{}/healthz", server.base)).await.unwrap().status().is_success());
}

/// A TCP connection to the server from `ip` (any 127.0.0.0/8 address is loopback).
async fn tcp_from(server: &TestServer, ip: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket.connect(addr(server).parse().unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_capped_and_websockets_count() {
    let server = TestServer::with(|c| c.max_connections_per_ip = 4).await;
    let (alice, _) = server.user("alice").await;
    let from = "127.0.0.3";
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tcp_from(&server, from).await);
    }
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(tcp_from(&server, from).await);
    let (mut ws, _) = tokio_tungstenite::client_async(server.ws_url(), stream).await.unwrap();
    let hello = serde_json::json!({"op": "hello", "token": alice.token().unwrap()});
    ws.send(Message::Text(hello.to_string().into())).await.unwrap();
    assert!(matches!(raw_next(&mut ws).await, RawEvent::Frame(ServerFrame::Ready { .. })));
    // Four held (three idle sockets and a WebSocket): the fifth is dropped at once.
    let mut extra = tcp_from(&server, from).await;
    let (_, took) = until_closed(&mut extra, Duration::from_secs(2)).await.expect("over the cap: closed");
    assert!(took < Duration::from_secs(1));
    // Another address is not affected.
    let other = client_from("127.0.0.2");
    assert!(other.get(format!("{}/healthz", server.base)).send().await.unwrap().status().is_success());
    // Freeing a place lets the next one in; the WebSocket still holds its place.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut next = tcp_from(&server, from).await;
    next.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let (reply, _) = until_closed(&mut next, Duration::from_secs(2)).await.unwrap();
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = tcp_from(&server, from).await;
    assert!(until_closed(&mut fourth, Duration::from_millis(500)).await.is_none(), "a place is free again");
    drop(ws);
}

// ---- 3. throttles on logins and sign-ups; registration modes ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_back_off_for_the_guesser_not_the_owner() {
    let server = TestServer::with(|c| c.login_free_failures = 3).await;
    server.user("victim").await;
    let attacker = client_from("127.0.0.1");
    let mut refused = None;
    for i in 0..10 {
        let resp = login(&attacker, &server, "victim", &format!("guess-{i:04}")).await;
        if resp.status() == 429 {
            refused = Some(error_of(resp).await);
            break;
        }
        assert_eq!(resp.status(), 401);
    }
    let (_, retry, code, retry_ms) = refused.expect("guessing is throttled");
    assert_eq!(code, "rate_limited");
    assert!(retry.is_some() && retry_ms.is_some(), "429 says when");
    // The right password from the guesser's address waits too: guessing gains nothing.
    assert_eq!(login(&attacker, &server, "victim", PASSWORD).await.status(), 429);
    // The owner, from their own address, signs in at once.
    let owner = client_from("127.0.0.2");
    assert_eq!(login(&owner, &server, "victim", PASSWORD).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ups_per_address_are_throttled() {
    let server = TestServer::with(|c| c.signups_per_ip_per_hour = 3).await;
    let anon = server.client();
    for i in 0..3 {
        anon.register(&format!("user{i}"), PASSWORD).await.unwrap();
    }
    let err = anon.register("user3", PASSWORD).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(429), Some("rate_limited")));
    assert!(err.retry_after_ms().is_some_and(|ms| ms > 1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_can_be_closed_or_invite_only() {
    let closed = TestServer::with(|c| c.registration = "closed".into()).await;
    let err = closed.client().register("alice", PASSWORD).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(403), Some("registration_closed")));

    let invite_only = TestServer::with(|c| c.registration = "invite".into()).await;
    let err = invite_only.client().register("alice", PASSWORD).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(403), Some("invalid_invite")));
    // An invite minted with the node's secret (what `switchboard invite` prints).
    let cfg =
        switchboard::config::Config { data: invite_only.data.path().to_path_buf(), ..Default::default() };
    let auth = switchboard::auth::Auth::from_config(&cfg).unwrap();
    let for_bob = auth.issue_invite(Duration::from_secs(600), Some("bob")).unwrap();
    let err = invite_only.client().register_with_invite("alice", PASSWORD, &for_bob).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_invite"), "bound to another username");
    invite_only.client().register_with_invite("bob", PASSWORD, &for_bob).await.unwrap();
    let open_invite = auth.issue_invite(Duration::from_secs(600), None).unwrap();
    invite_only.client().register_with_invite("carol", PASSWORD, &open_invite).await.unwrap();
    // A login token is no invite.
    let login_token = invite_only.client().login("carol", PASSWORD).await.unwrap().token;
    assert!(invite_only.client().register_with_invite("dave", PASSWORD, &login_token).await.is_err());
}

// ---- 4. sessions end ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_ends_the_token_on_rest_and_closes_its_sockets_at_once() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let other_device =
        server.client().with_token(server.client().login("alice", PASSWORD).await.unwrap().token);
    let mut ws = raw(&server).await;
    raw_hello(&mut ws, alice.token().unwrap()).await;
    let mut other_ws = raw(&server).await;
    raw_hello(&mut other_ws, other_device.token().unwrap()).await;

    let started = Instant::now();
    alice.logout().await.unwrap();
    assert_eq!(raw_close_code(&mut ws).await, Some(4003));
    assert!(started.elapsed() < Duration::from_secs(1), "closed within a second");
    assert_eq!(alice.me().await.unwrap_err().status(), Some(401));
    // The other device's session goes on, until "log out everywhere".
    other_device.me().await.unwrap();
    other_device.logout_everywhere().await.unwrap();
    assert_eq!(raw_close_code(&mut other_ws).await, Some(4003));
    assert_eq!(other_device.me().await.unwrap_err().status(), Some(401));
    // An ended token cannot open a gateway session either.
    let mut again = raw(&server).await;
    let hello = serde_json::json!({"op": "hello", "token": other_device.token().unwrap()});
    again.send(Message::Text(hello.to_string().into())).await.unwrap();
    assert_eq!(raw_close_code(&mut again).await, Some(4003));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_session_closes_before_rest_would_refuse_its_expiring_token() {
    let secret = "external-secret-0123456789abcdefghij";
    let server = TestServer::with(|c| {
        c.jwt_external_hs256_secret = Some(secret.into());
        c.heartbeat_ms = 500;
    })
    .await;
    // Past `exp`, but REST still takes it for the 30 s of leeway; 27 s in, 3 s remain.
    let exp = now_secs() - 27;
    let token = external_token(secret, "ext-user", exp, None);
    let rest = server.client().with_token(&token);
    rest.me().await.unwrap();
    let mut ws = raw(&server).await;
    raw_hello(&mut ws, &token).await;
    assert_eq!(raw_close_code(&mut ws).await, Some(4003));
    assert!(now_secs() <= exp + 30, "closed while REST would still accept the token");
    // Signing out everywhere also refuses external tokens issued before it.
    let fresh = external_token(secret, "ext-user", now_secs() + 600, Some(now_secs() - 5));
    let ext = server.client().with_token(&fresh);
    ext.logout_everywhere().await.unwrap();
    assert_eq!(ext.me().await.unwrap_err().status(), Some(401));
}

// ---- 5. sessions per user ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_user_are_capped_and_leave_nothing_when_closed() {
    let server = TestServer::with(|c| c.max_sessions_per_user = 3).await;
    let (alice, _) = server.user("alice").await;
    let (bob, _) = server.user("bob").await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut ws = raw(&server).await;
        raw_hello(&mut ws, alice.token().unwrap()).await;
        open.push(ws);
    }
    let mut fourth = raw(&server).await;
    let hello = serde_json::json!({"op": "hello", "token": alice.token().unwrap()});
    fourth.send(Message::Text(hello.to_string().into())).await.unwrap();
    assert_eq!(raw_close_code(&mut fourth).await, Some(4012));
    // Other users are not affected, and a closed session frees its place.
    let mut b = raw(&server).await;
    raw_hello(&mut b, bob.token().unwrap()).await;
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = raw(&server).await;
    raw_hello(&mut again, alice.token().unwrap()).await;
}

// ---- 6, 7. membership by consent; dms without an owner ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_is_put_into_rooms_against_their_will() {
    let server = TestServer::start().await;
    let (owner, _) = server.user("owner").await;
    let (member, member_user) = server.user("member").await;
    let (stranger, _) = server.user("stranger").await;
    let (victim, victim_user) = server.user_with_defaults("victim").await;
    let mut victim_ws = server.session(&victim, BTreeMap::new()).await;

    // A stranger "adds" the victim to 50 rooms: 50 invites, no memberships.
    for i in 0..50 {
        let r = stranger.create_room(&format!("spam {i}"), RoomKind::Private, &[]).await.unwrap();
        let invite = stranger.add_member(&r.id, &victim_user.id).await.unwrap();
        assert!(invite.is_some(), "an invite, not a membership");
    }
    assert!(victim.rooms().await.unwrap().is_empty());
    assert_eq!(victim.invites().await.unwrap().len(), 50);
    common::expect_frame(&mut victim_ws, |f| matches!(f, ServerFrame::Invite { .. })).await;
    // Asking again changes nothing and tells nobody again (no flood of invite frames).
    let spam = victim.invites().await.unwrap()[0].room.id.clone();
    let mut seen = 1;
    while tokio::time::timeout(Duration::from_millis(300), victim_ws.next_frame()).await.is_ok() {
        seen += 1;
    }
    assert_eq!(seen, 50, "one frame per invite");
    for _ in 0..5 {
        assert!(stranger.add_member(&spam, &victim_user.id).await.unwrap().is_some());
    }
    common::expect_none(&mut victim_ws, 300, |f| matches!(f, ServerFrame::Invite { .. })).await;
    // Declining clears them; blocking the stranger drops the rest and stops more.
    let first = victim.invites().await.unwrap()[0].room.id.clone();
    victim.decline_invite(&first).await.unwrap();
    assert_eq!(victim.invites().await.unwrap().len(), 49);
    let stranger_id = stranger.me().await.unwrap().id;
    victim.block(&stranger_id).await.unwrap();
    assert!(victim.invites().await.unwrap().is_empty());
    let r = stranger.create_room("more", RoomKind::Private, &[]).await.unwrap();
    assert_eq!(stranger.add_member(&r.id, &victim_user.id).await.unwrap_err().code(), Some("blocked"));
    let dm = stranger.create_room("", RoomKind::Dm, &[&victim_user.id]).await.unwrap_err();
    assert_eq!(dm.code(), Some("blocked"));
    // Accepting an invite is joining.
    let room = owner.create_room("team", RoomKind::Private, &[&member_user.id]).await.unwrap();
    let invite = owner.add_member(&room.id, &victim_user.id).await.unwrap().expect("invited");
    assert_eq!(invite.inviter.username, "owner");
    victim.join(&room.id).await.unwrap();
    assert_eq!(victim.rooms().await.unwrap().len(), 1);
    // A pending invite can be withdrawn by whoever sent it.
    let later = owner.create_room("later", RoomKind::Private, &[]).await.unwrap();
    owner.add_member(&later.id, &victim_user.id).await.unwrap();
    let url = format!("{}/v1/rooms/{}/invites/{}", server.base, later.id, victim_user.id);
    let resp = reqwest::Client::new().delete(url).bearer_auth(owner.token().unwrap()).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert!(victim.invites().await.unwrap().is_empty());
    assert_eq!(victim.join(&later.id).await.unwrap_err().status(), Some(404), "nothing left to accept");

    // Plain members do not add people to a private room.
    let (newcomer, newcomer_user) = server.user("newcomer").await;
    let err = member.add_member(&room.id, &newcomer_user.id).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(403), Some("forbidden")));
    // A user the owner removed is not brought back by a member, nor by themselves.
    let public = owner.create_room("lobby", RoomKind::Public, &[]).await.unwrap();
    member.join(&public.id).await.unwrap();
    newcomer.join(&public.id).await.unwrap();
    owner.remove_member(&public.id, &newcomer_user.id).await.unwrap();
    assert_eq!(member.add_member(&public.id, &newcomer_user.id).await.unwrap_err().status(), Some(403));
    assert_eq!(newcomer.join(&public.id).await.unwrap_err().status(), Some(403));
    owner.add_member(&public.id, &newcomer_user.id).await.unwrap();
    assert!(newcomer.room(&public.id).await.unwrap().role.is_some(), "a moderator may");
    // `nobody` refuses adds outright.
    victim.set_add_policy(AddPolicy::Nobody).await.unwrap();
    let other = owner.create_room("other", RoomKind::Private, &[]).await.unwrap();
    assert_eq!(owner.add_member(&other.id, &victim_user.id).await.unwrap_err().code(), Some("not_accepting"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_dm_each_person_deletes_only_their_own_and_nobody_removes_the_other() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (bob, bob_user) = server.user("bob").await;
    let dm = alice.create_room("", RoomKind::Dm, &[&bob_user.id]).await.unwrap();
    assert_eq!(dm.role, Some(switchboard_client::protocol::Role::Member));
    let msg = bob.post_message(&dm.id, "b1", "mine").await.unwrap();
    assert_eq!(alice.delete_message(&dm.id, &msg.id).await.unwrap_err().status(), Some(403));
    assert_eq!(alice.remove_member(&dm.id, &bob_user.id).await.unwrap_err().status(), Some(403));
    // A block also stops edits in the dm.
    alice.block(&bob_user.id).await.unwrap();
    assert_eq!(bob.edit_message(&dm.id, &msg.id, "changed").await.unwrap_err().code(), Some("blocked"));
    alice.unblock(&bob_user.id).await.unwrap();
    bob.delete_message(&dm.id, &msg.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_stops_typing_and_read_markers_in_the_dm_too() {
    let server = TestServer::start().await;
    let (amy, _) = server.user("amy").await;
    let (bo, bo_user) = server.user("bo").await;
    let dm = amy.create_room("", RoomKind::Dm, &[&bo_user.id]).await.unwrap();
    let mut bo_ws = server.session(&bo, BTreeMap::new()).await;
    let amy_ws = server.session(&amy, BTreeMap::new()).await;
    let typing = switchboard_client::protocol::ClientFrame::Typing { room: dm.id.clone() };
    amy_ws.send_frame(&typing).unwrap();
    common::expect_frame(&mut bo_ws, |f| matches!(f, ServerFrame::Typing { .. })).await;
    bo.block(&amy.me().await.unwrap().id).await.unwrap();
    // Past the typing throttle, so that only the block can stop the next one.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    amy_ws.send_frame(&typing).unwrap();
    amy_ws
        .send_frame(&switchboard_client::protocol::ClientFrame::Read { room: dm.id.clone(), seq: 2 })
        .unwrap();
    common::expect_none(&mut bo_ws, 500, |f| {
        matches!(f, ServerFrame::Typing { .. } | ServerFrame::Read { .. })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_is_throttled_per_user_and_room_across_devices() {
    let server = TestServer::start().await;
    let (amy, _) = server.user("amy").await;
    let (bo, bo_user) = server.user("bo").await;
    let dm = amy.create_room("", RoomKind::Dm, &[&bo_user.id]).await.unwrap();
    let mut bo_ws = server.session(&bo, BTreeMap::new()).await;
    let (phone, laptop) =
        (server.session(&amy, BTreeMap::new()).await, server.session(&amy, BTreeMap::new()).await);
    let typing = switchboard_client::protocol::ClientFrame::Typing { room: dm.id.clone() };
    for _ in 0..30 {
        phone.send_frame(&typing).unwrap();
        laptop.send_frame(&typing).unwrap();
    }
    common::expect_frame(&mut bo_ws, |f| matches!(f, ServerFrame::Typing { .. })).await;
    common::expect_none(&mut bo_ws, 800, |f| matches!(f, ServerFrame::Typing { .. })).await;
    // A message ends the typing (watchers stop showing it): typing again shows at once.
    phone.send(&dm.id, "done typing").await.unwrap();
    laptop.send_frame(&typing).unwrap();
    common::expect_frame(&mut bo_ws, |f| matches!(f, ServerFrame::Typing { .. })).await;
    common::expect_none(&mut bo_ws, 500, |f| matches!(f, ServerFrame::Typing { .. })).await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    phone.send_frame(&typing).unwrap();
    common::expect_frame(&mut bo_ws, |f| matches!(f, ServerFrame::Typing { .. })).await;
}

// ---- 8. sends are limited per user, across connections and REST ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_are_limited_per_user_across_connections_and_rest() {
    let server = TestServer::with(|c| {
        c.user_sends_per_sec = 1;
        c.user_sends_burst = 6;
    })
    .await;
    let (alice, _) = server.user("alice").await;
    let room = alice.create_room("r", RoomKind::Private, &[]).await.unwrap();
    let mut a = raw(&server).await;
    raw_hello(&mut a, alice.token().unwrap()).await;
    let mut b = raw(&server).await;
    raw_hello(&mut b, alice.token().unwrap()).await;
    let send = |cmid: String| {
        Message::Text(
            serde_json::json!({"op": "send", "room": room.id, "client_msg_id": cmid, "body": "hi"})
                .to_string()
                .into(),
        )
    };
    let mut refused = 0;
    for i in 0..4 {
        for (ws, name) in [(&mut a, "a"), (&mut b, "b")] {
            ws.send(send(format!("{name}{i}"))).await.unwrap();
            loop {
                match raw_next(ws).await {
                    RawEvent::Frame(ServerFrame::Ack { .. }) => break,
                    RawEvent::Frame(ServerFrame::Error { code, retry_after_ms, .. }) => {
                        assert_eq!(code, "rate_limited");
                        assert!(retry_after_ms.is_some());
                        refused += 1;
                        break;
                    }
                    RawEvent::Frame(_) => continue,
                    RawEvent::Closed(c) => panic!("closed {c:?}"),
                }
            }
        }
    }
    assert!(refused >= 1, "eight sends on two connections exceed a burst of six");
    let err = alice.post_message(&room.id, "rest", "and over REST").await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(429), Some("rate_limited")));
    // Other writes draw on the same budget: they are no way around it.
    let err = alice.create_room("another", RoomKind::Private, &[]).await.unwrap_err();
    assert_eq!(err.code(), Some("rate_limited"));
}

// ---- 9. unread counts ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_counts_follow_messages_deletes_and_reads() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (bob, bob_user) = server.user("bob").await;
    let room = alice.create_room("r", RoomKind::Private, &[&bob_user.id]).await.unwrap();
    let mut last = None;
    for i in 0..300 {
        last = Some(alice.post_message(&room.id, &format!("m{i}"), "x").await.unwrap());
    }
    assert_eq!(bob.room(&room.id).await.unwrap().unread, Some(300));
    let last = last.unwrap();
    alice.delete_message(&room.id, &last.id).await.unwrap();
    assert_eq!(bob.rooms().await.unwrap()[0].unread, Some(299));
    bob.mark_read(&room.id, last.seq - 100).await.unwrap();
    assert_eq!(bob.room(&room.id).await.unwrap().unread, Some(99));
    let s = server.session(&bob, BTreeMap::new()).await;
    drop(s);
    bob.post_message(&room.id, "reply", "read it all").await.unwrap();
    assert_eq!(bob.room(&room.id).await.unwrap().unread, Some(0));
}

// ---- 10. the smaller ones ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blank_bodies_and_bidi_names_are_refused() {
    let secret = "external-secret-0123456789abcdefghij";
    let server = TestServer::with(|c| c.jwt_external_hs256_secret = Some(secret.into())).await;
    let (alice, _) = server.user("alice").await;
    let room = alice.create_room("r", RoomKind::Private, &[]).await.unwrap();
    for blank in ["\u{200B}", "\u{3164}\u{3164}", "\u{2800}\u{2800}", "\u{FEFF} \u{200D}"] {
        let err = alice.post_message(&room.id, "k", blank).await.unwrap_err();
        assert_eq!(err.code(), Some("empty_body"), "{blank:?}");
        let err = alice.create_room(blank, RoomKind::Public, &[]).await.unwrap_err();
        assert_eq!(err.code(), Some("invalid_request"), "{blank:?}");
    }
    let err = alice.create_room("invoice\u{202E}fdp.exe", RoomKind::Public, &[]).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_request"));
    let bidi = external_token(secret, "admin\u{202E}1", now_secs() + 600, None);
    assert_eq!(server.client().with_token(&bidi).me().await.unwrap_err().status(), Some(401));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_cannot_fetch_their_old_message_by_its_key() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (bob, bob_user) = server.user("bob").await;
    let room = alice.create_room("r", RoomKind::Private, &[&bob_user.id]).await.unwrap();
    bob.post_message(&room.id, "mine", "hello").await.unwrap();
    alice.remove_member(&room.id, &bob_user.id).await.unwrap();
    let err = bob.post_message(&room.id, "mine", "hello").await.unwrap_err();
    assert_eq!(err.status(), Some(404));
}

/// Upgrades a raw TCP socket to a WebSocket by hand, so that frames no library would send can
/// be written.
async fn handshake(server: &TestServer) -> TcpStream {
    handshake_then(server, &[]).await
}

/// The same, with `then` sent in the same write as the request's head.
async fn handshake_then(server: &TestServer, then: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(addr(server)).await.unwrap();
    let mut req = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        addr(server)
    )
    .into_bytes();
    req.extend_from_slice(then);
    tcp.write_all(&req).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    tcp
}

/// A masked client frame (any length below 64 KiB) as it goes on the wire.
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut out = vec![first];
    match u16::try_from(payload.len()) {
        Ok(n) if n < 126 => out.push(0x80 | n as u8),
        Ok(n) => {
            out.push(0x80 | 126);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Err(_) => panic!("test frames stay below 64 KiB"),
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_sent_in_the_same_write_as_the_upgrade_is_answered() {
    // The bytes after the request's head reach hyper's buffer, not the socket: the session
    // must be handed them first.
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let hello = serde_json::json!({"op": "hello", "token": alice.token().unwrap()}).to_string();
    let mut frames = masked(0x81, hello.as_bytes());
    frames.extend(masked(0x81, br#"{"op":"ping"}"#));
    let tcp = handshake_then(&server, &frames).await;
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        stream,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    assert!(matches!(raw_next(&mut ws).await, RawEvent::Frame(ServerFrame::Ready { .. })));
    assert!(matches!(raw_next(&mut ws).await, RawEvent::Frame(ServerFrame::Pong)));
}

/// The close code of the first close frame the server sends.
async fn close_code_of(tcp: &mut TcpStream) -> Option<u16> {
    let (bytes, _) = until_closed(tcp, Duration::from_secs(5)).await?;
    let at = bytes.iter().position(|b| *b == 0x88)?;
    Some(u16::from_be_bytes([*bytes.get(at + 2)?, *bytes.get(at + 3)?]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_protocol_errors_close_with_1002_and_1007() {
    let server = TestServer::start().await;
    let mut bad_utf8 = handshake(&server).await;
    bad_utf8.write_all(&masked(0x81, &[0xff, 0xfe, 0xfd])).await.unwrap();
    assert_eq!(close_code_of(&mut bad_utf8).await, Some(1007));

    let mut rsv = handshake(&server).await;
    rsv.write_all(&masked(0xC1, b"{}")).await.unwrap();
    assert_eq!(close_code_of(&mut rsv).await, Some(1002));

    let mut unmasked = handshake(&server).await;
    unmasked.write_all(&[0x81, 0x02, b'{', b'}']).await.unwrap();
    assert_eq!(close_code_of(&mut unmasked).await, Some(1002));
}
