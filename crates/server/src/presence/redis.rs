//! Presence on Redis, shared by every node of a cluster.
//!
//! Keys, under a configurable prefix `P`:
//! - `P:c:<user>`: a hash of the user's connections, `<node>/<session>` → `o|0` or `a|0`
//!   (online or away, not closed), or `o|<ms>` once closed (lingering for the debounce). It
//!   expires two TTLs after its last registration or renewal, so it cannot outlive a lost
//!   expiry set. Run Redis with `maxmemory-policy noeviction`: evicting these keys loses
//!   presence until the next renewal.
//! - `P:x`: one sorted set of every connection (`<user>\x1f<conn>`) scored by its expiry.
//! - `P:s:<user>`: a hash of the derived state: `status`, `seen`, `text`, `v` (version).
//!
//! Every change is one Lua script, so one round trip, and deriving the status and bumping the
//! version happen atomically: of many nodes sweeping at once, exactly one removes a lapsed
//! connection and announces what that changed. Scripts read the time from Redis (`TIME`), so
//! expiry does not depend on the nodes' clocks agreeing. The scripts touch keys named from
//! their arguments: this runs on one Redis (or a primary with replicas), not Redis Cluster.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use switchboard_protocol::{ChosenStatus, Status};

use super::{Presence, PresenceError, PresenceResult, State, Swept, Text};

/// Shared by every script: the Redis clock in ms, and the derivation of a user's state from
/// their connections (a new state when it changed, `false` when not).
const PRELUDE: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function derive(prefix, user, now, seen, touched)
  local skey = prefix .. ':s:' .. user
  local vals = redis.call('HVALS', prefix .. ':c:' .. user)
  local st = 'offline'
  if #vals > 0 then
    st = 'away'
    for _, v in ipairs(vals) do
      if string.sub(v, 1, 1) == 'o' then st = 'online' break end
    end
  end
  local old = redis.call('HGET', skey, 'status') or 'offline'
  if old == st and not touched then return false end
  if st == 'offline' and old ~= 'offline' then
    redis.call('HSET', skey, 'seen', string.format('%d', seen or now))
  end
  local v = tonumber(redis.call('HGET', skey, 'v') or '0')
  if v + 1 > now then v = v + 1 else v = now end
  redis.call('HSET', skey, 'status', st, 'v', string.format('%d', v))
  if st == 'offline' then
    redis.call('PEXPIRE', skey, 2592000000)
  else
    redis.call('PERSIST', skey)
  end
  return {user, st, redis.call('HGET', skey, 'seen') or '', redis.call('HGET', skey, 'text') or '',
    string.format('%d', v)}
end
";

/// KEYS: expiries. ARGV: prefix, user, conn, `o`|`a`, ttl ms, `keep`|`set`|`clear`, text.
const SET_STATUS: &str = r"
local now = now_ms()
local prefix, user, conn = ARGV[1], ARGV[2], ARGV[3]
redis.call('HSET', prefix .. ':c:' .. user, conn, ARGV[4] .. '|0')
-- Gone by itself if the expiry set is ever lost (eviction, a partial restore) and nobody sweeps.
redis.call('PEXPIRE', prefix .. ':c:' .. user, 2 * tonumber(ARGV[5]))
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), user .. '\31' .. conn)
local skey = prefix .. ':s:' .. user
local touched = false
if ARGV[6] == 'set' then
  if redis.call('HGET', skey, 'text') ~= ARGV[7] then
    redis.call('HSET', skey, 'text', ARGV[7])
    touched = true
  end
elseif ARGV[6] == 'clear' then
  touched = redis.call('HDEL', skey, 'text') == 1
end
return derive(prefix, user, now, nil, touched)
";

/// KEYS: expiries. ARGV: prefix, user, conn, grace ms.
const DISCONNECT: &str = r"
local ckey = ARGV[1] .. ':c:' .. ARGV[2]
local v = redis.call('HGET', ckey, ARGV[3])
if not v then return 0 end
local now = now_ms()
redis.call('HSET', ckey, ARGV[3], string.sub(v, 1, 1) .. '|' .. string.format('%d', now))
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[2] .. '\31' .. ARGV[3])
return 1
";

/// KEYS: expiries. ARGV: prefix, ttl ms, then `<user>\x1f<conn>` members. Returns the 0-based
/// indexes of the members Redis does not know.
const RENEW: &str = r"
local at = now_ms() + tonumber(ARGV[2])
local lost = {}
for i = 3, #ARGV do
  local user, conn = string.match(ARGV[i], '^(.*)\31([^\31]*)$')
  local v = user and redis.call('HGET', ARGV[1] .. ':c:' .. user, conn)
  if not v then
    table.insert(lost, i - 3)
  elseif string.sub(v, 3) == '0' then
    redis.call('ZADD', KEYS[1], at, ARGV[i])
    redis.call('PEXPIRE', ARGV[1] .. ':c:' .. user, 2 * tonumber(ARGV[2]))
  end
