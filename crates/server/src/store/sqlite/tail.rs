//! The newest stretch of the event log, in memory, so that consumers near the head (the relay
//! above all, which reads after every commit) are answered without a read transaction.
//!
//! Measured at 5,000 dm sends/s, the relay's `events_after` was a quarter of the async
//! workers' CPU: every commit changes the WAL, so each read began with an empty page cache and
//! read the log, the message and its indexes back from the file (docs/benchmarks.md, issue 12).
//! The writer already holds every event it commits; after the commit it hands them here.
//!
//! The tail answers exactly what the table would: a contiguous run of positions, each event in
//! its current state (an edit or delete committed later changes the message it names, as the
//! join in `queries::events_after` does). Positions written by anyone else (another process
//! on the same file) break the run, and the tail then starts again after them; a read it
//! cannot answer in full from memory goes to the table.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use switchboard_protocol::TimelineEvent;

use crate::store::LoggedEvent;

/// Most entries kept: a few seconds at the heaviest load, far more than a caught-up consumer
/// is ever behind.
const MAX_ENTRIES: usize = 16_384;
/// Most bytes of text kept (bodies are up to a few thousand characters each).
const MAX_TEXT_BYTES: usize = 16 * 1024 * 1024;

/// The last committed log entries of this store's writer, with contiguous positions.
#[derive(Default)]
pub(super) struct LogTail {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// Ascending; `run[i].pos == run[0].pos + i`.
    run: VecDeque<LoggedEvent>,
    text_bytes: usize,
    /// The positions of the messages and edits in `run`, by message id, ascending: an edit or
    /// delete finds what it changes without a walk through the run (a purge deletes up to
    /// 1,000 messages in one commit).
    by_message: HashMap<String, VecDeque<u64>>,
}

impl LogTail {
    /// Adds a commit's entries, the first at position `before + 1`. `before` is the head the
    /// writer read under its write lock: if it is not the tail's last position, someone else
    /// wrote in between, and the run starts again here.
    pub(super) fn extend(&self, before: u64, events: impl IntoIterator<Item = TimelineEvent>) {
        let Ok(mut e) = self.inner.lock() else { return };
        if e.run.back().is_none_or(|last| last.pos != before) {
            e.clear();
        }
        for (pos, event) in (before + 1..).zip(events) {
            e.apply(&event);
            e.text_bytes += text_bytes(&event);
            if let Some(id) = message_id(&event) {
                e.by_message.entry(id.to_owned()).or_default().push_back(pos);
            }
            e.run.push_back(LoggedEvent { pos, event });
        }
        while e.run.len() > MAX_ENTRIES || (e.text_bytes > MAX_TEXT_BYTES && e.run.len() > 1) {
            e.drop_oldest();
        }
    }

    /// Entries after `after`, at most `limit`, when the tail holds `after + 1`; `None` sends the
    /// read to the table (older positions, or none newer known here).
    pub(super) fn after(&self, after: u64, limit: u32) -> Option<Vec<LoggedEvent>> {
        let e = self.inner.lock().ok()?;
        let first = e.run.front()?.pos;
        let last = e.run.back()?.pos;
        if after < first.checked_sub(1)? || after >= last {
            return None;
        }
        let skip = usize::try_from(after + 1 - first).ok()?;
        let take = usize::try_from(limit).unwrap_or(usize::MAX);
        Some(e.run.iter().skip(skip).take(take).cloned().collect())
    }

    /// Drops the entries up to `pos`, which pruning took from the table: the tail answers
    /// only what the table would.
    pub(super) fn forget_through(&self, pos: u64) {
        let Ok(mut e) = self.inner.lock() else { return };
        while e.run.front().is_some_and(|first| first.pos <= pos) {
            e.drop_oldest();
        }
    }

    /// Drops everything (a rolled-back or unknown state: the table is the truth).
    pub(super) fn clear(&self) {
        if let Ok(mut e) = self.inner.lock() {
            e.clear();
        }
    }
}

