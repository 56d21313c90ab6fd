//! A reconnect storm: K clients in rooms of N drop at once, their rooms move on without them,
//! and all K resume with `since` at the same moment. Reports the time until every client has
//! caught up, and anything missing or duplicated.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use tokio_tungstenite::tungstenite::Message;

use crate::report::{self, Latency};
use crate::rooms;
use crate::setup::{self, Rest, Target};
use crate::track::{self, Totals, Tracker};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// Clients that drop and resume together.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Members per room.
    #[arg(long, default_value_t = 10)]
    room_size: usize,
    /// Messages each room gets while its members are away.
    #[arg(long, default_value_t = 20)]
    missed: u64,
    /// Connections opened at once during setup (the storm itself opens all at once).
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let tag = setup::run_tag();
    let size = args.room_size.max(2);
    let sizes = vec![size; (args.clients / size).max(1)];
    let clients: usize = sizes.iter().sum();
    eprintln!("setup: {clients} clients in {} rooms of {size} ...", sizes.len());
    let (users, layout, conns) =
        rooms::build(&args.target, &format!("storm-{tag}-"), &sizes, args.connect_concurrency).await?;
    drop(conns);
    tokio::time::sleep(Duration::from_millis(300)).await;
    eprintln!("all dropped; {} messages per room while away ...", args.missed);
    let rest = Rest::new(args.target.base());
    let start = Instant::now();
    let posts: Vec<anyhow::Result<serde_json::Value>> =
        stream::iter(layout.rooms.iter().flat_map(|(id, _, m)| (0..args.missed).map(move |n| (id, m[0], n))))
            .map(|(id, author, n)| {
                let (rest, token) = (rest.clone(), users.tokens[author].clone());
                async move {
                    let body = serde_json::json!({"client_msg_id": format!("away-{n}"), "body": track::body(author, n, start)});
                    rest.post(&format!("/v1/rooms/{id}/messages"), Some(&token), &body).await
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
    for p in posts {
        p?;
    }
    eprintln!("storm: {clients} clients resume at once");
    let totals = Arc::new(Totals::default());
    let latency = Arc::new(Latency::new(64));
    let url = setup::ws_url(args.target.base(), "/v1/ws");
    let storm = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, token) in users.tokens.iter().enumerate() {
        let (id, last, _) = layout.rooms[layout.room_of[i]].clone();
        let (url, target, token, t, lat) =
            (url.clone(), args.target.clone(), token.clone(), totals.clone(), latency.clone());
        let target_seq = last + args.missed;
        tasks.spawn(async move {
            let mut ws = setup::connect(&url, &target, i).await?;
            setup::hello_since(&mut ws, &token, serde_json::json!({ id.as_str(): last })).await?;
            let mut tracker = Tracker { index: i, last: [(id.clone(), last)].into_iter().collect() };
            while tracker.last.get(&id).copied().unwrap_or(0) < target_seq {
                match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => {
                        tracker.on_text(&text, start, &t, &lat);
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => anyhow::bail!("client {i} ended before catching up"),
                }
            }
            anyhow::Ok(storm.elapsed())
        });
    }
    let mut slowest = Duration::ZERO;
    let mut failed = 0;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(d)) => slowest = slowest.max(d),
            Ok(Err(e)) => {
                if failed == 0 {
                    eprintln!("first failure: {e:#}");
                }
                failed += 1;
            }
            Err(e) => anyhow::bail!("client task: {e}"),
        }
    }
    let expected = clients as u64 * args.missed;
    let deliveries = totals.deliveries.load(Relaxed);
    let lost = totals.lost.load(Relaxed) + expected.saturating_sub(deliveries);
    let dup = totals.duplicated.load(Relaxed);
    let summary = format!(
        "reconnect-storm: {clients} clients in {} rooms resumed at once, {} missed each: all caught up in {:.2}s | {deliveries} of {expected} replayed, {} gaps | lost {lost} dup {dup} failed {failed}",
        layout.rooms.len(),
        args.missed,
        slowest.as_secs_f64(),
        totals.gaps.load(Relaxed),
    );
    let results = serde_json::json!({
        "scenario": "reconnect-storm", "url": args.target.url, "clients": clients,
        "rooms": layout.rooms.len(), "missed_per_room": args.missed,
        "all_caught_up_s": slowest.as_secs_f64(), "deliveries": deliveries, "expected": expected,
        "gaps": totals.gaps.load(Relaxed), "lost": lost, "duplicated": dup, "failed": failed,
    });
    report::finish(&summary, &results, args.target.json.as_deref())?;
    if lost > 0 || dup > 0 || failed > 0 {
        anyhow::bail!("{lost} lost, {dup} duplicated, {failed} clients failed");
    }
    Ok(())
}
