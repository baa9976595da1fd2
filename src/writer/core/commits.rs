//! Offset commits: upload intents recorded as commit metadata, and the safe offsets.

use std::collections::HashSet;

use tracing::{debug, error, warn};

use super::partition::PartKey;
use super::Writer;
use crate::buffer::{BufferKey, SealReason};
use crate::failpoint;
use crate::metrics as m;
use crate::sabotage;
use crate::writer::ports::{Broker, BrokerError, CommitEntry, COMMIT_WAIT};

/// One partition's part of a commit: its offset and the intent record as metadata.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) part: PartKey,
    pub(super) offset: i64,
    pub(super) metadata: String,
}

impl Writer {
    /// Commits the intents of sealed files (with each partition's safe offset), then starts
    /// their uploads. A file whose intent is not confirmed is never uploaded.
    pub(super) fn record_intents(&mut self, broker: &dyn Broker) {
        if self.files.awaiting().is_empty() {
            return;
        }
        // Counted per file, so `sealed:n` does not depend on how seals are batched.
        for _ in self.files.awaiting() {
            failpoint::hit(failpoint::SEALED);
        }
        let (batch, commits) = self.next_intents();
        if batch.is_empty() {
            return;
        }
        let recorded = if sabotage::on(sabotage::Rule::UploadBeforeIntent) { Ok(()) } else { self.commit_with_metadata(broker, &commits) };
        match recorded {
            Ok(()) => {
                for &id in &batch {
                    failpoint::hit(failpoint::INTENT_RECORDED);
                    let Some((f, data)) = self.files.recorded(id) else { continue };
                    let job = self.topics[f.topic].upload_job(id, &f.intent.key, data, f.existing);
                    self.uploads.submit(job);
                }
            }
            Err(e) => {
                // Not recorded (or not known to be): do not upload. The intents come out of the
                // log again; if the broker did store them, recovery rebuilds those files.
                for id in &batch {
                    let f = self.files.get(*id).expect("awaiting files are in flight");
                    if let Some(st) = self.parts.get_mut(&f.part()) {
                        st.intents.remove(&f.intent);
                    }
                }
                self.cadence.intents_failed(self.clock.now());
                warn!(error = %e, files = batch.len(), "recording upload intents failed; will retry");
            }
        }
    }

    /// The awaiting files whose intents fit in their partitions' next commit, added to the
    /// partitions' intent logs, and those commits.
    ///
    /// A partition's record must list every file whose range reaches past its commit, and the
    /// broker caps its size (`writer.commit_metadata_limit`). A file still open (a rare prefix,
    /// a date in progress, kept for its age while other routes roll) holds the commit at its
    /// first offset; every file recorded meanwhile stays in the record, and once the record was
    /// full the open file, sealed at last, never fitted: the commit never moved again and
    /// nothing of the partition reached storage (issue 34). So files are taken lowest first
    /// offset first, and before the record passes half its limit, every open file whose range
    /// begins before the end of the file being added is sealed first and recorded ahead of it:
    /// what stays open then begins after every recorded range, and its intent never waits for
    /// one of them to be committed past. (Files opened later begin after them anyway.)
    fn next_intents(&mut self) -> (Vec<u64>, Vec<Pending>) {
        let mut batch = Vec::new();
        let mut commits = Vec::new();
        let mut parts: Vec<PartKey> = Vec::new();
        for id in self.files.awaiting() {
            let part = self.files.get(*id).expect("awaiting files are in flight").part();
            if !parts.contains(&part) {
                parts.push(part);
            }
        }
        for part in parts {
            if self.admit(part, &mut batch) > 0 {
                let st = &self.parts[&part];
                let offset = st.offsets.as_ref().map(|o| o.safe()).expect("admitted files have offsets");
                let md = st.intents.metadata(offset, self.settings.metadata_limit, st.marking.progress()).expect("checked when admitted");
                commits.push(Pending { part, offset, metadata: md });
            }
        }
        (batch, commits)
    }

