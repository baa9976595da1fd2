//! Periodic work: file age, memory pressure and backpressure, gauges, timed commits.

use std::time::Instant;

use rustc_hash::FxHashMap as HashMap;
use tracing::{error, info, warn};

use super::partition::{PartKey, Watermarks};
use super::Writer;
use crate::buffer::{BufferKey, SealReason};
use crate::metrics as m;
use crate::sabotage;
use crate::writer::ports::Broker;

impl Writer {
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
            let due: Vec<BufferKey> =
                self.files.open_files().filter(|(k, b)| self.topics[k.topic].policy().due(b, now).is_some()).map(|(k, _)| k.clone()).collect();
            for k in due {
                self.seal(&k, SealReason::Age);
            }
            self.apply_backpressure(broker);
            if !sabotage::on(sabotage::Rule::NoWatermarkRetry) && self.cadence.watermarks_due(now) {
                // Still to read, and the last read failed: asked again (a read is never on the
                // loop, so a broker that does not answer holds nothing).
                let unread: Vec<PartKey> = self
                    .parts
                    .iter()
                    .filter(|(_, st)| st.watermarks != Watermarks::Done && !st.reads.asked && st.reads.last.is_some())
                    .map(|(k, _)| *k)
                    .collect();
                for key in unread {
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
            for (&PartKey { topic: t, partition: p }, st) in &self.parts {
                if let Some(o) = &st.offsets {
                    metrics::gauge!(m::CONSUMED_OFFSET, "topic" => self.topics[t].name().to_string(), "partition" => p.to_string())
                        .set(o.position() as f64);
                }
            }
            self.report_retention_headroom();
            self.watch_commits(now);
            // A commit never answered would hold every later one back for good.
            if let Some(since) = broker.unanswered_since().filter(|_| !sabotage::on(sabotage::Rule::WaitForCommitForever)) {
                let waited = now.saturating_duration_since(since);
                if waited >= self.settings.commit_abandon && self.stop.fatal().is_none() {
                    self.stop.fail(super::decision::Fatal::CommitUnanswered { secs: waited.as_secs() });
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
    pub(super) fn report_retention_headroom(&self) {
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

    /// Per owned partition: is its backup still moving? A stall (see [`super::stall`]) turns
    /// readiness red naming the partition, sets `kbackup_partition_stalled_since_seconds` to
    /// when it began, and is logged when it begins and when it ends.
    fn watch_commits(&mut self, now: Instant) {
        let wall_ms = self.clock.wall_ms();
        let mut stalled = Vec::new();
        for (&key @ PartKey { topic: t, partition: p }, st) in self.parts.iter_mut() {
            let Some(o) = &st.offsets else { continue };
            st.watch.observe(now, o.position(), o.last_committed());
            let topic = &self.topics[t];
            let limit = topic.policy().max_age + super::stall::STALL_MARGIN;
            let oldest_awaiting = self.files.oldest_awaiting(key);
            let stall = st.watch.stall(now, o.position(), limit, oldest_awaiting);
            let since = match &stall {
                Some(super::stall::Stall::CommitStill { for_, .. }) | Some(super::stall::Stall::IntentWaiting { for_ }) => {
                    Some(wall_ms - for_.as_millis() as i64)
                }
                None => None,
            };
            metrics::gauge!(m::PARTITION_STALLED_SINCE, "topic" => topic.name().to_string(), "partition" => p.to_string())
                .set(since.map_or(0.0, |ms| ms as f64 / 1000.0));
            match &stall {
                Some(why) => {
                    if !st.stalled {
                        let since = chrono::DateTime::from_timestamp_millis(since.unwrap_or(wall_ms)).map(|d| d.to_rfc3339()).unwrap_or_default();
                        error!(topic = %topic.name(), partition = p, since, committed = o.last_committed(), position = o.position(), "the backup of this partition is stalled: {why}");
                    }
                    stalled.push(format!("{}/{p}: {why}", topic.name()));
                }
                None if st.stalled => {
                    info!(topic = %topic.name(), partition = p, committed = o.last_committed(), "the backup of this partition moves again")
                }
                None => {}
            }
            st.stalled = stall.is_some();
        }
        stalled.sort();
        self.health.set_stalled(stalled);
    }

    /// Pauses consumption while uploads hold most of the budget; resumes below half of it.
    pub(super) fn apply_backpressure(&mut self, broker: &dyn Broker) {
        if self.budget.pause(self.paused, self.files.inflight_bytes()) {
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
        self.budget.over(open, inflight) && self.budget.uploads_behind(inflight)
    }
}
