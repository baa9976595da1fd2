//! The backup writer: the loop that drives consume → route → buffer → seal → upload → commit.
//!
//! One dedicated thread polls librdkafka and owns every buffer; uploads run on the tokio
//! runtime and report back over a channel. Rebalance callbacks run on the polling thread
//! inside `poll()`, so a revocation can seal, wait for the uploads and commit before the
//! partitions are given away — the only point at which doing so is safe.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use crate::buffer::{Buffer, BufferKey, RotationPolicy, SealReason};
use crate::commit::CommitTracker;
use crate::config::{Compression, Config, TopicConfig};
use crate::naming::{blob_key, FilePattern, NameContext, UploadClock};
use crate::routing::{DateSource, Router};
use crate::storage::Storage;
use crate::upload::{UploadDone, UploadJob, Uploader};

/// How `run` was asked to behave.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Read the end offsets at assignment, consume up to them, upload, commit and exit.
    pub until_caught_up: bool,
}

/// Totals reported when the writer exits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    pub events: u64,
    pub bytes_in: u64,
    pub files: u64,
    pub bytes_out: u64,
    /// Messages written to the invalid bucket (not JSON, not UTF-8, empty, or no usable time).
    pub invalid: u64,
    /// Messages dated by the Kafka record time because no field was usable.
    pub record_time_dated: u64,
    /// Messages whose raw newlines were written as spaces.
    pub newlines_replaced: u64,
    /// Files still not uploaded when the writer had to stop (their events will be re-read).
    pub abandoned_files: u64,
}

struct TopicRuntime {
    cfg: TopicConfig,
    router: Router,
    pattern: FilePattern,
    policy: RotationPolicy,
}

struct InFlight {
    topic: usize,
    partition: i32,
    first_offset: i64,
    last_offset: i64,
    events: u64,
    bytes: u64,
    key: String,
    reason: SealReason,
}

/// All writer state; lives behind a mutex shared with the rebalance callback.
struct Writer {
    topics: Vec<TopicRuntime>,
    topic_index: HashMap<String, usize>,
    buffers: HashMap<BufferKey, Buffer>,
    open_bytes: u64,
    inflight: HashMap<u64, InFlight>,
    inflight_bytes: u64,
    tracker: CommitTracker,
    owned: HashSet<(usize, i32)>,
    /// End offsets to reach, for `--until-caught-up`.
    targets: HashMap<(usize, i32), i64>,
    clock: UploadClock,
    uploader: Uploader,
    done_rx: Receiver<UploadDone>,
    next_id: u64,
    memory_limit: u64,
    commit_interval: Duration,
    revoke_timeout: Duration,
    last_commit: Instant,
    last_tick: Instant,
    paused: bool,
    ever_assigned: bool,
    opts: RunOptions,
    summary: RunSummary,
}

/// The consumer context: routes rebalance callbacks into the writer.
struct Ctx {
    writer: Arc<Mutex<Writer>>,
}

impl ClientContext for Ctx {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        // End of partition is information, not an error (it is handled in the poll loop).
        if matches!(error.rdkafka_error_code(), Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)) {
            return;
        }
        error!(error = %error, reason, "kafka client error");
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        match rebalance {
            Rebalance::Assign(tpl) => w.on_assign(consumer, tpl),
            Rebalance::Revoke(tpl) => w.on_revoke(consumer, tpl),
            Rebalance::Error(e) => error!(error = %e, "rebalance error"),
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            warn!(error = %e, "offset commit failed");
        }
    }
}