impl Entries {
    fn clear(&mut self) {
        self.run.clear();
        self.text_bytes = 0;
        self.by_message.clear();
    }

    fn drop_oldest(&mut self) {
        let Some(old) = self.run.pop_front() else { return };
        self.text_bytes -= text_bytes(&old.event);
        if let Some(id) = message_id(&old.event)
            && let Some(positions) = self.by_message.get_mut(id)
        {
            positions.pop_front();
            if positions.is_empty() {
                self.by_message.remove(id);
            }
        }
    }

    /// The entry at `pos`, if the run holds it.
    fn at(&mut self, pos: u64) -> Option<&mut TimelineEvent> {
        let first = self.run.front()?.pos;
        let i = usize::try_from(pos.checked_sub(first)?).ok()?;
        self.run.get_mut(i).map(|e| &mut e.event)
    }

    /// Brings earlier entries to the state `event` leaves the timeline in: an edit sets its
    /// message's text, a delete erases the message's text and its edits' text.
    fn apply(&mut self, event: &TimelineEvent) {
        let (id, delete) = match event {
            TimelineEvent::Edit(e) => (e.id.as_str(), false),
            TimelineEvent::Delete(d) => (d.id.as_str(), true),
            TimelineEvent::Member(_) | TimelineEvent::Message(_) => return,
        };
        let positions: Vec<u64> =
            self.by_message.get(id).map(|p| p.iter().copied().collect()).unwrap_or_default();
        let (mut freed, mut added) = (0, 0);
        for pos in positions {
            match (self.at(pos), event) {
                (Some(TimelineEvent::Message(m)), TimelineEvent::Edit(edit)) => {
                    freed += m.body.len();
                    m.body.clone_from(&edit.body);
                    added += m.body.len();
                    m.edited_at = Some(edit.edited_at.clone());
                }
                (Some(TimelineEvent::Message(m)), _) if delete => {
                    freed += m.body.len();
                    m.body.clear();
                    m.deleted = Some(true);
                }
                (Some(TimelineEvent::Edit(ed)), _) if delete => {
                    freed += ed.body.len();
                    ed.body.clear();
                }
                _ => {}
            }
        }
        self.text_bytes = self.text_bytes + added - freed;
    }
}

/// The message an entry is or edits (deletes are not kept in `by_message`: nothing changes them).
fn message_id(event: &TimelineEvent) -> Option<&str> {
    match event {
        TimelineEvent::Message(m) => Some(&m.id),
        TimelineEvent::Edit(e) => Some(&e.id),
        TimelineEvent::Delete(_) | TimelineEvent::Member(_) => None,
    }
}