end
return lost
";

/// KEYS: expiries. ARGV: prefix, limit.
const SWEEP: &str = r"
local now = now_ms()
local prefix = ARGV[1]
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  local user, conn = string.match(m, '^(.*)\31([^\31]*)$')
  if user then
    local ckey = prefix .. ':c:' .. user
    local v = redis.call('HGET', ckey, conn)
    redis.call('HDEL', ckey, conn)
    local seen = now
    if v then
      local closed = tonumber(string.sub(v, 3))
      if closed and closed > 0 then seen = closed end
    end
    local change = derive(prefix, user, now, seen, false)
    if change then table.insert(out, change) end
  end
end
return {#due, out}
";

/// Where and how to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// First part of every key: clusters (and test runs) sharing one Redis use different ones.
    pub prefix: String,
    /// Longest wait for a call (and for connecting).
    pub timeout: Duration,
}

/// Presence on Redis through one multiplexed connection that reconnects by itself.
pub struct RedisPresence {
    conn: ConnectionManager,
    prefix: String,
    expiries: String,
    timeout: Duration,
    set_status: redis::Script,
    disconnect: redis::Script,
    renew: redis::Script,
    sweep: redis::Script,
}

fn unavailable(e: impl std::fmt::Display) -> PresenceError {
    PresenceError::Unavailable(e.to_string())
}

/// A derived state as the scripts return it: user, status, seen, text, version.
type Row = (String, String, String, String, String);

fn state_of(row: Row) -> State {
    let (user, status, seen, text, version) = row;
    State {
        user,
        status: Status::parse(&status).unwrap_or(Status::Offline),
        last_seen_ms: seen.parse().ok(),
        text: (!text.is_empty()).then_some(text),
        version: version.parse().unwrap_or(0),
    }
}

fn member(user: &str, conn: &str) -> String {
    format!("{user}\x1f{conn}")
}

