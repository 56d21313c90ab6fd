//! `/metrics` is scraped over HTTP: every documented metric is there, and moves with traffic.

mod common;

use std::collections::BTreeMap;

use common::{TestServer, expect_frame};
use switchboard_client::protocol::{RoomKind, ServerFrame};

async fn scrape(server: &TestServer) -> String {
    let resp = reqwest::get(format!("{}/metrics", server.metrics)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().contains("openmetrics-text"));
    resp.text().await.unwrap()
}

/// The value of the first sample whose name and labels start with `prefix`.
fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with([' ', '{']))
        .or_else(|| text.lines().find(|l| l.starts_with(prefix)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_is_exported_and_moves_with_traffic() {
    let server = TestServer::with(|c| c.send_queue = 4).await;
    let before = scrape(&server).await;
    for name in [
        "switchboard_connections",
        "switchboard_frames_in_total",
        "switchboard_frames_out_total",
        "switchboard_sends_accepted_total",
        "switchboard_store_append_seconds_count",
        "switchboard_fanout_seconds_count",
        "switchboard_queue_depth_count",
        "switchboard_slow_consumer_closes_total",
        "switchboard_resumes_total",
        "switchboard_replayed_events_total",
        "switchboard_gaps_total",
        "switchboard_connections_refused_total",
        "switchboard_accept_errors_total",
    ] {
        assert!(before.lines().any(|l| l.starts_with(name)), "{name} missing:\n{before}");
    }
    // Not on the client listener: how busy the node is, is not a stranger's business.
    let public = reqwest::get(format!("{}/metrics", server.base)).await.unwrap();
    assert_eq!(public.status(), 404);
    for series in [
        "switchboard_sessions{state=\"handshake\"}",
        "switchboard_sessions{state=\"active\"}",
        "switchboard_backend_errors_total{backend=\"store\"}",
        "switchboard_backend_errors_total{backend=\"bus\"}",
        "switchboard_throttled_total{reason=\"login\"}",
        "switchboard_throttled_total{reason=\"send\"}",
    ] {
        assert!(before.contains(series), "{series} missing:\n{before}");
    }

    let (alice, _) = server.user("alice").await;
    let (bob, bob_user) = server.user("bob").await;
    let room = alice.create_room("m", RoomKind::Private, &[&bob_user.id]).await.unwrap();
    let sender = server.session(&alice, BTreeMap::new()).await;
    let mut reader = server.session(&bob, BTreeMap::new()).await;
    let during = scrape(&server).await;
    assert_eq!(value(&during, "switchboard_connections"), 2.0);
    assert_eq!(value(&during, "switchboard_node_info{node=\"node-"), 1.0, "the node names itself");
    assert_eq!(value(&during, "switchboard_sessions{state=\"active\"}"), 2.0);
    for i in 0..20 {
        sender.send(&room.id, &format!("m{i}")).await.unwrap();
    }
    assert!(sender.send(&room.id, "   ").await.is_err());
    expect_frame(&mut reader, |f| matches!(f, ServerFrame::Message(m) if m.body == "m19")).await;
    let since = reader.positions();
    drop(reader);
    alice.post_message(&room.id, "rest-1", "while away").await.unwrap();
    let mut resumed = server.session(&bob, BTreeMap::from([(room.id.clone(), since[&room.id])])).await;
    expect_frame(&mut resumed, |f| matches!(f, ServerFrame::Message(m) if m.body == "while away")).await;

    // A slow consumer: a socket with a tiny receive buffer that never reads, in a room that
    // gets more than the kernel's socket buffers can hold.
    let mut slow = common::raw_slow_reader(&server).await;
    common::raw_hello(&mut slow, bob.token().unwrap()).await;
    let mut flood = Vec::new();
    for t in 0..4 {
        let (alice, room) = (alice.clone(), room.id.clone());
        flood.push(tokio::spawn(async move {
            for i in (t..2000).step_by(4) {
                alice.post_message(&room, &format!("flood-{i}"), &"x".repeat(3000)).await.unwrap();
            }
        }));
    }
    for f in flood {
        f.await.unwrap();
    }
    assert_eq!(common::raw_close_code(&mut slow).await, Some(4010));
    let after = scrape(&server).await;
    let moved = |name: &str| value(&after, name) > value(&before, name);
    for name in [
        "switchboard_frames_in_total",
        "switchboard_frames_out_total",
        "switchboard_sends_accepted_total",
        "switchboard_store_append_seconds_count",
        "switchboard_fanout_seconds_count",
        "switchboard_queue_depth_count",
        "switchboard_resumes_total",
        "switchboard_replayed_events_total",
    ] {
        assert!(moved(name), "{name} did not move:\n{after}");
    }
    assert_eq!(value(&after, "switchboard_sends_accepted_total"), 2021.0);
    assert!(value(&after, "switchboard_sends_refused_total{reason=\"empty_body\"}") >= 1.0, "{after}");
    assert!(value(&after, "switchboard_slow_consumer_closes_total") >= 1.0, "{after}");
    assert!(value(&after, "switchboard_closes_total{code=\"4010\"}") >= 1.0, "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_alert_rules_use_only_exported_metrics() {
    let server = TestServer::with(|c| c.hello_timeout_ms = 100).await;
    // Families keyed by codes appear with their first sample: one refused send, one close.
    let (alice, _) = server.user("alice").await;
    let room = alice.create_room("r", RoomKind::Public, &[]).await.unwrap();
    assert!(alice.post_message(&room.id, "k", " ").await.is_err());
    let mut ws = common::raw(&server).await;
    assert_eq!(common::raw_close_code(&mut ws).await, Some(4001));
    let text = scrape(&server).await;
    let exported: std::collections::BTreeSet<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let mut used = 0;
    for file in ["grafana-dashboard.json", "prometheus-alerts.yml"] {
        let content = std::fs::read_to_string(deploy.join(file)).unwrap();
        for (i, _) in content.match_indices("switchboard_") {
            let name: String =
                content[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let base = ["_bucket", "_count", "_sum", "_total"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(exported.contains(base), "{file} uses {name}, which /metrics does not export");
            used += 1;
        }
    }
    assert!(used > 20, "the files were read ({used} references)");
}
