//! History pages on PostgreSQL with 10 million messages in the table, against the same pages with
//! 10 thousand, in the same run: the latest page, a page deep in a room's past, a forward page
//! (as a resume reads) and a timeline replay.
//!
//! `SWITCHBOARD_BENCH_POSTGRES=postgres://postgres@127.0.0.1:5432/DB \
//!  cargo bench -p switchboard --bench history_pg [-- MESSAGES ROOMS SAMPLES]`
//!
//! It fills fresh schemas in that database with `generate_series` (one statement, no client
//! round trips) and drops them afterwards.

use std::time::{Duration, Instant};

use switchboard::store::postgres::{PgOptions, PgStore};
use switchboard::store::{HistoryPage, Store};

async fn fill(url: &str, schema: &str, messages: u64, rooms: u64) -> PgStore {
    let opts = PgOptions {
        url: url.to_owned(),
        pool_size: 4,
        max_batch: 256,
        schema: Some(schema.to_owned()),
        connect_timeout: Duration::from_secs(10),
    };
    let store = PgStore::open(&opts).await.expect("open (creates the schema and migrates)");
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    let per_room = messages / rooms;
    let started = Instant::now();
    // Rooms r0..r{rooms}, each with `per_room` messages from one author, seq 1..=per_room.
    let sql = format!(
        "SET search_path = {schema};
         INSERT INTO users (id, username, created_at) VALUES ('author', 'author', 0);
         INSERT INTO rooms (id, name, kind, created_by, last_seq, msg_count, created_at)
           SELECT 'r' || g, 'room', 'public', 'author', {per_room}, {per_room}, 0 FROM generate_series(0, {rooms} - 1) g;
         INSERT INTO members (room_id, user_id, role) SELECT 'r' || g, 'author', 'owner' FROM generate_series(0, {rooms} - 1) g;
         INSERT INTO messages (room_id, seq, id, author, client_msg_id, body, ts, ord)
           SELECT 'r' || (g % {rooms}), g / {rooms} + 1, 'm' || g, 'author', 'k' || g,
                  repeat('x', 80), 1700000000000 + g, g / {rooms} + 1
             FROM generate_series(0, {messages} - 1) g;
         ANALYZE;"
    );
    client.batch_execute(&sql).await.expect("fill");
    eprintln!(
        "{schema}: {messages} messages in {rooms} rooms filled in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    store
}

/// Median and p99 of one call over `samples` rooms, in microseconds.
async fn measure<F, Fut>(samples: u64, rooms: u64, mut call: F) -> (f64, f64)
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(samples as usize);
    for i in 0..samples {
        // Spread over the rooms (a multiplicative walk), so caches hold no favourite.
        let room = format!("r{}", (i * 7919) % rooms);
        let t = Instant::now();
        call(room).await;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize];
    (at(0.5), at(0.99))
}

async fn run(store: &PgStore, samples: u64, rooms: u64, per_room: u64) -> Vec<(&'static str, (f64, f64))> {
    let mut out = Vec::new();
    let page = |before: Option<u64>, after: Option<u64>| HistoryPage {
        before_seq: before,
        after_seq: after,
        limit: 50,
    };
    out.push((
        "latest page",
        measure(samples, rooms, |r| async move {
            assert_eq!(
                store.history(&r, "", page(None, None)).await.unwrap().len(),
                50.min(per_room as usize)
            );
        })
        .await,
    ));
    let deep = per_room / 2;
    out.push((
        "page deep in the past",
        measure(samples, rooms, |r| async move {
            store.history(&r, "", page(Some(deep), None)).await.unwrap();
        })
        .await,
    ));
    out.push((
        "forward page (resume)",
        measure(samples, rooms, |r| async move {
            store.history(&r, "", page(None, Some(deep))).await.unwrap();
        })
        .await,
    ));
    out.push((
        "timeline replay of 100",
        measure(samples, rooms, |r| async move {
            store.timeline(&r, per_room.saturating_sub(100), 100).await.unwrap();
        })
        .await,
    ));
    out
}

#[tokio::main]
async fn main() {
    let url = std::env::var("SWITCHBOARD_BENCH_POSTGRES").expect("SWITCHBOARD_BENCH_POSTGRES=postgres://…");
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let messages = args.first().copied().unwrap_or(10_000_000);
    let rooms = args.get(1).copied().unwrap_or(10_000);
    let samples = args.get(2).copied().unwrap_or(2_000);
    let tag = std::process::id();
    let small_schema = format!("bench_small_{tag}");
    let big_schema = format!("bench_big_{tag}");
    let small_messages = (messages / 1000).max(1);
    // The same rooms (as many messages each), a thousand times fewer of them.
    let per_room = (messages / rooms).max(1);
    let small_rooms = (small_messages / per_room).max(1);
    let small = fill(&url, &small_schema, small_rooms * per_room, small_rooms).await;
    let big = fill(&url, &big_schema, messages, rooms).await;
    let small_res = run(&small, samples, small_rooms, per_room).await;
    let big_res = run(&big, samples, rooms, per_room).await;
    let small_total = small_rooms * per_room;
    println!(
        "| call | {small_total} messages: p50 / p99 (µs) | {messages} messages: p50 / p99 (µs) | p50 ratio |"
    );
    println!("|---|---|---|---|");
    for ((name, (sp50, sp99)), (_, (bp50, bp99))) in small_res.iter().zip(&big_res) {
        println!("| {name} | {sp50:.0} / {sp99:.0} | {bp50:.0} / {bp99:.0} | {:.2} |", bp50 / sp50);
    }
    small.close().await;
    big.close().await;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    for s in [small_schema, big_schema] {
        let _ = client.batch_execute(&format!("DROP SCHEMA {s} CASCADE")).await;
    }
}