/// Runs the writer until `stop` is set (or, with `until_caught_up`, until caught up), then
/// seals, uploads and commits everything and leaves the group.
pub fn run(
    config: &Config,
    storage: &Storage,
    rt: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
    opts: RunOptions,
) -> anyhow::Result<RunSummary> {
    let mut topics = Vec::new();
    for (i, t) in config.topics.iter().enumerate() {
        let pattern = FilePattern::parse(&t.file_pattern)?;
        if !pattern.is_partition_filterable() {
            warn!(topic = %t.name, pattern = %t.file_pattern, "file_pattern has no -{{kafkaPartition}}- after the date; per-partition readers cannot filter these files");
        }
        topics.push(TopicRuntime {
            router: Router::new(t, i)?,
            pattern,
            policy: RotationPolicy { max_bytes: t.max_file_bytes, max_age: Duration::from_secs(t.max_file_age_secs) },
            cfg: t.clone(),
        });
    }
    let (done_tx, done_rx) = channel();
    let uploader = Uploader::new(storage.store.clone(), rt, config.writer.upload_concurrency, done_tx);
    let now = Instant::now();
    let writer = Arc::new(Mutex::new(Writer {
        topic_index: topics.iter().enumerate().map(|(i, t)| (t.cfg.name.clone(), i)).collect(),
        topics,
        buffers: HashMap::new(),
        open_bytes: 0,
        inflight: HashMap::new(),
        inflight_bytes: 0,
        tracker: CommitTracker::default(),
        owned: HashSet::new(),
        targets: HashMap::new(),
        clock: UploadClock::default(),
        uploader,
        done_rx,
        next_id: 0,
        memory_limit: config.writer.memory_limit_bytes,
        commit_interval: Duration::from_millis(config.writer.commit_interval_ms),
        revoke_timeout: Duration::from_secs(config.writer.revoke_timeout_secs),
        last_commit: now,
        last_tick: now,
        paused: false,
        ever_assigned: false,
        opts,
        summary: RunSummary::default(),
    }));

    let consumer: BaseConsumer<Ctx> = crate::consumer::group_config(&config.kafka)
        .create_with_context(Ctx { writer: writer.clone() })?;
    let names: Vec<&str> = config.topics.iter().map(|t| t.name.as_str()).collect();
    consumer.subscribe(&names)?;
    info!(group = %config.kafka.group_id, topics = ?names, storage = %storage.describe, "writer started");

    loop {
        let msg = consumer.poll(Duration::from_millis(100));
        let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
        match msg {
            Some(Ok(m)) => w.on_message(&m),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => w.on_partition_eof(&consumer, p),
            Some(Err(e)) => warn!(error = %e, "kafka error"),
            None => {}
        }
        w.housekeeping(&consumer);
        if stop.load(Ordering::Relaxed) {
            info!("stopping: sealing and uploading every open file");
            break;
        }
        if w.opts.until_caught_up && w.caught_up() {
            info!("caught up with the end offsets read at assignment");
            break;
        }
    }

    let deadline = Instant::now() + Duration::from_secs(config.writer.shutdown_timeout_secs);
    let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
    w.finish(&consumer, deadline);
    let summary = w.summary.clone();
    drop(w);
    // Leaving the group fires a final revoke; every buffer is already sealed and committed.
    consumer.unsubscribe();
    drop(consumer);
    info!(?summary, "writer stopped");
    if summary.abandoned_files > 0 {
        anyhow::bail!(
            "{} file(s) were not uploaded before the shutdown timeout; their events were not committed and will be read again",
            summary.abandoned_files
        );
    }
    Ok(summary)
}

