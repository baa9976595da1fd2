//! The audit behind `kbackup verify`: what Kafka holds versus what the backups hold, for one
//! partition, by content fingerprint (and by `mid` where events carry one).
//!
//! Lines are compared by a 64-bit xxh3 hash of the line as kbackup writes it, so memory is
//! 16 bytes per retained message of the partition being audited, whatever the event size.
//! [`topic`] reads Kafka and the stored files around these counts.

use std::collections::HashMap;

use xxhash_rust::xxh3::xxh3_64;

pub mod topic;

/// The fingerprint of one line as stored (after newline replacement, without the `\n`).
pub fn fingerprint(value: &[u8]) -> u64 {
    if memchr::memchr2(b'\n', b'\r', value).is_some() {
        let line: Vec<u8> = value.iter().map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }).collect();
        xxh3_64(&line)
    } else {
        xxh3_64(value)
    }
}

/// Where a line belongs: an interned (directory, date) pair. Kafka messages get theirs from the
/// writer's own routing of the message, stored lines from the file that holds them.
pub type Place = u32;

/// A fingerprint seen in Kafka.
#[derive(Debug, Default)]
struct Entry {
    /// Offsets that must be backed up (below the committed offset, in the dates audited).
    required: Vec<i64>,
    /// Copies allowed but not required (past the commit, or outside the dates audited).
    optional: u32,
    found: u32,
    /// Where the message belongs; [`ANY_PLACE`] when identical values were routed differently
    /// (only possible for values dated by their record time).
    place: Place,
    /// Another place the message may be in: where releases before record dating filed a
    /// record whose value gives no event time (the invalid bucket).
    also: Option<Place>,
}

const ANY_PLACE: Place = Place::MAX;

/// Counts for one partition.
#[derive(Debug, Default)]
pub struct Tally {
    entries: HashMap<u64, Entry>,
    /// `mid` hash → (times in Kafka, times in backups).
    mids: HashMap<u64, (u32, u32)>,
    /// Lines that match no message Kafka still holds for this partition.
    pub unverifiable_lines: u64,
    /// Lines stored under another date or directory than the writer routes their message to.
    pub misplaced_lines: u64,
    pub found_lines: u64,
    pub files: u64,
}

/// The verdict for one partition.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Report {
    pub expected: u64,
    pub found_lines: u64,
    pub files: u64,
    /// Offsets (below the committed offset) whose message is in no backup file.
    pub missing_offsets: Vec<i64>,
    /// Offsets whose message is stored more than once (`-1`: a copy of a message that was not
    /// required at all).
    pub duplicated_offsets: Vec<i64>,
    /// `mid`s stored more often than Kafka holds them.
    pub duplicated_mids: u64,
    /// Lines in a file of the wrong date or directory (compared with how the writer routes the
    /// message, not with a fresh parse of the stored line).
    pub misplaced_lines: u64,
    /// Lines that match no message Kafka still holds for this partition: older than retention,
    /// or not from this partition at all. Never counted as clean.
    pub unverifiable_lines: u64,
    /// Offsets Kafka deleted before the group committed past them: never backed up.
    pub lost_offsets: u64,
    /// The group has no committed offset although the partition holds messages.
    pub never_committed: bool,
    /// Files that could not be read to the end (with `--skip-corrupt`).
    pub corrupt_files: Vec<String>,
    /// Messages between the group's committed offset and the end of the partition: consumed
    /// or not, none of them is proven backed up yet.
    pub behind: u64,
    /// The record time (epoch ms) of the oldest of them, and how old it is, in seconds.
    pub oldest_behind_ms: Option<i64>,
    pub behind_secs: Option<u64>,
    /// The oldest is older than the limit (`--max-lag`, else the topic's `max_file_age_secs` plus
    /// `completion_grace_secs`): the writer is stalled or far behind, and what it holds is at
    /// risk. Not clean.
    pub lagging: bool,
    /// Completion markers checked.
    pub markers: u64,
    /// Completion markers that do not match what is stored or what Kafka holds: a file of the
    /// date they miss or list but is not there, a count that differs, a claim Kafka refutes.
    pub marker_errors: Vec<String>,
}

impl Report {
    /// True only when nothing is missing, doubled, misfiled, lost, unreadable or unverifiable.
    pub fn is_clean(&self) -> bool {
        self.missing_offsets.is_empty()
            && self.duplicated_offsets.is_empty()
            && self.duplicated_mids == 0
            && self.misplaced_lines == 0
            && self.unverifiable_lines == 0
            && self.lost_offsets == 0
            && !self.never_committed
            && !self.lagging
            && self.corrupt_files.is_empty()
            && self.marker_errors.is_empty()
    }

