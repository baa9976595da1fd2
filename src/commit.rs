//! The safe-commit-offset tracker.
//!
//! A Kafka partition can have several files open at once (one per date and prefix) and several
//! more being uploaded. The offset that may be committed is the lowest first offset of any file
//! not yet durably uploaded, or, when there is none, the offset after the last consumed message.
//! Every message below that offset is in a file that has been uploaded.

use std::collections::BTreeMap;

/// Offsets of one partition.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionOffsets {
    /// First offsets of files not yet uploaded (a count, as two files may share one).
    held: BTreeMap<i64, u32>,
    /// One past the last consumed message.
    next: i64,
    /// The last offset committed (or the position consumption started from).
    committed: i64,
}

impl PartitionOffsets {
    /// Tracking that starts at `start`, the partition's committed position.
    pub fn new(start: i64) -> PartitionOffsets {
        PartitionOffsets { held: BTreeMap::new(), next: start, committed: start }
    }

    /// Records that the message at `offset` was consumed and placed in a buffer.
    pub fn consumed(&mut self, offset: i64) {
        self.next = self.next.max(offset + 1);
    }

    /// A file starting at `first_offset` was opened: nothing from there on may be committed.
    pub fn hold(&mut self, first_offset: i64) {
        *self.held.entry(first_offset).or_default() += 1;
    }