impl Writer {
    fn on_message(&mut self, m: &BorrowedMessage<'_>) {
        let Some(&t) = self.topic_index.get(m.topic()) else {
            error!(topic = m.topic(), "message from a topic that is not configured");
            return;
        };
        let (p, off) = (m.partition(), m.offset());
        if !self.owned.contains(&(t, p)) {
            // librdkafka purges a partition's queue when it is unassigned, so this should not
            // happen; the message is not committed, so its owner will back it up.
            warn!(topic = m.topic(), partition = p, offset = off, "message for a partition not owned; skipped (not committed)");
            return;
        }
        if self.tracker.get(t, p).is_none() {
            // No committed offset was known at assignment: tracking starts at the first message.
            self.tracker.assign(t, p, off);
        }
        let topic = &self.topics[t];
        let route = topic.router.route(m.payload(), m.timestamp().to_millis());
        match route.source {
            DateSource::Invalid(reason) => {
                self.summary.invalid += 1;
                debug!(topic = m.topic(), partition = p, offset = off, reason = reason.as_str(), "invalid message");
            }
            DateSource::RecordTime => self.summary.record_time_dated += 1,
            DateSource::Field(_) => {}
        }
        let key = BufferKey { topic: t, partition: p, prefix: route.prefix, date: route.date, error: route.to_error_path };
        let now = Instant::now();
        let track = self.tracker.get_mut(t, p).expect("tracked above");
        let buf = self.buffers.entry(key.clone()).or_insert_with(|| {
            track.hold(off);
            Buffer::new(off, now)
        });
        let before = buf.len();
        let payload = m.payload().unwrap_or_default();
        if buf.append(off, payload) {
            self.summary.newlines_replaced += 1;
        }
        track.consumed(off);
        self.open_bytes += buf.len() - before;
        self.summary.events += 1;
        self.summary.bytes_in += payload.len() as u64;
        if topic.policy.due(buf, now) == Some(SealReason::Size) {
            self.seal(&key, SealReason::Size);
        }
        if self.open_bytes + self.inflight_bytes > self.memory_limit {
            self.seal_largest();
        }
    }

    fn on_partition_eof(&self, consumer: &BaseConsumer<Ctx>, partition: i32) {
        // librdkafka's EOF event carries only the partition number; report positions of every
        // owned partition with that number (topics are few).
        if let Ok(pos) = consumer.position() {
            for e in pos.elements().iter().filter(|e| e.partition() == partition) {
                if let Offset::Offset(o) = e.offset() {
                    debug!(topic = e.topic(), "reached the end of partition {partition} at offset {o}");
                }
            }
        }
    }

    /// Seals the largest open buffer so its bytes move on to storage.
    fn seal_largest(&mut self) {
        if let Some(key) = self.buffers.iter().max_by_key(|(_, b)| b.len()).map(|(k, _)| k.clone()) {
            self.seal(&key, SealReason::Memory);
        }
    }

    fn seal(&mut self, key: &BufferKey, reason: SealReason) {
        let Some(buf) = self.buffers.remove(key) else { return };
        self.open_bytes -= buf.len();
        let topic = &self.topics[key.topic];
        let now_ms = chrono::Utc::now().timestamp_millis();
        let name = topic.pattern.render(&NameContext {
            date: &key.date,
            kafka_partition: key.partition,
            current_ms: self.clock.next(now_ms),
            topic: &topic.cfg.name,
            generation: topic.cfg.generation,
            first_offset: buf.first_offset,
            random: rand::random(),
        });
        let base = if key.error { topic.cfg.error_path.as_deref().unwrap_or(&topic.cfg.path) } else { &topic.cfg.path };
        let blob = blob_key(base, key.prefix.as_deref(), &name, topic.cfg.compression.extension());
        let id = self.next_id;
        self.next_id += 1;
        self.inflight_bytes += buf.len();
        self.inflight.insert(
            id,
            InFlight {
                topic: key.topic,
                partition: key.partition,
                first_offset: buf.first_offset,
                last_offset: buf.last_offset,
                events: buf.events,
                bytes: buf.len(),
                key: blob.clone(),
                reason,
            },
        );
        let level = if topic.cfg.compression == Compression::Gzip { topic.cfg.compression_level } else { 0 };
        self.uploader.submit(UploadJob { id, key: blob, data: buf.data, compression: topic.cfg.compression, level });
    }

    fn on_uploaded(&mut self, done: UploadDone) {
        let Some(f) = self.inflight.remove(&done.id) else { return };
        self.inflight_bytes -= f.bytes;
        self.summary.files += 1;
        self.summary.bytes_out += done.stored_bytes;
        info!(
            key = %f.key,
            events = f.events,
            bytes = f.bytes,
            stored_bytes = done.stored_bytes,
            first_offset = f.first_offset,
            last_offset = f.last_offset,
            partition = f.partition,
            reason = f.reason.as_str(),
            attempts = done.attempts,
            ms = done.elapsed.as_millis() as u64,
            "uploaded"
        );
        match self.tracker.get_mut(f.topic, f.partition) {
            Some(track) => track.release(f.first_offset),
            // The partition was revoked or lost while this upload ran; its new owner re-reads
            // these events from the last commit.
            None => warn!(key = %f.key, "upload finished after its partition was given up"),
        }
    }

