//! Bad input over real sockets: every case gets its documented error or close code, and the
//! server keeps serving everyone else.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{RawEvent, TestServer, expect_frame, raw, raw_close_code, raw_error_code, raw_hello, raw_next};
use futures_util::SinkExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use switchboard_client::protocol::rest::HistoryQuery;
use switchboard_client::protocol::{RoomKind, ServerFrame};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "test-secret-test-secret-test-secret-0123";

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn token(alg: Algorithm, key: &EncodingKey, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_error_frames_and_the_connection_stays_open() {
    let server = TestServer::with(|c| c.max_body_chars = 100).await;
    let (alice, _) = server.user("alice").await;
    let room = alice.create_room("r", RoomKind::Public, &[]).await.unwrap();
    let mut ws = raw(&server).await;
    raw_hello(&mut ws, alice.token().unwrap()).await;
    let send = |body: &str| {
        serde_json::json!({"op": "send", "room": room.id, "client_msg_id": "k", "body": body}).to_string()
    };
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: Vec<(String, &str)> = vec![
        ("not json at all".into(), "invalid_json"),
        ("".into(), "invalid_json"),
        ("[1,2,3]".into(), "invalid_json"),
        ("42".into(), "invalid_json"),
        (deep, "invalid_json"),
        (r#"{"op":"teleport"}"#.into(), "unknown_op"),
        (r#"{"room":"x"}"#.into(), "invalid_request"),
        (r#"{"op":"send","room":"x"}"#.into(), "invalid_request"),
        (r#"{"op":"read","room":"x","seq":"ten"}"#.into(), "invalid_request"),
        (r#"{"op":"read","room":"x","seq":1e999}"#.into(), "invalid_json"),
        (r#"{"op":"read","room":"x","seq":99999999999999999999999}"#.into(), "invalid_request"),
        (r#"{"op":"ping","op":"send"}"#.into(), "invalid_request"),
        (r#"{"op":"send","room":"x","client_msg_id":"k","body":"\ud800"}"#.into(), "invalid_json"),
        (send(""), "empty_body"),
        (send(" \n\t "), "empty_body"),
        (send(&"x".repeat(101)), "body_too_long"),
        (send(&format!("a{}", "\u{301}".repeat(10_000))), "body_too_long"),
        (send("nul\u{0}byte"), "invalid_request"),
        (
            serde_json::json!({"op":"send","room":room.id,"client_msg_id":"k".repeat(65),"body":"b"})
                .to_string(),
            "invalid_request",
        ),
        (r#"{"op":"hello","token":"again"}"#.into(), "already_authenticated"),
        (r#"{"op":"typing","room":"not-a-room"}"#.into(), "not_found"),
        (r#"{"op":"read","room":"not-a-room","seq":1}"#.into(), "not_found"),
    ];
    for (text, want) in &cases {
        assert_eq!(&raw_error_code(&mut ws, text).await, want, "for {text:.60}");
    }
    ws.send(Message::Binary(vec![1u8, 2, 3].into())).await.unwrap();
    assert!(
        matches!(raw_next(&mut ws).await, RawEvent::Frame(ServerFrame::Error { code, .. }) if code == "binary_not_supported")
    );
    // Still open and serving: markup and bidi text are stored as sent.
    let body = "<img src=x onerror=alert(1)> \u{202e}evil";
    ws.send(Message::Text(send(body).into())).await.unwrap();
    assert!(matches!(
        raw_next(&mut ws).await,
        RawEvent::Frame(ServerFrame::Ack { .. } | ServerFrame::Message(_))
    ));
    let history = alice.history(&room.id, &HistoryQuery::default()).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].body, body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4_mib_frame_closes_with_1009_and_others_are_unaffected() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let room = alice.create_room("r", RoomKind::Public, &[]).await.unwrap();
    let mut bystander = server.session(&alice, BTreeMap::new()).await;
    let mut ws = raw(&server).await;
    raw_hello(&mut ws, alice.token().unwrap()).await;
    let huge =
        serde_json::json!({"op":"send","room":room.id,"client_msg_id":"big","body":"x".repeat(4 << 20)});
    let _ = ws.send(Message::Text(huge.to_string().into())).await;
    assert_eq!(raw_close_code(&mut ws).await, Some(1009));
    bystander.send(&room.id, "still here").await.unwrap();
    expect_frame(&mut bystander, |f| matches!(f, ServerFrame::Message(m) if m.body == "still here")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_faults_close_with_4001_and_4003() {
    let server = TestServer::with(|c| {
        c.hello_timeout_ms = 300;
        c.jwt_secret = Some(SECRET.into());
    })
    .await;
    let (_, user) = server.user("alice").await;
    let own = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    let base = |exp: u64| serde_json::json!({"sub": user.id, "exp": exp, "iss": "switchboard", "aud": "switchboard"});

    // No hello at all.
    let mut ws = raw(&server).await;
    assert_eq!(raw_close_code(&mut ws).await, Some(4001));
    // Something else first: an error frame, then the deadline.
    let mut ws = raw(&server).await;
    assert_eq!(raw_error_code(&mut ws, r#"{"op":"ping"}"#).await, "not_authenticated");
    assert_eq!(raw_close_code(&mut ws).await, Some(4001));

    let mut bad_tokens = vec![
        "garbage".to_owned(),
        String::new(),
        "x".repeat(20_000),
        token(Algorithm::HS256, &own, base(now() - 3600)),
        token(
            Algorithm::HS256,
            &EncodingKey::from_secret(b"another-secret-another-secret-xx").unwrap(),
            base(now() + 3600),
        ),
        token(
            Algorithm::HS256,
            &own,
            serde_json::json!({"sub": user.id, "iss": "switchboard", "aud": "switchboard"}),
        ),
        token(
            Algorithm::HS256,
            &own,
            serde_json::json!({"sub": user.id, "exp": now() + 3600, "iss": "evil", "aud": "switchboard"}),
        ),
        token(
            Algorithm::HS256,
            &own,
            serde_json::json!({"sub": user.id, "exp": now() + 3600, "nbf": now() + 3600, "iss": "switchboard", "aud": "switchboard"}),
        ),
        token(
            Algorithm::HS256,
            &own,
            base(now() + 3600)
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    o.insert("sub".into(), "deleted-user".into());
                    serde_json::Value::Object(o)
                })
                .unwrap(),
        ),
    ];
    // alg: none, hand-built.
    let b64 = |v: serde_json::Value| base64url(v.to_string().as_bytes());
    bad_tokens.push(format!(
        "{}.{}.",
        b64(serde_json::json!({"alg":"none","typ":"JWT"})),
        b64(base(now() + 3600))
    ));
    for t in bad_tokens {
        let mut ws = raw(&server).await;
        let hello = serde_json::json!({"op": "hello", "token": t});
        ws.send(Message::Text(hello.to_string().into())).await.unwrap();
        assert_eq!(raw_close_code(&mut ws).await, Some(4003), "token {t:.40}");
    }
    // A good own token still works.
    let mut ws = raw(&server).await;
    raw_hello(&mut ws, &token(Algorithm::HS256, &own, base(now() + 3600))).await;
}

fn base64url(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_tokens_are_pinned_to_their_algorithm_and_create_users() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let public = fixtures.join("test_rs256_public.pem");
    let server = TestServer::with(|c| {
        c.jwt_external_rs256_public_key = Some(public.clone());
        c.jwt_external_issuer = Some("https://auth.example".into());
        c.jwt_external_audience = Some("chat".into());
    })
    .await;
    let private =
        EncodingKey::from_rsa_pem(&std::fs::read(fixtures.join("test_rs256_private.pem")).unwrap()).unwrap();
    let claims = |iss: &str| serde_json::json!({"sub": "ext|42", "name": "Carol", "exp": now() + 600, "iss": iss, "aud": "chat"});
    let good = token(Algorithm::RS256, &private, claims("https://auth.example"));
    let me = server.client().with_token(&good).me().await.unwrap();
    assert_eq!((me.id.as_str(), me.username.as_str()), ("ext|42", "carol"));
    let again = server.client().with_token(&good).me().await.unwrap();
    assert_eq!(again, me, "created once");

    let wrong_iss = token(Algorithm::RS256, &private, claims("https://evil.example"));
    let no_iss = token(
        Algorithm::RS256,
        &private,
        serde_json::json!({"sub": "ext|43", "exp": now() + 600, "aud": "chat"}),
    );
    let array_aud = serde_json::json!({"sub": "ext|44", "exp": now() + 600, "iss": "https://auth.example", "aud": ["chat", "other"]});
    let ok = server.client().with_token(token(Algorithm::RS256, &private, array_aud)).me().await.unwrap();
    assert_eq!(ok.id, "ext|44", "an array aud is valid JWT");
    let local = server.client().register("dave", "correct horse battery").await.unwrap().user;
    let impostor = token(
        Algorithm::RS256,
        &private,
        serde_json::json!({"sub": local.id, "exp": now() + 600, "iss": "https://auth.example", "aud": "chat"}),
    );
    let pem = std::fs::read(&public).unwrap();
    let confused =
        token(Algorithm::HS256, &EncodingKey::from_secret(&pem).unwrap(), claims("https://auth.example"));
    for bad in [wrong_iss, no_iss, confused, impostor] {
        let err = server.client().with_token(&bad).me().await.unwrap_err();
        assert_eq!(err.code(), Some("unauthorized"));
        let mut ws = raw(&server).await;
        ws.send(Message::Text(serde_json::json!({"op":"hello","token":bad}).to_string().into()))
            .await
            .unwrap();
        assert_eq!(raw_close_code(&mut ws).await, Some(4003));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_gets_rate_limited_then_4008_while_others_are_served() {
    let server = TestServer::with(|c| {
        c.rate_per_sec = 20;
        c.rate_burst = 20;
    })
    .await;
    let (alice, _) = server.user("alice").await;
    let (bob, bob_user) = server.user("bob").await;
    let room = alice.create_room("r", RoomKind::Private, &[&bob_user.id]).await.unwrap();
    let mut victim = server.session(&bob, BTreeMap::new()).await;
    let mut ws = raw(&server).await;
    raw_hello(&mut ws, alice.token().unwrap()).await;
    for i in 0..400 {
        let f = serde_json::json!({"op":"send","room":room.id,"client_msg_id":format!("f{i}"),"body":"spam"});
        if ws.send(Message::Text(f.to_string().into())).await.is_err() {
            break;
        }
    }
    let mut limited = 0;
    let code = loop {
        match raw_next(&mut ws).await {
            RawEvent::Frame(ServerFrame::Error { code, client_msg_id, .. }) if code == "rate_limited" => {
                assert!(client_msg_id.is_some(), "a refused send names its key");
                limited += 1;
            }
            RawEvent::Frame(_) => {}
            RawEvent::Closed(code) => break code,
        }
    };
    assert!(limited >= 1);
    assert_eq!(code, Some(4008));
    // Nothing refused was stored; the other user is still served.
    let stored =
        bob.history(&room.id, &HistoryQuery { limit: Some(200), ..Default::default() }).await.unwrap();
    assert!(stored.len() <= 40, "only frames within the limit were accepted: {}", stored.len());
    victim.send(&room.id, "fine").await.unwrap();
    expect_frame(&mut victim, |f| matches!(f, ServerFrame::Message(m) if m.body == "fine")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_with_4010_and_resumes_with_nothing_lost() {
    // The queue holds more than one relay batch (the relay publishes up to 256 events at a
    // time when it catches up), so the fast reader keeps up with bursts; the slow one, whose
    // socket takes a few KB, still falls behind by far more.
    let server = TestServer::with(|c| {
        c.send_queue = 300;
        c.replay_limit = 5000;
    })
    .await;
    let (alice, _) = server.user("alice").await;
    let (bob, bob_user) = server.user("bob").await;
    let (carol, carol_user) = server.user("carol").await;
    let room = alice.create_room("r", RoomKind::Private, &[&bob_user.id, &carol_user.id]).await.unwrap();
    let mut fast = server.session(&carol, BTreeMap::new()).await;

    // A client with a tiny receive buffer that stops reading.
    let mut slow = common::raw_slow_reader(&server).await;
    raw_hello(&mut slow, bob.token().unwrap()).await;
    let start_seq = room.last_seq;

    let body = "y".repeat(3000);
    let total = 3000u64;
    let mut tasks = Vec::new();
    for t in 0..6u64 {
        let (alice, room, body) = (alice.clone(), room.id.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            for i in (t..total).step_by(6) {
                alice.post_message(&room, &format!("s{i}"), &body).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Everyone else got everything, in order.
    let mut next = start_seq + 1;
    while next <= start_seq + total {
        if let Some((_, seq)) = expect_frame(&mut fast, |f| f.timeline_pos().is_some()).await.timeline_pos() {
            assert_eq!(seq, next);
            next += 1;
        }
    }
    // The slow one reads what was buffered, then the 4010 close.
    let mut last = start_seq;
    let code = loop {
        match raw_next(&mut slow).await {
            RawEvent::Frame(f) => {
                if let Some((_, seq)) = f.timeline_pos() {
                    assert_eq!(seq, last + 1, "in order, no gap before the close");
                    last = seq;
                }
            }
            RawEvent::Closed(code) => break code,
        }
    };
    assert_eq!(code, Some(4010));
    assert!(last < start_seq + total, "it really fell behind");
    // Resume from the last seq seen: the rest arrives, nothing lost.
    let mut resumed = server.session(&bob, BTreeMap::from([(room.id.clone(), last)])).await;
    while last < start_seq + total {
        if let Some((_, seq)) =
            expect_frame(&mut resumed, |f| f.timeline_pos().is_some()).await.timeline_pos()
        {
            assert_eq!(seq, last + 1);
            last = seq;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origins_are_refused_before_the_upgrade() {
    let server = TestServer::with(|c| c.allowed_origins = vec!["https://chat.example".into()]).await;
    let request = |origin: &str| {
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(server.ws_url())
                .unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        req
    };
    let refused = tokio_tungstenite::connect_async(request("https://evil.example")).await.unwrap_err();
    assert!(refused.to_string().contains("403"), "{refused}");
    assert!(tokio_tungstenite::connect_async(request("https://chat.example")).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_bad_input_gets_json_errors_with_codes() {
    let server = TestServer::with(|c| c.max_body_chars = 50).await;
    let (alice, _) = server.user("alice").await;
    let room = alice.create_room("r", RoomKind::Public, &[]).await.unwrap();
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{}", server.base, p);
    let auth = format!("Bearer {}", alice.token().unwrap());
    let check = |resp: reqwest::Response, status: u16, code: &'static str| async move {
        assert_eq!(resp.status().as_u16(), status);
        let body: serde_json::Value = resp.json().await.expect("JSON error body");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].is_string());
    };
    let post = |p: &str| http.post(url(p)).header("authorization", &auth);
    let msgs = format!("/v1/rooms/{}/messages", room.id);
    check(
        post(&msgs).header("content-type", "application/json").body("").send().await.unwrap(),
        400,
        "invalid_json",
    )
    .await;
    check(
        post(&msgs).header("content-type", "application/json").body("{oops").send().await.unwrap(),
        400,
        "invalid_json",
    )
    .await;
    check(post(&msgs).body("{}").send().await.unwrap(), 415, "unsupported_media_type").await;
    check(post(&msgs).json(&serde_json::json!({"body": "x"})).send().await.unwrap(), 422, "invalid_request")
        .await;
    check(
        post(&msgs).json(&serde_json::json!({"client_msg_id": 5, "body": "x"})).send().await.unwrap(),
        422,
        "invalid_request",
    )
    .await;
    check(
        post(&msgs).json(&serde_json::json!({"client_msg_id": "a", "body": "  "})).send().await.unwrap(),
        400,
        "empty_body",
    )
    .await;
    check(
        post(&msgs)
            .json(&serde_json::json!({"client_msg_id": "a", "body": "z".repeat(51)}))
            .send()
            .await
            .unwrap(),
        400,
        "body_too_long",
    )
    .await;
    check(
        post(&msgs)
            .json(&serde_json::json!({"client_msg_id": "a", "body": "z".repeat(70_000)}))
            .send()
            .await
            .unwrap(),
        413,
        "payload_too_large",
    )
    .await;
    check(
        http.post(url(&msgs))
            .json(&serde_json::json!({"client_msg_id": "a", "body": "x"}))
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
    check(
        http.get(url("/v1/rooms")).header("authorization", "Bearer nope").send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    check(
        http.get(url("/v1/rooms"))
            .header("authorization", format!("Bearer {}", "a".repeat(20_000)))
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
    // A head past the per-connection buffer (32 KiB) is refused by the HTTP layer itself.
    let huge = http.get(url("/v1/rooms")).header("authorization", format!("Bearer {}", "a".repeat(100_000)));
    assert_eq!(huge.send().await.unwrap().status().as_u16(), 431);
    check(
        http.get(url(&format!("{msgs}?limit=0"))).header("authorization", &auth).send().await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    check(
        http.get(url(&format!("{msgs}?limit=500"))).header("authorization", &auth).send().await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    check(
        http.get(url(&format!("{msgs}?after_seq=-1"))).header("authorization", &auth).send().await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    check(http.get(url("/v1/nothing-here")).send().await.unwrap(), 404, "not_found").await;
    check(
        http.delete(url("/v1/rooms")).header("authorization", &auth).send().await.unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    check(
        post("/v1/rooms").json(&serde_json::json!({"name": "", "kind": "public"})).send().await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    check(
        post("/v1/rooms").json(&serde_json::json!({"name": "x", "kind": "secret"})).send().await.unwrap(),
        422,
        "invalid_request",
    )
    .await;
    check(
        post("/v1/rooms")
            .json(&serde_json::json!({"name": "x", "kind": "dm", "members": []}))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_request",
    )
    .await;
    check(
        post("/v1/rooms")
            .json(&serde_json::json!({"name": "x", "kind": "private", "members": ["ghost"]}))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;

    let anon = server.client();
    for (name, pw, code) in [
        ("", "password1", "invalid_username"),
        ("\u{430}dmin", "password1", "invalid_username"),
        ("ok", "short", "invalid_password"),
    ] {
        assert_eq!(anon.register(name, pw).await.unwrap_err().code(), Some(code));
    }
    assert_eq!(anon.register("ALICE", "another password").await.unwrap_err().code(), Some("username_taken"));
    assert_eq!(anon.login("alice", "wrong password").await.unwrap_err().code(), Some("invalid_credentials"));
    assert_eq!(anon.login("nobody", "wrong password").await.unwrap_err().code(), Some("invalid_credentials"));
    assert!(anon.login("Alice", "correct horse battery").await.is_ok(), "usernames are case-folded");
    let spec: serde_json::Value =
        http.get(url("/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(spec["paths"]["/v1/rooms/{id}/messages"]["post"].is_object());
    assert_eq!(http.get(url("/healthz")).send().await.unwrap().status(), 200);
    let ready = http.get(url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(
        (ready["status"].as_str(), ready["store"].as_str(), ready["bus"].as_str()),
        (Some("ready"), Some("ok"), Some("ok"))
    );
    assert!(ready["node"].as_str().is_some_and(|n| n.starts_with("node-")), "{ready}");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_with_4009_and_the_ping_op_answers_pong() {
    let server = TestServer::with(|c| c.heartbeat_ms = 200).await;
    let (alice, _) = server.user("alice").await;
    let mut ws = raw(&server).await;
    raw_hello(&mut ws, alice.token().unwrap()).await;
    assert!(matches!(
        {
            ws.send(Message::Text(r#"{"op":"ping"}"#.into())).await.unwrap();
            raw_next(&mut ws).await
        },
        RawEvent::Frame(ServerFrame::Pong)
    ));
    // Stop reading (so no automatic pong answers the server's pings) and stay silent.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(raw_close_code(&mut ws).await, Some(4009));
    // A client that keeps reading answers pings and stays connected.
    let mut live = server.session(&alice, BTreeMap::new()).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    live.send_frame(&switchboard_client::protocol::ClientFrame::Ping).unwrap();
    expect_frame(&mut live, |f| matches!(f, ServerFrame::Pong)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typing_flood_never_cuts_a_slow_reader_and_messages_still_arrive_in_order() {
    let server = TestServer::with(|c| {
        c.send_queue = 64;
        c.rate_per_sec = 100_000;
        c.rate_burst = 100_000;
        // The flood must reach the reader's queue: no typing throttle here.
        c.typing_interval_ms = 0;
    })
    .await;
    let (alice, _) = server.user("alice").await;
    let (bob, bob_user) = server.user("bob").await;
    let mut typers = Vec::new();
    let mut ids = vec![bob_user.id.clone()];
    for i in 0..3 {
        let (c, u) = server.user(&format!("typer{i}")).await;
        ids.push(u.id);
        typers.push(c);
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let room = alice.create_room("busy", RoomKind::Private, &refs).await.unwrap();
    // Bob's socket takes a few KB and is not read during the flood.
    let mut slow = common::raw_slow_reader(&server).await;
    raw_hello(&mut slow, bob.token().unwrap()).await;
    let mut sessions = Vec::new();
    for t in &typers {
        sessions.push(server.session(t, BTreeMap::new()).await);
    }
    let typing = switchboard_client::protocol::ClientFrame::Typing { room: room.id.clone() };
    for round in 0..1500 {
        for s in &sessions {
            s.send_frame(&typing).unwrap();
        }
        if round % 75 == 0 {
            alice.post_message(&room.id, &format!("m{round}"), &format!("message {round}")).await.unwrap();
        }
    }
    // Well past what a 64-frame queue and the socket's buffers hold, all of it typing but 20.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seqs = Vec::new();
    while seqs.len() < 20 {
        match raw_next(&mut slow).await {
            RawEvent::Frame(f) => {
                if let ServerFrame::Message(m) = f {
                    seqs.push(m.seq);
                }
            }
            RawEvent::Closed(code) => panic!("the reader was closed ({code:?}) by ephemeral traffic"),
        }
    }
    assert_eq!(seqs, (room.last_seq + 1..=room.last_seq + 20).collect::<Vec<_>>(), "every message, in order");
    let metrics = reqwest::get(format!("{}/metrics", server.metrics)).await.unwrap().text().await.unwrap();
    let dropped = metrics
        .lines()
        .find(|l| l.starts_with("switchboard_ephemeral_dropped_total "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(dropped > 0.0, "typing was dropped for the slow reader, not queued without bound");
}
