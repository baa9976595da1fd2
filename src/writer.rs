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
//!
//! Every call the loop makes to the broker or storage ends before a stop's deadline, whatever
//! they are doing (issue 37): either it runs off the loop and the loop polls its result, or it
//! waits no longer than a short bound, and no longer than the time left once a stop is asked
//! for. A stop's bound counts from its signal (`StopRequest`), so a call under way when the
//! signal comes must be short too.
//!
//! | call | where | bound |
//! |---|---|---|
//! | offset commits (intent records, offsets, the final one) | a thread of their own, waited for on the loop | 2 s (`COMMIT_WAIT`) or the time left; unanswered: no second commit starts (`CommitGate`), readiness red after 15 s, fatal after `commit_abandon` |
//! | committed offsets (at assignment, in the rebalance callback) | on the loop | 2 s per read, read again for up to a minute; a stop asked for meanwhile leaves the partitions to the next owner |
//! | watermarks (lost offsets, `--until-caught-up`'s end, the markers' idle checks) | a thread of their own, answers polled | 10 s per read, off the loop |
//! | pause, resume, assign, unassign, positions | librdkafka's local state | no broker round trip |
//! | poll | on the loop | 100 ms (10 ms while paused, 0 while a batch is routed) |
//! | uploads, completion markers and their listings | the tokio runtime, results polled | off the loop; waits for them end by the stop's deadline |
//! | leaving the group, closing the consumer | the finisher thread | the stop's deadline (the main thread stops waiting) |
//! | start-up (storage probe, topic metadata, Secor's guard, retention, topic settings) | before the loop | a signal ends start-up at once |
//!
//! Where things are: this file wires the parts and holds `run` (start-up, the loop, the bounded
//! stop). The state machine is `core`: `Writer` and its one `impl` (`core.rs`: the entry points and
//! how they drive the parts), and in `core/` its owned parts, each keeping its fields to itself:
//! the owned partitions (`partition.rs`), open files, files in flight and the byte ledger
//! (`files.rs`), one partition's completion state (`marking.rs`), memory thresholds
//! (`budget.rs`), when periodic work is due (`cadence.rs`), the topics parsed once
//! (`topics.rs`), the stop's deadline and fatal reason (`stop.rs`), a partition's commit watch
//! (`stall.rs`), what a commit carries (`commits.rs`), the marker jobs (`completion.rs`), the run's totals (`summary.rs`); `decision.rs` and `message.rs` hold the types the loop exchanges with it. It reaches the world only through `ports.rs`: `kafka.rs` implements the
//! broker over librdkafka, `pipeline.rs` is the polling loop, and `sim` drives the same core
//! through seeded simulations.

// The per-message maps are keyed by small values; FxHash costs a fraction of SipHash there
// (SipHash showed up at ~2.5% of a drain's CPU profile). No key is attacker-controlled.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::health::Health;
use crate::routing::{Route, Router};
use crate::storage::Storage;
use crate::upload::Uploader;

mod core;
mod kafka;
mod pipeline;
mod ports;
#[cfg(test)]
mod sim;

use kafka::Ctx;
use pipeline::{Polled, Routing, Step, PARALLEL_ROUTING_MIN};
use ports::{ChannelMarkers, ChannelUploads, SystemClock};

pub use self::core::Fatal;
#[cfg(test)]
use self::core::StopReason;
pub(crate) use self::core::{Next, Routed, Writer};