    /// The file starting at `first_offset` is durably uploaded.
    pub fn release(&mut self, first_offset: i64) {
        match self.held.get_mut(&first_offset) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.held.remove(&first_offset);
            }
            None => debug_assert!(false, "release of an offset that is not held: {first_offset}"),
        }
    }

    /// The highest offset that may be committed now.
    pub fn safe(&self) -> i64 {
        if crate::sabotage::on(crate::sabotage::Rule::CommitHighestPending) {
            return self.held.keys().next_back().copied().unwrap_or(self.next);
        }
        self.held.keys().next().copied().unwrap_or(self.next)
    }

    /// The offset to commit, if it moved past the last commit.
    pub fn to_commit(&self) -> Option<i64> {
        let s = self.safe();
        (s > self.committed).then_some(s)
    }

    /// Records a successful commit.
    pub fn committed(&mut self, offset: i64) {
        self.committed = self.committed.max(offset);
    }

    /// The last offset committed (or the position consumption started from).
    pub fn last_committed(&self) -> i64 {
        self.committed
    }

    /// One past the last consumed message (or the start position).
    pub fn position(&self) -> i64 {
        self.next
    }

    /// Files not yet uploaded.
    #[cfg(test)]
    pub fn held_files(&self) -> u32 {
        self.held.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustc_hash::FxHashMap as HashMap;

    #[test]
    fn nothing_consumed_nothing_to_commit() {
        let p = PartitionOffsets::new(100);
        assert_eq!(p.safe(), 100);
        assert_eq!(p.to_commit(), None);
    }

    #[test]
    fn single_file_commits_after_upload() {
        let mut p = PartitionOffsets::new(0);
        p.hold(0);
        for o in 0..10 {
            p.consumed(o);
        }
        assert_eq!(p.to_commit(), None, "file still open");
        p.release(0);
        assert_eq!(p.to_commit(), Some(10));
        p.committed(10);
        assert_eq!(p.to_commit(), None);
    }

    /// Offsets 0..=9 alternate between two dates: A gets even offsets, B odd ones.
    #[test]
    fn interleaved_dates_hold_the_lowest_open_file() {
        let mut p = PartitionOffsets::new(0);
        p.hold(0); // file A opens at 0
        p.hold(1); // file B opens at 1
        for o in 0..10 {
            p.consumed(o);
        }
        // B (odd offsets) uploads first: A still holds 0, nothing may be committed.
        p.release(1);
        assert_eq!(p.to_commit(), None);
        // A uploads: everything up to 9 is durable.
        p.release(0);
        assert_eq!(p.to_commit(), Some(10));
    }

    #[test]
    fn a_new_file_after_sealing_holds_from_its_own_first_offset() {
        let mut p = PartitionOffsets::new(0);
        p.hold(0); // A1: 0..=4
        (0..5).for_each(|o| p.consumed(o));
        p.hold(5); // B: starts at 5 (another date)
        p.consumed(5);
        p.release(0); // A1 uploaded
        assert_eq!(p.to_commit(), Some(5), "B still holds 5");
        p.committed(5);
        p.hold(6); // A2 opens at 6
        p.consumed(6);
        p.release(6); // A2 uploaded before B
        assert_eq!(p.to_commit(), None, "B at 5 is still not durable");
        p.release(5);
        assert_eq!(p.to_commit(), Some(7));
    }

    #[test]
    fn failed_upload_is_never_skipped() {
        let mut p = PartitionOffsets::new(0);
        p.hold(0);
        (0..100).for_each(|o| p.consumed(o));
        p.hold(100);
        (100..200).for_each(|o| p.consumed(o));
        p.release(100); // later file done, earlier one keeps failing
        for _ in 0..3 {
            assert_eq!(p.to_commit(), None);
        }
        assert_eq!(p.held_files(), 1);
    }

    #[test]
    fn two_files_with_the_same_first_offset() {
        // Cannot happen with one message per file start, but the tracker must not under-count.
        let mut p = PartitionOffsets::new(3);
        p.hold(3);
        p.hold(3);
        p.consumed(3);
        p.release(3);
        assert_eq!(p.to_commit(), None);
        p.release(3);
        assert_eq!(p.to_commit(), Some(4));
    }

    #[test]
    fn offset_gaps_are_fine() {
        // Compacted topics and transaction markers leave gaps between offsets.
        let mut p = PartitionOffsets::new(10);
        p.hold(15);
        p.consumed(15);
        p.consumed(40);
        p.release(15);
        assert_eq!(p.to_commit(), Some(41));
    }

    /// Exhaustive check against a brute-force model: random dates per offset, random upload
    /// order; the committable offset must never pass a message whose file is not uploaded.
    #[test]
    fn random_interleavings_never_commit_past_an_unuploaded_message() {
        let mut seed = 0x2545F4914F6CDD1Du64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..300 {
            let mut p = PartitionOffsets::new(0);
            // file id -> (first offset, offsets), per date: the open file of each date.
            let mut open: HashMap<u64, usize> = HashMap::default();
            let mut files: Vec<(i64, Vec<i64>, bool, bool)> = Vec::new(); // first, offsets, sealed, uploaded
            for o in 0..60i64 {
                let date = rnd(3);
                let idx = *open.entry(date).or_insert_with(|| {
                    files.push((o, vec![], false, false));
                    p.hold(o);
                    files.len() - 1
                });
                files[idx].1.push(o);
                p.consumed(o);
                if rnd(4) == 0 {
                    files[idx].2 = true;
                    open.remove(&date);
                }
                // Upload a random sealed file now and then.
                if rnd(3) == 0 {
                    let sealed: Vec<usize> = (0..files.len()).filter(|&i| files[i].2 && !files[i].3).collect();
                    if !sealed.is_empty() {
                        let i = sealed[rnd(sealed.len() as u64) as usize];
                        files[i].3 = true;
                        p.release(files[i].0);
                    }
                }
                let safe = p.safe();
                for (_, offs, _, uploaded) in &files {
                    for &m in offs {
                        assert!(*uploaded || m >= safe, "offset {m} not uploaded but safe = {safe}");
                    }
                }
                // And the model's own answer: the lowest offset in a not-uploaded file.
                let model = files.iter().filter(|f| !f.3).flat_map(|f| f.1.iter().copied()).min().unwrap_or(o + 1);
                assert_eq!(safe, model);
            }
        }
    }
}
