//! The single writer thread and its group commit.
//!
//! SQLite allows one writer at a time, and with `synchronous=FULL` each commit costs an fsync.
//! So every write is a job sent to one thread, which takes all jobs waiting (up to a batch cap),
//! runs them in one transaction, commits once, and only then answers
//! the callers. Every timeline event a batch produced takes its place in the event log inside
//! the same transaction, so the log is exactly the committed events, in commit order; once the
//! commit is durable they are handed to the in-memory tail of the log and the log's head moves,
//! which wakes the relay. Many concurrent sends share one fsync. A job
//! that is refused wrote nothing (jobs check before they write), so its neighbours commit; a job
//! that fails after writing, or a commit that fails, fails every job in the batch, so nothing is
//! acknowledged that is not on disk.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use switchboard_protocol::TimelineEvent;
use tokio::sync::{mpsc, oneshot, watch};

use super::checkpoint::Passes;
use super::queries;
use super::tail::LogTail;
use crate::store::{StoreError, StoreResult};

/// The log's last durable position, moved after each commit that logged something.
pub(super) type LogHead = watch::Sender<u64>;

/// What a job produced inside the transaction, and how to answer its caller after the commit.
pub(super) struct Applied {
    events: Vec<TimelineEvent>,
    finish: Box<dyn FnOnce(StoreResult<()>) + Send>,
    ok: bool,
}

/// A unit of work for the writer thread.
pub(super) type Job = Box<dyn FnOnce(&Connection) -> Applied + Send>;

/// Wraps a typed write into a [`Job`] and gives back the receiver of its result. The write must
/// return its refusals before it changes anything (see the module doc).
pub(super) fn job<T, F>(f: F) -> (Job, oneshot::Receiver<StoreResult<T>>)
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> StoreResult<(T, Vec<TimelineEvent>)> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move |conn| match f(conn) {
        Ok((value, events)) => Applied {
            events,
            ok: true,
            finish: Box::new(move |committed| {
                // The caller may have gone away (connection closed); the write still stands.
                let _ = tx.send(committed.map(|()| value));
            }),
        },
        Err(e) => Applied {
            events: Vec::new(),
            ok: false,
            finish: Box::new(move |_| {
                let _ = tx.send(Err(e));
            }),
        },
    });
    (job, rx)
}

