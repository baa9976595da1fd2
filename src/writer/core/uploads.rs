//! Upload results: releasing offsets, name conflicts, and waiting for uploads.

use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::decision::Fatal;
use super::files::InFlight;
use super::Writer;
use crate::failpoint;
use crate::metrics as m;
use crate::upload::{Outcome, UploadDone};
use crate::writer::ports::Broker;

impl Writer {
    pub(crate) fn on_uploaded(&mut self, done: UploadDone) {
        let Some(f) = self.files.landed(done.id) else {
            return;
        };
        let current = self.parts.get(&f.part()).is_some_and(|s| s.epoch == f.epoch);
        if done.outcome == Outcome::Conflict {
            metrics::counter!(m::UPLOAD_FAILURES, "topic" => self.topics[f.topic].name().to_string()).increment(1);
            error!(key = %f.intent.key, "a different blob already has this name; the file is not uploaded");
            if current {
                self.stop_on_name_conflict(&f);
            }
            return;
        }
        failpoint::hit(failpoint::UPLOADED);
        let name = self.topics[f.topic].name().to_string();
        metrics::counter!(m::FILES_UPLOADED, "topic" => name.clone()).increment(1);
        metrics::counter!(m::BYTES_UPLOADED, "topic" => name.clone()).increment(done.stored_bytes);
        metrics::histogram!(m::UPLOAD_SECONDS, "topic" => name).record(done.elapsed.as_secs_f64());
        self.summary.files += 1;
        self.summary.bytes_out += done.stored_bytes;
        if done.outcome == Outcome::AlreadyThere {
            self.summary.already_there += 1;
        }
        info!(
            key = %f.intent.key,
            events = f.events,
            bytes = f.bytes,
            stored_bytes = done.stored_bytes,
            first_offset = f.intent.from,
            last_offset = f.intent.to,
            partition = f.partition,
            reason = f.reason.as_str(),
            attempts = done.attempts,
            existed = done.outcome == Outcome::AlreadyThere,
            ms = done.elapsed.as_millis() as u64,
            "uploaded"
        );
        if current {
            self.note_uploaded_for_completion(&f, done.outcome);
        }
        match self.parts.get_mut(&f.part()).and_then(|st| st.offsets.as_mut()) {
            Some(offsets) if current => offsets.release(f.held),
            // The partition was revoked or lost while this upload ran; its new owner re-reads
            // these events from the last commit and finds this file through its intent.
            _ => warn!(key = %f.intent.key, "upload finished after its partition was given up"),
        }
    }

    /// A blob of the file's name already holds other events (two owners' clocks gave the same
    /// `{currentTimestamp}`). The file's data is gone (compressed and dropped by the uploader),
    /// so nothing is renamed: its intent is removed from the record — rewritten by the final
    /// commit even if the offset stays, else the next owner would rebuild it under the taken
    /// name — its events stay held (never committed) and the writer stops, so that they are read
    /// again after a restart, under a new name.
    pub(super) fn stop_on_name_conflict(&mut self, f: &InFlight) {
        if let Some(st) = self.parts.get_mut(&f.part()) {
            st.intents.remove(&f.intent);
            st.record_stale = true;
        }
        self.stop.fail(Fatal::NameConflict { key: f.intent.key.clone() });
    }

    /// Takes every upload result that is ready.
    pub(crate) fn drain_uploads(&mut self) {
        while let Some(done) = self.uploads.next() {
            self.on_uploaded(done);
        }
    }

    /// Waits for uploads until `pred` holds or `deadline` passes; returns whether it holds.
    pub(super) fn wait_uploads(&mut self, broker: &dyn Broker, deadline: Instant, pred: impl Fn(&Writer) -> bool) -> bool {
        loop {
            self.drain_uploads();
            if !self.files.awaiting().is_empty() && self.cadence.intents_due(self.clock.now()) {
                self.record_intents(broker);
            }
            if pred(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(self.clock.now());
            if left.is_zero() {
                return false;
            }
            match self.uploads.next_within(left.min(Duration::from_secs(1))) {
                Some(done) => self.on_uploaded(done),
                None => debug!(files = self.files.inflight_count(), "waiting for uploads"),
            }
        }
    }
}
