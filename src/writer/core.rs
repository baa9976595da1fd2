//! The writer's state machine: what it holds, and how it is built.
//!
//! Its inputs are method calls — `apply_batch`, `on_assign`, `on_revoke`, `on_uploaded` (through
//! the upload queue), `housekeeping` and `finish` — and its only ways out are the [`Broker`],
//! the [`UploadQueue`] and the [`Clock`]. The same code runs against librdkafka and the object
//! store in production and against a seeded world in the simulation (`sim/`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap as HashMap;

use self::budget::Budget;
use self::cadence::Cadence;
use self::files::Files;
use self::partition::{PartKey, Partition};
use self::stop::Stop;
use self::topics::Topics;
use super::{RunOptions, RunSummary};
use crate::config::Config;
use crate::health::Health;
use crate::naming::UploadClock;
use crate::writer::ports::{Clock, MarkerQueue, UploadQueue};

mod budget;
mod cadence;
mod commits;
mod completion;
mod decision;
mod files;
mod housekeeping;
mod marking;
mod message;
mod partition;
mod rebalance;
mod stall;
mod stop;
mod topics;
mod uploads;

#[cfg(test)]
pub(crate) use self::completion::MARKERS_WAIT;
pub use self::decision::Fatal;
pub(crate) use self::decision::Next;
#[cfg(test)]
pub(crate) use self::decision::StopReason;
pub(crate) use self::message::Routed;

/// The writer's settings, read from the config at start.
struct Settings {
    /// The most bytes of intent metadata one commit may carry.
    metadata_limit: usize,
    revoke_timeout: Duration,
    /// The group's `session.timeout.ms`, for the message while waiting for an assignment.
    session_timeout_ms: String,
    /// How long a commit may stay unanswered before the writer gives up (ports::commit_abandon).
    commit_abandon: Duration,
    /// `auto.offset.reset` points at the end: an out-of-range commit skips the retained rest.
    offset_reset_to_end: bool,
    /// The config names Secor's ZooKeeper: a commit kbackup did not write is never resumed from
    /// (`run` checks at start; this catches partitions that appear later).
    refuse_foreign_commits: bool,
}

/// All writer state; lives behind a mutex shared with the rebalance callback.
pub(crate) struct Writer {
    /// The configured topics, parsed once: names, layouts, dates, rotation, counters.
    topics: Topics,
    /// Open files, files in flight, and the byte ledger over both.
    files: Files,
    /// Every owned partition.
    parts: HashMap<PartKey, Partition>,
    next_epoch: u64,
    /// Keeps `{currentTimestamp}` strictly increasing within this process.
    name_clock: UploadClock,
    uploads: Box<dyn UploadQueue>,
    markers: Box<dyn MarkerQueue>,
    clock: Box<dyn Clock>,
    budget: Budget,
    /// What the config fixed at start; never changes.
    settings: Settings,
    /// When periodic work, commits and retries are due.
    cadence: Cadence,
    paused: bool,
    ever_assigned: bool,
    /// When the first message arrived (for the drain rate of `--until-caught-up`).
    first_message_at: Option<Instant>,
    /// The stop's deadline, whether the run caught up, and why it cannot go on.
    stop: Stop,
    health: Arc<Health>,
    opts: RunOptions,
    summary: RunSummary,
    /// The current message's record envelope, for `format = "record"` topics (reused).
    scratch: Vec<u8>,
    /// Behave as the release before record dating (the simulation's rolling upgrade).
    #[cfg(test)]
    before_record_dating: bool,
}

