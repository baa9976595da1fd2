//! The backup writer: the loop that drives consume → route → buffer → seal → upload → commit.
//!
//! One dedicated thread polls librdkafka and owns every buffer; uploads run on the tokio
//! runtime and report back over a channel. Rebalance callbacks run on the polling thread
//! inside `poll()`, so a revocation can seal, wait for the uploads and commit before the
//! partitions are given away — the only point at which doing so is safe.
//!
//! Messages are taken in batches that move through a three-stage pipeline: while one helper
//! thread routes batch k (JSON scan and date, the costliest step per message), the polling
//! thread appends batch k-1 under one lock and then polls batch k+1. A message polled before a
//! rebalance that revoked its partition is dropped when its batch is applied (it was never
//! tracked, so it is not committed and is re-read); see docs/exactly-once.md.
//!
//! Exactly once (see `docs/exactly-once.md` and [`crate::intent`]): a sealed file is uploaded
//! only after its name, route and offset range are committed as metadata with the partition's
//! offset; on assignment those records decide which re-read messages are skipped and which
//! files are rebuilt under their recorded names.

use std::collections::HashSet;

// The per-message maps are keyed by small values; FxHash costs a fraction of SipHash there
// (SipHash showed up at ~2.5% of a drain's CPU profile). No key is attacker-controlled.
use rustc_hash::FxHashMap as HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use crate::buffer::{Buffer, BufferKey, RotationPolicy, SealReason};
use crate::commit::CommitTracker;
use crate::config::{Compression, Config, Format, TopicConfig};
use crate::failpoint;
use crate::health::Health;
use crate::intent::{self, Action, Intent, IntentLog, RecoveryPlan};
use crate::metrics as m;
use crate::naming::{FileLayout, NameContext, UploadClock};
use crate::routing::{DateSource, Route, Router};
use crate::storage::Storage;
use crate::upload::{Existing, Outcome, UploadDone, UploadJob, Uploader};

/// How `run` was asked to behave.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Read the end offsets at assignment, consume up to them, upload, commit and exit.
    pub until_caught_up: bool,
    /// `retention.ms` per topic (finite ones), for the retention headroom gauge.
    pub retention_ms: std::collections::HashMap<String, i64>,
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
    /// Re-read messages skipped because an uploaded file already holds them.
    pub skipped_already_stored: u64,
    /// Files rebuilt under a name recorded by an earlier run.
    pub rebuilt_files: u64,
    /// Uploads that found their blob already there with the same events.
    pub already_there: u64,
    /// Files still not uploaded when the writer had to stop (their events will be re-read).
    pub abandoned_files: u64,
    /// Messages polled before a rebalance revoked their partition, left for its next owner.
    pub stale_dropped: u64,
    /// Offsets Kafka deleted before they were backed up (the group's commit was below the log
    /// start at assignment).
    pub lost_offsets: u64,
}

struct TopicRuntime {
    cfg: TopicConfig,
    layout: FileLayout,
    /// The topic's `retention.ms`, when finite and known.
    retention_ms: Option<i64>,
    policy: RotationPolicy,
    events: metrics::Counter,
    bytes: metrics::Counter,
}

/// A sealed file from seal to upload.
struct InFlight {
    topic: usize,
    partition: i32,
    /// The assignment it belongs to; results for an older assignment are ignored.
    epoch: u64,
    intent: Arc<Intent>,
    events: u64,
    /// Uncompressed size of the file.
    bytes: u64,
    /// Memory it holds until uploaded (counted in `inflight_bytes`).
    charged: u64,
    reason: SealReason,
    /// Present until the upload is submitted (the file awaits its intent record).
    data: Option<crate::buffer::Memory>,
    /// Record time of its first message (for the retention headroom gauge).
    first_record_ms: Option<i64>,
    existing: Existing,
}

/// Per owned partition: its recovery plan, rebuilt files, and the intents its commits carry.
#[derive(Default)]
struct PartState {
    epoch: u64,
    /// The rebalance generation that assigned it; messages polled before are stale.
    assigned_gen: u64,
    intents: IntentLog,
    plan: RecoveryPlan,
    /// Files being rebuilt, by index in `plan.rebuild`.
    pinned: HashMap<usize, Buffer>,
    /// Rebuild indices already sealed.
    rebuilt: HashSet<usize>,
}

/// All writer state; lives behind a mutex shared with the rebalance callback.
struct Writer {
    topics: Vec<TopicRuntime>,
    topic_index: HashMap<String, usize>,
    buffers: HashMap<BufferKey, Buffer>,
    open_bytes: u64,
    inflight: HashMap<u64, InFlight>,
    inflight_bytes: u64,
    /// Sealed files waiting for their intent to be committed, in seal order.
    awaiting: Vec<u64>,
    tracker: CommitTracker,
    parts: HashMap<(usize, i32), PartState>,
    next_epoch: u64,
    /// End offsets to reach, for `--until-caught-up`.
    targets: HashMap<(usize, i32), i64>,
    clock: UploadClock,
    uploader: Uploader,
    done_rx: Receiver<UploadDone>,
    next_id: u64,
    memory_limit: u64,
    metadata_limit: usize,
    commit_interval: Duration,
    revoke_timeout: Duration,
    last_commit: Instant,
    last_tick: Instant,
    intent_retry_at: Instant,
    paused: bool,
    ever_assigned: bool,
    /// When the first message arrived (for the drain rate of `--until-caught-up`).
    first_message_at: Option<Instant>,
    /// Set when the writer cannot go on safely (e.g. committed offsets unreadable).
    fatal: Option<String>,
    /// `auto.offset.reset` points at the end: an out-of-range commit skips the retained rest.
    offset_reset_to_end: bool,
    health: Arc<Health>,
    opts: RunOptions,
    summary: RunSummary,
    /// The current message's record envelope, for `format = "record"` topics (reused).
    scratch: Vec<u8>,
    /// Set when a graceful stop begins: every later wait (a revocation's included) ends by it.
    stop_deadline: Option<Instant>,
}

/// The consumer context: routes rebalance callbacks into the writer.
struct Ctx {
    writer: Arc<Mutex<Writer>>,
    health: Arc<Health>,
    /// Counts rebalance callbacks; every polled message is stamped with it.
    generation: Arc<AtomicU64>,
}

