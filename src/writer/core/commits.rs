//! What a commit carries, and when an unanswered one is given up. Each owned partition commits
//! its safe offset with its intent record as metadata, which the broker caps in size
//! (`writer.commit_metadata_limit`); a commit the broker never answers holds every later one
//! back. Decisions only: the writer sends the commits through the broker and tells the
//! partitions what succeeded.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tracing::error;

use super::decision::Fatal;
use super::partition::{PartKey, Partitions};
use super::topics::Topics;
use crate::writer::ports::CommitEntry;

/// One partition's part of a commit: its offset and the intent record as metadata.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) part: PartKey,
    pub(super) offset: i64,
    pub(super) metadata: String,
}

/// The commits' settings, fixed at start.
#[derive(Debug)]
pub(super) struct Commits {
    /// The most bytes of intent metadata one commit may carry.
    metadata_limit: usize,
    /// How long a commit may stay unanswered before the writer gives up (`ports::commit_abandon`).
    abandon: Duration,
}

impl Commits {
    pub(super) fn new(metadata_limit: usize, abandon: Duration) -> Commits {
        Commits { metadata_limit, abandon }
    }

    /// The most bytes of intent metadata one commit may carry.
    pub(super) fn metadata_limit(&self) -> usize {
        self.metadata_limit
    }

    /// The commits due: every owned partition (only those in `only`, if given) whose safe
    /// offset moved or whose record must be rewritten, in partition order (whatever the map's:
    /// commits and their logs are reproducible).
    pub(super) fn due(&self, parts: &Partitions, only: Option<&HashSet<PartKey>>) -> Vec<Pending> {
        let mut commits = Vec::new();
        for (&part, st) in parts.iter() {
            if only.is_some_and(|s| !s.contains(&part)) {
                continue;
            }
            let Some(o) = st.commit_due() else { continue };
            match st.metadata(o, self.metadata_limit) {
                Some(md) => commits.push(Pending { part, offset: o, metadata: md }),
                // Cannot happen: a higher offset only drops intents from the record.
                None => error!(partition = part.partition, "intent record too large to commit"),
            }
        }
        commits.sort_unstable_by_key(|c| c.part);
        commits
    }

    /// The commit of `part` once files were admitted to its record (`admit` checked they fit).
    pub(super) fn admitted(&self, parts: &Partitions, part: PartKey) -> Pending {
        let st = &parts[&part];
        let offset = st.offsets().map(|o| o.safe()).expect("admitted files have offsets");
        let metadata = st.metadata(offset, self.metadata_limit).expect("checked when admitted");
        Pending { part, offset, metadata }
    }

    /// The broker's entries for `commits`.
    pub(super) fn entries<'a>(commits: &'a [Pending], topics: &'a Topics) -> Vec<CommitEntry<'a>> {
        commits
            .iter()
            .map(|c| CommitEntry { topic: topics[c.part.topic].name(), partition: c.part.partition, offset: c.offset, metadata: &c.metadata })
            .collect()
    }

    /// Why the writer gives up at `now` on a commit unanswered since `since`: librdkafka
    /// answers every commit within its timeouts, and none may start meanwhile.
    pub(super) fn abandoned(&self, since: Instant, now: Instant) -> Option<Fatal> {
        let waited = now.saturating_duration_since(since);
        (waited >= self.abandon).then_some(Fatal::CommitUnanswered { secs: waited.as_secs() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_is_given_up_once_unanswered_for_the_abandon_time() {
        let c = Commits::new(1000, Duration::from_secs(90));
        let t0 = Instant::now();
        assert_eq!(c.abandoned(t0, t0 + Duration::from_secs(89)), None);
        assert_eq!(c.abandoned(t0, t0 + Duration::from_secs(90)), Some(Fatal::CommitUnanswered { secs: 90 }));
        assert_eq!(c.abandoned(t0 + Duration::from_secs(1), t0), None, "a clock read before `since` waits nothing");
    }
}
