//! Floods a stranger could send, and what they cost: a login flood, a sign-up flood and a
//! slow-connection flood, one after another, each from many source addresses (127.0.x.y), while
//! a probe user keeps sending and reading over REST. Reports per flood: requests answered by
//! kind (ok, refused with 429, turned away with 503, failed), the server's peak RSS over its
//! RSS before the floods, and the probe's latency against its own latency before the floods
//! (the baseline, measured in the same run). Fails when the peak RSS growth passes
//! `--max-rss-growth-mb`, when a probe request fails, or when a slow connection outlives the
//! server's deadlines.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::report;
use crate::setup::{self, Rest, Target};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// The server's process id, to sample its RSS from /proc.
    #[arg(long)]
    pid: u32,
    /// Wrong-password logins in the login flood.
    #[arg(long, default_value_t = 600)]
    logins: usize,
    /// Sign-ups in the sign-up flood.
    #[arg(long, default_value_t = 300)]
    signups: usize,
    /// Requests of a flood in flight at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Connections in the slow-connection flood (half silent, half trickling a header line).
    #[arg(long, default_value_t = 1000)]
    slow: usize,
    /// How long slow connections are watched; set it past the server's request-head deadline.
    #[arg(long, default_value_t = 20.0)]
    slow_secs: f64,
    /// Source addresses the floods come from (127.0.1.1 onwards).
    #[arg(long, default_value_t = 200)]
    flood_addrs: u16,
    /// Probe requests per second (a send and a history read each).
    #[arg(long, default_value_t = 10.0)]
    probe_rate: f64,
    /// Fail when the server's RSS grows by more than this over its RSS before the floods.
    #[arg(long, default_value_t = 64)]
    max_rss_growth_mb: u64,
}

/// Resident set size of a process in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc")?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    line.split_whitespace().nth(1).context("VmRSS value")?.parse().context("VmRSS number")
}

fn flood_addr(i: usize, n: u16) -> IpAddr {
    let k = u16::try_from(i % usize::from(n.max(1))).unwrap_or(0);
    IpAddr::V4(Ipv4Addr::new(127, 0, 1 + (k / 250) as u8, 1 + (k % 250) as u8))
}

/// Samples RSS every 20 ms until stopped; returns the peak.
fn sample_peak(pid: u32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(rss_kib(pid).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak.max(rss_kib(pid).unwrap_or(0))
    })
}

/// Another user's traffic: one send and one history read per tick, timed.
struct Probe {
    rest: Rest,
    http: reqwest::Client,
    token: String,
    room: String,
    base: String,
    seq: AtomicU64,
}

impl Probe {
    async fn once(&self) -> anyhow::Result<u64> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let body = serde_json::json!({"client_msg_id": format!("probe-{n}"), "body": format!("probe {n}")});
        self.rest.post(&format!("/v1/rooms/{}/messages", self.room), Some(&self.token), &body).await?;
        let resp = self
            .http
            .get(format!("{}/v1/rooms/{}/messages?limit=20", self.base, self.room))
            .bearer_auth(&self.token)
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("probe history read: {}", resp.status());
        }
        Ok(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    /// Probes at `rate` per second until `stop`; returns the latency histogram and failures.
    fn run(
        self: Arc<Self>,
        rate: f64,
        stop: Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<(Histogram<u64>, u64)> {
        tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            let mut failed = 0;
            let every = Duration::from_secs_f64(1.0 / rate.max(0.1));
            while !stop.load(Ordering::Relaxed) {
                match self.once().await {
                    Ok(us) => {
                        let _ = h.record(us);
                    }
                    Err(e) => {
                        eprintln!("probe failed: {e:#}");
                        failed += 1;
                    }
                }
                tokio::time::sleep(every).await;
            }
            (h, failed)
        })
    }
}

#[derive(Default, Debug)]
struct Outcomes {
    ok: u64,
    refused_401: u64,
    throttled_429: u64,
    busy_503: u64,
    other: u64,
}

