//! The budget for password hashing: a few dedicated threads and a short bounded queue.
//!
//! Argon2id costs about 19 MiB and tens of milliseconds of one core per hash, by design. Run on
//! the blocking pool, 400 concurrent logins meant 400 threads hashing at once (8.9 GB of RSS,
//! most of it kept by the allocator afterwards) and every other request starved for CPU. Here at
//! most one hash per thread runs at a time (one per core by default), so its memory is bounded
//! by the thread count and its CPU leaves the async workers room; callers past the queue get a
//! fast refusal (`503` with `Retry-After`) instead of waiting without end.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use switchboard_protocol::codes::error as code;
use tokio::sync::oneshot;

use crate::error::ApiError;

type Job = Box<dyn FnOnce() + Send>;

/// Hashing threads and their queue. Cheap to share behind an `Arc`; the threads end when it is
/// dropped and the queue is empty.
pub struct HashPool {
    jobs: SyncSender<Job>,
}

impl HashPool {
    /// Starts `threads` hashing threads with room for `queue` waiting jobs.
    pub fn start(threads: usize, queue: usize) -> std::io::Result<HashPool> {
        let (tx, rx) = sync_channel::<Job>(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("hash-{i}")).spawn(move || worker(&rx))?;
        }
        Ok(HashPool { jobs: tx })
    }

    /// Runs `f` on a hashing thread, or refuses at once when the queue is full.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The caller may have gone (client disconnected); the result is simply dropped.
            let _ = tx.send(f());
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(busy()),
            Err(TrySendError::Disconnected(_)) => return Err(ApiError::internal("hashing threads stopped")),
        }
        rx.await.map_err(|_| ApiError::internal("a hashing thread failed"))
    }
}

/// `503 unavailable` with a one-second `Retry-After`: the server is busy checking passwords.
fn busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        code::UNAVAILABLE,
        "too many sign-ins at once; retry shortly",
    )
    .retry_after(std::time::Duration::from_secs(1))
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        let next = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        match next {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_the_queue_callers_are_refused_at_once() {
        let pool = Arc::new(HashPool::start(1, 1).unwrap());
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        // One job runs (blocked), one waits in the queue; the third is refused.
        let mut running = Vec::new();
        for _ in 0..2 {
            let (pool, rx) = (pool.clone(), release_rx.clone());
            running.push(tokio::spawn(async move {
                pool.run(move || {
                    let _ = rx.lock().unwrap().recv();
                })
                .await
            }));
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let refused = pool.run(|| ()).await.unwrap_err();
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(refused.retry_after.is_some());
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        for r in running {
            assert!(r.await.unwrap().is_ok());
        }
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }
}
