//! What the writer's core needs from the world, as three small traits: the broker (commits,
//! committed offsets, watermarks, pause and resume), the upload queue, and the clock.
//!
//! The real implementations are thin: [`Broker`] for librdkafka's consumer lives in `kafka.rs`,
//! [`ChannelUploads`] wraps the tokio [`Uploader`] and its result channel, [`SystemClock`] reads
//! the system clocks. The simulation (`sim/`) implements the same traits over a seeded world,
//! so the state machine it tests is the one that runs.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;

use object_store::ObjectStore;

use crate::completion::write::{MarkerDone, MarkerJob};
use std::time::{Duration, Instant};

use crate::upload::{UploadDone, UploadJob, Uploader};

/// A consumed message as the core reads it (topic, partition, offset, timestamp, payload):
/// librdkafka's borrowed messages in production, owned ones in the simulation.
pub(crate) use rdkafka::message::Message;

/// A broker call that failed (or whose outcome is unknown): what happened, and Kafka's error
/// code when librdkafka or the broker gave one (none for what the writer itself decided, such
/// as a commit left unanswered), so a caller can match on the kind rather than the text.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct BrokerError {
    pub(crate) code: Option<rdkafka::types::RDKafkaErrorCode>,
    pub(crate) message: String,
}

impl BrokerError {
    /// A failure without a Kafka error code.
    pub(crate) fn new(message: impl Into<String>) -> BrokerError {
        BrokerError { code: None, message: message.into() }
    }

    /// A failure with Kafka's error code (the simulation's broker fails as Kafka does).
    #[cfg(test)]
    pub(crate) fn kafka(code: rdkafka::types::RDKafkaErrorCode, message: impl Into<String>) -> BrokerError {
        BrokerError { code: Some(code), message: message.into() }
    }
}

impl From<rdkafka::error::KafkaError> for BrokerError {
    fn from(e: rdkafka::error::KafkaError) -> BrokerError {
        BrokerError { code: e.rdkafka_error_code(), message: e.to_string() }
    }
}

/// One Kafka partition, named as the broker names it (rebalances hand these over).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TopicPartition {
    pub(crate) topic: String,
    pub(crate) partition: i32,
}

/// One partition's offset commit, with the intent record as its metadata.
#[derive(Debug, Clone)]
pub(crate) struct CommitEntry<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) metadata: &'a str,
}

/// Where the consumer starts fetching a partition just assigned: exactly where the core read
/// the group's commit, never a second read of its own. (librdkafka, left to itself, reads the
/// commit again when it starts fetching; a commit that lands between the two reads made the
/// fetch start elsewhere than the recovery plan, and a rebuilt file then held an offset its
/// upload never released: the partition's backup stopped for good, issue 34.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FetchStart {
    /// The committed offset the core resumes from.
    At(i64),
    /// No commit (or the partition is not taken): `auto.offset.reset` decides, and the core
    /// tracks from the first message.
    Reset,
}

/// The answer to one [`Broker::ask_watermarks`].
#[derive(Debug)]
pub(crate) struct WatermarksAnswer {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    /// Low and high watermark.
    pub(crate) read: Result<(i64, i64), BrokerError>,
}

/// How long a watermark read off the loop may take before it counts as failed.
pub(crate) const WATERMARKS_TIMEOUT: Duration = Duration::from_secs(10);

/// A partition's committed offset (none if the group never committed it) and its metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Committed {
    pub(crate) offset: Option<i64>,
    pub(crate) metadata: String,
}

/// Longest a commit's answer is waited for. A commit that takes longer goes on in the broker
/// (it may still be applied) and counts as failed here, as a lost answer does: the protocol is
/// built for that (docs/exactly-once.md). Without this bound a frozen broker held the loop in
/// librdkafka for its socket timeout (a minute): no stop, no housekeeping, a readiness probe
/// still green.
pub(crate) const COMMIT_WAIT: Duration = Duration::from_secs(2);

/// At most one commit the broker has not answered: a later one could be applied before it, and
/// the earlier one's lower offsets would then land last and win. `T` is how the caller learns
/// that the unanswered one got its answer (a channel in production, an id in the simulation).
#[derive(Debug)]
pub(crate) struct CommitGate<T> {
    /// The unanswered commit, and when it was started.
    unanswered: Option<(T, Instant)>,
}

