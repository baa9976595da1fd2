//! Assignment and revocation: recoveries from recorded intents, lost offsets, handing
//! partitions over.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::decision::Fatal;
use super::partition::{PartKey, Partition, WatermarkReads, Watermarks};
use super::Writer;
use crate::buffer::SealReason;
use crate::intent::{self, Recovery};
use crate::metrics as m;
use crate::sabotage;
use crate::writer::ports::{Broker, BrokerError, FetchStart, TopicPartition};

/// How long one read of the group's committed offsets may wait (read again until a minute has
/// passed): short, so that a stop asked for meanwhile is not held past its bound.
const COMMITTED_WAIT: Duration = Duration::from_secs(2);

impl Writer {
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
        for ((TopicPartition { topic, partition: p }, c), fetch) in assigned.iter().zip(committed).zip(starts.iter_mut()) {
            let Some(&t) = self.topics.index_of(topic.as_str()).as_ref() else {
                continue;
            };
            let p = *p;
            let start = c.offset;
            *fetch = start.map_or(FetchStart::Reset, FetchStart::At);
            let record = intent::read_record(&c.metadata);
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
            let (intents, progress) = record.map(|r| (r.intents, r.progress)).unwrap_or_default();
            crate::metrics::zero_partition_counters(topic, p);
            let epoch = self.next_epoch;
            self.next_epoch += 1;
            let mut st = Partition::assigned(epoch, generation, start);
            let topic_rt = &self.topics[t];
            let today = crate::completion::first_unpassed(topic_rt.tz(), self.clock.wall_ms(), topic_rt.grace_ms());
            if let Some(marked) = progress.marked.filter(|_| topic_rt.markers()) {
                topic_rt.report_complete_date(p, marked);
            }
            st.marking = super::marking::Marking::assigned(progress, today, topic_rt.completion_start());
            if let Some(s) = start {
                st.recovery = Recovery::new(s, intents);
                // Every recorded intent that is not wholly committed stays in the record.
                // In the order they were recorded: where ranges of one route overlap, that order
                // decides which file a message belongs to (`Recovery::action`).
                for i in st.recovery.pending() {
                    st.intents.push(Arc::new(i.clone()));
                }
                if !st.recovery.is_empty() {
                    info!(
                        topic,
                        partition = p,
                        skip = st.recovery.skip.len(),
                        rebuild = st.recovery.rebuild.len(),
                        "resuming from recorded upload intents"
                    );
                }
            }
            if start.is_some() || self.opts.until_caught_up {
                st.watermarks = Watermarks::Unread { committed: start };
            }
            self.parts.insert(PartKey::new(t, p), st);
            self.ask_watermarks(broker, PartKey::new(t, p));
            // A number when there is a commit; absent (not the text "None") when there is none.
            match start {
                Some(c) => info!(topic, partition = p, committed = c, "partition assigned"),
                None => info!(topic, partition = p, "partition assigned (no committed offset: from the log start)"),
            }
        }
        metrics::gauge!(m::ASSIGNED_PARTITIONS).set(self.parts.len() as f64);
    }

    /// Asks for a partition's watermarks, unless a read is already asked (answers come back
    /// to [`Writer::take_watermarks`]).
    pub(super) fn ask_watermarks(&mut self, broker: &dyn Broker, key: PartKey) {
        let Some(st) = self.parts.get_mut(&key) else { return };
        if st.reads.asked {
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
        st.reads.asked = true;
        broker.ask_watermarks(self.topics[key.topic].name(), key.partition);
    }

    /// Takes the watermark reads answered since the last call.
    pub(super) fn take_watermarks(&mut self, broker: &dyn Broker, now: Instant) {
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
        st.reads = WatermarkReads { asked: false, last: Some((now, read.as_ref().ok().copied())) };
        let Watermarks::Unread { committed: start } = st.watermarks else { return };
        let (topic, p) = (self.topics[key.topic].name().to_string(), key.partition);
        match read {
            Ok((low, high)) => {
                if let Some(s) = start.filter(|s| *s < low) {
                    // Rare (data already lost): the recovery is copied to name its files.
                    let recovery = st.recovery.clone();
                    self.report_lost(&topic, p, s, low, high, &recovery);
                }
                let until_caught_up = self.opts.until_caught_up;
                if let Some(st) = self.parts.get_mut(&key) {
                    if until_caught_up {
                        // With no commit, consumption starts at the low watermark (earliest).
                        st.target = Some(if start.unwrap_or(low).max(low) >= high { i64::MIN } else { high });
                    }
                    st.watermarks = Watermarks::Done;
                }
            }
            Err(err) => {
                error!(topic, partition = p, error = %err, "reading watermarks failed; trying again every few seconds (the lost-offsets check and --until-caught-up wait for them)");
            }
        }
    }

    /// The group's commit `s` is below the log start `low`: Kafka deleted `[s, low)` before it
    /// was backed up. The one failure a backup must never hide: logged as an error, counted,
    /// shown by the readiness probe and in the run summary (`docs/runbook.md`, OffsetsLost).
    pub(super) fn report_lost(&mut self, topic: &str, p: i32, s: i64, low: i64, high: i64, recovery: &Recovery) {
        // librdkafka resets an out-of-range position by `auto.offset.reset`: to the log start
        // by default, to the end if an operator chose "latest" (then the retained rest is skipped too).
        let until = if self.settings.offset_reset_to_end { high } else { low };
        let lost = (until - s) as u64;
        let recorded: Vec<&str> = recovery.skip.iter().chain(&recovery.rebuild).filter(|i| i.from < until).map(|i| i.key.as_str()).collect();
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
                !w.files.in_flight().any(|f| parts.contains(&f.part()) && Some(f.epoch) == w.parts.get(&f.part()).map(|s| s.epoch))
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
        self.ever_assigned && !self.parts.is_empty() && self.parts.values().all(Partition::caught_up)
    }
}
