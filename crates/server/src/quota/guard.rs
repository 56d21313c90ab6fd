//! The limits the server puts on sends and joins, taken from the shared [`Quotas`]: each
//! refusal gets its own code and `retry_after_ms`.
//!
//! While the shared backend fails, calls go to this node's own counts for a second at a time
//! before trying it again, so a Redis outage loosens the limits to per node (and costs sends no
//! timeouts) instead of refusing or delaying chat.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use switchboard_protocol::codes::error as code;

use super::local::LocalQuotas;
use super::{Budget, Quotas, Taken};
use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::{Backend, Metrics};
use crate::store::now_ms;

/// Texts shorter than this (in characters, trimmed) are not counted as duplicates: "ok" and
/// "+1" are said again and again for good reasons.
const DUPLICATE_MIN_CHARS: usize = 4;
/// How long the shared backend is left alone after it failed.
const BACKOFF_MS: i64 = 1_000;

/// The node's limits on sends and joins.
pub struct QuotaGuard {
    shared: Option<Arc<dyn Quotas>>,
    local: LocalQuotas,
    down_until: AtomicI64,
    metrics: Arc<Metrics>,
    user_rate: (u32, u32),
    room_rate: (u32, u32),
    duplicates: (u32, u64),
    joins_per_min: u32,
}

/// Which budget of a send refused.
const USER: usize = 0;
const ROOM: usize = 1;

impl QuotaGuard {
    /// Limits from the configuration, counted in `shared` (or this node's memory when `None`).
    pub fn new(cfg: &Config, shared: Option<Arc<dyn Quotas>>, metrics: Arc<Metrics>) -> QuotaGuard {
        QuotaGuard {
            shared,
            local: LocalQuotas::default(),
            down_until: AtomicI64::new(0),
            metrics,
            user_rate: (cfg.user_sends_per_sec, cfg.user_sends_burst),
            room_rate: (cfg.room_sends_per_sec, cfg.room_sends_burst),
            duplicates: (cfg.duplicate_max, u64::from(cfg.duplicate_window_secs) * 1000),
            joins_per_min: cfg.room_joins_per_min,
        }
    }

    /// Takes a message from the author's budget (all their connections, on every node), the
    /// room's, and the budget of this text from this author (in any room).
    pub async fn send(&self, author: &str, room: &str, body: &str) -> Result<(), ApiError> {
        let mut budgets = vec![
            Budget::per(format!("u:{author}"), self.user_rate.0, 1000, self.user_rate.1),
            Budget::per(format!("r:{room}"), self.room_rate.0, 1000, self.room_rate.1),
        ];
        let (max, window) = self.duplicates;
        if max > 0 && body.trim().chars().count() >= DUPLICATE_MIN_CHARS {
            let key = format!("d:{author}:{:016x}", text_hash(body));
            budgets.push(Budget::per(key, max, window, max));
        }
        match self.take(&budgets).await {
            Taken::Yes => Ok(()),
            Taken::No { index, retry_after_ms } => {
                let wait = Duration::from_millis(retry_after_ms);
                Err(match index {
                    USER => ApiError::rate_limited(wait, "sending too fast: slow down"),
                    ROOM => ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        code::ROOM_RATE_LIMITED,
                        "this room is busy: wait a moment",
                    )
                    .retry_after(wait),
                    _ => ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        code::DUPLICATE,
                        "the same message was sent too often lately",
                    )
                    .retry_after(wait),
                })
            }
        }
    }

    /// Takes a join of a public room from the room's budget, so that a raid is slowed down
    /// instead of filling it, and from the joiner's own budget for that room (three joins per
    /// ten minutes), so that one account leaving and joining again cannot spend the room's.
    pub async fn join(&self, room: &str, user: &str) -> Result<(), ApiError> {
        if self.joins_per_min == 0 {
            return Ok(());
        }
        let n = self.joins_per_min;
        let budgets = [
            Budget::per(format!("ju:{room}:{user}"), 3, 600_000, 3),
            Budget::per(format!("j:{room}"), n, 60_000, n.div_ceil(4)),
        ];
        match self.take(&budgets).await {
            Taken::Yes => Ok(()),
            Taken::No { index: 0, retry_after_ms } => Err(ApiError::rate_limited(
                Duration::from_millis(retry_after_ms),
                "you joined this room too often lately",
            )),
            Taken::No { retry_after_ms, .. } => Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                code::JOIN_RATE_LIMITED,
                "too many people are joining this room: try again shortly",
            )
            .retry_after(Duration::from_millis(retry_after_ms))),
        }
    }

    async fn take(&self, budgets: &[Budget]) -> Taken {
        if let Some(shared) = &self.shared
            && now_ms() >= self.down_until.load(Ordering::Relaxed)
        {
            match shared.take(budgets).await {
                Ok(taken) => return taken,
                Err(e) => {
                    self.metrics.backend_error(Backend::Quotas);
                    self.down_until.store(now_ms() + BACKOFF_MS, Ordering::Relaxed);
                    tracing::warn!(error = %e, "shared quotas failed: counting on this node for a second");
                }
            }
        }
        self.local.take_now(budgets)
    }

    /// Drops refilled keys from this node's counts, once a minute until `stop`.
    pub async fn run(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.local.sweep(),
            }
        }
    }
}

/// A text as duplicates are judged: case, spacing and surrounding space do not make it new.
fn text_hash(body: &str) -> u64 {
    // SipHash with fixed keys: the same on every node of one build.
    let mut h = std::hash::DefaultHasher::new();
    for word in body.split_whitespace() {
        for c in word.chars().flat_map(char::to_lowercase) {
            c.hash(&mut h);
        }
        ' '.hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::quota::QuotaError;

    /// A shared backend that fails every call.
    struct Down;

    #[async_trait::async_trait]
    impl Quotas for Down {
        async fn take(&self, _: &[Budget]) -> Result<Taken, QuotaError> {
            Err(QuotaError::Unavailable("down".into()))
        }
    }

    #[tokio::test]
    async fn a_failing_backend_loosens_limits_to_the_node_instead_of_stopping_sends() {
        let cfg = Config { user_sends_per_sec: 1, user_sends_burst: 2, ..Config::default() };
        let guard = QuotaGuard::new(&cfg, Some(Arc::new(Down)), Arc::new(Metrics::new()));
        guard.send("u", "r", "one").await.unwrap();
        guard.send("u", "r", "two").await.unwrap();
        let err = guard.send("u", "r", "three").await.unwrap_err();
        assert_eq!(err.code, code::RATE_LIMITED, "counted on the node while the backend is down");
        assert!(guard.down_until.load(Ordering::Relaxed) > now_ms(), "left alone for a moment");
    }

    #[test]
    fn duplicates_ignore_case_and_spacing() {
        assert_eq!(text_hash("Buy NOW  cheap"), text_hash(" buy now cheap\n"));
        assert_ne!(text_hash("buy now cheap"), text_hash("buy now cheaper"));
    }
}
