//! Offset commits: upload intents recorded as commit metadata, and the safe offsets.

use std::collections::HashSet;
use std::time::Duration;

use tracing::{debug, error, warn};

use super::partition::PartKey;
use super::Writer;
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
                self.intent_retry_at = self.clock.now() + Duration::from_secs(1);
                warn!(error = %e, files = batch.len(), "recording upload intents failed; will retry");
            }
        }
    }

    /// The awaiting files whose intents fit in their partitions' next commit (in seal order,
    /// under the metadata limit), added to the partitions' intent logs, and those commits.
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
            let Some(st) = self.parts.get_mut(&part) else { continue };
            let Some(offset) = st.offsets.as_ref().map(|o| o.safe()) else { continue };
            let mut added = 0;
            for id in self.files.awaiting() {
                let f = self.files.get(*id).expect("awaiting files are in flight");
                if f.part() != part {
                    continue;
                }
                st.intents.push(f.intent.clone());
                if st.intents.metadata(offset, self.settings.metadata_limit, &st.marking.progress).is_none() {
                    // The record is full: this file waits until earlier ones are committed past.
                    st.intents.remove(&f.intent);
                    break;
                }
                batch.push(*id);
                added += 1;
            }
            if added > 0 {
                let md = st.intents.metadata(offset, self.settings.metadata_limit, &st.marking.progress).expect("checked above");
                commits.push(Pending { part, offset, metadata: md });
            }
        }
        (batch, commits)
    }

    /// One synchronous commit of offsets with metadata; updates the partitions on success.
    pub(super) fn commit_with_metadata(&mut self, broker: &dyn Broker, commits: &[Pending]) -> Result<(), BrokerError> {
        let entries: Vec<CommitEntry<'_>> = commits
            .iter()
            .map(|c| CommitEntry { topic: &self.topics[c.part.topic].cfg.name, partition: c.part.partition, offset: c.offset, metadata: &c.metadata })
            .collect();
        let started = self.clock.now();
        // During a stop a commit waits no longer than the time left.
        let wait = match self.stop_deadline {
            Some(d) => COMMIT_WAIT.min(d.saturating_duration_since(started)),
            None => COMMIT_WAIT,
        };
        if wait.is_zero() {
            metrics::counter!(m::COMMIT_FAILURES).increment(1);
            return Err(BrokerError("no time left before the stop's deadline to commit".into()));
        }
        if let Err(e) = broker.commit(&entries, wait) {
            metrics::counter!(m::COMMIT_FAILURES).increment(1);
            return Err(e);
        }
        metrics::counter!(m::COMMITS).increment(1);
        metrics::histogram!(m::COMMIT_SECONDS).record(self.clock.now().duration_since(started).as_secs_f64());
        self.health.broker_ok();
        for c in commits {
            debug!(topic = %self.topics[c.part.topic].cfg.name, partition = c.part.partition, offset = c.offset, "committed");
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
        self.last_commit = self.clock.now();
        let mut commits = Vec::new();
        for (&part, st) in &self.parts {
            if only.is_some_and(|s| !s.contains(&part)) {
                continue;
            }
            let Some(o) = st.commit_due() else { continue };
            match st.intents.metadata(o, self.settings.metadata_limit, &st.marking.progress) {
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
