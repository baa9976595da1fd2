//! Deliberately broken rules, for proving that the simulation catches them.
//!
//! Each [`Rule`] names one decision the exactly-once protocol depends on. In a test build a
//! test may break one rule on its own thread and check that the simulation fails; in any
//! other build [`on`] is a constant `false` and the switches compile away.

/// A rule that can be broken on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// Commit the highest pending file's first offset instead of the lowest.
    CommitHighestPending,
    /// Start an upload without first committing its intent record.
    UploadBeforeIntent,
    /// Overwrite an existing blob instead of creating it only if absent.
    UnconditionalPut,
    /// Ignore the recovery plan: re-read messages are written again.
    IgnoreRecovery,
    /// Append messages polled before the rebalance that re-assigned their partition.
    KeepStaleMessages,
    /// Take any blob under a rebuilt file's recorded name for its earlier upload (what the
    /// writer did before the simulation found two owners' clocks giving one name).
    TrustRecordedName,
    /// Decide overlapping intents of one route by first offset, skips first (the rule before
    /// the simulation found a message of an earlier file rebuilt into a later one).
    PlanByFirstOffset,
    /// Start a commit while an earlier one is still unanswered by the broker.
    OverlappingCommits,
    /// Keep polling while buffers and uploads fill the memory budget and uploads are behind.
    NoBackpressure,
    /// Never resume a paused consumer, even once uploads drained.
    NeverResume,
    /// Take a partition for caught up one offset before the end read at assignment.
    CaughtUpEarly,
    /// Rebuild a recorded file without its first message (taken for already stored).
    RebuildFromSecond,
    /// Ignore files recorded under the invalid bucket by releases before record dating: a
    /// re-read record they hold is written again under its record-time date.
    IgnoreEarlierPlacement,
    /// Match a re-read record without an event time on this build's place first and on the
    /// earlier build's place second, for every intent, whichever build recorded it (the rule
    /// before intents said so; simulation seed 3323).
    PlaceBeforeBuild,
    /// Never read again watermarks that could not be read at assignment.
    NoWatermarkRetry,
    /// Mark a date complete once the partition passed it, without waiting for its files to be
    /// uploaded and committed.
    MarkUnsettled,
    /// Start fetching an assigned partition where the group's commit stands when the fetch
    /// starts, not where the core read it (librdkafka's own second read; issue 34).
    FetchFromCommitted,
    /// Read a partition's watermarks on the loop at assignment, waiting up to 30 s for the
    /// broker (the rule before issue 37: a frozen broker held the loop past a stop's bound).
    WatermarksOnLoop,
    /// Wait for a commit the broker never answers for ever (no other commit may start
    /// meanwhile: the writer's partitions stop for good).
    WaitForCommitForever,
    /// Fill a partition's commit record without sealing the open files whose ranges begin
    /// inside the recorded ones (once full, the file holding the commit never fits; issue 34).
    NoRecordRoomForOpenFiles,
    /// Let any output's intent decide a re-read message, not only its own output's: the other
    /// output's stored file makes it skip a message it never stored (issue 40's outputs).
    OutputsShareIntents,
    /// Pause consumption for uploads while a partition's recovery still needs messages read
    /// (its rebuilt files, its commit and its record's room all wait for them).
    PauseDuringRecovery,
    /// Charge what sealing a file holds besides its bytes (a Parquet file's columns) only when
    /// it is sealed, not while it is open (the rule before this was measured: a seal for memory
    /// raised the total, and a 256 MiB budget held 602 MB in flight).
    ChargeSealingAtSeal,
}

#[cfg(test)]
thread_local! {
    static BROKEN: std::cell::Cell<Option<Rule>> = const { std::cell::Cell::new(None) };
}

/// True if `rule` is broken on this thread (test builds only).
#[inline(always)]
pub(crate) fn on(rule: Rule) -> bool {
    #[cfg(test)]
    {
        BROKEN.with(|b| b.get() == Some(rule))
    }
    #[cfg(not(test))]
    {
        let _ = rule;
        false
    }
}

/// Breaks `rule` on this thread until the guard is dropped.
#[cfg(test)]
pub(crate) fn break_rule(rule: Rule) -> impl Drop {
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            BROKEN.with(|b| b.set(None));
        }
    }
    BROKEN.with(|b| b.set(Some(rule)));
    Restore
}
