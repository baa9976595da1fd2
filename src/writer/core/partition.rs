//! The owned partitions: for each, its offsets, the recovery from recorded intents, the
//! intents its commits carry, the assignment it belongs to, its watermark reads and (for
//! `--until-caught-up`) the end offset to reach. An owned part: the writer asks and tells, it
//! never reaches into a partition's fields.

use std::collections::HashSet;
use std::ops::Index;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap as HashMap;

use super::marking::Marking;
use super::stall::{CommitWatch, Stall};
use crate::commit::PartitionOffsets;
use crate::intent::{Action, Intent, IntentLog, Place, Recovery};
use crate::sabotage::{self, Rule};
use crate::writer::ports::BrokerError;

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

/// Every owned partition, and the epoch the next assignment gets.
#[derive(Debug)]
pub(super) struct Partitions {
    parts: HashMap<PartKey, Partition>,
    next_epoch: u64,
}

impl Default for Partitions {
    fn default() -> Partitions {
        Partitions { parts: HashMap::default(), next_epoch: 1 }
    }
}

impl Partitions {
    /// Takes `key` over in rebalance generation `generation` with a fresh epoch, resuming from
    /// `committed` (if the group has a commit) with its recorded `intents`; `watermarks`: its
    /// watermarks are to be read (a commit to check, or an end to reach).
    pub(super) fn assign(
        &mut self,
        key: PartKey,
        generation: u64,
        committed: Option<i64>,
        intents: Vec<Intent>,
        marking: Marking,
        watermarks: bool,
    ) -> &Partition {
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        let mut st = Partition::assigned(epoch, generation, committed);
        st.marking = marking;
        if let Some(s) = committed {
            st.recovery = Recovery::new(s, intents);
            // Every recorded intent that is not wholly committed stays in the record.
            // In the order they were recorded: where ranges of one route overlap, that order
            // decides which file a message belongs to (`Recovery::action`).
            for i in st.recovery.pending() {
                st.intents.push(Arc::new(i.clone()));
            }
        }
        if watermarks {
            st.watermarks = Watermarks::Unread { committed };
        }
        self.parts.insert(key, st);
        &self.parts[&key]
    }

    /// Gives `key` up.
    pub(super) fn remove(&mut self, key: &PartKey) {
        self.parts.remove(key);
    }

    pub(super) fn get(&self, key: &PartKey) -> Option<&Partition> {
        self.parts.get(key)
    }

    pub(super) fn get_mut(&mut self, key: &PartKey) -> Option<&mut Partition> {
        self.parts.get_mut(key)
    }

    /// True if `key` is owned in assignment `epoch` (an upload or marker of an earlier
    /// assignment is not this owner's any more).
    pub(super) fn is_current(&self, key: &PartKey, epoch: u64) -> bool {
        self.parts.get(key).is_some_and(|st| st.epoch == epoch)
    }

    pub(super) fn len(&self) -> usize {
        self.parts.len()
    }

    /// The owned partitions' keys, in no particular order.
    pub(super) fn keys(&self) -> impl Iterator<Item = &PartKey> {
        self.parts.keys()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&PartKey, &Partition)> {
        self.parts.iter()
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&PartKey, &mut Partition)> {
        self.parts.iter_mut()
    }

    /// True when some partition is owned and every one reached its end offset.
    pub(super) fn all_caught_up(&self) -> bool {
        !self.parts.is_empty() && self.parts.values().all(Partition::caught_up)
    }

    /// Owned partitions whose safe offset is ahead of their last successful commit.
    pub(super) fn uncommitted(&self) -> usize {
        self.parts.values().filter(|st| st.commit_due().is_some()).count()
    }

    /// The partitions whose failed watermark read is to be asked again.
    pub(super) fn reads_to_retry(&self) -> Vec<PartKey> {
        self.parts.iter().filter(|(_, st)| st.watermarks != Watermarks::Done && !st.reads.asked && st.reads.last.is_some()).map(|(k, _)| *k).collect()
    }
}