/// The text an entry holds, for the byte bound.
fn text_bytes(event: &TimelineEvent) -> usize {
    match event {
        TimelineEvent::Message(m) => m.body.len(),
        TimelineEvent::Edit(e) => e.body.len(),
        TimelineEvent::Delete(_) | TimelineEvent::Member(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use switchboard_protocol::frames::{DeleteEvent, EditEvent, MemberEvent};
    use switchboard_protocol::{MemberChange, Message};

    use super::*;

    fn message(id: &str, seq: u64, body: &str) -> TimelineEvent {
        TimelineEvent::Message(Message {
            id: id.into(),
            room: "r".into(),
            seq,
            author: "a".into(),
            body: body.into(),
            ts: "t".into(),
            client_msg_id: id.into(),
            edited_at: None,
            deleted: None,
            only_to: None,
        })
    }

    fn joined(seq: u64) -> TimelineEvent {
        TimelineEvent::Member(MemberEvent {
            room: "r".into(),
            seq,
            user: "u".into(),
            change: MemberChange::Joined,
        })
    }

    fn positions(got: Option<Vec<LoggedEvent>>) -> Option<Vec<u64>> {
        got.map(|v| v.into_iter().map(|e| e.pos).collect())
    }

    #[test]
    fn it_answers_only_reads_that_start_inside_its_run() {
        let tail = LogTail::default();
        assert_eq!(positions(tail.after(0, 10)), None, "empty: the table answers");
        tail.extend(10, [joined(1), joined(2), joined(3)]);
        assert_eq!(positions(tail.after(10, 10)), Some(vec![11, 12, 13]));
        assert_eq!(positions(tail.after(11, 1)), Some(vec![12]));
        assert_eq!(positions(tail.after(9, 10)), None, "position 10 is not held");
        assert_eq!(positions(tail.after(13, 10)), None, "newer positions may be someone else's");
        tail.extend(13, [joined(4)]);
        assert_eq!(positions(tail.after(12, 10)), Some(vec![13, 14]));
        tail.forget_through(11);
        assert_eq!(positions(tail.after(10, 10)), None, "pruned from the table: gone here too");
        assert_eq!(positions(tail.after(11, 10)), Some(vec![12, 13, 14]));
    }

    #[test]
    fn a_run_broken_by_another_writer_starts_again() {
        let tail = LogTail::default();
        tail.extend(10, [joined(1), joined(2)]);
        // Positions 13 and 14 were written by another process on the same file.
        tail.extend(14, [joined(5)]);
        assert_eq!(positions(tail.after(11, 10)), None, "12 to 14 must come from the table");
        assert_eq!(positions(tail.after(14, 10)), Some(vec![15]));
        tail.clear();
        assert_eq!(positions(tail.after(14, 10)), None);
    }

    #[test]
    fn edits_and_deletes_change_what_it_holds_as_the_table_would() {
        let tail = LogTail::default();
        let edit = |seq, body: &str| {
            TimelineEvent::Edit(EditEvent {
                room: "r".into(),
                seq,
                id: "m1".into(),
                body: body.into(),
                edited_at: format!("e{seq}"),
                only_to: None,
            })
        };
        tail.extend(0, [message("m1", 1, "first"), message("m2", 2, "other"), edit(3, "second")]);
        let got = tail.after(0, 10).unwrap();
        let TimelineEvent::Message(m) = &got[0].event else { panic!("a message") };
        assert_eq!((m.body.as_str(), m.edited_at.as_deref()), ("second", Some("e3")));
        tail.extend(
            3,
            [TimelineEvent::Delete(DeleteEvent { room: "r".into(), seq: 4, id: "m1".into(), only_to: None })],
        );
        let got = tail.after(0, 10).unwrap();
        let TimelineEvent::Message(m) = &got[0].event else { panic!("a message") };
        assert_eq!((m.body.as_str(), m.deleted), ("", Some(true)));
        let TimelineEvent::Message(other) = &got[1].event else { panic!("a message") };
        assert_eq!(other.body, "other", "only the deleted message changes");
        let TimelineEvent::Edit(e) = &got[2].event else { panic!("an edit") };
        assert_eq!(e.body, "", "a deleted message's edits lose their text too");
        assert_eq!(tail.inner.lock().unwrap().text_bytes, "other".len());
    }

    #[test]
    fn it_keeps_a_bounded_number_of_entries_and_bytes() {
        let tail = LogTail::default();
        let n = u64::try_from(MAX_ENTRIES).unwrap();
        tail.extend(0, (1..=n + 5).map(joined));
        assert_eq!(tail.inner.lock().unwrap().run.len(), MAX_ENTRIES);
        assert_eq!(positions(tail.after(5, 1)), Some(vec![6]), "the oldest went first");
        assert_eq!(positions(tail.after(4, 1)), None);
        let big = "x".repeat(MAX_TEXT_BYTES / 4 + 1);
        let before = n + 5;
        tail.extend(before, (1..=4).map(|i| message(&format!("m{i}"), i, &big)));
        let e = tail.inner.lock().unwrap();
        assert!(e.text_bytes <= MAX_TEXT_BYTES && e.run.len() == 3, "{} entries", e.run.len());
        let indexed: Vec<&str> = e.by_message.keys().map(String::as_str).collect();
        assert_eq!(indexed.len(), 3, "the index forgets what the run dropped: {indexed:?}");
        assert!(!e.by_message.contains_key("m1"));
    }
}