    /// Adds another partition's counts (for the total line).
    pub fn add(&mut self, r: &Report) {
        self.expected += r.expected;
        self.found_lines += r.found_lines;
        self.files += r.files;
        self.missing_offsets.extend(&r.missing_offsets);
        self.duplicated_offsets.extend(&r.duplicated_offsets);
        self.duplicated_mids += r.duplicated_mids;
        self.misplaced_lines += r.misplaced_lines;
        self.unverifiable_lines += r.unverifiable_lines;
        self.lost_offsets += r.lost_offsets;
        self.never_committed |= r.never_committed;
        self.behind += r.behind;
        self.oldest_behind_ms = match (self.oldest_behind_ms, r.oldest_behind_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.behind_secs = self.behind_secs.max(r.behind_secs);
        self.lagging |= r.lagging;
        self.corrupt_files.extend(r.corrupt_files.iter().cloned());
        self.markers += r.markers;
        self.marker_errors.extend(r.marker_errors.iter().cloned());
    }
}

impl Tally {
    /// A message read from Kafka, with the place the writer routes it to. `required` is false
    /// past the committed offset and outside the dates audited.
    pub fn kafka(&mut self, offset: i64, fingerprint: u64, mid: Option<u64>, place: Place, required: bool) {
        let e = self.entries.entry(fingerprint).or_insert_with(|| Entry { place, ..Default::default() });
        if e.required.is_empty() && e.optional == 0 {
            e.place = place;
        } else if e.place != place {
            e.place = ANY_PLACE;
        }
        if required {
            e.required.push(offset);
        } else {
            e.optional += 1;
        }
        if let Some(m) = mid {
            self.mids.entry(m).or_default().0 += 1;
        }
    }

    /// The message just passed to [`Tally::kafka`] may also be found at `place` (see
    /// [`crate::routing::Route::earlier`]).
    pub fn also_at(&mut self, fingerprint: u64, place: Place) {
        if let Some(e) = self.entries.get_mut(&fingerprint) {
            e.also = Some(place);
        }
    }

    /// A line read from a file of this partition, stored at `place`.
    pub fn stored(&mut self, fingerprint: u64, mid: Option<u64>, place: Place) {
        self.found_lines += 1;
        if !self.stored_if_known(fingerprint, mid, place) {
            self.unverifiable_lines += 1;
            if let Some(m) = mid {
                self.mids.entry(m).or_default().1 += 1;
            }
        }
    }

    /// A line of a file whose name carries no partition: counted here only if it is one of this
    /// partition's messages. Returns whether it was.
    pub fn stored_if_known(&mut self, fingerprint: u64, mid: Option<u64>, place: Place) -> bool {
        let Some(e) = self.entries.get_mut(&fingerprint) else {
            return false;
        };
        e.found += 1;
        if e.place != ANY_PLACE && e.place != place && e.also != Some(place) {
            self.misplaced_lines += 1;
        }
        if let Some(m) = mid {
            self.mids.entry(m).or_default().1 += 1;
        }
        true
    }