    fn drain_uploads(&mut self) {
        while let Ok(done) = self.done_rx.try_recv() {
            self.on_uploaded(done);
        }
    }

    /// Waits for uploads until `pred` holds or `deadline` passes; returns whether it holds.
    fn wait_uploads(&mut self, deadline: Instant, pred: impl Fn(&Writer) -> bool) -> bool {
        loop {
            self.drain_uploads();
            if pred(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.done_rx.recv_timeout(left.min(Duration::from_secs(5))) {
                Ok(done) => self.on_uploaded(done),
                Err(RecvTimeoutError::Timeout) => {
                    let n = self.inflight.len();
                    info!(files = n, "waiting for uploads");
                }
                Err(RecvTimeoutError::Disconnected) => return pred(self),
            }
        }
    }

    /// Periodic work: finished uploads, file age, memory pressure, commits.
    fn housekeeping(&mut self, consumer: &BaseConsumer<Ctx>) {
        self.drain_uploads();
        let now = Instant::now();
        if now.duration_since(self.last_tick) >= Duration::from_millis(500) {
            self.last_tick = now;
            let due: Vec<BufferKey> = self
                .buffers
                .iter()
                .filter(|(k, b)| self.topics[k.topic].policy.due(b, now).is_some())
                .map(|(k, _)| k.clone())
                .collect();
            for k in due {
                self.seal(&k, SealReason::Age);
            }
            self.apply_backpressure(consumer);
        }
        if now.duration_since(self.last_commit) >= self.commit_interval {
            self.commit(consumer, None);
        }
    }

    /// Pauses consumption while uploads hold most of the budget; resumes below half of it.
    fn apply_backpressure(&mut self, consumer: &BaseConsumer<Ctx>) {
        let high = self.memory_limit / 4 * 3;
        let low = self.memory_limit / 2;
        let want_pause = if self.paused { self.inflight_bytes > low } else { self.inflight_bytes >= high };
        let Ok(assignment) = consumer.assignment() else { return };
        if want_pause {
            // Re-applied every tick so partitions assigned meanwhile are paused too.
            if let Err(e) = consumer.pause(&assignment) {
                warn!(error = %e, "pausing partitions failed");
            }
            if !self.paused {
                warn!(inflight_bytes = self.inflight_bytes, files = self.inflight.len(), "uploads are behind: consumption paused");
            }
            self.paused = true;
        } else if self.paused {
            if let Err(e) = consumer.resume(&assignment) {
                warn!(error = %e, "resuming partitions failed");
            }
            info!("uploads caught up: consumption resumed");
            self.paused = false;
        }
    }

    /// Commits every partition whose safe offset moved (only `only` if given), synchronously.
    fn commit(&mut self, consumer: &BaseConsumer<Ctx>, only: Option<&HashSet<(usize, i32)>>) {
        self.last_commit = Instant::now();
        let due: Vec<_> = self
            .tracker
            .due()
            .into_iter()
            .filter(|(t, p, _)| only.is_none_or(|s| s.contains(&(*t, *p))))
            .collect();
        if due.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (t, p, o) in &due {
            if let Err(e) = tpl.add_partition_offset(&self.topics[*t].cfg.name, *p, Offset::Offset(*o)) {
                error!(error = %e, "building the commit list failed");
                return;
            }
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                for (t, p, o) in due {
                    debug!(topic = %self.topics[t].cfg.name, partition = p, offset = o, "committed");
                    if let Some(track) = self.tracker.get_mut(t, p) {
                        track.committed(o);
                    }
                }
            }
            // Not fatal: the offsets stay due and the next commit carries them.
            Err(e) => warn!(error = %e, "offset commit failed; will retry"),
        }
    }