impl RedisPresence {
    /// Connects (failing after `timeout` when Redis cannot be reached).
    pub async fn connect(opts: &RedisOptions) -> PresenceResult<RedisPresence> {
        let client = redis::Client::open(opts.url.as_str()).map_err(unavailable)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(opts.timeout))
            .set_response_timeout(Some(opts.timeout))
            .set_number_of_retries(2);
        let conn = tokio::time::timeout(opts.timeout, ConnectionManager::new_with_config(client, config))
            .await
            .map_err(|_| PresenceError::Unavailable("timed out connecting to Redis".into()))?
            .map_err(unavailable)?;
        let script = |body: &str| redis::Script::new(&format!("{PRELUDE}\n{body}"));
        Ok(RedisPresence {
            conn,
            prefix: opts.prefix.clone(),
            expiries: format!("{}:x", opts.prefix),
            timeout: opts.timeout,
            set_status: script(SET_STATUS),
            disconnect: script(DISCONNECT),
            renew: script(RENEW),
            sweep: script(SWEEP),
        })
    }

    /// Runs a call within the timeout.
    async fn bounded<T>(&self, call: impl Future<Output = redis::RedisResult<T>>) -> PresenceResult<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(PresenceError::Unavailable("Redis call timed out".into())),
        }
    }

    /// Deletes every key under the prefix (tests clean up after themselves with it).
    pub async fn clear(&self) -> PresenceResult<()> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}:*", self.prefix);
        let keys: Vec<String> = self.bounded(redis::cmd("KEYS").arg(&pattern).query_async(&mut conn)).await?;
        for chunk in keys.chunks(500) {
            self.bounded(redis::cmd("DEL").arg(chunk).query_async::<()>(&mut conn)).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn set_status(
        &self,
        user: &str,
        conn: &str,
        status: ChosenStatus,
        text: Text,
        ttl_ms: u64,
    ) -> PresenceResult<Option<State>> {
        let mut c = self.conn.clone();
        let flag = if status == ChosenStatus::Online { "o" } else { "a" };
        let (mode, text) = match text {
            Text::Keep => ("keep", String::new()),
            Text::Set(t) => ("set", t),
            Text::Clear => ("clear", String::new()),
        };
        let mut call = self.set_status.key(&self.expiries);
        call.arg(&self.prefix).arg(user).arg(conn).arg(flag).arg(ttl_ms).arg(mode).arg(text);
        let row: Option<Row> = self.bounded(call.invoke_async(&mut c)).await?;
        Ok(row.map(state_of))
    }

    async fn disconnect(&self, user: &str, conn: &str, grace_ms: u64) -> PresenceResult<()> {
        let mut c = self.conn.clone();
        let mut call = self.disconnect.key(&self.expiries);
        call.arg(&self.prefix).arg(user).arg(conn).arg(grace_ms);
        self.bounded(call.invoke_async::<i64>(&mut c)).await?;
        Ok(())
    }

    async fn renew(&self, conns: &[(String, String)], ttl_ms: u64) -> PresenceResult<Vec<usize>> {
        let mut lost = Vec::new();
        // A script holds Redis while it runs: 500 connections at a time keeps each short.
        for (n, chunk) in conns.chunks(500).enumerate() {
            let mut c = self.conn.clone();
            let mut call = self.renew.key(&self.expiries);
            call.arg(&self.prefix).arg(ttl_ms);
            for (user, conn) in chunk {
                call.arg(member(user, conn));
            }
            let gone: Vec<usize> = self.bounded(call.invoke_async(&mut c)).await?;
            lost.extend(gone.into_iter().map(|i| n * 500 + i));
        }
        Ok(lost)
    }

    async fn sweep(&self, limit: usize) -> PresenceResult<Swept> {
        let mut c = self.conn.clone();
        let mut call = self.sweep.key(&self.expiries);
        call.arg(&self.prefix).arg(limit);
        let (removed, rows): (usize, Vec<Row>) = self.bounded(call.invoke_async(&mut c)).await?;
        Ok(Swept { removed, changes: rows.into_iter().map(state_of).collect() })
    }

    async fn get(&self, users: &[String]) -> PresenceResult<Vec<State>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn.clone();
        let mut pipe = redis::pipe();
        for u in users {
            pipe.cmd("HMGET").arg(format!("{}:s:{u}", self.prefix)).arg(&["status", "seen", "text", "v"]);
        }
        type Fields = (Option<String>, Option<String>, Option<String>, Option<String>);
        let rows: Vec<Fields> = self.bounded(pipe.query_async(&mut c)).await?;
        Ok(users
            .iter()
            .zip(rows)
            .map(|(u, (status, seen, text, v))| {
                state_of((
                    u.clone(),
                    status.unwrap_or_else(|| "offline".into()),
                    seen.unwrap_or_default(),
                    text.unwrap_or_default(),
                    v.unwrap_or_default(),
                ))
            })
            .collect())
    }

    async fn ping(&self) -> PresenceResult<()> {
        let mut c = self.conn.clone();
        self.bounded(redis::cmd("PING").query_async::<String>(&mut c)).await?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;

    /// The Redis the networked tests use, and a key prefix of this test's own.
    pub(crate) fn test_options() -> RedisOptions {
        let url = std::env::var("SWITCHBOARD_TEST_REDIS").unwrap_or_else(|_| {
            panic!("SWITCHBOARD_TEST_REDIS is not set: these tests need Redis (scripts/test sets it up)")
        });
        let run = std::env::var("SWITCHBOARD_TEST_REDIS_PREFIX").unwrap_or_else(|_| "sbtest".into());
        RedisOptions {
            url,
            prefix: format!("{run}:{}", uuid::Uuid::now_v7().simple()),
            timeout: Duration::from_secs(5),
        }
    }

    /// Deletes the test's keys when it ends, however it ends.
    pub(crate) struct Cleanup(pub(crate) RedisOptions);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let Ok(client) = redis::Client::open(self.0.url.as_str()) else { return };
            let Ok(mut conn) = client.get_connection() else { return };
            let keys: Vec<String> =
                redis::cmd("KEYS").arg(format!("{}:*", self.0.prefix)).query(&mut conn).unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        }
    }

    async fn fresh() -> (Cleanup, Arc<dyn Presence>) {
        let opts = test_options();
        let p = RedisPresence::connect(&opts).await.expect("connect to Redis");
        (Cleanup(opts), Arc::new(p))
    }

    crate::presence_conformance!(fresh, #[ignore = "needs Redis: scripts/test runs it"]);

    #[tokio::test]
    #[ignore = "needs Redis: scripts/test runs it"]
    async fn a_redis_that_lost_its_keys_reports_every_connection_lost() {
        let (_guard, p) = fresh().await;
        p.connect("u1", "n/a", ChosenStatus::Online, 60_000).await.unwrap();
        p.connect("u2", "n/b", ChosenStatus::Away, 60_000).await.unwrap();
        let before = p.get(&["u1".to_owned()]).await.unwrap().remove(0).version;
        let opts = _guard.0.clone();
        RedisPresence::connect(&opts).await.unwrap().clear().await.unwrap();
        let conns = vec![("u1".to_owned(), "n/a".to_owned()), ("u2".to_owned(), "n/b".to_owned())];
        assert_eq!(p.renew(&conns, 60_000).await.unwrap(), vec![0, 1]);
        let back = p.connect("u1", "n/a", ChosenStatus::Online, 60_000).await.unwrap().expect("online again");
        assert!(back.version >= before, "versions keep growing after a loss");
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_fast_with_unavailable() {
        let opts = RedisOptions {
            url: "redis://127.0.0.1:1".into(),
            prefix: "x".into(),
            timeout: Duration::from_millis(500),
        };
        let started = std::time::Instant::now();
        assert!(matches!(RedisPresence::connect(&opts).await, Err(PresenceError::Unavailable(_))));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
