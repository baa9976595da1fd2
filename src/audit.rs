//! The audit behind `kbackup verify`: what Kafka holds versus what the backups hold, for one
//! partition, by content fingerprint (and by `mid` where events carry one).
//!
//! Lines are compared by a 64-bit xxh3 hash of the line as kbackup writes it, so memory is
//! 16 bytes per retained message of the partition being audited, whatever the event size.

use std::collections::HashMap;

use xxhash_rust::xxh3::xxh3_64;

/// The fingerprint of one line as stored (after newline replacement, without the `\n`).
pub fn fingerprint(value: &[u8]) -> u64 {
    if memchr::memchr2(b'\n', b'\r', value).is_some() {
        let line: Vec<u8> = value.iter().map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }).collect();
        xxh3_64(&line)
    } else {
        xxh3_64(value)
    }
}

/// Counts for one partition.
#[derive(Debug, Default)]
pub struct Tally {
    /// Fingerprint → (offsets in Kafka that must be backed up, times found in backups).
    expected: HashMap<u64, (Vec<i64>, u32)>,
    /// Fingerprints of Kafka messages past the committed offset: may or may not be stored yet.
    optional: HashMap<u64, u32>,
    /// `mid` hash → (times in Kafka, times in backups).
    mids: HashMap<u64, (u32, u32)>,
    /// Lines found in backups that match no retained message (older than retention, or not
    /// from this partition).
    pub unknown_lines: u64,
    /// Lines found whose own date differs from the date in their file's name.
    pub misdated_lines: u64,
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
    /// Offsets whose message is stored more than once.
    pub duplicated_offsets: Vec<i64>,
    /// `mid`s stored more often than Kafka holds them.
    pub duplicated_mids: u64,
    pub misdated_lines: u64,
    pub unknown_lines: u64,
}

impl Report {
    /// True when nothing is missing, doubled or misfiled.
    pub fn is_clean(&self) -> bool {
        self.missing_offsets.is_empty() && self.duplicated_offsets.is_empty() && self.duplicated_mids == 0 && self.misdated_lines == 0
    }
}

impl Tally {
    /// A message read from Kafka. `required` is false past the committed offset.
    pub fn kafka(&mut self, offset: i64, fingerprint: u64, mid: Option<u64>, required: bool) {
        if required {
            self.expected.entry(fingerprint).or_default().0.push(offset);
        } else {
            *self.optional.entry(fingerprint).or_default() += 1;
        }
        if let Some(m) = mid {
            self.mids.entry(m).or_default().0 += 1;
        }
    }

    /// A line read from a backup file; `date_ok` says whether its own date matches the name's.
    pub fn stored(&mut self, fingerprint: u64, mid: Option<u64>, date_ok: bool) {
        self.found_lines += 1;
        if !date_ok {
            self.misdated_lines += 1;
        }
        if let Some(m) = mid {
            self.mids.entry(m).or_default().1 += 1;
        }
        if let Some(e) = self.expected.get_mut(&fingerprint) {
            e.1 += 1;
        } else if let Some(n) = self.optional.get_mut(&fingerprint) {
            // Past the commit: allowed once (uploaded, not yet committed); a second copy is a
            // duplicate and is counted by moving it into `expected` with no offset to spare.
            if *n == 0 {
                self.expected.entry(fingerprint).or_default().1 += 1;
            } else {
                *n -= 1;
            }
        } else {
            self.unknown_lines += 1;
        }
    }

    /// Compares both sides.
    pub fn report(&self) -> Report {
        let mut r = Report { found_lines: self.found_lines, files: self.files, ..Default::default() };
        for (offsets, found) in self.expected.values() {
            r.expected += offsets.len() as u64;
            let want = offsets.len() as u32;
            match found.cmp(&want) {
                std::cmp::Ordering::Less => {
                    // Identical values at several offsets cannot be told apart: the last ones
                    // are reported missing.
                    r.missing_offsets.extend(offsets.iter().skip(*found as usize));
                }
                std::cmp::Ordering::Greater => {
                    r.duplicated_offsets.extend(offsets.iter().copied().take(1));
                    if offsets.is_empty() {
                        r.duplicated_offsets.push(-1);
                    }
                }
                std::cmp::Ordering::Equal => {}
            }
        }
        r.missing_offsets.sort_unstable();
        r.duplicated_offsets.sort_unstable();
        r.duplicated_mids = self.mids.values().filter(|(k, s)| s > k && *k > 0).count() as u64;
        r.misdated_lines = self.misdated_lines;
        r.unknown_lines = self.unknown_lines;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_partition() {
        let mut t = Tally::default();
        for (o, v) in [(0, "a"), (1, "b"), (2, "c")] {
            t.kafka(o, fingerprint(v.as_bytes()), None, true);
        }
        for v in ["c", "a", "b"] {
            t.stored(fingerprint(v.as_bytes()), None, true);
        }
        let r = t.report();
        assert!(r.is_clean(), "{r:?}");
        assert_eq!((r.expected, r.found_lines), (3, 3));
    }

    #[test]
    fn missing_and_duplicated_offsets() {
        let mut t = Tally::default();
        for (o, v) in [(0, "a"), (1, "b"), (2, "c")] {
            t.kafka(o, fingerprint(v.as_bytes()), Some(o as u64), true);
        }
        t.stored(fingerprint(b"a"), Some(0), true);
        t.stored(fingerprint(b"a"), Some(0), true);
        t.stored(fingerprint(b"c"), Some(2), true);
        let r = t.report();
        assert_eq!(r.missing_offsets, vec![1]);
        assert_eq!(r.duplicated_offsets, vec![0]);
        assert_eq!(r.duplicated_mids, 1);
        assert!(!r.is_clean());
    }

    #[test]
    fn same_value_at_two_offsets_needs_two_copies() {
        let mut t = Tally::default();
        t.kafka(5, fingerprint(b"x"), None, true);
        t.kafka(9, fingerprint(b"x"), None, true);
        t.stored(fingerprint(b"x"), None, true);
        assert_eq!(t.report().missing_offsets, vec![9]);
    }

    #[test]
    fn past_the_commit_one_copy_is_fine_two_are_not() {
        let mut t = Tally::default();
        t.kafka(0, fingerprint(b"a"), None, true);
        t.kafka(1, fingerprint(b"late"), None, false);
        t.stored(fingerprint(b"a"), None, true);
        assert!(t.report().is_clean(), "not yet stored is fine");
        t.stored(fingerprint(b"late"), None, true);
        assert!(t.report().is_clean(), "stored once is fine");
        t.stored(fingerprint(b"late"), None, true);
        assert!(!t.report().is_clean(), "stored twice is a duplicate");
    }

    #[test]
    fn unknown_and_misdated_lines() {
        let mut t = Tally::default();
        t.stored(fingerprint(b"old"), None, true);
        t.kafka(0, fingerprint(b"a"), None, true);
        t.stored(fingerprint(b"a"), None, false);
        let r = t.report();
        assert_eq!(r.unknown_lines, 1);
        assert_eq!(r.misdated_lines, 1);
        assert!(!r.is_clean());
    }

    #[test]
    fn fingerprint_matches_the_stored_form() {
        assert_eq!(fingerprint(b"{\n\"a\":1}"), fingerprint(b"{ \"a\":1}"));
    }
}
