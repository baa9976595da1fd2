//! The writer's state machine: what it holds, and how it is built.
//!
//! Its inputs are method calls — `on_message`, `on_assign`, `on_revoke`, `on_uploaded` (through
//! the upload queue), `housekeeping` and `finish` — and its only ways out are the [`Broker`],
//! the [`UploadQueue`] and the [`Clock`]. The same code runs against librdkafka and the object
//! store in production and against a seeded world in the simulation (`sim/`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap as HashMap;
use tracing::warn;

use super::budget::Budget;
use super::decision::Fatal;
use super::files::Files;
use super::partition::{PartKey, Partition};
use super::ports::{Clock, UploadQueue};
use super::{RunOptions, RunSummary};
use crate::buffer::RotationPolicy;
use crate::config::{Config, TopicConfig};
use crate::health::Health;
use crate::metrics as m;
use crate::naming::{FileLayout, UploadClock};
use crate::upload::{Existing, UploadJob};

pub(super) struct TopicRuntime {
    pub(super) cfg: TopicConfig,
    pub(super) layout: FileLayout,
    /// The topic's `retention.ms`, when finite and known.
    pub(super) retention_ms: Option<i64>,
    pub(super) policy: RotationPolicy,
    pub(super) events: metrics::Counter,
    pub(super) bytes: metrics::Counter,
    /// Per timestamp field: messages whose string there the pattern could not read.
    pub(super) unparsed: Vec<u64>,
}

impl TopicRuntime {
    /// The upload of one of the topic's files, compressed as the topic says. The one place a
    /// job is made: new files once their intent is recorded, rebuilt files once complete.
    pub(super) fn upload_job(&self, id: u64, key: &str, data: crate::buffer::Memory, existing: Existing) -> UploadJob {
        UploadJob {
            id,
            key: key.to_string(),
            topic: self.cfg.name.clone(),
            data,
            compression: self.cfg.compression,
            level: self.cfg.compression_level,
            existing,
        }
    }
}

/// All writer state; lives behind a mutex shared with the rebalance callback.
pub(crate) struct Writer {
    pub(super) topics: Vec<TopicRuntime>,
    pub(super) topic_index: HashMap<String, usize>,
    /// Open files, files in flight, and the byte ledger over both.
    pub(super) files: Files,
    /// Every owned partition.
    pub(super) parts: HashMap<PartKey, Partition>,
    pub(super) next_epoch: u64,
    /// Keeps `{currentTimestamp}` strictly increasing within this process.
    pub(super) name_clock: UploadClock,
    pub(super) uploads: Box<dyn UploadQueue>,
    pub(super) clock: Box<dyn Clock>,
    pub(super) budget: Budget,
    pub(super) metadata_limit: usize,
    pub(super) commit_interval: Duration,
    pub(super) revoke_timeout: Duration,
    pub(super) last_commit: Instant,
    pub(super) last_tick: Instant,
    pub(super) intent_retry_at: Instant,
    pub(super) paused: bool,
    pub(super) ever_assigned: bool,
    /// Until the first assignment: when the writer last said it is still waiting for one.
    pub(super) assignment_wait_said: Instant,
    /// The group's `session.timeout.ms`, for that message.
    pub(super) session_timeout_ms: String,
    /// When the first message arrived (for the drain rate of `--until-caught-up`).
    pub(super) first_message_at: Option<Instant>,
    /// Set when the writer cannot go on safely (e.g. committed offsets unreadable).
    pub(super) fatal: Option<Fatal>,
    /// `auto.offset.reset` points at the end: an out-of-range commit skips the retained rest.
    pub(super) offset_reset_to_end: bool,
    /// The config names Secor's ZooKeeper: a commit kbackup did not write is never resumed from
    /// (`run` checks at start; this catches partitions that appear later).
    pub(super) refuse_foreign_commits: bool,
    pub(super) health: Arc<Health>,
    pub(super) opts: RunOptions,
    pub(super) summary: RunSummary,
    /// The current message's record envelope, for `format = "record"` topics (reused).
    pub(super) scratch: Vec<u8>,
    /// Set when a graceful stop begins: every later wait (a revocation's included) ends by it.
    pub(super) stop_deadline: Option<Instant>,
}