impl ClientContext for Ctx {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode;
        match error.rdkafka_error_code() {
            // End of partition is information, not an error (it is handled in the poll loop).
            Some(RDKafkaErrorCode::PartitionEOF) => return,
            Some(RDKafkaErrorCode::AllBrokersDown) => self.health.brokers_down(),
            _ => {}
        }
        error!(error = %error, reason, "kafka client error");
    }

    fn stats(&self, stats: rdkafka::Statistics) {
        // Lag from the committed offset, for the partitions this process consumes.
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 && part.fetch_state == "active" {
                    metrics::gauge!(m::CONSUMER_LAG, "topic" => topic.clone(), "partition" => p.to_string()).set(part.consumer_lag as f64);
                }
            }
        }
        if stats.cgrp.as_ref().is_some_and(|g| g.state == "up") {
            self.health.joined(true);
        }
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        match rebalance {
            Rebalance::Assign(tpl) => w.on_assign(consumer, tpl, generation),
            Rebalance::Revoke(tpl) => w.on_revoke(consumer, tpl),
            Rebalance::Error(e) => error!(error = %e, "rebalance error"),
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
    health: Arc<Health>,
) -> anyhow::Result<RunSummary> {
    let mut topics = Vec::new();
    let mut routers = Vec::new();
    for (i, t) in config.topics.iter().enumerate() {
        routers.push(Router::new(t, i)?);
        let layout = FileLayout::new(t)?;
        if !layout.pattern().is_partition_filterable() {
            warn!(topic = %t.name, pattern = %t.file_pattern, "file_pattern has no -{{kafkaPartition}}- after the date; Sunbird's per-partition fetcher cannot select these files (kbackup's tools can)");
        }
        topics.push(TopicRuntime {
            events: metrics::counter!(m::EVENTS_CONSUMED, "topic" => t.name.clone()),
            bytes: metrics::counter!(m::BYTES_CONSUMED, "topic" => t.name.clone()),
            layout,
            retention_ms: opts.retention_ms.get(&t.name).copied(),
            policy: RotationPolicy { max_bytes: t.max_file_bytes, max_age: Duration::from_secs(t.max_file_age_secs) },
            cfg: t.clone(),
        });
    }
    // The budget covers librdkafka's prefetch too; buffers get the rest (at least a quarter).
    let prefetch = crate::consumer::prefetch_bytes(&config.kafka);
    let buffer_budget = config.writer.memory_limit_bytes.saturating_sub(prefetch).max(config.writer.memory_limit_bytes / 4);
    info!(memory_limit = config.writer.memory_limit_bytes, prefetch, buffer_budget, "memory budget");
    // Memory of uploaded files is kept for new buffers, within the same budget.
    crate::buffer::set_pool_limit(buffer_budget);
    let (done_tx, done_rx) = channel();
    let uploader = Uploader::new(storage.store.clone(), rt, config.writer.upload_concurrency, done_tx, health.clone());
    let now = Instant::now();
    // Topic names to config indices, for the routing helper and the rebalance callbacks alike.
    let routing = Routing { topic_index: config.topics.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect(), routers };
    let writer = Arc::new(Mutex::new(Writer {
        topic_index: routing.topic_index.clone(),
        topics,
        buffers: HashMap::default(),
        open_bytes: 0,
        inflight: HashMap::default(),
        inflight_bytes: 0,
        awaiting: Vec::new(),
        tracker: CommitTracker::default(),
        parts: HashMap::default(),
        next_epoch: 1,
        targets: HashMap::default(),
        clock: UploadClock::default(),
        uploader,
        done_rx,
        next_id: 0,
        memory_limit: buffer_budget,
        metadata_limit: config.writer.commit_metadata_limit,
        commit_interval: Duration::from_millis(config.writer.commit_interval_ms),
        revoke_timeout: Duration::from_secs(config.writer.revoke_timeout_secs),
        last_commit: now,
        // The first loop iteration ticks at once (liveness, ages).
        last_tick: now.checked_sub(Duration::from_secs(1)).unwrap_or(now),
        intent_retry_at: now,
        paused: false,
        ever_assigned: false,
        first_message_at: None,
        fatal: None,
        offset_reset_to_end: crate::consumer::group_config(&config.kafka)
            .get("auto.offset.reset")
            .is_some_and(|v| matches!(v, "latest" | "largest" | "end")),
        health: health.clone(),
        opts,
        summary: RunSummary::default(),
        scratch: Vec::new(),
        stop_deadline: None,
    }));

    let generation = Arc::new(AtomicU64::new(0));
    // One helper routes a batch while this thread appends the previous one and polls the next
    // (a second helper measured no faster on 2 cores, at 30% more CPU).
    let router_pool = rayon::ThreadPoolBuilder::new().num_threads(1).thread_name(|_| "kbackup-route".into()).build()?;
    let consumer: BaseConsumer<Ctx> = crate::consumer::group_config(&config.kafka).create_with_context(Ctx {
        writer: writer.clone(),
        health: health.clone(),
        generation: generation.clone(),
    })?;
    let names: Vec<&str> = config.topics.iter().map(|t| t.name.as_str()).collect();
    consumer.subscribe(&names)?;
    info!(group = %config.kafka.group_id, topics = %names.join(","), storage = %storage.describe, "writer started");

    // Three batches are in the pipeline: `routed` (batch k-1) is applied by this thread while
    // the helper routes `polled` (batch k); then this thread polls batch k+1.
    let mut routed: Vec<Polled<'_>> = Vec::new();
    let mut routes: Vec<Option<(usize, Route)>> = Vec::new();
    let mut polled: Vec<Polled<'_>> = Vec::new();
    let mut paused = false;
    loop {
        let mut next = Vec::new();
        let mut next_routes = Vec::new();
        let mut step = Step { writer: &writer, consumer: &consumer, generation: &generation, stop: &stop, paused: &mut paused };
        let exit = if polled.len() >= PARALLEL_ROUTING_MIN {
            let mut exit = false;
            router_pool.in_place_scope(|s| {
                s.spawn(|_| next_routes = routing.route_all(&polled));
                exit = step.run(&mut routed, std::mem::take(&mut routes), true, &mut next);
            });
            exit
        } else {
            next_routes = routing.route_all(&polled);
            let busy = !polled.is_empty();
            step.run(&mut routed, std::mem::take(&mut routes), busy, &mut next)
        };
        if exit {
            break;
        }
        routed = std::mem::replace(&mut polled, next);
        routes = next_routes;
    }
    // Polled but not applied: never tracked, so not committed; the next run reads them again.
    // (They must also go before the consumer: they point into librdkafka's memory.)
    drop(routed);
    drop(polled);

    // One bound for the whole stop, whatever is frozen: sealing, uploads, the final commit,
    // the revocation that leaving the group fires, and the close. The commit and the close
    // block inside librdkafka while the broker does not answer, so they run on a thread of
    // their own that this one waits for until the deadline.
    let timeout = Duration::from_secs(config.writer.shutdown_timeout_secs);
    let deadline = Instant::now() + timeout;
    let summary_before = {
        let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
        w.stop_deadline = Some(deadline);
        w.summary.clone()
    };
    let (finished_tx, finished_rx) = channel();
    let finisher = writer.clone();
    std::thread::Builder::new().name("kbackup-finish".into()).spawn(move || {
        let mut w = finisher.lock().unwrap_or_else(|p| p.into_inner());
        // Uploads get the time left but a commit's share: what they finish must still be committed.
        let uploads_until = deadline.checked_sub(commit_reserve(timeout)).unwrap_or(deadline);
        w.finish(&consumer, uploads_until);
        let summary = w.summary.clone();
        let fatal = w.fatal.clone();
        drop(w);
        // Leaving the group fires a final revoke; every buffer is already sealed and committed.
        consumer.unsubscribe();
        drop(consumer);
        let _ = finished_tx.send((summary, fatal));
    })?;
    let (summary, fatal) = match finished_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(done) => done,
        Err(_) => {
            // Nothing unsafe was committed: offsets only ever pass uploaded files. What is not
            // committed is read again by the partitions' next owner.
            error!(
                timeout_secs = timeout.as_secs(),
                events = summary_before.events,
                files = summary_before.files,
                "shutdown timeout: the broker or storage did not answer in time; exiting without a final commit (uncommitted events will be read again)"
            );
            return Err(anyhow::anyhow!(
                "the graceful stop did not finish within writer.shutdown_timeout_secs ({} s): the broker or storage did not answer; uncommitted events will be read again",
                timeout.as_secs()
            ));
        }
    };
    let (reused, fresh) = crate::buffer::block_counts();
    let s = &summary;
    info!(
        events = s.events,
        bytes_in = s.bytes_in,
        files = s.files,
        bytes_out = s.bytes_out,
        invalid = s.invalid,
        record_time_dated = s.record_time_dated,
        newlines_replaced = s.newlines_replaced,
        skipped_already_stored = s.skipped_already_stored,
        rebuilt_files = s.rebuilt_files,
        already_there = s.already_there,
        abandoned_files = s.abandoned_files,
        stale_dropped = s.stale_dropped,
        lost_offsets = s.lost_offsets,
        buffer_blocks_reused = reused,
        buffer_blocks_fresh = fresh,
        "writer stopped"
    );
    if let Some(why) = fatal {
        anyhow::bail!("{why}");
    }
    if summary.abandoned_files > 0 {
        anyhow::bail!(
            "{} file(s) were not uploaded before the shutdown timeout; their events were not committed and will be read again",
            summary.abandoned_files
        );
    }
    Ok(summary)
}

