//! Quotas in this node's memory: the embedded default, and the fallback while Redis is down.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use async_trait::async_trait;

use super::{Budget, QuotaError, Quotas, Taken, gcra};

/// Most keys kept; a full table first drops the keys that have refilled, then, if a stranger is
/// filling it on purpose, starts over (which only forgives, never refuses wrongly).
const MAX_KEYS: usize = 200_000;

/// Budgets in a map of arrival times, under one lock (each call holds it for a few lookups).
pub struct LocalQuotas {
    started: Instant,
    keys: Mutex<HashMap<String, u64>>,
}

impl Default for LocalQuotas {
    fn default() -> Self {
        LocalQuotas { started: Instant::now(), keys: Mutex::new(HashMap::new()) }
    }
}

impl LocalQuotas {
    /// Takes from budgets now (a plain function, for the guard's fallback).
    pub fn take_now(&self, budgets: &[Budget]) -> Taken {
        let now = self.now();
        let Ok(mut keys) = self.keys.lock() else { return Taken::Yes };
        let mut next = Vec::with_capacity(budgets.len());
        for (index, b) in budgets.iter().enumerate() {
            match gcra(keys.get(&b.key).copied().unwrap_or(0), now, b) {
                Ok(tat) => next.push(tat),
                Err(wait) => return Taken::No { index, retry_after_ms: wait },
            }
        }
        if keys.len() + budgets.len() > MAX_KEYS {
            keys.retain(|_, tat| *tat > now);
            if keys.len() + budgets.len() > MAX_KEYS {
                keys.clear();
            }
            keys.shrink_to_fit();
        }
        for (b, tat) in budgets.iter().zip(next) {
            keys.insert(b.key.clone(), tat);
        }
        Taken::Yes
    }

    /// Drops the keys that have refilled (run now and then).
    pub fn sweep(&self) {
        let now = self.now();
        if let Ok(mut keys) = self.keys.lock() {
            keys.retain(|_, tat| *tat > now);
            keys.shrink_to_fit();
        }
    }

    /// Ms since start, from 1: 0 stands for a key never seen.
    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1)
    }

    /// Keys held (tests).
    pub fn len(&self) -> usize {
        self.keys.lock().map_or(0, |k| k.len())
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Quotas for LocalQuotas {
    async fn take(&self, budgets: &[Budget]) -> Result<Taken, QuotaError> {
        Ok(self.take_now(budgets))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    async fn fresh() -> ((), Arc<dyn Quotas>) {
        ((), Arc::new(LocalQuotas::default()))
    }

    crate::quota_conformance!(fresh);

    #[test]
    fn refilled_keys_cost_nothing() {
        let q = LocalQuotas::default();
        let b = Budget { key: "k".into(), interval_ms: 1, burst: 1 };
        assert_eq!(q.take_now(&[b]), Taken::Yes);
        assert_eq!(q.len(), 1);
        std::thread::sleep(std::time::Duration::from_millis(5));
        q.sweep();
        assert!(q.is_empty());
    }
}