    /// Adds the awaiting files of `part` that fit to its intent log and `batch`, lowest first
    /// offset first (sealing open files that would otherwise be left without room, see
    /// `next_intents`); returns how many. The first that does not fit waits for a later commit.
    fn admit(&mut self, part: PartKey, batch: &mut Vec<u64>) -> usize {
        let limit = self.settings.metadata_limit;
        let mut added = 0;
        loop {
            let Some(offset) = self.parts.get(&part).and_then(|st| st.offsets.as_ref()).map(|o| o.safe()) else { return added };
            let next = self
                .files
                .awaiting()
                .iter()
                .filter(|id| !batch.contains(id))
                .filter_map(|id| self.files.get(*id).filter(|f| f.part() == part).map(|f| (f.held, *id)))
                .min();
            let Some((_, id)) = next else { return added };
            let intent = self.files.get(id).expect("awaiting files are in flight").intent.clone();
            let st = self.parts.get_mut(&part).expect("checked above");
            st.intents.push(intent.clone());
            let fits = st.intents.metadata(offset, limit, st.marking.progress());
            let past_half = fits.as_ref().is_none_or(|md| md.len() > limit / 2);
            if past_half && !sabotage::on(sabotage::Rule::NoRecordRoomForOpenFiles) && self.seal_open_before(part, intent.to) {
                // They begin before this file ends: recorded first (lowest first offset first).
                self.parts.get_mut(&part).expect("checked above").intents.remove(&intent);
                continue;
            }
            if fits.is_none() {
                self.parts.get_mut(&part).expect("checked above").intents.remove(&intent);
                if offset == self.files.get(id).map_or(i64::MIN, |f| f.held) {
                    // Cannot happen while every owner follows the rule above (an earlier
                    // release's record, inherited at assignment, can be fuller).
                    error!(
                        topic = %self.topics[part.topic].name(),
                        partition = part.partition,
                        limit,
                        "the file holding this partition's commit does not fit in its commit record; raise writer.commit_metadata_limit (and the brokers' offset.metadata.max.bytes)"
                    );
                }
                return added;
            }
            batch.push(id);
            added += 1;
        }
    }

    /// Seals the open files of `part` whose first offset is at or below `to`; true if any.
    fn seal_open_before(&mut self, part: PartKey, to: i64) -> bool {
        let keys: Vec<BufferKey> = self
            .files
            .open_files()
            .filter(|(k, b)| k.topic == part.topic && k.partition == part.partition && b.first_offset <= to)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            failpoint::hit(failpoint::SEALED);
            self.seal(k, SealReason::Record);
        }
        !keys.is_empty()
    }

    /// One synchronous commit of offsets with metadata; updates the partitions on success.
    pub(super) fn commit_with_metadata(&mut self, broker: &dyn Broker, commits: &[Pending]) -> Result<(), BrokerError> {
        let entries: Vec<CommitEntry<'_>> = commits
            .iter()
            .map(|c| CommitEntry { topic: self.topics[c.part.topic].name(), partition: c.part.partition, offset: c.offset, metadata: &c.metadata })
            .collect();
        let started = self.clock.now();
        // During a stop a commit waits no longer than the time left.
        let wait = self.call_wait(COMMIT_WAIT);
        if wait.is_zero() {
            metrics::counter!(m::COMMIT_FAILURES).increment(1);
            return Err(BrokerError::new("no time left before the stop's deadline to commit"));
        }
        if let Err(e) = broker.commit(&entries, wait) {
            metrics::counter!(m::COMMIT_FAILURES).increment(1);
            return Err(e);
        }
        metrics::counter!(m::COMMITS).increment(1);
        metrics::histogram!(m::COMMIT_SECONDS).record(self.clock.now().duration_since(started).as_secs_f64());
        self.health.committed();
        for c in commits {
            debug!(topic = %self.topics[c.part.topic].name(), partition = c.part.partition, offset = c.offset, "committed");
            if let Some(st) = self.parts.get_mut(&c.part) {
                if let Some(offsets) = st.offsets.as_mut() {
                    offsets.committed(c.offset);
                }
                st.intents.prune(c.offset);
                st.record_stale = false;
            }
        }
        failpoint::hit(failpoint::COMMITTED);
        Ok(())
    }

    /// Commits every partition whose safe offset moved (only `only` if given), with its intents.
    pub(super) fn commit(&mut self, broker: &dyn Broker, only: Option<&HashSet<PartKey>>) {
        self.cadence.committed(self.clock.now());
        let mut commits = Vec::new();
        for (&part, st) in &self.parts {
            if only.is_some_and(|s| !s.contains(&part)) {
                continue;
            }
            let Some(o) = st.commit_due() else { continue };
            match st.intents.metadata(o, self.settings.metadata_limit, st.marking.progress()) {
                Some(md) => commits.push(Pending { part, offset: o, metadata: md }),
                // Cannot happen: a higher offset only drops intents from the record.
                None => error!(partition = part.partition, "intent record too large to commit"),
            }
        }
        if commits.is_empty() {
            return;
        }
        // One order whatever the map's: commits and their logs are reproducible.
        commits.sort_unstable_by_key(|c| c.part);
        // Not fatal: the offsets stay due and the next commit carries them.
        if let Err(e) = self.commit_with_metadata(broker, &commits) {
            warn!(error = %e, "offset commit failed; will retry");
        }
    }
}
