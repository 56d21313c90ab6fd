//! Many idle authenticated connections: how fast they open, and what each costs the server.

use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};

use crate::report;
use crate::setup::{self, Target, Ws};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Connections opening at once.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Seconds to hold them open after the last one is ready (answering pings).
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
    /// The server's process id, to read its RSS from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// Distinct users among the connections (connections beyond it are extra devices).
    #[arg(long)]
    users: Option<usize>,
    /// Rooms every user is in (public rooms the first user creates and the others join), to
    /// measure what a session costs per room.
    #[arg(long, default_value_t = 0)]
    rooms: usize,
}

/// Resident set size of a process in KiB, from /proc/<pid>/status.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let tag = setup::run_tag();
    let n_users = args.users.unwrap_or(args.count).clamp(1, args.count.max(1));
    let users = setup::users(&args.target, &format!("conn-{tag}-"), n_users).await?;
    let url = setup::ws_url(args.target.base(), "/v1/ws");
    if args.rooms > 0 {
        let rest = setup::Rest::new(args.target.base());
        let made: Vec<anyhow::Result<()>> = stream::iter(0..args.rooms)
            .map(|r| {
                let (rest, users) = (rest.clone(), &users);
                async move {
                    let room = rest.public_room(&users.tokens[0], &format!("conn {r}")).await?;
                    for t in &users.tokens[1..] {
                        rest.join(t, &room).await?;
                    }
                    Ok(())
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        made.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        eprintln!("{} rooms made, every user in each", args.rooms);
    }
    let before = args.pid.and_then(rss_kib);
    eprintln!("opening {} connections ({} users)", args.count, n_users);
    let start = Instant::now();
    let mut ok: Vec<Ws> = Vec::with_capacity(args.count);
    let mut failed = 0usize;
    let mut results = stream::iter(0..args.count)
        .map(|i| {
            let (url, target, token) = (url.clone(), args.target.clone(), users.tokens[i % n_users].clone());
            async move {
                let mut ws = setup::connect(&url, &target, i).await?;
                setup::hello(&mut ws, &token, None).await?;
                anyhow::Ok(ws)
            }
        })
        .buffer_unordered(args.concurrency.max(1));
    let mut last_report = Instant::now();
    // RSS once half the connections are up: the second half's growth is the marginal cost of a
    // connection, free of one-off growth (page cache, allocator arenas, user creation).
    let mut half: Option<(usize, u64)> = None;
    while let Some(r) = results.next().await {
        match r {
            Ok(ws) => {
                ok.push(ws);
                if half.is_none() && ok.len() * 2 >= args.count {
                    half = args.pid.and_then(rss_kib).map(|r| (ok.len(), r));
                }
            }
            Err(e) => {
                if failed == 0 {
                    eprintln!("first failure: {e:#}");
                }
                failed += 1;
            }
        }
        if last_report.elapsed() > Duration::from_secs(1) {
            last_report = Instant::now();
            eprintln!("  {:>5.1}s ready {} failed {failed}", start.elapsed().as_secs_f64(), ok.len());
        }
    }
    drop(results);
    let connect_secs = start.elapsed().as_secs_f64();
    // Hold: read each socket so pings are answered, and count anything that closes.
    let held = ok.len();
    let readers: Vec<_> = ok
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_close() {
                        return false;
                    }
                }
                false
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(args.hold / 2.0)).await;
    let during = args.pid.and_then(rss_kib);
    tokio::time::sleep(Duration::from_secs_f64(args.hold / 2.0)).await;
    let dropped = readers.iter().filter(|r| r.is_finished()).count();
    for r in &readers {
        r.abort();
    }
    // Closed: what the server still holds once every session has gone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_close = args.pid.and_then(rss_kib);
    let per_conn = match (half, during) {
        (Some((n, h)), Some(d)) if held > n => Some(d.saturating_sub(h) as f64 * 1024.0 / (held - n) as f64),
        _ => None,
    };
    let summary = format!(
        "connections: {held} ready of {} in {connect_secs:.2}s = {:.0}/s, {failed} failed, {dropped} dropped while held{}",
        args.count,
        held as f64 / connect_secs.max(1e-9),
        per_conn
            .map(|b| format!(
                ", server RSS {:.0} B per added connection (second half; {} → {} KiB in all, {} KiB after closing)",
                b,
                before.unwrap_or(0),
                during.unwrap_or(0),
                after_close.unwrap_or(0)
            ))
            .unwrap_or_default(),
    );
    let results = serde_json::json!({
        "scenario": "connections", "url": args.target.url, "count": args.count, "ready": held,
        "failed": failed, "dropped_while_held": dropped, "connect_s": connect_secs,
        "connects_per_s": held as f64 / connect_secs.max(1e-9), "server_rss_kib_before": before,
        "server_rss_kib_half": half.map(|h| h.1), "server_rss_kib_held": during,
        "server_rss_bytes_per_connection": per_conn, "rooms_per_user": args.rooms,
        "server_rss_kib_after_close": after_close,
    });
    report::finish(&summary, &results, args.target.json.as_deref())?;
    if failed > 0 || dropped > 0 {
        anyhow::bail!("{failed} connections failed and {dropped} dropped");
    }
    Ok(())
}
