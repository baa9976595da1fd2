//! The per-batch decision, the one entry point both worlds drive: after a batch is applied,
//! the periodic work, the memory budget's wait and pause, and whether the loop polls again or
//! stops, and why. It reads only the core's clock, so the polling loop (`pipeline.rs`) and the
//! simulation (`sim/`) run the same decisions.

use std::time::Duration;

/// How long the loop waits for uploads when the memory budget is full before it pauses
/// consumption. Bounded, so that rebalances are still served.
pub(crate) const UPLOAD_WAIT: Duration = Duration::from_secs(1);

/// Why the writer cannot go on safely; the process stops and exits non-zero.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Fatal {
    /// The committed offsets (and the intent records they carry) could not be read in time.
    #[error("cannot read committed offsets: {0}")]
    CommittedUnreadable(String),
    /// With a Secor config, a partition's commit was written by another client.
    #[error(
        "{topic}/{partition}: offset {offset} was committed by another client, not by kbackup (Secor's auto-commit?); resuming from it could skip what Secor never uploaded: run `kbackup takeover` first (docs/runbook.md)"
    )]
    ForeignCommit { topic: String, partition: i32, offset: i64 },
    /// A commit has been left unanswered for longer than librdkafka ever takes to answer one;
    /// no other commit may start meanwhile, so nothing of this writer's can be committed.
    #[error(
        "the broker has left a commit unanswered for {secs} s (librdkafka answers within socket.timeout.ms, or session.timeout.ms while it waits for a coordinator): no commit can start meanwhile; stopping so that a restart brings a fresh consumer (uncommitted events are read again)"
    )]
    CommitUnanswered { secs: u64 },
    /// Another blob already has a file's name.
    #[error(
        "blob {key} exists with different content; stopping without committing its events (restart to re-read them under a new name; stock Secor's names never change: a Secor file of that name means Secor uploaded past where kbackup started, and `kbackup takeover --from-storage` moves past it)"
    )]
    NameConflict { key: String },
    /// A partition's record names a file for one output that another output of the topic
    /// writes: the topic's `[[topic]]` entries were reordered since it was committed.
    #[error(
        "{topic}/{partition}: the commit record names {key} as a file of the topic's output {recorded}, but output {now} writes under that path: the topic's [[topic]] entries were reordered; put them back in their order (recovery tells outputs apart by it)"
    )]
    OutputsReordered { topic: String, partition: i32, key: String, recorded: u8, now: u8 },
}

/// Why the loop ends.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StopReason {
    /// The writer cannot go on safely.
    Fatal(Fatal),
    /// A signal asked it to stop.
    Requested,
    /// `--until-caught-up`: every owned partition reached the end offset read at assignment.
    CaughtUp,
}

/// What the loop does next.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Next {
    /// Poll the next batch. `paused`: consumption is paused, so poll only briefly (to serve
    /// rebalances and see uploads land).
    Poll { paused: bool },
    /// Stop: seal, upload, commit and leave within the stop's bound.
    Stop(StopReason),
}
