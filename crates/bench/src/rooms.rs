//! Many small rooms: direct messages and groups of 3–20, every member sending now and then
//! (Poisson arrivals) so that the total rate is what was asked. Measures durable, acked
//! send→deliver latency across the whole population.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt, stream};
use tokio_tungstenite::tungstenite::Message;

use crate::report::{self, Latency};
use crate::setup::{self, Rest, Target, Ws};
use crate::track::{self, Seen, Totals, Tracker};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// Direct rooms (two members each).
    #[arg(long, default_value_t = 1000)]
    dms: usize,
    /// Group rooms, sized 3 to 20 members in turn.
    #[arg(long, default_value_t = 0)]
    groups: usize,
    /// Total messages per second over all members.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Connections opened at once during setup.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Send bodies of at least this many characters of ordinary chat prose (whole sentences),
    /// with the tracking tag in the `client_msg_id`, so that filters see what people write (0:
    /// the tag as the body).
    #[arg(long, default_value_t = 0)]
    text_chars: usize,
}

/// A room and the indexes of its members among the users.
pub struct Layout {
    pub rooms: Vec<(String, u64, Vec<usize>)>,
    /// For each user, the index of its room.
    pub room_of: Vec<usize>,
}

/// Users, rooms with them as members, then one live connection per user resuming each room
/// from its creation.
pub async fn build(
    target: &Target,
    prefix: &str,
    sizes: &[usize],
    concurrency: usize,
) -> anyhow::Result<(setup::Users, Layout, Vec<Ws>)> {
    let total: usize = sizes.iter().sum();
    let users = setup::users(target, prefix, total).await?;
    let url = setup::ws_url(target.base(), "/v1/ws");
    if target.secret.is_some() {
        // External users exist once they have said hello.
        let _ = connect(&url, target, &users, &vec![serde_json::json!({}); total], concurrency).await?;
    }
    let rest = Rest::new(target.base());
    let mut plans = Vec::new();
    let mut next = 0;
    for (i, size) in sizes.iter().enumerate() {
        plans.push((i, (next..next + size).collect::<Vec<usize>>()));
        next += size;
    }
    let made: Vec<anyhow::Result<(String, u64, Vec<usize>)>> = stream::iter(plans)
        .map(|(i, members)| {
            let (rest, users) = (rest.clone(), &users);
            async move {
                let others: Vec<String> = members[1..].iter().map(|m| users.ids[*m].clone()).collect();
                let kind = if members.len() == 2 { "dm" } else { "private" };
                let (id, mut last) =
                    rest.room(&users.tokens[members[0]], kind, &format!("room {i}"), &others).await?;
                if kind != "dm" {
                    // Group members are invited, as people are; each accepts by joining.
                    for m in &members[1..] {
                        last = last.max(rest.join(&users.tokens[*m], &id).await?);
                    }
                }
                Ok((id, last, members))
            }
        })
        .buffered(32)
        .collect()
        .await;
    let rooms = made.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let mut room_of = vec![0; total];
    for (r, (_, _, members)) in rooms.iter().enumerate() {
        for m in members {
            room_of[*m] = r;
        }
    }
    let since: Vec<serde_json::Value> = (0..total)
        .map(|u| {
            let (id, last, _) = &rooms[room_of[u]];
            serde_json::json!({ id.as_str(): last })
        })
        .collect();
    let conns = connect(&url, target, &users, &since, concurrency).await?;
    Ok((users, Layout { rooms, room_of }, conns))
}

