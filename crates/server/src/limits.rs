//! Throttles on what strangers can make the node do: sign-ups and logins per client address,
//! growing backoff after failed logins, and writes (messages, edits, rooms, adds, joins) per
//! user across all of their connections and REST. Each refusal says when to retry (`429 rate_limited` with `Retry-After`, or an `error`
//! frame with `retry_after_ms`).
//!
//! Failed logins back off per account *and address* pair, so a stranger's failures against a
//! victim's account slow the stranger down, never the victim. Two wider tiers catch the rest:
//! one address guessing across many accounts, and many addresses guessing one account; the
//! second is softer (at most a minute) and skips addresses the account signed in from lately,
//! so even a distributed attack cannot lock the owner out of their usual devices.
//!
//! All state lives in this node's memory with a bound on its keys, swept once a minute. Across
//! nodes each node throttles on its own, so a cluster of N allows N times the rate; accounts
//! stay safe because every node applies the same backoff to the attempts it sees.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::Config;
use crate::error::ApiError;

/// Most keys one table keeps; past it, idle keys are swept first, and then each table makes
/// room its own way (see [`Backoff::fail`], [`Keyed::check`] and [`Limits::typing`]).
const MAX_KEYS: usize = 100_000;
/// A failure record is forgotten after this long without a new failure.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Longest wait imposed on one account and address pair, or on one address.
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// Longest wait imposed on an account for failures from all addresses together.
const MAX_ACCOUNT_BACKOFF: Duration = Duration::from_secs(60);
/// Failures across all addresses before the account-wide tier starts to slow new addresses.
const ACCOUNT_FREE_FAILURES: u32 = 50;
/// Failures from one address across all accounts before that address backs off.
const ADDRESS_FREE_FAILURES: u32 = 30;
/// Addresses remembered per account as ones it signed in from.
const KNOWN_PER_ACCOUNT: usize = 8;

/// The client address as throttles see it: IPv4 as is, IPv6 by its /64 (one subscriber's
/// share, which a single attacker can fill with addresses at will).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Failures per key with a wait that doubles past a free allowance.
struct Backoff<K> {
    entries: Mutex<Table<K>>,
    free: u32,
    max: Duration,
}

/// The keys of a [`Backoff`], and when idle ones were last swept.
struct Table<K> {
    map: HashMap<K, Strikes>,
    swept: Instant,
}

/// A full table is swept at most this often (a sweep visits every key).
const SWEEP_AT_MOST_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy)]
struct Strikes {
    failures: u32,
    until: Instant,
    last: Instant,
}

impl<K: Hash + Eq + Clone> Backoff<K> {
    fn new(free: u32, max: Duration) -> Self {
        Backoff { entries: Mutex::new(Table { map: HashMap::new(), swept: Instant::now() }), free, max }
    }

    /// How long `key` must still wait, if at all.
    fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        let entries = self.entries.lock().ok()?;
        entries.map.get(key).and_then(|s| (s.until > now).then(|| s.until - now))
    }

    fn fail(&self, key: K, now: Instant) {
        let Ok(mut table) = self.entries.lock() else { return };
        if table.map.len() >= MAX_KEYS && !table.map.contains_key(&key) {
            if now.duration_since(table.swept) >= SWEEP_AT_MOST_EVERY {
                table.map.retain(|_, s| now.duration_since(s.last) < FORGET_AFTER || s.until > now);
                table.swept = now;
            }
            // Still full (someone is filling it on purpose): make room at an arbitrary key
            // rather than stop tracking, so that new addresses still back off.
            if table.map.len() >= MAX_KEYS
                && let Some(k) = table.map.keys().next().cloned()
            {
                table.map.remove(&k);
            }
        }
        let s = table.map.entry(key).or_insert(Strikes { failures: 0, until: now, last: now });
        if now.duration_since(s.last) >= FORGET_AFTER {
            s.failures = 0;
        }
        s.failures = s.failures.saturating_add(1);
        s.last = now;
        if s.failures > self.free {
            let doublings = (s.failures - self.free - 1).min(20);
            let wait = Duration::from_secs(1).saturating_mul(1 << doublings).min(self.max);
            s.until = now + wait;
        }
    }

    fn clear(&self, key: &K) {
        if let Ok(mut table) = self.entries.lock() {
            table.map.remove(key);
        }
    }

    fn sweep(&self, now: Instant) {
        if let Ok(mut table) = self.entries.lock() {
            table.map.retain(|_, s| now.duration_since(s.last) < FORGET_AFTER || s.until > now);
            table.map.shrink_to_fit();
            table.swept = now;
        }
    }
}

