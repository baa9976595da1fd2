//! The run's totals as the writer counts them, handed to `run`'s caller at the end
//! ([`RunSummary`]). An owned part: the core tells it what happened, one method per outcome, and
//! reads the totals whole.

use crate::writer::RunSummary;

/// The run's totals so far.
#[derive(Debug, Default)]
pub(super) struct Summary {
    totals: RunSummary,
}

impl Summary {
    /// The totals so far.
    pub(super) fn totals(&self) -> &RunSummary {
        &self.totals
    }

    /// An event of `bytes` was consumed and applied.
    pub(super) fn consumed(&mut self, bytes: usize) {
        self.totals.events += 1;
        self.totals.bytes_in += bytes as u64;
    }

    /// A message polled before a rebalance took its partition was left for its next owner.
    pub(super) fn stale_dropped(&mut self) {
        self.totals.stale_dropped += 1;
    }

    /// A timestamp string its pattern could not read (dated by a later rung).
    pub(super) fn unparsed_timestamp(&mut self) {
        self.totals.unparsed_timestamps += 1;
    }

    /// A message went to the invalid bucket.
    pub(super) fn invalid(&mut self) {
        self.totals.invalid += 1;
    }

    /// A message was dated by its record time.
    pub(super) fn record_time_dated(&mut self) {
        self.totals.record_time_dated += 1;
    }

    /// A re-read message was skipped: an uploaded file holds it.
    pub(super) fn skipped_already_stored(&mut self) {
        self.totals.skipped_already_stored += 1;
    }

    /// A message's raw newlines were written as spaces.
    pub(super) fn newlines_replaced(&mut self) {
        self.totals.newlines_replaced += 1;
    }

    /// A file recorded by an earlier run was rebuilt.
    pub(super) fn rebuilt_file(&mut self) {
        self.totals.rebuilt_files += 1;
    }

    /// An event of a date already marked complete.
    pub(super) fn late_event(&mut self) {
        self.totals.late_events += 1;
    }

    /// Kafka deleted `offsets` offsets before they were backed up.
    pub(super) fn lost_offsets(&mut self, offsets: u64) {
        self.totals.lost_offsets += offsets;
    }

    /// A file of `stored_bytes` was uploaded (`already_there`: an earlier upload of it was found).
    pub(super) fn uploaded(&mut self, stored_bytes: u64, already_there: bool) {
        self.totals.files += 1;
        self.totals.bytes_out += stored_bytes;
        if already_there {
            self.totals.already_there += 1;
        }
    }

    /// A completion marker was written.
    pub(super) fn marker_written(&mut self) {
        self.totals.markers_written += 1;
    }

    /// The stop ended with `files` not uploaded.
    pub(super) fn abandoned_files(&mut self, files: u64) {
        self.totals.abandoned_files = files;
    }

    /// The stop ended with `partitions` whose final commit did not succeed.
    pub(super) fn uncommitted_partitions(&mut self, partitions: u64) {
        self.totals.uncommitted_partitions = partitions;
    }
}