/// Why [`run`] did not end cleanly. Each is the process's exit 1; what the writer had not
/// committed is read again by the partitions' next owner.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The writer could not be set up (a topic's routing rules, the consumer, its threads).
    #[error("starting the writer: {0}")]
    Start(String),
    /// The writer stopped because it could not go on safely.
    #[error("{0}")]
    Fatal(#[from] Fatal),
    /// The graceful stop did not finish within its bound.
    #[error(
        "the graceful stop did not finish within writer.shutdown_timeout_secs ({secs} s): the broker or storage did not answer; uncommitted events will be read again"
    )]
    StopTimedOut { secs: u64 },
    /// Sealed files were still not uploaded when the stop's time ran out.
    #[error("{files} file(s) were not uploaded before the shutdown timeout; their events were not committed and will be read again")]
    Abandoned { files: u64 },
    /// The final commit did not succeed in time.
    #[error(
        "the final commit of {partitions} partition(s) did not succeed before writer.shutdown_timeout_secs: their uploaded files are recorded (the next run skips their events), but the group's offsets lag behind them"
    )]
    Uncommitted { partitions: u64 },
}

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
    /// Messages with a timestamp string the topic's pattern could not read (dated by a later
    /// rung instead; by topic and field in `kbackup_timestamps_unparsed_total`).
    pub unparsed_timestamps: u64,
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
    /// Partitions whose final commit did not succeed before the stop's deadline (their
    /// uploaded files are recorded, so the next owner skips their events; the offsets lag).
    pub uncommitted_partitions: u64,
    /// Messages polled before a rebalance revoked their partition, left for its next owner.
    pub stale_dropped: u64,
    /// Offsets Kafka deleted before they were backed up (the group's commit was below the log
    /// start at assignment).
    pub lost_offsets: u64,
    /// Events of dates already marked complete on their partition.
    pub late_events: u64,
    /// Completion markers written.
    pub markers_written: u64,
}

/// A graceful stop asked for from outside (a signal), and when: the whole stop is bounded from
/// that moment, not from when the loop noticed it (a batch, a poll or a commit's wait later).
#[derive(Debug, Default)]
pub struct StopRequest {
    asked: AtomicBool,
    at: std::sync::OnceLock<Instant>,
}

impl StopRequest {
    /// Asks for the stop (the first time counts).
    pub fn ask(&self) {
        let _ = self.at.set(Instant::now());
        self.asked.store(true, Ordering::Relaxed);
    }

    /// True once a stop was asked for.
    pub fn asked(&self) -> bool {
        self.asked.load(Ordering::Relaxed)
    }

    /// When the stop that ends by `now + timeout` had to start so that it ends `timeout` after
    /// it was asked for, less `EXIT_MARGIN` for the process to exit.
    pub(crate) fn deadline(&self, now: Instant, timeout: Duration) -> Instant {
        let asked = self.at.get().copied().filter(|at| *at <= now).unwrap_or(now);
        (asked + timeout).checked_sub(EXIT_MARGIN.min(timeout / 10)).unwrap_or(asked).max(now)
    }
}

/// Kept out of a stop's bound for the process to exit after the writer gave up (log, return,
/// runtime shutdown): the bound is measured from outside, SIGTERM to exit.
const EXIT_MARGIN: Duration = Duration::from_millis(300);