impl<T> Default for CommitGate<T> {
    fn default() -> Self {
        CommitGate { unanswered: None }
    }
}

impl<T> CommitGate<T> {
    /// Whether a new commit may start now; `answered` says whether the unanswered one (if any)
    /// has been answered since.
    pub(crate) fn may_start(&mut self, answered: impl FnOnce(&T) -> bool) -> bool {
        match &self.unanswered {
            Some((t, _)) if !answered(t) && !crate::sabotage::on(crate::sabotage::Rule::OverlappingCommits) => false,
            _ => {
                self.unanswered = None;
                true
            }
        }
    }

    /// The commit started at `since` went unanswered past [`COMMIT_WAIT`].
    pub(crate) fn unanswered(&mut self, t: T, since: Instant) {
        self.unanswered = Some((t, since));
    }

    /// When the commit still unanswered was started (as last seen by `may_start`).
    pub(crate) fn since(&self) -> Option<Instant> {
        self.unanswered.as_ref().map(|(_, since)| *since)
    }
}

/// How long a commit may stay unanswered before the writer gives up on its consumer: librdkafka
/// answers a commit it sent within `socket.timeout.ms`, and one waiting for a coordinator within
/// `session.timeout.ms`; one unanswered for twice both (at least three minutes) never will be,
/// and while it is not, no other commit may start (the gate above). The writer then stops with
/// a fatal error (exit 1), so that a restart brings a fresh consumer: nothing is lost, the
/// uncommitted events are read again.
pub(crate) fn commit_abandon(session_timeout_ms: u64, socket_timeout_ms: u64) -> Duration {
    Duration::from_millis(2 * (session_timeout_ms + socket_timeout_ms)).max(Duration::from_secs(180))
}

/// The group consumer, as the core sees it.
pub(crate) trait Broker {
    /// Commits the offsets and their metadata synchronously, all or nothing, waiting at most
    /// `wait` for the answer (no answer: an error, though the commit may still be applied).
    fn commit(&self, entries: &[CommitEntry<'_>], wait: Duration) -> Result<(), BrokerError>;
    /// The group's committed offset of each partition, in the order asked.
    fn committed(&self, partitions: &[TopicPartition], timeout: Duration) -> Result<Vec<Committed>, BrokerError>;
    /// The partition's (log start, end) offsets, waiting up to `timeout`: the loop asks with
    /// [`Broker::ask_watermarks`] instead, so that a broker that does not answer cannot hold it
    /// (only the broken rule `WatermarksOnLoop` waits here).
    fn watermarks(&self, topic: &str, partition: i32, timeout: Duration) -> Result<(i64, i64), BrokerError>;
    /// Asks for a partition's (log start, end) offsets off the loop; the answer comes back from
    /// [`Broker::watermarks_answered`] (an error after [`WATERMARKS_TIMEOUT`] at the latest).
    fn ask_watermarks(&self, topic: &str, partition: i32);
    /// The answers to [`Broker::ask_watermarks`] that arrived since the last call.
    fn watermarks_answered(&self) -> Vec<WatermarksAnswer>;
    /// Stops fetching every assigned partition.
    fn pause_all(&self) -> Result<(), BrokerError>;
    /// Fetches every assigned partition again.
    fn resume_all(&self) -> Result<(), BrokerError>;
    /// When the commit the broker has left unanswered was started, if one is.
    fn unanswered_since(&self) -> Option<Instant>;
}

/// Where sealed files go to be uploaded, and where their results come back.
pub(crate) trait UploadQueue: Send {
    /// Starts uploading a file; its result comes back from `next`/`next_within`.
    fn submit(&mut self, job: UploadJob);
    /// A finished upload, if one is ready now.
    fn next(&mut self) -> Option<UploadDone>;
    /// Waits up to `timeout` for a finished upload.
    fn next_within(&mut self, timeout: Duration) -> Option<UploadDone>;
}

/// Where completion marker jobs go, and where their results come back.
pub(crate) trait MarkerQueue: Send {
    /// Starts writing a marker; its result comes back from `next`.
    fn submit(&mut self, job: MarkerJob);
    /// A finished marker job, if one is ready now.
    fn next(&mut self) -> Option<MarkerDone>;
}

/// The real marker queue: jobs on the tokio runtime against the store, results over a channel.
pub(crate) struct ChannelMarkers {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) rt: tokio::runtime::Handle,
    pub(crate) tx: Sender<MarkerDone>,
    pub(crate) rx: Receiver<MarkerDone>,
    /// For the topic's partition count when a date's `_SUCCESS` is due.
    pub(crate) kafka: crate::config::KafkaConfig,
}

impl MarkerQueue for ChannelMarkers {
    fn submit(&mut self, job: MarkerJob) {
        let (store, tx, kafka) = (self.store.clone(), self.tx.clone(), self.kafka.clone());
        self.rt.spawn(async move {
            let now_ms = chrono::Utc::now().timestamp_millis();
            let mut result = crate::completion::write::state(store.as_ref(), &job, now_ms, crate::upload::put_mode()).await;
            if result.is_ok() && job.success_files {
                // A failure here fails the job, so it is tried again (the marker, already
                // stated, is not written twice): the last partition's owner must not miss it.
                if let Err(e) = success(store.as_ref(), &job, &kafka).await {
                    result = Err(e);
                }
            }
            let _ = tx.send(MarkerDone { job, result });
        });
    }