/// Why a writer could not be built from its config (validation catches both first; a config
/// that reaches here unvalidated fails loudly instead of defaulting).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    #[error(transparent)]
    Layout(#[from] crate::naming::LayoutError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

impl Writer {
    /// A writer for `config`'s topics whose buffers and uploads may hold `buffer_budget` bytes.
    pub(crate) fn new(
        config: &Config,
        buffer_budget: u64,
        uploads: Box<dyn UploadQueue>,
        markers: Box<dyn MarkerQueue>,
        clock: Box<dyn Clock>,
        health: Arc<Health>,
        opts: RunOptions,
    ) -> Result<Writer, SetupError> {
        // Before the first event: alerts on `increase(...)` must see the first increment.
        crate::metrics::zero_counters(&config.topics);
        let topics = Topics::new(config, &opts.retention_ms)?;
        let now = clock.now();
        Ok(Writer {
            topics,
            files: Files::default(),
            parts: HashMap::default(),
            next_epoch: 1,
            name_clock: UploadClock::default(),
            uploads,
            markers,
            clock,
            budget: Budget::new(buffer_budget),
            settings: Settings {
                metadata_limit: config.writer.commit_metadata_limit,
                revoke_timeout: Duration::from_secs(config.writer.revoke_timeout_secs),
                session_timeout_ms: crate::consumer::group_config(&config.kafka).get("session.timeout.ms").unwrap_or("45000").to_string(),
                commit_abandon: {
                    let group = crate::consumer::group_config(&config.kafka);
                    let ms = |key: &str, default: u64| group.get(key).and_then(|v| v.parse().ok()).unwrap_or(default);
                    crate::writer::ports::commit_abandon(ms("session.timeout.ms", 45_000), ms("socket.timeout.ms", 60_000))
                },
                offset_reset_to_end: crate::consumer::resets_to_end(&config.kafka),
                refuse_foreign_commits: config.secor.is_some(),
            },
            cadence: Cadence::new(now, Duration::from_millis(config.writer.commit_interval_ms)),
            paused: false,
            ever_assigned: false,
            first_message_at: None,
            stop: Stop::new(Duration::from_secs(config.writer.shutdown_timeout_secs)),
            health,
            opts,
            summary: RunSummary::default(),
            scratch: Vec::new(),
            #[cfg(test)]
            before_record_dating: false,
        })
    }

    /// True if topic `t`'s intents say their files were filled by the rule that dates records
    /// without an event time by their record time (record-format topics).
    fn dates_records_by_record_time(&self, t: usize) -> bool {
        #[cfg(test)]
        if self.before_record_dating {
            return false;
        }
        self.topics[t].cfg().format == crate::config::Format::Record
    }

    /// Why the writer cannot go on, once it cannot.
    pub(crate) fn fatal(&self) -> Option<&Fatal> {
        self.stop.fatal()
    }

    /// The totals so far.
    pub(crate) fn summary(&self) -> &RunSummary {
        &self.summary
    }

    /// Starts a graceful stop that must end by `deadline`.
    pub(crate) fn begin_stop(&mut self, deadline: Instant) {
        self.stop.begin(deadline);
    }

    /// Hears the process's stop request: waits under way end by the stop's deadline.
    pub(crate) fn listen(&mut self, signal: Arc<crate::writer::StopRequest>) {
        self.stop.listen(signal);
    }

    /// By when the writer must have stopped: the deadline of a stop begun, or of one asked for.
    fn deadline(&self) -> Option<Instant> {
        self.stop.deadline(self.clock.now())
    }

    /// How long a broker call may wait now: `own`, or less before a stop's deadline.
    fn call_wait(&self, own: Duration) -> Duration {
        self.stop.call_wait(self.clock.now(), own)
    }

    /// True when the byte ledger matches the files it counts (the simulation checks it after
    /// every step; `housekeeping` asserts it in debug builds).
    #[cfg(test)]
    pub(crate) fn books_balance(&self) -> bool {
        self.files.books_balance()
    }

    /// Bytes in open files, bytes in files being uploaded, and the budget over both (for the
    /// simulation's budget invariants).
    #[cfg(test)]
    pub(crate) fn memory(&self) -> (u64, u64, u64) {
        (self.files.open_bytes(), self.files.inflight_bytes(), self.budget.limit())
    }

    /// Records intents as the release before record dating did (no `record_dated`); its
    /// routing is the caller's ([`crate::routing::Router::before_record_dating`]).
    #[cfg(test)]
    pub(crate) fn act_as_release_before_record_dating(&mut self) {
        self.before_record_dating = true;
    }

    /// Writes no completion markers (the simulation's release before markers).
    #[cfg(test)]
    pub(crate) fn act_as_release_before_markers(&mut self) {
        self.topics.stop_marking();
    }

    /// True while the core holds consumption paused.
    #[cfg(test)]
    pub(crate) fn paused(&self) -> bool {
        self.paused
    }
}