    fn on_assign(&mut self, consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) {
        self.ever_assigned = true;
        let committed = consumer.committed_offsets(tpl.clone(), Duration::from_secs(30));
        for e in tpl.elements() {
            let Some(&t) = self.topic_index.get(e.topic()) else { continue };
            let p = e.partition();
            self.owned.insert((t, p));
            let start = committed
                .as_ref()
                .ok()
                .and_then(|c| c.find_partition(e.topic(), p))
                .and_then(|c| match c.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            if let Some(s) = start {
                self.tracker.assign(t, p, s);
            }
            if self.opts.until_caught_up {
                match consumer.fetch_watermarks(e.topic(), p, Duration::from_secs(30)) {
                    Ok((low, high)) => {
                        // With no commit, consumption starts at the low watermark (earliest).
                        if start.unwrap_or(low).max(low) >= high {
                            self.targets.insert((t, p), i64::MIN);
                        } else {
                            self.targets.insert((t, p), high);
                        }
                    }
                    Err(err) => error!(topic = e.topic(), partition = p, error = %err, "reading end offsets failed"),
                }
            }
            info!(topic = e.topic(), partition = p, committed = ?start, "partition assigned");
        }
        if let Err(e) = committed {
            warn!(error = %e, "reading committed offsets failed; tracking starts at the first message");
        }
    }

    fn on_revoke(&mut self, consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) {
        let lost = consumer.assignment_lost();
        let parts: HashSet<(usize, i32)> = tpl
            .elements()
            .iter()
            .filter_map(|e| Some((*self.topic_index.get(e.topic())?, e.partition())))
            .collect();
        let keys: Vec<BufferKey> = self.buffers.keys().filter(|k| parts.contains(&(k.topic, k.partition))).cloned().collect();
        if lost {
            // Another member may already own these partitions: uploading or committing now
            // could only duplicate its work. Everything uncommitted is re-read by the new owner.
            let mut dropped = 0;
            for k in keys {
                if let Some(b) = self.buffers.remove(&k) {
                    self.open_bytes -= b.len();
                    dropped += b.events;
                }
            }
            warn!(partitions = parts.len(), dropped_events = dropped, "partitions lost (session timeout?); uncommitted events will be re-read by their new owner");
        } else {
            for k in &keys {
                self.seal(k, SealReason::Revoke);
            }
            let deadline = Instant::now() + self.revoke_timeout;
            let done = self.wait_uploads(deadline, |w| {
                !w.inflight.values().any(|f| parts.contains(&(f.topic, f.partition)))
            });
            if !done {
                warn!("revoke timeout: some uploads of revoked partitions are still running; their events stay uncommitted");
            }
            self.commit(consumer, Some(&parts));
        }
        for &(t, p) in &parts {
            self.tracker.revoke(t, p);
            self.owned.remove(&(t, p));
            self.targets.remove(&(t, p));
            info!(topic = %self.topics[t].cfg.name, partition = p, lost, "partition revoked");
        }
    }

    /// True once every owned partition reached its end offset and everything is committed.
    fn caught_up(&self) -> bool {
        if !self.ever_assigned || self.owned.is_empty() {
            return false;
        }
        self.owned.iter().all(|&(t, p)| match self.targets.get(&(t, p)) {
            Some(&target) => self.tracker.get(t, p).is_some_and(|o| o.position() >= target) || target == i64::MIN,
            None => false,
        })
    }

    /// Seals everything, waits for the uploads until `deadline`, and commits.
    fn finish(&mut self, consumer: &BaseConsumer<Ctx>, deadline: Instant) {
        let keys: Vec<BufferKey> = self.buffers.keys().cloned().collect();
        for k in &keys {
            self.seal(k, SealReason::Shutdown);
        }
        if !self.wait_uploads(deadline, |w| w.inflight.is_empty()) {
            self.summary.abandoned_files = self.inflight.len() as u64;
            error!(files = self.inflight.len(), "shutdown timeout: some files were not uploaded");
        }
        self.commit(consumer, None);
    }
}
