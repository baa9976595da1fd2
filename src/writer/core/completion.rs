//! Completion markers in the writer: which dates each owned partition passed, when the files
//! of a date are settled, and the marker jobs (`crate::completion` holds the pure rules).
//!
//! A date's marker is asked for once the partition passed the date and every file of it that
//! this owner holds is uploaded, its intent committed, and the partition's offset committed:
//! what a marker lists is then in storage, and recovery keeps it so after a crash. The
//! progress (newest date marked, late dates) rides in the partition's commit record, so the
//! next owner goes on from it; a date marked but not yet recorded is judged again, and its
//! marker found already written.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::files::InFlight;
use super::partition::PartKey;
use super::Writer;
use crate::buffer::{BufferKey, SealReason};
use crate::completion::write::{MarkerDone, MarkerJob};
use crate::completion::{Due, MarkedFile};
use crate::failpoint;
use crate::metrics as m;
use crate::sabotage;
use crate::upload::{Existing, Outcome};
use crate::writer::ports::Broker;

/// How long a failed marker waits before it is tried again.
const MARKER_RETRY: Duration = Duration::from_secs(5);
/// How long a caught-up `--until-caught-up` run goes on for the markers then due.
pub(crate) const MARKERS_WAIT: Duration = Duration::from_secs(120);
/// How often an idle partition's log end is read to tell whether it is caught up.
const IDLE_CHECK: Duration = Duration::from_secs(10);
/// The same while a caught-up `--until-caught-up` run waits for its markers: a read from
/// before it caught up (not at the end then) must not end the wait.
const CAUGHT_UP_CHECK: Duration = Duration::from_secs(1);
impl Writer {
    /// Remembers what an uploaded file of a dated route holds, for its date's marker.
    pub(super) fn note_uploaded_for_completion(&mut self, f: &InFlight, outcome: Outcome) {
        // A rebuilt file found already there may hold more events than the rebuild (retention
        // took the first ones before it): its marker reads it instead.
        if f.intent.error || (f.existing == Existing::Rebuilt && outcome == Outcome::AlreadyThere) || !self.topics[f.topic].markers() {
            return;
        }
        let Some(date) = self.topics[f.topic].layout().dates().leading_date(&f.intent.date) else { return };
        if let Some(st) = self.parts.get_mut(&f.part()) {
            let file = MarkedFile { key: f.intent.key.clone(), events: f.events, first_offset: Some(f.intent.from), last_offset: Some(f.intent.to) };
            st.marking.uploaded(date, file);
        }
    }

    /// Asks for the markers that are due: per partition, the dates it passed whose files are
    /// settled; open files of a passed date are sealed so that it settles.
    pub(super) fn judge_completion(&mut self, broker: &dyn Broker) {
        if self.stop.fatal().is_some() {
            // A writer that cannot go on (a file of a date found its name taken, say) holds
            // events it did not store: it declares nothing.
            return;
        }
        let now = self.clock.now();
        let wall_ms = self.clock.wall_ms();
        let mut keys: Vec<PartKey> = self.parts.keys().copied().filter(|k| self.topics[k.topic].markers()).collect();
        keys.sort_unstable();
        for key in &keys {
            self.share_start(*key);
        }
        // A caught-up `--until-caught-up` run is about to stop: a late date's file need not
        // wait for its age, its superseding marker is written before the run ends.
        let ending = self.opts.until_caught_up && self.stop.caught_up_at().is_some();
        for key in keys {
            if self.parts[&key].marking.busy(now) {
                continue;
            }
            for due in self.dues(broker, key, now, wall_ms, IDLE_CHECK) {
                let date_str = self.topics[key.topic].layout().dates().format(due.date());
                if self.settled(key, &date_str) || sabotage::on(sabotage::Rule::MarkUnsettled) {
                    self.submit_marker(key, due, date_str);
                    break;
                }
                if matches!(due, Due::Next(_)) || ending {
                    // Passed but not settled: its open files need not wait for their age. (A
                    // late date's file does: late events trickle, and each would be a file.)
                    let open: Vec<BufferKey> = self
                        .files
                        .open_keys()
                        .filter(|k| k.topic == key.topic && k.partition == key.partition && !k.error && of_day(&k.date, &date_str))
                        .cloned()
                        .collect();
                    for k in &open {
                        self.seal(k, SealReason::DatePassed);
                    }
                    // Dates are marked in order.
                    break;
                }
            }
        }
    }

    /// A partition never marked judges dates from the earliest first date of its topic's
    /// partitions this writer owns (an empty partition's own start is the day it was
    /// assigned, yet it is complete for every date its siblings are judged for). Not with
    /// `completion_start_date`, which every partition shares already.
    fn share_start(&mut self, key: PartKey) {
        let Some(offered) = self.parts.get(&key).and_then(|st| st.marking.offered_start()) else { return };
        let first = self.topics[key.topic].offer_first_date(offered);
        // Only a partition at its log end (by the last watermark read) takes it: one still
        // reading has events ahead that may be of those dates, and finds its own start.
        if !self.at_log_end(key) {
            return;
        }
        let Some(st) = self.parts.get_mut(&key) else { return };
        if st.marking.take_start(first) {
            st.record_stale = true;
        }
    }