    fn next(&mut self) -> Option<MarkerDone> {
        self.rx.try_recv().ok()
    }
}

/// Time and randomness.
pub(crate) trait Clock: Send {
    /// Monotonic time, for ages, intervals and deadlines.
    fn now(&self) -> Instant;
    /// Wall-clock time in epoch milliseconds, for names and the retention gauge.
    fn wall_ms(&self) -> i64;
    /// Blocks the caller (a retry's pause).
    fn sleep(&self, d: Duration);
    /// Random bits, for the `{randomHex}` part of names.
    fn random(&self) -> u64;
}

/// The real upload queue: jobs on the tokio runtime, results over a channel.
pub(crate) struct ChannelUploads {
    pub(crate) uploader: Uploader,
    pub(crate) done: Receiver<UploadDone>,
}

impl UploadQueue for ChannelUploads {
    fn submit(&mut self, job: UploadJob) {
        self.uploader.submit(job);
    }

    fn next(&mut self) -> Option<UploadDone> {
        self.done.try_recv().ok()
    }

    fn next_within(&mut self, timeout: Duration) -> Option<UploadDone> {
        match self.done.recv_timeout(timeout) {
            Ok(done) => Some(done),
            Err(RecvTimeoutError::Timeout) => None,
            // The uploader holds a sender as long as the writer lives; wait out the timeout so
            // a caller's loop does not spin.
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(timeout);
                None
            }
        }
    }
}

/// The system's clocks and random numbers.
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }

    fn random(&self) -> u64 {
        rand::random()
    }
}

/// Writes the date's `_SUCCESS` if every partition of the topic (as Kafka counts them now) is
/// marked.
async fn success(store: &dyn ObjectStore, job: &MarkerJob, kafka: &crate::config::KafkaConfig) -> Result<(), crate::completion::write::WriteError> {
    let count = crate::consumer::lookup_partition_count(kafka, &job.topic_name)
        .await
        .map_err(|e| crate::completion::write::WriteError::Read {
            key: format!("the partition count of {}", job.topic_name),
            message: e.to_string(),
        })?
        .unwrap_or(0);
    if let Some(keys) = crate::completion::success::after_marker(store, job, count).await? {
        tracing::info!(topic = %job.topic_name, date = %job.date_str, files = ?keys, "every partition of the date is complete: _SUCCESS written");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;

    use super::BrokerError;

    #[test]
    fn a_broker_error_keeps_kafkas_error_code() {
        let e = BrokerError::from(KafkaError::ConsumerCommit(RDKafkaErrorCode::IllegalGeneration));
        assert_eq!(e.code, Some(RDKafkaErrorCode::IllegalGeneration));
        assert!(e.to_string().contains("IllegalGeneration"), "{e}");
        assert_eq!(BrokerError::new("an earlier commit is still unanswered by the broker").code, None);
    }
}
