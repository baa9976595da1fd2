//! The writer's state machine: what it holds, how it is built, and its one `impl`.
//!
//! Its inputs are method calls — `apply_batch`, `after_batch`, `on_assign`, `on_revoke`,
//! `on_uploaded` (through the upload queue), `housekeeping` and `finish` — and its only ways out
//! are the [`Broker`], the [`UploadQueue`] and the [`Clock`]. The same code runs against
//! librdkafka and the object store in production and against a seeded world in the simulation
//! (`sim/`).
//!
//! The state lives in owned parts (`core/`), each keeping its fields to itself; this file is
//! the only one that holds them all, and it reads as the data flows, one section per stage:
//! messages, the per-batch decision, assignment and revocation, periodic work, upload results,
//! commits and intents, completion markers, sealing and the final stop.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap as HashMap;
use tracing::{debug, error, info, warn};

use self::budget::Budget;
use self::cadence::Cadence;
use self::commits::{Commits, Pending};
use self::completion::{Completion, CAUGHT_UP_CHECK, IDLE_CHECK, MARKER_RETRY};
use self::decision::UPLOAD_WAIT;
use self::files::{Files, InFlight, RebuildKey, Slot};
use self::marking::Marking;
use self::message::place_of;
use self::partition::{PartKey, Partitions, StallCheck, WatermarksRead};
use self::stop::Stop;
use self::summary::Summary;
use self::topics::Topics;
use super::{RunOptions, RunSummary};
use crate::buffer::{BufferKey, BufferKeyRef, SealReason};
use crate::completion::write::MarkerDone;
use crate::completion::Due;
use crate::config::Config;
use crate::failpoint;
use crate::health::Health;
use crate::intent::{self, Action, Intent, Place, Recovery};
use crate::metrics as m;
use crate::routing::{DateSource, Route};
use crate::sabotage::{self, Rule};
use crate::upload::{Existing, Outcome, UploadDone};
use crate::writer::ports::{Broker, BrokerError, Clock, FetchStart, MarkerQueue, Message, TopicPartition, UploadQueue, COMMIT_WAIT};

/// How long one read of the group's committed offsets may wait (read again until a minute has
/// passed): short, so that a stop asked for meanwhile is not held past its bound.
const COMMITTED_WAIT: Duration = Duration::from_secs(2);

mod budget;
mod cadence;
mod commits;
mod completion;
mod decision;
mod files;
mod marking;
mod message;
mod partition;
mod stall;
mod stop;
mod summary;
mod topics;

pub(crate) use self::completion::MARKERS_WAIT;
pub use self::decision::Fatal;
pub(crate) use self::decision::{Next, StopReason};
pub(crate) use self::message::Routed;

