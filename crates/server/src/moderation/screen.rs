//! Screening of a message's text on the send path: the mention cap, then the server's filters,
//! then the room's own. Each room's filters are compiled once per node and kept; a node reads
//! the stored rules again at most every [`REREAD_AFTER`] while the room is sent to, so a change
//! made on another node holds everywhere within that long (at once on the node that made it).
//!
//! A block and a flag leave an audit entry, written off the send path through a bounded queue:
//! a flood of blocked messages can fill the queue and lose entries (counted in the logs), never
//! slow down the sends of others or grow memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_protocol::codes::error as code;
use switchboard_protocol::rest::Filters;
use tokio::sync::mpsc;

use super::filter::{Filter, FilterError, Rule};
use super::hook::{Hook, Verdict};
use crate::error::ApiError;
use crate::store::{Store, StoreError};

/// A node reads a room's stored filters again after this long.
pub const REREAD_AFTER: Duration = Duration::from_secs(2);
/// Rooms whose compiled filters a node keeps; past it, the cache starts over.
const MAX_ROOMS: usize = 10_000;
/// Audit entries waiting to be written.
const AUDIT_QUEUE: usize = 1_024;

/// One room's filters as this node last read them.
struct Cached {
    read_at: Instant,
    raw: Option<String>,
    filter: Option<Arc<Filter>>,
}

/// The screening service of one node.
pub struct Screen {
    server: Option<Filter>,
    hook: Option<Hook>,
    max_mentions: usize,
    store: Arc<dyn Store>,
    rooms: Mutex<HashMap<String, Cached>>,
    audit: mpsc::Sender<AutoEntry>,
    /// Automatic audit entries dropped because the queue was full, since start.
    dropped: AtomicU64,
    /// When a drop was last logged (ms since the epoch).
    dropped_said: AtomicI64,
}

/// An audit entry the server writes by itself.
struct AutoEntry {
    room: String,
    author: String,
    action: &'static str,
    detail: String,
}

/// A message that passed screening: the text to store, and the rules that flagged it (to be
/// audited once it is stored).
pub struct Passed {
    /// The text, masked where a `mask` rule matched.
    pub body: String,
    /// Rules with the `flag` action that matched.
    pub flagged: Vec<Rule>,
}

impl Screen {
    /// Compiles the server-wide filters and starts the audit writer.
    pub fn new(
        server: &Filters,
        max_mentions: usize,
        hook: Option<Hook>,
        store: Arc<dyn Store>,
    ) -> Result<Arc<Self>, FilterError> {
        let server = if server.is_empty() { None } else { Some(Filter::compile(server)?) };
        let (audit, mut queue) = mpsc::channel::<AutoEntry>(AUDIT_QUEUE);
        let writer = store.clone();
        tokio::spawn(async move {
            while let Some(e) = queue.recv().await {
                if let Err(err) = writer.record_automatic(&e.room, &e.author, e.action, &e.detail).await {
                    tracing::warn!(error = %err, room = %e.room, "an automatic audit entry was not written");
                }
            }
        });
        Ok(Arc::new(Screen {
            server,
            hook,
            max_mentions,
            store,
            rooms: Mutex::new(HashMap::new()),
            audit,
            dropped: AtomicU64::new(0),
            dropped_said: AtomicI64::new(0),
        }))
    }

    /// Screens a message for `room` by `author`: `Err` when a rule refuses it (with an audit
    /// entry), else the text to store.
    pub async fn message(&self, room: &str, author: &str, body: String) -> Result<Passed, ApiError> {
        let mentions = count_mentions(&body);
        if mentions > self.max_mentions {
            return Err(ApiError::unprocessable(
                code::TOO_MANY_MENTIONS,
                format!("at most {} mentions per message ({mentions} here)", self.max_mentions),
            ));
        }
        let room_filter = self.room_filter(room).await?;
        if self.server.is_none() && room_filter.is_none() {
            return Ok(Passed { body, flagged: Vec::new() });
        }
        let mut flagged = Vec::new();
        let mut text = body;
        for filter in self.server.iter().chain(room_filter.as_deref()) {
            match filter.screen(&text) {
                Ok(s) => {
                    flagged.extend(s.flagged);
                    if let std::borrow::Cow::Owned(masked) = s.body {
                        text = masked;
                    }
                }
                Err(rule) => {
                    self.record(room, author, "auto_block", rule.detail());
                    return Err(ApiError::unprocessable(code::FILTERED, rule.explain()));
                }
            }
        }
        Ok(Passed { body: text, flagged })
    }

