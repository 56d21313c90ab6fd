//! WAL checkpoints off the writer's path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the threshold: it copies
//! the WAL into the database file and fsyncs it while every job in that batch waits for its ack,
//! which showed as p99 append latency of hundreds of milliseconds under load. Here the writer's
//! autocheckpoint is off and this thread runs passive checkpoints on its own connection, which
//! proceed beside the writer without blocking it. When a passive checkpoint copies every frame,
//! the writer's next transaction restarts the WAL from its start (and `journal_size_limit`
//! trims the file). Only when the WAL still passes [`WAL_LIMIT_FRAMES`] (something keeps it from
//! restarting, such as a long read) does a TRUNCATE checkpoint hold the writer back to empty it;
//! measured here, a TRUNCATE under load stalls commits for seconds, so it is the last resort.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// WAL frames (pages) past which an unfinished checkpoint is forced, holding the writer back.
const WAL_LIMIT_FRAMES: i64 = 65_536;

/// The running checkpointer; [`Checkpointer::stop`] runs a last checkpoint and joins it.
pub(super) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: JoinHandle<()>,
}

/// Runs a checkpoint; returns the WAL's length in frames (0 if it failed).
fn checkpoint(conn: &Connection, mode: &str) -> i64 {
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
            log
        }
        Err(e) => {
            tracing::warn!(error = %e, "sqlite: checkpoint failed; the WAL grows until one succeeds");
            0
        }
    }
}

/// Starts checkpointing `path` every `every`.
pub(super) fn spawn(path: PathBuf, every: Duration) -> std::io::Result<Checkpointer> {
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
        loop {
            let Ok(stopped) = lock.lock() else { return };
            let Ok((stopped, _)) = cvar.wait_timeout_while(stopped, every, |s| !*s) else { return };
            if *stopped {
                drop(stopped);
                checkpoint(&conn, "TRUNCATE");
                return;
            }
            drop(stopped);
            // Normally the WAL restarts every second (the writer completes a checkpoint), so
            // it stays far below the limit; past it, something keeps it from restarting.
            if checkpoint(&conn, "PASSIVE") > WAL_LIMIT_FRAMES {
                checkpoint(&conn, "TRUNCATE");
            }
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