impl Index<&PartKey> for Partitions {
    type Output = Partition;

    fn index(&self, key: &PartKey) -> &Partition {
        &self.parts[key]
    }
}

/// One owned partition. Created at assignment, dropped at revocation: nothing about a
/// partition outlives its ownership except files still in flight (which carry its epoch).
#[derive(Debug, Default)]
pub(super) struct Partition {
    /// Unique per assignment; upload results of an earlier assignment are ignored.
    epoch: u64,
    /// The rebalance generation that assigned it; messages polled before are stale.
    assigned_gen: u64,
    /// Consumed, held and committed offsets. `None` until the first message when the group
    /// never committed the partition (consumption starts wherever Kafka's reset puts it).
    offsets: Option<PartitionOffsets>,
    /// Intents of sealed files not yet wholly committed past, carried in every commit.
    intents: IntentLog,
    /// What the last commit's intents say about re-read messages.
    recovery: Recovery,
    /// Rebuild indices (into `recovery.rebuild`) already sealed.
    rebuilt: HashSet<usize>,
    /// End offset to reach for `--until-caught-up` (`i64::MIN`: nothing to read).
    target: Option<i64>,
    /// The watermarks still to read (for the lost-offsets check and `--until-caught-up`): they
    /// are read at assignment and, if that fails, again until they are.
    watermarks: Watermarks,
    /// Its watermark reads, asked on the loop and answered off it.
    reads: WatermarkReads,
    /// The record must be rewritten by the next commit even if the offset did not move: the
    /// last committed one names a file that must not be rebuilt (its name is taken by another
    /// blob), or completion progress changed.
    record_stale: bool,
    /// Completion markers: dates passed and marked.
    marking: Marking,
    /// Whether its commit keeps up with its consumption (a stall is reported).
    watch: CommitWatch,
    /// Reported as stalled (logged once per stall).
    stalled: bool,
}

/// Whether a partition's watermarks were read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Watermarks {
    /// Read, or not needed (no commit to check, no end to reach).
    #[default]
    Done,
    /// Still to read; the group's commit at assignment, if any, for the lost-offsets check.
    Unread { committed: Option<i64> },
}

/// A partition's watermark reads: at most one asked at a time.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct WatermarkReads {
    /// A read was asked and not answered yet.
    asked: bool,
    /// The last answer: when it came, and the (log start, end) offsets unless the read failed.
    last: Option<(Instant, Option<(i64, i64)>)>,
}

/// What a watermark answer meant.
#[derive(Debug)]
pub(super) enum WatermarksRead {
    /// Noted; nothing was waiting for it.
    Noted,
    /// The read failed while the watermarks were still to read (it is asked again).
    Failed(BrokerError),
    /// The group's commit `committed` is below the log start `low`: Kafka deleted offsets
    /// before they were backed up.
    Lost { committed: i64, low: i64, high: i64 },
    /// Read and checked: nothing lost.
    Checked,
}

/// A partition's stall state after a check.
pub(super) struct StallCheck {
    /// Why it is stalled now, if it is.
    pub(super) stall: Option<Stall>,
    /// Whether it was reported stalled before this check.
    pub(super) was_stalled: bool,
    pub(super) position: i64,
    pub(super) committed: i64,
}

/// The rebuilt files whose recorded ranges consumption has passed.
pub(super) struct ReadyRebuilds {
    /// (index into the recovery's rebuilds, its intent), in recorded order.
    pub(super) files: Vec<(usize, Arc<Intent>)>,
    /// Consumption passed the whole recovery: it is over.
    pub(super) recovered: bool,
}

impl Partition {
    /// A partition assigned in `generation`, resuming from `committed` if the group has one.
    fn assigned(epoch: u64, generation: u64, committed: Option<i64>) -> Partition {
        Partition { epoch, assigned_gen: generation, offsets: committed.map(PartitionOffsets::new), ..Default::default() }
    }

