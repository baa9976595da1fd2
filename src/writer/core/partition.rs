//! Everything the writer knows about one owned partition, in one place: its offsets, the
//! recovery from recorded intents, the intents its commits carry, the assignment it
//! belongs to, and (for `--until-caught-up`) the end offset to reach.

use std::collections::HashSet;
use std::time::Instant;

use crate::commit::PartitionOffsets;
use crate::intent::{IntentLog, Recovery};

/// One partition of one configured topic: the topic's index in the config and the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct PartKey {
    pub(super) topic: usize,
    pub(super) partition: i32,
}

impl PartKey {
    pub(super) fn new(topic: usize, partition: i32) -> PartKey {
        PartKey { topic, partition }
    }
}

/// One owned partition. Created at assignment, dropped at revocation: nothing about a
/// partition outlives its ownership except files still in flight (which carry its epoch).
#[derive(Debug, Default)]
pub(super) struct Partition {
    /// Unique per assignment; upload results of an earlier assignment are ignored.
    pub(super) epoch: u64,
    /// The rebalance generation that assigned it; messages polled before are stale.
    pub(super) assigned_gen: u64,
    /// Consumed, held and committed offsets. `None` until the first message when the group
    /// never committed the partition (consumption starts wherever Kafka's reset puts it).
    pub(super) offsets: Option<PartitionOffsets>,
    /// Intents of sealed files not yet wholly committed past, carried in every commit.
    pub(super) intents: IntentLog,
    /// What the last commit's intents say about re-read messages.
    pub(super) recovery: Recovery,
    /// Rebuild indices (into `recovery.rebuild`) already sealed.
    pub(super) rebuilt: HashSet<usize>,
    /// End offset to reach for `--until-caught-up` (`i64::MIN`: nothing to read).
    pub(super) target: Option<i64>,
    /// The watermarks still to read (for the lost-offsets check and `--until-caught-up`): they
    /// are read at assignment and, if that fails, again until they are.
    pub(super) watermarks: Watermarks,
    /// Its watermark reads, asked on the loop and answered off it.
    pub(super) reads: WatermarkReads,
    /// The record must be rewritten by the next commit even if the offset did not move: the
    /// last committed one names a file that must not be rebuilt (its name is taken by another
    /// blob), or completion progress changed.
    pub(super) record_stale: bool,
    /// Completion markers: dates passed and marked.
    pub(super) marking: super::marking::Marking,
    /// Whether its commit keeps up with its consumption (a stall is reported).
    pub(super) watch: super::stall::CommitWatch,
    /// Reported as stalled (logged once per stall).
    pub(super) stalled: bool,
}

/// One partition's part of a commit: its offset and the intent record as metadata.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) part: PartKey,
    pub(super) offset: i64,
    pub(super) metadata: String,
}

/// Whether a partition's watermarks were read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Watermarks {
    /// Read, or not needed (no commit to check, no end to reach).
    #[default]
    Done,
    /// Still to read; the group's commit at assignment, if any, for the lost-offsets check.
    Unread { committed: Option<i64> },
}

/// A partition's watermark reads: at most one asked at a time.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct WatermarkReads {
    /// A read was asked and not answered yet.
    pub(super) asked: bool,
    /// The last answer: when it came, and the (log start, end) offsets unless the read failed.
    pub(super) last: Option<(Instant, Option<(i64, i64)>)>,
}

impl Partition {
    /// A partition assigned in `generation`, resuming from `committed` if the group has one.
    pub(super) fn assigned(epoch: u64, generation: u64, committed: Option<i64>) -> Partition {
        Partition { epoch, assigned_gen: generation, offsets: committed.map(PartitionOffsets::new), ..Default::default() }
    }

    /// The offsets, starting tracking at `first` if nothing was committed before.
    pub(super) fn offsets_from(&mut self, first: i64) -> &mut PartitionOffsets {
        self.offsets.get_or_insert_with(|| PartitionOffsets::new(first))
    }

    /// The offset the partition's next commit carries, if one is due: the safe offset once it
    /// passed the last commit, or as it is when the intent record must be rewritten.
    pub(super) fn commit_due(&self) -> Option<i64> {
        let o = self.offsets.as_ref()?;
        o.to_commit().or_else(|| self.record_stale.then(|| o.safe()))
    }

    /// True once consumption reached the end offset read at assignment.
    pub(super) fn caught_up(&self) -> bool {
        match self.target {
            Some(i64::MIN) => true,
            Some(target) => {
                let target = if crate::sabotage::on(crate::sabotage::Rule::CaughtUpEarly) { target - 1 } else { target };
                self.offsets.as_ref().is_some_and(|o| o.position() >= target)
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_starts_at_the_commit_or_the_first_message() {
        let mut p = Partition::assigned(1, 1, Some(40));
        assert_eq!(p.offsets_from(99).safe(), 40, "a commit wins over the first message");
        let mut q = Partition::assigned(2, 1, None);
        assert!(q.offsets.is_none());
        assert_eq!(q.offsets_from(7).safe(), 7);
    }

    #[test]
    fn caught_up_needs_a_target_and_reaching_it() {
        let mut p = Partition::assigned(1, 1, Some(0));
        assert!(!p.caught_up(), "no target read");
        p.target = Some(i64::MIN);
        assert!(p.caught_up(), "empty partition");
        p.target = Some(3);
        assert!(!p.caught_up());
        (0..3).for_each(|o| p.offsets_from(0).consumed(o));
        assert!(p.caught_up());
    }
}
