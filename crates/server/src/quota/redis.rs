//! Quotas in Redis, shared by every node: one Lua script per call takes from all its budgets
//! atomically, on Redis's own clock (`TIME`), so nodes' clocks need not agree. Each key is a
//! string holding its arrival time in ms, expiring when its budget has refilled. Keys are named
//! from the arguments: one Redis (or a primary with replicas), not Redis Cluster.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use super::{Budget, QuotaError, Quotas, Taken};

/// KEYS: the budgets' keys. ARGV: interval and tolerance per key, in order. Returns `{0}` when
/// every budget allowed the event (and stores their new arrival times), else `{index, wait}`
/// (1-based) and stores nothing.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local next = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local n = tat + interval
  if n > now + tolerance then
    return {i, n - now - tolerance}
  end
  next[i] = n
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%d', next[i]), 'PX', math.max(1, next[i] - now))
end
return {0}
";

/// The shared store of budgets.
pub struct RedisQuotas {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    take: redis::Script,
}

impl RedisQuotas {
    /// Connects (failing after `timeout` when Redis cannot be reached); every key is put under
    /// `<prefix>:q:`.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<RedisQuotas, QuotaError> {
        let unavailable = |e: redis::RedisError| QuotaError::Unavailable(e.to_string());
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(timeout, ConnectionManager::new_with_config(client, config))
            .await
            .map_err(|_| QuotaError::Unavailable("timed out connecting to Redis".into()))?
            .map_err(unavailable)?;
        Ok(RedisQuotas { conn, prefix: format!("{prefix}:q:"), timeout, take: redis::Script::new(TAKE) })
    }
}

#[async_trait]
impl Quotas for RedisQuotas {
    async fn take(&self, budgets: &[Budget]) -> Result<Taken, QuotaError> {
        if budgets.is_empty() {
            return Ok(Taken::Yes);
        }
        let mut call = self.take.prepare_invoke();
        for b in budgets {
            call.key(format!("{}{}", self.prefix, b.key)).arg(b.interval_ms).arg(b.tolerance_ms());
        }
        let mut conn = self.conn.clone();
        let answer: Vec<u64> = match tokio::time::timeout(self.timeout, call.invoke_async(&mut conn)).await {
            Ok(r) => r.map_err(|e| QuotaError::Unavailable(e.to_string()))?,
            Err(_) => return Err(QuotaError::Unavailable("Redis call timed out".into())),
        };
        match answer.as_slice() {
            [0] => Ok(Taken::Yes),
            [i, wait] if *i >= 1 => Ok(Taken::No {
                index: usize::try_from(*i - 1).unwrap_or(usize::MAX),
                retry_after_ms: (*wait).max(1),
            }),
            other => Err(QuotaError::Unavailable(format!("unexpected answer {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::presence::redis::tests::{Cleanup, test_options};

    async fn fresh() -> (Cleanup, Arc<dyn Quotas>) {
        let opts = test_options();
        let q = RedisQuotas::connect(&opts.url, &opts.prefix, opts.timeout).await.expect("connect to Redis");
        (Cleanup(opts), Arc::new(q))
    }

    crate::quota_conformance!(fresh, #[ignore = "needs Redis: scripts/test runs it"]);

    #[tokio::test]
    #[ignore = "needs Redis: scripts/test runs it"]
    async fn keys_expire_once_their_budget_has_refilled() {
        let (guard, q) = fresh().await;
        let b = Budget { key: "k".into(), interval_ms: 200, burst: 1 };
        assert_eq!(q.take(&[b]).await.unwrap(), Taken::Yes);
        let client = redis::Client::open(guard.0.url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let key = format!("{}:q:k", guard.0.prefix);
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
        assert!((1..=200).contains(&ttl), "{ttl}");
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_an_error_not_a_hang() {
        let err = RedisQuotas::connect("redis://127.0.0.1:1", "x", Duration::from_millis(500)).await;
        assert!(err.is_err());
    }
}
