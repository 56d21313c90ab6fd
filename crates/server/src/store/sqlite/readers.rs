//! The read pool: a fixed number of read-only connections, each opened once and kept.
//!
//! Opening a SQLite connection parses the whole schema, which costs far more than a typical
//! read, and every open connection holds files and a page cache. A pool that opened a fresh
//! connection whenever its idle ones were busy fed on itself under load: slower reads meant
//! more concurrent reads, hence more opens, hence slower reads (measured: the server's CPU went
//! to schema parsing and p50 delivery at 500 msg/s to 1.3 s). So the pool has a cap, reads
//! past it wait their turn, and the blocking threads that run reads are bounded by the same cap.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use crate::store::{StoreError, StoreResult};

/// Read-only connections that read beside the writer.
pub(super) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// One per connection that may exist: a read holds one from before it leaves the async
    /// thread until its connection is back in `idle`.
    slots: Arc<Semaphore>,
}

impl ReadPool {
    /// A pool of at most `size` connections, opened as reads first need them.
    pub(super) fn new(path: PathBuf, size: usize) -> Arc<Self> {
        Arc::new(ReadPool {
            path,
            idle: Mutex::new(Vec::with_capacity(size)),
            slots: Arc::new(Semaphore::new(size)),
        })
    }

    fn open(&self) -> StoreResult<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        super::stable_plans(&conn)?;
        Ok(conn)
    }

    /// Runs `f` on a pooled connection on a blocking thread, after waiting for a free one.
    pub(super) async fn run<T, F>(self: &Arc<Self>, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let slot = self.slots.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let out = pool.run_here(f);
            drop(slot);
            out
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }

    /// With a slot held: there is an idle connection, or fewer than `size` exist.
    fn run_here<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let pooled = self.idle.lock().map_err(|_| super::poisoned())?.pop();
        let conn = match pooled {
            Some(c) => c,
            None => self.open()?,
        };
        let out = f(&conn);
        self.idle.lock().map_err(|_| super::poisoned())?.push(conn);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_never_open_more_than_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1);")
            .unwrap();
        let pool = ReadPool::new(path, 3);
        let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut reads = Vec::new();
        for _ in 0..64 {
            let (pool, live, most) = (pool.clone(), live.clone(), most.clone());
            reads.push(tokio::spawn(async move {
                pool.run(move |c| {
                    let now = live.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    let v: i64 = c.query_row("SELECT v FROM t", [], |r| r.get(0))?;
                    live.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(v)
                })
                .await
            }));
        }
        for r in reads {
            assert_eq!(r.await.unwrap().unwrap(), 1);
        }
        assert!(most.load(std::sync::atomic::Ordering::SeqCst) <= 3);
        assert!(pool.idle.lock().unwrap().len() <= 3, "no more connections than the cap were opened");
    }
}