/// The part of a stop's time kept for the final commit and leaving the group: a fifth of it,
/// between 1 and 5 seconds.
fn commit_reserve(timeout: Duration) -> Duration {
    (timeout / 5).clamp(Duration::from_secs(1), Duration::from_secs(5)).min(timeout)
}

/// Batches end at this many messages or bytes, whichever comes first (bytes bound what two
/// batches hold of librdkafka's memory when messages are large).
const BATCH_MESSAGES: usize = 1024;
const BATCH_BYTES: usize = 4 << 20;
/// Smaller batches are routed on the polling thread: handing them over costs more than it saves.
const PARALLEL_ROUTING_MIN: usize = 32;

/// One item taken from the consumer.
enum Polled<'c> {
    /// A message and the rebalance generation when it was polled.
    Message(BorrowedMessage<'c>, u64),
    Eof(i32),
    Error(rdkafka::error::KafkaError),
}

/// Polls up to one batch: waits up to `wait` for the first item, then takes what is ready.
fn poll_batch<'c>(consumer: &'c BaseConsumer<Ctx>, generation: &AtomicU64, out: &mut Vec<Polled<'c>>, wait: Duration) {
    let mut bytes = 0;
    let mut timeout = wait;
    while out.len() < BATCH_MESSAGES && bytes < BATCH_BYTES {
        match consumer.poll(timeout) {
            None => break,
            Some(Ok(m)) => {
                bytes += m.payload_len();
                out.push(Polled::Message(m, generation.load(Ordering::SeqCst)));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => out.push(Polled::Eof(p)),
            Some(Err(e)) => out.push(Polled::Error(e)),
        }
        timeout = Duration::ZERO;
    }
}

/// What the polling thread does per batch, besides handing a batch to the routing helper.
struct Step<'a, 'c> {
    writer: &'a Mutex<Writer>,
    consumer: &'c BaseConsumer<Ctx>,
    generation: &'a AtomicU64,
    stop: &'a AtomicBool,
    paused: &'a mut bool,
}

impl<'c> Step<'_, 'c> {
    /// Applies a routed batch and does the periodic work under one lock, then (unless it is
    /// time to stop) polls the next batch into `next`. `busy`: another batch is being routed,
    /// so polling must not block. Returns true when the loop must end.
    fn run(&mut self, batch: &mut Vec<Polled<'c>>, routes: Vec<Option<(usize, Route)>>, busy: bool, next: &mut Vec<Polled<'c>>) -> bool {
        let consumer = self.consumer;
        {
            // One clock read per batch: it showed up at ~4% of a drain's CPU when read per message.
            let now = Instant::now();
            let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            for (item, route) in batch.drain(..).zip(routes) {
                match (item, route) {
                    (Polled::Message(msg, generation), Some((t, route))) => w.on_message(&msg, t, route, generation, now),
                    (Polled::Message(msg, _), None) => error!(topic = msg.topic(), "message from a topic that is not configured"),
                    (Polled::Eof(p), _) => w.on_partition_eof(consumer, p),
                    (Polled::Error(e), _) => warn!(error = %e, "kafka error"),
                }
            }
            w.housekeeping(consumer, now);
            if w.over_budget() && w.uploads_behind() {
                // Wait for uploads rather than poll more. Not polling lets librdkafka's bounded
                // prefetch fill up and stop fetching, at no cost; pausing would drop what was
                // prefetched and fetch it again. Bounded, so rebalances are still served.
                let caught_up = w.wait_uploads(consumer, Instant::now() + Duration::from_secs(1), |w| !(w.over_budget() && w.uploads_behind()));
                if !caught_up {
                    // Uploads are stuck, not just slow: stop fetching until they catch up.
                    w.pause_for_memory(consumer);
                }
            }
            *self.paused = w.paused;
            if let Some(why) = &w.fatal {
                error!(reason = %why, "stopping: the writer cannot continue safely");
                return true;
            }
            if self.stop.load(Ordering::Relaxed) {
                info!("stopping: sealing and uploading every open file");
                return true;
            }
            if w.opts.until_caught_up && w.caught_up() {
                let drain = w.first_message_at.map(|t| t.elapsed().as_secs_f64()).unwrap_or_default();
                info!(
                    events = w.summary.events,
                    drain_seconds = drain,
                    events_per_second = (w.summary.events as f64 / drain.max(1e-9)).round(),
                    "caught up with the end offsets read at assignment"
                );
                return true;
            }
        }
        // Unlocked: rebalance callbacks run inside poll() and take the lock.
        // Block for the next message only when nothing else is in the pipeline; while paused,
        // briefly, so finished uploads resume consumption soon.
        let wait = if busy {
            Duration::ZERO
        } else if *self.paused {
            Duration::from_millis(10)
        } else {
            Duration::from_millis(100)
        };
        poll_batch(consumer, self.generation, next, wait);
        false
    }
}

