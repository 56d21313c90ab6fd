//! What reading a room costs against its unread backlog: unread counts are kept by the writes
//! (issue 8), so `rooms_for` and `room_for` for a reader with 100,000 unread messages should
//! cost what they cost with none, measured in the same run on the same store.
//!
//! `cargo bench -p switchboard --bench unread [-- BACKLOG READS]`

use std::sync::Arc;
use std::time::Instant;

use switchboard::store::sqlite::{SqliteOptions, SqliteStore};
use switchboard::store::{NewMessage, NewRoom, Store};
use switchboard_protocol::RoomKind;

/// Median microseconds of `reads` calls of `f`.
async fn median_us<F, Fut>(reads: usize, mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut times = Vec::with_capacity(reads);
    for _ in 0..reads {
        let started = Instant::now();
        f().await;
        times.push(started.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let backlog = args.first().copied().unwrap_or(100_000);
    let reads = args.get(1).copied().unwrap_or(2_000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&SqliteOptions { path: dir.path().join("bench.db"), max_batch: 1024 })
                .expect("open"),
        );
        let writer = store.create_user("writer", "x").await.expect("user").id;
        // Two readers in two rooms with the same backlog: one has read it all, one has not.
        let (behind, caught_up) = (
            store.create_user("behind", "x").await.expect("user").id,
            store.create_user("caughtup", "x").await.expect("user").id,
        );
        let mut rooms = Vec::new();
        for reader in [&behind, &caught_up] {
            // Added at once, not invited.
            let settings = switchboard_protocol::rest::UserSettings { add_policy: switchboard_protocol::AddPolicy::Anyone };
            store.set_settings(reader, settings).await.expect("settings");
            let new = NewRoom {
                creator: writer.clone(),
                name: "r".into(),
                kind: RoomKind::Private,
                members: vec![reader.clone()],
            };
            rooms.push(store.create_room(new).await.expect("room").room.id);
        }
        let started = Instant::now();
        for room in &rooms {
            let mut tasks = Vec::new();
            for t in 0..64 {
                let (store, writer, room) = (store.clone(), writer.clone(), room.clone());
                tasks.push(tokio::spawn(async move {
                    for i in (t..backlog).step_by(64) {
                        let msg = NewMessage {
                            room: room.clone(),
                            author: writer.clone(),
                            client_msg_id: format!("{room}-{i}"),
                            body: "backlog".into(),
                        };
                        store.append(msg).await.expect("append");
                    }
                }));
            }
            for t in tasks {
                t.await.expect("task");
            }
        }
        eprintln!("wrote 2 x {backlog} messages in {:.1} s", started.elapsed().as_secs_f64());
        let last = store.room_for(&rooms[1], &caught_up).await.expect("room").last_seq;
        store.mark_read(&rooms[1], &caught_up, last).await.expect("read");
        let unread = |user: &str, room: &str| {
            let (store, user, room) = (store.clone(), user.to_owned(), room.to_owned());
            async move { store.room_for(&room, &user).await.expect("room").unread.unwrap_or(0) }
        };
        assert_eq!(unread(&behind, &rooms[0]).await, backlog as u64);
        assert_eq!(unread(&caught_up, &rooms[1]).await, 0);
        let mut lines = Vec::new();
        for (what, user, room) in [("behind", &behind, &rooms[0]), ("caught up", &caught_up, &rooms[1])] {
            let one = median_us(reads, || {
                let (store, user, room) = (store.clone(), user.clone(), room.clone());
                async move {
                    store.room_for(&room, &user).await.expect("room");
                }
            })
            .await;
            let list = median_us(reads, || {
                let (store, user) = (store.clone(), user.clone());
                async move {
                    store.rooms_for(&user).await.expect("rooms");
                }
            })
            .await;
            lines.push((what, one, list));
        }
        let (b, c) = (lines[0], lines[1]);
        println!("unread backlog {backlog}: room_for median {:.1} us (behind) vs {:.1} us (caught up) = x{:.2}; rooms_for {:.1} vs {:.1} us = x{:.2}",
            b.1, c.1, b.1 / c.1, b.2, c.2, b.2 / c.2);
        store.close().await;
    });
}