impl Outcomes {
    fn count(&mut self, status: Option<u16>) {
        match status {
            Some(200 | 201) => self.ok += 1,
            Some(401) => self.refused_401 += 1,
            Some(429) => self.throttled_429 += 1,
            Some(503) => self.busy_503 += 1,
            _ => self.other += 1,
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({"ok": self.ok, "401": self.refused_401, "429": self.throttled_429,
            "503": self.busy_503, "other": self.other})
    }
}

/// Clients bound to the flood's source addresses, one per address.
fn clients(n: u16) -> anyhow::Result<Vec<reqwest::Client>> {
    (0..usize::from(n.max(1)))
        .map(|i| Ok(reqwest::Client::builder().local_address(flood_addr(i, n)).build()?))
        .collect()
}

async fn post_flood(
    clients: &[reqwest::Client],
    base: &str,
    path: &str,
    n: usize,
    concurrency: usize,
    body: impl Fn(usize) -> serde_json::Value,
) -> Outcomes {
    let statuses: Vec<Option<u16>> = stream::iter(0..n)
        .map(|i| {
            let req = clients[i % clients.len()].post(format!("{base}{path}")).json(&body(i));
            async move { req.send().await.ok().map(|r| r.status().as_u16()) }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut out = Outcomes::default();
    for s in statuses {
        out.count(s);
    }
    out
}

/// Opens `n` connections that never finish a request: the odd ones send nothing, the even ones
/// trickle a header line every second. Returns how many the server had closed after `watch`.
async fn slow_flood(base: &str, n: usize, addrs: u16, watch: Duration) -> anyhow::Result<(usize, usize)> {
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let server: SocketAddr = tokio::net::lookup_host(host).await?.next().context("resolve")?;
    let closed = Arc::new(AtomicU64::new(0));
    let mut opened = 0;
    let mut tasks = Vec::new();
    for i in 0..n {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(flood_addr(i, addrs), 0))?;
        let Ok(mut tcp) = socket.connect(server).await else { continue };
        opened += 1;
        let closed = closed.clone();
        tasks.push(tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + watch;
            let mut buf = [0u8; 512];
            if i % 2 == 0 {
                let _ = tcp.write_all(b"GET /healthz HTTP/1.1\r\n").await;
            }
            loop {
                let tick = tokio::time::sleep(Duration::from_secs(1));
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => return,
                    r = tcp.read(&mut buf) => {
                        if matches!(r, Ok(0) | Err(_)) {
                            closed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                    _ = tick, if i % 2 == 0 => {
                        if tcp.write_all(b"X-Trickle: 1\r\n").await.is_err() {
                            closed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok((opened, usize::try_from(closed.load(Ordering::Relaxed)).unwrap_or(0)))
}

fn ratio(during: &Histogram<u64>, before: &Histogram<u64>, q: f64) -> f64 {
    let b = before.value_at_quantile(q).max(1) as f64;
    during.value_at_quantile(q) as f64 / b
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let tag = setup::run_tag();
    let base = args.target.url.trim_end_matches('/').to_owned();
    let rest = Rest::new(&base);
    let probe_user = setup::users(&args.target, &format!("probe-{tag}-"), 1).await?;
    let token = probe_user.tokens[0].clone();
    let room = rest.public_room(&token, &format!("probe {tag}")).await?;
    let victim = format!("victim-{tag}");
    rest.post(
        "/v1/users",
        None,
        &serde_json::json!({"username": victim, "password": "the victim's password"}),
    )
    .await?;
    let probe = Arc::new(Probe {
        rest: rest.clone(),
        http: reqwest::Client::new(),
        token,
        room,
        base: base.clone(),
        seq: AtomicU64::new(0),
    });
    let clients = clients(args.flood_addrs)?;

    // Baseline: the probe alone.
    let stop = Arc::new(AtomicBool::new(false));
    let baseline = probe.clone().run(args.probe_rate, stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let (before_lat, before_failed) = baseline.await?;
    let rss_before = rss_kib(args.pid)?;
    eprintln!(
        "baseline: RSS {} MB, probe p50 {:.2} ms",
        rss_before / 1024,
        before_lat.value_at_quantile(0.5) as f64 / 1e3
    );

    let mut phases = Vec::new();
    let mut worst_growth_kib = 0u64;
    let mut probe_failures = before_failed;
    for phase in ["login flood", "sign-up flood", "slow-connection flood"] {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = sample_peak(args.pid, stop.clone());
        let lat = probe.clone().run(args.probe_rate, stop.clone());
        let started = Instant::now();
        let (outcomes, slow) = match phase {
            "login flood" => {
                let v = victim.clone();
                let o = post_flood(&clients, &base, "/v1/sessions", args.logins, args.concurrency, |i| {
                    // Half against the victim's account, half against names that do not exist.
                    let user = if i % 2 == 0 { v.clone() } else { format!("nobody-{i}") };
                    serde_json::json!({"username": user, "password": format!("guess-{i:06}")})
                })
                .await;
                (o, None)
            }
            "sign-up flood" => {
                let t = tag.clone();
                let o = post_flood(&clients, &base, "/v1/users", args.signups, args.concurrency, |i| {
                    serde_json::json!({"username": format!("flood-{t}-{i}"), "password": "flood password"})
                })
                .await;
                (o, None)
            }
            _ => {
                let watch = Duration::from_secs_f64(args.slow_secs);
                (Outcomes::default(), Some(slow_flood(&base, args.slow, args.flood_addrs, watch).await?))
            }
        };
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let peak_kib = peak.await?;
        let (during, failed) = lat.await?;
        probe_failures += failed;
        let growth = peak_kib.saturating_sub(rss_before);
        worst_growth_kib = worst_growth_kib.max(growth);
        eprintln!(
            "{phase}: {:.1} s, {outcomes:?}, slow (opened, closed by server) {slow:?}, peak RSS +{} MB, probe p50 {:.2} ms (x{:.2}), p99 {:.2} ms (x{:.2})",
            took.as_secs_f64(),
            growth / 1024,
            during.value_at_quantile(0.5) as f64 / 1e3,
            ratio(&during, &before_lat, 0.5),
            during.value_at_quantile(0.99) as f64 / 1e3,
            ratio(&during, &before_lat, 0.99),
        );
        phases.push(serde_json::json!({
            "phase": phase,
            "seconds": took.as_secs_f64(),
            "outcomes": outcomes.json(),
            "slow_opened": slow.map(|s| s.0),
            "slow_closed_by_server": slow.map(|s| s.1),
            "peak_rss_growth_mb": growth as f64 / 1024.0,
            "probe_ms": report::percentiles_ms(&during),
            "probe_p50_ratio": ratio(&during, &before_lat, 0.5),
            "probe_p99_ratio": ratio(&during, &before_lat, 0.99),
        }));
        if let Some((opened, closed)) = slow
            && closed < opened
        {
            bail!(
                "{} of {opened} slow connections were still open after {:.0} s",
                opened - closed,
                args.slow_secs
            );
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_kib(args.pid)?;
    let results = serde_json::json!({
        "scenario": "abuse",
        "rss_before_mb": rss_before as f64 / 1024.0,
        "rss_after_mb": rss_after as f64 / 1024.0,
        "worst_peak_growth_mb": worst_growth_kib as f64 / 1024.0,
        "probe_baseline_ms": report::percentiles_ms(&before_lat),
        "probe_failures": probe_failures,
        "phases": phases,
    });
    let summary = format!(
        "abuse: RSS {} MB before, worst peak +{} MB (bound {} MB), {} MB after; probe failures {probe_failures}",
        rss_before / 1024,
        worst_growth_kib / 1024,
        args.max_rss_growth_mb,
        rss_after / 1024
    );
    report::finish(&summary, &results, args.target.json.as_deref())?;
    if worst_growth_kib > args.max_rss_growth_mb * 1024 {
        bail!(
            "peak RSS grew by {} MB, over the bound of {} MB",
            worst_growth_kib / 1024,
            args.max_rss_growth_mb
        );
    }
    if probe_failures > 0 {
        bail!("{probe_failures} probe requests failed during the floods");
    }
    Ok(())
}