async fn connect(
    url: &str,
    target: &Target,
    users: &setup::Users,
    since: &[serde_json::Value],
    concurrency: usize,
) -> anyhow::Result<Vec<Ws>> {
    let conns: Vec<anyhow::Result<Ws>> = stream::iter(users.tokens.iter().zip(since).enumerate())
        .map(|(i, (token, since))| async move {
            let mut ws = setup::connect(url, target, i).await?;
            setup::hello_since(&mut ws, token, since.clone()).await?;
            Ok(ws)
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    conns.into_iter().collect()
}

/// Room sizes: `dms` twos, then `groups` sizes cycling through 3..=20.
fn sizes(dms: usize, groups: usize) -> Vec<usize> {
    std::iter::repeat_n(2, dms).chain((0..groups).map(|g| 3 + g % 18)).collect()
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let tag = setup::run_tag();
    let sizes = sizes(args.dms, args.groups);
    anyhow::ensure!(!sizes.is_empty(), "no rooms: give --dms or --groups");
    eprintln!("setup: {} rooms, {} members ...", sizes.len(), sizes.iter().sum::<usize>());
    let (_users, layout, conns) =
        build(&args.target, &format!("rooms-{tag}-"), &sizes, args.connect_concurrency).await?;
    let members = conns.len();
    eprintln!("setup done: {members} connections; {} msg/s for {} s", args.rate, args.duration);
    let totals = Arc::new(Totals::default());
    let expected = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let latency = Arc::new(Latency::new(64));
    let start = Instant::now();
    let per_member = args.rate / members as f64;
    let mut tasks = Vec::new();
    let mut receivers = Vec::new();
    for (i, ws) in conns.into_iter().enumerate() {
        let (mut sink, mut rx) = ws.split();
        let (room_id, last, room_members) = &layout.rooms[layout.room_of[i]];
        let size = room_members.len() as u64;
        let mut tracker = Tracker { index: i, last: [(room_id.clone(), *last)].into_iter().collect() };
        let (t, lat, exp) = (totals.clone(), latency.clone(), expected.clone());
        receivers.push(tokio::spawn(async move {
            while let Some(Ok(msg)) = rx.next().await {
                if let Message::Text(text) = msg {
                    if tracker.on_text(&text, start, &t, &lat) == Seen::Ack {
                        // Every member of the room, the sender included, gets the message.
                        exp.fetch_add(size, Relaxed);
                    }
                } else if msg.is_close() {
                    t.closed.fetch_add(1, Relaxed);
                    break;
                }
            }
        }));
        let (t, room, duration) = (totals.clone(), room_id.clone(), args.duration);
        let text_chars = args.text_chars;
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                // Exponential gaps: a Poisson process at `per_member` messages per second.
                let gap = -(1.0 - rand::random::<f64>()).ln() / per_member;
                tokio::time::sleep(Duration::from_secs_f64(gap.min(3600.0))).await;
                if start.elapsed().as_secs_f64() >= duration {
                    return sink;
                }
                let frame = serde_json::json!({"op":"send","room":room,"client_msg_id":format!("{i}-{n}"),"body":track::body(i, n, start)});
                let frame = if text_chars == 0 {
                    frame
                } else {
                    let text = track::prose(text_chars, i, n);
                    serde_json::json!({"op":"send","room":room,"client_msg_id":track::key(i, n, start),"body":text})
                };
                if sink.send(Message::Text(frame.to_string().into())).await.is_err() {
                    return sink;
                }
                t.sent.fetch_add(1, Relaxed);
                n += 1;
            }
        }));
    }
    let mut sinks = Vec::new();
    for t in tasks {
        sinks.push(t.await.context("sender")?);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let settled = totals.acked.load(Relaxed) + totals.refused.load(Relaxed) >= totals.sent.load(Relaxed);
        if settled && totals.deliveries.load(Relaxed) >= expected.load(Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    for r in &receivers {
        r.abort();
    }
    drop(sinks);
    let deliveries = totals.deliveries.load(Relaxed);
    let lost = totals.lost.load(Relaxed) + expected.load(Relaxed).saturating_sub(deliveries);
    let dup = totals.duplicated.load(Relaxed);
    let pct = report::percentiles_ms(&latency.merged());
    let acked = totals.acked.load(Relaxed);
    let summary = format!(
        "rooms: {} rooms ({} dms, {} groups), {members} connections, {}/s for {}s: sent {} acked {acked} ({:.0}/s) refused {} | {deliveries} deliveries | latency p50 {} ms p99 {} ms p99.9 {} ms | lost {lost} dup {dup}",
        layout.rooms.len(),
        args.dms,
        args.groups,
        args.rate,
        args.duration,
        totals.sent.load(Relaxed),
        acked as f64 / args.duration,
        totals.refused.load(Relaxed),
        pct["p50_ms"],
        pct["p99_ms"],
        pct["p999_ms"],
    );
    let results = serde_json::json!({
        "scenario": "rooms", "url": args.target.url, "rooms": layout.rooms.len(), "dms": args.dms,
        "groups": args.groups, "connections": members, "rate": args.rate, "duration_s": args.duration,
        "sent": totals.sent.load(Relaxed), "acked": acked, "refused": totals.refused.load(Relaxed),
        "deliveries": deliveries, "elapsed_s": elapsed, "latency": pct, "lost": lost, "duplicated": dup,
    });
    report::finish(&summary, &results, args.target.json.as_deref())?;
    let sent = totals.sent.load(Relaxed);
    let unanswered = sent.saturating_sub(acked + totals.refused.load(Relaxed));
    if lost > 0 || dup > 0 || unanswered > 0 || (sent > 0 && acked == 0) {
        anyhow::bail!("{lost} lost, {dup} duplicated, {unanswered} sends unanswered, {acked} acked");
    }
    Ok(())
}
