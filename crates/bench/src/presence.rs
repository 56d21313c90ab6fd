//! Presence cost: frames that reach members per status change, and backend calls per connect
//! and per change (from the server's `presence_calls` metric: each call is one round trip to
//! Redis, a batch read is one pipeline).
//!
//! One public room of M members, all connected. One member then changes status K times each
//! way: away ↔ online (no arrival or departure), and offline ↔ online (it disconnects, waits out
//! the server's grace, connects again). Every other member counts the `presence` and `online`
//! frames it receives.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt, stream};
use tokio_tungstenite::tungstenite::Message;

use crate::report;
use crate::setup::{self, Target, Ws};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// Members of the room (all connected).
    #[arg(long, default_value_t = 10)]
    members: usize,
    /// Changes of each kind.
    #[arg(long, default_value_t = 3)]
    changes: usize,
    /// The server's `presence_grace_ms` plus its sweep: how long a departure takes to show.
    #[arg(long, default_value_t = 1500)]
    settle_ms: u64,
    /// The server's `/metrics` URL, for backend calls per connect and per change.
    #[arg(long)]
    metrics: Option<String>,
    /// Connections opening at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

/// Frames counted by the watchers.
#[derive(Default)]
struct Counts {
    presence: AtomicU64,
    online: AtomicU64,
}

/// The server's presence backend calls by reason.
async fn calls(metrics: Option<&str>) -> anyhow::Result<Vec<(String, f64)>> {
    let Some(url) = metrics else { return Ok(Vec::new()) };
    let text = reqwest::get(url).await?.text().await?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("switchboard_presence_calls_total{reason=\""))
        .filter_map(|l| {
            let (reason, rest) = l.split_once("\"}")?;
            Some((reason.to_owned(), rest.trim().parse().ok()?))
        })
        .collect())
}

fn delta(after: &[(String, f64)], before: &[(String, f64)], reason: &str) -> f64 {
    let get = |v: &[(String, f64)]| v.iter().find(|(r, _)| r == reason).map_or(0.0, |(_, n)| *n);
    get(after) - get(before)
}

