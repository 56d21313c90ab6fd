//! Per-connection delivery tracking for multi-room scenarios: every timeline event's `seq` is
//! checked against the last one seen in its room (lost, duplicated), and message bodies written
//! by this tool carry their send time (latency).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use serde::Deserialize;

use crate::report::Latency;

/// Counters shared by every connection of a run.
#[derive(Default)]
pub struct Totals {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub refused: AtomicU64,
    pub deliveries: AtomicU64,
    pub lost: AtomicU64,
    pub duplicated: AtomicU64,
    pub gaps: AtomicU64,
    pub closed: AtomicU64,
}

#[derive(Deserialize)]
struct Frame<'a> {
    op: &'a str,
    #[serde(default, borrow)]
    room: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    seq: u64,
    #[serde(default, borrow)]
    body: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    client_msg_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    until_seq: u64,
}

/// `s<sender>:<n>:<micros since start>`: the body this tool sends.
pub fn body(sender: usize, n: u64, start: Instant) -> String {
    format!("s{sender}:{n}:{}", start.elapsed().as_micros())
}

fn sent_at(body: &str) -> Option<u64> {
    body.strip_prefix('s')?.splitn(3, ':').nth(2)?.parse().ok()
}

/// `<sender>-<n>-t<micros since start>`: the `client_msg_id` this tool sends with a body of
/// plain prose (no digits for a filter to read as leetspeak), carrying the send time instead.
pub fn key(sender: usize, n: u64, start: Instant) -> String {
    format!("{sender}-{n}-t{}", start.elapsed().as_micros())
}

fn key_sent_at(key: &str) -> Option<u64> {
    key.rsplit_once("-t")?.1.parse().ok()
}

/// At least `chars` characters of ordinary chat prose (whole sentences) for a sender's `n`th
/// message: 120 different texts in turn (a name, then sentences), so a sender repeats one only
/// after 120 messages.
pub fn prose(chars: usize, sender: usize, n: u64) -> String {
    const NAMES: [&str; 40] = [
        "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory",
        "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Uma", "Victor", "Walter", "Xena", "Yusuf",
        "Zoe", "Amir", "Bea", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Igor", "Jun", "Kofi", "Lena",
        "Marco", "Nora", "Omar", "Priya", "Quinn",
    ];
    const LINES: [&str; 12] = [
        "are we still on for lunch tomorrow?",
        "I think the new build looks good, but let me check again after standup.",
        "thanks, that fixed it for me",
        "can someone review my pull request when you have a minute?",
        "the meeting moved to 3pm, same room as last week",
        "just landed, will be online in an hour or so",
        "does anyone know why the staging deploy is failing?",
        "great work on the release everyone!",
        "I'll be out on Friday, back on Monday morning",
        "sounds good to me, let's ship it",
        "can you send me the link to the design doc?",
        "weather is terrible here today, working from home",
    ];
    if chars == 0 {
        return String::new();
    }
    let n = usize::try_from(n).unwrap_or(0);
    let mut out = format!("{},", NAMES[n % NAMES.len()]);
    let mut k = sender + n * 5;
    while out.chars().count() < chars {
        out.push(' ');
        out.push_str(LINES[k % LINES.len()]);
        k += 5;
    }
    out
}

/// What a frame was, for callers that count more than the totals do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// An `ack` of one of this connection's sends.
    Ack,
    /// Anything else.
    Other,
}

/// One connection's view of its rooms.
pub struct Tracker {
    /// Shard for the latency histogram.
    pub index: usize,
    /// Last `seq` seen per room.
    pub last: HashMap<String, u64>,
}

impl Tracker {
    /// Accounts one text frame.
    pub fn on_text(&mut self, text: &str, start: Instant, t: &Totals, lat: &Latency) -> Seen {
        let Ok(f) = serde_json::from_str::<Frame<'_>>(text) else { return Seen::Other };
        match f.op {
            "message" | "edit" | "delete" | "member" => {
                let Some(room) = f.room else { return Seen::Other };
                let last = self.last.entry(room.into_owned()).or_insert(f.seq.saturating_sub(1));
                if f.seq <= *last {
                    t.duplicated.fetch_add(1, Relaxed);
                    return Seen::Other;
                }
                t.lost.fetch_add(f.seq - *last - 1, Relaxed);
                *last = f.seq;
                if f.op == "message" {
                    t.deliveries.fetch_add(1, Relaxed);
                    let sent = f.body.as_deref().and_then(sent_at);
                    if let Some(sent) = sent.or_else(|| f.client_msg_id.as_deref().and_then(key_sent_at)) {
                        lat.record(self.index, (start.elapsed().as_micros() as u64).saturating_sub(sent));
                    }
                }
            }
            "gap" => {
                // Announced, not silent: the tool reads it as a skip to `until_seq`.
                t.gaps.fetch_add(1, Relaxed);
                if let Some(room) = f.room {
                    let last = self.last.entry(room.into_owned()).or_insert(0);
                    *last = (*last).max(f.until_seq);
                }
            }
            "ack" => {
                t.acked.fetch_add(1, Relaxed);
                return Seen::Ack;
            }
            "error" => {
                t.refused.fetch_add(1, Relaxed);
            }
            _ => {}
        }
        Seen::Other
    }
}
