//! How far a reader of the event log may go on PostgreSQL.
//!
//! Positions come from a sequence, taken inside each transaction just before it commits, so no
//! lock taken for the log is held to the commit (a single log-head row held every node's commit
//! behind the others' WAL flushes). The price is
//! that positions become readable out of order: a transaction that took position 10 may commit
//! after the one that took 11. A reader that took 11 and moved its cursor past 10 would never
//! see 10, so a read stops at the first missing position, until that position is either
//! readable or known never to be.
//!
//! A position is missing for good once the transaction that took it has ended without
//! committing it. Every transaction that logs has its id before it takes its positions (the
//! log statement makes sure). If position `p` is missing while a higher one is readable, `p`
//! was taken before that higher one committed, so before the read's snapshot: its transaction
//! had begun by then, and its id is below the read's `begun_below` (the largest id among the
//! transactions running once the read is done, or the snapshot's `xmax`, plus one; `xmax`
//! alone is one past the last transaction to finish, and a running one may be above it; it is
//! looked up only when a read meets a gap it has not seen before). Once
//! a later snapshot's `xmin` (the oldest transaction still running) reaches that bound, the
//! transaction has ended; a position still missing then was rolled back (or skipped by the
//! sequence after a crash) and is passed over.
//!
//! So a gap holds readers up only while the transactions that were running when it was seen
//! run on: a writing transaction left open on the same server (a session idle in a
//! transaction) holds the log, and the fanout behind it, at the first gap after it began.

use std::collections::BTreeMap;

/// Gaps seen in the log, each with the `begun_below` of the read that first saw it.
#[derive(Debug, Default)]
pub(super) struct Holes {
    /// `start → (end, begun_below)`: positions `start..end` were missing in a read whose
    /// `begun_below` was `begun_below`, while a position at or past `end` was readable. Ranges
    /// never overlap.
    seen: BTreeMap<u64, (u64, u64)>,
}

/// Most gaps remembered; past it the oldest is forgotten, and seen again if a reader still
/// meets it (which only costs that reader one more wait).
const MAX_HOLES: usize = 4_096;

/// How much of a read a reader may take.
#[derive(Debug, PartialEq)]
pub(super) enum Readable {
    /// This many positions.
    Upto(usize),
    /// `taken` positions, up to a gap not seen before, `start..end`: it is to be
    /// [`Holes::remember`]ed with the read's `begun_below`.
    NewGap { taken: usize, start: u64, end: u64 },
}

impl Holes {
    /// How many of `positions` (ascending, all past `after`, read under a snapshot with
    /// `xmin`) a reader may take: the run that leaves no position missing that may still
    /// commit.
    pub(super) fn readable(&self, after: u64, positions: &[u64], xmin: u64) -> Readable {
        let mut next = after.saturating_add(1);
        for (taken, &pos) in positions.iter().enumerate() {
            while next < pos {
                match self.covering(next) {
                    Some((end, ended_by)) if xmin >= ended_by => next = end.min(pos),
                    Some(_) => return Readable::Upto(taken),
                    None => return Readable::NewGap { taken, start: next, end: pos },
                }
            }
            next = pos.saturating_add(1);
        }
        Readable::Upto(positions.len())
    }

    /// The gap holding `pos`, as `(end, begun_below)`.
    fn covering(&self, pos: u64) -> Option<(u64, u64)> {
        let (_, &(end, bound)) = self.seen.range(..=pos).next_back()?;
        (pos < end).then_some((end, bound))
    }

    /// Records `start..end` as missing in a read with `begun_below`. A gap that begins inside
    /// the new one is older, so it keeps its part; one another reader recorded meanwhile gets
    /// the later bound, which only waits longer.
    pub(super) fn remember(&mut self, start: u64, end: u64, begun_below: u64) {
        let end = self.seen.range(start..end).next().map_or(end, |(&next_start, _)| next_start);
        self.seen.insert(start, (end, begun_below));
        while self.seen.len() > MAX_HOLES {
            self.seen.pop_first();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read as the store makes it: a new gap is remembered with `begun_below`.
    fn read(h: &mut Holes, after: u64, positions: &[u64], xmin: u64, begun_below: u64) -> usize {
        match h.readable(after, positions, xmin) {
            Readable::Upto(n) => n,
            Readable::NewGap { taken, start, end } => {
                h.remember(start, end, begun_below);
                taken
            }
        }
    }

    #[test]
    fn a_run_without_gaps_is_read_whole() {
        let mut h = Holes::default();
        assert_eq!(read(&mut h, 0, &[1, 2, 3], 100, 105), 3);
        assert_eq!(read(&mut h, 3, &[], 100, 105), 0);
    }

    #[test]
    fn a_reader_stops_at_a_gap_until_it_fills() {
        let mut h = Holes::default();
        // 2 is taken by a transaction still running: only 1 may be read.
        assert_eq!(read(&mut h, 0, &[1, 3, 4], 100, 110), 1);
        assert_eq!(read(&mut h, 1, &[3, 4], 100, 110), 0, "still running");
        assert_eq!(read(&mut h, 1, &[2, 3, 4], 105, 112), 3, "it committed: the whole run");
    }

    #[test]
    fn a_gap_is_passed_once_every_transaction_that_could_fill_it_has_ended() {
        let mut h = Holes::default();
        assert_eq!(read(&mut h, 0, &[1, 4], 100, 110), 1);
        // Transactions up to 109 may still hold 2 or 3.
        assert_eq!(read(&mut h, 1, &[4], 109, 115), 0);
        // Every one below 110 has ended, and 2 and 3 never came: rolled back.
        assert_eq!(read(&mut h, 1, &[4, 5], 110, 116), 2);
    }

    #[test]
    fn a_gap_wider_than_the_one_first_seen_waits_for_its_own_bound() {
        let mut h = Holes::default();
        // First seen: 2 missing while 3 was readable; transactions below 110 had begun.
        assert_eq!(read(&mut h, 1, &[3], 100, 110), 0);
        // Now 3 is gone from view (pruned, say) and 2..6 is missing with 6 readable: 2 is
        // resolved once xmin reaches 110, but 3..6 were first seen when those below 120 had.
        assert_eq!(read(&mut h, 1, &[6], 110, 120), 0);
        assert_eq!(read(&mut h, 1, &[6], 119, 125), 0);
        assert_eq!(read(&mut h, 1, &[6], 120, 125), 1);
    }

    #[test]
    fn a_gap_partly_filled_keeps_the_rest_waiting() {
        let mut h = Holes::default();
        assert_eq!(read(&mut h, 0, &[1, 5], 100, 110), 1);
        // 3 committed; 2 and 4 are still out.
        assert_eq!(read(&mut h, 1, &[3, 5], 105, 111), 0);
        assert_eq!(read(&mut h, 1, &[2, 3, 5], 105, 111), 2, "up to the next gap");
        assert_eq!(read(&mut h, 3, &[5], 110, 112), 1, "4 was rolled back");
    }

    #[test]
    fn the_memory_of_gaps_is_bounded() {
        let mut h = Holes::default();
        for i in 0..(MAX_HOLES as u64 + 10) {
            read(&mut h, i * 2, &[i * 2 + 2], 1, 2);
        }
        assert_eq!(h.seen.len(), MAX_HOLES);
    }
}
