//! The moderation hook against a real classifier over HTTP: its verdicts, a classifier that
//! hangs or fails (fail open and fail closed, within the timeout), and other rooms' sends going
//! on while one room's classifier call hangs.

mod common;

use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::routing::post;
use common::TestServer;
use switchboard_client::protocol::RoomKind;

/// A classifier on a local port: blocks "toxic", flags "meh", hangs on "slow", fails on "boom".
async fn classifier() -> String {
    async fn judge(Json(ask): Json<serde_json::Value>) -> (StatusCode, Json<serde_json::Value>) {
        let body = ask["body"].as_str().unwrap_or_default().to_owned();
        if body.contains("slow") {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        if body.contains("boom") {
            return (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({})));
        }
        let answer = if body.contains("toxic") {
            serde_json::json!({"action": "block", "reason": "toxicity 0.97"})
        } else if body.contains("meh") {
            serde_json::json!({"action": "flag", "reason": "borderline"})
        } else {
            serde_json::json!({"action": "allow"})
        };
        (StatusCode::OK, Json(answer))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, axum::Router::new().route("/judge", post(judge))).await;
    });
    format!("http://{addr}/judge")
}

async fn server(fail_open: bool, timeout_ms: u64) -> TestServer {
    let url = classifier().await;
    TestServer::with(move |c| {
        c.hook_url = Some(url);
        c.hook_allow_private = true;
        c.hook_fail_open = fail_open;
        c.hook_timeout_ms = timeout_ms;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_classifiers_verdicts_block_flag_or_allow() {
    let server = server(true, 2_000).await;
    let (a, _) = server.user("alice").await;
    let room = a.create_room("r", RoomKind::Private, &[]).await.unwrap().id;
    let err = a.post_message(&room, "1", "you are toxic").await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(422), Some("rejected")));
    let flagged = a.post_message(&room, "2", "meh whatever").await.unwrap();
    a.post_message(&room, "3", "fine words").await.unwrap();
    let msg = a.post_message(&room, "4", "something").await.unwrap();
    assert_eq!(a.edit_message(&room, &msg.id, "now toxic").await.unwrap_err().code(), Some("rejected"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let entries = a.audit(&room, None).await.unwrap();
    let details: Vec<(String, Option<String>)> = entries.into_iter().map(|e| (e.action, e.detail)).collect();
    assert!(
        details.contains(&("auto_block".into(), Some("classifier: toxicity 0.97".into()))),
        "{details:?}"
    );
    let flag = format!("classifier: borderline in message {}", flagged.id);
    assert!(details.contains(&("auto_flag".into(), Some(flag))), "{details:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_or_failing_classifier_fails_open_within_its_timeout() {
    let server = server(true, 300).await;
    let (a, _) = server.user("alice").await;
    let room = a.create_room("r", RoomKind::Private, &[]).await.unwrap().id;
    let started = std::time::Instant::now();
    a.post_message(&room, "1", "slow down").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "not held for the classifier's 30 s");
    a.post_message(&room, "2", "boom").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_or_failing_classifier_fails_closed_with_a_retry_hint() {
    let server = server(false, 300).await;
    let (a, _) = server.user("alice").await;
    let room = a.create_room("r", RoomKind::Private, &[]).await.unwrap().id;
    for (i, body) in ["slow down", "boom"].iter().enumerate() {
        let err = a.post_message(&room, &i.to_string(), body).await.unwrap_err();
        assert_eq!((err.status(), err.code()), (Some(503), Some("unavailable")), "{body}");
        assert!(err.retry_after_ms().is_some(), "{body}");
    }
    a.post_message(&room, "ok", "all good").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rooms_hanging_call_does_not_hold_up_other_rooms() {
    let server = server(true, 3_000).await;
    let (a, _) = server.user("alice").await;
    let (b, _) = server.user("bob").await;
    let slow_room = a.create_room("slow", RoomKind::Private, &[]).await.unwrap().id;
    let other = b.create_room("other", RoomKind::Private, &[]).await.unwrap().id;
    let slow = tokio::spawn(async move { a.post_message(&slow_room, "s", "slow one").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..5 {
        b.post_message(&other, &format!("q{i}"), "quick").await.unwrap();
    }
    assert!(!slow.is_finished(), "the other room's sends finished while this call still hangs");
    slow.await.unwrap().unwrap();
}
