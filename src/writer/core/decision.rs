//! The per-batch decision, the one entry point both worlds drive: after a batch is applied,
//! the periodic work, the memory budget's wait and pause, and whether the loop polls again or
//! stops, and why. It reads only the core's clock, so the polling loop (`pipeline.rs`) and the
//! simulation (`sim/`) run the same decisions.

use std::time::Duration;

use tracing::{error, info, warn};

use super::completion::MARKERS_WAIT;
use super::Writer;
use crate::sabotage::{self, Rule};
use crate::writer::ports::Broker;

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

impl Writer {
    /// Decides what the loop does after a batch: periodic work; when buffers and uploads fill
    /// the budget and uploads are behind, waiting for them rather than polling more (which lets
    /// librdkafka's bounded prefetch fill up and stop fetching, at no cost; pausing would drop
    /// what was prefetched), and pausing if they are stuck; then stop or poll.
    pub(crate) fn after_batch(&mut self, broker: &dyn Broker, stop_requested: bool) -> Next {
        if self.opts.until_caught_up && self.stop.caught_up_at().is_none() && self.caught_up() {
            // Nothing more is read for these files in this run: uploaded and committed now, not
            // at the exit, while the markers then due are written. Before the periodic work, so
            // that the budget's backpressure sees their uploads.
            let keys: Vec<crate::buffer::BufferKey> = self.files.open_keys().cloned().collect();
            for k in &keys {
                self.seal(k, crate::buffer::SealReason::CaughtUp);
            }
        }
        let now = self.clock.now();
        self.housekeeping(broker, now);
        if self.waiting_for_uploads() && !sabotage::on(Rule::NoBackpressure) {
            let deadline = self.clock.now() + UPLOAD_WAIT;
            if self.wait_uploads(broker, deadline, |w| !w.waiting_for_uploads()) {
                // Uploads drained while waiting: a pause the periodic work just applied ends
                // now, not a poll later (the simulation's pause invariant found it lingering).
                self.apply_backpressure(broker);
            } else {
                // Uploads are stuck, not just slow: stop fetching until they catch up.
                self.pause(broker, "memory budget full and uploads are behind: consumption paused");
            }
        }
        if let Some(why) = self.stop.fatal() {
            error!(reason = %why, "stopping: the writer cannot continue safely");
            return Next::Stop(StopReason::Fatal(why.clone()));
        }
        if stop_requested {
            info!("stopping: sealing and uploading every open file");
            return Next::Stop(StopReason::Requested);
        }
        if !(self.opts.until_caught_up && self.caught_up()) {
            self.stop.behind();
        } else {
            let now = self.clock.now();
            let since = self.stop.caught_up(now);
            let outstanding = self.markers_outstanding(broker);
            if !outstanding.is_empty() {
                let parts: Vec<String> = outstanding.iter().map(|k| format!("{}/{}", self.topics[k.topic].name(), k.partition)).collect();
                if now.duration_since(since) < MARKERS_WAIT {
                    if since == now {
                        info!(partitions = ?parts, "caught up: writing the completion markers now due before stopping");
                    }
                    return Next::Poll { paused: self.paused };
                }
                warn!(
                    partitions = ?parts,
                    waited_secs = MARKERS_WAIT.as_secs(),
                    "stopping with completion markers still due: the next run writes them"
                );
            }
            // The drain ends when the run caught up, not after the markers' wait.
            let drain = self.first_message_at.map(|t| since.saturating_duration_since(t).as_secs_f64()).unwrap_or_default();
            info!(
                events = self.summary.events,
                drain_seconds = drain,
                events_per_second = (self.summary.events as f64 / drain.max(1e-9)).round(),
                "caught up with the end offsets read at assignment"
            );
            return Next::Stop(StopReason::CaughtUp);
        }
        Next::Poll { paused: self.paused }
    }
}