/// A keyed rate limiter with a bound on its keys. Governor keeps a state for every key it has
/// seen until a sweep drops the idle ones, and the sweep runs once a minute: without a bound,
/// a stranger with many addresses (an IPv6 /48 holds 65,536 /64s) could grow a table without
/// limit in between. The limiter sits behind a lock only so that a full one can be replaced.
struct Keyed<K: Hash + Eq + Clone> {
    quota: Quota,
    limiter: RwLock<DefaultKeyedRateLimiter<K>>,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn new(quota: Quota) -> Self {
        Keyed { quota, limiter: RwLock::new(RateLimiter::keyed(quota)) }
    }

    /// The limiter; a poisoned lock still holds a whole limiter (no code of ours panics while
    /// holding it for writing), so it is used as is rather than letting every check fail.
    fn read(&self) -> RwLockReadGuard<'_, DefaultKeyedRateLimiter<K>> {
        self.limiter.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one cell for `key`, or says how long until it may try again.
    fn check(&self, key: &K, clock: &DefaultClock) -> Result<(), Duration> {
        if self.read().len() >= MAX_KEYS {
            self.make_room();
        }
        self.read().check_key(key).map_err(|not_until| not_until.wait_time_from(clock.now()))
    }

    /// A full table drops its idle keys; if it is still more than half full, someone is filling
    /// it on purpose, and it starts over empty. Governor cannot drop one chosen key, so the
    /// choice is between starting over and refusing keys it has not seen: refusing would let
    /// whoever fills the table lock every newcomer out (no one could sign up or sign in), while
    /// starting over only hands every key, theirs included, a fresh budget, once per 50,000 new
    /// keys; someone holding that many addresses or accounts has that many budgets anyway. The
    /// failed-login backoff lives in other tables, so password guessing stays slowed. Clearing
    /// at half rather than at full keeps the sweep, which visits every key, to once per
    /// 50,000 new keys too. Two callers can both see the table full; the second finds room
    /// made and leaves it; the bound is loose by the checks in flight between `len` and
    /// `check_key`.
    fn make_room(&self) {
        let mut limiter = self.limiter.write().unwrap_or_else(PoisonError::into_inner);
        if limiter.len() < MAX_KEYS {
            return;
        }
        limiter.retain_recent();
        if limiter.len() > MAX_KEYS / 2 {
            *limiter = RateLimiter::keyed(self.quota);
        }
    }