/// Runs the writer until a stop is asked for (or, with `until_caught_up`, until caught up),
/// then seals, uploads and commits everything and leaves the group.
pub fn run(
    config: &Config,
    storage: &Storage,
    rt: tokio::runtime::Handle,
    stop: Arc<StopRequest>,
    opts: RunOptions,
    health: Arc<Health>,
) -> Result<RunSummary, RunError> {
    let start = |e: &dyn std::fmt::Display| RunError::Start(e.to_string());
    let routers = config.topics.iter().enumerate().map(|(i, t)| Router::new(t, i)).collect::<Result<Vec<_>, _>>().map_err(|e| start(&e))?;
    // The budget covers librdkafka's prefetch too; buffers get the rest (at least a quarter).
    let prefetch = crate::consumer::prefetch_bytes(&config.kafka);
    let buffer_budget = config.writer.memory_limit_bytes.saturating_sub(prefetch).max(config.writer.memory_limit_bytes / 4);
    info!(memory_limit = config.writer.memory_limit_bytes, prefetch, buffer_budget, "memory budget");
    if let Some(warning) = crate::consumer::budget_warning(config) {
        warn!("{warning}");
    }
    // Memory of uploaded files is kept for new buffers, within the same budget.
    crate::buffer::set_pool_limit(buffer_budget);
    let (done_tx, done) = channel();
    let uploader = Uploader::new(storage.store.clone(), rt.clone(), config.writer.upload_concurrency, done_tx, health.clone());
    let uploads = Box::new(ChannelUploads { uploader, done });
    let (marker_tx, marker_rx) = std::sync::mpsc::channel();
    let markers = Box::new(ChannelMarkers { store: storage.store.clone(), rt, tx: marker_tx, rx: marker_rx, kafka: config.kafka.clone() });
    let mut core = Writer::new(config, buffer_budget, uploads, markers, Box::new(SystemClock), health.clone(), opts).map_err(|e| start(&e))?;
    core.listen(stop.clone());
    let writer = Arc::new(Mutex::new(core));
    // Topic names to config indices, for the routing helper: a topic listed more than once (one
    // entry per output) is routed by its first entry.
    let topic_index = config.first_entries().into_iter().map(|(n, i)| (n.to_string(), i)).collect();
    let routing = Routing { topic_index, routers };

    let generation = Arc::new(AtomicU64::new(0));
    // One helper routes a batch while this thread appends the previous one and polls the next
    // (a second helper measured no faster on 2 cores, at 30% more CPU).
    let router_pool = rayon::ThreadPoolBuilder::new().num_threads(1).thread_name(|_| "kbackup-route".into()).build().map_err(|e| start(&e))?;
    let ctx = Ctx {
        writer: writer.clone(),
        health: health.clone(),
        generation: generation.clone(),
        consumer: std::sync::OnceLock::new(),
        unanswered: Mutex::new(ports::CommitGate::default()),
        cluster: Mutex::new(crate::health::ClusterWatch::default()),
        throttle: Mutex::new(kafka::Throttle::default()),
        reset: crate::consumer::start_without_commit(&config.kafka),
        watermarks: kafka::WatermarkReads::default(),
    };
    let consumer: Arc<BaseConsumer<Ctx>> =
        Arc::new(crate::consumer::create_client(&crate::consumer::group_config(&config.kafka), ctx).map_err(|e| start(&e))?);
    // Commits run on a thread of their own (bounded, see ports::COMMIT_WAIT): they need the consumer.
    let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
    let names = config.topic_names();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    consumer.subscribe(&names).map_err(|e| start(&e))?;
    info!(group = %config.kafka.group_id, topics = %names.join(","), storage = %storage.describe, "writer started");

    // Three batches are in the pipeline: `routed` (batch k-1) is applied by this thread while
    // the helper routes `polled` (batch k); then this thread polls batch k+1.
    let mut routed: Vec<Polled<'_>> = Vec::new();
    let mut routes: Vec<Option<(usize, Route)>> = Vec::new();
    let mut polled: Vec<Polled<'_>> = Vec::new();
    // The routes of the batch applied last, dropped by the routing helper with its next batch:
    // a route's names are reference-counted, and the helper took those counts up when it made
    // the route. Dropped here instead, every message moved a count on the other core's cache
    // line, on the line the helper's date cache was moving at the same time.
    let mut spent: Vec<Option<(usize, Route)>> = Vec::new();
    loop {
        let mut next = Vec::new();
        let mut next_routes = Vec::new();
        let mut step = Step { writer: &writer, consumer: &consumer, generation: &generation, stop: &stop };
        let exit = if polled.len() >= PARALLEL_ROUTING_MIN {
            let mut exit = false;
            let spent = std::mem::take(&mut spent);
            router_pool.in_place_scope(|s| {
                s.spawn(|_| {
                    drop(spent);
                    next_routes = routing.route_all(&polled);
                });
                exit = step.run(&mut routed, &routes, true, &mut next);
            });
            exit
        } else {
            next_routes = routing.route_all(&polled);
            let busy = !polled.is_empty();
            step.run(&mut routed, &routes, busy, &mut next)
        };
        if exit {
            break;
        }
        routed = std::mem::replace(&mut polled, next);
        spent = std::mem::replace(&mut routes, next_routes);
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
    let deadline = stop.deadline(Instant::now(), timeout);
    let summary_before = {
        let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
        w.begin_stop(deadline);
        w.summary().clone()
    };
    let (finished_tx, finished_rx) = channel();
    let finisher = writer.clone();
    std::thread::Builder::new()
        .name("kbackup-finish".into())
        .spawn(move || {
            let mut w = finisher.lock().unwrap_or_else(|p| p.into_inner());
            // Uploads get the time left but a commit's share: what they finish must still be committed.
            let uploads_until = deadline.checked_sub(commit_reserve(timeout)).unwrap_or(deadline);
            w.finish(&*consumer, uploads_until);
            let summary = w.summary().clone();
            let fatal = w.fatal().cloned();
            drop(w);
            // Leaving the group fires a final revoke; every buffer is already sealed and committed.
            consumer.unsubscribe();
            crate::consumer::close_and_destroy(consumer, deadline);
            let _ = finished_tx.send((summary, fatal));
        })
        .map_err(|e| start(&e))?;
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
            return Err(RunError::StopTimedOut { secs: timeout.as_secs() });
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
        unparsed_timestamps = s.unparsed_timestamps,
        newlines_replaced = s.newlines_replaced,
        skipped_already_stored = s.skipped_already_stored,
        rebuilt_files = s.rebuilt_files,
        already_there = s.already_there,
        abandoned_files = s.abandoned_files,
        uncommitted_partitions = s.uncommitted_partitions,
        stale_dropped = s.stale_dropped,
        lost_offsets = s.lost_offsets,
        buffer_blocks_reused = reused,
        buffer_blocks_fresh = fresh,
        "writer stopped"
    );
    if let Some(why) = fatal {
        return Err(why.into());
    }
    if summary.abandoned_files > 0 {
        return Err(RunError::Abandoned { files: summary.abandoned_files });
    }
    if summary.uncommitted_partitions > 0 {
        return Err(RunError::Uncommitted { partitions: summary.uncommitted_partitions });
    }
    Ok(summary)
}