/// The routers of the configured topics, shared by the polling thread and the routing helper.
struct Routing {
    topic_index: HashMap<String, usize>,
    routers: Vec<Router>,
}

impl Routing {
    /// The route of every message of a batch (`None` for other items and unknown topics).
    fn route_all(&self, batch: &[Polled<'_>]) -> Vec<Option<(usize, Route)>> {
        batch
            .iter()
            .map(|item| {
                let Polled::Message(m, _) = item else {
                    return None;
                };
                let t = *self.topic_index.get(m.topic())?;
                Some((t, self.routers[t].route(m.payload(), m.timestamp().to_millis())))
            })
            .collect()
    }
}

impl Writer {
    fn on_message(&mut self, m: &BorrowedMessage<'_>, t: usize, route: Route, generation: u64, now: Instant) {
        let (p, off) = (m.partition(), m.offset());
        let record_ms = m.timestamp().to_millis();
        if self.parts.get(&(t, p)).is_none_or(|st| st.assigned_gen > generation) {
            // Polled before a rebalance took the partition away (and maybe gave it back): the
            // message is not tracked, so it is not committed and its owner reads it again.
            debug!(topic = m.topic(), partition = p, offset = off, "message polled before its partition was revoked; dropped (not committed)");
            self.summary.stale_dropped += 1;
            return;
        }
        if self.tracker.get(t, p).is_none() {
            // No committed offset was known at assignment: tracking starts at the first message.
            self.tracker.assign(t, p, off);
        }
        let topic = &self.topics[t];
        let payload = m.payload().unwrap_or_default();
        // What the file gets: the value (Secor's lines) or the whole record.
        let (line, line_breaks): (&[u8], Option<bool>) = if topic.cfg.format == Format::Record {
            self.scratch.clear();
            crate::consumer::encode_record(&mut self.scratch, m, route.line_breaks.is_some());
            (&self.scratch, Some(false))
        } else {
            (payload, route.line_breaks)
        };
        topic.events.increment(1);
        topic.bytes.increment(payload.len() as u64);
        match route.source {
            DateSource::Invalid(reason) => {
                self.summary.invalid += 1;
                metrics::counter!(m::INVALID_MESSAGES, "topic" => topic.cfg.name.clone(), "reason" => reason.as_str()).increment(1);
                debug!(topic = m.topic(), partition = p, offset = off, reason = reason.as_str(), "invalid message");
            }
            DateSource::RecordTime => self.summary.record_time_dated += 1,
            DateSource::Field(_) => {}
        }
        self.summary.events += 1;
        self.summary.bytes_in += payload.len() as u64;
        self.first_message_at.get_or_insert(now);

        // A partition recovered from intents: some re-read messages are already stored, some
        // belong in files rebuilt under their recorded names.
        let st = self.parts.get_mut(&(t, p)).expect("owned");
        let recovering = st.plan.end();
        if let Some(end) = recovering {
            if off <= end {
                match st.plan.action(off, route.prefix.as_deref(), &route.date, route.to_error_path) {
                    Action::Skip => {
                        self.summary.skipped_already_stored += 1;
                        metrics::counter!(m::SKIPPED_RECOVERED).increment(1);
                        self.tracker.get_mut(t, p).expect("tracked").consumed(off);
                        self.finish_rebuilds(t, p, off);
                        return;
                    }
                    Action::Rebuild(i) => {
                        let track = self.tracker.get_mut(t, p).expect("tracked");
                        let buf = st.pinned.entry(i).or_insert_with(|| {
                            track.hold(off);
                            Buffer { first_record_ms: record_ms, ..Buffer::new(off, now) }
                        });
                        let before = buf.charged();
                        if buf.append_checked(off, line, line_breaks) {
                            self.summary.newlines_replaced += 1;
                        }
                        track.consumed(off);
                        self.open_bytes += buf.charged() - before;
                        self.finish_rebuilds(t, p, off);
                        return;
                    }
                    Action::Normal => {}
                }
            }
        }

        let key = BufferKey { topic: t, partition: p, prefix: route.prefix, date: route.date, error: route.to_error_path };
        let track = self.tracker.get_mut(t, p).expect("tracked above");
        let buf = self.buffers.entry(key.clone()).or_insert_with(|| {
            track.hold(off);
            Buffer { first_record_ms: record_ms, ..Buffer::new(off, now) }
        });
        let before = buf.charged();
        if buf.append_checked(off, line, line_breaks) {
            self.summary.newlines_replaced += 1;
        }
        track.consumed(off);
        self.open_bytes += buf.charged() - before;
        if topic.policy.due(buf, now) == Some(SealReason::Size) {
            self.seal(&key, SealReason::Size);
        }
        if recovering.is_some() {
            self.finish_rebuilds(t, p, off);
        }
        if self.over_budget() && !self.uploads_behind() {
            self.seal_largest();
        }
    }

    /// True when uploads hold half the budget or more. Sealing then frees nothing (the bytes
    /// only move to the upload queue) and would cut files ever smaller, down to one event each:
    /// consumption stops until uploads catch up (see the polling loop).
    fn uploads_behind(&self) -> bool {
        self.inflight_bytes >= self.memory_limit / 2
    }

    /// True when buffers and uploads together hold more than the budget.
    fn over_budget(&self) -> bool {
        self.open_bytes + self.inflight_bytes > self.memory_limit
    }

