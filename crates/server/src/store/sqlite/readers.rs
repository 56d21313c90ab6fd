//! The read pool: a fixed number of read-only connections, each opened once and kept. A read
//! runs first on the thread that asked for it, with a small budget, and moves to a blocking
//! thread only if it runs past it or meets a lock (see [`ReadPool::run`]).
//!
//! Opening a SQLite connection parses the whole schema, which costs far more than a typical
//! read, and every open connection holds files and a page cache. A pool that opened a fresh
//! connection whenever its idle ones were busy fed on itself under load: slower reads meant
//! more concurrent reads, hence more opens, hence slower reads (measured: the server's CPU went
//! to schema parsing and p50 delivery at 500 msg/s to 1.3 s). So the pool has a cap, reads
//! past it wait their turn, and the blocking threads that run reads are bounded by the same cap.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use crate::store::{StoreError, StoreResult};

/// How long a read on a blocking thread waits out a lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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
        conn.busy_timeout(BUSY_TIMEOUT)?;
        super::stable_plans(&conn)?;
        Ok(conn)
    }

    /// Runs `f` on a pooled connection, after waiting for a free one: first on the calling
    /// (async) thread under a budget of [`INLINE_BUDGET`], and if it runs past that, again on
    /// a blocking thread. `f` must be a plain read: it may run twice.
    ///
    /// Most reads are index lookups that take microseconds, while handing one to a blocking
    /// thread and back costs two thread wake-ups: measured, that hand-off was half the server's
    /// CPU for a connect (`hello` makes four reads). A read that turns out long (a big history
    /// page, a user in thousands of rooms) wastes at most the budget before it moves off the
    /// async thread, so no worker is held for longer than that.
    pub(super) async fn run<T, F>(self: &Arc<Self>, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let slot = self.slots.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        // With no idle connection a new one is opened, which parses the whole schema: that
        // happens on the blocking thread too.
        let pooled = self.idle.lock().map_err(|_| super::poisoned())?.pop();
        let conn = match pooled {
            Some(mut conn) => match inline(&mut conn, &f) {
                Ok(out) => {
                    self.give_back(conn)?;
                    return out;
                }
                // Out of budget or met a lock: the same connection, on a blocking thread.
                Err(None) => Some(conn),
                // Its deadline or busy timeout could not be set or reset: a new connection,
                // rather than one that might still interrupt every read.
                Err(Some(e)) => {
                    tracing::warn!(error = %e, "sqlite: a read connection could not be set up; reopening it");
                    None
                }
            },
            None => None,
        };
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match conn {
                Some(c) => c,
                None => pool.open()?,
            };
            let out = f(&conn);
            let back = pool.give_back(conn);
            drop(slot);
            back.and(out)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }

    fn give_back(&self, conn: Connection) -> StoreResult<()> {
        self.idle.lock().map_err(|_| super::poisoned())?.push(conn);
        Ok(())
    }
}

/// How long a read may run on an async thread before it is moved to a blocking one.
const INLINE_BUDGET: Duration = Duration::from_micros(250);
/// SQLite virtual-machine steps between two looks at the clock (a few microseconds' worth).
const STEPS_PER_CHECK: i32 = 1_000;

