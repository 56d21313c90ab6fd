//! The real binary as a process: acked messages survive `kill -9`, and SIGTERM drains (close
//! 1001, in-flight sends committed and acked, clean exit).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{RawEvent, raw_next};
use futures_util::SinkExt;
use switchboard_client::protocol::RoomKind;
use switchboard_client::protocol::rest::HistoryQuery;
use switchboard_client::{Ack, Client, Session, SessionConfig};
use tokio_tungstenite::tungstenite::Message;

struct Node {
    child: Child,
    base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn spawn(data: &Path, port: u16) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data)
        // These tests send as fast as they can from one address.
        .args(["--user-sends-per-sec", "100000", "--user-sends-burst", "100000"])
        .args(["--room-sends-per-sec", "100000", "--room-sends-burst", "100000", "--duplicate-max", "0"])
        .args(["--room-joins-per-min", "0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("binary starts");
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status().is_success()
        {
            return Node { child, base };
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("server did not become ready");
}

async fn all_messages(c: &Client, room: &str) -> Vec<switchboard_client::protocol::Message> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = c
            .history(room, &HistoryQuery { after_seq: Some(after), limit: Some(200), ..Default::default() })
            .await
            .unwrap();
        let Some(last) = page.last() else { return out };
        after = last.seq;
        out.extend(page);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_survive_kill_9_under_sustained_sends() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut node = spawn(data.path(), port).await;
    let auth = Client::new(&node.base).register("writer", "correct horse battery").await.unwrap();
    let client = Client::new(&node.base).with_token(&auth.token);
    let room = client.create_room("durable", RoomKind::Private, &[]).await.unwrap();
    let acked: Arc<Mutex<HashMap<String, Ack>>> = Arc::default();

    for round in 0..3u64 {
        let cfg = SessionConfig {
            url: client.ws_url(),
            token: auth.token.clone(),
            since: BTreeMap::new(),
            reconnect: false,
        };
        let session = Arc::new(Session::connect(cfg).await.unwrap());
        let mut senders = Vec::new();
        for t in 0..8 {
            let (session, acked, room) = (session.clone(), acked.clone(), room.id.clone());
            senders.push(tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("r{round}-t{t}-{i}");
                    match session.send_with_id(&room, &key, &format!("payload {key}")).await {
                        Ok(ack) => {
                            acked.lock().unwrap().insert(key, ack);
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        // Let sends flow, then kill at a moment that varies per round.
        tokio::time::sleep(Duration::from_millis(300 + 170 * round)).await;
        node.child.kill().unwrap();
        node.child.wait().unwrap();
        for s in senders {
            s.await.unwrap();
        }
        node = spawn(data.path(), port).await;
    }

    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "the test produced real load: {}", acked.len());
    let stored = all_messages(&client, &room.id).await;
    let by_key: HashMap<&str, &switchboard_client::protocol::Message> =
        stored.iter().map(|m| (m.client_msg_id.as_str(), m)).collect();
    assert_eq!(by_key.len(), stored.len(), "no duplicates");
    for (key, ack) in &acked {
        let m = by_key.get(key.as_str()).unwrap_or_else(|| panic!("acked {key} lost"));
        assert_eq!((m.id.as_str(), m.seq), (ack.id.as_str(), ack.seq));
    }
    // The timeline is gap-free: seq 1 is the owner joining, then one seq per message.
    let seqs: Vec<u64> = stored.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (2..2 + stored.len() as u64).collect::<Vec<_>>());
    node.child.kill().unwrap();
    let _ = node.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_sessions_with_1001_and_commits_in_flight_sends() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut node = spawn(data.path(), port).await;
    let auth = Client::new(&node.base).register("writer", "correct horse battery").await.unwrap();
    let client = Client::new(&node.base).with_token(&auth.token);
    let room = client.create_room("drain", RoomKind::Private, &[]).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(client.ws_url()).await.unwrap();
    common::raw_hello(&mut ws, &auth.token).await;
    for i in 0..80 {
        let f = serde_json::json!({"op":"send","room":room.id,"client_msg_id":format!("d{i}"),"body":"in flight"});
        ws.send(Message::Text(f.to_string().into())).await.unwrap();
    }
    let status = Command::new("kill").args(["-TERM", &node.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut acks = Vec::new();
    let code = loop {
        match raw_next(&mut ws).await {
            RawEvent::Frame(switchboard_client::protocol::ServerFrame::Ack {
                client_msg_id, seq, ..
            }) => acks.push((client_msg_id, seq)),
            RawEvent::Frame(_) => {}
            RawEvent::Closed(code) => break code,
        }
    };
    assert_eq!(code, Some(1001));
    let exit = tokio::task::spawn_blocking(move || node.child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "clean exit after draining: {exit}");
    node = spawn(data.path(), port).await;
    let stored = all_messages(&client, &room.id).await;
    for (key, seq) in &acks {
        assert!(stored.iter().any(|m| &m.client_msg_id == key && m.seq == *seq), "acked {key} stored");
    }
    node.child.kill().unwrap();
    let _ = node.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_resends_and_resumes_across_a_server_crash() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut node = spawn(data.path(), port).await;
    let anon = Client::new(&node.base);
    let a = anon.register("alice", "correct horse battery").await.unwrap();
    let b = anon.register("bob", "correct horse battery").await.unwrap();
    let alice = anon.with_token(&a.token);
    let room = alice.create_room("crash", RoomKind::Private, &[&b.user.id]).await.unwrap();
    // Bob accepts the invite.
    let room = {
        anon.with_token(&b.token).join(&room.id).await.unwrap();
        alice.room(&room.id).await.unwrap()
    };
    let connect = |token: &str| {
        let cfg = SessionConfig {
            url: anon.ws_url(),
            token: token.to_owned(),
            since: BTreeMap::new(),
            reconnect: true,
        };
        Session::connect(cfg)
    };
    let sender = Arc::new(connect(&a.token).await.unwrap());
    let mut receiver = connect(&b.token).await.unwrap();
    let total = 400u64;
    let sends = {
        let (sender, room) = (sender.clone(), room.id.clone());
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for t in 0..4 {
                let (sender, room) = (sender.clone(), room.clone());
                tasks.push(tokio::spawn(async move {
                    for i in (t..total).step_by(4) {
                        sender
                            .send_with_id(&room, &format!("c{i}"), &format!("n{i}"))
                            .await
                            .expect("acked in the end");
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(250)).await;
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    node = spawn(data.path(), port).await;
    sends.await.unwrap();

    let mut seqs = Vec::new();
    while (seqs.len() as u64) < total {
        let frame =
            tokio::time::timeout(Duration::from_secs(10), receiver.next_frame()).await.unwrap().unwrap();
        if let switchboard_client::protocol::ServerFrame::Message(m) = frame {
            seqs.push(m.seq);
        }
    }
    let first = room.last_seq + 1;
    assert_eq!(seqs, (first..first + total).collect::<Vec<_>>(), "every message once, in order");
    assert_eq!(all_messages(&alice, &room.id).await.len() as u64, total, "no duplicate stored");
    node.child.kill().unwrap();
    let _ = node.child.wait();
}

/// With few files to spare, idle sockets fill them; the listener backs off instead of spinning,
/// and once the head deadline closes the idle ones, `/healthz` answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_files_the_listener_backs_off_and_recovers() {
    let data = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let mut child = Command::new("prlimit")
        .arg("--nofile=64:64")
        .arg(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data.path())
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .args(["--request-head-timeout-ms", "1500", "--max-connections-per-ip", "0"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("prlimit runs the binary");
    let base = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..200 {
        if reqwest::get(format!("{base}/readyz")).await.is_ok_and(|r| r.status().is_success()) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ready, "server did not become ready");
    // Far more idle sockets than the process has files left.
    let mut idle = Vec::new();
    for _ in 0..120 {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            idle.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // The deadline frees the accepted ones; the rest are accepted and freed in turn.
    let mut healthy = false;
    for _ in 0..40 {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        if client.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(healthy, "/healthz answers once idle sockets are cut");
    let metrics =
        reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics")).await.unwrap().text().await.unwrap();
    let errors: f64 = metrics
        .lines()
        .find(|l| l.starts_with("switchboard_accept_errors_total "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0);
    assert!(errors >= 1.0, "the listener ran out of files: {errors}");
    assert!(errors < 500.0, "and backed off instead of spinning: {errors} failed accepts");
    drop(idle);
    let _ = child.kill();
    let _ = child.wait();
}
