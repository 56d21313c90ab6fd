//! Durable sends per second into the SQLite store: group commit against one fsync per message,
//! measured in the same run on the same disk so the ratio is meaningful.
//!
//! `cargo bench -p switchboard --bench store_append [-- MESSAGES CONCURRENCY]`

use std::sync::Arc;
use std::time::Instant;

use switchboard::store::sqlite::{SqliteOptions, SqliteStore};
use switchboard::store::{NewMessage, NewRoom, Store};
use switchboard_protocol::RoomKind;

async fn run(max_batch: usize, messages: usize, concurrency: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&SqliteOptions { path: dir.path().join("bench.db"), max_batch }).expect("open"),
    );
    let author = store.create_user("bench", "x").await.expect("user").id;
    let mut rooms = Vec::new();
    for i in 0..16 {
        let new = NewRoom {
            creator: author.clone(),
            name: format!("r{i}"),
            kind: RoomKind::Public,
            members: vec![],
        };
        rooms.push(store.create_room(new).await.expect("room").room.id);
    }
    let body = "x".repeat(100);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let (store, author, rooms, body) = (store.clone(), author.clone(), rooms.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            for i in (t..messages).step_by(concurrency) {
                let msg = NewMessage {
                    room: rooms[i % rooms.len()].clone(),
                    author: author.clone(),
                    client_msg_id: format!("m{i}"),
                    body: body.clone(),
                };
                store.append(msg).await.expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let rate = messages as f64 / start.elapsed().as_secs_f64();
    store.close().await;
    rate
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let messages = args.first().copied().unwrap_or(40_000);
    let concurrency = args.get(1).copied().unwrap_or(1024);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let single = run(1, messages / 10, concurrency).await;
        let group = run(1024, messages, concurrency).await;
        let serial = run(1024, messages / 10, 1).await;
        println!("durable appends (synchronous=FULL), {concurrency} concurrent senders, 100-byte bodies:");
        println!("  one fsync per message : {single:>10.0} msg/s");
        println!("  group commit          : {group:>10.0} msg/s  ({:.1}x)", group / single);
        println!("  one sender, awaiting  : {serial:>10.0} msg/s");
    });
}
