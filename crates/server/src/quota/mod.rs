//! Shared budgets: how often something may happen per key (a user's sends, a room's messages,
//! one text repeated, a room's joins), counted across every node of a cluster.
//!
//! [`Quotas`] is the seam: [`local::LocalQuotas`] keeps the counts in this node's memory (the
//! embedded default; a cluster on it allows each node the full rate), [`redis::RedisQuotas`]
//! keeps them in Redis for the whole cluster. Both implement the same generic cell rate
//! algorithm (GCRA): a key holds one timestamp, the "theoretical arrival time", so a budget costs
//! one small value whatever its rate. [`guard::QuotaGuard`] is what the server calls: it falls
//! back to the local counts while Redis is down, so an outage loosens limits to per node instead
//! of stopping chat.

pub mod guard;
pub mod local;
pub mod redis;

#[cfg(test)]
pub(crate) mod conformance;

use async_trait::async_trait;

/// One budget to take from: `burst` events at once, then one per `interval_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// What is counted, e.g. `u:<user>`; implementations add their own prefix.
    pub key: String,
    /// Time one event costs, in ms.
    pub interval_ms: u64,
    /// Events allowed at once after a quiet spell (at least 1).
    pub burst: u32,
}

impl Budget {
    /// `count` events per `per_ms`, at most `burst` at once.
    pub fn per(key: String, count: u32, per_ms: u64, burst: u32) -> Budget {
        Budget { key, interval_ms: (per_ms / u64::from(count.max(1))).max(1), burst: burst.max(1) }
    }

    /// How far ahead of now a key's arrival time may run before an event is refused.
    fn tolerance_ms(&self) -> u64 {
        self.interval_ms.saturating_mul(u64::from(self.burst))
    }
}

/// The answer of [`Quotas::take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// One event was taken from every budget.
    Yes,
    /// Budget `index` is spent (nothing was taken from any): it has room again after
    /// `retry_after_ms`.
    No {
        /// Which budget of the call.
        index: usize,
        /// How long until it would allow the event.
        retry_after_ms: u64,
    },
}

/// Why a quota call failed.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// The backend did not answer.
    #[error("quotas unavailable: {0}")]
    Unavailable(String),
}

/// Rate budgets per key.
///
/// Contract (checked by the conformance suite for every implementation):
/// - A budget allows `burst` events at once, then one per `interval_ms`; a refusal says how
///   long until the next one would pass, and that event does pass then.
/// - A call with several budgets is all or nothing: when one refuses, none is spent (a refused
///   message must not spend the room's budget or the author's).
/// - Concurrent calls on one key from anywhere never together pass more than the budget allows.
/// - A key unused for longer than its budget takes to refill is forgotten (costs no memory).
#[async_trait]
pub trait Quotas: Send + Sync + 'static {
    /// Takes one event from each of `budgets`, or from none.
    async fn take(&self, budgets: &[Budget]) -> Result<Taken, QuotaError>;
}

/// The GCRA step for one key: given its stored arrival time (0 if none) and now, either the
/// new arrival time to store or the wait before the event would pass.
pub fn gcra(tat_ms: u64, now_ms: u64, budget: &Budget) -> Result<u64, u64> {
    let start = tat_ms.max(now_ms);
    let next = start.saturating_add(budget.interval_ms);
    let limit = now_ms.saturating_add(budget.tolerance_ms());
    if next > limit { Err(next - limit) } else { Ok(next) }
}