    /// Its assignment's epoch.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// True if a message polled in rebalance generation `generation` is this assignment's (one
    /// polled before is stale: its partition was revoked, maybe given back, meanwhile).
    pub(super) fn polled_in(&self, generation: u64) -> bool {
        self.assigned_gen <= generation
    }

    /// The offsets, once known.
    pub(super) fn offsets(&self) -> Option<&PartitionOffsets> {
        self.offsets.as_ref()
    }

    /// The offsets, starting tracking at `first` if nothing was committed before.
    pub(super) fn offsets_from(&mut self, first: i64) -> &mut PartitionOffsets {
        self.offsets.get_or_insert_with(|| PartitionOffsets::new(first))
    }

    /// An uploaded file held the offsets from `held`: released; false if nothing is tracked.
    pub(super) fn release(&mut self, held: i64) -> bool {
        let Some(o) = self.offsets.as_mut() else { return false };
        o.release(held);
        true
    }

    pub(super) fn marking(&self) -> &Marking {
        &self.marking
    }

    pub(super) fn marking_mut(&mut self) -> &mut Marking {
        &mut self.marking
    }

    /// What the last commit's intents say about re-read messages.
    pub(super) fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// True if an intent of its record names a file `key`.
    pub(super) fn names(&self, key: &str) -> bool {
        self.intents.names(key)
    }

    /// Adds a sealed file's intent to the record its next commit carries.
    pub(super) fn record(&mut self, intent: Arc<Intent>) {
        self.intents.push(intent);
    }

    /// Takes an intent out of the record (it was not recorded, or did not fit).
    pub(super) fn unrecord(&mut self, intent: &Intent) {
        self.intents.remove(intent);
    }

    /// A file's name is taken by another blob: its intent leaves the record, and the next
    /// commit rewrites the record even if the offset stays (else the next owner would rebuild
    /// the file under the taken name).
    pub(super) fn drop_taken_name(&mut self, intent: &Intent) {
        self.intents.remove(intent);
        self.record_stale = true;
    }

    /// The next commit rewrites the record even if the offset did not move (completion
    /// progress changed).
    pub(super) fn rewrite_record(&mut self) {
        self.record_stale = true;
    }

    /// The record a commit at `offset` carries, or `None` if it exceeds `limit` bytes.
    pub(super) fn metadata(&self, offset: i64, limit: usize) -> Option<String> {
        self.intents.metadata(offset, limit, self.marking.progress())
    }

    /// A commit at `offset` succeeded: intents wholly below it leave the record.
    pub(super) fn committed(&mut self, offset: i64) {
        if let Some(o) = self.offsets.as_mut() {
            o.committed(offset);
        }
        self.intents.prune(offset);
        self.record_stale = false;
    }

    /// The offset the partition's next commit carries, if one is due: the safe offset once it
    /// passed the last commit, or as it is when the intent record must be rewritten.
    pub(super) fn commit_due(&self) -> Option<i64> {
        let o = self.offsets.as_ref()?;
        o.to_commit().or_else(|| self.record_stale.then(|| o.safe()))
    }

    /// The last offset of the recovery's ranges while one is under way.
    pub(super) fn recovering(&self) -> Option<i64> {
        self.recovery.end()
    }

    /// What to do with re-read message `off`, routed to `here` (and to `earlier` by the rule
    /// before record dating): store it as usual, skip it (already stored), or rebuild a file.
    pub(super) fn recovery_action(&self, off: i64, here: Place<'_>, earlier: Option<Place<'_>>) -> Action {
        match self.recovery.end() {
            // Each intent by the rule of the build that recorded it: one from before record
            // dating holds a record without an event time on its `invalid_date` place.
            Some(end) if off <= end && !sabotage::on(Rule::IgnoreRecovery) => match self.recovery.action_by_build(off, here, earlier) {
                Action::Rebuild(i) if sabotage::on(Rule::RebuildFromSecond) && self.recovery.rebuild[i].from == off => Action::Skip,
                a => a,
            },
            _ => Action::Normal,
        }
    }