    /// Asks the operator's classifier, when there is one (after every other check, so that
    /// what a cheap rule refuses never costs a call): `Err` when it refuses the message (with an
    /// audit entry) or cannot be asked and the hook fails closed; else the flag it raised.
    pub async fn classify(&self, room: &str, author: &str, body: &str) -> Result<Option<Rule>, ApiError> {
        let Some(hook) = &self.hook else { return Ok(None) };
        match hook.check(room, author, body).await? {
            Verdict::Allow => Ok(None),
            Verdict::Flag(why) => Ok(Some(Rule::Classifier(why))),
            Verdict::Block(why) => {
                let rule = Rule::Classifier(why);
                self.record(room, author, "auto_block", rule.detail());
                Err(ApiError::unprocessable(code::REJECTED, rule.explain()))
            }
        }
    }

    /// Audits the flags of a stored message.
    pub fn flagged(&self, room: &str, author: &str, message_id: &str, rules: &[Rule]) {
        for rule in rules {
            self.record(room, author, "auto_flag", format!("{} in message {message_id}", rule.detail()));
        }
    }

    /// Forgets a room's compiled filters (they just changed on this node).
    pub fn forget(&self, room: &str) {
        if let Ok(mut rooms) = self.rooms.lock() {
            rooms.remove(room);
        }
    }

    fn record(&self, room: &str, author: &str, action: &'static str, detail: String) {
        let entry = AutoEntry { room: room.to_owned(), author: author.to_owned(), action, detail };
        if self.audit.try_send(entry).is_err() {
            // Said once a second at most, with the count: a flood must not become a log flood.
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let now = crate::store::now_ms();
            let last = self.dropped_said.load(Ordering::Relaxed);
            if now - last >= 1_000
                && self.dropped_said.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                tracing::warn!(dropped, "the automatic audit queue is full: entries were dropped");
            }
        }
    }

    /// The room's compiled filters, read again from the store when the cached copy is old.
    async fn room_filter(&self, room: &str) -> Result<Option<Arc<Filter>>, ApiError> {
        let now = Instant::now();
        if let Ok(rooms) = self.rooms.lock()
            && let Some(c) = rooms.get(room)
            && now.duration_since(c.read_at) < REREAD_AFTER
        {
            return Ok(c.filter.clone());
        }
        let raw = self.store.room_filters(room).await?;
        let unchanged = self
            .rooms
            .lock()
            .ok()
            .and_then(|rooms| rooms.get(room).filter(|c| c.raw == raw).map(|c| c.filter.clone()));
        let filter = match unchanged {
            Some(filter) => filter,
            None => compile_stored(room, raw.as_deref()),
        };
        if let Ok(mut rooms) = self.rooms.lock() {
            if rooms.len() >= MAX_ROOMS && !rooms.contains_key(room) {
                rooms.clear();
            }
            rooms.insert(room.to_owned(), Cached { read_at: now, raw, filter: filter.clone() });
        }
        Ok(filter)
    }
}

/// Compiles stored rules; rules that no longer compile (stored by an older version with other
/// bounds) are logged and skipped rather than refusing every message of the room.
fn compile_stored(room: &str, raw: Option<&str>) -> Option<Arc<Filter>> {
    let spec: Filters = match serde_json::from_str(raw?) {
        Ok(spec) => spec,
        Err(e) => {
            tracing::error!(room, error = %e, "a room's stored filters do not parse; not applied");
            return None;
        }
    };
    match Filter::compile(&spec) {
        Ok(f) => Some(Arc::new(f)),
        Err(e) => {
            tracing::error!(room, error = %e, "a room's stored filters do not compile; not applied");
            None
        }
    }
}

/// Checks that filters compile, and turns them into what the store keeps (`None` for none).
pub fn to_stored(filters: &Filters) -> Result<Option<String>, ApiError> {
    Filter::compile(filters).map_err(|e| ApiError::bad_request(code::INVALID_REQUEST, e.to_string()))?;
    if filters.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(filters).map(Some).map_err(|e| ApiError::from(StoreError::Fatal(e.to_string())))
}

/// Mentions in a text: `@` at the start or after a space, followed by a name character.
pub fn count_mentions(body: &str) -> usize {
    let mut count = 0;
    let mut prev = ' ';
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '@' && prev.is_whitespace() && chars.peek().is_some_and(|n| n.is_alphanumeric() || *n == '_')
        {
            count += 1;
        }
        prev = c;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::count_mentions;

    #[test]
    fn mentions_are_counted_at_word_starts() {
        assert_eq!(count_mentions("@ann and @bob_2, mail a@b.c, @ alone, @@x"), 2);
        assert_eq!(count_mentions(""), 0);
        assert_eq!(count_mentions("@é"), 1);
    }
}