async fn settle(counts: &Counts, quiet: Duration) -> (u64, u64) {
    // Wait until nothing has arrived for `quiet`.
    let mut last = (u64::MAX, u64::MAX);
    loop {
        tokio::time::sleep(quiet).await;
        let now = (counts.presence.load(Ordering::Relaxed), counts.online.load(Ordering::Relaxed));
        if now == last {
            return now;
        }
        last = now;
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.members < 2 {
        bail!("--members must be at least 2");
    }
    let tag = setup::run_tag();
    let users = setup::users(&args.target, &format!("pres-{tag}-"), args.members).await?;
    let rest = setup::Rest::new(args.target.base());
    let room = rest.public_room(&users.tokens[0], &format!("presence {tag}")).await?;
    let joined: Vec<anyhow::Result<u64>> = stream::iter(users.tokens[1..].iter())
        .map(|t| rest.join(t, &room))
        .buffer_unordered(32)
        .collect()
        .await;
    for j in joined {
        j?;
    }
    let url = setup::ws_url(args.target.base(), "/v1/ws");
    let metrics = args.metrics.as_deref();
    // Members 1.. watch; member 0 changes.
    let before_connect = calls(metrics).await?;
    let started = Instant::now();
    let watchers: Vec<anyhow::Result<Ws>> = stream::iter(1..args.members)
        .map(|i| {
            let (url, target, token) = (url.clone(), args.target.clone(), users.tokens[i].clone());
            async move {
                let mut ws = setup::connect(&url, &target, i).await?;
                setup::hello(&mut ws, &token, None).await?;
                Ok(ws)
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let connect_secs = started.elapsed().as_secs_f64();
    let after_connect = calls(metrics).await?;
    let counts = Arc::new(Counts::default());
    let mut readers = Vec::new();
    for ws in watchers {
        let mut ws = ws.context("a watcher failed to connect")?;
        let (counts, subject) = (counts.clone(), format!("\"user\":\"{}\"", users.ids[0]));
        readers.push(tokio::spawn(async move {
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Text(t) = m {
                    if t.contains("\"op\":\"presence\"") && t.contains(&subject) {
                        counts.presence.fetch_add(1, Ordering::Relaxed);
                    } else if t.contains("\"op\":\"online\"") {
                        counts.online.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let quiet = Duration::from_millis(args.settle_ms);
    // Everyone's own arrival has gone out before counting starts.
    settle(&counts, quiet).await;
    counts.presence.store(0, Ordering::Relaxed);
    counts.online.store(0, Ordering::Relaxed);
    let watchers_n = (args.members - 1) as f64;

    // away <-> online on one connection.
    let mut ws = setup::connect(&url, &args.target, 0).await?;
    setup::hello(&mut ws, &users.tokens[0], None).await?;
    settle(&counts, quiet).await;
    let (p0, o0) = (counts.presence.load(Ordering::Relaxed), counts.online.load(Ordering::Relaxed));
    let before_status = calls(metrics).await?;
    for i in 0..args.changes * 2 {
        let status = if i % 2 == 0 { "away" } else { "online" };
        ws.send(Message::Text(serde_json::json!({"op": "status", "status": status}).to_string().into()))
            .await?;
        // Past the server's per-user throttle, so each change goes out on its own.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let (p1, o1) = settle(&counts, quiet).await;
    let after_status = calls(metrics).await?;
    let status_changes = (args.changes * 2) as f64;

    // offline <-> online: disconnect, let the grace pass, connect again.
    let mut departures = 0;
    for _ in 0..args.changes {
        let _ = ws.close(None).await;
        drop(ws);
        departures += 1;
        tokio::time::sleep(quiet).await;
        ws = setup::connect(&url, &args.target, 0).await?;
        setup::hello(&mut ws, &users.tokens[0], None).await?;
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let (p2, o2) = settle(&counts, quiet).await;
    let arrivals = (departures * 2) as f64;
    for r in readers {
        r.abort();
    }
    if p2 + o2 == p0 + o0 {
        bail!("no presence or online frame reached any member: presence is off or broken");
    }
    let per = |n: u64, changes: f64| n as f64 / changes / watchers_n;
    let results = serde_json::json!({
        "members": args.members,
        "connect_secs": connect_secs,
        "away_online": {
            "changes": status_changes,
            "presence_frames_per_change_per_member": per(p1 - p0, status_changes),
            "online_frames_per_change_per_member": per(o1 - o0, status_changes),
        },
        "offline_online": {
            "changes": arrivals,
            "presence_frames_per_change_per_member": per(p2 - p1, arrivals),
            "online_frames_per_change_per_member": per(o2 - o1, arrivals),
        },
        "backend_calls_per_connect": {
            "connect": delta(&after_connect, &before_connect, "connect") / watchers_n,
            "get": delta(&after_connect, &before_connect, "get") / watchers_n,
            "count": delta(&after_connect, &before_connect, "count") / watchers_n,
        },
        "backend_calls_per_status_change": delta(&after_status, &before_status, "status") / status_changes,
    });
    let summary = format!(
        "presence: {} members; per away/online change {:.3} presence + {:.3} online frames per member; per offline/online change {:.3} presence + {:.3} online frames per member; backend calls per connect {:.2} (connect) + {:.2} (get) + {:.2} (count), per status change {:.2}",
        args.members,
        per(p1 - p0, status_changes),
        per(o1 - o0, status_changes),
        per(p2 - p1, arrivals),
        per(o2 - o1, arrivals),
        results["backend_calls_per_connect"]["connect"].as_f64().unwrap_or(0.0),
        results["backend_calls_per_connect"]["get"].as_f64().unwrap_or(0.0),
        results["backend_calls_per_connect"]["count"].as_f64().unwrap_or(0.0),
        results["backend_calls_per_status_change"].as_f64().unwrap_or(0.0),
    );
    report::finish(&summary, &results, args.target.json.as_deref())
}