    /// The rebuilt files whose recorded range ends at or before `off` and were not taken yet;
    /// the recovery is dropped once consumption has passed all of it.
    pub(super) fn ready_rebuilds(&mut self, off: i64) -> ReadyRebuilds {
        let Some(end) = self.recovery.end() else { return ReadyRebuilds { files: Vec::new(), recovered: false } };
        let ready: Vec<usize> =
            (0..self.recovery.rebuild.len()).filter(|i| !self.rebuilt.contains(i) && self.recovery.rebuild[*i].to <= off).collect();
        let mut files = Vec::with_capacity(ready.len());
        for i in ready {
            self.rebuilt.insert(i);
            files.push((i, Arc::new(self.recovery.rebuild[i].clone())));
        }
        let recovered = off >= end && self.rebuilt.len() == self.recovery.rebuild.len();
        if recovered {
            self.recovery = Recovery::default();
            self.rebuilt.clear();
        }
        ReadyRebuilds { files, recovered }
    }

    /// True once consumption reached the end offset read at assignment.
    pub(super) fn caught_up(&self) -> bool {
        match self.target {
            Some(i64::MIN) => true,
            Some(target) => {
                let target = if sabotage::on(Rule::CaughtUpEarly) { target - 1 } else { target };
                self.offsets.as_ref().is_some_and(|o| o.position() >= target)
            }
            None => false,
        }
    }

    /// Asks a watermark read unless one is asked already; true if this call asked it.
    pub(super) fn ask_read(&mut self) -> bool {
        !std::mem::replace(&mut self.reads.asked, true)
    }

    /// A watermark read was answered at `now`. While the watermarks were still to read, the
    /// group's commit is checked against the log start and (`until_caught_up`) the end to
    /// reach is set.
    pub(super) fn watermarks_answered(&mut self, now: Instant, read: Result<(i64, i64), BrokerError>, until_caught_up: bool) -> WatermarksRead {
        self.reads = WatermarkReads { asked: false, last: Some((now, read.as_ref().ok().copied())) };
        let Watermarks::Unread { committed: start } = self.watermarks else { return WatermarksRead::Noted };
        let (low, high) = match read {
            Ok(w) => w,
            Err(e) => return WatermarksRead::Failed(e),
        };
        if until_caught_up {
            // With no commit, consumption starts at the low watermark (earliest).
            self.target = Some(if start.unwrap_or(low).max(low) >= high { i64::MIN } else { high });
        }
        self.watermarks = Watermarks::Done;
        match start.filter(|s| *s < low) {
            Some(committed) => WatermarksRead::Lost { committed, low, high },
            None => WatermarksRead::Checked,
        }
    }

    /// True if the last watermark read shows the partition consumed to its log end (no new
    /// read). Against the position now, not the one at the read: a partition that reached the
    /// end read a moment before it got there is caught up.
    pub(super) fn at_log_end(&self) -> bool {
        match (self.reads.last, &self.offsets) {
            (Some((_, Some((_, high)))), Some(o)) => o.position() >= high,
            (Some((_, Some((low, high)))), None) => low >= high,
            _ => false,
        }
    }

    /// True if no watermark read was answered within `fresh` before `now`.
    pub(super) fn read_older_than(&self, now: Instant, fresh: Duration) -> bool {
        self.reads.last.is_none_or(|(at, _)| now.duration_since(at) >= fresh)
    }

    /// Checks at `now` whether its commit keeps up with its consumption (`limit`: how long a
    /// file may legitimately take; `oldest_awaiting`: since when its oldest sealed file waits
    /// for its intent record). `None` before anything is tracked.
    pub(super) fn check_stall(&mut self, now: Instant, limit: Duration, oldest_awaiting: Option<Instant>) -> Option<StallCheck> {
        let o = self.offsets.as_ref()?;
        let (position, committed) = (o.position(), o.last_committed());
        self.watch.observe(now, position, committed);
        let stall = self.watch.stall(now, position, limit, oldest_awaiting);
        let was_stalled = std::mem::replace(&mut self.stalled, stall.is_some());
        Some(StallCheck { stall, was_stalled, position, committed })
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