impl Writer {
    /// A writer for `config`'s topics whose buffers and uploads may hold `buffer_budget` bytes.
    pub(crate) fn new(
        config: &Config,
        buffer_budget: u64,
        uploads: Box<dyn UploadQueue>,
        clock: Box<dyn Clock>,
        health: Arc<Health>,
        opts: RunOptions,
    ) -> Result<Writer, crate::naming::LayoutError> {
        // Before the first event: alerts on `increase(...)` must see the first increment.
        crate::metrics::zero_counters(&config.topics);
        let mut topics = Vec::new();
        for t in &config.topics {
            let layout = t.layout()?;
            if !layout.pattern().is_partition_filterable() {
                warn!(topic = %t.name, pattern = %t.file_pattern, "file_pattern has no -{{kafkaPartition}}- after the date; Sunbird's per-partition fetcher cannot select these files (kbackup's tools can)");
            }
            topics.push(TopicRuntime {
                events: metrics::counter!(m::EVENTS_CONSUMED, "topic" => t.name.clone()),
                bytes: metrics::counter!(m::BYTES_CONSUMED, "topic" => t.name.clone()),
                layout,
                unparsed: vec![0; t.timestamp_fields.len()],
                retention_ms: opts.retention_ms.get(&t.name).copied(),
                policy: RotationPolicy { max_bytes: t.max_file_bytes, max_age: Duration::from_secs(t.max_file_age_secs) },
                cfg: t.clone(),
            });
        }
        let now = clock.now();
        Ok(Writer {
            topic_index: config.topics.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect(),
            topics,
            files: Files::default(),
            parts: HashMap::default(),
            next_epoch: 1,
            name_clock: UploadClock::default(),
            uploads,
            clock,
            budget: Budget { limit: buffer_budget },
            metadata_limit: config.writer.commit_metadata_limit,
            commit_interval: Duration::from_millis(config.writer.commit_interval_ms),
            revoke_timeout: Duration::from_secs(config.writer.revoke_timeout_secs),
            last_commit: now,
            // The first loop iteration ticks at once (liveness, ages).
            last_tick: now.checked_sub(Duration::from_secs(1)).unwrap_or(now),
            intent_retry_at: now,
            paused: false,
            ever_assigned: false,
            assignment_wait_said: now,
            session_timeout_ms: crate::consumer::group_config(&config.kafka).get("session.timeout.ms").unwrap_or("45000").to_string(),
            first_message_at: None,
            fatal: None,
            offset_reset_to_end: crate::consumer::resets_to_end(&config.kafka),
            refuse_foreign_commits: config.secor.is_some(),
            health,
            opts,
            summary: RunSummary::default(),
            scratch: Vec::new(),
            stop_deadline: None,
        })
    }

    /// Why the writer cannot go on, once it cannot.
    pub(crate) fn fatal(&self) -> Option<&Fatal> {
        self.fatal.as_ref()
    }

    /// The core's clock: what messages are stamped with and deadlines measured on.
    pub(crate) fn now(&self) -> Instant {
        self.clock.now()
    }

    /// The totals so far.
    pub(crate) fn summary(&self) -> &RunSummary {
        &self.summary
    }

    /// Starts a graceful stop that must end by `deadline`.
    pub(crate) fn begin_stop(&mut self, deadline: Instant) {
        self.stop_deadline = Some(deadline);
    }

    /// True when the byte ledger matches the files it counts (the simulation checks it after
    /// every step; `housekeeping` asserts it in debug builds).
    #[cfg(test)]
    pub(crate) fn books_balance(&self) -> bool {
        self.files.books_balance()
    }
}
