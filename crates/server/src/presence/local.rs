//! In-process presence: the embedded default, and the backend of several in-process nodes that
//! share one instance (as nodes share one Redis).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use switchboard_protocol::{ChosenStatus, Status};

use super::{Presence, PresenceError, PresenceResult, State, Swept, Text};

/// Offline users whose last connection went this long ago are forgotten (their `last_seen`
/// with them), so the map holds the recently seen, not everyone who ever connected.
const FORGET_AFTER_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy)]
struct ConnEntry {
    online: bool,
    expires: i64,
    /// When it closed (ms), if it has: it lingers until `expires` for the debounce.
    closed: Option<i64>,
}

#[derive(Debug, Default)]
struct UserEntry {
    conns: HashMap<Arc<str>, ConnEntry>,
    status: Option<Status>,
    last_seen: Option<i64>,
    text: Option<String>,
    version: u64,
}

impl UserEntry {
    fn state(&self, user: &str) -> State {
        State {
            user: user.to_owned(),
            status: self.status.unwrap_or(Status::Offline),
            last_seen_ms: self.last_seen,
            text: self.text.clone(),
            version: self.version,
        }
    }

    /// Derives the status from the connections; a new state when it (or the text, `touched`)
    /// changed.
    fn derive(&mut self, user: &str, now: i64, seen: Option<i64>, touched: bool) -> Option<State> {
        let status = if self.conns.is_empty() {
            Status::Offline
        } else if self.conns.values().any(|c| c.online) {
            Status::Online
        } else {
            Status::Away
        };
        if self.status.unwrap_or(Status::Offline) == status && !touched {
            return None;
        }
        if status == Status::Offline && self.status.is_some_and(|s| s != Status::Offline) {
            self.last_seen = Some(seen.unwrap_or(now));
        }
        self.status = Some(status);
        self.version = (self.version + 1).max(u64::try_from(now).unwrap_or(0));
        Some(self.state(user))
    }
}

/// Users and connections are named by shared strings: a connection's ids are held once however
/// many places (the user's table, the expiry index) refer to it, which is most of what an idle
/// connection costs here.
#[derive(Debug, Default)]
struct Inner {
    users: HashMap<Arc<str>, UserEntry>,
    /// `(expires, user, conn)` for every connection, so a sweep reads only what lapsed.
    expiries: BTreeSet<(i64, Arc<str>, Arc<str>)>,
    /// How many users were left after the last pass that forgot long-offline ones.
    pruned_at: usize,
}

impl Inner {
    fn put(&mut self, user: &str, conn: &str, entry: ConnEntry) {
        let user = match self.users.get_key_value(user) {
            Some((known, _)) => known.clone(),
            None => Arc::from(user),
        };
        let u = self.users.entry(user.clone()).or_default();
        let conn = match u.conns.get_key_value(conn) {
            Some((known, _)) => known.clone(),
            None => Arc::from(conn),
        };
        if let Some(old) = u.conns.insert(conn.clone(), entry) {
            self.expiries.remove(&(old.expires, user.clone(), conn.clone()));
        }
        self.expiries.insert((entry.expires, user, conn));
    }
}

/// Presence held in this process.
#[derive(Debug, Default)]
pub struct LocalPresence {
    inner: Mutex<Inner>,
}

impl LocalPresence {
    /// An empty presence table.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> PresenceResult<std::sync::MutexGuard<'_, Inner>> {
        self.inner.lock().map_err(|_| PresenceError::Unavailable("presence lock poisoned".into()))
    }
}

fn now_ms() -> i64 {
    crate::store::now_ms()
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX / 2)
}

#[async_trait]
impl Presence for LocalPresence {
    async fn set_status(
        &self,
        user: &str,
        conn: &str,
        status: ChosenStatus,
        text: Text,
        ttl_ms: u64,
    ) -> PresenceResult<Option<State>> {
        let now = now_ms();
        let mut inner = self.lock()?;
        let entry =
            ConnEntry { online: status == ChosenStatus::Online, expires: now + ms(ttl_ms), closed: None };
        inner.put(user, conn, entry);
        let Some(u) = inner.users.get_mut(user) else { return Ok(None) };
        let touched = match text {
            Text::Keep => false,
            Text::Set(t) if u.text.as_deref() == Some(t.as_str()) => false,
            Text::Set(t) => {
                u.text = Some(t);
                true
            }
            Text::Clear => u.text.take().is_some(),
        };
        Ok(u.derive(user, now, None, touched))
    }

    async fn disconnect(&self, user: &str, conn: &str, grace_ms: u64) -> PresenceResult<()> {
        let now = now_ms();
        let mut inner = self.lock()?;
        let Some(old) = inner.users.get(user).and_then(|u| u.conns.get(conn)).copied() else {
            return Ok(());
        };
        inner.put(user, conn, ConnEntry { expires: now + ms(grace_ms), closed: Some(now), ..old });
        Ok(())
    }

    async fn renew(&self, conns: &[(String, String)], ttl_ms: u64) -> PresenceResult<Vec<usize>> {
        let now = now_ms();
        let mut inner = self.lock()?;
        let mut lost = Vec::new();
        for (i, (user, conn)) in conns.iter().enumerate() {
            match inner.users.get(user.as_str()).and_then(|u| u.conns.get(conn.as_str())).copied() {
                Some(old) if old.closed.is_none() => {
                    inner.put(user, conn, ConnEntry { expires: now + ms(ttl_ms), ..old });
                }
                // Closed and lingering: known, left to lapse.
                Some(_) => {}
                None => lost.push(i),
            }
        }
        Ok(lost)
    }

    async fn sweep(&self, limit: usize) -> PresenceResult<Swept> {
        let now = now_ms();
        let mut inner = self.lock()?;
        let lapsed: Vec<(i64, Arc<str>, Arc<str>)> =
            inner.expiries.iter().take_while(|(at, _, _)| *at <= now).take(limit).cloned().collect();
        let removed = lapsed.len();
        let mut changes = Vec::new();
        for key in lapsed {
            inner.expiries.remove(&key);
            let (_, user, conn) = key;
            let Some(u) = inner.users.get_mut(&*user) else { continue };
            let seen = u.conns.remove(&*conn).map(|c| c.closed.unwrap_or(now));
            if let Some(change) = u.derive(&user, now, seen, false) {
                changes.push(change);
            }
        }
        // Forget long-offline users without text: nothing of them is worth keeping. Only when
        // the map doubled since the last pass, so the walk costs nothing per sweep.
        if inner.users.len() > inner.pruned_at.max(5_000) * 2 {
            inner.users.retain(|_, u| {
                !u.conns.is_empty()
                    || u.text.is_some()
                    || u.last_seen.is_some_and(|s| now - s < FORGET_AFTER_MS)
            });
            inner.pruned_at = inner.users.len();
        }
        Ok(Swept { removed, changes })
    }

    async fn get(&self, users: &[String]) -> PresenceResult<Vec<State>> {
        let inner = self.lock()?;
        Ok(users
            .iter()
            .map(|u| inner.users.get(u.as_str()).map_or_else(|| State::unknown(u), |e| e.state(u)))
            .collect())
    }

    async fn ping(&self) -> PresenceResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn fresh() -> ((), Arc<dyn Presence>) {
        ((), Arc::new(LocalPresence::new()))
    }

    crate::presence_conformance!(fresh);
}
