//! One room, many members, a few senders at a fixed total rate.
//!
//! Each message body carries its sender, its number and its send time. Every receiver checks the
//! room's `seq` is contiguous (Switchboard) and each sender's numbers increase, so lost,
//! duplicated and reordered deliveries are counted, and records send→deliver latency. Against
//! the baseline, senders send the very frame a Switchboard member receives, so both servers
//! move the same bytes and the receivers parse the same JSON.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt, stream};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;

use crate::report::{self, Latency};
use crate::setup::{self, Rest, Target, Ws};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// Members of the room (each one connection).
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// Members that also send.
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Total messages per second over all senders.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// The target is `switchboard-bench baseline-server` (plain text broadcast, no protocol).
    #[arg(long)]
    baseline: bool,
    /// Connections opened at once during setup.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    max_acked_seq: AtomicU64,
    deliveries: AtomicU64,
    lost: AtomicU64,
    duplicated: AtomicU64,
    closed: AtomicU64,
}

#[derive(Deserialize)]
struct Frame<'a> {
    op: &'a str,
    #[serde(default)]
    seq: u64,
    #[serde(default, borrow)]
    body: Option<std::borrow::Cow<'a, str>>,
}

/// `s<sender>:<n>:<micros since start>`.
fn parse_body(body: &str) -> Option<(usize, u64, u64)> {
    let mut parts = body.strip_prefix('s')?.splitn(3, ':');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

struct Receiver {
    index: usize,
    last_seq: u64,
    next_n: Vec<u64>,
}

impl Receiver {
    fn on_body(&mut self, body: &str, start: Instant, c: &Counters, lat: &Latency) {
        let Some((sender, n, t)) = parse_body(body) else { return };
        let now = start.elapsed().as_micros() as u64;
        lat.record(self.index, now.saturating_sub(t));
        c.deliveries.fetch_add(1, Relaxed);
        if let Some(next) = self.next_n.get_mut(sender) {
            if n < *next {
                c.duplicated.fetch_add(1, Relaxed);
            } else {
                *next = n + 1;
            }
        }
    }

    fn on_seq(&mut self, seq: u64, c: &Counters) {
        if seq <= self.last_seq {
            c.duplicated.fetch_add(1, Relaxed);
        } else {
            c.lost.fetch_add(seq - self.last_seq - 1, Relaxed);
            self.last_seq = seq;
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let tag = setup::run_tag();
    let members = args.members.max(1);
    let senders = args.senders.clamp(1, members);
    let rest = Rest::new(args.target.base());
    eprintln!("setup: {members} members ...");
    let (url, users) = if args.baseline {
        (setup::ws_url(args.target.base(), "/ws"), None)
    } else {
        (
            setup::ws_url(args.target.base(), "/v1/ws"),
            Some(setup::users(&args.target, &format!("fan-{tag}-"), members).await?),
        )
    };
    // Users exist once they have said hello (external tokens) or registered; then join the room.
    let (room, start_seq) = match &users {
        None => (String::new(), 0),
        Some(u) => {
            if args.target.secret.is_some() {
                connect_all(&url, &args.target, u, None, args.connect_concurrency).await?;
            }
            let room = rest.public_room(&u.tokens[0], &format!("fanout {tag}")).await?;
            let seqs: Vec<anyhow::Result<u64>> = stream::iter(u.tokens.iter().skip(1))
                .map(|t| rest.join(t, &room))
                .buffer_unordered(32)
                .collect()
                .await;
            let mut last = 1;
            for s in seqs {
                last = last.max(s?);
            }
            (room, last)
        }
    };
    let conns = match &users {
        Some(u) => {
            connect_all(&url, &args.target, u, Some((&room, start_seq)), args.connect_concurrency).await?
        }
        None => {
            let n: Vec<anyhow::Result<Ws>> = stream::iter(0..members)
                .map(|i| {
                    let (url, target) = (url.clone(), args.target.clone());
                    async move { setup::connect(&url, &target, i).await }
                })
                .buffer_unordered(args.connect_concurrency)
                .collect()
                .await;
            n.into_iter().collect::<anyhow::Result<Vec<_>>>()?
        }
    };
    eprintln!("setup done: {} connections; sending {} msg/s for {} s", conns.len(), args.rate, args.duration);

    let counters = Arc::new(Counters::default());
    let latency = Arc::new(Latency::new(64));
    let start = Instant::now();
    let mut receivers = Vec::new();
    let mut sinks = Vec::new();
    for (index, ws) in conns.into_iter().enumerate() {
        let (sink, mut rx) = ws.split();
        if index < senders {
            sinks.push(sink);
        }
        let (c, lat, baseline) = (counters.clone(), latency.clone(), args.baseline);
        let mut r = Receiver { index, last_seq: start_seq, next_n: vec![0; senders] };
        receivers.push(tokio::spawn(async move {
            while let Some(msg) = rx.next().await {
                let text = match msg {
                    Ok(Message::Text(t)) => t,
                    Ok(Message::Close(_)) | Err(_) => {
                        c.closed.fetch_add(1, Relaxed);
                        break;
                    }
                    Ok(_) => continue,
                };
                let Ok(f) = serde_json::from_str::<Frame<'_>>(&text) else { continue };
                match f.op {
                    "message" => {
                        if !baseline {
                            r.on_seq(f.seq, &c);
                        }
                        if let Some(b) = &f.body {
                            r.on_body(b, start, &c, &lat);
                        }
                    }
                    "edit" | "delete" | "member" => r.on_seq(f.seq, &c),
                    "ack" => {
                        c.acked.fetch_add(1, Relaxed);
                        c.max_acked_seq.fetch_max(f.seq, Relaxed);
                    }
                    "error" => {
                        c.refused.fetch_add(1, Relaxed);
                    }
                    _ => {}
                }
            }
        }));
    }

    // Senders: each at rate/senders, a few messages per tick at high rates.
    let per_sender = args.rate / senders as f64;
    let period = Duration::from_secs_f64((1.0 / per_sender).max(0.001));
    let per_tick = (per_sender * period.as_secs_f64()).round().max(1.0) as u64;
    let total_per_sender = (per_sender * args.duration).round() as u64;
    let mut sender_tasks = Vec::new();
    for (s, mut sink) in sinks.into_iter().enumerate() {
        let (c, room, baseline) = (counters.clone(), room.clone(), args.baseline);
        sender_tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n = 0u64;
            while n < total_per_sender {
                tick.tick().await;
                for _ in 0..per_tick.min(total_per_sender - n) {
                    let body = format!("s{s}:{n}:{}", start.elapsed().as_micros());
                    let text = if baseline {
                        // The frame a Switchboard member would receive, so both servers move the
                        // same bytes and the receivers do the same parsing work.
                        baseline_frame(&body, s, n)
                    } else {
                        serde_json::json!({"op":"send","room":room,"client_msg_id":format!("{s}-{n}"),"body":body})
                            .to_string()
                    };
                    if sink.feed(Message::Text(text.into())).await.is_err() {
                        return sink;
                    }
                    n += 1;
                    c.sent.fetch_add(1, Relaxed);
                }
                if sink.flush().await.is_err() {
                    return sink;
                }
            }
            sink
        }));
    }
    let progress = {
        let c = counters.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(1));
            t.tick().await;
            loop {
                t.tick().await;
                eprintln!(
                    "  {:>5.1}s sent {} acked {} deliveries {} lost {} dup {}",
                    start.elapsed().as_secs_f64(),
                    c.sent.load(Relaxed),
                    c.acked.load(Relaxed),
                    c.deliveries.load(Relaxed),
                    c.lost.load(Relaxed),
                    c.duplicated.load(Relaxed)
                );
            }
        })
    };
    let mut sinks = Vec::new();
    for t in sender_tasks {
        sinks.push(t.await.context("sender task")?);
    }
    let send_end = start.elapsed();
    // Wait until every receiver has everything (or 10 s of silence-tolerant grace).
    let sent = counters.sent.load(Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last_delivery_at = start.elapsed();
    let mut seen = 0;
    while Instant::now() < deadline {
        let expected = if args.baseline { sent } else { counters.acked.load(Relaxed) } * members as u64;
        let d = counters.deliveries.load(Relaxed);
        if d != seen {
            seen = d;
            last_delivery_at = start.elapsed();
        }
        if d >= expected
            && (args.baseline || counters.acked.load(Relaxed) + counters.refused.load(Relaxed) >= sent)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    progress.abort();
    for s in &mut sinks {
        let _ = s.close().await;
    }
    drop(sinks);
    let final_seq = counters.max_acked_seq.load(Relaxed);
    for r in &receivers {
        r.abort();
    }
    // What never arrived by the end of the wait counts as lost too.
    let deliveries = counters.deliveries.load(Relaxed);
    let expected =
        if args.baseline { sent * members as u64 } else { counters.acked.load(Relaxed) * members as u64 };
    let missing_at_end = expected.saturating_sub(deliveries);
    let lost = counters.lost.load(Relaxed) + missing_at_end;
    let dup = counters.duplicated.load(Relaxed);
    let secs = last_delivery_at.as_secs_f64().max(1e-9);
    let rate = deliveries as f64 / secs;
    let h = latency.merged();
    let pct = report::percentiles_ms(&h);
    let target = if args.baseline { "baseline" } else { "switchboard" };
    let summary = format!(
        "fanout {target}: members={members} senders={senders} rate={}/s: sent {sent} acked {} refused {} | {deliveries} deliveries in {:.2}s = {:.0}/s | latency p50 {} ms p99 {} ms p99.9 {} ms | lost {lost} dup {dup} closed {}",
        args.rate,
        counters.acked.load(Relaxed),
        counters.refused.load(Relaxed),
        secs,
        rate,
        pct["p50_ms"],
        pct["p99_ms"],
        pct["p999_ms"],
        counters.closed.load(Relaxed),
    );
    let results = serde_json::json!({
        "scenario": "fanout", "target": target, "url": args.target.url, "members": members,
        "senders": senders, "rate": args.rate, "duration_s": args.duration, "sent": sent,
        "acked": counters.acked.load(Relaxed), "refused": counters.refused.load(Relaxed),
        "final_seq": final_seq, "deliveries": deliveries, "deliveries_per_s": rate,
        "send_phase_s": send_end.as_secs_f64(), "latency": pct, "lost": lost, "duplicated": dup,
        "closed": counters.closed.load(Relaxed),
    });
    report::finish(&summary, &results, args.target.json.as_deref())?;
    // A send with neither ack nor error, or a run where nothing was acked, is a failure too:
    // counting deliveries against acks alone would pass it.
    let acked = counters.acked.load(Relaxed);
    let unanswered =
        if args.baseline { 0 } else { sent.saturating_sub(acked + counters.refused.load(Relaxed)) };
    if lost > 0 || dup > 0 || unanswered > 0 || (!args.baseline && sent > 0 && acked == 0) {
        anyhow::bail!("{lost} lost, {dup} duplicated, {unanswered} sends unanswered, {acked} acked");
    }
    Ok(())
}

/// A message frame shaped and sized like Switchboard's (UUID-sized ids, RFC 3339 time).
fn baseline_frame(body: &str, sender: usize, n: u64) -> String {
    serde_json::json!({
        "op": "message",
        "id": format!("01a22400-0000-7000-8000-{:012x}", n),
        "room": "01a22400-0000-7000-8000-000000000000",
        "seq": n + 1,
        "author": format!("01a22400-0000-7000-8000-{:012x}", sender),
        "body": body,
        "ts": "2026-11-29T00:00:00.000Z",
        "client_msg_id": format!("{sender}-{n}"),
    })
    .to_string()
}

/// Connects and says hello for every user, a few at a time.
async fn connect_all(
    url: &str,
    target: &Target,
    users: &setup::Users,
    since: Option<(&str, u64)>,
    concurrency: usize,
) -> anyhow::Result<Vec<Ws>> {
    let conns: Vec<anyhow::Result<Ws>> = stream::iter(users.tokens.iter().enumerate())
        .map(|(i, token)| async move {
            let mut ws = setup::connect(url, target, i).await?;
            setup::hello(&mut ws, token, since).await?;
            Ok(ws)
        })
        .buffered(concurrency)
        .collect()
        .await;
    conns.into_iter().collect()
}
