//! The single writer thread and its group commit.
//!
//! SQLite allows one writer at a time, and with `synchronous=FULL` each commit costs an fsync.
//! So every write is a job sent to one thread, which takes all jobs waiting (up to a batch cap),
//! runs each inside its own savepoint in one transaction, commits once, and only then answers
//! the callers and emits their timeline events. Many concurrent sends share one fsync; a job
//! that fails rolls back to its savepoint without touching its neighbours; a commit that fails
//! fails every job in it, so nothing is acknowledged that is not on disk.

use std::thread::JoinHandle;

use rusqlite::Connection;
use switchboard_protocol::TimelineEvent;
use tokio::sync::{mpsc, oneshot};

use crate::store::{StoreError, StoreResult};

/// What a job produced inside the transaction, and how to answer its caller after the commit.
pub(super) struct Applied {
    events: Vec<TimelineEvent>,
    finish: Box<dyn FnOnce(StoreResult<()>) + Send>,
    ok: bool,
}

/// A unit of work for the writer thread.
pub(super) type Job = Box<dyn FnOnce(&Connection) -> Applied + Send>;

/// Wraps a typed write into a [`Job`] and gives back the receiver of its result.
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
    commits: mpsc::UnboundedSender<TimelineEvent>,
    max_batch: usize,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("sqlite-writer".into()).spawn(move || {
        let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
        while let Some(first) = jobs.blocking_recv() {
            batch.push(first);
            while batch.len() < max_batch {
                match jobs.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            run_batch(&mut conn, &mut batch, &commits);
        }
    })
}

fn run_batch(conn: &mut Connection, batch: &mut Vec<Job>, commits: &mpsc::UnboundedSender<TimelineEvent>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::error!(error = %e, "sqlite: cannot begin a write transaction");
        // Dropping the jobs unrun answers their callers with `Unavailable`.
        batch.clear();
        return;
    }
    let mut applied = Vec::with_capacity(batch.len());
    for job in batch.drain(..) {
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            // Dropping the job unrun answers its caller with `Unavailable`.
            tracing::error!(error = %e, "sqlite: savepoint failed");
            drop(job);
            continue;
        }
        let a = job(conn);
        let end = if a.ok { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
        if let Err(e) = conn.execute_batch(end) {
            tracing::error!(error = %e, "sqlite: ending a savepoint failed");
        }
        applied.push(a);
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => {
            for a in applied {
                for ev in a.events {
                    // The receiver lives as long as the node; if it is gone we are shutting
                    // down and the events are in the store for the next resume.
                    let _ = commits.send(ev);
                }
                (a.finish)(Ok(()));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "sqlite: commit failed; nothing in this batch is acked");
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