/// Starts the writer thread. It ends when every job sender is dropped and the queue is empty.
pub(super) fn spawn(
    mut conn: Connection,
    mut jobs: mpsc::Receiver<Job>,
    log: LogHead,
    tail: Arc<LogTail>,
    max_batch: usize,
    passes: Arc<Passes>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("sqlite-writer".into()).spawn(move || {
        let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
        let mut last_checkpoint = Instant::now();
        while let Some(first) = jobs.blocking_recv() {
            batch.push(first);
            while batch.len() < max_batch {
                match jobs.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            run_batch(&mut conn, &mut batch, &log, &tail);
            let since = last_checkpoint.elapsed();
            let pass_just_ended = passes.since_last().is_some_and(|p| p < JUST_ENDED);
            if (since >= WRITER_CHECKPOINT_EVERY && pass_just_ended) || since >= WRITER_CHECKPOINT_LATEST {
                finish_checkpoint(&conn);
                last_checkpoint = Instant::now();
            }
        }
    })
}

/// How often the writer completes a checkpoint between batches (see [`finish_checkpoint`]), at
/// the first batch after a background pass has just ended. Each still holds commits 1 to 16 ms
/// (mostly the database file's fsync); every second that was 1% of the sends at 5,000/s, right
/// at the p99. Every 2 s: dm p99 7.2-12.8 ms against 10.1-25.5 ms, alternated runs
/// (docs/benchmarks.md). The WAL then holds up to 2 s of commits, within `WAL_KEEP`.
const WRITER_CHECKPOINT_EVERY: Duration = Duration::from_secs(2);
/// A pass that ended this recently left the writer a short tail: what was committed while it
/// ran. Measured at 5,000 sends/s, finishing at a fixed time instead (half a second of frames
/// behind on average) held commits 8 to 16 ms every second, which was the whole p99.
const JUST_ENDED: Duration = Duration::from_millis(5);
/// Past this the writer finishes a checkpoint whatever the background thread did (it may be
/// stuck behind a long read, or gone), so the WAL still restarts.
const WRITER_CHECKPOINT_LATEST: Duration = Duration::from_secs(5);

/// Copies the WAL frames the background checkpointer has not yet copied, with no write running
/// beside it, so the checkpoint completes and the next transaction restarts the WAL from its
/// start. The background thread (`checkpoint.rs`) does the bulk of the copying concurrently, so
/// this is a short pause: a small tail and one fsync of the database file.
fn finish_checkpoint(conn: &Connection) {
    let started = Instant::now();
    match conn
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
    {
        Ok((log, done)) => {
            tracing::debug!(log, done, ms = started.elapsed().as_millis() as u64, "sqlite: writer checkpoint")
        }
        Err(e) => tracing::warn!(error = %e, "sqlite: writer checkpoint failed"),
    }
}

/// Gives each event of the batch its log position, in the open transaction; returns the head
/// before them and the last. Positions continue from the head as [`queries::log_head`] reads
/// it under the write lock (so several writers on one file agree), never from the table's
/// largest key alone: pruning may have emptied it, and a position handed out again would sit
/// behind every consumer's cursor.
fn log_events(conn: &Connection, applied: &[Applied]) -> StoreResult<Option<(u64, u64)>> {
    let mut events = applied.iter().flat_map(|a| &a.events).peekable();
    if events.peek().is_none() {
        return Ok(None);
    }
    let before = queries::log_head(conn)?;
    let mut pos = before;
    let mut insert = conn.prepare_cached("INSERT INTO event_log (pos, room_id, seq) VALUES (?1, ?2, ?3)")?;
    for event in events {
        pos += 1;
        let seq = i64::try_from(event.seq()).unwrap_or(i64::MAX);
        insert.execute(rusqlite::params![i64::try_from(pos).unwrap_or(i64::MAX), event.room(), seq])?;
    }
    Ok(Some((before, pos)))
}

fn run_batch(conn: &mut Connection, batch: &mut Vec<Job>, log: &LogHead, tail: &LogTail) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::error!(error = %e, "sqlite: cannot begin a write transaction");
        // Dropping the jobs unrun answers their callers with `Unavailable`.
        batch.clear();
        return;
    }
    let mut applied = Vec::with_capacity(batch.len());
    let mut torn = false;
    for job in batch.drain(..) {
        // Jobs check everything before they write, so a refusal leaves no trace and needs no
        // savepoint (savepoints copy every touched page, a large share of the cost). Only an
        // unexpected failure after a write can tear the transaction; then the batch is undone.
        let before = conn.total_changes();
        let a = job(conn);
        torn |= !a.ok && conn.total_changes() != before;
        applied.push(a);
    }
    let logged = if torn {
        None
    } else {
        match log_events(conn, &applied) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "sqlite: cannot write the event log; rolling back the batch");
                torn = true;
                None
            }
        }
    };
    if torn {
        tracing::error!("sqlite: a write failed halfway; rolling back its whole batch");
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::error!(error = %e, "sqlite: rollback failed");
        }
        for a in applied {
            (a.finish)(Err(StoreError::Unavailable("write failed; nothing was saved".into())));
        }
        return;
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => {
            let mut finishes = Vec::with_capacity(applied.len());
            let mut events = Vec::new();
            for a in applied {
                events.extend(a.events);
                finishes.push(a.finish);
            }
            // The tail first: a consumer woken by the head finds the entries in memory.
            if let Some((before, last)) = logged {
                tail.extend(before, events);
                log.send_replace(last);
            }
            for finish in finishes {
                finish(Ok(()));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "sqlite: commit failed; nothing in this batch is acked");
            // Whether the commit reached the file is unknown: the table alone is the truth.
            tail.clear();
            if let Err(e) = conn.execute_batch("ROLLBACK") {
                tracing::error!(error = %e, "sqlite: rollback after failed commit failed");
            }
            let msg = e.to_string();
            for a in applied {
                (a.finish)(Err(StoreError::Unavailable(msg.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(value: i64, fail_after: bool, refuse: bool) -> (Job, oneshot::Receiver<StoreResult<()>>) {
        job(move |c| {
            if refuse {
                return Err(StoreError::Forbidden);
            }
            c.execute("INSERT INTO t (v) VALUES (?1)", [value])?;
            if fail_after {
                return Err(StoreError::Unavailable("boom".into()));
            }
            Ok(((), Vec::new()))
        })
    }

    fn scratch() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER); CREATE TABLE event_log (pos INTEGER PRIMARY KEY, room_id TEXT, seq INTEGER);
             CREATE TABLE log_cursors (consumer TEXT PRIMARY KEY, pos INTEGER);")
            .unwrap();
        conn
    }

    fn sink() -> LogHead {
        watch::channel(0).0
    }

    fn count(c: &Connection) -> i64 {
        c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn a_refused_job_leaves_its_neighbours_committed() {
        let mut conn = scratch();
        let tx = sink();
        let (a, ra) = insert(1, false, false);
        let (b, rb) = insert(2, false, true);
        let (c, rc) = insert(3, false, false);
        run_batch(&mut conn, &mut vec![a, b, c], &tx, &LogTail::default());
        assert!(matches!(ra.blocking_recv(), Ok(Ok(()))));
        assert!(matches!(rb.blocking_recv(), Ok(Err(StoreError::Forbidden))));
        assert!(matches!(rc.blocking_recv(), Ok(Ok(()))));
        assert_eq!(count(&conn), 2);
    }

    #[test]
    fn a_job_failing_after_a_write_undoes_its_whole_batch() {
        let mut conn = scratch();
        let tx = sink();
        let (a, ra) = insert(1, false, false);
        let (b, rb) = insert(2, true, false);
        run_batch(&mut conn, &mut vec![a, b], &tx, &LogTail::default());
        assert!(
            matches!(ra.blocking_recv(), Ok(Err(StoreError::Unavailable(_)))),
            "nothing unsaved is acked"
        );
        assert!(matches!(rb.blocking_recv(), Ok(Err(StoreError::Unavailable(_)))));
        assert_eq!(count(&conn), 0);
        // The connection is usable again afterwards.
        let (c, rc) = insert(3, false, false);
        run_batch(&mut conn, &mut vec![c], &tx, &LogTail::default());
        assert!(matches!(rc.blocking_recv(), Ok(Ok(()))));
        assert_eq!(count(&conn), 1);
    }
}