    /// Seals every rebuilt file of (t, p) whose recorded range ends at or before `off`, and
    /// drops the recovery plan once consumption has passed all of it.
    fn finish_rebuilds(&mut self, t: usize, p: i32, off: i64) {
        let Some(st) = self.parts.get_mut(&(t, p)) else {
            return;
        };
        let Some(end) = st.plan.end() else { return };
        let ready: Vec<usize> = (0..st.plan.rebuild.len()).filter(|i| !st.rebuilt.contains(i) && st.plan.rebuild[*i].to <= off).collect();
        for i in ready {
            st.rebuilt.insert(i);
            let intent = Arc::new(st.plan.rebuild[i].clone());
            let epoch = st.epoch;
            let Some(buf) = st.pinned.remove(&i) else {
                // None of its messages came back (deleted by retention before this run): the
                // earlier upload, if any, is all there is.
                warn!(key = %intent.key, "recorded file could not be rebuilt: its messages are gone");
                continue;
            };
            self.open_bytes -= buf.charged();
            self.summary.rebuilt_files += 1;
            metrics::counter!(m::FILES_REBUILT).increment(1);
            info!(key = %intent.key, events = buf.events, "rebuilding a file recorded by an earlier run");
            let id = self.next_id;
            self.next_id += 1;
            self.inflight_bytes += buf.charged();
            let level = self.topics[t].cfg.compression_level;
            let compression = self.topics[t].cfg.compression;
            self.inflight.insert(
                id,
                InFlight {
                    topic: t,
                    partition: p,
                    epoch,
                    intent: intent.clone(),
                    events: buf.events,
                    bytes: buf.len(),
                    charged: buf.charged(),
                    reason: SealReason::Size,
                    first_record_ms: buf.first_record_ms,
                    data: None,
                    existing: Existing::Accept,
                },
            );
            // Its intent is already in the partition's commits: no new record is needed.
            self.uploader.submit(UploadJob {
                id,
                key: intent.key.clone(),
                topic: self.topics[t].cfg.name.clone(),
                data: buf.data,
                compression,
                level,
                existing: Existing::Accept,
            });
        }
        let st = self.parts.get_mut(&(t, p)).expect("owned");
        if off >= end && st.rebuilt.len() == st.plan.rebuild.len() {
            debug!(partition = p, "recovery finished");
            st.plan = RecoveryPlan::default();
            st.rebuilt.clear();
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

    /// Names a buffer and queues it for its intent record; the upload starts after that.
    fn seal(&mut self, key: &BufferKey, reason: SealReason) {
        let Some(buf) = self.buffers.remove(key) else {
            return;
        };
        self.open_bytes -= buf.charged();
        let topic = &self.topics[key.topic];
        let now_ms = chrono::Utc::now().timestamp_millis();
        let name = NameContext {
            date: &key.date,
            kafka_partition: key.partition,
            current_ms: self.clock.next(now_ms),
            topic: &topic.cfg.name,
            generation: topic.cfg.generation,
            first_offset: buf.first_offset,
            random: rand::random(),
        };
        let intent = Arc::new(Intent {
            key: topic.layout.key(key.prefix.as_deref(), key.error, &name),
            prefix: key.prefix.as_deref().map(String::from),
            date: key.date.to_string(),
            error: key.error,
            from: buf.first_offset,
            to: buf.last_offset,
        });
        let epoch = self.parts.get(&(key.topic, key.partition)).map_or(0, |s| s.epoch);
        let id = self.next_id;
        self.next_id += 1;
        self.inflight_bytes += buf.charged();
        self.inflight.insert(
            id,
            InFlight {
                topic: key.topic,
                partition: key.partition,
                epoch,
                intent,
                events: buf.events,
                bytes: buf.len(),
                charged: buf.charged(),
                reason,
                first_record_ms: buf.first_record_ms,
                data: Some(buf.data),
                existing: Existing::Compare,
            },
        );
        self.awaiting.push(id);
    }

    /// Commits the intents of sealed files (with each partition's safe offset), then starts
    /// their uploads. A file whose intent is not confirmed is never uploaded.
    fn record_intents(&mut self, consumer: &BaseConsumer<Ctx>) {
        if self.awaiting.is_empty() {
            return;
        }
        // Counted per file, so `sealed:n` does not depend on how seals are batched.
        for _ in &self.awaiting {
            failpoint::hit(failpoint::SEALED);
        }
        let mut batch: Vec<u64> = Vec::new();
        let mut commits: Vec<(usize, i32, i64, String)> = Vec::new();
        let mut parts: Vec<(usize, i32)> = Vec::new();
        for id in &self.awaiting {
            let f = &self.inflight[id];
            if !parts.contains(&(f.topic, f.partition)) {
                parts.push((f.topic, f.partition));
            }
        }
        for (t, p) in parts {
            let (Some(st), Some(track)) = (self.parts.get_mut(&(t, p)), self.tracker.get(t, p)) else {
                continue;
            };
            let offset = track.safe();
            let mut added = 0;
            for id in self.awaiting.iter().filter(|id| {
                let f = &self.inflight[*id];
                (f.topic, f.partition) == (t, p)
            }) {
                let f = &self.inflight[id];
                st.intents.push(f.intent.clone());
                if st.intents.metadata(offset, self.metadata_limit).is_none() {
                    // The record is full: this file waits until earlier ones are committed past.
                    st.intents.remove(&f.intent.key);
                    break;
                }
                batch.push(*id);
                added += 1;
            }
            if added > 0 {
                let md = st.intents.metadata(offset, self.metadata_limit).expect("checked above");
                commits.push((t, p, offset, md));
            }
        }
        if batch.is_empty() {
            return;
        }
        match self.commit_with_metadata(consumer, &commits) {
            Ok(()) => {
                for _ in &batch {
                    failpoint::hit(failpoint::INTENT_RECORDED);
                }
                self.awaiting.retain(|id| !batch.contains(id));
                for id in batch {
                    let f = self.inflight.get_mut(&id).expect("in flight");
                    let data = f.data.take().expect("awaiting files hold their data");
                    let cfg = &self.topics[f.topic].cfg;
                    self.uploader.submit(UploadJob {
                        id,
                        key: f.intent.key.clone(),
                        topic: cfg.name.clone(),
                        data,
                        compression: cfg.compression,
                        level: if cfg.compression == Compression::Gzip { cfg.compression_level } else { 0 },
                        existing: f.existing,
                    });
                }
            }
            Err(e) => {
                // Not recorded (or not known to be): do not upload. The intents come out of the
                // log again; if the broker did store them, recovery rebuilds those files.
                for id in &batch {
                    let f = &self.inflight[id];
                    if let Some(st) = self.parts.get_mut(&(f.topic, f.partition)) {
                        st.intents.remove(&f.intent.key);
                    }
                }
                self.intent_retry_at = Instant::now() + Duration::from_secs(1);
                warn!(error = %e, files = batch.len(), "recording upload intents failed; will retry");
            }
        }
    }

    /// One synchronous commit of offsets with metadata; updates the tracker on success.
    fn commit_with_metadata(&mut self, consumer: &BaseConsumer<Ctx>, commits: &[(usize, i32, i64, String)]) -> rdkafka::error::KafkaResult<()> {
        let mut tpl = TopicPartitionList::new();
        for (t, p, o, md) in commits {
            let mut e = tpl.add_partition(&self.topics[*t].cfg.name, *p);
            e.set_offset(Offset::Offset(*o))?;
            e.set_metadata(md.as_str());
        }
        let started = Instant::now();
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            metrics::counter!(m::COMMIT_FAILURES).increment(1);
            return Err(e);
        }
        metrics::counter!(m::COMMITS).increment(1);
        metrics::histogram!(m::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        self.health.broker_ok();
        for (t, p, o, _) in commits {
            debug!(topic = %self.topics[*t].cfg.name, partition = p, offset = o, "committed");
            if let Some(track) = self.tracker.get_mut(*t, *p) {
                track.committed(*o);
            }
            if let Some(st) = self.parts.get_mut(&(*t, *p)) {
                st.intents.prune(*o);
            }
        }
        failpoint::hit(failpoint::COMMITTED);
        Ok(())
    }

    fn on_uploaded(&mut self, done: UploadDone) {
        let Some(f) = self.inflight.remove(&done.id) else {
            return;
        };
        self.inflight_bytes -= f.charged;
        let current = self.parts.get(&(f.topic, f.partition)).is_some_and(|s| s.epoch == f.epoch);
        if done.outcome == Outcome::Conflict {
            metrics::counter!(m::UPLOAD_FAILURES, "topic" => self.topics[f.topic].cfg.name.clone()).increment(1);
            // Someone else's file has this name (a clock step back across owners?). Never
            // overwrite it: name this file anew and record that instead.
            error!(key = %f.intent.key, "a different blob already has this name; renaming the file");
            if current {
                self.rename_conflicting(f);
            }
            return;
        }
        failpoint::hit(failpoint::UPLOADED);
        let name = self.topics[f.topic].cfg.name.clone();
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
        match self.tracker.get_mut(f.topic, f.partition) {
            Some(track) if current => track.release(f.intent.from),
            // The partition was revoked or lost while this upload ran; its new owner re-reads
            // these events from the last commit and finds this file through its intent.
            _ => warn!(key = %f.intent.key, "upload finished after its partition was given up"),
        }
    }

    /// Re-seals a file under a fresh name after a name conflict. Its data is gone (compressed
    /// and dropped by the uploader), so the partition is rewound instead: the intent is removed
    /// and the events stay held, so they are re-read by the next owner. Simplest safe answer to
    /// an event that should never happen.
    fn rename_conflicting(&mut self, f: InFlight) {
        if let Some(st) = self.parts.get_mut(&(f.topic, f.partition)) {
            st.intents.remove(&f.intent.key);
        }
        self.fatal = Some(format!(
            "blob {} exists with different content; stopping without committing its events (restart to re-read them under a new name)",
            f.intent.key
        ));
    }

    fn drain_uploads(&mut self) {
        while let Ok(done) = self.done_rx.try_recv() {
            self.on_uploaded(done);
        }
    }

    /// Waits for uploads until `pred` holds or `deadline` passes; returns whether it holds.
    fn wait_uploads(&mut self, consumer: &BaseConsumer<Ctx>, deadline: Instant, pred: impl Fn(&Writer) -> bool) -> bool {
        loop {
            self.drain_uploads();
            if !self.awaiting.is_empty() && Instant::now() >= self.intent_retry_at {
                self.record_intents(consumer);
            }
            if pred(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.done_rx.recv_timeout(left.min(Duration::from_secs(1))) {
                Ok(done) => self.on_uploaded(done),
                Err(RecvTimeoutError::Timeout) => {
                    debug!(files = self.inflight.len(), "waiting for uploads")
                }
                Err(RecvTimeoutError::Disconnected) => return pred(self),
            }
        }
    }

    /// Periodic work: finished uploads, intents, file age, memory pressure, commits.
    fn housekeeping(&mut self, consumer: &BaseConsumer<Ctx>, now: Instant) {
        self.drain_uploads();
        let tick = now.duration_since(self.last_tick) >= Duration::from_millis(500);
        if self.paused && !tick {
            // Resume as soon as uploads catch up, not at the next tick (which checks anyway).
            self.apply_backpressure(consumer);
        }
        if !self.awaiting.is_empty() && now >= self.intent_retry_at {
            self.record_intents(consumer);
        }
        if tick {
            self.last_tick = now;
            self.health.loop_ran();
            // The budget's books must match the buffers they describe (a path that dropped
            // buffers by length rather than charge once let them drift upwards).
            debug_assert_eq!(
                self.open_bytes,
                self.buffers.values().chain(self.parts.values().flat_map(|st| st.pinned.values())).map(Buffer::charged).sum::<u64>(),
                "open_bytes out of step with the open buffers"
            );
            debug_assert_eq!(
                self.inflight_bytes,
                self.inflight.values().map(|f| f.charged).sum::<u64>(),
                "inflight_bytes out of step with the files in flight"
            );
            let due: Vec<BufferKey> =
                self.buffers.iter().filter(|(k, b)| self.topics[k.topic].policy.due(b, now).is_some()).map(|(k, _)| k.clone()).collect();
            for k in due {
                self.seal(&k, SealReason::Age);
            }
            self.apply_backpressure(consumer);
            let oldest = self.buffers.values().map(|b| now.saturating_duration_since(b.opened_at)).max().unwrap_or_default();
            metrics::gauge!(m::BUFFERED_BYTES).set(self.open_bytes as f64);
            metrics::gauge!(m::INFLIGHT_BYTES).set(self.inflight_bytes as f64);
            crate::buffer::release_idle_blocks(now);
            metrics::gauge!(m::POOLED_BYTES).set(crate::buffer::pooled_bytes() as f64);
            metrics::gauge!(m::OLDEST_BUFFER_AGE).set(oldest.as_secs_f64());
            metrics::gauge!(m::PAUSED).set(if self.paused { 1.0 } else { 0.0 });
            for &(t, p) in self.parts.keys() {
                if let Some(o) = self.tracker.get(t, p) {
                    metrics::gauge!(m::CONSUMED_OFFSET, "topic" => self.topics[t].cfg.name.clone(), "partition" => p.to_string())
                        .set(o.position() as f64);
                }
            }
            self.report_retention_headroom();
        }
        if now.duration_since(self.last_commit) >= self.commit_interval {
            self.commit(consumer, None);
        }
    }

    /// Per owned partition: how long until Kafka's retention deletes its oldest message not yet
    /// committed (the first message of the oldest open or in-flight file), so ops can act before
    /// anything is lost. A partition holding nothing uncommitted has the whole retention ahead.
    fn report_retention_headroom(&self) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut oldest: HashMap<(usize, i32), i64> = HashMap::default();
        let mut note = |t: usize, p: i32, ms: Option<i64>| {
            if let Some(ms) = ms {
                let e = oldest.entry((t, p)).or_insert(ms);
                *e = (*e).min(ms);
            }
        };
        for (k, b) in &self.buffers {
            note(k.topic, k.partition, b.first_record_ms);
        }
        for ((t, p), st) in &self.parts {
            for b in st.pinned.values() {
                note(*t, *p, b.first_record_ms);
            }
        }
        for f in self.inflight.values() {
            note(f.topic, f.partition, f.first_record_ms);
        }
        for &(t, p) in self.parts.keys() {
            let topic = &self.topics[t];
            let Some(retention) = topic.retention_ms else { continue };
            let age = oldest.get(&(t, p)).map_or(0, |ms| (now_ms - ms).max(0));
            metrics::gauge!(m::RETENTION_HEADROOM, "topic" => topic.cfg.name.clone(), "partition" => p.to_string())
                .set((retention - age) as f64 / 1000.0);
        }
    }

    /// Pauses consumption while uploads hold most of the budget; resumes below half of it.
    fn apply_backpressure(&mut self, consumer: &BaseConsumer<Ctx>) {
        let high = self.memory_limit / 4 * 3;
        let low = self.memory_limit / 2;
        let want_pause = if self.paused { self.inflight_bytes > low } else { self.inflight_bytes >= high };
        if want_pause {
            // Re-applied on every check so partitions assigned meanwhile are paused too.
            self.pause(consumer, "uploads are behind: consumption paused");
        } else if self.paused {
            let Ok(assignment) = consumer.assignment() else {
                return;
            };
            if let Err(e) = consumer.resume(&assignment) {
                warn!(error = %e, "resuming partitions failed");
            }
            info!("uploads caught up: consumption resumed");
            self.paused = false;
        }
    }

    /// Pauses consumption because the budget is full and uploads are not draining it; resumed
    /// by `apply_backpressure` once uploads hold half the budget or less.
    fn pause_for_memory(&mut self, consumer: &BaseConsumer<Ctx>) {
        self.pause(consumer, "memory budget full and uploads are behind: consumption paused");
    }

    /// Pauses every assigned partition; `why` is logged when consumption was running.
    fn pause(&mut self, consumer: &BaseConsumer<Ctx>, why: &str) {
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        if let Err(e) = consumer.pause(&assignment) {
            warn!(error = %e, "pausing partitions failed");
        }
        if !self.paused {
            warn!(buffered_bytes = self.open_bytes, inflight_bytes = self.inflight_bytes, files = self.inflight.len(), "{why}");
        }
        self.paused = true;
    }

    /// Commits every partition whose safe offset moved (only `only` if given), with its intents.
    fn commit(&mut self, consumer: &BaseConsumer<Ctx>, only: Option<&HashSet<(usize, i32)>>) {
        self.last_commit = Instant::now();
        let mut commits = Vec::new();
        for (t, p, o) in self.tracker.due() {
            if only.is_some_and(|s| !s.contains(&(t, p))) {
                continue;
            }
            let Some(st) = self.parts.get(&(t, p)) else {
                continue;
            };
            match st.intents.metadata(o, self.metadata_limit) {
                Some(md) => commits.push((t, p, o, md)),
                // Cannot happen: a higher offset only drops intents from the record.
                None => error!(partition = p, "intent record too large to commit"),
            }
        }
        if commits.is_empty() {
            return;
        }
        // Not fatal: the offsets stay due and the next commit carries them.
        if let Err(e) = self.commit_with_metadata(consumer, &commits) {
            warn!(error = %e, "offset commit failed; will retry");
        }
    }

    fn on_assign(&mut self, consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList, generation: u64) {
        self.ever_assigned = true;
        self.health.joined(true);
        self.health.broker_ok();
        metrics::counter!(m::REBALANCES, "kind" => "assign").increment(1);
        // The committed offsets and their intent records decide how each partition resumes;
        // without them it is not safe to consume. A fresh broker may need a moment to elect a
        // group coordinator.
        let deadline = Instant::now() + Duration::from_secs(60);
        let committed = loop {
            match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    warn!(error = %e, "reading committed offsets failed; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => {
                    self.fatal = Some(format!("cannot read committed offsets: {e}"));
                    return;
                }
            }
        };
        for e in tpl.elements() {
            let Some(&t) = self.topic_index.get(e.topic()) else {
                continue;
            };
            let p = e.partition();
            let c = committed.find_partition(e.topic(), p);
            let start = c.as_ref().and_then(|c| match c.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
            let metadata = c.as_ref().map(|c| c.metadata().to_string()).unwrap_or_default();
            let intents = match intent::decode(&metadata) {
                Ok(i) => i,
                Err(err) => {
                    warn!(topic = e.topic(), partition = p, error = %err, "ignoring commit metadata kbackup did not write");
                    Vec::new()
                }
            };
            let epoch = self.next_epoch;
            self.next_epoch += 1;
            let mut st = PartState { epoch, assigned_gen: generation, ..Default::default() };
            if let Some(s) = start {
                self.tracker.assign(t, p, s);
                st.plan = RecoveryPlan::new(s, intents);
                // Every recorded intent that is not wholly committed stays in the record.
                for i in st.plan.skip.iter().chain(&st.plan.rebuild) {
                    st.intents.push(Arc::new(i.clone()));
                }
                if !st.plan.is_empty() {
                    info!(
                        topic = e.topic(),
                        partition = p,
                        skip = st.plan.skip.len(),
                        rebuild = st.plan.rebuild.len(),
                        "resuming from recorded upload intents"
                    );
                }
            }
            if start.is_some() || self.opts.until_caught_up {
                match consumer.fetch_watermarks(e.topic(), p, Duration::from_secs(30)) {
                    Ok((low, high)) => {
                        if let Some(s) = start.filter(|s| *s < low) {
                            self.report_lost(e.topic(), p, s, low, high, &st.plan);
                        }
                        if self.opts.until_caught_up {
                            // With no commit, consumption starts at the low watermark (earliest).
                            let target = if start.unwrap_or(low).max(low) >= high { i64::MIN } else { high };
                            self.targets.insert((t, p), target);
                        }
                    }
                    Err(err) => error!(topic = e.topic(), partition = p, error = %err, "reading watermarks failed"),
                }
            }
            self.parts.insert((t, p), st);
            // A number when there is a commit; absent (not the text "None") when there is none.
            match start {
                Some(c) => info!(topic = e.topic(), partition = p, committed = c, "partition assigned"),
                None => info!(topic = e.topic(), partition = p, "partition assigned (no committed offset: from the log start)"),
            }
        }
        metrics::gauge!(m::ASSIGNED_PARTITIONS).set(self.parts.len() as f64);
    }

    /// The group's commit `s` is below the log start `low`: Kafka deleted `[s, low)` before it
    /// was backed up. The one failure a backup must never hide: logged as an error, counted,
    /// shown by the readiness probe and in the run summary (`docs/runbook.md`, OffsetsLost).
    fn report_lost(&mut self, topic: &str, p: i32, s: i64, low: i64, high: i64, plan: &RecoveryPlan) {
        // librdkafka resets an out-of-range position by `auto.offset.reset`: to the log start
        // by default, to the end if an operator chose "latest" (then the retained rest is skipped too).
        let until = if self.offset_reset_to_end { high } else { low };
        let lost = (until - s) as u64;
        let recorded: Vec<&str> = plan.skip.iter().chain(&plan.rebuild).filter(|i| i.from < until).map(|i| i.key.as_str()).collect();
        self.summary.lost_offsets += lost;
        metrics::counter!(m::OFFSETS_LOST, "topic" => topic.to_string(), "partition" => p.to_string()).increment(lost);
        if recorded.is_empty() {
            error!(
                topic,
                partition = p,
                lost,
                committed = s,
                log_start = low,
                "DATA LOST: Kafka deleted offsets that were never backed up (retention passed the group's commit)"
            );
        } else {
            // Files an earlier run recorded and may have uploaded can hold some of them.
            error!(topic, partition = p, lost, committed = s, log_start = low, files = %recorded.join(","), "DATA LOST: Kafka deleted offsets that were never committed; the files recorded for them, if uploaded, hold some");
        }
        self.health.data_lost(format!("{topic}/{p}: {lost} offset(s) [{s}, {until}) were deleted by Kafka before they were backed up"));
    }

    fn on_revoke(&mut self, consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) {
        let lost = consumer.assignment_lost();
        metrics::counter!(m::REBALANCES, "kind" => if lost { "lost" } else { "revoke" }).increment(1);
        for e in tpl.elements() {
            // This process no longer reports lag for it; its new owner does.
            metrics::gauge!(m::CONSUMER_LAG, "topic" => e.topic().to_string(), "partition" => e.partition().to_string()).set(0.0);
        }
        let parts: HashSet<(usize, i32)> = tpl.elements().iter().filter_map(|e| Some((*self.topic_index.get(e.topic())?, e.partition()))).collect();
        let keys: Vec<BufferKey> = self.buffers.keys().filter(|k| parts.contains(&(k.topic, k.partition))).cloned().collect();
        if lost {
            // Another member may already own these partitions: uploading or committing now
            // could only duplicate its work. Everything uncommitted is re-read by the new owner.
            let mut dropped = 0;
            for k in keys {
                if let Some(b) = self.buffers.remove(&k) {
                    self.open_bytes -= b.charged();
                    dropped += b.events;
                }
            }
            let unrecorded: Vec<u64> =
                self.awaiting.iter().copied().filter(|id| parts.contains(&(self.inflight[id].topic, self.inflight[id].partition))).collect();
            for id in unrecorded {
                let f = self.inflight.remove(&id).expect("awaiting is in flight");
                self.inflight_bytes -= f.charged;
                dropped += f.events;
            }
            self.awaiting.retain(|id| self.inflight.contains_key(id));
            metrics::counter!(m::LOST_PARTITION_EVENTS).increment(dropped);
            warn!(
                partitions = parts.len(),
                dropped_events = dropped,
                "partitions lost (session timeout?); uncommitted events will be re-read by their new owner"
            );
        } else {
            for k in &keys {
                self.seal(k, SealReason::Revoke);
            }
            // Within a stop, the stop's own bound applies, not a fresh revoke timeout on top.
            let deadline = (Instant::now() + self.revoke_timeout).min(self.stop_deadline.unwrap_or(Instant::now() + self.revoke_timeout));
            let done = self.wait_uploads(consumer, deadline, |w| {
                !w.inflight
                    .values()
                    .any(|f| parts.contains(&(f.topic, f.partition)) && f.epoch == w.parts.get(&(f.topic, f.partition)).map_or(0, |s| s.epoch))
            });
            if !done {
                warn!("revoke timeout: some uploads of revoked partitions are still running; their events stay uncommitted");
            }
            self.commit(consumer, Some(&parts));
            // Sealed files whose intents could not be recorded are dropped with the partition.
            let unrecorded: Vec<u64> =
                self.awaiting.iter().copied().filter(|id| parts.contains(&(self.inflight[id].topic, self.inflight[id].partition))).collect();
            for id in unrecorded {
                let f = self.inflight.remove(&id).expect("awaiting is in flight");
                self.inflight_bytes -= f.charged;
            }
            self.awaiting.retain(|id| self.inflight.contains_key(id));
        }
        for &(t, p) in &parts {
            if let Some(st) = self.parts.remove(&(t, p)) {
                for b in st.pinned.values() {
                    self.open_bytes -= b.charged();
                }
            }
            self.tracker.revoke(t, p);
            self.targets.remove(&(t, p));
            info!(topic = %self.topics[t].cfg.name, partition = p, lost, "partition revoked");
        }
        metrics::gauge!(m::ASSIGNED_PARTITIONS).set(self.parts.len() as f64);
    }

    /// True once every owned partition reached its end offset.
    fn caught_up(&self) -> bool {
        if !self.ever_assigned || self.parts.is_empty() {
            return false;
        }
        self.parts.keys().all(|&(t, p)| match self.targets.get(&(t, p)) {
            Some(&target) => target == i64::MIN || self.tracker.get(t, p).is_some_and(|o| o.position() >= target),
            None => false,
        })
    }

    /// Seals everything, waits for the uploads until `deadline`, and commits.
    ///
    /// Files being rebuilt that are not complete are not uploaded: a partial file under a
    /// recorded name could stand in for the complete one. Their intents stay recorded and
    /// their events uncommitted, so the next owner rebuilds them.
    fn finish(&mut self, consumer: &BaseConsumer<Ctx>, deadline: Instant) {
        let keys: Vec<BufferKey> = self.buffers.keys().cloned().collect();
        for k in &keys {
            self.seal(k, SealReason::Shutdown);
        }
        if !self.wait_uploads(consumer, deadline, |w| w.inflight.is_empty()) {
            self.summary.abandoned_files = self.inflight.len() as u64;
            error!(files = self.inflight.len(), "shutdown timeout: some files were not uploaded");
        }
        self.commit(consumer, None);
    }
}