/// The part of a stop's time kept for the final commit and leaving the group: a fifth of it,
/// between 1 and 5 seconds.
fn commit_reserve(timeout: Duration) -> Duration {
    (timeout / 5).clamp(Duration::from_secs(1), Duration::from_secs(5)).min(timeout)
}

#[cfg(test)]
mod stop_tests {
    use super::*;

    #[test]
    fn a_stop_is_bounded_from_when_it_was_asked_for_less_the_exit_margin() {
        let timeout = Duration::from_secs(4);
        let now = Instant::now();
        let never = StopRequest::default();
        assert!(!never.asked());
        assert_eq!(never.deadline(now, timeout), now + timeout - EXIT_MARGIN, "caught up: from now");

        let asked = StopRequest::default();
        asked.ask();
        let at = *asked.at.get().unwrap();
        assert!(asked.asked());
        // The loop noticed it 2 s late (it was waiting on an unanswered commit).
        assert_eq!(asked.deadline(at + Duration::from_secs(2), timeout), at + timeout - EXIT_MARGIN);
        // Noticed after the whole bound: give up at once.
        assert_eq!(asked.deadline(at + Duration::from_secs(9), timeout), at + Duration::from_secs(9));
        // A second signal does not move it (it exits at once anyway).
        asked.ask();
        assert_eq!(*asked.at.get().unwrap(), at);
        // A short bound keeps most of itself: the margin is at most a tenth.
        assert_eq!(asked.deadline(at, Duration::from_secs(1)), at + Duration::from_millis(900));
    }
}