    /// Drops idle keys and the memory they held.
    fn sweep(&self) {
        let limiter = self.read();
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}

fn quota(per: Duration, n: u32, burst: u32) -> Quota {
    let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(n);
    Quota::with_period(per / n.get()).unwrap_or_else(|| Quota::per_second(n)).allow_burst(burst)
}

/// The node's throttles.
pub struct Limits {
    signups: Keyed<IpAddr>,
    login_attempts: Keyed<IpAddr>,
    sends: Keyed<String>,
    /// When each user last typed into each room (their indicator went out); `None` when typing
    /// is not throttled (`typing_interval_ms = 0`).
    typing: Option<Mutex<HashMap<(String, String), Instant>>>,
    typing_every: Duration,
    login_pairs: Backoff<(String, IpAddr)>,
    login_addresses: Backoff<IpAddr>,
    login_accounts: Backoff<String>,
    known: Mutex<HashMap<String, Vec<IpAddr>>>,
    clock: DefaultClock,
}

impl Limits {
    /// Throttles sized by the configuration.
    pub fn new(cfg: &Config) -> Limits {
        let signups = cfg.signups_per_ip_per_hour;
        let logins = cfg.logins_per_ip_per_min;
        Limits {
            signups: Keyed::new(quota(Duration::from_secs(3600), signups, signups)),
            login_attempts: Keyed::new(quota(Duration::from_secs(60), logins, logins.div_ceil(3))),
            sends: Keyed::new(quota(Duration::from_secs(1), cfg.user_sends_per_sec, cfg.user_sends_burst)),
            typing: (cfg.typing_interval_ms > 0).then(|| Mutex::new(HashMap::new())),
            typing_every: Duration::from_millis(cfg.typing_interval_ms),
            login_pairs: Backoff::new(cfg.login_free_failures, MAX_BACKOFF),
            login_addresses: Backoff::new(ADDRESS_FREE_FAILURES.max(cfg.login_free_failures), MAX_BACKOFF),
            login_accounts: Backoff::new(ACCOUNT_FREE_FAILURES, MAX_ACCOUNT_BACKOFF),
            known: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    fn keyed<K: Hash + Eq + Clone>(
        &self,
        limiter: &Keyed<K>,
        key: &K,
        message: &str,
    ) -> Result<(), ApiError> {
        limiter.check(key, &self.clock).map_err(|wait| ApiError::rate_limited(wait, message))
    }

    /// A sign-up from `ip`.
    pub fn signup(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.keyed(&self.signups, &client_key(ip), "too many sign-ups from your address; retry later")
    }

    /// A write by `user`, on any connection or REST: a message, an edit or delete, a new room,
    /// an add or invite, a join. One budget for them all, so that none of them is a way around
    /// the others.
    pub fn write(&self, user: &str) -> Result<(), ApiError> {
        self.keyed(&self.sends, &user.to_owned(), "you are sending too fast; slow down")
    }

    /// Whether a typing indicator of `user` in `room` goes out: one per `typing_interval_ms`
    /// from all of the user's devices; the rest are dropped without an error (typing is best
    /// effort, and clients show an indicator for a few seconds after the last one).
    pub fn typing(&self, user: &str, room: &str) -> bool {
        let Some(Ok(mut last)) = self.typing.as_ref().map(Mutex::lock) else {
            return true;
        };
        let now = Instant::now();
        let key = (user.to_owned(), room.to_owned());
        if last.get(&key).is_some_and(|at| now.duration_since(*at) < self.typing_every) {
            return false;
        }
        if last.len() >= MAX_KEYS {
            let every = self.typing_every;
            last.retain(|_, at| now.duration_since(*at) < every);
        }
        if last.len() < MAX_KEYS {
            last.insert(key, now);
        }
        true
    }

    /// The user sent a message into the room: watchers stop showing them as typing, so the
    /// next indicator goes out at once.
    pub fn typing_ended(&self, user: &str, room: &str) {
        if let Some(Ok(mut last)) = self.typing.as_ref().map(Mutex::lock) {
            last.remove(&(user.to_owned(), room.to_owned()));
        }
    }

    /// Checked before a password is hashed: whether `ip` may try `account` now.
    pub fn login(&self, account: &str, ip: IpAddr) -> Result<(), ApiError> {
        let ip = client_key(ip);
        self.keyed(&self.login_attempts, &ip, "too many sign-in attempts from your address; retry later")?;
        let now = Instant::now();
        let account_wide = if self.is_known(account, ip) {
            None
        } else {
            self.login_accounts.wait(&account.to_owned(), now)
        };
        let wait = [
            self.login_pairs.wait(&(account.to_owned(), ip), now),
            self.login_addresses.wait(&ip, now),
            account_wide,
        ]
        .into_iter()
        .flatten()
        .max();
        match wait {
            Some(w) => Err(ApiError::rate_limited(w, "too many failed sign-ins; wait before trying again")),
            None => Ok(()),
        }
    }

    /// Records how a login checked by [`Limits::login`] ended.
    pub fn login_result(&self, account: &str, ip: IpAddr, ok: bool) {
        let ip = client_key(ip);
        let now = Instant::now();
        if ok {
            self.login_pairs.clear(&(account.to_owned(), ip));
            self.remember(account, ip);
        } else {
            self.login_pairs.fail((account.to_owned(), ip), now);
            self.login_addresses.fail(ip, now);
            self.login_accounts.fail(account.to_owned(), now);
        }
    }

    fn is_known(&self, account: &str, ip: IpAddr) -> bool {
        self.known.lock().map(|k| k.get(account).is_some_and(|ips| ips.contains(&ip))).unwrap_or(false)
    }

    fn remember(&self, account: &str, ip: IpAddr) {
        let Ok(mut known) = self.known.lock() else { return };
        if known.len() >= MAX_KEYS
            && !known.contains_key(account)
            && let Some(k) = known.keys().next().cloned()
        {
            known.remove(&k);
        }
        let ips = known.entry(account.to_owned()).or_default();
        ips.retain(|k| *k != ip);
        ips.push(ip);
        if ips.len() > KNOWN_PER_ACCOUNT {
            ips.remove(0);
        }
    }

    /// Drops idle keys so that memory follows recent traffic, not all traffic ever seen.
    pub fn sweep(&self) {
        self.signups.sweep();
        self.login_attempts.sweep();
        self.sends.sweep();
        if let Some(Ok(mut last)) = self.typing.as_ref().map(Mutex::lock) {
            let every = self.typing_every;
            last.retain(|_, at| at.elapsed() < every);
            last.shrink_to_fit();
        }
        let now = Instant::now();
        self.login_pairs.sweep(now);
        self.login_addresses.sweep(now);
        self.login_accounts.sweep(now);
    }

    /// Sweeps once a minute until `stop`.
    pub async fn run(self: std::sync::Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.sweep(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(free: u32) -> Limits {
        Limits::new(&Config { login_free_failures: free, logins_per_ip_per_min: 10_000, ..Config::default() })
    }

    #[test]
    fn failures_back_off_per_account_and_address_but_not_for_others() {
        let l = limits(3);
        let (attacker, victim) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert!(l.login("alice", attacker).is_ok());
            l.login_result("alice", attacker, false);
        }
        assert!(l.login("alice", attacker).is_ok(), "three free failures");
        l.login_result("alice", attacker, false);
        let refused = l.login("alice", attacker).unwrap_err();
        assert_eq!(refused.status, axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.retry_after.is_some_and(|w| w <= Duration::from_secs(1)));
        assert!(l.login("alice", victim).is_ok(), "the owner's address is not slowed");
        assert!(l.login("bob", attacker).is_ok(), "other accounts from the address are not yet slowed");
    }

    #[test]
    fn a_full_table_still_tracks_new_keys() {
        let b: Backoff<u32> = Backoff::new(0, MAX_BACKOFF);
        let now = Instant::now();
        for k in 0..MAX_KEYS as u32 {
            b.fail(k, now);
        }
        b.fail(u32::MAX, now);
        assert!(b.wait(&u32::MAX, now).is_some(), "a newcomer past a full table backs off too");
        assert!(b.entries.lock().unwrap().map.len() <= MAX_KEYS);
    }

    #[test]
    fn a_full_rate_limiter_starts_over_instead_of_growing_or_refusing() {
        let l = Limits::new(&Config::default());
        for i in 0..MAX_KEYS as u32 {
            assert!(l.signup(IpAddr::V4(std::net::Ipv4Addr::from(i))).is_ok());
        }
        assert_eq!(l.signups.read().len(), MAX_KEYS, "each address spent one sign-up and is kept");
        let newcomer = IpAddr::V4(std::net::Ipv4Addr::from(u32::MAX));
        assert!(l.signup(newcomer).is_ok(), "a newcomer past a full table is not refused");
        assert!(l.signups.read().len() <= MAX_KEYS, "the table does not grow past its bound");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let a = client_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = client_key("2001:db8:1:2:bbbb::9".parse().unwrap());
        assert_eq!(a, b);
        assert_eq!(client_key("::ffff:10.1.2.3".parse().unwrap()), "10.1.2.3".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn sends_are_counted_per_user() {
        let l = Limits::new(&Config { user_sends_per_sec: 1, user_sends_burst: 2, ..Config::default() });
        assert!(l.write("u1").is_ok());
        assert!(l.write("u1").is_ok());
        assert!(l.write("u1").unwrap_err().retry_after.is_some());
        assert!(l.write("u2").is_ok());
    }
}