    /// The dates the partition passed and has not marked (late ones first): passed by its
    /// events, or, once it is caught up with its log end, by the wall clock.
    fn dues(&mut self, broker: &dyn Broker, key: PartKey, now: Instant, wall_ms: i64, fresh: Duration) -> Vec<Due> {
        let (tz, grace) = (self.topics[key.topic].tz(), self.topics[key.topic].grace_ms());
        let Some(mk) = self.parts.get(&key).map(|st| &st.marking) else { return Vec::new() };
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
    pub(super) fn markers_outstanding(&mut self, broker: &dyn Broker) -> Vec<PartKey> {
        if self.stop.fatal().is_some() {
            return Vec::new();
        }
        let (now, wall_ms) = (self.clock.now(), self.clock.wall_ms());
        let mut keys: Vec<PartKey> = self.parts.keys().copied().filter(|k| self.topics[k.topic].markers()).collect();
        keys.sort_unstable();
        let mut out = Vec::new();
        for key in keys {
            let mk = &self.parts[&key].marking;
            let (writing, failed) = (mk.writing(), mk.failed());
            if writing || (!failed && !self.dues(broker, key, now, wall_ms, CAUGHT_UP_CHECK).is_empty()) {
                out.push(key);
            }
        }
        out
    }

    /// True when every file of the date this owner holds on the partition is uploaded, its
    /// recovery is over, and its offset is committed.
    fn settled(&self, key: PartKey, date: &str) -> bool {
        let Some(st) = self.parts.get(&key) else { return false };
        let same = |t: usize, p: i32| t == key.topic && p == key.partition;
        st.recovery.is_empty()
            && st.commit_due().is_none()
            && !self.files.open_keys().any(|k| same(k.topic, k.partition) && !k.error && of_day(&k.date, date))
            && !self.files.in_flight().any(|f| same(f.topic, f.partition) && !f.intent.error && of_day(&f.intent.date, date))
            && !self.files.rebuilding().any(|(p, _)| p == key)
    }

    /// True if the last watermark read shows the partition consumed to its log end (no new
    /// read). Against the position now, not the one at the read: a partition that reached the
    /// end read a moment before it got there is caught up.
    fn at_log_end(&self, key: PartKey) -> bool {
        let Some(st) = self.parts.get(&key) else { return false };
        match (st.reads.last, &st.offsets) {
            (Some((_, Some((_, high)))), Some(o)) => o.position() >= high,
            (Some((_, Some((low, high)))), None) => low >= high,
            _ => false,
        }
    }

    /// True if the partition's consumption reached its log end (read again once the last read
    /// is `fresh` old): an idle partition passes a date by the wall clock.
    fn caught_up_now(&mut self, broker: &dyn Broker, key: PartKey, now: Instant, fresh: Duration) -> bool {
        let last = self.parts[&key].reads.last;
        if last.is_none_or(|(at, _)| now.duration_since(at) >= fresh) {
            // Asked off the loop; until the answer comes, the last one stands.
            self.ask_watermarks(broker, key);
        }
        self.at_log_end(key)
    }

    fn submit_marker(&mut self, key: PartKey, due: Due, date_str: String) {
        let topic = &self.topics[key.topic];
        let Some(st) = self.parts.get_mut(&key) else { return };
        let complete_below = st.offsets.as_ref().map_or(0, |o| o.position());
        let date = due.date();
        st.marking.job_started(date);
        failpoint::hit(failpoint::MARKER_DUE);
        let job = MarkerJob {
            topic: key.topic,
            topic_name: topic.name().to_string(),
            layout: Arc::new(topic.layout().clone()),
            partition: key.partition,
            epoch: st.epoch,
            date,
            date_str,
            complete_below,
            known: st.marking.known(date),
            late: matches!(due, Due::Late(_)),
            success_files: topic.cfg().success_files(),
        };
        self.markers.submit(job);
    }

    /// Takes every marker result that is ready.
    pub(crate) fn drain_markers(&mut self) {
        while let Some(done) = self.markers.next() {
            self.on_marker(done);
        }
    }

    fn on_marker(&mut self, done: MarkerDone) {
        let job = done.job;
        let key = PartKey::new(job.topic, job.partition);
        let topic = &self.topics[job.topic];
        let Some(st) = self.parts.get_mut(&key).filter(|st| st.epoch == job.epoch) else { return };
        match done.result {
            Ok(stated) => {
                let outcome = st.marking.job_done(job.date, job.late);
                // The next commit carries the progress, even if the offset did not move.
                st.record_stale = true;
                if stated.written {
                    metrics::counter!(m::MARKERS_WRITTEN, "topic" => topic.name().to_string()).increment(1);
                    self.summary.markers_written += 1;
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
                st.marking.job_failed(self.clock.now() + MARKER_RETRY);
            }
        }
    }
}

/// True if a route's date string is of the day `day` (as the topic's names write it): the day
/// itself, or a folder below it (stock Secor's `dt=<day>/offset=<N>`), so that no file of the
/// day is overlooked when the day is declared complete.
fn of_day(route_date: &str, day: &str) -> bool {
    route_date.strip_prefix(day).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}
