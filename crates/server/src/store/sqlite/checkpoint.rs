//! WAL checkpoints off the writer's path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the threshold: it copies
//! the WAL into the database file and fsyncs it while every job in that batch waits for its ack,
//! which showed as p99 append latency of hundreds of milliseconds under load. Here the writer's
//! autocheckpoint is off and this thread runs passive checkpoints on its own connection, which
//! proceed beside the writer without blocking it. When a passive checkpoint copies every frame,
//! the writer's next transaction restarts the WAL from its start (and `journal_size_limit`
//! trims the file). Only when the WAL passes [`WAL_LIMIT_FRAMES`] and has not restarted for
//! [`STUCK_AFTER`] (something keeps it from restarting, such as a long read) does a TRUNCATE
//! checkpoint hold the writer back to empty it;
//! measured here, a TRUNCATE under load stalls commits for seconds, so it is the last resort.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// WAL frames (pages) past which an unfinished checkpoint is forced, holding the writer back,
/// once the WAL has also gone [`STUCK_AFTER`] without restarting.
const WAL_LIMIT_FRAMES: i64 = 65_536;
/// How long the WAL may go without restarting before a long WAL counts as stuck. Size alone
/// is no sign: at 10,000 sends/s a WAL that restarts every 2 s passes 140,000 frames before
/// each restart, and forcing a TRUNCATE then held every commit for about 70 ms each time.
const STUCK_AFTER: Duration = Duration::from_secs(10);
/// A pass that copied fewer frames than this leaves the writer a short tail.
const SMALL_PASS_FRAMES: i64 = 256;
/// Passes in a row at most, under a load that commits faster than a pass catches up.
const MAX_PASSES: usize = 4;

/// When the background thread last finished a pass, so the writer can finish the checkpoint
/// right after one: then what is left for the writer to copy while commits wait is only what
/// was committed during that pass, not everything since the last one.
pub(super) struct Passes {
    base: Instant,
    /// Nanoseconds from `base` to the end of the last pass; 0 before the first.
    last: AtomicU64,
}

impl Passes {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Passes { base: Instant::now(), last: AtomicU64::new(0) })
    }

    fn mark(&self) {
        let ns = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1);
        self.last.store(ns, Ordering::Release);
    }

    /// How long ago the last pass finished, if one has.
    pub(super) fn since_last(&self) -> Option<Duration> {
        match self.last.load(Ordering::Acquire) {
            0 => None,
            ns => Some(self.base.elapsed().saturating_sub(Duration::from_nanos(ns))),
        }
    }
}

/// The running checkpointer; [`Checkpointer::stop`] runs a last checkpoint and joins it.
pub(super) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: JoinHandle<()>,
}

/// Runs a checkpoint; returns the WAL's length in frames (0 if it failed).
fn checkpoint(conn: &Connection, mode: &str) -> i64 {
    checkpoint_counts(conn, mode).0
}

/// Runs a checkpoint; returns the WAL's length and how many of its frames are now in the
/// database file, in frames (0, 0 if it failed).
fn checkpoint_counts(conn: &Connection, mode: &str) -> (i64, i64) {
    let sql = format!("PRAGMA wal_checkpoint({mode})");
    let started = std::time::Instant::now();
    match conn.query_row(&sql, [], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))) {
        Ok((busy, log, done)) => {
            tracing::debug!(
                mode,
                busy,
                log,
                done,
                ms = started.elapsed().as_millis() as u64,
                "sqlite: checkpoint"
            );
            (log, done)
        }
        Err(e) => {
            tracing::warn!(error = %e, "sqlite: checkpoint failed; the WAL grows until one succeeds");
            (0, 0)
        }
    }
}

/// Starts checkpointing `path` every `every`, marking each pass in `passes`.
pub(super) fn spawn(path: PathBuf, every: Duration, passes: Arc<Passes>) -> std::io::Result<Checkpointer> {
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let flag = stop.clone();
    let handle = std::thread::Builder::new().name("sqlite-checkpoint".into()).spawn(move || {
        let conn = match Connection::open(&path) {
            Ok(c) => c,
            Err(e) => return tracing::error!(error = %e, "sqlite: checkpointer cannot open the database"),
        };
        if let Err(e) = conn
            .busy_timeout(Duration::from_secs(5))
            .and_then(|()| conn.execute_batch("PRAGMA synchronous=FULL"))
        {
            return tracing::error!(error = %e, "sqlite: checkpointer setup failed");
        }
        let (lock, cvar) = &*flag;
        // The WAL's length at the last pass and when it was last seen to restart (shorter than
        // at the pass before).
        let (mut last_log, mut restarted) = (0, Instant::now());
        loop {
            let Ok(stopped) = lock.lock() else { return };
            let Ok((stopped, _)) = cvar.wait_timeout_while(stopped, every, |s| !*s) else { return };
            if *stopped {
                drop(stopped);
                checkpoint(&conn, "TRUNCATE");
                return;
            }
            drop(stopped);
            // Normally the WAL restarts every 2 s (the writer completes a checkpoint); a
            // long WAL that has not restarted for a while means something keeps it from
            // restarting (such as a long read), and only then is it forced.
            // Passes again while the last one had much to copy: each copies what was committed
            // during the one before, so the tail left to the writer shrinks with each.
            let mut before = 0;
            for _ in 0..MAX_PASSES {
                let (log, done) = checkpoint_counts(&conn, "PASSIVE");
                if log < last_log {
                    restarted = Instant::now();
                }
                last_log = log;
                if log > WAL_LIMIT_FRAMES && restarted.elapsed() >= STUCK_AFTER {
                    checkpoint(&conn, "TRUNCATE");
                    (last_log, restarted) = (0, Instant::now());
                    break;
                }
                // A WAL that restarted since counts from zero again.
                let copied = if done >= before { done - before } else { done };
                before = done;
                if copied < SMALL_PASS_FRAMES {
                    break;
                }
            }
            passes.mark();
        }
    })?;
    Ok(Checkpointer { stop, handle })
}

impl Checkpointer {
    /// Runs a final checkpoint (the writer has stopped) and waits for the thread.
    pub(super) fn stop(self) {
        let (lock, cvar) = &*self.stop;
        if let Ok(mut s) = lock.lock() {
            *s = true;
        }
        cvar.notify_all();
        if self.handle.join().is_err() {
            tracing::error!("sqlite: checkpointer thread panicked");
        }
    }
}