/// Runs `f` on `conn` with a deadline and without waiting on locks. `Ok` holds what `f`
/// returned when it finished in time (an error of its own included); `Err` means run it again
/// on a blocking thread: it ran out of budget or met a lock (its result, whatever it was, is
/// dropped), or the connection could not be set up for it (the error, if any).
fn inline<T>(
    conn: &mut Connection,
    f: &impl Fn(&Connection) -> StoreResult<T>,
) -> Result<StoreResult<T>, Option<rusqlite::Error>> {
    let gave_up = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + INLINE_BUDGET;
    let flag = gave_up.clone();
    conn.progress_handler(
        STEPS_PER_CHECK,
        Some(move || {
            let late = Instant::now() > deadline;
            if late {
                flag.store(true, Ordering::Relaxed);
            }
            late
        }),
    )
    .map_err(Some)?;
    // A lock would be waited out with sleeps: not on an async thread.
    let set = conn.busy_timeout(Duration::ZERO);
    let out = set.is_ok().then(|| f(conn));
    let reset = conn.progress_handler(0, None::<fn() -> bool>).and_then(|()| conn.busy_timeout(BUSY_TIMEOUT));
    match (out, set, reset) {
        (_, Err(e), _) | (_, _, Err(e)) => Err(Some(e)),
        (Some(Err(StoreError::Unavailable(_))), ..) => Err(None),
        (Some(_), ..) if gave_up.load(Ordering::Relaxed) => Err(None),
        (Some(out), ..) => Ok(out),
        (None, ..) => Err(None),
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

    fn wal_db(dir: &tempfile::TempDir) -> PathBuf {
        let path = dir.path().join("t.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1);")
            .unwrap();
        path
    }

    /// Where a read ran: `true` for each run on the calling thread, `false` for each elsewhere.
    /// On a current-thread runtime the calling thread is the async one.
    async fn traced<T: Send + 'static>(
        pool: &Arc<ReadPool>,
        read: impl Fn(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> (StoreResult<T>, Vec<bool>) {
        let here = std::thread::current().id();
        let runs = Arc::new(Mutex::new(Vec::new()));
        let seen = runs.clone();
        let out = pool
            .run(move |c| {
                seen.lock().unwrap().push(std::thread::current().id() == here);
                read(c)
            })
            .await;
        let runs = runs.lock().unwrap().clone();
        (out, runs)
    }

    fn one(c: &Connection) -> StoreResult<i64> {
        Ok(c.query_row("SELECT v FROM t", [], |r| r.get::<_, i64>(0))?)
    }

    #[tokio::test]
    async fn a_new_connection_is_opened_off_the_async_thread_and_quick_reads_then_stay_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let pool = ReadPool::new(wal_db(&dir), 2);
        let (out, runs) = traced(&pool, one).await;
        assert_eq!(out.unwrap(), 1);
        assert_eq!(runs, vec![false], "no idle connection: opened and read on a blocking thread");
        let (out, runs) = traced(&pool, one).await;
        assert_eq!(out.unwrap(), 1);
        assert_eq!(runs, vec![true], "once, where it was asked");
    }

    #[tokio::test]
    async fn a_read_past_its_budget_is_run_again_to_the_end_on_a_blocking_thread() {
        let dir = tempfile::tempdir().unwrap();
        let pool = ReadPool::new(wal_db(&dir), 1);
        traced(&pool, one).await.0.unwrap();
        let sql = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000)
                   SELECT sum(i) FROM n";
        let long = move |c: &Connection| Ok(c.query_row(sql, [], |r| r.get::<_, i64>(0))?);
        let (out, runs) = traced(&pool, long).await;
        assert_eq!(out.unwrap(), 3_000_000 * 3_000_001 / 2, "the whole answer, not a cut one");
        assert_eq!(runs, vec![true, false], "interrupted inline, then run again elsewhere");
        // The connection went back to the pool with no deadline and its busy timeout again.
        let (out, runs) = traced(&pool, long).await;
        assert!(out.is_ok());
        assert_eq!(runs, vec![true, false]);
        let (_, runs) = traced(&pool, one).await;
        assert_eq!(runs, vec![true]);
    }

    #[tokio::test]
    async fn a_read_that_meets_a_lock_waits_for_it_off_the_async_thread() {
        let dir = tempfile::tempdir().unwrap();
        // A rollback-journal database: there a writer's exclusive lock keeps readers out.
        let path = dir.path().join("t.db");
        let writer = Connection::open(&path).unwrap();
        writer.execute_batch("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1);").unwrap();
        let pool = ReadPool::new(path, 1);
        traced(&pool, one).await.0.unwrap();
        writer.execute_batch("BEGIN EXCLUSIVE; UPDATE t SET v = 2;").unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            writer.execute_batch("COMMIT").unwrap();
        });
        let (out, runs) = traced(&pool, one).await;
        release.join().unwrap();
        assert_eq!(out.unwrap(), 2, "waited for the commit, then read it");
        assert_eq!(runs, vec![true, false], "refused at once inline, then waited on a blocking thread");
    }
}