    /// Compares both sides.
    pub fn report(&self) -> Report {
        let mut r = Report { found_lines: self.found_lines, files: self.files, ..Default::default() };
        for e in self.entries.values() {
            r.expected += e.required.len() as u64;
            let need = e.required.len() as u32;
            if e.found < need {
                // Identical values at several offsets cannot be told apart: the last ones
                // are reported missing.
                r.missing_offsets.extend(e.required.iter().skip(e.found as usize));
            } else if e.found > need + e.optional {
                r.duplicated_offsets.push(e.required.first().copied().unwrap_or(-1));
            }
        }
        r.missing_offsets.sort_unstable();
        r.duplicated_offsets.sort_unstable();
        r.duplicated_mids = self.mids.values().filter(|(k, s)| s > k && *k > 0).count() as u64;
        r.misplaced_lines = self.misplaced_lines;
        r.unverifiable_lines = self.unverifiable_lines;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: Place = 1;
    const ELSEWHERE: Place = 2;

    fn fp(v: &str) -> u64 {
        fingerprint(v.as_bytes())
    }

    #[test]
    fn clean_partition() {
        let mut t = Tally::default();
        for (o, v) in [(0, "a"), (1, "b"), (2, "c")] {
            t.kafka(o, fp(v), None, HERE, true);
        }
        for v in ["c", "a", "b"] {
            t.stored(fp(v), None, HERE);
        }
        let r = t.report();
        assert!(r.is_clean(), "{r:?}");
        assert_eq!((r.expected, r.found_lines), (3, 3));
    }

    #[test]
    fn missing_and_duplicated_offsets() {
        let mut t = Tally::default();
        for (o, v) in [(0, "a"), (1, "b"), (2, "c")] {
            t.kafka(o, fp(v), Some(o as u64), HERE, true);
        }
        t.stored(fp("a"), Some(0), HERE);
        t.stored(fp("a"), Some(0), HERE);
        t.stored(fp("c"), Some(2), HERE);
        let r = t.report();
        assert_eq!(r.missing_offsets, vec![1]);
        assert_eq!(r.duplicated_offsets, vec![0]);
        assert_eq!(r.duplicated_mids, 1);
        assert!(!r.is_clean());
    }

    #[test]
    fn same_value_at_two_offsets_needs_two_copies() {
        let mut t = Tally::default();
        t.kafka(5, fp("x"), None, HERE, true);
        t.kafka(9, fp("x"), None, HERE, true);
        t.stored(fp("x"), None, HERE);
        assert_eq!(t.report().missing_offsets, vec![9]);
    }

    #[test]
    fn past_the_commit_one_copy_is_fine_two_are_not() {
        let mut t = Tally::default();
        t.kafka(0, fp("a"), None, HERE, true);
        t.kafka(1, fp("late"), None, HERE, false);
        t.stored(fp("a"), None, HERE);
        assert!(t.report().is_clean(), "not yet stored is fine");
        t.stored(fp("late"), None, HERE);
        assert!(t.report().is_clean(), "stored once is fine");
        t.stored(fp("late"), None, HERE);
        let r = t.report();
        assert!(!r.is_clean(), "stored twice is a duplicate");
        assert_eq!(r.duplicated_offsets, vec![-1]);
    }

    #[test]
    fn lines_matching_nothing_are_unverifiable_never_clean() {
        let mut t = Tally::default();
        t.stored(fp("old"), None, HERE);
        t.kafka(0, fp("a"), None, HERE, true);
        t.stored(fp("a"), None, HERE);
        let r = t.report();
        assert_eq!(r.unverifiable_lines, 1);
        assert!(!r.is_clean());
    }

    #[test]
    fn a_line_in_the_wrong_place_is_misplaced() {
        let mut t = Tally::default();
        t.kafka(0, fp("a"), None, HERE, true);
        t.stored(fp("a"), None, ELSEWHERE);
        let r = t.report();
        assert_eq!((r.misplaced_lines, r.missing_offsets.len()), (1, 0));
        assert!(!r.is_clean());
    }

    #[test]
    fn a_record_filed_where_an_earlier_release_put_it_is_in_place() {
        const EARLIER: Place = 7;
        let mut t = Tally::default();
        t.kafka(0, fp("tombstone"), None, HERE, true);
        t.also_at(fp("tombstone"), EARLIER);
        t.stored(fp("tombstone"), None, EARLIER);
        let r = t.report();
        assert_eq!((r.misplaced_lines, r.missing_offsets.len()), (0, 0));
        let mut t = Tally::default();
        t.kafka(0, fp("tombstone"), None, HERE, true);
        t.also_at(fp("tombstone"), EARLIER);
        t.stored(fp("tombstone"), None, EARLIER + 1);
        assert_eq!(t.report().misplaced_lines, 1, "only there");
    }

    #[test]
    fn identical_values_routed_differently_accept_either_place() {
        let mut t = Tally::default();
        t.kafka(0, fp("a"), None, HERE, true);
        t.kafka(1, fp("a"), None, ELSEWHERE, true);
        t.stored(fp("a"), None, ELSEWHERE);
        t.stored(fp("a"), None, HERE);
        assert!(t.report().is_clean());
    }

    #[test]
    fn unpartitioned_lines_count_only_where_they_belong() {
        let mut t = Tally::default();
        t.kafka(0, fp("a"), Some(7), HERE, true);
        assert!(!t.stored_if_known(fp("other partition"), None, HERE));
        assert!(t.report().missing_offsets == vec![0]);
        assert!(t.stored_if_known(fp("a"), Some(7), HERE));
        assert!(t.report().is_clean());
        // A second copy under an old-style name is a duplicate.
        t.stored(fp("a"), Some(7), HERE);
        assert!(!t.report().is_clean());
    }

    #[test]
    fn every_problem_makes_the_report_unclean() {
        let clean = Report::default();
        assert!(clean.is_clean());
        let cases = [
            Report { lost_offsets: 3, ..Default::default() },
            Report { never_committed: true, ..Default::default() },
            Report { corrupt_files: vec!["x".into()], ..Default::default() },
            Report { unverifiable_lines: 1, ..Default::default() },
            Report { misplaced_lines: 1, ..Default::default() },
            Report { duplicated_mids: 1, ..Default::default() },
        ];
        for r in cases {
            assert!(!r.is_clean(), "{r:?}");
            let mut total = Report::default();
            total.add(&r);
            assert!(!total.is_clean(), "{total:?}");
        }
    }

    #[test]
    fn fingerprint_matches_the_stored_form() {
        assert_eq!(fingerprint(b"{\n\"a\":1}"), fingerprint(b"{ \"a\":1}"));
    }
}