/// The writer's settings for assignment and revocation, read from the config at start.
struct Settings {
    revoke_timeout: Duration,
    /// The group's `session.timeout.ms`, for the message while waiting for an assignment.
    session_timeout_ms: String,
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
    parts: Partitions,
    uploads: Box<dyn UploadQueue>,
    /// The marker jobs (owning their port).
    completion: Completion,
    clock: Box<dyn Clock>,
    budget: Budget,
    /// What a commit carries, and when an unanswered one is given up.
    commits: Commits,
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
    /// The run's totals.
    summary: Summary,
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
        let group = crate::consumer::group_config(&config.kafka);
        let ms = |key: &str, default: u64| group.get(key).and_then(|v| v.parse().ok()).unwrap_or(default);
        Ok(Writer {
            topics,
            files: Files::default(),
            parts: Partitions::default(),
            uploads,
            completion: Completion::new(markers),
            clock,
            budget: Budget::new(buffer_budget),
            commits: Commits::new(
                config.writer.commit_metadata_limit,
                crate::writer::ports::commit_abandon(ms("session.timeout.ms", 45_000), ms("socket.timeout.ms", 60_000)),
            ),
            settings: Settings {
                revoke_timeout: Duration::from_secs(config.writer.revoke_timeout_secs),
                session_timeout_ms: group.get("session.timeout.ms").unwrap_or("45000").to_string(),
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
            summary: Summary::default(),
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
        self.summary.totals()
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

    /// What holds each owned partition's commit: the budget's state, each partition's offsets,
    /// recovery and record size, and its open, rebuilding and in-flight files (the
    /// simulation's report when commits stop moving).
    #[cfg(test)]
    pub(crate) fn describe_holds(&self) -> String {
        let mut out = format!(
            "  paused {}, open {} in flight {} of budget {}\n",
            self.paused,
            self.files.open_bytes(),
            self.files.inflight_bytes(),
            self.budget.limit()
        );
        let mut keys: Vec<&PartKey> = self.parts.keys().collect();
        keys.sort();
        for k in keys {
            let st = &self.parts[k];
            let safe = st.offsets().map_or(0, |o| o.safe());
            let record = st.metadata(safe, usize::MAX).unwrap_or_default();
            out.push_str(&format!(
                "  {}/{}: offsets {:?}, recovering {:?}, record {} bytes\n",
                k.topic,
                k.partition,
                st.offsets(),
                st.recovering(),
                record.len()
            ));
            for (b, buf) in self.files.open_files().filter(|(b, _)| b.topic == k.topic && b.partition == k.partition) {
                out.push_str(&format!("    open output {} {} from {} ({} events)\n", b.output, b.date, buf.first_offset, buf.events));
            }
            for (_, buf) in self.files.rebuilding().filter(|(p, _)| p == k) {
                out.push_str(&format!("    rebuilding from {} ({} events)\n", buf.first_offset, buf.events));
            }
            for f in self.files.in_flight().filter(|f| f.part() == *k) {
                let awaiting = self.files.awaiting().iter().any(|id| self.files.get(*id).is_some_and(|g| std::ptr::eq(g, f)));
                out.push_str(&format!("    in flight output {} {} held {} awaiting intent {awaiting}\n", f.output, f.intent.key, f.held));
            }
        }
        out
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

    // ---- Messages: tracking, recovery (skip or rebuild), appending to their files ----

    /// Applies a polled batch, in order, under one clock read (read per message, the clock
    /// showed up at ~4 % of a drain's CPU). The one entry for messages: the polling loop and
    /// the simulation both call it. Generic over the message type: librdkafka's borrowed
    /// messages in production, owned ones in the simulation.
    pub(crate) fn apply_batch<M: Message, R: std::borrow::Borrow<Route>>(&mut self, batch: impl IntoIterator<Item = Routed<M, R>>) {
        let now = self.clock.now();
        for r in batch {
            self.on_message(&r.message, r.topic, r.route.borrow(), r.generation, now);
        }
    }

    /// Applies one routed message polled in rebalance generation `generation`.
    fn on_message<M: Message>(&mut self, m: &M, t: usize, route: &Route, generation: u64, now: Instant) {
        let (p, off) = (m.partition(), m.offset());
        let Some(st) =
            self.parts.get_mut(&PartKey::new(t, p)).filter(|st| st.polled_in(generation) || sabotage::on(sabotage::Rule::KeepStaleMessages))
        else {
            // Polled before a rebalance took the partition away (and maybe gave it back): the
            // message is not tracked, so it is not committed and its owner reads it again.
            debug!(topic = m.topic(), partition = p, offset = off, "message polled before its partition was revoked; dropped (not committed)");
            self.summary.stale_dropped();
            return;
        };
        // No committed offset was known at assignment: tracking starts at the first message.
        st.offsets_from(off);
        if let Some(f) = route.unparsed_field.map(usize::from) {
            // A pattern that does not fit the data dates events by another rung: say so, loudly
            // at first, then at each power of ten (the counter has every one).
            let topic = &mut self.topics[t];
            let n = topic.unparsed(f);
            self.summary.unparsed_timestamp();
            let field = &topic.cfg().timestamp_fields[f];
            metrics::counter!(m::TIMESTAMPS_UNPARSED, "topic" => topic.name().to_string(), "field" => field.clone()).increment(1);
            if n == 10_u64.pow(n.ilog10()) {
                warn!(
                    topic = %topic.name(),
                    field = %field,
                    pattern = topic.cfg().timestamp_input_pattern.as_deref().unwrap_or("RFC 3339 / ISO-8601"),
                    count = n,
                    partition = p,
                    offset = off,
                    "a timestamp field holds a string its pattern cannot read; the event is dated by the next field or its record time (check timestamp_input_pattern)"
                );
            }
        }
        let topic = &self.topics[t];
        let payload = m.payload().unwrap_or_default();
        topic.consumed(payload.len());
        match route.source {
            DateSource::Invalid(reason) => {
                self.summary.invalid();
                metrics::counter!(m::INVALID_MESSAGES, "topic" => topic.name().to_string(), "reason" => reason.as_str()).increment(1);
                debug!(topic = m.topic(), partition = p, offset = off, reason = reason.as_str(), "invalid message");
            }
            DateSource::RecordTime => self.summary.record_time_dated(),
            DateSource::RecordTimeInstead(reason) => {
                self.summary.record_time_dated();
                metrics::counter!(m::RECORD_TIME_DATED, "topic" => topic.name().to_string(), "value" => reason.as_str()).increment(1);
            }
            DateSource::Field(_) | DateSource::Offset => {}
        }
        self.summary.consumed(payload.len());
        self.first_message_at.get_or_insert(now);

        // One read, one route, a file per output: each output stores the message once (the
        // files it opens hold their first offset; nothing is committed in between).
        let recovering = st.recovering();
        st.offsets_from(off).consumed(off);
        let mut rebuilding = false;
        for o in 0..self.topics.outputs(t) {
            rebuilding |= self.file_message(m, t, o, route, recovering.is_some(), now);
        }
        if recovering.is_some() || rebuilding {
            self.finish_rebuilds(t, p, off);
        }
        let (open, inflight) = (self.files.open_bytes(), self.files.inflight_bytes());
        if self.budget.over(open, inflight) && !self.budget.uploads_behind(inflight) {
            self.seal_largest();
        }
    }

    /// Files message `m` of topic `t` in its output `o`'s file on `route` (or the file
    /// rebuilt for it, or nowhere when that output stored it before: `recovering`). Returns true
    /// if it went into a rebuilt file.
    fn file_message<M: Message>(&mut self, m: &M, t: usize, o: u8, route: &Route, recovering: bool, now: Instant) -> bool {
        let (p, off) = (m.partition(), m.offset());
        let record_ms = m.timestamp().to_millis();
        let Some(st) = self.parts.get_mut(&PartKey::new(t, p)) else { return false };
        let output = self.topics.output(t, o);
        // What the file gets: the value (Secor's lines) or the whole record (also what a
        // Parquet file is transcoded from when sealed).
        let payload = m.payload().unwrap_or_default();
        let (line, line_breaks): (&[u8], Option<bool>) = if output.cfg().buffers_envelopes() {
            self.scratch.clear();
            crate::consumer::encode_record(&mut self.scratch, m, route.line_breaks.is_some());
            (&self.scratch, Some(false))
        } else {
            (payload, route.line_breaks)
        };

        // A partition recovered from intents: some re-read messages are already stored, some
        // belong in files rebuilt under their recorded names.
        let action = if recovering {
            let here = Place { prefix: route.prefix.as_deref(), date: &route.date, error: route.to_error_path, output: o };
            let earlier = route.earlier.as_deref().map(|e| place_of(e, o));
            st.recovery_action(off, here, earlier)
        } else {
            Action::Normal
        };
        if action == Action::Skip {
            self.summary.skipped_already_stored();
            metrics::counter!(m::SKIPPED_RECOVERED).increment(1);
            return false;
        }
        let rebuild = match action {
            Action::Rebuild(i) => Some(i),
            _ => None,
        };
        if o == 0 && output.markers() {
            // Per message: one string compare while the date does not change.
            let seen = st.marking_mut().saw_event(output.layout(), route, record_ms);
            output.note_late(&mut self.summary, p, &route.date, seen);
        }
        let key = rebuild.is_none().then_some(BufferKeyRef {
            topic: t,
            partition: p,
            prefix: route.prefix.as_ref(),
            date: &route.date,
            error: route.to_error_path,
            output: o,
        });
        let slot = match (rebuild, &key) {
            (Some(index), _) => Slot::Rebuild(RebuildKey { part: PartKey::new(t, p), index }),
            (None, Some(k)) => Slot::Open(*k),
            (None, None) => unreachable!("a key is made for every message not rebuilt"),
        };
        let rebuilding = rebuild.is_some();
        let appended = self.files.append(slot, off, line, line_breaks, record_ms, output.shape(), now);
        let size_due = !rebuilding && output.policy().due(appended.buffer, now) == Some(SealReason::Size);
        let (opened, newline) = (appended.opened, appended.newline_replaced);
        if opened {
            // The partition's one commit waits for the lowest file of every output.
            st.offsets_from(off).hold(off);
        }
        if newline && o == 0 {
            self.summary.newlines_replaced();
        }
        if let Some(key) = key.filter(|_| size_due) {
            self.seal(&BufferKey::from(&key), SealReason::Size);
        }
        rebuilding
    }

    /// Seals every rebuilt file of (t, p) whose recorded range ends at or before `off`, and
    /// drops the recovery once consumption has passed all of it.
    fn finish_rebuilds(&mut self, t: usize, p: i32, off: i64) {
        let Some(st) = self.parts.get_mut(&PartKey::new(t, p)) else {
            return;
        };
        let (epoch, ready) = (st.epoch(), st.ready_rebuilds(off));
        for (i, intent) in ready.files {
            let Some(buf) = self.files.take_rebuilt(RebuildKey { part: PartKey::new(t, p), index: i }) else {
                // None of its messages came back (deleted by retention before this run): the
                // earlier upload, if any, is all there is.
                warn!(key = %intent.key, "recorded file could not be rebuilt: its messages are gone");
                continue;
            };
            self.summary.rebuilt_file();
            metrics::counter!(m::FILES_REBUILT).increment(1);
            info!(key = %intent.key, events = buf.events, "rebuilding a file recorded by an earlier run");
            // Its intent is already in the partition's commits: no new record is needed. A blob of
            // that name is the earlier upload of this very file only if it ends with the same
            // events; any other is a collision (see `Existing::Rebuilt`).
            let now = self.clock.now();
            let charged = self.files.charged() + buf.charged();
            let (id, data) = self.files.launch(t, p, intent.output, epoch, intent.clone(), buf, SealReason::Size, Existing::Rebuilt, false, now);
            debug_assert!(
                self.files.charged() <= charged,
                "sealing a rebuilt file raised the memory charged from {charged} to {}",
                self.files.charged()
            );
            let data = data.expect("a file not awaiting its intent keeps its data");
            self.uploads.submit(self.topics.output(t, intent.output).upload_job(id, &intent.key, data, Existing::Rebuilt));
        }
        if ready.recovered {
            debug!(partition = p, "recovery finished");
        }
    }

    // ---- The per-batch decision ----

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
                events = self.summary.totals().events,
                drain_seconds = drain,
                events_per_second = (self.summary.totals().events as f64 / drain.max(1e-9)).round(),
                "caught up with the end offsets read at assignment"
            );
            return Next::Stop(StopReason::CaughtUp);
        }
        Next::Poll { paused: self.paused }
    }

    // ---- Assignment and revocation ----

    /// Takes over `assigned` (topic, partition) pairs in rebalance generation `generation`;
    /// returns, in the same order, where the consumer must start fetching each.
    pub(crate) fn on_assign(&mut self, broker: &dyn Broker, assigned: &[TopicPartition], generation: u64) -> Vec<FetchStart> {
        let mut starts = vec![FetchStart::Reset; assigned.len()];
        self.take_assigned(broker, assigned, generation, &mut starts);
        starts
    }

    fn take_assigned(&mut self, broker: &dyn Broker, assigned: &[TopicPartition], generation: u64, starts: &mut [FetchStart]) {
        self.ever_assigned = true;
        self.health.joined(true);
        self.health.broker_ok();
        metrics::counter!(m::REBALANCES, "kind" => "assign").increment(1);
        if self.deadline().is_some() {
            // Assigned while this writer leaves the group (another member left just before):
            // nothing more will be consumed here, and the closing consumer's requests time out,
            // so reading their offsets could only run past the stop's bound. Not taken: no
            // commit covers them, and their next owner reads them from the group's commit.
            info!(partitions = assigned.len(), "partitions assigned during a graceful stop: left for the next owner");
            return;
        }
        // The committed offsets and their intent records decide how each partition resumes;
        // without them it is not safe to consume. A fresh broker may need a moment to elect a
        // group coordinator.
        // Each read waits briefly, and none outlives a stop asked for meanwhile.
        let deadline = self.clock.now() + Duration::from_secs(60);
        let committed = loop {
            match broker.committed(assigned, self.call_wait(COMMITTED_WAIT)) {
                Ok(c) => break c,
                Err(e) if self.deadline().is_some() => {
                    info!(error = %e, partitions = assigned.len(), "reading committed offsets failed during a graceful stop: the partitions are left for the next owner");
                    return;
                }
                Err(e) if self.clock.now() < deadline => {
                    warn!(error = %e, "reading committed offsets failed; retrying");
                    self.clock.sleep(self.call_wait(Duration::from_millis(500)));
                }
                Err(e) => {
                    self.stop.fail(Fatal::CommittedUnreadable(e.to_string()));
                    return;
                }
            }
        };
        // Each partition's record, read once.
        let records: Vec<Option<intent::CommitRecord>> = committed.iter().map(|c| intent::read_record(&c.metadata)).collect();
        // Before any partition is taken: a record naming one output's file under another
        // output's folders means the entries were reordered, and nothing may be consumed.
        if let Some(why) = self.reordered_outputs(assigned, &records) {
            self.stop.fail(why);
            return;
        }
        for (((TopicPartition { topic, partition: p }, c), record), fetch) in assigned.iter().zip(committed).zip(records).zip(starts.iter_mut()) {
            let Some(&t) = self.topics.index_of(topic.as_str()).as_ref() else {
                continue;
            };
            let p = *p;
            let start = c.offset;
            *fetch = start.map_or(FetchStart::Reset, FetchStart::At);
            match (start, &record) {
                (Some(s), None) if self.settings.refuse_foreign_commits => {
                    self.stop.fail(Fatal::ForeignCommit { topic: topic.clone(), partition: p, offset: s });
                    return;
                }
                (Some(s), None) => {
                    warn!(
                        topic,
                        partition = p,
                        committed = s,
                        "resuming from an offset another client committed (no kbackup record): nothing says what below it was stored; if this group was Secor's, see `kbackup takeover` (docs/runbook.md)"
                    );
                    metrics::counter!(m::FOREIGN_COMMITS, "topic" => topic.clone()).increment(1);
                }
                (Some(s), Some(intent::CommitRecord { adopted: Some(a), .. })) => {
                    info!(topic, partition = p, committed = s, from = %a.source, read = a.offset, "resuming where `kbackup takeover` put it");
                }
                _ => {}
            }
            let (mut intents, progress) = record.map(|r| (r.intents, r.progress)).unwrap_or_default();
            let outputs = self.topics.outputs(t);
            intents.retain(|i| {
                let kept = i.output < outputs;
                if !kept {
                    // Its output was removed from the config: nothing writes its files now.
                    warn!(topic, partition = p, file = %i.key, output = i.output, "the commit record names a file of an output no longer configured; it is not rebuilt");
                }
                kept
            });
            crate::metrics::zero_partition_counters(topic, p);
            let topic_rt = &self.topics[t];
            let today = crate::completion::first_unpassed(topic_rt.tz(), self.clock.wall_ms(), topic_rt.grace_ms());
            if let Some(marked) = progress.marked.filter(|_| topic_rt.markers()) {
                topic_rt.report_complete_date(p, marked);
            }
            let marking = Marking::assigned(progress, today, topic_rt.completion_start());
            let read_watermarks = start.is_some() || self.opts.until_caught_up;
            let st = self.parts.assign(PartKey::new(t, p), generation, start, intents, marking, read_watermarks);
            let recovery = st.recovery();
            if !recovery.is_empty() {
                info!(topic, partition = p, skip = recovery.skip.len(), rebuild = recovery.rebuild.len(), "resuming from recorded upload intents");
            }
            self.ask_watermarks(broker, PartKey::new(t, p));
            // A number when there is a commit; absent (not the text "None") when there is none.
            match start {
                Some(c) => info!(topic, partition = p, committed = c, "partition assigned"),
                None => info!(topic, partition = p, "partition assigned (no committed offset: from the log start)"),
            }
        }
        metrics::gauge!(m::ASSIGNED_PARTITIONS).set(self.parts.len() as f64);
    }

    /// Why the assigned partitions' records cannot be resumed by this config's outputs: an
    /// intent of one output names a file under another output's folders.
    fn reordered_outputs(&self, assigned: &[TopicPartition], records: &[Option<intent::CommitRecord>]) -> Option<Fatal> {
        for (TopicPartition { topic, partition }, record) in assigned.iter().zip(records) {
            let (Some(t), Some(record)) = (self.topics.index_of(topic), record) else { continue };
            for i in &record.intents {
                if let Some(now) = self.topics.other_output_of(t, i.output, &i.key) {
                    return Some(Fatal::OutputsReordered {
                        topic: topic.clone(),
                        partition: *partition,
                        key: i.key.clone(),
                        recorded: i.output,
                        now,
                    });
                }
            }
        }
        None
    }

    /// Asks for a partition's watermarks, unless a read is already asked (answers come back
    /// to [`Writer::take_watermarks`]).
    fn ask_watermarks(&mut self, broker: &dyn Broker, key: PartKey) {
        let Some(st) = self.parts.get_mut(&key) else { return };
        if !st.ask_read() {
            return;
        }
        if sabotage::on(sabotage::Rule::WatermarksOnLoop) {
            // The rule before: read on the loop, waiting up to 30 s for the broker.
            let (topic, p) = (self.topics[key.topic].name().to_string(), key.partition);
            let read = broker.watermarks(&topic, p, Duration::from_secs(30));
            let now = self.clock.now();
            self.on_watermarks(key, read, now);
            return;
        }
        broker.ask_watermarks(self.topics[key.topic].name(), key.partition);
    }

    /// Takes the watermark reads answered since the last call.
    fn take_watermarks(&mut self, broker: &dyn Broker, now: Instant) {
        for a in broker.watermarks_answered() {
            let Some(&t) = self.topics.index_of(a.topic.as_str()).as_ref() else { continue };
            self.on_watermarks(PartKey::new(t, a.partition), a.read, now);
        }
    }

    /// A partition's watermarks were read (or the read failed). While they are still to read,
    /// the group's commit is checked against the log start and the end `--until-caught-up`
    /// reaches is set; a failed read is asked again by housekeeping (without them a lost range
    /// would go unreported and `--until-caught-up` would never end).
    fn on_watermarks(&mut self, key: PartKey, read: Result<(i64, i64), BrokerError>, now: Instant) {
        let Some(st) = self.parts.get_mut(&key) else { return };
        let (topic, p) = (self.topics[key.topic].name(), key.partition);
        match st.watermarks_answered(now, read, self.opts.until_caught_up) {
            WatermarksRead::Noted | WatermarksRead::Checked => {}
            WatermarksRead::Lost { committed, low, high } => {
                // Rare (data already lost): the recovery is copied to name its files.
                let (topic, recovery) = (topic.to_string(), st.recovery().clone());
                self.report_lost(&topic, p, committed, low, high, &recovery);
            }
            WatermarksRead::Failed(err) => {
                error!(topic, partition = p, error = %err, "reading watermarks failed; trying again every few seconds (the lost-offsets check and --until-caught-up wait for them)");
            }
        }
    }

    /// The group's commit `s` is below the log start `low`: Kafka deleted `[s, low)` before it
    /// was backed up. The one failure a backup must never hide: logged as an error, counted,
    /// shown by the readiness probe and in the run summary (`docs/runbook.md`, OffsetsLost).
    fn report_lost(&mut self, topic: &str, p: i32, s: i64, low: i64, high: i64, recovery: &Recovery) {
        // librdkafka resets an out-of-range position by `auto.offset.reset`: to the log start
        // by default, to the end if an operator chose "latest" (then the retained rest is skipped too).
        let until = if self.settings.offset_reset_to_end { high } else { low };
        let lost = (until - s) as u64;
        let recorded: Vec<&str> = recovery.skip.iter().chain(&recovery.rebuild).filter(|i| i.from < until).map(|i| i.key.as_str()).collect();
        self.summary.lost_offsets(lost);
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

    /// Gives up `revoked` partitions. `lost`: the group already gave them to someone else
    /// (session timeout), so nothing may be uploaded or committed for them any more.
    pub(crate) fn on_revoke(&mut self, broker: &dyn Broker, revoked: &[TopicPartition], lost: bool) {
        metrics::counter!(m::REBALANCES, "kind" => if lost { "lost" } else { "revoke" }).increment(1);
        for TopicPartition { topic, partition: p } in revoked {
            // This process no longer reports lag for it; its new owner does.
            metrics::gauge!(m::CONSUMER_LAG, "topic" => topic.clone(), "partition" => p.to_string()).set(0.0);
            metrics::gauge!(m::PARTITION_STALLED_SINCE, "topic" => topic.clone(), "partition" => p.to_string()).set(0.0);
        }
        let parts: HashSet<PartKey> =
            revoked.iter().filter_map(|tp| Some(PartKey::new(self.topics.index_of(tp.topic.as_str())?, tp.partition))).collect();
        if lost {
            // Another member may already own these partitions: uploading or committing now
            // could only duplicate its work. Everything uncommitted is re-read by the new owner.
            let dropped = self.files.drop_open(&parts) + self.files.drop_unrecorded(&parts);
            metrics::counter!(m::LOST_PARTITION_EVENTS).increment(dropped);
            warn!(
                partitions = parts.len(),
                dropped_events = dropped,
                "partitions lost (session timeout?); uncommitted events will be re-read by their new owner"
            );
        } else {
            self.seal_partitions(&parts, SealReason::Revoke);
            // Within a stop, the stop's own bound applies, not a fresh revoke timeout on top.
            let own = self.clock.now() + self.settings.revoke_timeout;
            let deadline = self.deadline().map_or(own, |d| d.min(own));
            let done = self.wait_uploads(broker, deadline, |w| {
                !w.files.in_flight().any(|f| parts.contains(&f.part()) && w.parts.is_current(&f.part(), f.epoch))
            });
            if !done {
                warn!("revoke timeout: some uploads of revoked partitions are still running; their events stay uncommitted");
            }
            self.commit(broker, Some(&parts));
            // Sealed files whose intents could not be recorded are dropped with the partition.
            self.files.drop_unrecorded(&parts);
        }
        for &part @ PartKey { topic: t, partition: p } in &parts {
            self.parts.remove(&part);
            self.files.drop_rebuilds(t, p);
            info!(topic = %self.topics[t].name(), partition = p, lost, "partition revoked");
        }
        metrics::gauge!(m::ASSIGNED_PARTITIONS).set(self.parts.len() as f64);
    }

    /// True once every owned partition reached its end offset.
    pub(crate) fn caught_up(&self) -> bool {
        self.ever_assigned && self.parts.all_caught_up()
    }

    // ---- Periodic work ----

    /// Periodic work: finished uploads, intents, file age, memory pressure, commits.
    pub(crate) fn housekeeping(&mut self, broker: &dyn Broker, now: Instant) {
        self.drain_uploads();
        self.drain_markers();
        self.take_watermarks(broker, now);
        let tick = self.cadence.tick(now);
        if self.paused && !tick {
            // Resume as soon as uploads catch up, not at the next tick (which checks anyway).
            self.apply_backpressure(broker);
        }
        if !self.files.awaiting().is_empty() && self.cadence.intents_due(now) {
            self.record_intents(broker);
        }
        if tick {
            self.health.loop_ran();
            if !self.ever_assigned && self.cadence.note_assignment_wait(now) {
                // Typically after a kill -9: the dead member holds its partitions until its session expires.
                info!(
                    session_timeout_ms = %self.settings.session_timeout_ms,
                    "still waiting for the group to assign partitions: a member that stopped without leaving (a crash, kill -9) keeps them until its session times out"
                );
            }
            // The budget's books must match the buffers they describe (a path that dropped
            // buffers by length rather than charge once let them drift upwards).
            debug_assert!(self.files.books_balance(), "the byte ledger is out of step with the files it counts");
            let due: Vec<BufferKey> = self
                .files
                .open_files()
                .filter(|(k, b)| self.topics.output(k.topic, k.output).policy().due(b, now).is_some())
                .map(|(k, _)| k.clone())
                .collect();
            for k in due {
                self.seal(&k, SealReason::Age);
            }
            self.apply_backpressure(broker);
            if !sabotage::on(sabotage::Rule::NoWatermarkRetry) && self.cadence.watermarks_due(now) {
                // Still to read, and the last read failed: asked again (a read is never on the
                // loop, so a broker that does not answer holds nothing).
                for key in self.parts.reads_to_retry() {
                    self.ask_watermarks(broker, key);
                }
            }
            let oldest = self.files.open_files().map(|(_, b)| b).map(|b| now.saturating_duration_since(b.opened_at)).max().unwrap_or_default();
            metrics::gauge!(m::BUFFERED_BYTES).set(self.files.open_bytes() as f64);
            metrics::gauge!(m::INFLIGHT_BYTES).set(self.files.inflight_bytes() as f64);
            crate::buffer::release_idle_blocks(now);
            metrics::gauge!(m::POOLED_BYTES).set(crate::buffer::pooled_bytes() as f64);
            metrics::gauge!(m::OLDEST_BUFFER_AGE).set(oldest.as_secs_f64());
            metrics::gauge!(m::PAUSED).set(if self.paused { 1.0 } else { 0.0 });
            for (&PartKey { topic: t, partition: p }, st) in self.parts.iter() {
                if let Some(o) = st.offsets() {
                    metrics::gauge!(m::CONSUMED_OFFSET, "topic" => self.topics[t].name().to_string(), "partition" => p.to_string())
                        .set(o.position() as f64);
                }
            }
            self.report_retention_headroom();
            self.watch_commits(now);
            // A commit never answered would hold every later one back for good.
            if let Some(since) = broker.unanswered_since().filter(|_| !sabotage::on(sabotage::Rule::WaitForCommitForever)) {
                if let Some(why) = self.commits.abandoned(since, now).filter(|_| self.stop.fatal().is_none()) {
                    self.stop.fail(why);
                }
            }
            metrics::gauge!(m::READY).set(if self.health.ready().is_ok() { 1.0 } else { 0.0 });
        }
        // A caught-up `--until-caught-up` run only waits for its last uploads and markers:
        // each is committed (and the markers it settles asked for) as it lands, not a commit
        // interval later, so the run ends with its drain. Still spaced, so that a broker
        // refusing commits is not asked in a tight loop.
        let ending = self.opts.until_caught_up && self.stop.caught_up_at().is_some();
        if self.cadence.commit_due(now, ending) {
            self.commit(broker, None);
            // Right after the commit: a date is settled only once its offsets are committed.
            self.judge_completion(broker);
        }
    }

    /// Per owned partition: how long until Kafka's retention deletes its oldest message not yet
    /// committed (the first message of the oldest open or in-flight file), so ops can act before
    /// anything is lost. A partition holding nothing uncommitted has the whole retention ahead.
    fn report_retention_headroom(&self) {
        let now_ms = self.clock.wall_ms();
        let mut oldest: HashMap<PartKey, i64> = HashMap::default();
        let mut note = |t: usize, p: i32, ms: Option<i64>| {
            if let Some(ms) = ms {
                let e = oldest.entry(PartKey::new(t, p)).or_insert(ms);
                *e = (*e).min(ms);
            }
        };
        for (k, b) in self.files.open_files() {
            note(k.topic, k.partition, b.first_record_ms);
        }
        for (part, b) in self.files.rebuilding() {
            note(part.topic, part.partition, b.first_record_ms);
        }
        for f in self.files.in_flight() {
            note(f.topic, f.partition, f.first_record_ms);
        }
        // Freshness per topic: the oldest event held that is not uploaded yet.
        for (t, topic) in self.topics.iter() {
            let oldest_ms = oldest.iter().filter(|(k, _)| k.topic == t).map(|(_, ms)| *ms).min();
            let age = oldest_ms.map_or(0, |ms| (now_ms - ms).max(0));
            metrics::gauge!(m::OLDEST_UNBACKED_AGE, "topic" => topic.name().to_string()).set(age as f64 / 1000.0);
        }
        for &part @ PartKey { topic: t, partition: p } in self.parts.keys() {
            let topic = &self.topics[t];
            let Some(retention) = topic.retention_ms() else { continue };
            let age = oldest.get(&part).map_or(0, |ms| (now_ms - ms).max(0));
            metrics::gauge!(m::RETENTION_HEADROOM, "topic" => topic.name().to_string(), "partition" => p.to_string())
                .set((retention - age) as f64 / 1000.0);
        }
    }

    /// Per owned partition: is its backup still moving? A stall (see [`self::stall`]) turns
    /// readiness red naming the partition, sets `kbackup_partition_stalled_since_seconds` to
    /// when it began, and is logged when it begins and when it ends.
    fn watch_commits(&mut self, now: Instant) {
        let wall_ms = self.clock.wall_ms();
        let mut stalled = Vec::new();
        for (&key @ PartKey { topic: t, partition: p }, st) in self.parts.iter_mut() {
            let topic = &self.topics[t];
            let limit = topic.policy().max_age + self::stall::STALL_MARGIN;
            let Some(StallCheck { stall, was_stalled, position, committed }) = st.check_stall(now, limit, self.files.oldest_awaiting(key)) else {
                continue;
            };
            let since = match &stall {
                Some(self::stall::Stall::CommitStill { for_, .. }) | Some(self::stall::Stall::IntentWaiting { for_ }) => {
                    Some(wall_ms - for_.as_millis() as i64)
                }
                None => None,
            };
            metrics::gauge!(m::PARTITION_STALLED_SINCE, "topic" => topic.name().to_string(), "partition" => p.to_string())
                .set(since.map_or(0.0, |ms| ms as f64 / 1000.0));
            match &stall {
                Some(why) => {
                    if !was_stalled {
                        let since = chrono::DateTime::from_timestamp_millis(since.unwrap_or(wall_ms)).map(|d| d.to_rfc3339()).unwrap_or_default();
                        error!(topic = %topic.name(), partition = p, since, committed, position, "the backup of this partition is stalled: {why}");
                    }
                    stalled.push(format!("{}/{p}: {why}", topic.name()));
                }
                None if was_stalled => {
                    info!(topic = %topic.name(), partition = p, committed, "the backup of this partition moves again")
                }
                None => {}
            }
        }
        stalled.sort();
        self.health.set_stalled(stalled);
    }

    /// Pauses consumption while uploads hold most of the budget; resumes below half of it.
    fn apply_backpressure(&mut self, broker: &dyn Broker) {
        if self.budget.pause(self.paused, self.uploads_pressing()) {
            // Re-applied on every check so partitions assigned meanwhile are paused too.
            self.pause(broker, "uploads are behind: consumption paused");
        } else if self.paused && !sabotage::on(sabotage::Rule::NeverResume) {
            if let Err(e) = broker.resume_all() {
                warn!(error = %e, "resuming partitions failed");
                return;
            }
            info!("uploads caught up: consumption resumed");
            self.paused = false;
        }
    }

    /// Pauses every assigned partition; `why` is logged when consumption was running.
    pub(crate) fn pause(&mut self, broker: &dyn Broker, why: &str) {
        if let Err(e) = broker.pause_all() {
            warn!(error = %e, "pausing partitions failed");
        }
        if !self.paused {
            warn!(
                buffered_bytes = self.files.open_bytes(),
                inflight_bytes = self.files.inflight_bytes(),
                files = self.files.inflight_count(),
                "{why}"
            );
        }
        self.paused = true;
    }

    /// True when buffers and uploads together fill the budget and uploads hold half of it:
    /// the polling loop then waits for uploads rather than poll more.
    pub(crate) fn waiting_for_uploads(&self) -> bool {
        let (open, inflight) = (self.files.open_bytes(), self.files.inflight_bytes());
        self.budget.over(open, inflight) && self.budget.uploads_behind(self.uploads_pressing())
    }

    /// The bytes in flight the budget's wait and pause count: every file in flight, except,
    /// while some partition's recovery still needs messages read, the files still waiting for
    /// room in their record. Those wait for the recovery (its rebuilt files hold the commit that
    /// frees the room), which waits for reads: holding consumption for them waited for ever
    /// (simulation seed 1308, two outputs: a record full of both outputs' intents). Files being
    /// uploaded still count, so a slow store still holds consumption back.
    fn uploads_pressing(&self) -> u64 {
        let inflight = self.files.inflight_bytes();
        let recovering = self.parts.iter().any(|(_, st)| st.recovering().is_some());
        if recovering && !sabotage::on(Rule::PauseDuringRecovery) {
            inflight - self.files.awaiting_bytes()
        } else {
            inflight
        }
    }

    // ---- Upload results ----

    pub(crate) fn on_uploaded(&mut self, done: UploadDone) {
        let Some(f) = self.files.landed(done.id) else {
            return;
        };
        let current = self.parts.is_current(&f.part(), f.epoch);
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
        self.summary.uploaded(done.stored_bytes, done.outcome == Outcome::AlreadyThere);
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
        if let Some(st) = self.parts.get_mut(&f.part()).filter(|_| current) {
            completion::note_uploaded(st, &self.topics[f.topic], &f, done.outcome);
        }
        if !(current && self.parts.get_mut(&f.part()).is_some_and(|st| st.release(f.held))) {
            // The partition was revoked or lost while this upload ran; its new owner re-reads
            // these events from the last commit and finds this file through its intent.
            warn!(key = %f.intent.key, "upload finished after its partition was given up");
        }
    }

    /// A blob of the file's name already holds other events (two owners' clocks gave the same
    /// `{currentTimestamp}`). The file's data is gone (compressed and dropped by the uploader),
    /// so nothing is renamed: its intent is removed from the record — rewritten by the final
    /// commit even if the offset stays, else the next owner would rebuild it under the taken
    /// name — its events stay held (never committed) and the writer stops, so that they are read
    /// again after a restart, under a new name.
    fn stop_on_name_conflict(&mut self, f: &InFlight) {
        if let Some(st) = self.parts.get_mut(&f.part()) {
            st.drop_taken_name(&f.intent);
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
    fn wait_uploads(&mut self, broker: &dyn Broker, deadline: Instant, pred: impl Fn(&Writer) -> bool) -> bool {
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

    // ---- Offset commits and upload intents ----

    /// Commits the intents of sealed files (with each partition's safe offset), then starts
    /// their uploads. A file whose intent is not confirmed is never uploaded.
    fn record_intents(&mut self, broker: &dyn Broker) {
        if self.files.awaiting().is_empty() {
            return;
        }
        // Counted per file, so `sealed:n` does not depend on how seals are batched.
        for _ in self.files.awaiting() {
            failpoint::hit(failpoint::SEALED);
        }
        let (batch, commits) = self.next_intents();
        if batch.is_empty() {
            return;
        }
        let recorded = if sabotage::on(sabotage::Rule::UploadBeforeIntent) { Ok(()) } else { self.commit_with_metadata(broker, &commits) };
        match recorded {
            Ok(()) => {
                for &id in &batch {
                    failpoint::hit(failpoint::INTENT_RECORDED);
                    let Some((f, data)) = self.files.recorded(id) else { continue };
                    let job = self.topics.output(f.topic, f.output).upload_job(id, &f.intent.key, data, f.existing);
                    self.uploads.submit(job);
                }
            }
            Err(e) => {
                // Not recorded (or not known to be): do not upload. The intents come out of the
                // log again; if the broker did store them, recovery rebuilds those files.
                for id in &batch {
                    let f = self.files.get(*id).expect("awaiting files are in flight");
                    if let Some(st) = self.parts.get_mut(&f.part()) {
                        st.unrecord(&f.intent);
                    }
                }
                self.cadence.intents_failed(self.clock.now());
                warn!(error = %e, files = batch.len(), "recording upload intents failed; will retry");
            }
        }
    }

    /// The awaiting files whose intents fit in their partitions' next commit, added to the
    /// partitions' intent logs, and those commits.
    ///
    /// A partition's record must list every file whose range reaches past its commit, and the
    /// broker caps its size (`writer.commit_metadata_limit`). A file still open (a rare prefix,
    /// a date in progress, kept for its age while other routes roll) holds the commit at its
    /// first offset; every file recorded meanwhile stays in the record, and once the record was
    /// full the open file, sealed at last, never fitted: the commit never moved again and
    /// nothing of the partition reached storage (issue 34). So files are taken lowest first
    /// offset first, and before the record passes half its limit, every open file whose range
    /// begins before the end of the file being added is sealed first and recorded ahead of it:
    /// what stays open then begins after every recorded range, and its intent never waits for
    /// one of them to be committed past. (Files opened later begin after them anyway.)
    fn next_intents(&mut self) -> (Vec<u64>, Vec<Pending>) {
        let mut batch = Vec::new();
        let mut commits = Vec::new();
        let mut parts: Vec<PartKey> = Vec::new();
        for id in self.files.awaiting() {
            let part = self.files.get(*id).expect("awaiting files are in flight").part();
            if !parts.contains(&part) {
                parts.push(part);
            }
        }
        for part in parts {
            if self.admit(part, &mut batch) > 0 {
                commits.push(self.commits.admitted(&self.parts, part));
            }
        }
        (batch, commits)
    }

    /// Adds the awaiting files of `part` that fit to its intent log and `batch`, lowest first
    /// offset first (sealing open files that would otherwise be left without room, see
    /// `next_intents`); returns how many. The first that does not fit waits for a later commit.
    fn admit(&mut self, part: PartKey, batch: &mut Vec<u64>) -> usize {
        let limit = self.commits.metadata_limit();
        let mut added = 0;
        loop {
            let Some(offset) = self.parts.get(&part).and_then(|st| st.offsets()).map(|o| o.safe()) else { return added };
            let next = self
                .files
                .awaiting()
                .iter()
                .filter(|id| !batch.contains(id))
                .filter_map(|id| self.files.get(*id).filter(|f| f.part() == part).map(|f| (f.held, *id)))
                .min();
            let Some((_, id)) = next else { return added };
            let intent = self.files.get(id).expect("awaiting files are in flight").intent.clone();
            let st = self.parts.get_mut(&part).expect("checked above");
            st.record(intent.clone());
            let fits = st.metadata(offset, limit);
            let past_half = fits.as_ref().is_none_or(|md| md.len() > limit / 2);
            if past_half && !sabotage::on(sabotage::Rule::NoRecordRoomForOpenFiles) && self.seal_open_before(part, intent.to) {
                // They begin before this file ends: recorded first (lowest first offset first).
                self.parts.get_mut(&part).expect("checked above").unrecord(&intent);
                continue;
            }
            if fits.is_none() {
                self.parts.get_mut(&part).expect("checked above").unrecord(&intent);
                if offset == self.files.get(id).map_or(i64::MIN, |f| f.held) {
                    // Cannot happen while every owner follows the rule above (an earlier
                    // release's record, inherited at assignment, can be fuller).
                    error!(
                        topic = %self.topics[part.topic].name(),
                        partition = part.partition,
                        limit,
                        "the file holding this partition's commit does not fit in its commit record; raise writer.commit_metadata_limit (and the brokers' offset.metadata.max.bytes)"
                    );
                }
                return added;
            }
            batch.push(id);
            added += 1;
        }
    }

    /// Seals the open files of `part` whose first offset is at or below `to`; true if any.
    fn seal_open_before(&mut self, part: PartKey, to: i64) -> bool {
        let keys: Vec<BufferKey> = self
            .files
            .open_files()
            .filter(|(k, b)| k.topic == part.topic && k.partition == part.partition && b.first_offset <= to)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            failpoint::hit(failpoint::SEALED);
            self.seal(k, SealReason::Record);
        }
        !keys.is_empty()
    }

    /// One synchronous commit of offsets with metadata; updates the partitions on success.
    fn commit_with_metadata(&mut self, broker: &dyn Broker, commits: &[Pending]) -> Result<(), BrokerError> {
        let entries = Commits::entries(commits, &self.topics);
        let started = self.clock.now();
        // During a stop a commit waits no longer than the time left.
        let wait = self.call_wait(COMMIT_WAIT);
        if wait.is_zero() {
            metrics::counter!(m::COMMIT_FAILURES).increment(1);
            return Err(BrokerError::new("no time left before the stop's deadline to commit"));
        }
        if let Err(e) = broker.commit(&entries, wait) {
            metrics::counter!(m::COMMIT_FAILURES).increment(1);
            return Err(e);
        }
        metrics::counter!(m::COMMITS).increment(1);
        metrics::histogram!(m::COMMIT_SECONDS).record(self.clock.now().duration_since(started).as_secs_f64());
        self.health.committed();
        for c in commits {
            debug!(topic = %self.topics[c.part.topic].name(), partition = c.part.partition, offset = c.offset, "committed");
            if let Some(st) = self.parts.get_mut(&c.part) {
                st.committed(c.offset);
            }
        }
        failpoint::hit(failpoint::COMMITTED);
        Ok(())
    }

    /// Commits every partition whose safe offset moved (only `only` if given), with its intents.
    fn commit(&mut self, broker: &dyn Broker, only: Option<&HashSet<PartKey>>) {
        self.cadence.committed(self.clock.now());
        let commits = self.commits.due(&self.parts, only);
        if commits.is_empty() {
            return;
        }
        // Not fatal: the offsets stay due and the next commit carries them.
        if let Err(e) = self.commit_with_metadata(broker, &commits) {
            warn!(error = %e, "offset commit failed; will retry");
        }
    }

    // ---- Completion markers ----

    /// Asks for the markers that are due: per partition, the dates it passed whose files are
    /// settled; open files of a passed date are sealed so that it settles.
    fn judge_completion(&mut self, broker: &dyn Broker) {
        if self.stop.fatal().is_some() {
            // A writer that cannot go on (a file of a date found its name taken, say) holds
            // events it did not store: it declares nothing.
            return;
        }
        let now = self.clock.now();
        let wall_ms = self.clock.wall_ms();
        let keys = self.marked_partitions();
        for &key in &keys {
            self.share_start(key);
        }
        // A caught-up `--until-caught-up` run is about to stop: a late date's file need not
        // wait for its age, its superseding marker is written before the run ends.
        let ending = self.opts.until_caught_up && self.stop.caught_up_at().is_some();
        for key in keys {
            if self.parts[&key].marking().busy(now) {
                continue;
            }
            for due in self.dues(broker, key, now, wall_ms, IDLE_CHECK) {
                let date_str = self.topics[key.topic].layout().dates().format(due.date());
                let settled = self.parts.get(&key).is_some_and(|st| completion::settled(st, &self.files, key, &date_str));
                if settled || sabotage::on(sabotage::Rule::MarkUnsettled) {
                    if let Some(st) = self.parts.get_mut(&key) {
                        self.completion.submit(key, st, &self.topics[key.topic], due, date_str);
                    }
                    break;
                }
                if matches!(due, Due::Next(_)) || ending {
                    // Passed but not settled: its open files need not wait for their age. (A
                    // late date's file does: late events trickle, and each would be a file.)
                    for k in &completion::open_of_day(&self.files, key, &date_str) {
                        self.seal(k, SealReason::DatePassed);
                    }
                    // Dates are marked in order.
                    break;
                }
            }
        }
    }

    /// The owned partitions of topics with completion markers, in key order (markers are judged
    /// and waited for in one order whatever the map's).
    fn marked_partitions(&self) -> Vec<PartKey> {
        let mut keys: Vec<PartKey> = self.parts.keys().copied().filter(|k| self.topics[k.topic].markers()).collect();
        keys.sort_unstable();
        keys
    }

    /// A partition never marked judges dates from the earliest first date of its topic's
    /// partitions this writer owns (an empty partition's own start is the day it was
    /// assigned, yet it is complete for every date its siblings are judged for). Not with
    /// `completion_start_date`, which every partition shares already.
    fn share_start(&mut self, key: PartKey) {
        let Some(offered) = self.parts.get(&key).and_then(|st| st.marking().offered_start()) else { return };
        let first = self.topics[key.topic].offer_first_date(offered);
        // Only a partition at its log end (by the last watermark read) takes it: one still
        // reading has events ahead that may be of those dates, and finds its own start.
        if !self.parts.get(&key).is_some_and(|st| st.at_log_end()) {
            return;
        }
        let Some(st) = self.parts.get_mut(&key) else { return };
        if st.marking_mut().take_start(first) {
            st.rewrite_record();
        }
    }

    /// The dates the partition passed and has not marked (late ones first): passed by its
    /// events, or, once it is caught up with its log end, by the wall clock.
    fn dues(&mut self, broker: &dyn Broker, key: PartKey, now: Instant, wall_ms: i64, fresh: Duration) -> Vec<Due> {
        let (tz, grace) = (self.topics[key.topic].tz(), self.topics[key.topic].grace_ms());
        let Some(mk) = self.parts.get(&key).map(|st| st.marking()) else { return Vec::new() };
        let dues = mk.dues_by_events(tz, grace);
        if !dues.is_empty() {
            return dues;
        }
        let by_wall = mk.dues_by_wall(tz, grace, wall_ms);
        if by_wall.is_empty() || !self.caught_up_now(broker, key, now, fresh) {
            return dues;
        }
        by_wall
    }

    /// The owned partitions whose marker is being written, or with a passed date not yet
    /// marked or a late date not yet marked again: a caught-up `--until-caught-up` run writes
    /// them before it stops (a backfill's passed dates get their markers, a late event's date
    /// its superseding one). A partition whose marker failed in this assignment is not waited
    /// for: the next run writes it, from the progress in the commit record.
    fn markers_outstanding(&mut self, broker: &dyn Broker) -> Vec<PartKey> {
        if self.stop.fatal().is_some() {
            return Vec::new();
        }
        let (now, wall_ms) = (self.clock.now(), self.clock.wall_ms());
        let keys = self.marked_partitions();
        let mut out = Vec::new();
        for key in keys {
            let mk = self.parts[&key].marking();
            let (writing, failed) = (mk.writing(), mk.failed());
            if writing || (!failed && !self.dues(broker, key, now, wall_ms, CAUGHT_UP_CHECK).is_empty()) {
                out.push(key);
            }
        }
        out
    }

    /// True if the partition's consumption reached its log end (read again once the last read
    /// is `fresh` old): an idle partition passes a date by the wall clock.
    fn caught_up_now(&mut self, broker: &dyn Broker, key: PartKey, now: Instant, fresh: Duration) -> bool {
        if self.parts[&key].read_older_than(now, fresh) {
            // Asked off the loop; until the answer comes, the last one stands.
            self.ask_watermarks(broker, key);
        }
        self.parts[&key].at_log_end()
    }

    /// Takes every marker result that is ready.
    pub(crate) fn drain_markers(&mut self) {
        while let Some(done) = self.completion.next() {
            self.on_marker(done);
        }
    }

    fn on_marker(&mut self, done: MarkerDone) {
        let job = done.job;
        let key = PartKey::new(job.topic, job.partition);
        let topic = &self.topics[job.topic];
        let Some(st) = self.parts.get_mut(&key).filter(|st| st.epoch() == job.epoch) else { return };
        match done.result {
            Ok(stated) => {
                let outcome = st.marking_mut().job_done(job.date, job.late);
                // The next commit carries the progress, even if the offset did not move.
                st.rewrite_record();
                if stated.written {
                    metrics::counter!(m::MARKERS_WRITTEN, "topic" => topic.name().to_string()).increment(1);
                    self.summary.marker_written();
                }
                if let Some(marked) = outcome.marked {
                    topic.report_complete_date(job.partition, marked);
                }
                info!(
                    topic = %topic.name(),
                    partition = job.partition,
                    date = %job.date_str,
                    marker = %stated.key,
                    files = stated.files,
                    events = stated.events,
                    complete_below = job.complete_below,
                    written = stated.written,
                    late = job.late,
                    "date complete"
                );
                failpoint::hit(failpoint::MARKER_WRITTEN);
            }
            Err(e) => {
                metrics::counter!(m::MARKER_FAILURES, "topic" => topic.name().to_string()).increment(1);
                warn!(topic = %topic.name(), partition = job.partition, date = %job.date_str, error = %e, "writing a completion marker failed; will retry");
                st.marking_mut().job_failed(self.clock.now() + MARKER_RETRY);
            }
        }
    }

    // ---- Sealing and the final stop ----

    /// Seals the largest open buffer so its bytes move on to storage.
    fn seal_largest(&mut self) {
        if let Some(key) = self.files.largest_open() {
            self.seal(&key, SealReason::Memory);
        }
    }

    /// Names a buffer and queues it for its intent record; the upload starts after that.
    fn seal(&mut self, key: &BufferKey, reason: SealReason) {
        let charged = self.files.charged();
        let Some(buf) = self.files.take_open(key) else {
            return;
        };
        let st = self.parts.get(&PartKey::new(key.topic, key.partition));
        let name_key = self.topics.name_file(key, buf.first_offset, &*self.clock, |file| st.is_some_and(|st| st.names(file)));
        let intent = Arc::new(Intent {
            key: name_key,
            prefix: key.prefix.as_deref().map(String::from),
            date: key.date.to_string(),
            error: key.error,
            from: buf.first_offset,
            to: buf.last_offset,
            record_dated: self.dates_records_by_record_time(key.topic),
            output: key.output,
        });
        let epoch = st.map_or(0, |s| s.epoch());
        let now = self.clock.now();
        self.files.launch(key.topic, key.partition, key.output, epoch, intent, buf, reason, Existing::Compare, true, now);
        // Sealing for memory must free room or at least not take more: a seal that raised the
        // total (the Parquet working set charged only here) let a 256 MiB budget hold 602 MB.
        debug_assert!(self.files.charged() <= charged, "sealing raised the memory charged from {charged} to {}", self.files.charged());
    }

    /// Seals every open file of the given partitions.
    fn seal_partitions(&mut self, parts: &HashSet<PartKey>, reason: SealReason) {
        let keys: Vec<BufferKey> = self.files.open_keys().filter(|k| parts.contains(&PartKey::new(k.topic, k.partition))).cloned().collect();
        for k in &keys {
            self.seal(k, reason);
        }
    }

    /// Seals everything, waits for the uploads until `deadline`, and commits.
    ///
    /// Files being rebuilt that are not complete are not uploaded: a partial file under a
    /// recorded name could stand in for the complete one. Their intents stay recorded and
    /// their events uncommitted, so the next owner rebuilds them.
    pub(crate) fn finish(&mut self, broker: &dyn Broker, deadline: Instant) {
        let keys: Vec<BufferKey> = self.files.open_keys().cloned().collect();
        for k in &keys {
            self.seal(k, SealReason::Shutdown);
        }
        if !self.wait_uploads(broker, deadline, |w| w.files.inflight_count() == 0) {
            self.summary.abandoned_files(self.files.inflight_count() as u64);
            error!(files = self.files.inflight_count(), "shutdown timeout: some files were not uploaded");
        }
        // The final commit is retried until the stop's deadline: an exit that reports success
        // must mean that what was uploaded is committed too.
        loop {
            self.commit(broker, None);
            let due = self.uncommitted_partitions();
            let left = self.stop.begun().map_or(Duration::ZERO, |d| d.saturating_duration_since(self.clock.now()));
            if due == 0 || left.is_zero() {
                self.summary.uncommitted_partitions(due as u64);
                break;
            }
            self.clock.sleep(left.min(Duration::from_millis(200)));
        }
    }

    /// Owned partitions whose safe offset is ahead of their last successful commit.
    pub(crate) fn uncommitted_partitions(&self) -> usize {
        self.parts.uncommitted()
    }
}
